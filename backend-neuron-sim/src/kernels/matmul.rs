//! Batched matmul with the fused epilogue, as a NeuronCore kernel.
//!
//! Algorithm (NEURON.md; the blocking of AWS's NKI matmul tutorial, kernel 4):
//! - Tiles: K = 128 (partition axis of both operands) × M = 128 (stationary free axis) ×
//!   N = 512 (moving free axis, one PSUM bank of fp32), accumulated over K in PSUM.
//! - The stationary operand is Aᵀ (`[K, M]`). A row-major A is loaded in rows
//!   (`[128 m, KB·128 k]`, one DMA) and transposed on the tensor engine into PSUM, then
//!   copied to SBUF by the scalar engine (exact); an A that is a transposed view is
//!   already `[K, M]` and comes by DMA; any other strides use a strided DMA.
//! - The moving operand is B (`[K, N]`). A row-major B comes by DMA (512-element rows);
//!   a B stored `[N, K]` (`a.matmul(&b.t())`) is loaded the way A is, in contiguous rows
//!   of n, and transposed on the tensor engine (`transpose_chunks`, shared with A: four
//!   128×128 transposes per PSUM bank, one eviction per bank) instead of by an
//!   element-wise transposing DMA, which ran the DMA engines at 2-byte descriptors
//!   (3% MFU on a bf16 2048³).
//! - Blocking: an M-block of up to 16 m-tiles of Aᵀ (all k-tiles of a K-block) stays in
//!   SBUF while every N-block of B streams through two alternating buffers (DMA of the
//!   next block overlaps the matmuls of this one); PSUM accumulators rotate over four
//!   banks so evictions overlap matmuls. When K does not fit one K-block, the M-block
//!   shrinks to at most four m-tiles whose Aᵀ for the whole of K stays in SBUF (made
//!   once per M-block, with the first N-block), and each output tile accumulates over
//!   every K-block in its own PSUM bank while B streams by K-block ("resident" plan).
//!   Before, Aᵀ was re-made for every (N-block, K-block) and partial sums went through
//!   fp32 SBUF accumulators; the resident plan took the bf16 4096×8192×8192 from 58% to
//!   81% MFU on trn2 (47% → 52% on trn1, where the DMA engines now bind: B is read once
//!   per M-block of 512 rows) and the f32 2048³ on trn1 from 70% to 96%. Where even two
//!   m-tiles of Aᵀ over K do not fit, partial sums go through fp32 SBUF accumulators
//!   (the tutorial's kernel 4).
//! - Eviction: PSUM → SBUF with the epilogue in fp32 (bias add on the vector engine,
//!   relu/gelu/silu on the scalar engine) and one rounding to the output dtype, then DMA
//!   to HBM. fp32 operands stay fp32 on the PE array (quarter rate).
//! - Ragged edges use partial tiles (fewer partitions or columns); K = 0 evicts zeros.

// Kernel code: tile and block indices are bounded by the validated op spec and the
// tile sizes this kernel chose.
#![allow(clippy::indexing_slicing)]

use crate::{ActFn, AluOp, Engine, HbmTensor, Result, Simulator, Tile};
use xkern_core::{Activation, DType, MatmulSpec, MatrixView};

const TK: usize = 128;
const TM: usize = 128;
const TN: usize = 512;
/// PSUM banks used for accumulators (the other four hold transposes: with two, the
/// transposes of B stored [N, K] waited on their evictions; 6/2 → 4/4 took the trn2
/// bf16 2048³ from 83% to 87% MFU, transposed B from 77% to 83%).
const ACC_BANKS: usize = 4;
/// PSUM banks for on-chip transposes (with the accumulators, all eight).
const TP_BANKS: usize = 4;

/// The block sizes for one problem.
struct Plan {
    /// k-tiles per K-block (of B; of Aᵀ too unless `resident`).
    kb: usize,
    /// m-tiles per M-block.
    mb: usize,
    /// Number of K-blocks.
    nkb: usize,
    /// K spans several blocks but the M-block's Aᵀ for the whole of K stays in SBUF:
    /// loaded (and transposed) once per M-block instead of once per (N-block, K-block),
    /// and each output tile accumulates over all of K in one PSUM bank (no fp32 SBUF
    /// accumulators). At most `ACC_BANKS` m-tiles.
    resident: bool,
}

