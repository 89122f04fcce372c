//! A caching allocator for large tensor buffers.
//!
//! Why: glibc serves allocations above 32 MiB with fresh `mmap`s and unmaps them on free,
//! so every large op output (a 4096² softmax writes 64 MiB) page-faults all of its memory
//! again: 16,384 faults of a zeroed 4 KiB page, measured at 30–40 ms for 64 MiB on this
//! 2-core VM against a 2.8 ms bandwidth floor for the whole softmax. Inference and training
//! loops allocate the same sizes over and over, so, like the GPU frameworks' caching
//! allocators, buffers of at least [`POOL_MIN_BYTES`] go back to a process-wide pool when
//! their tensor is dropped, and the next allocation of a similar size reuses one that is
//! already mapped.
//!
//! Rules: a buffer is reused for a request of `len` elements when its capacity is at
//! least `len` and at most 25% larger (the smallest such buffer wins, so a small request
//! does not pin a huge buffer); the pool holds at most `XKERN_CPU_POOL_MB` MiB (default
//! 1024; `0` turns pooling off), dropping the oldest buffers of a type first when full.
//! Reused buffers are always filled (or fully written) before use, so pooling never
//! changes a result. [`pool_stats`] reports its state and [`trim_pool`] empties it.

use half::{bf16, f16};
use std::sync::{Mutex, OnceLock};

/// Buffers smaller than this are left to the system allocator.
pub const POOL_MIN_BYTES: usize = 1 << 20;

/// What the pool holds, for applications and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes of buffers held for reuse.
    pub bytes: usize,
    /// Number of buffers held.
    pub buffers: usize,
    /// The limit on `bytes`.
    pub capacity: usize,
    /// Allocations served from the pool since the process started.
    pub hits: u64,
    /// Pool-sized allocations that found no buffer to reuse.
    pub misses: u64,
}

#[derive(Default)]
pub(crate) struct Lists {
    f32s: Vec<Vec<f32>>,
    f16s: Vec<Vec<f16>>,
    bf16s: Vec<Vec<bf16>>,
    u32s: Vec<Vec<u32>>,
}

struct Pool {
    lists: Lists,
    stats: PoolStats,
}

fn pool() -> &'static Mutex<Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mb = std::env::var("XKERN_CPU_POOL_MB")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(1024);
        Mutex::new(Pool::new(mb.saturating_mul(1 << 20)))
    })
}

/// An element type whose buffers the pool keeps.
pub(crate) trait Pooled: Sized {
    /// A value no kernel produces by accident (NaN, `u32::MAX`): debug builds fill the
    /// buffers of [`crate::storage::try_vec_overwrite`] with it, so an element a kernel
    /// forgets to write shows up in the tests instead of stale data from the pool.
    const POISON: Self;
    fn list(lists: &mut Lists) -> &mut Vec<Vec<Self>>;
}

macro_rules! pooled {
    ($t:ty, $field:ident, $poison:expr) => {
        impl Pooled for $t {
            const POISON: Self = $poison;
            fn list(lists: &mut Lists) -> &mut Vec<Vec<Self>> {
                &mut lists.$field
            }
        }
    };
}
pooled!(f32, f32s, f32::NAN);
pooled!(f16, f16s, f16::NAN);
pooled!(bf16, bf16s, bf16::NAN);
pooled!(u32, u32s, u32::MAX);

fn bytes_of<T>(capacity: usize) -> usize {
    capacity.saturating_mul(std::mem::size_of::<T>())
}

impl Pool {
    fn new(capacity: usize) -> Pool {
        Pool {
            lists: Lists::default(),
            stats: PoolStats {
                capacity,
                ..PoolStats::default()
            },
        }
    }

