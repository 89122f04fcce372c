//! The GPU context: instance, adapter choice, device with the adapter's own limits, and
//! the mapping of wgpu's failures into [`xkern_core::Error`].
//!
//! Adapter choice: the instance honours `WGPU_BACKEND` (e.g. `vulkan`, `metal`, `dx12`);
//! `XKERN_WGPU_ADAPTER=<substring>` picks the first adapter whose name contains the
//! substring (case-insensitive), otherwise the high-performance adapter wins. The device
//! is requested with the adapter's full limits (not wgpu's conservative defaults) and with
//! `SHADER_F16`, `SUBGROUP` and `TIMESTAMP_QUERY` when the adapter offers them, and with
//! `EXPERIMENTAL_COOPERATIVE_MATRIX` (tensor cores; see below) unless switched off.
//!
//! Cooperative matrices (what wgpu 30.0.2 offers, read from its sources): the feature
//! `Features::EXPERIMENTAL_COOPERATIVE_MATRIX` is experimental, so `request_device` must
//! also get `unsafe { ExperimentalFeatures::enabled() }` (wgpu-types `tokens.rs`). On
//! Vulkan, wgpu-hal (`vulkan/adapter.rs`) queries
//! `vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR`, keeps only subgroup-scope entries
//! whose M, N, K are 8 or 16, whose A and B types match and whose C and result types match
//! (f16, f32, i32, u32), and exposes the feature when that list is non-empty and the device
//! has `vulkanMemoryModel` with device scope (the feature doc's "only 8x8 f32" is stale).
//! The list is `Adapter::cooperative_matrix_properties()`; naga then accepts `enable
//! wgpu_cooperative_matrix;`, `coop_mat8x8` / `coop_mat16x16<f16|f32, A|B|C>` and
//! `coopLoad(T)`, `coopStore(T)`, `coopMultiplyAdd` (the `T` forms are row-major, the plain
//! ones column-major; pointers to any scalar f16/f32 array element, workgroup or storage)
//! and writes SPIR-V with `CooperativeMatrixKHR` under the Vulkan memory model. Metal maps
//! to simdgroup matrices (8x8 only). xkern records the list; the cooperative-matrix
//! matmul is opt-in ([`DeviceOptions::with_coop_matrix`] or `XKERN_WGPU_COOP=on`;
//! `XKERN_WGPU_COOP=off` overrides both): on an H100 it ran at 32.9 TFLOP/s on a 4096³
//! f16 product against 34.8 for the register-tiled kernel (GPU time, same run), so it is
//! not the default until it is faster.
//!
//! Tunables read here, once per device, so that one GPU run can sweep them:
//! `XKERN_WGPU_MATMUL_TILE`, `XKERN_WGPU_ATTN_TILE`, `XKERN_WGPU_DECODE_*` (the split-KV
//! decode attention's plan: `attention::DecodeTuning`), `XKERN_WGPU_TRUSTED`,
//! `XKERN_WGPU_REDUCE_CHUNK` and `XKERN_WGPU_NORM_WG`; a value that does not parse makes
//! the device unavailable with a message naming the variable.
//!
//! Faults: every op runs inside thread-local error scopes (out-of-memory, validation,
//! internal), so a failure becomes an `Err` of the op that caused it, on the thread that
//! called it; the uncaptured-error handler only records (wgpu's default would panic). A
//! lost device sets a flag that every later call checks first, and waits for the GPU are
//! bounded by a timeout, so a dead device is `Err(DeviceLost)`, never a hang.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xkern_core::{Error, Result};

/// How long one wait for the GPU may take before the device is treated as lost. Software
/// rasterisers are slow, but no op of the conformance suite takes a second on lavapipe.
pub(crate) const WAIT_TIMEOUT: Duration = Duration::from_secs(600);

/// What the error message says to install when no adapter is found.
pub(crate) const INSTALL_HINT: &str = "no GPU adapter found: install a GPU driver with Vulkan \
support, or Mesa's software Vulkan driver (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers \
libvulkan1`); set WGPU_BACKEND to choose an API";

