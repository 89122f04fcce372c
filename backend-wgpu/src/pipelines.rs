//! Kernels: WGSL assembly, the pipeline cache, explicit bind group layouts, and recording
//! dispatches (with grid folding) into one command encoder per op.
//!
//! A kernel's WGSL is its `.wgsl` file with three kinds of substitution made from Rust:
//! `//!BINDINGS` becomes the storage declarations with a typed loader per input
//! (`load_<name>(i) -> f32`, decoding f32, f16 through `shader-f16`, or bf16 packed two per
//! u32 word), `{{NAME}}` placeholders become constants (workgroup size, activation...), and
//! `common.wgsl` (NaN tests, exact f16/bf16 bit conversions, grid folding) is prepended.
//! Each (kernel, dtype, variant) is compiled once and cached by its key.
//!
//! Grid folding: every kernel numbers its workgroups linearly (`group_index`), so a grid
//! of `G` groups is dispatched as `x = min(G, limit)`, `y = min(⌈G/x⌉, limit)`,
//! `z = ⌈G/(x·y)⌉` and groups past `G` exit at once; with WebGPU's guaranteed 65,535 per
//! dimension every u32 count of groups fits.

use crate::buffers::{PooledBuffer, WgpuStorage};
use crate::device::Gpu;
use crate::timing::{Stamp, Timer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;
use xkern_core::{DType, Error, Result};

/// Shared WGSL: NaN tests, bit-exact conversions, grid folding.
pub(crate) const COMMON_WGSL: &str = include_str!("common.wgsl");

/// How a kernel binds one buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A read-only input decoded to f32 by `load_<name>`.
    Input(DType),
    /// A read-only input bound as four-element vectors (`vec4<f32>`, `vec4<f16>`, or
    /// `vec2<u32>` holding four bf16), decoded by `load4_<name>(i) -> vec4<f32>`, which
    /// returns elements `4i .. 4i + 3`: one 16- or 8-byte load instead of four (the
    /// parameter is not named `q`, which is a binding of the attention kernels). Only
    /// for kernels whose host side guarantees that every vector read lies inside the
    /// tensor.
    InputVec4(DType),
    /// A read-only array of raw 32-bit words (`array<u32>`).
    Words,
    /// The read-write output, `array<f32>` (f32 results; 16-bit outputs go through a
    /// cast).
    OutF32,
    /// The read-write output as raw words (`array<u32>`).
    OutWords,
    /// The read-write f32 output as four-element vectors (`array<vec4<f32>>`): 16-byte
    /// stores, for kernels whose output length is a multiple of 4.
    OutVec4,
}

