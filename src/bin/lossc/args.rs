//! The command line's options: one variant per command, with its flags and their help.

use super::{Failure, bad};
use clap::{Parser, Subcommand};
use lossc::app::batch::Backend;
use lossc::app::bench::{BenchTargets, Shape};
use lossc::app::compile::Target;
use lossc::app::evaluate;
use lossc::search::store::{DEFAULT_LEASE, Db};
use lossc::train::TrainSpec;
use lossc_runtime::augment;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "lossc", version, about = "Loss functions as text, compiled to fused loss+gradient kernels")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Parse and check .loss files; print each loss with its op count.
    Check {
        /// .loss files.
        files: Vec<PathBuf>,
    },
    /// Print a file's losses simplified, as .loss text.
    Simplify {
        /// The .loss file.
        file: PathBuf,
    },
    /// Print each loss with dL/dp and s = p * dL/dp as .loss text.
    Grad {
        /// The .loss file.
        file: PathBuf,
        /// Only this loss of the file.
        #[arg(long)]
        loss: Option<String>,
    },
    /// Evaluate a loss and its logit gradient on a batch given as JSON: {"logits": [[..]],
    /// "labels": [..], "label_smoothing": a}, or with "targets": [[..]], or "labels",
    /// "labels_b", "lam".
    Eval {
        /// The .loss file.
        file: PathBuf,
        /// The loss to evaluate, when the file has several.
        #[arg(long)]
        loss: Option<String>,
        /// The JSON batch (see the command's description).
        #[arg(long)]
        input: PathBuf,
        /// Which implementation computes it: the f64 interpreter, the CPU JIT kernel, or the WGSL
        /// or CUDA kernel on a GPU.
        #[arg(long, value_enum, default_value_t = Backend::Interp)]
        backend: Backend,
    },
    /// Write the fused kernels of a file's losses: CUDA C, WGSL, Cranelift IR, and a manifest.
    Compile {
        /// The .loss file.
        file: PathBuf,
        /// Which kernels: all (CUDA C, WGSL, Cranelift IR), one of them, or a JAX or PyTorch module
        /// (NAME.py).
        #[arg(long, value_enum, default_value_t = Target::All)]
        target: Target,
        /// Output directory (created if missing).
        #[arg(short, long, default_value = ".")]
        out: PathBuf,
        /// Only this loss of the file.
        #[arg(long)]
        loss: Option<String>,
    },
    /// Train the surrogate CNN with a compiled loss; prints a summary (the full record with
    /// --json, or into --out).
    Train {
        /// The .loss file to train with.
        #[arg(long)]
        loss: PathBuf,
        /// Which loss of the file (default: its first).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        opts: TrainOpts,
        /// Also report the final model's test-set accuracy.
        #[arg(long)]
        test: bool,
        /// Threads the convolutions split each batch over (results differ in the last bits
        /// between thread counts; searches train on one). 1 to 256.
        #[arg(long, default_value_t = 1, value_parser = threads(1))]
        threads: usize,
        /// Write the JSON record here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the JSON record instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Training throughput of the surrogate: images/s at a batch size, with CE, on random data,
    /// timed after a few warm-up steps.
    BenchTrain {
        /// 1 to 256 (the CPU device).
        #[arg(long, default_value_t = 1, value_parser = threads(1))]
        threads: usize,
        /// Where to train: cpu, wgpu, cuda, or auto (cuda where it opens, else cpu).
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "wgpu", "cuda", "auto"])]
        device: String,
        /// base, cutout, mixup, randaug or all.
        #[arg(long, default_value = "base")]
        aug: String,
        /// Models trained at once (wgpu, cuda; the CPU trains one): 1 to 1024.
        #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
        population: usize,
        /// Images a step.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Training steps timed (after a few warm-up steps).
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Then train again, timing each kernel (GPU devices): device time per kernel and step.
        #[arg(long)]
        profile: bool,
    },
    /// Regularized evolution over the loss genome, in a resumable store: a run interrupted at
    /// any point continues where it stopped when started again.
    Search {
        #[command(flatten)]
        store: StoreOpts,
        /// Losses kept alive by the regularized evolution (each child replaces the oldest).
        #[arg(long, default_value_t = 100)]
        population: usize,
        /// Random valid losses trained to pick the first population from.
        #[arg(long, default_value_t = 1000)]
        initial: usize,
        /// Members drawn at random for each parent; the fittest of them is the parent.
        #[arg(long, default_value_t = 20)]
        tournament: usize,
        /// Children to train.
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
        /// Hidden nodes of the genome.
        #[arg(long, default_value_t = 4)]
        hidden: usize,
        /// Children generated and trained together, at most --population (default: the stored
        /// run's, else the number of workers, times --models on a GPU device, at most
        /// --population). The same value reproduces the same search.
        #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        round: Option<usize>,
        /// Rounds generated ahead: each round's tournaments see the population as it was this
        /// many rounds before the round joins, so that workers whose candidates stopped at the
        /// gate train a later round's instead of waiting for the rest of theirs (default: the
        /// stored run's, else 1 where two rounds fit in the population, else 0). Stored with
        /// the run.
        #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=16))]
        lag: Option<usize>,
        #[command(flatten)]
        opts: TrainOpts,
        /// Where the best losses go, as best-1.loss, best-2.loss, ...
        #[arg(long, default_value = "search-out")]
        out: PathBuf,
        /// How many of the best losses to write.
        #[arg(long, default_value_t = 5)]
        best: usize,
        /// Stop after this long (90s, 45m, 8h; a plain number is seconds): the trainings under
        /// way are given back, the best so far are written, and the same command goes on.
        #[arg(long, value_parser = duration)]
        time_limit: Option<std::time::Duration>,
    },
    /// Train random valid losses under several augmentations (--aug a,b,..) and print
    /// Kendall's tau between their rankings (paper Table 3); resumable like search.
    Sample {
        #[command(flatten)]
        store: StoreOpts,
        /// Random valid losses to train under each augmentation.
        #[arg(long, default_value_t = 1000)]
        n: usize,
        /// Hidden nodes of the genome.
        #[arg(long, default_value_t = 4)]
        hidden: usize,
        /// The tau over the best k losses (by mean fitness) is printed too (k >= 2: a rank
        /// correlation needs two).
        #[arg(long, default_value_t = 10, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..))]
        top: usize,
        #[command(flatten)]
        opts: TrainOpts,
        /// Also write the tau table as CSV here.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Train losses under several augmentations, label smoothings (comma-separated lists) and
    /// seeds; print test accuracy as mean ± std. Runs are kept in the store.
    Evaluate {
        /// A .loss file (every loss in it is evaluated); repeat for more.
        #[arg(long = "loss", required = true)]
        losses: Vec<PathBuf>,
        #[command(flatten)]
        store: StoreOpts,
        /// Seeds 0..N per combination.
        #[arg(long, default_value_t = 5)]
        seeds: usize,
        /// The loss (by name) every other is compared with, seed by seed, with a paired t-test
        /// (default: `ce` where a loss of that name is evaluated; `none` for no comparison).
        #[arg(long)]
        baseline: Option<String>,
        #[command(flatten)]
        opts: TrainOpts,
        /// Also write the table as CSV here.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// The elimination protocol on a search's results: each --stage KEEP:STEPS:SEEDS retrains
    /// the best KEEP so far with that budget; the survivors are written as elim-N.loss.
    Eliminate {
        #[command(flatten)]
        store: StoreOpts,
        /// A stage KEEP:STEPS:SEEDS, for example 100:20000:1; repeat it for each further stage.
        #[arg(long = "stage", required = true)]
        stages: Vec<evaluate::Stage>,
        /// Where the survivors go, as elim-1.loss, elim-2.loss, ...
        #[arg(long, default_value = "eliminate-out")]
        out: PathBuf,
    },
    /// Charts as PNG or SVG (by the output's extension).
    Plot {
        #[command(subcommand)]
        what: PlotCmd,
    },
    /// What a store holds and who is working on it: its runs (with a search's best losses so
    /// far), its jobs by status, the running jobs with their workers and leases, and the failed
    /// jobs with their errors.
    Status {
        /// The store: a file path (SQLite) or a postgres://user@host:port/dbname URL.
        #[arg(long)]
        db: DbArg,
    },
    /// Claim and run training jobs from a store until none are left (to add processes or
    /// machines to a search, sample or evaluation on the same store).
    Worker {
        /// The store: a file path (SQLite) or a postgres://user@host:port/dbname URL.
        #[arg(long)]
        db: DbArg,
        /// Worker threads training in this process.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Stop after this many seconds without a job (or without the store: an SQLite file
        /// that a search started beside the worker has not made yet).
        #[arg(long, default_value_t = 10.0)]
        idle: f64,
        /// Seconds a claimed job stays leased without a heartbeat (renewed five times per lease).
        #[arg(long, default_value_t = DEFAULT_LEASE, value_parser = lease_seconds)]
        lease: f64,
        /// Jobs a worker trains at once as one population on a GPU device (wgpu, cuda): it claims
        /// up to this many pending jobs with one training spec. Results do not depend on it. The
        /// CPU trains one job at a time.
        #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
        models: usize,
    },
    /// Pre-screening throughput on one thread (candidates/s), columnar and cached against the
    /// pointwise interpreter, on random genomes and on mutation chains.
    BenchScreen {
        /// Random genomes screened (and as many candidates along mutation chains).
        #[arg(long, default_value_t = 20000)]
        n: usize,
        /// Seeds the random genomes.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Skip the pointwise baseline and the comparison.
        #[arg(long)]
        no_baseline: bool,
        /// Time the columnar screener this many times, each with a cold cache.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Time the CUDA kernels on a GPU against the device's copy bandwidth.
    GpuBench {
        /// .loss files; every loss in them is timed.
        files: Vec<PathBuf>,
        /// Batch shapes BxC (rows x classes), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "8192x100,65536x1000")]
        shapes: Vec<Shape>,
    },
    /// Time the JIT kernel against the interpreter (and JAX with --jax) on BxC batches.
    Bench {
        /// .loss files; every loss in them is timed.
        files: Vec<PathBuf>,
        /// Batch shapes BxC (rows x classes), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "256x10,8192x10,8192x100,65536x1000")]
        shapes: Vec<Shape>,
        /// Target forms to time: labels (integer labels), dense (a target matrix).
        #[arg(long, value_delimiter = ',', default_value = "labels,dense")]
        targets: Vec<BenchTargets>,
        /// Threads for the kernel (0: by batch size), up to 256.
        #[arg(long, default_value_t = 1, value_parser = threads(0))]
        threads: usize,
        /// Also time jax.jit(jax.value_and_grad(...)) on one thread (bench/jax_baseline.sh).
        #[arg(long)]
        jax: bool,
        /// With --jax: this many rounds alternating JAX and lossc after the table.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Only the compile times (bench/first_compile.sh runs this once per loss).
        #[arg(long)]
        compile_only: bool,
    },
}

#[derive(Subcommand)]
pub enum PlotCmd {
    /// L(1, p) of each loss of the files, raw and normalised, with cross-entropy.
    Phenotype {
        /// .loss files; every loss in them is drawn.
        files: Vec<PathBuf>,
        /// The chart: .png or .svg.
        #[arg(short, long)]
        out: PathBuf,
        /// Leave cross-entropy out.
        #[arg(long)]
        no_ce: bool,
    },
    /// The surface L(y, p) over [0, 1]^2 of one loss.
    Surface {
        /// The .loss file.
        file: PathBuf,
        /// The loss to draw, when the file has several.
        #[arg(long)]
        loss: Option<String>,
        /// The chart: .png or .svg.
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Fitness under two augmentations for every loss of a `lossc sample` run (paper Figure 3).
    Scatter {
        /// The store of the `lossc sample` run.
        #[arg(long)]
        db: DbArg,
        /// The run's name in the store.
        #[arg(long, default_value = "sample")]
        run: String,
        /// The augmentation on the x axis (one of the run's).
        #[arg(long)]
        x: String,
        /// The augmentation on the y axis.
        #[arg(long)]
        y: String,
        /// The chart: .png or .svg.
        #[arg(short, long)]
        out: PathBuf,
    },
}

/// A thread count from `min` to 256 (more would only exhaust the machine).
fn threads(min: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(min..=256)
}

/// Where a search, sample or evaluation keeps its state.
#[derive(clap::Args)]
pub struct StoreOpts {
    /// The store: a file path (SQLite, created if missing) or a postgres://user@host:port/dbname
    /// URL (an empty database becomes a store). An existing run in it is resumed.
    #[arg(long)]
    pub db: DbArg,
    /// The run's name in the store.
    #[arg(long)]
    pub run: Option<String>,
    /// Worker threads training in this process (0: only `lossc worker` processes train).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Seconds a claimed job stays leased without a heartbeat (renewed five times per lease):
    /// a dead worker's job goes back to the queue this long after its last heartbeat.
    #[arg(long, default_value_t = DEFAULT_LEASE, value_parser = lease_seconds)]
    pub lease: f64,
    /// Jobs a worker trains at once as one population on a GPU device (wgpu, cuda): it claims
    /// up to this many pending jobs with one training spec. Results do not depend on it. The
    /// CPU trains one job at a time.
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub models: usize,
}

/// `--db` as given. lossc parses it itself, so that the error for a bad URL never repeats
/// the password (clap's own error would quote the whole value).
#[derive(Clone)]
pub struct DbArg(String);

impl std::str::FromStr for DbArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<DbArg, Self::Err> {
        Ok(DbArg(s.to_string()))
    }
}

impl DbArg {
    pub fn get(&self) -> Result<Db, Failure> {
        self.0.parse().map_err(bad)
    }
}

/// A time span: a number with an optional unit, s (the default), m or h; at most a year.
fn duration(s: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = match s.strip_suffix(['s', 'm', 'h']) {
        Some(n) => (n, &s[n.len()..]),
        None => (s, "s"),
    };
    let scale = match unit {
        "m" => 60.0,
        "h" => 3600.0,
        _ => 1.0,
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v * scale <= 366.0 * 86400.0 => Ok(std::time::Duration::from_secs_f64(v * scale)),
        _ => Err(format!("`{s}` is not a time span such as 90s, 45m or 8h (above 0, at most a year)")),
    }
}

/// A lease from half a second to a day.
fn lease_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.5..=86400.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds from 0.5 to 86400")),
    }
}

