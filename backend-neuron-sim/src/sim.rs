//! The simulator: state of one NeuronCore, allocation, and the issue path every
//! instruction goes through (dependencies, vector clocks, races, timing, records).
//!
//! Instructions execute functionally at issue, in program order (the order a correct,
//! race-free kernel's results cannot depend on), and are placed in time by the
//! [`Timeline`]: straight-line Rust is scheduled as the hardware would overlap it. The
//! instruction methods themselves live in `isa/`, one file per engine.

// Simulator code: partition, engine and queue indices are below the fixed counts of
// the configuration, and byte ranges are checked against each allocation before use.
#![allow(clippy::indexing_slicing)]

use crate::config::{Generation, NeuronConfig};
use crate::deps::{Access, Clocks, Footprint, Hazard, History, ONCHIP, Race};
use crate::engines::{Engine, Ports, StationaryKey, Stream, Timeline};
use crate::error::{Result, SimError};
use crate::memory::{AccessPattern, Allocator, HbmTensor, MemKind, OnChip, PsumInit};
use crate::numerics;
use crate::tile::Tile;
use std::sync::atomic::{AtomicU32, Ordering};
use xkern_core::DType;

static NEXT_SIM_ID: AtomicU32 = AtomicU32::new(1);

/// What a run computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Compute every value and the timeline.
    Functional,
    /// Only the timeline, rules, dependencies and races: no data is stored or computed,
    /// so shapes beyond this machine's memory can be costed.
    TimingOnly,
}

/// Handle of an issued instruction, for explicit ordering ([`IssueOptions::after`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstrId(pub u32);

/// Options for the next successfully issued instruction (see [`Simulator::next`]).
#[derive(Clone, Debug, Default)]
pub struct IssueOptions {
    /// Extra dependencies: the instruction waits for these (explicit ordering).
    pub after: Vec<InstrId>,
    /// Do not derive dependencies from memory for this instruction (NKI's "no sync"):
    /// it may then race with earlier instructions, which the simulator reports.
    pub no_sync: bool,
    /// DMA queue for a DMA (default: round-robin over the queues).
    pub dma_queue: Option<usize>,
}

/// One instruction as placed on the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct InstrRecord {
    /// Opcode (`matmul`, `dma_copy`, ...).
    pub opcode: &'static str,
    /// The stream it ran on.
    pub stream: Stream,
    /// Start of execution (data movement for a DMA), ns.
    pub start_ns: f64,
    /// End of execution, ns.
    pub end_ns: f64,
    /// When its results are readable (end plus pipeline latency), ns.
    pub ready_ns: f64,
    /// Floating-point operations (matmul: 2·K·M·N).
    pub flops: f64,
}

#[derive(Clone, Debug)]
pub(crate) struct Allocation {
    pub(crate) mem: MemKind,
    pub(crate) offset: usize,
    pub(crate) len: usize,
    pub(crate) live: bool,
    /// HBM tensors only: the bytes (empty in timing-only mode).
    pub(crate) data: Vec<u8>,
}

/// How an instruction is placed in time.
pub(crate) enum Timing {
    Compute {
        engine: Engine,
        cycles: f64,
        ports: Ports,
    },
    Matmul {
        key: StationaryKey,
        m: usize,
        cycles: f64,
        latency_ns: f64,
    },
    TensorOther {
        cycles: f64,
        latency_ns: f64,
    },
    Dma {
        parts: std::ops::Range<usize>,
        bytes_per_partition: usize,
        contiguous: usize,
        hbm: bool,
    },
}

/// Bytes moved per memory level.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ByteCounts {
    /// Bytes read from HBM.
    pub hbm_read: u64,
    /// Bytes written to HBM.
    pub hbm_write: u64,
    /// Bytes read from SBUF.
    pub sbuf_read: u64,
    /// Bytes written to SBUF.
    pub sbuf_write: u64,
    /// Bytes read from PSUM.
    pub psum_read: u64,
    /// Bytes written to PSUM.
    pub psum_write: u64,
}

