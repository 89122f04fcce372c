//! Cross-backend numerics (`xkern-bench --numerics`): the same random workloads on every
//! device, each output compared with the f64 reference and with the other devices'.
//!
//! A fixed list of representative shapes per op ([`suite`]), each run in every float dtype
//! the device lists. Inputs are `Tensor::randn` from a seed derived from the case id, so
//! every device receives the same values; the reference runs once on those values (the
//! normal samples rounded to the dtype, as `randn` documents). Per (case, dtype, device):
//!
//! - `rel_err`: the relative Frobenius error, the measure of [`Tolerance`], with its
//!   verdict (`within_tolerance`) under the dtype's bound;
//! - `max_rel`, `median_rel`: the element-wise relative error `|got − ref| / |ref|`
//!   (the denominator floored at the dtype's smallest normal). Its maximum is large where an
//!   exact result is near zero (a sum that cancels); the median is the typical element;
//! - `max_ulps`, `median_ulps`: the distance, in units in the last place of the output
//!   dtype, from the reference rounded to nearest in that dtype (0: correctly rounded);
//!   `exact`: the fraction of elements that are correctly rounded (indices: equal);
//! - `peers`: the relative Frobenius difference from each other device's output, and
//!   whether the two are bitwise identical.
//!
//! argmax/argmin give indices: only `exact` (and `rel_err`, on the index values) apply.
//!
//! Layout: `workloads.rs` (the suite, its inputs, reference and run on a device),
//! `ulps.rs` (the per-element figures), this file (the run over devices and the table).

mod ulps;
mod workloads;

use ulps::accuracy;
pub use ulps::ulps;
pub use workloads::{NumericsCase, NumericsOp, Size, reference_output, run_case, suite};

use crate::report::short_name;
use serde::Serialize;
use xkern::{DType, Device, Tolerance};

/// The difference between one device's output and another's.
#[derive(Clone, Debug, Serialize)]
pub struct PeerDiff {
    /// The other device's short name.
    pub backend: String,
    /// Relative Frobenius difference, taking the other device's output as the reference.
    pub rel_diff: f64,
    /// Whether the two outputs are bitwise identical.
    pub identical: bool,
}

/// One case in one dtype on one device (a JSON line of `--numerics --json`).
#[derive(Clone, Debug, Serialize)]
pub struct NumericsRow {
    /// Case id.
    pub id: String,
    /// The op (`matmul`, `attention`, `sum`, ...).
    pub op: String,
    /// Input dtype.
    pub dtype: String,
    /// The device's short name (`cpu`, `wgpu:llvmpipe`, `neuron-sim:trn2`).
    pub backend: String,
    /// Output elements compared.
    pub elements: usize,
    /// Relative Frobenius error against the f64 reference.
    pub rel_err: f64,
    /// Largest element-wise relative error (None for indices and empty outputs).
    pub max_rel: Option<f64>,
    /// Median element-wise relative error.
    pub median_rel: Option<f64>,
    /// Largest distance in ulps of the output dtype from the correctly rounded reference.
    pub max_ulps: Option<u64>,
    /// Median distance in ulps.
    pub median_ulps: Option<u64>,
    /// Fraction of the elements that equal the correctly rounded reference.
    pub exact: f64,
    /// Whether the dtype's tolerance holds (special values included).
    pub within_tolerance: bool,
    /// Why not, or the error the op returned.
    pub error_detail: Option<String>,
    /// The difference from every other device that ran the case.
    pub peers: Vec<PeerDiff>,
}

/// The result of a numerics run.
#[derive(Clone, Debug, Default)]
pub struct NumericsReport {
    /// One row per (case, dtype, device) that ran, in case order.
    pub rows: Vec<NumericsRow>,
    /// `(device, dtype)` pairs not run because the device does not list the dtype.
    pub unsupported: Vec<(String, DType)>,
}

impl NumericsReport {
    /// True when every row is within its tolerance.
    pub fn all_within_tolerance(&self) -> bool {
        self.rows.iter().all(|r| r.within_tolerance)
    }
}

/// Runs every case in every dtype of `dtypes` on every device, and compares. A device
/// that does not list a dtype is noted in [`NumericsReport::unsupported`]; an op that
/// fails gives a row with its error (not within tolerance). `progress` is told each
/// (case, dtype, device) before it runs.
pub fn run(
    devices: &[Device],
    cases: &[NumericsCase],
    dtypes: &[DType],
    mut progress: impl FnMut(&str),
) -> NumericsReport {
    let mut report = NumericsReport::default();
    let infos: Vec<_> = devices.iter().map(|d| (short_name(d), d.info())).collect();
    for &dtype in dtypes {
        for (name, info) in &infos {
            if !info.dtypes.contains(&dtype) {
                report.unsupported.push((name.clone(), dtype));
            }
        }
    }
    for case in cases {
        for &dtype in dtypes {
            let want = reference_output(case, dtype);
            let mut outputs: Vec<(String, Vec<f64>)> = Vec::new();
            let mut rows: Vec<NumericsRow> = Vec::new();
            for (dev, (name, info)) in devices.iter().zip(&infos) {
                if !info.dtypes.contains(&dtype) {
                    continue;
                }
                progress(&format!("{} {dtype} on {name}", case.id));
                let result = run_case(case, dtype, dev).and_then(|t| {
                    if t.shape() != want.shape.as_slice() {
                        return Err(xkern::Error::Backend {
                            backend: "xkern-bench",
                            message: format!(
                                "output shape {:?}, expected {:?}",
                                t.shape(),
                                want.shape
                            ),
                        });
                    }
                    Ok((t.dtype(), t.to_f64_vec()?))
                });
                let mut row = match &result {
                    Ok((out_dtype, got)) => accuracy(got, &want.data, *out_dtype),
                    Err(e) => NumericsRow {
                        rel_err: f64::NAN,
                        exact: 0.0,
                        within_tolerance: false,
                        error_detail: Some(format!("the op failed: {e}")),
                        ..accuracy(&[], &[], dtype)
                    },
                };
                row.id = case.id.clone();
                row.op = case.op.name().to_string();
                row.dtype = dtype.to_string();
                row.backend = name.clone();
                if let Ok((_, got)) = result {
                    outputs.push((name.clone(), got));
                }
                rows.push(row);
            }
            for row in &mut rows {
                let Some((_, mine)) = outputs.iter().find(|(n, _)| *n == row.backend) else {
                    continue;
                };
                row.peers = outputs
                    .iter()
                    .filter(|(n, _)| *n != row.backend)
                    .map(|(n, theirs)| PeerDiff {
                        backend: n.clone(),
                        rel_diff: Tolerance::rel_frobenius(mine, theirs),
                        identical: mine.len() == theirs.len()
                            && mine
                                .iter()
                                .zip(theirs)
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                    })
                    .collect();
            }
            report.rows.extend(rows);
        }
    }
    report
}