/// One binding: its WGSL name and kind.
pub(crate) type Binding = (&'static str, Slot);

/// The WGSL declarations of `bindings` (bindings 0..n; the params uniform comes last).
fn declarations(bindings: &[Binding]) -> String {
    let mut s = String::new();
    for (i, (name, slot)) in bindings.iter().enumerate() {
        let decl = |access: &str, ty: &str| {
            format!("@group(0) @binding({i}) var<storage, {access}> {name}: array<{ty}>;\n")
        };
        match slot {
            Slot::Input(DType::F32) => {
                s += &decl("read", "f32");
                s += &format!("fn load_{name}(i: u32) -> f32 {{ return {name}[i]; }}\n");
            }
            Slot::Input(DType::F16) => {
                s += &decl("read", "f16");
                s += &format!("fn load_{name}(i: u32) -> f32 {{ return f32({name}[i]); }}\n");
            }
            Slot::Input(DType::BF16) => {
                s += &decl("read", "u32");
                s += &format!(
                    "fn load_{name}(i: u32) -> f32 {{ return bitcast<f32>(half_bits({name}[i >> 1u], i) << 16u); }}\n"
                );
            }
            Slot::InputVec4(DType::F32) => {
                s += &decl("read", "vec4<f32>");
                s += &format!("fn load4_{name}(i: u32) -> vec4<f32> {{ return {name}[i]; }}\n");
            }
            Slot::InputVec4(DType::F16) => {
                s += &decl("read", "vec4<f16>");
                s += &format!(
                    "fn load4_{name}(i: u32) -> vec4<f32> {{ return vec4<f32>({name}[i]); }}\n"
                );
            }
            Slot::InputVec4(DType::BF16) => {
                // A bf16 is the high half of an f32: the low element of a word shifts up,
                // the high element is masked in place.
                s += &decl("read", "vec2<u32>");
                s += &format!(
                    "fn load4_{name}(i: u32) -> vec4<f32> {{ let w = {name}[i]; return vec4<f32>(bitcast<f32>(w.x << 16u), bitcast<f32>(w.x & 0xffff0000u), bitcast<f32>(w.y << 16u), bitcast<f32>(w.y & 0xffff0000u)); }}\n"
                );
            }
            Slot::InputVec4(DType::U32) => {
                s += &decl("read", "vec4<u32>");
                s += &format!(
                    "fn load4_{name}(i: u32) -> vec4<f32> {{ return vec4<f32>({name}[i]); }}\n"
                );
            }
            Slot::Input(DType::U32) => {
                s += &decl("read", "u32");
                s += &format!("fn load_{name}(i: u32) -> f32 {{ return f32({name}[i]); }}\n");
            }
            Slot::Words => s += &decl("read", "u32"),
            Slot::OutF32 => s += &decl("read_write", "f32"),
            Slot::OutWords => s += &decl("read_write", "u32"),
            Slot::OutVec4 => s += &decl("read_write", "vec4<f32>"),
        }
    }
    s += &format!(
        "@group(0) @binding({}) var<uniform> P: Params;\n",
        bindings.len()
    );
    s
}

/// The complete WGSL of a kernel: `enable f16;` if needed, common code, declarations,
/// and the body with `{{KEY}}` placeholders replaced.
pub(crate) fn assemble(body: &str, bindings: &[Binding], constants: &[(&str, String)]) -> String {
    let f16 = bindings
        .iter()
        .any(|(_, s)| matches!(s, Slot::Input(DType::F16) | Slot::InputVec4(DType::F16)));
    let mut src = String::new();
    if f16 {
        src += "enable f16;\n";
    }
    src += COMMON_WGSL;
    src += &body.replace("//!BINDINGS", &declarations(bindings));
    for (k, v) in constants {
        src = src.replace(&format!("{{{{{k}}}}}"), v);
    }
    src
}

/// A byte range of a storage, bound to one kernel binding.
#[derive(Clone, Copy)]
pub(crate) struct Bound<'a> {
    pub(crate) storage: &'a WgpuStorage,
    /// Byte offset (a multiple of `min_storage_buffer_offset_alignment`).
    pub(crate) offset: u64,
    /// Bytes bound (a multiple of 4, at most the binding limit); 0 binds the whole
    /// buffer (an empty tensor's buffer, which kernels do not read).
    pub(crate) bytes: u64,
}

/// A compiled kernel.
pub(crate) struct Kernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    bindings: usize,
}

/// The pipeline cache: one compiled kernel per key.
#[derive(Default)]
pub(crate) struct Pipelines {
    cache: Mutex<HashMap<String, Arc<Kernel>>>,
}

impl Pipelines {
    /// Number of compiled kernels (tests check that repeated calls compile nothing).
    pub(crate) fn len(&self) -> usize {
        self.cache.lock().map_or(0, |c| c.len())
    }

    /// The keys of the compiled kernels (tests check which variants ran).
    #[cfg(test)]
    pub(crate) fn keys(&self) -> Vec<String> {
        self.cache
            .lock()
            .map_or_else(|_| Vec::new(), |c| c.keys().cloned().collect())
    }
}

/// How a kernel's shader module is built.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Checks {
    /// With wgpu's run-time checks: indices into fixed-size arrays clamped, loops
    /// bounded, buffer accesses bounds-checked where the platform does not.
    Checked,
    /// A trusted module with only these checks (by default: the device may override
    /// them). Only for kernels whose every index stays in bounds, every loop terminates
    /// and no divisor is zero by construction, as their module docs argue; see
    /// [`Gpu::kernel_with`].
    Trusted(wgpu::ShaderRuntimeChecks),
}

