//! The conformance suite through the facade's `Device` enum, on the device that
//! `XKERN_DEVICE` names (CPU when unset): checks the run-time dispatch end to end, and
//! runs the suite on any backend with `XKERN_DEVICE=<name> cargo test --test conformance`.
fn main() {
    match xkern::Device::from_env() {
        Ok(dev) => xkern::core::conformance::main(dev),
        Err(e) => {
            eprintln!("cannot open the device named by XKERN_DEVICE: {e}");
            std::process::exit(1)
        }
    }
}
