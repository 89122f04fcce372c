//! Fused attention as a NeuronCore kernel: the flash loop of NEURON.md.
//!
//! Layout. Keys and values of one (batch, kv head) are loaded once, as contiguous rows
//! (128 keys on partitions), and kept in SBUF for every query head of the group (GQA/MQA
//! by mapping) and every query tile: kᵀ `[D, Skv]` (d on partitions) is made by
//! tensor-engine transposes of the key rows, four 128-key chunks per PSUM bank and one
//! eviction per bank; v stays in rows `[128 keys, chunk, Dv + 1]` with a column of ones
//! appended, so that `p·[v | 1]` also yields the softmax denominator `l = Σp`. Each
//! query tile (up to 128 queries on partitions) loads its rows and transposes them the
//! same way into qᵀ `[D, Mq]`. No transposing DMA anywhere.
//!
//! Per key block of `B` keys (three PSUM banks of fp32 scores):
//! 1. `S = q·kᵀ` on the tensor engine into PSUM (stationary qᵀ, moving kᵀ, N = 512);
//! 2. causal: only the ≤ 127 keys of the tile's diagonal window are masked, by
//!    `affine_select` (GpSimd) on an SBUF copy written back to PSUM; blocks above the
//!    diagonal are never computed (bottom-right alignment: query i sees j ≤ i + Skv − Sq);
//! 3. row max `r` of S (vector, read from PSUM), and on GpSimd (SBUF only, [P, 1] tiles)
//!    the running bias `b = min(−scale·r, b_old)` (= −scale·max, starting at +MAX so a
//!    query that has seen no key never forms ∞ − ∞) and the correction
//!    `e^{b − b_old}` (as `e^x` by the ALU's pow);
//! 4. `p = exp(scale·S + b)` on the scalar engine, PSUM → SBUF in the input dtype;
//! 5. `p` transposed on the tensor engine (128-key chunks, into the PSUM banks S just
//!    left), evicted to SBUF by the vector and scalar engines (split to balance them);
//! 6. `O ← O·e^{b − b_old}` in PSUM (scalar engine), then `O += pᵀ·[v | 1]`
//!    accumulated in PSUM across all blocks of the tile.
//!
//! Finally `out = O[:, :Dv] / max(O[:, Dv], tiny)`: a query that sees no key has
//! `O = 0, l = 0` and gets zeros; NaN in a visible score propagates through the max to
//! its row (masked scores are replaced by −∞ before the max, so a NaN there does not).
//!
//! Software pipeline: the engines run their queues in program order, so the kernel
//! issues stage A (QK, max, bias, exp) of block j + 1 before stage B (transposes,
//! evictions, rescale, PV, and for a tile's last block the normalisation) of block j,
//! across tiles and heads; two score buffers and two O accumulators make that legal.
//!
//! Cost per 128 queries × B keys (D = 128): tensor 3B cycles (QK B, transposes B, PV
//! B·(Dv+1)/128), of which 2B useful; vector and scalar together three passes over B
//! elements (max, exp, eviction), which bound the kernel: see `EVICT_ON_VECTOR`.
//!
//! Decode (Sq = 1) runs the same loop with the query heads of a GQA group stacked on
//! partitions: one tile per group instead of one single-row tile per head, and keys
//! loaded in an order that makes each partition's K run contiguous (see `load_kv`):
//! trn2 bf16 q32/kv8/Skv 4096 13% → 31% of HBM bandwidth (trn1 10% → 27%); V's
//! 256-byte rows (a column of ones follows each chunk) now bound the DMA.

// Kernel code: tile and block indices are bounded by the validated op spec and the
// tile sizes this kernel chose.
#![allow(clippy::indexing_slicing)]

use crate::{ActFn, Affine, AluOp, CmpOp, Engine, HbmTensor, Result, ScalarArg, Simulator, Tile};
use xkern_core::{AttentionSpec, DType};

const P: usize = 128;
/// One PSUM bank of fp32 (N of one matmul).
const BANK: usize = 512;
/// The share (numerator, denominator) of a block's pᵀ chunks the vector engine evicts
/// (the scalar engine the rest): the vector engine also does the row max and runs at
/// 0.96 GHz against the scalar engine's 1.2 (trn2), which also does exp and the O
/// rescale. 3/8 balances the two on trn2 (measured with the bench's S = 4096 cases).
const EVICT_ON_VECTOR: (usize, usize) = (5, 8);
/// Blocks whose stage A runs ahead of the oldest stage B.
const DEPTH: usize = 2;
/// Rotation of per-block SBUF state (p and the [P, 1] tiles): more than DEPTH.
const RING: usize = DEPTH + 2;
const V: Engine = Engine::Vector;
const S: Engine = Engine::Scalar;
const G: Engine = Engine::GpSimd;