impl Gpu {
    /// The kernel for `key`, compiling `source()` on first use, with wgpu's run-time
    /// checks.
    pub(crate) fn kernel(
        &self,
        cache: &Pipelines,
        key: &str,
        bindings: &[Binding],
        source: impl FnOnce() -> String,
    ) -> Result<Arc<Kernel>> {
        self.kernel_with(cache, key, bindings, Checks::Checked, source)
    }

    /// [`Gpu::kernel`], built as `checks` says, or for a trusted kernel with the checks
    /// the device was opened with, if any. A caller asking for [`Checks::Trusted`] vouches for its
    /// WGSL: every storage-buffer access is guarded by explicit comparisons with the
    /// sizes the host bound (so the clamps wgpu would add never change an index), every
    /// workgroup and private array index is in range by the kernel's constants, every
    /// loop counts up by a positive step to a bound that cannot wrap (the host keeps
    /// sizes below 2³² minus a tile through `fit_u32`), and no divisor is zero.
    pub(crate) fn kernel_with(
        &self,
        cache: &Pipelines,
        key: &str,
        bindings: &[Binding],
        checks: Checks,
        source: impl FnOnce() -> String,
    ) -> Result<Arc<Kernel>> {
        if let Some(k) = cache.cache.lock().ok().and_then(|c| c.get(key).cloned()) {
            return Ok(k);
        }
        let src = source();
        let kernel = self
            .scoped(0, || {
                let mut entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
                    .iter()
                    .enumerate()
                    .map(|(i, (_, slot))| wgpu::BindGroupLayoutEntry {
                        binding: i as u32,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Storage {
                                read_only: !matches!(
                                    slot,
                                    Slot::OutF32 | Slot::OutWords | Slot::OutVec4
                                ),
                            },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    })
                    .collect();
                entries.push(wgpu::BindGroupLayoutEntry {
                    binding: bindings.len() as u32,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                });
                let layout =
                    self.device
                        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                            label: Some(key),
                            entries: &entries,
                        });
                let pl = self
                    .device
                    .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: Some(key),
                        bind_group_layouts: &[Some(&layout)],
                        immediate_size: 0,
                    });
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(key),
                    source: wgpu::ShaderSource::Wgsl(src.into()),
                };
                let runtime = match (checks, self.trusted) {
                    (Checks::Checked, _) => None,
                    (Checks::Trusted(_), Some(forced)) => Some(forced),
                    (Checks::Trusted(own), None) => Some(own),
                };
                let all_on = |c: &wgpu::ShaderRuntimeChecks| {
                    c.bounds_checks && c.force_loop_bounding && c.int_div_checks
                };
                let module = if let Some(runtime) = runtime.filter(|c| !all_on(c)) {
                    // SAFETY: only kernels whose WGSL keeps every index in bounds, every
                    // loop finite and every divisor non-zero by construction ask for
                    // Checks::Trusted (the contract of `kernel_with`, argued per kernel in
                    // its module doc); the checks dropped would never change what such a
                    // kernel does.
                    unsafe { self.device.create_shader_module_trusted(desc, runtime) }
                } else {
                    self.device.create_shader_module(desc)
                };
                let pipeline =
                    self.device
                        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                            label: Some(key),
                            layout: Some(&pl),
                            module: &module,
                            entry_point: Some("main"),
                            compilation_options: Default::default(),
                            cache: None,
                        });
                Ok(Arc::new(Kernel {
                    pipeline,
                    layout,
                    bindings: bindings.len(),
                }))
            })
            .map_err(|e| match e {
                Error::Backend { message, .. } => Error::Backend {
                    backend: "wgpu",
                    message: format!("kernel {key} failed to compile: {message}"),
                },
                e => e,
            })?;
        if let Ok(mut c) = cache.cache.lock() {
            c.entry(key.to_string())
                .or_insert_with(|| Arc::clone(&kernel));
        }
        Ok(kernel)
    }
}

