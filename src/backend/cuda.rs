//! CUDA C emitter: the fused loss as one self-contained `.cu` file (kernels/loss.cu.in), and a
//! launcher through cudarc (NVRTC to PTX, driver API) for machines with a GPU.

use super::clike::{self, Dialect};
use crate::passes::fuse::Fused;

const TEMPLATE: &str = include_str!("../../kernels/loss.cu.in");

/// Options for the CUDA emitter.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The `.loss` text the kernel came from, quoted in the header.
    pub source: String,
}

/// The entry-point prefix of a loss: `lossc_<name>` (`_rows`, `_mean`).
pub fn prefix(loss: &str) -> String {
    format!("lossc_{loss}")
}

/// Emits the CUDA C source of a fused loss.
pub fn emit(f: &Fused, opts: &Options) -> String {
    let header = clike::header(&f.name, &opts.source);
    clike::render(Dialect::Cuda, TEMPLATE, &header, &prefix(&f.name), &f.graph)
}

/// Compiles CUDA C to PTX with NVRTC (needs libnvrtc at run time, found by cudarc's dynamic
/// loading, e.g. from the `nvidia-cuda-nvrtc-cu12` wheel on LD_LIBRARY_PATH).
pub fn compile_ptx(src: &str, arch: &'static str) -> Result<String, String> {
    let opts = cudarc::nvrtc::CompileOptions { arch: Some(arch), ..Default::default() };
    cudarc::nvrtc::compile_ptx_with_opts(src, opts).map(|ptx| ptx.to_src()).map_err(|e| e.to_string())
}
