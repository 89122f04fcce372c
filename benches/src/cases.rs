//! Benchmark cases: the JSON schema of `../shared/bench/cases.json` and the built-in
//! suites, which are files of that same schema compiled into the binary.
//!
//! A case is `{id, op, dtype, params}`; `params` by op:
//! - `matmul`: `batch, m, k, n, trans_b` (B stored `[n, k]` and read through `.t()`).
//! - `attention`: `batch, q_heads, kv_heads, q_seq, kv_seq, head_dim, causal`
//!   (layout BHSD, scale 1/√head_dim; other keys such as `layout`, `scale`, `acc` are
//!   accepted and must agree with that).
//! - `reduce`: `kind` (sum, mean, max, min, argmax, argmin, logsumexp, softmax,
//!   log_softmax, rms_norm), `shape`, `axis` (an index, or null for all axes).
//! - `attention_block`: `batch, seq, hidden, q_heads, kv_heads, head_dim`: one Llama-style
//!   block (see `block.rs`).

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use xkern::DType;

/// One case as written in a cases file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Case {
    /// Unique name.
    pub id: String,
    /// `f32`, `f16` or `bf16`.
    pub dtype: String,
    /// The op and its parameters.
    #[serde(flatten)]
    pub workload: Workload,
}

/// The op of a case with its parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", content = "params", rename_all = "snake_case")]
pub enum Workload {
    /// `[batch, m, k] @ [batch, k, n]`.
    Matmul {
        /// Independent matrices.
        batch: usize,
        /// Rows of A.
        m: usize,
        /// Inner dimension.
        k: usize,
        /// Columns of B.
        n: usize,
        /// B stored `[n, k]` and transposed by view.
        #[serde(default)]
        trans_b: bool,
        /// Accumulation dtype if given; only `f32` is offered.
        #[serde(default)]
        acc: Option<String>,
    },
    /// Fused attention.
    Attention {
        /// Batch.
        batch: usize,
        /// Query heads.
        q_heads: usize,
        /// Key/value heads.
        kv_heads: usize,
        /// Query length.
        q_seq: usize,
        /// Key/value length.
        kv_seq: usize,
        /// Head dimension.
        head_dim: usize,
        /// Bottom-right causal mask.
        causal: bool,
        /// Layout; only `BHSD`.
        #[serde(default)]
        layout: Option<String>,
        /// Scale; only `1/sqrt(head_dim)`.
        #[serde(default)]
        scale: Option<String>,
    },
    /// A reduction or normalisation.
    Reduce {
        /// What to compute.
        kind: String,
        /// Input shape.
        shape: Vec<usize>,
        /// Axis, or null for all axes.
        axis: Option<usize>,
    },
    /// One transformer attention block.
    AttentionBlock {
        /// Batch.
        batch: usize,
        /// Sequence length.
        seq: usize,
        /// Model width.
        hidden: usize,
        /// Query heads.
        q_heads: usize,
        /// Key/value heads.
        kv_heads: usize,
        /// Head dimension.
        head_dim: usize,
    },
}

impl Workload {
    /// The op name as written in the file.
    pub fn op(&self) -> &'static str {
        match self {
            Workload::Matmul { .. } => "matmul",
            Workload::Attention { .. } => "attention",
            Workload::Reduce { .. } => "reduce",
            Workload::AttentionBlock { .. } => "attention_block",
        }
    }
}

impl Case {
    /// The dtype, parsed.
    pub fn dtype(&self) -> anyhow::Result<DType> {
        DType::parse(&self.dtype)
            .filter(|d| d.is_float())
            .with_context(|| {
                format!(
                    "case {}: dtype {:?} is not f32, f16 or bf16",
                    self.id, self.dtype
                )
            })
    }

    /// Checks the parameters beyond what the schema types enforce.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.dtype()?;
        match &self.workload {
            Workload::Matmul { acc, .. } => {
                if acc.as_deref().is_some_and(|a| a != "f32") {
                    bail!("case {}: only f32 accumulation is offered", self.id);
                }
            }
            Workload::Attention { layout, scale, .. } => {
                if layout.as_deref().is_some_and(|l| l != "BHSD") {
                    bail!(
                        "case {}: only the BHSD layout is described by this schema",
                        self.id
                    );
                }
                if scale.as_deref().is_some_and(|s| s != "1/sqrt(head_dim)") {
                    bail!(
                        "case {}: only scale 1/sqrt(head_dim) is described by this schema",
                        self.id
                    );
                }
            }
            Workload::Reduce { kind, shape, axis } => {
                if crate::workload::ReduceOp::parse(kind).is_none() {
                    bail!("case {}: unknown reduction kind {kind:?}", self.id);
                }
                if axis.is_some_and(|a| a >= shape.len()) {
                    bail!(
                        "case {}: axis {axis:?} out of range for shape {shape:?}",
                        self.id
                    );
                }
            }
            Workload::AttentionBlock {
                hidden,
                q_heads,
                head_dim,
                ..
            } => {
                if q_heads * head_dim != *hidden {
                    bail!("case {}: q_heads × head_dim must equal hidden", self.id);
                }
            }
        }
        Ok(())
    }
}

