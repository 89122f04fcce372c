//! The shared conformance suite on the simulated NeuronCore, once per generation
//! (`trn1/...` on NeuronCore-v2, `trn2/...` on v3), in functional mode: every op runs
//! as a kernel on the simulated engines and is checked against the f64 reference.
use xkern_core::Backend;
use xkern_core::conformance::{Ctx, main_many};
use xkern_neuron_sim::NeuronBackend;

fn main() {
    let contexts = [
        ("trn1", NeuronBackend::trn1()),
        ("trn2", NeuronBackend::trn2()),
    ]
    .into_iter()
    .map(|(label, dev)| {
        (
            label.to_string(),
            Ctx {
                dtypes: dev.info().dtypes,
                other: Some(NeuronBackend::new(dev.config().clone(), dev.mode())),
                dev,
            },
        )
    })
    .collect();
    main_many(contexts)
}
