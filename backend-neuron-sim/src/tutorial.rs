//! The four kernels of AWS's NKI matrix-multiplication tutorial, written against this
//! simulator: `result[M, N] = lhsTᵀ · rhs` with `lhsT [K, M]` and `rhs [K, N]` in HBM.
//! They are the timing model's validation (NEURON.md: M = 4096, K = 8192, N = 8192,
//! bf16, trn1, one core; published 51.80, 42.96, 22.07 and 6.97 ms).
//!
//! Tiles are NKI's: TILE_K = 128 (partition, contraction), TILE_M = 128 (stationary free
//! size), TILE_N = 512 (moving free size, one PSUM bank). Where the tutorial declares a
//! tile inside a loop, NKI's compiler gives it several buffers so that loads run ahead
//! of compute; here the buffers are explicit: per-iteration tiles rotate over a ring of
//! [`LOAD_RING`] (loads) or 2 (PSUM, results), the operand blocks that a kernel keeps for
//! a whole loop are allocated once (with dependencies per 128-row tile, so a block's next
//! load of tile `k` waits only for the last matmul reading tile `k`), and the fully
//! optimised kernel double-buffers its operand blocks, as NEURON.md describes.
//!
//! 1. [`tiled`]: every k-step loads both tiles; nothing is reused.
//! 2. [`hoist_load`]: the lhsT column of an m-tile is loaded once and reused across n.
//! 3. [`block_free`]: 2 m-tiles × 2 n-tiles per block, both operand blocks in SBUF.
//! 4. [`fully_optimized`]: blocks of 16 m-tiles × 2 n-tiles × 8 k-tiles, partial sums
//!    accumulated in SBUF (in the operands' dtype, as the tutorial does), results packed
//!    into 2 KiB rows before the store.

// Kernel code: tile and block indices are bounded by the validated op spec and the
// tile sizes this kernel chose.
#![allow(clippy::indexing_slicing)]

use crate::engines::Engine;
use crate::error::{Result, SimError};
use crate::memory::HbmTensor;
use crate::numerics::AluOp;
use crate::sim::Simulator;
use crate::tile::Tile;
use xkern_core::DType;

/// Contraction tile (partitions).
pub const TILE_K: usize = 128;
/// Stationary free size.
pub const TILE_M: usize = 128;
/// Moving free size.
pub const TILE_N: usize = 512;
/// Buffers of a per-iteration load tile (the compiler's rotation, made explicit).
pub const LOAD_RING: usize = 4;

/// The three HBM tensors of a tutorial run.
#[derive(Clone, Copy, Debug)]
pub struct Problem {
    /// `[K, M]`, the stationary side (lhs transposed).
    pub lhs_t: HbmTensor,
    /// `[K, N]`, the moving side.
    pub rhs: HbmTensor,
    /// `[M, N]`, written by the kernel.
    pub result: HbmTensor,
}

impl Problem {
    /// Allocates zero-filled tensors for `M × K × N` in `dtype`.
    pub fn new(sim: &mut Simulator, m: usize, k: usize, n: usize, dtype: DType) -> Result<Problem> {
        Ok(Problem {
            lhs_t: sim.hbm_tensor(k, m, dtype)?,
            rhs: sim.hbm_tensor(k, n, dtype)?,
            result: sim.hbm_tensor(m, n, dtype)?,
        })
    }

    fn dims(&self, multiples: [usize; 3]) -> Result<(usize, usize, usize)> {
        let (k, m, n) = (self.lhs_t.rows(), self.lhs_t.cols(), self.rhs.cols());
        if self.rhs.rows() != k || self.result.rows() != m || self.result.cols() != n {
            return Err(SimError::Unsupported {
                instr: "tutorial kernel",
                detail: "lhsT [K, M], rhs [K, N] and result [M, N] do not agree".to_string(),
            });
        }
        if m % multiples[0] != 0 || k % multiples[1] != 0 || n % multiples[2] != 0 {
            return Err(SimError::Unsupported {
                instr: "tutorial kernel",
                detail: format!("M = {m}, K = {k}, N = {n} must be multiples of {multiples:?}"),
            });
        }
        Ok((m, k, n))
    }
}

