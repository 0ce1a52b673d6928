//! Timing of the compiled kernels against the f64 interpreter (and, through the CLI, JAX):
//! what `lossc bench` measures. Each number is the median of repeated runs in this process.

use crate::backend::jit::{self, Spec};
use crate::contract::Targets;
use crate::passes::fuse::Fused;
use crate::rng::Rng;
use std::time::{Duration, Instant};

/// Which target form a benchmark feeds the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchTargets {
    Labels,
    Dense,
}

impl BenchTargets {
    pub fn name(self) -> &'static str {
        match self {
            BenchTargets::Labels => "labels",
            BenchTargets::Dense => "dense",
        }
    }
    /// Bytes a kernel must move per element: logits in, gradient out (and dense targets in).
    pub fn bytes_per_element(self) -> f64 {
        match self {
            BenchTargets::Labels => 8.0,
            BenchTargets::Dense => 12.0,
        }
    }
}

/// A batch of random inputs of one shape.
pub struct BenchBatch {
    pub rows: usize,
    pub classes: usize,
    pub logits: Vec<f32>,
    pub labels: Vec<u32>,
    pub dense: Vec<f32>,
}

impl BenchBatch {
    pub fn new(rows: usize, classes: usize, seed: u64) -> BenchBatch {
        let mut rng = Rng::new(seed);
        let logits = (0..rows * classes).map(|_| (2.0 * rng.normal()) as f32).collect();
        let labels: Vec<u32> = (0..rows).map(|_| rng.below(classes) as u32).collect();
        let mut dense = vec![0f32; rows * classes];
        for (row, &l) in dense.chunks_mut(classes).zip(&labels) {
            // 0.9 on the label, the rest spread: a smoothed target, but passed densely
            row.fill(0.1 / classes as f32);
            row[l as usize] += 0.9;
        }
        BenchBatch { rows, classes, logits, labels, dense }
    }
    pub fn targets(&self, kind: BenchTargets) -> Targets<'_, f32> {
        match kind {
            BenchTargets::Labels => Targets::Labels { labels: &self.labels, smoothing: 0.0 },
            BenchTargets::Dense => Targets::Dense { y: &self.dense },
        }
    }
}

