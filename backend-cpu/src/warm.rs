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
//! What:
//! - When an op starts, every worker of its pool is woken at once by a broadcast task
//!   (rayon alone wakes one worker for the op's job, which wakes the next when it splits
//!   the work: one wake-up after the other). This happens whatever the spin time.
//! - After an op, every worker runs a task that polls for work (`rayon::yield_now`, which
//!   runs any pending job: the next op's, or the application's own) and otherwise yields
//!   its CPU to other threads (`sched_yield`), until `XKERN_CPU_SPIN_US` microseconds
//!   (default 2000, at most 10⁶; `0`: no polling) have passed since the last op ended.
//! - While any op of the pool is running, a polling task ends as soon as it finds no
//!   work: its worker returns to rayon's own loop. So a task that rayon runs inside a
//!   worker's wait (a `join` whose other half was stolen runs queued jobs meanwhile)
//!   never holds that wait up beyond its first look for work.
//! - Ops called from a worker of the pool itself (nested parallelism) neither wake nor
//!   poll: the tasks would queue behind, or inside, the caller's own work.
//!
//! Nothing waits for those tasks and they change no result. The costs: CPU time in gaps
//! shorter than the spin time, given up to any other runnable thread; and an application
//! that runs its own rayon work on the same pool within that time after an op may find a
//! polling task run inside one of its waits, which it then holds up to the end of the
//! spin time (set `XKERN_CPU_SPIN_US=0`, or give xkern its own pool, to rule that out).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Default spin after an op, in microseconds.
const DEFAULT_SPIN_US: u64 = 2000;
/// The longest spin accepted, in microseconds (one second).
const MAX_SPIN_US: u64 = 1_000_000;

