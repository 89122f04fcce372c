//! The attention kernels on the device (lavapipe where there is no GPU), at sizes the
//! shared conformance suite does not reach: several query blocks and key tiles with
//! ragged last tiles, causal with Sq ≠ Skv both ways, GQA and MQA, D and Dv of 64, 80, 96,
//! 128 and odd ones, permuted layouts, decode with many splits and ragged row blocks,
//! masked keys holding ∞, and f16/bf16 inputs. Each case states the plan it must take on
//! this device, then runs every prefill tiling the device can hold (forced through
//! `attention_with`), compared with the f64 reference.

use crate::WgpuBackend;
use crate::attention::{
    DECODE_MAX_SQ, DecodeTuning, FLASH_TILES, FORCED_TILES, FlashTiles, Plan, TEST_TILES,
    decode_vec, flash_vec, plan,
};
use xkern_core::reference::{self, HostTensor};
use xkern_core::{AttentionOptions, AttentionSpec, Backend, DType, Tensor, Tolerance};

#[derive(Clone, Copy, Debug)]
struct Case {
    batch: usize,
    hq: usize,
    hkv: usize,
    sq: usize,
    skv: usize,
    d: usize,
    dv: usize,
    causal: bool,
    /// Stored `[B, S, H, D]`, permuted to `[B, H, S, D]`.
    bshd: bool,
    /// +∞ in every value of the last key (only queries that see it may turn NaN/∞).
    inf_last_value: bool,
}

const fn case(hq: usize, hkv: usize, sq: usize, skv: usize, d: usize, causal: bool) -> Case {
    Case {
        batch: 1,
        hq,
        hkv,
        sq,
        skv,
        d,
        dv: d,
        causal,
        bshd: false,
        inf_last_value: false,
    }
}

fn prefill_cases() -> Vec<Case> {
    vec![
        // GQA, two batches, Sq < Skv: several query blocks and key tiles, both ragged.
        Case {
            batch: 2,
            ..case(4, 2, 130, 200, 64, true)
        },
        // Sq > Skv: the first 70 queries see nothing.
        Case {
            dv: 80,
            ..case(2, 2, 200, 130, 80, true)
        },
        // Permuted layout, full attention, D = 128.
        Case {
            bshd: true,
            ..case(2, 1, 150, 150, 128, false)
        },
        // MQA, D ≠ Dv, odd sizes.
        Case {
            dv: 40,
            ..case(3, 1, 70, 65, 96, true)
        },
        // ∞ in the last value: causal rows before the last never see it.
        Case {
            inf_last_value: true,
            ..case(2, 2, 100, 100, 64, true)
        },
        // Odd head dims across feature steps.
        Case {
            dv: 7,
            ..case(2, 2, 40, 77, 33, false)
        },
    ]
}

fn decode_cases() -> Vec<Case> {
    vec![
        // Sq = 1, GQA group 4: one row block of 4, 47 splits (the last ragged).
        case(8, 2, 1, 3000, 128, false),
        // Sq = 3 causal, group 6: 18 rows in three row blocks, the last ragged.
        Case {
            dv: 80,
            ..case(12, 2, 3, 1000, 80, true)
        },
        // Sq = 4 > Skv = 2: the first two queries see no key.
        case(2, 2, 4, 2, 64, true),
        // Dv = 200: two column blocks per invocation; permuted layout.
        Case {
            dv: 200,
            bshd: true,
            ..case(4, 4, 2, 333, 64, false)
        },
        // ∞ in the last value: the first three of four causal queries do not see it.
        Case {
            inf_last_value: true,
            ..case(4, 1, 4, 500, 96, true)
        },
        // MQA with 32 heads: four row blocks share each split's K/V.
        case(32, 1, 1, 700, 64, true),
        // D not a multiple of 4 (zero-filled vec4 tails), tiny Dv.
        Case {
            dv: 5,
            ..case(4, 2, 2, 150, 33, true)
        },
        // The largest head dims: vec4 K/V, 16 K vec4s per key row, two V key groups of
        // 64 invocations; causal Sq = 2 < Skv with a ragged last tile.
        case(8, 2, 2, 301, 256, true),
        // D = 16: the staged K (5 vec4s a key) is smaller than a row of accumulators at
        // 8 rows, so the final combine goes through its own buffer; Dv = 5 with 3 rows:
        // 15 output elements, so 16-bit output words straddle rows and the last is half.
        Case {
            dv: 5,
            ..case(3, 3, 1, 100, 16, false)
        },
    ]
}

