//! Accuracy of long f32 sums: 64M mixed-sign elements against an f64 reference, within
//! 1e-6 relative error, on every instruction set, for the sum over all axes and over a
//! row.

use xkern_core::Tensor;
use xkern_cpu::{CpuBackend, Isa};

#[test]
fn sum_of_64m_mixed_sign_elements() {
    let n = 64 << 20;
    // A cheap deterministic mixed-sign stream (randn would dominate the test's time);
    // a positive offset makes the sum large enough to be a meaningful relative target.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.45) * 100.0
        })
        .collect();
    let exact: f64 = data.iter().map(|&x| f64::from(x)).sum();
    for isa in Isa::available() {
        let dev = CpuBackend::with_options(Some(2), isa).unwrap();
        let t = Tensor::from_slice(&dev, &[n], &data).unwrap();
        for got in [
            t.sum_all().unwrap(),
            t.reshape(&[1, n]).unwrap().sum(1, false).unwrap(),
        ] {
            let got = f64::from(got.to_vec::<f32>().unwrap()[0]);
            let rel = ((got - exact) / exact).abs();
            assert!(
                rel <= 1e-6,
                "{isa:?}: sum {got} vs {exact}: relative error {rel:e}"
            );
        }
    }
}
