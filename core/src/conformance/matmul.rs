//! Matmul cases: sizes along each of M, K, N; transposed operands; broadcast and strided
//! batches; the fused epilogue; empty dimensions; NaN and ±∞.

// Test code: indexes host copies whose lengths the case has checked.
#![allow(clippy::indexing_slicing)]

use super::{Cases, Ctx, Outcome, SIZES, check, input, input_from, seed_of, unsupported};
use crate::{Activation, Backend, DType, reference};

/// One matmul problem: stored shapes, views, epilogue.
#[derive(Clone, Debug)]
struct Problem {
    a_batch: Vec<usize>,
    b_batch: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    /// a is stored `[.., K, M]` and viewed through `.t()`.
    a_t: bool,
    /// b is stored `[.., N, K]` and viewed through `.t()`.
    b_t: bool,
    bias: bool,
    act: Option<Activation>,
}

impl Problem {
    fn new(m: usize, k: usize, n: usize) -> Problem {
        Problem {
            a_batch: vec![],
            b_batch: vec![],
            m,
            k,
            n,
            a_t: false,
            b_t: false,
            bias: false,
            act: None,
        }
    }
}

/// Stored shape and permutation for an operand `[batch.., r, c]`, transposed if `t`.
fn operand(batch: &[usize], r: usize, c: usize, t: bool) -> (Vec<usize>, Option<Vec<usize>>) {
    let mut stored = batch.to_vec();
    if !t {
        stored.extend([r, c]);
        return (stored, None);
    }
    stored.extend([c, r]);
    let rank = stored.len();
    let mut perm: Vec<usize> = (0..rank).collect();
    perm.swap(rank - 2, rank - 1);
    (stored, Some(perm))
}

fn run<B: Backend>(cx: &Ctx<B>, p: &Problem, dtype: DType, seed: u64) -> Outcome {
    if let Some(o) = unsupported(cx, dtype) {
        return o;
    }
    let (sa, pa) = operand(&p.a_batch, p.m, p.k, p.a_t);
    let (sb, pb) = operand(&p.b_batch, p.k, p.n, p.b_t);
    let (a, ha) = input(cx, &sa, pa.as_deref(), dtype, seed)?;
    let (b, hb) = input(cx, &sb, pb.as_deref(), dtype, seed ^ 1)?;
    let bias = if p.bias {
        Some(input(cx, &[p.n], None, dtype, seed ^ 2)?)
    } else {
        None
    };
    let got = a.matmul_fused(&b, bias.as_ref().map(|(t, _)| t), p.act)?;
    let want = reference::matmul(
        &ha,
        &hb,
        bias.as_ref().map(|(_, h)| h.data.as_slice()),
        p.act,
    );
    check(&got, &want, dtype)
}

fn add<B: Backend>(c: &mut Cases<B>, dtype: DType, what: &str, p: Problem) {
    let name = format!("matmul/{dtype}/m={},k={},n={}/{what}", p.m, p.k, p.n);
    let seed = seed_of(&name);
    c.add(name, move |cx| run(cx, &p, dtype, seed));
}

