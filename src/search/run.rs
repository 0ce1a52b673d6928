//! Running searches and samples against a store: the coordinator (which replays the
//! deterministic evolution and waits for fitness values), the workers (which claim training
//! jobs and run them), and writing the best losses back as `.loss` files.

use super::evolution::{Evolution, Fitness, Member, Settings, Verdict};
use super::genome::Genome;
use super::screen;
use super::store::{CandidateRow, DEFAULT_LEASE, Db, Job, Lease, Outcome, Store, StoreError, worker_id};
use crate::ir::{Graph, print};
use crate::train::{DataError, SpecError, Splits, TrainError, TrainSpec, load_data, train_population_from};
use lossc_runtime::train::{Checkpoint, Halt, Metrics, Outcome as Trained, Paused, Start};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a long command reports as it goes.
#[derive(Clone, Debug)]
pub struct Progress {
    /// "sample", "initial" or "evolve".
    pub phase: &'static str,
    pub done: usize,
    pub total: usize,
    pub best: f64,
}

/// A loss as `.loss` text with one output, `name`.
pub fn loss_text(name: &str, g: &Graph) -> String {
    let mut g = g.clone();
    g.outputs.truncate(1);
    g.outputs[0].0 = name.to_string();
    print::to_text(&g)
}

/// Data sets loaded once per process, shared by the workers.
fn data(spec: &TrainSpec) -> Result<Arc<Splits>, DataError> {
    /// By data path and validation size.
    type DataCache = Mutex<HashMap<(String, usize), Arc<Splits>>>;
    static CACHE: OnceLock<DataCache> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().expect("data cache");
    let k = (spec.data.clone(), spec.val);
    if let Some(d) = cache.get(&k) {
        return Ok(d.clone());
    }
    let d = Arc::new(load_data(&spec.data, spec.val)?);
    cache.insert(k, d.clone());
    Ok(d)
}

/// Loads the data of `specs` (once a process: the workers here reuse it) and, where `workers`
/// train here, opens their device, before a store is touched: a wrong `--data`, or a GPU
/// device this machine lacks, is then an error that leaves no run or jobs behind (a run
/// remembers its data and device, and its jobs would wait for whoever can train them).
pub(crate) fn check_specs(specs: &[TrainSpec], workers: usize) -> Result<(), RunError> {
    for spec in specs {
        data(spec)?;
    }
    let mut devices: Vec<&str> = specs.iter().map(|s| s.device.as_str()).collect();
    devices.dedup();
    for device in devices.into_iter().filter(|_| workers > 0) {
        open_once(device)?;
    }
    Ok(())
}

/// Opens `device` once a process (then it is taken as given: a device that fails later fails
/// the trainings under way, which count as their attempts).
fn open_once(device: &str) -> Result<(), RunError> {
    static OPENED: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    // Held while a device opens, so that a process's workers open it one at a time, once.
    let mut opened = OPENED.get_or_init(Default::default).lock().expect("opened devices");
    if !opened.iter().any(|d| d == device) {
        crate::train::check_device(device).map_err(RunError::Train)?;
        opened.push(device.to_string());
    }
    Ok(())
}

/// Whether this machine can train jobs of `spec`: its data reads here and its device opens.
fn trainable_here(spec: &TrainSpec) -> Result<(), RunError> {
    data(spec)?;
    open_once(&spec.device)
}

/// A claimed job on its way through a worker: its loss, and its model once paused.
struct Running {
    job: Job,
    graph: Graph,
    paused: Option<Paused>,
}

/// Models a worker paused at the gate, waiting to go on as one population.
struct Parked {
    at: Checkpoint,
    models: Vec<Running>,
}

/// A training that ended before it started: fitness 0, with the reason, as an early stop.
fn failed(why: String) -> Metrics {
    Metrics { stopped: Some(why), ..Default::default() }
}

/// Whether this process's workers print a line for each result they store: `lossc worker`,
/// which trains for hours with no progress bar to show what goes on.
static SAY_RESULTS: AtomicBool = AtomicBool::new(false);

/// Stores a job's result if `worker` still holds it ([`Store::complete`]), and says so where
/// [`SAY_RESULTS`] asks.
fn store_result(store: &Store, job: &Job, worker: &str, m: &Metrics, seconds: f64) -> Result<bool, StoreError> {
    let stored = store.complete(job, worker, m, seconds)?;
    if stored && SAY_RESULTS.load(Ordering::Relaxed) {
        // The loss's line reads `loss NAME = ...` (after any `let` lines).
        let name = job.text.lines().find_map(|l| l.trim().strip_prefix("loss ")?.split_whitespace().next());
        let name = name.unwrap_or("?");
        let how = m.stopped.as_ref().map_or(String::new(), |why| format!("; stopped: {why}"));
        eprintln!("job {} ({name}): fitness {:.4}, {} steps in {seconds:.1} s{how}", job.id, m.fitness, m.steps);
    }
    Ok(stored)
}

/// The jobs whose loss parses, ready to train; the others are stored as failed (the count).
fn parse_jobs(store: &Store, jobs: &[Job], worker: &str) -> Result<(usize, Vec<Running>), RunError> {
    let (mut stored, mut items) = (0, Vec::new());
    for job in jobs {
        let why = match crate::syntax::parse(&job.text) {
            Ok(graph) if !graph.outputs.is_empty() => {
                items.push(Running { job: job.clone(), graph, paused: None });
                continue;
            }
            Ok(_) => TrainError::NoLoss.to_string(),
            Err(d) => TrainError::Parse(d.message).to_string(),
        };
        stored += store_result(store, job, worker, &failed(why), 0.0)? as usize;
    }
    Ok((stored, items))
}

