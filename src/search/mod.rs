//! Loss search (issue 6, in progress): the genome and its mutation, pre-screening and
//! deduplication keys. Regularized evolution, the store and the commands come next.

pub mod genome;
pub mod screen;