fn ring(
    sim: &mut Simulator,
    count: usize,
    parts: usize,
    free: usize,
    dtype: DType,
    psum: bool,
) -> Result<Vec<Tile>> {
    (0..count)
        .map(|_| {
            if psum {
                sim.psum(parts, free, dtype)
            } else {
                sim.sbuf(parts, free, dtype)
            }
        })
        .collect()
}

/// Evicts a PSUM tile to SBUF (with cast) and stores it to `result` at `(row, col)`.
fn evict_store(
    sim: &mut Simulator,
    out: &Tile,
    ps: &Tile,
    result: &HbmTensor,
    row: usize,
    col: usize,
) -> Result<()> {
    sim.tensor_copy(Engine::Vector, out, ps)?;
    sim.dma_copy(
        result.block(row, out.partitions(), col, out.free_size())?,
        *out,
    )?;
    Ok(())
}

/// Kernel 1: for each (m, n) output tile, for each k: load both tiles, matmul.
pub fn tiled(sim: &mut Simulator, p: &Problem) -> Result<()> {
    let (m, k, n) = p.dims([TILE_M, TILE_K, TILE_N])?;
    let dt = p.lhs_t.dtype();
    let lt = ring(sim, LOAD_RING, TILE_K, TILE_M, dt, false)?;
    let rt = ring(sim, LOAD_RING, TILE_K, TILE_N, dt, false)?;
    let ps = ring(sim, 2, TILE_M, TILE_N, DType::F32, true)?;
    let out = ring(sim, 2, TILE_M, TILE_N, p.result.dtype(), false)?;
    let (mut c, mut o) = (0, 0);
    for mi in 0..m / TILE_M {
        for ni in 0..n / TILE_N {
            let acc = ps[o % 2];
            for ki in 0..k / TILE_K {
                let (l, r) = (lt[c % LOAD_RING], rt[c % LOAD_RING]);
                c += 1;
                sim.dma_copy(l, p.lhs_t.block(ki * TILE_K, TILE_K, mi * TILE_M, TILE_M)?)?;
                sim.dma_copy(r, p.rhs.block(ki * TILE_K, TILE_K, ni * TILE_N, TILE_N)?)?;
                sim.matmul(&acc, &l, &r, ki > 0)?;
            }
            evict_store(sim, &out[o % 2], &acc, &p.result, mi * TILE_M, ni * TILE_N)?;
            o += 1;
        }
    }
    Ok(())
}

/// Kernel 2: the lhsT column of each m-tile (K/128 tiles) is loaded once and reused
/// for every n; the rhs column of each n is loaded per (m, n).
pub fn hoist_load(sim: &mut Simulator, p: &Problem) -> Result<()> {
    let (m, k, n) = p.dims([TILE_M, TILE_K, TILE_N])?;
    let dt = p.lhs_t.dtype();
    let kt = k / TILE_K;
    let lhs_col = sim.sbuf(TILE_K, kt * TILE_M, dt)?.split(kt)?;
    let rhs_col = sim.sbuf(TILE_K, kt * TILE_N, dt)?.split(kt)?;
    let ps = ring(sim, 2, TILE_M, TILE_N, DType::F32, true)?;
    let out = ring(sim, 2, TILE_M, TILE_N, p.result.dtype(), false)?;
    let mut o = 0;
    for mi in 0..m / TILE_M {
        for ki in 0..kt {
            sim.dma_copy(
                lhs_col.block(ki)?,
                p.lhs_t.block(ki * TILE_K, TILE_K, mi * TILE_M, TILE_M)?,
            )?;
        }
        for ni in 0..n / TILE_N {
            for ki in 0..kt {
                sim.dma_copy(
                    rhs_col.block(ki)?,
                    p.rhs.block(ki * TILE_K, TILE_K, ni * TILE_N, TILE_N)?,
                )?;
            }
            let acc = ps[o % 2];
            for ki in 0..kt {
                sim.matmul(&acc, &lhs_col.block(ki)?, &rhs_col.block(ki)?, ki > 0)?;
            }
            evict_store(sim, &out[o % 2], &acc, &p.result, mi * TILE_M, ni * TILE_N)?;
            o += 1;
        }
    }
    Ok(())
}

