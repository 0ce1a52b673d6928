//! WGSL emitter: the fused loss as one self-contained compute shader (kernels/loss.wgsl.in),
//! validated with naga, run through wgpu where an adapter exists.

use super::clike::{self, Dialect};
use crate::passes::fuse::Fused;

const TEMPLATE: &str = include_str!("../../kernels/loss.wgsl.in");

/// Options for the WGSL emitter.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The `.loss` text the kernel came from, quoted in the header.
    pub source: String,
}

/// Emits the WGSL source of a fused loss.
pub fn emit(f: &Fused, opts: &Options) -> String {
    let header = clike::header(&f.name, &opts.source);
    clike::render(Dialect::Wgsl, TEMPLATE, &header, &f.name, &f.graph)
}

/// Parses and validates WGSL with naga, returning its diagnostic on failure.
pub fn validate(src: &str) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(src).map_err(|e| e.emit_to_string(src))?;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::default())
        .validate(&module)
        .map(|_| ())
        .map_err(|e| e.emit_to_string(src))
}
