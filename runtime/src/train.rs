//! The training loop: mini-batches, augmentation, the loss kernel, Adam/SGD with the one-cycle
//! schedule, periodic validation, and the predecessor's early stops.
//!
//! One loop trains a population of K models on any device ([`train_population`]); K = 1 on the
//! CPU is ordinary training ([`train_and_test`]). The K models share everything but their loss:
//! initial weights (the seed), data order, augmentation draws and dropout masks. Each model's
//! numbers depend only on its seed and its loss, never on its neighbours: every tensor and every
//! reduction (batch norm's statistics included) is per model. The per-step numbers (loss sum,
//! hits, the first non-finite step) stay on the device and are read at evaluation intervals.
//! A population can pause at an evaluation step and its models go on later, beside models
//! paused elsewhere at the same [`Checkpoint`] ([`train_population_from`]): what lets a search
//! refill the slots the gate empties.

use crate::augment::{self, Augment};
use crate::cpu::Cpu;
use crate::data::Dataset;
use crate::device::Device;
use crate::model::ResNet9v2;
use crate::optim::{Optimizer, State, one_cycle};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// A loss kernel on the host: fills `grad` with d(batch mean loss)/d logits and returns the
/// batch loss.
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
    /// Training images per second of this model (a population of K trains K times as many).
    pub images_per_second: f64,
    /// Where it trained: "cpu", "wgpu (adapter)".
    #[serde(default)]
    pub device: String,
    /// How many models trained together in its population.
    #[serde(default)]
    pub population: usize,
}

/// The K models' loss kernels on a device.
pub trait DeviceLoss<D: Device> {
    /// For each model k: `grad[k]` = d(batch mean loss)/d `logits[k]` (both `[n, classes]` per
    /// model); adds model k's batch mean loss to `stats[k][0]`, and at its first non-finite loss
    /// or gradient sets `stats[k][2]` to `step + 1` and `stats[k][3]` to 1 (NaN loss) or 2.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        dev: &D,
        logits: &D::Buf,
        classes: usize,
        t: &LabelTargets,
        grad: &mut D::Buf,
        stats: &mut D::Buf,
        step: usize,
    ) -> Result<(), LossError>;
}

/// A host loss kernel as the CPU device's population of one.
pub struct HostLoss<'a>(pub &'a dyn LossFn);

impl DeviceLoss<Cpu> for HostLoss<'_> {
    fn run(
        &self,
        _dev: &Cpu,
        logits: &Vec<f32>,
        classes: usize,
        t: &LabelTargets,
        grad: &mut Vec<f32>,
        stats: &mut Vec<f32>,
        step: usize,
    ) -> Result<(), LossError> {
        grad.resize(logits.len(), 0.0);
        let l = self.0.loss_and_grad(logits, classes, t, grad)?;
        stats[0] += l as f32;
        if (!l.is_finite() || grad.iter().any(|g| !g.is_finite())) && stats[2] == 0.0 {
            stats[2] = (step + 1) as f32;
            stats[3] = if l.is_nan() { 1.0 } else { 2.0 };
        }
        Ok(())
    }
}

/// What a progress bar shows.
pub struct Progress {
    pub step: usize,
    /// The mean training loss of the last evaluation interval (of the first running model).
    pub loss: f64,
    pub best_validation_accuracy: f64,
}

/// A training batch on the device with its targets.
struct Batch<B> {
    labels: Vec<u32>,
    labels_b: Option<Vec<u32>>,
    lam: Option<Vec<f32>>,
    x: B,
}

impl<B> Batch<B> {
    /// The targets a plan gives the batch of `labels` (mixup's partners and weights).
    fn targets(plan: &augment::Plan, labels: Vec<u32>, x: B) -> Batch<B> {
        match &plan.mix {
            Some((perm, lam)) => {
                let labels_b = perm.iter().map(|&j| labels[j]).collect();
                Batch { labels, labels_b: Some(labels_b), lam: Some(lam.clone()), x }
            }
            None => Batch { labels, labels_b: None, lam: None, x },
        }
    }

    /// The label each image counts a hit against: with mixup, the dominant one (Keras'
    /// categorical accuracy on mixed one-hot targets); counting against the first label alone
    /// halves the accuracy and trips the gate.
    fn dominant(&self) -> Vec<u32> {
        match (&self.labels_b, &self.lam) {
            (Some(lb), Some(lam)) => {
                self.labels.iter().zip(lb).zip(lam).map(|((&a, &b), &l)| if l >= 0.5 { a } else { b }).collect()
            }
            _ => self.labels.clone(),
        }
    }

