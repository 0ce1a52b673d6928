//! The Cranelift JIT (in progress).
