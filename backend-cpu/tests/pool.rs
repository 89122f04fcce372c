//! The buffer pool: a dropped large tensor's memory is reused by the next allocation of a
//! similar size, and reused memory never leaks old values into a new tensor. (One test in
//! its own binary: the pool is process-wide.)
use xkern_core::{DType, Tensor};
use xkern_cpu::{CpuBackend, pool_stats, trim_pool};

#[test]
fn dropped_buffers_are_reused_and_reset() {
    let dev = CpuBackend::new();
    let n = 3 << 20; // 12 MiB of f32
    trim_pool();
    let ones = Tensor::from_slice(&dev, &[n], &vec![1.0f32; n]).unwrap();
    drop(ones);
    let held = pool_stats();
    assert_eq!(held.buffers, 1, "{held:?}");
    let hits = held.hits;
    let z = Tensor::zeros(&dev, &[n - 1000], DType::F32).unwrap();
    assert_eq!(pool_stats().hits, hits + 1, "the zeros reused the buffer");
    assert!(z.to_vec::<f32>().unwrap().iter().all(|&x| x == 0.0));
    drop(z);
    // Results computed into reused buffers are the same as into fresh ones.
    let a = Tensor::randn(&dev, &[1024, 3072], DType::F32, 5).unwrap();
    let first = a.softmax(-1).unwrap().to_vec::<f32>().unwrap();
    let again = a.softmax(-1).unwrap().to_vec::<f32>().unwrap();
    assert!(first == again);
    assert!(pool_stats().hits > hits + 1);
    assert!(trim_pool() > 0);
    assert_eq!(pool_stats().buffers, 0);
}
