//! Attention cases: sequence lengths (Sq < Skv, Sq = Skv, Sq = 1, Sq > Skv), causal and
//! not, GQA/MQA, head dims, permuted layouts, a custom scale, NaN, empty sequences.

// Test code: indexes host copies whose lengths the case has checked.
#![allow(clippy::indexing_slicing)]

use super::{Cases, Ctx, Outcome, check, input, input_from, seed_of, unsupported};
use crate::{AttentionOptions, Backend, DType, attention, reference};

#[derive(Clone, Debug)]
struct Problem {
    batch: usize,
    hq: usize,
    hkv: usize,
    sq: usize,
    skv: usize,
    d: usize,
    dv: usize,
    causal: bool,
    scale: Option<f32>,
    /// Inputs stored `[B, S, H, D]` and permuted to `[B, H, S, D]`.
    bshd: bool,
}

impl Problem {
    fn new(sq: usize, skv: usize, d: usize, causal: bool) -> Problem {
        Problem {
            batch: 1,
            hq: 2,
            hkv: 2,
            sq,
            skv,
            d,
            dv: d,
            causal,
            scale: None,
            bshd: false,
        }
    }

    fn name(&self, dtype: DType, what: &str) -> String {
        format!(
            "attention/{dtype}/b={},hq={},hkv={},sq={},skv={},d={},dv={}/{}{what}",
            self.batch,
            self.hq,
            self.hkv,
            self.sq,
            self.skv,
            self.d,
            self.dv,
            if self.causal { "causal" } else { "full" }
        )
    }
}

fn run<B: Backend>(
    cx: &Ctx<B>,
    p: &Problem,
    dtype: DType,
    seed: u64,
    nan_key: Option<usize>,
) -> Outcome {
    if let Some(o) = unsupported(cx, dtype) {
        return o;
    }
    let shape = |h: usize, s: usize, d: usize| {
        if p.bshd {
            vec![p.batch, s, h, d]
        } else {
            vec![p.batch, h, s, d]
        }
    };
    let perm: Option<&[usize]> = if p.bshd { Some(&[0, 2, 1, 3]) } else { None };
    let (q, hq) = input(cx, &shape(p.hq, p.sq, p.d), perm, dtype, seed)?;
    let (k, hk) = match nan_key {
        None => input(cx, &shape(p.hkv, p.skv, p.d), perm, dtype, seed ^ 1)?,
        Some(j) => {
            // NaN in key j of kv head 0 (stored [B, H, S, D]).
            let mut kv = crate::random::normal_f32(seed ^ 1, p.batch * p.hkv * p.skv * p.d);
            kv[j * p.d] = f32::NAN;
            input_from(cx, &shape(p.hkv, p.skv, p.d), perm, dtype, &kv)?
        }
    };
    let (v, hv) = input(cx, &shape(p.hkv, p.skv, p.dv), perm, dtype, seed ^ 2)?;
    let opts = AttentionOptions {
        causal: p.causal,
        scale: p.scale,
    };
    let got = attention(&q, &k, &v, &opts)?;
    let scale = p.scale.map_or(1.0 / (p.d as f64).sqrt(), f64::from);
    check(
        &got,
        &reference::attention(&hq, &hk, &hv, p.causal, scale),
        dtype,
    )
}

fn add<B: Backend>(c: &mut Cases<B>, dtype: DType, what: &str, p: Problem) {
    let name = p.name(dtype, what);
    let seed = seed_of(&name);
    c.add(name, move |cx| run(cx, &p, dtype, seed, None));
}

pub(crate) fn cases<B: Backend>(c: &mut Cases<B>) {
    for dtype in DType::FLOATS {
        for causal in [false, true] {
            // Sq = Skv at odd sizes, Sq < Skv, Sq > Skv (early queries see nothing when
            // causal), and the decode shape Sq = 1.
            for (sq, skv) in [
                (1, 1),
                (7, 7),
                (33, 33),
                (127, 127),
                (129, 129),
                (33, 129),
                (129, 33),
                (1, 1000),
                (7, 1000),
                (1000, 7),
            ] {
                add(c, dtype, "", Problem::new(sq, skv, 64, causal));
            }
            // Head dims other than 64, and Dv ≠ D.
            add(c, dtype, "", Problem::new(33, 127, 7, causal));
            add(c, dtype, "", Problem::new(33, 129, 128, causal));
            add(
                c,
                dtype,
                "",
                Problem {
                    dv: 7,
                    ..Problem::new(33, 129, 33, causal)
                },
            );
            add(c, dtype, "", Problem::new(7, 33, 1, causal));
            // GQA and MQA.
            add(
                c,
                dtype,
                "",
                Problem {
                    hq: 8,
                    hkv: 2,
                    ..Problem::new(33, 129, 64, causal)
                },
            );
            add(
                c,
                dtype,
                "",
                Problem {
                    hq: 4,
                    hkv: 1,
                    ..Problem::new(127, 127, 64, causal)
                },
            );
            add(
                c,
                dtype,
                "",
                Problem {
                    hq: 4,
                    hkv: 1,
                    ..Problem::new(1, 1000, 64, causal)
                },
            );
            // Batches, permuted [B, S, H, D] inputs, an explicit scale.
            add(
                c,
                dtype,
                "",
                Problem {
                    batch: 3,
                    ..Problem::new(33, 33, 64, causal)
                },
            );
            add(
                c,
                dtype,
                "/bshd",
                Problem {
                    batch: 2,
                    hq: 4,
                    hkv: 2,
                    bshd: true,
                    ..Problem::new(33, 129, 64, causal)
                },
            );
            add(
                c,
                dtype,
                "/scale=0.5",
                Problem {
                    scale: Some(0.5),
                    ..Problem::new(33, 33, 64, causal)
                },
            );
            // NaN in key 20 of kv head 0: every query of heads 0..group that sees key 20
            // gets NaN; with the causal mask, queries that do not see it stay finite.
            let p = Problem {
                hq: 4,
                hkv: 2,
                ..Problem::new(33, 33, 64, causal)
            };
            let name = p.name(dtype, "/nan-key");
            let seed = seed_of(&name);
            c.add(name, move |cx| run(cx, &p, dtype, seed, Some(20)));
            // Empty sequences: no queries (empty output) and no keys (zeros).
            add(c, dtype, "", Problem::new(0, 33, 64, causal));
            add(c, dtype, "", Problem::new(33, 0, 64, causal));
        }
    }
}
