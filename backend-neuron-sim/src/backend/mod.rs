//! [`NeuronBackend`]: xkern's `Backend` contract on a simulated NeuronCore.
//!
//! Tensors live in simulated HBM: a [`NeuronStorage`] is the byte image of one HBM
//! allocation (no bytes at all on a timing-only device). Each op builds a fresh
//! [`Simulator`] of the device's configuration, places its operands in that core's HBM,
//! runs the op's kernel (`crate::kernels`, written against the simulated instruction set)
//! and keeps the simulator of the last op, so its [`Profile`], Chrome trace and SVG
//! timeline can be read back ([`NeuronBackend::last_profile`]). Upload and download are
//! host↔HBM copies and are not costed (they are not kernels).
//!
//! A timing-only device ([`Mode::TimingOnly`]) runs the same kernels without data, so
//! shapes beyond this machine's memory can be costed; reading such a tensor back
//! (`download`) is an [`Error::Backend`], never zeros or garbage.

// Indices are axes of validated op specs (ranks checked by core before dispatch).
#![allow(clippy::indexing_slicing)]

mod error;

use crate::kernels;
use crate::{Mode, NeuronConfig, Profile, SimError, Simulator};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use xkern_core::{
    AttentionSpec, Backend, CastSpec, DType, DeviceInfo, Error, HostData, HostSlice, Layout,
    MatmulSpec, NormSpec, ReduceSpec, Result,
};

static NEXT_DEVICE: AtomicU64 = AtomicU64::new(1);

/// A share of a device's simulated HBM, released when its tensor is dropped.
#[derive(Debug)]
struct HbmLease {
    used: Arc<AtomicU64>,
    bytes: u64,
}

impl Clone for HbmLease {
    // A cloned storage is a second copy in HBM: counted, without a capacity check, as
    // `Clone` cannot fail (the next allocation sees the total).
    fn clone(&self) -> Self {
        self.used.fetch_add(self.bytes, Ordering::SeqCst);
        HbmLease {
            used: Arc::clone(&self.used),
            bytes: self.bytes,
        }
    }
}

impl PartialEq for HbmLease {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Drop for HbmLease {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// A tensor buffer in simulated HBM.
#[derive(Debug, Clone, PartialEq)]
pub struct NeuronStorage {
    /// This tensor's share of the device's HBM capacity.
    lease: HbmLease,
    device: u64,
    dtype: DType,
    len: usize,
    /// The bytes (little-endian elements); `None` on a timing-only device.
    data: Option<Vec<u8>>,
}

impl NeuronStorage {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One simulated NeuronCore as an xkern device (see the module documentation).
#[derive(Clone)]
pub struct NeuronBackend {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    cfg: NeuronConfig,
    mode: Mode,
    label: String,
    /// The simulator of the last op that ran a kernel.
    last: Mutex<Option<Simulator>>,
    /// Bytes of HBM held by this device's live tensors.
    hbm_used: Arc<AtomicU64>,
}

impl std::fmt::Debug for NeuronBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NeuronBackend")
            .field("name", &self.inner.label)
            .field("mode", &self.inner.mode)
            .finish()
    }
}

impl NeuronBackend {
    /// A device simulating one core of `cfg` in `mode`.
    pub fn new(cfg: NeuronConfig, mode: Mode) -> NeuronBackend {
        let gen_name = match cfg.generation {
            crate::Generation::V2 => "trn1",
            crate::Generation::V3 => "trn2",
        };
        let label = match mode {
            Mode::Functional => format!("neuron-sim:{gen_name}"),
            Mode::TimingOnly => format!("neuron-sim:{gen_name}:timing"),
        };
        NeuronBackend {
            inner: Arc::new(Inner {
                id: NEXT_DEVICE.fetch_add(1, Ordering::Relaxed),
                cfg,
                mode,
                label,
                last: Mutex::new(None),
                hbm_used: Arc::new(AtomicU64::new(0)),
            }),
        }
    }

