//! A search spread over processes: a coordinator (`lossc search --workers 0`) and three
//! `lossc worker` processes on one store, one of them killed with SIGKILL in the middle of a
//! training. The killed worker's job goes back to the queue when its lease runs out (seconds,
//! not hours), another worker trains it, every job is done exactly once, and the search ends
//! with the population of an uninterrupted single-process run with the same seed. On
//! PostgreSQL (the test server scripts/test.sh starts) and on an SQLite file. And a worker on a
//! machine that cannot train a job leaves it to one that can.

mod common;

use lossc::search::store::{Db, Store};
use lossc::train::TrainSpec;
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Lease of the workers under test: a dead worker's job is free again this long after its
/// last heartbeat.
const LEASE: f64 = 2.0;

/// A small search: 6 initial losses, population 3, 6 children in rounds of 3, 100 steps each;
/// its best losses go to a scratch directory named by `label`.
fn search(db: &str, workers: &str, label: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lossc"));
    c.args(["search", "--population", "3", "--initial", "6", "--tournament", "2", "--iterations", "6"]);
    c.args(["--round", "3", "--steps", "100", "--batch", "32", "--lr", "0.003", "--warmup", "5", "--val", "300"]);
    c.args(["--eval-every", "50", "--gate-step", "50", "--gate-accuracy", "0.15", "--seed", "5"]);
    c.args(["--workers", workers, "--lease", &LEASE.to_string(), "--db", db]);
    c.arg("--out").arg(common::scratch_dir(&format!("{label}-out")));
    c
}

/// What two runs of the search must agree on.
#[derive(Clone, Debug, PartialEq)]
struct Ending {
    /// The children and population lines of the output.
    summary: Vec<String>,
    /// Every candidate: sequence number, key, verdict.
    candidates: Vec<(usize, Option<String>, String)>,
    /// The keys of the finished trainings.
    trained: BTreeSet<String>,
    /// The number of results.
    results: usize,
}

fn ending(stdout: &str, db: &Db) -> Ending {
    let store = Store::open(db).unwrap();
    Ending {
        summary: stdout.lines().filter(|l| l.starts_with("  c") || l.starts_with("best:")).map(String::from).collect(),
        candidates: store.candidates("search").unwrap().into_iter().map(|c| (c.seq, c.key, c.verdict)).collect(),
        trained: store.jobs().unwrap().into_iter().filter(|j| j.status == "done").map(|j| j.key).collect(),
        results: store.counts().unwrap().0,
    }
}

/// The uninterrupted run: one process, two worker threads, an SQLite file.
fn reference() -> &'static Ending {
    static REF: OnceLock<Ending> = OnceLock::new();
    REF.get_or_init(|| {
        let db = common::scratch_dir("dist-ref").join("s.db");
        let out = search(db.to_str().unwrap(), "2", "dist-ref").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        println!("uninterrupted:\n{stdout}");
        ending(&stdout, &Db::from(db))
    })
}

fn worker(db: &str) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lossc"));
    c.args(["worker", "--db", db, "--idle", "60", "--lease", &LEASE.to_string()]);
    c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

/// The process id in a worker id (`host@boot:pid:n`).
fn pid_of(worker: &str) -> u32 {
    worker.rsplit(':').nth(1).and_then(|p| p.parse().ok()).unwrap_or(0)
}