    /// The targets as the loss kernel takes them.
    fn label_targets(&self, smoothing: f64) -> LabelTargets<'_> {
        LabelTargets { labels: &self.labels, labels_b: self.labels_b.as_deref(), lam: self.lam.as_deref(), smoothing }
    }
}

/// The data order: a permutation of the training set, reshuffled at each epoch's start.
#[derive(Clone, Debug, PartialEq)]
struct Epochs {
    order: Vec<usize>,
    cursor: usize,
}

impl Epochs {
    /// The order before the first epoch, which the first draw shuffles.
    fn new(len: usize) -> Epochs {
        Epochs { order: (0..len).collect(), cursor: len }
    }

    /// The next `n` images' indices.
    fn next(&mut self, n: usize, rng: &mut Rng) -> Vec<usize> {
        let mut idx = Vec::with_capacity(n);
        while idx.len() < n {
            if self.cursor == self.order.len() {
                for i in (1..self.order.len()).rev() {
                    self.order.swap(i, rng.below(i + 1));
                }
                self.cursor = 0;
            }
            idx.push(self.order[self.cursor]);
            self.cursor += 1;
        }
        idx
    }
}

/// The next training batch on the device: gathered and augmented there from the resident
/// training set where the augmentation is a gather, else augmented on the host and uploaded.
fn next_batch<D: Device>(
    dev: &D,
    train: &Dataset,
    resident: Option<&D::Buf>,
    cfg: &Config,
    epochs: &mut Epochs,
    rng: &mut Rng,
) -> Batch<D::Buf> {
    let idx = epochs.next(cfg.batch, rng);
    let labels: Vec<u32> = idx.iter().map(|&i| train.labels[i]).collect();
    let plan = augment::plan(&cfg.augment, idx.len(), train.shape, rng);
    match resident {
        Some(data) if augment::is_gather(&plan) => {
            let x = dev.gather(data, &idx, &plan, &cfg.augment, train.shape);
            Batch::targets(&plan, labels, x)
        }
        _ => {
            let size = train.image_size();
            let (c, h, w) = train.shape;
            let images: Vec<f32> =
                idx.iter().flat_map(|&i| train.images[i * size..(i + 1) * size].iter().copied()).collect();
            let b = augment::apply_plan(&cfg.augment, &plan, &images, &labels, train.shape);
            let x = dev.upload_images(&b.images, b.labels.len(), c, h * w);
            Batch { labels: b.labels, labels_b: b.labels_b, lam: b.lam, x }
        }
    }
}

/// A data set uploaded once, in batches of 256, for repeated evaluation.
struct Resident<B> {
    batches: Vec<(B, usize)>,
    labels: Vec<u32>,
}

impl<B> Resident<B> {
    fn new<D: Device<Buf = B>>(dev: &D, data: &Dataset) -> Resident<B> {
        let size = data.image_size();
        let (c, h, w) = data.shape;
        let batches = (0..data.len())
            .step_by(256)
            .map(|start| {
                let n = (start + 256).min(data.len()) - start;
                (dev.upload_images(&data.images[start * size..(start + n) * size], n, c, h * w), n)
            })
            .collect();
        Resident { batches, labels: data.labels.clone() }
    }
}

/// Accuracy of each model of the population on a resident data set (evaluation mode).
fn accuracy<D: Device>(model: &mut ResNet9v2<D>, data: &Resident<D::Buf>) -> Vec<f64> {
    let dev = model.device().clone();
    let mut rng = Rng::new(0);
    let mut stats = dev.zeros(4);
    let mut start = 0;
    for (x, n) in &data.batches {
        let logits = model.forward_buf(x, *n, false, &mut rng);
        dev.hits(&logits, *n, model.classes, &data.labels[start..start + n], &mut stats, 0);
        start += n;
        dev.flush();
    }
    let v = dev.download(&stats);
    (0..dev.models()).map(|k| v[4 * k] as f64 / data.labels.len().max(1) as f64).collect()
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
    let mut all = train_population(Cpu, &HostLoss(loss), train, val, test, cfg, progress);
    all.pop().expect("a population of one")
}

/// One model's running record in a population.
struct Member {
    m: Metrics,
    running: bool,
}

/// What the models of a population share after some steps, since they share the seed: the
/// step, the generator (data order, augmentation draws, dropout masks), the epoch's order and
/// the optimiser's step count. Any models paused at the same step of the same [`Config`] can
/// go on together, whatever population each came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub step: usize,
    rng: Rng,
    epochs: Epochs,
    t: i32,
}

