//! Functional checks: the simulated tutorial kernels compute lhsTᵀ·rhs to within bf16
//! output rounding of an f64 matmul on the bf16-rounded inputs (fp32 outputs: to fp32
//! accumulation error), and the vector/scalar/GpSimd instructions compute what they say.

mod common;

use common::{data, matmul_t_f64, rel_frobenius};
use xkern_core::DType;
use xkern_neuron_sim::tutorial::{self, Blocking, Problem};
use xkern_neuron_sim::{
    ActFn, Affine, AluOp, CmpOp, Engine, Mode, NeuronConfig, ScalarArg, Simulator,
};

fn run_kernel(kernel: usize, m: usize, k: usize, n: usize, out: DType) -> f64 {
    let mut sim = Simulator::new(NeuronConfig::trn1(), Mode::Functional);
    let a = data(k * m, 1, DType::BF16);
    let b = data(k * n, 2, DType::BF16);
    let p = Problem {
        lhs_t: sim.hbm_from_f32(k, m, DType::BF16, &a).unwrap(),
        rhs: sim.hbm_from_f32(k, n, DType::BF16, &b).unwrap(),
        result: sim.hbm_tensor(m, n, out).unwrap(),
    };
    match kernel {
        0 => tutorial::tiled(&mut sim, &p),
        1 => tutorial::hoist_load(&mut sim, &p),
        2 => tutorial::block_free(&mut sim, &p),
        _ => tutorial::fully_optimized(
            &mut sim,
            &p,
            Blocking {
                m_tiles: 2,
                n_tiles: 2,
                k_tiles: 2,
            },
        ),
    }
    .unwrap();
    assert!(sim.races().is_empty());
    let got = sim.hbm_to_f32(&p.result).unwrap();
    rel_frobenius(&got, &matmul_t_f64(&a, &b, m, k, n))
}

#[test]
fn tutorial_kernels_match_an_f64_matmul() {
    for kernel in 0..4 {
        let err = run_kernel(kernel, 256, 512, 1024, DType::BF16);
        // bf16 output rounding alone is ≈ 2^-9 relative; kernel 4 also accumulates its
        // k-blocks in bf16 SBUF, as the tutorial does.
        assert!(err < 1e-2, "kernel {}: relative error {err}", kernel + 1);
        assert!(err > 0.0, "bf16 rounding must show");
    }
}

#[test]
fn fp32_results_are_exact_up_to_fp32_accumulation() {
    for kernel in 0..4 {
        let err = run_kernel(kernel, 256, 512, 1024, DType::F32);
        assert!(err < 1e-5, "kernel {}: relative error {err}", kernel + 1);
    }
}

fn sim() -> Simulator {
    Simulator::new(NeuronConfig::trn1(), Mode::Functional)
}

#[test]
fn activation_with_scale_bias_and_row_sums() {
    let mut s = sim();
    let x = s.sbuf(4, 8, DType::F32).unwrap();
    s.iota(
        &x,
        Affine {
            offset: 0,
            partition: 1,
            free: 1,
        },
    )
    .unwrap(); // x[p, f] = p + f
    let bias = s.sbuf(4, 1, DType::F32).unwrap();
    s.iota(
        &bias,
        Affine {
            offset: 0,
            partition: -1,
            free: 0,
        },
    )
    .unwrap(); // −p
    let y = s.sbuf(4, 8, DType::F32).unwrap();
    let acc = s.sbuf(4, 1, DType::F32).unwrap();
    s.activation(
        &y,
        ActFn::Exp,
        &x,
        ScalarArg::Imm(0.5),
        ScalarArg::PerPartition(bias),
        Some(&acc),
    )
    .unwrap();
    let (yv, av) = (s.read_tile(&y).unwrap(), s.read_tile(&acc).unwrap());
    for p in 0..4 {
        let mut sum = 0f32;
        for f in 0..8 {
            let want = (0.5 * (p + f) as f32 - p as f32).exp();
            assert!((yv[p * 8 + f] - want).abs() <= 1e-6 * want);
            sum += want;
        }
        assert!((av[p] - sum).abs() <= 1e-5 * sum);
    }
}