    fn take<T: Pooled>(&mut self, len: usize) -> Option<Vec<T>> {
        let limit = len.saturating_add(len / 4);
        let list = T::list(&mut self.lists);
        let best = list
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len && v.capacity() <= limit)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        let Some(i) = best else {
            self.stats.misses += 1;
            return None;
        };
        // The buffer keeps its old length and values: callers either clear it or, when
        // they overwrite every element, reuse the values as they are (no fill pass).
        let v = list.swap_remove(i);
        self.stats.bytes -= bytes_of::<T>(v.capacity());
        self.stats.buffers -= 1;
        self.stats.hits += 1;
        Some(v)
    }

    fn give<T: Pooled>(&mut self, v: Vec<T>) {
        let bytes = bytes_of::<T>(v.capacity());
        if bytes < POOL_MIN_BYTES || bytes > self.stats.capacity {
            return;
        }
        // Oldest buffers of this type go first; then, if still full, this one is freed.
        let list = T::list(&mut self.lists);
        while self.stats.bytes + bytes > self.stats.capacity && !list.is_empty() {
            let old = list.remove(0);
            self.stats.bytes -= bytes_of::<T>(old.capacity());
            self.stats.buffers -= 1;
        }
        if self.stats.bytes + bytes <= self.stats.capacity {
            list.push(v);
            self.stats.bytes += bytes;
            self.stats.buffers += 1;
        }
    }
}

/// A buffer with room for `len` elements from the pool, if one fits (holding stale
/// values of an earlier tensor).
pub(crate) fn take<T: Pooled>(len: usize) -> Option<Vec<T>> {
    if bytes_of::<T>(len) < POOL_MIN_BYTES {
        return None;
    }
    pool().lock().ok()?.take(len)
}

/// Gives a dropped tensor's buffer back (or frees it when it is small or the pool full).
pub(crate) fn give<T: Pooled>(v: Vec<T>) {
    if bytes_of::<T>(v.capacity()) < POOL_MIN_BYTES {
        return;
    }
    if let Ok(mut p) = pool().lock() {
        p.give(v);
    }
}

/// The pool's current state.
pub fn pool_stats() -> PoolStats {
    pool().lock().map(|p| p.stats).unwrap_or_default()
}

/// Frees every buffer the pool holds (e.g. before a phase that needs the memory
/// elsewhere); returns the bytes released.
pub fn trim_pool() -> usize {
    let Ok(mut p) = pool().lock() else {
        return 0;
    };
    let freed = p.stats.bytes;
    p.lists = Lists::default();
    p.stats.bytes = 0;
    p.stats.buffers = 0;
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuse_rules_and_limits() {
        let mut p = Pool::new(10 << 20);
        let n = 1 << 20; // 4 MiB of f32
        let v: Vec<f32> = Vec::with_capacity(n);
        let ptr = v.as_ptr();
        p.give(v);
        assert_eq!((p.stats.buffers, p.stats.bytes), (1, 4 << 20));
        // Too large a request (more than the capacity) and too small a request (the
        // buffer would be more than 25% larger) both miss; another type never hits.
        assert!(p.take::<f32>(n + 1).is_none());
        assert!(p.take::<f32>(n / 2).is_none());
        assert!(p.take::<u32>(n).is_none());
        assert_eq!(p.stats.misses, 3);
        // A request within 25% below the capacity reuses the same memory, empty.
        let r = p.take::<f32>(n - n / 8).expect("a hit");
        assert_eq!(r.as_ptr(), ptr);
        assert!(r.capacity() >= n);
        assert_eq!((p.stats.buffers, p.stats.bytes, p.stats.hits), (0, 0, 1));
        // Small buffers are not kept; nor is one larger than the whole pool.
        p.give(Vec::<f32>::with_capacity(16));
        p.give(Vec::<f32>::with_capacity(3 << 20));
        assert_eq!(p.stats.buffers, 0);
        // When full, the oldest buffers of the type make room.
        for _ in 0..3 {
            p.give(Vec::<f32>::with_capacity(n));
        }
        assert_eq!(p.stats.bytes, 8 << 20, "two 4 MiB buffers fit in 10 MiB");
        assert_eq!(p.stats.buffers, 2);
    }
}
