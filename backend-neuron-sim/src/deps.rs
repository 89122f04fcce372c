//! Dependency tracking and race detection.
//!
//! Like NKI's compiler inserting semaphores, the simulator derives each instruction's
//! dependencies from the memory it reads and writes: read-after-write, write-after-read
//! and write-after-write on overlapping bytes. Each allocation (SBUF/PSUM tile buffer or
//! HBM tensor) keeps a history of accesses. A footprint is a rectangle: partitions ×
//! bytes within a partition on chip; rows × bytes within a row in HBM when the access
//! pattern walks whole rows of the tensor, else a conservative bounding byte interval.
//! A write that covers an older access and is ordered after it retires that access, so
//! histories stay short. When a buffer is freed its history moves to a per-memory
//! "graveyard" that a later allocation of the same bytes inherits: reuse of freed memory
//! waits for the old readers and writers, exactly the write-after-read hazard a
//! semaphore guards on hardware.
//!
//! Happens-before is tracked with vector clocks over the instruction streams (four
//! engines and the DMA queues): an instruction's clock joins its stream predecessor's and
//! its dependencies'. Two conflicting accesses on different streams whose clocks are not
//! ordered form a race; with automatic tracking that can only happen when the author opts
//! out for an instruction ([`crate::IssueOptions::no_sync`]).

// Simulator code: partition, engine and queue indices are below the fixed counts of
// the configuration, and byte ranges are checked against each allocation before use.
#![allow(clippy::indexing_slicing)]

use crate::engines::Stream;
use crate::memory::MemKind;

/// Sentinel pitch of on-chip footprints (rows are partitions).
pub(crate) const ONCHIP: usize = usize::MAX;

/// The bytes an operand touches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Footprint {
    pub(crate) mem: MemKind,
    pub(crate) alloc: u32,
    pub(crate) rows: (usize, usize),
    pub(crate) cols: (usize, usize),
    /// Row pitch in bytes ([`ONCHIP`] for partitions; 0: only `abs` is meaningful).
    pub(crate) pitch: usize,
    pub(crate) abs: (usize, usize),
    /// Bytes actually moved (for the profile's per-memory byte counts).
    pub(crate) bytes: usize,
}

fn ranges_overlap(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

fn range_covers(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 <= b.0 && b.1 <= a.1
}

impl Footprint {
    /// True when the two may touch a common byte.
    pub(crate) fn overlaps(&self, other: &Footprint) -> bool {
        if self.alloc != other.alloc {
            return false;
        }
        if self.pitch == other.pitch && self.pitch != 0 {
            ranges_overlap(self.rows, other.rows) && ranges_overlap(self.cols, other.cols)
        } else {
            ranges_overlap(self.abs, other.abs)
        }
    }

    /// True when every byte `other` may touch is written by `self` (conservative: false
    /// when unsure, which only keeps an access longer).
    pub(crate) fn covers(&self, other: &Footprint) -> bool {
        self.pitch == other.pitch
            && self.pitch != 0
            && range_covers(self.rows, other.rows)
            && range_covers(self.cols, other.cols)
    }
}

/// One recorded access.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Access {
    pub(crate) fp: Footprint,
    pub(crate) stream: Stream,
    pub(crate) seq: u32,
    pub(crate) instr: u32,
    /// When the access's results are readable (writes) or its reads are done (reads).
    pub(crate) ready: f64,
}

/// The live accesses of one allocation.
#[derive(Clone, Debug, Default)]
pub(crate) struct History {
    pub(crate) writes: Vec<Access>,
    pub(crate) reads: Vec<Access>,
}

/// The kind of an ordering hazard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hazard {
    /// A read of data another engine may not have finished writing.
    ReadAfterWrite,
    /// A write over data another engine may still be reading.
    WriteAfterRead,
    /// Two writes whose order is not fixed.
    WriteAfterWrite,
}

/// Two instructions on different streams touching overlapping memory with no
/// dependency path between them: on hardware they could run in either order.
#[derive(Clone, Debug, PartialEq)]
pub struct Race {
    /// The hazard.
    pub hazard: Hazard,
    /// The earlier instruction (program order).
    pub first: crate::InstrId,
    /// Its opcode.
    pub first_opcode: &'static str,
    /// Its stream.
    pub first_stream: Stream,
    /// The later instruction.
    pub second: crate::InstrId,
    /// Its opcode.
    pub second_opcode: &'static str,
    /// Its stream.
    pub second_stream: Stream,
    /// The memory both touch.
    pub memory: MemKind,
}

impl std::fmt::Display for Race {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} race in {}: #{} {} on {} and #{} {} on {} touch overlapping memory with no dependency between them",
            self.hazard,
            self.memory.name(),
            self.first.0,
            self.first_opcode,
            self.first_stream,
            self.second.0,
            self.second_opcode,
            self.second_stream
        )
    }
}

/// Vector clocks of all instructions, flat: `streams` entries per instruction.
#[derive(Clone, Debug)]
pub(crate) struct Clocks {
    pub(crate) streams: usize,
    pub(crate) flat: Vec<u32>,
}

impl Clocks {
    pub(crate) fn new(streams: usize) -> Self {
        Clocks {
            streams,
            flat: Vec::new(),
        }
    }

    pub(crate) fn of(&self, instr: u32) -> &[u32] {
        let s = instr as usize * self.streams;
        &self.flat[s..s + self.streams]
    }

    /// Joins instruction `instr`'s clock into `acc`.
    pub(crate) fn join_into(&self, acc: &mut [u32], instr: u32) {
        for (a, b) in acc.iter_mut().zip(self.of(instr)) {
            *a = (*a).max(*b);
        }
    }
}
