//! The training loop: mini-batches, augmentation, the loss kernel, Adam/SGD with the one-cycle
//! schedule, periodic validation, and the predecessor's early stops.

use crate::augment::{self, Augment};
use crate::data::Dataset;
use crate::model::ResNet9v2;
use crate::optim::{Optimizer, State, one_cycle};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Targets of a training batch, as the loss kernel takes them: integer labels with smoothing,
/// or mixup pairs; never a dense one-hot matrix.
pub struct LabelTargets<'a> {
    pub labels: &'a [u32],
    pub labels_b: Option<&'a [u32]>,
    pub lam: Option<&'a [f32]>,
    pub smoothing: f64,
}

/// Why a loss kernel could not run: whatever error its implementation has (the training
/// loop only reports it, as an early stop).
pub type LossError = Box<dyn std::error::Error + Send + Sync>;

/// A loss kernel: fills `grad` with d(batch mean loss)/d logits and returns the batch loss.
pub trait LossFn {
    fn loss_and_grad(
        &self,
        logits: &[f32],
        classes: usize,
        t: &LabelTargets,
        grad: &mut [f32],
    ) -> Result<f64, LossError>;
}

/// Everything a run is configured by.
#[derive(Clone, Debug)]
pub struct Config {
    pub steps: usize,
    pub batch: usize,
    pub seed: u64,
    pub augment: Augment,
    pub optimizer: Optimizer,
    /// Peak learning rate of the one-cycle schedule.
    pub lr: f32,
    pub warmup: usize,
    pub weight_decay: f32,
    pub label_smoothing: f64,
    pub width: usize,
    /// Validate every this many steps (and at the end).
    pub eval_every: usize,
    /// The predecessor's gate: at this step, a training accuracy below `gate_accuracy` scores 0.
    pub gate_step: usize,
    pub gate_accuracy: f64,
}

impl Config {
    /// The search's defaults (Adam, peak 1e-3, warm-up 1,000 steps), scaled to `steps`.
    pub fn new(steps: usize, augment: Augment) -> Config {
        Config {
            steps,
            batch: 128,
            seed: 0,
            augment,
            optimizer: Optimizer::Adam,
            lr: 1e-3,
            warmup: 1000.min(steps / 5).max(1),
            weight_decay: 0.0,
            label_smoothing: 0.0,
            width: 1,
            eval_every: 100,
            gate_step: 800.min(steps / 2).max(1),
            gate_accuracy: 0.35,
        }
    }
}

/// The JSON record of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Metrics {
    /// (step, mean training loss, training accuracy) over each evaluation interval.
    pub train: Vec<(usize, f64, f64)>,
    /// (step, validation accuracy).
    pub validation: Vec<(usize, f64)>,
    pub best_validation_accuracy: f64,
    /// The search's fitness: the best validation accuracy, or 0 after an early stop.
    pub fitness: f64,
    /// Why the run stopped early, if it did.
    pub stopped: Option<String>,
    /// Accuracy of the final model on the test set, when one was given (0 after an early stop).
    pub test_accuracy: Option<f64>,
    pub steps: usize,
    pub wall_seconds: f64,
    pub images_per_second: f64,
}

/// What a progress bar shows.
pub struct Progress {
    pub step: usize,
    pub loss: f64,
    pub best_validation_accuracy: f64,
}

/// Accuracy of the model on a data set (evaluation mode, batches of 256).
pub fn accuracy(model: &mut ResNet9v2, data: &Dataset) -> f64 {
    let size = data.image_size();
    let mut rng = Rng::new(0);
    let mut correct = 0;
    for start in (0..data.len()).step_by(256) {
        let end = (start + 256).min(data.len());
        let n = end - start;
        let logits = model.forward(&data.images[start * size..end * size], n, false, &mut rng);
        correct += argmax_hits(&logits, model.classes, &data.labels[start..end]);
    }
    correct as f64 / data.len().max(1) as f64
}

fn argmax_hits(logits: &[f32], classes: usize, labels: &[u32]) -> usize {
    logits
        .chunks(classes)
        .zip(labels)
        .filter(|(row, l)| {
            let best =
                row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
            best.0 == **l as usize
        })
        .count()
}

/// Trains a fresh surrogate on `train` and validates on `val`.
pub fn train(
    loss: &dyn LossFn,
    train: &Dataset,
    val: &Dataset,
    cfg: &Config,
    progress: &mut dyn FnMut(&Progress),
) -> Metrics {
    train_and_test(loss, train, val, None, cfg, progress)
}

