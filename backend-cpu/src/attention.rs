//! CPU attention: tiled flash attention with an online softmax, memory O(tile) per task.
//!
//! Work is split into tasks of `Q_TILE` query rows of one (batch, head); rayon spreads
//! them over threads. A task gathers its query tile as f32 and walks the visible keys in
//! tiles of `KV_TILE`: scores `S = scale · Q·Kᵀ`, the causal mask (bottom-right aligned)
//! on the tiles that cross the diagonal, then the online softmax update of Milakov &
//! Gimelshein ("Online normalizer calculation for softmax", 2018) as used by FlashAttention
//! (Dao et al., 2022): running max `m`, running sum `l`, and the output accumulator
//! rescaled by `exp(m_old − m_new)`. Key tiles entirely above the diagonal are never
//! visited. A row that sees no key ends with `l = 0` and is written as zeros. The max is
//! NaN-propagating, so a NaN score poisons exactly the rows that see it.

use crate::storage::{CpuStorage, try_vec};
use rayon::prelude::*;
use xkern_core::{AttentionSpec, Result};

const Q_TILE: usize = 32;
const KV_TILE: usize = 64;

/// `max` that propagates NaN (`f32::max` ignores it).
pub(crate) fn nan_max(a: f32, b: f32) -> f32 {
    if a > b || a.is_nan() { a } else { b }
}

pub(crate) fn attention(
    spec: &AttentionSpec,
    q: &CpuStorage,
    k: &CpuStorage,
    v: &CpuStorage,
) -> Result<CpuStorage> {
    let (sq, dv) = (spec.q_seq, spec.v_head_dim);
    let mut out = try_vec(spec.batch * spec.q_heads * sq * dv, 0.0f32)?;
    if out.is_empty() {
        return CpuStorage::from_f32(spec.dtype, out);
    }
    out.par_chunks_mut(sq * dv)
        .enumerate()
        .for_each(|(bh, head_out)| {
            let (b, h) = (bh / spec.q_heads, bh % spec.q_heads);
            head_out
                .par_chunks_mut(Q_TILE * dv)
                .enumerate()
                .for_each(|(t, o_tile)| {
                    query_tile(spec, q, k, v, b, h, t * Q_TILE, o_tile);
                });
        });
    CpuStorage::from_f32(spec.dtype, out)
}

/// Computes the output rows `i0..i0 + o.len()/dv` of head `(b, h)` into `o`.
#[allow(clippy::too_many_arguments)]
fn query_tile(
    spec: &AttentionSpec,
    q: &CpuStorage,
    k: &CpuStorage,
    v: &CpuStorage,
    b: usize,
    h: usize,
    i0: usize,
    o: &mut [f32],
) {
    let (d, dv) = (spec.head_dim, spec.v_head_dim);
    let rows = o.len().checked_div(dv).unwrap_or(0);
    let kh = spec.kv_head(h);
    let mut q_t = vec![0.0f32; rows * d];
    q.gather_f32(
        spec.q.row(b, h, i0),
        spec.q.strides[2],
        spec.q.strides[3],
        d,
        &mut q_t,
    );
    let mut k_t = vec![0.0f32; KV_TILE * d];
    let mut v_t = vec![0.0f32; KV_TILE * dv];
    let mut s = vec![0.0f32; KV_TILE];
    let mut m = vec![f32::NEG_INFINITY; rows];
    let mut l = vec![0.0f32; rows];
    // Keys beyond what the last row of the tile sees are never visited.
    let kv_end = spec.visible_keys(i0 + rows - 1);
    for j0 in (0..kv_end).step_by(KV_TILE) {
        let cols = KV_TILE.min(kv_end - j0);
        k.gather_f32(
            spec.k.row(b, kh, j0),
            spec.k.strides[2],
            spec.k.strides[3],
            d,
            &mut k_t[..cols * d],
        );
        v.gather_f32(
            spec.v.row(b, kh, j0),
            spec.v.strides[2],
            spec.v.strides[3],
            dv,
            &mut v_t[..cols * dv],
        );
        for r in 0..rows {
            let visible = spec.visible_keys(i0 + r).saturating_sub(j0).min(cols);
            if visible == 0 {
                continue;
            }
            let q_row = &q_t[r * d..(r + 1) * d];
            let mut tile_max = f32::NEG_INFINITY;
            for (j, sj) in s.iter_mut().enumerate().take(visible) {
                let k_row = &k_t[j * d..(j + 1) * d];
                *sj = spec.scale * q_row.iter().zip(k_row).map(|(x, y)| x * y).sum::<f32>();
                tile_max = nan_max(tile_max, *sj);
            }
            let m_new = nan_max(m[r], tile_max);
            // exp(−∞ − m) = 0 and exp(NaN) = NaN keep both edge cases right.
            let correction = (m[r] - m_new).exp();
            let o_row = &mut o[r * dv..(r + 1) * dv];
            if correction != 1.0 {
                for x in o_row.iter_mut() {
                    *x *= correction;
                }
            }
            let mut sum = 0.0f32;
            for (j, &sj) in s.iter().enumerate().take(visible) {
                let p = (sj - m_new).exp();
                sum += p;
                for (x, &vv) in o_row.iter_mut().zip(&v_t[j * dv..(j + 1) * dv]) {
                    *x += p * vv;
                }
            }
            l[r] = l[r] * correction + sum;
            m[r] = m_new;
        }
    }
    for (r, o_row) in o.chunks_exact_mut(dv.max(1)).enumerate().take(rows) {
        if l[r] == 0.0 {
            o_row.fill(0.0);
        } else {
            let inv = 1.0 / l[r];
            for x in o_row.iter_mut() {
                *x *= inv;
            }
        }
    }
}
