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

/// How to call the emitted kernel of loss `name`, for the manifest `lossc compile` writes: the
/// entry points, their arguments and launch shapes (the launcher below uses the same).
pub fn manifest(name: &str) -> serde_json::Value {
    let p = prefix(name);
    let launch = |l: Layout| {
        let grid = match l {
            Layout::Block => "B".to_string(),
            Layout::Warp => format!("ceil(B / {})", Layout::WARP_ROWS),
        };
        serde_json::json!({ "entry_point": format!("{p}{}", l.suffix()), "grid": grid, "block": Layout::BLOCK,
                            "when": match l {
                                Layout::Warp => format!("C <= {}", Layout::WARP_MAX_CLASSES),
                                Layout::Block => format!("C > {}", Layout::WARP_MAX_CLASSES),
                            } })
    };
    serde_json::json!({
        "rows_args": ["const float* logits [B*C]", "int mode (0 labels, 1 mixup, 2 dense)", "const unsigned* labels [B]",
                      "const unsigned* labels_b [B]", "const float* lam [B]", "const float* dense [B*C]",
                      "float alpha", "int B", "int C", "float* grad [B*C]", "float* row_loss [B]"],
        "rows": Layout::ALL.map(launch),
        "mean": { "entry_point": format!("{p}_mean"), "args": ["const float* row_loss [B]", "int B", "double* loss"],
                  "grid": 1, "block": Layout::BLOCK },
    })
}

/// Compiles CUDA C to PTX with NVRTC (needs libnvrtc at run time, found by cudarc's dynamic
/// loading, e.g. from the `nvidia-cuda-nvrtc-cu12` wheel on LD_LIBRARY_PATH).
pub fn compile_ptx(src: &str, arch: &'static str) -> Result<String, CudaError> {
    lossc_runtime::cuda::compile_ptx(src, arch).map(|ptx| ptx.to_src()).map_err(CudaError::Nvrtc)
}

/// What went wrong compiling or running a CUDA kernel.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("libcuda (the NVIDIA driver) is not installed")]
    NoDriver,
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    #[error("NVRTC: {0}")]
    Nvrtc(String),
    #[error("CUDA driver: {0}")]
    Driver(String),
    #[error(transparent)]
    Batch(#[from] crate::reference::contract::ContractError),
}
crate::error::classify!(CudaError, input: [Batch]);

use crate::reference::contract::{Targets, batch_size};
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use std::sync::Arc;

/// A CUDA device with the driver API (cudarc), or why there is none.
pub struct Cuda {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// The device name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    arch: &'static str,
}

/// A fused loss compiled for the device.
pub struct CudaKernel {
    rows: CudaFunction,
    rows_warp: CudaFunction,
    mean: CudaFunction,
}

/// How rows map onto threads: the two `_rows` entry points of kernels/loss.cu.in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `_rows`: a block of 256 threads per row.
    Block,
    /// `_rows_warp`: a warp per row, 8 rows per block.
    Warp,
}

impl Layout {
    /// The launcher's choice for C classes: the layout whose row cache holds the row (each
    /// logit read once, each gradient written once): a warp up to 512 classes, then a block.
    pub fn for_classes(classes: usize) -> Layout {
        if classes <= Layout::WARP_MAX_CLASSES { Layout::Warp } else { Layout::Block }
    }

    /// Both layouts, in the order the manifest lists them.
    pub const ALL: [Layout; 2] = [Layout::Block, Layout::Warp];
    /// Threads per block, for both layouts.
    pub const BLOCK: u32 = 256;
    /// The most classes the launcher gives the warp layout: its row cache
    /// (`LOSSC_WARP_CACHE` in kernels/loss.cu.in, 16 elements a lane).
    pub const WARP_MAX_CLASSES: usize = 512;
    /// The longest row the block layout reads once (`LOSSC_BLOCK_CACHE`); longer rows
    /// recompute `exp` in each pass.
    pub const BLOCK_CACHE: usize = 2048;
    /// Rows a block of the warp layout covers (one per warp).
    pub const WARP_ROWS: usize = 8;

