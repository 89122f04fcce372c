//! Timing: warm-up, then interleaved repetitions (A B A B …) of every contestant until a
//! time budget and a minimum count are both reached; medians reported.
//!
//! Interleaving puts xkern and its peers under the same machine conditions (the machines
//! here are shared and noisy), so their ratio is meaningful even when absolute times drift.
//! The order within each round is shuffled (seeded, so runs repeat it): a contestant that
//! always ran right after the same other one would inherit its state — rayon's workers
//! still awake after the `gemm` crate's run, or OpenBLAS's threads still spinning after
//! its own — and a fixed order measured xkern's 512³ product 10% slower, after OpenBLAS,
//! than alone.

use std::time::{Duration, Instant};

/// Summary of one contestant's repetitions, in seconds.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Stats {
    /// Median time.
    pub median_s: f64,
    /// Fastest repetition.
    pub min_s: f64,
    /// Slowest repetition.
    pub max_s: f64,
    /// Number of timed repetitions.
    pub reps: usize,
}

impl Stats {
    /// The summary of `times` (seconds); all zero when empty.
    pub fn of(mut times: Vec<f64>) -> Stats {
        times.sort_by(f64::total_cmp);
        let n = times.len();
        if n == 0 {
            return Stats::default();
        }
        let median = if n % 2 == 1 {
            times[n / 2]
        } else {
            0.5 * (times[n / 2 - 1] + times[n / 2])
        };
        Stats {
            median_s: median,
            min_s: times[0],
            max_s: times[n - 1],
            reps: n,
        }
    }
}

/// How long to measure.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Keep repeating until this much time has passed...
    pub time: Duration,
    /// ...and at least this many rounds ran.
    pub min_reps: usize,
    /// Never more rounds than this.
    pub max_reps: usize,
}

/// A timed closure.
pub type Contestant<'a> = &'a mut dyn FnMut() -> anyhow::Result<()>;

/// Runs each contestant once to warm up, then rounds of one timed run each, `before`
/// (untimed) ahead of every timed run: the cache eviction of `--cold-cache`, or nothing.
pub fn interleaved(
    contestants: &mut [Contestant<'_>],
    budget: Budget,
    before: &mut dyn FnMut(),
) -> anyhow::Result<Vec<Stats>> {
    for c in contestants.iter_mut() {
        c()?;
    }
    let mut times = vec![Vec::new(); contestants.len()];
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < budget.max_reps && (rounds < budget.min_reps || start.elapsed() < budget.time) {
        for i in round_order(contestants.len(), rounds) {
            before();
            let t0 = Instant::now();
            contestants[i]()?;
            times[i].push(t0.elapsed().as_secs_f64());
        }
        rounds += 1;
    }
    Ok(times.into_iter().map(Stats::of).collect())
}

/// The order of the contestants in round `round`: a permutation of `0..n` drawn by a
/// Fisher–Yates shuffle from a SplitMix64 stream seeded by the round number.
fn round_order(n: usize, round: usize) -> Vec<usize> {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut state = (round as u64).wrapping_mul(GAMMA);
    let mut next = move || {
        let z = xkern::core::random::splitmix64(state);
        state = state.wrapping_add(GAMMA);
        z
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    order
}

/// Evicts the CPU caches: every thread reads its share of a buffer several times the size
/// of the last-level cache, so that the next timed run finds its data in memory, as the
/// bandwidth probe does.
pub struct Evictor {
    buf: Vec<u64>,
    threads: usize,
}

impl Evictor {
    /// A buffer of `mib` MiB, read by `threads` threads.
    pub fn new(mib: usize, threads: usize) -> Evictor {
        let len = mib * (1 << 20) / std::mem::size_of::<u64>();
        Evictor {
            buf: (0..len as u64).collect(),
            threads: threads.max(1),
        }
    }

    /// Reads the whole buffer (the sum is kept from the optimiser by `black_box`).
    pub fn evict(&self) {
        let chunk = self.buf.len().div_ceil(self.threads).max(1);
        std::thread::scope(|s| {
            for part in self.buf.chunks(chunk) {
                s.spawn(move || {
                    std::hint::black_box(part.iter().fold(0u64, |a, &x| a.wrapping_add(x)))
                });
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_counts() {
        let s = Stats::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.median_s, s.min_s, s.max_s, s.reps), (2.0, 1.0, 3.0, 3));
        assert_eq!(Stats::of(vec![1.0, 2.0, 3.0, 4.0]).median_s, 2.5);
    }

    #[test]
    fn evicts_on_any_thread_count() {
        // Runs on any thread count, and on a buffer that does not split evenly.
        for threads in [1, 3] {
            Evictor::new(1, threads).evict();
        }
        assert_eq!(Evictor::new(1, 2).buf.len(), (1 << 20) / 8);
    }

    #[test]
    fn runs_at_least_min_reps_interleaved() {
        let log = std::cell::RefCell::new(Vec::new());
        let mut a = || -> anyhow::Result<()> {
            log.borrow_mut().push('a');
            Ok(())
        };
        let mut b = || -> anyhow::Result<()> {
            log.borrow_mut().push('b');
            Ok(())
        };
        let budget = Budget {
            time: Duration::ZERO,
            min_reps: 3,
            max_reps: 10,
        };
        let mut evict = || log.borrow_mut().push('.');
        let stats = interleaved(&mut [&mut a, &mut b], budget, &mut evict).unwrap();
        assert_eq!((stats[0].reps, stats[1].reps), (3, 3));
        // Warm-up without eviction, then rounds of one run each, in the rounds' orders,
        // with an eviction before every timed run.
        let mut want = String::from("ab");
        for r in 0..3 {
            for i in round_order(2, r) {
                want.push('.');
                want.push(['a', 'b'][i]);
            }
        }
        assert_eq!(log.borrow().iter().collect::<String>(), want);
    }

    #[test]
    fn rounds_shuffle_the_order() {
        // Every round is a permutation, and over rounds every contestant runs right after
        // every other one (no fixed predecessor).
        let n = 4;
        let mut after = vec![vec![0usize; n]; n];
        for r in 0..400 {
            let order = round_order(n, r);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>());
            for w in order.windows(2) {
                after[w[1]][w[0]] += 1;
            }
        }
        for (i, row) in after.iter().enumerate() {
            for (j, &count) in row.iter().enumerate() {
                if i != j {
                    assert!(count > 50, "{i} after {j}: {count} of 400 rounds");
                }
            }
        }
        assert_eq!(round_order(4, 7), round_order(4, 7));
    }
}
