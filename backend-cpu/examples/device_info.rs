//! Prints the CPU device's info, including the probed peaks (first run measures them).
use xkern_core::Backend;
fn main() {
    let t = std::time::Instant::now();
    let info = xkern_cpu::CpuBackend::new().info();
    println!("{info:#?}\n(info took {:.2} s)", t.elapsed().as_secs_f64());
}
