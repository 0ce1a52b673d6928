//! The search on its SQLite store with real training on Fashion-MNIST (small budgets):
//! killing a run with SIGKILL and resuming it, interrupting it (Ctrl-C), or stopping it at a
//! time limit again and again, loses nothing, trains nothing twice, and ends with the
//! population of an uninterrupted run; an interrupted evaluation or worker gives its jobs back
//! uncounted; the best losses a search writes check and retrain.

mod common;

use lossc::search::store::Store;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A tiny search: 5 initial losses, population 3, 4 children in rounds of 2, both rounds
/// generated before either is trained (`--lag 1`), 40 steps each.
fn search(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lossc"));
    c.args(["search", "--population", "3", "--initial", "5", "--tournament", "2", "--iterations", "4", "--lag", "1"]);
    c.args(["--steps", "40", "--batch", "32", "--lr", "0.003", "--warmup", "5", "--val", "300", "--eval-every", "20"]);
    c.args(["--gate-step", "20", "--gate-accuracy", "0.15", "--workers", "2", "--seed", "3"]);
    c.arg("--db").arg(dir.join("s.db")).arg("--out").arg(dir.join("out"));
    c
}

/// The stable part of a finished search's output: children and population lines.
fn summary(stdout: &str) -> Vec<String> {
    stdout.lines().filter(|l| l.starts_with("  c") || l.starts_with("best:")).map(String::from).collect()
}

fn candidates(db: &Path) -> Vec<(usize, Option<String>, String)> {
    Store::open(db).unwrap().candidates("search").unwrap().into_iter().map(|c| (c.seq, c.key, c.verdict)).collect()
}

#[test]
fn a_killed_search_resumes_to_the_uninterrupted_result() {
    if !common::have_fashion_mnist() {
        return;
    }
    let a = common::scratch_dir("search-a");
    let out = search(&a).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout_a = String::from_utf8_lossy(&out.stdout).to_string();
    println!("uninterrupted:\n{stdout_a}");
    let (done_a, _) = Store::open(a.join("s.db")).unwrap().counts().unwrap();
    a_diverging_replay_is_refused(&a);

    // The same search, killed once two trainings are stored, then started again.
    let b = common::scratch_dir("search-b");
    let mut child = search(&b).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let db = b.join("s.db");
    wait_for_results(&db, 2, &mut child);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let (done_killed, _) = Store::open(&db).unwrap().counts().unwrap();
    assert!(done_killed < done_a, "killed after {done_killed} of {done_a} trainings: not mid-way");
    let out = search(&b).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout_b = String::from_utf8_lossy(&out.stdout).to_string();
    println!("killed after {done_killed} trainings, resumed:\n{stdout_b}");
    assert!(stdout_b.contains("(resumed)"));

    assert_eq!(summary(&stdout_b), summary(&stdout_a), "the resumed search ended elsewhere");
    assert_eq!(candidates(&db), candidates(&a.join("s.db")), "candidates lost or changed");
    // Every loss trained exactly once: as many results as the uninterrupted run, and the
    // resumed process trained only what the killed one had not finished.
    let (done_b, _) = Store::open(&db).unwrap().counts().unwrap();
    assert_eq!(done_b, done_a);
    let trained_after = stdout_b.split("trainings stored").next().unwrap();
    assert!(trained_after.contains(&format!("{done_a} ")), "{stdout_b}");
    let ran_here: usize = stdout_b
        .split(" run by this process")
        .next()
        .and_then(|s| s.rsplit(", ").next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap();
    assert_eq!(ran_here, done_a - done_killed, "{stdout_b}");

    // The same search interrupted (SIGINT, as Ctrl-C sends) once two trainings are stored: it
    // says so, exits with 130 and gives the trainings under way back uncounted.
    let d = common::scratch_dir("search-d");
    let db = d.join("s.db");
    let mut child = search(&d).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_results(&db, 2, &mut child);
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    println!("interrupted:\n{stdout}");
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(", interrupted:") && stdout.contains("best: c"), "{stdout}");
    assert_given_back(&db);
    let out = search(&d).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        summary(&String::from_utf8_lossy(&out.stdout)),
        summary(&stdout_a),
        "the interrupted search ended elsewhere"
    );
    assert_eq!(Store::open(&db).unwrap().counts().unwrap(), (done_a, done_a), "a loss trained twice or not at all");

    // The same search under time limits of 0.5 s, 1 s, 2 s, ... until one run finishes.
    let c = common::scratch_dir("search-c");
    let db = c.join("s.db");
    let (mut stopped, mut partial) = (0, 0);
    let stdout_c = loop {
        let limit = format!("{}s", 0.5 * 2f64.powi(stopped));
        let out = search(&c).args(["--time-limit", &limit]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if !stdout.contains("stopped at the time limit") {
            break stdout;
        }
        stopped += 1;
        assert!(stopped < 16, "no progress under time limits");
        // The trainings under way went back to the queue, their attempts not counted; what
        // finished is kept, and the best so far is written. (A limit can fall after the last
        // training is stored and before the search has read it: then all are done.)
        let done = assert_given_back(&db);
        assert!(done <= done_a, "{stdout}");
        if done > 0 {
            partial += 1;
            assert!(c.join("out/best-1.loss").exists(), "{stdout}");
            assert!(stdout.contains("best: c"), "{stdout}");
        }
    };
    println!("stopped at a time limit {stopped} times ({partial} with results stored), then:\n{stdout_c}");
    assert!(partial > 0, "no run stopped with some trainings stored");
    assert_eq!(summary(&stdout_c), summary(&stdout_a), "the search stopped at time limits ended elsewhere");
    assert_eq!(candidates(&db), candidates(&a.join("s.db")), "candidates lost or changed");
    assert_eq!(Store::open(&db).unwrap().counts().unwrap().0, done_a, "a loss trained twice or not at all");
    for dir in [&a, &b, &c, &d] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Checks that a store stopped early holds no running job, and that each job was attempted
/// once if done and never if pending (nothing given back counted an attempt); the jobs done.
fn assert_given_back(db: &Path) -> usize {
    let jobs = jobs_in(db);
    let given_back =
        |(status, attempts): &(String, i64)| matches!((status.as_str(), attempts), ("pending", 0) | ("done", 1));
    assert!(jobs.iter().all(given_back), "{jobs:?}");
    jobs.iter().filter(|j| j.0 == "done").count()
}

/// The finished search of `a`, resumed from a copy of its store in which one accepted
/// candidate is recorded as rejected (what a lossc that screens differently would have
/// stored): the replay is refused (exit code 2) at that candidate, and the store keeps its
/// history and trainings.
fn a_diverging_replay_is_refused(a: &Path) {
    let dir = common::scratch_dir("search-diverged");
    std::fs::copy(a.join("s.db"), dir.join("s.db")).unwrap();
    let db = dir.join("s.db");
    let seq: i64 = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let seq = conn
            .query_row("SELECT max(seq) FROM candidates WHERE run = 'search' AND verdict = 'ok'", [], |r| r.get(0))
            .unwrap();
        conn.execute(
            "UPDATE candidates SET verdict = 'NonFinite', key = NULL WHERE run = 'search' AND seq = ?1",
            [seq],
        )
        .unwrap();
        seq
    };
    let before = (candidates(&db), Store::open(&db).unwrap().counts().unwrap());
    let out = search(&dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("does not replay as it was stored:\n  candidate c{seq} was `loss c{seq} =")),
        "{stderr}"
    );
    assert!(stderr.contains("(rejected: NonFinite)\n  and is now `loss"), "{stderr}");
    assert!(stderr.contains("(accepted):\n"), "{stderr}");
    assert_eq!((candidates(&db), Store::open(&db).unwrap().counts().unwrap()), before, "the store changed");
    // As the message says: a new run in the store goes on, training nothing stored.
    let out = search(&dir).args(["--run", "again"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(", 0 run by this process"), "{stdout}");
}