/// A tile's view `[count]` of the outer free axis from `start` (same inner axis).
fn outer(t: Tile, start: usize, count: usize) -> Tile {
    let mut v = t;
    v.offset += start * t.free[0][0] * t.dtype.size_in_bytes();
    v.free[0][1] = count;
    v
}

/// Static sizes of one problem.
struct Plan {
    /// Resident key/value sets.
    nsets: usize,
    /// O accumulators and the transpose slot share one PSUM bank.
    shared: bool,
    /// pᵀ has PSUM of its own (16-bit); else it goes into its block's score banks.
    pt_own: bool,
    /// Score buffers in PSUM.
    nbuf: usize,
    d: usize,
    dv: usize,
    dchunks: usize,
    /// Columns of the O accumulator: Dv values and the ones column.
    ocols: usize,
    /// Keys per block (a multiple of 512).
    block: usize,
    /// Keys whose kᵀ and v stay resident at once (a multiple of 128).
    window: usize,
    /// Activation scale (the score multiplier, 1 when it is folded into qᵀ as 0).
    act_scale: f32,
    /// Multiplier of qᵀ at its eviction (1, or 0 for a zero scale).
    q_mult: f32,
}

impl Plan {
    fn new(sim: &Simulator, spec: &AttentionSpec) -> Result<Plan> {
        let (d, dv) = (spec.head_dim, spec.v_head_dim);
        let ocols = dv + 1;
        let cfg = sim.config();
        let banks = cfg.psum_banks;
        // PSUM: two O accumulators and a slot for q/k transposes, in one bank when
        // they fit; pᵀ (16-bit) in banks of its own; the rest in three score buffers
        // (so that QK of block j + 3 only waits for exp of block j), two if nothing
        // else fits.
        let shared = 2 * ocols + P <= BANK;
        let o_banks = if shared {
            1
        } else {
            2 * ocols.div_ceil(BANK) + 1
        };
        let pt_esz = spec.dtype.size_in_bytes();
        let bank_bytes = cfg.psum_bank_bytes.max(1);
        let mut layout = None;
        'search: for nbuf in [3, 2] {
            for s_banks in (1..=3).rev() {
                let block = s_banks * BANK;
                // fp32 pᵀ is written into the block's own score banks instead.
                let pt_banks = if pt_esz < 4 {
                    (block * pt_esz).div_ceil(bank_bytes)
                } else {
                    0
                };
                if nbuf * s_banks + o_banks + pt_banks <= banks {
                    layout = Some((nbuf, s_banks, pt_banks > 0));
                    break 'search;
                }
            }
        }
        let Some((nbuf, s_banks, pt_own)) = layout else {
            return Err(super::unsupported(
                "attention",
                format!("a value head dim of {dv} leaves no PSUM for scores"),
            ));
        };
        let block = s_banks * BANK;
        let esz = spec.dtype.size_in_bytes();
        // SBUF: fixed tiles (p, pᵀ, q rows, qᵀ, o, mask) and per-key resident data
        // (kᵀ, v rows, k rows) in two sets.
        let fixed = (RING + 2) * block * esz
            + block * 4
            + 2 * d * esz
            + 2 * d.div_ceil(P) * P * esz
            + 2 * dv * esz
            + P * 4
            + 64 * 4;
        // Resident key sets: every block in flight (QK runs up to `nbuf` blocks ahead,
        // p·v one behind) may read a different (batch, kv head), so a new set must
        // never overwrite one a block in flight still reads.
        let nsets = nbuf + 2;
        let per_key = (d.div_ceil(P) * esz + ocols * esz / P + 2) * nsets + d * esz / P;
        let room = super::sbuf_budget(sim).saturating_sub(fixed);
        let window = (room / per_key.max(1)) / P * P;
        if window < P {
            return Err(super::unsupported(
                "attention",
                format!("head dims {d}/{dv} leave no SBUF for keys"),
            ));
        }
        let window = window.min(spec.kv_seq.div_ceil(P).max(1) * P);
        let (act_scale, q_mult) = if spec.scale == 0.0 {
            (1.0, 0.0)
        } else {
            (spec.scale, 1.0)
        };
        Ok(Plan {
            nsets,
            nbuf,
            shared,
            pt_own,
            d,
            dv,
            dchunks: d.div_ceil(P),
            ocols,
            block,
            window,
            act_scale,
            q_mult,
        })
    }
}

/// kᵀ and v of one key window, resident in SBUF.
struct KvSet {
    /// kᵀ per d-chunk: `[128 d, window]`.
    kt: Vec<Tile>,
    /// Key rows `[128 keys, chunk · D]`.
    krows: Tile,
    /// v rows with the ones column: `[128 keys, chunk · (Dv + 1)]`.
    v: Tile,
    /// Which (batch, kv head, window) it holds.
    holds: Option<(usize, usize, usize)>,
}

