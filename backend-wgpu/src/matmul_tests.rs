//! The matmul kernels on the device (lavapipe where there is no GPU): each case names the
//! plan it must take, so every variant of the register-tiled kernel (NN, NT, TN, TT, scalar
//! and vec4 staging) on every block (64 × 64 by default, 128 × 64 and 128 × 128 forced,
//! with extra cases ragged against those), split-K, both GEMV layouts for M = 1 and N = 1,
//! and the strided fallback is shown to run; sizes are ragged against the tiles, with
//! batches (broadcast on either side), the epilogue, and f16/bf16 inputs. Results are compared with an f64
//! product computed here through the operands' views, with the relative bound taken
//! against |A|·|B| + |bias| (random sums may cancel). The shared conformance suite covers
//! the rest of the contract (NaN/∞, empty shapes, bad input); its matmul cases reach only
//! six tiled layouts (k1x1, k1k1, x1x1, x1k1, k1x4, k4x1 in the cache keys' terms), both
//! GEMV layouts and never the strided kernel, hence these cases.

use crate::WgpuBackend;
use crate::matmul::{Blocks, MatmulBlock, Operand, Plan, plan};
use crate::pipelines::fit_u32;
use xkern_core::{Activation, Backend, DType, MatmulSpec, Tensor, Tolerance};

/// How an operand `[batch.., r, c]` is stored.
#[derive(Clone, Copy, Debug)]
enum Store {
    /// Row-major `[batch.., r, c]`.
    N,
    /// Row-major `[batch.., c, r]` viewed through `.t()`.
    T,
    /// Row-major `[r, c, batch]` permuted to `[batch, r, c]`: no unit stride in the matrix.
    BatchInner,
}

#[derive(Clone, Debug)]
struct Case {
    a_batch: Vec<usize>,
    b_batch: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    sa: Store,
    sb: Store,
    bias: bool,
    act: Option<Activation>,
    want: Plan,
}

const fn op(k_major: bool, vec4: bool) -> Operand {
    Operand { k_major, vec4 }
}

fn tiled(a: Operand, b: Operand) -> Plan {
    Plan::Tiled {
        a,
        b,
        block: MatmulBlock::B64,
    }
}

/// `c` with a tiled plan moved to `block` (other plans unchanged).
fn on_block(c: &Case, block: MatmulBlock) -> Case {
    let want = match c.want {
        Plan::Tiled { a, b, .. } => Plan::Tiled { a, b, block },
        Plan::SplitK { a, b, splits, .. } => Plan::SplitK {
            a,
            b,
            block,
            splits,
        },
        p => p,
    };
    Case { want, ..c.clone() }
}

/// A device whose tiled matmuls all take `block`.
fn forced(block: MatmulBlock) -> WgpuBackend {
    WgpuBackend::with_options(&crate::DeviceOptions {
        matmul_block: Some(block),
        ..crate::DeviceOptions::default()
    })
    .unwrap()
}

fn split(a: Operand, b: Operand, splits: usize) -> Plan {
    Plan::SplitK {
        a,
        b,
        block: MatmulBlock::B64,
        splits,
    }
}

fn case(m: usize, k: usize, n: usize, sa: Store, sb: Store, want: Plan) -> Case {
    Case {
        a_batch: vec![],
        b_batch: vec![],
        m,
        k,
        n,
        sa,
        sb,
        bias: false,
        act: None,
        want,
    }
}

