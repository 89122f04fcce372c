//! Micro validation of the tensor engine's timing (NEURON.md): one N = 512 bf16 matmul
//! takes 512 cycles; back-to-back bf16 matmuls reach the tensor peak (91.75 TFLOPS on
//! trn1, 78.6 on trn2) within 2%; fp32 runs at a quarter of that.

use xkern_core::DType;
use xkern_neuron_sim::{Engine, Mode, NeuronConfig, Simulator};

#[test]
fn one_bf16_matmul_of_n512_takes_512_cycles() {
    for cfg in [NeuronConfig::trn1(), NeuronConfig::trn2()] {
        let clock = cfg.tensor_clock_ghz;
        let mut sim = Simulator::new(cfg, Mode::Functional);
        let a = sim.sbuf(128, 128, DType::BF16).unwrap();
        let b = sim.sbuf(128, 512, DType::BF16).unwrap();
        sim.memset(Engine::Vector, &a, 1.0).unwrap();
        sim.memset(Engine::Vector, &b, 1.0).unwrap();
        let ps = sim.psum(128, 512, DType::F32).unwrap();
        let id = sim.matmul(&ps, &a, &b, false).unwrap();
        let r = &sim.records()[id.0 as usize];
        let cycles = (r.end_ns - r.start_ns) * clock;
        assert!((cycles - 512.0).abs() < 1e-6, "{cycles} cycles");
        // Shorter moving tiles still cost the 64-cycle minimum.
        let b16 = b.cols(0, 16).unwrap();
        let ps16 = ps.cols(0, 16).unwrap();
        let id = sim.matmul(&ps16, &a, &b16, false).unwrap();
        let r = &sim.records()[id.0 as usize];
        assert!(((r.end_ns - r.start_ns) * clock - 64.0).abs() < 1e-6);
    }
}

/// Achieved TFLOPS of `count` back-to-back matmuls alternating two stationaries (so the
/// stationary load is paid and must hide behind the previous matmul).
fn back_to_back(cfg: NeuronConfig, dtype: DType, count: usize) -> (f64, f64) {
    let peak = cfg.tensor_peak_flops() * 1e-12;
    let mut sim = Simulator::new(cfg, Mode::TimingOnly);
    let st = [
        sim.sbuf(128, 128, dtype).unwrap(),
        sim.sbuf(128, 128, dtype).unwrap(),
    ];
    let mv = sim.sbuf(128, 512, dtype).unwrap();
    for t in st.iter().chain([&mv]) {
        sim.memset(Engine::Vector, t, 0.5).unwrap();
    }
    let banks: Vec<_> = (0..8)
        .map(|_| sim.psum(128, 512, DType::F32).unwrap())
        .collect();
    for i in 0..count {
        // Accumulate 8 k-steps per bank, as a kernel would.
        sim.matmul(&banks[(i / 8) % 8], &st[i % 2], &mv, i % 8 != 0)
            .unwrap();
    }
    (sim.profile().achieved_tflops, peak)
}

#[test]
fn back_to_back_bf16_matmuls_reach_the_peak() {
    for (cfg, want) in [(NeuronConfig::trn1(), 91.75), (NeuronConfig::trn2(), 78.6)] {
        let (got, peak) = back_to_back(cfg, DType::BF16, 2000);
        assert!((peak - want).abs() / want < 0.001, "peak {peak} vs {want}");
        println!("bf16: {got:.3} TFLOPS of {want}");
        assert!(
            got <= peak && got > want * 0.98,
            "{got} TFLOPS vs peak {want}"
        );
    }
}

#[test]
fn fp32_matmuls_run_at_a_quarter_of_the_peak() {
    for (cfg, want) in [
        (NeuronConfig::trn1(), 91.75 / 4.0),
        (NeuronConfig::trn2(), 78.6 / 4.0),
    ] {
        let (got, _) = back_to_back(cfg, DType::F32, 1000);
        println!("fp32: {got:.3} TFLOPS of {want}");
        assert!(got <= want && got > want * 0.98, "{got} TFLOPS vs {want}");
    }
}

#[test]
fn an_isolated_matmul_pays_its_stationary_load() {
    let cfg = NeuronConfig::trn1();
    let clock = cfg.tensor_clock_ghz;
    let mut sim = Simulator::new(cfg, Mode::TimingOnly);
    let a = sim.sbuf(128, 128, DType::BF16).unwrap();
    let b = sim.sbuf(128, 512, DType::BF16).unwrap();
    let ps = sim.psum(128, 512, DType::F32).unwrap();
    let ma = sim.memset(Engine::Vector, &a, 1.0).unwrap();
    sim.memset(Engine::Vector, &b, 1.0).unwrap();
    let id = sim.matmul(&ps, &a, &b, false).unwrap();
    let recs = sim.records();
    // Inputs ready (the later memset + the semaphore latency), then M/4 = 32 cycles of load.
    let ready = recs[ma.0 as usize + 1].end_ns + 100.0 / clock;
    let start = recs[id.0 as usize].start_ns;
    assert!(
        ((start - ready) * clock - 32.0).abs() < 1e-6,
        "{}",
        (start - ready) * clock
    );
}
