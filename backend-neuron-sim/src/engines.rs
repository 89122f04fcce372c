//! Engines, instruction streams and the scheduler that places instructions in time.
//!
//! Each engine (tensor, vector, scalar, GpSimd) executes its instructions in program
//! order; an instruction starts at max(engine free, every input ready, shared ports
//! free) and occupies the engine for its cost ÷ the engine clock. On v2 the vector and
//! GpSimd engines share the SBUF port, and vector and scalar share the PSUM port: an
//! instruction using a shared port also waits for, and holds, that port.
//!
//! The tensor engine also loads the stationary operand (≈ M/4 cycles) behind the
//! previous matmul: the load may start once its data is ready and the previous matmul
//! has started, so back-to-back matmuls hide it and an isolated one pays it.
//!
//! DMA: a transfer is triggered on a queue (in order: a trigger never precedes the
//! previous trigger on its queue), starts moving data a fixed latency later, and moves
//! its partitions on the DMA engines they map to (partition p → engine p ÷ (128 / 16)),
//! each engine serialising the transfers it serves. Sources: NEURON.md, NKI DMA guide.

// Simulator code: partition, engine and queue indices are below the fixed counts of
// the configuration, and byte ranges are checked against each allocation before use.
#![allow(clippy::indexing_slicing)]

use crate::config::NeuronConfig;
use crate::cost;

/// A compute engine of the NeuronCore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Engine {
    /// The 128×128 systolic array (matmul, transpose).
    Tensor,
    /// The vector engine (elementwise, reductions along the free axis).
    Vector,
    /// The scalar / activation engine.
    Scalar,
    /// The GpSimd engine (8 cores × 16 partitions; cross-partition work).
    GpSimd,
}

impl Engine {
    /// All engines, in track order.
    pub const ALL: [Engine; 4] = [
        Engine::Tensor,
        Engine::Vector,
        Engine::Scalar,
        Engine::GpSimd,
    ];

    /// Index into per-engine tables.
    pub fn index(self) -> usize {
        match self {
            Engine::Tensor => 0,
            Engine::Vector => 1,
            Engine::Scalar => 2,
            Engine::GpSimd => 3,
        }
    }

    /// Name in reports and traces.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Tensor => "tensor",
            Engine::Vector => "vector",
            Engine::Scalar => "scalar",
            Engine::GpSimd => "gpsimd",
        }
    }

    /// Clock in GHz.
    pub fn clock_ghz(self, cfg: &NeuronConfig) -> f64 {
        match self {
            Engine::Tensor => cfg.tensor_clock_ghz,
            Engine::Vector => cfg.vector_clock_ghz,
            Engine::Scalar => cfg.scalar_clock_ghz,
            Engine::GpSimd => cfg.gpsimd_clock_ghz,
        }
    }
}

/// An in-order instruction stream: an engine or a DMA queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// A compute engine's queue.
    Engine(Engine),
    /// DMA queue number `q`.
    Dma(u16),
}

impl Stream {
    /// Index into per-stream tables: engines first, then DMA queues.
    pub fn index(self) -> usize {
        match self {
            Stream::Engine(e) => e.index(),
            Stream::Dma(q) => 4 + q as usize,
        }
    }
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stream::Engine(e) => f.write_str(e.name()),
            Stream::Dma(q) => write!(f, "dma queue {q}"),
        }
    }
}

/// Busy intervals of one DMA engine. DMA engines serve many queues, so a transfer may
/// use an idle gap before transfers issued earlier in program order (unlike an engine's
/// in-order instruction queue). The most recent [`BusyList::KEEP`] intervals are kept;
/// time before them counts as busy, which can only delay a transfer, never overlap two.
#[derive(Clone, Debug, Default)]
pub(crate) struct BusyList {
    intervals: std::collections::VecDeque<(f64, f64)>,
    floor: f64,
}

impl BusyList {
    const KEEP: usize = 256;

    /// Reserves the earliest gap of `dur` ns at or after `ready`; returns its start.
    pub(crate) fn place(&mut self, ready: f64, dur: f64) -> f64 {
        let mut t = ready.max(self.floor);
        // Intervals are sorted and disjoint: find the first one ending after t.
        let mut i = self.intervals.partition_point(|iv| iv.1 <= t);
        while i < self.intervals.len() {
            let (s, e) = self.intervals[i];
            if s >= t + dur {
                break;
            }
            t = t.max(e);
            i += 1;
        }
        self.intervals.insert(i, (t, t + dur));
        if self.intervals.len() > Self::KEEP
            && let Some((_, e)) = self.intervals.pop_front()
        {
            self.floor = self.floor.max(e);
        }
        t
    }
}

/// Identity of a stationary operand, to skip reloading the one already in the array.
pub(crate) type StationaryKey = (u32, usize, usize, usize, usize);

/// Shared ports an instruction uses (v2).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Ports {
    pub(crate) sbuf_vector_gpsimd: bool,
    pub(crate) psum_vector_scalar: bool,
}

/// The scheduler's state: when each resource frees up.
#[derive(Clone, Debug)]
pub(crate) struct Timeline {
    engine_free: [f64; 4],
    sbuf_port_free: f64,
    psum_port_free: f64,
    dma_engines: Vec<BusyList>,
    dma_queue_trigger: Vec<f64>,
    next_load_queue: usize,
    next_store_queue: usize,
    store_queues: usize,
    last_stationary: Option<StationaryKey>,
    last_matmul_start: f64,
}

