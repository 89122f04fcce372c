//! Validation that needs no real backend: tensors of two distinct devices, and the size of
//! the conformance suite. A minimal in-memory backend whose ops are never reached stands
//! in for a device (core validates before dispatch).

use xkern_core::{
    AttentionOptions, AttentionSpec, Backend, CastSpec, DType, DeviceInfo, Error, HostData,
    HostSlice, Layout, MatmulSpec, NormSpec, ReduceSpec, Result, Tensor, attention, conformance,
};

#[derive(Clone, Debug)]
struct Mock(u32);

fn unreachable_op() -> Error {
    Error::Backend {
        backend: "mock",
        message: "validation should have rejected this call".into(),
    }
}

impl Backend for Mock {
    type Storage = HostData;
    fn name(&self) -> String {
        format!("mock:{}", self.0)
    }
    fn info(&self) -> DeviceInfo {
        DeviceInfo::new("mock", "mock", vec![DType::F32])
    }
    fn same_device(&self, other: &Self) -> bool {
        self.0 == other.0
    }
    fn upload(&self, data: HostSlice<'_>) -> Result<HostData> {
        Ok(data.to_owned())
    }
    fn zeros(&self, dtype: DType, len: usize) -> Result<HostData> {
        HostData::from_f32(dtype, &vec![0.0; len]).ok_or_else(unreachable_op)
    }
    fn download(&self, _: &HostData, _: DType, _: usize, _: usize) -> Result<HostData> {
        Err(unreachable_op())
    }
    fn copy_strided(&self, _: &HostData, _: DType, _: &Layout) -> Result<HostData> {
        Err(unreachable_op())
    }
    fn cast(&self, _: &CastSpec, _: &HostData) -> Result<HostData> {
        Err(unreachable_op())
    }
    fn matmul(
        &self,
        _: &MatmulSpec,
        _: &HostData,
        _: &HostData,
        _: Option<&HostData>,
    ) -> Result<HostData> {
        Err(unreachable_op())
    }
    fn attention(
        &self,
        _: &AttentionSpec,
        _: &HostData,
        _: &HostData,
        _: &HostData,
    ) -> Result<HostData> {
        Err(unreachable_op())
    }
    fn reduce(&self, _: &ReduceSpec, _: &HostData) -> Result<HostData> {
        Err(unreachable_op())
    }
    fn normalize(&self, _: &NormSpec, _: &HostData, _: Option<&HostData>) -> Result<HostData> {
        Err(unreachable_op())
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

fn mismatch(r: Result<Tensor<Mock>>) {
    match r {
        Err(Error::DeviceMismatch { lhs, rhs, .. }) => {
            assert_eq!((lhs.as_str(), rhs.as_str()), ("mock:1", "mock:2"))
        }
        other => panic!("expected DeviceMismatch, got {other:?}"),
    }
}

#[test]
fn operands_on_two_devices_are_refused_before_dispatch() {
    let (d1, d2) = (Mock(1), Mock(2));
    let a = Tensor::randn(&d1, &[2, 2], DType::F32, 0).unwrap();
    let b = Tensor::randn(&d2, &[2, 2], DType::F32, 0).unwrap();
    mismatch(a.matmul(&b));
    mismatch(a.matmul_fused(
        &a,
        Some(&Tensor::randn(&d2, &[2], DType::F32, 0).unwrap()),
        None,
    ));
    let q = a.reshape(&[1, 1, 2, 2]).unwrap();
    let k = b.reshape(&[1, 1, 2, 2]).unwrap();
    mismatch(attention(&q, &k, &q, &AttentionOptions::default()));
    mismatch(attention(&q, &q, &k, &AttentionOptions::default()));
    mismatch(a.rms_norm(
        Some(&Tensor::randn(&d2, &[2], DType::F32, 0).unwrap()),
        1e-6,
    ));
}

#[test]
fn the_suite_has_at_least_300_uniquely_named_cases() {
    let cases = conformance::cases::<Mock>(true);
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert!(names.len() >= 300, "only {} cases", names.len());
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "duplicate case names");
    for family in [
        "matmul/",
        "attention/",
        "reduce/",
        "softmax/",
        "log_softmax/",
        "rms_norm/",
        "errors/",
        "tensor/",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(family)),
            "no {family} cases"
        );
    }
}