/// Kernel 3: blocks of 2 m-tiles × 2 n-tiles; both operand blocks (all K) held in SBUF.
pub fn block_free(sim: &mut Simulator, p: &Problem) -> Result<()> {
    const BM: usize = 2;
    const BN: usize = 2;
    let (m, k, n) = p.dims([TILE_M * BM, TILE_K, TILE_N * BN])?;
    let dt = p.lhs_t.dtype();
    let kt = k / TILE_K;
    // Tile (b, k) of a block lives at block index b * kt + k.
    let lhs_blk = sim.sbuf(TILE_K, BM * kt * TILE_M, dt)?.split(BM * kt)?;
    let rhs_blk = sim.sbuf(TILE_K, BN * kt * TILE_N, dt)?.split(BN * kt)?;
    let ps = ring(sim, 2, TILE_M, TILE_N, DType::F32, true)?;
    let out = ring(sim, 2, TILE_M, TILE_N, p.result.dtype(), false)?;
    let mut o = 0;
    for mi in 0..m / (TILE_M * BM) {
        for bm in 0..BM {
            for ki in 0..kt {
                let col = (mi * BM + bm) * TILE_M;
                sim.dma_copy(
                    lhs_blk.block(bm * kt + ki)?,
                    p.lhs_t.block(ki * TILE_K, TILE_K, col, TILE_M)?,
                )?;
            }
        }
        for ni in 0..n / (TILE_N * BN) {
            for bn in 0..BN {
                for ki in 0..kt {
                    let col = (ni * BN + bn) * TILE_N;
                    sim.dma_copy(
                        rhs_blk.block(bn * kt + ki)?,
                        p.rhs.block(ki * TILE_K, TILE_K, col, TILE_N)?,
                    )?;
                }
            }
            for bm in 0..BM {
                for bn in 0..BN {
                    let acc = ps[o % 2];
                    for ki in 0..kt {
                        sim.matmul(
                            &acc,
                            &lhs_blk.block(bm * kt + ki)?,
                            &rhs_blk.block(bn * kt + ki)?,
                            ki > 0,
                        )?;
                    }
                    let (row, col) = ((mi * BM + bm) * TILE_M, (ni * BN + bn) * TILE_N);
                    evict_store(sim, &out[o % 2], &acc, &p.result, row, col)?;
                    o += 1;
                }
            }
        }
    }
    Ok(())
}

/// Block sizes of the fully optimised kernel, in tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    /// m-tiles per block (tutorial: 16).
    pub m_tiles: usize,
    /// n-tiles per block (tutorial: 2).
    pub n_tiles: usize,
    /// k-tiles per block (tutorial: 8).
    pub k_tiles: usize,
}

impl Blocking {
    /// The tutorial's blocking: 16 × 2 × 8.
    pub const TUTORIAL: Blocking = Blocking {
        m_tiles: 16,
        n_tiles: 2,
        k_tiles: 8,
    };
}

