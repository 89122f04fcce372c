//! Batched matmul with the fused epilogue: five kernel paths, chosen from the operand
//! strides, the shape and the device's workgroup-memory limit.
//!
//! - **Register-tiled, 64 × 64** (`matmul_tiled.wgsl`, small and medium products). A
//!   workgroup of 16 × 16 invocations computes a 64 × 64 block of C; each invocation a
//!   4 × 4 micro-tile in registers. K is walked 16 at a time: both operands are staged k-major in workgroup
//!   memory, then each invocation runs 16 steps of 4 + 4 workgroup loads and 16 FMAs.
//!   Why these sizes: 256 invocations and 2 × 16 × 65 × 4 B ≈ 8.3 KiB of workgroup
//!   memory fit WebGPU's guaranteed limits (256 invocations, 16 KiB), so the kernel runs
//!   on every adapter without a query; 16 accumulators plus 8 operands stay in registers
//!   on every GPU class (8 × 8 micro-tiles need 64 + 16 and spill on some mobile parts);
//!   the 4 × 4 tile reuses each staged value 4 times, cutting workgroup-memory traffic
//!   4× against the one-output-per-invocation kernel; and a 64 × 64 block keeps a
//!   512 × 512 product at 64 workgroups, where 128 × 128 would leave most of a large GPU
//!   idle. Micro-tile rows and columns are interleaved (rows ty + 16i, columns tx + 16j):
//!   the B reads of a k-step hit 16 consecutive words (no bank conflict), the A reads are
//!   broadcasts, and each store of the write-back is a coalesced row segment.
//!   Variants: each operand is contiguous along K or along its other axis (NN: A along K,
//!   B along N; NT: B along K, i.e. `.t()` of a row-major [N, K]; TN: A along M; TT:
//!   both), and staging loads run along that axis so neighbouring invocations read
//!   neighbouring addresses. Staging that transposes (an operand contiguous along K) writes
//!   down a column of the k-major tile, so that tile's rows are padded by one word: 65
//!   instead of 64 turns the 16-way bank conflict of those stores into at most 2-way.
//!   Where an operand's contiguous extent, its other stride and every batch offset are
//!   multiples of 4 (and K > 0), staging reads one `vec4` (16 B for f32, 8 B for 16-bit
//!   types) per invocation instead of four scalars. The micro-kernel and the write-back
//!   are unrolled by [`micro_kernel`] and [`write_back`] from the [`Tiling`] constants.
//! - **Register-tiled, wide** (`matmul_wide.wgsl` + `matmul_wide_stage.wgsl`, large
//!   products): 128 × 128 blocks with 8 × 8 per invocation ([`MatmulBlock::B128`]) or
//!   128 × 64 with 8 × 4 ([`MatmulBlock::B128x64`]), 16 × 16 invocations, 16-deep
//!   k-steps, the same four layouts, staging rules, batching and epilogue. The micro-tile
//!   is made of 4 × 4 squares (rows ty·4 + r + 64i, columns tx·4 + c + 64j for 128 × 128),
//!   so each k-step of an invocation reads its A and B fragments as `vec4`s from
//!   workgroup memory (2 + 2 for 8 × 8) for 64 FMAs: within a 32-wide subgroup the 16
//!   B reads cover 256 consecutive bytes (conflict-free) and the A reads are two
//!   broadcasts. Workgroup tiles are `array<vec4<f32>>`; a tile staged by transposing
//!   stores is padded by one `vec4` per row (132 words: at most 2-way conflicts on those
//!   stores, 1/16 as frequent as the reads). Each k-step fetches the *next* step's global
//!   values into registers (2 + 2 `vec4` slots per invocation: one vector load or four
//!   scalar loads each) before its arithmetic and stores them to workgroup memory after
//!   the next barrier, so global latency hides behind 1024 FMAs per invocation. The
//!   fetch, stores, all 16 micro-kernel steps and the write-back are unrolled by
//!   [`wide_fetch_put`], [`wide_micro_kernel`] and [`wide_write_back`] with every
//!   constant baked in.
//!
//!   Why it is faster on a large GPU (reasoned from the H100: 132 SMs, 64 K 32-bit
//!   registers and 228 KiB shared memory per SM, 67 TFLOP/s f32 FMA, ~3.3 TB/s HBM, 50 MB
//!   L2). *Workgroup-memory bandwidth*: per k-step a 32-wide subgroup of the 4 × 4 kernel
//!   issues 8 scalar loads for 16 FMA instructions (512 FMAs, 4 SM cycles of FMA issue
//!   for ≥ 8 cycles of loads, plus the load instructions competing for issue slots):
//!   bound by loads and issue, which matches the 15–16 TFLOP/s measured (~24 % of peak).
//!   The 8 × 8 kernel issues 4 `vec4` loads (about 6 cycles of the shared-memory pipe)
//!   for 64 FMA instructions (16 cycles): FMA-bound, with 64 FMAs per 4 load
//!   instructions. *Global/L2 traffic*: a 128 × 128 block moves 16 KiB per k-step for
//!   524 K FLOP (32 FLOP/B; at peak ~2 TB/s from L2), half of the 64 × 64 block's
//!   (16 FLOP/B, ~4 TB/s at peak, near L2's limit). *Occupancy*: 64 accumulators + 16
//!   fragment registers + 16 prefetch registers + ~15 indices ≈ 110–128 registers per
//!   invocation → 2 workgroups (16 warps) per SM in 64 K registers; if the compiler
//!   needs more than 128, 1 workgroup per SM, still FMA-fed by 64 independent
//!   accumulators per step but with barriers no longer overlapped. Workgroup memory
//!   (16.5 KiB at most) never limits occupancy on it. *Grid*: 4096² is 1024 workgroups
//!   (3.9 waves of 264), 8192² 4096; a product whose 128 × 128 grid has fewer than
//!   [`FILL_GROUPS`] (256) workgroups would leave SMs idle, so it takes 128 × 64 (8 × 4:
//!   32 accumulators, ~70 registers, 3 workgroups per SM) when that grid is large
//!   enough, else the 64 × 64 kernel. *Memory*: 128 × 128 needs 16 × (132 + 128) × 4 B
//!   = 16.25 KiB for NN (over WebGPU's guaranteed 16 KiB; the H100 offers 48 KiB,
//!   lavapipe 32 KiB) and exactly 16 KiB for TN; 128 × 64 fits 16 KiB in every layout.
//!   [`plan`] takes a block only where `max_compute_workgroup_storage_size` holds it.
//!   Not done: double-buffered workgroup tiles (one barrier per step instead of two;
//!   2 × 16.5 KiB exceeds lavapipe's 32 KiB at 16-deep steps).
//!
//!   Forcing a block: `XKERN_WGPU_MATMUL_TILE=64|128x64|128` (or
//!   [`crate::DeviceOptions::matmul_block`]) makes every register-tiled product take
//!   that block (a block the device's workgroup memory cannot hold falls back to the
//!   next smaller one); `auto` or unset chooses per product as above. GEMV and strided
//!   plans are unaffected.
//! - **Split-K** (`matmul_splitk.wgsl`) for few output tiles and a long K (e.g. 64 × 64
//!   × 16384, one 64 × 64 tile: one workgroup would walk all of K while the GPU idles):
//!   when at most [`SPLIT_MAX_TILES`] 64 × 64 tiles cover the output and K splits into
//!   `s ≥ 2` equal ranges of at least [`SPLIT_MIN_CHUNK`] (the largest such `s` with
//!   tiles · s ≤ [`FILL_GROUPS`]), the tiled kernel computes `s` partial products as a
//!   batch of `batch · s` products with K = K / s (per-range operand offsets in the
//!   batch table; vector loads where those offsets keep alignment), into an f32 buffer
//!   of `batch · s · M · N`; a second pass sums the ranges in a fixed order (so results
//!   are deterministic), adds the bias and applies the activation. K that no such `s`
//!   divides keeps the one-pass kernel.
//! - **Cooperative matrices** (`matmul_coop.wgsl`, see [`crate::matmul_coop`]): the f16
//!   case of the register-tiled kernel on tensor cores, where the device offers them;
//!   every layout and size the register-tiled kernel takes, same epilogue and bounds.
//! - **GEMV** (`gemv.wgsl`) for M = 1 (W = B) and N = 1 (W = Aᵀ, x = the column of B):
//!   a matrix-vector product reads W once, so it is bound by memory, and a 64-row tile
//!   would waste 63/64 of the tiled kernel. Dot-product layout (W contiguous along K) or
//!   column layout; see the WGSL.
//! - **Strided** (`matmul.wgsl`): 16 × 16 outputs per workgroup, one per invocation, any
//!   strides. Taken only when an operand has no unit stride (e.g. a column slice with a
//!   step), where coalesced staging is impossible anyway.
//!
//! Bounds the host guarantees (checked in [`plan`] and [`Recording::dispatch`]): every
//! element index of a view inside its matrix fits u32 (offsets, strides and extents go
//! through `fit_u32`, and a binding holds at most `max_storage_buffer_binding_size`
//! bytes); a vector load is chosen only when the operand's base offsets and non-contiguous
//! stride are multiples of 4 and its contiguous extent (K, M or N) is a non-zero multiple
//! of 4, so each `vec4` starts aligned and lies wholly inside or wholly outside the
//! matrix; a wide block is planned only where its workgroup memory (for the operands'
//! layouts, [`MatmulBlock::workgroup_bytes`]) is within the device's limit. Kernels check every load against M, N and K (zero-filling the ragged edge of a
//! tile) and every store against M and N, so no size needs to be a multiple of a tile.
//!
//! **Trusted modules, chosen by measurement.** The block kernels (64 × 64, 128 × 64,
//! 128 × 128, also as split-K's partial products) are built as trusted modules that keep
//! only the run-time checks measured not to slow them ([`block_checks`]): on the H100
//! (driver 580, GPU time, one run each) dropping the index clamps (`bounds`) took f16
//! 8192³ from 30.7 to 28.5 ms (38.6 TFLOP/s) but f32 from 29.3 to 34.5 ms; dropping the
//! loop bounding made both slower (f16 33.3, f32 35.9 ms), the guarded division changed
//! nothing, and dropping all three gave f16 44.0 and f32 32.0 ms. So f16 drops the
//! clamps and f32/bf16 keep every check. `DeviceOptions::trusted_shaders` or
//! `XKERN_WGPU_TRUSTED=on|off|bounds,loops,div` override the choice for A/B runs. Why
//! the kernels are safe without the checks: global loads are guarded by `gx < M/N && gk < K` and stores by
//! `row < M && col < N` as above, and the guarded indices lie inside the views the host
//! validated (the bounds above); the batch table is read at `g / (tiles_m · tiles_n) <
//! batches` since `g < groups`; workgroup-memory indices come from `at_*(r · THREADS +
//! t)` with `r` below the generated load count and `t < THREADS`, so they address a tile
//! whose element count is exactly loads × threads × 4 (asserted by the generator for
//! every block); private arrays are indexed by generated constants only; the K loop
//! counts up by BK to K, with K + 128 below 2³² (checked in `matmul_impl`); the divisors
//! `tiles_m`, `tiles_n` are at least 1 whenever a workgroup runs (groups = batches ·
//! tiles_m · tiles_n > 0).
//!
//! Every kernel accumulates in f32 and writes f32; 16-bit outputs are rounded once by
//! `finish_f32`. Batches index a host-computed table of operand offsets (any broadcast
//! or strided batch layout); grids are linear and folded past the per-dimension limit.
//!
//! [`Recording::dispatch`]: crate::pipelines::Recording::dispatch

