//! The search's store: one SQLite file holding every candidate a run looked at, the training
//! jobs it asked for, and their results.
//!
//! A training result is cached by (canonical key, training spec): no loss is trained twice
//! under one spec, across runs and across restarts. Jobs are claimed atomically (one
//! `UPDATE ... RETURNING` in an immediate transaction), so any number of worker threads or
//! processes, on this machine or on others sharing the file, can work on one queue, the way
//! Optuna's RDB storage shares trials.

use crate::train::TrainSpec;
use lossc_runtime::train::Metrics;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// SQLite's application id of a lossc store ("LOSS").
pub const APPLICATION_ID: i32 = 0x4c4f_5353;
/// The store's schema version (`PRAGMA user_version`). 2: keys of key format 2 (ops hashed by
/// name), and the application id; 1: the stores from before versioning.
pub const SCHEMA_VERSION: i32 = 2;
/// The tables of a store; a database with any other is not one.
const TABLES: [&str; 5] = ["runs", "candidates", "jobs", "results", "population"];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    settings TEXT NOT NULL,
    created REAL NOT NULL
);
-- Every candidate a run generated, rejected ones included, in the run's own order.
CREATE TABLE IF NOT EXISTS candidates (
    run TEXT NOT NULL,
    seq INTEGER NOT NULL,
    genome TEXT,
    text TEXT NOT NULL,
    key TEXT,
    verdict TEXT NOT NULL,
    sign REAL,
    phenotype BLOB,
    PRIMARY KEY (run, seq)
);
-- Trainings asked for: pending, running (claimed by a worker), or done.
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    spec TEXT NOT NULL,
    text TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    worker TEXT,
    claimed REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    UNIQUE (key, spec)
);
-- One row per finished training; the primary key makes a second training an error.
CREATE TABLE IF NOT EXISTS results (
    key TEXT NOT NULL,
    spec TEXT NOT NULL,
    fitness REAL NOT NULL,
    test_accuracy REAL,
    metrics TEXT NOT NULL,
    seconds REAL NOT NULL,
    worker TEXT NOT NULL,
    finished REAL NOT NULL,
    PRIMARY KEY (key, spec)
);
-- A run's population after its latest round, oldest first.
CREATE TABLE IF NOT EXISTS population (
    run TEXT NOT NULL,
    position INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (run, position)
);
";

/// A store error, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Sql { path: String, source: rusqlite::Error },
    /// A run of this name exists with other settings (or of another kind).
    #[error("{0}")]
    Settings(String),
    #[error("{path}: no {kind} run named `{run}`")]
    NoRun { path: String, kind: &'static str, run: String },
    #[error("{path} is not a lossc store ({why}); it was left as it was")]
    NotAStore { path: String, why: String },
    #[error("{path} was written by a newer lossc (store version {version}); this one reads up to version {max}", max = SCHEMA_VERSION)]
    Newer { path: String, version: i32 },
    /// The store holds something lossc did not write.
    #[error("{0}")]
    Corrupt(String),
}
crate::error::classify!(StoreError, input: [Settings, NoRun, NotAStore, Newer]);

/// A training job as a worker sees it.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: i64,
    pub key: String,
    pub spec: TrainSpec,
    pub text: String,
}

/// A stored result.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub fitness: f64,
    pub test_accuracy: Option<f64>,
    pub metrics: Metrics,
    pub seconds: f64,
}

/// A candidate as a run records it.
#[derive(Clone, Debug, Default)]
pub struct CandidateRow {
    pub seq: usize,
    pub genome: Option<String>,
    pub text: String,
    pub key: Option<String>,
    /// "ok" or the rejection.
    pub verdict: String,
    pub sign: Option<f64>,
    pub phenotype: Option<Vec<f64>>,
}

/// An open store.
pub struct Store {
    conn: Connection,
    path: String,
}

pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    /// Opens (creating if needed) the store at `path`. A file that is not a lossc store (not
    /// SQLite, or a database with other tables) is refused and left as it was; a store from an
    /// older lossc is brought to this version first.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let p = path.display().to_string();
        let sql = |source| StoreError::Sql { path: p.clone(), source };
        let conn = Connection::open(path).map_err(sql)?;
        // Several processes write: wait for each other instead of failing.
        conn.busy_timeout(Duration::from_secs(60)).map_err(sql)?;
        let store = Store { conn, path: p };
        // Only reads until the file is known to be a store (or empty).
        let version = store.version()?;
        store.use_wal()?;
        store.conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| store.err(e))?;
        if version != Some(SCHEMA_VERSION) {
            store.upgrade(version)?;
        }
        Ok(store)
    }

    /// Puts the file in WAL mode (once: the mode is stored in the file). Switching takes an
    /// exclusive lock and SQLite answers "database is locked" at once, without waiting, when
    /// another process opens the file meanwhile, so the switch is retried for a while.
    fn use_wal(&self) -> Result<(), StoreError> {
        let start = std::time::Instant::now();
        loop {
            let mode: String =
                self.conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).map_err(|e| self.err(e))?;
            if mode.eq_ignore_ascii_case("wal") {
                return Ok(());
            }
            match self.conn.pragma_update(None, "journal_mode", "WAL") {
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == rusqlite::ErrorCode::DatabaseBusy && start.elapsed() < Duration::from_secs(60) =>
                {
                    std::thread::sleep(Duration::from_millis(5))
                }
                other => return other.map_err(|e| self.err(e)),
            }
        }
    }

    /// SQLite's `quick_check` over the whole file: a store damaged on disk is an error here,
    /// at the start of a run or a worker, rather than a silent "nothing to do" later.
    pub fn check_integrity(&self) -> Result<(), StoreError> {
        let verdict: String = self.conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(|e| self.err(e))?;
        if verdict == "ok" {
            Ok(())
        } else {
            Err(StoreError::Corrupt(format!("{}: the file is damaged ({verdict})", self.path)))
        }
    }

    /// The store's schema version: `None` for an empty file, 1 for a store from before
    /// versioning; an error for anything that is not a lossc store or is newer than this lossc.
    fn version(&self) -> Result<Option<i32>, StoreError> {
        let not_ours = |why: &str| StoreError::NotAStore { path: self.path.clone(), why: why.to_string() };
        let pragma = |name: &str| -> Result<i32, StoreError> {
            self.conn.pragma_query_value(None, name, |r| r.get(0)).map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
                    not_ours("not an SQLite database")
                }
                e => self.err(e),
            })
        };
        let (app, version) = (pragma("application_id")?, pragma("user_version")?);
        let mut st =
            self.conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").map_err(|e| self.err(e))?;
        let tables: Vec<String> = st
            .query_map([], |r| r.get(0))
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        match app {
            APPLICATION_ID if version > SCHEMA_VERSION => Err(StoreError::Newer { path: self.path.clone(), version }),
            APPLICATION_ID => Ok(Some(version)),
            0 if tables.is_empty() => Ok(None),
            0 if tables.iter().all(|t| TABLES.contains(&t.as_str())) && tables.iter().any(|t| t == "results") => {
                Ok(Some(1))
            }
            0 => Err(not_ours("an SQLite database with other tables")),
            _ => Err(not_ours("an SQLite database of another application")),
        }
    }

    /// Creates the tables (`None`) or brings a version-1 store to this version: its keys are
    /// made again from the stored texts ([`crate::passes::simplify::KEY_FORMAT`] changed), in
    /// one transaction.
    fn upgrade(&self, from: Option<i32>) -> Result<(), StoreError> {
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        // Another process may have set the store up meanwhile.
        let now: i32 = tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| self.err(e))?;
        if now != SCHEMA_VERSION {
            tx.execute_batch(SCHEMA).map_err(|e| self.err(e))?;
            if from == Some(1) {
                self.rekey(&tx)?;
            }
            tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(|e| self.err(e))?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Makes every key again from its text: candidates and jobs from their own, results through
    /// the jobs that produced them.
    fn rekey(&self, tx: &rusqlite::Transaction) -> Result<(), StoreError> {
        let key_of = |text: &str| crate::syntax::parse(text).ok().map(|g| crate::search::screen::key(&g));
        let e = |e| self.err(e);
        let rows = |q: &str| -> Result<Vec<(i64, String, String)>, StoreError> {
            let mut st = tx.prepare(q).map_err(e)?;
            let v = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(e)?;
            v.collect::<Result<_, _>>().map_err(e)
        };
        let mut renamed = std::collections::HashMap::new();
        for (id, old, text) in rows("SELECT id, key, text FROM jobs")? {
            if let Some(new) = key_of(&text).filter(|k| *k != old) {
                tx.execute("UPDATE OR IGNORE jobs SET key = ?1 WHERE id = ?2", params![new, id]).map_err(e)?;
                renamed.insert(old, new);
            }
        }
        for (rowid, old, text) in rows("SELECT rowid, key, text FROM candidates WHERE key IS NOT NULL")? {
            if let Some(new) = key_of(&text).filter(|k| *k != old) {
                tx.execute("UPDATE candidates SET key = ?1 WHERE rowid = ?2", params![new, rowid]).map_err(e)?;
            }
        }
        for (old, new) in renamed {
            tx.execute("UPDATE OR IGNORE results SET key = ?1 WHERE key = ?2", params![new, old]).map_err(e)?;
        }
        Ok(())
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sql { path: self.path.clone(), source }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Records a run's settings, or checks them against the stored ones when it exists: a run
    /// resumes only under the settings it started with.
    pub fn begin_run(&self, name: &str, kind: &str, settings: &serde_json::Value) -> Result<bool, StoreError> {
        // Insert-or-keep in one statement: two processes starting the same new run at once
        // both succeed, one creating it and the other resuming it.
        let created = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO runs (name, kind, settings, created) VALUES (?1, ?2, ?3, ?4)",
                params![name, kind, settings.to_string(), now()],
            )
            .map_err(|e| self.err(e))?;
        if created == 1 {
            return Ok(false);
        }
        let (k, s): (String, String) = self
            .conn
            .query_row("SELECT kind, settings FROM runs WHERE name = ?1", [name], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        let old: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
        if k != kind {
            return Err(StoreError::Settings(format!(
                "{}: run `{name}` is a {k} run, not a {kind} run (choose another run name or store)",
                self.path
            )));
        }
        if let Some((field, was, now)) = first_difference("", &old, settings) {
            return Err(StoreError::Settings(format!(
                "{}: run `{name}` was started with {field} = {was}, not {now}; resume it with the same \
                 settings, or start a new run under another name or in another store",
                self.path
            )));
        }
        Ok(true)
    }

    /// The settings of a stored run.
    pub fn run_settings(&self, name: &str) -> Result<Option<(String, serde_json::Value)>, StoreError> {
        let row: Option<(String, String)> = self
            .conn
            .query_row("SELECT kind, settings FROM runs WHERE name = ?1", [name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(row.map(|(k, s)| (k, serde_json::from_str(&s).unwrap_or_default())))
    }

    /// Records a candidate (once: a replayed run finds its own rows).
    pub fn record_candidate(&self, run: &str, c: &CandidateRow) -> Result<(), StoreError> {
        let blob: Option<Vec<u8>> =
            c.phenotype.as_ref().map(|v| v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect());
        self.conn
            .execute(
                "INSERT OR IGNORE INTO candidates (run, seq, genome, text, key, verdict, sign, phenotype)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![run, c.seq as i64, c.genome, c.text, c.key, c.verdict, c.sign, blob],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The candidates of a run, in order.
    pub fn candidates(&self, run: &str) -> Result<Vec<CandidateRow>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT seq, genome, text, key, verdict, sign, phenotype FROM candidates
                 WHERE run = ?1 ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([run], |r| {
                let blob: Option<Vec<u8>> = r.get(6)?;
                Ok(CandidateRow {
                    seq: r.get::<_, i64>(0)? as usize,
                    genome: r.get(1)?,
                    text: r.get(2)?,
                    key: r.get(3)?,
                    verdict: r.get(4)?,
                    sign: r.get(5)?,
                    phenotype: blob.map(|b| {
                        b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect()
                    }),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The stored result of a loss under a spec.
    pub fn result(&self, key: &str, spec: &TrainSpec) -> Result<Option<Outcome>, StoreError> {
        self.conn
            .query_row(
                "SELECT fitness, test_accuracy, metrics, seconds FROM results WHERE key = ?1 AND spec = ?2",
                params![key, spec.key()],
                |r| {
                    let m: String = r.get(2)?;
                    Ok(Outcome {
                        fitness: r.get(0)?,
                        test_accuracy: r.get(1)?,
                        metrics: serde_json::from_str(&m).unwrap_or_default(),
                        seconds: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Asks for a training unless its result or job already exists.
    pub fn enqueue(&self, key: &str, spec: &TrainSpec, text: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO jobs (key, spec, text) SELECT ?1, ?2, ?3
                 WHERE NOT EXISTS (SELECT 1 FROM results WHERE key = ?1 AND spec = ?2)",
                params![key, spec.key(), text],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Claims the oldest pending job for `worker`, atomically.
    pub fn claim(&self, worker: &str) -> Result<Option<Job>, StoreError> {
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let row: Option<(i64, String, String, String)> = tx
            .query_row(
                "UPDATE jobs SET status = 'running', worker = ?1, claimed = ?2, attempts = attempts + 1
                 WHERE id = (SELECT id FROM jobs WHERE status = 'pending' ORDER BY id LIMIT 1)
                 RETURNING id, key, spec, text",
                params![worker, now()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(match row {
            Some((id, key, spec, text)) => match serde_json::from_str(&spec) {
                Ok(spec) => Some(Job { id, key, spec, text }),
                Err(e) => return Err(StoreError::Corrupt(format!("{}: job {id} has a bad spec: {e}", self.path))),
            },
            None => None,
        })
    }

    /// Stores a job's result and marks it done, in one transaction.
    pub fn complete(&self, job: &Job, worker: &str, metrics: &Metrics, seconds: f64) -> Result<(), StoreError> {
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO results (key, spec, fitness, test_accuracy, metrics, seconds, worker, finished)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                job.key,
                job.spec.key(),
                metrics.fitness,
                metrics.test_accuracy,
                serde_json::to_string(metrics).expect("plain data"),
                seconds,
                worker,
                now()
            ],
        )
        .map_err(|e| self.err(e))?;
        tx.execute("UPDATE jobs SET status = 'done' WHERE id = ?1", [job.id]).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Puts back jobs whose worker died: claims by a process of this host that no longer
    /// exists, and claims older than `lease` seconds (from other hosts).
    pub fn requeue_stale(&self, lease: f64) -> Result<usize, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT id, worker, claimed FROM jobs WHERE status = 'running'")
            .map_err(|e| self.err(e))?;
        let running: Vec<(i64, String, f64)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        let host = hostname();
        let mut n = 0;
        for (id, worker, claimed) in running {
            let mut parts = worker.split(':');
            let (h, pid) = (parts.next().unwrap_or(""), parts.next().and_then(|p| p.parse::<u32>().ok()));
            let dead_here = h == host && pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists());
            if dead_here || now() - claimed > lease {
                n += self
                    .conn
                    .execute(
                        "UPDATE jobs SET status = 'pending', worker = NULL WHERE id = ?1 AND status = 'running'",
                        [id],
                    )
                    .map_err(|e| self.err(e))?;
            }
        }
        Ok(n)
    }

    /// Jobs not yet done (pending or running).
    pub fn open_jobs(&self) -> Result<usize, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM jobs WHERE status != 'done'", [], |r| r.get::<_, i64>(0))
            .map(|n| n as usize)
            .map_err(|e| self.err(e))
    }

    /// Number of finished trainings, and of training attempts (claims), over the store.
    pub fn counts(&self) -> Result<(usize, usize), StoreError> {
        let done: i64 =
            self.conn.query_row("SELECT COUNT(*) FROM results", [], |r| r.get(0)).map_err(|e| self.err(e))?;
        let attempts: i64 = self
            .conn
            .query_row("SELECT COALESCE(SUM(attempts), 0) FROM jobs", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok((done as usize, attempts as usize))
    }

    /// Replaces a run's stored population (candidate sequence numbers, oldest first).
    pub fn set_population(&self, run: &str, seqs: &[usize]) -> Result<(), StoreError> {
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        tx.execute("DELETE FROM population WHERE run = ?1", [run]).map_err(|e| self.err(e))?;
        for (i, s) in seqs.iter().enumerate() {
            tx.execute(
                "INSERT INTO population (run, position, seq) VALUES (?1, ?2, ?3)",
                params![run, i as i64, *s as i64],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// A run's stored population, oldest first.
    pub fn population(&self, run: &str) -> Result<Vec<usize>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT seq FROM population WHERE run = ?1 ORDER BY position")
            .map_err(|e| self.err(e))?;
        let rows = st.query_map([run], |r| r.get::<_, i64>(0).map(|s| s as usize)).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Every result under one spec: (key, fitness, test accuracy).
    pub fn results_for(&self, spec: &TrainSpec) -> Result<Vec<(String, Outcome)>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT key, fitness, test_accuracy, metrics, seconds FROM results WHERE spec = ?1")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([spec.key()], |r| {
                let m: String = r.get(3)?;
                Ok((
                    r.get(0)?,
                    Outcome {
                        fitness: r.get(1)?,
                        test_accuracy: r.get(2)?,
                        metrics: serde_json::from_str(&m).unwrap_or_default(),
                        seconds: r.get(4)?,
                    },
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}

/// The first leaf where two settings differ, as (dotted path, old, new).
fn first_difference(
    path: &str,
    old: &serde_json::Value,
    new: &serde_json::Value,
) -> Option<(String, serde_json::Value, serde_json::Value)> {
    match (old.as_object(), new.as_object()) {
        (Some(o), Some(n)) => n.iter().find_map(|(k, v)| {
            let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            first_difference(&p, o.get(k).unwrap_or(&serde_json::Value::Null), v)
        }),
        _ if old != new => Some((path.to_string(), old.clone(), new.clone())),
        _ => None,
    }
}

/// This machine's name, for worker ids.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "host".into())
}

/// A worker id: `host:pid:n`, so a restarted process can tell its dead claims from live ones.
pub fn worker_id(n: usize) -> String {
    format!("{}:{}:{n}", hostname(), std::process::id())
}