fn device() -> WgpuBackend {
    WgpuBackend::new().expect("a wgpu adapter (lavapipe: apt-get install mesa-vulkan-drivers)")
}

fn dtypes(dev: &WgpuBackend) -> Vec<DType> {
    let mut d = vec![DType::F32, DType::BF16];
    if dev.info().dtypes.contains(&DType::F16) {
        d.push(DType::F16);
    }
    d
}

/// A `[B, H, S, D]` operand in `dtype` (stored as `[B, S, H, D]` when `bshd`) and its
/// stored values as a contiguous host tensor.
#[allow(clippy::too_many_arguments)]
fn operand(
    dev: &WgpuBackend,
    c: &Case,
    h: usize,
    s: usize,
    d: usize,
    dtype: DType,
    seed: u64,
    inf_last: bool,
) -> (Tensor<WgpuBackend>, HostTensor) {
    let n = c.batch * h * s * d;
    let mut data = xkern_core::random::normal_f32(seed, n);
    if inf_last {
        // Key s − 1 of every (batch, head), in the [B, S, H, D] or [B, H, S, D] storage.
        for (i, x) in data.iter_mut().enumerate() {
            let pos = if c.bshd {
                (i / (h * d)) % s
            } else {
                (i / d) % s
            };
            if pos == s - 1 {
                *x = f32::INFINITY;
            }
        }
    }
    let stored = if c.bshd {
        vec![c.batch, s, h, d]
    } else {
        vec![c.batch, h, s, d]
    };
    let t = Tensor::from_slice(dev, &stored, &data)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let t = if c.bshd {
        t.permute(&[0, 2, 1, 3]).unwrap()
    } else {
        t
    };
    let host = HostTensor::new(
        &[c.batch, h, s, d],
        t.contiguous().unwrap().to_f64_vec().unwrap(),
    );
    (t, host)
}

/// Runs `c` with `plan` (or the device's own plan when `None`) and checks the result.
fn run(dev: &WgpuBackend, c: &Case, dtype: DType, seed: u64, force: Option<Plan>) {
    let name = format!("{dtype} {c:?} {force:?}");
    let (q, hq) = operand(dev, c, c.hq, c.sq, c.d, dtype, seed, false);
    let (k, hk) = operand(dev, c, c.hkv, c.skv, c.d, dtype, seed ^ 1, false);
    let (v, hv) = operand(
        dev,
        c,
        c.hkv,
        c.skv,
        c.dv,
        dtype,
        seed ^ 2,
        c.inf_last_value,
    );
    let opts = AttentionOptions {
        causal: c.causal,
        scale: None,
    };
    let spec = AttentionSpec::new(&q, &k, &v, &opts).unwrap();
    let p = force.unwrap_or_else(|| dev.attention_plan(&spec));
    let out = dev
        .attention_with(&spec, q.storage(), k.storage(), v.storage(), p)
        .unwrap();
    let len = spec.output_shape().iter().product();
    let got = dev.download(&out, dtype, 0, len).unwrap().to_f64();
    let want = reference::attention(&hq, &hk, &hv, c.causal, 1.0 / (c.d as f64).sqrt());
    check(&name, dtype, &got, &want);
}

/// Compares `got` with the reference `want`.
fn check(name: &str, dtype: DType, got: &[f64], want: &HostTensor) {
    // Non-finite outputs must match exactly in kind; the finite rest within tolerance.
    let (mut g, mut w) = (Vec::new(), Vec::new());
    for (i, (&a, &b)) in got.iter().zip(&want.data).enumerate() {
        if b.is_finite() {
            g.push(a);
            w.push(b);
        } else {
            assert!(
                a.is_nan() == b.is_nan() && (b.is_nan() || a == b),
                "{name}: element {i}: got {a}, want {b}"
            );
        }
    }
    assert!(
        g.len() * 2 > want.data.len(),
        "{name}: most outputs are finite"
    );
    Tolerance::for_dtype(dtype)
        .check(&g, &w)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
}