use crate::WgpuBackend;
use crate::buffers::WgpuStorage;
use crate::matmul_coop::{CoopShape, coop_source};
use crate::pipelines::{Params, Slot, assemble, fit_u32};
use std::fmt::Write as _;
use xkern_core::{Activation, DType, MatmulSpec, Result};

const MATMUL_WGSL: &str = include_str!("matmul.wgsl");
const TILED_WGSL: &str = include_str!("matmul_tiled.wgsl");
const STAGE_WGSL: &str = include_str!("matmul_stage.wgsl");
const WIDE_WGSL: &str = include_str!("matmul_wide.wgsl");
const WIDE_STAGE_WGSL: &str = include_str!("matmul_wide_stage.wgsl");
const SPLITK_WGSL: &str = include_str!("matmul_splitk.wgsl");
const GEMV_WGSL: &str = include_str!("gemv.wgsl");
const EPILOGUE_WGSL: &str = include_str!("epilogue.wgsl");
/// The block decode and output epilogue the block kernels share (tiled, wide, coop).
const BLOCK_WGSL: &str = include_str!("matmul_block.wgsl");
/// Output tile of the strided kernel.
const TILE: usize = 16;
/// Outputs per workgroup of the GEMV layouts (`gemv.wgsl`).
const GEMV_DOT_OUTS: usize = 4;
const GEMV_COLUMN_OUTS: usize = 64;

