//! The packed GEMM around its block edges, for every instruction set this machine runs:
//! shapes at MR±1, NR±1, KC±1 and the task block sizes, every transposition, every float
//! dtype, the fused epilogue on ragged tiles, the matrix-vector paths, the batched
//! small-matrix path and the direct (unpacked) path. Checked against the f64 reference with the dtype's tolerance.

use xkern_core::reference::{self, HostTensor};
use xkern_core::{Activation, DType, Tensor, Tolerance};
use xkern_cpu::{CpuBackend, Isa};

/// (MR, NR) of each ISA's micro-kernel; KC and the task blocks are shared.
fn tile(isa: Isa) -> (usize, usize) {
    match isa {
        Isa::Avx512 => (12, 32),
        Isa::Avx2 => (6, 16),
        Isa::Generic => (4, 16),
    }
}
const KC: usize = 256;
const MC: usize = 192;

#[allow(clippy::too_many_arguments)]
fn check(
    dev: &CpuBackend,
    batch: &[usize],
    m: usize,
    k: usize,
    n: usize,
    a_t: bool,
    b_t: bool,
    dtype: DType,
    epilogue: bool,
) {
    let seed = (m * 7919 + k * 104_729 + n * 13 + batch.len()) as u64;
    let stored = |r: usize, c: usize, t: bool| {
        let mut s = batch.to_vec();
        s.extend(if t { [c, r] } else { [r, c] });
        s
    };
    let view = |x: Tensor<CpuBackend>, t: bool| if t { x.t().unwrap() } else { x };
    let a = view(
        Tensor::randn(dev, &stored(m, k, a_t), dtype, seed).unwrap(),
        a_t,
    );
    let b = view(
        Tensor::randn(dev, &stored(k, n, b_t), dtype, seed + 1).unwrap(),
        b_t,
    );
    let bias = epilogue.then(|| Tensor::randn(dev, &[n], dtype, seed + 2).unwrap());
    let act = epilogue.then_some(Activation::Gelu);
    check_views(&a, &b, bias.as_ref(), act, || {
        format!(
            "{:?} batch {batch:?} m={m} k={k} n={n} a_t={a_t} b_t={b_t} {dtype} epilogue={epilogue}",
            dev.isa()
        )
    });
}

/// `a · b` (with the epilogue) against the f64 reference, in the operands' dtype's
/// tolerance; `what` names the case when it fails.
fn check_views(
    a: &Tensor<CpuBackend>,
    b: &Tensor<CpuBackend>,
    bias: Option<&Tensor<CpuBackend>>,
    act: Option<Activation>,
    what: impl Fn() -> String,
) {
    let got = a.matmul_fused(b, bias, act).unwrap();
    let host = |t: &Tensor<CpuBackend>| HostTensor::new(t.shape(), t.to_f64_vec().unwrap());
    let bias_host = bias.map(|t| t.to_f64_vec().unwrap());
    let want = reference::matmul(&host(a), &host(b), bias_host.as_deref(), act);
    assert_eq!(got.shape(), want.shape.as_slice(), "{}", what());
    if let Err(e) = Tolerance::for_dtype(a.dtype()).check(&got.to_f64_vec().unwrap(), &want.data) {
        panic!("{}: {e}", what());
    }
}

fn each_isa(f: impl Fn(&CpuBackend, usize, usize)) {
    for isa in Isa::available() {
        let dev = CpuBackend::with_options(Some(2), isa).unwrap();
        let (mr, nr) = tile(isa);
        f(&dev, mr, nr);
    }
}

