//! Glue between the compiler and the training runtime: a fused loss as the runtime's
//! [`LossFn`], through the JIT kernel (compiled once per target form and smoothing).

use crate::backend::jit::{self, JitKernel, Spec, TargetKind};
use crate::contract::Targets;
use crate::passes::fuse::Fused;
use lossc_runtime::train::{LabelTargets, LossFn};
use std::sync::{Arc, Mutex};

/// A compiled loss for training. Kernels are kept per spec here, so a training step does not
/// pay the process cache's key (the printed graph) each time.
pub struct JitLoss {
    pub fused: Fused,
    kernels: Mutex<Vec<(Spec, Arc<JitKernel>)>>,
}

impl JitLoss {
    pub fn new(fused: Fused) -> JitLoss {
        JitLoss { fused, kernels: Mutex::new(Vec::new()) }
    }

    fn kernel(&self, spec: Spec) -> Result<Arc<JitKernel>, String> {
        let mut ks = self.kernels.lock().expect("kernel list");
        if let Some((_, k)) = ks.iter().find(|(s, _)| *s == spec) {
            return Ok(k.clone());
        }
        let k = jit::compile(&self.fused, spec).map_err(|e| e.to_string())?;
        ks.push((spec, k.clone()));
        Ok(k)
    }
}

impl LossFn for JitLoss {
    fn loss_and_grad(&self, logits: &[f32], classes: usize, t: &LabelTargets, grad: &mut [f32]) -> Result<f64, String> {
        let targets = match (t.labels_b, t.lam) {
            (Some(labels_b), Some(lam)) => Targets::Mixup { labels: t.labels, labels_b, lam, smoothing: t.smoothing },
            _ => Targets::Labels { labels: t.labels, smoothing: t.smoothing },
        };
        let kind = if matches!(targets, Targets::Mixup { .. }) { TargetKind::Mixup } else { TargetKind::Labels };
        let kernel = self.kernel(Spec { kind, smoothing: t.smoothing, classes })?;
        let mut row_loss = vec![0f32; t.labels.len()];
        kernel.run(logits, &targets, grad, &mut row_loss, 0).map_err(|e| e.to_string())
    }
}

/// Everything one training run is determined by, apart from the loss: what `lossc train`
/// takes as options, what a search stores with each job, and the cache key of a result
/// (two runs with equal specs and equal losses give equal metrics).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainSpec {
    /// `fashion-mnist[:DIR]`, `cifar10:DIR` or `cifar100:DIR`.
    pub data: String,
    /// base, cutout, mixup, randaug or all.
    pub aug: String,
    pub steps: usize,
    pub batch: usize,
    pub seed: u64,
    pub label_smoothing: f64,
    /// adam or sgd.
    pub optimizer: String,
    /// Peak learning rate (None: 1e-3 for Adam, 0.1 for SGD).
    pub lr: Option<f32>,
    /// Warm-up steps (None: min(1000, steps / 5)).
    pub warmup: Option<usize>,
    pub weight_decay: f32,
    pub width: usize,
    pub eval_every: usize,
    /// Validation images: the last `val` of the training set are held out (the paper: 5,000).
    pub val: usize,
    /// The early-stop gate: at this step (None: min(800, steps / 2)) a training accuracy
    /// below `gate_accuracy` scores 0.
    pub gate_step: Option<usize>,
    pub gate_accuracy: f64,
    /// Also report the test set's accuracy (evaluation runs; the search never looks at it).
    pub test: bool,
}

impl Default for TrainSpec {
    fn default() -> TrainSpec {
        TrainSpec {
            data: "fashion-mnist".into(),
            aug: "base".into(),
            steps: 1000,
            batch: 128,
            seed: 0,
            label_smoothing: 0.0,
            optimizer: "adam".into(),
            lr: None,
            warmup: None,
            weight_decay: 0.0,
            width: 1,
            eval_every: 200,
            val: 5000,
            gate_step: None,
            gate_accuracy: 0.35,
            test: false,
        }
    }
}

