//! One result row per (case, backend): what the table prints and `--json` writes (one JSON
//! object per line; fields documented in benches/README.md).

use crate::measure::Stats;
use serde::Serialize;
use xkern::DeviceInfo;

/// A peer's time on the same case, measured interleaved with xkern's.
#[derive(Clone, Debug, Serialize)]
pub struct PeerResult {
    /// The peer.
    pub name: String,
    /// Its median time.
    pub median_s: f64,
    /// Its median over xkern's (> 1: xkern is faster).
    pub ratio: f64,
}

/// One measured case on one backend.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Case id.
    pub id: String,
    /// The device's short name (`cpu`, `wgpu:llvmpipe`, `neuron-sim:trn2`).
    pub backend: String,
    /// The device (CPU model, adapter, simulated core).
    pub device: String,
    /// Op of the case.
    pub op: String,
    /// Element type.
    pub dtype: String,
    /// Median wall time, seconds.
    pub median_s: f64,
    /// Fastest repetition.
    pub min_s: f64,
    /// Slowest repetition.
    pub max_s: f64,
    /// Timed repetitions.
    pub reps: usize,
    /// Useful FLOP per second, in GFLOP/s.
    pub gflops: Option<f64>,
    /// Minimum bytes moved per second, in GB/s.
    pub gbps: Option<f64>,
    /// Roofline time over measured time, percent (None when the device has no figures).
    pub roof_pct: Option<f64>,
    /// Which roof bounds the case: `compute` or `memory`.
    pub roof_bound: Option<String>,
    /// Relative Frobenius error against the f64 reference.
    pub rel_err: f64,
    /// Whether the dtype's tolerance holds.
    pub within_tolerance: bool,
    /// Why the tolerance fails, when it does.
    pub error_detail: Option<String>,
    /// Which elements were compared.
    pub compared: String,
    /// The fastest peer, if any ran.
    pub peer: Option<String>,
    /// That peer's median over xkern's.
    pub peer_ratio: Option<f64>,
    /// Every peer measured.
    pub peers: Vec<PeerResult>,
    /// Simulated device time (neuron-sim rows).
    pub sim_time_s: Option<f64>,
    /// Median GPU time from timestamp queries (wgpu rows on adapters with them):
    /// throughput and roof % are then quoted at this time.
    pub gpu_time_s: Option<f64>,
    /// Simulated model FLOP utilisation (neuron-sim rows).
    pub mfu: Option<f64>,
    /// Simulated busiest engine (neuron-sim rows).
    pub busiest_engine: Option<String>,
    /// False when the output was not checked (timing-only simulator rows: no data).
    pub checked: bool,
    /// The simulated engine timeline (SVG) of the case, for the HTML report.
    #[serde(skip)]
    pub timeline_svg: Option<String>,
    /// FLOP of one run.
    pub flops: f64,
    /// Bytes of one run.
    pub bytes: f64,
}

