//! The shared conformance suite on the wgpu backend, twice: on the device as the adapter
//! reports it (`gpu/...`, subgroup trees where offered), and with grids folded at 31
//! workgroups per dimension and subgroups off (`fold31/...`), so that every kernel's
//! folding path and the workgroup-memory trees run on small inputs. Subgroup sizes 4, 8
//! and 16 are covered by `tests/subgroups.rs`. The f16 cases
//! on a device without `shader-f16` run in `tests/device.rs`.
//!
//! No adapter is a loud failure, not a skip: CI installs Mesa's lavapipe so that the
//! suite always runs.
use xkern_core::Backend;
use xkern_core::conformance::{Ctx, main_many};
use xkern_wgpu::{DeviceOptions, WgpuBackend};

fn open(opts: &DeviceOptions) -> WgpuBackend {
    match WgpuBackend::with_options(opts) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "FAILED: the wgpu conformance suite needs an adapter: {e}\n\
                 install Mesa's software Vulkan driver: apt-get install mesa-vulkan-drivers libvulkan1"
            );
            std::process::exit(1);
        }
    }
}

fn main() {
    let dev = open(&DeviceOptions::default());
    eprintln!(
        "wgpu conformance on {} {:?}",
        dev.name(),
        dev.info().features
    );
    let other = open(&DeviceOptions::default());
    let folded = open(&DeviceOptions {
        max_workgroups_per_dim: Some(31),
        without_subgroups: true,
        ..DeviceOptions::default()
    });
    main_many(vec![
        (
            "gpu".to_string(),
            Ctx {
                dtypes: dev.info().dtypes,
                dev,
                other: Some(other),
            },
        ),
        (
            "fold31".to_string(),
            Ctx {
                dtypes: folded.info().dtypes,
                dev: folded,
                other: None,
            },
        ),
    ])
}