pub(crate) fn cases<B: Backend>(c: &mut Cases<B>) {
    for dtype in DType::FLOATS {
        // Each of M, K, N through the odd sizes, the other two at 33.
        for &s in &SIZES {
            add(c, dtype, "nn", Problem::new(s, 33, 33));
            if s != 33 {
                add(c, dtype, "nn", Problem::new(33, s, 33));
                add(c, dtype, "nn", Problem::new(33, 33, s));
            }
        }
        // Transposed views of either operand.
        for (m, k, n) in [(33, 127, 129), (7, 1000, 1), (129, 7, 127)] {
            for (what, a_t, b_t) in [("tn", true, false), ("nt", false, true), ("tt", true, true)] {
                add(
                    c,
                    dtype,
                    what,
                    Problem {
                        a_t,
                        b_t,
                        ..Problem::new(m, k, n)
                    },
                );
            }
        }
        // Batches: equal, broadcast on either side, a rank difference, and a batch axis
        // that is a strided view (a stored [M, B, K] and permuted to [B, M, K]).
        let batched = |ab: &[usize], bb: &[usize]| Problem {
            a_batch: ab.to_vec(),
            b_batch: bb.to_vec(),
            ..Problem::new(33, 7, 129)
        };
        add(c, dtype, "batch[3]x[3]", batched(&[3], &[3]));
        add(c, dtype, "batch[2,3]x[]", batched(&[2, 3], &[]));
        add(c, dtype, "batch[]x[4]", batched(&[], &[4]));
        add(c, dtype, "batch[2,1]x[3]", batched(&[2, 1], &[3]));
        add(
            c,
            dtype,
            "batch[1,5]x[2,1]/nt",
            Problem {
                b_t: true,
                ..batched(&[1, 5], &[2, 1])
            },
        );
        let name = format!("matmul/{dtype}/m=33,k=7,n=129/batch[3]-permuted");
        let seed = seed_of(&name);
        c.add(name, move |cx| {
            if let Some(o) = unsupported(cx, dtype) {
                return o;
            }
            let (a, ha) = input(cx, &[33, 3, 7], Some(&[1, 0, 2]), dtype, seed)?;
            let (b, hb) = input(cx, &[3, 7, 129], None, dtype, seed ^ 1)?;
            check(
                &a.matmul(&b)?,
                &reference::matmul(&ha, &hb, None, None),
                dtype,
            )
        });
        // The epilogue: bias alone, each activation alone and after a bias.
        add(
            c,
            dtype,
            "bias",
            Problem {
                bias: true,
                ..Problem::new(33, 127, 129)
            },
        );
        for act in Activation::ALL {
            let a = act.name();
            add(
                c,
                dtype,
                a,
                Problem {
                    act: Some(act),
                    ..Problem::new(33, 127, 129)
                },
            );
            add(
                c,
                dtype,
                &format!("bias+{a}/nt"),
                Problem {
                    bias: true,
                    b_t: true,
                    act: Some(act),
                    ..Problem::new(127, 33, 7)
                },
            );
        }
        // Empty dimensions: K = 0 gives act(bias) (zeros without), M or N = 0 empty results.
        add(c, dtype, "empty", Problem::new(7, 0, 33));
        add(
            c,
            dtype,
            "empty+bias+gelu",
            Problem {
                bias: true,
                act: Some(Activation::Gelu),
                ..Problem::new(7, 0, 33)
            },
        );
        add(c, dtype, "empty", Problem::new(0, 7, 33));
        add(c, dtype, "empty", Problem::new(7, 33, 0));
        add(
            c,
            dtype,
            "empty-batch",
            Problem {
                a_batch: vec![0],
                ..Problem::new(7, 33, 5)
            },
        );
        // NaN in a poisons its row, ±∞ in b its column (one infinite product per sum).
        let name = format!("matmul/{dtype}/m=33,k=129,n=7/nan-inf");
        let seed = seed_of(&name);
        c.add(name, move |cx| {
            if let Some(o) = unsupported(cx, dtype) {
                return o;
            }
            let (m, k, n) = (33, 129, 7);
            let mut av = crate::random::normal_f32(seed, m * k);
            let mut bv = crate::random::normal_f32(seed ^ 1, k * n);
            av[5 * k + 17] = f32::NAN;
            bv[100 * n + 3] = f32::INFINITY;
            bv[3 * n + 6] = f32::NEG_INFINITY;
            let (a, ha) = input_from(cx, &[m, k], None, dtype, &av)?;
            let (b, hb) = input_from(cx, &[k, n], None, dtype, &bv)?;
            check(
                &a.matmul(&b)?,
                &reference::matmul(&ha, &hb, None, None),
                dtype,
            )
        });
    }
}