/// Trains `items` (jobs of one spec; paused at `at` if given, else fresh) as one population up
/// to step `pause` (or the end), and stores the result of each job that ended: all steps, an
/// early stop, or a loss kernel that does not build (fitness 0; the others train without it).
/// Returns how many results were stored, the models still running at the pause, and where
/// they paused. Once `abandon` is set the training ends; the jobs of the models abandoned stay
/// claimed, for [`work`] to put back.
fn train_phase(
    store: &Store,
    worker: &str,
    mut items: Vec<Running>,
    at: Option<&Checkpoint>,
    pause: Option<usize>,
    abandon: &AtomicBool,
) -> Result<(usize, Vec<Running>, Option<Checkpoint>), RunError> {
    use crate::error::{Blame, Classify};
    let mut stored = 0;
    let Some(first) = items.first() else { return Ok((0, Vec::new(), None)) };
    let spec = first.job.spec.clone();
    assert!(items.iter().all(|r| r.job.spec == spec), "a population shares its spec");
    let d = data(&spec)?;
    while !items.is_empty() {
        let refs: Vec<&Graph> = items.iter().map(|r| &r.graph).collect();
        let from = match at {
            Some(at) => Start::Resume(at, items.iter().map(|r| r.paused.clone().expect("paused at `at`")).collect()),
            None => Start::Fresh,
        };
        let halt = Halt { pause, abandon: Some(abandon) };
        match train_population_from(&refs, &spec, &d, from, halt, &mut |_| {}) {
            Ok((outcomes, checkpoint)) => {
                let mut paused = Vec::new();
                for (mut r, o) in items.into_iter().zip(outcomes) {
                    match o {
                        Trained::Done(m) => stored += store_result(store, &r.job, worker, &m, m.wall_seconds)? as usize,
                        Trained::Paused(p) => {
                            r.paused = Some(p);
                            paused.push(r);
                        }
                        Trained::Abandoned => {}
                    }
                }
                return Ok((stored, paused, checkpoint));
            }
            Err(e) if e.failed_model().is_some() => {
                let r = items.remove(e.failed_model().expect("checked"));
                stored += store_result(store, &r.job, worker, &failed(e.to_string()), 0.0)? as usize;
            }
            Err(e) if e.blame() == Blame::Failure => return Err(RunError::Train(e)),
            Err(e) => {
                for r in &items {
                    stored += store_result(store, &r.job, worker, &failed(e.to_string()), 0.0)? as usize;
                }
                break;
            }
        }
    }
    Ok((stored, Vec::new(), None))
}

/// Where a worker pauses a population of `jobs`: at the gate, when it trains several jobs at
/// once on a GPU device and the gate can stop some (their slots would idle for the rest of
/// the steps; the survivors of several populations go on together instead).
fn gate_pause(jobs: &[Job]) -> Option<usize> {
    let spec = &jobs.first()?.spec;
    let cfg = spec.config().ok()?;
    let several = models_per_worker(spec) > 1;
    (several && cfg.gate_accuracy > 0.0 && cfg.gate_step < cfg.steps).then_some(cfg.gate_step)
}

/// Trains claimed `jobs` (one spec): straight through, or to the gate, parking the survivors
/// with those parked before; parked models go on, K at a time, once K wait (unless `abandon`
/// is set). Returns how many results were stored.
fn train_claimed(
    store: &Store,
    worker: &str,
    jobs: &[Job],
    parked: &mut Option<Parked>,
    abandon: &AtomicBool,
) -> Result<usize, RunError> {
    let (mut stored, items) = parse_jobs(store, jobs, worker)?;
    let Some(gate) = gate_pause(jobs) else {
        return Ok(stored + train_phase(store, worker, items, None, None, abandon)?.0);
    };
    let (n, survivors, at) = train_phase(store, worker, items, None, Some(gate), abandon)?;
    stored += n;
    if let Some(at) = at.filter(|_| !survivors.is_empty()) {
        let p = parked.get_or_insert_with(|| Parked { at: at.clone(), models: Vec::new() });
        assert_eq!(p.at, at, "parked models of one spec share their checkpoint");
        p.models.extend(survivors);
    }
    let k = MODELS.load(Ordering::Relaxed);
    while parked.as_ref().is_some_and(|p| p.models.len() >= k) && !abandon.load(Ordering::SeqCst) {
        let p = parked.as_mut().expect("checked");
        let rest = p.models.split_off(k);
        let group = std::mem::replace(&mut p.models, rest);
        let at = p.at.clone();
        if p.models.is_empty() {
            *parked = None;
        }
        stored += train_phase(store, worker, group, Some(&at), None, abandon)?.0;
    }
    Ok(stored)
}