impl Timeline {
    pub(crate) fn new(cfg: &NeuronConfig) -> Self {
        Timeline {
            engine_free: [0.0; 4],
            sbuf_port_free: 0.0,
            psum_port_free: 0.0,
            dma_engines: vec![BusyList::default(); cfg.dma_engines.max(1)],
            dma_queue_trigger: vec![0.0; cfg.dma_queues.max(1)],
            next_load_queue: 0,
            next_store_queue: 0,
            store_queues: cfg.dma_store_queues.min(cfg.dma_queues.max(1) - 1),
            last_stationary: None,
            last_matmul_start: 0.0,
        }
    }

    /// The queue for the next DMA: the requested one, or round-robin over the load
    /// queues (the first `dma_queues − dma_store_queues`) or, for a store to HBM, over
    /// the store queues (the last `dma_store_queues`).
    pub(crate) fn pick_queue(&mut self, requested: Option<usize>, store: bool) -> usize {
        let n = self.dma_queue_trigger.len();
        let loads = n - self.store_queues;
        match requested {
            Some(q) => q % n,
            None if store && self.store_queues > 0 => {
                let q = loads + self.next_store_queue;
                self.next_store_queue = (self.next_store_queue + 1) % self.store_queues;
                q
            }
            None => {
                let q = self.next_load_queue;
                self.next_load_queue = (q + 1) % loads;
                q
            }
        }
    }

    /// Places a vector/scalar/GpSimd instruction of `cycles`; returns (start, end) in ns.
    pub(crate) fn compute(
        &mut self,
        cfg: &NeuronConfig,
        engine: Engine,
        ready: f64,
        cycles: f64,
        ports: Ports,
    ) -> (f64, f64) {
        let mut start = ready.max(self.engine_free[engine.index()]);
        if ports.sbuf_vector_gpsimd {
            start = start.max(self.sbuf_port_free);
        }
        if ports.psum_vector_scalar {
            start = start.max(self.psum_port_free);
        }
        let end = start + cycles / engine.clock_ghz(cfg);
        self.engine_free[engine.index()] = end;
        if ports.sbuf_vector_gpsimd {
            self.sbuf_port_free = end;
        }
        if ports.psum_vector_scalar {
            self.psum_port_free = end;
        }
        (start, end)
    }

    /// Places a matmul: the stationary load (if the operand changed) overlaps the
    /// previous matmul; returns (start, end) of the moving phase in ns.
    pub(crate) fn matmul(
        &mut self,
        cfg: &NeuronConfig,
        ready: f64,
        stationary: StationaryKey,
        m: usize,
        cycles: f64,
    ) -> (f64, f64) {
        let clock = cfg.tensor_clock_ghz;
        let load_ns = if self.last_stationary == Some(stationary) {
            0.0
        } else {
            cost::stationary_load_cycles(cfg, m) / clock
        };
        let load_begin = ready.max(self.last_matmul_start);
        let start = ready.max(self.engine_free[0]).max(load_begin + load_ns);
        let end = start + cycles / clock;
        self.engine_free[0] = end;
        self.last_stationary = Some(stationary);
        self.last_matmul_start = start;
        (start, end)
    }

    /// Places a tensor-engine instruction that does not keep a stationary (transpose).
    pub(crate) fn tensor_other(
        &mut self,
        cfg: &NeuronConfig,
        ready: f64,
        cycles: f64,
    ) -> (f64, f64) {
        let start = ready.max(self.engine_free[0]);
        let end = start + cycles / cfg.tensor_clock_ghz;
        self.engine_free[0] = end;
        self.last_stationary = None;
        self.last_matmul_start = start;
        (start, end)
    }

    /// Places a DMA on queue `q` spanning partitions `parts` of its on-chip side, moving
    /// `bytes_per_partition` per partition in descriptors of `contiguous` bytes.
    /// Returns (data start, end) in ns.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dma(
        &mut self,
        cfg: &NeuronConfig,
        q: usize,
        ready: f64,
        parts: std::ops::Range<usize>,
        bytes_per_partition: usize,
        contiguous: usize,
        touches_hbm: bool,
    ) -> (f64, f64) {
        let trigger = ready.max(self.dma_queue_trigger[q]);
        self.dma_queue_trigger[q] = trigger;
        let data_ready = trigger + cfg.dma_fixed_latency_ns;
        let engines = self.dma_engines.len();
        let per_engine = cfg.partitions.div_ceil(engines).max(1);
        let (mut first, mut last) = (f64::INFINITY, data_ready);
        let mut e = parts.start / per_engine;
        while e * per_engine < parts.end && e < engines {
            let lo = parts.start.max(e * per_engine);
            let hi = parts.end.min((e + 1) * per_engine);
            let dur = cost::dma_engine_ns(
                cfg,
                (hi - lo) * bytes_per_partition,
                contiguous,
                touches_hbm,
            );
            let s = self.dma_engines[e].place(data_ready, dur);
            first = first.min(s);
            last = last.max(s + dur);
            e += 1;
        }
        if first.is_infinite() {
            first = data_ready;
        }
        (first, last)
    }
}