impl TrainSpec {
    /// The runtime's configuration, or what is wrong with the spec.
    pub fn config(&self) -> Result<lossc_runtime::train::Config, String> {
        use lossc_runtime::augment::{Augment, Technique};
        use lossc_runtime::optim::Optimizer;
        let technique = Technique::parse(&self.aug)
            .ok_or_else(|| format!("--aug `{}`: expected base, cutout, mixup, randaug or all", self.aug))?;
        let optimizer = match self.optimizer.as_str() {
            "adam" => Optimizer::Adam,
            "sgd" => Optimizer::Sgd,
            other => return Err(format!("--optimizer `{other}`: expected adam or sgd")),
        };
        if self.steps == 0 || self.batch == 0 || self.width == 0 || self.val == 0 {
            return Err("--steps, --batch, --width and --val must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.gate_accuracy) {
            return Err(format!("--gate-accuracy {}: expected a value in [0, 1]", self.gate_accuracy));
        }
        if !(0.0..=1.0).contains(&self.label_smoothing) {
            return Err(format!("--label-smoothing {}: expected a value in [0, 1]", self.label_smoothing));
        }
        let mut cfg = lossc_runtime::train::Config::new(self.steps, Augment::new(technique));
        cfg.batch = self.batch;
        cfg.seed = self.seed;
        cfg.label_smoothing = self.label_smoothing;
        cfg.optimizer = optimizer;
        cfg.lr = self.lr.unwrap_or(if optimizer == Optimizer::Adam { 1e-3 } else { 0.1 });
        cfg.warmup = self.warmup.unwrap_or(cfg.warmup).max(1);
        cfg.weight_decay = self.weight_decay;
        cfg.width = self.width;
        cfg.eval_every = self.eval_every.max(1);
        cfg.gate_step = self.gate_step.unwrap_or(cfg.gate_step).max(1);
        cfg.gate_accuracy = self.gate_accuracy;
        Ok(cfg)
    }

    /// The spec as one line of JSON: the cache key of its results.
    pub fn key(&self) -> String {
        serde_json::to_string(self).expect("plain data")
    }
}

/// A data set split for training: (train, validation, test).
pub type Splits = (lossc_runtime::data::Dataset, lossc_runtime::data::Dataset, lossc_runtime::data::Dataset);

/// Loads `fashion-mnist[:DIR]`, `cifar10:DIR` or `cifar100:DIR`, holding out the last `val`
/// training images for validation.
pub fn load_data(spec: &str, val: usize) -> Result<Splits, String> {
    use lossc_runtime::data;
    let (kind, dir) = spec.split_once(':').unwrap_or((spec, ""));
    let (train, test) = match kind {
        "fashion-mnist" => {
            let dir = if dir.is_empty() { data::FASHION_MNIST_DIR } else { dir };
            if !std::path::Path::new(dir).exists() {
                return Err(format!(
                    "{dir} does not exist (apt install dataset-fashion-mnist, or give fashion-mnist:DIR)"
                ));
            }
            data::fashion_mnist(std::path::Path::new(dir)).map_err(|e| e.to_string())?
        }
        "cifar10" | "cifar100" if !dir.is_empty() => {
            let k = if kind == "cifar10" { data::Cifar::Ten } else { data::Cifar::Hundred };
            data::cifar(k, std::path::Path::new(dir)).map_err(|e| e.to_string())?
        }
        _ => return Err(format!("--data `{spec}`: expected fashion-mnist[:DIR], cifar10:DIR or cifar100:DIR")),
    };
    if val >= train.len() {
        return Err(format!("--val {val}: the training set has only {} images", train.len()));
    }
    let (train, validation) = train.split_validation(val);
    Ok((train, validation, test))
}

/// Trains the surrogate with the first loss of `text` under `spec`.
pub fn train_text(
    text: &str,
    spec: &TrainSpec,
    data: &Splits,
    progress: &mut dyn FnMut(&lossc_runtime::train::Progress),
) -> Result<lossc_runtime::train::Metrics, String> {
    let cfg = spec.config()?;
    let g = crate::syntax::parse(text).map_err(|d| d.message)?;
    let name = g.outputs.first().ok_or("the text has no loss")?.0.clone();
    let loss = JitLoss::new(crate::passes::fuse::fuse(&g, &name).expect("the name exists"));
    let (train, val, test) = data;
    Ok(lossc_runtime::train::train_and_test(&loss, train, val, spec.test.then_some(test), &cfg, progress))
}
