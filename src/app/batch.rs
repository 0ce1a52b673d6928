//! `lossc eval`: a batch given as JSON, run through one backend, the result as JSON.

use crate::backend::{cuda, jit, wgsl};
use crate::passes::fuse::Fused;
use crate::reference::contract::{self, ContractError, KernelOutput, Targets};
use crate::reference::interp;
use serde::Deserialize;

/// Where a batch runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The f64 reference interpreter.
    Interp,
    /// The Cranelift JIT kernel (f32, SIMD).
    Jit,
    /// The CUDA kernel through NVRTC and the driver API (needs an NVIDIA GPU).
    Cuda,
    /// The WGSL kernel through wgpu (any Vulkan adapter, lavapipe included).
    Wgsl,
}

/// Why a batch was not evaluated.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("logits row {row} has {got} values, row 0 has {want}")]
    RaggedLogits { row: usize, got: usize, want: usize },
    #[error("targets row {row} has {got} values, expected {want}")]
    RaggedTargets { row: usize, got: usize, want: usize },
    #[error(
        "give either \"labels\" (with optional \"label_smoothing\"), \"labels\" + \"labels_b\" + \"lam\", or \"targets\""
    )]
    Form,
    #[error("logit [{row}][{col}] = {value:e} is beyond the f32 range of the kernels (use the interp backend)")]
    F32Range { row: usize, col: usize, value: f64 },
    #[error(transparent)]
    Contract(#[from] ContractError),
    #[error(transparent)]
    Jit(#[from] jit::JitError),
    #[error(transparent)]
    Cuda(#[from] cuda::CudaError),
    #[error(transparent)]
    Wgsl(#[from] wgsl::WgslError),
}

impl crate::error::Classify for BatchError {
    fn blame(&self) -> crate::error::Blame {
        use crate::error::Blame;
        match self {
            BatchError::Jit(_) => Blame::Failure,
            BatchError::Cuda(e) => e.blame(),
            BatchError::Wgsl(e) => e.blame(),
            _ => Blame::Input,
        }
    }
}

/// The JSON batch `lossc eval` reads.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    logits: Vec<Vec<f64>>,
    labels: Option<Vec<u32>>,
    labels_b: Option<Vec<u32>>,
    lam: Option<Vec<f64>>,
    label_smoothing: Option<f64>,
    targets: Option<Vec<Vec<f64>>>,
}

/// A batch: logits `[B, C]` row-major and targets in one of the contract's forms.
pub struct Batch {
    pub logits: Vec<f64>,
    pub classes: usize,
    labels: Vec<u32>,
    labels_b: Vec<u32>,
    lam: Vec<f64>,
    dense: Vec<f64>,
    smoothing: f64,
    form: Form,
}

#[derive(Clone, Copy)]
enum Form {
    Labels,
    Mixup,
    Dense,
}

impl Batch {
    /// Reads a batch from JSON text, checking its shape and that its targets fit the contract.
    pub fn parse(text: &str) -> Result<Batch, BatchError> {
        let j: Json = serde_json::from_str(text)?;
        let classes = j.logits.first().map_or(0, Vec::len);
        if let Some(row) = j.logits.iter().position(|r| r.len() != classes) {
            return Err(BatchError::RaggedLogits { row, got: j.logits[row].len(), want: classes });
        }
        let smoothing = j.label_smoothing.unwrap_or(0.0);
        let (form, labels, labels_b, lam, dense) = match (j.labels, j.labels_b, j.lam, j.targets) {
            (Some(l), None, None, None) => (Form::Labels, l, vec![], vec![], vec![]),
            (Some(l), Some(b), Some(lam), None) => (Form::Mixup, l, b, lam, vec![]),
            (None, None, None, Some(t)) if j.label_smoothing.is_none() => {
                if let Some(row) = t.iter().position(|r| r.len() != classes) {
                    return Err(BatchError::RaggedTargets { row, got: t[row].len(), want: classes });
                }
                (Form::Dense, vec![], vec![], vec![], t.concat())
            }
            _ => return Err(BatchError::Form),
        };
        let b = Batch { logits: j.logits.concat(), classes, labels, labels_b, lam, dense, smoothing, form };
        let rows = contract::batch_size(b.logits.len(), classes)?;
        b.targets().check(rows, classes)?;
        b.targets().check_distributions(classes)?;
        Ok(b)
    }

    /// The targets, borrowed.
    pub fn targets(&self) -> Targets<'_> {
        let smoothing = self.smoothing;
        match self.form {
            Form::Labels => Targets::Labels { labels: &self.labels, smoothing },
            Form::Mixup => Targets::Mixup { labels: &self.labels, labels_b: &self.labels_b, lam: &self.lam, smoothing },
            Form::Dense => Targets::Dense { y: &self.dense },
        }
    }

    /// Runs the batch through `backend`: f64 on the interpreter, f32 on the kernels.
    pub fn run(&self, fused: &Fused, backend: Backend) -> Result<KernelOutput, BatchError> {
        if backend == Backend::Interp {
            return Ok(interp::run(fused, &self.logits, self.classes, &self.targets())?);
        }
        if let Some(i) = self.logits.iter().position(|v| v.abs() > f32::MAX as f64) {
            let (row, col) = (i / self.classes, i % self.classes);
            return Err(BatchError::F32Range { row, col, value: self.logits[i] });
        }
        let narrow = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let (z, lam, dense) = (narrow(&self.logits), narrow(&self.lam), narrow(&self.dense));
        let t32: Targets<'_, f32> = match self.targets() {
            Targets::Labels { labels, smoothing } => Targets::Labels { labels, smoothing },
            Targets::Mixup { labels, labels_b, smoothing, .. } => {
                Targets::Mixup { labels, labels_b, lam: &lam, smoothing }
            }
            Targets::Dense { .. } => Targets::Dense { y: &dense },
        };
        let classes = self.classes;
        let (loss, row_loss, grad) = match backend {
            Backend::Interp => unreachable!("handled above"),
            Backend::Jit => {
                let rows = z.len() / classes; // checked by `parse`
                let kernel = jit::compile(fused, jit::Spec::of(&t32, classes))?;
                let (mut grad, mut row_loss) = (vec![0f32; z.len()], vec![0f32; rows]);
                let loss = kernel.run(&z, &t32, &mut grad, &mut row_loss, 0)?;
                (loss, row_loss, grad)
            }
            Backend::Cuda => {
                let gpu = cuda::Cuda::new()?;
                let k = gpu.compile(fused)?;
                gpu.run(&k, &z, classes, &t32)?
            }
            Backend::Wgsl => {
                let (row_loss, grad) = wgsl::Gpu::new()?.run(fused, &z, classes, &t32)?;
                let loss = row_loss.iter().map(|&v| v as f64).sum::<f64>() / row_loss.len() as f64;
                (loss, row_loss, grad)
            }
        };
        let widen = |v: Vec<f32>| v.into_iter().map(f64::from).collect();
        Ok(KernelOutput { loss, row_loss: widen(row_loss), grad: widen(grad) })
    }
}
