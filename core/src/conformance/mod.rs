//! The conformance suite: one list of named cases, generic over [`Backend`], that every
//! backend runs against the f64 [`reference`](crate::reference).
//!
//! A backend instantiates it in its `tests/conformance.rs` (with `harness = false`):
//!
//! ```text
//! // backend-cpu/tests/conformance.rs, with `[[test]] name = "conformance" harness = false`
//! fn main() {
//!     xkern_core::conformance::main(xkern_cpu::CpuBackend::new())
//! }
//! ```
//!
//! Each case becomes one test (via `libtest-mimic`), so `cargo test` lists, filters and
//! reports them by name (`matmul/f32/m=127,k=33,n=33/nn`). Inputs are random from a
//! seed derived from the case name; the reference runs on the exact values the backend
//! received. Dtypes the device does not list in `info().dtypes` must be refused with
//! [`Error::UnsupportedDType`], which the cases check.
//!
//! The helpers that build inputs with their host values ([`input`], [`input_from`],
//! [`permute_host`]) and compare results ([`check`], [`check_conditioned`],
//! [`unsupported`], [`expect_err`]) are public, so other suites (the facade's property
//! tests) compare the same way.

// The conformance suite is test code shipped for backends: it indexes host copies of
// results whose lengths it has just checked.
#![allow(clippy::indexing_slicing)]

mod attention;
mod errors;
mod matmul;
mod reduce;
mod tensor;

use crate::reference::HostTensor;
use crate::{Backend, DType, Error, Tensor, Tolerance};
use std::sync::Arc;

/// What a case sees: the device under test and what it supports.
#[derive(Debug, Clone)]
pub struct Ctx<B: Backend> {
    /// The device under test.
    pub dev: B,
    /// The dtypes it reports in `info()`.
    pub dtypes: Vec<DType>,
    /// A second device of the same backend that is *not* `same_device` as `dev`, if the
    /// backend has one (enables the device-mismatch cases).
    pub other: Option<B>,
}

/// Why a case failed.
#[derive(Debug)]
pub struct Fail(pub String);

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail(format!("unexpected error: {e}"))
    }
}

impl From<String> for Fail {
    fn from(s: String) -> Fail {
        Fail(s)
    }
}

/// The result of one case.
pub type Outcome = Result<(), Fail>;

type CaseFn<B> = Arc<dyn Fn(&Ctx<B>) -> Outcome + Send + Sync>;

/// One named check.
pub struct Case<B: Backend> {
    /// Unique name, `op/dtype/parameters`.
    pub name: String,
    /// The check.
    pub run: CaseFn<B>,
}

/// Collects cases (names must be unique; core's tests check it).
pub(crate) struct Cases<B: Backend>(Vec<Case<B>>);

impl<B: Backend> Cases<B> {
    pub(crate) fn add(
        &mut self,
        name: impl Into<String>,
        f: impl Fn(&Ctx<B>) -> Outcome + Send + Sync + 'static,
    ) {
        self.0.push(Case {
            name: name.into(),
            run: Arc::new(f),
        });
    }
}

/// Every case of the suite. `two_devices` adds the cases that need a second device
/// (see [`Ctx::other`]).
pub fn cases<B: Backend>(two_devices: bool) -> Vec<Case<B>> {
    let mut c = Cases(Vec::new());
    if two_devices {
        errors::device_cases(&mut c);
    }
    tensor::cases(&mut c);
    errors::cases(&mut c);
    matmul::cases(&mut c);
    attention::cases(&mut c);
    reduce::cases(&mut c);
    c.0
}

/// Runs the suite on `dev` as a test binary (parses the usual `cargo test` arguments:
/// filters, `--list`, `--test-threads`...) and exits with its status.
pub fn main<B: Backend>(dev: B) -> ! {
    main_with(Ctx {
        dtypes: dev.info().dtypes,
        dev,
        other: None,
    })
}

/// [`main`] with a fully specified context (e.g. with a second device).
pub fn main_with<B: Backend>(ctx: Ctx<B>) -> ! {
    main_many(vec![(String::new(), ctx)])
}

/// Runs the whole suite once per context, test names prefixed with the context's label
/// (`avx2/matmul/...`): one backend configured several ways (e.g. each instruction set).
pub fn main_many<B: Backend>(contexts: Vec<(String, Ctx<B>)>) -> ! {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = Vec::new();
    for (label, ctx) in contexts {
        let ctx = Arc::new(ctx);
        let prefix = if label.is_empty() {
            String::new()
        } else {
            format!("{label}/")
        };
        for case in cases::<B>(ctx.other.is_some()) {
            let ctx = Arc::clone(&ctx);
            trials.push(libtest_mimic::Trial::test(
                format!("{prefix}{}", case.name),
                move || (case.run)(&ctx).map_err(|Fail(m)| m.into()),
            ));
        }
    }
    libtest_mimic::run(&args, trials).exit()
}

