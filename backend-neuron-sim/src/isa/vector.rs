//! Elementwise and free-axis instructions of the vector engine (most also run on the
//! scalar or GpSimd engine, chosen by the `engine` argument as NKI's `engine=` does):
//! `tensor_copy` (also PSUM → SBUF eviction with cast), `memset`, `tensor_tensor`,
//! `tensor_scalar`, `tensor_reduce`, `reciprocal`, and the vector engine's 32×32
//! `vector_transpose`. All compute in fp32 and round on write.

// Simulator code: partition, engine and queue indices are below the fixed counts of
// the configuration, and byte ranges are checked against each allocation before use.
#![allow(clippy::indexing_slicing)]

use crate::cost::{self, OpClass};
use crate::engines::Engine;
use crate::error::{Result, SimError};
use crate::isa::ScalarArg;
use crate::numerics::AluOp;
use crate::sim::{InstrId, Simulator, Timing};
use crate::tile::Tile;

impl Simulator {
    pub(crate) fn require_engine(
        &self,
        instr: &'static str,
        engine: Engine,
        allowed: &[Engine],
    ) -> Result<()> {
        if !allowed.contains(&engine) {
            let names: Vec<&str> = allowed.iter().map(|e| e.name()).collect();
            return Err(SimError::Unsupported {
                instr,
                detail: format!(
                    "cannot run on the {} engine (it runs on: {})",
                    engine.name(),
                    names.join(", ")
                ),
            });
        }
        Ok(())
    }