    /// A functional trn1 (NeuronCore-v2) device.
    pub fn trn1() -> NeuronBackend {
        NeuronBackend::new(NeuronConfig::trn1(), Mode::Functional)
    }

    /// A functional trn2 (NeuronCore-v3) device.
    pub fn trn2() -> NeuronBackend {
        NeuronBackend::new(NeuronConfig::trn2(), Mode::Functional)
    }

    /// Parses the part after `neuron-sim`: `""` (trn2), `trn1`, `trn2`, optionally
    /// followed by `:timing` (e.g. `trn2:timing`). `None` for anything else.
    pub fn parse_options(options: &str) -> Option<NeuronBackend> {
        let mut parts = options.split(':').filter(|p| !p.is_empty());
        let cfg = match parts.next() {
            None => NeuronConfig::trn2(),
            Some("trn2") => NeuronConfig::trn2(),
            Some("trn1") => NeuronConfig::trn1(),
            Some(_) => return None,
        };
        let mode = match parts.next() {
            None => Mode::Functional,
            Some("timing") => Mode::TimingOnly,
            Some(_) => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(NeuronBackend::new(cfg, mode))
    }

    /// The simulated core's configuration.
    pub fn config(&self) -> &NeuronConfig {
        &self.inner.cfg
    }

    /// Functional or timing-only.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    fn last(&self) -> std::sync::MutexGuard<'_, Option<Simulator>> {
        // A panic while holding the lock cannot leave the simulator half-updated in a way
        // that matters to readers of a finished run, so a poisoned lock is still usable.
        self.inner.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The profile of the last op that ran a kernel on this device (from any thread):
    /// simulated latency, per-engine busy time, bytes, MFU. `None` before the first op.
    pub fn last_profile(&self) -> Option<Profile> {
        self.last().as_ref().map(Simulator::profile)
    }

    /// Writes the Chrome trace-event JSON of the last op to `path`.
    pub fn write_last_trace(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        match self.last().as_ref() {
            Some(sim) => Ok(sim.write_chrome_trace(path)?),
            None => Err(no_run()),
        }
    }

    /// The SVG engine timeline of the last op, `width` pixels wide.
    pub fn last_svg_timeline(&self, width: u32) -> Option<String> {
        self.last().as_ref().map(|s| s.svg_timeline(width))
    }

    /// Bytes of simulated HBM held by this device's live tensors.
    pub fn hbm_used_bytes(&self) -> u64 {
        self.inner.hbm_used.load(Ordering::SeqCst)
    }

    /// Takes `len` elements of `dtype` from the device's HBM capacity, or `OutOfMemory`
    /// (in both modes: a timing-only device holds no data but the same capacity).
    fn reserve(&self, dtype: DType, len: usize) -> Result<HbmLease> {
        let cap = self.inner.cfg.hbm_capacity_bytes;
        let bytes = (len as u64).saturating_mul(dtype.size_in_bytes() as u64);
        let used = &self.inner.hbm_used;
        used.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| {
            cur.checked_add(bytes).filter(|&total| total <= cap)
        })
        .map_err(|cur| Error::OutOfMemory {
            device: format!(
                "{} (simulated HBM: {cur} of {cap} bytes in use)",
                self.inner.label
            ),
            bytes,
        })?;
        Ok(HbmLease {
            used: Arc::clone(used),
            bytes,
        })
    }

    fn storage_of(
        &self,
        lease: HbmLease,
        dtype: DType,
        len: usize,
        data: Option<Vec<u8>>,
    ) -> NeuronStorage {
        NeuronStorage {
            lease,
            device: self.inner.id,
            dtype,
            len,
            data,
        }
    }