/// Kernel parameters: 32-bit scalars in the order of the WGSL `Params` struct, whose
/// first field is always `groups` (the linear workgroup count).
#[derive(Default)]
pub(crate) struct Params(Vec<u32>);

impl Params {
    /// Appends an index or count, which must fit u32.
    pub(crate) fn u(mut self, v: usize) -> Result<Self> {
        self.0.push(fit_u32(v)?);
        Ok(self)
    }
    /// Appends an f32.
    pub(crate) fn f(mut self, v: f32) -> Self {
        self.0.push(v.to_bits());
        self
    }
}

/// `v` as u32, or an error saying that the tensor is too large for 32-bit indexing.
pub(crate) fn fit_u32(v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Backend {
        backend: "wgpu",
        message: format!("index {v} does not fit the 32-bit addressing of WGSL kernels"),
    })
}

/// Folds `groups` workgroups into `[x, y, z]`, each at most `limit`, covering at least
/// `groups` (kernels skip the excess). With WebGPU's minimum limit of 65,535 the three
/// dimensions cover every u32 count.
pub(crate) fn fold_grid(groups: u32, limit: u32) -> [u32; 3] {
    let limit = u64::from(limit.max(1));
    let g = u64::from(groups);
    let x = g.min(limit);
    let rest = g.div_ceil(x.max(1));
    let y = rest.min(limit);
    let z = rest.div_ceil(y.max(1));
    // z ≤ limit whenever groups ≤ limit³; for tiny test limits, clamp (callers check).
    [x as u32, y as u32, z.min(u64::from(u32::MAX)) as u32]
}

/// One op's recording: an encoder with one compute pass holding every dispatch of the
/// op (wgpu orders dispatches of a pass that share a buffer, inserting the barriers),
/// plus the buffers that must outlive the submit and, when timing is on, the pass's
/// timestamp queries.
pub(crate) struct Recording<'g> {
    gpu: &'g Gpu,
    timer: &'g Timer,
    encoder: wgpu::CommandEncoder,
    pass: Option<wgpu::ComputePass<'static>>,
    stamp: Option<Stamp>,
    keep: Vec<Arc<PooledBuffer>>,
    uniforms: Vec<wgpu::Buffer>,
}

impl<'g> Recording<'g> {
    pub(crate) fn new(gpu: &'g Gpu, timer: &'g Timer) -> Self {
        Recording {
            gpu,
            timer,
            encoder: gpu.device.create_command_encoder(&Default::default()),
            pass: None,
            stamp: timer.stamp(gpu),
            keep: Vec::new(),
            uniforms: Vec::new(),
        }
    }

