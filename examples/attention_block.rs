//! One Llama-style attention block — RMS norm, q/k/v projections, causal GQA attention,
//! output projection with a fused bias — run from the same code on every backend compiled
//! in and available (or on the CPU and the device `XKERN_DEVICE` names), with each
//! backend's time and its largest difference from the CPU.
//!
//! `cargo run --release --features all --example attention_block`
//! `XKERN_DEVICE=neuron-sim:trn2 cargo run --release --features all --example attention_block`

// The block is the one xkern-bench times as its `attention_block` case.
#[path = "../benches/src/block.rs"]
#[allow(dead_code)] // the example uses the forward pass, not the f64 reference
mod block;

use block::{AttentionBlock, BlockShape};
use std::time::Instant;
use xkern::{DType, Device};

fn main() -> xkern::Result<()> {
    let shape = BlockShape {
        batch: 1,
        seq: 256,
        hidden: 1024,
        q_heads: 16,
        kv_heads: 4,
        head_dim: 64,
    };
    println!(
        "attention block: {shape:?}, {:.2} GFLOP per forward pass",
        shape.flops() / 1e9
    );
    for dtype in [DType::F32, DType::BF16] {
        let mut cpu_out: Option<Vec<f64>> = None;
        let mut devices = match std::env::var("XKERN_DEVICE") {
            Ok(name) if !name.trim().is_empty() => vec![Device::cpu(), Device::parse(&name)?],
            _ => Device::available(),
        };
        // The CPU first: it is the baseline the others are compared with.
        devices.sort_by_key(|d| d.info().backend != "cpu");
        for dev in devices {
            let block = AttentionBlock::new(&dev, shape, dtype, 7)?;
            let x = block.input(&dev, dtype, 8)?;
            block.forward(&x)?; // warm-up
            let mut times = Vec::new();
            let mut out = None;
            for _ in 0..5 {
                let t0 = Instant::now();
                let y = block.forward(&x)?;
                dev.synchronize()?;
                times.push(t0.elapsed().as_secs_f64());
                out = Some(y);
            }
            times.sort_by(f64::total_cmp);
            let y = out.map(|y| y.to_f64_vec()).transpose()?.unwrap_or_default();
            let diff = match &cpu_out {
                None => {
                    cpu_out = Some(y);
                    "baseline".to_string()
                }
                Some(base) => {
                    let d = base
                        .iter()
                        .zip(&y)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f64::max);
                    format!("max |diff| vs cpu {d:.3e}")
                }
            };
            let median = times[times.len() / 2];
            println!(
                "{dtype:>4} on {:<12} {:>8.2} ms  {:>7.1} GFLOP/s  {diff}",
                dev.name(),
                median * 1e3,
                shape.flops() / median / 1e9
            );
        }
    }
    Ok(())
}