/// Every case, each with the plan it must take.
fn cases() -> Vec<Case> {
    use Store::{BatchInner, N, T};
    let (k1, k4, x1, x4) = (
        op(true, false),
        op(true, true),
        op(false, false),
        op(false, true),
    );
    let epi = |c: Case, act: Activation| Case {
        bias: true,
        act: Some(act),
        ..c
    };
    let batched = |c: Case, ab: &[usize], bb: &[usize]| Case {
        a_batch: ab.to_vec(),
        b_batch: bb.to_vec(),
        ..c
    };
    vec![
        // NN: ragged M, N against 64 and K against 16; scalar and vec4 staging.
        case(67, 37, 70, N, N, tiled(k1, x1)),
        case(67, 36, 68, N, N, tiled(k4, x4)),
        case(130, 36, 71, N, N, tiled(k4, x1)),
        case(65, 37, 68, N, N, tiled(k1, x4)),
        // One tile exactly, and K below one vector.
        case(64, 16, 64, N, N, tiled(k4, x4)),
        case(5, 3, 6, N, N, tiled(k1, x1)),
        // NT (b = `.t()` of a row-major [N, K]).
        case(67, 37, 70, N, T, tiled(k1, k1)),
        case(67, 36, 70, N, T, tiled(k4, k4)),
        // TN (a = `.t()` of a row-major [K, M]).
        case(67, 37, 70, T, N, tiled(x1, x1)),
        case(68, 37, 72, T, N, tiled(x4, x4)),
        case(68, 37, 70, T, N, tiled(x4, x1)),
        case(67, 37, 72, T, N, tiled(x1, x4)),
        // TT.
        case(67, 37, 70, T, T, tiled(x1, k1)),
        case(68, 36, 70, T, T, tiled(x4, k4)),
        case(67, 36, 70, T, T, tiled(x1, k4)),
        case(68, 37, 70, T, T, tiled(x4, k1)),
        // Batches: equal, broadcast on either side, with the epilogue.
        batched(case(67, 36, 68, N, N, tiled(k4, x4)), &[3], &[3]),
        batched(
            epi(case(67, 37, 70, N, T, tiled(k1, k1)), Activation::Gelu),
            &[2, 3],
            &[3],
        ),
        batched(
            epi(case(68, 36, 68, T, N, tiled(x4, x4)), Activation::Silu),
            &[],
            &[2],
        ),
        // The epilogue on each variant family.
        epi(case(67, 36, 68, N, N, tiled(k4, x4)), Activation::Relu),
        epi(case(67, 37, 70, T, T, tiled(x1, k1)), Activation::Gelu),
        // K = 0: act(bias).
        epi(case(67, 0, 70, N, N, tiled(k1, x1)), Activation::Silu),
        // Split-K for few output tiles and a long K: 64 ranges of 256; 16 ranges per
        // batch with the epilogue; 10 ranges of 300 (at most 3000 / 256 = 11 ranges, and
        // 11 does not divide 3000); a prime K cannot split.
        case(64, 16384, 64, N, N, split(k4, x4, 64)),
        batched(
            epi(
                case(37, 4096, 50, N, T, split(k4, k4, 16)),
                Activation::Gelu,
            ),
            &[2],
            &[2],
        ),
        case(33, 3000, 20, T, N, split(x1, x4, 10)),
        case(20, 1031, 24, N, N, tiled(k1, x4)),
        // GEMV, M = 1: W = B along N (column layout) or along K (dot product).
        case(
            1,
            1000,
            129,
            N,
            N,
            Plan::Gemv {
                dot: false,
                n1: false,
            },
        ),
        case(
            1,
            1000,
            129,
            N,
            T,
            Plan::Gemv {
                dot: true,
                n1: false,
            },
        ),
        epi(
            case(
                1,
                33,
                7,
                N,
                T,
                Plan::Gemv {
                    dot: true,
                    n1: false,
                },
            ),
            Activation::Gelu,
        ),
        batched(
            epi(
                case(
                    1,
                    70,
                    65,
                    N,
                    N,
                    Plan::Gemv {
                        dot: false,
                        n1: false,
                    },
                ),
                Activation::Relu,
            ),
            &[3],
            &[1],
        ),
        // GEMV, N = 1: W = Aᵀ, the bias one value for every row.
        case(
            129,
            1000,
            1,
            N,
            N,
            Plan::Gemv {
                dot: true,
                n1: true,
            },
        ),
        case(
            129,
            1000,
            1,
            T,
            N,
            Plan::Gemv {
                dot: false,
                n1: true,
            },
        ),
        batched(
            epi(
                case(
                    7,
                    65,
                    1,
                    N,
                    N,
                    Plan::Gemv {
                        dot: true,
                        n1: true,
                    },
                ),
                Activation::Silu,
            ),
            &[2],
            &[],
        ),
        // M = N = 1: one dot product.
        epi(
            case(
                1,
                1000,
                1,
                N,
                N,
                Plan::Gemv {
                    dot: true,
                    n1: false,
                },
            ),
            Activation::Relu,
        ),
        // No unit stride in either matrix: the strided fallback.
        batched(
            epi(
                case(33, 20, 35, BatchInner, N, Plan::Strided),
                Activation::Gelu,
            ),
            &[2],
            &[],
        ),
    ]
}

