//! [`TrainSpec`]: everything one training run is determined by apart from the loss.

use lossc_runtime::augment;

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
    /// Where to train: `cpu`, `wgpu` or `cuda`. Results differ between devices by float rounding, so
    /// the device is part of the key (a CPU spec's key leaves it out: a key without a device
    /// is a CPU one).
    #[serde(default = "cpu", skip_serializing_if = "is_cpu")]
    pub device: String,
    /// The augmentations' settings (SPEC section 6 leaves them open). Like the device, each is
    /// left out of the key at its usual value, so the keys of stores made before they were
    /// settings stay what they were. Zero padding before the random crop, in pixels.
    #[serde(default = "pad", skip_serializing_if = "is_pad")]
    pub pad: usize,
    /// Side of the cutout square, in pixels.
    #[serde(default = "cutout", skip_serializing_if = "is_cutout")]
    pub cutout: usize,
    /// Mixup's weights are drawn from Beta(alpha, alpha).
    #[serde(default = "mixup_alpha", skip_serializing_if = "is_mixup_alpha")]
    pub mixup_alpha: f64,
    /// RandAug's ops an image.
    #[serde(default = "randaug_n", skip_serializing_if = "is_randaug_n")]
    pub randaug_n: usize,
    /// RandAug's magnitude, of 10.
    #[serde(default = "randaug_m", skip_serializing_if = "is_randaug_m")]
    pub randaug_m: f32,
}

/// A setting's usual value for serde: `$get` gives it, `$is` tells it.
macro_rules! usual {
    ($($get:ident, $is:ident: $ty:ty = $value:expr;)*) => {$(
        fn $get() -> $ty {
            $value
        }
        fn $is(v: &$ty) -> bool {
            *v == $value
        }
    )*};
}
usual! {
    pad, is_pad: usize = augment::PAD;
    cutout, is_cutout: usize = augment::CUTOUT;
    mixup_alpha, is_mixup_alpha: f64 = augment::MIXUP_ALPHA;
    randaug_n, is_randaug_n: usize = augment::RANDAUG_N;
    randaug_m, is_randaug_m: f32 = augment::RANDAUG_M;
}

fn cpu() -> String {
    "cpu".into()
}

fn is_cpu(d: &String) -> bool {
    d == "cpu"
}

/// The devices a spec may name.
pub const DEVICES: &[&str] = &["cpu", "wgpu", "cuda"];

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
            device: cpu(),
            pad: pad(),
            cutout: cutout(),
            mixup_alpha: mixup_alpha(),
            randaug_n: randaug_n(),
            randaug_m: randaug_m(),
        }
    }
}

/// The largest batch a spec may ask for: the surrogate's activations take about 0.35 MB an
/// image, so this is about 1.5 GB, where a typo (`70000`) would exhaust the machine's memory.
pub const MAX_BATCH: usize = 4096;

/// The largest channel multiplier: width 16 is 128/256/512 channels.
pub const MAX_WIDTH: usize = 16;

/// The largest pad or cutout side: the data sets' images are 32x32.
pub const MAX_AUGMENT_SIDE: usize = 32;

/// The most RandAug ops an image.
pub const MAX_RANDAUG_N: usize = 16;

/// What is wrong with a [`TrainSpec`]; each names the setting, never a command-line flag.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("augmentation `{0}`: expected base, cutout, mixup, randaug or all")]
    Augmentation(String),
    #[error("optimizer `{0}`: expected adam or sgd")]
    Optimizer(String),
    #[error("{0} must be positive")]
    NotPositive(&'static str),
    #[error("{setting} {value}: expected {expected}")]
    OutOfRange { setting: &'static str, value: f64, expected: &'static str },
    #[error("batch {0}: at most {MAX_BATCH} images")]
    BatchTooLarge(usize),
    #[error("width {0}: at most {MAX_WIDTH} (the surrogate's channels grow with it, and its memory with their square)")]
    WidthTooLarge(usize),
    #[error("device `{0}`: expected cpu, wgpu or cuda")]
    Device(String),
}
crate::error::classify!(SpecError, input: [Augmentation, Optimizer, NotPositive, OutOfRange, BatchTooLarge, WidthTooLarge, Device]);