/// Kernel 4: blocks of `b.m_tiles` m-tiles × `b.n_tiles` n-tiles × `b.k_tiles` k-tiles.
/// Per n-block the whole M × BLOCK_N result is accumulated in SBUF across k-blocks;
/// operand blocks are double-buffered; rows are packed to BLOCK_N before the store.
pub fn fully_optimized(sim: &mut Simulator, p: &Problem, b: Blocking) -> Result<()> {
    let (bm_, bn_, bk_) = (b.m_tiles * TILE_M, b.n_tiles * TILE_N, b.k_tiles * TILE_K);
    let (m, k, n) = p.dims([bm_, bk_, bn_])?;
    let dt = p.lhs_t.dtype();
    let acc_dt = p.result.dtype();
    let (nbm, nbk, nbn) = (m / bm_, k / bk_, n / bn_);
    let rhs_bufs: Vec<Tile> = (0..2)
        .map(|_| sim.sbuf(TILE_K, b.k_tiles * bn_, dt)?.split(b.k_tiles))
        .collect::<Result<_>>()?;
    let lhs_bufs: Vec<Tile> = (0..2)
        .map(|_| sim.sbuf(TILE_K, b.k_tiles * bm_, dt)?.split(b.k_tiles))
        .collect::<Result<_>>()?;
    // result_tiles[m-block][m-tile][n-tile] = block ((mb * m_tiles + bm) * n_tiles + bn).
    let results = sim
        .sbuf(TILE_M, nbm * b.m_tiles * b.n_tiles * TILE_N, acc_dt)?
        .split(nbm * b.m_tiles * b.n_tiles)?;
    let ps = ring(
        sim,
        sim.config().psum_banks,
        TILE_M,
        TILE_N,
        DType::F32,
        true,
    )?;
    let packed = ring(sim, 2, TILE_M, bn_, p.result.dtype(), false)?;
    let (mut rb, mut lb, mut o, mut q) = (0, 0, 0, 0);
    for ni in 0..nbn {
        for i in 0..nbm * b.m_tiles * b.n_tiles {
            sim.memset(Engine::GpSimd, &results.block(i)?, 0.0)?;
        }
        for kb in 0..nbk {
            let rhs = rhs_bufs[rb % 2];
            rb += 1;
            for t in 0..b.k_tiles {
                let row = (kb * b.k_tiles + t) * TILE_K;
                sim.dma_copy(rhs.block(t)?, p.rhs.block(row, TILE_K, ni * bn_, bn_)?)?;
            }
            for mb in 0..nbm {
                let lhs = lhs_bufs[lb % 2];
                lb += 1;
                for t in 0..b.k_tiles {
                    let row = (kb * b.k_tiles + t) * TILE_K;
                    sim.dma_copy(lhs.block(t)?, p.lhs_t.block(row, TILE_K, mb * bm_, bm_)?)?;
                }
                for bn in 0..b.n_tiles {
                    for bm in 0..b.m_tiles {
                        let acc = ps[o % ps.len()];
                        o += 1;
                        for t in 0..b.k_tiles {
                            let st = lhs.block(t)?.cols(bm * TILE_M, TILE_M)?;
                            let mv = rhs.block(t)?.cols(bn * TILE_N, TILE_N)?;
                            sim.matmul(&acc, &st, &mv, t > 0)?;
                        }
                        let r = results.block((mb * b.m_tiles + bm) * b.n_tiles + bn)?;
                        sim.tensor_tensor(Engine::Vector, &r, &r, &acc, AluOp::Add)?;
                    }
                }
            }
        }
        for mb in 0..nbm {
            for bm in 0..b.m_tiles {
                let pk = packed[q % 2];
                q += 1;
                for bn in 0..b.n_tiles {
                    let r = results.block((mb * b.m_tiles + bm) * b.n_tiles + bn)?;
                    sim.tensor_copy(Engine::Vector, &pk.cols(bn * TILE_N, TILE_N)?, &r)?;
                }
                let row = (mb * b.m_tiles + bm) * TILE_M;
                sim.dma_copy(p.result.block(row, TILE_M, ni * bn_, bn_)?, pk)?;
            }
        }
    }
    Ok(())
}