/// One model paused at a [`Checkpoint`]: its record so far and its tensors (the model's, then
/// the optimiser's), on the host.
#[derive(Clone, Debug)]
pub struct Paused {
    pub metrics: Metrics,
    tensors: Vec<Vec<f32>>,
    /// Training seconds spent on it so far.
    seconds: f64,
}

/// How a population starts: fresh from the seed, or with paused models (one per model of the
/// device) at their checkpoint.
pub enum Start<'a> {
    Fresh,
    Resume(&'a Checkpoint, Vec<Paused>),
}

/// Where a population's training may end before its last step.
#[derive(Clone, Copy, Default)]
pub struct Halt<'a> {
    /// After this step (an evaluation step), the models still running come back paused.
    pub pause: Option<usize>,
    /// Read after every step: once set, the training ends there and the models still running
    /// come back abandoned (a search at its time limit gives their jobs back).
    pub abandon: Option<&'a AtomicBool>,
}

/// What became of one model of a population.
pub enum Outcome {
    /// Its training ended (all steps, or an early stop): its final record.
    Done(Metrics),
    /// Still running at the pause.
    Paused(Paused),
    /// Still running when the training was abandoned: nothing of it is kept.
    Abandoned,
}

impl Outcome {
    /// The final record of a training run that was neither paused nor abandoned.
    pub fn into_done(self) -> Metrics {
        match self {
            Outcome::Done(m) => m,
            Outcome::Paused(_) | Outcome::Abandoned => unreachable!("no pause or abandonment was asked for"),
        }
    }
}

/// Trains a population of `dev.models()` fresh surrogates from the same seed, model k with
/// loss kernel k, and returns each model's record.
pub fn train_population<D: Device>(
    dev: D,
    loss: &dyn DeviceLoss<D>,
    train: &Dataset,
    val: &Dataset,
    test: Option<&Dataset>,
    cfg: &Config,
    progress: &mut dyn FnMut(&Progress),
) -> Vec<Metrics> {
    let (outcomes, _) =
        train_population_from(dev, loss, train, val, test, cfg, Start::Fresh, Halt::default(), progress);
    outcomes.into_iter().map(Outcome::into_done).collect()
}