/// On-chip buffers of the kernel.
struct Bufs {
    kv: Vec<KvSet>,
    /// Score buffers `[128, block]` fp32 in PSUM (also the pᵀ destination).
    s: Vec<Tile>,
    /// O accumulators `[128, ocols]` fp32 in PSUM.
    o: [Tile; 2],
    /// PSUM for q and k transposes: `aux_slots` slots of `[128, 128]`.
    aux: Tile,
    aux_slots: usize,
    /// PSUM for pᵀ when it has its own (16-bit dtypes).
    pt_ps: Option<Tile>,
    /// p and pᵀ in SBUF, two each.
    p: Vec<Tile>,
    pt: [Tile; 2],
    qrows: [Tile; 2],
    /// qᵀ per d-chunk, two sets.
    qt: [Vec<Tile>; 2],
    osb: [Tile; 2],
    /// Row-max halves `[128, block / 2]` fp32, two.
    half: [Tile; 2],
    /// Causal window scratch `[128, 128]` fp32.
    mask: Tile,
    /// `[128, 1]` fp32 state: row maxima, biases, differences, corrections, l.
    r: Vec<Tile>,
    b: Vec<Tile>,
    diff: Vec<Tile>,
    corr: Vec<Tile>,
    lmax: Tile,
    /// e, for `e^x` as a pow on GpSimd.
    e: Tile,
}

impl Bufs {
    fn new(sim: &mut Simulator, spec: &AttentionSpec, plan: &Plan) -> Result<Bufs> {
        let dt = spec.dtype;
        let f = DType::F32;
        let nch = plan.window / P;
        let mut kv = Vec::new();
        // One staging of key rows (only the transposes read it), `nsets` resident sets.
        let krows = sim.sbuf(P, nch * plan.d, dt)?;
        for _ in 0..plan.nsets {
            let kt = (0..plan.dchunks)
                .map(|_| sim.sbuf(P, plan.window, dt))
                .collect::<Result<_>>()?;
            let v = sim.sbuf(P, nch * plan.ocols, dt)?;
            // The ones column of every chunk (the DMAs of v never write it).
            sim.memset(G, &v.split(nch)?.cols(plan.dv, 1)?, 1.0)?;
            kv.push(KvSet {
                kt,
                krows,
                v,
                holds: None,
            });
        }
        let (o, aux) = if plan.shared {
            let bank = sim.psum(P, BANK, f)?;
            (
                [
                    bank.cols(0, plan.ocols)?,
                    bank.cols(plan.ocols, plan.ocols)?,
                ],
                bank.cols(2 * plan.ocols, BANK - 2 * plan.ocols)?,
            )
        } else {
            let cols = plan.ocols.div_ceil(BANK) * BANK;
            (
                [
                    sim.psum(P, cols, f)?.cols(0, plan.ocols)?,
                    sim.psum(P, cols, f)?.cols(0, plan.ocols)?,
                ],
                sim.psum(P, BANK, f)?,
            )
        };
        let pt_ps = if plan.pt_own {
            Some(sim.psum(P, plan.block, dt)?)
        } else {
            None
        };
        let e = sim.sbuf(P, 1, f)?;
        sim.memset(G, &e, std::f32::consts::E)?;
        let small = |sim: &mut Simulator| sim.sbuf(P, 1, f);
        Ok(Bufs {
            kv,
            s: (0..plan.nbuf)
                .map(|_| sim.psum(P, plan.block, f))
                .collect::<Result<_>>()?,
            o,
            aux,
            aux_slots: aux.free_size() / P,
            pt_ps,
            p: (0..RING)
                .map(|_| sim.sbuf(P, plan.block, dt))
                .collect::<Result<_>>()?,
            pt: [sim.sbuf(P, plan.block, dt)?, sim.sbuf(P, plan.block, dt)?],
            qrows: [sim.sbuf(P, plan.d, dt)?, sim.sbuf(P, plan.d, dt)?],
            qt: [
                (0..plan.dchunks)
                    .map(|_| sim.sbuf(P, P, dt))
                    .collect::<Result<_>>()?,
                (0..plan.dchunks)
                    .map(|_| sim.sbuf(P, P, dt))
                    .collect::<Result<_>>()?,
            ],
            osb: [sim.sbuf(P, plan.dv, dt)?, sim.sbuf(P, plan.dv, dt)?],
            mask: sim.sbuf(P, P, f)?,
            half: [
                sim.sbuf(P, plan.block / 2, f)?,
                sim.sbuf(P, plan.block / 2, f)?,
            ],
            r: (0..RING).map(|_| small(sim)).collect::<Result<_>>()?,
            b: (0..RING).map(|_| small(sim)).collect::<Result<_>>()?,
            diff: (0..RING).map(|_| small(sim)).collect::<Result<_>>()?,
            corr: (0..RING).map(|_| small(sim)).collect::<Result<_>>()?,
            lmax: small(sim)?,
            e,
        })
    }
}

