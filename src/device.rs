//! [`Device`]: the run-time choice among the backends compiled in.
//!
//! One enum variant per enabled backend (cfg-gated by the facade's features); the enum
//! implements [`Backend`] by forwarding, so `Tensor<Device>` (the facade's [`Tensor`])
//! works with whichever backend was picked, and generic code can still name a concrete
//! backend for static dispatch.
//!
//! [`Tensor`]: crate::Tensor

// A build with no backend feature has an uninhabited `Device`: every method body is an
// empty match and its arguments go unused.
#![cfg_attr(
    not(any(feature = "cpu", feature = "wgpu", feature = "neuron-sim")),
    allow(unused_variables, dead_code)
)]

/// The cost profile of a simulated op ([`Device::last_profile`]).
#[cfg(feature = "neuron-sim")]
pub type NeuronProfile = xkern_neuron_sim::Profile;
/// The cost profile of a simulated op (neuron-sim is not compiled in: never produced).
#[cfg(not(feature = "neuron-sim"))]
pub type NeuronProfile = std::convert::Infallible;

use xkern_core::{
    AttentionSpec, Backend, CastSpec, DType, DeviceInfo, Error, HostData, HostSlice, Layout,
    MatmulSpec, NormSpec, ReduceSpec, Result,
};

/// The device names [`Device::parse`] accepts.
pub const DEVICE_NAMES: &str = "cpu, cpu:<threads>, wgpu, neuron-sim, neuron-sim:trn1, neuron-sim:trn2, neuron-sim:trn1:timing, neuron-sim:trn2:timing";

/// A device of any backend compiled into this build.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Device {
    /// The CPU backend (feature `cpu`).
    #[cfg(feature = "cpu")]
    Cpu(xkern_cpu::CpuBackend),
    /// A simulated Trainium NeuronCore (feature `neuron-sim`).
    #[cfg(feature = "neuron-sim")]
    NeuronSim(xkern_neuron_sim::NeuronBackend),
    /// The GPU backend through wgpu (feature `wgpu`).
    #[cfg(feature = "wgpu")]
    Wgpu(xkern_wgpu::WgpuBackend),
}

/// The storage of a [`Device`]'s tensors: one variant per backend.
#[derive(Debug)]
#[non_exhaustive]
pub enum DeviceStorage {
    /// CPU memory.
    #[cfg(feature = "cpu")]
    Cpu(xkern_cpu::CpuStorage),
    /// Simulated HBM.
    #[cfg(feature = "neuron-sim")]
    NeuronSim(xkern_neuron_sim::NeuronStorage),
    /// GPU buffers (wgpu).
    #[cfg(feature = "wgpu")]
    Wgpu(xkern_wgpu::WgpuStorage),
}

/// Runs `$body` with `$d` bound to the concrete backend inside `$device`, `$wrap` to the
/// constructor of its [`DeviceStorage`] variant and `$unwrap` to the function that takes
/// that variant apart.
macro_rules! on_backend {
    // on_backend!(self, (d, wrap, unwrap) => d.zeros(t, n).map(wrap)) expands to
    // match *self {
    //     #[cfg(feature = "cpu")]
    //     Device::Cpu(ref d) => { let (wrap, unwrap) = (DeviceStorage::Cpu, cpu); d.zeros(t, n).map(wrap) }
    // }
    ($device:expr, ($d:ident, $wrap:ident, $unwrap:ident) => $body:expr) => {
        match *$device {
            #[cfg(feature = "cpu")]
            Device::Cpu(ref $d) => {
                #[allow(unused_variables)]
                let ($wrap, $unwrap) = (DeviceStorage::Cpu, cpu);
                $body
            }
            #[cfg(feature = "neuron-sim")]
            Device::NeuronSim(ref $d) => {
                #[allow(unused_variables)]
                let ($wrap, $unwrap) = (DeviceStorage::NeuronSim, neuron_sim);
                $body
            }
            #[cfg(feature = "wgpu")]
            Device::Wgpu(ref $d) => {
                #[allow(unused_variables)]
                let ($wrap, $unwrap) = (DeviceStorage::Wgpu, wgpu);
                $body
            }
        }
    };
}

