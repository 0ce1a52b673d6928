//! The `lossc` command line: parses options, calls the library, prints. The only code that
//! prints or exits; every command's work is a library call (see `lossc::app`).

mod args;
mod commands;

use args::{Cli, Cmd};
use clap::Parser;
use commands::*;
use lossc::error::{Blame, Classify};
use lossc::ir::Graph;
use lossc::search::evolution::Settings;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A message and the exit code it maps to: 2 for bad input, 1 otherwise.
struct Failure {
    code: u8,
    message: String,
}

/// The exit of a command that a signal cut short, after it has printed what it kept.
const INTERRUPTED: Failure = Failure { code: 130, message: String::new() };

fn bad(message: impl std::fmt::Display) -> Failure {
    Failure { code: 2, message: format!("error: {message}") }
}

impl<E: Classify> From<E> for Failure {
    fn from(e: E) -> Failure {
        let code = if e.blame() == Blame::Input { 2 } else { 1 };
        Failure { code, message: format!("error: {e}") }
    }
}

/// Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid or not set" (twice) where it is
/// missing, as in containers and CI. lossc opens no windows, so a private directory will do.
fn quiet_vulkan() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    // SAFETY: getuid cannot fail.
    let dir = std::env::temp_dir().join(format!("lossc-runtime-{}", unsafe { libc::getuid() }));
    let mode = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700);
    if std::fs::create_dir_all(&dir).is_ok() && std::fs::set_permissions(&dir, mode).is_ok() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
}

fn main() -> ExitCode {
    // Output piped into a reader that stops early (`lossc compile a2.loss | head`) ends the
    // process quietly, as other tools do; Rust would otherwise panic on the closed pipe.
    #[cfg(unix)]
    // SAFETY: restores the default action of one signal, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    quiet_vulkan();
    let cmd = Cli::parse().cmd;
    if matches!(
        cmd,
        Cmd::Search { .. } | Cmd::Sample { .. } | Cmd::Evaluate { .. } | Cmd::Eliminate { .. } | Cmd::Worker { .. }
    ) {
        stop_on_interrupt();
    }
    let result = match cmd {
        Cmd::Check { files } => check(&files),
        Cmd::Simplify { file } => simplify_file(&file),
        Cmd::Grad { file, loss } => grad(&file, loss.as_deref()),
        Cmd::Eval { file, loss, input, backend } => eval(&file, loss.as_deref(), &input, backend),
        Cmd::Compile { file, target, out, loss } => compile(&file, target, &out, loss.as_deref()),
        Cmd::Train { loss, name, opts, test, threads, out, json } => {
            train(&loss, name.as_deref(), &opts, test, threads, out.as_deref(), json)
        }
        Cmd::BenchTrain { threads, device, aug, population, batch, steps, profile } => {
            let device = lossc::train::resolve_device(&device);
            bench_train(&device, &aug, population, threads, batch, steps, profile)
        }
        Cmd::Search {
            store,
            population,
            initial,
            tournament,
            iterations,
            hidden,
            round,
            lag,
            opts,
            out,
            best,
            time_limit,
        } => {
            let settings =
                Settings { population, initial, tournament, iterations, hidden, seed: opts.seed, round: 0, lag: 0 };
            search(&store, settings, (round, lag), &opts, &out, best, time_limit)
        }
        Cmd::Sample { store, n, hidden, top, opts, csv } => sample(&store, n, hidden, top, &opts, csv.as_deref()),
        Cmd::Evaluate { losses, store, seeds, baseline, opts, csv } => {
            evaluate(&losses, &store, seeds, baseline.as_deref(), &opts, csv.as_deref())
        }
        Cmd::Eliminate { store, stages, out } => eliminate(&store, &stages, &out),
        Cmd::Plot { what } => plot(what),
        Cmd::Worker { db, workers, idle, lease, models } => worker(&db, workers, idle, lease, models),
        Cmd::Status { db } => status(&db),
        Cmd::BenchScreen { n, .. } if !(1..=10_000_000).contains(&n) => {
            Err(bad("--n takes 1 to 10,000,000 candidates"))
        }
        Cmd::BenchScreen { n, seed, no_baseline, rounds } => {
            bench_screen(n, seed, no_baseline, rounds);
            Ok(())
        }
        Cmd::GpuBench { files, shapes } => gpu_bench(&files, &shapes),
        Cmd::Bench { files, shapes, targets, threads, jax, rounds, compile_only } => {
            bench_kernels(&files, &shapes, &targets, threads, jax.then_some(rounds), compile_only)
        }
    };
    // A command cut short by Ctrl-C says what it kept (its output above), then exits as an
    // interrupted program does; one that finished its work before the signal came exits 0.
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("{}", f.message);
            }
            let interrupted = lossc::search::run::interrupted();
            ExitCode::from(if interrupted { INTERRUPTED.code } else { f.code })
        }
    }
}

/// Ctrl-C (SIGINT) or SIGTERM stops a long command the way a time limit stops a search: the
/// trainings under way are abandoned, their jobs go back to the queue without counting the
/// attempt (a training killed three times would otherwise fail for good), and the command
/// reports what it kept. A second signal ends the process at once.
fn stop_on_interrupt() {
    extern "C" fn on_signal(_: libc::c_int) {
        if lossc::search::run::interrupt() {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(130) }
        }
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler does only async-signal-safe work (an atomic swap, `_exit`).
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// The largest `.loss` file or JSON batch read: a path such as `/dev/zero` would otherwise be
/// read until memory runs out.
const MAX_INPUT: u64 = 256 << 20;

fn read(path: &Path) -> Result<String, Failure> {
    use std::io::Read;
    let fail = |e: &dyn std::fmt::Display| bad(format!("cannot read {}: {e}", path.display()));
    let mut text = String::new();
    let file = std::fs::File::open(path).map_err(|e| fail(&e))?;
    file.take(MAX_INPUT + 1).read_to_string(&mut text).map_err(|e| fail(&e))?;
    if text.len() as u64 > MAX_INPUT {
        return Err(fail(&format!("larger than {} MiB", MAX_INPUT >> 20)));
    }
    Ok(text)
}

/// Parses a file, rendering any diagnostic against its text; returns the module and the text.
fn load(path: &Path) -> Result<(Graph, String), Failure> {
    let src = read(path)?;
    let g = lossc::syntax::parse(&src).map_err(|d| {
        let rendered = d.render(&path.display().to_string(), &src, std::io::stderr().is_terminal());
        Failure { code: 2, message: rendered.trim_end().to_string() }
    })?;
    Ok((g, src))
}

/// The names of the losses to work on: one named, or all.
fn pick(g: &Graph, loss: Option<&str>) -> Result<Vec<String>, Failure> {
    let names: Vec<String> = g.outputs.iter().map(|(n, _)| n.clone()).collect();
    match loss {
        None => Ok(names),
        Some(l) if names.iter().any(|n| n == l) => Ok(vec![l.to_string()]),
        Some(l) => Err(bad(format!("no loss `{l}` in this file (it has: {})", names.join(", ")))),
    }
}

/// Every loss of each file, by name.
fn losses_of(files: &[PathBuf]) -> Result<Vec<(String, Graph)>, Failure> {
    let mut out = Vec::new();
    for f in files {
        let (g, _) = load(f)?;
        out.extend(g.outputs.iter().map(|(n, _)| (n.clone(), g.extract(n).expect("outputs exist"))));
    }
    Ok(out)
}
