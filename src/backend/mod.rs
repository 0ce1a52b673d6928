//! Backends: the graph -> kernel emitters, and the math they share.
//!
//! `mathlib` (kernels/mathlib.rs) holds every f32 routine once, generic over a small vector
//! machine; `vm` maps each graph op to those routines; each target implements the machine.

#[path = "../../kernels/coeffs.rs"]
#[allow(clippy::excessive_precision)]
pub mod coeffs;
#[path = "../../kernels/mathlib.rs"]
pub mod mathlib;

pub mod clike;
pub mod cuda;
pub mod jit;
pub mod jit_pass;
pub mod jit_rt;
pub mod python;
pub mod vm;
pub mod wgsl;
