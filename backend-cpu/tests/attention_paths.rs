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
        // GQA decodes (all of a group's rows in one pass), ragged head dims.
        check(dev, 8, 1, 1, 3000, 100, false, DType::F16);
        check(dev, 4, 1, 2, 300, 40, true, DType::F32);
        check(dev, 8, 2, 8, 2500, 64, true, DType::BF16);
        check(dev, 2, 2, 16, 700, 24, false, DType::F16);
    });
}

#[test]
fn wide_heads_and_ragged_tiles() {
    each_isa(|dev| {
        check(dev, 2, 1, 50, 130, 256, true, DType::F32);
        check(dev, 1, 1, 97, 257, 13, false, DType::F16);
        // bf16 scores by `vdpbf16ps` where the CPU has it: odd head dims (a zero-padded
        // last pair), GQA, ragged query and key tiles, heads wider than one packed panel.
        check(dev, 2, 1, 50, 130, 13, true, DType::BF16);
        check(dev, 4, 2, 97, 257, 64, false, DType::BF16);
        check(dev, 1, 1, 33, 300, 256, true, DType::BF16);
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

/// The same through the streaming decode (four causal queries over 64 keys, so query 0
/// sees keys 0..61, query 1 keys 0..62, …), alone and as one of a GQA group's rows, f32
/// and bf16: a masked key's NaN or ∞ value never reaches a query that does not see it.
#[test]
fn decode_never_leaks_a_masked_keys_nan_value() {
    each_isa(|dev| {
        for (hq, dtype) in [(1, DType::F32), (4, DType::F32), (3, DType::BF16)] {
            let (sq, skv, d) = (4, 64, 24);
            let q = Tensor::randn(dev, &[1, hq, sq, d], dtype, 4).unwrap();
            let k = Tensor::randn(dev, &[1, 1, skv, d], dtype, 5).unwrap();
            for poison in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut vv = Tensor::randn(dev, &[1, 1, skv, d], DType::F32, 6)
                    .unwrap()
                    .to_vec::<f32>()
                    .unwrap();
                vv[61 * d + 5] = poison;
                let v = Tensor::from_slice(dev, &[1, 1, skv, d], &vv)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let opts = AttentionOptions {
                    causal: true,
                    scale: None,
                };
                let got = attention(&q, &k, &v, &opts).unwrap().to_f64_vec().unwrap();
                let want = reference::attention(
                    &host(&q),
                    &host(&k),
                    &host(&v),
                    true,
                    1.0 / (d as f64).sqrt(),
                );
                for h in 0..hq {
                    let row0 = &got[h * sq * d..h * sq * d + d];
                    assert!(
                        row0.iter().all(|x| x.is_finite()),
                        "{:?} {dtype} hq={hq} {poison}: query 0 saw key 61",
                        dev.isa()
                    );
                    let (g, w) = (&got[h * sq * d..][..d], &want.data[h * sq * d..][..d]);
                    Tolerance::for_dtype(dtype).check(g, w).unwrap();
                }
            }
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

/// The streaming decode reads 16-bit K and V rows where they lie, widening them as it
/// loads; widening is exact and the sums keep the f32 decode's order, so a 16-bit decode
/// is the f32 decode of the widened operands, rounded once at the end, bit for bit. On
/// every ISA: GQA groups across the row groups, causal rows seeing different key counts,
/// head dims with ragged vector tails, one and several key blocks and splits, and K/V
/// with rows not back to back or elements not contiguous.
#[test]
fn sixteen_bit_decode_is_the_widened_f32_decode() {
    // K/V stored as [1, hkv, skv, d], [1, skv, hkv, d] (rows hkv·d apart) or
    // [1, hkv, d, skv] (elements skv apart), always viewed as [1, hkv, skv, d].
    let kv = |dev: &CpuBackend,
              dtype,
              hkv,
              skv,
              d,
              layout,
              seed|
     -> (Tensor<CpuBackend>, Tensor<CpuBackend>) {
        let (shape, perm): ([usize; 4], [usize; 4]) = match layout {
            0 => ([1, hkv, skv, d], [0, 1, 2, 3]),
            1 => ([1, skv, hkv, d], [0, 2, 1, 3]),
            _ => ([1, hkv, d, skv], [0, 1, 3, 2]),
        };
        let base = Tensor::randn(dev, &shape, dtype, seed).unwrap();
        let wide = base.to_dtype(DType::F32).unwrap();
        (base.permute(&perm).unwrap(), wide.permute(&perm).unwrap())
    };
    each_isa(|dev| {
        for dtype in [DType::F16, DType::BF16] {
            for (hq, hkv, sq, skv, d, causal, layout) in [
                (8, 1, 1, 200, 128, false, 0),
                (6, 2, 1, 65, 40, false, 1),
                (2, 2, 3, 130, 13, true, 0),
                (4, 1, 2, 64, 100, true, 1),
                (3, 3, 1, 2500, 64, false, 0),
                (2, 1, 1, 70, 24, false, 2),
                (1, 1, 1, 1, 17, true, 0),
                // 32 and 16 rows per kv head: four and two groups of eight.
                (16, 4, 8, 300, 64, true, 1),
                (2, 2, 16, 2100, 40, true, 0),
            ] {
                let q = Tensor::randn(dev, &[1, hq, sq, d], dtype, 7).unwrap();
                let q32 = q.to_dtype(DType::F32).unwrap();
                let (k, k32) = kv(dev, dtype, hkv, skv, d, layout, 8);
                let (v, v32) = kv(dev, dtype, hkv, skv, d, layout, 9);
                let opts = AttentionOptions {
                    causal,
                    scale: None,
                };
                let got = attention(&q, &k, &v, &opts).unwrap();
                let want = attention(&q32, &k32, &v32, &opts)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let (g, w) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
                let same = g.iter().zip(&w).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{:?} {dtype} hq={hq} hkv={hkv} sq={sq} skv={skv} d={d} layout {layout}",
                    dev.isa()
                );
            }
        }
    });
}
