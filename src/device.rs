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
    not(any(feature = "cpu", feature = "wgpu")),
    allow(unused_variables, dead_code)
)]

use xkern_core::{
    AttentionSpec, Backend, CastSpec, DType, DeviceInfo, Error, HostData, HostSlice, Layout,
    MatmulSpec, NormSpec, ReduceSpec, Result,
};

/// The device names [`Device::parse`] accepts.
pub const DEVICE_NAMES: &str =
    "cpu, cpu:<threads>, wgpu, neuron-sim, neuron-sim:trn1, neuron-sim:trn2";

/// A device of any backend compiled into this build.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Device {
    /// The CPU backend (feature `cpu`).
    #[cfg(feature = "cpu")]
    Cpu(xkern_cpu::CpuBackend),
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

/// Why a backend named in a device string cannot be used in this build.
fn unavailable(name: &str, feature: &str, compiled: bool) -> Error {
    let reason = if compiled {
        format!("the {name} backend is not implemented in this version of xkern yet")
    } else {
        format!("xkern was built without it; enable the `{feature}` feature of the xkern crate")
    };
    Error::BackendUnavailable {
        name: name.to_string(),
        reason,
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
            "neuron-sim" if matches!(option, None | Some("trn1" | "trn2")) => Err(unavailable(
                "neuron-sim",
                "neuron-sim",
                cfg!(feature = "neuron-sim"),
            )),
            _ => Err(unknown()),
        }
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
        Err(unavailable("wgpu", "wgpu", false))
    }

    #[cfg(not(feature = "cpu"))]
    fn cpu_with(_threads: Option<usize>) -> Result<Device> {
        Err(unavailable("cpu", "cpu", false))
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
