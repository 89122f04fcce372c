//! GPU time of ops, from timestamp queries (`TIMESTAMP_QUERY`).
//!
//! Wall-clock time around an op on a GPU includes the submission, the driver's launch
//! latency and the wait for the fence: tens of microseconds that swamp a 100 µs
//! reduction. With timing on, every op's recording (one compute pass holding all of its
//! dispatches) writes a timestamp at the start and the end of its pass; the two are
//! resolved into a small buffer in the same submission, and [`Timer::take`] reads them
//! back later, so timing adds no CPU round trip between ops. An op's GPU time is its
//! end timestamp minus its start one, times the queue's timestamp period; several
//! recordings (an op that submits more than once) add up.
//!
//! Timing is off by default (a query set and two small buffers per op are not free) and
//! on only through [`crate::WgpuBackend::set_gpu_timing`]; an adapter without
//! `TIMESTAMP_QUERY` never times anything.

use crate::device::Gpu;
use std::sync::Mutex;
use std::time::Duration;
use xkern_core::{Error, Result};

/// Bytes of one recording's resolved timestamps: start and end, u64 each.
const STAMP_BYTES: u64 = 16;

/// Whether ops are timed, and the readbacks of those submitted but not yet read.
#[derive(Debug, Default)]
pub(crate) struct Timer {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    on: bool,
    pending: Vec<wgpu::Buffer>,
}

/// The queries of one recording.
pub(crate) struct Stamp {
    pub(crate) set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
}

impl Timer {
    /// Turns timing on or off; pending readbacks are dropped when it goes off.
    pub(crate) fn set(&self, on: bool) {
        if let Ok(mut s) = self.state.lock() {
            s.on = on;
            if !on {
                s.pending.clear();
            }
        }
    }

    /// The queries for a new recording when timing is on and the device has timestamps.
    pub(crate) fn stamp(&self, gpu: &Gpu) -> Option<Stamp> {
        let on = self.state.lock().map(|s| s.on).unwrap_or(false);
        if !on || !gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            return None;
        }
        let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("xkern-timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let buffer = |usage| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("xkern-timestamps"),
                size: STAMP_BYTES,
                usage,
                mapped_at_creation: false,
            })
        };
        Some(Stamp {
            set,
            resolve: buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC),
            readback: buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST),
        })
    }

    /// Records the resolve of `stamp` at the end of `encoder` (after its pass ended).
    pub(crate) fn resolve(encoder: &mut wgpu::CommandEncoder, stamp: &Stamp) {
        encoder.resolve_query_set(&stamp.set, 0..2, &stamp.resolve, 0);
        encoder.copy_buffer_to_buffer(&stamp.resolve, 0, &stamp.readback, 0, STAMP_BYTES);
    }

    /// Keeps `stamp`'s readback until [`Timer::take`] (its recording was submitted).
    pub(crate) fn submitted(&self, stamp: Stamp) {
        match self.state.lock() {
            Ok(mut s) if s.on => s.pending.push(stamp.readback),
            _ => {}
        }
    }

    /// Waits for the timed recordings submitted since the last call and sums their GPU
    /// time; `None` when none was timed.
    pub(crate) fn take(&self, gpu: &Gpu) -> Result<Option<Duration>> {
        let pending = match self.state.lock() {
            Ok(mut s) => std::mem::take(&mut s.pending),
            Err(_) => return Ok(None),
        };
        if pending.is_empty() {
            return Ok(None);
        }
        gpu.wait(None)?;
        let period = f64::from(gpu.queue.get_timestamp_period());
        let mut ns = 0.0;
        for buf in &pending {
            let bytes = gpu.map_read(buf, STAMP_BYTES)?;
            let t: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
            if let [start, end] = t[..] {
                ns += end.saturating_sub(start) as f64 * period;
            } else {
                return Err(Error::Backend {
                    backend: "wgpu",
                    message: "a timestamp readback had the wrong size".into(),
                });
            }
        }
        Ok(Some(Duration::from_secs_f64(ns * 1e-9)))
    }
}
