//! Device memory: the buffer pool, the storage type tensors hold, uploads and downloads.
//!
//! Buffers are pooled by size class (powers of two up to 64 MiB, then multiples of
//! 16 MiB, never above the adapter's `max_buffer_size`): a dropped storage returns its
//! buffer to the pool and the next allocation of that class reuses it, so a model's
//! steady state allocates nothing. A buffer only returns to the pool after the commands
//! that use it were submitted (ops keep their temporaries alive until after `submit`), and
//! wgpu orders later submissions after earlier ones, so reuse never races.
//!
//! Element addressing: f32 and u32 take one 32-bit word each; f16 and bf16 take half a
//! word (two per word, little-endian: element `2w` in the low half of word `w`). Sizes
//! are rounded up to whole words, and downloads copy the enclosing word range and slice
//! it on the host, so odd lengths and offsets of 16-bit tensors need no special kernels.

use crate::device::Gpu;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use xkern_core::{DType, Error, HostData, HostSlice, Result};

/// Pooled bytes kept for reuse at most; beyond this, freed buffers are released.
const POOL_CAP_BYTES: u64 = 1 << 30;

/// Bytes of `len` elements of `dtype`, rounded up to whole 32-bit words (at least one).
pub(crate) fn bytes_of(dtype: DType, len: usize) -> Result<u64> {
    let b = (len as u64)
        .checked_mul(dtype.size_in_bytes() as u64)
        .ok_or_else(|| Error::SizeOverflow { shape: vec![len] })?;
    Ok(b.div_ceil(4).max(1) * 4)
}

/// The size class a request of `bytes` is served from.
fn size_class(bytes: u64, max: u64) -> u64 {
    let class = if bytes <= 64 << 20 {
        bytes.next_power_of_two().max(256)
    } else {
        bytes.div_ceil(16 << 20) * (16 << 20)
    };
    class.min(max).max(bytes)
}

/// Free buffers by (usage, size class).
#[derive(Default)]
pub(crate) struct Pool {
    free: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    buffers: HashMap<(u32, u64), Vec<wgpu::Buffer>>,
    bytes: u64,
    /// Allocations served from the pool (tests check reuse with it).
    hits: u64,
    /// Allocations that created a buffer.
    misses: u64,
}

/// Counters of the pool, for tests and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Allocations served by reusing a pooled buffer.
    pub reused: u64,
    /// Allocations that created a new buffer.
    pub created: u64,
    /// Bytes currently held free in the pool.
    pub free_bytes: u64,
}

impl Pool {
    pub(crate) fn stats(&self) -> PoolStats {
        self.free
            .lock()
            .map_or(PoolStats::default(), |s| PoolStats {
                reused: s.hits,
                created: s.misses,
                free_bytes: s.bytes,
            })
    }
}

/// A buffer on loan from the pool; dropping it gives it back.
pub(crate) struct PooledBuffer {
    buffer: wgpu::Buffer,
    usage: wgpu::BufferUsages,
    class: u64,
    pool: Arc<Pool>,
}

impl PooledBuffer {
    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        // A wgpu::Buffer is a shared handle: the pool keeps a clone, and dropping this
        // one does not free the memory.
        let buffer = self.buffer.clone();
        if let Ok(mut s) = self.pool.free.lock()
            && s.bytes + self.class <= POOL_CAP_BYTES
        {
            s.bytes += self.class;
            s.buffers
                .entry((self.usage.bits(), self.class))
                .or_default()
                .push(buffer);
        }
    }
}

/// A tensor's device memory: a pooled storage buffer and the bytes in use.
pub struct WgpuStorage {
    pub(crate) buf: Arc<PooledBuffer>,
    /// Bytes holding elements (a multiple of 4, at most the buffer's size).
    pub(crate) bytes: u64,
    /// Identity of the device that owns it.
    pub(crate) device_id: usize,
}