    /// The recording's compute pass, begun on first use (with the timestamp writes when
    /// the op is timed).
    fn pass(&mut self) -> &mut wgpu::ComputePass<'static> {
        let Recording {
            encoder,
            pass,
            stamp,
            ..
        } = self;
        pass.get_or_insert_with(|| {
            let timestamp_writes = stamp.as_ref().map(|s| wgpu::ComputePassTimestampWrites {
                query_set: &s.set,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            });
            encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("xkern-op"),
                    timestamp_writes,
                })
                .forget_lifetime()
        })
    }

    /// Keeps `s`'s buffer alive until the recording is submitted.
    pub(crate) fn keep(&mut self, s: &WgpuStorage) {
        self.keep.push(Arc::clone(&s.buf));
    }

    /// Records one dispatch of `groups` workgroups (folded into two dimensions when it
    /// exceeds the per-dimension limit) with `buffers` bound in order and `params`.
    pub(crate) fn dispatch(
        &mut self,
        kernel: &Kernel,
        buffers: &[&WgpuStorage],
        groups: usize,
        params: Params,
    ) -> Result<()> {
        let whole: Vec<Bound<'_>> = buffers
            .iter()
            .map(|b| Bound {
                storage: b,
                offset: 0,
                bytes: b.bytes,
            })
            .collect();
        self.dispatch_ranges(kernel, &whole, groups, params)
    }

    /// [`Recording::dispatch`] with each buffer bound from a byte range: how ops that
    /// allow it process a tensor larger than one binding, a chunk at a time. Offsets
    /// must be multiples of the adapter's `min_storage_buffer_offset_alignment`.
    pub(crate) fn dispatch_ranges(
        &mut self,
        kernel: &Kernel,
        buffers: &[Bound<'_>],
        groups: usize,
        params: Params,
    ) -> Result<()> {
        if groups == 0 {
            return Ok(());
        }
        if buffers.len() != kernel.bindings {
            return Err(Error::Backend {
                backend: "wgpu",
                message: "kernel bound with the wrong number of buffers".into(),
            });
        }
        let limit = self.gpu.limits.max_storage_buffer_binding_size;
        let align = u64::from(self.gpu.limits.min_storage_buffer_offset_alignment);
        for b in buffers {
            if b.offset % align.max(1) != 0 || b.offset + b.bytes > b.storage.bytes {
                return Err(Error::Backend {
                    backend: "wgpu",
                    message: format!(
                        "internal: binding range {}+{} of a {}-byte buffer (alignment {align})",
                        b.offset, b.bytes, b.storage.bytes
                    ),
                });
            }
            if b.bytes > limit {
                return Err(Error::Backend {
                    backend: "wgpu",
                    message: format!(
                        "a tensor of {} bytes exceeds this adapter's storage binding limit of {limit} bytes; this op cannot split it",
                        b.bytes
                    ),
                });
            }
        }
        let g = fit_u32(groups)?;
        let max = self.gpu.max_groups;
        let [gx, gy, gz] = fold_grid(g, max);
        if gz > max {
            return Err(Error::Backend {
                backend: "wgpu",
                message: format!("{groups} workgroups exceed the {max}³ grid"),
            });
        }
        let mut words = vec![g];
        words.extend(params.0);
        words.resize(words.len().div_ceil(4).max(1) * 4, 0);
        let uniform = self
            .gpu
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("xkern-params"),
                contents: bytemuck::cast_slice(&words),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.storage.binding_range(b.offset, b.bytes),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: buffers.len() as u32,
            resource: uniform.as_entire_binding(),
        });
        let bind_group = self
            .gpu
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &kernel.layout,
                entries: &entries,
            });
        let pass = self.pass();
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(gx, gy, gz);
        for b in buffers {
            self.keep.push(Arc::clone(&b.storage.buf));
        }
        self.uniforms.push(uniform);
        Ok(())
    }

    /// Submits the recording (no wait); temporaries go back to the pool afterwards.
    pub(crate) fn submit(self) -> wgpu::SubmissionIndex {
        let Recording {
            gpu,
            timer,
            mut encoder,
            pass,
            stamp,
            keep,
            uniforms,
        } = self;
        // A pass that never began wrote no timestamps: nothing to resolve or time.
        let began = pass.is_some();
        drop(pass);
        let stamp = stamp.filter(|_| began);
        if let Some(s) = &stamp {
            Timer::resolve(&mut encoder, s);
        }
        let index = gpu.queue.submit([encoder.finish()]);
        if let Some(s) = stamp {
            timer.submitted(s);
        }
        drop(keep);
        drop(uniforms);
        index
    }
}

#[cfg(test)]
mod tests {
    use super::fold_grid;

    #[test]
    fn grids_fold_into_limits_and_cover_every_group() {
        for (g, limit) in [
            (1, 65535),
            (65535, 65535),
            (65536, 65535),
            (u32::MAX, 65535),
            (100, 7),
            (343, 7),
            (29791, 31),
            (0, 5),
        ] {
            let [x, y, z] = fold_grid(g, limit);
            assert!(
                x <= limit && y <= limit && z <= limit,
                "{g} at {limit}: {x}×{y}×{z}"
            );
            let cover = u64::from(x) * u64::from(y) * u64::from(z);
            assert!(
                cover >= u64::from(g),
                "{g} at {limit}: {x}×{y}×{z} covers {cover}"
            );
            // No whole empty slab: at most x·y − 1 excess groups.
            assert!(cover - u64::from(g) < u64::from(x) * u64::from(y) || g == 0);
        }
    }
}
