//! `xkern-bench`: runs one suite of cases on every chosen backend and prints one table
//! (optionally JSON lines and an HTML report). See benches/README.md.

use anyhow::{Context, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use xkern::Device;
use xkern_bench::measure::{self, Budget, Contestant, Stats, interleaved};
use xkern_bench::numerics;
use xkern_bench::report::{PeerResult, Row, short_name, table};
use xkern_bench::{cases, html, workload};

/// Cross-backend benchmark of xkern's ops.
#[derive(Parser, Debug)]
#[command(name = "xkern-bench", version, about)]
struct Cli {
    /// Backends to run, comma-separated: cpu, cpu:<threads>, wgpu, neuron-sim[:trn1|:trn2].
    /// Default: every backend compiled in and available here.
    #[arg(long, value_delimiter = ',')]
    backend: Vec<String>,
    /// Built-in suite: quick (small sizes, under two minutes), standard (the reference
    /// cases), full (standard plus larger and extra cases).
    #[arg(long, default_value = "quick")]
    suite: String,
    /// A cases file (JSON array of {id, op, dtype, params}) to run instead of a suite.
    #[arg(long)]
    cases: Option<PathBuf>,
    /// Only cases whose id contains this substring.
    #[arg(long)]
    filter: Option<String>,
    /// Write one JSON object per row (JSON lines) to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report with charts to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Seconds of repetitions per case (after warm-up), at least --min-reps.
    #[arg(long, default_value_t = 0.5)]
    budget: f64,
    /// Minimum timed repetitions per case.
    #[arg(long, default_value_t = 3)]
    min_reps: usize,
    /// Skip the peer libraries (gemm, matrixmultiply, and OpenBLAS when built with the
    /// `openblas` feature) on CPU matmul cases.
    #[arg(long)]
    no_peers: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Take the CPU's memory bandwidth from the per-machine cache instead of probing it
    /// again at the start of this run.
    #[arg(long)]
    cached_probe: bool,
    /// Evict the CPU caches before every timed repetition (by reading a buffer of
    /// --cold-cache-mib MiB on every thread), so that memory-bound CPU cases read their
    /// data from memory, as the bandwidth probe does; without it repetitions run back to
    /// back and a case of 64 MiB or less can find part of its data in the L3 cache.
    #[arg(long)]
    cold_cache: bool,
    /// Size of the eviction buffer of --cold-cache (at least twice the last-level cache).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    cold_cache_mib: u64,
    /// Write one Chrome trace (trace-event JSON, opens in Perfetto) per neuron-sim case
    /// into this directory, named `<case>__<backend>.json`.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// List the cases and exit.
    #[arg(long)]
    list: bool,
    /// Instead of timing: run the numerics workloads (a fixed list per op) in every dtype
    /// on every chosen backend and print their error against the f64 reference (relative,
    /// in ulps) and their difference from the other backends. Takes --backend, --filter,
    /// --json, --list and --quiet.
    #[arg(long)]
    numerics: bool,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("xkern-bench: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Runs the benchmark; `Ok(false)` when a case failed its accuracy check or could not run.
fn run() -> anyhow::Result<bool> {
    let cli = Cli::parse();
    if !cli.no_peers {
        quiet_threads()?;
    }
    // matrixmultiply reads its thread count once, from the environment: give it the CPU
    // device's count (what rayon will use, or the `cpu:<n>` asked for).
    let threads = peer_threads(&cli.backend);
    // SAFETY: nothing else runs yet: this program has not spawned any thread.
    unsafe { std::env::set_var("MATMUL_NUM_THREADS", threads.to_string()) };
    // The CPU's memory roofline from this run's own probe (unless told otherwise): the
    // machine's bandwidth is that of the hour, not of the first run on it.
    if !cli.cached_probe && std::env::var_os("XKERN_CPU_PROBE").is_none() {
        // SAFETY: as above, still no other thread.
        unsafe { std::env::set_var("XKERN_CPU_PROBE", "fresh") };
    }
    if cli.numerics {
        return run_numerics(&cli);
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let when = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();

    let mut all = match &cli.cases {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            cases::parse(&text, &path.display().to_string())?
        }
        None => cases::suite(&cli.suite)?,
    };
    if let Some(f) = &cli.filter {
        all.retain(|c| c.id.contains(f.as_str()));
    }
    if all.is_empty() {
        bail!("no case matches");
    }
    if cli.list {
        for c in &all {
            println!("{}\t{}\t{}", c.id, c.workload.op(), c.dtype);
        }
        return Ok(true);
    }
    let devices = devices(&cli.backend)?;

    let progress = if cli.quiet {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::new((all.len() * devices.len()) as u64);
        pb.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")?
                .progress_chars("=> "),
        );
        pb
    };
    let budget = Budget {
        time: Duration::from_secs_f64(cli.budget),
        min_reps: cli.min_reps.max(1),
        max_reps: 10_000,
    };
    let evictor = cli
        .cold_cache
        .then(|| measure::Evictor::new(cli.cold_cache_mib as usize, threads));
    let mut rows = Vec::new();
    let mut infos = Vec::new();
    let mut all_ok = true;
    for dev in &devices {
        progress.set_message(format!("probing {}", dev.name()));
        let info = dev.info();
        for case in &all {
            progress.set_message(format!("{} on {}", case.id, info.backend));
            // Only the CPU's caches hold a CPU case's data between repetitions.
            let evict = evictor.as_ref().filter(|_| info.backend.starts_with("cpu"));
            match run_case(case, dev, &info, budget, !cli.no_peers, evict) {
                Ok(row) => {
                    if let (Some(dir), Some(_)) = (&cli.trace, &row.sim_time_s) {
                        std::fs::create_dir_all(dir)
                            .with_context(|| format!("creating {}", dir.display()))?;
                        let file =
                            format!("{}__{}.json", case.id, dev.name()).replace([':', '/'], "_");
                        dev.write_last_trace(&dir.join(&file))?;
                    }
                    all_ok &= row.within_tolerance;
                    rows.push(row);
                }
                Err(e) => {
                    all_ok = false;
                    progress.println(format!("{} on {}: {e:#}", case.id, info.backend));
                }
            }
            progress.inc(1);
        }
        infos.push(info);
    }
    progress.finish_and_clear();

    for i in &infos {
        let fig = |v: Option<f64>, unit: &str| {
            v.map_or("unknown".to_string(), |x| format!("{x:.0} {unit}"))
        };
        let f16 = match i.peak_gflops_f16 {
            Some(p) if Some(p) != i.peak_gflops_16 => format!(" (f16 {p:.0})"),
            _ => String::new(),
        };
        println!(
            "{}: {} ({} threads; f32 peak {}, 16-bit peak {}{f16}, bandwidth {})",
            i.backend,
            i.device,
            i.threads.map_or("–".into(), |t| t.to_string()),
            fig(i.peak_gflops_f32, "GFLOP/s"),
            fig(i.peak_gflops_16, "GFLOP/s"),
            fig(i.bandwidth_gbs, "GB/s")
        );
    }
    if !cli.no_peers {
        let env = |k: &str| std::env::var(k).unwrap_or_else(|_| "unset".into());
        #[cfg(feature = "openblas")]
        println!(
            "peer openblas: kernels for {}; OPENBLAS_THREAD_TIMEOUT={}",
            xkern_bench::peers::openblas::core_name(),
            env("OPENBLAS_THREAD_TIMEOUT")
        );
        println!(
            "with peers: XKERN_CPU_SPIN_US={} (no contestant's threads poll during another's run)",
            env("XKERN_CPU_SPIN_US")
        );
    }
    if evictor.is_some() {
        println!(
            "cold cache: {} MiB read before every timed CPU repetition",
            cli.cold_cache_mib
        );
    }
    println!();
    print!("{}", table(&rows));
    if let Some(path) = &cli.json {
        let mut text = String::new();
        for r in &rows {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {} rows to {}", rows.len(), path.display());
    }
    if let Some(path) = &cli.html {
        std::fs::write(path, html::page(&rows, &infos, &command, &when)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if !all_ok {
        eprintln!("some cases failed to run or exceeded their tolerance (see above)");
    }
    Ok(all_ok)
}

/// The devices `--backend` names, or every available one.
fn devices(names: &[String]) -> anyhow::Result<Vec<Device>> {
    let devices = if names.is_empty() {
        Device::available()
    } else {
        names
            .iter()
            .map(|b| Device::parse(b).with_context(|| format!("backend {b}")))
            .collect::<anyhow::Result<_>>()?
    };
    if devices.is_empty() {
        bail!("no backend is compiled in and available");
    }
    Ok(devices)
}

/// `--numerics`: the cross-backend numerics table; `Ok(false)` when a result exceeds its
/// tolerance or an op failed.
fn run_numerics(cli: &Cli) -> anyhow::Result<bool> {
    if cli.cases.is_some() || cli.html.is_some() || cli.trace.is_some() {
        bail!("--numerics runs its own workloads: it takes no --cases, --html or --trace");
    }
    let mut cases = numerics::suite(numerics::Size::Moderate);
    if let Some(f) = &cli.filter {
        cases.retain(|c| c.id.contains(f.as_str()));
    }
    if cases.is_empty() {
        bail!("no numerics case matches");
    }
    if cli.list {
        for c in &cases {
            println!("{}\t{}", c.id, c.op.name());
        }
        return Ok(true);
    }
    let devices = devices(&cli.backend)?;
    let dtypes = xkern::DType::FLOATS;
    let progress = if cli.quiet {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::new_spinner();
        pb.set_style(ProgressStyle::with_template(
            "{elapsed_precise} {spinner} {msg}",
        )?);
        pb
    };
    let report = numerics::run(&devices, &cases, &dtypes, |what| {
        progress.set_message(what.to_string());
        progress.tick();
    });
    progress.finish_and_clear();
    print!("{}", numerics::table(&report));
    if let Some(path) = &cli.json {
        let mut text = String::new();
        for r in &report.rows {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {} rows to {}", report.rows.len(), path.display());
    }
    let ok = report.all_within_tolerance();
    if !ok {
        eprintln!("some results exceeded their tolerance or failed to run (see above)");
    }
    Ok(ok)
}

/// With peers, no contestant's threads may keep polling for work during another's timed
/// run (on 2 cores such polling took CPU from the next contestant's run: xkern's GEMV read
/// 0.62–1.10× OpenBLAS's speed from run to run with both libraries' threads polling):
/// xkern's workers sleep after each op (`XKERN_CPU_SPIN_US=0`) and, with the `openblas`
/// feature, OpenBLAS's threads too (`OPENBLAS_THREAD_TIMEOUT=4`, which OpenBLAS reads when
/// it loads, before `main`: the program runs itself again with it set). Values already
/// set are kept.
fn quiet_threads() -> anyhow::Result<()> {
    if std::env::var_os("XKERN_CPU_SPIN_US").is_none() {
        // SAFETY: nothing else runs yet: this program has not spawned any thread.
        unsafe { std::env::set_var("XKERN_CPU_SPIN_US", "0") };
    }
    #[cfg(all(feature = "openblas", unix))]
    if std::env::var_os("OPENBLAS_THREAD_TIMEOUT").is_none() {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().context("locating this program to run it again")?;
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("OPENBLAS_THREAD_TIMEOUT", "4")
            .exec();
        return Err(anyhow::Error::new(err).context("running again with OPENBLAS_THREAD_TIMEOUT=4"));
    }
    Ok(())
}

/// Threads of the CPU device the run will use: `cpu:<n>` if asked for, else rayon's
/// default (`RAYON_NUM_THREADS`, else the available parallelism).
fn peer_threads(backends: &[String]) -> usize {
    let asked = backends
        .iter()
        .find_map(|b| b.trim().strip_prefix("cpu:").and_then(|n| n.parse().ok()));
    let rayon = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n: &usize| n > 0);
    asked
        .or(rayon)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Times one case on one device, interleaved with its peers, and checks the output.
fn run_case(
    case: &cases::Case,
    dev: &Device,
    info: &xkern::DeviceInfo,
    budget: Budget,
    peers: bool,
    evict: Option<&measure::Evictor>,
) -> anyhow::Result<Row> {
    let mut p = workload::prepare(case, dev, peers)?;
    let mut last = None;
    let stats = {
        let run = &mut p.run;
        let mut xk = || -> anyhow::Result<()> {
            last = Some(run()?);
            Ok(())
        };
        let mut contestants: Vec<Contestant<'_>> = vec![&mut xk];
        for peer in p.peers.iter_mut() {
            contestants.push(&mut *peer.run);
        }
        let mut before = || {
            if let Some(e) = evict {
                e.evict();
            }
        };
        interleaved(&mut contestants, budget, &mut before)?
    };
    // GPU time (wgpu with timestamp queries): extra runs after the wall-clock ones, so
    // the timestamp readbacks stay out of the wall times.
    let mut gpu_times = Vec::new();
    if dev.set_gpu_timing(true) {
        for _ in 0..stats[0].reps.clamp(3, 30) {
            last = Some((p.run)()?);
            gpu_times.extend(dev.take_gpu_time()?.map(|t| t.as_secs_f64()));
        }
        dev.set_gpu_timing(false);
    }
    let out = last.context("the op never ran")?;
    let profile = dev.last_profile();
    let timing_only = workload::timing_only(dev);
    let accuracy = if timing_only {
        // A timing-only simulator holds no data: nothing to check, and the row says so.
        workload::Accuracy {
            rel_err: f64::NAN,
            ok: true,
            detail: Some("timing-only device: output not checked".into()),
            compared: "nothing (timing-only)".into(),
        }
    } else {
        (p.check)(&out)?
    };
    let xkern = stats[0];
    let peer_results = p
        .peers
        .iter()
        .zip(&stats[1..])
        .map(|(peer, s)| PeerResult {
            name: peer.name.to_string(),
            median_s: s.median_s,
            ratio: s.median_s / xkern.median_s.max(1e-12),
        })
        .collect();
    let mut row = Row::new(case, info, xkern, &p, accuracy, peer_results);
    row.backend = short_name(dev);
    row.checked = !timing_only;
    if !gpu_times.is_empty() {
        row.apply_gpu_time(Stats::of(gpu_times).median_s, info, p.low_precision);
    }
    if let Some(profile) = &profile {
        row.apply_profile(profile, info, p.low_precision);
        row.timeline_svg = dev.last_svg_timeline(900);
    }
    Ok(row)
}
