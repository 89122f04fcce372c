//! The instruction set: one file per engine (`dma`, `tensor_engine`, `vector`,
//! `scalar`, `gpsimd`), each instruction a method of [`crate::Simulator`] that checks the
//! tile rules, computes the values (functional mode) and issues the instruction on the
//! timeline. This file holds what they share: operand kinds and rule helpers.

mod dma;
mod gpsimd;
mod scalar;
mod tensor_engine;
mod vector;

pub use dma::DmaEnd;
pub use gpsimd::Affine;

use crate::engines::{Engine, Ports};
use crate::error::{Result, SimError};
use crate::memory::MemKind;
use crate::sim::Simulator;
use crate::tile::Tile;
use xkern_core::DType;

/// A scalar operand: an immediate, or one value per partition (a `[P, 1]` tile).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScalarArg {
    /// The same value for every element.
    Imm(f32),
    /// Element `(p, 0)` of the tile for partition `p`.
    PerPartition(Tile),
}

impl From<f32> for ScalarArg {
    fn from(v: f32) -> Self {
        ScalarArg::Imm(v)
    }
}

impl From<Tile> for ScalarArg {
    fn from(t: Tile) -> Self {
        ScalarArg::PerPartition(t)
    }
}

impl Simulator {
    pub(crate) fn expect_shape(
        &self,
        instr: &'static str,
        operand: &'static str,
        t: &Tile,
        expected: [usize; 2],
    ) -> Result<()> {
        if t.shape() != expected {
            return Err(SimError::ShapeMismatch {
                instr,
                operand,
                got: t.shape().to_vec(),
                expected: expected.to_vec(),
            });
        }
        Ok(())
    }

    pub(crate) fn expect_mem(
        &self,
        instr: &'static str,
        operand: &'static str,
        t: &Tile,
        allowed: &[MemKind],
        expected: &'static str,
    ) -> Result<()> {
        if !allowed.contains(&t.mem) {
            return Err(SimError::Placement {
                instr,
                operand,
                expected,
                got: t.mem.name(),
            });
        }
        Ok(())
    }

    /// Checks an engine operand fully: live handle, partition rules, memory the engine
    /// can reach (GpSimd cannot reach PSUM), float dtype.
    pub(crate) fn engine_operand(
        &self,
        instr: &'static str,
        operand: &'static str,
        engine: Engine,
        t: &Tile,
    ) -> Result<()> {
        self.check_partitions(instr, operand, t)?;
        if engine == Engine::GpSimd {
            self.expect_mem(
                instr,
                operand,
                t,
                &[MemKind::Sbuf],
                "SBUF (GpSimd cannot access PSUM)",
            )?;
        }
        Ok(())
    }

    /// Checks a per-partition scalar operand against the partitions of `like`.
    pub(crate) fn scalar_operand(
        &self,
        instr: &'static str,
        operand: &'static str,
        engine: Engine,
        s: &ScalarArg,
        like: &Tile,
    ) -> Result<()> {
        if let ScalarArg::PerPartition(t) = s {
            self.engine_operand(instr, operand, engine, t)?;
            if t.parts != like.parts || t.free_size() < 1 {
                return Err(SimError::ShapeMismatch {
                    instr,
                    operand,
                    got: t.shape().to_vec(),
                    expected: vec![like.parts, 1],
                });
            }
        }
        Ok(())
    }

    /// Values of a scalar operand, one per partition (functional mode).
    pub(crate) fn scalar_values(&self, s: &ScalarArg, parts: usize) -> Vec<f32> {
        match s {
            ScalarArg::Imm(v) => vec![*v; parts],
            ScalarArg::PerPartition(t) => {
                let first = t.cols(0, 1).unwrap_or(*t);
                let first = if first.free[0][1] > 1 {
                    first.block(0).unwrap_or(first)
                } else {
                    first
                };
                self.read_f32(&first)
            }
        }
    }

    /// The shared ports an instruction on `engine` touching `tiles` holds (v2 only).
    pub(crate) fn ports(&self, engine: Engine, tiles: &[&Tile]) -> Ports {
        let sbuf = tiles.iter().any(|t| t.mem == MemKind::Sbuf);
        let psum = tiles.iter().any(|t| t.mem == MemKind::Psum);
        Ports {
            sbuf_vector_gpsimd: self.cfg.shared_sbuf_port_vector_gpsimd
                && sbuf
                && matches!(engine, Engine::Vector | Engine::GpSimd),
            psum_vector_scalar: self.cfg.shared_psum_port_vector_scalar
                && psum
                && matches!(engine, Engine::Vector | Engine::Scalar),
        }
    }

    /// Largest minor stride among the operands, in bytes (for the stride penalty).
    pub(crate) fn minor_stride(tiles: &[&Tile]) -> usize {
        tiles
            .iter()
            .map(|t| t.minor_stride_bytes())
            .max()
            .unwrap_or(0)
    }

    /// True when every operand is a contiguous bf16 SBUF tile (v3 fast-mode condition).
    pub(crate) fn all_bf16_contiguous_sbuf(tiles: &[&Tile]) -> bool {
        tiles
            .iter()
            .all(|t| t.mem == MemKind::Sbuf && t.dtype == DType::BF16 && t.is_contiguous())
    }

    /// Marks PSUM written by a non-matmul instruction as initialised.
    pub(crate) fn mark_written(&mut self, t: &Tile) {
        if t.mem == MemKind::Psum {
            let (lo, hi) = t.byte_range();
            self.psum_init
                .set(t.part_start..t.part_start + t.parts, lo, hi, true);
        }
    }
}
