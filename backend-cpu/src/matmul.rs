//! CPU matmul (correct, multi-threaded; the packed BLIS-style kernels replace the inner
//! loop in a later step).
//!
//! Algorithm: each operand matrix is gathered once into a row-major f32 panel (this
//! converts f16/bf16 and resolves transposed or strided views; a broadcast right operand
//! is gathered once per distinct matrix). Output rows are split into blocks of `ROWS`
//! that rayon distributes over threads; within a block, every row of B is loaded once
//! and applied to all rows of the block (`c[r, :] += a[r, p] · b[p, :]`), an update
//! the compiler vectorises. The epilogue (bias, activation) runs on each finished block
//! while it is still in cache, and the result is rounded once to the output dtype.

use crate::storage::{CpuStorage, try_vec};
use rayon::prelude::*;
use std::collections::HashMap;
use xkern_core::{MatmulSpec, Result};

/// Output rows per parallel task; rows of a block share each load of a row of B.
const ROWS: usize = 8;

pub(crate) fn matmul(
    spec: &MatmulSpec,
    a: &CpuStorage,
    b: &CpuStorage,
    bias: Option<&CpuStorage>,
) -> Result<CpuStorage> {
    let (m, k, n, batch) = (spec.m, spec.k, spec.n, spec.batch());
    let mut out = try_vec(batch * m * n, 0.0f32)?;
    if out.is_empty() {
        return CpuStorage::from_f32(spec.dtype, out);
    }
    // Left panels, one per batch entry.
    let mut a_panel = try_vec(batch * m * k, 0.0f32)?;
    if k > 0 {
        for (bi, dst) in a_panel.chunks_exact_mut(m * k).enumerate() {
            a.gather_f32(
                spec.a_offset(bi),
                spec.a.row_stride,
                spec.a.col_stride,
                k,
                dst,
            );
        }
    }
    // Right panels, one per distinct matrix (broadcast batches share one).
    let mut b_index = Vec::with_capacity(batch);
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut b_panels: Vec<Vec<f32>> = Vec::new();
    for bi in 0..batch {
        let off = spec.b_offset(bi);
        let idx = match seen.get(&off) {
            Some(&i) => i,
            None => {
                let mut p = try_vec(k * n, 0.0f32)?;
                b.gather_f32(off, spec.b.row_stride, spec.b.col_stride, n, &mut p);
                b_panels.push(p);
                seen.insert(off, b_panels.len() - 1);
                b_panels.len() - 1
            }
        };
        b_index.push(idx);
    }
    let bias_row = match (bias, &spec.bias) {
        (Some(s), Some(view)) => {
            let mut v = try_vec(n, 0.0f32)?;
            s.gather_f32(view.offset, view.stride, 0, 1, &mut v);
            Some(v)
        }
        _ => None,
    };
    // Blocks never straddle two batch entries: split each batch's m rows separately.
    out.par_chunks_mut(m * n)
        .enumerate()
        .for_each(|(bi, c_batch)| {
            let a_mat = &a_panel[bi * m * k..(bi + 1) * m * k];
            let b_mat = &b_panels[b_index[bi]];
            c_batch
                .par_chunks_mut(ROWS * n)
                .enumerate()
                .for_each(|(blk, c_blk)| {
                    let r0 = blk * ROWS;
                    let rows = c_blk.len() / n;
                    for p in 0..k {
                        let b_row = &b_mat[p * n..(p + 1) * n];
                        for r in 0..rows {
                            let a_rp = a_mat[(r0 + r) * k + p];
                            let c_row = &mut c_blk[r * n..(r + 1) * n];
                            for (c, &bv) in c_row.iter_mut().zip(b_row) {
                                *c += a_rp * bv;
                            }
                        }
                    }
                    for c_row in c_blk.chunks_exact_mut(n) {
                        if let Some(bias) = &bias_row {
                            for (c, &bv) in c_row.iter_mut().zip(bias) {
                                *c += bv;
                            }
                        }
                        if let Some(act) = spec.activation {
                            for c in c_row.iter_mut() {
                                *c = act.apply_f32(*c);
                            }
                        }
                    }
                });
        });
    CpuStorage::from_f32(spec.dtype, out)
}
