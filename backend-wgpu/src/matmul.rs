//! Batched matmul with the fused epilogue (`matmul.wgsl`).
//!
//! Algorithm: one 16×16 output tile per workgroup, K walked in steps of 16 through
//! workgroup memory, f32 accumulation; bias and activation applied before the single
//! store. Batches index a host-computed table of operand offsets, which covers any
//! broadcast or strided batch layout with one kernel. The grid is linear
//! (`tiles_n · tiles_m · batch` groups, folded). A straightforward tiled kernel: issue 7
//! replaces it with a register-tiled one.

use crate::WgpuBackend;
use crate::buffers::WgpuStorage;
use crate::pipelines::{Params, Slot, assemble};
use xkern_core::{Activation, DType, MatmulSpec, Result};

const MATMUL_WGSL: &str = include_str!("matmul.wgsl");
const TILE: usize = 16;

fn bindings(dtype: DType) -> [(&'static str, Slot); 5] {
    [
        ("a", Slot::Input(dtype)),
        ("b", Slot::Input(dtype)),
        ("bias", Slot::Input(dtype)),
        ("offs", Slot::Words),
        ("out", Slot::OutF32),
    ]
}

fn act_code(act: Option<Activation>) -> u32 {
    match act {
        None => 0,
        Some(Activation::Relu) => 1,
        Some(Activation::Gelu) => 2,
        Some(Activation::Silu) => 3,
    }
}

/// The WGSL of one matmul variant (also used by the naga tests).
pub(crate) fn matmul_source(dtype: DType, act: Option<Activation>, bias: bool) -> String {
    assemble(
        MATMUL_WGSL,
        &bindings(dtype),
        &[
            ("ACT", act_code(act).to_string()),
            ("BIAS", u32::from(bias).to_string()),
        ],
    )
}

impl WgpuBackend {
    /// [`xkern_core::Backend::matmul`].
    pub(crate) fn matmul_impl(
        &self,
        spec: &MatmulSpec,
        a: &WgpuStorage,
        b: &WgpuStorage,
        bias: Option<&WgpuStorage>,
    ) -> Result<WgpuStorage> {
        self.check_dtype("matmul", spec.dtype)?;
        let (batch, m, n) = (spec.batch(), spec.m, spec.n);
        let len = batch * m * n;
        let mut offs = Vec::with_capacity(2 * batch);
        for i in 0..batch {
            offs.push(crate::pipelines::fit_u32(spec.a_offset(i))?);
            offs.push(crate::pipelines::fit_u32(spec.b_offset(i))?);
        }
        let offs = self.upload_u32(&offs)?;
        let has_bias = bias.is_some();
        let key = format!(
            "matmul/{}/{}/{}",
            spec.dtype,
            act_code(spec.activation),
            u32::from(has_bias)
        );
        let kernel = self.kernel(&key, &bindings(spec.dtype), || {
            matmul_source(spec.dtype, spec.activation, has_bias)
        })?;
        let (bias_off, bias_stride) = spec.bias.as_ref().map_or((0, 0), |v| (v.offset, v.stride));
        self.record(|rec| {
            let out = self.alloc_storage(DType::F32, len)?;
            let (tiles_m, tiles_n) = (m.div_ceil(TILE), n.div_ceil(TILE));
            let params = Params::default()
                .u(m)?
                .u(n)?
                .u(spec.k)?
                .u(spec.a.row_stride)?
                .u(spec.a.col_stride)?
                .u(spec.b.row_stride)?
                .u(spec.b.col_stride)?
                .u(bias_off)?
                .u(bias_stride)?
                .u(tiles_m)?
                .u(tiles_n)?;
            let groups = tiles_m * tiles_n * batch;
            rec.dispatch(
                &kernel,
                &[a, b, bias.unwrap_or(a), &offs, &out],
                groups,
                params,
            )?;
            self.finish_f32(rec, out, spec.dtype, len)
        })
    }
}