#[test]
fn rows_around_the_micro_tile_and_task_block() {
    each_isa(|dev, mr, nr| {
        // Row-major f32 takes the direct path on AVX-512; transposed A, the packed one.
        for m in [mr - 1, mr, mr + 1, 2 * mr + 1, MC - 1, MC + 1] {
            check(dev, &[], m, 37, nr + 1, false, false, DType::F32, false);
            check(dev, &[], m, 37, nr + 1, true, false, DType::F32, false);
        }
        // Every ragged last strip (1 to MR − 1 rows: AVX-512 runs a shorter kernel in
        // place, others a scratch tile), the packed path (A transposed), with and without
        // a second depth block (accumulating) and the epilogue.
        // (Above 2·MR rows: on AVX-512, 13 to 16 rows take the skinny path instead.)
        for m in 2 * mr + 1..3 * mr {
            check(dev, &[], m, 37, 2 * nr, true, false, DType::F32, m % 2 == 0);
            check(dev, &[], m, KC + 5, nr, true, false, DType::F32, m % 2 == 1);
        }
    });
}

#[test]
fn columns_around_the_micro_tile() {
    each_isa(|dev, mr, nr| {
        for n in [nr - 1, nr, nr + 1, 2 * nr + 3, 513] {
            check(dev, &[], mr + 1, 29, n, false, false, DType::F32, false);
            check(dev, &[], mr + 1, 29, n, true, false, DType::F32, false);
        }
    });
}

#[test]
fn depths_around_the_packed_panel() {
    each_isa(|dev, mr, nr| {
        for k in [1, 2, KC - 1, KC, KC + 1, 2 * KC + 1] {
            check(dev, &[], mr + 1, k, nr + 1, false, false, DType::F32, false);
            check(dev, &[], mr + 1, k, nr + 1, true, false, DType::F32, false);
        }
        // The bf16 pair kernel packs 2·KC depths per panel (pairs of bf16 in a slot):
        // odd depths leave a half-empty last pair in each panel. (More than 16 rows: up
        // to 16, AVX-512 takes the skinny path.)
        for k in [2 * KC - 1, 2 * KC, 2 * KC + 1, 4 * KC + 3] {
            let m = 2 * mr + 1;
            check(dev, &[], m, k, nr + 1, false, false, DType::BF16, false);
            check(dev, &[], m, k, nr + 1, true, false, DType::BF16, false);
        }
    });
}

#[test]
fn every_transposition_and_dtype_with_ragged_epilogue() {
    each_isa(|dev, mr, nr| {
        for dtype in DType::FLOATS {
            for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
                check(dev, &[], 2 * mr + 1, KC + 3, nr + 5, a_t, b_t, dtype, true);
            }
        }
    });
}

#[test]
fn matrix_vector_paths() {
    each_isa(|dev, _, _| {
        for dtype in DType::FLOATS {
            for (a_t, b_t) in [(false, false), (false, true), (true, false), (true, true)] {
                check(dev, &[], 1, 1000, 333, a_t, b_t, dtype, true);
                check(dev, &[], 333, 1000, 1, a_t, b_t, dtype, true);
            }
            check(dev, &[3], 1, 129, 70, false, true, dtype, false);
        }
        // x · B over chunks of 256 rows of B (one, two with a ragged second, many), and
        // beyond 64 chunks of 256 (then 64 longer ones); one output column too.
        for k in [63, 64, 65, 255, 256, 257, 513, 1000, 16_385, 20_000] {
            check(dev, &[], 1, k, 70, false, false, DType::F32, k == 513);
        }
        // Column blocks of 4096 (two, the second ragged).
        check(dev, &[], 1, 1024, 4100, false, false, DType::F32, true);
        check(dev, &[], 1, 700, 1, false, false, DType::F32, false);
        check(dev, &[2], 1, 600, 40, false, false, DType::BF16, false);
    });
}

#[test]
fn batched_small_and_broadcast() {
    each_isa(|dev, mr, nr| {
        check(dev, &[5], mr + 1, 7, nr - 1, false, false, DType::F32, true);
        check(dev, &[32], 128, 64, 128, false, false, DType::BF16, false);
        // Broadcast B over a batch of large-ish matrices (the parallel path per matrix).
        let a = Tensor::randn(dev, &[3, 130, 300], DType::F32, 1).unwrap();
        let b = Tensor::randn(dev, &[300, 70], DType::F32, 2).unwrap();
        check_views(&a, &b, None, None, || {
            format!("{:?} broadcast B", dev.isa())
        });
    });
}