    /// The entry point's suffix after the loss's [`prefix`].
    pub fn suffix(self) -> &'static str {
        match self {
            Layout::Block => "_rows",
            Layout::Warp => "_rows_warp",
        }
    }

    /// Rows one block covers.
    pub fn rows_per_block(self) -> usize {
        match self {
            Layout::Block => 1,
            Layout::Warp => Layout::WARP_ROWS,
        }
    }

    /// Blocks for `rows` rows.
    pub fn grid(self, rows: usize) -> usize {
        rows.div_ceil(self.rows_per_block())
    }

    fn config(self, rows: usize) -> LaunchConfig {
        LaunchConfig { grid_dim: (self.grid(rows) as u32, 1, 1), block_dim: (Layout::BLOCK, 1, 1), shared_mem_bytes: 0 }
    }

    fn function(self, k: &CudaKernel) -> &CudaFunction {
        match self {
            Layout::Block => &k.rows,
            Layout::Warp => &k.rows_warp,
        }
    }
}

use lossc_runtime::cuda::arch_of;

fn err(e: impl std::fmt::Debug) -> CudaError {
    CudaError::Driver(format!("{e:?}"))
}

impl Cuda {
    /// Device 0. `CudaContext::new` panics without libcuda, so its presence is checked first.
    pub fn new() -> Result<Cuda, CudaError> {
        // SAFETY: only probes for the shared library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(CudaError::NoDriver);
        }
        let ctx = CudaContext::new(0).map_err(|e| CudaError::NoDevice(format!("{e:?}")))?;
        let name = ctx.name().map_err(err)?;
        let (major, minor) = ctx.compute_capability().map_err(err)?;
        let stream = ctx.default_stream();
        Ok(Cuda { ctx, stream, name, arch: arch_of(major, minor) })
    }

    /// NVRTC -> PTX -> module for this device.
    pub fn compile(&self, f: &Fused) -> Result<CudaKernel, CudaError> {
        let src = emit(f, &Options::default());
        let ptx = lossc_runtime::cuda::compile_ptx(&src, self.arch).map_err(CudaError::Nvrtc)?;
        let module = self.ctx.load_module(ptx).map_err(err)?;
        let p = prefix(&f.name);
        Ok(CudaKernel {
            rows: module.load_function(&format!("{p}{}", Layout::Block.suffix())).map_err(err)?,
            rows_warp: module.load_function(&format!("{p}{}", Layout::Warp.suffix())).map_err(err)?,
            mean: module.load_function(&format!("{p}_mean")).map_err(err)?,
        })
    }

    /// Runs a batch: returns `(batch loss, row_loss, grad)`; copies in and out included.
    pub fn run(
        &self,
        k: &CudaKernel,
        logits: &[f32],
        classes: usize,
        targets: &Targets<f32>,
    ) -> Result<(f64, Vec<f32>, Vec<f32>), CudaError> {
        self.run_with(Layout::for_classes(classes), k, logits, classes, targets)
    }

    /// [`Cuda::run`] with the row layout chosen by the caller (the tests run both).
    pub fn run_with(
        &self,
        layout: Layout,
        k: &CudaKernel,
        logits: &[f32],
        classes: usize,
        targets: &Targets<f32>,
    ) -> Result<(f64, Vec<f32>, Vec<f32>), CudaError> {
        let b = batch_size(logits.len(), classes)?;
        targets.check(b, classes)?;
        let s = &self.stream;
        let t = targets.flat();
        let (mode, alpha) = (t.mode as i32, t.smoothing);
        // A device buffer for every argument: one placeholder element where the mode has none.
        let u = |v: &[u32]| s.clone_htod(if v.is_empty() { &[0u32][..] } else { v }).map_err(err);
        let f = |v: &[f32]| s.clone_htod(if v.is_empty() { &[0f32][..] } else { v }).map_err(err);
        let d_logits = s.clone_htod(logits).map_err(err)?;
        let (d_labels, d_labels_b, d_lam, d_dense) = (u(t.labels)?, u(t.labels_b)?, f(t.lam)?, f(t.dense)?);
        let mut d_grad = s.alloc_zeros::<f32>(logits.len()).map_err(err)?;
        let mut d_rows = s.alloc_zeros::<f32>(b).map_err(err)?;
        let mut d_loss = s.alloc_zeros::<f64>(1).map_err(err)?;
        let (bi, ci) = (b as i32, classes as i32);
        let mut launch = s.launch_builder(layout.function(k));
        launch.arg(&d_logits).arg(&mode).arg(&d_labels).arg(&d_labels_b).arg(&d_lam).arg(&d_dense);
        launch.arg(&alpha).arg(&bi).arg(&ci).arg(&mut d_grad).arg(&mut d_rows);
        // SAFETY: the arguments match the kernel's signature in kernels/loss.cu.in, and every
        // buffer holds what the contract says for B rows of C classes.
        unsafe { launch.launch(layout.config(b)) }.map_err(err)?;
        let mean_cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let mut launch = s.launch_builder(&k.mean);
        launch.arg(&d_rows).arg(&bi).arg(&mut d_loss);
        // SAFETY: as above, for `_mean(const float*, int, double*)`.
        unsafe { launch.launch(mean_cfg) }.map_err(err)?;
        let loss = s.clone_dtoh(&d_loss).map_err(err)?[0];
        Ok((loss, s.clone_dtoh(&d_rows).map_err(err)?, s.clone_dtoh(&d_grad).map_err(err)?))
    }
}