/// How long workers stay awake after an op (`XKERN_CPU_SPIN_US`, read once).
fn spin() -> Duration {
    static SPIN: OnceLock<Duration> = OnceLock::new();
    *SPIN.get_or_init(|| {
        let us = std::env::var("XKERN_CPU_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_SPIN_US);
        Duration::from_micros(us.min(MAX_SPIN_US))
    })
}

/// Nanoseconds since the first call (a clock that fits an atomic).
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let elapsed = BASE.get_or_init(Instant::now).elapsed();
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

/// The wake and spin state of one thread pool.
#[derive(Debug, Default)]
pub(crate) struct Warmth {
    /// When the workers may sleep again (`now_ns` time).
    until: AtomicU64,
    /// Polling tasks spawned and not yet finished.
    spinners: AtomicUsize,
    /// Ops of this pool running now.
    active: AtomicUsize,
    /// Broadcasts spawned so far (for tests).
    broadcasts: AtomicUsize,
}

/// Whether the calling thread is a worker of `pool` (rayon's global pool for `None`,
/// counting any pool: rayon's broadcast from inside one goes to that one).
fn inside(pool: Option<&rayon::ThreadPool>) -> bool {
    match pool {
        Some(p) => p.current_thread_index().is_some(),
        None => rayon::current_thread_index().is_some(),
    }
}

impl Warmth {
    /// The state of rayon's global pool.
    pub(crate) fn global() -> Arc<Warmth> {
        static G: OnceLock<Arc<Warmth>> = OnceLock::new();
        Arc::clone(G.get_or_init(Arc::default))
    }

    /// Runs `f`, an op on `pool` (rayon's global pool for `None`), its workers woken
    /// together before it and polling after it.
    pub(crate) fn around<R>(
        self: &Arc<Self>,
        pool: Option<&rayon::ThreadPool>,
        f: impl FnOnce() -> R,
    ) -> R {
        if inside(pool) {
            return f();
        }
        self.active.fetch_add(1, Ordering::AcqRel);
        self.keep(pool, spin(), true);
        let r = f();
        self.active.fetch_sub(1, Ordering::AcqRel);
        self.keep(pool, spin(), false);
        r
    }

    /// Extends the workers' deadline to `spin` from now and starts a polling task on
    /// every worker unless each has one already; with a zero `spin` only when `wake`
    /// (the tasks then end at once, having woken their workers).
    fn keep(self: &Arc<Self>, pool: Option<&rayon::ThreadPool>, spin: Duration, wake: bool) {
        if spin.is_zero() && !wake {
            return;
        }
        let until = now_ns().saturating_add(u64::try_from(spin.as_nanos()).unwrap_or(u64::MAX));
        self.until.fetch_max(until, Ordering::Relaxed);
        let workers = pool.map_or_else(rayon::current_num_threads, |p| p.current_num_threads());
        // Tasks still polling read the new deadline. Two callers may both start a set:
        // a worker then polls in two tasks, which end together.
        if self.spinners.load(Ordering::Acquire) >= workers {
            return;
        }
        self.spinners.fetch_add(workers, Ordering::AcqRel);
        self.broadcasts.fetch_add(1, Ordering::Relaxed);
        let me = Arc::clone(self);
        let task = move |_: rayon::BroadcastContext<'_>| me.poll();
        match pool {
            Some(p) => p.spawn_broadcast(task),
            None => rayon::spawn_broadcast(task),
        }
    }

    /// The polling task of one worker.
    fn poll(&self) {
        while now_ns() < self.until.load(Ordering::Relaxed) {
            match rayon::yield_now() {
                Some(rayon::Yield::Executed) => {}
                Some(rayon::Yield::Idle) if self.active.load(Ordering::Acquire) > 0 => break,
                Some(rayon::Yield::Idle) => std::thread::yield_now(),
                None => break,
            }
        }
        self.spinners.fetch_sub(1, Ordering::AcqRel);
    }

    /// Polling tasks still running (for tests).
    #[cfg(test)]
    fn running(&self) -> usize {
        self.spinners.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of `threads` workers and a fresh `Warmth` for it.
    fn pool_and_warmth(threads: usize) -> (rayon::ThreadPool, Arc<Warmth>) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        (pool, Arc::new(Warmth::default()))
    }

    /// Waits (up to 20 s) until no polling task runs.
    fn settle(w: &Warmth) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while w.running() > 0 {
            assert!(Instant::now() < deadline, "polling tasks still running");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn pollers_run_pending_work_and_stop() {
        let (pool, w) = pool_and_warmth(3);
        // One poller per worker, for a minute; a second call meanwhile starts no more.
        w.keep(Some(&pool), Duration::from_secs(60), false);
        assert_eq!(w.running(), 3);
        w.keep(Some(&pool), Duration::from_secs(60), true);
        assert_eq!(w.running(), 3);
        assert_eq!(w.broadcasts.load(Ordering::Relaxed), 1);
        // Every worker is in a poller, yet new work runs at once: the pollers execute
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
        settle(&w);
    }

    #[test]
    fn pollers_leave_while_an_op_runs() {
        // With an op of the pool running, a poller that finds no work ends, so it never
        // holds up a wait it was run inside.
        let (pool, w) = pool_and_warmth(2);
        w.keep(Some(&pool), Duration::from_secs(60), false);
        assert_eq!(w.running(), 2);
        w.active.fetch_add(1, Ordering::AcqRel);
        settle(&w);
        w.active.fetch_sub(1, Ordering::AcqRel);
    }

    #[test]
    fn ops_wake_and_poll_from_outside_the_pool_only() {
        let (pool, w) = pool_and_warmth(2);
        // From inside the pool: nothing is spawned.
        let x = pool.install(|| w.around(Some(&pool), || 7));
        assert_eq!(x, 7);
        assert_eq!(w.broadcasts.load(Ordering::Relaxed), 0);
        // From outside: a wake-up broadcast before the op (and pollers after it, which
        // read the extended deadline or start again).
        let y = w.around(Some(&pool), || 8);
        assert_eq!(y, 8);
        assert!(w.broadcasts.load(Ordering::Relaxed) >= 1);
        assert_eq!(w.active.load(Ordering::Acquire), 0);
        w.until.store(0, Ordering::Relaxed);
        settle(&w);
        // A zero spin time still wakes before an op, and spawns nothing after one.
        let before = w.broadcasts.load(Ordering::Relaxed);
        w.keep(Some(&pool), Duration::ZERO, true);
        assert_eq!(w.broadcasts.load(Ordering::Relaxed), before + 1);
        settle(&w);
        w.keep(Some(&pool), Duration::ZERO, false);
        assert_eq!(w.broadcasts.load(Ordering::Relaxed), before + 1);
    }
}
