//! Passes over the graph: simplify, differentiate, fuse.

pub mod autodiff;
pub mod fuse;
pub mod simplify;