/// One query tile in flight.
#[derive(Clone, Copy)]
struct QTile {
    b: usize,
    h: usize,
    q0: usize,
    mq: usize,
    /// Rows are query heads `h..h + mq` of one query (decode, see `run`) rather than
    /// queries `q0..q0 + mq` of head `h`.
    heads: bool,
    /// Which O accumulator, qᵀ set and output staging it uses.
    slot: usize,
    kvset: usize,
}

/// One key block of a tile in flight.
#[derive(Clone, Copy)]
struct Block {
    t: QTile,
    /// First key (absolute) and count.
    k0: usize,
    nk: usize,
    /// First key of the resident window.
    w0: usize,
    /// Index of the block within its tile, and whether it is the tile's last.
    j: usize,
    last: bool,
    /// Rotation counter (score buffer, p, pᵀ, state tiles).
    n: usize,
}

struct Kernel<'a> {
    spec: &'a AttentionSpec,
    plan: Plan,
    bufs: Bufs,
    q: HbmTensor,
    k: HbmTensor,
    v: HbmTensor,
    out: HbmTensor,
    /// Alternates the engine of small evictions.
    flip: usize,
}

/// The attention kernel.
pub(crate) fn attention(
    sim: &mut Simulator,
    spec: &AttentionSpec,
    q: HbmTensor,
    k: HbmTensor,
    v: HbmTensor,
    out: HbmTensor,
) -> Result<()> {
    if spec.q_seq == 0 || spec.q_heads == 0 || spec.batch == 0 {
        return Ok(());
    }
    let plan = Plan::new(sim, spec)?;
    let bufs = Bufs::new(sim, spec, &plan)?;
    let mut kern = Kernel {
        spec,
        plan,
        bufs,
        q,
        k,
        v,
        out,
        flip: 0,
    };
    kern.run(sim)
}

