//! What the benchmark commands measure: the compiled kernels against the f64 interpreter and
//! JAX (`lossc bench`), the CUDA kernels against the device's copy bandwidth (`gpu-bench`),
//! training throughput (`bench-train`) and screening throughput (`bench-screen`). Each number
//! is the median of repeated runs in this process; every table names the host it ran on.
//! Reports come out line by line through a callback, so a long benchmark shows its progress.

use crate::backend::jit::{self, Spec};
use crate::passes::fuse::Fused;
use crate::reference::contract::Targets;
use crate::rng::Rng;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("shape `{0}` is not BxC with B >= 1, C >= 2 and B * C <= 2^28 (e.g. 8192x100)")]
    Shape(String),
    #[error("unknown target form `{0}` (labels, dense)")]
    TargetForm(String),
    #[error("{0}")]
    Parse(String),
    #[error("no loss named `{0}`")]
    NoLoss(String),
    #[error(transparent)]
    Jit(#[from] jit::JitError),
    #[error(transparent)]
    Batch(#[from] crate::reference::contract::ContractError),
    #[error(transparent)]
    Cuda(#[from] crate::backend::cuda::CudaError),
    #[error("cannot find bench/jax_baseline.sh (run lossc from the repository, or set LOSSC_JAX_BASELINE)")]
    NoJaxScript,
    #[error("the JAX baseline {script} failed: {message}")]
    Jax { script: PathBuf, message: String },
    #[error(transparent)]
    Spec(#[from] crate::train::SpecError),
    #[error(transparent)]
    Device(#[from] lossc_runtime::gpu::GpuError),
    #[error(transparent)]
    CudaDevice(#[from] lossc_runtime::cuda::CudaError),
}
crate::error::classify!(BenchError, input: [Shape, TargetForm, Parse, NoLoss, Spec]);

/// A batch shape, `BxC`: B rows of C classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub rows: usize,
    pub classes: usize,
}

impl std::str::FromStr for Shape {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Shape, BenchError> {
        let bad = || BenchError::Shape(s.to_string());
        let (b, c) = s.split_once('x').ok_or_else(bad)?;
        let (rows, classes): (usize, usize) = (b.parse().map_err(|_| bad())?, c.parse().map_err(|_| bad())?);
        // Up to 2^28 elements: a benchmark batch holds several f32 copies (1 GiB each at that).
        let fits = rows.checked_mul(classes).is_some_and(|n| n <= 1 << 28);
        if rows == 0 || classes < 2 || !fits { Err(bad()) } else { Ok(Shape { rows, classes }) }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}x{}", self.rows, self.classes)
    }
}

/// Which target form a benchmark feeds the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchTargets {
    Labels,
    Dense,
}

impl std::str::FromStr for BenchTargets {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<BenchTargets, BenchError> {
        match s {
            "labels" => Ok(BenchTargets::Labels),
            "dense" => Ok(BenchTargets::Dense),
            other => Err(BenchError::TargetForm(other.to_string())),
        }
    }
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
pub fn kernel_time(f: &Fused, batch: &BenchBatch, kind: BenchTargets, threads: usize) -> Result<Duration, BenchError> {
    let t = batch.targets(kind);
    let k = jit::compile(f, Spec::of(&t, batch.classes))?;
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
pub fn measure(f: &Fused, batch: &BenchBatch, kind: BenchTargets, threads: usize) -> Result<Measurement, BenchError> {
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
            crate::reference::interp::run(f, &logits, batch.classes, &t64).unwrap();
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
pub fn compile_time(src: &str, name: Option<&str>, classes: usize, tier: jit::Tier) -> Result<Duration, BenchError> {
    let start = Instant::now();
    let module = crate::syntax::parse(src).map_err(|d| BenchError::Parse(d.message))?;
    let name = name.or(module.outputs.first().map(|(n, _)| n.as_str())).unwrap_or("");
    let f = crate::passes::fuse::fuse(&module, name).ok_or_else(|| BenchError::NoLoss(name.to_string()))?;
    jit::compile_tier(&f, Spec { kind: jit::TargetKind::Labels, smoothing: 0.0, classes }, tier)?;
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

/// A loss to benchmark: its name, the text of its file, and the fused graph.
pub struct BenchLoss {
    pub name: String,
    pub source: String,
    /// The canonical key (`screen::key`): which function the loss is, whatever its text.
    pub key: String,
    pub fused: Fused,
}

/// What `lossc bench` runs: the losses on every shape and target form.
pub struct KernelBench<'a> {
    pub losses: &'a [BenchLoss],
    pub shapes: &'a [Shape],
    pub kinds: &'a [BenchTargets],
    /// Threads for the kernel (0: by batch size).
    pub threads: usize,
    /// JAX rounds: `None` without JAX, `Some(1)` for the table's column only, more for that
    /// many alternating rounds after the table.
    pub jax_rounds: Option<usize>,
    /// Only the compile times.
    pub compile_only: bool,
    /// The process's first compile of `losses[0]`, timed by the caller before anything else
    /// ran (the parser, the passes and Cranelift not yet paged in).
    pub cold: Option<Duration>,
}

/// JAX's median milliseconds per (loss, rows, classes, targets), from bench/jax_baseline.sh.
pub type JaxTimes = std::collections::HashMap<(String, usize, usize, String), f64>;

impl KernelBench<'_> {
    /// Runs the benchmark, reporting each line through `say` as it is measured.
    pub fn run(&self, say: &mut dyn FnMut(String)) -> Result<(), BenchError> {
        let jax_times = match self.jax_rounds {
            Some(_) if !self.compile_only => self.jax(say)?,
            _ => Default::default(),
        };
        let cpu = crate::backend::jit_rt::Helpers::for_host();
        let helpers = match (cpu.avx2, cpu.avx512_softmax) {
            (true, true) => "AVX2 + FMA, softmax and general passes AVX-512",
            (true, false) => "AVX2 + FMA",
            _ => "baseline (no AVX2 + FMA)",
        };
        say(format!("host: {}; CPU kernel row helpers: {helpers}", host()));
        say("compile (text -> callable kernel, uncached, labels spec; tier 2 compiles in the background):".into());
        let ms = |t: Duration| t.as_secs_f64() * 1e3;
        for (i, l) in self.losses.iter().enumerate() {
            let time = |tier| compile_time(&l.source, Some(&l.name), 100, tier);
            let first = match self.cold {
                Some(t) if i == 0 => t,
                _ => time(jit::Tier::Quick)?,
            };
            let (again, full) = (time(jit::Tier::Quick)?, time(jit::Tier::Full)?);
            say(format!(
                "  {:6} tier 1 {:7.3} ms first, {:7.3} ms again; tier 2 {:7.3} ms",
                l.name,
                ms(first),
                ms(again),
                ms(full)
            ));
        }
        if self.compile_only {
            return Ok(());
        }
        say(String::new());
        say(format!(
            "{:6} {:>11} {:7} {:>10} {:>8} {:>8} {:>11} {:>9} {:>10} {:>9}",
            "loss", "shape", "targets", "jit ms", "Gelem/s", "GB/s", "interp ms", "vs interp", "jax ms", "vs jax"
        ));
        for sh in self.shapes {
            let batch = BenchBatch::new(sh.rows, sh.classes, 1);
            for &kind in self.kinds {
                for l in self.losses {
                    let m = measure(&l.fused, &batch, kind, self.threads)?;
                    let secs = m.kernel.as_secs_f64();
                    let elems = (sh.rows * sh.classes) as f64;
                    let key = (l.name.clone(), sh.rows, sh.classes, kind.name().to_string());
                    let (jax_col, ratio_col) = match jax_times.get(&key) {
                        Some(ms) => (format!("{ms:10.3}"), format!("{:8.1}x", ms / (secs * 1e3))),
                        None => (format!("{:>10}", "-"), format!("{:>9}", "-")),
                    };
                    say(format!(
                        "{:6} {:>11} {:7} {:10.3} {:8.2} {:8.2} {:11.1} {:8.0}x {jax_col} {ratio_col}",
                        l.name,
                        sh.to_string(),
                        kind.name(),
                        secs * 1e3,
                        elems / secs / 1e9,
                        elems * kind.bytes_per_element() / secs / 1e9,
                        m.interp.as_secs_f64() * 1e3,
                        m.interp.as_secs_f64() / secs,
                    ));
                }
            }
        }
        if let Some(rounds @ 2..) = self.jax_rounds {
            self.rounds(rounds, jax_times, say)?;
        }
        Ok(())
    }

    /// More rounds of JAX then lossc on every configuration; reports each configuration's
    /// median times and the median and range of its per-round ratios (`first` is round 1's JAX).
    fn rounds(&self, rounds: usize, first: JaxTimes, say: &mut dyn FnMut(String)) -> Result<(), BenchError> {
        // (shape, kind, loss) -> [(jit ms, jax ms)] per round
        let mut runs: std::collections::BTreeMap<(usize, usize, usize), Vec<(f64, f64)>> = Default::default();
        for round in 0..rounds {
            say(format!("round {}/{rounds} (JAX, then lossc)", round + 1));
            let jax_times = if round == 0 { first.clone() } else { self.jax(say)? };
            for (si, sh) in self.shapes.iter().enumerate() {
                let batch = BenchBatch::new(sh.rows, sh.classes, 1);
                for (ki, &kind) in self.kinds.iter().enumerate() {
                    for (li, l) in self.losses.iter().enumerate() {
                        let t = kernel_time(&l.fused, &batch, kind, self.threads)?;
                        let key = (l.name.clone(), sh.rows, sh.classes, kind.name().to_string());
                        let jax_ms = jax_times.get(&key).copied().unwrap_or(f64::NAN);
                        runs.entry((si, ki, li)).or_default().push((t.as_secs_f64() * 1e3, jax_ms));
                    }
                }
            }
        }
        let median = |x: Vec<f64>| median_and_range(&x).0;
        say(String::new());
        say(format!(
            "{rounds} rounds, JAX and lossc alternating (medians; ratio: median and range of the rounds' ratios):"
        ));
        say(format!(
            "{:6} {:>11} {:7} {:>10} {:>10} {:>9} {:>17}",
            "loss", "shape", "targets", "jit ms", "jax ms", "vs jax", "range"
        ));
        for ((si, ki, li), v) in runs {
            let ratios: Vec<f64> = v.iter().map(|(jit, jax)| jax / jit).collect();
            let (ratio, lo, hi) = median_and_range(&ratios);
            say(format!(
                "{:6} {:>11} {:7} {:10.3} {:10.3} {:8.1}x {:>17}",
                self.losses[li].name,
                self.shapes[si].to_string(),
                self.kinds[ki].name(),
                median(v.iter().map(|r| r.0).collect()),
                median(v.iter().map(|r| r.1).collect()),
                ratio,
                format!("{lo:.1}x-{hi:.1}x"),
            ));
        }
        Ok(())
    }

    /// Runs bench/jax_baseline.sh on the same losses and shapes in this run.
    fn jax(&self, say: &mut dyn FnMut(String)) -> Result<JaxTimes, BenchError> {
        let script = jax_script()?;
        // JAX has the paper's losses, by name; a loss goes there only where it is the same
        // function as the repository's example of that name, so a ratio never compares two.
        let examples = script.parent().and_then(Path::parent).map(|repo| repo.join("examples"));
        let paper = |l: &BenchLoss| {
            let text = examples.as_ref().and_then(|d| std::fs::read_to_string(d.join(format!("{}.loss", l.name))).ok());
            let g = text.and_then(|t| crate::syntax::parse(&t).ok()).and_then(|g| g.extract(&l.name));
            g.is_some_and(|g| crate::search::screen::key(&g) == l.key)
        };
        let (names, others): (Vec<&BenchLoss>, Vec<&BenchLoss>) = self.losses.iter().partition(|l| paper(l));
        for l in others {
            say(format!("{0}: no JAX timing (JAX times the paper's losses as in examples/; {0} is not one)", l.name));
        }
        if names.is_empty() {
            return Ok(JaxTimes::new());
        }
        let names: Vec<&str> = names.iter().map(|l| l.name.as_str()).collect();
        let shapes: Vec<String> = self.shapes.iter().map(Shape::to_string).collect();
        let kinds: Vec<&str> = self.kinds.iter().map(|k| k.name()).collect();
        say(format!("running {} (one thread) ...", script.display()));
        let fail = |message: String| BenchError::Jax { script: script.clone(), message };
        let out = std::process::Command::new(&script)
            .args(["--losses", &names.join(","), "--shapes", &shapes.join(","), "--targets", &kinds.join(",")])
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            return Err(fail(format!("exit status {}", out.status)));
        }
        let rows: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("bad output: {e}")))?;
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
}

/// Where bench/jax_baseline.sh is: `$LOSSC_JAX_BASELINE`, else under the current directory,
/// else under an ancestor of the executable (`target/release/lossc` in a checkout).
fn jax_script() -> Result<PathBuf, BenchError> {
    if let Some(p) = std::env::var_os("LOSSC_JAX_BASELINE") {
        return Ok(PathBuf::from(p));
    }
    let rel = Path::new("bench/jax_baseline.sh");
    if rel.exists() {
        return Ok(rel.to_path_buf());
    }
    let exe = std::env::current_exe().ok();
    exe.iter().flat_map(|e| e.ancestors()).map(|d| d.join(rel)).find(|p| p.exists()).ok_or(BenchError::NoJaxScript)
}

/// `lossc gpu-bench`: each loss's CUDA kernel, both row layouts, against the device's copy
/// bandwidth.
pub fn gpu(losses: &[(String, Fused)], shapes: &[Shape], say: &mut dyn FnMut(String)) -> Result<(), BenchError> {
    use crate::backend::cuda::{Cuda, Layout};
    let gpu = Cuda::new()?;
    say(format!("device: {}", gpu.name));
    say("kernel ms: per call, 50 calls back to back; GB/s counts 4 bytes read and 4 written per element".into());
    say(format!(
        "{:6} {:>11} {:>9} {:>9} {:>8} {:>10} {:>8} {:>7}",
        "loss", "shape", "block ms", "warp ms", "GB/s", "copy GB/s", "of copy", "picks"
    ));
    for (name, fused) in losses {
        let start = Instant::now();
        let k = gpu.compile(fused)?;
        say(format!("{name}: NVRTC + module load {:.1} ms", start.elapsed().as_secs_f64() * 1e3));
        for sh in shapes {
            let (b, c) = (sh.rows, sh.classes);
            let batch = BenchBatch::new(b, c, 1);
            let (block, copy) = gpu.bench(Layout::Block, &k, &batch.logits, &batch.labels, c)?;
            let (warp, _) = gpu.bench(Layout::Warp, &k, &batch.logits, &batch.labels, c)?;
            let pick = Layout::for_classes(c);
            let ms = if pick == Layout::Block { block } else { warp };
            let gbs = 8.0 * (b * c) as f64 / (ms * 1e-3) / 1e9;
            say(format!(
                "{name:6} {:>11} {block:9.4} {warp:9.4} {gbs:8.1} {copy:10.1} {:7.0}% {:>7}",
                sh.to_string(),
                100.0 * gbs / copy,
                format!("{pick:?}").to_lowercase()
            ));
        }
    }
    Ok(())
}

/// What `lossc bench-train` measured: the whole population's throughput over the steps after
/// the warm-up, and (when asked) the device time of each kernel.
pub struct TrainThroughput {
    pub device: String,
    /// Training images per second, all models together.
    pub images_per_second: f64,
    /// Training steps per second, all models together.
    pub candidate_steps_per_second: f64,
    /// The surrogate's multiply-adds per training image (`ResNet9v2::train_macs_per_image`).
    pub macs_per_image: usize,
    /// Steps timed (per model) and steps before them, untimed.
    pub timed_steps: usize,
    pub warm_steps: usize,
    /// Seconds from the call to the first timed step: the loss kernels' compiles, the model's
    /// set-up and the warm-up steps.
    pub setup_seconds: f64,
    /// With `profile`: a second run's device time per kernel over its timed steps.
    pub profile: Option<TrainProfile>,
    /// On CUDA: the steps recorded, replayed as graphs and left their recording, and why
    /// steps were not replayed, if they were not.
    pub graphs: Option<(lossc_runtime::replay::Counts, Option<String>)>,
}

/// Device time per kernel over `steps` training steps, each launch waited for (none when the
/// run has fewer than two steps after its warm-up).
pub struct TrainProfile {
    pub steps: usize,
    pub kernels: Vec<lossc_runtime::profile::KernelTime>,
    /// The profiled steps' wall time: the kernels, the waits and the host's work.
    pub wall_seconds: f64,
}

/// Steps a training benchmark leaves untimed: the first ones load modules and fill the
/// device's allocation pools.
fn warm_steps(steps: usize) -> usize {
    (steps / 4).min(3)
}

/// `lossc bench-train`: throughput of `population` surrogates (width 1) trained with CE on
/// random 32x32 images with augmentation `aug`, at `batch` for `steps` steps, on `device` (the
/// CPU on `threads` threads, one model after another). The clock starts after the warm-up
/// steps (`warm_steps`), at an evaluation that waits for the device. With `profile`, a second
/// run of the same training times each kernel (on the GPU devices).
pub fn train_throughput(
    device: &str,
    aug: &str,
    population: usize,
    threads: usize,
    batch: usize,
    steps: usize,
    profile: bool,
) -> Result<TrainThroughput, BenchError> {
    use lossc_runtime::data::Dataset;
    use lossc_runtime::profile;
    let warm = warm_steps(steps);
    let spec = crate::train::TrainSpec {
        batch,
        steps,
        eval_every: usize::MAX,
        // An evaluation at the end of the warm-up waits for the device; no model stops there.
        gate_step: Some(if warm > 0 { warm } else { usize::MAX }),
        gate_accuracy: 0.0,
        device: device.to_string(),
        aug: aug.to_string(),
        ..Default::default()
    };
    spec.config()?;
    lossc_runtime::layers::set_threads(threads.max(1));
    let mut rng = Rng::new(1);
    let n = 4 * batch;
    let data = Dataset {
        images: (0..n * 1024).map(|_| rng.f64() as f32).collect(),
        labels: (0..n).map(|_| rng.below(10) as u32).collect(),
        shape: (1, 32, 32),
        classes: 10,
    };
    let splits = (data.clone(), data.slice(0, 1), data.slice(0, 1));
    let g = crate::syntax::parse("loss ce = -y * ln(p);").expect("valid");
    let graphs = vec![&g; population.max(1)];
    // One training run: the CPU trains its models one after another, each adding its own
    // timed span; with `profiled`, the kernels of the timed steps but the last (whose
    // evaluation is not a training step's work).
    let run = |profiled: bool| -> Result<Timed, BenchError> {
        use crate::train::TrainError;
        let start = Instant::now();
        let mut t = Timed { device: String::new(), setup: Duration::ZERO, seconds: 0.0, steps: 0, profile: None };
        let mut mark = start;
        if warm == 0 && profiled {
            profile::start();
        }
        let mut progress = |p: &lossc_runtime::train::Progress| {
            if p.step == warm && warm > 0 {
                mark = Instant::now();
                if t.setup.is_zero() {
                    t.setup = mark - start;
                }
                if profiled {
                    profile::start();
                }
            }
            if profiled && p.step + 1 == steps && p.step > warm {
                let wall_seconds = mark.elapsed().as_secs_f64();
                t.profile = Some(TrainProfile { steps: p.step - warm, kernels: profile::stop(), wall_seconds });
            }
            if p.step == steps {
                t.seconds += mark.elapsed().as_secs_f64();
                t.steps += steps - warm;
                // Without warm-up steps the CPU's next model is timed from here.
                mark = Instant::now();
            }
        };
        let all = crate::train::train_population(&graphs, &spec, &splits, &mut progress).map_err(|e| match e {
            TrainError::Spec(e) => BenchError::Spec(e),
            TrainError::Device(e) => BenchError::Device(e),
            TrainError::Cuda(e) => BenchError::CudaDevice(e),
            TrainError::Parse(_) | TrainError::NoLoss => unreachable!("CE parses"),
        })?;
        t.device = all[0].device.clone();
        // The CPU's models train in turn (their steps add up); a GPU's all at once.
        if device != "cpu" {
            t.steps *= graphs.len();
        }
        Ok(t)
    };
    lossc_runtime::cuda::take_graph_totals();
    let t = run(false)?;
    let graphs = (device == "cuda").then(lossc_runtime::cuda::take_graph_totals);
    let profile = if profile { run(true)?.profile } else { None };
    Ok(TrainThroughput {
        device: t.device,
        images_per_second: (t.steps * batch) as f64 / t.seconds,
        candidate_steps_per_second: t.steps as f64 / t.seconds,
        macs_per_image: lossc_runtime::model::ResNet9v2::new(0, data.shape, data.classes, 1).train_macs_per_image(),
        timed_steps: steps - warm,
        warm_steps: warm,
        setup_seconds: t.setup.as_secs_f64(),
        profile,
        graphs,
    })
}

/// One benchmark training: its device, the time before its first timed step, the seconds and
/// steps (all models) timed, and its profile if it had one.
struct Timed {
    device: String,
    setup: Duration,
    seconds: f64,
    steps: usize,
    profile: Option<TrainProfile>,
}
