//! Storage of SBUF and PSUM: `partitions × bytes_per_partition` bytes, partition-major,
//! plus PSUM's record of which fp32 words have been written since allocation (the
//! matmul rule "accumulating onto uninitialised PSUM is an error" needs it in both modes,
//! so it is a bitmap of one bit per 4-byte word, set and checked with word-wide masks).

// Simulator code: partition, engine and queue indices are below the fixed counts of
// the configuration, and byte ranges are checked against each allocation before use.
#![allow(clippy::indexing_slicing)]

/// One on-chip memory's bytes (empty in timing-only mode).
#[derive(Clone, Debug)]
pub(crate) struct OnChip {
    pub(crate) bytes_per_partition: usize,
    pub(crate) data: Vec<u8>,
}

impl OnChip {
    pub(crate) fn new(partitions: usize, bytes_per_partition: usize, functional: bool) -> Self {
        OnChip {
            bytes_per_partition,
            data: if functional {
                vec![0u8; partitions * bytes_per_partition]
            } else {
                Vec::new()
            },
        }
    }

    /// The bytes `[offset, offset + len)` of partition `p`.
    pub(crate) fn row(&self, p: usize, offset: usize, len: usize) -> &[u8] {
        let base = p * self.bytes_per_partition + offset;
        &self.data[base..base + len]
    }

    /// Mutable bytes `[offset, offset + len)` of partition `p`.
    pub(crate) fn row_mut(&mut self, p: usize, offset: usize, len: usize) -> &mut [u8] {
        let base = p * self.bytes_per_partition + offset;
        &mut self.data[base..base + len]
    }

    /// Fills bytes `[offset, offset + len)` of partitions `parts` with a repeated pattern.
    pub(crate) fn fill(
        &mut self,
        parts: std::ops::Range<usize>,
        offset: usize,
        len: usize,
        pattern: &[u8],
    ) {
        if self.data.is_empty() {
            return;
        }
        for p in parts {
            for chunk in self.row_mut(p, offset, len).chunks_mut(pattern.len()) {
                chunk.copy_from_slice(&pattern[..chunk.len()]);
            }
        }
    }
}

/// Which 4-byte words of PSUM have been written since their allocation.
#[derive(Clone, Debug)]
pub(crate) struct PsumInit {
    words_per_partition: usize,
    u64_per_partition: usize,
    bits: Vec<u64>,
}

impl PsumInit {
    pub(crate) fn new(partitions: usize, bytes_per_partition: usize) -> Self {
        let words_per_partition = bytes_per_partition / 4;
        let u64_per_partition = words_per_partition.div_ceil(64);
        PsumInit {
            words_per_partition,
            u64_per_partition,
            bits: vec![0; partitions * u64_per_partition],
        }
    }

    fn masks(&self, word_lo: usize, word_hi: usize) -> impl Iterator<Item = (usize, u64)> + use<> {
        let hi = word_hi.min(self.words_per_partition);
        let lo = word_lo.min(hi);
        (lo / 64..hi.div_ceil(64)).map(move |w| {
            let start = (w * 64).max(lo) - w * 64;
            let end = ((w + 1) * 64).min(hi) - w * 64;
            let mask = if end - start == 64 {
                u64::MAX
            } else {
                ((1u64 << (end - start)) - 1) << start
            };
            (w, mask)
        })
    }

    /// Marks bytes `[lo, hi)` of partitions `parts` as written (or unwritten).
    pub(crate) fn set(&mut self, parts: std::ops::Range<usize>, lo: usize, hi: usize, on: bool) {
        let masks: Vec<(usize, u64)> = self.masks(lo / 4, hi.div_ceil(4)).collect();
        for p in parts {
            let row = &mut self.bits[p * self.u64_per_partition..(p + 1) * self.u64_per_partition];
            for &(w, m) in &masks {
                if on {
                    row[w] |= m;
                } else {
                    row[w] &= !m;
                }
            }
        }
    }

    /// The first `(partition, byte)` in the region that was never written, if any.
    pub(crate) fn first_unwritten(
        &self,
        parts: std::ops::Range<usize>,
        lo: usize,
        hi: usize,
    ) -> Option<(usize, usize)> {
        let masks: Vec<(usize, u64)> = self.masks(lo / 4, hi.div_ceil(4)).collect();
        for p in parts {
            let row = &self.bits[p * self.u64_per_partition..(p + 1) * self.u64_per_partition];
            for &(w, m) in &masks {
                let missing = !row[w] & m;
                if missing != 0 {
                    return Some((p, (w * 64 + missing.trailing_zeros() as usize) * 4));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psum_init_tracks_ranges() {
        let mut init = PsumInit::new(4, 16384);
        init.set(0..4, 2048, 4096, true);
        assert_eq!(init.first_unwritten(0..4, 2048, 4096), None);
        assert_eq!(init.first_unwritten(0..4, 2044, 4096), Some((0, 2044)));
        init.set(2..3, 3000, 3004, false);
        assert_eq!(init.first_unwritten(0..4, 2048, 4096), Some((2, 3000)));
    }
}