/// Waits until the store at `db` holds `n` results (or a running job, for `n` = 0), while
/// `child` has not ended.
fn wait_for_results(db: &Path, n: usize, child: &mut std::process::Child) {
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        // The file appears before the search has created its tables.
        let jobs = if has_jobs_table(db) { jobs_in(db) } else { Vec::new() };
        let done = jobs.iter().filter(|j| j.0 == "done").count();
        if (n > 0 && done >= n) || (n == 0 && jobs.iter().any(|j| j.0 == "running")) {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "it ended before it could be stopped");
        assert!(start.elapsed() < Duration::from_secs(300), "{n} results never came");
    }
}

/// Sends SIGINT, as Ctrl-C does.
fn interrupt(child: &std::process::Child) {
    // SAFETY: a plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
}

/// An evaluation and a worker interrupted while they train: exit code 130, the jobs under way
/// back in the queue with no attempt counted, and the evaluation, run again, finishes.
#[test]
fn an_interrupted_evaluation_or_worker_gives_its_jobs_back() {
    if !common::have_fashion_mnist() {
        return;
    }
    let dir = common::scratch_dir("interrupted");
    let db = dir.join("e.db");
    let evaluate = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lossc"));
        c.args(["evaluate", "--loss", "examples/ce.loss", "--loss", "examples/a2.loss", "--seeds", "2"]);
        c.args(["--steps", "60", "--batch", "32", "--val", "300", "--eval-every", "20", "--workers", "2"]);
        c.arg("--db").arg(&db).current_dir(env!("CARGO_MANIFEST_DIR"));
        c
    };
    let mut child = evaluate().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_results(&db, 0, &mut child);
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted: the trainings under way went back to the queue"), "{stderr}");
    let done = assert_given_back(&db);
    assert!(done < 4, "the evaluation finished before the interruption");

    let mut worker = Command::new(env!("CARGO_BIN_EXE_lossc"))
        .args(["worker", "--idle", "60", "--db"])
        .arg(&db)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_results(&db, 0, &mut worker);
    interrupt(&worker);
    let out = worker.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("interrupted: the trainings under way went back"));
    assert_given_back(&db);

    let out = evaluate().output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(assert_given_back(&db), 4);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A connection beside the search's own, which waits out its writes.
