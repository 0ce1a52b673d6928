//! The kernel contract every backend implements (see docs/kernel-contract.md).
//!
//! Inputs: logits `[B, C]` row-major and targets in one of three forms. Outputs: the loss of
//! each row `[B]` (the sum over classes of the written expression), the batch loss (their mean,
//! summed in f64), and the gradient of the batch loss with respect to the logits `[B, C]`.
//! Per row: `p = softmax(z)`, `s_c = p_c * dL/dp_c`, `grad_c = (s_c - p_c * sum(s)) / B`.

/// Targets of a batch. Label forms build `y` inside the kernel, never as a `[B, C]` tensor.
/// `F` is the element type of `lam` and dense targets: f64 for the interpreter, f32 for kernels.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a, F = f64> {
    /// `y = (1 - alpha) * onehot(label) + alpha / C`.
    Labels { labels: &'a [u32], smoothing: f64 },
    /// `y = (1 - alpha) * (lam * onehot(a) + (1 - lam) * onehot(b)) + alpha / C`.
    Mixup { labels: &'a [u32], labels_b: &'a [u32], lam: &'a [F], smoothing: f64 },
    /// `y` given for every element, `[B, C]`.
    Dense { y: &'a [F] },
}

/// A batch's targets as the GPU kernels take them: the mode (0 labels, 1 mixup, 2 dense), the
/// smoothing, and every array, empty where the mode has none.
pub struct FlatTargets<'a> {
    pub mode: u32,
    pub smoothing: f32,
    pub labels: &'a [u32],
    pub labels_b: &'a [u32],
    pub lam: &'a [f32],
    pub dense: &'a [f32],
}

impl<'a> Targets<'a, f32> {
    /// The targets in the GPU kernels' argument form.
    pub fn flat(&self) -> FlatTargets<'a> {
        let flat = |mode, smoothing: f64, labels, labels_b, lam, dense| FlatTargets {
            mode,
            smoothing: smoothing as f32,
            labels,
            labels_b,
            lam,
            dense,
        };
        match *self {
            Targets::Labels { labels, smoothing } => flat(0, smoothing, labels, &[], &[], &[]),
            Targets::Mixup { labels, labels_b, lam, smoothing } => flat(1, smoothing, labels, labels_b, lam, &[]),
            Targets::Dense { y } => flat(2, 0.0, &[], &[], &[], y),
        }
    }
}

/// A batch that does not fit the contract.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ContractError {
    #[error("logits have {len} values, not a multiple of {classes} classes")]
    Ragged { len: usize, classes: usize },
    #[error("the batch is empty")]
    Empty,
    #[error("{what} has {got} entries, expected {want}")]
    Length { what: &'static str, got: usize, want: usize },
    #[error("row {row}: label {label} is out of range for {classes} classes")]
    Label { row: usize, label: u32, classes: usize },
    #[error("the kernel was compiled for {compiled}, the batch needs {given}")]
    Spec { compiled: String, given: String },
    #[error("{what} = {value} is outside [0, 1]")]
    Range { what: &'static str, value: f64 },
    #[error("targets row {row} sums to {sum}, not 1")]
    RowSum { row: usize, sum: f64 },
}

impl<F: Copy + Into<f64>> Targets<'_, F> {
    /// Checks the shapes and ranges against a `[batch, classes]` logit matrix.
    pub fn check(&self, batch: usize, classes: usize) -> Result<(), ContractError> {
        let len = |what, got: usize, want| {
            if got == want { Ok(()) } else { Err(ContractError::Length { what, got, want }) }
        };
        let labels_ok = |labels: &[u32]| {
            labels.iter().enumerate().try_for_each(|(row, &label)| {
                if (label as usize) < classes { Ok(()) } else { Err(ContractError::Label { row, label, classes }) }
            })
        };
        let unit = |what, v: f64| {
            if (0.0..=1.0).contains(&v) { Ok(()) } else { Err(ContractError::Range { what, value: v }) }
        };
        match *self {
            Targets::Labels { labels, smoothing } => {
                len("labels", labels.len(), batch)?;
                labels_ok(labels)?;
                unit("label_smoothing", smoothing)
            }
            Targets::Mixup { labels, labels_b, lam, smoothing } => {
                len("labels", labels.len(), batch)?;
                len("labels_b", labels_b.len(), batch)?;
                len("lam", lam.len(), batch)?;
                labels_ok(labels)?;
                labels_ok(labels_b)?;
                lam.iter().try_for_each(|&l| unit("lam", l.into()))?;
                unit("label_smoothing", smoothing)
            }
            Targets::Dense { y } => len("targets", y.len(), batch * classes),
        }
    }

    /// Checks that dense targets are distributions: every row's entries in [0, 1], summing
    /// to 1 (in f64, so that f32 targets pass with their rounding; 1e-5 allows it at any C).
    /// A pass over the whole matrix, so the kernels leave it to where a batch comes in
    /// (`lossc eval`) and to the interpreter.
    pub fn check_distributions(&self, classes: usize) -> Result<(), ContractError> {
        let Targets::Dense { y } = *self else { return Ok(()) };
        for (row, t) in y.chunks(classes.max(1)).enumerate() {
            if let Some(&v) = t.iter().find(|&&v| !(0.0..=1.0).contains(&v.into())) {
                return Err(ContractError::Range { what: "a dense target", value: v.into() });
            }
            let sum: f64 = t.iter().map(|&v| v.into()).sum();
            if (sum - 1.0).abs() > 1e-5 {
                return Err(ContractError::RowSum { row, sum });
            }
        }
        Ok(())
    }

    /// The target of one element.
    pub fn y(&self, row: usize, class: usize, classes: usize) -> f64 {
        let hit = |l: &[u32]| if l[row] as usize == class { 1.0 } else { 0.0 };
        let smooth = |a: f64, v: f64| (1.0 - a) * v + a / classes as f64;
        match *self {
            Targets::Labels { labels, smoothing } => smooth(smoothing, hit(labels)),
            Targets::Mixup { labels, labels_b, lam, smoothing } => {
                let l: f64 = lam[row].into();
                smooth(smoothing, l * hit(labels) + (1.0 - l) * hit(labels_b))
            }
            Targets::Dense { y } => y[row * classes + class].into(),
        }
    }
}

/// What a kernel returns for a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelOutput {
    /// Mean of `row_loss`.
    pub loss: f64,
    pub row_loss: Vec<f64>,
    /// Gradient of `loss` with respect to the logits, `[B, C]`.
    pub grad: Vec<f64>,
}

/// Number of rows, after checking that `len` logits split into rows of `classes`.
pub fn batch_size(len: usize, classes: usize) -> Result<usize, ContractError> {
    if len == 0 {
        return Err(ContractError::Empty);
    }
    if classes == 0 || !len.is_multiple_of(classes) {
        return Err(ContractError::Ragged { len, classes });
    }
    Ok(len / classes)
}