/// How each loss is trained (see `lossc::train::TrainSpec`).
#[derive(clap::Args)]
pub struct TrainOpts {
    /// fashion-mnist, fashion-mnist:DIR, cifar10:DIR or cifar100:DIR.
    #[arg(long, default_value = "fashion-mnist")]
    pub data: String,
    /// base, cutout, mixup, randaug or all.
    #[arg(long, default_value = "base")]
    pub aug: String,
    /// Training steps.
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// Images a step.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Seeds the training (initial weights, data order, augmentation, dropout) and the random
    /// losses of a search or sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Label smoothing from 0 to 1 (evaluate takes a comma-separated list).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub label_smoothing: Vec<f64>,
    /// adam or sgd (Nesterov 0.9).
    #[arg(long, default_value = "adam")]
    pub optimizer: String,
    /// Peak learning rate of the one-cycle schedule (default 1e-3 for Adam, 0.1 for SGD).
    #[arg(long)]
    pub lr: Option<f32>,
    /// Warm-up steps (default: min(1000, steps / 5)).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// L2 weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Channel multiplier of the surrogate (1: 8/16/32 channels).
    #[arg(long, default_value_t = 1)]
    pub width: usize,
    /// Validate every this many steps (and at the end).
    #[arg(long, default_value_t = 200)]
    pub eval_every: usize,
    /// Validation images held out from the end of the training set (the paper: 5,000).
    #[arg(long, default_value_t = 5000)]
    pub val: usize,
    /// The early stop: at this step (default min(800, steps / 2)) a training accuracy below
    /// --gate-accuracy scores 0.
    #[arg(long)]
    pub gate_step: Option<usize>,
    /// Default 0.35, except for evaluate: 0 (no gate).
    #[arg(long)]
    pub gate_accuracy: Option<f64>,
    /// Where to train: cpu, wgpu (any Vulkan adapter: a GPU, or lavapipe on the CPU), cuda
    /// (an NVIDIA GPU through its driver and NVRTC), or auto (cuda where it opens, else cpu).
    /// Stored with a search's or evaluation's runs; a resumed run keeps its device.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "wgpu", "cuda", "auto"])]
    pub device: String,
    /// Zero padding before the random crop of every augmentation, in pixels (0 to 32).
    #[arg(long, default_value_t = augment::PAD)]
    pub pad: usize,
    /// Side of cutout's square, in pixels (1 to 32).
    #[arg(long, default_value_t = augment::CUTOUT)]
    pub cutout: usize,
    /// Mixup's weights are drawn from Beta(alpha, alpha).
    #[arg(long, default_value_t = augment::MIXUP_ALPHA)]
    pub mixup_alpha: f64,
    /// RandAug's ops an image (0 to 16).
    #[arg(long, default_value_t = augment::RANDAUG_N)]
    pub randaug_n: usize,
    /// RandAug's magnitude (0 to 10).
    #[arg(long, default_value_t = augment::RANDAUG_M)]
    pub randaug_m: f32,
}

