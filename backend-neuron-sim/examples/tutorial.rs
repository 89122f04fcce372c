//! Costs the four NKI matmul tutorial kernels (M = 4096, K = 8192, N = 8192, bf16, trn1)
//! in timing-only mode and prints each profile next to the published latency.
//!
//! `cargo run --release -p xkern-neuron-sim --example tutorial [-- trace.json]`
//! (with a path, the fourth kernel's Chrome trace is written there).

use std::time::Instant;
use xkern_core::DType;
use xkern_neuron_sim::tutorial::{self, Blocking, Problem};
use xkern_neuron_sim::{Mode, NeuronConfig, Simulator};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let trace = std::env::args().nth(1);
    let published = [51.80, 42.96, 22.07, 6.97];
    for (i, want) in published.iter().enumerate() {
        let t0 = Instant::now();
        let mut sim = Simulator::new(NeuronConfig::trn1(), Mode::TimingOnly);
        let p = Problem::new(&mut sim, 4096, 8192, 8192, DType::BF16)?;
        match i {
            0 => tutorial::tiled(&mut sim, &p)?,
            1 => tutorial::hoist_load(&mut sim, &p)?,
            2 => tutorial::block_free(&mut sim, &p)?,
            _ => tutorial::fully_optimized(&mut sim, &p, Blocking::TUTORIAL)?,
        }
        let prof = sim.profile();
        println!(
            "kernel {}: simulated {:.2} ms, published {want:.2} ms ({:+.1}%), {} instructions, simulated in {:.2} s",
            i + 1,
            prof.latency_ms(),
            (prof.latency_ms() / want - 1.0) * 100.0,
            sim.records().len(),
            t0.elapsed().as_secs_f64()
        );
        print!("{}", prof.summary());
        if i == 3
            && let Some(path) = &trace
        {
            sim.write_chrome_trace(path)?;
            println!("trace written to {path}");
        }
    }
    Ok(())
}