/// Row-major f32 products: on AVX-512 read in place by 6 × 64 tiles (`matmul/direct.rs`),
/// one task per matrix of a batch of small ones, else parallel tasks of at most 256
/// columns. Every row count of a tile strip, columns around the 16-lane vectors, the
/// 64-wide tiles and the tasks, depths around the 256-deep blocks, operands whose rows
/// are not back to back (permuted batches), broadcast operands, and the epilogue on
/// ragged tiles; the other ISAs take the packed path on the same shapes.
#[test]
fn direct_products_read_in_place() {
    each_isa(|dev, _, _| {
        for m in 2..=13 {
            check(dev, &[3], m, 40, 77, false, false, DType::F32, m % 4 == 1);
        }
        for n in [1, 15, 16, 17, 63, 64, 65, 100, 129] {
            check(dev, &[2], 7, 33, n, false, false, DType::F32, n % 2 == 1);
        }
        for k in [1, 2, KC - 1, KC, KC + 1, 2 * KC + 3] {
            check(dev, &[2], 13, k, 70, false, false, DType::F32, true);
        }
        // One product in parallel tasks: ragged last strips, tiles and tasks.
        for (m, k, n) in [
            (17, 300, 255),
            (200, 257, 256),
            (61, 100, 257),
            (130, 513, 700),
        ] {
            check(dev, &[], m, k, n, false, false, DType::F32, true);
        }
        // Transposed operands (not rows in place) take the packed path.
        check(dev, &[4], 20, 30, 40, true, false, DType::F32, true);
        check(dev, &[4], 20, 30, 40, false, true, DType::F32, true);
        // Rows `batch · K` (A) and `batch · N` (B) apart, each matrix at its own offset.
        let (batch, m, k, n) = (3, 11, 50, 90);
        let a = Tensor::randn(dev, &[m, batch, k], DType::F32, 21)
            .unwrap()
            .permute(&[1, 0, 2])
            .unwrap();
        let b = Tensor::randn(dev, &[k, batch, n], DType::F32, 22)
            .unwrap()
            .permute(&[1, 0, 2])
            .unwrap();
        check_views(&a, &b, None, None, || {
            format!("{:?} strided A and B", dev.isa())
        });
        // One operand broadcast over the batch of the other.
        let a1 = Tensor::randn(dev, &[m, k], DType::F32, 23).unwrap();
        check_views(&a1, &b, None, None, || {
            format!("{:?} broadcast A", dev.isa())
        });
        let b1 = Tensor::randn(dev, &[k, n], DType::F32, 24).unwrap();
        check_views(&a, &b1, None, None, || {
            format!("{:?} broadcast B", dev.isa())
        });
    });
}

/// The direct path sums every output in the packed GEMM's order: the same product with A
/// row-major (direct on AVX-512) and A stored transposed (packed) gives the same bits,
/// over several depth blocks and ragged tiles.
#[test]
fn direct_and_packed_products_agree_bit_for_bit() {
    each_isa(|dev, _, _| {
        let (m, k, n) = (37, 700, 300);
        let a = Tensor::randn(dev, &[m, k], DType::F32, 31).unwrap();
        let b = Tensor::randn(dev, &[k, n], DType::F32, 32).unwrap();
        let a_packed = a.t().unwrap().contiguous().unwrap().t().unwrap();
        let direct = a.matmul(&b).unwrap().to_f64_vec().unwrap();
        let packed = a_packed.matmul(&b).unwrap().to_f64_vec().unwrap();
        let same = direct
            .iter()
            .zip(&packed)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{:?}: direct and packed products differ", dev.isa());
    });
}