/// A device operand of logical shape `[batch.., r, c]` stored as `store`, and its stored
/// values (exactly as rounded to `dtype`).
fn operand(
    dev: &WgpuBackend,
    batch: &[usize],
    r: usize,
    c: usize,
    store: Store,
    dtype: DType,
    seed: u64,
) -> Tensor<WgpuBackend> {
    let (stored, perm): (Vec<usize>, Option<Vec<usize>>) = match store {
        Store::N => (batch.iter().copied().chain([r, c]).collect(), None),
        Store::T => {
            let rank = batch.len() + 2;
            let mut perm: Vec<usize> = (0..rank).collect();
            perm.swap(rank - 2, rank - 1);
            (batch.iter().copied().chain([c, r]).collect(), Some(perm))
        }
        Store::BatchInner => {
            assert_eq!(batch.len(), 1, "BatchInner takes one batch axis");
            (vec![r, c, batch[0]], Some(vec![2, 0, 1]))
        }
    };
    let t = Tensor::randn(dev, &stored, dtype, seed).unwrap();
    match perm {
        Some(p) => t.permute(&p).unwrap(),
        None => t,
    }
}

/// The spec of `a @ b`, for its plan and the reference.
fn spec_of(
    a: &Tensor<WgpuBackend>,
    b: &Tensor<WgpuBackend>,
    bias: Option<&Tensor<WgpuBackend>>,
    act: Option<Activation>,
) -> MatmulSpec {
    MatmulSpec::new(a, b, bias, act).unwrap()
}

/// The f64 product read through the spec's views of the stored values, and the
/// magnitude |A|·|B| + |bias| the error is measured against.
fn reference(
    spec: &MatmulSpec,
    ha: &[f64],
    hb: &[f64],
    hbias: Option<&[f64]>,
) -> (Vec<f64>, Vec<f64>) {
    let (m, k, n) = (spec.m, spec.k, spec.n);
    let (mut out, mut mag) = (Vec::new(), Vec::new());
    for bi in 0..spec.batch() {
        let (oa, ob) = (spec.a_offset(bi), spec.b_offset(bi));
        for i in 0..m {
            for j in 0..n {
                let (mut acc, mut abs) = (0.0, 0.0);
                for p in 0..k {
                    let x = ha[oa + i * spec.a.row_stride + p * spec.a.col_stride];
                    let y = hb[ob + p * spec.b.row_stride + j * spec.b.col_stride];
                    acc += x * y;
                    abs += (x * y).abs();
                }
                if let (Some(h), Some(v)) = (hbias, &spec.bias) {
                    let c = h[v.offset + j * v.stride];
                    acc += c;
                    abs += c.abs();
                }
                out.push(spec.activation.map_or(acc, |a| a.apply_f64(acc)));
                mag.push(abs);
            }
        }
    }
    (out, mag)
}

/// Runs `c` in `dtype` on `dev`: checks the plan and the result.
fn run(dev: &WgpuBackend, c: &Case, dtype: DType, seed: u64) {
    let name = format!("{dtype} {c:?}");
    let a = operand(dev, &c.a_batch, c.m, c.k, c.sa, dtype, seed);
    let b = operand(dev, &c.b_batch, c.k, c.n, c.sb, dtype, seed ^ 1);
    let bias = c
        .bias
        .then(|| Tensor::randn(dev, &[c.n], dtype, seed ^ 2).unwrap());
    let spec = spec_of(&a, &b, bias.as_ref(), c.act);
    let offs: Vec<u32> = (0..spec.batch())
        .flat_map(|i| [spec.a_offset(i), spec.b_offset(i)])
        .map(|o| fit_u32(o).unwrap())
        .collect();
    assert_eq!(
        plan(&spec, &offs, dev.matmul_blocks()),
        c.want,
        "{name}: plan"
    );
    let got = a.matmul_fused(&b, bias.as_ref(), c.act).unwrap();
    assert_eq!(got.shape(), spec.output_shape().as_slice(), "{name}");
    assert_eq!(got.dtype(), dtype, "{name}");
    // Stored values: the contiguous storages downloaded whole.
    let stored = |t: &Tensor<WgpuBackend>| {
        let s = t.storage();
        let len = (s.bytes as usize) / dtype.size_in_bytes();
        dev.download(s, dtype, 0, len).unwrap().to_f64()
    };
    let hbias = bias.as_ref().map(stored);
    let (want, mag) = reference(&spec, &stored(&a), &stored(&b), hbias.as_deref());
    Tolerance::for_dtype(dtype)
        .check_scaled(&got.to_f64_vec().unwrap(), &want, &mag)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
}