#[test]
fn reduce_scalar_select_reciprocal_and_transposes() {
    let mut s = sim();
    let x = s.sbuf(32, 16, DType::F32).unwrap();
    s.iota(
        &x,
        Affine {
            offset: 1,
            partition: 16,
            free: 1,
        },
    )
    .unwrap(); // 1..=512 row-major
    // Row max along the free axis, and per-partition scalars.
    let mx = s.sbuf(32, 1, DType::F32).unwrap();
    s.tensor_reduce(Engine::Vector, &mx, AluOp::Max, &x)
        .unwrap();
    let centred = s.sbuf(32, 16, DType::F32).unwrap();
    s.tensor_scalar(
        Engine::Vector,
        &centred,
        &x,
        AluOp::Subtract,
        ScalarArg::PerPartition(mx),
        Some((AluOp::Multiply, 2.0.into())),
    )
    .unwrap();
    let c = s.read_tile(&centred).unwrap();
    assert_eq!(c[0], -30.0);
    assert_eq!(c[15], 0.0);
    // Causal mask: keep f <= p.
    let masked = s.sbuf(32, 16, DType::F32).unwrap();
    s.affine_select(
        &masked,
        &x,
        Affine {
            offset: 0,
            partition: 1,
            free: -1,
        },
        CmpOp::Ge,
        -1e9,
    )
    .unwrap();
    let mv = s.read_tile(&masked).unwrap();
    assert_eq!(mv[0], 1.0);
    assert_eq!(mv[1], -1e9);
    assert_eq!(mv[16 + 1], 18.0);
    // Reciprocal, sums across partitions, and both transposes.
    let r = s.sbuf(32, 16, DType::F32).unwrap();
    s.reciprocal(&r, &x).unwrap();
    assert_eq!(s.read_tile(&r).unwrap()[1], 0.5);
    let col = s.sbuf(1, 16, DType::F32).unwrap();
    s.partition_reduce(&col, AluOp::Add, &x).unwrap();
    assert_eq!(
        s.read_tile(&col).unwrap()[0],
        (0..32).map(|p| (1 + 16 * p) as f32).sum::<f32>()
    );
    let t = s.sbuf(16, 32, DType::F32).unwrap();
    s.vector_transpose(&t, &x).unwrap();
    let tp = s.psum(16, 32, DType::F32).unwrap();
    s.transpose(&tp, &x).unwrap();
    let (tv, tpv, xv) = (
        s.read_tile(&t).unwrap(),
        s.read_tile(&tp).unwrap(),
        s.read_tile(&x).unwrap(),
    );
    for i in 0..32 {
        for j in 0..16 {
            assert_eq!(tv[j * 32 + i], xv[i * 16 + j]);
            assert_eq!(tpv[j * 32 + i], xv[i * 16 + j]);
        }
    }
    // tensor_tensor with a bf16 destination rounds to nearest even.
    let h = s.sbuf(32, 16, DType::BF16).unwrap();
    s.tensor_tensor(Engine::Vector, &h, &x, &r, AluOp::Add)
        .unwrap();
    assert_eq!(
        s.read_tile(&h).unwrap()[2],
        DType::BF16.round_f32(3.0 + 1.0 / 3.0)
    );
}

#[test]
fn timing_only_mode_matches_functional_timing_and_holds_no_data() {
    let mut times = Vec::new();
    for mode in [Mode::Functional, Mode::TimingOnly] {
        let mut sim = Simulator::new(NeuronConfig::trn2(), mode);
        let p = Problem::new(&mut sim, 256, 512, 1024, DType::BF16).unwrap();
        tutorial::block_free(&mut sim, &p).unwrap();
        times.push(sim.profile().latency_ns);
        if mode == Mode::TimingOnly {
            assert!(sim.hbm_to_f32(&p.result).is_err());
        }
    }
    assert_eq!(times[0], times[1]);
}
