//! Scalar (activation) engine: `activation(dst, func, x, scale, bias, accumulate)`,
//! `dst = func(x · scale + bias)` with per-partition or immediate scale and bias, and an
//! optional reduce-add of each row's outputs into a `[P, 1]` accumulator (the row sums
//! of softmax). Functions are f32 functions ([`crate::ActFn`]; see `numerics` for why).

// Simulator code: partition, engine and queue indices are below the fixed counts of
// the configuration, and byte ranges are checked against each allocation before use.
#![allow(clippy::indexing_slicing)]

use crate::cost::OpClass;
use crate::engines::Engine;
use crate::error::{Result, SimError};
use crate::isa::ScalarArg;
use crate::numerics::ActFn;
use crate::sim::{InstrId, Simulator};
use crate::tile::Tile;

impl Simulator {
    /// `dst = func(x · scale + bias)`; with `accumulate`, also writes each partition's
    /// sum of the (unrounded f32) outputs into the `[P, 1]` tile given.
    pub fn activation(
        &mut self,
        dst: &Tile,
        func: ActFn,
        x: &Tile,
        scale: ScalarArg,
        bias: ScalarArg,
        accumulate: Option<&Tile>,
    ) -> Result<InstrId> {
        const OP: &str = "activation";
        let e = Engine::Scalar;
        self.engine_operand(OP, "input", e, x)?;
        self.engine_operand(OP, "destination", e, dst)?;
        self.expect_shape(OP, "destination", dst, x.shape())?;
        self.scalar_operand(OP, "scale", e, &scale, x)?;
        self.scalar_operand(OP, "bias", e, &bias, x)?;
        if let Some(acc) = accumulate {
            self.engine_operand(OP, "accumulator", e, acc)?;
            if acc.shape() != [x.parts, 1] {
                return Err(SimError::ShapeMismatch {
                    instr: OP,
                    operand: "accumulator",
                    got: acc.shape().to_vec(),
                    expected: vec![x.parts, 1],
                });
            }
        }
        let n = x.free_size();
        if self.functional() {
            let v = self.read_f32(x);
            let sc = self.scalar_values(&scale, x.parts);
            let bi = self.scalar_values(&bias, x.parts);
            let out: Vec<f32> = v
                .iter()
                .enumerate()
                .map(|(i, &e)| func.apply(e * sc[i / n] + bi[i / n]))
                .collect();
            if let Some(acc) = accumulate {
                let sums: Vec<f32> = out.chunks_exact(n).map(|r| r.iter().sum()).collect();
                self.write_f32(acc, &sums);
            }
            self.write_f32(dst, &out);
        }
        let mut srcs: Vec<&Tile> = vec![x];
        for s in [&scale, &bias] {
            if let ScalarArg::PerPartition(t) = s {
                srcs.push(t);
            }
        }
        let mut dsts: Vec<&Tile> = vec![dst];
        dsts.extend(accumulate);
        let class = if accumulate.is_some() {
            OpClass::ActivationReduce
        } else {
            OpClass::Elementwise
        };
        Ok(self.issue_engine_op(OP, e, class, n, &srcs, &dsts, 1.0))
    }
}
