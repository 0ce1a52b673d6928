//! The `lossc` command line: the only code that prints or exits.

use clap::{Parser, Subcommand, ValueEnum};
use lossc::contract::Targets;
use lossc::ir::{Graph, print};
use lossc::passes::{fuse, simplify::simplify};
use lossc::{interp, syntax};
use serde::Deserialize;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "lossc",
    version,
    about = "Loss functions as text, compiled to fused loss+gradient kernels"
)]
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
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// The f64 reference interpreter.
    Interp,
}

/// A failure with the exit code it maps to: 2 for bad input, 1 otherwise.
struct Failure {
    code: u8,
    message: String,
}

fn bad_input(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Check { files } => check(&files),
        Cmd::Simplify { file } => load(&file).map(|g| print!("{}", print::to_text(&simplify(&g)))),
        Cmd::Grad { file, loss } => grad(&file, loss.as_deref()),
        Cmd::Eval {
            file,
            loss,
            input,
            backend,
        } => eval(&file, loss.as_deref(), &input, backend),
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
    std::fs::read_to_string(path)
        .map_err(|e| bad_input(format!("error: cannot read {}: {e}", path.display())))
}

/// Parses a file, rendering any diagnostic against its text.
fn load(path: &Path) -> Result<Graph, Failure> {
    let src = read(path)?;
    syntax::parse(&src).map_err(|d| {
        let color = std::io::stderr().is_terminal();
        bad_input(
            d.render(&path.display().to_string(), &src, color)
                .trim_end()
                .to_string(),
        )
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
    if failed {
        Err(Failure {
            code: 2,
            message: String::new(),
        })
    } else {
        Ok(())
    }
}

/// The names of the losses to work on: one named, or all.
fn pick(g: &Graph, loss: Option<&str>) -> Result<Vec<String>, Failure> {
    let names: Vec<String> = g.outputs.iter().map(|(n, _)| n.clone()).collect();
    match loss {
        None => Ok(names),
        Some(l) if names.iter().any(|n| n == l) => Ok(vec![l.to_string()]),
        Some(l) => Err(bad_input(format!(
            "error: no loss `{l}` in this file (it has: {})",
            names.join(", ")
        ))),
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

fn eval(file: &Path, loss: Option<&str>, input: &Path, _backend: Backend) -> Result<(), Failure> {
    let g = load(file)?;
    let names = pick(&g, loss)?;
    if names.len() != 1 {
        return Err(bad_input(format!(
            "error: {} defines several losses ({}); choose one with --loss",
            file.display(),
            names.join(", ")
        )));
    }
    let batch: Batch = serde_json::from_str(&read(input)?)
        .map_err(|e| bad_input(format!("error: {}: {e}", input.display())))?;
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
        (Some(labels), Some(labels_b), Some(lam), None) => Targets::Mixup {
            labels,
            labels_b,
            lam,
            smoothing,
        },
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
    let out = interp::run(&fused, &logits, classes, &targets)
        .map_err(|e| bad_input(format!("error: {}: {e}", input.display())))?;
    let grad: Vec<&[f64]> = out.grad.chunks(classes).collect();
    let json =
        serde_json::json!({ "loss": out.loss, "row_loss": out.row_loss, "grad_logits": grad });
    println!("{json}");
    Ok(())
}
