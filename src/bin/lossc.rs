//! The `lossc` command line: the only code that prints or exits.

use clap::{Parser, Subcommand, ValueEnum};
use lossc::backend::jit;
use lossc::bench::{self as lbench, BenchBatch, BenchTargets};
use lossc::contract::{ContractError, KernelOutput, Targets};
use lossc::ir::{Graph, print};
use lossc::passes::{fuse, simplify::simplify};
use lossc::search::evolution::Settings;
use lossc::search::run as srun;
use lossc::search::screen::Stages;
use lossc::train::TrainSpec;
use lossc::{interp, syntax};
use serde::Deserialize;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "lossc", version, about = "Loss functions as text, compiled to fused loss+gradient kernels")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Parse and check .loss files; print each loss with its op count.
    Check { files: Vec<PathBuf> },
    /// Print a file's losses simplified, as .loss text.
    Simplify { file: PathBuf },
    /// Print each loss with dL/dp and s = p * dL/dp as .loss text.
    Grad {
        file: PathBuf,
        /// Only this loss of the file.
        #[arg(long)]
        loss: Option<String>,
    },
    /// Evaluate a loss and its logit gradient on a batch given as JSON.
    Eval {
        file: PathBuf,
        /// The loss to evaluate, when the file has several.
        #[arg(long)]
        loss: Option<String>,
        /// The batch: {"logits": [[..]], "labels": [..], "label_smoothing": a}, or with
        /// "targets": [[..]], or with "labels", "labels_b", "lam".
        #[arg(long)]
        input: PathBuf,
        #[arg(long, value_enum, default_value_t = Backend::Interp)]
        backend: Backend,
    },
    /// Write the fused kernels of a file's losses: CUDA C, WGSL, Cranelift IR, and a manifest.
    Compile {
        file: PathBuf,
        /// Which kernels to write.
        #[arg(long, value_enum, default_value_t = Target::All)]
        target: Target,
        /// Output directory (created if missing).
        #[arg(short, long, default_value = ".")]
        out: PathBuf,
        /// Only this loss of the file.
        #[arg(long)]
        loss: Option<String>,
    },
    /// Train the surrogate CNN with a compiled loss; prints progress, writes a JSON record.
    Train {
        /// The .loss file.
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
        /// between thread counts; searches train on one).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Where to write the JSON record (default: stdout only).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Training throughput of the surrogate: images/s at a batch size, with CE, on random data.
    BenchTrain {
        /// Threads each batch is split over (convolutions by image, batch norm by channel).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long, default_value_t = 128)]
        batch: usize,
        #[arg(long, default_value_t = 20)]
        steps: usize,
    },
    /// Regularized evolution over the loss genome, stored in SQLite and resumable: a run
    /// interrupted at any point continues where it stopped when started again.
    Search {
        #[command(flatten)]
        store: StoreOpts,
        #[arg(long, default_value_t = 100)]
        population: usize,
        /// Random valid losses trained to pick the first population from.
        #[arg(long, default_value_t = 1000)]
        initial: usize,
        #[arg(long, default_value_t = 20)]
        tournament: usize,
        /// Children to train.
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
        /// Hidden nodes of the genome.
        #[arg(long, default_value_t = 4)]
        hidden: usize,
        /// Children generated and trained together (default: the number of workers). Part of
        /// the run's settings: the same value reproduces the same search.
        #[arg(long)]
        round: Option<usize>,
        /// Training of each candidate (--seed also seeds the evolution).
        #[command(flatten)]
        opts: TrainOpts,
        /// Where the best losses go, as best-1.loss, best-2.loss, ...
        #[arg(long, default_value = "search-out")]
        out: PathBuf,
        /// How many best losses to write.
        #[arg(long, default_value_t = 5)]
        best: usize,
    },
    /// Train random valid losses under several augmentations and print Kendall's tau between
    /// the augmentations' rankings (paper Table 3); resumable like search.
    Sample {
        #[command(flatten)]
        store: StoreOpts,
        /// How many random screened losses.
        #[arg(long, default_value_t = 1000)]
        n: usize,
        #[arg(long, default_value_t = 4)]
        hidden: usize,
        /// The tau over the best k losses (by mean fitness) is printed too.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Training of each loss; --aug takes a comma-separated list here.
        #[command(flatten)]
        opts: TrainOpts,
        /// Also write the tau table as CSV here.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Train losses under several augmentations, label smoothings and seeds; print test
    /// accuracy as mean ± std (Markdown, and CSV with --csv). Runs are kept in the store.
    Evaluate {
        /// A .loss file (every loss in it is evaluated); repeat for more.
        #[arg(long = "loss", required = true)]
        losses: Vec<PathBuf>,
        #[command(flatten)]
        store: StoreOpts,
        /// Seeds 0..N per combination.
        #[arg(long, default_value_t = 5)]
        seeds: usize,
        /// Training; --aug and --label-smoothing take comma-separated lists here.
        #[command(flatten)]
        opts: TrainOpts,
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// The elimination protocol on a search's results: each --stage KEEP:STEPS:SEEDS retrains
    /// the best KEEP so far with that budget and ranks them by mean validation accuracy; the
    /// survivors are written as elim-N.loss.
    Eliminate {
        #[command(flatten)]
        store: StoreOpts,
        /// KEEP:STEPS:SEEDS, in order (e.g. --stage 20:4000:1 --stage 5:8000:3).
        #[arg(long = "stage", required = true)]
        stages: Vec<lossc::evaluate::Stage>,
        #[arg(long, default_value = "eliminate-out")]
        out: PathBuf,
    },
    /// Charts as PNG or SVG (by the output's extension).
    Plot {
        #[command(subcommand)]
        what: PlotCmd,
    },
    /// Claim and run training jobs from a store until none are left (to add machines or
    /// processes to a search or sample running on the same database file).
    Worker {
        #[arg(long)]
        db: PathBuf,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Stop after this many seconds without a job.
        #[arg(long, default_value_t = 10.0)]
        idle: f64,
    },
    /// Pre-screening throughput on one thread (candidates/s), columnar and cached against the
    /// pointwise interpreter, on random genomes and on mutation chains.
    BenchScreen {
        #[arg(long, default_value_t = 20000)]
        n: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Skip the pointwise baseline and the comparison (for profiling the screener alone).
        #[arg(long)]
        no_baseline: bool,
        /// Time the columnar screener this many times, each with a cold cache; prints the
        /// median and the range (a machine's speed drifts).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Time the CUDA kernels on a GPU against the device's copy bandwidth (labels, no smoothing).
    GpuBench {
        files: Vec<PathBuf>,
        #[arg(long, value_delimiter = ',', default_value = "8192x100,65536x1000")]
        shapes: Vec<String>,
    },
    /// Time the JIT kernel against the interpreter (and JAX with --jax) on B x C batches.
    Bench {
        files: Vec<PathBuf>,
        /// Batch shapes as BxC.
        #[arg(long, value_delimiter = ',', default_value = "256x10,8192x10,8192x100,65536x1000")]
        shapes: Vec<String>,
        /// Target forms: labels, dense.
        #[arg(long, value_delimiter = ',', default_value = "labels,dense")]
        targets: Vec<String>,
        /// Threads for the kernel (0: by batch size).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Also time jax.jit(jax.value_and_grad(...)) on one thread via bench/jax_baseline.sh
        /// (which creates its own venv with jax[cpu] on first use).
        #[arg(long)]
        jax: bool,
        /// With --jax: after the table, this many more rounds alternating JAX and lossc, and
        /// the median and range of the per-round ratios (a machine's speed drifts).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Only the compile times, not the kernels (bench/first_compile.sh runs this in a
        /// fresh process per loss).
        #[arg(long)]
        compile_only: bool,
    },
}

#[derive(Subcommand)]
enum PlotCmd {
    /// L(1, p) of each loss, raw and normalised to [0, 1], with cross-entropy for comparison.
    Phenotype {
        /// .loss files (every loss in each).
        files: Vec<PathBuf>,
        #[arg(short, long)]
        out: PathBuf,
        /// Leave cross-entropy out.
        #[arg(long)]
        no_ce: bool,
    },
    /// The surface L(y, p) over [0, 1]^2 of one loss.
    Surface {
        file: PathBuf,
        #[arg(long)]
        loss: Option<String>,
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Fitness under two augmentations for every loss of a `lossc sample` run (paper Figure 3).
    Scatter {
        #[arg(long)]
        db: PathBuf,
        #[arg(long, default_value = "sample")]
        run: String,
        #[arg(long)]
        x: String,
        #[arg(long)]
        y: String,
        #[arg(short, long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Target {
    Cuda,
    Wgsl,
    Cpu,
    All,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Backend {
    /// The f64 reference interpreter.
    Interp,
    /// The Cranelift JIT kernel (f32, SIMD).
    Jit,
    /// The CUDA kernel through NVRTC and the driver API (needs an NVIDIA GPU).
    Cuda,
    /// The WGSL kernel through wgpu (any Vulkan adapter, lavapipe included).
    Wgsl,
}

/// A failure with the exit code it maps to: 2 for bad input, 1 otherwise.
struct Failure {
    code: u8,
    message: String,
}

fn bad_input(message: impl Into<String>) -> Failure {
    Failure { code: 2, message: message.into() }
}

/// Output piped into a reader that stops early (`lossc compile a2.loss | head`) ends the
/// process quietly, as other command-line tools do: Rust ignores SIGPIPE, so `println!` would
/// panic on the closed pipe instead. The store is a transactional SQLite file, so a search
/// ended this way resumes as after any kill.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restores the default action of one signal, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Check { files } => check(&files),
        Cmd::Simplify { file } => load(&file).map(|g| print!("{}", print::to_text(&simplify(&g)))),
        Cmd::Grad { file, loss } => grad(&file, loss.as_deref()),
        Cmd::Eval { file, loss, input, backend } => eval(&file, loss.as_deref(), &input, backend),
        Cmd::Compile { file, target, out, loss } => compile(&file, target, &out, loss.as_deref()),
        Cmd::GpuBench { files, shapes } => gpu_bench(&files, &shapes),
        Cmd::BenchTrain { threads, batch, steps } => bench_train(threads, batch, steps),
        Cmd::Train { loss, name, opts, test, threads, out } => {
            lossc_runtime::layers::set_threads(threads);
            train_cmd(&loss, name.as_deref(), &opts, test, out.as_deref())
        }
        Cmd::Search { store, population, initial, tournament, iterations, hidden, round, opts, out, best } => {
            // Without --round, a resumed run keeps its round size (so --workers may change).
            let stored_round = lossc::search::store::Store::open(&store.db)
                .ok()
                .and_then(|s| s.run_settings(store.run.as_deref().unwrap_or("search")).ok().flatten())
                .and_then(|(_, v)| v["evolution"]["round"].as_u64());
            let settings = Settings {
                population,
                initial,
                tournament,
                iterations,
                hidden,
                seed: opts.seed,
                round: round.or(stored_round.map(|r| r as usize)).unwrap_or(store.workers).max(1),
            };
            search_cmd(&store, settings, &opts, &out, best)
        }
        Cmd::Sample { store, n, hidden, top, opts, csv } => sample_cmd(&store, n, hidden, top, &opts, csv.as_deref()),
        Cmd::Worker { db, workers, idle } => worker_cmd(&db, workers, idle),
        Cmd::Evaluate { losses, store, seeds, opts, csv } => {
            evaluate_cmd(&losses, &store, seeds, &opts, csv.as_deref())
        }
        Cmd::Eliminate { store, stages, out } => eliminate_cmd(&store, &stages, &out),
        Cmd::Plot { what } => plot_cmd(what),
        Cmd::BenchScreen { n, seed, no_baseline, rounds } => {
            println!("host: {}; one thread; from genome to verdict", lbench::host());
            for (label, mutants) in [("random genomes", false), ("mutation chains", true)] {
                let b = lbench::screen_throughput(n, seed, mutants, !no_baseline, rounds);
                let (rate, lo, hi) = b.columnar;
                let baseline = if no_baseline {
                    String::new()
                } else {
                    format!(
                        ", pointwise {:.0}/s ({:.1}x); {} verdicts differ",
                        b.pointwise_per_second,
                        rate / b.pointwise_per_second,
                        b.disagreements
                    )
                };
                let spread = match b.rounds {
                    1 => String::new(),
                    k => format!(" (median of {k} rounds, {lo:.0}-{hi:.0})"),
                };
                println!(
                    "{label:>16}: {} candidates, {} accepted; columnar {rate:.0}/s{spread}{baseline}",
                    b.candidates, b.accepted
                );
                let per = |ns: u64| ns as f64 / 1e3 / b.candidates as f64;
                let parts: Vec<String> =
                    (0..5).map(|i| format!("{} {:.1}", Stages::NAMES[i], per(b.stages.nanos[i]))).collect();
                println!("{:>16}  us per candidate: {}", "", parts.join(" + "));
                let parts: Vec<String> = b.rejections.iter().map(|(r, k)| format!("{r:?} {k}")).collect();
                println!("{:>16}  rejected: {}", "", parts.join(", "));
            }
            Ok(())
        }
        Cmd::Bench { files, shapes, targets, threads, jax, rounds, compile_only } => {
            bench(&files, &shapes, &targets, threads, jax.then_some(rounds), compile_only)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("{}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| bad_input(format!("error: cannot read {}: {e}", path.display())))
}

/// Parses a file, rendering any diagnostic against its text.
fn load(path: &Path) -> Result<Graph, Failure> {
    let src = read(path)?;
    syntax::parse(&src).map_err(|d| {
        let color = std::io::stderr().is_terminal();
        bad_input(d.render(&path.display().to_string(), &src, color).trim_end().to_string())
    })
}

fn check(files: &[PathBuf]) -> Result<(), Failure> {
    if files.is_empty() {
        return Err(bad_input("error: no files given"));
    }
    let mut failed = false;
    for f in files {
        match load(f) {
            Ok(g) => {
                let simple = simplify(&g);
                let losses: Vec<String> = g
                    .outputs
                    .iter()
                    .map(|(n, _)| {
                        let ops = |g: &Graph| g.extract(n).unwrap().op_count();
                        format!("{n} ({} ops, {} simplified)", ops(&g), ops(&simple))
                    })
                    .collect();
                println!("{}: ok: {}", f.display(), losses.join(", "));
            }
            Err(e) => {
                eprintln!("{}", e.message);
                failed = true;
            }
        }
    }
    if failed { Err(Failure { code: 2, message: String::new() }) } else { Ok(()) }
}

/// The names of the losses to work on: one named, or all.
fn pick(g: &Graph, loss: Option<&str>) -> Result<Vec<String>, Failure> {
    let names: Vec<String> = g.outputs.iter().map(|(n, _)| n.clone()).collect();
    match loss {
        None => Ok(names),
        Some(l) if names.iter().any(|n| n == l) => Ok(vec![l.to_string()]),
        Some(l) => Err(bad_input(format!("error: no loss `{l}` in this file (it has: {})", names.join(", ")))),
    }
}

fn grad(file: &Path, loss: Option<&str>) -> Result<(), Failure> {
    let g = load(file)?;
    for name in pick(&g, loss)? {
        let mut d = fuse::derivatives(&g, &name).expect("picked names exist");
        for (out, suffix) in d.outputs.iter_mut().zip(["", "_dL_dp", "_s"]) {
            out.0 = format!("{name}{suffix}");
        }
        println!("# {name}: dL/dz_j = (s_j - p_j * sum_c s_c) / B, with s = {name}_s");
        print!("{}", print::to_text(&d));
    }
    Ok(())
}

/// The JSON batch `lossc eval` reads.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    logits: Vec<Vec<f64>>,
    labels: Option<Vec<u32>>,
    labels_b: Option<Vec<u32>>,
    lam: Option<Vec<f64>>,
    label_smoothing: Option<f64>,
    targets: Option<Vec<Vec<f64>>>,
}

fn eval(file: &Path, loss: Option<&str>, input: &Path, backend: Backend) -> Result<(), Failure> {
    let g = load(file)?;
    let names = pick(&g, loss)?;
    if names.len() != 1 {
        return Err(bad_input(format!(
            "error: {} defines several losses ({}); choose one with --loss",
            file.display(),
            names.join(", ")
        )));
    }
    let batch: Batch =
        serde_json::from_str(&read(input)?).map_err(|e| bad_input(format!("error: {}: {e}", input.display())))?;
    let classes = batch.logits.first().map_or(0, Vec::len);
    if let Some(row) = batch.logits.iter().position(|r| r.len() != classes) {
        return Err(bad_input(format!(
            "error: {}: logits row {row} has {} values, row 0 has {classes}",
            input.display(),
            batch.logits[row].len()
        )));
    }
    let logits: Vec<f64> = batch.logits.concat();
    let dense: Vec<f64>;
    let smoothing = batch.label_smoothing.unwrap_or(0.0);
    let targets = match (&batch.labels, &batch.labels_b, &batch.lam, &batch.targets) {
        (Some(labels), None, None, None) => Targets::Labels { labels, smoothing },
        (Some(labels), Some(labels_b), Some(lam), None) => Targets::Mixup { labels, labels_b, lam, smoothing },
        (None, None, None, Some(t)) if batch.label_smoothing.is_none() => {
            if let Some(row) = t.iter().position(|r| r.len() != classes) {
                return Err(bad_input(format!(
                    "error: {}: targets row {row} has {} values, expected {classes}",
                    input.display(),
                    t[row].len()
                )));
            }
            dense = t.concat();
            Targets::Dense { y: &dense }
        }
        _ => {
            return Err(bad_input(format!(
                "error: {}: give either \"labels\" (with optional \"label_smoothing\"), \"labels\" + \"labels_b\" + \"lam\", or \"targets\"",
                input.display()
            )));
        }
    };
    let fused = fuse::fuse(&g, &names[0]).expect("picked names exist");
    let input_error = |e: lossc::contract::ContractError| bad_input(format!("error: {}: {e}", input.display()));
    let out = match backend {
        Backend::Interp => interp::run(&fused, &logits, classes, &targets).map_err(input_error)?,
        Backend::Jit => run_jit(&fused, &logits, classes, targets).map_err(|e| match e {
            JitFailure::Input(e) => input_error(e),
            JitFailure::Jit(e) => Failure { code: 1, message: format!("error: {e}") },
        })?,
        Backend::Cuda | Backend::Wgsl => run_gpu(&fused, &logits, classes, targets, backend)
            .map_err(|e| Failure { code: 1, message: format!("error: {e}") })?,
    };
    let grad: Vec<&[f64]> = out.grad.chunks(classes).collect();
    let json = serde_json::json!({ "loss": out.loss, "row_loss": out.row_loss, "grad_logits": grad });
    println!("{json}");
    Ok(())
}

enum JitFailure {
    Input(ContractError),
    Jit(jit::JitError),
}

/// `lossc eval --backend jit`: the batch in f32 through the compiled kernel.
fn run_jit(fused: &fuse::Fused, logits: &[f64], classes: usize, targets: Targets) -> Result<KernelOutput, JitFailure> {
    let z: Vec<f32> = logits.iter().map(|&v| v as f32).collect();
    let (lam, y) = f32_parts(&targets);
    let t32 = f32_targets(&targets, &lam, &y);
    let rows = lossc::contract::batch_size(z.len(), classes).map_err(JitFailure::Input)?;
    let kernel = jit::compile(fused, jit::Spec::of(&t32, classes)).map_err(JitFailure::Jit)?;
    let (mut grad, mut row_loss) = (vec![0f32; z.len()], vec![0f32; rows]);
    let loss = kernel.run(&z, &t32, &mut grad, &mut row_loss, 0).map_err(JitFailure::Input)?;
    Ok(KernelOutput {
        loss,
        row_loss: row_loss.iter().map(|&v| v as f64).collect(),
        grad: grad.iter().map(|&v| v as f64).collect(),
    })
}

/// Parses `BxC`.
fn shape(s: &str) -> Result<(usize, usize), Failure> {
    let bad = || bad_input(format!("error: shape `{s}` is not BxC (e.g. 8192x100)"));
    let (b, c) = s.split_once('x').ok_or_else(bad)?;
    let (b, c) = (b.parse().map_err(|_| bad())?, c.parse().map_err(|_| bad())?);
    if b == 0 || c < 2 { Err(bad()) } else { Ok((b, c)) }
}

fn bench(
    files: &[PathBuf],
    shapes: &[String],
    targets: &[String],
    threads: usize,
    jax_rounds: Option<usize>,
    compile_only: bool,
) -> Result<(), Failure> {
    if files.is_empty() {
        return Err(bad_input("error: no .loss files given"));
    }
    // The process's first compile, before anything else has run the parser, the passes or
    // Cranelift (their code not yet paged in, the caches cold): the goal's "first compile".
    // A file that does not parse is reported below, by `load`.
    let cold = read(&files[0]).ok().and_then(|src| lbench::compile_time(&src, None, 100, jit::Tier::Quick).ok());
    let shapes: Vec<(usize, usize)> = shapes.iter().map(|s| shape(s)).collect::<Result<_, _>>()?;
    let kinds: Vec<BenchTargets> = targets
        .iter()
        .map(|t| match t.as_str() {
            "labels" => Ok(BenchTargets::Labels),
            "dense" => Ok(BenchTargets::Dense),
            other => Err(bad_input(format!("error: unknown target form `{other}` (labels, dense)"))),
        })
        .collect::<Result<_, _>>()?;
    let mut losses = Vec::new();
    for f in files {
        let g = load(f)?;
        let src = read(f)?;
        for (name, _) in &g.outputs {
            losses.push((name.clone(), src.clone(), fuse::fuse(&g, name).expect("output exists")));
        }
    }
    let jax_times = match jax_rounds {
        Some(_) if !compile_only => jax_baseline(&losses, &shapes, &kinds)?,
        _ => Default::default(),
    };
    let host = lossc::backend::jit_rt::Helpers::for_host();
    let helpers = match (host.avx2, host.avx512_softmax) {
        (true, true) => "AVX2 + FMA, softmax pass AVX-512",
        (true, false) => "AVX2 + FMA",
        _ => "baseline (no AVX2 + FMA)",
    };
    println!("host: {}; CPU kernel row helpers: {helpers}", lbench::host());
    println!("compile (text -> callable kernel, uncached, labels spec; tier 2 compiles in the background):");
    let ms = |t: std::time::Duration| t.as_secs_f64() * 1e3;
    for (i, (name, src, _)) in losses.iter().enumerate() {
        let time = |tier| lbench::compile_time(src, Some(name), 100, tier).map_err(|e| Failure { code: 1, message: e });
        let first = match cold {
            Some(t) if i == 0 => t,
            _ => time(jit::Tier::Quick)?,
        };
        let (again, full) = (time(jit::Tier::Quick)?, time(jit::Tier::Full)?);
        println!(
            "  {name:6} tier 1 {:7.3} ms first, {:7.3} ms again; tier 2 {:7.3} ms",
            ms(first),
            ms(again),
            ms(full)
        );
    }
    if compile_only {
        return Ok(());
    }
    println!();
    println!(
        "{:6} {:>11} {:7} {:>10} {:>8} {:>8} {:>11} {:>9} {:>10} {:>9}",
        "loss", "shape", "targets", "jit ms", "Gelem/s", "GB/s", "interp ms", "vs interp", "jax ms", "vs jax"
    );
    for &(b, c) in &shapes {
        let batch = BenchBatch::new(b, c, 1);
        for &kind in &kinds {
            for (name, _, fused) in &losses {
                let m = lbench::measure(fused, &batch, kind, threads).map_err(|e| Failure { code: 1, message: e })?;
                let secs = m.kernel.as_secs_f64();
                let elems = (b * c) as f64;
                let jax_ms = jax_times.get(&(name.clone(), b, c, kind.name().to_string())).copied();
                let (jax_col, ratio_col) = match jax_ms {
                    Some(ms) => (format!("{ms:10.3}"), format!("{:8.1}x", ms / (secs * 1e3))),
                    None => (format!("{:>10}", "-"), format!("{:>9}", "-")),
                };
                println!(
                    "{name:6} {:>11} {:7} {:10.3} {:8.2} {:8.2} {:11.1} {:8.0}x {jax_col} {ratio_col}",
                    format!("{b}x{c}"),
                    kind.name(),
                    secs * 1e3,
                    elems / secs / 1e9,
                    elems * kind.bytes_per_element() / secs / 1e9,
                    m.interp.as_secs_f64() * 1e3,
                    m.interp.as_secs_f64() / secs,
                );
            }
        }
    }
    if let Some(rounds @ 2..) = jax_rounds {
        bench_rounds(&losses, &shapes, &kinds, threads, rounds, jax_times)?;
    }
    Ok(())
}

/// More rounds of JAX then lossc on every configuration; prints each configuration's median
/// times and the median and range of its per-round ratios (`first` is round 1's JAX).
fn bench_rounds(
    losses: &[(String, String, fuse::Fused)],
    shapes: &[(usize, usize)],
    kinds: &[BenchTargets],
    threads: usize,
    rounds: usize,
    first: JaxTimes,
) -> Result<(), Failure> {
    let fail = |message: String| Failure { code: 1, message };
    // (loss, shape, kind) -> [(jit ms, jax ms)] per round
    let mut runs: std::collections::BTreeMap<(usize, usize, usize), Vec<(f64, f64)>> = Default::default();
    let bar = indicatif::ProgressBar::new(rounds as u64).with_message("rounds (JAX, then lossc)");
    for round in 0..rounds {
        let jax_times = if round == 0 { first.clone() } else { jax_baseline(losses, shapes, kinds)? };
        for (si, &(b, c)) in shapes.iter().enumerate() {
            let batch = BenchBatch::new(b, c, 1);
            for (ki, &kind) in kinds.iter().enumerate() {
                for (li, (name, _, fused)) in losses.iter().enumerate() {
                    let t = lbench::kernel_time(fused, &batch, kind, threads).map_err(fail)?;
                    let key = (name.clone(), b, c, kind.name().to_string());
                    let jax_ms = jax_times.get(&key).copied().unwrap_or(f64::NAN);
                    runs.entry((si, ki, li)).or_default().push((t.as_secs_f64() * 1e3, jax_ms));
                }
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let median = |x: Vec<f64>| lbench::median_and_range(&x).0;
    println!();
    println!("{rounds} rounds, JAX and lossc alternating (medians; ratio: median and range of the rounds' ratios):");
    println!(
        "{:6} {:>11} {:7} {:>10} {:>10} {:>9} {:>17}",
        "loss", "shape", "targets", "jit ms", "jax ms", "vs jax", "range"
    );
    for ((si, ki, li), v) in runs {
        let ratios: Vec<f64> = v.iter().map(|(jit, jax)| jax / jit).collect();
        let (ratio, lo, hi) = lbench::median_and_range(&ratios);
        let (b, c) = shapes[si];
        println!(
            "{:6} {:>11} {:7} {:10.3} {:10.3} {:8.1}x {:>17}",
            losses[li].0,
            format!("{b}x{c}"),
            kinds[ki].name(),
            median(v.iter().map(|r| r.0).collect()),
            median(v.iter().map(|r| r.1).collect()),
            ratio,
            format!("{lo:.1}x-{hi:.1}x"),
        );
    }
    Ok(())
}

/// JAX's median milliseconds per (loss, rows, classes, targets), from bench/jax_baseline.sh.
type JaxTimes = std::collections::HashMap<(String, usize, usize, String), f64>;

/// Runs bench/jax_baseline.sh on the same losses and shapes in this run.
fn jax_baseline(
    losses: &[(String, String, fuse::Fused)],
    shapes: &[(usize, usize)],
    kinds: &[BenchTargets],
) -> Result<JaxTimes, Failure> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/jax_baseline.sh");
    let names: Vec<&str> = losses.iter().map(|(n, _, _)| n.as_str()).collect();
    let shapes: Vec<String> = shapes.iter().map(|(b, c)| format!("{b}x{c}")).collect();
    let kinds: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    eprintln!("running {} (one thread) ...", script.display());
    let fail = |message: String| Failure { code: 1, message };
    let out = std::process::Command::new(&script)
        .args(["--losses", &names.join(","), "--shapes", &shapes.join(","), "--targets", &kinds.join(",")])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| fail(format!("error: cannot run {}: {e}", script.display())))?;
    if !out.status.success() {
        return Err(fail(format!("error: {} failed", script.display())));
    }
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .map_err(|e| fail(format!("error: bad output from the JAX baseline: {e}")))?;
    let mut times = JaxTimes::new();
    for r in rows {
        let key = (
            r["loss"].as_str().unwrap_or_default().to_string(),
            r["rows"].as_u64().unwrap_or(0) as usize,
            r["classes"].as_u64().unwrap_or(0) as usize,
            r["targets"].as_str().unwrap_or_default().to_string(),
        );
        times.insert(key, r["ms"].as_f64().unwrap_or(f64::NAN));
    }
    Ok(times)
}

fn compile(file: &Path, target: Target, out: &Path, loss: Option<&str>) -> Result<(), Failure> {
    use lossc::backend::{cuda, wgsl};
    let g = load(file)?;
    let src = read(file)?;
    std::fs::create_dir_all(out).map_err(|e| bad_input(format!("error: cannot create {}: {e}", out.display())))?;
    let fail = |message: String| Failure { code: 1, message };
    for name in pick(&g, loss)? {
        let fused = fuse::fuse(&g, &name).expect("picked names exist");
        let mut files = serde_json::Map::new();
        let mut write = |ext: &str, text: String| write_output(out, &name, ext, text, &mut files);
        if matches!(target, Target::Cuda | Target::All) {
            write("cu", cuda::emit(&fused, &cuda::Options { source: src.clone() }))?;
        }
        if matches!(target, Target::Wgsl | Target::All) {
            let w = wgsl::emit(&fused, &wgsl::Options { source: src.clone() });
            wgsl::validate(&w).map_err(|e| fail(format!("internal error: emitted WGSL does not validate:\n{e}")))?;
            write("wgsl", w)?;
        }
        if matches!(target, Target::Cpu | Target::All) {
            let spec = jit::Spec { kind: jit::TargetKind::Labels, smoothing: 0.0, classes: 2 };
            let text = jit::clif(&fused, spec).map_err(|e| fail(format!("error: {e}")))?;
            let header = format!(
                ";; Cranelift IR of the CPU kernel for `{name}` (integer labels, no smoothing), from {}.\n;; lossc JIT-compiles this at run time; `lossc eval --backend jit` runs it.\n",
                file.display()
            );
            write("clif", header + &text)?;
        }
        let files = files.clone();
        let entry_points = ["_rows", "_rows_warp", "_mean"].map(|e| format!("{}{e}", cuda::prefix(&name)));
        let manifest = serde_json::json!({
            "loss": name,
            "source": file.display().to_string(),
            "text": lossc::ir::print::to_text(&g.extract(&name).expect("picked names exist")),
            "eps": g.eps,
            "files": files,
            "cuda": {
                "entry_points": entry_points,
                "rows_args": ["const float* logits [B*C]", "int mode (0 labels, 1 mixup, 2 dense)", "const unsigned* labels [B]",
                              "const unsigned* labels_b [B]", "const float* lam [B]", "const float* dense [B*C]",
                              "float alpha", "int B", "int C", "float* grad [B*C]", "float* row_loss [B]"],
                "rows_launch": {"grid": "B", "block": 256},
                "rows_warp_launch": {"grid": "ceil(B / 8)", "block": 256, "for": "C <= 1024"},
                "mean_args": ["const float* row_loss [B]", "int B", "double* loss"],
                "mean_launch": {"grid": 1, "block": 256},
            },
            "wgsl": {
                "entry_point": "main",
                "workgroup_size": 64,
                "dispatch": "(min(B, 65535), ceil(B / 65535), 1)",
                "bindings": ["logits", "labels", "labels_b", "lam", "dense", "grad (rw)", "row_loss (rw)", "params {mode, rows, classes, alpha}"],
            },
        });
        let text = serde_json::to_string_pretty(&manifest).expect("json");
        write_output(out, &name, "json", text, &mut serde_json::Map::new())?;
    }
    Ok(())
}

/// Writes `out/name.ext`, saying whether it replaced a file, and records it in `files`.
fn write_output(
    out: &Path,
    name: &str,
    ext: &str,
    text: String,
    files: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(), Failure> {
    let path = out.join(format!("{name}.{ext}"));
    let existed = path.exists();
    std::fs::write(&path, text)
        .map_err(|e| Failure { code: 1, message: format!("error: cannot write {}: {e}", path.display()) })?;
    println!("{} {}", if existed { "replaced" } else { "wrote" }, path.display());
    files.insert(ext.to_string(), serde_json::Value::from(format!("{name}.{ext}")));
    Ok(())
}

/// `lossc eval --backend cuda|wgsl`: the batch in f32 through an emitted GPU kernel.
fn run_gpu(
    fused: &fuse::Fused,
    logits: &[f64],
    classes: usize,
    targets: Targets,
    backend: Backend,
) -> Result<KernelOutput, String> {
    use lossc::backend::{cuda, wgsl};
    let z: Vec<f32> = logits.iter().map(|&v| v as f32).collect();
    let (lam, y) = f32_parts(&targets);
    let t32 = f32_targets(&targets, &lam, &y);
    let (loss, row_loss, grad) = if backend == Backend::Cuda {
        let gpu = cuda::Cuda::new()?;
        let k = gpu.compile(fused)?;
        gpu.run(&k, &z, classes, &t32)?
    } else {
        let gpu = wgsl::Gpu::new()?;
        let (row_loss, grad) = gpu.run(fused, &z, classes, &t32)?;
        let loss = row_loss.iter().map(|&v| v as f64).sum::<f64>() / row_loss.len() as f64;
        (loss, row_loss, grad)
    };
    Ok(KernelOutput {
        loss,
        row_loss: row_loss.iter().map(|&v| v as f64).collect(),
        grad: grad.iter().map(|&v| v as f64).collect(),
    })
}

fn gpu_bench(files: &[PathBuf], shapes: &[String]) -> Result<(), Failure> {
    use lossc::backend::cuda::Layout;
    let fail = |message: String| Failure { code: 1, message };
    let gpu = lossc::backend::cuda::Cuda::new().map_err(|e| fail(format!("error: {e}")))?;
    println!("device: {}", gpu.name);
    println!("kernel ms: per call, 50 calls back to back; GB/s counts 4 bytes read and 4 written per element");
    println!(
        "{:6} {:>11} {:>9} {:>9} {:>8} {:>10} {:>8} {:>7}",
        "loss", "shape", "block ms", "warp ms", "GB/s", "copy GB/s", "of copy", "picks"
    );
    for f in files {
        let g = load(f)?;
        for (name, _) in &g.outputs {
            let fused = fuse::fuse(&g, name).expect("output exists");
            let start = std::time::Instant::now();
            let k = gpu.compile(&fused).map_err(|e| fail(format!("error: {e}")))?;
            println!("{name}: NVRTC + module load {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
            for s in shapes {
                let (b, c) = shape(s)?;
                let batch = BenchBatch::new(b, c, 1);
                let time = |layout| {
                    gpu.bench(layout, &k, &batch.logits, &batch.labels, c).map_err(|e| fail(format!("error: {e}")))
                };
                let (block, copy) = time(Layout::Block)?;
                let (warp, _) = time(Layout::Warp)?;
                let pick = Layout::for_classes(c);
                let ms = if pick == Layout::Block { block } else { warp };
                let gbs = 8.0 * (b * c) as f64 / (ms * 1e-3) / 1e9;
                println!(
                    "{name:6} {:>11} {block:9.4} {warp:9.4} {gbs:8.1} {copy:10.1} {:7.0}% {:>7}",
                    format!("{b}x{c}"),
                    100.0 * gbs / copy,
                    format!("{pick:?}").to_lowercase()
                );
            }
        }
    }
    Ok(())
}

/// Where a search, sample or evaluation keeps its state.
#[derive(clap::Args)]
struct StoreOpts {
    /// The SQLite store (created if missing; an existing run in it is resumed).
    #[arg(long)]
    db: PathBuf,
    /// The run's name in the store.
    #[arg(long)]
    run: Option<String>,
    /// Worker threads training in this process (0: only `lossc worker` processes train).
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

/// The options of `lossc train` besides the loss and the output.
#[derive(clap::Args)]
struct TrainOpts {
    /// fashion-mnist, fashion-mnist:DIR, cifar10:DIR or cifar100:DIR.
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    /// base, cutout, mixup, randaug or all.
    #[arg(long, default_value = "base")]
    aug: String,
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Label smoothing (evaluate: a comma-separated list).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    label_smoothing: Vec<f64>,
    /// adam or sgd (Nesterov 0.9).
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Peak learning rate of the one-cycle schedule (default 1e-3 for Adam, 0.1 for SGD).
    #[arg(long)]
    lr: Option<f32>,
    /// Warm-up steps (default: min(1000, steps / 5)).
    #[arg(long)]
    warmup: Option<usize>,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Channel multiplier of the surrogate (1: 8/16/32 channels).
    #[arg(long, default_value_t = 1)]
    width: usize,
    #[arg(long, default_value_t = 200)]
    eval_every: usize,
    /// Validation images held out from the end of the training set (the paper: 5,000).
    #[arg(long, default_value_t = 5000)]
    val: usize,
    /// The early stop: at this step (default min(800, steps / 2)) a training accuracy below
    /// --gate-accuracy scores 0.
    #[arg(long)]
    gate_step: Option<usize>,
    /// Default 0.35 (the predecessor's), except for evaluate: 0 (no gate).
    #[arg(long)]
    gate_accuracy: Option<f64>,
}

impl TrainOpts {
    fn spec(&self) -> TrainSpec {
        TrainSpec {
            data: self.data.clone(),
            aug: self.aug.clone(),
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
        }
    }
}

/// A progress bar over training steps.
fn step_bar(steps: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]")
            .expect("static template"),
    );
    bar
}

fn train_cmd(file: &Path, name: Option<&str>, o: &TrainOpts, test: bool, out: Option<&Path>) -> Result<(), Failure> {
    let g = load(file)?;
    let name = match name {
        Some(n) => pick(&g, Some(n))?.remove(0),
        None => g.outputs[0].0.clone(),
    };
    single_setting(o)?;
    let mut spec = o.spec();
    spec.test = test;
    let cfg = spec.config().map_err(|e| bad_input(format!("error: {e}")))?;
    let data = lossc::train::load_data(&spec.data, spec.val).map_err(|e| bad_input(format!("error: {e}")))?;
    let only = g.extract(&name).expect("picked names exist");
    let bar = step_bar(o.steps);
    let metrics = lossc::train::train_text(&print::to_text(&only), &spec, &data, &mut |p| {
        bar.set_position(p.step as u64);
        bar.set_message(format!("loss {:.4}  best val acc {:.4}", p.loss, p.best_validation_accuracy));
    })
    .map_err(|e| Failure { code: 1, message: format!("error: {e}") })?;
    bar.finish_and_clear();
    let record = serde_json::json!({
        "loss": name,
        "file": file.display().to_string(),
        "spec": spec,
        "lr": cfg.lr,
        "metrics": metrics,
    });
    let text = serde_json::to_string_pretty(&record).expect("json");
    if let Some(path) = out {
        std::fs::write(path, &text)
            .map_err(|e| Failure { code: 1, message: format!("error: cannot write {}: {e}", path.display()) })?;
    }
    println!("{text}");
    if let Some(why) = &metrics.stopped {
        eprintln!("stopped early: {why} (fitness 0)");
    }
    Ok(())
}

fn bench_train(threads: usize, batch: usize, steps: usize) -> Result<(), Failure> {
    use lossc_runtime::augment::{Augment, Technique};
    use lossc_runtime::data::Dataset;
    use lossc_runtime::train::{Config, train};
    if threads == 0 || batch == 0 || steps == 0 {
        return Err(bad_input("error: --threads, --batch and --steps must be positive"));
    }
    lossc_runtime::layers::set_threads(threads);
    let mut rng = lossc::rng::Rng::new(1);
    let n = 4 * batch;
    let data = Dataset {
        images: (0..n * 1024).map(|_| rng.f64() as f32).collect(),
        labels: (0..n).map(|_| rng.below(10) as u32).collect(),
        shape: (1, 32, 32),
        classes: 10,
    };
    let g = syntax::parse("loss ce = -y * ln(p);").expect("valid");
    let loss = lossc::train::JitLoss::new(fuse::fuse(&g, "ce").expect("exists"));
    let mut cfg = Config::new(steps, Augment::new(Technique::Base));
    cfg.batch = batch;
    cfg.eval_every = usize::MAX;
    cfg.gate_step = usize::MAX;
    let m = train(&loss, &data, &data.slice(0, 1), &cfg, &mut |_| {});
    println!("surrogate ResNet9v2 (width 1), batch {batch}, {threads} thread(s): {:.0} images/s", m.images_per_second);
    Ok(())
}

/// The f64 parts of a batch's targets (mixup `lam`, dense `y`) in f32, for the kernels.
fn f32_parts(t: &Targets) -> (Vec<f32>, Vec<f32>) {
    let narrow = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    match *t {
        Targets::Mixup { lam, .. } => (narrow(lam), Vec::new()),
        Targets::Dense { y } => (Vec::new(), narrow(y)),
        Targets::Labels { .. } => (Vec::new(), Vec::new()),
    }
}

/// The same targets over the f32 parts from [`f32_parts`].
fn f32_targets<'a>(t: &Targets<'a>, lam: &'a [f32], y: &'a [f32]) -> Targets<'a, f32> {
    match *t {
        Targets::Labels { labels, smoothing } => Targets::Labels { labels, smoothing },
        Targets::Mixup { labels, labels_b, smoothing, .. } => Targets::Mixup { labels, labels_b, lam, smoothing },
        Targets::Dense { .. } => Targets::Dense { y },
    }
}

/// A bar that follows a search's or sample's phases.
fn phase_bar() -> impl FnMut(&srun::Progress) {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>8} {bar:30} {pos}/{len}  {msg}  [{elapsed} < {eta}]")
            .expect("static template"),
    );
    let mut phase = "";
    move |p: &srun::Progress| {
        if p.phase != phase {
            phase = p.phase;
            bar.reset();
            bar.set_prefix(p.phase);
            bar.set_length(p.total as u64);
        }
        bar.set_position(p.done as u64);
        bar.set_message(format!("best fitness {:.4}", p.best));
        if p.done >= p.total && p.phase != "initial" {
            bar.finish_and_clear();
        }
    }
}

/// A search's or sample's error, with exit code 2 for the user's input.
fn run_failure(e: srun::RunError) -> Failure {
    match e {
        srun::RunError::BadInput(m) => bad_input(format!("error: {m}")),
        srun::RunError::Failed(m) => failure(m),
    }
}

fn failure(message: String) -> Failure {
    Failure { code: 1, message: format!("error: {message}") }
}

fn search_cmd(store: &StoreOpts, settings: Settings, o: &TrainOpts, out: &Path, best: usize) -> Result<(), Failure> {
    single_setting(o)?;
    let spec = o.spec();
    spec.config().map_err(|e| bad_input(format!("error: {e}")))?;
    if settings.population == 0 || settings.initial < settings.population || settings.tournament == 0 {
        return Err(bad_input("error: need --population > 0, --initial >= --population and --tournament > 0"));
    }
    if settings.hidden == 0 {
        return Err(bad_input("error: --hidden must be positive"));
    }
    check_out_dir(out, "best-", srun::MARK)?;
    let run = store.run.clone().unwrap_or_else(|| "search".into());
    let settings = srun::SearchSettings { evolution: settings, spec };
    let report = srun::search(&store.db, &run, &settings, store.workers, &mut phase_bar()).map_err(run_failure)?;
    let db = lossc::search::store::Store::open(&store.db).map_err(|e| failure(e.to_string()))?;
    let (done, attempts) = db.counts().map_err(|e| failure(e.to_string()))?;
    println!(
        "search `{run}` in {}{}: {} children, {} trainings stored ({} attempts), {} run by this process",
        store.db.display(),
        if report.resumed { " (resumed)" } else { "" },
        report.children,
        done,
        attempts,
        report.trained_here
    );
    println!("population (oldest first):");
    for m in &report.population {
        println!("  c{:<6} fitness {:.4}  {}", m.seq, m.fitness, m.screened.key);
    }
    if let Some(b) = &report.best {
        println!("best: c{} fitness {:.4}  {}", b.seq, b.fitness, b.screened.key);
    }
    let written = srun::write_best(&db, &run, out, best).map_err(failure)?;
    for p in written {
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// Refuses an output directory holding `PREFIX-N.loss` files that lossc did not write (the
/// files it writes start with `mark`), before any work starts.
fn check_out_dir(out: &Path, prefix: &str, mark: &str) -> Result<(), Failure> {
    let Ok(entries) = std::fs::read_dir(out) else { return Ok(()) };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(prefix) && name.ends_with(".loss") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            if !text.starts_with(mark) {
                return Err(bad_input(format!(
                    "error: {} was not written by lossc; choose another --out",
                    e.path().display()
                )));
            }
        }
    }
    Ok(())
}

fn sample_cmd(
    store: &StoreOpts,
    n: usize,
    hidden: usize,
    top: usize,
    o: &TrainOpts,
    csv: Option<&Path>,
) -> Result<(), Failure> {
    use lossc::search::stats::kendall_tau;
    let augs: Vec<String> = o.aug.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
    if augs.len() < 2 || n < 2 || hidden == 0 {
        return Err(bad_input(
            "error: sample needs --n >= 2, --hidden > 0 and at least two augmentations in --aug a,b",
        ));
    }
    let mut spec = o.spec();
    spec.aug = augs[0].clone();
    let run = store.run.clone().unwrap_or_else(|| "sample".into());
    let settings = srun::SampleSettings { n, hidden, seed: o.seed, augs: augs.clone(), spec };
    let table = srun::sample(&store.db, &run, &settings, store.workers, &mut phase_bar()).map_err(run_failure)?;
    let rows = &table.rows;
    let mut by_mean: Vec<usize> = (0..rows.len()).collect();
    let mean = |i: usize| rows[i].2.iter().sum::<f64>() / augs.len() as f64;
    by_mean.sort_by(|&a, &b| mean(b).total_cmp(&mean(a)));
    let k = top.min(rows.len());
    let column = |set: &[usize], a: usize| set.iter().map(|&i| rows[i].2[a]).collect::<Vec<f64>>();
    let all: Vec<usize> = (0..rows.len()).collect();
    let mut csv_text = String::from("losses,aug_a,aug_b,n,kendall_tau\n");
    for (label, set) in
        [(format!("all {} losses", rows.len()), &all[..]), (format!("best {k} by mean fitness"), &by_mean[..k])]
    {
        println!("\nKendall's tau, {label}:\n");
        println!("| | {} |", augs.join(" | "));
        println!("|---|{}", "---|".repeat(augs.len()));
        for a in 0..augs.len() {
            let cells: Vec<String> = (0..augs.len())
                .map(|b| {
                    let t = kendall_tau(&column(set, a), &column(set, b));
                    if a < b {
                        csv_text += &format!(
                            "{},{},{},{},{t:.4}\n",
                            label.split(' ').next().unwrap_or(""),
                            augs[a],
                            augs[b],
                            set.len()
                        );
                    }
                    format!("{t:.3}")
                })
                .collect();
            println!("| {} | {} |", augs[a], cells.join(" | "));
        }
    }
    println!("\nfitness (best validation accuracy) of each loss:\n");
    println!("| loss | {} | key |", augs.join(" | "));
    println!("|---|{}---|", "---|".repeat(augs.len()));
    for &i in by_mean.iter().take(k) {
        let f: Vec<String> = rows[i].2.iter().map(|v| format!("{v:.4}")).collect();
        println!("| c{} | {} | `{}` |", rows[i].0, f.join(" | "), rows[i].1);
    }
    if let Some(path) = csv {
        std::fs::write(path, csv_text).map_err(|e| failure(format!("cannot write {}: {e}", path.display())))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

fn worker_cmd(db: &Path, workers: usize, idle: f64) -> Result<(), Failure> {
    if workers == 0 || idle.is_nan() || idle < 0.0 {
        return Err(bad_input("error: --workers must be positive and --idle a number of seconds"));
    }
    lossc::search::store::Store::open(db).map_err(|e| failure(e.to_string()))?;
    lossc_runtime::layers::set_threads(1);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let ran: Result<Vec<usize>, String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..workers)
            .map(|i| {
                let stop = &stop;
                s.spawn(move || {
                    srun::work(
                        db,
                        &lossc::search::store::worker_id(i),
                        stop,
                        Some(std::time::Duration::from_secs_f64(idle)),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a worker panicked".into()))).collect()
    });
    let ran: usize = ran.map_err(failure)?.iter().sum();
    println!("{ran} training job(s) run from {}", db.display());
    Ok(())
}

/// train and search take one augmentation and one label smoothing.
fn single_setting(o: &TrainOpts) -> Result<(), Failure> {
    if o.aug.contains(',') || o.label_smoothing.len() != 1 {
        return Err(bad_input(
            "error: --aug and --label-smoothing take one value here (lists are for evaluate and sample)",
        ));
    }
    Ok(())
}

/// Every loss of each file, by name.
fn losses_of(files: &[PathBuf]) -> Result<Vec<(String, Graph)>, Failure> {
    let mut out = Vec::new();
    for f in files {
        let g = load(f)?;
        for (name, _) in &g.outputs {
            out.push((name.clone(), g.extract(name).expect("outputs exist")));
        }
    }
    Ok(out)
}

fn evaluate_cmd(
    files: &[PathBuf],
    store: &StoreOpts,
    seeds: usize,
    o: &TrainOpts,
    csv: Option<&Path>,
) -> Result<(), Failure> {
    let augs: Vec<String> = o.aug.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
    if augs.is_empty() || seeds == 0 {
        return Err(bad_input("error: evaluate needs --seeds > 0 and at least one --aug"));
    }
    // Evaluation reports what a loss reaches: no accuracy gate unless asked for.
    let base = TrainSpec { gate_accuracy: o.gate_accuracy.unwrap_or(0.0), ..o.spec() };
    for a in &augs {
        for &ls in &o.label_smoothing {
            TrainSpec { aug: a.clone(), label_smoothing: ls, ..base.clone() }
                .config()
                .map_err(|e| bad_input(format!("error: {e}")))?;
        }
    }
    let losses: Vec<lossc::evaluate::Loss> =
        losses_of(files)?.iter().map(|(n, g)| lossc::evaluate::Loss::new(n, g).expect("one output")).collect();
    let table = lossc::evaluate::evaluate(
        &store.db,
        &losses,
        lossc::evaluate::Grid { augs: &augs, smoothings: &o.label_smoothing, seeds },
        &base,
        store.workers,
        &mut phase_bar(),
    )
    .map_err(failure)?;
    println!("{} steps, {} seed(s) each, data {}:\n", base.steps, seeds, base.data);
    print!("{}", table.markdown());
    if let Some(path) = csv {
        std::fs::write(path, table.csv()).map_err(|e| failure(format!("cannot write {}: {e}", path.display())))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

fn eliminate_cmd(store: &StoreOpts, stages: &[lossc::evaluate::Stage], out: &Path) -> Result<(), Failure> {
    use lossc::search::store::Store;
    let run = store.run.clone().unwrap_or_else(|| "search".into());
    let db = Store::open(&store.db).map_err(|e| failure(e.to_string()))?;
    let settings = match db.run_settings(&run).map_err(|e| failure(e.to_string()))? {
        Some((kind, s)) if kind == "search" => s,
        _ => return Err(bad_input(format!("error: {} has no search run named `{run}`", store.db.display()))),
    };
    let base: TrainSpec = serde_json::from_value(settings["spec"].clone())
        .map_err(|e| failure(format!("run `{run}` has no training spec: {e}")))?;
    check_out_dir(out, "elim-", ELIM_MARK)?;
    let ranked = srun::ranking(&db, &run).map_err(|e| failure(e.to_string()))?;
    let start: Vec<lossc::evaluate::Loss> = ranked
        .iter()
        .map(|r| {
            let g = syntax::parse(&r.text).expect("stored texts parse");
            let name = g.outputs[0].0.clone();
            lossc::evaluate::Loss::new(&name, &g).expect("one output")
        })
        .collect();
    println!("{} trained candidates in run `{run}`", start.len());
    let bar = std::cell::RefCell::new(phase_bar());
    let rankings =
        lossc::evaluate::eliminate(&store.db, start, stages, &base, store.workers, &mut |_, p| (bar.borrow_mut())(p))
            .map_err(failure)?;
    for (st, r) in stages.iter().zip(&rankings) {
        println!(
            "\nstage: best {} retrained for {} steps, {} seed(s) (mean best validation accuracy):",
            st.keep, st.steps, st.seeds
        );
        for (i, (l, mean, v)) in r.iter().enumerate() {
            let vals: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
            println!("  {:>3}. {:<8} {mean:.4}  [{}]  {}", i + 1, l.name, vals.join(" "), l.key);
        }
    }
    std::fs::create_dir_all(out).map_err(|e| failure(format!("cannot create {}: {e}", out.display())))?;
    if let (Some(last), Some(st)) = (rankings.last(), stages.last()) {
        for (i, (l, mean, _)) in last.iter().enumerate() {
            let path = out.join(format!("elim-{}.loss", i + 1));
            let text = format!(
                "{ELIM_MARK} (run `{run}` in {})\n# mean best validation accuracy {mean:.4} over {} seed(s) of {} steps\n{}",
                store.db.display(),
                st.seeds,
                st.steps,
                l.text
            );
            std::fs::write(&path, text).map_err(|e| failure(format!("cannot write {}: {e}", path.display())))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

const ELIM_MARK: &str = "# written by lossc eliminate";

fn plot_cmd(what: PlotCmd) -> Result<(), Failure> {
    let plot_err = |e: String| if e.contains("must end in") { bad_input(format!("error: {e}")) } else { failure(e) };
    let out = match what {
        PlotCmd::Phenotype { files, out, no_ce } => {
            let mut losses = losses_of(&files)?;
            if losses.is_empty() && no_ce {
                return Err(bad_input("error: no losses to plot"));
            }
            if !no_ce && !losses.iter().any(|(n, _)| n == "ce") {
                let ce = syntax::parse("loss ce = -y * ln(p);").expect("valid");
                losses.push(("ce".into(), ce));
            }
            lossc::plot::phenotype(&losses, &out).map_err(plot_err)?;
            out
        }
        PlotCmd::Surface { file, loss, out } => {
            let g = load(&file)?;
            let name = pick(&g, loss.as_deref())?.remove(0);
            lossc::plot::surface(&name, &g.extract(&name).expect("picked"), &out).map_err(plot_err)?;
            out
        }
        PlotCmd::Scatter { db, run, x, y, out } => {
            use lossc::search::store::Store;
            let store = Store::open(&db).map_err(|e| failure(e.to_string()))?;
            let settings = match store.run_settings(&run).map_err(|e| failure(e.to_string()))? {
                Some((kind, s)) if kind == "sample" => s,
                _ => return Err(bad_input(format!("error: {} has no sample run named `{run}`", db.display()))),
            };
            let s: srun::SampleSettings =
                serde_json::from_value(settings).map_err(|e| failure(format!("run `{run}`: {e}")))?;
            for a in [&x, &y] {
                if !s.augs.contains(a) {
                    return Err(bad_input(format!(
                        "error: run `{run}` has no augmentation `{a}` (it has {})",
                        s.augs.join(", ")
                    )));
                }
            }
            let spec = |a: &str| TrainSpec { aug: a.to_string(), ..s.spec.clone() };
            let mut points = Vec::new();
            for c in store.candidates(&run).map_err(|e| failure(e.to_string()))? {
                let Some(key) = c.key else { continue };
                let fx = store.result(&key, &spec(&x)).map_err(|e| failure(e.to_string()))?;
                let fy = store.result(&key, &spec(&y)).map_err(|e| failure(e.to_string()))?;
                if let (Some(a), Some(b)) = (fx, fy) {
                    points.push((a.fitness, b.fitness));
                }
            }
            let title = format!("{} losses of `{run}`: best validation accuracy", points.len());
            lossc::plot::scatter(&points, &x, &y, &title, &out).map_err(plot_err)?;
            out
        }
    };
    println!("wrote {}", out.display());
    Ok(())
}
