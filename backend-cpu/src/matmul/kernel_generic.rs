//! Portable micro-kernel: a 4 × 16 tile in plain Rust that the compiler vectorises for
//! whatever the target offers (SSE2 on baseline x86-64, NEON on aarch64). It serves every
//! architecture without a hand-written kernel and is the reference the SIMD kernels are
//! tested against (`XKERN_CPU_ISA=generic`).

use super::{MicroKernel, Walk};

/// The portable kernel.
pub(crate) struct Generic;

const MR: usize = 4;
const NR: usize = 16;

impl MicroKernel for Generic {
    const MR: usize = MR;
    const NR: usize = NR;

    unsafe fn run<const FETCH: bool>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        walk: Walk,
    ) {
        // No walk: its lines are left to the packing's own prefetches.
        let _ = walk;
        // SAFETY: the caller passes panels of kc·MR and kc·NR floats (`MicroKernel::run`).
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(a, kc * MR),
                std::slice::from_raw_parts(b, kc * NR),
            )
        };
        let mut acc = [[0.0f32; NR]; MR];
        for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
            for (row, &ai) in acc.iter_mut().zip(ap) {
                for (x, &bj) in row.iter_mut().zip(bp) {
                    // Not `mul_add`: without hardware FMA it is a slow libm call.
                    *x += ai * bj;
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: c addresses an MR × NR tile with row stride ldc.
            let out = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), NR) };
            for (o, &x) in out.iter_mut().zip(row) {
                *o = if accumulate { *o + x } else { x };
            }
        }
    }
}
