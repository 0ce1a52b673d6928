//! A search spread over processes: a coordinator (`lossc search --workers 0`) and three
//! `lossc worker` processes on one store, one of them killed with SIGKILL in the middle of a
//! training. The killed worker's job goes back to the queue when its lease runs out (seconds,
//! not hours), another worker trains it, every job is done exactly once, and the search ends
//! with the population of an uninterrupted single-process run with the same seed. On
//! PostgreSQL (the test server scripts/test.sh starts) and on an SQLite file.

mod common;

use lossc::search::store::{Db, Store};
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Lease of the workers under test: a dead worker's job is free again this long after its
/// last heartbeat.
const LEASE: f64 = 2.0;

/// A small search: 6 initial losses, population 3, 6 children in rounds of 3, 100 steps each.
fn search(db: &str, workers: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lossc"));
    c.args(["search", "--population", "3", "--initial", "6", "--tournament", "2", "--iterations", "6"]);
    c.args(["--round", "3", "--steps", "100", "--batch", "32", "--lr", "0.003", "--warmup", "5", "--val", "300"]);
    c.args(["--eval-every", "50", "--gate-step", "50", "--gate-accuracy", "0.15", "--seed", "5"]);
    c.args(["--workers", workers, "--lease", &LEASE.to_string(), "--db", db]);
    c.arg("--out").arg(common::scratch_dir(&format!("dist-out-{}", db.len())));
    c
}

/// The stable part of a finished search's output: children and population lines.
fn summary(stdout: &str) -> Vec<String> {
    stdout.lines().filter(|l| l.starts_with("  c") || l.starts_with("best:")).map(String::from).collect()
}

/// A store's candidates and the keys of its results.
fn contents(db: &Db) -> (Vec<(usize, Option<String>, String)>, BTreeSet<String>) {
    let store = Store::open(db).unwrap();
    let cands = store.candidates("search").unwrap().into_iter().map(|c| (c.seq, c.key, c.verdict)).collect();
    let keys = store.jobs().unwrap().into_iter().filter(|j| j.status == "done").map(|j| j.key).collect();
    (cands, keys)
}

/// The uninterrupted run: one process, two worker threads, an SQLite file.
fn reference() -> &'static (Vec<String>, (Vec<(usize, Option<String>, String)>, BTreeSet<String>), usize) {
    static REF: OnceLock<(Vec<String>, (Vec<(usize, Option<String>, String)>, BTreeSet<String>), usize)> =
        OnceLock::new();
    REF.get_or_init(|| {
        let db = common::scratch_dir("dist-ref").join("s.db");
        let out = search(db.to_str().unwrap(), "2").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        println!("uninterrupted:\n{stdout}");
        let db = Db::from(db);
        let done = Store::open(&db).unwrap().counts().unwrap().0;
        (summary(&stdout), contents(&db), done)
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

fn killed_worker_is_replaced(url: &str) {
    let db: Db = url.parse().unwrap();
    let (want_summary, want_contents, want_done) = reference().clone();
    let coordinator = search(url, "0").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut workers: Vec<Child> = (0..3).map(|_| worker(url)).collect();

    // Kill a worker once some training is stored and it has been training for a while.
    let start = Instant::now();
    let (victim, job, killed_at) = loop {
        std::thread::sleep(Duration::from_millis(50));
        assert!(start.elapsed() < Duration::from_secs(300), "no worker could be caught mid-training");
        let Ok(store) = Store::open(&db) else { continue };
        if store.counts().unwrap().0 < 2 {
            continue;
        }
        let now = lossc::search::store::now();
        let running = store.jobs().unwrap().into_iter().find(|j| {
            j.status == "running" && j.claimed.is_some_and(|c| now - c > 0.3) && j.attempts == 1
        });
        if let Some(j) = running {
            let w = j.worker.clone().unwrap();
            let i = workers.iter().position(|c| c.id() == pid_of(&w)).expect("held by one of our workers");
            workers[i].kill().unwrap(); // SIGKILL
            workers[i].wait().unwrap();
            break (w, j.id, lossc::search::store::now());
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

    assert_eq!(summary(&stdout), want_summary, "the distributed search ended elsewhere");
    assert_eq!(contents(&db), want_contents, "other candidates or other trainings");
    let store = Store::open(&db).unwrap();
    assert_eq!(store.counts().unwrap().0, want_done, "every job once in the results");
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
    killed_worker_is_replaced(&url);
}

#[test]
fn a_killed_worker_is_replaced_on_sqlite() {
    if !common::have_fashion_mnist() {
        return;
    }
    let db = common::scratch_dir("dist-sqlite").join("s.db");
    killed_worker_is_replaced(db.to_str().unwrap());
}