fn device() -> WgpuBackend {
    WgpuBackend::new().expect("a wgpu adapter (lavapipe: apt-get install mesa-vulkan-drivers)")
}

#[test]
fn every_matmul_variant_matches_the_reference() {
    let dev = device();
    let mut dtypes = vec![DType::F32, DType::BF16];
    if dev.info().dtypes.contains(&DType::F16) {
        dtypes.push(DType::F16);
    }
    for dtype in dtypes {
        for (i, c) in cases().iter().enumerate() {
            run(&dev, c, dtype, 1000 + i as u64);
        }
    }
}

/// With grids folded at 31 groups per dimension, a batch of tiles past 31 groups.
#[test]
fn tiled_and_gemv_grids_fold() {
    let dev = WgpuBackend::with_options(&crate::DeviceOptions {
        max_workgroups_per_dim: Some(31),
        without_subgroups: true,
        ..crate::DeviceOptions::default()
    })
    .unwrap();
    let c = Case {
        a_batch: vec![5],
        b_batch: vec![5],
        ..case(
            130,
            36,
            200,
            Store::N,
            Store::N,
            tiled(op(true, true), op(false, true)),
        )
    };
    run(&dev, &c, DType::F32, 7);
    let g = Case {
        a_batch: vec![3],
        b_batch: vec![3],
        ..case(
            1,
            40,
            1500,
            Store::N,
            Store::T,
            Plan::Gemv {
                dot: true,
                n1: false,
            },
        )
    };
    run(&dev, &g, DType::F32, 8);
}

/// Each variant compiles once: a second round of every case compiles nothing, and the
/// first compiled exactly one matmul kernel per distinct (variant, epilogue); on the
/// default device and with each wide block forced.
#[test]
fn each_matmul_variant_compiles_once() {
    for block in [None, Some(MatmulBlock::B128x64), Some(MatmulBlock::B128)] {
        let dev = block.map_or_else(device, forced);
        let cases: Vec<Case> = cases()
            .iter()
            .map(|c| block.map_or_else(|| c.clone(), |b| on_block(c, b)))
            .collect();
        compiles_once(&dev, &cases, block);
    }
}

fn compiles_once(dev: &WgpuBackend, cases: &[Case], block: Option<MatmulBlock>) {
    let matmul_keys = |dev: &WgpuBackend| {
        let mut k: Vec<String> = dev
            .kernel_keys()
            .into_iter()
            .filter(|k| k.starts_with("matmul") || k.starts_with("gemv"))
            .collect();
        k.sort();
        k
    };
    for (i, c) in cases.iter().enumerate() {
        run(dev, c, DType::F32, i as u64);
    }
    let (first, compiled) = (matmul_keys(dev), dev.compiled_kernels());
    for (i, c) in cases.iter().enumerate() {
        run(dev, c, DType::F32, i as u64);
    }
    assert_eq!(
        dev.compiled_kernels(),
        compiled,
        "{block:?}: a kernel was compiled twice"
    );
    // One kernel per distinct variant: 14 tiled layouts (the two with A and B both
    // along K but only one of them vectorised need a padded view), GEMV dot and column,
    // strided, times the epilogues the cases use.
    let tiled: std::collections::BTreeSet<&str> = first
        .iter()
        .filter_map(|k| {
            k.rsplit('/')
                .next()
                .filter(|_| k.starts_with("matmul-tiled"))
        })
        .collect();
    assert_eq!(
        tiled.len(),
        14,
        "{block:?}: tiled layouts compiled: {tiled:?}"
    );
    let name = block.unwrap_or_default();
    assert!(
        first
            .iter()
            .filter(|k| k.starts_with("matmul-tiled"))
            .all(|k| k.contains(&format!("/{}/", name.name()))),
        "{block:?}: {first:?}"
    );
    for kind in ["gemv/", "matmul/", "matmul-splitk/"] {
        assert!(
            first.iter().any(|k| k.starts_with(kind)),
            "{kind}: {first:?}"
        );
    }
    let distinct: std::collections::BTreeSet<String> = cases
        .iter()
        .flat_map(|c| match c.want {
            // The first pass is the tiled kernel without an epilogue.
            Plan::SplitK { a, b, block, .. } => vec![
                format!("{:?}/false/None", Plan::Tiled { a, b, block }),
                format!("splitk/{}/{:?}", c.bias, c.act),
            ],
            p => vec![format!("{:?}/{}/{:?}", key_of(p), c.bias, c.act)],
        })
        .collect();
    assert_eq!(first.len(), distinct.len(), "{first:?}");
}

