//! Loss search (issue 6, in progress): the genome and its mutation, pre-screening and
//! deduplication keys, and regularized evolution over a pluggable fitness. The store, the
//! training fitness and the commands come next.

pub mod evolution;
pub mod genome;
pub mod screen;