/// Trains every parked model to the end, K at a time, until `abandon` is set.
fn finish_parked(
    store: &Store,
    worker: &str,
    parked: &mut Option<Parked>,
    abandon: &AtomicBool,
) -> Result<usize, RunError> {
    let Some(mut p) = parked.take() else { return Ok(0) };
    let k = MODELS.load(Ordering::Relaxed);
    let mut stored = 0;
    while !p.models.is_empty() && !abandon.load(Ordering::SeqCst) {
        let rest = p.models.split_off(k.min(p.models.len()));
        let group = std::mem::replace(&mut p.models, rest);
        stored += train_phase(store, worker, group, Some(&p.at), None, abandon)?.0;
    }
    Ok(stored)
}

/// How long a worker's claim holds a job without a heartbeat, in milliseconds.
static LEASE_MS: AtomicU64 = AtomicU64::new((DEFAULT_LEASE * 1000.0) as u64);

/// Sets how long the claims of this process's workers hold a job without a heartbeat (a
/// process-wide setting, like the training thread count). A dead worker's job returns to the
/// queue this long after its last heartbeat; heartbeats come five times per lease.
pub fn set_lease(seconds: f64) {
    LEASE_MS.store((seconds * 1000.0).round().max(1.0) as u64, Ordering::Relaxed);
}

fn lease() -> f64 {
    LEASE_MS.load(Ordering::Relaxed) as f64 / 1000.0
}

/// Set once the user has asked this process to stop (Ctrl-C): searches, samples, evaluations
/// and workers then stop as a search does at its time limit.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Asks the long commands of this process to stop: the trainings under way end after their
/// current step, their jobs go back to the queue uncounted, and what finished is kept.
/// Returns whether it had been asked before. Async-signal-safe (one atomic swap), so a signal
/// handler may call it.
pub fn interrupt() -> bool {
    INTERRUPTED.swap(true, Ordering::SeqCst)
}

/// Whether [`interrupt`] has been called.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// How many jobs a worker of this process trains at once on a GPU device.
static MODELS: AtomicUsize = AtomicUsize::new(1);

/// Sets how many jobs with one training spec a worker of this process claims and trains as
/// one population on a GPU device (`wgpu`, `cuda`); on the CPU a worker claims one at a time.
/// Results do not depend on it (each model of a population trains as it would alone).
pub fn set_models(k: usize) {
    MODELS.store(k.max(1), Ordering::Relaxed);
}

/// How many jobs of `spec` a worker of this process trains at once: [`set_models`]'s on a GPU
/// device, one on the CPU.
pub fn models_per_worker(spec: &TrainSpec) -> usize {
    if spec.device == "cpu" { 1 } else { MODELS.load(Ordering::Relaxed) }
}

/// The jobs a worker takes together: `first`, and as many more pending jobs with its spec as
/// the process's setting allows where its device trains a population.
fn claim_population(store: &Store, worker: &str, lease: f64, first: Job) -> Result<Vec<Job>, StoreError> {
    let k = models_per_worker(&first.spec);
    let mut jobs = vec![first];
    while jobs.len() < k {
        match store.claim_like(worker, lease, &jobs[0])? {
            Some(j) => jobs.push(j),
            None => break,
        }
    }
    Ok(jobs)
}