/// Cases for the wide blocks beyond [`cases`]: several blocks in M and N with ragged
/// edges against 128 and 64, several k-steps with K ragged against 16 (so the register
/// prefetch of the next step runs and reads past K), every layout family, batches and
/// the epilogue. Their plans name the 64 block; [`on_block`] moves them.
fn wide_cases() -> Vec<Case> {
    use Store::{N, T};
    let (k1, k4, x1, x4) = (
        op(true, false),
        op(true, true),
        op(false, false),
        op(false, true),
    );
    let epi = |c: Case, act: Activation| Case {
        bias: true,
        act: Some(act),
        ..c
    };
    vec![
        case(259, 53, 190, N, N, tiled(k1, x1)),
        case(260, 52, 196, N, N, tiled(k4, x4)),
        case(257, 68, 132, N, T, tiled(k4, k4)),
        case(131, 37, 261, T, N, tiled(x1, x1)),
        case(260, 36, 132, T, T, tiled(x4, k4)),
        case(129, 49, 129, N, T, tiled(k1, k1)),
        Case {
            a_batch: vec![2],
            b_batch: vec![2],
            ..epi(case(130, 37, 129, N, T, tiled(k1, k1)), Activation::Gelu)
        },
        Case {
            a_batch: vec![],
            b_batch: vec![3],
            ..epi(case(200, 40, 136, T, N, tiled(x4, x4)), Activation::Relu)
        },
    ]
}

/// Every tiled case, and the wide-only ones, on each wide block forced, in every float
/// type the device has.
#[test]
fn every_layout_matches_the_reference_on_the_wide_blocks() {
    for block in [MatmulBlock::B128x64, MatmulBlock::B128] {
        let dev = forced(block);
        let mut dtypes = vec![DType::F32, DType::BF16];
        if dev.info().dtypes.contains(&DType::F16) {
            dtypes.push(DType::F16);
        }
        let all: Vec<Case> = cases()
            .into_iter()
            .filter(|c| matches!(c.want, Plan::Tiled { .. } | Plan::SplitK { .. }))
            .chain(wide_cases())
            .map(|c| on_block(&c, block))
            .collect();
        for dtype in dtypes {
            for (i, c) in all.iter().enumerate() {
                run(&dev, c, dtype, 3000 + i as u64);
            }
        }
    }
}

/// Without forcing, a product whose 128 × 128 grid fills the GPU takes that block (a
/// batch of 64 products 256 × 256) and one too small for it keeps the 64 block.
#[test]
fn large_products_take_the_wide_block() {
    let dev = device();
    let storage = dev.matmul_blocks().storage;
    let (k1, x4) = (op(true, false), op(false, true));
    let big = Case {
        a_batch: vec![64],
        b_batch: vec![64],
        ..case(
            256,
            9,
            256,
            Store::N,
            Store::N,
            Plan::Tiled {
                a: k1,
                b: x4,
                block: if MatmulBlock::B128.workgroup_bytes(k1, x4) <= storage {
                    MatmulBlock::B128
                } else {
                    MatmulBlock::B64
                },
            },
        )
    };
    run(&dev, &big, DType::F32, 11);
    run(
        &dev,
        &case(256, 9, 256, Store::N, Store::N, tiled(k1, x4)),
        DType::F32,
        12,
    );
}