/// [`train_population`] from `start`, pausing after step `halt.pause` if given (an evaluation
/// step: a multiple of `eval_every`, or the gate): the models still running then come back
/// paused, with the checkpoint to resume them from. Each model's numbers are those of an
/// uninterrupted training, whatever models it was paused or resumed beside. Once
/// `halt.abandon` is set, the training ends after the step under way.
#[allow(clippy::too_many_arguments)]
pub fn train_population_from<D: Device>(
    dev: D,
    loss: &dyn DeviceLoss<D>,
    train: &Dataset,
    val: &Dataset,
    test: Option<&Dataset>,
    cfg: &Config,
    from: Start,
    halt: Halt,
    progress: &mut dyn FnMut(&Progress),
) -> (Vec<Outcome>, Option<Checkpoint>) {
    let start = Instant::now();
    let k_models = dev.models();
    let mut model = ResNet9v2::on(dev.clone(), cfg.seed, train.shape, train.classes, cfg.width);
    let mut opt = State::new(&dev, cfg.optimizer, cfg.weight_decay);
    let val_data = Resident::new(&dev, val);
    // The training set on the device, when augmentation is a gather (not RandAug).
    let resident = if cfg.augment.is_gather() { dev.resident(&train.images) } else { None };
    let blank = Metrics { device: dev.name(), population: k_models, ..Metrics::default() };
    let mut pop: Vec<Member> = (0..k_models).map(|_| Member { m: blank.clone(), running: true }).collect();
    // Per model: [loss sum, hits, first non-finite step + 1, 1 NaN / 2 other].
    let mut stats = dev.zeros(4);
    let mut interval_steps = 0usize;
    let mut grad = dev.zeros(0);
    // Training seconds each model spent before this call (in the populations it paused from).
    let mut earlier = vec![0.0; k_models];
    let mut at = Checkpoint { step: 0, rng: Rng::new(cfg.seed ^ 0x5EED), epochs: Epochs::new(train.len()), t: 0 };
    if let Start::Resume(from, paused) = from {
        at = from.clone();
        earlier = resume(&dev, &mut model, &mut opt, &mut pop, paused, at.t);
    }
    let Checkpoint { step: first, mut rng, mut epochs, .. } = at;
    let mut last_loss = pop[0].m.train.last().map_or(0.0, |t| t.1);
    for step in first..cfg.steps {
        // The step ends at `dev.flush()`; it makes the same device calls every time (what lets
        // the CUDA device replay it as a graph).
        dev.begin_step();
        let b = next_batch(&dev, train, resident.as_ref(), cfg, &mut epochs, &mut rng);
        let n = b.labels.len();
        let logits = model.forward_buf(&b.x, n, true, &mut rng);
        let t = b.label_targets(cfg.label_smoothing);
        if let Err(e) = loss.run(&dev, &logits, train.classes, &t, &mut grad, &mut stats, step) {
            dev.flush();
            for p in pop.iter_mut().filter(|p| p.running) {
                p.m.stopped = Some(format!("loss kernel failed at step {step}: {e}"));
                p.running = false;
            }
            break;
        }
        if D::HOST {
            // Reading back is free: stop at the very step a loss turns non-finite.
            let v = dev.download(&stats);
            for (k, p) in pop.iter_mut().enumerate() {
                stop_if_non_finite(p, &v[4 * k..4 * k + 4]);
            }
            if pop.iter().all(|p| !p.running) {
                break;
            }
        }
        model.backward_buf(&b.x, &grad);
        let lr = one_cycle(step, cfg.steps, cfg.warmup, cfg.lr);
        opt.step(&mut model.params(), lr);
        dev.hits(&logits, n, train.classes, &b.dominant(), &mut stats, 1);
        dev.flush();
        interval_steps += 1;
        for p in pop.iter_mut().filter(|p| p.running) {
            p.m.steps = step + 1;
        }
        if (step + 1) % cfg.eval_every == 0 || step + 1 == cfg.steps || step + 1 == cfg.gate_step {
            let v = dev.download(&stats);
            let seen = (interval_steps * n) as f64;
            if score_interval(&mut pop, &v, seen, step + 1, cfg) {
                let va = accuracy(&mut model, &val_data);
                for (p, &va) in pop.iter_mut().zip(&va).filter(|(p, _)| p.running) {
                    p.m.validation.push((step + 1, va));
                    p.m.best_validation_accuracy = p.m.best_validation_accuracy.max(va);
                }
            }
            if let Some(p) = pop.iter().find(|p| p.running) {
                last_loss = p.m.train.last().map_or(0.0, |t| t.1);
            }
            dev.clear(&mut stats);
            interval_steps = 0;
            if pop.iter().all(|p| !p.running) {
                break;
            }
        }
        let best = pop.iter().filter(|p| p.running).map(|p| p.m.best_validation_accuracy).fold(0.0, f64::max);
        progress(&Progress { step: step + 1, loss: last_loss, best_validation_accuracy: best });
        if step + 1 == cfg.steps {
            break;
        }
        let pausing = halt.pause == Some(step + 1);
        if pausing || halt.abandon.is_some_and(|a| a.load(Ordering::Relaxed)) {
            // Models that ended before a pause or an abandonment keep their final record.
            let elapsed = start.elapsed().as_secs_f64();
            let spent: Vec<f64> = earlier.iter().map(|e| e + elapsed).collect();
            let ended = |k: usize, p: Member| Outcome::Done(finish(p.m, test.map(|_| 0.0), spent[k], cfg));
            if pausing {
                assert_eq!(interval_steps, 0, "a pause comes right after an evaluation");
                return pause(&dev, &mut model, &mut opt, pop, (step + 1, rng, epochs), &spent, ended);
            }
            let outcomes =
                pop.into_iter().enumerate().map(|(k, p)| if p.running { Outcome::Abandoned } else { ended(k, p) });
            return (outcomes.collect(), None);
        }
    }
    let test_acc = test.map(|t| {
        if pop.iter().any(|p| p.m.stopped.is_none()) {
            accuracy(&mut model, &Resident::new(&dev, t))
        } else {
            vec![0.0; k_models]
        }
    });
    let wall = start.elapsed().as_secs_f64();
    let outcomes = pop
        .into_iter()
        .enumerate()
        .map(|(k, p)| Outcome::Done(finish(p.m, test_acc.as_ref().map(|t| t[k]), earlier[k] + wall, cfg)));
    (outcomes.collect(), None)
}