/// A stable seed from a case name (FNV-1a), so inputs are reproducible per case.
pub(crate) fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A random input stored with shape `stored` and viewed through `perm` (identity for a
/// contiguous input), with its logical values on the host.
pub fn input<B: Backend>(
    cx: &Ctx<B>,
    stored: &[usize],
    perm: Option<&[usize]>,
    dtype: DType,
    seed: u64,
) -> Result<(Tensor<B>, HostTensor), Fail> {
    let t = Tensor::randn(&cx.dev, stored, dtype, seed)?;
    view_of(t, perm)
}

/// An input from explicit f32 values (rounded to `dtype`), viewed through `perm`.
pub fn input_from<B: Backend>(
    cx: &Ctx<B>,
    stored: &[usize],
    perm: Option<&[usize]>,
    dtype: DType,
    values: &[f32],
) -> Result<(Tensor<B>, HostTensor), Fail> {
    let t = Tensor::from_slice(&cx.dev, stored, values)?.to_dtype(dtype)?;
    view_of(t, perm)
}

/// Views `t` through `perm` and computes the logical host values independently of the
/// backend's strided copy (by permuting the downloaded contiguous data on the host).
fn view_of<B: Backend>(
    t: Tensor<B>,
    perm: Option<&[usize]>,
) -> Result<(Tensor<B>, HostTensor), Fail> {
    let host = HostTensor::new(t.shape(), t.to_f64_vec()?);
    match perm {
        None => Ok((t, host)),
        Some(p) => Ok((t.permute(p)?, permute_host(&host, p))),
    }
}

/// Host-side permutation (the reference for `Tensor::permute` + `contiguous`).
pub fn permute_host(x: &HostTensor, perm: &[usize]) -> HostTensor {
    let strides = x.strides();
    let layout = crate::Layout::from_parts(
        perm.iter().map(|&p| x.shape[p]).collect(),
        perm.iter().map(|&p| strides[p]).collect(),
        0,
    );
    HostTensor::new(
        layout.shape(),
        layout.offsets().map(|o| x.data[o]).collect(),
    )
}

/// Checks dtype, shape and values of `got` against the reference with `dtype`'s tolerance.
pub fn check<B: Backend>(got: &Tensor<B>, expected: &HostTensor, dtype: DType) -> Outcome {
    check_shape(got, expected, dtype)?;
    Tolerance::for_dtype(dtype)
        .check(&got.to_f64_vec()?, &expected.data)
        .map_err(Fail)
}

/// [`check`] with the relative bound taken against `magnitude` (see
/// [`Tolerance::check_scaled`]): for random inputs of arbitrary small shapes, whose sums
/// and dot products may cancel to near zero. `magnitude` is the op on absolute values
/// (`Σ|x|`, `|A|·|B|`), of `expected`'s shape.
pub fn check_conditioned<B: Backend>(
    got: &Tensor<B>,
    expected: &HostTensor,
    magnitude: &HostTensor,
    dtype: DType,
) -> Outcome {
    check_shape(got, expected, dtype)?;
    Tolerance::for_dtype(dtype)
        .check_scaled(&got.to_f64_vec()?, &expected.data, &magnitude.data)
        .map_err(Fail)
}

fn check_shape<B: Backend>(got: &Tensor<B>, expected: &HostTensor, dtype: DType) -> Outcome {
    if got.dtype() != dtype {
        return Err(Fail(format!(
            "output dtype {}, expected {dtype}",
            got.dtype()
        )));
    }
    if got.shape() != expected.shape.as_slice() {
        return Err(Fail(format!(
            "output shape {:?}, expected {:?}",
            got.shape(),
            expected.shape
        )));
    }
    Ok(())
}

/// When the device does not support `dtype`, the case checks that it says so clearly.
/// Returns `Some(outcome)` in that case, `None` when the case should run normally.
pub fn unsupported<B: Backend>(cx: &Ctx<B>, dtype: DType) -> Option<Outcome> {
    if cx.dtypes.contains(&dtype) {
        return None;
    }
    Some(match Tensor::randn(&cx.dev, &[2], dtype, 0) {
        Err(Error::UnsupportedDType { .. }) => Ok(()),
        Err(e) => Err(Fail(format!(
            "{dtype} is not in info().dtypes, but creating it failed with {e}"
        ))),
        Ok(_) => Err(Fail(format!(
            "{dtype} is not in info().dtypes, yet the device accepted it"
        ))),
    })
}

/// Expects `r` to be an error matching `pred`; `what` describes the expected error.
pub fn expect_err<T: std::fmt::Debug>(
    r: Result<T, Error>,
    what: &str,
    pred: impl Fn(&Error) -> bool,
) -> Outcome {
    match r {
        Err(e) if pred(&e) => Ok(()),
        Err(e) => Err(Fail(format!("expected {what}, got error {e:?}"))),
        Ok(v) => Err(Fail(format!("expected {what}, got Ok({v:?})"))),
    }
}

/// The odd sizes every dimension that matters is tested at.
pub(crate) const SIZES: [usize; 6] = [1, 7, 33, 127, 129, 1000];
