//! The application layer on top of the compiler, the training glue and the search: what the
//! commands of `lossc` do, as library calls that return values for the CLI to print.

pub mod batch;
pub mod bench;
pub mod compile;
pub mod evaluate;
pub mod plot;
pub mod report;