/// Renews the leases of the jobs its worker holds, on a connection of its own, while the
/// worker trains; stops when dropped (a worker that dies or panics stops renewing, and its
/// jobs return to the queue when the lease runs out).
struct Heartbeat {
    held: Arc<Mutex<Vec<Job>>>,
    /// The claims (job id, attempt) found lost: never renewed again.
    lost: Arc<Mutex<Vec<(i64, i64)>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Heartbeat {
    fn start(db: &Db, worker: &str, lease: f64) -> Result<Heartbeat, RunError> {
        let store = Store::open(db)?;
        let held: Arc<Mutex<Vec<Job>>> = Arc::default();
        let lost: Arc<Mutex<Vec<(i64, i64)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (h, l, s, worker) = (held.clone(), lost.clone(), stop.clone(), worker.to_string());
        let every = Duration::from_secs_f64(lease / 5.0);
        let handle = std::thread::spawn(move || {
            let mut last = Instant::now();
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20).min(every));
                if last.elapsed() < every {
                    continue;
                }
                last = Instant::now();
                // Held while renewing, so that once `hold` returns no report on a job it let
                // go of is under way (a job just given back would read as lost).
                let mut held = h.lock().expect("held jobs");
                if held.is_empty() {
                    continue;
                }
                let leases = match store.renew(&held, &worker, lease) {
                    Ok(leases) => leases,
                    Err(e) => {
                        eprintln!("worker {worker}: cannot renew its leases: {e}");
                        continue;
                    }
                };
                let mut leases = leases.into_iter();
                held.retain(|job| match leases.next() {
                    Some(Lease::Renewed) => true,
                    // Stored while the population it trained in goes on.
                    Some(Lease::Done) => false,
                    Some(Lease::Lost) | None => {
                        eprintln!("worker {worker}: lost the lease of job {}; its result will not be stored", job.id);
                        l.lock().expect("lost claims").push((job.id, job.attempt));
                        false
                    }
                });
            }
        });
        Ok(Heartbeat { held, lost, stop, handle: Some(handle) })
    }

    /// Reports on `jobs` from now on (and no others), except claims already found lost; waits
    /// for a renewal under way. (The renewal itself reaches every job the store says this
    /// worker runs: the jobs it let go of are done or pending, and out of its reach.)
    fn hold(&self, jobs: &[Job]) {
        let mut held = self.held.lock().expect("held jobs");
        let lost = self.lost.lock().expect("lost claims");
        *held = jobs.iter().filter(|j| !lost.contains(&(j.id, j.attempt))).cloned().collect();
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A worker thread's stack: parsing a job's text recurses as deep as the expression nests
/// (at most `syntax::ast::MAX_DEPTH`), which the default 2 MiB does not always cover in an
/// unoptimised build. Only the pages used are committed.
const WORKER_STACK: usize = 64 << 20;

/// Worker threads on one store.
pub struct Workers {
    stop: Arc<AtomicBool>,
    abandon: Arc<AtomicBool>,
    handles: Vec<JoinHandle<Result<usize, RunError>>>,
}

impl Workers {
    /// Starts `n` workers that claim jobs from the store at `db` until stopped. With none, says
    /// who trains: a coordinator alone would wait in silence until a `lossc worker` stores a
    /// result.
    pub fn spawn(db: &Db, n: usize) -> Workers {
        let stop = Arc::new(AtomicBool::new(false));
        let abandon = Arc::new(AtomicBool::new(false));
        if n == 0 {
            eprintln!("no workers here (--workers 0): the trainings wait for `lossc worker --db {db}` processes");
        } else {
            // Parallelism comes from the workers; each trains on one thread, which also keeps
            // results independent of the worker count.
            lossc_runtime::layers::set_threads(1);
        }
        let declined = Arc::new(Declined::default());
        let handles = (0..n)
            .map(|i| {
                let (db, stop, abandon, declined) = (db.clone(), stop.clone(), abandon.clone(), declined.clone());
                std::thread::Builder::new()
                    .stack_size(WORKER_STACK)
                    .spawn(move || work(&db, &worker_id(i), &stop, &abandon, None, &declined))
                    .expect("a worker thread starts")
            })
            .collect();
        Workers { stop, abandon, handles }
    }

    /// The first worker error, if any worker has failed.
    pub fn failed(&mut self) -> Option<RunError> {
        let i = self.handles.iter().position(|h| h.is_finished())?;
        match self.handles.remove(i).join() {
            Ok(Err(e)) => Some(RunError::Worker(Box::new(e))),
            Ok(Ok(_)) => None,
            Err(_) => Some(RunError::Panicked),
        }
    }

    /// Stops the workers after their current jobs; returns the jobs they ran.
    pub fn stop(self) -> Result<usize, RunError> {
        self.stop.store(true, Ordering::SeqCst);
        self.join()
    }

    /// Stops the workers now: the trainings under way end after their current step and their
    /// jobs, parked ones too, go back to the queue without counting the attempt. Returns the
    /// jobs they ran to the end.
    pub fn abandon(self) -> Result<usize, RunError> {
        self.abandon.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        self.join()
    }

    fn join(self) -> Result<usize, RunError> {
        let mut n = 0;
        for h in self.handles {
            n += h.join().map_err(|_| RunError::Panicked)?.map_err(|e| RunError::Worker(Box::new(e)))?;
        }
        Ok(n)
    }
}

/// The jobs a process's workers gave back because this machine cannot train them. Each worker
/// passes over their specs from then on, and only the first to meet a spec says so: a
/// `lossc worker --workers 8` on a machine without a GPU prints one line for a GPU search's
/// jobs, not eight.
#[derive(Default)]
struct Declined(Mutex<Vec<(i64, TrainSpec)>>);

impl Declined {
    fn ids(&self) -> Vec<i64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(id, _)| *id).collect()
    }

    /// Notes a declined job; true if no job of its spec was declined here before.
    fn add(&self, job: &Job) -> bool {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let first = !all.iter().any(|(_, spec)| *spec == job.spec);
        all.push((job.id, job.spec.clone()));
        first
    }

    fn any(&self) -> bool {
        !self.0.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }
}