    /// Runs one kernel: a fresh core with `inputs` in its HBM and a zeroed output of
    /// `out_len` elements of `out_dtype`; the kernel gets the HBM tensors.
    fn run(
        &self,
        inputs: &[&NeuronStorage],
        out_dtype: DType,
        out_len: usize,
        kernel: impl FnOnce(&mut Simulator, &[crate::HbmTensor], crate::HbmTensor) -> crate::Result<()>,
    ) -> Result<NeuronStorage> {
        let lease = self.reserve(out_dtype, out_len)?;
        let mut sim = Simulator::new(self.inner.cfg.clone(), self.inner.mode);
        let mut hbm = Vec::with_capacity(inputs.len());
        for s in inputs {
            if s.device != self.inner.id {
                return Err(Error::Backend {
                    backend: "neuron-sim",
                    message: "a tensor of another neuron-sim device reached this one".into(),
                });
            }
            let t = match &s.data {
                Some(bytes) => sim.hbm_from_bytes(1, s.len, s.dtype, bytes)?,
                None => sim.hbm_tensor(1, s.len, s.dtype)?,
            };
            hbm.push(t);
        }
        let out = sim.hbm_tensor(1, out_len, out_dtype)?;
        if out_len > 0 {
            kernel(&mut sim, &hbm, out)?;
        }
        let data = match sim.mode() {
            Mode::Functional => Some(sim.hbm_bytes(&out)?.to_vec()),
            Mode::TimingOnly => None,
        };
        *self.last() = Some(sim);
        Ok(self.storage_of(lease, out_dtype, out_len, data))
    }
}

fn no_run() -> Error {
    Error::Backend {
        backend: "neuron-sim",
        message: "no op has run on this device yet".into(),
    }
}

fn timing_only_read() -> Error {
    Error::Backend {
        backend: "neuron-sim",
        message: "this is a timing-only device (neuron-sim:<gen>:timing): its tensors hold no \
                  data, so they cannot be read back; use a functional device for values"
            .into(),
    }
}

impl Backend for NeuronBackend {
    type Storage = NeuronStorage;

    fn name(&self) -> String {
        self.inner.label.clone()
    }

    fn info(&self) -> DeviceInfo {
        let cfg = &self.inner.cfg;
        let mut info = DeviceInfo::new("neuron-sim", cfg.name.clone(), DType::ALL.to_vec());
        let peak16 = cfg.tensor_peak_flops() * 1e-9;
        info.peak_gflops_16 = Some(peak16);
        info.peak_gflops_f32 = Some(peak16 / cfg.matmul_fp32_factor.max(1) as f64);
        info.bandwidth_gbs = Some(cfg.hbm_bandwidth_gbps);
        info.features = vec![format!("mode={:?}", self.inner.mode)];
        info
    }

    fn same_device(&self, other: &Self) -> bool {
        self.inner.id == other.inner.id
    }

    fn upload(&self, data: HostSlice<'_>) -> Result<NeuronStorage> {
        let lease = self.reserve(data.dtype(), data.len())?;
        let bytes = match self.inner.mode {
            Mode::Functional => {
                let src = data.as_bytes();
                let mut v = Vec::new();
                v.try_reserve_exact(src.len())
                    .map_err(|_| Error::OutOfMemory {
                        device: self.name(),
                        bytes: src.len() as u64,
                    })?;
                v.extend_from_slice(src);
                Some(v)
            }
            Mode::TimingOnly => None,
        };
        Ok(self.storage_of(lease, data.dtype(), data.len(), bytes))
    }

    fn zeros(&self, dtype: DType, len: usize) -> Result<NeuronStorage> {
        let lease = self.reserve(dtype, len)?;
        let bytes = match self.inner.mode {
            Mode::Functional => {
                let n = len
                    .checked_mul(dtype.size_in_bytes())
                    .ok_or(Error::OutOfMemory {
                        device: self.name(),
                        bytes: u64::MAX,
                    })?;
                let mut v = Vec::new();
                v.try_reserve_exact(n).map_err(|_| Error::OutOfMemory {
                    device: self.name(),
                    bytes: n as u64,
                })?;
                v.resize(n, 0u8);
                Some(v)
            }
            Mode::TimingOnly => None,
        };
        Ok(self.storage_of(lease, dtype, len, bytes))
    }