/// A simulated NeuronCore: memories, engines, the instruction timeline.
pub struct Simulator {
    pub(crate) cfg: NeuronConfig,
    pub(crate) mode: Mode,
    pub(crate) id: u32,
    pub(crate) sbuf: OnChip,
    pub(crate) psum: OnChip,
    pub(crate) psum_init: PsumInit,
    sbuf_alloc: Allocator,
    psum_alloc: Allocator,
    pub(crate) allocs: Vec<Allocation>,
    histories: Vec<History>,
    /// Accesses of freed on-chip memory (SBUF, PSUM), with `true` for writes.
    graveyard: [Vec<(Access, bool)>; 2],
    pub(crate) timeline: Timeline,
    clocks: Clocks,
    stream_seq: Vec<u32>,
    stream_last: Vec<Option<u32>>,
    pub(crate) records: Vec<InstrRecord>,
    races: Vec<Race>,
    pending: IssueOptions,
    pub(crate) bytes: ByteCounts,
}

impl Simulator {
    /// A fresh core with empty memories.
    pub fn new(cfg: NeuronConfig, mode: Mode) -> Self {
        let functional = mode == Mode::Functional;
        let psum_bytes = cfg.psum_bytes_per_partition();
        let streams = 4 + cfg.dma_queues.max(1);
        Simulator {
            sbuf: OnChip::new(cfg.partitions, cfg.sbuf_bytes_per_partition, functional),
            psum: OnChip::new(cfg.partitions, psum_bytes, functional),
            psum_init: PsumInit::new(cfg.partitions, psum_bytes),
            sbuf_alloc: Allocator::new(cfg.sbuf_bytes_per_partition, cfg.sbuf_alignment),
            psum_alloc: Allocator::new(psum_bytes, cfg.psum_bank_bytes),
            allocs: Vec::new(),
            histories: Vec::new(),
            graveyard: [Vec::new(), Vec::new()],
            timeline: Timeline::new(&cfg),
            clocks: Clocks::new(streams),
            stream_seq: vec![0; streams],
            stream_last: vec![None; streams],
            records: Vec::new(),
            races: Vec::new(),
            pending: IssueOptions::default(),
            bytes: ByteCounts::default(),
            id: NEXT_SIM_ID.fetch_add(1, Ordering::Relaxed),
            cfg,
            mode,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NeuronConfig {
        &self.cfg
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Sets options for the next successfully issued instruction.
    pub fn next(&mut self, options: IssueOptions) {
        self.pending = options;
    }

    /// Races found so far.
    pub fn races(&self) -> &[Race] {
        &self.races
    }

    /// Every issued instruction, in program order.
    pub fn records(&self) -> &[InstrRecord] {
        &self.records
    }

    pub(crate) fn functional(&self) -> bool {
        self.mode == Mode::Functional
    }

    // ---------------------------------------------------------------- allocation

    /// A zero-filled `[rows, cols]` tensor in HBM.
    pub fn hbm_tensor(&mut self, rows: usize, cols: usize, dtype: DType) -> Result<HbmTensor> {
        let len = rows
            .checked_mul(cols)
            .and_then(|n| n.checked_mul(dtype.size_in_bytes()))
            .ok_or_else(|| SimError::HostData {
                what: "hbm_tensor",
                detail: format!("[{rows}, {cols}] overflows the address space"),
            })?;
        let mut data = Vec::new();
        if self.functional() {
            // The host backs simulated HBM: a request it cannot satisfy is an error of
            // this call, not an abort of the process.
            data.try_reserve_exact(len)
                .map_err(|_| SimError::OutOfMemory {
                    memory: "HBM (host backing store)",
                    requested: len,
                    available: 0,
                    capacity: 0,
                })?;
            data.resize(len, 0u8);
        }
        let alloc = self.push_alloc(Allocation {
            mem: MemKind::Hbm,
            offset: 0,
            len,
            live: true,
            data,
        });
        Ok(HbmTensor {
            alloc,
            sim: self.id,
            rows,
            cols,
            dtype,
        })
    }

    /// A `[rows, cols]` HBM tensor holding `values` rounded to `dtype` (round to nearest
    /// even). In timing-only mode the values are not stored.
    pub fn hbm_from_f32(
        &mut self,
        rows: usize,
        cols: usize,
        dtype: DType,
        values: &[f32],
    ) -> Result<HbmTensor> {
        if rows.checked_mul(cols) != Some(values.len()) {
            return Err(SimError::HostData {
                what: "hbm_from_f32",
                detail: format!("{} values for a [{rows}, {cols}] tensor", values.len()),
            });
        }
        let t = self.hbm_tensor(rows, cols, dtype)?;
        if self.functional() {
            numerics::store_run(dtype, &mut self.allocs[t.alloc as usize].data, values);
        }
        Ok(t)
    }

    /// A `[rows, cols]` HBM tensor holding raw little-endian elements of `dtype` (what a
    /// host-to-device copy writes). In timing-only mode the bytes are not stored.
    pub fn hbm_from_bytes(
        &mut self,
        rows: usize,
        cols: usize,
        dtype: DType,
        bytes: &[u8],
    ) -> Result<HbmTensor> {
        let t = self.hbm_tensor(rows, cols, dtype)?;
        if self.functional() {
            let data = &mut self.allocs[t.alloc as usize].data;
            if data.len() != bytes.len() {
                return Err(SimError::HostData {
                    what: "hbm_from_bytes",
                    detail: format!(
                        "{} bytes for a [{rows}, {cols}] {dtype} tensor of {} bytes",
                        bytes.len(),
                        data.len()
                    ),
                });
            }
            data.copy_from_slice(bytes);
        }
        Ok(t)
    }

    /// The raw little-endian bytes of an HBM tensor (functional mode only).
    pub fn hbm_bytes(&self, t: &HbmTensor) -> Result<&[u8]> {
        if !self.functional() {
            return Err(SimError::HostData {
                what: "hbm_bytes",
                detail: "a timing-only simulator holds no data".to_string(),
            });
        }
        self.check_hbm("hbm_bytes", "tensor", t)?;
        Ok(&self.allocs[t.alloc as usize].data)
    }

    /// The values of an HBM tensor, row-major (functional mode only).
    pub fn hbm_to_f32(&self, t: &HbmTensor) -> Result<Vec<f32>> {
        if !self.functional() {
            return Err(SimError::HostData {
                what: "hbm_to_f32",
                detail: "a timing-only simulator holds no data".to_string(),
            });
        }
        self.check_hbm("hbm_to_f32", "tensor", t)?;
        let mut out = vec![0f32; t.len()];
        numerics::load_run(t.dtype, &self.allocs[t.alloc as usize].data, &mut out);
        Ok(out)
    }

    /// Allocates an SBUF tile of `[partitions, free]` elements, poisoned with NaN.
    pub fn sbuf(&mut self, partitions: usize, free: usize, dtype: DType) -> Result<Tile> {
        self.alloc_onchip(MemKind::Sbuf, partitions, free, dtype)
    }

    /// Allocates a PSUM tile (whole banks), poisoned with NaN and marked unwritten.
    pub fn psum(&mut self, partitions: usize, free: usize, dtype: DType) -> Result<Tile> {
        self.alloc_onchip(MemKind::Psum, partitions, free, dtype)
    }

    fn alloc_onchip(
        &mut self,
        mem: MemKind,
        parts: usize,
        free: usize,
        dtype: DType,
    ) -> Result<Tile> {
        let instr = if mem == MemKind::Sbuf {
            "sbuf allocation"
        } else {
            "psum allocation"
        };
        if parts > self.cfg.partitions {
            return Err(SimError::PartitionLimit {
                instr,
                operand: "tile",
                value: parts,
                limit: self.cfg.partitions,
            });
        }
        if parts == 0 || free == 0 {
            return Err(SimError::HostData {
                what: instr,
                detail: "a tile needs at least one element".to_string(),
            });
        }
        let bytes = free.saturating_mul(dtype.size_in_bytes());
        let alloc = if mem == MemKind::Sbuf {
            &mut self.sbuf_alloc
        } else {
            &mut self.psum_alloc
        };
        let (offset, len) = alloc.alloc(bytes).ok_or(SimError::OutOfMemory {
            memory: mem.name(),
            requested: alloc.rounded(bytes),
            available: alloc.largest_free(),
            capacity: alloc.capacity(),
        })?;
        let id = self.push_alloc(Allocation {
            mem,
            offset,
            len,
            live: true,
            data: Vec::new(),
        });
        // Inherit the accesses of freed memory this allocation reuses.
        let g = &mut self.graveyard[(mem == MemKind::Psum) as usize];
        let region = Footprint {
            mem,
            alloc: id,
            rows: (0, self.cfg.partitions),
            cols: (offset, offset + len),
            pitch: ONCHIP,
            abs: (0, 0),
            bytes: 0,
        };
        let mut kept = Vec::with_capacity(g.len());
        for (a, is_write) in g.drain(..) {
            let mut inherited = a;
            inherited.fp.alloc = id;
            if region.overlaps(&inherited.fp) {
                let h = &mut self.histories[id as usize];
                if is_write {
                    h.writes.push(inherited)
                } else {
                    h.reads.push(inherited)
                }
                if !region.covers(&inherited.fp) {
                    kept.push((a, is_write));
                }
            } else {
                kept.push((a, is_write));
            }
        }
        *g = kept;
        let store = if mem == MemKind::Sbuf {
            &mut self.sbuf
        } else {
            &mut self.psum
        };
        store.fill(0..parts, offset, bytes, numerics::poison_bytes(dtype));
        if mem == MemKind::Psum {
            self.psum_init
                .set(0..self.cfg.partitions, offset, offset + len, false);
        }
        Ok(Tile {
            mem,
            alloc: id,
            sim: self.id,
            part_start: 0,
            parts,
            offset,
            free: [[0, 1], [1, free]],
            dtype,
        })
    }

    fn push_alloc(&mut self, a: Allocation) -> u32 {
        self.allocs.push(a);
        self.histories.push(History::default());
        (self.allocs.len() - 1) as u32
    }

    /// Frees the allocation a tile belongs to. Later allocations of the same bytes wait
    /// for the freed tile's pending readers and writers.
    pub fn free(&mut self, tile: &Tile) -> Result<()> {
        self.check_tile("free", "tile", tile)?;
        let a = &mut self.allocs[tile.alloc as usize];
        a.live = false;
        let (offset, len, mem) = (a.offset, a.len, a.mem);
        if mem == MemKind::Sbuf {
            self.sbuf_alloc.release(offset, len)
        } else {
            self.psum_alloc.release(offset, len)
        }
        let h = std::mem::take(&mut self.histories[tile.alloc as usize]);
        let g = &mut self.graveyard[(mem == MemKind::Psum) as usize];
        g.extend(h.writes.into_iter().map(|a| (a, true)));
        g.extend(h.reads.into_iter().map(|a| (a, false)));
        Ok(())
    }

    // ---------------------------------------------------------------- checks

    pub(crate) fn check_tile(
        &self,
        instr: &'static str,
        operand: &'static str,
        t: &Tile,
    ) -> Result<()> {
        let live = self
            .allocs
            .get(t.alloc as usize)
            .is_some_and(|a| a.live && a.mem == t.mem);
        if t.sim != self.id {
            return Err(SimError::StaleHandle {
                instr,
                operand,
                what: "a tile of another simulator",
            });
        }
        if !live {
            return Err(SimError::StaleHandle {
                instr,
                operand,
                what: "a freed tile",
            });
        }
        Ok(())
    }

    pub(crate) fn check_hbm(
        &self,
        instr: &'static str,
        operand: &'static str,
        t: &HbmTensor,
    ) -> Result<()> {
        if t.sim != self.id
            || self
                .allocs
                .get(t.alloc as usize)
                .is_none_or(|a| a.mem != MemKind::Hbm)
        {
            return Err(SimError::StaleHandle {
                instr,
                operand,
                what: "an HBM tensor of another simulator",
            });
        }
        Ok(())
    }

    /// Partition rules for an engine operand: within the array, and v2's start alignment.
    pub(crate) fn check_partitions(
        &self,
        instr: &'static str,
        operand: &'static str,
        t: &Tile,
    ) -> Result<()> {
        self.check_tile(instr, operand, t)?;
        if t.parts > self.cfg.partitions {
            return Err(SimError::PartitionLimit {
                instr,
                operand,
                value: t.parts,
                limit: self.cfg.partitions,
            });
        }
        if self.cfg.generation == Generation::V2 {
            let (s, n) = (t.part_start, t.parts);
            let (ok, rule) = if n > 64 {
                (
                    s == 0,
                    "a tile of more than 64 partitions must start at partition 0",
                )
            } else if n > 32 {
                (
                    s == 0 || s == 64,
                    "a tile of 33-64 partitions must start at partition 0 or 64",
                )
            } else {
                (
                    s % 32 == 0,
                    "a tile of at most 32 partitions must start at partition 0, 32, 64 or 96",
                )
            };
            if !ok {
                return Err(SimError::PartitionAlignment {
                    instr,
                    operand,
                    start: s,
                    size: n,
                    rule,
                });
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- footprints and data

    pub(crate) fn tile_fp(&self, t: &Tile) -> Footprint {
        let (lo, hi) = t.byte_range();
        Footprint {
            mem: t.mem,
            alloc: t.alloc,
            rows: (t.part_start, t.part_start + t.parts),
            cols: (lo, hi),
            pitch: ONCHIP,
            abs: (0, 0),
            bytes: t.parts * t.free_size() * t.dtype.size_in_bytes(),
        }
    }

    pub(crate) fn ap_fp(&self, ap: &AccessPattern) -> Footprint {
        let esz = ap.tensor.dtype.size_in_bytes();
        let start = ap.offset * esz;
        let [[os, on], [is, isz]] = ap.free;
        let span = (os * (on - 1) + is * (isz - 1) + 1) * esz;
        let [pstride, psize] = ap.partition;
        let pitch = ap.tensor.cols * esz;
        let abs = (start, start + (psize - 1) * pstride * esz + span);
        let bytes = psize * ap.free_size() * esz;
        let col0 = if pitch > 0 { start % pitch } else { 0 };
        if pitch > 0 && (psize == 1 || pstride * esz == pitch) && col0 + span <= pitch {
            let row0 = start / pitch;
            Footprint {
                mem: MemKind::Hbm,
                alloc: ap.tensor.alloc,
                rows: (row0, row0 + psize),
                cols: (col0, col0 + span),
                pitch,
                abs,
                bytes,
            }
        } else {
            Footprint {
                mem: MemKind::Hbm,
                alloc: ap.tensor.alloc,
                rows: (0, 1),
                cols: abs,
                pitch: 0,
                abs,
                bytes,
            }
        }
    }

    pub(crate) fn store_of(&self, mem: MemKind) -> &OnChip {
        if mem == MemKind::Sbuf {
            &self.sbuf
        } else {
            &self.psum
        }
    }

    pub(crate) fn store_of_mut(&mut self, mem: MemKind) -> &mut OnChip {
        if mem == MemKind::Sbuf {
            &mut self.sbuf
        } else {
            &mut self.psum
        }
    }

    /// Reads a tile as f32, `[partitions][free]` row-major (functional mode).
    pub(crate) fn read_f32(&self, t: &Tile) -> Vec<f32> {
        let n = t.free_size();
        let mut out = vec![0f32; t.parts * n];
        let store = self.store_of(t.mem);
        let esz = t.dtype.size_in_bytes();
        for (i, row) in out.chunks_exact_mut(n).enumerate() {
            let p = t.part_start + i;
            if t.is_contiguous() {
                numerics::load_run(t.dtype, store.row(p, t.offset, n * esz), row);
            } else {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = numerics::load(t.dtype, store.row(p, t.elem_offset(j), esz));
                }
            }
        }
        out
    }

    /// Writes `[partitions][free]` f32 values into a tile, rounding to its dtype.
    pub(crate) fn write_f32(&mut self, t: &Tile, values: &[f32]) {
        let n = t.free_size();
        let esz = t.dtype.size_in_bytes();
        let contiguous = t.is_contiguous();
        let store = self.store_of_mut(t.mem);
        for (i, row) in values.chunks_exact(n).enumerate() {
            let p = t.part_start + i;
            if contiguous {
                numerics::store_run(t.dtype, store.row_mut(p, t.offset, n * esz), row);
            } else {
                for (j, v) in row.iter().enumerate() {
                    numerics::store(t.dtype, store.row_mut(p, t.elem_offset(j), esz), *v);
                }
            }
        }
    }

    /// Reads a tile's values (functional mode): `[partitions][free]` row-major. Reads
    /// of memory no instruction has written show the allocation's NaN poison.
    pub fn read_tile(&self, t: &Tile) -> Result<Vec<f32>> {
        self.check_tile("read_tile", "tile", t)?;
        if !self.functional() {
            return Err(SimError::HostData {
                what: "read_tile",
                detail: "a timing-only simulator holds no data".to_string(),
            });
        }
        Ok(self.read_f32(t))
    }

    // ---------------------------------------------------------------- issue

    /// Records an instruction: derives its dependencies, checks races, places it in time.
    pub(crate) fn issue(
        &mut self,
        opcode: &'static str,
        engine: Option<Engine>,
        reads: &[Footprint],
        writes: &[Footprint],
        timing: Timing,
        flops: f64,
    ) -> InstrId {
        let opts = std::mem::take(&mut self.pending);
        let stream = match engine {
            Some(e) => Stream::Engine(e),
            None => {
                let store = writes.iter().any(|w| w.mem == MemKind::Hbm);
                Stream::Dma(self.timeline.pick_queue(opts.dma_queue, store) as u16)
            }
        };
        let s = stream.index();
        let id = self.records.len() as u32;
        let mut vc = vec![0u32; self.clocks.streams];
        if let Some(prev) = self.stream_last[s] {
            self.clocks.join_into(&mut vc, prev);
        }
        let dep_latency = match engine {
            Some(e) => self.cfg.dependency_latency_cycles as f64 / e.clock_ghz(&self.cfg),
            None => 0.0,
        };
        let mut ready: f64 = 0.0;
        let mut conflicts: Vec<(Access, Hazard)> = Vec::new();
        {
            let mut dep = |a: &Access, hz: Hazard, vc: &mut Vec<u32>, ready: &mut f64| {
                if opts.no_sync {
                    conflicts.push((*a, hz));
                } else {
                    self.clocks.join_into(vc, a.instr);
                    // On one engine, program order already orders the two (an engine's
                    // pipeline forwards its own results, e.g. matmuls accumulating into
                    // one PSUM bank back to back); across streams the consumer waits
                    // for the result plus a semaphore latency.
                    if a.stream != stream {
                        *ready = ready.max(a.ready + dep_latency);
                    } else if matches!(stream, Stream::Dma(_)) {
                        *ready = ready.max(a.ready);
                    }
                }
            };
            for r in reads {
                for w in &self.histories[r.alloc as usize].writes {
                    if w.fp.overlaps(r) {
                        dep(w, Hazard::ReadAfterWrite, &mut vc, &mut ready);
                    }
                }
            }
            for wr in writes {
                let h = &self.histories[wr.alloc as usize];
                for w in &h.writes {
                    if w.fp.overlaps(wr) {
                        dep(w, Hazard::WriteAfterWrite, &mut vc, &mut ready);
                    }
                }
                for r in &h.reads {
                    if r.fp.overlaps(wr) {
                        dep(r, Hazard::WriteAfterRead, &mut vc, &mut ready);
                    }
                }
            }
        }
        for a in &opts.after {
            if let Some(rec) = self.records.get(a.0 as usize) {
                self.clocks.join_into(&mut vc, a.0);
                ready = ready.max(
                    rec.ready_ns
                        + if rec.stream == stream {
                            0.0
                        } else {
                            dep_latency
                        },
                );
            }
        }
        self.stream_seq[s] += 1;
        let seq = self.stream_seq[s];
        vc[s] = seq;
        for (a, hazard) in conflicts {
            if a.stream != stream && vc[a.stream.index()] < a.seq {
                self.races.push(Race {
                    hazard,
                    first: InstrId(a.instr),
                    first_opcode: self.records[a.instr as usize].opcode,
                    first_stream: a.stream,
                    second: InstrId(id),
                    second_opcode: opcode,
                    second_stream: stream,
                    memory: a.fp.mem,
                });
            }
        }
        let (start, end, out_ready) = match timing {
            Timing::Compute {
                engine,
                cycles,
                ports,
            } => {
                let (s0, e0) = self
                    .timeline
                    .compute(&self.cfg, engine, ready, cycles, ports);
                (s0, e0, e0)
            }
            Timing::Matmul {
                key,
                m,
                cycles,
                latency_ns,
            } => {
                let (s0, e0) = self.timeline.matmul(&self.cfg, ready, key, m, cycles);
                (s0, e0, e0 + latency_ns)
            }
            Timing::TensorOther { cycles, latency_ns } => {
                let (s0, e0) = self.timeline.tensor_other(&self.cfg, ready, cycles);
                (s0, e0, e0 + latency_ns)
            }
            Timing::Dma {
                parts,
                bytes_per_partition,
                contiguous,
                hbm,
            } => {
                let q = match stream {
                    Stream::Dma(q) => q as usize,
                    Stream::Engine(_) => 0,
                };
                let (s0, e0) = self.timeline.dma(
                    &self.cfg,
                    q,
                    ready,
                    parts,
                    bytes_per_partition,
                    contiguous,
                    hbm,
                );
                (s0, e0, e0)
            }
        };
        // Update histories: retire covered, ordered accesses; record this one.
        let ordered = |a: &Access, vc: &[u32]| a.stream == stream || vc[a.stream.index()] >= a.seq;
        for wr in writes {
            let h = &mut self.histories[wr.alloc as usize];
            h.writes.retain(|a| !(wr.covers(&a.fp) && ordered(a, &vc)));
            h.reads.retain(|a| !(wr.covers(&a.fp) && ordered(a, &vc)));
            h.writes.push(Access {
                fp: *wr,
                stream,
                seq,
                instr: id,
                ready: out_ready,
            });
        }
        for r in reads {
            if !writes.iter().any(|w| w.covers(r)) {
                self.histories[r.alloc as usize].reads.push(Access {
                    fp: *r,
                    stream,
                    seq,
                    instr: id,
                    ready: end,
                });
            }
        }
        for fp in reads {
            self.count_bytes(fp, false);
        }
        for fp in writes {
            self.count_bytes(fp, true);
        }
        self.clocks.flat.extend_from_slice(&vc);
        self.stream_last[s] = Some(id);
        self.records.push(InstrRecord {
            opcode,
            stream,
            start_ns: start,
            end_ns: end,
            ready_ns: out_ready,
            flops,
        });
        InstrId(id)
    }

    fn count_bytes(&mut self, fp: &Footprint, write: bool) {
        let b = fp.bytes as u64;
        let c = &mut self.bytes;
        let slot = match (fp.mem, write) {
            (MemKind::Hbm, false) => &mut c.hbm_read,
            (MemKind::Hbm, true) => &mut c.hbm_write,
            (MemKind::Sbuf, false) => &mut c.sbuf_read,
            (MemKind::Sbuf, true) => &mut c.sbuf_write,
            (MemKind::Psum, false) => &mut c.psum_read,
            (MemKind::Psum, true) => &mut c.psum_write,
        };
        *slot += b;
    }
}