/// The population after `step` as paused models (the running ones, their tensors downloaded)
/// and ended ones (`ended`), with the checkpoint they go on from (the step, the generator and
/// the data order after it, the optimiser's step count).
fn pause<D: Device>(
    dev: &D,
    model: &mut ResNet9v2<D>,
    opt: &mut State<D>,
    pop: Vec<Member>,
    (step, rng, epochs): (usize, Rng, Epochs),
    spent: &[f64],
    ended: impl Fn(usize, Member) -> Outcome,
) -> (Vec<Outcome>, Option<Checkpoint>) {
    let (bufs, t) = carried(dev, model, opt);
    let at = Checkpoint { step, rng, epochs, t: *t };
    let mut tensors: Vec<Vec<Vec<f32>>> = vec![Vec::new(); pop.len()];
    for b in bufs {
        let (all, len) = (dev.download(b), dev.len(b));
        for (k, t) in tensors.iter_mut().enumerate() {
            t.push(all[k * len..(k + 1) * len].to_vec());
        }
    }
    let outcomes = pop.into_iter().zip(tensors).enumerate().map(|(k, (p, tensors))| match p.running {
        true => Outcome::Paused(Paused { metrics: p.m, tensors, seconds: spent[k] }),
        false => ended(k, p),
    });
    (outcomes.collect(), Some(at))
}

/// Loads paused models into a fresh population (their tensors stacked, the optimiser's step
/// count `t`), and returns the training seconds each had spent.
fn resume<D: Device>(
    dev: &D,
    model: &mut ResNet9v2<D>,
    opt: &mut State<D>,
    pop: &mut [Member],
    paused: Vec<Paused>,
    t: i32,
) -> Vec<f64> {
    assert_eq!(paused.len(), pop.len(), "one paused model per model of the device");
    let (mut bufs, count) = carried(dev, model, opt);
    for (i, b) in bufs.iter_mut().enumerate() {
        let tensors: Vec<Vec<f32>> = paused.iter().map(|p| p.tensors[i].clone()).collect();
        **b = dev.stack(&tensors);
    }
    *count = t;
    let mut seconds = Vec::with_capacity(pop.len());
    for (member, p) in pop.iter_mut().zip(paused) {
        seconds.push(p.seconds);
        member.m = Metrics { device: member.m.device.clone(), population: member.m.population, ..p.metrics };
    }
    seconds
}

/// Records an evaluation interval that ends after `step` for each running model (`v`: the
/// stats of every model, `seen` images each): its mean loss and training accuracy, and the
/// gate at the gate step. Returns whether any model is left to validate.
fn score_interval(pop: &mut [Member], v: &[f32], seen: f64, step: usize, cfg: &Config) -> bool {
    let mut validate = false;
    for (k, p) in pop.iter_mut().enumerate() {
        let s = &v[4 * k..4 * k + 4];
        stop_if_non_finite(p, s);
        if !p.running {
            continue;
        }
        let train_acc = s[1] as f64 / seen.max(1.0);
        let mean_loss = s[0] as f64 / (seen / cfg.batch as f64);
        p.m.train.push((step, mean_loss, train_acc));
        if step == cfg.gate_step && train_acc < cfg.gate_accuracy {
            p.m.stopped = Some(format!("training accuracy {train_acc:.3} < {} at step {step}", cfg.gate_accuracy));
            p.running = false;
            continue;
        }
        validate = true;
    }
    validate
}

/// A model's final record: fitness (0 after an early stop), test accuracy, time.
fn finish(mut m: Metrics, test: Option<f64>, seconds: f64, cfg: &Config) -> Metrics {
    let stopped = m.stopped.is_some();
    m.fitness = if stopped { 0.0 } else { m.best_validation_accuracy };
    if let Some(t) = test {
        m.test_accuracy = Some(if stopped { 0.0 } else { t });
    }
    m.wall_seconds = seconds;
    m.images_per_second = (m.steps * cfg.batch) as f64 / seconds;
    m
}

/// Every tensor a model and its optimiser carry between steps (in one fixed order), and the
/// optimiser's step count.
fn carried<'a, D: Device>(
    dev: &D,
    model: &'a mut ResNet9v2<D>,
    opt: &'a mut State<D>,
) -> (Vec<&'a mut D::Buf>, &'a mut i32) {
    let lens: Vec<usize> = model.params().iter().map(|p| dev.len(&p.value)).collect();
    let (moments, t) = opt.state(&lens);
    let mut bufs = model.state();
    bufs.extend(moments);
    (bufs, t)
}

/// Stops a running model whose stats record a non-finite loss or gradient.
fn stop_if_non_finite(p: &mut Member, s: &[f32]) {
    if p.running && s[2] > 0.0 {
        let step = s[2] as usize - 1;
        let what = if s[3] == 1.0 { "NaN" } else { "non-finite" };
        p.m.stopped = Some(format!("the loss turned {what} at step {step}"));
        p.m.steps = step;
        p.running = false;
    }
}
