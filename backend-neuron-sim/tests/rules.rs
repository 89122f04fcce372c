//! Every tile rule of NEURON.md produces its error, naming instruction, operand, value
//! and limit (one test each).

use xkern_core::DType;
use xkern_neuron_sim::{Engine, Mode, NeuronConfig, SimError, Simulator, Tile};

fn sim() -> Simulator {
    Simulator::new(NeuronConfig::trn1(), Mode::Functional)
}

fn operands(s: &mut Simulator, dtype: DType) -> (Tile, Tile, Tile) {
    let a = s.sbuf(128, 128, dtype).unwrap();
    let b = s.sbuf(128, 512, dtype).unwrap();
    s.memset(Engine::Vector, &a, 1.0).unwrap();
    s.memset(Engine::Vector, &b, 1.0).unwrap();
    let ps = s.psum(128, 512, DType::F32).unwrap();
    (a, b, ps)
}

#[test]
fn partition_dimension_over_128_at_allocation() {
    let e = sim().sbuf(256, 64, DType::BF16).unwrap_err();
    assert!(matches!(
        e,
        SimError::PartitionLimit {
            value: 256,
            limit: 128,
            ..
        }
    ));
    assert_eq!(
        e.to_string(),
        "sbuf allocation: partition dimension of tile is 256, exceeds the architecture limit of 128"
    );
}

#[test]
fn partition_dimension_over_128_in_a_dma_pattern() {
    let mut s = sim();
    let t = s.hbm_tensor(256, 64, DType::BF16).unwrap();
    let dst = s.sbuf(128, 64, DType::BF16).unwrap();
    let e = s
        .dma_copy(dst, t.block(0, 256, 0, 64).unwrap())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "dma_copy: partition dimension of source is 256, exceeds the architecture limit of 128"
    );
}

#[test]
fn matmul_contraction_over_the_array_limit() {
    // With the array's K limit lowered to 64, a 128-partition moving operand breaks it.
    let mut cfg = NeuronConfig::trn1();
    cfg.matmul_max_k = 64;
    let mut s = Simulator::new(cfg, Mode::Functional);
    let (a, b, ps) = operands(&mut s, DType::BF16);
    let a64 = a.partition_slice(0, 64).unwrap();
    let e = s.matmul(&ps, &a64, &b, false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "matmul: partition dimension of moving operand is 128, exceeds the architecture limit of 64"
    );
}