/// The block rule: large grids take the largest block that fits the workgroup memory;
/// a forced block falls back to a smaller one that fits; the environment's spellings.
#[test]
fn block_choice_follows_shape_and_limits() {
    use MatmulBlock::{B64, B128, B128x64};
    let square = |m: usize, n: usize, batch: usize, a_t: bool| MatmulSpec {
        dtype: DType::F32,
        batch_shape: vec![batch],
        m,
        k: 64,
        n,
        a: if a_t {
            xkern_core::MatrixView {
                offset: 0,
                row_stride: 1,
                col_stride: m,
                batch_strides: vec![m * 64],
            }
        } else {
            xkern_core::MatrixView {
                offset: 0,
                row_stride: 64,
                col_stride: 1,
                batch_strides: vec![m * 64],
            }
        },
        b: xkern_core::MatrixView {
            offset: 0,
            row_stride: n,
            col_stride: 1,
            batch_strides: vec![n * 64],
        },
        bias: None,
        activation: None,
    };
    let block = |s: &MatmulSpec, forced: Option<MatmulBlock>, storage: usize| {
        let offs: Vec<u32> = (0..s.batch())
            .flat_map(|i| [s.a_offset(i), s.b_offset(i)])
            .map(|o| fit_u32(o).unwrap())
            .collect();
        match plan(s, &offs, Blocks { forced, storage }) {
            Plan::Tiled { block, .. } => block,
            p => panic!("{p:?}"),
        }
    };
    let h100 = 49152;
    assert_eq!(block(&square(4096, 4096, 1, false), None, h100), B128);
    assert_eq!(block(&square(2048, 2048, 1, false), None, h100), B128);
    assert_eq!(block(&square(1536, 1536, 1, false), None, h100), B128x64);
    assert_eq!(block(&square(1024, 1024, 1, false), None, h100), B64);
    assert_eq!(block(&square(1024, 1024, 4, false), None, h100), B128);
    // 16 KiB: NN pads A (16 × 132 + 16 × 128 words > 16 KiB), TN does not.
    assert_eq!(block(&square(4096, 4096, 1, false), None, 16384), B128x64);
    assert_eq!(block(&square(4096, 4096, 1, true), None, 16384), B128);
    assert_eq!(block(&square(4096, 4096, 1, false), None, 8192), B64);
    // Forced: taken even for small products, else the next smaller that fits.
    assert_eq!(block(&square(8, 8, 1, false), Some(B128), h100), B128);
    assert_eq!(block(&square(4096, 4096, 1, false), Some(B64), h100), B64);
    assert_eq!(block(&square(8, 8, 1, false), Some(B128), 16384), B128x64);
    assert_eq!(block(&square(8, 8, 1, false), Some(B128x64), 8192), B64);
    assert_eq!(MatmulBlock::parse(" 128 "), Ok(Some(B128)));
    assert_eq!(MatmulBlock::parse("128X64"), Ok(Some(B128x64)));
    assert_eq!(MatmulBlock::parse("64"), Ok(Some(B64)));
    assert_eq!(MatmulBlock::parse("auto"), Ok(None));
    assert!(MatmulBlock::parse("96").is_err());
}

/// The part of a plan that selects a kernel (N = 1 reuses the M = 1 GEMV kernels).
fn key_of(p: Plan) -> Plan {
    match p {
        Plan::Gemv { dot, .. } => Plan::Gemv { dot, n1: false },
        p => p,
    }
}

/// [`plan`] on a device with WebGPU's guaranteed 16 KiB of workgroup memory, no block
/// forced.
fn plan16(spec: &MatmulSpec, offs: &[u32]) -> Plan {
    plan(
        spec,
        offs,
        Blocks {
            forced: None,
            storage: 16384,
        },
    )
}

/// Vector staging only where its bounds hold: aligned batch offsets and strides, a
/// contiguous extent that is a non-zero multiple of 4.
#[test]
fn vec4_staging_needs_aligned_views() {
    let view = |row_stride, col_stride| xkern_core::MatrixView {
        offset: 0,
        row_stride,
        col_stride,
        batch_strides: vec![0],
    };
    let spec = |m, k, n, a, b| MatmulSpec {
        dtype: DType::F32,
        batch_shape: vec![1],
        m,
        k,
        n,
        a,
        b,
        bias: None,
        activation: None,
    };
    let (k4, x4, k1, x1) = (
        op(true, true),
        op(false, true),
        op(true, false),
        op(false, false),
    );
    let s = spec(8, 8, 8, view(8, 1), view(8, 1));
    assert_eq!(plan16(&s, &[0, 0]), tiled(k4, x4));
    // A misaligned batch offset of either operand.
    assert_eq!(plan16(&s, &[2, 0]), tiled(k1, x4));
    assert_eq!(plan16(&s, &[0, 6]), tiled(k4, x1));
    // A row stride that breaks alignment though K is a multiple of 4.
    assert_eq!(
        plan16(&spec(8, 8, 8, view(10, 1), view(8, 1)), &[0, 0]),
        tiled(k1, x4)
    );
    // K = 0: no vector loads (an operand may be a one-word buffer).
    assert_eq!(
        plan16(&spec(8, 0, 8, view(0, 1), view(8, 1)), &[0, 0]),
        tiled(k1, x1)
    );
    // No unit stride: the strided kernel.
    assert_eq!(
        plan16(&spec(8, 8, 8, view(16, 2), view(8, 1)), &[0, 0]),
        Plan::Strided
    );
}

