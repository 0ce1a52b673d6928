//! The reference every backend is checked against: the kernel contract (what a loss kernel
//! computes from logits and targets), f64 math, and the f64 interpreter that implements the
//! contract exactly as written.

pub mod contract;
pub mod interp;
pub mod mathref;