/// [`train`], then the final model's accuracy on `test` (the evaluation tables report it).
pub fn train_and_test(
    loss: &dyn LossFn,
    train: &Dataset,
    val: &Dataset,
    test: Option<&Dataset>,
    cfg: &Config,
    progress: &mut dyn FnMut(&Progress),
) -> Metrics {
    crate::cpu::keep_freed_memory();
    let start = Instant::now();
    let mut model = ResNet9v2::new(cfg.seed, train.shape, train.classes, cfg.width);
    let mut opt = State::new(model.device(), cfg.optimizer, cfg.weight_decay);
    let mut rng = Rng::new(cfg.seed ^ 0x5EED);
    let size = train.image_size();
    let mut m = Metrics::default();
    let (mut sum_loss, mut hits, mut seen) = (0.0, 0usize, 0usize);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut cursor = order.len();
    let mut grad = Vec::new();
    for step in 0..cfg.steps {
        // Next batch of a reshuffled epoch.
        let mut idx = Vec::with_capacity(cfg.batch);
        while idx.len() < cfg.batch {
            if cursor == order.len() {
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.below(i + 1));
                }
                cursor = 0;
            }
            idx.push(order[cursor]);
            cursor += 1;
        }
        let images: Vec<f32> =
            idx.iter().flat_map(|&i| train.images[i * size..(i + 1) * size].iter().copied()).collect();
        let labels: Vec<u32> = idx.iter().map(|&i| train.labels[i]).collect();
        let b = augment::apply(&cfg.augment, &images, &labels, train.shape, &mut rng);
        let n = b.labels.len();
        let logits = model.forward(&b.images, n, true, &mut rng);
        grad.resize(logits.len(), 0.0);
        let t = LabelTargets {
            labels: &b.labels,
            labels_b: b.labels_b.as_deref(),
            lam: b.lam.as_deref(),
            smoothing: cfg.label_smoothing,
        };
        let l = match loss.loss_and_grad(&logits, train.classes, &t, &mut grad) {
            Ok(l) => l,
            Err(e) => {
                m.stopped = Some(format!("loss kernel failed at step {step}: {e}"));
                break;
            }
        };
        if !l.is_finite() || grad.iter().any(|g| !g.is_finite()) {
            m.stopped =
                Some(format!("the loss turned {} at step {step}", if l.is_nan() { "NaN" } else { "non-finite" }));
            break;
        }
        model.backward(&grad);
        let lr = one_cycle(step, cfg.steps, cfg.warmup, cfg.lr);
        opt.step(&mut model.params(), lr);
        sum_loss += l;
        // With mixup, a hit is the argmax on the dominant label (Keras' categorical accuracy on
        // mixed one-hot targets); counting against the first label alone halves the accuracy
        // and trips the gate.
        let dominant: Vec<u32> = match (&b.labels_b, &b.lam) {
            (Some(lb), Some(lam)) => {
                b.labels.iter().zip(lb).zip(lam).map(|((&a, &bb), &l)| if l >= 0.5 { a } else { bb }).collect()
            }
            _ => b.labels.clone(),
        };
        hits += argmax_hits(&logits, train.classes, &dominant);
        seen += n;
        m.steps = step + 1;
        let last = step + 1 == cfg.steps;
        if (step + 1) % cfg.eval_every == 0 || last || step + 1 == cfg.gate_step {
            let train_acc = hits as f64 / seen.max(1) as f64;
            m.train.push((step + 1, sum_loss / (seen as f64 / cfg.batch as f64), train_acc));
            if step + 1 == cfg.gate_step && train_acc < cfg.gate_accuracy {
                m.stopped =
                    Some(format!("training accuracy {train_acc:.3} < {} at step {}", cfg.gate_accuracy, step + 1));
                break;
            }
            let va = accuracy(&mut model, val);
            m.validation.push((step + 1, va));
            m.best_validation_accuracy = m.best_validation_accuracy.max(va);
            (sum_loss, hits, seen) = (0.0, 0, 0);
        }
        progress(&Progress { step: step + 1, loss: l, best_validation_accuracy: m.best_validation_accuracy });
    }
    m.fitness = if m.stopped.is_some() { 0.0 } else { m.best_validation_accuracy };
    if let Some(test) = test {
        m.test_accuracy = Some(if m.stopped.is_some() { 0.0 } else { accuracy(&mut model, test) });
    }
    m.wall_seconds = start.elapsed().as_secs_f64();
    m.images_per_second = (m.steps * cfg.batch) as f64 / m.wall_seconds;
    m
}