/// Options for opening a device (tests use them to force rare paths).
#[derive(Clone, Debug, Default)]
pub struct DeviceOptions {
    /// Case-insensitive substring of the adapter name; `None` reads `XKERN_WGPU_ADAPTER`.
    pub adapter: Option<String>,
    /// Cap on workgroups per grid dimension below the adapter's limit, so that tests can
    /// exercise grid folding on small problems. `None` uses the adapter's limit.
    pub max_workgroups_per_dim: Option<u32>,
    /// Do not request `SHADER_F16` even if offered, as on an adapter without it (tests
    /// the f16 refusal path).
    pub without_f16: bool,
    /// Do not use subgroup operations even if offered (the workgroup-memory trees run
    /// instead). `XKERN_WGPU_SUBGROUPS=off` does the same for every device.
    pub without_subgroups: bool,
    /// Forces the output block of the register-tiled matmul (tests, A/B timing); a block
    /// whose workgroup memory exceeds the device's limit falls back to a smaller one.
    /// `None` reads `XKERN_WGPU_MATMUL_TILE` (`64`, `128x64`, `128`; unset or `auto`:
    /// chosen per product from its shape).
    pub matmul_block: Option<crate::MatmulBlock>,
    /// Request cooperative matrices where offered and run the f16 matmul on them
    /// (opt-in: not yet faster than the register-tiled kernel on the GPUs measured).
    /// `XKERN_WGPU_COOP=on` does the same for every device; `XKERN_WGPU_COOP=off` keeps
    /// them off even when this is set.
    pub with_coop_matrix: bool,
    /// The run-time checks of the kernels whose bounds the host guarantees (the block
    /// matmuls): `None` (the default) lets each kernel drop the checks measured to slow
    /// it (the f16 block kernels drop the index clamps, see matmul.rs); `Some(true)`
    /// drops every check (index clamps, loop bounding, guarded integer division) from all
    /// of them, `Some(false)` keeps every check. `XKERN_WGPU_TRUSTED=on|off` does the
    /// same for every device; a comma list of `bounds`, `loops`, `div` drops only those
    /// checks (A/B timing).
    pub trusted_shaders: Option<bool>,
}

/// The opened device and what it offers; shared by every handle of one backend.
pub(crate) struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) adapter_info: wgpu::AdapterInfo,
    pub(crate) features: wgpu::Features,
    pub(crate) limits: wgpu::Limits,
    /// The cooperative-matrix configurations of the adapter; empty unless the device has
    /// `EXPERIMENTAL_COOPERATIVE_MATRIX`.
    pub(crate) coop: Vec<wgpu::CooperativeMatrixProperties>,
    coop_shape: Option<crate::matmul_coop::CoopShape>,
    /// Why the cooperative-matrix kernel failed to compile, once it has: from then on
    /// the f16 matmul runs on the register-tiled kernel.
    coop_failed: Mutex<Option<String>>,
    /// Tests: run the f16 tiled matmul on the emulated cooperative-matrix kernel with this
    /// shape (lavapipe has no cooperative matrices).
    #[cfg(test)]
    pub(crate) emulate_coop: Mutex<Option<crate::matmul_coop::CoopShape>>,
    /// Effective per-dimension grid limit (the adapter's, or the test cap).
    pub(crate) max_groups: u32,
    /// The forced matmul block, if any (options or `XKERN_WGPU_MATMUL_TILE`).
    pub(crate) matmul_block: Option<crate::MatmulBlock>,
    /// The run-time checks of kernels marked trusted: `None` each kernel's own choice,
    /// else these for all of them (options or `XKERN_WGPU_TRUSTED`).
    pub(crate) trusted: Option<wgpu::ShaderRuntimeChecks>,
    /// Elements per workgroup of large split `vec4` reductions (`XKERN_WGPU_REDUCE_CHUNK`,
    /// for A/B timing; see reduce.rs).
    pub(crate) reduce_big_chunk: usize,
    /// Invocations per workgroup of the normalisations (`XKERN_WGPU_NORM_WG`: 128, the
    /// default, or 256; A/B timing).
    pub(crate) norm_wg: usize,
    /// The decode attention's tunables (`XKERN_WGPU_DECODE_*`, read once here).
    pub(crate) decode: crate::attention::DecodeTuning,
    /// The forced prefill attention tiling, if any (`XKERN_WGPU_ATTN_TILE`).
    pub(crate) attn_tile: Option<crate::attention::FlashTiles>,
    lost: Arc<Mutex<Option<String>>>,
    lost_flag: Arc<AtomicBool>,
    uncaptured: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.adapter_info.name)
            .field("backend", &self.adapter_info.backend)
            .finish_non_exhaustive()
    }
}

