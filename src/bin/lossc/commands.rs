//! Each command: a library call, and what it prints.

use super::args::{DbArg, PlotCmd, StoreOpts, TrainOpts};
use super::{Failure, INTERRUPTED, bad, load, losses_of, pick, read};
use lossc::app::batch::{Backend, Batch};
use lossc::app::bench::{self, BenchLoss, BenchTargets, KernelBench, Shape};
use lossc::app::compile::Target;
use lossc::app::{evaluate, plot, report};
use lossc::ir::{Graph, print};
use lossc::passes::{fuse, simplify::simplify};
use lossc::search::{
    evolution::Settings,
    run as srun,
    screen::Stages,
    store::{JobRow, Store},
};
use lossc::train::TrainSpec;
use std::path::{Path, PathBuf};

pub fn check(files: &[PathBuf]) -> Result<(), Failure> {
    if files.is_empty() {
        return Err(bad("no files given"));
    }
    let mut failed = false;
    for f in files {
        match load(f) {
            Ok((g, _)) => {
                let simple = simplify(&g);
                let ops = |g: &Graph, n: &str| g.extract(n).expect("outputs exist").op_count();
                let losses: Vec<String> = g
                    .outputs
                    .iter()
                    .map(|(n, _)| format!("{n} ({} ops, {} simplified)", ops(&g, n), ops(&simple, n)))
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

pub fn simplify_file(file: &Path) -> Result<(), Failure> {
    let (g, _) = load(file)?;
    print!("{}", print::to_text(&simplify(&g)));
    Ok(())
}

pub fn gpu_bench(files: &[PathBuf], shapes: &[Shape]) -> Result<(), Failure> {
    let losses: Vec<(String, fuse::Fused)> =
        losses_of(files)?.into_iter().map(|(n, g)| (n.clone(), fuse::fuse(&g, &n).expect("one output"))).collect();
    Ok(bench::gpu(&losses, shapes, &mut |l| println!("{l}"))?)
}

pub fn grad(file: &Path, loss: Option<&str>) -> Result<(), Failure> {
    let (g, _) = load(file)?;
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

pub fn eval(file: &Path, loss: Option<&str>, input: &Path, backend: Backend) -> Result<(), Failure> {
    let (g, _) = load(file)?;
    let names = pick(&g, loss)?;
    if names.len() != 1 {
        return Err(bad(format!(
            "{} defines several losses ({}); choose one with --loss",
            file.display(),
            names.join(", ")
        )));
    }
    let in_file = |e: lossc::app::batch::BatchError| {
        let f = Failure::from(e);
        Failure { message: f.message.replacen("error: ", &format!("error: {}: ", input.display()), 1), ..f }
    };
    let batch = Batch::parse(&read(input)?).map_err(in_file)?;
    let out = batch.run(&fuse::fuse(&g, &names[0]).expect("picked"), backend).map_err(in_file)?;
    let grad: Vec<&[f64]> = out.grad.chunks(batch.classes).collect();
    println!("{}", serde_json::json!({ "loss": out.loss, "row_loss": out.row_loss, "grad_logits": grad }));
    Ok(())
}

pub fn compile(file: &Path, target: Target, out: &Path, loss: Option<&str>) -> Result<(), Failure> {
    let (g, src) = load(file)?;
    let names = pick(&g, loss)?;
    for w in lossc::app::compile::write(&g, &names, file, &src, target, out)? {
        println!("{} {}", if w.replaced { "replaced" } else { "wrote" }, w.path.display());
    }
    Ok(())
}

/// A progress bar over training steps.
pub fn step_bar(steps: usize) -> indicatif::ProgressBar {
    let style = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]");
    indicatif::ProgressBar::new(steps as u64).with_style(style.expect("static template"))
}

/// Refuses an output file that cannot be written where it is, before any work is done for it.
fn check_out_file(path: Option<&Path>) -> Result<(), Failure> {
    match path.and_then(|p| Some((p, lossc::error::unwritable(p)?))) {
        Some((p, why)) => Err(bad(format!("cannot write {}: {why}", p.display()))),
        None => Ok(()),
    }
}

pub fn train(
    file: &Path,
    name: Option<&str>,
    o: &TrainOpts,
    test: bool,
    threads: usize,
    out: Option<&Path>,
    json: bool,
) -> Result<(), Failure> {
    let (g, _) = load(file)?;
    let name = pick(&g, name)?.remove(0);
    check_out_file(out)?;
    let spec = TrainSpec { test, ..o.single()? };
    let lr = spec.config()?.lr;
    let data = lossc::train::load_data(&spec.data, spec.val)?;
    lossc_runtime::layers::set_threads(threads.max(1));
    let bar = step_bar(o.steps);
    let only = g.extract(&name).expect("picked names exist");
    let metrics = lossc::train::train(&only, &spec, &data, &mut |p| {
        bar.set_position(p.step as u64);
        bar.set_message(format!("loss {:.4}  best val acc {:.4}", p.loss, p.best_validation_accuracy));
    })?;
    bar.finish_and_clear();
    let record = serde_json::json!({ "loss": name, "file": file.display().to_string(), "spec": spec, "lr": lr, "metrics": metrics });
    let text = serde_json::to_string_pretty(&record).expect("json");
    if let Some(path) = out {
        std::fs::write(path, &text).map_err(|e| bad(format!("cannot write {}: {e}", path.display())))?;
    }
    if json {
        println!("{text}");
    } else {
        println!("{}", lossc::train::summary(&name, &metrics));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn bench_train(
    device: &str,
    aug: &str,
    population: usize,
    threads: usize,
    batch: usize,
    steps: usize,
    profile: bool,
) -> Result<(), Failure> {
    let t = bench::train_throughput(device, aug, population, threads, batch, steps, profile)?;
    let on = if device == "cpu" { format!("{} thread(s)", threads.max(1)) } else { t.device.clone() };
    println!(
        "surrogate ResNet9v2 (width 1), batch {batch}, aug {aug}, population {population}, {on}: {:.0} images/s, {:.1} candidate-steps/s",
        t.images_per_second, t.candidate_steps_per_second
    );
    println!(
        "  {:.2} M multiply-adds a training image in the convolutions and the dense layer: {:.2} TFLOP/s",
        t.macs_per_image as f64 / 1e6,
        2.0 * t.macs_per_image as f64 * t.images_per_second / 1e12
    );
    println!(
        "  ({} steps timed after {} warm-up; {:.2} s before them: kernel builds, set-up, warm-up)",
        t.timed_steps, t.warm_steps, t.setup_seconds
    );
    if let Some((c, off)) = &t.graphs {
        let why = off.as_ref().map_or(String::new(), |w| format!("; not replayed: {w}"));
        println!(
            "  CUDA graphs: {} of {} steps replayed ({} recorded, {} left their recording, {} launch by launch){why}",
            c.replayed,
            c.steps(),
            c.recorded,
            c.diverged,
            c.direct
        );
    }
    if let Some(p) = &t.profile {
        print_profile(p);
    }
    Ok(())
}

/// The kernels of a profiled training, longest first, per step.
fn print_profile(p: &bench::TrainProfile) {
    if p.kernels.is_empty() {
        println!("  profile: this device launches no kernels to time (the CPU device)");
        return;
    }
    let steps = p.steps.max(1) as f64;
    let total: f64 = p.kernels.iter().map(|k| k.seconds).sum();
    println!("  profile over {} steps, each launch waited for:", p.steps);
    println!("  {:<22} {:>13} {:>10} {:>7}", "kernel", "launches/step", "ms/step", "share");
    let mut rows: Vec<_> = p.kernels.iter().collect();
    rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    for k in rows {
        println!(
            "  {:<22} {:>13.1} {:>10.3} {:>6.1}%",
            k.name,
            k.launches as f64 / steps,
            1e3 * k.seconds / steps,
            100.0 * k.seconds / total.max(f64::MIN_POSITIVE)
        );
    }
    let launches: usize = p.kernels.iter().map(|k| k.launches).sum();
    println!(
        "  {:<22} {:>13.1} {:>10.3}   (wall {:.3} ms/step with the waits and the host's work)",
        "all kernels",
        launches as f64 / steps,
        1e3 * total / steps,
        1e3 * p.wall_seconds / steps
    );
}

/// A bar that follows a search's or sample's phases.
pub fn phase_bar() -> impl FnMut(&srun::Progress) {
    let style = indicatif::ProgressStyle::with_template("{prefix:>8} {bar:30} {pos}/{len}  {msg}  [{elapsed} < {eta}]");
    let bar = indicatif::ProgressBar::new(0).with_style(style.expect("static template"));
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

pub fn search(
    store: &StoreOpts,
    mut settings: Settings,
    (round, lag): (Option<usize>, Option<usize>),
    o: &TrainOpts,
    out: &Path,
    best: usize,
    limit: Option<std::time::Duration>,
) -> Result<(), Failure> {
    let spec = o.single()?;
    if settings.population == 0 || settings.initial < settings.population || settings.tournament == 0 {
        return Err(bad("need --population > 0, --initial >= --population and --tournament > 0"));
    }
    if settings.hidden == 0 {
        return Err(bad("--hidden must be positive"));
    }
    let run = store.run.clone().unwrap_or_else(|| "search".into());
    srun::set_lease(store.lease);
    srun::set_models(store.models);
    // Without --round, a resumed run keeps its round size (so --workers may change), and a new
    // one has a child for each model its workers train at once (a worker on a GPU device trains
    // up to --models jobs as one population, and a round of fewer would leave its slots empty),
    // up to the population's size: a round's children join in order, each pushing out the
    // oldest member, so children past that size would push out their own round's first ones
    // before any tournament could choose them.
    let db = store.db.get()?;
    let stored = srun::stored_evolution(&db, &run);
    if round.is_none() && stored.is_none() && store.workers == 0 {
        return Err(bad(
            "with --workers 0, give --round N: how many candidates are trained at once across the `lossc worker` \
             processes (it shapes the search, so it is stored with the run)",
        ));
    }
    let fill = (store.workers * srun::models_per_worker(&spec)).min(settings.population);
    settings.round = round.or(stored.as_ref().map(|s| s.round)).unwrap_or(fill).max(1);
    // Two rounds in flight keep workers busy past the gate; the default takes them where both
    // fit in the population, so that every child in flight could still be a parent.
    let ahead = usize::from(settings.round > 1 && 2 * settings.round <= settings.population);
    settings.lag = lag.or(stored.as_ref().map(|s| s.lag)).unwrap_or(ahead);
    if stored.is_none() && settings.round > settings.population {
        let (r, p) = (settings.round, settings.population);
        return Err(bad(format!(
            "--round {r} is more than --population {p}: the first {} children of each round would leave the \
             population before any tournament could choose them; give --population {r} or more, or --round {p} or less",
            r - p
        )));
    }
    srun::check_out_dir(out, "best-", srun::MARK)?;
    let settings = srun::SearchSettings { evolution: settings, spec };
    let report = srun::search(&db, &run, &settings, store.workers, limit, &mut phase_bar())?;
    let opened = Store::open(&db)?;
    let (done, attempts) = opened.counts()?;
    let failed = match opened.failed_jobs()? {
        0 => String::new(),
        n => format!(", {n} failed after {} attempts", lossc::search::store::MAX_ATTEMPTS),
    };
    let resumed = if report.resumed { " (resumed)" } else { "" };
    let stopped = match report.stopped {
        Some(srun::Stop::TimeLimit) => ", stopped at the time limit",
        Some(srun::Stop::Interrupted) => ", interrupted",
        None => "",
    };
    println!(
        "search `{run}` in {}{resumed}{stopped}: {} children, {done} trainings stored ({attempts} attempts{failed}), {} run by this process",
        db, report.children, report.trained_here
    );
    if report.stopped.is_some() {
        println!("the same command goes on from here");
        match srun::ranking(&opened, &run)?.first() {
            Some(b) => println!("best: c{} fitness {:.4}  {}", b.seq, b.fitness, b.key),
            None => println!("no training has finished yet"),
        }
    } else {
        println!("population (oldest first):");
        for m in &report.population {
            println!("  c{:<6} fitness {:.4}  {}", m.seq, m.fitness, m.screened.key);
        }
    }
    if let Some(b) = &report.best {
        println!("best: c{} fitness {:.4}  {}", b.seq, b.fitness, b.screened.key);
    }
    for p in srun::write_best(&opened, &run, out, best)? {
        println!("wrote {}", p.display());
    }
    match report.stopped {
        Some(srun::Stop::Interrupted) => Err(INTERRUPTED),
        _ => Ok(()),
    }
}

pub fn sample(
    store: &StoreOpts,
    n: usize,
    hidden: usize,
    top: usize,
    o: &TrainOpts,
    csv: Option<&Path>,
) -> Result<(), Failure> {
    srun::set_lease(store.lease);
    srun::set_models(store.models);
    let augs = o.augs();
    if augs.len() < 2 || n < 2 || hidden == 0 {
        return Err(bad("sample needs --n >= 2, --hidden > 0 and at least two augmentations in --aug a,b"));
    }
    check_out_file(csv)?;
    let run = store.run.clone().unwrap_or_else(|| "sample".into());
    let settings = srun::SampleSettings { n, hidden, seed: o.seed, augs, spec: o.spec() };
    let table = srun::sample(&store.db.get()?, &run, &settings, store.workers, &mut phase_bar())?;
    let r = report::TauReport::new(&table, top);
    print!("{}", r.markdown());
    if let Some(path) = csv {
        std::fs::write(path, r.csv()).map_err(|e| bad(format!("cannot write {}: {e}", path.display())))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

pub fn worker(db: &DbArg, workers: usize, idle: f64, lease: f64, models: usize) -> Result<(), Failure> {
    if workers == 0 || !idle.is_finite() || idle < 0.0 {
        return Err(bad("--workers must be positive and --idle a number of seconds"));
    }
    srun::set_lease(lease);
    srun::set_models(models);
    let db = db.get()?;
    let ran = srun::work_here(&db, workers, std::time::Duration::from_secs_f64(idle))?;
    println!("{ran} training job(s) run from {db}");
    if srun::interrupted() {
        println!("interrupted: the trainings under way went back to the queue");
        return Err(INTERRUPTED);
    }
    Ok(())
}

/// `status`'s line for the running jobs of one worker: which, since when, and the lease that
/// ends first (the one a dead worker loses first).
fn running_line(worker: &str, held: &[&JobRow], now: f64) -> String {
    // `a`, or `a-b` from the smallest to the largest.
    let span = |v: &[i64]| match (v.iter().min(), v.iter().max()) {
        (Some(a), Some(b)) if a != b => format!("{a}-{b}"),
        (Some(a), _) => a.to_string(),
        _ => "?".into(),
    };
    let mut ids: Vec<i64> = held.iter().map(|j| j.id).collect();
    ids.sort_unstable();
    // The ids as runs of consecutive numbers: `1-64, 66-129`.
    let runs: Vec<String> = ids.chunk_by(|a, b| b - a == 1).map(span).collect();
    let attempts: Vec<i64> = held.iter().map(|j| j.attempts).collect();
    let plural = if attempts.iter().any(|&a| a != attempts[0]) { "s" } else { "" };
    let attempts = format!("attempt{plural} {}", span(&attempts));
    let what = match held.len() {
        1 => format!("job {} ({attempts})", runs[0]),
        n => format!("{n} jobs: {} ({attempts})", runs.join(", ")),
    };
    let claimed: Vec<i64> = held.iter().filter_map(|j| Some((now - j.claimed?).round() as i64)).collect();
    let since = if claimed.is_empty() { String::new() } else { format!(", claimed {} s ago", span(&claimed)) };
    let first = held.iter().filter_map(|j| j.lease_until).map(|l| l - now).min_by(f64::total_cmp);
    let lease = match first {
        Some(left) if left >= 0.0 && held.len() == 1 => format!(", lease ends in {left:.0} s"),
        Some(left) if left >= 0.0 => format!(", the first lease ends in {left:.0} s"),
        Some(left) => format!(", a lease expired {:.0} s ago", -left),
        None => String::new(),
    };
    format!("{what} on {worker}{since}{lease}")
}

/// How many of a search's best losses `status` lists.
const STATUS_BEST: usize = 3;

/// How many pending jobs that were given back `status` lists with the reason.
const STATUS_GIVEN_BACK: usize = 5;

pub fn status(db: &DbArg) -> Result<(), Failure> {
    let db = db.get()?;
    let store = Store::open_existing(&db)?;
    let (now, jobs) = (store.clock()?, store.jobs()?);
    println!("store {db}");
    for (name, kind, candidates) in store.runs()? {
        println!("  run `{name}`: {kind}, {candidates} candidates");
        if kind == "search" {
            // What a search has found so far, while it runs; a damaged run is reported, not
            // allowed to hide the queue below.
            match srun::ranking(&store, &name) {
                Ok(ranked) if ranked.is_empty() => println!("    no training has finished yet"),
                Ok(ranked) => {
                    println!("    {} losses scored; the best so far:", ranked.len());
                    for b in ranked.iter().take(STATUS_BEST) {
                        println!("    c{:<6} fitness {:.4}  {}", b.seq, b.fitness, b.key);
                    }
                }
                Err(e) => println!("    cannot rank its losses: {e}"),
            }
        }
    }
    let count = |status: &str| jobs.iter().filter(|j| j.status == status).count();
    let (done, attempts) = store.counts()?;
    println!(
        "jobs: {} pending, {} running, {} done ({done} results), {} failed; {attempts} attempts",
        count("pending"),
        count("running"),
        count("done"),
        count("failed")
    );
    // One line per worker: a population of 128 jobs is one line, not 128.
    let mut holders: std::collections::BTreeMap<&str, Vec<&JobRow>> = Default::default();
    for j in jobs.iter().filter(|j| j.status == "running") {
        holders.entry(j.worker.as_deref().unwrap_or("?")).or_default().push(j);
    }
    for (worker, held) in holders {
        println!("  running: {}", running_line(worker, &held, now));
    }
    // Pending jobs that were given back say why: a worker that could not train them, a lease
    // that ran out, or a failed attempt.
    let given_back: Vec<_> =
        jobs.iter().filter(|j| j.status == "pending").filter_map(|j| Some((j, j.error.as_deref()?))).collect();
    for (j, error) in given_back.iter().take(STATUS_GIVEN_BACK) {
        println!("  pending: job {} ({} attempts so far), given back: {error}", j.id, j.attempts);
    }
    if given_back.len() > STATUS_GIVEN_BACK {
        println!("  ... and {} more pending jobs given back", given_back.len() - STATUS_GIVEN_BACK);
    }
    for j in jobs.iter().filter(|j| j.status == "failed") {
        println!(
            "  failed: job {} after {} attempts: {}",
            j.id,
            j.attempts,
            j.error.as_deref().unwrap_or("no error recorded")
        );
    }
    Ok(())
}

pub fn evaluate(
    files: &[PathBuf],
    store: &StoreOpts,
    seeds: usize,
    baseline: Option<&str>,
    o: &TrainOpts,
    csv: Option<&Path>,
) -> Result<(), Failure> {
    srun::set_lease(store.lease);
    srun::set_models(store.models);
    let augs = o.augs();
    if augs.is_empty() || seeds == 0 {
        return Err(bad("evaluate needs --seeds > 0 and at least one --aug"));
    }
    check_out_file(csv)?;
    // Evaluation reports what a loss reaches: no accuracy gate unless asked for.
    let base = TrainSpec { gate_accuracy: o.gate_accuracy.unwrap_or(0.0), ..o.spec() };
    let losses: Vec<evaluate::Loss> =
        losses_of(files)?.iter().map(|(n, g)| evaluate::Loss::new(n, g).expect("one output")).collect();
    let baseline = match baseline {
        Some("none") => None,
        None => losses.iter().any(|l| l.name == "ce").then_some("ce"),
        named => named,
    };
    let grid = evaluate::Grid { augs: &augs, smoothings: &o.label_smoothing, seeds, baseline };
    let table = evaluate::evaluate(&store.db.get()?, &losses, grid, &base, store.workers, &mut phase_bar())?;
    println!("{} steps, {} seed(s) each, data {}:\n", base.steps, seeds, base.data);
    print!("{}", table.markdown());
    if let Some(path) = csv {
        std::fs::write(path, table.csv()).map_err(|e| bad(format!("cannot write {}: {e}", path.display())))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

pub fn eliminate(store: &StoreOpts, stages: &[evaluate::Stage], out: &Path) -> Result<(), Failure> {
    srun::set_lease(store.lease);
    srun::set_models(store.models);
    let run = store.run.clone().unwrap_or_else(|| "search".into());
    let bar = std::cell::RefCell::new(phase_bar());
    let e =
        evaluate::eliminate_run(&store.db.get()?, &run, stages, store.workers, out, &mut |_, p| (bar.borrow_mut())(p))?;
    println!("{} trained candidates in run `{run}`", e.candidates);
    for (st, r) in stages.iter().zip(&e.rankings) {
        println!(
            "\nstage: best {} retrained for {} steps, {} seed(s) (mean best validation accuracy):",
            st.keep, st.steps, st.seeds
        );
        for (i, (l, mean, v)) in r.iter().enumerate() {
            let vals: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
            println!("  {:>3}. {:<8} {mean:.4}  [{}]  {}", i + 1, l.name, vals.join(" "), l.key);
        }
    }
    e.written.iter().for_each(|p| println!("wrote {}", p.display()));
    Ok(())
}

pub fn plot(what: PlotCmd) -> Result<(), Failure> {
    let out = match what {
        PlotCmd::Phenotype { files, out, no_ce } => {
            let mut losses = losses_of(&files)?;
            if !no_ce && !losses.iter().any(|(n, _)| n == "ce") {
                losses.push(("ce".into(), lossc::syntax::parse("loss ce = -y * ln(p);").expect("valid")));
            }
            plot::phenotype(&losses, &out)?;
            out
        }
        PlotCmd::Surface { file, loss, out } => {
            let (g, _) = load(&file)?;
            let name = pick(&g, loss.as_deref())?.remove(0);
            plot::surface(&name, &g.extract(&name).expect("picked"), &out)?;
            out
        }
        PlotCmd::Scatter { db, run, x, y, out } => {
            plot::check_path(&out)?;
            let points = plot::sample_points(&db.get()?, &run, &x, &y)?;
            let title = format!("{} losses of `{run}`: best validation accuracy", points.len());
            plot::scatter(&points, &x, &y, &title, &out)?;
            out
        }
    };
    println!("wrote {}", out.display());
    Ok(())
}

pub fn bench_screen(n: usize, seed: u64, no_baseline: bool, rounds: usize) {
    println!("host: {}; one thread; from genome to verdict", bench::host());
    for (label, mutants) in [("random genomes", false), ("mutation chains", true)] {
        let b = bench::screen_throughput(n, seed, mutants, !no_baseline, rounds);
        let (rate, lo, hi) = b.columnar;
        let baseline = match no_baseline {
            true => String::new(),
            false => format!(
                ", pointwise {:.0}/s ({:.1}x); {} verdicts differ",
                b.pointwise_per_second,
                rate / b.pointwise_per_second,
                b.disagreements
            ),
        };
        let spread =
            if b.rounds == 1 { String::new() } else { format!(" (median of {} rounds, {lo:.0}-{hi:.0})", b.rounds) };
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
}

pub fn bench_kernels(
    files: &[PathBuf],
    shapes: &[Shape],
    kinds: &[BenchTargets],
    threads: usize,
    jax_rounds: Option<usize>,
    compile_only: bool,
) -> Result<(), Failure> {
    if files.is_empty() {
        return Err(bad("no .loss files given"));
    }
    // The process's first compile, before anything else has run the parser, the passes or
    // Cranelift (a file that does not parse is reported below).
    let cold = std::fs::read_to_string(&files[0])
        .ok()
        .and_then(|src| bench::compile_time(&src, None, 100, lossc::backend::jit::Tier::Quick).ok());
    let mut losses = Vec::new();
    for f in files {
        let (g, source) = load(f)?;
        for (name, _) in &g.outputs {
            let fused = fuse::fuse(&g, name).expect("output exists");
            let key = lossc::search::screen::key(&g.extract(name).expect("output exists"));
            losses.push(BenchLoss { name: name.clone(), source: source.clone(), key, fused });
        }
    }
    let b = KernelBench { losses: &losses, shapes, kinds, threads, jax_rounds, compile_only, cold };
    Ok(b.run(&mut |line| println!("{line}"))?)
}