/// The constants of the register-tiled kernels (see the module doc for why these).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tiling {
    /// Output block of one workgroup: rows, columns.
    pub(crate) bm: usize,
    pub(crate) bn: usize,
    /// K step staged per barrier pair.
    pub(crate) bk: usize,
    /// Micro-tile of one invocation: rows, columns.
    pub(crate) tm: usize,
    pub(crate) tn: usize,
}

impl Tiling {
    /// Invocations per workgroup.
    const fn threads(self) -> usize {
        (self.bm / self.tm) * (self.bn / self.tn)
    }
}

/// The tiling of the 64 × 64 kernel (`matmul_tiled.wgsl`): 4 × 4 micro-tiles, 16-deep
/// k-steps.
pub(crate) const TILING: Tiling = Tiling {
    bm: 64,
    bn: 64,
    bk: 16,
    tm: 4,
    tn: 4,
};

/// The 128 × 128 block of the wide kernel (`matmul_wide.wgsl`): 8 × 8 micro-tiles.
const WIDE_128: Tiling = Tiling {
    bm: 128,
    bn: 128,
    bk: 16,
    tm: 8,
    tn: 8,
};

/// The 128 × 64 block of the wide kernel: 8 × 4 micro-tiles.
const WIDE_128X64: Tiling = Tiling {
    bm: 128,
    bn: 64,
    bk: 16,
    tm: 8,
    tn: 4,
};

// The staging loops assume that each pass covers whole tiles: every tile of BK × BM and
// BK × BN elements (and of vec4s) is a multiple of the invocation count.
const _: () = {
    let t = TILING;
    let threads = t.threads();
    assert!(t.bm.is_multiple_of(t.tm) && t.bn.is_multiple_of(t.tn) && t.bk.is_multiple_of(4));
    assert!((t.bm * t.bk / 4).is_multiple_of(threads));
    assert!((t.bn * t.bk / 4).is_multiple_of(threads));
    assert!(threads <= 256);
    // Workgroup memory within WebGPU's guaranteed 16 KiB.
    assert!(t.bk * (t.bm + 1 + t.bn + 1) * 4 <= 16384);
};

// The wide kernel: micro-tiles of whole 4 × 4 squares, invocations within WebGPU's
// guaranteed 256, and register slots of four values that cover each staged tile exactly
// (BK × X is a multiple of 4 · THREADS).
const fn check_wide(t: Tiling) {
    assert!(t.tm.is_multiple_of(4) && t.tn.is_multiple_of(4) && t.bk.is_multiple_of(4));
    assert!(t.bm.is_multiple_of(t.tm) && t.bn.is_multiple_of(t.tn));
    assert!(t.threads() <= 256);
    assert!((t.bm * t.bk).is_multiple_of(4 * t.threads()));
    assert!((t.bn * t.bk).is_multiple_of(4 * t.threads()));
}
const _: () = check_wide(WIDE_128);
const _: () = check_wide(WIDE_128X64);

/// The output block of the register-tiled matmul. By default the matmul picks it per
/// product: 128 × 128 where that grid still has 256 workgroups and the device's
/// workgroup memory holds the block, else 128 × 64 likewise, else 64 × 64.
/// [`crate::DeviceOptions::matmul_block`] or `XKERN_WGPU_MATMUL_TILE=64|128x64|128`
/// forces one (for tests and A/B timing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MatmulBlock {
    /// 64 × 64 blocks, 4 × 4 per invocation (`matmul_tiled.wgsl`): fits WebGPU's
    /// guaranteed limits, keeps small products spread over many workgroups.
    #[default]
    B64,
    /// 128 × 64 blocks, 8 × 4 per invocation (`matmul_wide.wgsl`), for medium products.
    B128x64,
    /// 128 × 128 blocks, 8 × 8 per invocation (`matmul_wide.wgsl`), for large products.
    B128,
}

impl MatmulBlock {
    /// Parses `64`, `128x64` or `128` (the values of `XKERN_WGPU_MATMUL_TILE`); `auto`
    /// or the empty string is `Ok(None)`, anything else an error message.
    pub fn parse(s: &str) -> std::result::Result<Option<Self>, String> {
        match s.trim().to_lowercase().as_str() {
            "" | "auto" => Ok(None),
            "64" | "64x64" => Ok(Some(MatmulBlock::B64)),
            "128x64" => Ok(Some(MatmulBlock::B128x64)),
            "128" | "128x128" => Ok(Some(MatmulBlock::B128)),
            other => Err(format!(
                "XKERN_WGPU_MATMUL_TILE={other:?}: expected 64, 128x64, 128 or auto"
            )),
        }
    }

    pub(crate) fn tiling(self) -> Tiling {
        match self {
            MatmulBlock::B64 => TILING,
            MatmulBlock::B128x64 => WIDE_128X64,
            MatmulBlock::B128 => WIDE_128,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            MatmulBlock::B64 => "64",
            MatmulBlock::B128x64 => "128x64",
            MatmulBlock::B128 => "128",
        }
    }

    /// Bytes of workgroup memory the kernel of this block declares for layouts `a`, `b`.
    pub(crate) fn workgroup_bytes(self, a: Operand, b: Operand) -> usize {
        let t = self.tiling();
        match self {
            MatmulBlock::B64 => t.bk * (tile_stride(t.bm, a) + tile_stride(t.bn, b)) * 4,
            _ => t.bk * (wide_stride(t.bm, a) + wide_stride(t.bn, b)) * 4,
        }
    }
}

/// What [`plan`] may choose from on a device.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Blocks {
    /// A forced block (falls back to a smaller one that fits the device).
    pub(crate) forced: Option<MatmulBlock>,
    /// The device's `max_compute_workgroup_storage_size`.
    pub(crate) storage: usize,
}

/// Workgroups a large block needs before [`plan`] takes it: two per SM of a GPU with
/// about 128 SMs, so that the bigger block does not leave part of a large GPU idle.
const FILL_GROUPS: usize = 256;

/// How the register-tiled kernel reads one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Operand {
    /// Contiguous along K (else along M for A, N for B).
    pub(crate) k_major: bool,
    /// Staged with `vec4` loads.
    pub(crate) vec4: bool,
}

