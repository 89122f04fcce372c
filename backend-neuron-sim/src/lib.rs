//! # xkern-neuron-sim: a simulated Trainium NeuronCore
//!
//! A functional and timing model of one NeuronCore (v2 for trn1, v3 for trn2), for
//! writing and costing Trainium kernels without the hardware. Beyond AWS's functional NKI
//! simulator it models time (a per-engine timeline), engine overlap, SBUF/PSUM capacity
//! and ordering hazards.
//!
//! - [`NeuronConfig`]: every hardware figure, per generation, with its source.
//! - [`Simulator`]: HBM tensors ([`HbmTensor`], [`AccessPattern`]), SBUF/PSUM tiles
//!   ([`Tile`], capacity enforced, poisoned with NaN), and the instructions of NEURON.md
//!   as methods: `dma_copy`, `matmul`, `transpose`, `tensor_copy`, `memset`, `iota`,
//!   `tensor_tensor`, `tensor_scalar`, `tensor_reduce`, `activation`, `reciprocal`,
//!   `affine_select`, `partition_reduce`, `vector_transpose`.
//! - Dependencies are derived from the bytes each instruction reads and writes, as NKI's
//!   compiler inserts semaphores; [`IssueOptions`] adds explicit ordering or opts out
//!   (then unsynchronised overlapping accesses are reported as [`Race`]s).
//! - Every tile rule is an [`SimError`] naming instruction, operand, value and limit.
//! - Numerics ([`numerics`]): bf16/fp16 operands, fp32 PSUM accumulation with
//!   first-write overwrite, round-to-nearest-even casts, fp32 elsewhere.
//! - Timing ([`cost`]): each instruction starts at max(engine free, inputs ready) and
//!   costs its NEURON.md formula; DMA pays a fixed trigger latency plus bytes over the
//!   bandwidth of the DMA engines its partitions span, scaled by a payload-size
//!   efficiency and capped by HBM bandwidth.
//! - [`Mode::TimingOnly`] skips data and arithmetic, for shapes beyond host memory.
//! - [`Profile`], [`Simulator::write_chrome_trace`], [`Simulator::svg_timeline`].
//! - [`tutorial`]: AWS's NKI matmul tutorial kernels, the timing model's validation.
//!
//! ## Validation (tests/, deterministic model outputs)
//!
//! | check | target | model |
//! |---|---|---|
//! | one N = 512 bf16 matmul | 512 cycles | 512 cycles |
//! | back-to-back bf16 matmuls | 91.75 / 78.6 TFLOPS ±2% | within 0.3% |
//! | NKI tutorial kernel 1 (tiled) | 51.80 ms ±15% | 52.76 ms |
//! | kernel 2 (hoisted lhsT loads) | 42.96 ms ±15% | 43.02 ms |
//! | kernel 3 (blocked free axes) | 22.07 ms ±15% | 22.36 ms |
//! | kernel 4 (fully blocked) | 6.97 ms ±15% | 6.71 ms |
//!
//! (`cargo run --release -p xkern-neuron-sim --example tutorial`.) One term is
//! calibrated: the DMA efficiency at 256 B–1 KiB per partition, fitted to kernels 1–3
//! (see [`NeuronConfig::dma_efficiency`]); kernel 4 is a prediction.
//!
//! ```
//! use xkern_neuron_sim::{Mode, NeuronConfig, Simulator};
//! use xkern_core::DType;
//! let mut sim = Simulator::new(NeuronConfig::trn1(), Mode::Functional);
//! let a = sim.hbm_from_f32(128, 128, DType::BF16, &vec![1.0; 128 * 128])?;
//! let b = sim.hbm_from_f32(128, 512, DType::BF16, &vec![0.5; 128 * 512])?;
//! let (at, bt) = (sim.sbuf(128, 128, DType::BF16)?, sim.sbuf(128, 512, DType::BF16)?);
//! sim.dma_copy(at, a.block(0, 128, 0, 128)?)?;
//! sim.dma_copy(bt, b.block(0, 128, 0, 512)?)?;
//! let acc = sim.psum(128, 512, DType::F32)?;
//! sim.matmul(&acc, &at, &bt, false)?;
//! assert_eq!(sim.read_tile(&acc)?[0], 64.0);
//! let p = sim.profile();
//! assert!(p.latency_ns > 0.0);
//! # Ok::<(), xkern_neuron_sim::SimError>(())
//! ```

#![deny(missing_docs)]
// No panics from library code: a bad input or a failed resource is an `Err`. Unit tests
// may unwrap. Modules whose kernels index slices within bounds that validation has
// established allow `indexing_slicing` at their top, saying why.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::indexing_slicing
    )
)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod backend;
mod config;
pub mod cost;
mod deps;
mod engines;
mod error;
mod isa;
mod kernels;
mod memory;
pub mod numerics;
mod profile;
mod sim;
mod tile;
mod trace;
pub mod tutorial;

pub use backend::{NeuronBackend, NeuronStorage};
pub use config::{Generation, NeuronConfig};
pub use deps::{Hazard, Race};
pub use engines::{Engine, Stream};
pub use error::{Result, SimError};
pub use isa::{Affine, DmaEnd, ScalarArg};
pub use memory::{AccessPattern, HbmTensor, MemKind};
pub use numerics::{ActFn, AluOp, CmpOp};
pub use profile::{Profile, StreamStats};
pub use sim::{ByteCounts, InstrId, InstrRecord, IssueOptions, Mode, Simulator};
pub use tile::Tile;
