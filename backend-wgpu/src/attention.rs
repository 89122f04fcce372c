//! Fused attention (`attention.wgsl`): flash-style online softmax, memory linear in the
//! sequence lengths, causal (bottom-right), GQA/MQA and decode (`Sq = 1`) in one kernel.
//!
//! Grid: one workgroup per query row and chunk of 256 value features (linear, folded);
//! each chunk recomputes its scores, which keeps any `Dv` correct with a fixed register
//! budget. Straightforward by design; issue 7 tiles queries for speed.

use crate::WgpuBackend;
use crate::buffers::WgpuStorage;
use crate::pipelines::{Params, Slot, assemble};
use xkern_core::{AttentionSpec, DType, Result, View4};

const ATTENTION_WGSL: &str = include_str!("attention.wgsl");
/// Output features per workgroup: 64 invocations × 4 accumulators.
const DV_CHUNK: usize = 256;

fn bindings(dtype: DType) -> [(&'static str, Slot); 4] {
    [
        ("q", Slot::Input(dtype)),
        ("k", Slot::Input(dtype)),
        ("v", Slot::Input(dtype)),
        ("out", Slot::OutF32),
    ]
}

/// The WGSL of attention for `dtype` (also used by the naga tests).
pub(crate) fn attention_source(dtype: DType) -> String {
    assemble(ATTENTION_WGSL, &bindings(dtype), &[])
}

fn view(p: Params, v: &View4) -> Result<Params> {
    p.u(v.offset)?
        .u(v.strides[0])?
        .u(v.strides[1])?
        .u(v.strides[2])?
        .u(v.strides[3])
}

impl WgpuBackend {
    /// [`xkern_core::Backend::attention`].
    pub(crate) fn attention_impl(
        &self,
        spec: &AttentionSpec,
        q: &WgpuStorage,
        k: &WgpuStorage,
        v: &WgpuStorage,
    ) -> Result<WgpuStorage> {
        self.check_dtype("attention", spec.dtype)?;
        let rows = spec.batch * spec.q_heads * spec.q_seq;
        let len = rows * spec.v_head_dim;
        let kernel = self.kernel(
            &format!("attention/{}", spec.dtype),
            &bindings(spec.dtype),
            || attention_source(spec.dtype),
        )?;
        self.record(|rec| {
            let out = self.alloc_storage(DType::F32, len)?;
            let chunks = spec.v_head_dim.div_ceil(DV_CHUNK);
            let group = spec.q_heads.checked_div(spec.kv_heads).unwrap_or(1);
            let params = Params::default()
                .u(spec.q_heads)?
                .u(group.max(1))?
                .u(spec.q_seq)?
                .u(spec.kv_seq)?
                .u(spec.head_dim)?
                .u(spec.v_head_dim)?
                .f(spec.scale)
                .u(usize::from(spec.causal))?
                .u(chunks)?;
            let params = view(view(view(params, &spec.q)?, &spec.k)?, &spec.v)?;
            rec.dispatch(&kernel, &[q, k, v, &out], rows * chunks, params)?;
            self.finish_f32(rec, out, spec.dtype, len)
        })
    }
}
