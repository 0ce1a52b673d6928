//! The compiled loss meets the training runtime: a training run's settings ([`TrainSpec`]),
//! the data sets it names, and the fused loss as the runtime's loss function, through the JIT
//! kernel. Searches, samples and evaluations all train through [`train`].

mod data;
mod loss;
mod spec;

pub use data::{DataError, Splits, load_data};
pub use loss::JitLoss;
pub use spec::{DEVICES, MAX_BATCH, SpecError, TrainSpec};

use crate::backend::{cuda, wgsl};
use crate::ir::Graph;
use crate::passes::fuse::{self, Fused};
use lossc_runtime::cpu::Cpu;
use lossc_runtime::cuda::{Cuda, CudaError, CudaLossSource, CudaLosses};
use lossc_runtime::gpu::{GpuError, Wgpu};
use lossc_runtime::train::{Checkpoint, Halt, HostLoss, Metrics, Outcome, Paused, Progress, Start};

/// Why a training could not start.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("the loss text does not parse: {0}")]
    Parse(String),
    #[error("the graph has no loss")]
    NoLoss,
    #[error(transparent)]
    Device(#[from] GpuError),
    #[error(transparent)]
    Cuda(#[from] CudaError),
}
crate::error::classify!(TrainError, input: [Spec, Parse, NoLoss]);

impl TrainError {
    /// The population member whose loss kernel did not build, if that is the error.
    pub fn failed_model(&self) -> Option<usize> {
        match self {
            TrainError::Device(GpuError::LossKernel { model, .. }) => Some(*model),
            TrainError::Cuda(CudaError::LossKernel { model, .. }) => Some(*model),
            _ => None,
        }
    }
}

/// Trains the surrogate with the first loss of `g` under `spec`.
pub fn train(
    g: &Graph,
    spec: &TrainSpec,
    data: &Splits,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Metrics, TrainError> {
    let mut all = train_population(&[g], spec, data, progress)?;
    Ok(all.pop().expect("one model"))
}

/// [`train`] on the first loss of a `.loss` text (a stored training job).
pub fn train_text(
    text: &str,
    spec: &TrainSpec,
    data: &Splits,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Metrics, TrainError> {
    let g = crate::syntax::parse(text).map_err(|d| TrainError::Parse(d.message))?;
    train(&g, spec, data, progress)
}

/// Trains a population: one surrogate per graph (with its first loss), all from the spec's
/// seed, in one training loop on the spec's device. The CPU trains one model at a time (a
/// population of one), so there this trains them in turn.
pub fn train_population(
    graphs: &[&Graph],
    spec: &TrainSpec,
    data: &Splits,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Vec<Metrics>, TrainError> {
    let (outcomes, _) = train_population_from(graphs, spec, data, Start::Fresh, Halt::default(), progress)?;
    Ok(outcomes.into_iter().map(Outcome::into_done).collect())
}

/// [`train_population`] from `start` (fresh, or models paused at a checkpoint of the same
/// spec, one per graph), pausing or abandoned as `halt` says: the runtime's
/// [`lossc_runtime::train::train_population_from`] on the spec's device.
pub fn train_population_from(
    graphs: &[&Graph],
    spec: &TrainSpec,
    data: &Splits,
    start: Start,
    halt: Halt,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(Vec<Outcome>, Option<Checkpoint>), TrainError> {
    use lossc_runtime::train::train_population_from as run;
    let cfg = spec.config()?;
    let fused: Vec<Fused> = graphs
        .iter()
        .map(|g| {
            let name = &g.outputs.first().ok_or(TrainError::NoLoss)?.0;
            Ok(fuse::fuse(g, name).expect("the name is an output"))
        })
        .collect::<Result<_, TrainError>>()?;
    let (train, val, test) = data;
    let test = spec.test.then_some(test);
    if spec.device == "wgpu" {
        let dev = Wgpu::new(fused.len())?;
        dev.check_size(activation_floats(train.shape, spec.batch, spec.width))?;
        let sources: Vec<String> = fused.iter().map(|f| wgsl::emit(f, &wgsl::Options::default())).collect();
        let losses = dev.losses(&sources)?;
        return Ok(run(dev, &losses, train, val, test, &cfg, start, halt, progress));
    }
    if spec.device == "cuda" {
        let dev = Cuda::new(fused.len())?;
        dev.check_size(activation_floats(train.shape, spec.batch, spec.width))?;
        let losses = cuda_losses(&dev, &fused, train.classes)?;
        return Ok(run(dev, &losses, train, val, test, &cfg, start, halt, progress));
    }
    // The CPU: one model at a time, each from its own paused state.
    let (at, paused): (Option<&Checkpoint>, Vec<Option<Paused>>) = match start {
        Start::Fresh => (None, vec![None; fused.len()]),
        Start::Resume(at, p) => {
            assert_eq!(p.len(), graphs.len(), "one paused model per graph");
            (Some(at), p.into_iter().map(Some).collect())
        }
    };
    lossc_runtime::cpu::keep_freed_memory();
    let (mut outcomes, mut checkpoint) = (Vec::new(), None);
    for (f, p) in fused.into_iter().zip(paused) {
        if halt.abandon.is_some_and(|a| a.load(std::sync::atomic::Ordering::Relaxed)) {
            outcomes.push(Outcome::Abandoned);
            continue;
        }
        let loss = JitLoss::new(f);
        let from = match (at, p) {
            (Some(at), Some(p)) => Start::Resume(at, vec![p]),
            _ => Start::Fresh,
        };
        let (mut o, c) = run(Cpu, &HostLoss(&loss), train, val, test, &cfg, from, halt, progress);
        outcomes.push(o.pop().expect("a population of one"));
        checkpoint = checkpoint.or(c);
    }
    Ok((outcomes, checkpoint))
}

/// Each fused loss as its CUDA kernel on `dev`, in the layout for `classes`.
pub fn cuda_losses(dev: &Cuda, fused: &[Fused], classes: usize) -> Result<CudaLosses, TrainError> {
    let layout = cuda::Layout::for_classes(classes);
    let sources: Vec<CudaLossSource> = fused
        .iter()
        .map(|f| CudaLossSource {
            src: cuda::emit(f, &cuda::Options::default()),
            entry: format!("{}{}", cuda::prefix(&f.name), layout.suffix()),
            rows_per_block: layout.rows_per_block(),
        })
        .collect();
    Ok(dev.losses(&sources)?)
}

/// Opens `device` (with one model) and closes it again, so that a run whose workers train here
/// fails before its store records anything: a stored run keeps its device, and a resumed one
/// trains where it started. The CPU always opens.
pub fn check_device(device: &str) -> Result<(), TrainError> {
    match device {
        "wgpu" => drop(Wgpu::new(1)?),
        "cuda" => drop(Cuda::new(1)?),
        _ => {}
    }
    Ok(())
}

/// The device `--device` names: `auto` is `cuda` where a CUDA device opens (driver, NVRTC and a
/// GPU), else `cpu`; any other name as given.
pub fn resolve_device(device: &str) -> String {
    match device {
        "auto" if Cuda::new(1).is_ok() => "cuda".into(),
        "auto" => "cpu".into(),
        other => other.into(),
    }
}

/// The largest activation tensor of one model: the stem's output, 8 * width channels of the
/// full image.
fn activation_floats((_, h, w): (usize, usize, usize), batch: usize, width: usize) -> usize {
    8 * width * batch * h * w
}

/// A training's result in a few lines, for a person at a terminal: the best validation
/// accuracy and fitness, the test accuracy when measured, an early stop and why, and the speed.
pub fn summary(name: &str, m: &Metrics) -> String {
    let mut s = format!("{name}: best validation accuracy {:.4}, fitness {:.4}", m.best_validation_accuracy, m.fitness);
    if let Some(t) = m.test_accuracy {
        s += &format!(", test accuracy {t:.4}");
    }
    if let Some(why) = &m.stopped {
        s += &format!("\nstopped early: {why} (fitness 0)");
    }
    s += &format!("\n{} steps in {:.1} s, {:.0} images/s", m.steps, m.wall_seconds, m.images_per_second);
    s
}
