//! lossc: loss functions as text, compiled to fused loss+gradient kernels.
//!
//! The pipeline, one module per stage, each using only those before it:
//! `syntax` (text -> graph) -> `ir` (the hash-consed graph and its op table) -> `passes`
//! (simplify, autodiff, fuse) -> `reference` (the kernel contract and the f64 interpreter
//! that every backend is checked against) -> `backend` (CPU JIT, CUDA C, WGSL) -> `train`
//! (a compiled loss in the training runtime) -> `search` (genome, screening, evolution, store)
//! -> `app` (what the commands do: evaluation, reports, charts, benchmarks). Errors are one
//! enum per module; [`error::Classify`] says whether one is the user's input.
//!
//! ```
//! let module = lossc::syntax::parse("loss ce = -y * ln(p);").unwrap();
//! let fused = lossc::passes::fuse::fuse(&module, "ce").unwrap();
//! let targets = lossc::reference::contract::Targets::Labels { labels: &[0], smoothing: 0.0 };
//! let out = lossc::reference::interp::run(&fused, &[2.0, 0.0, -1.0], 3, &targets).unwrap();
//! assert!((out.loss - 0.1698).abs() < 1e-4); // -ln(softmax([2, 0, -1])[0])
//! ```

pub mod app;
pub mod backend;
pub mod error;
pub mod ir;
pub mod passes;
pub mod reference;
pub mod search;
pub mod syntax;
pub mod train;
pub use lossc_runtime::rng;
