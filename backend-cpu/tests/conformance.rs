//! The shared conformance suite on the CPU backend, once per instruction set this machine
//! can run (`avx512/...`, `avx2/...`, `generic/...`): one test per case and ISA.
use xkern_core::Backend;
use xkern_core::conformance::{Ctx, main_many};
use xkern_cpu::{CpuBackend, Isa};

fn main() {
    let contexts = Isa::available()
        .into_iter()
        .map(|isa| {
            let dev = CpuBackend::with_options(None, isa).expect("an available ISA");
            (
                isa.name().to_string(),
                Ctx {
                    dtypes: dev.info().dtypes,
                    dev,
                    other: None,
                },
            )
        })
        .collect();
    main_many(contexts)
}