/// A worker's loop: claim, train, store; stop when asked (after the jobs under way; at once
/// if `abandon` is set too, putting its jobs back), or after `idle` without jobs. A job this
/// machine cannot train (its device does not open here, or its data cannot be read here) goes
/// back to the queue, the attempt not counted, and the worker passes over the jobs of its
/// spec from then on, as do the other workers of its process (`declined`): three workers on
/// a machine without a GPU must not fail a GPU job for good, and a store shared by a GPU
/// search and a CPU search keeps the CPU machines' workers busy with the CPU jobs. A job whose
/// training fails goes back counted, and the worker stops with the error. Returns the jobs
/// it trained to the end.
fn work(
    db: &Db,
    id: &str,
    stop: &AtomicBool,
    abandon: &AtomicBool,
    idle: Option<Duration>,
    declined: &Declined,
) -> Result<usize, RunError> {
    let store = Store::open(db)?;
    let lease = lease();
    let beat = Heartbeat::start(db, id, lease)?;
    let mut ran = 0;
    let mut idle_since = Instant::now();
    // Models paused at the gate, waiting for enough others of their spec to go on with.
    let mut parked: Option<Parked> = None;
    let parked_jobs = |p: &Option<Parked>| -> Vec<Job> {
        p.as_ref().map_or_else(Vec::new, |p| p.models.iter().map(|r| r.job.clone()).collect())
    };
    // Gives back every job this worker holds after a failure.
    let give_back = |jobs: &[Job], e: &RunError| -> Result<(), RunError> {
        for job in jobs {
            store.release(job, id, &e.to_string())?;
        }
        Ok(())
    };
    while !stop.load(Ordering::SeqCst) {
        // With models parked, only jobs of their spec can join them.
        let claimed = match parked.as_ref().and_then(|p| p.models.first()) {
            Some(r) => {
                store.expire()?;
                store.claim_like(id, lease, &r.job)?
            }
            None => store.claim_unlike(id, lease, &declined.ids())?,
        };
        let held = parked_jobs(&parked);
        let done = match claimed {
            Some(first) => {
                beat.hold(&[&held[..], std::slice::from_ref(&first)].concat());
                // (With models parked, the job has their spec, which trains here.)
                if let Err(e) = trainable_here(&first.spec) {
                    beat.hold(&held);
                    store.decline(&first, id, &format!("worker {id} cannot train it: {e}"))?;
                    if declined.add(&first) {
                        eprintln!(
                            "worker {id}: this machine cannot train job {} (device {}): {e}; it is pending again for a worker that can, this attempt not counted",
                            first.id, first.spec.device
                        );
                    }
                    continue;
                }
                let jobs = claim_population(&store, id, lease, first)?;
                beat.hold(&[&held[..], &jobs[..]].concat());
                train_claimed(&store, id, &jobs, &mut parked, abandon).map_err(|e| (e, jobs))
            }
            // The queue has nothing for the parked models: they go on without more company.
            None if !held.is_empty() => finish_parked(&store, id, &mut parked, abandon).map_err(|e| (e, Vec::new())),
            None => {
                if idle.is_some_and(|t| idle_since.elapsed() >= t) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        match done {
            Ok(n) => ran += n,
            Err((e, jobs)) => {
                give_back(&[held, jobs].concat(), &e)?;
                return Err(e);
            }
        }
        beat.hold(&parked_jobs(&parked));
        idle_since = Instant::now();
    }
    if abandon.load(Ordering::SeqCst) {
        // Once the heartbeat no longer renews them, every job this worker holds goes back.
        drop(beat);
        store.put_back(id)?;
        return Ok(ran);
    }
    // Asked to stop: parked models still finish (their jobs are held).
    let held = parked_jobs(&parked);
    match finish_parked(&store, id, &mut parked, abandon) {
        Ok(n) => ran += n,
        Err(e) => {
            give_back(&held, &e)?;
            return Err(e);
        }
    }
    Ok(ran)
}

/// `lossc worker`: `workers` threads claiming jobs from the store at `db` until none has come
/// for `idle`, or until interrupted; returns the jobs they ran. Workers that found only jobs
/// this machine cannot train (and were not interrupted) end with an error, having said why
/// of each.
pub fn work_here(db: &Db, workers: usize, idle: Duration) -> Result<usize, RunError> {
    if let Db::Sqlite(path) = db {
        wait_for_file(path, idle)?;
    }
    let store = Store::open(db)?;
    store.check_integrity()?;
    store.release_dead_here()?;
    drop(store);
    lossc_runtime::layers::set_threads(1);
    eprintln!("{workers} worker(s) on {db}, until no job has come for {} s", idle.as_secs_f64());
    SAY_RESULTS.store(true, Ordering::Relaxed);
    let declined = Declined::default();
    let ran: Vec<Result<usize, RunError>> = std::thread::scope(|s| {
        // Only an interruption stops these workers before their idle time, and it abandons.
        let declined = &declined;
        let spawn = |i| {
            let b = std::thread::Builder::new().stack_size(WORKER_STACK);
            let work = move || work(db, &worker_id(i), &INTERRUPTED, &INTERRUPTED, Some(idle), declined);
            b.spawn_scoped(s, work).expect("a worker thread starts")
        };
        let hs: Vec<_> = (0..workers).map(spawn).collect();
        hs.into_iter().map(|h| h.join().unwrap_or(Err(RunError::Panicked))).collect()
    });
    let mut all = 0;
    for w in ran {
        all += w?;
    }
    if all == 0 && declined.any() && !interrupted() {
        return Err(RunError::NothingHere);
    }
    Ok(all)
}

/// Waits up to `idle` for a store file that a search (started at the same time, say) has not
/// made yet, rather than make it: a mistyped path is then an error, not an empty store left
/// behind.
fn wait_for_file(path: &Path, idle: Duration) -> Result<(), RunError> {
    let start = Instant::now();
    if !path.exists() {
        eprintln!("waiting up to {} s for a store at {}", idle.as_secs_f64(), path.display());
    }
    while !path.exists() {
        if interrupted() {
            return Err(RunError::Interrupted);
        }
        if start.elapsed() >= idle {
            return Err(StoreError::Missing(path.display().to_string()).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The evolution's settings a stored search was started with, if the store holds the run.
pub fn stored_evolution(db: &Db, run: &str) -> Option<Settings> {
    let (_, v) = Store::open_existing(db).ok()?.run_settings(run).ok().flatten()?;
    serde_json::from_value(v["evolution"].clone()).ok()
}

/// Fitness from the store: enqueue what is missing, wait for the workers, read it back, until
/// the deadline if there is one.
struct StoreFitness<'a> {
    store: &'a Store,
    run: String,
    spec: TrainSpec,
    workers: &'a mut Workers,
    phase: &'static str,
    done: usize,
    total: usize,
    best: f64,
    progress: &'a mut dyn FnMut(&Progress),
    error: Option<RunError>,
    deadline: Option<Instant>,
    /// Why the waiting stopped, if it did: the fitness values given since then are not real.
    stopped: Option<Stop>,
}

impl StoreFitness<'_> {
    /// The fitness of each key (enqueued by `submit`), once the workers have stored it; None
    /// if the deadline passes or the process is interrupted first (`stopped` says which).
    fn wait(&mut self, keys: &[String]) -> Result<Option<Vec<f64>>, RunError> {
        let mut out: Vec<Option<f64>> = vec![None; keys.len()];
        let mut last_expiry = Instant::now();
        loop {
            for (i, key) in keys.iter().enumerate() {
                if out[i].is_none()
                    && let Some(r) = self.store.settled(key, &self.spec)?
                {
                    out[i] = Some(r.fitness);
                    self.done += 1;
                    self.best = self.best.max(r.fitness);
                    (self.progress)(&Progress {
                        phase: self.phase,
                        done: self.done,
                        total: self.total,
                        best: self.best,
                    });
                }
            }
            if out.iter().all(Option::is_some) {
                return Ok(Some(out.into_iter().flatten().collect()));
            }
            if let Some(e) = self.workers.failed() {
                return Err(e);
            }
            if interrupted() {
                self.stopped = Some(Stop::Interrupted);
                return Ok(None);
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.stopped = Some(Stop::TimeLimit);
                return Ok(None);
            }
            // Workers put expired leases back when they claim; the coordinator does too, in
            // case every worker is gone.
            if last_expiry.elapsed() > Duration::from_secs(1) {
                self.store.expire()?;
                last_expiry = Instant::now();
            }
            // Trainings take seconds: 50 ms costs nothing in latency and keeps a database
            // server's load from the coordinator small.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Fitness for StoreFitness<'_> {
    fn score(&mut self, candidates: &[&Member]) -> Vec<f64> {
        if self.error.is_some() || self.stopped.is_some() {
            return vec![0.0; candidates.len()];
        }
        let keys: Vec<String> = candidates.iter().map(|m| m.screened.key.clone()).collect();
        match self.wait(&keys) {
            Ok(Some(f)) => f,
            Ok(None) => vec![0.0; candidates.len()],
            Err(e) => {
                self.error = Some(e);
                vec![0.0; candidates.len()]
            }
        }
    }

    fn submit(&mut self, candidates: &[&Member]) {
        if self.error.is_some() || self.stopped.is_some() {
            return;
        }
        // Each candidate's job: its key and its loss as text.
        for m in candidates {
            let text = loss_text(&format!("c{}", m.seq), &m.screened.graph);
            if let Err(e) = self.store.enqueue(&m.screened.key, &self.spec, &text) {
                self.error = Some(e.into());
                return;
            }
        }
    }

    fn observe(&mut self, seq: usize, genome: &Genome, graph: &Graph, verdict: &Verdict) {
        if self.error.is_some() {
            return;
        }
        let row = candidate_row(seq, genome, graph, verdict);
        if let Err(e) = self.store.record_candidate(&self.run, &row) {
            self.error = Some(e.into());
        }
    }
}

/// How the store records a generated candidate: accepted ones with their signed, simplified
/// text, key and phenotype; rejected ones as generated.
fn candidate_row(seq: usize, genome: &Genome, graph: &Graph, verdict: &Verdict) -> CandidateRow {
    let name = format!("c{seq}");
    let (key, sign, phenotype, text) = match verdict {
        Verdict::Accepted(s) => {
            (Some(s.key.clone()), Some(s.sign), Some(s.phenotype.clone()), loss_text(&name, &s.graph))
        }
        _ => (None, None, None, loss_text(&name, graph)),
    };
    CandidateRow { seq, genome: Some(genome.encode()), text, key, verdict: verdict.name(), sign, phenotype }
}

/// Why a search, sample, evaluation or worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a worker failed: {0}")]
    Worker(Box<RunError>),
    #[error("a worker panicked")]
    Panicked,
    #[error(
        "this machine can train none of the jobs its workers found (why: above); they are pending for workers that can"
    )]
    NothingHere,
    #[error(transparent)]
    Train(TrainError),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{0} exists and was not written by lossc; not overwriting it")]
    NotOurs(PathBuf),
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("--baseline {0}: no loss of that name is evaluated")]
    NoBaseline(String),
    #[error("interrupted: the trainings under way went back to the queue; the same command goes on from there")]
    Interrupted,
}

impl crate::error::Classify for RunError {
    fn blame(&self) -> crate::error::Blame {
        use crate::error::Blame;
        match self {
            RunError::Spec(_)
            | RunError::Data(_)
            | RunError::NotOurs(_)
            | RunError::NotADirectory(_)
            | RunError::NoBaseline(_) => Blame::Input,
            RunError::Store(e) => e.blame(),
            RunError::Worker(e) => e.blame(),
            RunError::Train(e) => e.blame(),
            RunError::Panicked | RunError::NothingHere | RunError::Write { .. } | RunError::Interrupted => {
                Blame::Failure
            }
        }
    }
}

/// Everything a run checks before any training: its specs, the data and the device of its
/// `workers` here ([`check_specs`]: they fail here, before the store records anything), the
/// stored settings (recorded, or compared when resuming) and stale claims. Returns the store
/// and whether the run is resumed.
fn open_run(
    db: &Db,
    run: &str,
    kind: &str,
    settings: &impl serde::Serialize,
    specs: &[TrainSpec],
    workers: usize,
) -> Result<(Store, bool), RunError> {
    for spec in specs {
        spec.config()?;
    }
    check_specs(specs, workers)?;
    let store = Store::open(db)?;
    store.check_integrity()?;
    let resumed = store.begin_run(run, kind, &serde_json::to_value(settings).expect("plain data"))?;
    store.release_dead_here()?;
    store.expire()?;
    Ok((store, resumed))
}

/// A search's settings as stored: resuming requires the same.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SearchSettings {
    pub evolution: Settings,
    pub spec: TrainSpec,
}

/// Why a search stopped before its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    TimeLimit,
    Interrupted,
}