impl Row {
    /// Builds a row from the measurements and the device's figures.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        case: &crate::cases::Case,
        info: &DeviceInfo,
        stats: Stats,
        prepared: &crate::workload::Prepared,
        accuracy: crate::workload::Accuracy,
        peers: Vec<PeerResult>,
    ) -> Row {
        let best = peers
            .iter()
            .min_by(|a, b| a.median_s.total_cmp(&b.median_s));
        let mut row = Row {
            id: case.id.clone(),
            backend: info.backend.clone(),
            device: info.device.clone(),
            op: case.workload.op().to_string(),
            dtype: case.dtype.clone(),
            median_s: stats.median_s,
            min_s: stats.min_s,
            max_s: stats.max_s,
            reps: stats.reps,
            gflops: None,
            gbps: None,
            roof_pct: None,
            roof_bound: None,
            rel_err: accuracy.rel_err,
            within_tolerance: accuracy.ok,
            error_detail: accuracy.detail,
            compared: accuracy.compared,
            peer: best.map(|p| p.name.clone()),
            peer_ratio: best.map(|p| p.ratio),
            peers,
            sim_time_s: None,
            gpu_time_s: None,
            mfu: None,
            busiest_engine: None,
            checked: true,
            timeline_svg: None,
            flops: prepared.flops,
            bytes: prepared.bytes,
        };
        row.quote(stats.median_s, info, prepared.low_precision);
        row
    }

    /// Throughput and roof % at time `t` (seconds per run): the roof is the device's FMA
    /// peak (16-bit where `low` and known, the f16 rate for f16 where the device gives
    /// one) or its bandwidth, whichever binds.
    fn quote(&mut self, t: f64, info: &DeviceInfo, low: bool) {
        let t = t.max(1e-15);
        let peak = match (low, self.dtype.as_str()) {
            (false, _) => info.peak_gflops_f32,
            (true, "f16") => info
                .peak_gflops_f16
                .or(info.peak_gflops_16)
                .or(info.peak_gflops_f32),
            (true, _) => info.peak_gflops_16.or(info.peak_gflops_f32),
        };
        let compute_s = peak.map(|p| self.flops / (p * 1e9));
        let memory_s = info.bandwidth_gbs.map(|b| self.bytes / (b * 1e9));
        let (roof_s, bound) = match (compute_s, memory_s) {
            (Some(c), Some(m)) if c >= m => (Some(c), Some("compute")),
            (Some(_), Some(m)) => (Some(m), Some("memory")),
            (Some(c), None) => (Some(c), Some("compute")),
            (None, Some(m)) => (Some(m), Some("memory")),
            (None, None) => (None, None),
        };
        self.gflops = Some(self.flops / t / 1e9);
        self.gbps = Some(self.bytes / t / 1e9);
        self.roof_pct = roof_s.map(|r| 100.0 * r / t);
        self.roof_bound = bound.map(str::to_string);
    }

    /// Records the median GPU time of a wgpu row (timestamp queries) and quotes
    /// throughput and roof % at it; the wall time stays in `median_s`.
    pub fn apply_gpu_time(&mut self, t: f64, info: &DeviceInfo, low: bool) {
        self.gpu_time_s = Some(t);
        self.quote(t, info, low);
    }

    /// Fills the simulated figures of a neuron-sim row: simulated time, MFU, the busiest
    /// engine; throughput and roof % are then quoted at the simulated time (the host
    /// time of the simulation stays in `median_s`).
    pub fn apply_profile(&mut self, p: &xkern::NeuronProfile, info: &DeviceInfo, low: bool) {
        #[cfg(feature = "neuron-sim")]
        {
            let t = (p.latency_ns * 1e-9).max(1e-15);
            self.sim_time_s = Some(t);
            self.mfu = Some(if low {
                p.mfu
            } else {
                // MFU against the fp32 rate for fp32 work.
                let peak32 = info.peak_gflops_f32.unwrap_or(1.0) * 1e9;
                p.flops / t / peak32
            });
            let mut busiest = ("dma".to_string(), p.dma_active_ns);
            for e in &p.engines {
                if e.busy_ns > busiest.1 {
                    busiest = (format!("{:?}", e.stream).to_lowercase(), e.busy_ns);
                }
            }
            self.busiest_engine = Some(format!(
                "{} {:.0}%",
                busiest
                    .0
                    .trim_start_matches("engine(")
                    .trim_end_matches(')'),
                100.0 * busiest.1 / p.latency_ns.max(1e-9)
            ));
            // The simulator knows both peaks; `quote` falls back to f32 only where the
            // 16-bit one is unknown.
            self.quote(t, info, low);
        }
        #[cfg(not(feature = "neuron-sim"))]
        {
            let _ = (p, info, low);
        }
    }

    /// Whether throughput is best read in GB/s.
    pub fn bandwidth_bound(&self) -> bool {
        self.op == "reduce"
    }
}

fn ms(s: f64) -> String {
    if s >= 0.1 {
        format!("{:.1}", s * 1e3)
    } else {
        format!("{:.3}", s * 1e3)
    }
}