impl TrainSpec {
    /// The runtime's configuration, or what is wrong with the spec.
    pub fn config(&self) -> Result<lossc_runtime::train::Config, SpecError> {
        use lossc_runtime::augment::{Augment, Technique};
        use lossc_runtime::optim::Optimizer;
        let technique = Technique::parse(&self.aug).ok_or_else(|| SpecError::Augmentation(self.aug.clone()))?;
        let optimizer = match self.optimizer.as_str() {
            "adam" => Optimizer::Adam,
            "sgd" => Optimizer::Sgd,
            other => return Err(SpecError::Optimizer(other.to_string())),
        };
        let positive = [
            ("steps", self.steps),
            ("batch", self.batch),
            ("width", self.width),
            ("val", self.val),
            ("eval-every", self.eval_every),
            ("gate-step", self.gate_step.unwrap_or(1)),
        ];
        for (setting, v) in positive {
            if v == 0 {
                return Err(SpecError::NotPositive(setting));
            }
        }
        if !DEVICES.contains(&self.device.as_str()) {
            return Err(SpecError::Device(self.device.clone()));
        }
        if self.batch > MAX_BATCH {
            return Err(SpecError::BatchTooLarge(self.batch));
        }
        if self.width > MAX_WIDTH {
            return Err(SpecError::WidthTooLarge(self.width));
        }
        let range = |setting, value: f64, ok: bool, expected| {
            if ok { Ok(()) } else { Err(SpecError::OutOfRange { setting, value, expected }) }
        };
        let unit = |x: f64| (0.0..=1.0).contains(&x);
        range("gate accuracy", self.gate_accuracy, unit(self.gate_accuracy), "a value in [0, 1]")?;
        range("label smoothing", self.label_smoothing, unit(self.label_smoothing), "a value in [0, 1]")?;
        if let Some(lr) = self.lr {
            let lr = lr as f64;
            range("learning rate", lr, lr.is_finite() && lr > 0.0, "a finite value above 0")?;
        }
        let wd = self.weight_decay as f64;
        range("weight decay", wd, wd.is_finite() && wd >= 0.0, "a finite value >= 0")?;
        let side = |v: usize, least| (least..=MAX_AUGMENT_SIDE).contains(&v);
        range("pad", self.pad as f64, side(self.pad, 0), "0 to 32 pixels")?;
        range("cutout", self.cutout as f64, side(self.cutout, 1), "1 to 32 pixels")?;
        let alpha = self.mixup_alpha;
        range("mixup alpha", alpha, alpha.is_finite() && alpha > 0.0 && alpha <= 1e3, "a value above 0, at most 1000")?;
        range("randaug n", self.randaug_n as f64, self.randaug_n <= MAX_RANDAUG_N, "0 to 16 ops")?;
        let m = self.randaug_m as f64;
        range("randaug m", m, (0.0..=10.0).contains(&m), "a magnitude from 0 to 10")?;
        let augment = Augment {
            technique,
            pad: self.pad,
            cutout: self.cutout,
            mixup_alpha: self.mixup_alpha,
            randaug_n: self.randaug_n,
            randaug_m: self.randaug_m,
        };
        let mut cfg = lossc_runtime::train::Config::new(self.steps, augment);
        cfg.batch = self.batch;
        cfg.seed = self.seed;
        cfg.label_smoothing = self.label_smoothing;
        cfg.optimizer = optimizer;
        cfg.lr = self.lr.unwrap_or(if optimizer == Optimizer::Adam { 1e-3 } else { 0.1 });
        cfg.warmup = self.warmup.unwrap_or(cfg.warmup).max(1);
        cfg.weight_decay = self.weight_decay;
        cfg.width = self.width;
        cfg.eval_every = self.eval_every;
        cfg.gate_step = self.gate_step.unwrap_or(cfg.gate_step);
        cfg.gate_accuracy = self.gate_accuracy;
        Ok(cfg)
    }

    /// The spec as one line of JSON: the cache key of its results.
    pub fn key(&self) -> String {
        serde_json::to_string(self).expect("plain data")
    }
}