/// The report as text: one table per op, rows per (case, dtype, device), then notes.
pub fn table(report: &NumericsReport) -> String {
    let mut ops: Vec<&str> = report.rows.iter().map(|r| r.op.as_str()).collect();
    ops.dedup();
    let mut seen = Vec::new();
    ops.retain(|op| {
        let new = !seen.contains(op);
        seen.push(*op);
        new
    });
    let sci = |v: Option<f64>| v.map_or("–".to_string(), |x| format!("{x:.1e}"));
    let mut out = String::new();
    for op in ops {
        out.push_str(&format!("{op}\n"));
        let mut lines = vec![
            [
                "case",
                "dtype",
                "backend",
                "elements",
                "rel err",
                "max rel",
                "median rel",
                "max ulp",
                "median ulp",
                "exact",
                "max vs other device",
                "",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for r in report.rows.iter().filter(|r| r.op == op) {
            let worst_peer = r
                .peers
                .iter()
                .max_by(|a, b| a.rel_diff.total_cmp(&b.rel_diff));
            let identical = r.peers.iter().filter(|p| p.identical).count();
            lines.push(vec![
                r.id.clone(),
                r.dtype.clone(),
                r.backend.clone(),
                r.elements.to_string(),
                format!("{:.1e}", r.rel_err),
                sci(r.max_rel),
                sci(r.median_rel),
                r.max_ulps.map_or("–".into(), |u| u.to_string()),
                r.median_ulps.map_or("–".into(), |u| u.to_string()),
                format!("{:.1}%", 100.0 * r.exact),
                match worst_peer {
                    None => "–".into(),
                    Some(_) if identical == r.peers.len() => {
                        format!("identical to all {identical}")
                    }
                    Some(p) => format!("{:.1e} {}", p.rel_diff, p.backend),
                },
                if r.within_tolerance {
                    String::new()
                } else {
                    format!(
                        "TOLERANCE EXCEEDED: {}",
                        r.error_detail.as_deref().unwrap_or("")
                    )
                },
            ]);
        }
        out.push_str(&crate::report::columns(&lines, |c| !(3..10).contains(&c)));
        out.push('\n');
    }
    for (dev, dtype) in &report.unsupported {
        out.push_str(&format!("{dev}: {dtype} is not in its dtypes; not run\n"));
    }
    out.push_str(
        "rel err: relative Frobenius error against the f64 reference (the tolerance's measure). \
         max/median rel: |got − ref| / |ref| per element. ulp: distance from the reference \
         rounded to nearest in the output dtype; exact: elements correctly rounded (indices: \
         equal). max vs other device: the largest relative Frobenius difference from another \
         device's output.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiny suite on every device of this build: every supported (case, dtype, device)
    /// gives a row, every row is within its dtype's tolerance, each row is compared with
    /// every other device, and the CPU's f32 results are close to correctly rounded.
    #[test]
    fn tiny_suite_agrees_with_the_reference_on_every_device() {
        let devices = Device::available();
        assert!(devices.iter().any(|d| d.info().backend == "cpu"));
        let cases = suite(Size::Tiny);
        let report = run(&devices, &cases, &DType::FLOATS, |_| {});
        for dtype in DType::FLOATS {
            let supported = devices
                .iter()
                .filter(|d| d.info().dtypes.contains(&dtype))
                .count();
            let rows = report.rows.iter().filter(|r| r.dtype == dtype.to_string());
            assert_eq!(rows.count(), supported * cases.len(), "{dtype}");
        }
        for r in &report.rows {
            assert!(
                r.within_tolerance,
                "{} {} on {}: {:?}",
                r.id, r.dtype, r.backend, r.error_detail
            );
            assert_eq!(
                r.peers.len() + 1,
                devices.len(),
                "{} on {}",
                r.id,
                r.backend
            );
        }
        let cpu_f32 = report
            .rows
            .iter()
            .filter(|r| r.backend == "cpu" && r.dtype == "f32");
        for r in cpu_f32 {
            // f32 accumulation of a few dozen terms: a handful of ulps where nothing
            // cancels, so the typical (median) element is within a few ulps.
            assert!(
                r.median_ulps.is_none_or(|u| u <= 4),
                "{}: median {:?} ulps",
                r.id,
                r.median_ulps
            );
            assert!(r.exact > 0.0, "{}: no element correctly rounded", r.id);
        }
        let text = table(&report);
        assert!(text.contains("matmul\n") && text.contains("rms_norm\n"));
    }
}