/// The text table.
pub fn table(rows: &[Row]) -> String {
    let peer_names: Vec<String> = {
        let mut v: Vec<String> = rows
            .iter()
            .flat_map(|r| r.peers.iter().map(|p| p.name.clone()))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let mut header = vec![
        "case".to_string(),
        "backend".into(),
        "dtype".into(),
        "median ms".into(),
        "min–max ms".into(),
        "reps".into(),
        "throughput".into(),
        "roof %".into(),
        "rel err".into(),
    ];
    let gpu = rows.iter().any(|r| r.gpu_time_s.is_some());
    if gpu {
        header.push("gpu ms".into());
    }
    let sim = rows.iter().any(|r| r.sim_time_s.is_some());
    if sim {
        header.extend(["sim ms".into(), "MFU".into(), "busiest".into()]);
    }
    header.extend(peer_names.iter().map(|p| format!("vs {p}")));
    header.push("".into());
    let mut lines = vec![header];
    for r in rows {
        let throughput = if r.bandwidth_bound() {
            format!("{:.1} GB/s", r.gbps.unwrap_or(0.0))
        } else {
            format!("{:.1} GFLOP/s", r.gflops.unwrap_or(0.0))
        };
        let mut line = vec![
            r.id.clone(),
            r.backend.clone(),
            r.dtype.clone(),
            ms(r.median_s),
            format!("{}–{}", ms(r.min_s), ms(r.max_s)),
            r.reps.to_string(),
            throughput,
            r.roof_pct.map_or("–".into(), |p| {
                format!(
                    "{p:.0}% {}",
                    if r.roof_bound.as_deref() == Some("memory") {
                        "mem"
                    } else {
                        "fma"
                    }
                )
            }),
            if r.checked {
                format!("{:.1e}", r.rel_err)
            } else {
                "–".into()
            },
        ];
        if gpu {
            line.push(r.gpu_time_s.map_or("–".into(), ms));
        }
        if sim {
            line.push(r.sim_time_s.map_or("–".into(), ms));
            line.push(r.mfu.map_or("–".into(), |m| format!("{:.0}%", 100.0 * m)));
            line.push(r.busiest_engine.clone().unwrap_or_else(|| "–".into()));
        }
        for name in &peer_names {
            line.push(
                r.peers
                    .iter()
                    .find(|p| &p.name == name)
                    .map_or("–".into(), |p| format!("{:.2}×", p.ratio)),
            );
        }
        line.push(if !r.checked {
            "NOT CHECKED (timing-only)".into()
        } else if r.within_tolerance {
            String::new()
        } else {
            "TOLERANCE EXCEEDED".into()
        });
        lines.push(line);
    }
    let mut out = columns(&lines, |c| c < 3);
    out.push_str("vs <peer>: the peer's median time over xkern's, measured interleaved in this run (> 1: xkern is faster).\n");
    if gpu {
        out.push_str("gpu ms: median GPU time of one run from timestamp queries (start to end of each op's compute pass; median ms is the wall time with submission and wait); throughput and roof % of such rows use the GPU time.\n");
    }
    if sim {
        out.push_str("sim ms: simulated NeuronCore time of one run (median ms is the host time of the simulation); throughput, roof % and MFU of neuron-sim rows use the simulated time; busiest: the engine (or DMA) busy longest, as % of the simulated time.\n");
    }
    out.push_str("roof %: the device's roofline time for the case (FMA peak or memory bandwidth, whichever binds) over the measured time (the GPU or simulated time where the row has one, else the median).\n");
    out
}

/// The device's short name, which tells rows of one backend apart (`cpu`,
/// `wgpu:llvmpipe`, `neuron-sim:trn1`): the first word of `Device::name`.
pub fn short_name(dev: &xkern::Device) -> String {
    dev.name()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

/// Lays out `lines` (the first one the header) as aligned columns with a rule under the
/// header: column `c` left-aligned where `left(c)`, right-aligned (numbers) elsewhere.
pub fn columns(lines: &[Vec<String>], left: impl Fn(usize) -> bool) -> String {
    let Some(header) = lines.first() else {
        return String::new();
    };
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        let cells: Vec<String> = l
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (s, w))| {
                if left(c) {
                    format!("{s:<w$}")
                } else {
                    format!("{s:>w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
            out.push('\n');
        }
    }
    out
}
