//! # xkern-bench: one workload, every backend, one table
//!
//! The library half of the `xkern-bench` binary: case files and suites (`cases`), the
//! Llama-style attention block (`block`), turning a case into a timed closure with a
//! reference check (`workload`), interleaved timing (`measure`), peers (`peers`), the
//! text/JSON (`report`) and HTML (`html`) outputs, and the cross-backend numerics run
//! (`numerics`, `--numerics`).

pub mod block;
pub mod cases;
pub mod html;
pub mod measure;
pub mod numerics;
pub mod peers;
pub mod report;
pub mod workload;