fn connect(db: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn
}

fn has_jobs_table(db: &Path) -> bool {
    db.exists()
        && connect(db)
            .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'jobs'", [], |r| r.get(0))
            .is_ok_and(|n: i64| n > 0)
}

/// Each job's status and attempts.
fn jobs_in(db: &Path) -> Vec<(String, i64)> {
    let conn = connect(db);
    let mut q = conn.prepare("SELECT status, attempts FROM jobs ORDER BY id").unwrap();
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

#[test]
fn a_short_search_writes_losses_that_check_and_retrain_to_their_fitness() {
    if !common::have_fashion_mnist() {
        return;
    }
    let dir = common::scratch_dir("search-short");
    let mut c = Command::new(env!("CARGO_BIN_EXE_lossc"));
    c.args(["search", "--population", "4", "--initial", "8", "--tournament", "3", "--iterations", "8"]);
    c.args(["--steps", "60", "--batch", "64", "--lr", "0.003", "--warmup", "6", "--val", "1000"]);
    c.args(["--eval-every", "30", "--gate-step", "30", "--gate-accuracy", "0.2", "--workers", "2", "--best", "2"]);
    c.arg("--db").arg(dir.join("s.db")).arg("--out").arg(dir.join("out"));
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    // `lossc status` ranks the run as the search did: its best so far is the search's best.
    let status =
        Command::new(env!("CARGO_BIN_EXE_lossc")).arg("status").arg("--db").arg(dir.join("s.db")).output().unwrap();
    let listed = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let words = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    let searched = stdout.lines().find_map(|l| l.strip_prefix("best: ")).map(words).unwrap();
    let mut ranked = listed.lines().skip_while(|l| !l.contains("the best so far:")).skip(1);
    assert_eq!(ranked.next().map(words), Some(searched), "{listed}");
    assert_eq!(ranked.filter(|l| l.trim_start().starts_with('c')).count(), 2, "the next two: {listed}");
    let best = dir.join("out/best-1.loss");
    let text = std::fs::read_to_string(&best).unwrap();
    let fitness: f64 =
        text.lines().find_map(|l| l.strip_prefix("# fitness (best validation accuracy): ")).unwrap().parse().unwrap();
    assert!(fitness > 0.3, "the best of a short search should train well above chance: {fitness}");
    let check = Command::new(env!("CARGO_BIN_EXE_lossc")).arg("check").arg(&best).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    // `lossc train` with the same settings reproduces the stored fitness.
    let json = dir.join("run.json");
    let mut t = Command::new(env!("CARGO_BIN_EXE_lossc"));
    t.args(["train", "--steps", "60", "--batch", "64", "--lr", "0.003", "--warmup", "6", "--val", "1000"]);
    t.args(["--eval-every", "30", "--gate-step", "30", "--gate-accuracy", "0.2", "--threads", "1"]);
    t.arg("--loss").arg(&best).arg("--out").arg(&json);
    let tr = t.output().unwrap();
    assert!(tr.status.success(), "{}", String::from_utf8_lossy(&tr.stderr));
    let record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let retrained = record["metrics"]["fitness"].as_f64().unwrap();
    assert!((retrained - fitness).abs() < 1e-4, "stored {fitness}, retrained {retrained}");

    // The elimination protocol on the search: the best 3 retrained longer, then the best 2
    // with two seeds; the survivors are written and check.
    let mut e = Command::new(env!("CARGO_BIN_EXE_lossc"));
    e.args(["eliminate", "--stage", "3:70:1", "--stage", "2:70:2", "--workers", "2"]);
    e.arg("--db").arg(dir.join("s.db")).arg("--out").arg(dir.join("elim"));
    let el = e.output().unwrap();
    assert!(el.status.success(), "{}", String::from_utf8_lossy(&el.stderr));
    let report = String::from_utf8_lossy(&el.stdout);
    println!("{report}");
    assert!(report.contains("stage: best 3 retrained for 70 steps, 1 seed(s)"), "{report}");
    assert!(report.contains("stage: best 2 retrained for 70 steps, 2 seed(s)"), "{report}");
    for n in 1..=2 {
        let f = dir.join(format!("elim/elim-{n}.loss"));
        let check = Command::new(env!("CARGO_BIN_EXE_lossc")).arg("check").arg(&f).output().unwrap();
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    }
    assert!(!dir.join("elim/elim-3.loss").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