#[test]
fn forced_isa_must_exist() {
    for isa in [Isa::Avx512, Isa::Avx2, Isa::Generic] {
        let r = CpuBackend::with_options(None, isa);
        assert_eq!(r.is_ok(), isa.is_available(), "{isa:?}");
    }
    assert!(Isa::parse("AVX2") == Some(Isa::Avx2) && Isa::parse("sse").is_none());
}

/// 2 ≤ M ≤ 16 against a row-major f32 B: the streaming skinny path on AVX-512 (every row
/// count, so each tile height 4, 8 and 16 with every ragged row count), columns around
/// its 16/32/64-wide tiles and its tasks (N / threads columns, 256 to 4096), depths around
/// its 16-row blocks; other ISAs take the packed path on the same shapes.
#[test]
fn skinny_rows_against_streamed_b() {
    each_isa(|dev, _, _| {
        for m in 2..=16 {
            check(dev, &[], m, 65, 77, false, false, DType::F32, m % 5 == 0);
        }
        // On 2 threads: one task below 512 columns, then two (ragged at 1100), and three
        // of at most 4096 at 8300.
        for n in [1, 15, 16, 17, 33, 63, 65, 255, 257, 513, 1100, 8300] {
            check(dev, &[], 16, 70, n, false, false, DType::F32, false);
            check(dev, &[], 7, 70, n, false, false, DType::F32, true);
        }
        for k in [1, 15, 16, 17, 33, 1000] {
            check(dev, &[], 12, k, 300, false, false, DType::F32, false);
            check(dev, &[], 3, k, 300, true, false, DType::F32, false);
        }
        // Large enough per matrix for the batched entries to take the skinny path too.
        check(dev, &[2], 16, 130, 1100, false, false, DType::F32, true);
        // 16-bit B, widened 16 rows at a time: ragged depth blocks and tiles, two tasks.
        for dtype in [DType::F16, DType::BF16] {
            for (m, k, n) in [(2, 17, 33), (7, 70, 1100), (16, 33, 65), (12, 1000, 300)] {
                check(dev, &[], m, k, n, false, false, dtype, m == 7);
            }
            check(dev, &[2], 16, 130, 1100, false, false, dtype, true);
        }
    });
}

/// The skinny path on B rows that are not packed back to back: a batch read through a
/// permuted view (row stride = batch · N, each matrix at its own offset) and a B
/// broadcast over the batch.
#[test]
fn skinny_rows_against_strided_and_broadcast_b() {
    each_isa(|dev, _, _| {
        let (batch, m, k, n) = (3, 9, 300, 1200);
        let a = Tensor::randn(dev, &[batch, m, k], DType::F32, 11).unwrap();
        let b = Tensor::randn(dev, &[k, batch, n], DType::F32, 12)
            .unwrap()
            .permute(&[1, 0, 2])
            .unwrap();
        check_views(&a, &b, None, None, || format!("{:?} strided B", dev.isa()));
        let w = Tensor::randn(dev, &[k, n], DType::F32, 13).unwrap();
        check_views(&a, &w, None, None, || {
            format!("{:?} broadcast B", dev.isa())
        });
    });
}

/// Wide products take the loop nest with parallel column tasks (each packing its own B
/// blocks; N ≥ 4 tasks of 2 micro-tiles per thread): ragged last tasks and tiles, several
/// depth blocks, the bias of every task at its own columns, every transposition, every
/// float dtype (bf16 pairs included), and a batch of such products.
#[test]
fn column_tasks_with_their_own_b_blocks() {
    each_isa(|dev, mr, _| {
        for n in [1024, 1100, 2100] {
            check(dev, &[], 2 * mr + 5, 600, n, false, false, DType::F32, true);
        }
        for dtype in DType::FLOATS {
            for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
                check(dev, &[], 37, 300, 1300, a_t, b_t, dtype, true);
            }
        }
        check(dev, &[2], 40, 90, 1200, false, false, DType::F32, true);
    });
}