/// Parses a cases file (a JSON array of cases) and validates every case.
pub fn parse(text: &str, origin: &str) -> anyhow::Result<Vec<Case>> {
    let cases: Vec<Case> =
        serde_json::from_str(text).with_context(|| format!("parsing {origin}"))?;
    for c in &cases {
        c.validate()?;
    }
    let mut ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        bail!("{origin}: case id {} appears twice", w[0]);
    }
    Ok(cases)
}

/// The reference list (a copy of `../shared/bench/cases.json`).
pub const REFERENCE: &str = include_str!("../cases/reference.json");
const QUICK: &str = include_str!("../cases/quick.json");
const FULL_EXTRA: &str = include_str!("../cases/full-extra.json");

/// A built-in suite: `quick` (small sizes, under two minutes), `standard` (the reference
/// list), `full` (the reference list and larger or extra cases).
pub fn suite(name: &str) -> anyhow::Result<Vec<Case>> {
    match name {
        "quick" => parse(QUICK, "the quick suite"),
        "standard" => parse(REFERENCE, "the standard suite"),
        "full" => {
            let mut c = parse(REFERENCE, "the standard suite")?;
            c.extend(parse(FULL_EXTRA, "the full suite")?);
            Ok(c)
        }
        other => bail!("unknown suite {other:?}: expected quick, standard or full"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_suites_parse() {
        assert_eq!(suite("standard").unwrap().len(), 31);
        assert!(suite("quick").unwrap().len() >= 10);
        assert!(suite("full").unwrap().len() > 31);
        assert!(suite("huge").is_err());
    }

    /// The case files that are only run elsewhere (the timing-only Trainium targets, the
    /// real-GPU check, its smoke twin, the matmul-block A/B cases and the CPU's 16-bit
    /// cases) must parse here; the smoke file mirrors the GPU check case by case (same op
    /// and dtype, `_smoke` ids), so its run tests the script.
    #[test]
    fn external_case_files_parse() {
        let targets = parse(
            include_str!("../cases/neuron-targets.json"),
            "neuron-targets",
        );
        assert!(targets.unwrap().len() >= 10);
        let gpu = parse(include_str!("../cases/gpu-check.json"), "gpu-check").unwrap();
        // The A/B timing of the wgpu matmul blocks (XKERN_WGPU_MATMUL_TILE).
        let blocks = parse(include_str!("../cases/gpu-matmul-blocks.json"), "blocks");
        assert_eq!(blocks.unwrap().len(), 8);
        // The CPU's 16-bit paths (f16 and bf16 twins of each case).
        let sixteen = parse(include_str!("../cases/cpu-16bit.json"), "cpu-16bit").unwrap();
        assert_eq!(sixteen.len(), 26);
        // The CPU's inference shapes: decode (MHA, GQA, MQA), a few queries per head,
        // bf16 prefill, small-M products.
        let inference = parse(include_str!("../cases/cpu-inference.json"), "cpu-inference");
        assert_eq!(inference.unwrap().len(), 27);
        let smoke = parse(include_str!("../cases/gpu-check-smoke.json"), "smoke").unwrap();
        for s in &smoke {
            let full =
                s.id.strip_suffix("_smoke")
                    .expect("smoke ids end in _smoke");
            let g = gpu
                .iter()
                .find(|g| g.id == full)
                .expect("a GPU case per smoke case");
            assert_eq!(g.workload.op(), s.workload.op());
            assert_eq!(g.dtype().unwrap(), s.dtype().unwrap());
        }
    }

    #[test]
    fn bad_cases_are_refused() {
        let bad_axis = r#"[{"id": "x", "op": "reduce", "dtype": "f32", "params": {"kind": "sum", "shape": [4], "axis": 1}}]"#;
        assert!(parse(bad_axis, "t").is_err());
        let bad_kind = r#"[{"id": "x", "op": "reduce", "dtype": "f32", "params": {"kind": "median", "shape": [4], "axis": 0}}]"#;
        assert!(parse(bad_kind, "t").is_err());
        let bad_dtype = r#"[{"id": "x", "op": "matmul", "dtype": "u32", "params": {"batch": 1, "m": 1, "k": 1, "n": 1}}]"#;
        assert!(parse(bad_dtype, "t").is_err());
        let dup = r#"[{"id": "x", "op": "matmul", "dtype": "f32", "params": {"batch": 1, "m": 1, "k": 1, "n": 1}},
                      {"id": "x", "op": "matmul", "dtype": "f32", "params": {"batch": 1, "m": 1, "k": 1, "n": 1}}]"#;
        assert!(parse(dup, "t").is_err());
        let unknown_op = r#"[{"id": "x", "op": "conv", "dtype": "f32", "params": {}}]"#;
        assert!(parse(unknown_op, "t").is_err());
    }
}