impl std::fmt::Debug for WgpuStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuStorage")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl WgpuStorage {
    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        self.buf.buffer()
    }

    /// The binding of `bytes` bytes from byte `offset` (whole words; 0 binds the whole
    /// buffer, as for an empty tensor).
    pub(crate) fn binding_range(&self, offset: u64, bytes: u64) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: self.buffer(),
            offset,
            size: wgpu::BufferSize::new(bytes),
        })
    }
}

/// Storage usage of tensors.
pub(crate) const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);
/// Staging usage of downloads.
const STAGING: wgpu::BufferUsages =
    wgpu::BufferUsages::MAP_READ.union(wgpu::BufferUsages::COPY_DST);

impl Gpu {
    /// A pooled buffer of at least `bytes` with `usage` (contents undefined).
    pub(crate) fn alloc(
        &self,
        pool: &Arc<Pool>,
        usage: wgpu::BufferUsages,
        bytes: u64,
    ) -> Result<PooledBuffer> {
        self.check_alive()?;
        let max = self.limits.max_buffer_size;
        if bytes > max {
            return Err(Error::OutOfMemory {
                device: format!("{} (max_buffer_size {max})", self.label()),
                bytes,
            });
        }
        let class = size_class(bytes, max);
        if let Ok(mut s) = pool.free.lock()
            && let Some(b) = s
                .buffers
                .get_mut(&(usage.bits(), class))
                .and_then(|v| v.pop())
        {
            s.bytes -= class;
            s.hits += 1;
            return Ok(PooledBuffer {
                buffer: b,
                usage,
                class,
                pool: Arc::clone(pool),
            });
        }
        let buffer = self.scoped(class, || {
            Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("xkern"),
                size: class,
                usage,
                mapped_at_creation: false,
            }))
        })?;
        if let Ok(mut s) = pool.free.lock() {
            s.misses += 1;
        }
        Ok(PooledBuffer {
            buffer,
            usage,
            class,
            pool: Arc::clone(pool),
        })
    }

    /// A storage for `len` elements of `dtype` (contents undefined).
    pub(crate) fn storage(
        &self,
        pool: &Arc<Pool>,
        device_id: usize,
        dtype: DType,
        len: usize,
    ) -> Result<WgpuStorage> {
        let bytes = bytes_of(dtype, len)?;
        Ok(WgpuStorage {
            buf: Arc::new(self.alloc(pool, STORAGE, bytes)?),
            bytes,
            device_id,
        })
    }

    /// Uploads host data into a new storage.
    pub(crate) fn upload(
        &self,
        pool: &Arc<Pool>,
        device_id: usize,
        data: HostSlice<'_>,
    ) -> Result<WgpuStorage> {
        let s = self.storage(pool, device_id, data.dtype(), data.len())?;
        let raw = data.as_bytes();
        self.scoped(s.bytes, || {
            if raw.len().is_multiple_of(4) {
                if !raw.is_empty() {
                    self.queue.write_buffer(s.buffer(), 0, raw);
                }
            } else {
                let mut padded = Vec::new();
                padded
                    .try_reserve_exact(raw.len() + 2)
                    .map_err(|_| Error::OutOfMemory {
                        device: "host".into(),
                        bytes: raw.len() as u64 + 2,
                    })?;
                padded.extend_from_slice(raw);
                padded.resize(raw.len().div_ceil(4) * 4, 0);
                self.queue.write_buffer(s.buffer(), 0, &padded);
            }
            Ok(())
        })?;
        Ok(s)
    }

    /// A storage of `len` zeros.
    pub(crate) fn zeros(
        &self,
        pool: &Arc<Pool>,
        device_id: usize,
        dtype: DType,
        len: usize,
    ) -> Result<WgpuStorage> {
        let s = self.storage(pool, device_id, dtype, len)?;
        self.scoped(s.bytes, || {
            let mut enc = self.device.create_command_encoder(&Default::default());
            enc.clear_buffer(s.buffer(), 0, Some(s.bytes));
            self.queue.submit([enc.finish()]);
            Ok(())
        })?;
        Ok(s)
    }

    /// Downloads `len` elements from element `offset` through a pooled staging buffer.
    pub(crate) fn download(
        &self,
        pool: &Arc<Pool>,
        src: &WgpuStorage,
        dtype: DType,
        offset: usize,
        len: usize,
    ) -> Result<HostData> {
        self.check_alive()?;
        let size = dtype.size_in_bytes() as u64;
        let start = offset as u64 * size;
        let end = start + len as u64 * size;
        if len == 0 {
            return host_from_bytes(dtype, &[]);
        }
        if end > src.bytes {
            return Err(Error::Backend {
                backend: "wgpu",
                message: format!(
                    "download of bytes {start}..{end} past a {}-byte storage",
                    src.bytes
                ),
            });
        }
        let (a0, a1) = (start / 4 * 4, end.div_ceil(4) * 4);
        let staging = self.alloc(pool, STAGING, a1 - a0)?;
        let index = self.scoped(a1 - a0, || {
            let mut enc = self.device.create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(src.buffer(), a0, staging.buffer(), 0, a1 - a0);
            Ok(self.queue.submit([enc.finish()]))
        })?;
        self.wait(Some(index))?;
        let bytes = self.map_read(staging.buffer(), a1 - a0)?;
        let skip = (start - a0) as usize;
        let part = bytes
            .get(skip..skip + (end - start) as usize)
            .ok_or_else(|| Error::Backend {
                backend: "wgpu",
                message: "the staging buffer is shorter than the download".into(),
            })?;
        host_from_bytes(dtype, part)
    }

    /// Maps the first `size` bytes of a `MAP_READ` buffer whose copies were submitted,
    /// copies them out and unmaps it. A map that never completes marks the device lost.
    pub(crate) fn map_read(&self, buffer: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        buffer.map_async(wgpu::MapMode::Read, 0..size, move |r| {
            let _ = tx.send(r);
        });
        // The map callback runs inside some thread's poll: ours, or another thread's that
        // took it first; keep polling until it has run.
        let deadline = std::time::Instant::now() + crate::device::WAIT_TIMEOUT;
        let mapped = loop {
            match rx.recv_timeout(std::time::Duration::from_millis(2)) {
                Ok(r) => break r,
                Err(_) if std::time::Instant::now() < deadline => {
                    self.check_alive()?;
                    let _ = self.device.poll(wgpu::PollType::Poll);
                }
                Err(_) => {
                    self.mark_lost("a staging buffer was never mapped".into());
                    self.check_alive()?;
                    return Err(Error::DeviceLost {
                        reason: "a staging buffer was never mapped".into(),
                    });
                }
            }
        };
        mapped.map_err(|e| Error::Backend {
            backend: "wgpu",
            message: format!("mapping a staging buffer failed: {e}"),
        })?;
        let out = buffer
            .get_mapped_range(0..size)
            .map(|view| view.to_vec())
            .map_err(|e| Error::Backend {
                backend: "wgpu",
                message: format!("reading a staging buffer failed: {e}"),
            });
        buffer.unmap();
        out
    }
}

/// Host data of `dtype` from little-endian bytes.
fn host_from_bytes(dtype: DType, bytes: &[u8]) -> Result<HostData> {
    fn collect<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
        bytes
            .chunks_exact(std::mem::size_of::<T>())
            .map(bytemuck::pod_read_unaligned)
            .collect()
    }
    Ok(match dtype {
        DType::F32 => HostData::F32(collect(bytes)),
        DType::U32 => HostData::U32(collect(bytes)),
        DType::F16 => HostData::F16(collect(bytes)),
        DType::BF16 => HostData::BF16(collect(bytes)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_to_words_and_classes() {
        assert_eq!(bytes_of(DType::BF16, 3).unwrap(), 8);
        assert_eq!(bytes_of(DType::F16, 0).unwrap(), 4);
        assert_eq!(bytes_of(DType::F32, 5).unwrap(), 20);
        assert_eq!(size_class(20, 1 << 40), 256);
        assert_eq!(size_class(1000, 1 << 40), 1024);
        assert_eq!(size_class((64 << 20) + 1, 1 << 40), 80 << 20);
        assert_eq!(size_class(1000, 600), 1000);
    }
}
