//! The result of a run: estimated latency, per-stream busy time and utilisation, bytes
//! per memory level, achieved TFLOPS and MFU (fraction of the tensor engine's 16-bit
//! peak, 128·128·2·clock), instruction counts and races. Built from the instruction
//! records by [`crate::Simulator::profile`].

// Engine indices come from `Engine::index`, below the engine count.
#![allow(clippy::indexing_slicing)]

use crate::engines::{Engine, Stream};
use crate::sim::{ByteCounts, Simulator};
use std::collections::BTreeMap;

/// Busy time of one stream (engine or DMA queue).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamStats {
    /// The stream.
    pub stream: Stream,
    /// Sum of its instructions' execution times, ns.
    pub busy_ns: f64,
    /// busy / latency.
    pub utilisation: f64,
    /// Instructions it ran.
    pub instructions: usize,
}

/// Summary of a simulated run.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Name of the configuration.
    pub config: String,
    /// Estimated latency: when the last result is ready, ns.
    pub latency_ns: f64,
    /// Tensor, vector, scalar, GpSimd, in that order.
    pub engines: Vec<StreamStats>,
    /// One entry per DMA queue that ran something.
    pub dma_queues: Vec<StreamStats>,
    /// Time at least one DMA was moving data, ns (the union over queues).
    pub dma_active_ns: f64,
    /// Bytes moved per memory level.
    pub bytes: ByteCounts,
    /// Tensor-engine floating-point operations.
    pub flops: f64,
    /// flops / latency, in TFLOP/s.
    pub achieved_tflops: f64,
    /// achieved / tensor peak.
    pub mfu: f64,
    /// Instructions per opcode.
    pub instruction_counts: BTreeMap<&'static str, usize>,
    /// Races reported.
    pub races: usize,
}

impl Profile {
    /// Stats of one engine.
    pub fn engine(&self, e: Engine) -> &StreamStats {
        &self.engines[e.index()]
    }

    /// Latency in milliseconds.
    pub fn latency_ms(&self) -> f64 {
        self.latency_ns * 1e-6
    }

    /// A short human-readable report.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: {:.3} ms, {:.2} TFLOPS ({:.1}% of peak), HBM {:.1} MB read / {:.1} MB written\n",
            self.config,
            self.latency_ms(),
            self.achieved_tflops,
            self.mfu * 100.0,
            self.bytes.hbm_read as f64 * 1e-6,
            self.bytes.hbm_write as f64 * 1e-6
        );
        for e in &self.engines {
            s += &format!(
                "  {:<8} busy {:>10.3} ms ({:>5.1}%), {} instructions\n",
                e.stream.to_string(),
                e.busy_ns * 1e-6,
                e.utilisation * 100.0,
                e.instructions
            );
        }
        s += &format!(
            "  dma      active {:.3} ms ({:.1}%), {} queues used\n",
            self.dma_active_ns * 1e-6,
            100.0 * self.dma_active_ns / self.latency_ns.max(1e-9),
            self.dma_queues.len()
        );
        s
    }
}

impl Simulator {
    /// The profile of everything issued so far.
    pub fn profile(&self) -> Profile {
        let recs = self.records();
        let latency = recs.iter().map(|r| r.ready_ns).fold(0.0, f64::max);
        let mut engines: Vec<StreamStats> = Engine::ALL
            .iter()
            .map(|&e| StreamStats {
                stream: Stream::Engine(e),
                busy_ns: 0.0,
                utilisation: 0.0,
                instructions: 0,
            })
            .collect();
        let mut queues: BTreeMap<u16, StreamStats> = BTreeMap::new();
        let mut counts = BTreeMap::new();
        let mut flops = 0.0;
        let mut dma_spans = Vec::new();
        for r in recs {
            let st = match r.stream {
                Stream::Engine(e) => &mut engines[e.index()],
                Stream::Dma(q) => {
                    dma_spans.push((r.start_ns, r.end_ns));
                    queues.entry(q).or_insert(StreamStats {
                        stream: r.stream,
                        busy_ns: 0.0,
                        utilisation: 0.0,
                        instructions: 0,
                    })
                }
            };
            st.busy_ns += r.end_ns - r.start_ns;
            st.instructions += 1;
            *counts.entry(r.opcode).or_insert(0) += 1;
            flops += r.flops;
        }
        let mut dma_queues: Vec<StreamStats> = queues.into_values().collect();
        for s in engines.iter_mut().chain(dma_queues.iter_mut()) {
            s.utilisation = if latency > 0.0 {
                s.busy_ns / latency
            } else {
                0.0
            };
        }
        dma_spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (mut active, mut cur) = (0.0, (f64::NEG_INFINITY, f64::NEG_INFINITY));
        for (s, e) in dma_spans {
            if s > cur.1 {
                active += (cur.1 - cur.0).max(0.0);
                cur = (s, e);
            } else {
                cur.1 = cur.1.max(e);
            }
        }
        active += (cur.1 - cur.0).max(0.0);
        let achieved = if latency > 0.0 {
            flops / (latency * 1e-9)
        } else {
            0.0
        };
        Profile {
            config: self.config().name.clone(),
            latency_ns: latency,
            engines,
            dma_queues,
            dma_active_ns: active,
            bytes: self.bytes,
            flops,
            achieved_tflops: achieved * 1e-12,
            mfu: achieved / self.config().tensor_peak_flops(),
            instruction_counts: counts,
            races: self.races().len(),
        }
    }
}
