//! `SimError` → `xkern_core::Error`: the simulator's message is kept word for word.
//! SBUF/PSUM exhaustion becomes `OutOfMemory` (the kernel asked for more on-chip memory
//! than the core has); every other rule break is a `Backend` error naming neuron-sim,
//! since a valid op reaching it means a kernel bug, not bad user input.

use crate::SimError;
use xkern_core::Error;

pub(super) fn to_core(e: SimError) -> Error {
    match &e {
        SimError::OutOfMemory { requested, .. } => Error::OutOfMemory {
            device: format!("neuron-sim ({e})"),
            bytes: *requested as u64,
        },
        _ => Error::Backend {
            backend: "neuron-sim",
            message: e.to_string(),
        },
    }
}