    fn download(
        &self,
        src: &NeuronStorage,
        dtype: DType,
        offset: usize,
        len: usize,
    ) -> Result<HostData> {
        let Some(data) = &src.data else {
            return Err(timing_only_read());
        };
        let esz = dtype.size_in_bytes();
        let range = offset
            .checked_mul(esz)
            .zip(offset.checked_add(len).and_then(|e| e.checked_mul(esz)))
            .filter(|&(_, hi)| hi <= data.len());
        let Some((lo, hi)) = range else {
            return Err(Error::Backend {
                backend: "neuron-sim",
                message: format!(
                    "download of elements {offset}..+{len} outside a storage of {}",
                    src.len
                ),
            });
        };
        HostData::from_bytes(dtype, &data[lo..hi]).ok_or_else(|| Error::Backend {
            backend: "neuron-sim",
            message: "stored bytes do not form whole elements".into(),
        })
    }

    fn copy_strided(
        &self,
        src: &NeuronStorage,
        dtype: DType,
        layout: &Layout,
    ) -> Result<NeuronStorage> {
        let layout = layout.clone();
        self.run(&[src], dtype, layout.numel(), move |sim, hbm, out| {
            kernels::copy::copy_strided(sim, hbm[0], &layout, out)
        })
    }

    fn cast(&self, spec: &CastSpec, src: &NeuronStorage) -> Result<NeuronStorage> {
        let spec = spec.clone();
        self.run(&[src], spec.to, spec.len, move |sim, hbm, out| {
            kernels::copy::cast(sim, hbm[0], spec.offset, spec.len, out)
        })
    }

    fn matmul(
        &self,
        spec: &MatmulSpec,
        a: &NeuronStorage,
        b: &NeuronStorage,
        bias: Option<&NeuronStorage>,
    ) -> Result<NeuronStorage> {
        let mut inputs = vec![a, b];
        inputs.extend(bias);
        let len = spec.batch() * spec.m * spec.n;
        self.run(&inputs, spec.dtype, len, |sim, hbm, out| {
            kernels::matmul::matmul(sim, spec, hbm[0], hbm[1], hbm.get(2).copied(), out)
        })
    }

    fn attention(
        &self,
        spec: &AttentionSpec,
        q: &NeuronStorage,
        k: &NeuronStorage,
        v: &NeuronStorage,
    ) -> Result<NeuronStorage> {
        let len = spec.output_shape().iter().product();
        self.run(&[q, k, v], spec.dtype, len, |sim, hbm, out| {
            kernels::attention::attention(sim, spec, hbm[0], hbm[1], hbm[2], out)
        })
    }

    fn reduce(&self, spec: &ReduceSpec, x: &NeuronStorage) -> Result<NeuronStorage> {
        let len = spec.outer * spec.inner;
        self.run(
            &[x],
            spec.kind.output_dtype(spec.dtype),
            len,
            |sim, hbm, out| kernels::reduce::reduce(sim, spec, hbm[0], out),
        )
    }

    fn normalize(
        &self,
        spec: &NormSpec,
        x: &NeuronStorage,
        weight: Option<&NeuronStorage>,
    ) -> Result<NeuronStorage> {
        let mut inputs = vec![x];
        inputs.extend(weight);
        let len = spec.outer * spec.axis_len * spec.inner;
        self.run(&inputs, spec.dtype, len, |sim, hbm, out| {
            kernels::reduce::normalize(sim, spec, hbm[0], hbm.get(1).copied(), out)
        })
    }

    fn synchronize(&self) -> Result<()> {
        // Every op has been simulated to completion when it returns.
        Ok(())
    }
}

impl From<SimError> for Error {
    fn from(e: SimError) -> Error {
        error::to_core(e)
    }
}