fn killed_worker_is_replaced(url: &str, label: &str) {
    let db: Db = url.parse().unwrap();
    let want = reference().clone();
    let coordinator = search(url, "0", label).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut workers: Vec<Child> = (0..3).map(|_| worker(url)).collect();

    // Kill a worker once some training is stored and it has been training for a while. The
    // worker may finish that job between the look and the kill; what counts is the job the dead
    // worker still holds afterwards. If it holds none, a fresh worker takes its place and we try
    // again.
    let start = Instant::now();
    let (victim, job, killed_at) = loop {
        std::thread::sleep(Duration::from_millis(50));
        assert!(start.elapsed() < Duration::from_secs(300), "no worker could be caught mid-training");
        let Ok(store) = Store::open(&db) else { continue };
        if store.counts().unwrap().0 < 2 {
            continue;
        }
        let now = lossc::search::store::now();
        let running = store
            .jobs()
            .unwrap()
            .into_iter()
            .find(|j| j.status == "running" && j.claimed.is_some_and(|c| now - c > 0.3) && j.attempts == 1);
        if let Some(j) = running {
            let w = j.worker.clone().unwrap();
            let i = workers.iter().position(|c| c.id() == pid_of(&w)).expect("held by one of our workers");
            workers[i].kill().unwrap(); // SIGKILL
            workers[i].wait().unwrap();
            let killed_at = lossc::search::store::now();
            let held = store
                .jobs()
                .unwrap()
                .into_iter()
                .find(|k| k.status == "running" && k.worker.as_deref() == Some(w.as_str()));
            match held {
                Some(k) if k.attempts == 1 => break (w, k.id, killed_at),
                _ => {
                    println!("{w} held no first attempt when it was killed; a fresh worker takes its place");
                    workers[i] = worker(url);
                }
            }
        }
    };
    println!("killed {victim} while it trained job {job}");

    let out = coordinator.wait_with_output().unwrap();
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    println!("distributed:\n{stdout}");

    let got = ending(&stdout, &db);
    assert_eq!(got.summary, want.summary, "the distributed search ended elsewhere");
    assert_eq!(got.candidates, want.candidates, "other candidates");
    assert_eq!(got.trained, want.trained, "other trainings");
    assert_eq!(got.results, want.results, "every job once in the results");
    let store = Store::open(&db).unwrap();
    assert_eq!(store.failed_jobs().unwrap(), 0);
    let row = store.jobs().unwrap().into_iter().find(|j| j.id == job).unwrap();
    assert_eq!(row.status, "done");
    assert_eq!(row.attempts, 2, "the killed worker's job was claimed again, once");
    assert_eq!(row.error.as_deref(), Some(format!("the lease of {victim} expired").as_str()));
    let taken_over = row.claimed.unwrap() - killed_at;
    println!("job {job} claimed again {taken_over:.2} s after the kill (lease {LEASE} s)");
    assert!(taken_over > 0.0 && taken_over < LEASE + 10.0, "re-leased {taken_over:.1} s after the kill");
    assert_ne!(row.worker.as_deref(), Some(victim.as_str()));
}

#[test]
fn a_killed_worker_is_replaced_on_postgresql() {
    if !common::have_fashion_mnist() {
        return;
    }
    let Some(url) = common::pg_database("distributed") else { return };
    killed_worker_is_replaced(&url, "dist-pg");
}

#[test]
fn a_killed_worker_is_replaced_on_sqlite() {
    if !common::have_fashion_mnist() {
        return;
    }
    let db = common::scratch_dir("dist-sqlite").join("s.db");
    killed_worker_is_replaced(db.to_str().unwrap(), "dist-sqlite");
}