/// The f16 cases of [`cases`] that take the register-tiled kernel, plus larger ragged
/// shapes (several 128 × 128 blocks and 32-deep K steps, tails on every side): on a
/// device with cooperative matrices all of these run on the cooperative-matrix kernel.
fn coop_cases() -> Vec<Case> {
    use Store::{N, T};
    let (k1, k4, x1, x4) = (
        op(true, false),
        op(true, true),
        op(false, false),
        op(false, true),
    );
    let mut v: Vec<Case> = cases()
        .into_iter()
        .filter(|c| matches!(c.want, Plan::Tiled { .. }))
        .collect();
    v.extend([
        case(257, 97, 131, N, N, tiled(k1, x1)),
        case(256, 96, 260, N, N, tiled(k4, x4)),
        case(129, 161, 255, N, T, tiled(k1, k1)),
        case(200, 33, 301, T, N, tiled(x4, x1)),
        case(131, 64, 129, T, T, tiled(x1, k4)),
        Case {
            bias: true,
            act: Some(Activation::Relu),
            ..case(384, 128, 256, N, N, tiled(k4, x4))
        },
    ]);
    v
}

/// Runs `cases` in f16 on `dev` and checks that every one ran on the cooperative-matrix
/// kernel (key prefix `matmul-coop`) and none on the tiled one.
fn run_coop_cases(dev: &WgpuBackend, cases: &[Case]) {
    for (i, c) in cases.iter().enumerate() {
        run(dev, c, DType::F16, 3000 + i as u64);
    }
    let keys = dev.kernel_keys();
    assert!(
        keys.iter().any(|k| k.starts_with("matmul-coop/")),
        "no cooperative-matrix kernel ran: {keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.starts_with("matmul-tiled/")),
        "an f16 case ran on the register-tiled kernel: {keys:?}"
    );
}

/// The cooperative-matrix kernel's staging, fragment addressing, write-back and epilogue
/// on lavapipe, with its cooperative operations emulated in plain WGSL (see
/// `matmul_coop_emulated.wgsl`), on every layout, ragged sizes, batches and epilogues.
/// Needs f16 and a fixed subgroup size (the kernel numbers subgroups with `subgroup_id`).
#[test]
fn coop_kernel_emulated_matches_the_reference() {
    let dev = device();
    let info = dev.info();
    let gpu = dev.gpu();
    let (lo, hi) = (
        gpu.adapter_info.subgroup_min_size,
        gpu.adapter_info.subgroup_max_size,
    );
    if !info.dtypes.contains(&DType::F16)
        || !info.features.iter().any(|f| f == "subgroup")
        || lo != hi
    {
        eprintln!("skipped: the adapter lacks f16, subgroups or a fixed subgroup size");
        return;
    }
    *gpu.emulate_coop.lock().unwrap() = Some(crate::matmul_coop::CoopShape { sg: hi });
    // A subset of `coop_cases` (lavapipe compiles each variant slowly): all eight operand
    // layouts, several blocks with tails on every side, K = 0 and K below one step,
    // broadcast batches, bias and activations.
    use Store::{N, T};
    let (k1, k4, x1, x4) = (
        op(true, false),
        op(true, true),
        op(false, false),
        op(false, true),
    );
    let epi = |c: Case, act: Activation| Case {
        bias: true,
        act: Some(act),
        ..c
    };
    let cases = [
        case(257, 97, 131, N, N, tiled(k1, x1)),
        case(256, 96, 260, N, N, tiled(k4, x4)),
        case(129, 161, 255, N, T, tiled(k1, k1)),
        case(200, 33, 301, T, N, tiled(x4, x1)),
        case(131, 64, 129, T, T, tiled(x1, k4)),
        epi(case(67, 36, 68, N, N, tiled(k4, x4)), Activation::Relu),
        epi(case(67, 0, 70, N, N, tiled(k1, x1)), Activation::Silu),
        Case {
            a_batch: vec![2, 3],
            b_batch: vec![3],
            ..epi(case(67, 5, 70, N, T, tiled(k1, k1)), Activation::Gelu)
        },
    ];
    run_coop_cases(&dev, &cases);
    assert!(
        dev.kernel_keys()
            .iter()
            .any(|k| k.starts_with("matmul-coop/") && k.ends_with("/emulated"))
    );
}