/// What a finished (or resumed and finished) search reports, or one stopped early.
pub struct SearchReport {
    pub resumed: bool,
    /// Stopped early: the store holds what was trained, and running the search again goes on
    /// from there. The population and best are then empty.
    pub stopped: Option<Stop>,
    /// The final population, oldest first.
    pub population: Vec<Member>,
    pub best: Option<Member>,
    pub children: usize,
    /// Trainings this process ran.
    pub trained_here: usize,
}

/// Runs (or resumes) the search `run` in `db` with `workers` worker threads in this process
/// (0: only external `lossc worker` processes train), for at most `limit` if given: then the
/// trainings under way are abandoned, their jobs put back for the run's next start.
pub fn search(
    db: &Db,
    run: &str,
    settings: &SearchSettings,
    workers: usize,
    limit: Option<Duration>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<SearchReport, RunError> {
    let deadline = limit.map(|l| Instant::now() + l);
    let (store, resumed) = open_run(db, run, "search", settings, std::slice::from_ref(&settings.spec), workers)?;
    let mut pool = Workers::spawn(db, workers);
    let ev = &settings.evolution;
    let mut fit = StoreFitness {
        store: &store,
        run: run.to_string(),
        spec: settings.spec.clone(),
        workers: &mut pool,
        phase: "initial",
        done: 0,
        total: ev.initial,
        best: 0.0,
        progress,
        error: None,
        deadline,
        stopped: None,
    };
    let mut e = Evolution::start(ev.clone(), &mut fit);
    fit.phase = "evolve";
    fit.done = 0;
    fit.total = ev.iterations;
    // Children of finished rounds.
    let mut children = e.children;
    while !e.finished() && fit.error.is_none() && fit.stopped.is_none() {
        e.step(&mut fit);
        if fit.error.is_some() || fit.stopped.is_some() {
            // The round did not finish: its fitness values are not real.
            break;
        }
        children = e.children;
        store.set_population(run, &e.population.iter().map(|m| m.seq).collect::<Vec<_>>())?;
    }
    if let Some(err) = fit.error.take() {
        let _ = pool.stop();
        return Err(err);
    }
    if let Some(stop) = fit.stopped {
        let trained_here = pool.abandon()?;
        let stopped = Some(stop);
        return Ok(SearchReport { resumed, stopped, population: Vec::new(), best: None, children, trained_here });
    }
    store.set_population(run, &e.population.iter().map(|m| m.seq).collect::<Vec<_>>())?;
    let trained_here = pool.stop()?;
    Ok(SearchReport {
        resumed,
        stopped: None,
        population: e.population.into(),
        best: e.best,
        children: e.children,
        trained_here,
    })
}

/// A ranked loss of a run: its fitness and text.
pub struct Ranked {
    pub seq: usize,
    pub key: String,
    pub fitness: f64,
    pub text: String,
}

/// The scored candidates of a run, best first.
pub fn ranking(store: &Store, run: &str) -> Result<Vec<Ranked>, StoreError> {
    let Some((_, settings)) = store.run_settings(run)? else {
        return Err(StoreError::NoRun { path: store.path().to_string(), kind: "search", run: run.to_string() });
    };
    let spec: TrainSpec = serde_json::from_value(settings["spec"].clone())
        .map_err(|e| StoreError::Corrupt(format!("{}: run `{run}` has no training spec: {e}", store.path())))?;
    // One query for the results, not one a candidate: `lossc status` ranks a store that may be
    // a PostgreSQL server across a network.
    let mut scored: std::collections::HashMap<String, f64> =
        store.results_for(&spec)?.into_iter().map(|(key, r)| (key, r.fitness)).collect();
    let mut out = Vec::new();
    for c in store.candidates(run)? {
        // A key's first candidate stands for it (`remove`: its later duplicates find nothing).
        if let Some(key) = c.key
            && let Some(fitness) = scored.remove(&key)
        {
            out.push(Ranked { seq: c.seq, key, fitness, text: c.text });
        }
    }
    out.sort_by(|a, b| b.fitness.total_cmp(&a.fitness));
    Ok(out)
}

/// Refuses an output directory holding `PREFIX-N.loss` files that lossc did not write (the
/// files it writes start with `mark`), before any work starts.
pub fn check_out_dir(out: &Path, prefix: &str, mark: &str) -> Result<(), RunError> {
    if out.exists() && !out.is_dir() {
        return Err(RunError::NotADirectory(out.to_path_buf()));
    }
    let Ok(entries) = std::fs::read_dir(out) else { return Ok(()) };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(prefix) && name.ends_with(".loss") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            if !text.starts_with(mark) {
                return Err(RunError::NotOurs(e.path()));
            }
        }
    }
    Ok(())
}