/// A row-major A (`[M, K]`, k contiguous): loaded in rows and transposed on chip.
fn a_in_rows(spec: &MatmulSpec) -> bool {
    spec.a.col_stride == 1 && spec.a.row_stride != 1
}

/// A B stored `[N, K]` (read through `.t()`: k contiguous): loaded in rows of n and
/// transposed on chip, like a row-major A.
fn b_in_rows(spec: &MatmulSpec) -> bool {
    spec.b.row_stride == 1 && spec.b.col_stride != 1
}

fn plan(sim: &Simulator, spec: &MatmulSpec) -> Plan {
    let esz = spec.dtype.size_in_bytes();
    let budget = super::sbuf_budget(sim);
    let kt = spec.k.div_ceil(TK).max(1);
    let mt = spec.m.div_ceil(TM).max(1);
    // Fixed: three output stagings, an fp32 staging, a bias row, the A row buffers and,
    // for B in rows, one row buffer of a whole B block (512 rows of n).
    let b_rows = if b_in_rows(spec) { TN } else { 0 };
    let fixed = |kb: usize| 3 * TN * 4 + TN * 4 + TN * 4 + 2 * kb * TK * esz + kb * b_rows * esz;
    let mut kb = kt.min(16);
    while kb > 1 && 2 * kb * TN * esz + fixed(kb) > budget / 2 {
        kb /= 2;
    }
    let nkb = kt.div_ceil(kb);
    if nkb > 1 {
        // Resident Aᵀ: its row buffers hold all of K; at least two m-tiles must fit.
        let fixed_res = fixed(kb) + 2 * kt * TK * esz - 2 * kb * TK * esz;
        let room = budget.saturating_sub(2 * kb * TN * esz + fixed_res);
        let mb = (room / (kt * TK * esz)).min(ACC_BANKS).min(mt);
        if mb >= 2.min(mt) {
            return Plan {
                kb,
                mb,
                nkb,
                resident: true,
            };
        }
    }
    let per_m = kb * TK * esz + if nkb > 1 { TN * 4 } else { 0 };
    let room = budget.saturating_sub(2 * kb * TN * esz + fixed(kb));
    let mb = (room / per_m).clamp(1, 16).min(mt);
    Plan {
        kb,
        mb,
        nkb,
        resident: false,
    }
}

/// Persistent on-chip buffers of the kernel.
struct Buffers {
    /// Aᵀ blocks: one `[128, kb·128]` tile per m-tile of the M-block.
    at: Vec<Tile>,
    /// A rows awaiting transposition (two, alternating).
    arow: [Tile; 2],
    /// B rows awaiting transposition, `[128 n, 4 × kb·128 k]` (B in rows only): one
    /// buffer suffices, as the next block's DMA waits only for this block's transposes,
    /// which run before its matmuls.
    brow: Option<Tile>,
    /// B blocks `[128, kb·512]` (two, alternating).
    b: [Tile; 2],
    /// fp32 accumulators per m-tile (K-blocked case).
    acc: Vec<Tile>,
    /// PSUM accumulators and transpose banks.
    psum: Vec<Tile>,
    tpsum: [Tile; TP_BANKS],
    /// Output stagings (output dtype) and an fp32 staging for the bias add.
    ostage: [Tile; 3],
    fstage: Tile,
    bias: Tile,
}

/// Counters that rotate buffers.
#[derive(Default)]
struct Rot {
    arow: usize,
    b: usize,
    psum: usize,
    tpsum: usize,
    ostage: usize,
    copy_engine: usize,
}

