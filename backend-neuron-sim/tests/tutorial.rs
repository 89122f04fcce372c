//! Validation of the timing model against AWS's NKI matmul tutorial (NEURON.md): the four
//! kernels at M = 4096, K = 8192, N = 8192, bf16, trn1, one core, in timing-only mode,
//! must land within ±15% of 51.80, 42.96, 22.07 and 6.97 ms, in that order. Also: the
//! fourth kernel's Chrome trace parses as JSON with one track per engine and DMA queue.

use xkern_core::DType;
use xkern_neuron_sim::tutorial::{self, Blocking, Problem};
use xkern_neuron_sim::{Engine, Mode, NeuronConfig, Profile, Simulator};

const PUBLISHED_MS: [f64; 4] = [51.80, 42.96, 22.07, 6.97];

fn run(kernel: usize) -> (Simulator, Profile) {
    let mut sim = Simulator::new(NeuronConfig::trn1(), Mode::TimingOnly);
    let p = Problem::new(&mut sim, 4096, 8192, 8192, DType::BF16).unwrap();
    match kernel {
        0 => tutorial::tiled(&mut sim, &p),
        1 => tutorial::hoist_load(&mut sim, &p),
        2 => tutorial::block_free(&mut sim, &p),
        _ => tutorial::fully_optimized(&mut sim, &p, Blocking::TUTORIAL),
    }
    .unwrap();
    let prof = sim.profile();
    (sim, prof)
}

#[test]
fn tutorial_latencies_within_15_percent_and_in_order() {
    let mut got = Vec::new();
    for (i, want) in PUBLISHED_MS.iter().enumerate() {
        let (sim, prof) = run(i);
        let ms = prof.latency_ms();
        println!(
            "kernel {}: {ms:.2} ms (published {want} ms)\n{}",
            i + 1,
            prof.summary()
        );
        assert!(
            (ms / want - 1.0).abs() <= 0.15,
            "kernel {}: {ms:.2} ms vs {want} ms",
            i + 1
        );
        assert!(
            sim.races().is_empty(),
            "kernel {} races: {}",
            i + 1,
            sim.races()[0]
        );
        // Every kernel performs the same 2·M·K·N flops.
        assert_eq!(prof.flops, 2.0 * 4096.0 * 8192.0 * 8192.0);
        got.push(ms);
    }
    assert!(
        got.windows(2).all(|w| w[0] > w[1]),
        "not in the published order: {got:?}"
    );
}

#[test]
fn memory_bound_kernels_move_the_expected_bytes() {
    // Kernel 1 reloads both tiles for every (m, n, k): 32·16·64 · (32 KiB + 128 KiB).
    let (_, p1) = run(0);
    assert_eq!(p1.bytes.hbm_read, 32 * 16 * 64 * (32768 + 131072));
    assert_eq!(p1.bytes.hbm_write, 4096 * 8192 * 2);
    // Kernel 4 is compute bound: the tensor engine is the busiest stream.
    let (_, p4) = run(3);
    let tensor = p4.engine(Engine::Tensor).utilisation;
    assert!(tensor > 0.8, "tensor utilisation {tensor}");
    assert!(p4.mfu > 0.8 && p4.mfu < 1.0, "mfu {}", p4.mfu);
}

#[test]
fn fourth_kernel_trace_is_json_with_one_track_per_engine_and_queue() {
    let (sim, _) = run(3);
    let path = std::env::temp_dir().join(format!("xkern-neuron-k4-{}.json", std::process::id()));
    sim.write_chrome_trace(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let events = v["traceEvents"].as_array().unwrap();
    let tracks: Vec<&str> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    for e in [
        "tensor engine",
        "vector engine",
        "scalar engine",
        "gpsimd engine",
    ] {
        assert_eq!(
            tracks.iter().filter(|t| **t == e).count(),
            1,
            "{e} in {tracks:?}"
        );
    }
    let queues = tracks.iter().filter(|t| t.starts_with("DMA queue")).count();
    assert_eq!(queues, 16);
    let complete = events.iter().filter(|e| e["ph"] == "X").count();
    assert_eq!(complete, sim.records().len());
    let svg = sim.svg_timeline(1000);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("tensor engine") && svg.contains("<rect"));
}
