//! Keeping the pool's workers awake between ops.
//!
//! Why: a rayon worker that finds no work goes to sleep within microseconds, and waking
//! it is slow where the CPU it ran on has gone idle — on the 2-vCPU reference VM, a
//! `join` of two 200 µs tasks took 210 µs back to back but 250–300 µs after a 20–100 µs
//! serial gap and 420–690 µs (medians) after 0.3–5 ms: the second half started up to half
//! a millisecond late. Inference runs many ops of tens to hundreds of microseconds with
//! host code between them, so each would pay that. OpenMP runtimes spin-wait after a
//! parallel region for the same reason (`KMP_BLOCKTIME`, `GOMP_SPINCOUNT`), and so does
//! OpenBLAS.
//!
//! What: when an op starts, every worker of its pool is woken at once (one broadcast task
//! each, rather than rayon's chain of one wake-up after the other); after every op, each
//! worker runs a task that polls for work
//! (`rayon::yield_now`, which runs any pending job — the next op's, or the application's
//! own) and otherwise yields its CPU to other threads (`sched_yield`), until
//! `XKERN_CPU_SPIN_US` microseconds (default 2000; `0` turns it off) have passed since the
//! last op ended. Nothing waits for those tasks and they change no result; the cost is
//! CPU time in the gaps shorter than that, given up to any other runnable thread.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Default spin after an op, in microseconds.
const DEFAULT_SPIN_US: u64 = 2000;

/// How long workers stay awake after an op (`XKERN_CPU_SPIN_US`, read once).
fn spin() -> Duration {
    static SPIN: OnceLock<Duration> = OnceLock::new();
    *SPIN.get_or_init(|| {
        let us = std::env::var("XKERN_CPU_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_SPIN_US);
        Duration::from_micros(us)
    })
}

/// Nanoseconds since the first call (a clock that fits an atomic).
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let elapsed = BASE.get_or_init(Instant::now).elapsed();
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

/// The spin state of one thread pool.
#[derive(Debug, Default)]
pub(crate) struct Warmth {
    /// When the workers may sleep again (`now_ns` time).
    until: AtomicU64,
    /// Spin tasks spawned and not yet finished.
    spinners: AtomicUsize,
}

impl Warmth {
    /// The state of rayon's global pool.
    pub(crate) fn global() -> Arc<Warmth> {
        static G: OnceLock<Arc<Warmth>> = OnceLock::new();
        Arc::clone(G.get_or_init(Arc::default))
    }

    /// Called when an op starts: wakes every worker of `pool` (rayon's global pool for
    /// `None`) at once, unless they are awake. Left to rayon, a sleeping pool wakes one
    /// worker for the op's job, which wakes the next when it splits the work: one wake-up
    /// after the other (a 1×4096×4096 product after 5 ms of sleep took 3.8 ms instead of
    /// 2.2 with spinning off).
    pub(crate) fn op_start(self: &Arc<Self>, pool: Option<&rayon::ThreadPool>) {
        self.keep(pool, spin(), true);
    }

    /// Called when an op has finished: keeps the workers of `pool` polling for work for
    /// the spin time from now.
    pub(crate) fn op_done(self: &Arc<Self>, pool: Option<&rayon::ThreadPool>) {
        self.keep(pool, spin(), false);
    }

    /// Extends the workers' deadline to `spin` from now and starts a spin task on every
    /// worker unless they run one: with a zero `spin`, only when `wake` (the tasks then
    /// end at once, having woken their workers).
    fn keep(self: &Arc<Self>, pool: Option<&rayon::ThreadPool>, spin: Duration, wake: bool) {
        if spin.is_zero() && !wake {
            return;
        }
        let until = now_ns().saturating_add(u64::try_from(spin.as_nanos()).unwrap_or(u64::MAX));
        self.until.fetch_max(until, Ordering::Relaxed);
        // Spawn one spin task per worker unless some are still running (they read the new
        // deadline). A task that ends just as this op finishes leaves one gap unspun:
        // a lost optimisation, never a wrong result.
        let workers = pool.map_or_else(rayon::current_num_threads, |p| p.current_num_threads());
        if self
            .spinners
            .compare_exchange(0, workers, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let me = Arc::clone(self);
        let task = move |_: rayon::BroadcastContext<'_>| me.spin();
        match pool {
            Some(p) => p.spawn_broadcast(task),
            None => rayon::spawn_broadcast(task),
        }
    }

    /// The spin task of one worker.
    fn spin(&self) {
        while now_ns() < self.until.load(Ordering::Relaxed) {
            match rayon::yield_now() {
                Some(rayon::Yield::Executed) => {}
                Some(rayon::Yield::Idle) => std::thread::yield_now(),
                None => break,
            }
        }
        self.spinners.fetch_sub(1, Ordering::AcqRel);
    }

    /// Spin tasks still running (for tests).
    #[cfg(test)]
    fn running(&self) -> usize {
        self.spinners.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spinners_run_pending_work_and_stop() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let w = Arc::new(Warmth::default());
        // One spinner per worker, for a minute; a second op meanwhile spawns no more.
        w.keep(Some(&pool), Duration::from_secs(60), false);
        assert_eq!(w.running(), 3);
        w.keep(Some(&pool), Duration::from_secs(60), true);
        assert_eq!(w.running(), 3);
        // Every worker is in a spinner, yet new work runs at once: the spinners execute
        // pending jobs (otherwise this would wait for the minute to pass).
        let t = Instant::now();
        for _ in 0..20 {
            let sum: u64 = pool.install(|| {
                use rayon::prelude::*;
                (0..10_000u64).into_par_iter().sum()
            });
            assert_eq!(sum, 49_995_000);
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
        // At the deadline they all stop.
        w.until.store(0, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(20);
        while w.running() > 0 {
            assert!(Instant::now() < deadline, "spinners still running");
            std::thread::sleep(Duration::from_millis(1));
        }
        // A zero spin time spawns nothing after an op, and tasks that end at once before.
        w.keep(Some(&pool), Duration::ZERO, false);
        assert_eq!(w.running(), 0);
        w.keep(Some(&pool), Duration::ZERO, true);
        let deadline = Instant::now() + Duration::from_secs(20);
        while w.running() > 0 {
            assert!(Instant::now() < deadline, "wake-up tasks still running");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