/// The f16 path without cooperative matrices is the register-tiled kernel, and a device
/// does not request them unless asked to (they are opt-in).
#[test]
fn coop_off_switch_and_fallback() {
    let off = WgpuBackend::with_options(&crate::DeviceOptions::default()).unwrap();
    assert!(off.gpu().coop.is_empty());
    assert_eq!(off.gpu().coop_shape(), None);
    assert!(
        !off.info()
            .features
            .iter()
            .any(|f| f.starts_with("coop-matrix="))
    );
    use crate::matmul::with_coop;
    use crate::matmul_coop::CoopShape;
    let (k4, x4) = (op(true, true), op(false, true));
    let shape = Some(CoopShape { sg: 32 });
    let t = tiled(k4, x4);
    let coop = Plan::Coop {
        a: k4,
        b: x4,
        shape: CoopShape { sg: 32 },
    };
    assert_eq!(with_coop(t, DType::F16, shape), coop);
    assert_eq!(with_coop(t, DType::F16, None), t);
    for dtype in [DType::F32, DType::BF16] {
        assert_eq!(with_coop(t, dtype, shape), t);
    }
    for p in [
        Plan::Strided,
        Plan::Gemv {
            dot: true,
            n1: false,
        },
    ] {
        assert_eq!(with_coop(p, DType::F16, shape), p);
    }
    let dev = device();
    if dev.info().dtypes.contains(&DType::F16) && dev.gpu().coop_shape().is_none() {
        let c = case(67, 36, 68, Store::N, Store::N, tiled(k4, x4));
        run(&dev, &c, DType::F16, 7);
        assert!(
            dev.kernel_keys()
                .iter()
                .any(|k| k.starts_with("matmul-tiled/f16"))
        );
    }
}

/// A cooperative-matrix kernel that fails to compile costs the speed-up, not the op:
/// the call that hit the failure and every later one run on the register-tiled kernel.
#[test]
fn coop_compile_failure_falls_back() {
    let dev = device();
    if !dev.info().dtypes.contains(&DType::F16) {
        return;
    }
    let gpu = dev.gpu();
    *gpu.emulate_coop.lock().unwrap() = Some(crate::matmul_coop::CoopShape { sg: 32 });
    assert!(gpu.coop_shape().is_some());
    gpu.coop_failed("simulated".into());
    assert_eq!(gpu.coop_shape(), None);
    let c = case(
        67,
        36,
        68,
        Store::N,
        Store::N,
        tiled(op(true, true), op(false, true)),
    );
    run(&dev, &c, DType::F16, 9);
    let keys = dev.kernel_keys();
    assert!(
        keys.iter().any(|k| k.starts_with("matmul-tiled/f16")),
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.starts_with("matmul-coop/")),
        "{keys:?}"
    );
}

/// On a GPU with cooperative matrices (run on the H100 with
/// `cargo test -p xkern-wgpu --release --lib -- --ignored coop_matrix_on_real_gpu`): the
/// device must offer the 16×16×16 f16 → f32 configuration (the test fails loudly if not),
/// and every f16 case, large ragged ones included, must run on the cooperative-matrix
/// kernel and match the f64 reference.
#[test]
#[ignore = "needs a GPU with cooperative matrices"]
fn coop_matrix_on_real_gpu() {
    let dev = WgpuBackend::with_options(&crate::DeviceOptions {
        with_coop_matrix: true,
        ..crate::DeviceOptions::default()
    })
    .unwrap();
    let notes = dev.info().features;
    eprintln!("device: {} {notes:?}", dev.name());
    assert!(
        dev.gpu().coop_shape().is_some(),
        "no cooperative-matrix kernel on this device (need EXPERIMENTAL_COOPERATIVE_MATRIX \
         with 16x16x16:f16->f32, SUBGROUP, a fixed subgroup size): {notes:?}"
    );
    assert!(
        notes.iter().any(|f| f.starts_with("matmul-coop=sg")),
        "{notes:?}"
    );
    run_coop_cases(&dev, &coop_cases());
    use Store::{N, T};
    let (k1, k4, x1, x4) = (
        op(true, false),
        op(true, true),
        op(false, false),
        op(false, true),
    );
    for (i, c) in [
        case(1024, 1024, 1024, N, N, tiled(k4, x4)),
        case(1000, 1003, 999, N, N, tiled(k1, x1)),
        case(515, 2048, 770, N, T, tiled(k4, k4)),
    ]
    .iter()
    .enumerate()
    {
        run(&dev, c, DType::F16, 4000 + i as u64);
    }
}