/// Cooperative matrices (tensor cores), requested separately from [`wanted_features`]
/// because they need the experimental opt-in.
const COOP: wgpu::Features = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;

/// The features xkern uses when the adapter offers them.
fn wanted_features() -> wgpu::Features {
    wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY
}

/// True when the environment variable `name` says off (`off`, `0`, `false`).
fn env_off(name: &str) -> bool {
    std::env::var(name)
        .is_ok_and(|v| matches!(v.trim().to_lowercase().as_str(), "off" | "0" | "false"))
}

/// The wgpu error for a device refused because of a bad tunable (`reason` names it).
fn unavailable(reason: String) -> Error {
    Error::BackendUnavailable {
        name: "wgpu".into(),
        reason,
    }
}

/// The tunable environment variable `name` through `parse`; `None` when unset, and a
/// value `parse` refuses makes the device unavailable with its message.
fn tunable<T>(
    name: &str,
    parse: impl FnOnce(&str) -> std::result::Result<T, String>,
) -> Result<Option<T>> {
    std::env::var(name)
        .ok()
        .map(|v| parse(&v))
        .transpose()
        .map_err(unavailable)
}

/// The checks kept by `XKERN_WGPU_TRUSTED=v`: `off` keeps every one, `on` drops every
/// one, a comma list of `bounds`, `loops`, `div` drops those.
fn parse_trusted(v: &str) -> std::result::Result<wgpu::ShaderRuntimeChecks, String> {
    let mut checks = wgpu::ShaderRuntimeChecks::checked();
    if matches!(v.trim().to_lowercase().as_str(), "off" | "0" | "false") {
        return Ok(checks);
    }
    for word in v.split(',').map(|w| w.trim().to_lowercase()) {
        match word.as_str() {
            "on" | "1" | "true" => {
                checks.bounds_checks = false;
                checks.force_loop_bounding = false;
                checks.int_div_checks = false;
            }
            "bounds" => checks.bounds_checks = false,
            "loops" => checks.force_loop_bounding = false,
            "div" => checks.int_div_checks = false,
            other => {
                return Err(format!(
                    "XKERN_WGPU_TRUSTED={v:?}: {other:?} is not on, off, bounds, loops or div"
                ));
            }
        }
    }
    Ok(checks)
}

/// True when the environment variable `name` says on (`on`, `1`, `true`).
fn env_on(name: &str) -> bool {
    std::env::var(name)
        .is_ok_and(|v| matches!(v.trim().to_lowercase().as_str(), "on" | "1" | "true"))
}

/// `16x16x16:f16->f32`: one cooperative-matrix configuration as the info notes show it.
pub(crate) fn coop_note(p: &wgpu::CooperativeMatrixProperties) -> String {
    let ty = |t: wgpu::CooperativeScalarType| match t {
        wgpu::CooperativeScalarType::F32 => "f32",
        wgpu::CooperativeScalarType::F16 => "f16",
        wgpu::CooperativeScalarType::I32 => "i32",
        wgpu::CooperativeScalarType::U32 => "u32",
    };
    format!(
        "{}x{}x{}:{}->{}",
        p.m_size,
        p.n_size,
        p.k_size,
        ty(p.ab_type),
        ty(p.cr_type)
    )
}