/// Which kernel runs a matmul.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Plan {
    /// Register-tiled, with the layouts of A and B and the output block.
    Tiled {
        a: Operand,
        b: Operand,
        block: MatmulBlock,
    },
    /// Split-K: the register-tiled kernel (layouts and block for one K range) computes
    /// `splits` partial products over equal ranges of K, then `matmul_splitk.wgsl` sums
    /// them in order and applies the epilogue.
    SplitK {
        a: Operand,
        b: Operand,
        block: MatmulBlock,
        splits: usize,
    },
    /// The f16 tiled case on cooperative matrices, with the layouts of A and B.
    Coop {
        a: Operand,
        b: Operand,
        shape: CoopShape,
    },
    /// Matrix-vector: `dot` when W is contiguous along K; `n1` for N = 1 (W = Aᵀ).
    Gemv { dot: bool, n1: bool },
    /// The general strided kernel.
    Strided,
}

/// The operand layout of a strided view for the tiled kernel: contiguous along K
/// (`k_stride == 1`) or along the other axis, with vector loads where the bounds in the
/// module doc hold; `None` when neither stride is 1.
fn operand(
    k_stride: usize,
    x_stride: usize,
    k: usize,
    x: usize,
    offsets_aligned: bool,
) -> Option<Operand> {
    let (k_major, extent, other) = if k_stride == 1 {
        (true, k, x_stride)
    } else if x_stride == 1 {
        (false, x, k_stride)
    } else {
        return None;
    };
    let vec4 =
        offsets_aligned && k > 0 && x > 0 && extent.is_multiple_of(4) && other.is_multiple_of(4);
    Some(Operand { k_major, vec4 })
}

/// The block of a tiled plan: the forced one if any (else the largest smaller one that
/// fits the device), otherwise the largest whose workgroup memory fits and whose grid
/// still has [`FILL_GROUPS`] workgroups.
fn block_for(spec: &MatmulSpec, a: Operand, b: Operand, blocks: Blocks) -> MatmulBlock {
    use MatmulBlock::{B64, B128, B128x64};
    let fits = |blk: MatmulBlock| blk.workgroup_bytes(a, b) <= blocks.storage;
    if let Some(f) = blocks.forced {
        let smaller: &[MatmulBlock] = match f {
            B128 => &[B128, B128x64],
            B128x64 => &[B128x64],
            B64 => &[],
        };
        return smaller.iter().copied().find(|&x| fits(x)).unwrap_or(B64);
    }
    let groups = |blk: MatmulBlock| {
        let t = blk.tiling();
        spec.m.div_ceil(t.bm) * spec.n.div_ceil(t.bn) * spec.batch()
    };
    [B128, B128x64]
        .into_iter()
        .find(|&x| fits(x) && groups(x) >= FILL_GROUPS)
        .unwrap_or(B64)
}

/// At most this many 64 × 64 output tiles (all batches) for split-K: below it the
/// tiled grid leaves most of a large GPU idle, and each workgroup walks all of K alone.
const SPLIT_MAX_TILES: usize = 32;
/// The shortest K range of one split.
const SPLIT_MIN_CHUNK: usize = 256;

/// The number of K ranges of a split-K plan for `spec`, or `None`: only for few output
/// tiles, at least two ranges of at least [`SPLIT_MIN_CHUNK`], at most enough ranges
/// for [`FILL_GROUPS`] workgroups, and K a multiple of the count (equal ranges, so one
/// kernel with one K serves every range).
fn split_k(spec: &MatmulSpec) -> Option<usize> {
    let tiles = spec.m.div_ceil(TILING.bm) * spec.n.div_ceil(TILING.bn) * spec.batch();
    if tiles == 0 || tiles > SPLIT_MAX_TILES {
        return None;
    }
    let most = (FILL_GROUPS / tiles).min(spec.k / SPLIT_MIN_CHUNK);
    (2..=most).rev().find(|&s| spec.k.is_multiple_of(s))
}

/// Chooses the kernel of `spec`, whose per-batch operand offsets are `offs` (a, b pairs),
/// on a device that offers `blocks`.
pub(crate) fn plan(spec: &MatmulSpec, offs: &[u32], blocks: Blocks) -> Plan {
    let (a, b) = (&spec.a, &spec.b);
    if spec.m == 1 || spec.n == 1 {
        // W = B (k-stride b.row_stride) or Aᵀ (k-stride a.col_stride); dot-product
        // layout when W runs along K, unless it also runs along the outputs (then the
        // column layout covers 64 outputs per workgroup instead of 4).
        let n1 = spec.m != 1;
        let (w_ks, w_js, outputs) = if n1 {
            (a.col_stride, a.row_stride, spec.m)
        } else {
            (b.row_stride, b.col_stride, spec.n)
        };
        let dot = w_ks == 1 && (w_js != 1 || outputs == 1);
        return Plan::Gemv { dot, n1 };
    }
    let aligned = |first: usize| {
        offs.iter()
            .skip(first)
            .step_by(2)
            .all(|o| o.is_multiple_of(4))
    };
    let a_op = operand(a.col_stride, a.row_stride, spec.k, spec.m, aligned(0));
    let b_op = operand(b.row_stride, b.col_stride, spec.k, spec.n, aligned(1));
    if let (Some(_), Some(_), Some(splits)) = (a_op, b_op, split_k(spec)) {
        // One range: K = chunk, and every range's offsets move by chunk along K.
        let chunk = spec.k / splits;
        let a_al = aligned(0) && (chunk * a.col_stride).is_multiple_of(4);
        let b_al = aligned(1) && (chunk * b.row_stride).is_multiple_of(4);
        let a_op = operand(a.col_stride, a.row_stride, chunk, spec.m, a_al);
        let b_op = operand(b.row_stride, b.col_stride, chunk, spec.n, b_al);
        if let (Some(a), Some(b)) = (a_op, b_op) {
            return Plan::SplitK {
                a,
                b,
                block: block_for(spec, a, b, blocks),
                splits,
            };
        }
    }
    match (a_op, b_op) {
        (Some(a), Some(b)) => Plan::Tiled {
            a,
            b,
            block: block_for(spec, a, b, blocks),
        },
        _ => Plan::Strided,
    }
}