/// The CPU storage inside `s`, or an error if it belongs to another backend.
#[cfg(feature = "cpu")]
fn cpu(s: &DeviceStorage) -> Result<&xkern_cpu::CpuStorage> {
    #[allow(unreachable_patterns)]
    match s {
        DeviceStorage::Cpu(s) => Ok(s),
        _ => Err(Error::Backend {
            backend: "cpu",
            message: "a tensor of another backend reached the CPU".into(),
        }),
    }
}

/// The simulated-HBM storage inside `s`, or an error if it belongs to another backend.
#[cfg(feature = "neuron-sim")]
fn neuron_sim(s: &DeviceStorage) -> Result<&xkern_neuron_sim::NeuronStorage> {
    #[allow(unreachable_patterns)]
    match s {
        DeviceStorage::NeuronSim(s) => Ok(s),
        _ => Err(Error::Backend {
            backend: "neuron-sim",
            message: "a tensor of another backend reached the neuron-sim device".into(),
        }),
    }
}

/// The wgpu storage inside `s`, or an error if it belongs to another backend.
#[cfg(feature = "wgpu")]
fn wgpu(s: &DeviceStorage) -> Result<&xkern_wgpu::WgpuStorage> {
    #[allow(unreachable_patterns)]
    match s {
        DeviceStorage::Wgpu(s) => Ok(s),
        _ => Err(Error::Backend {
            backend: "wgpu",
            message: "a tensor of another backend reached the wgpu device".into(),
        }),
    }
}

/// The error for a backend that is not compiled into this build.
#[cfg_attr(
    all(feature = "cpu", feature = "wgpu", feature = "neuron-sim"),
    allow(dead_code)
)]
fn unavailable(name: &str, feature: &str) -> Error {
    Error::BackendUnavailable {
        name: name.to_string(),
        reason: format!(
            "xkern was built without it; enable the `{feature}` feature of the xkern crate"
        ),
    }
}

impl Device {
    /// The CPU device (rayon's global thread pool).
    #[cfg(feature = "cpu")]
    pub fn cpu() -> Device {
        Device::Cpu(xkern_cpu::CpuBackend::new())
    }

    /// Parses a device name: `cpu`, `cpu:<threads>`, `wgpu`, `neuron-sim`,
    /// `neuron-sim:trn1`, `neuron-sim:trn2` (case-insensitive). Errors name what to do
    /// when the backend is not compiled in or cannot run here.
    pub fn parse(name: &str) -> Result<Device> {
        let lower = name.trim().to_ascii_lowercase();
        let unknown = || Error::UnknownDevice {
            name: name.to_string(),
            expected: DEVICE_NAMES.to_string(),
        };
        let (backend, option) = match lower.split_once(':') {
            Some((b, o)) => (b, Some(o)),
            None => (lower.as_str(), None),
        };
        match backend {
            "cpu" => {
                let threads = match option {
                    None => None,
                    Some(t) => Some(
                        t.parse::<usize>()
                            .ok()
                            .filter(|&t| t > 0)
                            .ok_or_else(unknown)?,
                    ),
                };
                Self::cpu_with(threads)
            }
            "wgpu" if option.is_none() => Self::wgpu_device(),
            "neuron-sim" => Self::neuron_sim_with(option.unwrap_or("")).ok_or_else(unknown)?,
            _ => Err(unknown()),
        }
    }

    /// A simulated NeuronCore of `config` (e.g. `NeuronConfig::trn2()`), computing values
    /// and costs (functional mode). See [`Device::parse`] for timing-only devices.
    #[cfg(feature = "neuron-sim")]
    pub fn neuron_sim(config: xkern_neuron_sim::NeuronConfig) -> Device {
        Device::NeuronSim(xkern_neuron_sim::NeuronBackend::new(
            config,
            xkern_neuron_sim::Mode::Functional,
        ))
    }

    /// The profile (simulated latency, engine busy times, MFU) of the last op run on a
    /// neuron-sim device; `None` on other backends or before the first op.
    pub fn last_profile(&self) -> Option<NeuronProfile> {
        #[allow(unreachable_patterns)]
        match self {
            #[cfg(feature = "neuron-sim")]
            Device::NeuronSim(d) => d.last_profile(),
            _ => None,
        }
    }

