//! Tensor engine: `matmul` (dst (=|+=) stationaryᵀ · moving into PSUM, fp32
//! accumulation) and `transpose` (an identity matmul, ≤ 128×128, into PSUM).
//!
//! Rules (NKI ISA reference, nc_matmul): contraction K ≤ 128 on the partition axis of
//! both operands, stationary free size M ≤ 128, moving free size N ≤ 512; operands in
//! SBUF, result in PSUM (fp32) within one 2 KiB bank; fp32 operands pair only with fp32;
//! the first write to a PSUM location overwrites (accumulate = false) and accumulating
//! onto PSUM no instruction has written is an error.
//!
//! Arithmetic: bf16·bf16 and fp16·fp16 products are exact in f32, so the functional model
//! forms them in f32 and accumulates in f32 in K order, row-parallel with rayon.

// Simulator code: partition, engine and queue indices are below the fixed counts of
// the configuration, and byte ranges are checked against each allocation before use.
#![allow(clippy::indexing_slicing)]

use crate::cost;
use crate::engines::Engine;
use crate::error::{Result, SimError};
use crate::memory::MemKind;
use crate::sim::{InstrId, Simulator, Timing};
use crate::tile::Tile;
use rayon::prelude::*;
use xkern_core::DType;

const MM: &str = "matmul";
const TR: &str = "transpose";

impl Simulator {
    /// `dst (= or +=) stationaryᵀ · moving`: stationary `[K, M]`, moving `[K, N]`,
    /// dst `[M, N]` fp32 in PSUM. `accumulate = false` overwrites (the first write to a
    /// location), `true` adds onto values a previous instruction wrote.
    pub fn matmul(
        &mut self,
        dst: &Tile,
        stationary: &Tile,
        moving: &Tile,
        accumulate: bool,
    ) -> Result<InstrId> {
        for (op, t) in [
            ("stationary operand", stationary),
            ("moving operand", moving),
            ("result", dst),
        ] {
            self.check_tile(MM, op, t)?;
        }
        self.expect_mem(
            MM,
            "stationary operand",
            stationary,
            &[MemKind::Sbuf],
            "SBUF",
        )?;
        self.expect_mem(MM, "moving operand", moving, &[MemKind::Sbuf], "SBUF")?;
        self.expect_mem(MM, "result", dst, &[MemKind::Psum], "PSUM")?;
        let cfg = &self.cfg;
        for (op, t) in [
            ("stationary operand", stationary),
            ("moving operand", moving),
        ] {
            if t.parts > cfg.matmul_max_k {
                return Err(SimError::PartitionLimit {
                    instr: MM,
                    operand: op,
                    value: t.parts,
                    limit: cfg.matmul_max_k,
                });
            }
        }
        for (op, t) in [
            ("stationary operand", stationary),
            ("moving operand", moving),
            ("result", dst),
        ] {
            self.check_partitions(MM, op, t)?;
        }
        let (k, m, n) = (stationary.parts, stationary.free_size(), moving.free_size());
        if moving.parts != k {
            return Err(SimError::ShapeMismatch {
                instr: MM,
                operand: "moving operand",
                got: moving.shape().to_vec(),
                expected: vec![k, n],
            });
        }
        if m > cfg.matmul_max_m {
            return Err(SimError::SizeLimit {
                instr: MM,
                operand: "stationary operand",
                dim: "free size (M)",
                value: m,
                limit: cfg.matmul_max_m,
            });
        }
        if n > cfg.matmul_max_n {
            return Err(SimError::SizeLimit {
                instr: MM,
                operand: "moving operand",
                dim: "free size (N)",
                value: n,
                limit: cfg.matmul_max_n,
            });
        }
        self.expect_shape(MM, "result", dst, [m, n])?;
        if dst.dtype != DType::F32 {
            return Err(SimError::DTypeRule {
                instr: MM,
                operand: "result",
                got: dst.dtype,
                rule: "matmul results accumulate in fp32 PSUM",
            });
        }
        for (op, t) in [
            ("stationary operand", stationary),
            ("moving operand", moving),
        ] {
            if t.dtype == DType::U32 {
                return Err(SimError::DTypeRule {
                    instr: MM,
                    operand: op,
                    got: t.dtype,
                    rule: "the tensor engine takes bf16, fp16 or fp32 operands",
                });
            }
        }
        let fp32 = stationary.dtype == DType::F32;
        if fp32 != (moving.dtype == DType::F32) {
            let (op, t) = if fp32 {
                ("moving operand", moving)
            } else {
                ("stationary operand", stationary)
            };
            return Err(SimError::DTypeRule {
                instr: MM,
                operand: op,
                got: t.dtype,
                rule: "fp32 operands pair only with fp32",
            });
        }
        self.check_bank(MM, "result", dst)?;
        let (lo, hi) = dst.byte_range();
        let parts = dst.part_start..dst.part_start + dst.parts;
        if accumulate && let Some((p, off)) = self.psum_init.first_unwritten(parts.clone(), lo, hi)
        {
            return Err(SimError::UninitialisedAccumulate {
                instr: MM,
                operand: "result",
                partition: p,
                offset: off,
            });
        }
        if self.functional() {
            let st = self.read_f32(stationary);
            let mv = self.read_f32(moving);
            let mut out = if accumulate {
                self.read_f32(dst)
            } else {
                vec![0f32; m * n]
            };
            out.par_chunks_mut(n).enumerate().for_each(|(mi, row)| {
                for ki in 0..k {
                    let a = st[ki * m + mi];
                    let b = &mv[ki * n..(ki + 1) * n];
                    for (o, &bv) in row.iter_mut().zip(b) {
                        *o += a * bv;
                    }
                }
            });
            self.write_f32(dst, &out);
        }
        self.psum_init.set(parts, lo, hi, true);
        let timing = Timing::Matmul {
            key: (
                stationary.alloc,
                stationary.offset,
                stationary.part_start,
                stationary.parts,
                m,
            ),
            m,
            cycles: cost::matmul_cycles(&self.cfg, n, fp32),
            latency_ns: self.cfg.matmul_pipeline_latency_cycles as f64 / self.cfg.tensor_clock_ghz,
        };
        let mut reads = vec![self.tile_fp(stationary), self.tile_fp(moving)];
        if accumulate {
            reads.push(self.tile_fp(dst));
        }
        let writes = [self.tile_fp(dst)];
        Ok(self.issue(
            MM,
            Some(Engine::Tensor),
            &reads,
            &writes,
            timing,
            (2 * k * m * n) as f64,
        ))
    }