/// A worker on a machine that cannot train a job (its data is not there, its device does not
/// open there) gives the job back with its attempt not counted and says why (one line however
/// many workers its process has), however often it is started, so the job never fails for
/// good for that machine's sake; it trains the jobs it can, and a worker that can train the
/// others then does, at their first counted attempt.
#[test]
fn a_worker_leaves_a_job_it_cannot_train_to_one_that_can() {
    if !common::have_fashion_mnist() {
        return;
    }
    let dir = common::scratch_dir("not-here");
    let db = dir.join("s.db");
    // The data of the CPU job: a folder that appears later (the machine gets the data set).
    let data = dir.join("fashion-mnist");
    let cpu = TrainSpec {
        data: format!("fashion-mnist:{}", data.display()),
        steps: 2,
        batch: 8,
        val: 100,
        eval_every: 2,
        gate_accuracy: 0.0,
        ..TrainSpec::default()
    };
    // The wgpu job: a machine whose Vulkan loader finds no driver has no adapter.
    let wgpu = TrainSpec { device: "wgpu".into(), ..cpu.clone() };
    let store = Store::open(&db).unwrap();
    store.enqueue("on-cpu", &cpu, "loss l = -y * ln(p);").unwrap();
    store.enqueue("on-wgpu", &wgpu, "loss l = -y * ln(p);").unwrap();
    let workers = |n: usize| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lossc"));
        c.args(["worker", "--workers", &n.to_string(), "--idle", "1", "--db"])
            .arg(&db)
            .env("VK_ICD_FILENAMES", dir.join("no-driver.json"));
        let o = c.output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
    };
    let state = |key: &str| {
        let j = store.jobs().unwrap().into_iter().find(|j| j.key == key).unwrap();
        (j.status, j.attempts, j.error.unwrap_or_default())
    };
    let worker = || workers(1);
    // The one line that says a job was declined: a process's workers pass over its spec once
    // one of them has declined it, and only that one says so.
    let declined = |out: &str, job: i64, device: &str, why: &str| {
        let line = format!("this machine cannot train job {job} (device {device}): ");
        let lines: Vec<&str> = out.lines().filter(|l| l.contains(&line)).collect();
        assert_eq!(lines.len(), 1, "one line for job {job}: {out}");
        assert!(lines[0].contains(why) && lines[0].ends_with("this attempt not counted"), "{}", lines[0]);
    };
    let cannot = "this machine can train none of the jobs its workers found";
    // Without the data, neither job trains here: each worker leaves both, uncounted.
    let mut said = String::new();
    for _ in 0..=lossc::search::store::MAX_ATTEMPTS {
        let (code, out) = worker();
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains(cannot), "{out}");
        declined(&out, 1, "cpu", "fashion-mnist");
        declined(&out, 2, "wgpu", "fashion-mnist");
        for key in ["on-cpu", "on-wgpu"] {
            let (status, attempts, error) = state(key);
            assert_eq!((status.as_str(), attempts), ("pending", 0), "{error}");
            assert!(error.contains("cannot train it: ") && error.contains("fashion-mnist"), "{error}");
        }
        said += &out;
    }
    // With the data, the CPU job trains at its first attempt; the wgpu job, which needs a
    // Vulkan driver this machine lacks, is passed over, and a worker that finds only it fails.
    std::os::unix::fs::symlink(lossc_runtime::data::FASHION_MNIST_DIR, &data).unwrap();
    let (code, out) = worker();
    assert_eq!(code, Some(0), "{out}");
    declined(&out, 2, "wgpu", "no Vulkan adapter");
    said += &out;
    let (status, attempts, _) = state("on-cpu");
    assert_eq!((status.as_str(), attempts), ("done", 1), "trained once the data was there");
    let (code, out) = workers(3);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(cannot), "{out}");
    declined(&out, 2, "wgpu", "no Vulkan adapter");
    let (status, attempts, error) = state("on-wgpu");
    assert_eq!((status.as_str(), attempts), ("pending", 0), "{error}");
    // A worker says that it started, and what it stored.
    assert!(said.contains(&format!("1 worker(s) on {}, until no job has come for 1 s", db.display())), "{said}");
    assert!(said.contains("job 1 (l): fitness ") && said.contains(", 2 steps in "), "{said}");
    assert_eq!(store.counts().unwrap(), (1, 1));
    // A CPU search sharing the store runs beside the waiting wgpu job: its workers pass it over.
    let mut c = Command::new(env!("CARGO_BIN_EXE_lossc"));
    c.args(["search", "--population", "2", "--initial", "2", "--iterations", "0", "--steps", "2", "--batch", "8"]);
    c.args(["--val", "100", "--eval-every", "2", "--gate-accuracy", "0", "--workers", "2", "--db"]).arg(&db);
    c.arg("--out").arg(dir.join("out")).env("VK_ICD_FILENAMES", dir.join("no-driver.json"));
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    declined(&err, 2, "wgpu", "no Vulkan adapter");
    let (status, attempts, error) = state("on-wgpu");
    assert_eq!((status.as_str(), attempts), ("pending", 0), "{error}");
    let o = Command::new(env!("CARGO_BIN_EXE_lossc")).args(["status", "--db"]).arg(&db).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(" pending, 0 running, ") && out.contains(" 0 failed"), "{out}");
    assert!(out.contains("pending: job 2 (0 attempts so far), given back: worker "), "{out}");
}