impl Cuda {
    /// Median milliseconds of a `_rows` kernel on resident data (labels, no smoothing), and
    /// the device's copy bandwidth in GB/s (read + write of a buffer as large as the logits).
    pub fn bench(
        &self,
        layout: Layout,
        k: &CudaKernel,
        logits: &[f32],
        labels: &[u32],
        classes: usize,
    ) -> Result<(f64, f64), CudaError> {
        let s = &self.stream;
        let b = labels.len();
        let d_logits = s.clone_htod(logits).map_err(err)?;
        let d_labels = s.clone_htod(labels).map_err(err)?;
        let d_unused_u = s.alloc_zeros::<u32>(1).map_err(err)?;
        let d_unused_f = s.alloc_zeros::<f32>(1).map_err(err)?;
        let mut d_grad = s.alloc_zeros::<f32>(logits.len()).map_err(err)?;
        let mut d_rows = s.alloc_zeros::<f32>(b).map_err(err)?;
        let (mode, alpha, bi, ci) = (0i32, 0f32, b as i32, classes as i32);
        let cfg = layout.config(b);
        let mut run = || -> Result<(), CudaError> {
            let mut launch = s.launch_builder(layout.function(k));
            launch.arg(&d_logits).arg(&mode).arg(&d_labels).arg(&d_unused_u).arg(&d_unused_f).arg(&d_unused_f);
            launch.arg(&alpha).arg(&bi).arg(&ci).arg(&mut d_grad).arg(&mut d_rows);
            // SAFETY: as in `run`.
            unsafe { launch.launch(cfg) }.map_err(err)?;
            Ok(())
        };
        let kernel_ms = median_ms(s, &mut run)?;
        let mut copy = s.alloc_zeros::<f32>(logits.len()).map_err(err)?;
        let mut run_copy = || s.memcpy_dtod(&d_logits, &mut copy).map_err(err);
        let copy_ms = median_ms(s, &mut run_copy)?;
        let gbps = 8.0 * logits.len() as f64 / (copy_ms * 1e-3) / 1e9;
        Ok((kernel_ms, gbps))
    }
}

/// Milliseconds per call of `f`: the median over 9 samples of 50 calls queued back to back
/// and synchronised once, so that a kernel of a few microseconds is not timed as the host's
/// launch-and-wait round trip.
fn median_ms(s: &CudaStream, f: &mut dyn FnMut() -> Result<(), CudaError>) -> Result<f64, CudaError> {
    const CALLS: usize = 50;
    for _ in 0..5 {
        f()?;
    }
    s.synchronize().map_err(err)?;
    let mut t: Vec<f64> = Vec::new();
    for _ in 0..9 {
        let start = std::time::Instant::now();
        for _ in 0..CALLS {
            f()?;
        }
        s.synchronize().map_err(err)?;
        t.push(start.elapsed().as_secs_f64() * 1e3 / CALLS as f64);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The launcher's thresholds are the template's row caches, and the warp layout's rows
    /// per block are its cached warps.
    #[test]
    fn the_layout_constants_are_the_templates() {
        for (define, value) in [
            ("LOSSC_WARP_CACHE", Layout::WARP_MAX_CLASSES),
            ("LOSSC_BLOCK_CACHE", Layout::BLOCK_CACHE),
            ("LOSSC_WARPS", Layout::WARP_ROWS),
            ("LOSSC_THREADS", Layout::BLOCK as usize),
        ] {
            assert!(TEMPLATE.contains(&format!("#define {define} {value}\n")), "{define} is not {value} in loss.cu.in");
        }
        assert_eq!(Layout::WARP_ROWS * 32, Layout::BLOCK as usize);
    }
}
