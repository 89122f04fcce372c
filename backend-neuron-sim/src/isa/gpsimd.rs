//! GpSimd engine: `iota` (affine index patterns), `affine_select` (causal masks) and
//! `partition_reduce` (a reduction across partitions, which the other engines cannot
//! do). Cost ≈ 150 + N cycles each (NKI performance guide). GpSimd reaches SBUF only.

use crate::cost::OpClass;
use crate::engines::Engine;
use crate::error::{Result, SimError};
use crate::numerics::{AluOp, CmpOp};
use crate::sim::{InstrId, Simulator};
use crate::tile::Tile;

/// An affine expression of the element position: `offset + p · partition + f · free`,
/// with `p` the partition index within the tile and `f` the free index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affine {
    /// Constant term.
    pub offset: i64,
    /// Coefficient of the partition index.
    pub partition: i64,
    /// Coefficient of the free index.
    pub free: i64,
}

impl Affine {
    #[inline]
    fn at(&self, p: usize, f: usize) -> i64 {
        self.offset + self.partition * p as i64 + self.free * f as i64
    }
}

impl Simulator {
    /// `dst[p, f] = expr(p, f)` as a number in dst's dtype.
    pub fn iota(&mut self, dst: &Tile, expr: Affine) -> Result<InstrId> {
        const OP: &str = "iota";
        self.engine_operand(OP, "destination", Engine::GpSimd, dst)?;
        let n = dst.free_size();
        if self.functional() {
            let out: Vec<f32> = (0..dst.parts * n)
                .map(|i| expr.at(i / n, i % n) as f32)
                .collect();
            self.write_f32(dst, &out);
        }
        Ok(self.issue_engine_op(
            OP,
            Engine::GpSimd,
            OpClass::Elementwise,
            n,
            &[],
            &[dst],
            1.0,
        ))
    }

    /// `dst[p, f] = x[p, f]` where `expr(p, f) cmp 0` holds, else `fill` (NKI's
    /// affine_select; a causal mask is `offset + p − f >= 0`).
    pub fn affine_select(
        &mut self,
        dst: &Tile,
        x: &Tile,
        expr: Affine,
        cmp: CmpOp,
        fill: f32,
    ) -> Result<InstrId> {
        const OP: &str = "affine_select";
        self.engine_operand(OP, "input", Engine::GpSimd, x)?;
        self.engine_operand(OP, "destination", Engine::GpSimd, dst)?;
        self.expect_shape(OP, "destination", dst, x.shape())?;
        let n = x.free_size();
        if self.functional() {
            let v = self.read_f32(x);
            let out: Vec<f32> = v
                .iter()
                .enumerate()
                .map(|(i, &e)| {
                    if cmp.holds(expr.at(i / n, i % n)) {
                        e
                    } else {
                        fill
                    }
                })
                .collect();
            self.write_f32(dst, &out);
        }
        Ok(self.issue_engine_op(
            OP,
            Engine::GpSimd,
            OpClass::Elementwise,
            n,
            &[x],
            &[dst],
            1.0,
        ))
    }

    /// Reduces `x [P, F]` across partitions into `dst [1, F]`.
    pub fn partition_reduce(&mut self, dst: &Tile, op: AluOp, x: &Tile) -> Result<InstrId> {
        const OP: &str = "partition_reduce";
        self.engine_operand(OP, "input", Engine::GpSimd, x)?;
        self.engine_operand(OP, "destination", Engine::GpSimd, dst)?;
        let Some(identity) = op.reduce_identity() else {
            return Err(SimError::Unsupported {
                instr: OP,
                detail: format!("{op:?} is not a reduction (use add, multiply, max or min)"),
            });
        };
        let n = x.free_size();
        self.expect_shape(OP, "destination", dst, [1, n])?;
        if self.functional() {
            let v = self.read_f32(x);
            let mut out = vec![identity; n];
            for row in v.chunks_exact(n) {
                for (o, &e) in out.iter_mut().zip(row) {
                    *o = op.apply(*o, e);
                }
            }
            self.write_f32(dst, &out);
        }
        Ok(self.issue_engine_op(OP, Engine::GpSimd, OpClass::Reduce, n, &[x], &[dst], 1.0))
    }
}