/// Moves an f16 register-tiled `plan` to the cooperative-matrix kernel when the device
/// runs it (`shape`); any other plan stays.
pub(crate) fn with_coop(plan: Plan, dtype: DType, shape: Option<CoopShape>) -> Plan {
    match (plan, shape) {
        (Plan::Tiled { a, b, .. }, Some(shape)) if dtype == DType::F16 => {
            Plan::Coop { a, b, shape }
        }
        _ => plan,
    }
}

fn act_code(act: Option<Activation>) -> u32 {
    match act {
        None => 0,
        Some(Activation::Relu) => 1,
        Some(Activation::Gelu) => 2,
        Some(Activation::Silu) => 3,
    }
}

/// Bindings of the tiled and strided kernels; `vec` per operand for vector loads.
fn bindings(dtype: DType, vec_a: bool, vec_b: bool) -> [(&'static str, Slot); 5] {
    let slot = |v: bool| {
        if v {
            Slot::InputVec4(dtype)
        } else {
            Slot::Input(dtype)
        }
    };
    [
        ("a", slot(vec_a)),
        ("b", slot(vec_b)),
        ("bias", Slot::Input(dtype)),
        ("offs", Slot::Words),
        ("out", Slot::OutF32),
    ]
}

fn gemv_bindings(dtype: DType) -> [(&'static str, Slot); 5] {
    [
        ("x", Slot::Input(dtype)),
        ("w", Slot::Input(dtype)),
        ("bias", Slot::Input(dtype)),
        ("offs", Slot::Words),
        ("out", Slot::OutF32),
    ]
}

/// The WGSL of one variant of the strided kernel (also used by the naga tests).
pub(crate) fn matmul_source(dtype: DType, act: Option<Activation>, bias: bool) -> String {
    assemble(
        MATMUL_WGSL,
        &bindings(dtype, false, false),
        &[
            ("EPILOGUE", EPILOGUE_WGSL.to_string()),
            ("ACT", act_code(act).to_string()),
            ("BIAS", u32::from(bias).to_string()),
        ],
    )
}

/// The WGSL of one variant of the GEMV kernel (also used by the naga tests).
pub(crate) fn gemv_source(dtype: DType, act: Option<Activation>, bias: bool, dot: bool) -> String {
    assemble(
        GEMV_WGSL,
        &gemv_bindings(dtype),
        &[
            ("EPILOGUE", EPILOGUE_WGSL.to_string()),
            ("ACT", act_code(act).to_string()),
            ("BIAS", u32::from(bias).to_string()),
            ("DOT", dot.to_string()),
        ],
    )
}

/// The staging function of operand `op` ("a" or "b"), whose tile is `x` wide with rows of
/// `stride` words. The kernel text calls both `load_<op>` and `load4_<op>` (under
/// constant conditions), so the one the binding lacks is defined here from the other;
/// the shim is never executed.
fn stage(op: &str, x: usize, stride: usize, layout: Operand) -> String {
    load_shim(op, layout)
        + &STAGE_WGSL
            .replace("{{op}}", op)
            .replace("{{X}}", &x.to_string())
            .replace("{{S}}", &stride.to_string())
            .replace("{{KCONT}}", &layout.k_major.to_string())
            .replace("{{VEC}}", &layout.vec4.to_string())
}

/// Row stride of a k-major tile `x` wide: one word of padding when staging transposes
/// (operand contiguous along K), else none (see the module doc).
fn tile_stride(x: usize, layout: Operand) -> usize {
    x + usize::from(layout.k_major)
}

/// Row stride of a k-major tile `x` wide in the wide kernel: four words of padding when
/// staging transposes (one `vec4`, so that fragments stay aligned; see the module doc).
fn wide_stride(x: usize, layout: Operand) -> usize {
    x + 4 * usize::from(layout.k_major)
}

/// The unrolled micro-kernel of one k-step. For the 4 × 4 tile it reads
/// ```text
/// let a0 = ta[ra + 0u]; let a1 = ta[ra + 16u]; let a2 = ta[ra + 32u]; let a3 = ta[ra + 48u];
/// let b0 = tb[rb + 0u]; ... let b3 = tb[rb + 48u];
/// acc[0] = fma(a0, b0, acc[0]); acc[1] = fma(a0, b1, acc[1]); ... acc[15] = fma(a3, b3, acc[15]);
/// ```
pub(crate) fn micro_kernel(t: Tiling) -> String {
    let (wx, wy) = (t.bn / t.tn, t.bm / t.tm);
    let mut s = String::new();
    for i in 0..t.tm {
        let _ = writeln!(s, "            let a{i} = ta[ra + {}u];", i * wy);
    }
    for j in 0..t.tn {
        let _ = writeln!(s, "            let b{j} = tb[rb + {}u];", j * wx);
    }
    for i in 0..t.tm {
        for j in 0..t.tn {
            let q = i * t.tn + j;
            let _ = writeln!(s, "            acc[{q}] = fma(a{i}, b{j}, acc[{q}]);");
        }
    }
    s
}

/// The unrolled stores of the micro-tile: `store(batch, row + row_of(i), col +
/// col_of(j), acc[i·TN + j])` for every element (i, j).
fn store_tile(
    t: Tiling,
    row_of: impl Fn(usize) -> usize,
    col_of: impl Fn(usize) -> usize,
) -> String {
    let mut s = String::new();
    for i in 0..t.tm {
        for j in 0..t.tn {
            let _ = writeln!(
                s,
                "    store(batch, row + {}u, col + {}u, acc[{}]);",
                row_of(i),
                col_of(j),
                i * t.tn + j
            );
        }
    }
    s
}

/// The unrolled write-back: `store(batch, row + 16i, col + 16j, acc[4i + j])` for 4 × 4.
pub(crate) fn write_back(t: Tiling) -> String {
    let (wx, wy) = (t.bn / t.tn, t.bm / t.tm);
    store_tile(t, |i| i * wy, |j| j * wx)
}

/// The WGSL of one variant of the register-tiled kernel (also used by the naga tests).
pub(crate) fn tiled_source(
    dtype: DType,
    act: Option<Activation>,
    bias: bool,
    a: Operand,
    b: Operand,
) -> String {
    let t = TILING;
    let (sa, sb) = (tile_stride(t.bm, a), tile_stride(t.bn, b));
    assemble(
        TILED_WGSL,
        &bindings(dtype, a.vec4, b.vec4),
        &[
            ("EPILOGUE", EPILOGUE_WGSL.to_string()),
            ("BLOCK", BLOCK_WGSL.to_string()),
            ("STAGE_A", stage("a", t.bm, sa, a)),
            ("STAGE_B", stage("b", t.bn, sb, b)),
            ("MICRO", micro_kernel(t)),
            ("WRITE", write_back(t)),
            ("ACT", act_code(act).to_string()),
            ("BIAS", u32::from(bias).to_string()),
            ("BM", t.bm.to_string()),
            ("BN", t.bn.to_string()),
            ("BK", t.bk.to_string()),
            ("WX", (t.bn / t.tn).to_string()),
            ("WY", (t.bm / t.tm).to_string()),
            ("SA", sa.to_string()),
            ("SB", sb.to_string()),
            ("TA_LEN", (t.bk * sa).to_string()),
            ("TB_LEN", (t.bk * sb).to_string()),
            ("TM_TN", (t.tm * t.tn).to_string()),
        ],
    )
}

/// Register slots (`vec4`s) per invocation that hold one staged tile `x` wide.
fn slots(t: Tiling, x: usize) -> usize {
    x * t.bk / (4 * t.threads())
}

/// The unrolled micro-kernel of the wide kernel: all BK steps of one staged tile. Step
/// `kk` of the 8 × 8 tile reads
/// ```text
/// let a0 = ta[kk·SA/4 + ty]; let a1 = ta[kk·SA/4 + 16 + ty];   // rows ty·4 .. +3, 64 + ty·4 .. +3
/// let b0 = tb[kk·SB/4 + tx]; let b1 = tb[kk·SB/4 + 16 + tx];   // columns likewise
/// acc[0] = fma(a0.x, b0.x, acc[0]); acc[1] = fma(a0.x, b0.y, acc[1]); ... acc[63] = fma(a1.w, b1.w, acc[63]);
/// ```
/// with every offset a constant.
pub(crate) fn wide_micro_kernel(t: Tiling, sa: usize, sb: usize) -> String {
    const C: [&str; 4] = ["x", "y", "z", "w"];
    let (wx, wy) = (t.bn / t.tn, t.bm / t.tm);
    let comp = |i: usize| C.get(i % 4).copied().unwrap_or("x");
    let mut s = String::new();
    for kk in 0..t.bk {
        s += "        {\n";
        for g in 0..t.tm / 4 {
            let _ = writeln!(
                s,
                "            let a{g} = ta[{}u + ty];",
                kk * sa / 4 + g * wy
            );
        }
        for h in 0..t.tn / 4 {
            let _ = writeln!(
                s,
                "            let b{h} = tb[{}u + tx];",
                kk * sb / 4 + h * wx
            );
        }
        for i in 0..t.tm {
            for j in 0..t.tn {
                let q = i * t.tn + j;
                let _ = writeln!(
                    s,
                    "            acc[{q}] = fma(a{}.{}, b{}.{}, acc[{q}]);",
                    i / 4,
                    comp(i),
                    j / 4,
                    comp(j)
                );
            }
        }
        s += "        }\n";
    }
    s
}

/// The unrolled write-back of the wide kernel: micro-tile element (i, j) lies at row
/// `ty·4 + i % 4 + 4·WY·(i / 4)` and column `tx·4 + j % 4 + 4·WX·(j / 4)` of the block.
pub(crate) fn wide_write_back(t: Tiling) -> String {
    let (wx, wy) = (t.bn / t.tn, t.bm / t.tm);
    store_tile(
        t,
        |i| (i / 4) * 4 * wy + i % 4,
        |j| (j / 4) * 4 * wx + j % 4,
    )
}

/// The unrolled global fetch of both operands' next tiles into registers (`kf` is the
/// tile's first k) and the unrolled stores of those registers into workgroup memory.
fn wide_fetch_put(t: Tiling) -> (String, String) {
    let (mut fetch, mut put) = (String::new(), String::new());
    for r in 0..slots(t, t.bm) {
        let _ = writeln!(
            fetch,
            "            pa[{r}] = fetch_a(a0, m0, kf, P.a_rs, P.a_cs, P.m, t, {r}u);"
        );
        let _ = writeln!(put, "        put_a(t, {r}u, pa[{r}]);");
    }
    for r in 0..slots(t, t.bn) {
        let _ = writeln!(
            fetch,
            "            pb[{r}] = fetch_b(b0, n0, kf, P.b_cs, P.b_rs, P.n, t, {r}u);"
        );
        let _ = writeln!(put, "        put_b(t, {r}u, pb[{r}]);");
    }
    (fetch, put)
}

/// The load shim of operand `op`: the kernel text calls both `load_<op>` and
/// `load4_<op>` (under constant conditions), so the one the binding lacks is defined
/// here from the other; the shim is never executed.
fn load_shim(op: &str, layout: Operand) -> String {
    if layout.vec4 {
        format!("fn load_{op}(i: u32) -> f32 {{ return load4_{op}(i >> 2u)[i & 3u]; }}\n")
    } else {
        format!(
            "fn load4_{op}(q: u32) -> vec4<f32> {{ let i = 4u * q; return vec4<f32>(load_{op}(i), load_{op}(i + 1u), load_{op}(i + 2u), load_{op}(i + 3u)); }}\n"
        )
    }
}

/// The staging functions of operand `op` for the wide kernel (see [`stage`]).
fn wide_stage(op: &str, x: usize, stride: usize, layout: Operand) -> String {
    load_shim(op, layout)
        + &WIDE_STAGE_WGSL
            .replace("{{op}}", op)
            .replace("{{X}}", &x.to_string())
            .replace("{{S}}", &stride.to_string())
            .replace("{{KCONT}}", &layout.k_major.to_string())
            .replace("{{VEC}}", &layout.vec4.to_string())
}

/// The WGSL of one variant of a register-tiled kernel: `matmul_tiled.wgsl` for
/// [`MatmulBlock::B64`], else `matmul_wide.wgsl` (also used by the naga tests).
pub(crate) fn block_source(
    dtype: DType,
    act: Option<Activation>,
    bias: bool,
    a: Operand,
    b: Operand,
    block: MatmulBlock,
) -> String {
    if block == MatmulBlock::B64 {
        return tiled_source(dtype, act, bias, a, b);
    }
    let t = block.tiling();
    let (sa, sb) = (wide_stride(t.bm, a), wide_stride(t.bn, b));
    let (fetch, put) = wide_fetch_put(t);
    assemble(
        WIDE_WGSL,
        &bindings(dtype, a.vec4, b.vec4),
        &[
            ("EPILOGUE", EPILOGUE_WGSL.to_string()),
            ("BLOCK", BLOCK_WGSL.to_string()),
            ("STAGE_A", wide_stage("a", t.bm, sa, a)),
            ("STAGE_B", wide_stage("b", t.bn, sb, b)),
            ("FETCH", fetch),
            ("PUT", put),
            ("MICRO", wide_micro_kernel(t, sa, sb)),
            ("WRITE", wide_write_back(t)),
            ("ACT", act_code(act).to_string()),
            ("BIAS", u32::from(bias).to_string()),
            ("BM", t.bm.to_string()),
            ("BN", t.bn.to_string()),
            ("BK", t.bk.to_string()),
            ("WX", (t.bn / t.tn).to_string()),
            ("WY", (t.bm / t.tm).to_string()),
            ("TA4", (t.bk * sa / 4).to_string()),
            ("TB4", (t.bk * sb / 4).to_string()),
            ("RA", slots(t, t.bm).to_string()),
            ("RB", slots(t, t.bn).to_string()),
            ("TM_TN", (t.tm * t.tn).to_string()),
        ],
    )
}

fn splitk_bindings(dtype: DType) -> [(&'static str, Slot); 3] {
    [
        ("part", Slot::Input(DType::F32)),
        ("bias", Slot::Input(dtype)),
        ("out", Slot::OutF32),
    ]
}

/// The WGSL of the split-K sum (also used by the naga tests).
pub(crate) fn splitk_source(dtype: DType, act: Option<Activation>, bias: bool) -> String {
    assemble(
        SPLITK_WGSL,
        &splitk_bindings(dtype),
        &[
            ("EPILOGUE", EPILOGUE_WGSL.to_string()),
            ("ACT", act_code(act).to_string()),
            ("BIAS", u32::from(bias).to_string()),
        ],
    )
}

/// The WGSL of one variant of the cooperative-matrix kernel (also used by the naga tests).
pub(crate) fn tiled_coop_source(
    act: Option<Activation>,
    bias: bool,
    a: Operand,
    b: Operand,
    shape: CoopShape,
) -> String {
    coop_source(
        &bindings(DType::F16, a.vec4, b.vec4),
        &coop_epilogue(act, bias),
        a,
        b,
        shape,
    )
}

fn coop_epilogue(act: Option<Activation>, bias: bool) -> [(&'static str, String); 4] {
    [
        ("EPILOGUE", EPILOGUE_WGSL.to_string()),
        ("BLOCK", BLOCK_WGSL.to_string()),
        ("ACT", act_code(act).to_string()),
        ("BIAS", u32::from(bias).to_string()),
    ]
}

/// Tests: the cooperative-matrix kernel with emulated fragments (see `matmul_coop`).
#[cfg(test)]
pub(crate) fn tiled_coop_emulated_source(
    act: Option<Activation>,
    bias: bool,
    a: Operand,
    b: Operand,
    shape: CoopShape,
) -> String {
    crate::matmul_coop::emulated_source(
        &bindings(DType::F16, a.vec4, b.vec4),
        &coop_epilogue(act, bias),
        a,
        b,
        shape,
    )
}

/// The cache key of a plan's kernel (for split-K: of its sum; its first pass is the
/// tiled kernel without an epilogue).
fn key(spec: &MatmulSpec, plan: Plan, has_bias: bool) -> String {
    key_of(spec.dtype, spec.activation, has_bias, plan)
}

fn key_of(dtype: DType, act: Option<Activation>, has_bias: bool, plan: Plan) -> String {
    let epi = format!("{}/{}/{}", dtype, act_code(act), u32::from(has_bias));
    let layout = |o: Operand| {
        format!(
            "{}{}",
            if o.k_major { "k" } else { "x" },
            if o.vec4 { "4" } else { "1" }
        )
    };
    match plan {
        Plan::Tiled { a, b, block } => format!(
            "matmul-tiled/{epi}/{}/{}{}",
            block.name(),
            layout(a),
            layout(b)
        ),
        Plan::SplitK { .. } => format!("matmul-splitk/{epi}"),
        Plan::Coop { a, b, shape } => format!(
            "matmul-coop/{epi}/{}{}/sg{}",
            layout(a),
            layout(b),
            shape.sg
        ),
        Plan::Gemv { dot, .. } => format!("gemv/{epi}/{}", if dot { "dot" } else { "column" }),
        Plan::Strided => format!("matmul/{epi}"),
    }
}

/// The run-time checks the block kernels keep for `dtype` (see the module doc): f16
/// drops the index clamps (measured faster on the H100), f32 and bf16 keep everything.
fn block_checks(dtype: DType) -> wgpu::ShaderRuntimeChecks {
    let mut checks = wgpu::ShaderRuntimeChecks::checked();
    if dtype == DType::F16 {
        checks.bounds_checks = false;
    }
    checks
}

impl WgpuBackend {
    /// [`xkern_core::Backend::matmul`].
    pub(crate) fn matmul_impl(
        &self,
        spec: &MatmulSpec,
        a: &WgpuStorage,
        b: &WgpuStorage,
        bias: Option<&WgpuStorage>,
    ) -> Result<WgpuStorage> {
        self.check_dtype("matmul", spec.dtype)?;
        let (batch, m, n) = (spec.batch(), spec.m, spec.n);
        let len = batch * m * n;
        let mut offs = Vec::with_capacity(2 * batch);
        for i in 0..batch {
            offs.push(fit_u32(spec.a_offset(i))?);
            offs.push(fit_u32(spec.b_offset(i))?);
        }
        // The block kernels' K loop counts to K in steps of up to 128 without wrapping.
        fit_u32(spec.k + 128)?;
        let plan = with_coop(
            plan(spec, &offs, self.matmul_blocks()),
            spec.dtype,
            self.gpu().coop_shape(),
        );
        let has_bias = bias.is_some();
        #[allow(unused_mut)]
        let mut key = key(spec, plan, has_bias);
        #[cfg(test)]
        let emulated = self.gpu().coop_emulated();
        #[cfg(test)]
        if emulated {
            key += "/emulated";
        }
        let (bias_off, bias_stride) = spec.bias.as_ref().map_or((0, 0), |v| (v.offset, v.stride));
        let (dtype, act) = (spec.dtype, spec.activation);
        if let Plan::Gemv { dot, n1 } = plan {
            // x, W and the outputs of y = W·x: for N = 1 x is the column of B and W = Aᵀ,
            // so the offset pairs swap and the bias (one value) is read at stride 0.
            let (x, w, x_s, w_ks, w_js, outputs, bias_stride) = if n1 {
                let pairs = offs.chunks_exact_mut(2);
                pairs.for_each(|p| p.swap(0, 1));
                (
                    b,
                    a,
                    spec.b.row_stride,
                    spec.a.col_stride,
                    spec.a.row_stride,
                    m,
                    0,
                )
            } else {
                (
                    a,
                    b,
                    spec.a.col_stride,
                    spec.b.row_stride,
                    spec.b.col_stride,
                    n,
                    bias_stride,
                )
            };
            let offs = self.upload_u32(&offs)?;
            let kernel = self.kernel(&key, &gemv_bindings(dtype), || {
                gemv_source(dtype, act, has_bias, dot)
            })?;
            return self.record(|rec| {
                let out = self.alloc_storage(DType::F32, len)?;
                let blocks = outputs.div_ceil(if dot { GEMV_DOT_OUTS } else { GEMV_COLUMN_OUTS });
                let params = Params::default()
                    .u(outputs)?
                    .u(spec.k)?
                    .u(x_s)?
                    .u(w_ks)?
                    .u(w_js)?
                    .u(bias_off)?
                    .u(bias_stride)?
                    .u(blocks)?;
                rec.dispatch(
                    &kernel,
                    &[x, w, bias.unwrap_or(a), &offs, &out],
                    blocks * batch,
                    params,
                )?;
                self.finish_f32(rec, out, dtype, len)
            });
        }
        if let Plan::SplitK {
            a: la,
            b: lb,
            block,
            splits,
        } = plan
        {
            let chunk = spec.k / splits.max(1);
            let (a_step, b_step) = (chunk * spec.a.col_stride, chunk * spec.b.row_stride);
            let mut split_offs = Vec::with_capacity(offs.len() * splits);
            for pair in offs.chunks_exact(2) {
                if let [oa, ob] = *pair {
                    for s in 0..splits {
                        split_offs.push(fit_u32(oa as usize + s * a_step)?);
                        split_offs.push(fit_u32(ob as usize + s * b_step)?);
                    }
                }
            }
            let part_len = len * splits;
            fit_u32(part_len)?;
            let tiled = Plan::Tiled {
                a: la,
                b: lb,
                block,
            };
            let part_kernel = self.trusted_kernel(
                &key_of(dtype, None, false, tiled),
                &bindings(dtype, la.vec4, lb.vec4),
                block_checks(dtype),
                || block_source(dtype, None, false, la, lb, block),
            )?;
            let sum_kernel = self.kernel(&key, &splitk_bindings(dtype), || {
                splitk_source(dtype, act, has_bias)
            })?;
            let split_offs = self.upload_u32(&split_offs)?;
            return self.record(|rec| {
                let part = self.alloc_storage(DType::F32, part_len)?;
                let out = self.alloc_storage(DType::F32, len)?;
                let t = block.tiling();
                let (tiles_m, tiles_n) = (m.div_ceil(t.bm), n.div_ceil(t.bn));
                let params = Params::default()
                    .u(m)?
                    .u(n)?
                    .u(chunk)?
                    .u(spec.a.row_stride)?
                    .u(spec.a.col_stride)?
                    .u(spec.b.row_stride)?
                    .u(spec.b.col_stride)?
                    .u(0)?
                    .u(0)?
                    .u(tiles_m)?
                    .u(tiles_n)?;
                rec.dispatch(
                    &part_kernel,
                    &[a, b, a, &split_offs, &part],
                    tiles_m * tiles_n * batch * splits,
                    params,
                )?;
                let params = Params::default()
                    .u(len)?
                    .u(m * n)?
                    .u(n)?
                    .u(splits)?
                    .u(bias_off)?
                    .u(bias_stride)?;
                rec.dispatch(
                    &sum_kernel,
                    &[&part, bias.unwrap_or(a), &out],
                    len.div_ceil(256),
                    params,
                )?;
                self.finish_f32(rec, out, dtype, len)
            });
        }
        let (kernel, tile_m, tile_n) = match plan {
            Plan::Tiled {
                a: la,
                b: lb,
                block,
            } => (
                self.trusted_kernel(
                    &key,
                    &bindings(dtype, la.vec4, lb.vec4),
                    block_checks(dtype),
                    || block_source(dtype, act, has_bias, la, lb, block),
                )?,
                block.tiling().bm,
                block.tiling().bn,
            ),
            Plan::Coop {
                a: la,
                b: lb,
                shape,
            } => {
                let kernel = self.kernel(&key, &bindings(dtype, la.vec4, lb.vec4), || {
                    #[cfg(test)]
                    if emulated {
                        return tiled_coop_emulated_source(act, has_bias, la, lb, shape);
                    }
                    tiled_coop_source(act, has_bias, la, lb, shape)
                });
                match kernel {
                    Ok(k) => (k, crate::matmul_coop::BM, crate::matmul_coop::BN),
                    // A driver that lists the configuration but cannot build the kernel
                    // costs the speed-up, not the op: once recorded, the next call plans
                    // without cooperative matrices.
                    Err(e) => {
                        self.gpu().coop_failed(e.to_string());
                        return self.matmul_impl(spec, a, b, bias);
                    }
                }
            }
            _ => (
                self.kernel(&key, &bindings(dtype, false, false), || {
                    matmul_source(dtype, act, has_bias)
                })?,
                TILE,
                TILE,
            ),
        };
        let offs = self.upload_u32(&offs)?;
        self.record(|rec| {
            let out = self.alloc_storage(DType::F32, len)?;
            let (tiles_m, tiles_n) = (m.div_ceil(tile_m), n.div_ceil(tile_n));
            let params = Params::default()
                .u(m)?
                .u(n)?
                .u(spec.k)?
                .u(spec.a.row_stride)?
                .u(spec.a.col_stride)?
                .u(spec.b.row_stride)?
                .u(spec.b.col_stride)?
                .u(bias_off)?
                .u(bias_stride)?
                .u(tiles_m)?
                .u(tiles_n)?;
            let groups = tiles_m * tiles_n * batch;
            rec.dispatch(
                &kernel,
                &[a, b, bias.unwrap_or(a), &offs, &out],
                groups,
                params,
            )?;
            self.finish_f32(rec, out, dtype, len)
        })
    }
}
