//! A fixed list of tasks shared by the calling thread and the pool's workers.
//!
//! Why: rayon runs a parallel iterator called from outside the pool on the workers only,
//! the caller blocked until one of them wakes; where they sleep (0.3–0.5 ms to wake on
//! the reference VM) a 2 ms GEMV started that late, while OpenBLAS starts on the calling
//! thread at once and lets its threads join as they wake. [`share`] does the same: the
//! caller takes tasks from a shared counter while up to `threads − 1` workers, woken by
//! spawned jobs, take them too. The caller still waits for those jobs to start (they
//! borrow its data), so an op shorter than a wake-up gains nothing, and a list of as many
//! tasks as threads can lose: the caller may run them all before a worker starts (the
//! 16-row skinny path, two tasks on two threads, went from 3.6–4.4 to 6.1–6.8 ms with
//! it, so it keeps rayon's scheduling). Used by the GEMV, the direct GEMM and the row
//! reductions; a one-task op runs on the caller alone, with no rayon round trip (a 4×256
//! row sum: 22–42 µs through rayon, 1 µs now).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Runs `f(t)` for every `t < tasks`, each exactly once, on the calling thread and up to
/// `threads − 1` of the current pool's workers; `false` when some call returned `false`.
/// Which thread runs which task varies; callers whose tasks write disjoint results get
/// the same results either way.
pub(crate) fn share(tasks: usize, f: impl Fn(usize) -> bool + Sync) -> bool {
    let next = AtomicUsize::new(0);
    let ok = AtomicBool::new(true);
    let work = || {
        loop {
            let t = next.fetch_add(1, Ordering::Relaxed);
            if t >= tasks {
                break;
            }
            if !f(t) {
                ok.store(false, Ordering::Relaxed);
            }
        }
    };
    let helpers = rayon::current_num_threads().min(tasks).saturating_sub(1);
    rayon::in_place_scope(|s| {
        for _ in 0..helpers {
            s.spawn(|_| work());
        }
        work();
    });
    ok.load(Ordering::Relaxed)
}

/// [`share`] over `data` cut into pieces of `group` elements (the last may be shorter):
/// `f(index of the piece's first element, piece)` runs once per piece.
pub(crate) fn share_slices<T: Send>(
    data: &mut [T],
    group: usize,
    f: impl Fn(usize, &mut [T]) -> bool + Sync,
) -> bool {
    let group = group.max(1);
    let pieces: Vec<Mutex<&mut [T]>> = data.chunks_mut(group).map(Mutex::new).collect();
    share(pieces.len(), |t| match pieces.get(t).map(|m| m.lock()) {
        Some(Ok(mut piece)) => f(t * group, &mut piece),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        for threads in [1, 2, 5] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for tasks in [0, 1, 2, 7, 100] {
                let seen = Mutex::new(vec![0u32; tasks]);
                let ok = pool.install(|| {
                    share(tasks, |t| {
                        seen.lock().unwrap()[t] += 1;
                        true
                    })
                });
                assert!(ok);
                assert!(
                    seen.into_inner().unwrap().iter().all(|&n| n == 1),
                    "{threads} {tasks}"
                );
            }
        }
        // From outside any pool (the global one), and a failing task.
        let count = AtomicUsize::new(0);
        let ok = share(10, |t| {
            count.fetch_add(1, Ordering::Relaxed);
            t != 3
        });
        assert!(!ok);
        assert_eq!(count.into_inner(), 10);
        // Pieces: every element once, with its own index.
        let mut v = vec![0usize; 23];
        assert!(share_slices(&mut v, 5, |i0, piece| {
            for (i, x) in piece.iter_mut().enumerate() {
                *x += i0 + i;
            }
            true
        }));
        assert_eq!(v, (0..23).collect::<Vec<_>>());
    }
}