impl Kernel<'_> {
    fn small_engine(&mut self) -> Engine {
        self.flip += 1;
        if self.flip.is_multiple_of(2) { V } else { S }
    }

    fn run(&mut self, sim: &mut Simulator) -> Result<()> {
        let spec = self.spec;
        let group = spec.q_heads / spec.kv_heads.max(1);
        let shift = spec.kv_seq as i64 - spec.q_seq as i64;
        // Every (tile, block) in order; tiles that see no key are stored at once.
        let mut list: Vec<(Block, (usize, usize, usize))> = Vec::new();
        let (mut ntile, mut nblock) = (0usize, 0usize);
        // Decode (one query): the query heads of a GQA group share every key, so they
        // form one tile, a head per partition, instead of one single-row tile each:
        // every instruction then serves the whole group (its cost is mostly fixed for
        // one row), and kᵀ and v are read once per group and block. One query needs no
        // causal mask (it sees every key), so the diagonal logic is unaffected.
        let stack = spec.q_seq == 1 && group > 1;
        for b in 0..spec.batch {
            for kvh in 0..spec.kv_heads {
                let heads = kvh * group..(kvh + 1) * group;
                let tiles: Vec<(usize, usize, usize)> = if stack {
                    heads
                        .clone()
                        .step_by(P)
                        .map(|h0| (h0, 0, P.min(heads.end - h0)))
                        .collect()
                } else {
                    heads
                        .flat_map(|h| {
                            (0..spec.q_seq)
                                .step_by(P)
                                .map(move |q0| (h, q0, P.min(spec.q_seq - q0)))
                        })
                        .collect()
                };
                {
                    for (h, q0, mq) in tiles {
                        // Keys [0, kend) are visible to some query of the tile.
                        let kend = if spec.causal {
                            (q0 as i64 + mq as i64 + shift).clamp(0, spec.kv_seq as i64) as usize
                        } else {
                            spec.kv_seq
                        };
                        let t = QTile {
                            b,
                            h,
                            q0,
                            mq,
                            heads: stack,
                            slot: ntile % 2,
                            kvset: 0,
                        };
                        ntile += 1;
                        if kend == 0 {
                            self.zero_tile(sim, &t)?;
                            continue;
                        }
                        let blocks = self.blocks(kend);
                        let nb = blocks.len();
                        for (j, (k0, nk, w0)) in blocks.into_iter().enumerate() {
                            let blk = Block {
                                t,
                                k0,
                                nk,
                                w0,
                                j,
                                last: j + 1 == nb,
                                n: nblock,
                            };
                            nblock += 1;
                            list.push((blk, (b, kvh, w0)));
                        }
                    }
                }
            }
        }
        // Modulo schedule: iteration i issues QK of block i + 3, the row max and bias
        // of block i + 2, exp of block i + 1 and the rest of block i, so that each
        // engine's in-order queue holds work whose inputs are (nearly) ready. QK may
        // run as far ahead as there are score buffers, one less when pᵀ is written
        // into its block's score banks (fp32).
        let n = list.len() as i64;
        let qa = if self.plan.pt_own {
            self.plan.nbuf
        } else {
            self.plan.nbuf - 1
        } as i64;
        let ra = qa.min(2);
        let ea = ra.min(1);
        let mut last_use = vec![i64::MIN; self.plan.nsets];
        for i in -qa..n {
            let ahead = i + qa;
            if ahead < n {
                let (blk, want) = &mut list[ahead as usize];
                let set = match self.bufs.kv.iter().position(|s| s.holds == Some(*want)) {
                    Some(s) => s,
                    None => {
                        // The least recently used set: with more sets than blocks in
                        // flight, no block in flight reads it.
                        let s = (0..last_use.len())
                            .min_by_key(|&s| last_use[s])
                            .unwrap_or(0);
                        self.load_kv(sim, s, want.0, want.1, want.2)?;
                        s
                    }
                };
                last_use[set] = ahead;
                blk.t.kvset = set;
                if blk.j == 0 {
                    let t = blk.t;
                    self.load_q(sim, &t)?;
                }
                let blk = *blk;
                self.qk(sim, &blk)?;
            }
            if (0..n).contains(&(i + ra)) {
                let blk = list[(i + ra) as usize].0;
                self.row_max(sim, &blk, shift)?;
            }
            if (0..n).contains(&(i + ea)) {
                let blk = list[(i + ea) as usize].0;
                self.exp(sim, &blk)?;
            }
            if i >= 0 {
                let blk = list[i as usize].0;
                self.transpose_p(sim, &blk)?;
            }
            // p·v of block i − 1 only now, so that the transposes of block i are not
            // queued behind it on the tensor engine; then block i's O rescale.
            if i >= 1 {
                let blk = list[(i - 1) as usize].0;
                self.pv(sim, &blk)?;
            }
            if i >= 0 {
                let blk = list[i as usize].0;
                self.rescale(sim, &blk)?;
            }
        }
        if n > 0 {
            let blk = list[(n - 1) as usize].0;
            self.pv(sim, &blk)?;
        }
        Ok(())
    }

    /// The blocks `(k0, nk, window start)` covering keys `[0, kend)`: blocks never
    /// straddle a window.
    fn blocks(&self, kend: usize) -> Vec<(usize, usize, usize)> {
        let mut v = Vec::new();
        for w0 in (0..kend).step_by(self.plan.window) {
            let wend = kend.min(w0 + self.plan.window);
            for k0 in (w0..wend).step_by(self.plan.block) {
                v.push((k0, self.plan.block.min(wend - k0), w0));
            }
        }
        v
    }

    /// Stores zeros for a tile whose queries see no key.
    fn zero_tile(&mut self, sim: &mut Simulator, t: &QTile) -> Result<()> {
        let o = self.bufs.osb[t.slot].partition_slice(0, t.mq)?;
        sim.memset(G, &o, 0.0)?;
        self.store(sim, t, o)
    }

    fn store(&mut self, sim: &mut Simulator, t: &QTile, o: Tile) -> Result<()> {
        let spec = self.spec;
        let dv = self.plan.dv;
        let row = ((t.b * spec.q_heads + t.h) * spec.q_seq + t.q0) * dv;
        let dst = self.out.pattern(row, [dv, t.mq], &[[1, dv]])?;
        sim.dma_copy(dst, o).map(drop)
    }

    /// q rows of the tile by DMA, qᵀ by tensor-engine transposes.
    fn load_q(&mut self, sim: &mut Simulator, t: &QTile) -> Result<()> {
        let spec = self.spec;
        let d = self.plan.d;
        let rows = self.bufs.qrows[t.slot].partition_slice(0, t.mq)?;
        let row_stride = if t.heads {
            spec.q.strides[1]
        } else {
            spec.q.strides[2]
        };
        let ap = self.q.pattern(
            spec.q.row(t.b, t.h, t.q0),
            [row_stride, t.mq],
            &[[spec.q.strides[3], d]],
        )?;
        sim.dma_copy(rows, ap)?;
        for c in 0..self.plan.dchunks {
            let (d0, dsz) = (c * P, P.min(d - c * P));
            let tp = self
                .bufs
                .aux
                .partition_slice(0, dsz)?
                .cols((c % self.bufs.aux_slots) * P, t.mq)?;
            sim.transpose(&tp, &rows.cols(d0, dsz)?)?;
            let dst = self.bufs.qt[t.slot][c]
                .partition_slice(0, dsz)?
                .cols(0, t.mq)?;
            if self.plan.q_mult == 1.0 {
                let e = self.small_engine();
                sim.tensor_copy(e, &dst, &tp)?;
            } else {
                sim.tensor_scalar(V, &dst, &tp, AluOp::Multiply, 0.0.into(), None)?;
            }
        }
        Ok(())
    }

    /// Loads keys `[w0, w0 + window)` of (b, kvh): k rows and v rows by DMA, kᵀ by
    /// tensor-engine transposes (four chunks per PSUM bank, one eviction per bank).
    fn load_kv(
        &mut self,
        sim: &mut Simulator,
        set: usize,
        b: usize,
        kvh: usize,
        w0: usize,
    ) -> Result<()> {
        let spec = self.spec;
        let (d, dv) = (self.plan.d, self.plan.dv);
        let nkeys = self.plan.window.min(spec.kv_seq - w0);
        let (full, tail) = (nkeys / P, nkeys % P);
        let kvs = &self.bufs.kv[set];
        let (krows, vrows, kt) = (kvs.krows, kvs.v, kvs.kt.clone());
        let nch = krows.free_size() / d;
        let kr = krows.split(nch)?;
        let vr = vrows.split(nch)?;
        let (ks, vs) = (spec.k.strides, spec.v.strides);
        // Chunk i, partition p holds key w0 + i·128 + p; for one query (decode), key
        // w0 + p·full + i instead: every score of a window is then visible (no mask
        // reads key positions), so any order of the keys gives the same softmax, as long
        // as kᵀ and v agree on it; this one makes each partition's K run contiguous
        // (full·D elements instead of D: 256-byte DMA descriptors for bf16 D = 128 ran
        // at 38% efficiency). The tail chunk keeps keys in order.
        let permuted = spec.q_seq == 1;
        let (kp, ki) = if permuted {
            (full * ks[2], ks[2])
        } else {
            (ks[2], P * ks[2])
        };
        let (vp, vi) = if permuted {
            (full * vs[2], 1)
        } else {
            (vs[2], P)
        };
        if full > 0 {
            let ap = self
                .k
                .pattern(spec.k.row(b, kvh, w0), [kp, P], &[[ki, full], [ks[3], d]])?;
            sim.dma_copy(outer(kr, 0, full), ap)?;
            // v chunk by chunk: with the ones column between chunks, one DMA of all
            // chunks would have an SBUF side of element-sized descriptors.
            for i in 0..full {
                let ap =
                    self.v
                        .pattern(spec.v.row(b, kvh, w0 + i * vi), [vp, P], &[[vs[3], dv]])?;
                sim.dma_copy(vr.block(i)?.cols(0, dv)?, ap)?;
            }
        }
        if tail > 0 {
            let k0 = w0 + full * P;
            let ap = self
                .k
                .pattern(spec.k.row(b, kvh, k0), [ks[2], tail], &[[ks[3], d]])?;
            sim.dma_copy(kr.block(full)?.partition_slice(0, tail)?, ap)?;
            let ap = self
                .v
                .pattern(spec.v.row(b, kvh, k0), [vs[2], tail], &[[vs[3], dv]])?;
            sim.dma_copy(vr.block(full)?.partition_slice(0, tail)?.cols(0, dv)?, ap)?;
        }
        let chunks = nkeys.div_ceil(P);
        for (c, ktc) in kt.iter().enumerate() {
            let (d0, dsz) = (c * P, P.min(d - c * P));
            let slots = self.bufs.aux_slots;
            for g0 in (0..chunks).step_by(slots) {
                let gn = slots.min(chunks - g0);
                let width = (nkeys - g0 * P).min(gn * P);
                for i in g0..g0 + gn {
                    let ksz = P.min(nkeys - i * P);
                    let tp = self
                        .bufs
                        .aux
                        .partition_slice(0, dsz)?
                        .cols((i - g0) * P, ksz)?;
                    let src = kr.block(i)?.partition_slice(0, ksz)?.cols(d0, dsz)?;
                    sim.transpose(&tp, &src)?;
                }
                let src = self.bufs.aux.partition_slice(0, dsz)?.cols(0, width)?;
                let dst = ktc.partition_slice(0, dsz)?.cols(g0 * P, width)?;
                let e = self.small_engine();
                sim.tensor_copy(e, &dst, &src)?;
            }
        }
        self.bufs.kv[set].holds = Some((b, kvh, w0));
        Ok(())
    }

    /// Step 1: S = q·kᵀ into the block's score buffer.
    fn qk(&mut self, sim: &mut Simulator, blk: &Block) -> Result<()> {
        let t = blk.t;
        let (mq, nk) = (t.mq, blk.nk);
        let plan = &self.plan;
        let d = plan.d;
        let sbuf = self.bufs.s[blk.n % self.plan.nbuf].partition_slice(0, mq)?;
        let kvs = &self.bufs.kv[t.kvset];
        let qt = &self.bufs.qt[t.slot];
        let kc0 = blk.k0 - blk.w0;
        // 1. S = q·kᵀ, one PSUM bank (512 keys) at a time.
        for n0 in (0..nk).step_by(BANK) {
            let nsz = BANK.min(nk - n0);
            let dst = sbuf.cols(n0, nsz)?;
            for (c, (qtc, ktc)) in qt.iter().zip(&kvs.kt).enumerate() {
                let dsz = P.min(d - c * P);
                let st = qtc.partition_slice(0, dsz)?.cols(0, mq)?;
                let mv = ktc.partition_slice(0, dsz)?.cols(kc0 + n0, nsz)?;
                sim.matmul(&dst, &st, &mv, c > 0)?;
            }
        }
        Ok(())
    }

    /// Steps 2 and 3: causal mask, row max, bias and correction.
    fn row_max(&mut self, sim: &mut Simulator, blk: &Block, shift: i64) -> Result<()> {
        let t = blk.t;
        let (mq, nk) = (t.mq, blk.nk);
        let plan = &self.plan;
        let s = self.bufs.s[blk.n % plan.nbuf]
            .partition_slice(0, mq)?
            .cols(0, nk)?;
        // 2. Causal: mask the diagonal window [q0 + shift + 1, q0 + shift + mq).
        if self.spec.causal {
            let lo = (t.q0 as i64 + shift + 1).max(blk.k0 as i64);
            let hi = (t.q0 as i64 + shift + mq as i64).min((blk.k0 + nk) as i64);
            if lo < hi {
                let (c0, w) = ((lo - blk.k0 as i64) as usize, (hi - lo) as usize);
                let win = s.cols(c0, w)?;
                let m = self.bufs.mask.partition_slice(0, mq)?.cols(0, w)?;
                let fill = if plan.act_scale > 0.0 {
                    f32::NEG_INFINITY
                } else {
                    f32::INFINITY
                };
                sim.tensor_copy(V, &m, &win)?;
                let expr = Affine {
                    offset: t.q0 as i64 + shift - lo,
                    partition: 1,
                    free: -1,
                };
                sim.affine_select(&m, &m, expr, CmpOp::Ge, fill)?;
                sim.tensor_copy(S, &win, &m)?;
            }
        }
        // 3. Row max, bias b = min(−scale·r, b_old), correction e^{b − b_old}.
        let part = |x: &Tile| x.partition_slice(0, mq);
        let r = part(&self.bufs.r[blk.n % RING])?;
        let reduce = if plan.act_scale > 0.0 {
            AluOp::Max
        } else {
            AluOp::Min
        };
        if nk >= 128 && nk.is_multiple_of(2) {
            // Halves compared on the vector engine (one pass with PSUM inputs: N = nk/2
            // cycles for nk elements), the rest reduced on GpSimd (SBUF, otherwise idle).
            let h = nk / 2;
            let half = self.bufs.half[blk.n % 2]
                .partition_slice(0, mq)?
                .cols(0, h)?;
            sim.tensor_tensor(V, &half, &s.cols(0, h)?, &s.cols(h, h)?, reduce)?;
            sim.tensor_reduce(G, &r, reduce, &half)?;
        } else {
            sim.tensor_reduce(V, &r, reduce, &s)?;
        }
        let b_new = part(&self.bufs.b[blk.n % RING])?;
        let old: ScalarArg = if blk.j == 0 {
            f32::MAX.into()
        } else {
            part(&self.bufs.b[(blk.n + RING - 1) % RING])?.into()
        };
        sim.tensor_scalar(
            G,
            &b_new,
            &r,
            AluOp::Multiply,
            (-plan.act_scale).into(),
            Some((AluOp::Min, old)),
        )?;
        if let ScalarArg::PerPartition(b_old) = old {
            let diff = part(&self.bufs.diff[blk.n % RING])?;
            let corr = part(&self.bufs.corr[blk.n % RING])?;
            sim.tensor_tensor(G, &diff, &b_new, &b_old, AluOp::Subtract)?;
            sim.tensor_scalar(
                G,
                &corr,
                &part(&self.bufs.e)?,
                AluOp::Pow,
                diff.into(),
                None,
            )?;
        }
        Ok(())
    }

    /// Step 4: p = exp(scale·S + b), into SBUF in the input dtype.
    fn exp(&mut self, sim: &mut Simulator, blk: &Block) -> Result<()> {
        let (mq, nk) = (blk.t.mq, blk.nk);
        let plan = &self.plan;
        let s = self.bufs.s[blk.n % plan.nbuf]
            .partition_slice(0, mq)?
            .cols(0, nk)?;
        let b_new = self.bufs.b[blk.n % RING].partition_slice(0, mq)?;
        let p = self.bufs.p[blk.n % RING]
            .partition_slice(0, mq)?
            .cols(0, nk)?;
        sim.activation(
            &p,
            ActFn::Exp,
            &s,
            plan.act_scale.into(),
            b_new.into(),
            None,
        )?;
        Ok(())
    }

    /// Step 5: pᵀ on the tensor engine, evicted to SBUF by the vector and scalar engines.
    fn transpose_p(&mut self, sim: &mut Simulator, blk: &Block) -> Result<()> {
        let t = blk.t;
        let (mq, nk) = (t.mq, blk.nk);
        let sb = match self.bufs.pt_ps {
            Some(t) => t,
            None => self.bufs.s[blk.n % self.plan.nbuf],
        };
        let p = self.bufs.p[blk.n % RING].partition_slice(0, mq)?;
        let pt = self.bufs.pt[blk.n % 2];
        let chunks = nk.div_ceil(P);
        // 5. pᵀ per 128-key chunk into the score banks, evicted in two runs.
        for i in 0..chunks {
            let ksz = P.min(nk - i * P);
            let dst = sb.partition_slice(0, ksz)?.cols(i * P, mq)?;
            sim.transpose(&dst, &p.cols(i * P, ksz)?)?;
        }
        let on_v = (chunks * EVICT_ON_VECTOR.0)
            .div_ceil(EVICT_ON_VECTOR.1)
            .min(chunks);
        for (e, c0, c1) in [(V, 0, on_v), (S, on_v, chunks)] {
            if c0 == c1 {
                continue;
            }
            // Full-partition chunks in one copy; a ragged last chunk on its own.
            let full_end = if (c1 * P) > nk { c1 - 1 } else { c1 };
            if full_end > c0 {
                let n = full_end - c0;
                let src = sb.cols(c0 * P, n * P)?.split(n)?.cols(0, mq)?;
                let dst = pt.cols(c0 * P, n * P)?.split(n)?.cols(0, mq)?;
                sim.tensor_copy(e, &dst, &src)?;
            }
            if full_end < c1 {
                let ksz = nk - full_end * P;
                let src = sb.partition_slice(0, ksz)?.cols(full_end * P, mq)?;
                let dst = pt.partition_slice(0, ksz)?.cols(full_end * P, mq)?;
                sim.tensor_copy(e, &dst, &src)?;
            }
        }
        Ok(())
    }

    /// Step 6a: O ← O·e^{b − b_old} (after the previous block's p·v).
    fn rescale(&mut self, sim: &mut Simulator, blk: &Block) -> Result<()> {
        if blk.j > 0 {
            let mq = blk.t.mq;
            let o = self.bufs.o[blk.t.slot].partition_slice(0, mq)?;
            let corr = self.bufs.corr[blk.n % RING].partition_slice(0, mq)?;
            sim.tensor_scalar(S, &o, &o, AluOp::Multiply, corr.into(), None)?;
        }
        Ok(())
    }

    /// Step 6b: O += pᵀ·[v | 1]; after a tile's last block, the normalisation and store.
    fn pv(&mut self, sim: &mut Simulator, blk: &Block) -> Result<()> {
        let t = blk.t;
        let (mq, nk) = (t.mq, blk.nk);
        let ocols = self.plan.ocols;
        let pt = self.bufs.pt[blk.n % 2];
        let chunks = nk.div_ceil(P);
        let o = self.bufs.o[t.slot].partition_slice(0, mq)?;
        let vr = self.bufs.kv[t.kvset].v;
        let nch = vr.free_size() / ocols;
        let vr = vr.split(nch)?;
        let kc0 = (blk.k0 - blk.w0) / P;
        for e0 in (0..ocols).step_by(BANK) {
            let esz = BANK.min(ocols - e0);
            let od = o.cols(e0, esz)?;
            for i in 0..chunks {
                let ksz = P.min(nk - i * P);
                let st = pt.partition_slice(0, ksz)?.cols(i * P, mq)?;
                let mv = vr.block(kc0 + i)?.partition_slice(0, ksz)?.cols(e0, esz)?;
                sim.matmul(&od, &st, &mv, blk.j > 0 || i > 0)?;
            }
        }
        if blk.last {
            // out = O[:, :Dv] / max(l, tiny)
            let dv = self.plan.dv;
            let l = o.cols(dv, 1)?;
            let lmax = self.bufs.lmax.partition_slice(0, mq)?;
            sim.tensor_scalar(V, &lmax, &l, AluOp::Max, f32::MIN_POSITIVE.into(), None)?;
            let osb = self.bufs.osb[t.slot].partition_slice(0, mq)?;
            sim.tensor_scalar(S, &osb, &o.cols(0, dv)?, AluOp::Divide, lmax.into(), None)?;
            self.store(sim, &t, osb)?;
        }
        Ok(())
    }
}
