//! No adapter is a clear `Err` naming what to install, and a named adapter that does not
//! exist lists the adapters that do. The only test of this binary touches the
//! environment, so no other thread reads it meanwhile.

use xkern_core::Error;
use xkern_wgpu::{DeviceOptions, WgpuBackend};

#[test]
fn missing_adapters_are_clear_errors() {
    let named = WgpuBackend::with_options(&DeviceOptions {
        adapter: Some("no-such-gpu-xyz".into()),
        ..DeviceOptions::default()
    });
    match named {
        Err(Error::BackendUnavailable { reason, .. }) => {
            assert!(reason.contains("no-such-gpu-xyz"), "{reason}")
        }
        other => panic!("expected BackendUnavailable, got {other:?}"),
    }
    // An API this build does not include (the GL backend is not compiled in): no adapter.
    // SAFETY: this is the only test in this binary; no other thread uses the environment.
    unsafe { std::env::set_var("WGPU_BACKEND", "gl") };
    let none = WgpuBackend::new();
    unsafe { std::env::remove_var("WGPU_BACKEND") };
    match none {
        Err(Error::BackendUnavailable { reason, .. }) => {
            assert!(reason.contains("mesa-vulkan-drivers"), "{reason}")
        }
        other => panic!("expected BackendUnavailable naming the driver, got {other:?}"),
    }
}
