//! The `lossc` command line: the only code that prints or exits.

use clap::{Parser, Subcommand, ValueEnum};
use lossc::backend::jit;
use lossc::bench::{self as lbench, BenchBatch, BenchTargets};
use lossc::contract::{ContractError, KernelOutput, Targets};
use lossc::ir::{Graph, print};
use lossc::passes::{fuse, simplify::simplify};
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
        /// Where to write the JSON record (default: stdout only).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Training throughput of the surrogate: images/s at a batch size, with CE, on random data.
    BenchTrain {
        /// Threads the convolutions split each batch over (the rest of a step runs on one).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long, default_value_t = 128)]
        batch: usize,
        #[arg(long, default_value_t = 20)]
        steps: usize,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Check { files } => check(&files),
        Cmd::Simplify { file } => load(&file).map(|g| print!("{}", print::to_text(&simplify(&g)))),
        Cmd::Grad { file, loss } => grad(&file, loss.as_deref()),
        Cmd::Eval { file, loss, input, backend } => eval(&file, loss.as_deref(), &input, backend),
        Cmd::Compile { file, target, out, loss } => compile(&file, target, &out, loss.as_deref()),
        Cmd::GpuBench { files, shapes } => gpu_bench(&files, &shapes),
        Cmd::BenchTrain { threads, batch, steps } => bench_train(threads, batch, steps),
        Cmd::Train { loss, name, opts, out } => train_cmd(&loss, name.as_deref(), &opts, out.as_deref()),
        Cmd::Bench { files, shapes, targets, threads, jax } => bench(&files, &shapes, &targets, threads, jax),
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

fn bench(files: &[PathBuf], shapes: &[String], targets: &[String], threads: usize, jax: bool) -> Result<(), Failure> {
    if files.is_empty() {
        return Err(bad_input("error: no .loss files given"));
    }
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
    let jax_times = if jax { jax_baseline(&losses, &shapes, &kinds)? } else { Default::default() };
    println!("compile (text -> callable kernel, uncached, labels spec):");
    for (name, src, _) in &losses {
        let t = lbench::compile_time(src, name, 100).map_err(|e| Failure { code: 1, message: e })?;
        let t2 = lbench::compile_time(src, name, 100).map_err(|e| Failure { code: 1, message: e })?;
        println!("  {name:6} {:8.3} ms first, {:8.3} ms again", t.as_secs_f64() * 1e3, t2.as_secs_f64() * 1e3);
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
        let manifest = serde_json::json!({
            "loss": name,
            "source": file.display().to_string(),
            "text": lossc::ir::print::to_text(&g.extract(&name).expect("picked names exist")),
            "eps": g.eps,
            "files": files,
            "cuda": {
                "entry_points": [format!("{}_rows", cuda::prefix(&name)), format!("{}_mean", cuda::prefix(&name))],
                "rows_args": ["const float* logits [B*C]", "int mode (0 labels, 1 mixup, 2 dense)", "const unsigned* labels [B]",
                              "const unsigned* labels_b [B]", "const float* lam [B]", "const float* dense [B*C]",
                              "float alpha", "int B", "int C", "float* grad [B*C]", "float* row_loss [B]"],
                "rows_launch": {"grid": "B", "block": 256},
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
    let fail = |message: String| Failure { code: 1, message };
    let gpu = lossc::backend::cuda::Cuda::new().map_err(|e| fail(format!("error: {e}")))?;
    println!("device: {}", gpu.name);
    println!("{:6} {:>11} {:>10} {:>8} {:>10} {:>8}", "loss", "shape", "kernel ms", "GB/s", "copy GB/s", "of copy");
    for f in files {
        let g = load(f)?;
        for (name, _) in &g.outputs {
            let fused = fuse::fuse(&g, name).expect("output exists");
            let k = gpu.compile(&fused).map_err(|e| fail(format!("error: {e}")))?;
            for s in shapes {
                let (b, c) = shape(s)?;
                let batch = BenchBatch::new(b, c, 1);
                let (ms, copy) =
                    gpu.bench(&k, &batch.logits, &batch.labels, c).map_err(|e| fail(format!("error: {e}")))?;
                let gbs = 8.0 * (b * c) as f64 / (ms * 1e-3) / 1e9;
                println!(
                    "{name:6} {:>11} {ms:10.4} {gbs:8.1} {copy:10.1} {:7.0}%",
                    format!("{b}x{c}"),
                    100.0 * gbs / copy
                );
            }
        }
    }
    Ok(())
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
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f64,
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
}

/// Loads `fashion-mnist[:DIR]`, `cifar10:DIR` or `cifar100:DIR` as (train, validation).
fn load_data(spec: &str) -> Result<(lossc_runtime::data::Dataset, lossc_runtime::data::Dataset), Failure> {
    use lossc_runtime::data;
    let (kind, dir) = spec.split_once(':').unwrap_or((spec, ""));
    let bad = |e: data::DataError| bad_input(format!("error: {e}"));
    let (train, _test) = match kind {
        "fashion-mnist" => {
            let dir = if dir.is_empty() { data::FASHION_MNIST_DIR } else { dir };
            if !Path::new(dir).exists() {
                return Err(bad_input(format!(
                    "error: {dir} does not exist (apt install dataset-fashion-mnist, or give fashion-mnist:DIR)"
                )));
            }
            data::fashion_mnist(Path::new(dir)).map_err(bad)?
        }
        "cifar10" | "cifar100" if !dir.is_empty() => {
            let k = if kind == "cifar10" { data::Cifar::Ten } else { data::Cifar::Hundred };
            data::cifar(k, Path::new(dir)).map_err(bad)?
        }
        _ => {
            return Err(bad_input(format!(
                "error: --data `{spec}`: expected fashion-mnist[:DIR], cifar10:DIR or cifar100:DIR"
            )));
        }
    };
    Ok(train.split_validation(5000))
}

fn train_cmd(file: &Path, name: Option<&str>, o: &TrainOpts, out: Option<&Path>) -> Result<(), Failure> {
    use lossc_runtime::augment::{Augment, Technique};
    use lossc_runtime::optim::Optimizer;
    use lossc_runtime::train::{Config, train};
    let g = load(file)?;
    let name = match name {
        Some(n) => pick(&g, Some(n))?.remove(0),
        None => g.outputs[0].0.clone(),
    };
    let technique = Technique::parse(&o.aug)
        .ok_or_else(|| bad_input(format!("error: --aug `{}`: expected base, cutout, mixup, randaug or all", o.aug)))?;
    let optimizer = match o.optimizer.as_str() {
        "adam" => Optimizer::Adam,
        "sgd" => Optimizer::Sgd,
        other => return Err(bad_input(format!("error: --optimizer `{other}`: expected adam or sgd"))),
    };
    if o.steps == 0 || o.batch == 0 || o.width == 0 || !(0.0..=1.0).contains(&o.label_smoothing) {
        return Err(bad_input("error: --steps, --batch and --width must be positive and --label-smoothing in [0, 1]"));
    }
    let (train_set, val) = load_data(&o.data)?;
    let mut cfg = Config::new(o.steps, Augment::new(technique));
    cfg.batch = o.batch;
    cfg.seed = o.seed;
    cfg.label_smoothing = o.label_smoothing;
    cfg.optimizer = optimizer;
    cfg.lr = o.lr.unwrap_or(if optimizer == Optimizer::Adam { 1e-3 } else { 0.1 });
    cfg.warmup = o.warmup.unwrap_or(cfg.warmup).max(1);
    cfg.weight_decay = o.weight_decay;
    cfg.width = o.width;
    cfg.eval_every = o.eval_every.max(1);
    let loss = lossc::train::JitLoss::new(fuse::fuse(&g, &name).expect("picked names exist"));
    let bar = indicatif::ProgressBar::new(o.steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]")
            .expect("static template"),
    );
    let metrics = train(&loss, &train_set, &val, &cfg, &mut |p| {
        bar.set_position(p.step as u64);
        bar.set_message(format!("loss {:.4}  best val acc {:.4}", p.loss, p.best_validation_accuracy));
    });
    bar.finish_and_clear();
    let record = serde_json::json!({
        "loss": name,
        "file": file.display().to_string(),
        "data": o.data,
        "aug": o.aug,
        "steps": o.steps,
        "batch": o.batch,
        "seed": o.seed,
        "label_smoothing": o.label_smoothing,
        "optimizer": o.optimizer,
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
