//! The shared conformance suite on the CPU backend: one test per case.
fn main() {
    xkern_core::conformance::main(xkern_cpu::CpuBackend::new())
}
