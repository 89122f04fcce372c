//! CPU attention paths the shared suite's sizes do not reach: the split-key decode path
//! (all queries in one tile, more than 2048 keys), head dims beyond one packed panel, and
//! the exactness of the causal mask when a masked key's value is NaN or ∞ (it must not
//! leak through a zero probability). Every instruction set, against the f64 reference.

use xkern_core::reference::{self, HostTensor};
use xkern_core::{AttentionOptions, DType, Tensor, Tolerance, attention};
use xkern_cpu::{CpuBackend, Isa};

fn host(t: &Tensor<CpuBackend>) -> HostTensor {
    HostTensor::new(t.shape(), t.to_f64_vec().unwrap())
}

#[allow(clippy::too_many_arguments)]
fn check(
    dev: &CpuBackend,
    hq: usize,
    hkv: usize,
    sq: usize,
    skv: usize,
    d: usize,
    causal: bool,
    dtype: DType,
) {
    let q = Tensor::randn(dev, &[1, hq, sq, d], dtype, 1).unwrap();
    let k = Tensor::randn(dev, &[1, hkv, skv, d], dtype, 2).unwrap();
    let v = Tensor::randn(dev, &[1, hkv, skv, d], dtype, 3).unwrap();
    let got = attention(
        &q,
        &k,
        &v,
        &AttentionOptions {
            causal,
            scale: None,
        },
    )
    .unwrap();
    let want = reference::attention(
        &host(&q),
        &host(&k),
        &host(&v),
        causal,
        1.0 / (d as f64).sqrt(),
    );
    if let Err(e) = Tolerance::for_dtype(dtype).check(&got.to_f64_vec().unwrap(), &want.data) {
        panic!(
            "{:?} hq={hq} hkv={hkv} sq={sq} skv={skv} d={d} causal={causal} {dtype}: {e}",
            dev.isa()
        );
    }
}

fn each_isa(f: impl Fn(&CpuBackend)) {
    for isa in Isa::available() {
        f(&CpuBackend::with_options(Some(2), isa).unwrap());
    }
}

#[test]
fn split_key_decode() {
    each_isa(|dev| {
        check(dev, 4, 1, 1, 5000, 64, false, DType::F32);
        check(dev, 2, 2, 17, 4500, 32, true, DType::F32);
        check(dev, 4, 2, 1, 4097, 64, true, DType::BF16);
    });
}

#[test]
fn wide_heads_and_ragged_tiles() {
    each_isa(|dev| {
        check(dev, 2, 1, 50, 130, 256, true, DType::F32);
        check(dev, 1, 1, 97, 257, 13, false, DType::F16);
    });
}

#[test]
fn a_masked_keys_nan_value_never_leaks() {
    // NaN and ∞ together, and each alone (the finiteness check of a V chunk must see an
    // ∞ by itself as well as a NaN).
    let poisons: [&[(usize, f32)]; 3] = [
        &[(40, f32::NAN), (50, f32::INFINITY)],
        &[(40, f32::NAN)],
        &[(40, f32::INFINITY)],
    ];
    each_isa(|dev| {
        let (sq, skv, d) = (64, 64, 16);
        let q = Tensor::randn(dev, &[1, 1, sq, d], DType::F32, 4).unwrap();
        let k = Tensor::randn(dev, &[1, 1, skv, d], DType::F32, 5).unwrap();
        for poison in poisons {
            let mut vv = Tensor::randn(dev, &[1, 1, skv, d], DType::F32, 6)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            // Key 40 is seen by queries 40.. only.
            for &(key, x) in poison {
                vv[key * d + 3] = x;
            }
            let v = Tensor::from_slice(dev, &[1, 1, skv, d], &vv).unwrap();
            let got = attention(
                &q,
                &k,
                &v,
                &AttentionOptions {
                    causal: true,
                    scale: None,
                },
            )
            .unwrap();
            let want = reference::attention(&host(&q), &host(&k), &host(&v), true, 0.25);
            let g = got.to_f64_vec().unwrap();
            assert!(
                g[..40 * d].iter().all(|x| x.is_finite()),
                "{:?} {poison:?}: a query before key 40 saw its value",
                dev.isa()
            );
            Tolerance::for_dtype(DType::F32)
                .check(&g, &want.data)
                .unwrap();
        }
    });
}

/// Query counts around the 64-query task and its 32/16-lane panels, key counts around
/// the 96-key tiles (and the 12/6/4-key panels inside them), causal and not, including
/// more queries than keys (early rows see no key) and fewer.
#[test]
fn tiles_around_the_query_and_key_blocks() {
    each_isa(|dev| {
        for sq in [9, 31, 63, 64, 65, 129] {
            for skv in [1, 95, 96, 97, 193] {
                check(dev, 2, 1, sq, skv, 40, sq % 2 == 1, DType::F32);
            }
        }
        check(dev, 1, 1, 130, 70, 24, true, DType::F32);
        check(dev, 1, 1, 70, 130, 24, true, DType::BF16);
    });
}
