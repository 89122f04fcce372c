//! The subgroup trees of the reductions and normalisations at subgroup sizes 4, 8 and 16.
//!
//! Mesa's lavapipe takes its subgroup size from `LP_NATIVE_VECTOR_WIDTH` (bits: 128 → 4
//! lanes of f32, 256 → 8, 512 → 16), read once when the driver loads, so each size needs
//! its own process: this binary re-runs itself once per width, with the adapter pinned to
//! lavapipe (`XKERN_WGPU_ADAPTER=llvmpipe`). Each child checks that the device really
//! offers subgroups of the expected size and then runs every reduction and normalisation
//! case of the shared conformance suite (f64 reference, NaN/∞ rows, long split rows,
//! strided views). No lavapipe, or another subgroup size than asked for, is a failure,
//! not a skip. The workgroup-memory fallback runs in `tests/conformance.rs` (`fold31/`).

use std::process::Command;
use xkern_core::Backend;
use xkern_core::conformance::{Ctx, cases};
use xkern_wgpu::WgpuBackend;

/// Set in the children: the subgroup size they must see.
const CHILD: &str = "XKERN_SUBGROUP_TEST_SIZE";

/// The conformance cases that run through the reduction trees.
fn uses_trees(name: &str) -> bool {
    ["reduce/", "softmax/", "log_softmax/", "rms_norm/"]
        .iter()
        .any(|p| name.starts_with(p))
}

fn child(size: u32) -> Result<usize, String> {
    let dev = WgpuBackend::new().map_err(|e| format!("no lavapipe adapter: {e}"))?;
    let info = dev.info();
    let want = format!("subgroup_size={size}..{size}");
    if !info.features.iter().any(|f| f == "subgroup") || !info.features.contains(&want) {
        return Err(format!(
            "{}: expected the subgroup feature with {want}, device reports {:?}",
            dev.name(),
            info.features
        ));
    }
    let ctx = Ctx {
        dtypes: info.dtypes,
        dev,
        other: None,
    };
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in cases::<WgpuBackend>(false) {
        if !uses_trees(&case.name) {
            continue;
        }
        ran += 1;
        if let Err(f) = (case.run)(&ctx) {
            failures.push(format!("{}: {}", case.name, f.0));
        }
    }
    if ran < 50 {
        return Err(format!(
            "only {ran} reduction cases found; the filter is stale"
        ));
    }
    if failures.is_empty() {
        Ok(ran)
    } else {
        Err(failures.join("\n"))
    }
}

fn main() {
    if let Ok(size) = std::env::var(CHILD) {
        let size: u32 = size.parse().expect("subgroup size");
        match child(size) {
            Ok(n) => {
                println!("subgroup size {size}: {n} reduction cases passed");
                std::process::exit(0);
            }
            Err(e) => {
                println!("subgroup size {size}: FAILED\n{e}");
                std::process::exit(1);
            }
        }
    }
    // `cargo test -- --list` and filters: one test, listed under this binary's name.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("subgroup_sizes_4_8_16: test");
        return;
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut failed = false;
    for (width, size) in [(128, 4), (256, 8), (512, 16)] {
        let out = Command::new(&exe)
            .env(CHILD, size.to_string())
            .env("LP_NATIVE_VECTOR_WIDTH", width.to_string())
            .env("XKERN_WGPU_ADAPTER", "llvmpipe")
            .env_remove("XKERN_WGPU_SUBGROUPS")
            .output()
            .expect("spawn the child test process");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            println!(
                "LP_NATIVE_VECTOR_WIDTH={width}: child failed ({})",
                out.status
            );
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
    println!("test subgroup_sizes_4_8_16 ... ok");
}