    /// Issues a vector/scalar/GpSimd instruction reading `srcs` and writing `dsts`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn issue_engine_op(
        &mut self,
        opcode: &'static str,
        engine: Engine,
        class: OpClass,
        n: usize,
        srcs: &[&Tile],
        dsts: &[&Tile],
        fast_mode: f64,
    ) -> InstrId {
        let all: Vec<&Tile> = srcs.iter().chain(dsts).copied().collect();
        let cycles = cost::engine_cycles(
            &self.cfg,
            engine,
            class,
            n,
            Self::minor_stride(&all),
            fast_mode,
        );
        let ports = self.ports(engine, &all);
        let reads: Vec<_> = srcs.iter().map(|t| self.tile_fp(t)).collect();
        let writes: Vec<_> = dsts.iter().map(|t| self.tile_fp(t)).collect();
        for d in dsts {
            self.mark_written(d);
        }
        self.issue(
            opcode,
            Some(engine),
            &reads,
            &writes,
            Timing::Compute {
                engine,
                cycles,
                ports,
            },
            0.0,
        )
    }

    fn copy_fast_mode(&self, engine: Engine, tiles: &[&Tile]) -> f64 {
        if engine == Engine::Vector && Self::all_bf16_contiguous_sbuf(tiles) {
            self.cfg.fast_mode_copy
        } else {
            1.0
        }
    }

    /// Copies `src` to `dst` (same shape), casting; the PSUM → SBUF eviction.
    pub fn tensor_copy(&mut self, engine: Engine, dst: &Tile, src: &Tile) -> Result<InstrId> {
        const OP: &str = "tensor_copy";
        self.require_engine(
            OP,
            engine,
            &[Engine::Vector, Engine::Scalar, Engine::GpSimd],
        )?;
        self.engine_operand(OP, "source", engine, src)?;
        self.engine_operand(OP, "destination", engine, dst)?;
        self.expect_shape(OP, "destination", dst, src.shape())?;
        if self.functional() {
            let v = self.read_f32(src);
            self.write_f32(dst, &v);
        }
        let fast = self.copy_fast_mode(engine, &[src, dst]);
        Ok(self.issue_engine_op(
            OP,
            engine,
            OpClass::Elementwise,
            src.free_size(),
            &[src],
            &[dst],
            fast,
        ))
    }

    /// Fills `dst` with `value` (rounded to its dtype).
    pub fn memset(&mut self, engine: Engine, dst: &Tile, value: f32) -> Result<InstrId> {
        const OP: &str = "memset";
        self.require_engine(
            OP,
            engine,
            &[Engine::Vector, Engine::Scalar, Engine::GpSimd],
        )?;
        self.engine_operand(OP, "destination", engine, dst)?;
        if self.functional() {
            let v = vec![value; dst.parts * dst.free_size()];
            self.write_f32(dst, &v);
        }
        Ok(self.issue_engine_op(
            OP,
            engine,
            OpClass::Memset,
            dst.free_size(),
            &[],
            &[dst],
            1.0,
        ))
    }

    /// `dst = a op b`, elementwise over tiles of one shape.
    pub fn tensor_tensor(
        &mut self,
        engine: Engine,
        dst: &Tile,
        a: &Tile,
        b: &Tile,
        op: AluOp,
    ) -> Result<InstrId> {
        const OP: &str = "tensor_tensor";
        self.require_engine(OP, engine, &[Engine::Vector, Engine::GpSimd])?;
        self.engine_operand(OP, "first input", engine, a)?;
        self.engine_operand(OP, "second input", engine, b)?;
        self.engine_operand(OP, "destination", engine, dst)?;
        self.expect_shape(OP, "second input", b, a.shape())?;
        self.expect_shape(OP, "destination", dst, a.shape())?;
        if self.functional() {
            let (va, vb) = (self.read_f32(a), self.read_f32(b));
            let out: Vec<f32> = va.iter().zip(&vb).map(|(x, y)| op.apply(*x, *y)).collect();
            self.write_f32(dst, &out);
        }
        let psum_input = a.mem == crate::MemKind::Psum || b.mem == crate::MemKind::Psum;
        let single_pass = psum_input || Self::all_bf16_contiguous_sbuf(&[a, b, dst]);
        let fast = if engine == Engine::Vector
            && a.mem == crate::MemKind::Sbuf
            && b.mem == crate::MemKind::Sbuf
            && a.dtype == xkern_core::DType::BF16
            && b.dtype == xkern_core::DType::BF16
        {
            self.cfg.fast_mode_tensor_tensor
        } else {
            1.0
        };
        Ok(self.issue_engine_op(
            OP,
            engine,
            OpClass::TensorTensor { fast: single_pass },
            a.free_size(),
            &[a, b],
            &[dst],
            fast,
        ))
    }

    /// `dst = (x op0 s0) op1 s1` with immediate or per-partition scalars.
    pub fn tensor_scalar(
        &mut self,
        engine: Engine,
        dst: &Tile,
        x: &Tile,
        op0: AluOp,
        s0: ScalarArg,
        op1: Option<(AluOp, ScalarArg)>,
    ) -> Result<InstrId> {
        const OP: &str = "tensor_scalar";
        self.require_engine(
            OP,
            engine,
            &[Engine::Vector, Engine::Scalar, Engine::GpSimd],
        )?;
        self.engine_operand(OP, "input", engine, x)?;
        self.engine_operand(OP, "destination", engine, dst)?;
        self.expect_shape(OP, "destination", dst, x.shape())?;
        self.scalar_operand(OP, "first scalar", engine, &s0, x)?;
        if let Some((_, s1)) = &op1 {
            self.scalar_operand(OP, "second scalar", engine, s1, x)?;
        }
        let n = x.free_size();
        if self.functional() {
            let v = self.read_f32(x);
            let a0 = self.scalar_values(&s0, x.parts);
            let a1 = op1.as_ref().map(|(_, s)| self.scalar_values(s, x.parts));
            let out: Vec<f32> = v
                .iter()
                .enumerate()
                .map(|(i, &e)| {
                    let p = i / n;
                    let r = op0.apply(e, a0[p]);
                    match (&op1, &a1) {
                        (Some((o, _)), Some(a1)) => o.apply(r, a1[p]),
                        _ => r,
                    }
                })
                .collect();
            self.write_f32(dst, &out);
        }
        let mut srcs: Vec<&Tile> = vec![x];
        if let ScalarArg::PerPartition(t) = &s0 {
            srcs.push(t);
        }
        if let Some((_, ScalarArg::PerPartition(t))) = &op1 {
            srcs.push(t);
        }
        let fast = self.copy_fast_mode(engine, &[x, dst]);
        Ok(self.issue_engine_op(OP, engine, OpClass::Elementwise, n, &srcs, &[dst], fast))
    }

    /// Reduces `x [P, F]` along the free axis into `dst [P, G]`: each output element
    /// reduces a run of F / G consecutive free elements (G = 1: the whole row).
    pub fn tensor_reduce(
        &mut self,
        engine: Engine,
        dst: &Tile,
        op: AluOp,
        x: &Tile,
    ) -> Result<InstrId> {
        const OP: &str = "tensor_reduce";
        self.require_engine(OP, engine, &[Engine::Vector, Engine::GpSimd])?;
        self.engine_operand(OP, "input", engine, x)?;
        self.engine_operand(OP, "destination", engine, dst)?;
        let Some(identity) = op.reduce_identity() else {
            return Err(SimError::Unsupported {
                instr: OP,
                detail: format!("{op:?} is not a reduction (use add, multiply, max or min)"),
            });
        };
        let (f, g) = (x.free_size(), dst.free_size());
        if dst.parts != x.parts || f % g != 0 {
            return Err(SimError::ShapeMismatch {
                instr: OP,
                operand: "destination",
                got: dst.shape().to_vec(),
                expected: vec![x.parts, 1],
            });
        }
        if self.functional() {
            let v = self.read_f32(x);
            let run = f / g;
            let out: Vec<f32> = v
                .chunks_exact(run)
                .map(|c| c.iter().fold(identity, |acc, &e| op.apply(acc, e)))
                .collect();
            self.write_f32(dst, &out);
        }
        Ok(self.issue_engine_op(OP, engine, OpClass::Reduce, f, &[x], &[dst], 1.0))
    }

    /// `dst = 1 / x` on the vector engine.
    pub fn reciprocal(&mut self, dst: &Tile, x: &Tile) -> Result<InstrId> {
        const OP: &str = "reciprocal";
        self.engine_operand(OP, "input", Engine::Vector, x)?;
        self.engine_operand(OP, "destination", Engine::Vector, dst)?;
        self.expect_shape(OP, "destination", dst, x.shape())?;
        if self.functional() {
            let out: Vec<f32> = self.read_f32(x).iter().map(|v| 1.0 / v).collect();
            self.write_f32(dst, &out);
        }
        Ok(self.issue_engine_op(
            OP,
            Engine::Vector,
            OpClass::Reciprocal,
            x.free_size(),
            &[x],
            &[dst],
            1.0,
        ))
    }

    /// Transposes `src [P, F]` with P, F ≤ 32 into `dst [F, P]` on the vector engine.
    pub fn vector_transpose(&mut self, dst: &Tile, src: &Tile) -> Result<InstrId> {
        const OP: &str = "vector_transpose";
        self.engine_operand(OP, "source", Engine::Vector, src)?;
        self.engine_operand(OP, "destination", Engine::Vector, dst)?;
        let (p, f) = (src.parts, src.free_size());
        for (dim, v) in [("partition size", p), ("free size", f)] {
            if v > 32 {
                return Err(SimError::SizeLimit {
                    instr: OP,
                    operand: "source",
                    dim,
                    value: v,
                    limit: 32,
                });
            }
        }
        self.expect_shape(OP, "destination", dst, [f, p])?;
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
        Ok(self.issue_engine_op(
            OP,
            Engine::Vector,
            OpClass::Elementwise,
            f,
            &[src],
            &[dst],
            1.0,
        ))
    }
}