/// Chooses the adapter: the named one (substring), else high-performance, else any.
fn choose_adapter(instance: &wgpu::Instance, name: Option<&str>) -> Result<wgpu::Adapter> {
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    if let Some(want) = name.filter(|n| !n.is_empty()) {
        let lower = want.to_lowercase();
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&lower))
            .ok_or_else(|| Error::BackendUnavailable {
                name: "wgpu".into(),
                reason: format!(
                    "no adapter name contains {want:?} (XKERN_WGPU_ADAPTER); adapters: {names:?}"
                ),
            });
    }
    let opts = wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        force_fallback_adapter: false,
        compatible_surface: None,
        apply_limit_buckets: false,
    };
    match pollster::block_on(instance.request_adapter(&opts)) {
        Ok(a) => Ok(a),
        // request_adapter skips CPU adapters in some configurations; take any adapter.
        Err(_) => adapters
            .into_iter()
            .next()
            .ok_or_else(|| Error::BackendUnavailable {
                name: "wgpu".into(),
                reason: INSTALL_HINT.into(),
            }),
    }
}

impl Gpu {
    /// Opens the device described by `opts` (see the module documentation).
    pub(crate) fn open(opts: &DeviceOptions) -> Result<Gpu> {
        let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        let instance = wgpu::Instance::new(desc);
        let env_name = std::env::var("XKERN_WGPU_ADAPTER").ok();
        let name = opts.adapter.as_deref().or(env_name.as_deref());
        let adapter = choose_adapter(&instance, name)?;
        let adapter_info = adapter.get_info();
        let mut features = adapter.features() & wanted_features();
        if opts.without_f16 {
            features.remove(wgpu::Features::SHADER_F16);
        }
        if opts.without_subgroups || env_off("XKERN_WGPU_SUBGROUPS") {
            features.remove(wgpu::Features::SUBGROUP);
        }
        let matmul_block = match opts.matmul_block {
            Some(b) => Some(b),
            None => tunable("XKERN_WGPU_MATMUL_TILE", crate::MatmulBlock::parse)?.flatten(),
        };
        let decode = crate::attention::DecodeTuning::from_env().map_err(unavailable)?;
        let attn_tile =
            tunable("XKERN_WGPU_ATTN_TILE", crate::attention::FlashTiles::parse)?.flatten();
        let coop_wanted =
            (opts.with_coop_matrix || env_on("XKERN_WGPU_COOP")) && !env_off("XKERN_WGPU_COOP");
        if coop_wanted && adapter.features().contains(COOP) {
            features |= COOP;
        }
        let limits = adapter.limits();
        let request = |features: wgpu::Features| {
            let experimental_features = if features.contains(COOP) {
                // SAFETY: the opt-in acknowledges that wgpu's experimental features may
                // have bugs. Only cooperative matrices are requested, and only the
                // cooperative-matrix kernel uses them, on configurations the adapter
                // listed (matmul.rs checks the list before choosing that kernel).
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            } else {
                wgpu::ExperimentalFeatures::disabled()
            };
            pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
                label: Some("xkern"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features,
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            }))
        };
        // An experimental feature must never cost the device: if the request with it
        // fails, ask again without it.
        let opened = match request(features) {
            Err(_) if features.contains(COOP) => {
                features.remove(COOP);
                request(features)
            }
            r => r,
        };
        let (device, queue) = opened.map_err(|e| Error::BackendUnavailable {
            name: "wgpu".into(),
            reason: format!("adapter {:?} refused a device: {e}", adapter_info.name),
        })?;
        let coop = if features.contains(COOP) {
            adapter.cooperative_matrix_properties()
        } else {
            Vec::new()
        };
        let lost = Arc::new(Mutex::new(None));
        let lost_flag = Arc::new(AtomicBool::new(false));
        {
            let (lost, flag) = (Arc::clone(&lost), Arc::clone(&lost_flag));
            device.set_device_lost_callback(move |reason, msg| {
                if let Ok(mut l) = lost.lock() {
                    *l = Some(format!("{reason:?}: {msg}"));
                }
                flag.store(true, Ordering::SeqCst);
            });
        }
        let uncaptured = Arc::new(Mutex::new(None));
        {
            let slot = Arc::clone(&uncaptured);
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                if let Ok(mut s) = slot.lock() {
                    s.get_or_insert_with(|| e.to_string());
                }
            }));
        }
        let max_groups = opts
            .max_workgroups_per_dim
            .unwrap_or(u32::MAX)
            .min(limits.max_compute_workgroups_per_dimension)
            .max(1);
        let coop_shape = crate::matmul_coop::coop_shape(&crate::matmul_coop::CoopCaps {
            configs: coop.clone(),
            f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            subgroup_min: adapter_info.subgroup_min_size,
            subgroup_max: adapter_info.subgroup_max_size,
            max_invocations: limits.max_compute_invocations_per_workgroup,
            max_workgroup_size_x: limits.max_compute_workgroup_size_x,
            max_workgroup_bytes: limits.max_compute_workgroup_storage_size,
        });
        let trusted = match opts.trusted_shaders {
            Some(true) => {
                Some(parse_trusted("on").unwrap_or_else(|_| wgpu::ShaderRuntimeChecks::checked()))
            }
            Some(false) => Some(wgpu::ShaderRuntimeChecks::checked()),
            None => tunable("XKERN_WGPU_TRUSTED", parse_trusted)?,
        };
        let reduce_big_chunk = tunable("XKERN_WGPU_REDUCE_CHUNK", crate::reduce::parse_big_chunk)?
            .unwrap_or(crate::reduce::CHUNK_VEC_BIG);
        let norm_wg = tunable("XKERN_WGPU_NORM_WG", |v| match v.trim() {
            "128" => Ok(128),
            "256" if limits.max_compute_invocations_per_workgroup >= 256 => Ok(256),
            other => Err(format!(
                "XKERN_WGPU_NORM_WG={other:?}: expected 128 or 256 (within the adapter's invocation limit)"
            )),
        })?
        .unwrap_or(128);
        Ok(Gpu {
            norm_wg,
            trusted,
            reduce_big_chunk,
            device,
            queue,
            adapter_info,
            features,
            limits,
            coop,
            coop_shape,
            coop_failed: Mutex::new(None),
            #[cfg(test)]
            emulate_coop: Mutex::new(None),
            max_groups,
            matmul_block,
            decode,
            attn_tile,
            lost,
            lost_flag,
            uncaptured,
        })
    }

    /// `Err(DeviceLost)` once the device is gone; every public call checks this first.
    pub(crate) fn check_alive(&self) -> Result<()> {
        if self.lost_flag.load(Ordering::SeqCst) {
            let reason = self
                .lost
                .lock()
                .ok()
                .and_then(|l| l.clone())
                .unwrap_or_else(|| "the device was lost".into());
            return Err(Error::DeviceLost { reason });
        }
        Ok(())
    }

    /// Marks the device lost (also used when a wait times out).
    pub(crate) fn mark_lost(&self, reason: String) {
        if let Ok(mut l) = self.lost.lock() {
            l.get_or_insert(reason);
        }
        self.lost_flag.store(true, Ordering::SeqCst);
    }

    /// Destroys the device, as a driver reset would (tests of the device-lost path).
    pub(crate) fn destroy(&self) {
        self.device.destroy();
        self.mark_lost("Destroyed: the device was destroyed".into());
    }

    /// True when the device has `SHADER_F16`.
    pub(crate) fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// True when reductions use the subgroup trees: the device has `SUBGROUP` and its
    /// subgroups fit the 128-invocation workgroups (lanes past the workgroup would be
    /// inactive, and shuffles from inactive lanes are undefined).
    pub(crate) fn subgroup_trees(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
            && self.adapter_info.subgroup_max_size <= 128
    }

    /// The launch shape of the cooperative-matrix matmul, `None` where it cannot run
    /// (decided at open) or once its kernel has failed to compile.
    pub(crate) fn coop_shape(&self) -> Option<crate::matmul_coop::CoopShape> {
        if self.coop_failed.lock().map_or(true, |f| f.is_some()) {
            return None;
        }
        #[cfg(test)]
        if let Some(s) = self.emulate_coop.lock().ok().and_then(|e| *e) {
            return Some(s);
        }
        self.coop_shape
    }

    /// Records that the cooperative-matrix kernel failed to compile (an experimental
    /// feature on a driver this code never ran on): later matmuls take the fallback,
    /// and the info notes say why.
    pub(crate) fn coop_failed(&self, why: String) {
        if let Ok(mut f) = self.coop_failed.lock() {
            f.get_or_insert(why);
        }
    }

    /// Tests: whether the cooperative-matrix kernel is emulated.
    #[cfg(test)]
    pub(crate) fn coop_emulated(&self) -> bool {
        self.emulate_coop.lock().is_ok_and(|e| e.is_some())
    }

    /// Waits for submission `index` (or everything) with the timeout; a timeout or a
    /// failed poll marks the device lost.
    pub(crate) fn wait(&self, index: Option<wgpu::SubmissionIndex>) -> Result<()> {
        let r = self.device.poll(wgpu::PollType::Wait {
            submission_index: index,
            timeout: Some(WAIT_TIMEOUT),
        });
        match r {
            Ok(_) => self.check_alive(),
            Err(e) => {
                self.mark_lost(format!("waiting for the GPU failed: {e}"));
                self.check_alive()
            }
        }
    }

    /// Runs `f` inside error scopes and converts what they caught into an `Err`.
    /// `bytes` is the allocation size reported if the failure is out-of-memory.
    pub(crate) fn scoped<T>(&self, bytes: u64, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check_alive()?;
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        let i = pollster::block_on(internal.pop());
        self.check_alive()?;
        if o.is_some() {
            return Err(Error::OutOfMemory {
                device: self.label(),
                bytes,
            });
        }
        if let Some(e) = v.or(i) {
            return Err(Error::Backend {
                backend: "wgpu",
                message: e.to_string(),
            });
        }
        if let Some(e) = self.uncaptured.lock().ok().and_then(|mut s| s.take()) {
            return Err(Error::Backend {
                backend: "wgpu",
                message: e,
            });
        }
        out
    }

    /// `wgpu:<adapter>`.
    pub(crate) fn label(&self) -> String {
        format!("wgpu:{}", self.adapter_info.name)
    }

    /// Feature and limit notes for `info()`.
    pub(crate) fn notes(&self) -> Vec<String> {
        let i = &self.adapter_info;
        let l = &self.limits;
        let mut f = vec![
            format!("backend={:?}", i.backend).to_lowercase(),
            format!("device_type={:?}", i.device_type).to_lowercase(),
            format!("driver={} {}", i.driver, i.driver_info),
        ];
        for (flag, name) in [
            (wgpu::Features::SHADER_F16, "shader-f16"),
            (wgpu::Features::SUBGROUP, "subgroup"),
            (wgpu::Features::TIMESTAMP_QUERY, "timestamp-query"),
        ] {
            if self.features.contains(flag) {
                f.push(name.to_string());
            }
        }
        for p in &self.coop {
            f.push(format!("coop-matrix={}", coop_note(p)));
        }
        match (
            self.coop_shape,
            self.coop_failed.lock().ok().and_then(|e| e.clone()),
        ) {
            (Some(_), Some(why)) => f.push(format!("matmul-coop=failed: {why}")),
            (Some(shape), None) => f.push(format!("matmul-coop=sg{}", shape.sg)),
            (None, _) => {}
        }
        f.push(format!(
            "subgroup_size={}..{}",
            i.subgroup_min_size, i.subgroup_max_size
        ));
        f.push(format!("max_buffer_size={}", l.max_buffer_size));
        f.push(format!(
            "max_storage_buffer_binding_size={}",
            l.max_storage_buffer_binding_size
        ));
        f.push(format!(
            "max_compute_workgroup_storage_size={}",
            l.max_compute_workgroup_storage_size
        ));
        f.push(format!(
            "max_compute_invocations_per_workgroup={}",
            l.max_compute_invocations_per_workgroup
        ));
        f.push(format!(
            "max_compute_workgroups_per_dimension={}",
            l.max_compute_workgroups_per_dimension
        ));
        f
    }
}