    fn check_bank(&self, instr: &'static str, operand: &'static str, dst: &Tile) -> Result<()> {
        let (lo, hi) = dst.byte_range();
        let bank = self.cfg.psum_bank_bytes.max(1);
        if lo / bank != (hi - 1) / bank {
            return Err(SimError::PsumBankCrossing {
                instr,
                operand,
                start: lo,
                end: hi,
                bank_bytes: bank,
            });
        }
        Ok(())
    }

    /// Transposes `src [P, F]` (SBUF, P, F ≤ 128) into `dst [F, P]` (PSUM) on the tensor
    /// engine, as an identity matmul (exact).
    pub fn transpose(&mut self, dst: &Tile, src: &Tile) -> Result<InstrId> {
        self.check_tile(TR, "source", src)?;
        self.check_tile(TR, "destination", dst)?;
        self.expect_mem(TR, "source", src, &[MemKind::Sbuf], "SBUF")?;
        self.expect_mem(TR, "destination", dst, &[MemKind::Psum], "PSUM")?;
        self.check_partitions(TR, "source", src)?;
        self.check_partitions(TR, "destination", dst)?;
        let (p, f) = (src.parts, src.free_size());
        if f > self.cfg.matmul_max_m {
            return Err(SimError::SizeLimit {
                instr: TR,
                operand: "source",
                dim: "free size",
                value: f,
                limit: self.cfg.matmul_max_m,
            });
        }
        self.expect_shape(TR, "destination", dst, [f, p])?;
        if dst.dtype != DType::F32 && dst.dtype != src.dtype {
            return Err(SimError::DTypeRule {
                instr: TR,
                operand: "destination",
                got: dst.dtype,
                rule: "a transpose writes fp32 or the source's dtype",
            });
        }
        self.check_bank(TR, "destination", dst)?;
        if self.functional() {
            let v = self.read_f32(src);
            let mut out = vec![0f32; p * f];
            for i in 0..p {
                for j in 0..f {
                    out[j * p + i] = v[i * f + j];
                }
            }
            self.write_f32(dst, &out);
        }
        self.mark_written(dst);
        let timing = Timing::TensorOther {
            cycles: cost::pe_transpose_cycles(&self.cfg, p, f),
            latency_ns: self.cfg.matmul_pipeline_latency_cycles as f64 / self.cfg.tensor_clock_ghz,
        };
        let (r, w) = (self.tile_fp(src), self.tile_fp(dst));
        Ok(self.issue(TR, Some(Engine::Tensor), &[r], &[w], timing, 0.0))
    }
}