    /// Writes the Chrome trace (one track per engine and DMA queue) of the last op run on
    /// a neuron-sim device to `path`; an error on other backends or before the first op.
    #[cfg_attr(not(feature = "neuron-sim"), allow(unused_variables))]
    pub fn write_last_trace(&self, path: &std::path::Path) -> Result<()> {
        #[allow(unreachable_patterns)]
        match self {
            #[cfg(feature = "neuron-sim")]
            Device::NeuronSim(d) => d.write_last_trace(path),
            _ => Err(Error::Backend {
                backend: "xkern",
                message: format!("{} keeps no instruction trace", self.name()),
            }),
        }
    }

    /// Starts or stops timing ops on the GPU (wgpu, with timestamp queries); returns
    /// whether ops are now timed: false on other backends and on adapters without
    /// `TIMESTAMP_QUERY`.
    #[cfg_attr(not(feature = "wgpu"), allow(unused_variables))]
    pub fn set_gpu_timing(&self, on: bool) -> bool {
        #[allow(unreachable_patterns)]
        match self {
            #[cfg(feature = "wgpu")]
            Device::Wgpu(d) => d.set_gpu_timing(on),
            _ => false,
        }
    }

    /// The GPU time of the ops run since the last call while timing was on (see
    /// [`Device::set_gpu_timing`]); `Ok(None)` when nothing was timed.
    pub fn take_gpu_time(&self) -> Result<Option<std::time::Duration>> {
        #[allow(unreachable_patterns)]
        match self {
            #[cfg(feature = "wgpu")]
            Device::Wgpu(d) => d.take_gpu_time(),
            _ => Ok(None),
        }
    }

    /// The SVG engine timeline of the last op run on a neuron-sim device.
    #[cfg_attr(not(feature = "neuron-sim"), allow(unused_variables))]
    pub fn last_svg_timeline(&self, width: u32) -> Option<String> {
        #[allow(unreachable_patterns)]
        match self {
            #[cfg(feature = "neuron-sim")]
            Device::NeuronSim(d) => d.last_svg_timeline(width),
            _ => None,
        }
    }

    /// `neuron-sim[:trn1|:trn2][:timing]`: `None` for an option it does not know, an
    /// error naming the feature when neuron-sim is not compiled in.
    #[cfg(feature = "neuron-sim")]
    fn neuron_sim_with(option: &str) -> Option<Result<Device>> {
        xkern_neuron_sim::NeuronBackend::parse_options(option).map(|d| Ok(Device::NeuronSim(d)))
    }

    #[cfg(not(feature = "neuron-sim"))]
    fn neuron_sim_with(option: &str) -> Option<Result<Device>> {
        let known = matches!(option, "" | "trn1" | "trn2" | "trn1:timing" | "trn2:timing");
        known.then(|| Err(unavailable("neuron-sim", "neuron-sim")))
    }

    #[cfg(feature = "cpu")]
    fn cpu_with(threads: Option<usize>) -> Result<Device> {
        Ok(Device::Cpu(match threads {
            None => xkern_cpu::CpuBackend::from_env()?,
            Some(t) => xkern_cpu::CpuBackend::with_threads(t)?,
        }))
    }

    #[cfg(feature = "wgpu")]
    fn wgpu_device() -> Result<Device> {
        Ok(Device::Wgpu(xkern_wgpu::WgpuBackend::new()?))
    }

    #[cfg(not(feature = "wgpu"))]
    fn wgpu_device() -> Result<Device> {
        Err(unavailable("wgpu", "wgpu"))
    }

    #[cfg(not(feature = "cpu"))]
    fn cpu_with(_threads: Option<usize>) -> Result<Device> {
        Err(unavailable("cpu", "cpu"))
    }

    /// The device named by the `XKERN_DEVICE` environment variable (see
    /// [`Device::parse`]); `cpu` when it is unset or empty.
    pub fn from_env() -> Result<Device> {
        match std::env::var("XKERN_DEVICE") {
            Ok(s) if !s.trim().is_empty() => Self::parse(&s),
            Ok(_) | Err(std::env::VarError::NotPresent) => Self::parse("cpu"),
            Err(std::env::VarError::NotUnicode(s)) => Err(Error::UnknownDevice {
                name: s.to_string_lossy().into_owned(),
                expected: DEVICE_NAMES.to_string(),
            }),
        }
    }