/// The first line of every file `write_best` writes: files without it are the user's, and
/// are never overwritten.
pub const MARK: &str = "# written by lossc search";

/// Writes the best `k` losses of a run as `DIR/best-N.loss` (rank N), each with its fitness.
pub fn write_best(store: &Store, run: &str, dir: &Path, k: usize) -> Result<Vec<PathBuf>, RunError> {
    let ranked = ranking(store, run)?;
    std::fs::create_dir_all(dir).map_err(|source| RunError::Write { path: dir.to_path_buf(), source })?;
    let mut written = Vec::new();
    for (i, r) in ranked.iter().take(k).enumerate() {
        let path = dir.join(format!("best-{}.loss", i + 1));
        if let Ok(old) = std::fs::read_to_string(&path)
            && !old.starts_with(MARK)
        {
            return Err(RunError::NotOurs(path));
        }
        let text = format!(
            "{MARK} (run `{run}` in {}, candidate {})\n# fitness (best validation accuracy): {:.4}\n# key: {}\n{}",
            store.path(),
            r.seq,
            r.fitness,
            r.key,
            r.text.replace(&format!("loss c{} ", r.seq), &format!("loss best{} ", i + 1))
        );
        std::fs::write(&path, text).map_err(|source| RunError::Write { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}

/// The settings of a sample: n random screened losses, each trained under every augmentation.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SampleSettings {
    pub n: usize,
    pub hidden: usize,
    pub seed: u64,
    pub augs: Vec<String>,
    pub spec: TrainSpec,
}

/// A sample's fitness table: one row per loss (candidate seq), one column per augmentation.
pub struct SampleTable {
    pub augs: Vec<String>,
    pub rows: Vec<(usize, String, Vec<f64>)>,
}

/// Samples `n` random valid, screened, distinct losses and trains each under every
/// augmentation (resumable like a search: results are cached by key and spec).
pub fn sample(
    db: &Db,
    run: &str,
    s: &SampleSettings,
    workers: usize,
    progress: &mut dyn FnMut(&Progress),
) -> Result<SampleTable, RunError> {
    let specs: Vec<TrainSpec> = s.augs.iter().map(|aug| TrainSpec { aug: aug.clone(), ..s.spec.clone() }).collect();
    let (store, _) = open_run(db, run, "sample", s, &specs, workers)?;
    let mut rng = crate::rng::Rng::new(s.seed);
    let mut screener = screen::Screener::new();
    let mut keys = std::collections::HashSet::new();
    let mut chosen: Vec<(usize, String, String)> = Vec::new();
    let mut seq = 0;
    while chosen.len() < s.n && seq < 1000 * s.n.max(1) {
        let g = Genome::random(&mut rng, s.hidden);
        let graph = g.to_graph("l").expect("random genomes are valid");
        let verdict = match screener.screen(&graph) {
            Err(r) => Verdict::Rejected(r),
            Ok(sc) if keys.contains(&sc.key) => Verdict::DuplicateKey,
            Ok(sc) => Verdict::Accepted(Box::new(sc)),
        };
        let row = candidate_row(seq, &g, &graph, &verdict);
        store.record_candidate(run, &row)?;
        if let Some(k) = row.key {
            keys.insert(k.clone());
            chosen.push((seq, k, row.text));
        }
        seq += 1;
    }
    let jobs: Vec<(String, String, TrainSpec)> = specs
        .iter()
        .flat_map(|spec| chosen.iter().map(move |(_, key, text)| (key.clone(), text.clone(), spec.clone())))
        .collect();
    let outcomes = train_all(db, &store, &jobs, workers, "sample", progress)?;
    let mut table = SampleTable { augs: s.augs.clone(), rows: Vec::new() };
    for (i, (seq, key, _)) in chosen.iter().enumerate() {
        let row = (0..specs.len()).map(|a| outcomes[a * chosen.len() + i].fitness).collect();
        table.rows.push((*seq, key.clone(), row));
    }
    Ok(table)
}

/// Trains every (key, text, spec) job not yet in the store with `workers` threads here (and
/// any `lossc worker` processes on the same file), and returns every job's outcome in order.
pub fn train_all(
    db: &Db,
    store: &Store,
    jobs: &[(String, String, TrainSpec)],
    workers: usize,
    phase: &'static str,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Vec<Outcome>, RunError> {
    for (key, text, spec) in jobs {
        store.enqueue(key, spec, text)?;
    }
    let mut pool = Workers::spawn(db, workers);
    let mut out: Vec<Option<Outcome>> = vec![None; jobs.len()];
    let mut best = 0.0f64;
    loop {
        for (i, (key, _, spec)) in jobs.iter().enumerate() {
            if out[i].is_none() {
                out[i] = store.settled(key, spec)?;
                if let Some(o) = &out[i] {
                    best = best.max(o.fitness);
                }
            }
        }
        let done = out.iter().filter(|o| o.is_some()).count();
        progress(&Progress { phase, done, total: jobs.len(), best });
        if done == jobs.len() {
            break;
        }
        if let Some(e) = pool.failed() {
            return Err(e);
        }
        if interrupted() {
            pool.abandon()?;
            return Err(RunError::Interrupted);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    pool.stop()?;
    Ok(out.into_iter().flatten().collect())
}
