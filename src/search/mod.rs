//! Loss search (SPEC sections 3-4): the genome and its mutation, pre-screening and
//! deduplication keys, regularized evolution over a pluggable fitness, the SQLite store with
//! its job queue, and the coordinator and workers that run searches and samples on it.

pub mod columns;
pub mod evolution;
pub mod genome;
pub mod run;
pub mod screen;
pub mod stats;
pub mod store;