fn spec_of(dev: &WgpuBackend, c: &Case) -> AttentionSpec {
    let z =
        |h: usize, s: usize, d: usize| Tensor::zeros(dev, &[c.batch, h, s, d], DType::F32).unwrap();
    let opts = AttentionOptions {
        causal: c.causal,
        scale: None,
    };
    AttentionSpec::new(
        &z(c.hq, c.sq, c.d),
        &z(c.hkv, c.skv, c.d),
        &z(c.hkv, c.skv, c.dv),
        &opts,
    )
    .unwrap()
}

fn wg_bytes(dev: &WgpuBackend) -> usize {
    dev.gpu().limits.max_compute_workgroup_storage_size as usize
}

/// Every prefill tiling that fits this device, on every prefill case and dtype.
#[test]
fn prefill_tilings_match_the_reference() {
    let dev = device();
    for dtype in dtypes(&dev) {
        for (i, c) in prefill_cases().iter().enumerate() {
            let spec = spec_of(&dev, c);
            assert!(
                matches!(dev.attention_plan(&spec), Plan::Flash(_)),
                "{c:?} must take the prefill kernel"
            );
            // The extra tilings in f32 only, except the 128-row ones (the H100's tiling,
            // too large for lavapipe, runs in every dtype through their smaller twins).
            let extra = TEST_TILES
                .iter()
                .filter(|t| dtype == DType::F32 || t.br == 128);
            for &t in FLASH_TILES.iter().chain(extra) {
                if t.fits(c.dv, wg_bytes(&dev)) {
                    run(&dev, c, dtype, 100 + i as u64, Some(Plan::Flash(t)));
                }
            }
        }
    }
}

/// The split-KV decode with the device's plan (many splits), and with one split (no
/// merge work) and with two (each row count where its workgroup memory fits).
#[test]
fn decode_matches_the_reference() {
    let dev = device();
    for dtype in dtypes(&dev) {
        for (i, c) in decode_cases().iter().enumerate() {
            let spec = spec_of(&dev, c);
            let p = dev.attention_plan(&spec);
            let Plan::Decode { splits, .. } = p else {
                panic!("{c:?} must take the decode kernel, took {p:?}");
            };
            if c.skv >= 1000 {
                assert!(splits >= 10, "{c:?}: {splits} splits");
            }
            run(&dev, c, dtype, 200 + i as u64, None);
            // Both row counts (4 also where a kv head has more rows: several row blocks),
            // one split, two, and one tile of 32 keys per split (more splits than one
            // merge round takes where Skv > 2048).
            let tiles = c.skv.div_ceil(32);
            for (rows, splits) in [(4, 1), (8, 2), (4, tiles), (8, tiles)] {
                // Split dot products on the runs of one tile per split.
                let split_dot = splits == tiles;
                if crate::attention::decode_bytes(c.d, rows, split_dot) > wg_bytes(&dev) {
                    continue;
                }
                let chunk = c.skv.div_ceil(splits).div_ceil(32).max(1) * 32;
                // The V prefetch off where rows = 8.
                let forced = Plan::Decode {
                    rows,
                    splits: c.skv.div_ceil(chunk).max(1),
                    chunk,
                    prefetch_v: rows == 4,
                    split_dot,
                };
                run(&dev, c, dtype, 300 + i as u64, Some(forced));
            }
        }
    }
}