    /// Every device of this build that can run here, one per backend (and per simulated
    /// generation): what "all backends" means for benchmarks and portable workloads.
    pub fn available() -> Vec<Device> {
        ["cpu", "wgpu", "neuron-sim:trn1", "neuron-sim:trn2"]
            .into_iter()
            .filter_map(|n| Device::parse(n).ok())
            .collect()
    }

    /// What the device is: backend, model, dtypes, peak figures where known.
    pub fn info(&self) -> DeviceInfo {
        Backend::info(self)
    }

    /// A short label (`cpu`, ...).
    pub fn name(&self) -> String {
        Backend::name(self)
    }

    /// Waits for all submitted work to finish.
    pub fn synchronize(&self) -> Result<()> {
        Backend::synchronize(self)
    }
}

impl Backend for Device {
    type Storage = DeviceStorage;

    fn name(&self) -> String {
        on_backend!(self, (d, wrap, unwrap) => d.name())
    }

    fn info(&self) -> DeviceInfo {
        on_backend!(self, (d, wrap, unwrap) => d.info())
    }

    fn same_device(&self, other: &Self) -> bool {
        #[allow(unreachable_patterns)]
        match (self, other) {
            #[cfg(feature = "cpu")]
            (Device::Cpu(a), Device::Cpu(b)) => a.same_device(b),
            #[cfg(feature = "neuron-sim")]
            (Device::NeuronSim(a), Device::NeuronSim(b)) => a.same_device(b),
            #[cfg(feature = "wgpu")]
            (Device::Wgpu(a), Device::Wgpu(b)) => a.same_device(b),
            _ => false,
        }
    }

    fn upload(&self, data: HostSlice<'_>) -> Result<DeviceStorage> {
        on_backend!(self, (d, wrap, unwrap) => d.upload(data).map(wrap))
    }

    fn zeros(&self, dtype: DType, len: usize) -> Result<DeviceStorage> {
        on_backend!(self, (d, wrap, unwrap) => d.zeros(dtype, len).map(wrap))
    }

    fn download(
        &self,
        src: &DeviceStorage,
        dtype: DType,
        offset: usize,
        len: usize,
    ) -> Result<HostData> {
        on_backend!(self, (d, wrap, unwrap) => d.download(unwrap(src)?, dtype, offset, len))
    }

    fn copy_strided(
        &self,
        src: &DeviceStorage,
        dtype: DType,
        layout: &Layout,
    ) -> Result<DeviceStorage> {
        on_backend!(self, (d, wrap, unwrap) => d.copy_strided(unwrap(src)?, dtype, layout).map(wrap))
    }

    fn cast(&self, spec: &CastSpec, src: &DeviceStorage) -> Result<DeviceStorage> {
        on_backend!(self, (d, wrap, unwrap) => d.cast(spec, unwrap(src)?).map(wrap))
    }

    fn matmul(
        &self,
        spec: &MatmulSpec,
        a: &DeviceStorage,
        b: &DeviceStorage,
        bias: Option<&DeviceStorage>,
    ) -> Result<DeviceStorage> {
        on_backend!(self, (d, wrap, unwrap) => d.matmul(spec, unwrap(a)?, unwrap(b)?, bias.map(unwrap).transpose()?).map(wrap))
    }

    fn attention(
        &self,
        spec: &AttentionSpec,
        q: &DeviceStorage,
        k: &DeviceStorage,
        v: &DeviceStorage,
    ) -> Result<DeviceStorage> {
        on_backend!(self, (d, wrap, unwrap) => d.attention(spec, unwrap(q)?, unwrap(k)?, unwrap(v)?).map(wrap))
    }

    fn reduce(&self, spec: &ReduceSpec, x: &DeviceStorage) -> Result<DeviceStorage> {
        on_backend!(self, (d, wrap, unwrap) => d.reduce(spec, unwrap(x)?).map(wrap))
    }

    fn normalize(
        &self,
        spec: &NormSpec,
        x: &DeviceStorage,
        weight: Option<&DeviceStorage>,
    ) -> Result<DeviceStorage> {
        on_backend!(self, (d, wrap, unwrap) => d.normalize(spec, unwrap(x)?, weight.map(unwrap).transpose()?).map(wrap))
    }

    fn synchronize(&self) -> Result<()> {
        on_backend!(self, (d, wrap, unwrap) => d.synchronize())
    }
}
