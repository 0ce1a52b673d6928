//! lossc: loss functions as text, compiled to fused loss+gradient kernels.
//!
//! The pipeline, one module per stage:
//! `syntax` (text -> graph) -> `ir` (the hash-consed graph) -> `passes` (simplify, autodiff,
//! fuse) -> `interp` (the f64 oracle implementing the `contract`).
//!
//! ```
//! let module = lossc::syntax::parse("loss ce = -y * ln(p);").unwrap();
//! let fused = lossc::passes::fuse::fuse(&module, "ce").unwrap();
//! let targets = lossc::contract::Targets::Labels { labels: &[0], smoothing: 0.0 };
//! let out = lossc::interp::run(&fused, &[2.0, 0.0, -1.0], 3, &targets).unwrap();
//! assert!((out.loss - 0.1698).abs() < 1e-4); // -ln(softmax([2, 0, -1])[0])
//! ```

pub mod backend;
pub mod bench;
pub mod contract;
pub mod evaluate;
pub mod interp;
pub mod ir;
pub mod mathref;
pub mod passes;
pub mod plot;
pub use lossc_runtime::rng;
pub mod search;
pub mod syntax;
pub mod train;