/// The matmul kernel: `out[b] = act(a[b] · b[b] + bias)` for every batch entry.
pub(crate) fn matmul(
    sim: &mut Simulator,
    spec: &MatmulSpec,
    a: HbmTensor,
    b: HbmTensor,
    bias: Option<HbmTensor>,
    out: HbmTensor,
) -> Result<()> {
    let dt = spec.dtype;
    let p = plan(sim, spec);
    let f32_ = DType::F32;
    // k-tiles of one Aᵀ load: all of K when resident.
    let kb_a = if p.resident { p.kb * p.nkb } else { p.kb };
    let mut bufs = Buffers {
        at: (0..p.mb)
            .map(|_| sim.sbuf(TK, kb_a * TM, dt))
            .collect::<Result<_>>()?,
        arow: [sim.sbuf(TM, kb_a * TK, dt)?, sim.sbuf(TM, kb_a * TK, dt)?],
        brow: if b_in_rows(spec) {
            Some(sim.sbuf(TM, (TN / TM) * p.kb * TK, dt)?)
        } else {
            None
        },
        b: [sim.sbuf(TK, p.kb * TN, dt)?, sim.sbuf(TK, p.kb * TN, dt)?],
        acc: if p.nkb > 1 && !p.resident {
            (0..p.mb)
                .map(|_| sim.sbuf(TM, TN, f32_))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        },
        psum: (0..ACC_BANKS)
            .map(|_| sim.psum(TM, TN, f32_))
            .collect::<Result<_>>()?,
        tpsum: [
            sim.psum(TK, TN, f32_)?,
            sim.psum(TK, TN, f32_)?,
            sim.psum(TK, TN, f32_)?,
            sim.psum(TK, TN, f32_)?,
        ],
        ostage: [
            sim.sbuf(TM, TN, dt)?,
            sim.sbuf(TM, TN, dt)?,
            sim.sbuf(TM, TN, dt)?,
        ],
        fstage: sim.sbuf(TM, TN, f32_)?,
        bias: sim.sbuf(TM, TN, f32_)?,
    };
    let mut rot = Rot::default();
    let (m, k, n) = (spec.m, spec.k, spec.n);
    let (mt, kt, nt) = (m.div_ceil(TM), k.div_ceil(TK), n.div_ceil(TN));
    for bi in 0..spec.batch() {
        let (aoff, boff) = (spec.a_offset(bi), spec.b_offset(bi));
        let ooff = bi * m * n;
        for mb0 in (0..mt).step_by(p.mb) {
            let mcount = p.mb.min(mt - mb0);
            for nj in 0..nt {
                let (n0, nsz) = (nj * TN, TN.min(n - nj * TN));
                if let (Some(bias_t), Some(view)) = (&bias, &spec.bias) {
                    let ap = bias_t.pattern(
                        view.offset + n0 * view.stride,
                        [0, TM],
                        &[[view.stride, nsz]],
                    )?;
                    sim.dma_copy(bufs.bias.cols(0, nsz)?, ap)?;
                }
                if kt == 0 {
                    for i in 0..mcount {
                        let (m0, msz) = ((mb0 + i) * TM, TM.min(m - (mb0 + i) * TM));
                        let z = bufs.fstage.partition_slice(0, msz)?.cols(0, nsz)?;
                        sim.memset(Engine::Vector, &z, 0.0)?;
                        epilogue(sim, spec, &out, ooff, m0, msz, n0, nsz, z, &bufs, &mut rot)?;
                    }
                    continue;
                }
                // Aᵀ is loaded once per M-block (with the first N-block's matmuls).
                let a_once = p.nkb == 1 || p.resident;
                for kb in 0..p.nkb {
                    let k0 = kb * p.kb * TK;
                    let ktiles = p.kb.min(kt - kb * p.kb);
                    if !a_once {
                        for i in 0..mcount {
                            load_at(
                                sim,
                                spec,
                                &a,
                                aoff,
                                (mb0 + i) * TM,
                                kb,
                                &mut bufs,
                                i,
                                &mut rot,
                            )?;
                        }
                    }
                    let first_a = a_once && nj == 0 && kb == 0;
                    if first_a {
                        // The first m-tile's rows go ahead of the B block on the DMA
                        // engines, so that the first transposes do not wait for all of it.
                        load_at(sim, spec, &a, aoff, mb0 * TM, 0, &mut bufs, 0, &mut rot)?;
                    }
                    let bt = bufs.b[rot.b % 2];
                    rot.b += 1;
                    load_b(
                        sim,
                        spec,
                        &b,
                        boff,
                        (k0, ktiles, n0, nsz),
                        bt,
                        &bufs,
                        &mut rot,
                    )?;
                    for i in 0..mcount {
                        let (m0, msz) = ((mb0 + i) * TM, TM.min(m - (mb0 + i) * TM));
                        if first_a && i > 0 {
                            // Aᵀ of the M-block is made once, each m-tile just before its
                            // first matmuls: its DMA and transposes then overlap the
                            // matmuls of the m-tile before instead of all preceding them.
                            load_at(sim, spec, &a, aoff, m0, 0, &mut bufs, i, &mut rot)?;
                        }
                        // Resident: m-tile i accumulates over every K-block in bank i.
                        let bank = if p.resident { i } else { rot.psum % ACC_BANKS };
                        let ps = bufs.psum[bank].partition_slice(0, msz)?.cols(0, nsz)?;
                        if !p.resident {
                            rot.psum += 1;
                        }
                        // Column of k-tile kk of this block in the m-tile's Aᵀ.
                        let a_col = if p.resident { kb * p.kb } else { 0 };
                        for kk in 0..ktiles {
                            let ksz = TK.min(k - k0 - kk * TK);
                            let st = bufs.at[i]
                                .partition_slice(0, ksz)?
                                .cols((a_col + kk) * TM, msz)?;
                            let mv = bt.partition_slice(0, ksz)?.cols(kk * TN, nsz)?;
                            sim.matmul(&ps, &st, &mv, kk > 0 || (p.resident && kb > 0))?;
                        }
                        if p.resident {
                            if kb == p.nkb - 1 {
                                epilogue(
                                    sim, spec, &out, ooff, m0, msz, n0, nsz, ps, &bufs, &mut rot,
                                )?;
                            }
                            continue;
                        }
                        if p.nkb == 1 {
                            epilogue(sim, spec, &out, ooff, m0, msz, n0, nsz, ps, &bufs, &mut rot)?;
                            continue;
                        }
                        let acc = bufs.acc[i].partition_slice(0, msz)?.cols(0, nsz)?;
                        if kb == 0 {
                            sim.tensor_copy(Engine::Vector, &acc, &ps)?;
                        } else {
                            sim.tensor_tensor(Engine::Vector, &acc, &acc, &ps, AluOp::Add)?;
                        }
                        if kb == p.nkb - 1 {
                            epilogue(
                                sim, spec, &out, ooff, m0, msz, n0, nsz, acc, &bufs, &mut rot,
                            )?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Element offset of `(row, col)` of a matrix view starting at `base`.
fn at(v: &MatrixView, base: usize, row: usize, col: usize) -> usize {
    base + row * v.row_stride + col * v.col_stride
}

/// An operand read one k-tile at a time: k along partitions, `free` elements along the
/// free axis.
struct KTiles<'a> {
    hbm: &'a HbmTensor,
    k_stride: usize,
    free_stride: usize,
    free: usize,
}

/// DMAs k-tiles `k0/TK .. +ktiles` (of `kmax` rows) of `src` into `dst`, tile `kk` into
/// columns `kk·col_step ..`; `start(k)` is the HBM offset of row `k`'s first element.
fn dma_k_tiles(
    sim: &mut Simulator,
    src: &KTiles<'_>,
    start: impl Fn(usize) -> usize,
    (k0, ktiles, kmax): (usize, usize, usize),
    dst: Tile,
    col_step: usize,
) -> Result<()> {
    for kk in 0..ktiles {
        let kk0 = k0 + kk * TK;
        let ksz = TK.min(kmax - kk0);
        let ap = src.hbm.pattern(
            start(kk0),
            [src.k_stride, ksz],
            &[[src.free_stride, src.free]],
        )?;
        sim.dma_copy(
            dst.partition_slice(0, ksz)?.cols(kk * col_step, src.free)?,
            ap,
        )?;
    }
    Ok(())
}

/// Loads Aᵀ for m-tile `m0` and K-block `kb` into `bufs.at[slot]`.
#[allow(clippy::too_many_arguments)]
fn load_at(
    sim: &mut Simulator,
    spec: &MatmulSpec,
    a: &HbmTensor,
    aoff: usize,
    m0: usize,
    kb: usize,
    bufs: &mut Buffers,
    slot: usize,
    rot: &mut Rot,
) -> Result<()> {
    let p_kb = bufs.at[slot].free_size() / TM;
    let msz = TM.min(spec.m - m0);
    let k0 = kb * p_kb * TK;
    let kcols = (p_kb * TK).min(spec.k - k0);
    let ktiles = kcols.div_ceil(TK);
    let v = &spec.a;
    let dst = bufs.at[slot];
    if a_in_rows(spec) {
        // Row-major A: rows in one DMA, then transposes on the tensor engine, four
        // k-tiles per PSUM bank (k-tile kk lands in columns kk·128 of Aᵀ).
        let rows = bufs.arow[rot.arow % 2]
            .partition_slice(0, msz)?
            .cols(0, kcols)?;
        rot.arow += 1;
        let ap = a.pattern(at(v, aoff, m0, k0), [v.row_stride, msz], &[[1, kcols]])?;
        sim.dma_copy(rows, ap)?;
        let per_bank = TN / TM;
        let mut kk0 = 0;
        while kk0 < ktiles {
            // Only the last k-tile may be partial; it gets an eviction of its own.
            let full = kcols / TK;
            let cnt = if kk0 < full {
                per_bank.min(full - kk0)
            } else {
                1
            };
            let ksz = TK.min(kcols - kk0 * TK);
            let srcs = (kk0..kk0 + cnt)
                .map(|kk| rows.cols(kk * TK, ksz))
                .collect::<Result<Vec<_>>>()?;
            let d = dst
                .split(p_kb)?
                .outer(kk0, cnt)?
                .partition_slice(0, ksz)?
                .cols(0, msz)?;
            transpose_chunks(sim, &srcs, d, bufs.tpsum, rot)?;
            kk0 += cnt;
        }
        return Ok(());
    }
    // A transposed view (row_stride 1: already [K, M]) or general strides: by DMA, one
    // k-tile at a time (partition = k, free = m).
    let src = KTiles {
        hbm: a,
        k_stride: v.col_stride,
        free_stride: v.row_stride,
        free: msz,
    };
    dma_k_tiles(
        sim,
        &src,
        |kk0| at(v, aoff, m0, kk0),
        (k0, ktiles, spec.k),
        dst,
        TM,
    )
}

/// Loads the B block (k-tiles from `k0`, columns `n0..n0+nsz`) into `dst`.
#[allow(clippy::too_many_arguments)]
fn load_b(
    sim: &mut Simulator,
    spec: &MatmulSpec,
    b: &HbmTensor,
    boff: usize,
    (k0, ktiles, n0, nsz): (usize, usize, usize, usize),
    dst: Tile,
    bufs: &Buffers,
    rot: &mut Rot,
) -> Result<()> {
    let v = &spec.b;
    if let Some(brow) = bufs.brow {
        // B stored [N, K]: up to four groups of 128 n-rows, each one contiguous DMA of
        // its k-range, then per k-tile the groups' transposes share a PSUM bank and one
        // eviction fills that k-tile's `[128 k, nsz]` moving block.
        let kcols = (ktiles * TK).min(spec.k - k0);
        let groups = nsz.div_ceil(TM);
        let rows = brow.split(TN / TM)?;
        for j in 0..groups {
            let rsz = TM.min(nsz - j * TM);
            let ap = b.pattern(
                at(v, boff, k0, n0 + j * TM),
                [v.col_stride, rsz],
                &[[1, kcols]],
            )?;
            sim.dma_copy(rows.block(j)?.partition_slice(0, rsz)?.cols(0, kcols)?, ap)?;
        }
        for kk in 0..ktiles {
            let ksz = TK.min(kcols - kk * TK);
            let srcs = (0..groups)
                .map(|j| {
                    let rsz = TM.min(nsz - j * TM);
                    rows.block(j)?.partition_slice(0, rsz)?.cols(kk * TK, ksz)
                })
                .collect::<Result<Vec<_>>>()?;
            let d = dst.partition_slice(0, ksz)?.cols(kk * TN, nsz)?;
            transpose_chunks(sim, &srcs, d, bufs.tpsum, rot)?;
        }
        return Ok(());
    }
    // One DMA per k-tile, not one for the block: a DMA engine serves a transfer in one
    // stretch, so a 2 MiB block waits for a gap as long as itself, which the output
    // stores of the block before never leave (the tensor engine then idled ≈ 19 µs per
    // N-block of a bf16 2048³).
    let src = KTiles {
        hbm: b,
        k_stride: v.row_stride,
        free_stride: v.col_stride,
        free: nsz,
    };
    dma_k_tiles(
        sim,
        &src,
        |kk0| at(v, boff, kk0, n0),
        (k0, ktiles, spec.k),
        dst,
        TN,
    )
}

/// Transposes up to four chunks `srcs[i]` (`[r_i, ksz]` in SBUF) on the tensor engine
/// into one PSUM bank, chunk `i` at columns `i·128`, and evicts the bank to `dst`
/// (`[ksz, Σ r_i]`) with one copy, alternating the scalar and vector engines. Either
/// every chunk is 128 rows but the last (the bank's columns are then one contiguous
/// run), or all have the same `r` (`dst` then steps over chunks on its outer axis).
/// The shared row-load-and-transpose path of A (row-major) and B (stored `[N, K]`).
fn transpose_chunks(
    sim: &mut Simulator,
    srcs: &[Tile],
    dst: Tile,
    tpsum: [Tile; TP_BANKS],
    rot: &mut Rot,
) -> Result<()> {
    let (Some(first), Some(last)) = (srcs.first(), srcs.last()) else {
        return Ok(());
    };
    let ksz = first.free_size();
    let per_bank = TN / TM;
    if srcs.len() > per_bank {
        return Err(super::unsupported(
            "transpose_chunks",
            format!("{} chunks for a bank of {per_bank}", srcs.len()),
        ));
    }
    rot.tpsum += 1;
    let bank = tpsum[rot.tpsum % TP_BANKS].partition_slice(0, ksz)?;
    let slots = bank.split(per_bank)?;
    for (i, src) in srcs.iter().enumerate() {
        let tp = slots.block(i)?.cols(0, src.partitions())?;
        sim.transpose(&tp, src)?;
    }
    let packed = srcs[..srcs.len() - 1].iter().all(|s| s.partitions() == TM);
    let src = if packed {
        let total = (srcs.len() - 1) * TM + last.partitions();
        bank.cols(0, total)?
    } else {
        slots.cols(0, first.partitions())?.outer(0, srcs.len())?
    };
    let engine = if rot.copy_engine.is_multiple_of(2) {
        Engine::Scalar
    } else {
        Engine::Vector
    };
    rot.copy_engine += 1;
    sim.tensor_copy(engine, &dst, &src).map(drop)
}

/// Evicts one `[msz, nsz]` fp32 result (PSUM or SBUF) with bias and activation, rounds
/// to the output dtype and stores it.
#[allow(clippy::too_many_arguments)]
fn epilogue(
    sim: &mut Simulator,
    spec: &MatmulSpec,
    out: &HbmTensor,
    ooff: usize,
    m0: usize,
    msz: usize,
    n0: usize,
    nsz: usize,
    src: Tile,
    bufs: &Buffers,
    rot: &mut Rot,
) -> Result<()> {
    let o = bufs.ostage[rot.ostage % 3]
        .partition_slice(0, msz)?
        .cols(0, nsz)?;
    rot.ostage += 1;
    let mut cur = src;
    if spec.bias.is_some() {
        let f = bufs.fstage.partition_slice(0, msz)?.cols(0, nsz)?;
        let bias = bufs.bias.partition_slice(0, msz)?.cols(0, nsz)?;
        sim.tensor_tensor(Engine::Vector, &f, &cur, &bias, AluOp::Add)?;
        cur = f;
    }
    match spec.activation {
        Some(act) => {
            let func = match act {
                Activation::Relu => ActFn::Relu,
                Activation::Gelu => ActFn::Gelu,
                Activation::Silu => ActFn::Silu,
            };
            sim.activation(&o, func, &cur, 1.0.into(), 0.0.into(), None)?;
        }
        None => {
            sim.tensor_copy(Engine::Vector, &o, &cur)?;
        }
    }
    let dst = out.pattern(ooff + m0 * spec.n + n0, [spec.n, msz], &[[1, nsz]])?;
    sim.dma_copy(dst, o).map(drop)
}
