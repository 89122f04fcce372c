//! Peak figures for rooflines, measured once per machine.
//!
//! - FMA peak: every worker thread runs the FMA loop of `simd::fma_loop` (12 independent
//!   chains of the widest vector, throughput-bound) at the same time for about 40 ms; the
//!   best of three rounds of the aggregate FLOP rate is the peak.
//! - Memory bandwidth: all workers read a 256 MiB buffer (far beyond any cache here) with
//!   16 independent accumulators each; the best of five passes, in bytes read per second.
//!
//! Results are cached in a process-wide table and in a file under the user's cache
//! directory (`$XKERN_CACHE_DIR`, else `$XDG_CACHE_HOME/xkern`, else `~/.cache/xkern`),
//! keyed by CPU model, features and thread count, so the probe runs once per machine.
//! `XKERN_CPU_PROBE=off` disables it (the figures are then unknown); `XKERN_CPU_PROBE=fresh`
//! measures the bandwidth again once per process (not written to the file): `xkern-bench`
//! does so, so that its memory rooflines are those of the machine during its run (on a
//! shared machine the bandwidth moves by a third between hours). The FMA peak is the
//! chip's and stays the cached one (probed on a busy machine, it reads low).

use crate::simd;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Measured peaks of one (machine, thread count).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Peaks {
    /// f32 FMA peak, GFLOP/s.
    pub gflops_f32: f64,
    /// Read bandwidth, GB/s.
    pub bandwidth_gbs: f64,
}

const CACHE_FILE: &str = "cpu-probe-v1.txt";

fn cache_path() -> Option<PathBuf> {
    let dir = std::env::var_os("XKERN_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("xkern")))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("xkern"))
        })?;
    Some(dir.join(CACHE_FILE))
}

/// Reads `key\tgflops\tgbs` lines.
fn read_cache(key: &str) -> Option<Peaks> {
    let text = std::fs::read_to_string(cache_path()?).ok()?;
    text.lines().rev().find_map(|line| {
        let mut f = line.split('\t');
        if f.next()? != key {
            return None;
        }
        let gflops_f32 = f.next()?.parse().ok()?;
        let bandwidth_gbs = f.next()?.parse().ok()?;
        Some(Peaks {
            gflops_f32,
            bandwidth_gbs,
        })
    })
}

/// Appends a line to the cache file; failures only cost a re-probe next time.
fn write_cache(key: &str, p: Peaks) {
    use std::io::Write;
    let Some(path) = cache_path() else { return };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{key}\t{}\t{}", p.gflops_f32, p.bandwidth_gbs);
    }
}

/// Aggregate f32 FLOP rate of all workers of the current pool, GFLOP/s.
fn measure_fma() -> f64 {
    let threads = rayon::current_num_threads();
    // Calibrate one thread's iteration count to ~40 ms.
    let t0 = Instant::now();
    simd::fma_loop(200_000);
    let per_iter = t0.elapsed().as_secs_f64().max(1e-6) / 200_000.0;
    let iters = ((0.04 / per_iter) as u64).max(1000);
    (0..3)
        .map(|_| {
            let t = Instant::now();
            let total: f64 = (0..threads)
                .into_par_iter()
                .map(|_| simd::fma_loop(iters))
                .sum();
            total / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

/// Read bandwidth of all workers over a 256 MiB buffer, GB/s.
fn measure_bandwidth() -> f64 {
    let len = 64 << 20;
    // Backed as the backend's own large buffers are (huge pages where offered), so that
    // the roof is what a kernel streaming a tensor can reach.
    let mut buf: Vec<f32> = Vec::with_capacity(len);
    crate::storage::advise_huge(&buf);
    buf.resize(len, 1.0f32);
    let chunk = len / (rayon::current_num_threads() * 8).max(1);
    (0..5)
        .map(|_| {
            let t = Instant::now();
            let s: f32 = buf
                .par_chunks(chunk)
                .map(|c| {
                    let mut acc = [0.0f32; 16];
                    for v in c.chunks_exact(16) {
                        for (a, x) in acc.iter_mut().zip(v) {
                            *a += x;
                        }
                    }
                    acc.iter().sum::<f32>()
                })
                .sum();
            std::hint::black_box(s);
            (len * 4) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

/// What `XKERN_CPU_PROBE` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// No probe: the peaks are unknown.
    Off,
    /// The cached figures where the file has them, else a probe.
    Cached,
    /// The cached FMA peak, and the bandwidth measured again once per process.
    Fresh,
}

impl Mode {
    fn parse(v: Option<&str>) -> Mode {
        match v {
            Some("off" | "0") => Mode::Off,
            Some("fresh") => Mode::Fresh,
            _ => Mode::Cached,
        }
    }
}

/// The peaks for `key` (model, features, threads), measured on the current pool if no
/// cache has them; with `XKERN_CPU_PROBE=fresh` the bandwidth is measured again. `None`
/// when probing is disabled.
pub(crate) fn peaks(key: &str) -> Option<Peaks> {
    let mode = Mode::parse(std::env::var("XKERN_CPU_PROBE").ok().as_deref());
    if mode == Mode::Off {
        return None;
    }
    static TABLE: OnceLock<Mutex<HashMap<String, Peaks>>> = OnceLock::new();
    let table = TABLE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut table = table.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = table.get(key) {
        return Some(*p);
    }
    let p = match read_cache(key) {
        // This hour's bandwidth, for this process only: the FMA peak is the chip's (a
        // probe of it on a busy shared machine reads low), and the file keeps the first.
        Some(p) if mode == Mode::Fresh => Peaks {
            bandwidth_gbs: measure_bandwidth(),
            ..p
        },
        Some(p) => p,
        None => {
            let p = Peaks {
                gflops_f32: measure_fma(),
                bandwidth_gbs: measure_bandwidth(),
            };
            write_cache(key, p);
            p
        }
    };
    table.insert(key.to_string(), p);
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::Mode;

    #[test]
    fn probe_modes_parse() {
        assert_eq!(Mode::parse(None), Mode::Cached);
        assert_eq!(Mode::parse(Some("off")), Mode::Off);
        assert_eq!(Mode::parse(Some("0")), Mode::Off);
        assert_eq!(Mode::parse(Some("fresh")), Mode::Fresh);
        assert_eq!(Mode::parse(Some("on")), Mode::Cached);
    }
}