/// The median (the upper one of an even count) of `v`, and its smallest and largest value.
pub fn median_and_range(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// The median time of `f` over at least `min_reps` runs and about `budget` of wall time.
pub fn median_time(mut f: impl FnMut(), min_reps: usize, budget: Duration) -> Duration {
    f(); // warm-up: page faults, caches, lazy compilation
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < min_reps || (start.elapsed() < budget && times.len() < 1000) {
        let t = Instant::now();
        f();
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

/// One measured configuration.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub kernel: Duration,
    /// Interpreter time, extrapolated from a slice of rows when the batch is large.
    pub interp: Duration,
}

/// The JIT kernel's median time on one batch (what [`measure`] times, without the interpreter).
pub fn kernel_time(f: &Fused, batch: &BenchBatch, kind: BenchTargets, threads: usize) -> Result<Duration, String> {
    let t = batch.targets(kind);
    let k = jit::compile(f, Spec::of(&t, batch.classes)).map_err(|e| e.to_string())?;
    let mut grad = vec![0f32; batch.logits.len()];
    let mut row_loss = vec![0f32; batch.rows];
    Ok(median_time(
        || {
            k.run(&batch.logits, &t, &mut grad, &mut row_loss, threads).unwrap();
        },
        5,
        Duration::from_millis(300),
    ))
}

/// Times the JIT kernel and the interpreter on one batch.
pub fn measure(f: &Fused, batch: &BenchBatch, kind: BenchTargets, threads: usize) -> Result<Measurement, String> {
    let kernel = kernel_time(f, batch, kind, threads)?;
    // The interpreter is ~100x slower: time a slice of about 200k elements and scale.
    let rows = batch.rows.min((200_000 / batch.classes).max(1));
    let logits: Vec<f64> = batch.logits[..rows * batch.classes].iter().map(|&v| v as f64).collect();
    let dense: Vec<f64> = batch.dense[..rows * batch.classes].iter().map(|&v| v as f64).collect();
    let t64 = match kind {
        BenchTargets::Labels => Targets::Labels { labels: &batch.labels[..rows], smoothing: 0.0 },
        BenchTargets::Dense => Targets::Dense { y: &dense },
    };
    let slice = median_time(
        || {
            crate::interp::run(f, &logits, batch.classes, &t64).unwrap();
        },
        1,
        Duration::from_millis(200),
    );
    let interp = slice.mul_f64(batch.rows as f64 / rows as f64);
    Ok(Measurement { kernel, interp })
}

/// Text -> callable kernel time: parse, fuse, specialise and compile one tier, without the
/// cache (tier 1 is what a caller waits for; tier 2 replaces it in the background), for loss
/// `name` or the file's first.
pub fn compile_time(src: &str, name: Option<&str>, classes: usize, tier: jit::Tier) -> Result<Duration, String> {
    let start = Instant::now();
    let module = crate::syntax::parse(src).map_err(|d| d.message)?;
    let name = name.or(module.outputs.first().map(|(n, _)| n.as_str())).ok_or("no loss in the file")?;
    let f = crate::passes::fuse::fuse(&module, name).ok_or("no such loss")?;
    jit::compile_tier(&f, Spec { kind: jit::TargetKind::Labels, smoothing: 0.0, classes }, tier)
        .map_err(|e| e.to_string())?;
    Ok(start.elapsed())
}

/// The machine a benchmark ran on, in one line (`/proc/cpuinfo`'s model name, and on x86 its
/// family and model, which tell processor generations apart where the name does not, as in a
/// VM that reports only "AMD EPYC"), so that figures from different hosts are not compared
/// as if from one.
pub fn host() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    match (field("cpu family"), field("model")) {
        (Some(family), Some(number)) => format!("{model} (family {family}, model {number}), {cpus} CPUs"),
        _ => format!("{model}, {cpus} CPUs"),
    }
}

/// Screening throughput on one thread: the columnar, cached screener against the pointwise
/// baseline, on the same candidates.
pub struct ScreenBench {
    pub candidates: usize,
    pub accepted: usize,
    /// Candidates/s: the median of the rounds, the slowest and the fastest round.
    pub columnar: (f64, f64, f64),
    pub rounds: usize,
    pub pointwise_per_second: f64,
    /// Candidates whose verdicts differ between the two (a bug if not 0).
    pub disagreements: usize,
    /// The columnar screener's time per stage (a separate, timed pass).
    pub stages: crate::search::screen::Stages,
    /// How many candidates each rejection took, most first.
    pub rejections: Vec<(crate::search::screen::Rejection, usize)>,
}

/// Times screening of `n` candidates, from the genome to the verdict: random genomes, or
/// (`mutants`) children of a small population mutated in turn, as the evolution produces them;
/// the columnar screener `rounds` times, each with a fresh (cold) cache, since one pass says
/// little on a machine whose speed drifts; without `baseline`, only the columnar screener runs
/// (for profiling), and nothing is compared.
pub fn screen_throughput(n: usize, seed: u64, mutants: bool, baseline: bool, rounds: usize) -> ScreenBench {
    use crate::search::genome::Genome;
    use crate::search::screen::Screener;
    let mut rng = Rng::new(seed);
    let mut pool: Vec<Genome> = (0..20).map(|_| Genome::random(&mut rng, 4)).collect();
    let genomes: Vec<Genome> = (0..n)
        .map(|i| {
            if mutants {
                let k = rng.below(pool.len());
                let child = pool[k].mutate(&mut rng).unwrap_or_else(|| Genome::random(&mut rng, 4));
                pool[i % 20] = child.clone();
                child
            } else {
                Genome::random(&mut rng, 4)
            }
        })
        .collect();
    // Every genome that comes out of random initialisation or mutation is valid; the timed
    // work starts from the genome, as in a search: its graph, then the screen.
    let genomes: Vec<Genome> = genomes.into_iter().filter(|g| g.to_graph("l").is_some()).collect();
    let time = |s: &mut Screener| {
        let start = Instant::now();
        let verdicts: Vec<Result<String, _>> =
            genomes.iter().map(|g| s.screen(&g.to_graph("l").expect("checked above")).map(|x| x.key)).collect();
        (genomes.len() as f64 / start.elapsed().as_secs_f64(), verdicts)
    };
    let (mut rates, mut a) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        let (rate, verdicts) = time(&mut Screener::new());
        rates.push(rate);
        a = verdicts;
    }
    // The stages, timed in a second pass by a fresh screener (timing costs a clock read per
    // stage, so the pass above is the one whose rate is reported).
    let mut timed = Screener::new();
    timed.time_stages();
    time(&mut timed);
    let stages = timed.stages().cloned().unwrap_or_default();
    let mut rejections: Vec<(crate::search::screen::Rejection, usize)> = Vec::new();
    for r in a.iter().filter_map(|v| v.as_ref().err()) {
        match rejections.iter_mut().find(|(k, _)| k == r) {
            Some((_, count)) => *count += 1,
            None => rejections.push((r.clone(), 1)),
        }
    }
    rejections.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    let (pointwise, b) = if baseline { time(&mut Screener::pointwise()) } else { (f64::NAN, a.clone()) };
    ScreenBench {
        candidates: genomes.len(),
        accepted: a.iter().filter(|v| v.is_ok()).count(),
        columnar: median_and_range(&rates),
        rounds: rates.len(),
        pointwise_per_second: pointwise,
        disagreements: a.iter().zip(&b).filter(|(x, y)| x != y).count(),
        stages,
        rejections,
    }
}