/// Tall, narrow products take the row tasks (B packed whole, each task packing its own A
/// blocks): ragged last tasks, several depth blocks, N down to one column (not the
/// matrix-vector path when A is transposed), every transposition and dtype, a batch.
#[test]
fn row_tasks_with_their_own_a_blocks() {
    each_isa(|dev, mr, nr| {
        for (m, n) in [(1000, 33), (300, nr - 1), (8 * mr + 5, 2 * nr + 3)] {
            check(dev, &[], m, 600, n, false, false, DType::F32, true);
        }
        check(dev, &[], 700, 50, 2, true, true, DType::F32, true);
        for dtype in DType::FLOATS {
            for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
                check(dev, &[], 500, 300, 70, a_t, b_t, dtype, true);
            }
        }
        check(dev, &[2], 900, 90, 40, false, false, DType::F32, true);
    });
}

/// 16-bit operands are widened exactly to f32 (in blocks with F16C or AVX-512 where they
/// are packed or staged, element by element where a loop converts as it computes) and
/// then summed in the f32 path's order, so a 16-bit product is the f32 product of the
/// widened operands, rounded once: the same bits. Matrix-vector products with ragged
/// ends, as `x · B` (row sums of four) and as dot products (`x · Bᵀ`, `A · v`); skinny
/// products (B's rows widened 16 at a time); and packed products with A's lanes or B's
/// rows widened, on every ISA. (Packed bf16 products on AVX-512 BF16 use the pair
/// kernel, which rounds differently; those are checked against the reference elsewhere.)
#[test]
fn sixteen_bit_operands_give_the_widened_f32_product() {
    each_isa(|dev, _, _| {
        for dtype in [DType::F16, DType::BF16] {
            let pair_kernel = dtype == DType::BF16
                && dev.isa() == Isa::Avx512
                && std::arch::is_x86_feature_detected!("avx512bf16");
            let shapes: &[(usize, usize, usize, bool, bool)] = &[
                (1, 2501, 2100, false, false),
                (1, 3, 5000, false, false),
                (1, 2100, 2501, false, true),
                (2501, 2100, 1, false, false),
                (1, 2100, 3, false, true),
                (37, 300, 70, true, false),
                (37, 300, 70, false, false),
                (45, 530, 101, false, true),
                (45, 530, 101, true, true),
                (9, 700, 1000, false, false),
                (5, 37, 300, true, false),
                (3, 40, 2100, false, false),
            ];
            for (i, &(m, k, n, a_t, b_t)) in shapes.iter().enumerate() {
                if pair_kernel && m > 16 && n > 1 {
                    continue;
                }
                let seed = 900 + i as u64;
                let stored = |r: usize, c: usize, t: bool| if t { [c, r] } else { [r, c] };
                let view = |x: Tensor<CpuBackend>, t: bool| if t { x.t().unwrap() } else { x };
                let a16 = Tensor::randn(dev, &stored(m, k, a_t), dtype, seed).unwrap();
                let b16 = Tensor::randn(dev, &stored(k, n, b_t), dtype, seed + 1).unwrap();
                let (a32, b32) = (
                    a16.to_dtype(DType::F32).unwrap(),
                    b16.to_dtype(DType::F32).unwrap(),
                );
                let got = view(a16, a_t)
                    .matmul(&view(b16, b_t))
                    .unwrap()
                    .to_f64_vec()
                    .unwrap();
                let want = view(a32, a_t)
                    .matmul(&view(b32, b_t))
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap()
                    .to_f64_vec()
                    .unwrap();
                let differ = got
                    .iter()
                    .zip(&want)
                    .filter(|(g, w)| g.to_bits() != w.to_bits())
                    .count();
                assert_eq!(
                    differ,
                    0,
                    "{:?} {dtype} m={m} k={k} n={n} a_t={a_t} b_t={b_t}: {differ} of {} outputs differ",
                    dev.isa(),
                    got.len()
                );
            }
        }
    });
}