/// The values of `h` one element further into a new buffer of `dtype` (a view at
/// offset 1 then reads them with rows that are not 4-aligned).
fn shifted(dev: &WgpuBackend, h: &HostTensor, dtype: DType) -> Tensor<WgpuBackend> {
    let mut data = vec![0.0f32];
    data.extend(h.data.iter().map(|&x| x as f32));
    Tensor::from_slice(dev, &[data.len()], &data)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// The decode kernel's scalar K/V loads where the vec4 ones must not be used: K and V
/// rows starting one element past a multiple of 4 (D = Dv = 64, so only the offset
/// breaks the alignment), with the device's plan and with rows of 8 in three splits.
#[test]
fn decode_reads_unaligned_rows_as_scalars() {
    let dev = device();
    let c = case(8, 2, 1, 300, 64, false);
    let opts = AttentionOptions {
        causal: false,
        scale: None,
    };
    for dtype in dtypes(&dev) {
        let (q, hq) = operand(&dev, &c, c.hq, c.sq, c.d, dtype, 7, false);
        let (k, hk) = operand(&dev, &c, c.hkv, c.skv, c.d, dtype, 8, false);
        let (v, hv) = operand(&dev, &c, c.hkv, c.skv, c.dv, dtype, 9, false);
        let shifted = |h: &HostTensor| shifted(&dev, h, dtype);
        let (ks, vs) = (shifted(&hk), shifted(&hv));
        let mut spec = AttentionSpec::new(&q, &k, &v, &opts).unwrap();
        assert!(decode_vec(&spec), "contiguous rows of 64 read vec4s");
        spec.k.offset += 1;
        spec.v.offset += 1;
        assert!(!decode_vec(&spec));
        let want = reference::attention(&hq, &hk, &hv, false, 1.0 / (c.d as f64).sqrt());
        let len = spec.output_shape().iter().product();
        let forced = Plan::Decode {
            rows: 8,
            splits: 3,
            chunk: 128,
            prefetch_v: false,
            split_dot: true,
        };
        for p in [dev.attention_plan(&spec), forced] {
            assert!(matches!(p, Plan::Decode { .. }), "{p:?}");
            let out = dev
                .attention_with(&spec, q.storage(), ks.storage(), vs.storage(), p)
                .unwrap();
            let got = dev.download(&out, dtype, 0, len).unwrap().to_f64();
            check(&format!("{dtype} unaligned {p:?}"), dtype, &got, &want);
        }
    }
}

/// The prefill kernel's scalar loads where the vec4 ones must not be used: Q, K and V
/// rows starting one element past a multiple of 4 (D = Dv = 64, so only the offset
/// breaks the alignment), causal with Sq < Skv, with every tiling that fits (the 128-row
/// code through its test twins), f32 and a 16-bit dtype.
#[test]
fn prefill_reads_unaligned_rows_as_scalars() {
    let dev = device();
    let c = case(4, 2, 140, 170, 64, true);
    let opts = AttentionOptions {
        causal: true,
        scale: None,
    };
    for dtype in [DType::F32, DType::BF16] {
        let (q, hq) = operand(&dev, &c, c.hq, c.sq, c.d, dtype, 17, false);
        let (k, hk) = operand(&dev, &c, c.hkv, c.skv, c.d, dtype, 18, false);
        let (v, hv) = operand(&dev, &c, c.hkv, c.skv, c.dv, dtype, 19, false);
        let shifted = |h: &HostTensor| shifted(&dev, h, dtype);
        let (qs, ks, vs) = (shifted(&hq), shifted(&hk), shifted(&hv));
        let mut spec = AttentionSpec::new(&q, &k, &v, &opts).unwrap();
        assert!(flash_vec(&spec), "contiguous rows of 64 read vec4s");
        spec.q.offset += 1;
        spec.k.offset += 1;
        spec.v.offset += 1;
        assert!(!flash_vec(&spec));
        let want = reference::attention(&hq, &hk, &hv, true, 1.0 / (c.d as f64).sqrt());
        let len = spec.output_shape().iter().product();
        for &t in FLASH_TILES.iter().chain(&TEST_TILES) {
            if !t.fits(c.dv, wg_bytes(&dev)) {
                continue;
            }
            let p = Plan::Flash(t);
            let out = dev
                .attention_with(&spec, qs.storage(), ks.storage(), vs.storage(), p)
                .unwrap();
            let got = dev.download(&out, dtype, 0, len).unwrap().to_f64();
            check(&format!("{dtype} unaligned {p:?}"), dtype, &got, &want);
        }
    }
}

/// Shapes past the fast kernels' bounds take the fallback, which still matches.
#[test]
fn large_head_dims_fall_back() {
    let dev = device();
    let c = Case {
        dv: 20,
        ..case(2, 1, 9, 40, 300, true)
    };
    assert_eq!(dev.attention_plan(&spec_of(&dev, &c)), Plan::Fallback);
    run(&dev, &c, DType::F32, 5, None);
    let c = Case {
        dv: 257,
        ..case(2, 2, 2, 30, 16, false)
    };
    assert_eq!(dev.attention_plan(&spec_of(&dev, &c)), Plan::Fallback);
    run(&dev, &c, DType::F32, 6, None);
}

/// The plan follows the workgroup-memory limit: the largest tiling on 48 KiB (the H100),
/// 64 × 64 with 16-feature steps on 32 KiB, 32 × 32 on WebGPU's guaranteed 16 KiB; every
/// fast kernel fits 16 KiB at D = Dv = 128, the prefill also at 256.
#[test]
fn plans_follow_the_workgroup_memory_limit() {
    let dev = device();
    let c = case(32, 32, 4096, 4096, 128, true);
    let spec = spec_of(
        &dev,
        &Case {
            sq: 65,
            skv: 65,
            ..c
        },
    );
    let tiles = |p: Plan| match p {
        Plan::Flash(t) => t,
        p => panic!("{p:?}"),
    };
    assert_eq!(
        tiles(plan(&spec, 49152, &DecodeTuning::default(), None)),
        FLASH_TILES[0]
    );
    assert_eq!(FLASH_TILES[0].br, 128);
    assert_eq!(
        tiles(plan(&spec, 32768, &DecodeTuning::default(), None)),
        FLASH_TILES[2]
    );
    assert_eq!(
        tiles(plan(&spec, 16384, &DecodeTuning::default(), None)),
        FLASH_TILES[3]
    );
    assert!(FLASH_TILES[3].bytes(256) <= 16384);
    // Above Dv = 128 the 128-row tiling would spill registers: 64 × 64 × 32 instead.
    let mut dv256 = spec.clone();
    dv256.v_head_dim = 256;
    assert_eq!(
        tiles(plan(&dv256, 49152, &DecodeTuning::default(), None)),
        FLASH_TILES[1]
    );
    // A forced tiling wins where it fits, else the usual choice.
    for t in FLASH_TILES.into_iter().chain(FORCED_TILES) {
        assert_eq!(
            tiles(plan(&spec, 49152, &DecodeTuning::default(), Some(t))),
            t
        );
    }
    assert_eq!(
        tiles(plan(
            &spec,
            32768,
            &DecodeTuning::default(),
            Some(FLASH_TILES[0])
        )),
        FLASH_TILES[2]
    );
    assert_eq!(
        tiles(plan(
            &dv256,
            49152,
            &DecodeTuning::default(),
            Some(FLASH_TILES[0])
        )),
        FLASH_TILES[1]
    );
    assert!(crate::attention::decode_bytes(128, 8, false) <= 16384);
    assert_eq!(
        plan(&spec, 8192, &DecodeTuning::default(), None),
        Plan::Fallback
    );
    // Decode: Sq up to DECODE_MAX_SQ; the benchmark shape splits into 32 chunks of 256.
    let decode = spec_of(
        &dev,
        &Case {
            sq: 1,
            skv: 300,
            ..case(32, 8, 1, 300, 128, false)
        },
    );
    assert!(matches!(
        plan(&decode, 16384, &DecodeTuning::default(), None),
        Plan::Decode { .. }
    ));
    let mut bench = decode.clone();
    bench.kv_seq = 8192;
    // Four rows (the GQA group of 4 at Sq = 1) where 20 KiB fit, else eight.
    for (wg, rows) in [(16384, 8), (32768, 4), (49152, 4)] {
        assert_eq!(
            plan(&bench, wg, &DecodeTuning::default(), None),
            Plan::Decode {
                rows,
                splits: 32,
                chunk: 256,
                prefetch_v: true,
                split_dot: false
            }
        );
    }
    // The tunables: a fixed split count (whole tiles of 32 keys, at most one split per
    // tile), rows forced to 8, or to 4 only where they fit.
    let tuned = |splits, rows| DecodeTuning {
        splits,
        rows,
        ..DecodeTuning::default()
    };
    let p = |wg, t: DecodeTuning| plan(&bench, wg, &t, None);
    assert_eq!(
        p(49152, tuned(Some(100), Some(8))),
        Plan::Decode {
            rows: 8,
            splits: 86,
            chunk: 96,
            prefetch_v: true,
            split_dot: false
        }
    );
    assert_eq!(
        p(49152, tuned(Some(1000), None)),
        Plan::Decode {
            rows: 4,
            splits: 256,
            chunk: 32,
            prefetch_v: true,
            split_dot: false
        }
    );
    assert!(matches!(
        p(16384, tuned(None, Some(4))),
        Plan::Decode { rows: 8, .. }
    ));
    let k_only = DecodeTuning {
        prefetch_v: false,
        split_dot: true,
        ..DecodeTuning::default()
    };
    assert!(matches!(
        p(49152, k_only),
        Plan::Decode {
            prefetch_v: false,
            split_dot: true,
            ..
        }
    ));
    // Split dot products only where their partial scores fit.
    assert!(matches!(
        plan(&bench, 16384, &k_only, None),
        Plan::Decode {
            split_dot: false,
            ..
        }
    ));
    let fewer = DecodeTuning {
        target_groups: 128,
        ..DecodeTuning::default()
    };
    assert!(matches!(p(49152, fewer), Plan::Decode { splits: 16, .. }));
    // D = Dv = 256 keeps 8 rows (fewer registers) even where 4 would fit.
    let mut wide = bench;
    wide.head_dim = 256;
    wide.v_head_dim = 256;
    assert!(matches!(
        plan(&wide, 49152, &DecodeTuning::default(), None),
        Plan::Decode { rows: 8, .. }
    ));
    let mut five = decode;
    five.q_seq = DECODE_MAX_SQ + 1;
    assert!(matches!(
        plan(&five, 16384, &DecodeTuning::default(), None),
        Plan::Flash(_)
    ));
}

/// Each variant compiles once: a second round compiles nothing.
#[test]
fn attention_variants_compile_once() {
    let dev = device();
    let cases = [case(2, 1, 70, 90, 64, true), case(4, 2, 1, 500, 64, false)];
    for (i, c) in cases.iter().enumerate() {
        run(&dev, c, DType::F32, i as u64, None);
    }
    let compiled = dev.compiled_kernels();
    for (i, c) in cases.iter().enumerate() {
        run(&dev, c, DType::F32, i as u64, None);
    }
    assert_eq!(dev.compiled_kernels(), compiled);
    let mut keys: Vec<String> = dev
        .kernel_keys()
        .into_iter()
        .filter(|k| k.starts_with("attention"))
        .collect();
    keys.sort();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(
        keys[0].starts_with("attention-decode/f32/64/64/r4"),
        "{keys:?}"
    );
    assert!(
        keys[1].starts_with("attention-flash/f32/64/64/"),
        "{keys:?}"
    );
    assert_eq!(keys[2], "attention-merge/f32");
}

/// `XKERN_WGPU_ATTN_TILE` names every tiling; `auto` and the empty string choose none.
#[test]
fn attention_tile_names_parse() {
    for t in FLASH_TILES.into_iter().chain(FORCED_TILES) {
        assert_eq!(FlashTiles::parse(&t.name()), Ok(Some(t)));
    }
    assert_eq!(FlashTiles::parse(" 128X64x32 "), Ok(Some(FLASH_TILES[0])));
    assert_eq!(FlashTiles::parse("auto"), Ok(None));
    assert_eq!(FlashTiles::parse(""), Ok(None));
    assert!(FlashTiles::parse("128").is_err());
    assert!(TEST_TILES.iter().all(|t| t.valid()));
}