#[test]
fn v2_partition_start_alignment() {
    let mut s = sim();
    let t = s.sbuf(128, 64, DType::F32).unwrap();
    let u = s.sbuf(128, 64, DType::F32).unwrap();
    let (src, dst) = (
        t.partition_slice(32, 64).unwrap(),
        u.partition_slice(0, 64).unwrap(),
    );
    let e = s.tensor_copy(Engine::Vector, &dst, &src).unwrap_err();
    assert!(
        matches!(
            e,
            SimError::PartitionAlignment {
                start: 32,
                size: 64,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("33-64 partitions must start at partition 0 or 64"),
        "{e}"
    );
    // ≤ 32 partitions may start at a multiple of 32; 64 is fine for 33–64.
    s.memset(Engine::Vector, &t.partition_slice(96, 32).unwrap(), 0.0)
        .unwrap();
    s.memset(Engine::Vector, &t.partition_slice(64, 64).unwrap(), 0.0)
        .unwrap();
    let e = s
        .memset(Engine::Vector, &t.partition_slice(16, 16).unwrap(), 0.0)
        .unwrap_err();
    assert!(matches!(e, SimError::PartitionAlignment { .. }));
    // v3 lifts the rule.
    let mut s3 = Simulator::new(NeuronConfig::trn2(), Mode::Functional);
    let t = s3.sbuf(128, 64, DType::F32).unwrap();
    s3.memset(Engine::Vector, &t.partition_slice(32, 64).unwrap(), 0.0)
        .unwrap();
}

#[test]
fn matmul_contraction_sizes_must_agree() {
    let mut s = sim();
    let (a, b, ps) = operands(&mut s, DType::BF16);
    let e = s
        .matmul(&ps, &a, &b.partition_slice(0, 64).unwrap(), false)
        .unwrap_err();
    assert!(
        matches!(
            e,
            SimError::ShapeMismatch {
                operand: "moving operand",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn matmul_stationary_free_size_over_128() {
    let mut s = sim();
    let (_, b, _) = operands(&mut s, DType::BF16);
    let a = s.sbuf(128, 256, DType::BF16).unwrap();
    let ps = s.psum(128, 512, DType::F32).unwrap();
    let e = s.matmul(&ps, &a, &b, false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "matmul: free size (M) of stationary operand is 256, exceeds the architecture limit of 128"
    );
}

#[test]
fn matmul_moving_free_size_over_512() {
    let mut s = sim();
    let (a, _, _) = operands(&mut s, DType::BF16);
    let b = s.sbuf(128, 1024, DType::BF16).unwrap();
    let ps = s.psum(128, 1024, DType::F32).unwrap();
    let e = s.matmul(&ps, &a, &b, false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "matmul: free size (N) of moving operand is 1024, exceeds the architecture limit of 512"
    );
}

#[test]
fn matmul_operands_must_be_in_sbuf() {
    let mut s = sim();
    let (a, b, ps) = operands(&mut s, DType::BF16);
    let wrong = s.psum(128, 128, DType::BF16).unwrap();
    let e = s.matmul(&ps, &wrong, &b, false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "matmul: stationary operand must be in SBUF, but it is in PSUM"
    );
    let _ = a;
}

#[test]
fn matmul_result_must_be_in_psum() {
    let mut s = sim();
    let (a, b, _) = operands(&mut s, DType::BF16);
    let wrong = s.sbuf(128, 512, DType::F32).unwrap();
    let e = s.matmul(&wrong, &a, &b, false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "matmul: result must be in PSUM, but it is in SBUF"
    );
}

#[test]
fn fp32_operands_pair_only_with_fp32() {
    let mut s = sim();
    let (_, b, ps) = operands(&mut s, DType::BF16);
    let a32 = s.sbuf(128, 128, DType::F32).unwrap();
    let e = s.matmul(&ps, &a32, &b, false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "matmul: moving operand has dtype bf16, fp32 operands pair only with fp32"
    );
}

#[test]
fn accumulating_onto_uninitialised_psum() {
    let mut s = sim();
    let (a, b, ps) = operands(&mut s, DType::BF16);
    let e = s.matmul(&ps, &a, &b, true).unwrap_err();
    assert!(
        matches!(
            e,
            SimError::UninitialisedAccumulate {
                partition: 0,
                offset: 0,
                ..
            }
        ),
        "{e}"
    );
    // After an overwriting matmul the same accumulate is legal.
    s.matmul(&ps, &a, &b, false).unwrap();
    s.matmul(&ps, &a, &b, true).unwrap();
    assert_eq!(s.read_tile(&ps).unwrap()[0], 256.0);
}

#[test]
fn matmul_result_may_not_cross_a_psum_bank() {
    let mut s = sim();
    let (a, b, _) = operands(&mut s, DType::BF16);
    let two_banks = s.psum(128, 1024, DType::F32).unwrap();
    let e = s
        .matmul(&two_banks.cols(256, 512).unwrap(), &a, &b, false)
        .unwrap_err();
    // Byte addresses are absolute within the partition: the tile starts at bank 1.
    assert!(
        matches!(
            e,
            SimError::PsumBankCrossing {
                start: 3072,
                end: 5120,
                bank_bytes: 2048,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().ends_with("crossing a 2048-byte PSUM bank"),
        "{e}"
    );
}

#[test]
fn sbuf_capacity_is_enforced() {
    let mut s = sim();
    s.sbuf(128, 64 * 1024, DType::BF16).unwrap(); // 128 KiB of 192
    let e = s.sbuf(128, 32 * 1024, DType::F32).unwrap_err(); // 128 KiB more
    assert_eq!(
        e.to_string(),
        "allocation of 131072 bytes per partition in SBUF does not fit: 65536 bytes per partition are free in one piece (capacity 196608)"
    );
}

#[test]
fn psum_capacity_is_enforced() {
    let mut s = sim();
    let banks: Vec<_> = (0..8)
        .map(|_| s.psum(128, 512, DType::F32).unwrap())
        .collect();
    let e = s.psum(128, 16, DType::F32).unwrap_err();
    assert!(
        matches!(
            e,
            SimError::OutOfMemory {
                memory: "PSUM",
                capacity: 16384,
                ..
            }
        ),
        "{e}"
    );
    s.free(&banks[3]).unwrap();
    s.psum(128, 512, DType::F32).unwrap();
}

#[test]
fn gpsimd_cannot_reach_psum() {
    let mut s = sim();
    let ps = s.psum(128, 64, DType::F32).unwrap();
    let e = s.memset(Engine::GpSimd, &ps, 0.0).unwrap_err();
    assert!(
        matches!(
            e,
            SimError::Placement {
                instr: "memset",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn tensor_tensor_cannot_run_on_the_tensor_engine() {
    let mut s = sim();
    let t = s.sbuf(128, 64, DType::F32).unwrap();
    let e = s
        .tensor_tensor(Engine::Tensor, &t, &t, &t, xkern_neuron_sim::AluOp::Add)
        .unwrap_err();
    assert!(
        matches!(
            e,
            SimError::Unsupported {
                instr: "tensor_tensor",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn freed_tiles_and_foreign_handles_are_rejected() {
    let mut s = sim();
    let t = s.sbuf(128, 64, DType::F32).unwrap();
    s.free(&t).unwrap();
    let e = s.memset(Engine::Vector, &t, 0.0).unwrap_err();
    assert!(
        matches!(
            e,
            SimError::StaleHandle {
                what: "a freed tile",
                ..
            }
        ),
        "{e}"
    );
    let mut other = sim();
    let u = other.sbuf(128, 64, DType::F32).unwrap();
    assert!(matches!(
        s.memset(Engine::Vector, &u, 0.0),
        Err(SimError::StaleHandle { .. })
    ));
}

#[test]
fn shapes_must_agree() {
    let mut s = sim();
    let a = s.sbuf(128, 64, DType::F32).unwrap();
    let b = s.sbuf(128, 32, DType::F32).unwrap();
    let e = s.tensor_copy(Engine::Vector, &b, &a).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor_copy: destination has shape [128, 32], expected [128, 64]"
    );
}

#[test]
fn absurd_views_and_patterns_are_errors_not_panics() {
    let mut s = sim();
    let t = s.sbuf(128, 64, DType::F32).unwrap();
    assert!(t.cols(usize::MAX, 2).is_err());
    assert!(t.partition_slice(usize::MAX, 2).is_err());
    assert!(t.block(1).is_err());
    assert!(t.split(3).is_err());
    let h = s.hbm_tensor(4, 4, DType::F32).unwrap();
    assert!(h.block(usize::MAX, 2, 0, 1).is_err());
    assert!(h.pattern(usize::MAX, [1, 2], &[[1, 2]]).is_err());
    assert!(h.pattern(0, [usize::MAX, 2], &[[1, 1]]).is_err());
    assert!(s.hbm_tensor(usize::MAX, 2, DType::F32).is_err());
    assert!(s.hbm_from_f32(usize::MAX, 2, DType::F32, &[]).is_err());
    assert!(s.sbuf(128, usize::MAX, DType::F32).is_err());
}
