//! Simulation-speed figures of the issue: the functional mode on a bf16 2048³ matmul
//! (target < 10 s on a 2-core machine) and the timing-only mode on the tutorial's
//! 4096 × 8192 × 8192 matmul (target < 2 s), both with the fully optimised kernel (and
//! timing-only also with the tiled kernel, the largest instruction count).
//!
//! `cargo run --release -p xkern-neuron-sim --example speed`

use std::time::Instant;
use xkern_core::DType;
use xkern_neuron_sim::tutorial::{self, Blocking, Problem};
use xkern_neuron_sim::{Mode, NeuronConfig, Simulator};

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            DType::BF16.round_f32((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n = 2048;
    let (a, b) = (values(n * n, 1), values(n * n, 2));
    let mut sim = Simulator::new(NeuronConfig::trn1(), Mode::Functional);
    let p = Problem {
        lhs_t: sim.hbm_from_f32(n, n, DType::BF16, &a)?,
        rhs: sim.hbm_from_f32(n, n, DType::BF16, &b)?,
        result: sim.hbm_tensor(n, n, DType::BF16)?,
    };
    let t0 = Instant::now();
    tutorial::fully_optimized(&mut sim, &p, Blocking::TUTORIAL)?;
    let wall = t0.elapsed().as_secs_f64();
    let got = sim.hbm_to_f32(&p.result)?;
    // Check 16 sampled rows against f64.
    let (mut num, mut den) = (0f64, 0f64);
    for i in (0..n).step_by(n / 16) {
        for j in 0..n {
            let want: f64 = (0..n)
                .map(|k| a[k * n + i] as f64 * b[k * n + j] as f64)
                .sum();
            num += (got[i * n + j] as f64 - want).powi(2);
            den += want * want;
        }
    }
    println!(
        "functional bf16 2048^3 (fully optimised kernel): {wall:.2} s wall, {} instructions, simulated latency {:.3} ms, relative error on 16 rows {:.2e}",
        sim.records().len(),
        sim.profile().latency_ms(),
        (num / den).sqrt()
    );
    for (name, kernel) in [("fully optimised", 3), ("tiled", 0)] {
        let t0 = Instant::now();
        let mut sim = Simulator::new(NeuronConfig::trn1(), Mode::TimingOnly);
        let p = Problem::new(&mut sim, 4096, 8192, 8192, DType::BF16)?;
        if kernel == 3 {
            tutorial::fully_optimized(&mut sim, &p, Blocking::TUTORIAL)?;
        } else {
            tutorial::tiled(&mut sim, &p)?;
        }
        let prof = sim.profile();
        println!(
            "timing-only 4096x8192x8192 ({name}): {:.2} s wall, {} instructions, simulated latency {:.2} ms",
            t0.elapsed().as_secs_f64(),
            sim.records().len(),
            prof.latency_ms()
        );
    }
    Ok(())
}