impl TrainOpts {
    /// The spec, with the first augmentation and label smoothing of a list.
    pub fn spec(&self) -> TrainSpec {
        TrainSpec {
            data: self.data.clone(),
            aug: self.augs().first().cloned().unwrap_or_default(),
            steps: self.steps,
            batch: self.batch,
            seed: self.seed,
            label_smoothing: self.label_smoothing.first().copied().unwrap_or(0.0),
            optimizer: self.optimizer.clone(),
            lr: self.lr,
            warmup: self.warmup,
            weight_decay: self.weight_decay,
            width: self.width,
            eval_every: self.eval_every,
            val: self.val,
            gate_step: self.gate_step,
            gate_accuracy: self.gate_accuracy.unwrap_or(0.35),
            test: false,
            device: lossc::train::resolve_device(&self.device),
            pad: self.pad,
            cutout: self.cutout,
            mixup_alpha: self.mixup_alpha,
            randaug_n: self.randaug_n,
            randaug_m: self.randaug_m,
        }
    }

    pub fn augs(&self) -> Vec<String> {
        self.aug.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect()
    }

    /// train and search take one augmentation and one label smoothing.
    pub fn single(&self) -> Result<TrainSpec, Failure> {
        if self.aug.contains(',') || self.label_smoothing.len() != 1 {
            return Err(bad("--aug and --label-smoothing take one value here (lists are for evaluate and sample)"));
        }
        let spec = self.spec();
        spec.config()?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// `lossc CMD --help` is the reference a user reads first: an argument without help shows
    /// only its default there.
    #[test]
    fn every_argument_of_every_command_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                if a.get_help().is_none() && !["help", "version"].contains(&a.get_id().as_str()) {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "lossc", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }
}
