//! The timing model: every cost formula of NEURON.md, each in one function here.
//!
//! Engine costs are in that engine's cycles; the scheduler (`engines.rs`) turns
//! cycles into nanoseconds with the engine's clock and places the instruction at
//! max(engine free, inputs ready). Sources: the NKI performance guide and ISA reference
//! (per-instruction cycle formulas, fixed access costs, v3 fast modes), the NKI DMA guide
//! (DMA engines, fixed cost, efficiency by payload), the architecture guides (clocks,
//! bandwidths); all figures are fields of [`NeuronConfig`].

// Simulator code: partition, engine and queue indices are below the fixed counts of
// the configuration, and byte ranges are checked against each allocation before use.
#![allow(clippy::indexing_slicing)]

use crate::config::NeuronConfig;
use crate::engines::Engine;

/// matmul on the tensor engine: max(N, 64) cycles for 16-bit operands, ×4 for fp32.
/// Source: NKI performance guide (moving data streams one column per cycle; a 64-cycle
/// minimum per instruction); fp32 runs at a quarter rate.
pub fn matmul_cycles(cfg: &NeuronConfig, n: usize, fp32: bool) -> f64 {
    let base = (n as u64).max(cfg.matmul_min_cycles);
    (if fp32 {
        base * cfg.matmul_fp32_factor
    } else {
        base
    }) as f64
}

/// Loading a stationary operand of `m` columns: ≈ M/4 cycles, overlapping the previous
/// matmul (the scheduler decides how much is hidden). Source: NKI performance guide.
pub fn stationary_load_cycles(cfg: &NeuronConfig, m: usize) -> f64 {
    m as f64 * cfg.stationary_load_cycles_per_column
}

/// Transpose on the tensor engine of a `[p, f]` tile: max(P, min(64, F)) cycles.
/// Source: NEURON.md's timing model (an identity matmul whose moving side is P wide).
pub fn pe_transpose_cycles(_cfg: &NeuronConfig, p: usize, f: usize) -> f64 {
    p.max(f.min(64)) as f64
}

/// The instruction classes of the vector, scalar and GpSimd engines, by cost formula.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpClass {
    /// tensor_copy, tensor_scalar, activation, vector transpose: max(64, N).
    Elementwise,
    /// tensor_tensor: max(64, 2N), or max(64, N) when `fast` (one input in PSUM, or all
    /// operands bf16 contiguous).
    TensorTensor {
        /// The single-pass case.
        fast: bool,
    },
    /// tensor_reduce along the free axis: N.
    Reduce,
    /// activation with reduce = add into an accumulator: max(64, N) + 64.
    ActivationReduce,
    /// vector reciprocal: 8N.
    Reciprocal,
    /// memset: N.
    Memset,
}

/// Cycles of a vector/scalar/GpSimd instruction of `n` free elements per partition.
///
/// Vector and scalar: the class formula above, plus ≈ 60 cycles to start the access;
/// a minor stride over 16 bytes halves throughput; fewer than 128 partitions cost the
/// same; `fast_mode` divides the streaming part (v3's 2×/4× modes, 1 elsewhere).
/// GpSimd: ≈ 150 + N whatever the class. Source: NKI performance guide.
pub fn engine_cycles(
    cfg: &NeuronConfig,
    engine: Engine,
    class: OpClass,
    n: usize,
    minor_stride_bytes: usize,
    fast_mode: f64,
) -> f64 {
    let n64 = n as u64;
    if engine == Engine::GpSimd {
        return (cfg.gpsimd_fixed_cycles + n64) as f64;
    }
    let min = cfg.vector_min_cycles;
    let stream = match class {
        OpClass::Elementwise => n64.max(min),
        OpClass::TensorTensor { fast: true } => n64.max(min),
        OpClass::TensorTensor { fast: false } => (2 * n64).max(min),
        OpClass::Reduce => n64,
        OpClass::ActivationReduce => n64.max(min) + min,
        OpClass::Reciprocal => 8 * n64,
        OpClass::Memset => n64,
    } as f64;
    let stride = if minor_stride_bytes > cfg.stride_penalty_bytes {
        2.0
    } else {
        1.0
    };
    cfg.access_start_cycles as f64 + stream * stride / fast_mode.max(1.0)
}

/// DMA efficiency at `contiguous` bytes per partition (descriptor payload): the
/// piecewise log-linear curve of [`NeuronConfig::dma_efficiency`], proportional to the
/// payload below its first point, flat beyond its last.
pub fn dma_efficiency(cfg: &NeuronConfig, contiguous: usize) -> f64 {
    let pts = &cfg.dma_efficiency;
    let Some(&(b0, e0)) = pts.first() else {
        return 1.0;
    };
    if contiguous <= b0 {
        return (e0 * contiguous.max(1) as f64 / b0.max(1) as f64).max(1e-6);
    }
    for w in pts.windows(2) {
        let ((b1, e1), (b2, e2)) = (w[0], w[1]);
        if contiguous <= b2 {
            let t = ((contiguous as f64).log2() - (b1 as f64).log2())
                / ((b2 as f64).log2() - (b1 as f64).log2()).max(1e-12);
            return e1 + t * (e2 - e1);
        }
    }
    pts.last().map_or(1.0, |p| p.1)
}

/// Nanoseconds one DMA engine needs to move `bytes` at `contiguous` bytes per
/// descriptor: bytes / (engine bandwidth × efficiency), with the rate capped at the
/// engine's share of the core's HBM bandwidth when HBM is an end of the transfer.
/// The fixed trigger cost ([`NeuronConfig::dma_fixed_latency_ns`]) is added by the
/// scheduler, since it overlaps other transfers. Source: NKI DMA guide, NEURON.md.
pub fn dma_engine_ns(
    cfg: &NeuronConfig,
    bytes: usize,
    contiguous: usize,
    touches_hbm: bool,
) -> f64 {
    let mut rate = cfg.dma_engine_bandwidth_gbps * dma_efficiency(cfg, contiguous);
    if touches_hbm {
        rate = rate.min(cfg.hbm_bandwidth_gbps / cfg.dma_engines.max(1) as f64);
    }
    bytes as f64 / rate.max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efficiency_curve_is_calibrated_flat_then_saturates() {
        let c = NeuronConfig::trn1();
        assert!((dma_efficiency(&c, 256) - 0.38).abs() < 1e-12);
        assert!((dma_efficiency(&c, 1024) - 0.38).abs() < 1e-12);
        assert!(dma_efficiency(&c, 1536) > 0.38 && dma_efficiency(&c, 1536) < 0.75);
        assert_eq!(dma_efficiency(&c, 8192), 1.0);
        assert!(dma_efficiency(&c, 32) < 0.1);
    }

    #[test]
    fn matmul_costs() {
        let c = NeuronConfig::trn1();
        assert_eq!(matmul_cycles(&c, 512, false), 512.0);
        assert_eq!(matmul_cycles(&c, 16, false), 64.0);
        assert_eq!(matmul_cycles(&c, 512, true), 2048.0);
    }
}
