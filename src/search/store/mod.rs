//! The search's store: every candidate a run looked at, the training jobs it asked for, and
//! their results, in an embedded SQLite file (the default) or on a PostgreSQL server (for
//! workers on several machines).
//!
//! The store's logic is written once, here, as SQL over a `Conn`; `sqlite` and `postgres`
//! each implement that one trait, with their own schema and identity check, so the search,
//! sample, evaluation and workers never know which they have.
//!
//! A training result is cached by (canonical key, training spec): no loss is trained twice
//! under one spec, across runs and across restarts. Jobs are leased: a claim (one atomic
//! `UPDATE ... RETURNING`, `FOR UPDATE SKIP LOCKED` on PostgreSQL) holds a job for a lease the
//! worker's heartbeat renews; a job whose lease expired goes back to the queue with its attempt
//! counted, and fails for good after [`MAX_ATTEMPTS`]. A result is accepted only from the
//! worker that holds the job's lease, so a worker that lost it cannot overwrite a newer result.

mod postgres;
mod sqlite;

pub use postgres::PgTarget;

use crate::train::TrainSpec;
use lossc_runtime::train::Metrics;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// SQLite's application id of a lossc store ("LOSS"); PostgreSQL stores record "lossc".
pub const APPLICATION_ID: i32 = 0x4c4f_5353;
/// The store's schema version. 3: job leases (`lease_until`, `error`, status `failed`);
/// 2: keys of key format 2 (ops hashed by name), and the application id; 1: the stores from
/// before versioning.
pub const SCHEMA_VERSION: i32 = 3;
/// The tables of a store; a database with any other is not one.
const TABLES: [&str; 5] = ["runs", "candidates", "jobs", "results", "population"];
/// Claims of one job before it is marked failed: a loss that kills its worker every time
/// (or a worker that keeps losing its lease) does not stall the search.
pub const MAX_ATTEMPTS: i64 = 3;
/// How long a claim holds a job without a heartbeat, unless set otherwise.
pub const DEFAULT_LEASE: f64 = 30.0;

/// Where a store lives, as `--db` takes it: a file path (SQLite) or a
/// `postgres://user@host:port/dbname` / `postgresql://...` URL.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(PathBuf),
    Postgres(PgTarget),
}

impl std::str::FromStr for Db {
    type Err = String;
    fn from_str(s: &str) -> Result<Db, String> {
        match s.split_once("://") {
            Some((scheme, _)) if scheme == "postgres" || scheme == "postgresql" => Ok(Db::Postgres(s.parse()?)),
            Some((scheme, _))
                if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || c == '+') =>
            {
                Err(format!(
                    "`{scheme}://` stores are not supported: --db takes a file path (SQLite) or a postgres:// URL"
                ))
            }
            _ if s.is_empty() => Err("an empty store path".into()),
            _ => Ok(Db::Sqlite(PathBuf::from(s))),
        }
    }
}

/// A store as messages name it: the path, or the URL without its password.
impl std::fmt::Display for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Db::Sqlite(p) => write!(f, "{}", p.display()),
            Db::Postgres(t) => write!(f, "{t}"),
        }
    }
}

impl From<&Path> for Db {
    fn from(p: &Path) -> Db {
        Db::Sqlite(p.to_path_buf())
    }
}
impl From<PathBuf> for Db {
    fn from(p: PathBuf) -> Db {
        Db::Sqlite(p)
    }
}
impl From<&PathBuf> for Db {
    fn from(p: &PathBuf) -> Db {
        Db::Sqlite(p.clone())
    }
}
impl From<&Db> for Db {
    fn from(d: &Db) -> Db {
        d.clone()
    }
}

/// A store error, with the store it concerns (never with a password).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Sql { path: String, source: SqlError },
    /// The server could not be reached or refused us; `input` when the URL, user, password or
    /// database name is what is wrong.
    #[error("{path}: cannot connect: {message}")]
    Connect { path: String, message: String, input: bool },
    /// A `--db` URL or PG environment variable that does not parse.
    #[error("{0}")]
    Url(String),
    /// A run of this name exists with other settings (or of another kind).
    #[error("{0}")]
    Settings(String),
    #[error("{path}: no {kind} run named `{run}`")]
    NoRun { path: String, kind: &'static str, run: String },
    #[error("{path} is not a lossc store ({why}); it was left as it was")]
    NotAStore { path: String, why: String },
    /// A store file that must exist (to read a run from it) and does not.
    #[error("{0}: no such store")]
    Missing(String),
    /// A store file that cannot be made there: the path is a folder, or its folder is missing.
    #[error("{path}: {why}")]
    Path { path: String, why: String },
    #[error("{path} was written by a newer lossc (store version {version}); this one reads up to version {max}", max = SCHEMA_VERSION)]
    Newer { path: String, version: i32 },
    /// The store holds something lossc did not write.
    #[error("{0}")]
    Corrupt(String),
    /// A resumed run generated another candidate than the one stored at that place.
    #[error(
        "{path}: run `{run}` does not replay as it was stored:\n  candidate c{seq} was {stored}\n  and is now \
         {now}:\nthis lossc generates, simplifies or screens candidates differently from the one that started \
         the run. The run's history was left as it was; to go on with this lossc, start a new run in the same \
         store (`--run NAME`), which reuses the stored trainings of the same losses and settings"
    )]
    Diverged { path: String, run: String, seq: usize, stored: String, now: String },
}

impl crate::error::Classify for StoreError {
    fn blame(&self) -> crate::error::Blame {
        use crate::error::Blame;
        match self {
            StoreError::Connect { input: true, .. }
            | StoreError::Url(_)
            | StoreError::Settings(_)
            | StoreError::NoRun { .. }
            | StoreError::NotAStore { .. }
            | StoreError::Missing(_)
            | StoreError::Path { .. }
            | StoreError::Newer { .. }
            | StoreError::Diverged { .. } => Blame::Input,
            _ => Blame::Failure,
        }
    }
}

/// A driver's error.
pub type SqlError = Box<dyn std::error::Error + Send + Sync>;

/// A training job as a worker sees it: `attempt` tells this claim from earlier ones, so only
/// the holder of the current lease can renew it or store the result.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: i64,
    pub key: String,
    pub spec: TrainSpec,
    pub text: String,
    pub attempt: i64,
}

/// A job's state, for reports and tests.
#[derive(Clone, Debug)]
pub struct JobRow {
    pub id: i64,
    pub key: String,
    /// pending, running, done or failed.
    pub status: String,
    pub worker: Option<String>,
    /// When the latest claim was made (seconds since the epoch, on the store's clock).
    pub claimed: Option<f64>,
    /// When the running claim's lease ends, on the store's clock.
    pub lease_until: Option<f64>,
    pub attempts: i64,
    /// Why the latest attempt ended without a result.
    pub error: Option<String>,
}

/// A stored result.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub fitness: f64,
    pub test_accuracy: Option<f64>,
    pub metrics: Metrics,
    pub seconds: f64,
}

impl Outcome {
    /// What a job that failed for good counts as: fitness 0, with the reason, as an early stop.
    pub fn failed(error: &str) -> Outcome {
        let metrics =
            Metrics { stopped: Some(format!("failed after {MAX_ATTEMPTS} attempts: {error}")), ..Default::default() };
        Outcome { fitness: 0.0, test_accuracy: None, metrics, seconds: 0.0 }
    }
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

/// What renewing a lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Extended: the worker holds the job for another lease.
    Renewed,
    /// The job is done under this claim (its result stored): nothing is left to hold.
    Done,
    /// Lost: the lease ran out and the job went back to the queue, or on to another worker.
    Lost,
}

pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// A value bound to or read from a statement: the five kinds both databases share.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Val {
    fn from(v: i64) -> Val {
        Val::Int(v)
    }
}
impl From<usize> for Val {
    fn from(v: usize) -> Val {
        Val::Int(v as i64)
    }
}
impl From<f64> for Val {
    fn from(v: f64) -> Val {
        Val::Real(v)
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Val {
        Val::Text(v.to_string())
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Val {
        Val::Text(v.clone())
    }
}
impl From<String> for Val {
    fn from(v: String) -> Val {
        Val::Text(v)
    }
}
impl From<Vec<u8>> for Val {
    fn from(v: Vec<u8>) -> Val {
        Val::Blob(v)
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Val {
        v.map_or(Val::Null, Into::into)
    }
}

/// Statement arguments: `args![a, b]` is `&[Val::from(a), Val::from(b)]`.
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$(Val::from($v)),*] };
}

/// One result row.
pub(crate) struct Row(pub(crate) Vec<Val>);

impl Row {
    fn get(&self, i: usize) -> &Val {
        self.0.get(i).unwrap_or(&Val::Null)
    }
    fn bad(&self, i: usize, want: &str) -> StoreError {
        StoreError::Corrupt(format!("column {i} holds {:?} where {want} was expected", self.get(i)))
    }
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        match self.get(i) {
            Val::Int(v) => Ok(*v),
            _ => Err(self.bad(i, "an integer")),
        }
    }
    fn real(&self, i: usize) -> Result<f64, StoreError> {
        self.opt_real(i)?.ok_or_else(|| self.bad(i, "a number"))
    }
    fn opt_real(&self, i: usize) -> Result<Option<f64>, StoreError> {
        match self.get(i) {
            Val::Null => Ok(None),
            Val::Real(v) => Ok(Some(*v)),
            Val::Int(v) => Ok(Some(*v as f64)),
            _ => Err(self.bad(i, "a number")),
        }
    }
    fn text(&self, i: usize) -> Result<String, StoreError> {
        self.opt_text(i)?.ok_or_else(|| self.bad(i, "text"))
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        match self.get(i) {
            Val::Null => Ok(None),
            Val::Text(v) => Ok(Some(v.clone())),
            _ => Err(self.bad(i, "text")),
        }
    }
    fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        match self.get(i) {
            Val::Null => Ok(None),
            Val::Blob(v) => Ok(Some(v.clone())),
            _ => Err(self.bad(i, "bytes")),
        }
    }
}

/// The SQL differences the shared statements meet, by database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// A statement in this dialect. The shared text numbers its parameters `?N` (PostgreSQL:
    /// `$N`), reads the clock as `{now}` (seconds since the epoch on the store's own clock, so
    /// leases on several machines agree on PostgreSQL's), and marks the claim's row lock
    /// `{skip_locked}` (SQLite's write lock already serialises claims).
    fn sql(self, text: &str) -> String {
        match self {
            Dialect::Sqlite => {
                text.replace("{now}", "((julianday('now') - 2440587.5) * 86400.0)").replace("{skip_locked}", "")
            }
            Dialect::Postgres => text
                .replace("{now}", "CAST(extract(epoch FROM clock_timestamp()) AS DOUBLE PRECISION)")
                .replace("{skip_locked}", "FOR UPDATE SKIP LOCKED")
                .replace('?', "$"),
        }
    }

    /// How a writing transaction starts: SQLite takes its write lock at once, so two claims
    /// cannot both read before either writes.
    fn begin(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }
}

/// A connection that runs SQL: the one thing the two stores implement.
pub(crate) trait Conn: Send {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; the rows it changed.
    fn execute(&self, sql: &str, args: &[Val]) -> Result<u64, SqlError>;
    /// Runs a query (or a statement with `RETURNING`); its rows.
    fn query(&self, sql: &str, args: &[Val]) -> Result<Vec<Row>, SqlError>;
    /// Runs statements without arguments.
    fn batch(&self, sql: &str) -> Result<(), SqlError>;
    /// A problem the database finds in its own files, if any.
    fn integrity(&self) -> Result<Option<String>, SqlError>;
}

/// An open store.
pub struct Store {
    conn: Box<dyn Conn>,
    db: Db,
    at: String,
}

impl Store {
    /// Opens (creating if needed) the store at `db`. A file or database that is not a lossc
    /// store is refused and left as it was; a store from an older lossc is brought to this
    /// version first.
    pub fn open(db: impl Into<Db>) -> Result<Store, StoreError> {
        let db = db.into();
        let at = db.to_string();
        let conn: Box<dyn Conn> = match &db {
            Db::Sqlite(p) => Box::new(sqlite::open(p, &at)?),
            Db::Postgres(t) => Box::new(postgres::open(t, &at)?),
        };
        Ok(Store { conn, db, at })
    }

    /// Opens a store that must already exist, for commands that read a run from it: a
    /// mistyped file name is an error rather than a new, empty store left behind.
    pub fn open_existing(db: impl Into<Db>) -> Result<Store, StoreError> {
        let db = db.into();
        match &db {
            Db::Sqlite(p) if !p.exists() => Err(StoreError::Missing(db.to_string())),
            _ => Store::open(db),
        }
    }

    /// Where the store is, as `--db` gave it.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The store as messages name it (a URL without its password).
    pub fn path(&self) -> &str {
        &self.at
    }

    /// Whether the connection to the store is encrypted (PostgreSQL's own account of it; an
    /// SQLite file has no connection).
    pub fn encrypted(&self) -> Result<bool, StoreError> {
        if self.conn.dialect() == Dialect::Sqlite {
            return Ok(false);
        }
        let r = self.row("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])?;
        Ok(matches!(r.map(|r| r.0), Some(v) if v.first() == Some(&Val::Int(1))))
    }

    fn err(&self, source: SqlError) -> StoreError {
        StoreError::Sql { path: self.at.clone(), source }
    }

    fn exec(&self, sql: &str, args: &[Val]) -> Result<u64, StoreError> {
        self.conn.execute(&self.conn.dialect().sql(sql), args).map_err(|e| self.err(e))
    }

    fn rows(&self, sql: &str, args: &[Val]) -> Result<Vec<Row>, StoreError> {
        self.conn.query(&self.conn.dialect().sql(sql), args).map_err(|e| self.err(e))
    }

    fn row(&self, sql: &str, args: &[Val]) -> Result<Option<Row>, StoreError> {
        Ok(self.rows(sql, args)?.into_iter().next())
    }

    /// Runs `f` in one writing transaction: all of it or none of it.
    fn tx<T>(&self, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.conn.batch(self.conn.dialect().begin()).map_err(|e| self.err(e))?;
        match f() {
            Ok(v) => {
                self.conn.batch("COMMIT").map_err(|e| self.err(e))?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// The database's check of its own files (SQLite's `quick_check`): a store damaged on disk
    /// is an error here, at the start of a run or a worker, rather than a silent "nothing to
    /// do" later.
    pub fn check_integrity(&self) -> Result<(), StoreError> {
        match self.conn.integrity().map_err(|e| self.err(e))? {
            None => Ok(()),
            Some(v) => Err(StoreError::Corrupt(format!("{}: the file is damaged ({v})", self.at))),
        }
    }

    /// Records a run's settings, or checks them against the stored ones when it exists: a run
    /// resumes only under the settings it started with.
    pub fn begin_run(&self, name: &str, kind: &str, settings: &serde_json::Value) -> Result<bool, StoreError> {
        // Insert-or-keep in one statement: two processes starting the same new run at once
        // both succeed, one creating it and the other resuming it.
        let created = self.exec(
            "INSERT INTO runs (name, kind, settings, created) VALUES (?1, ?2, ?3, {now}) ON CONFLICT DO NOTHING",
            args![name, kind, settings.to_string()],
        )?;
        if created == 1 {
            return Ok(false);
        }
        let Some((k, old)) = self.run_settings(name)? else {
            return Err(StoreError::Corrupt(format!("{}: run `{name}` vanished while it was opened", self.at)));
        };
        if k != kind {
            return Err(StoreError::Settings(format!(
                "{}: run `{name}` is a {k} run, not a {kind} run (choose another run name or store)",
                self.at
            )));
        }
        if let Some((field, was, now)) = first_difference("", &old, settings) {
            // A field left out of the settings has its default (a CPU spec's device).
            let shown = |v: serde_json::Value| if v.is_null() { "its default".to_string() } else { v.to_string() };
            return Err(StoreError::Settings(format!(
                "{}: run `{name}` was started with {field} = {}, not {}; resume it with the same \
                 settings, or start a new run under another name or in another store",
                self.at,
                shown(was),
                shown(now)
            )));
        }
        Ok(true)
    }

    /// The settings of a stored run.
    pub fn run_settings(&self, name: &str) -> Result<Option<(String, serde_json::Value)>, StoreError> {
        match self.row("SELECT kind, settings FROM runs WHERE name = ?1", args![name])? {
            Some(r) => Ok(Some((r.text(0)?, serde_json::from_str(&r.text(1)?).unwrap_or_default()))),
            None => Ok(None),
        }
    }

    /// Records a candidate (once: a replayed run finds its own rows).
    pub fn record_candidate(&self, run: &str, c: &CandidateRow) -> Result<(), StoreError> {
        let blob: Option<Vec<u8>> =
            c.phenotype.as_ref().map(|v| v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect());
        let inserted = self.exec(
            "INSERT INTO candidates (run, seq, genome, text, key, verdict, sign, phenotype)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
            args![run, c.seq, c.genome.clone(), &c.text, c.key.clone(), &c.verdict, c.sign, blob],
        )?;
        if inserted == 0 {
            self.check_replayed(run, c)?;
        }
        Ok(())
    }

    /// A resumed run generates its candidates again: the one stored at `c`'s place must be the
    /// same loss (genome, key, accepted or not), else the run's history and what follows would
    /// be two different searches under one name.
    fn check_replayed(&self, run: &str, c: &CandidateRow) -> Result<(), StoreError> {
        let Some(r) = self
            .row("SELECT genome, text, key, verdict FROM candidates WHERE run = ?1 AND seq = ?2", args![run, c.seq])?
        else {
            return Ok(());
        };
        let (genome, text, key, verdict) = (r.opt_text(0)?, r.text(1)?, r.opt_text(2)?, r.text(3)?);
        let same_genome = genome.is_none() || c.genome.is_none() || genome == c.genome;
        if same_genome && key == c.key && (verdict == "ok") == (c.verdict == "ok") {
            return Ok(());
        }
        let shown = |text: &str, verdict: &str| {
            let body = text.split_whitespace().collect::<Vec<_>>().join(" ");
            if verdict == "ok" { format!("`{body}` (accepted)") } else { format!("`{body}` (rejected: {verdict})") }
        };
        Err(StoreError::Diverged {
            path: self.at.clone(),
            run: run.to_string(),
            seq: c.seq,
            stored: shown(&text, &verdict),
            now: shown(&c.text, &c.verdict),
        })
    }

    /// The candidates of a run, in order.
    pub fn candidates(&self, run: &str) -> Result<Vec<CandidateRow>, StoreError> {
        let rows = self.rows(
            "SELECT seq, genome, text, key, verdict, sign, phenotype FROM candidates WHERE run = ?1 ORDER BY seq",
            args![run],
        )?;
        rows.iter()
            .map(|r| {
                Ok(CandidateRow {
                    seq: r.int(0)? as usize,
                    genome: r.opt_text(1)?,
                    text: r.text(2)?,
                    key: r.opt_text(3)?,
                    verdict: r.text(4)?,
                    sign: r.opt_real(5)?,
                    phenotype: r.opt_blob(6)?.map(|b| {
                        b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect()
                    }),
                })
            })
            .collect()
    }

    /// An outcome from its columns (fitness, test accuracy, metrics, seconds) from `i`.
    fn outcome(r: &Row, i: usize) -> Result<Outcome, StoreError> {
        Ok(Outcome {
            fitness: r.real(i)?,
            test_accuracy: r.opt_real(i + 1)?,
            metrics: serde_json::from_str(&r.text(i + 2)?).unwrap_or_default(),
            seconds: r.real(i + 3)?,
        })
    }

    /// The stored result of a loss under a spec.
    pub fn result(&self, key: &str, spec: &TrainSpec) -> Result<Option<Outcome>, StoreError> {
        let sql = "SELECT fitness, test_accuracy, metrics, seconds FROM results WHERE key = ?1 AND spec = ?2";
        self.row(sql, args![key, spec.key()])?.map(|r| Self::outcome(&r, 0)).transpose()
    }

    /// A job's outcome once it is settled: its result, or [`Outcome::failed`] if it failed for
    /// good.
    /// One query (the coordinator asks it for every awaited job, many times a second).
    pub fn settled(&self, key: &str, spec: &TrainSpec) -> Result<Option<Outcome>, StoreError> {
        let r = self.row(
            "SELECT fitness, test_accuracy, metrics, seconds, NULL FROM results WHERE key = ?1 AND spec = ?2
             UNION ALL
             SELECT NULL, NULL, NULL, NULL, error FROM jobs WHERE key = ?1 AND spec = ?2 AND status = 'failed'",
            args![key, spec.key()],
        )?;
        match r {
            None => Ok(None),
            Some(r) if r.opt_real(0)?.is_some() => Self::outcome(&r, 0).map(Some),
            Some(r) => Ok(Some(Outcome::failed(&r.opt_text(4)?.unwrap_or_default()))),
        }
    }

    /// Asks for a training unless its result or job already exists.
    pub fn enqueue(&self, key: &str, spec: &TrainSpec, text: &str) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO jobs (key, spec, text) SELECT ?1, ?2, ?3
             WHERE NOT EXISTS (SELECT 1 FROM results WHERE key = ?1 AND spec = ?2) ON CONFLICT DO NOTHING",
            args![key, spec.key(), text],
        )?;
        Ok(())
    }

    /// Claims the oldest pending job for `worker`, atomically, holding it for `lease` seconds
    /// (expired leases are put back first).
    pub fn claim(&self, worker: &str, lease: f64) -> Result<Option<Job>, StoreError> {
        self.claim_unlike(worker, lease, &[])
    }

    /// [`Store::claim`], passing over jobs with the training spec of any of the jobs `unlike`
    /// (by id): a worker's machine cannot train those (their device or data is missing there).
    pub fn claim_unlike(&self, worker: &str, lease: f64, unlike: &[i64]) -> Result<Option<Job>, StoreError> {
        self.expire()?;
        if unlike.is_empty() {
            return self.claim_where("", args![worker, lease]);
        }
        // Integers, written into the statement: a list of any length needs no parameters.
        let ids: Vec<String> = unlike.iter().map(i64::to_string).collect();
        let condition = format!("AND spec NOT IN (SELECT spec FROM jobs WHERE id IN ({}))", ids.join(", "));
        self.claim_where(&condition, args![worker, lease])
    }

    /// Claims the oldest pending job with the same training spec as job `like` (to train
    /// beside it in one population), or None.
    pub fn claim_like(&self, worker: &str, lease: f64, like: &Job) -> Result<Option<Job>, StoreError> {
        self.claim_where("AND spec = (SELECT spec FROM jobs WHERE id = ?3)", args![worker, lease, like.id])
    }

    /// Claims the oldest pending job that also meets `condition` (SQL on `jobs`) for worker
    /// `?1` with a lease of `?2` seconds; `args` may go on with the condition's parameters.
    fn claim_where(&self, condition: &str, args: &[Val]) -> Result<Option<Job>, StoreError> {
        let sql = format!(
            "UPDATE jobs SET status = 'running', worker = ?1, claimed = {{now}}, lease_until = {{now}} + ?2,
                    attempts = attempts + 1
             WHERE id = (SELECT id FROM jobs WHERE status = 'pending' {condition}
                         ORDER BY id LIMIT 1 {{skip_locked}})
             RETURNING id, key, spec, text, attempts"
        );
        let row = self.tx(|| self.row(&sql, args))?;
        let Some(r) = row else { return Ok(None) };
        let id = r.int(0)?;
        let spec = serde_json::from_str(&r.text(2)?)
            .map_err(|e| StoreError::Corrupt(format!("{}: job {id} has a bad spec: {e}", self.at)))?;
        Ok(Some(Job { id, key: r.text(1)?, spec, text: r.text(3)?, attempt: r.int(4)? }))
    }

    /// Extends by `lease` seconds from now the lease of every job `worker` holds, in one
    /// statement (a population's jobs in one round trip to a server), and says of each of
    /// `jobs` whether its lease was renewed, or it is done (stored while its population trains
    /// on), or the lease was lost.
    pub fn renew(&self, jobs: &[Job], worker: &str, lease: f64) -> Result<Vec<Lease>, StoreError> {
        let rows = self.rows(
            "UPDATE jobs SET lease_until = {now} + ?2 WHERE worker = ?1 AND status = 'running' RETURNING id, attempts",
            args![worker, lease],
        )?;
        let renewed = rows.iter().map(|r| Ok((r.int(0)?, r.int(1)?))).collect::<Result<Vec<_>, StoreError>>()?;
        jobs.iter()
            .map(|job| {
                if renewed.contains(&(job.id, job.attempt)) {
                    return Ok(Lease::Renewed);
                }
                let done = self.rows(
                    "SELECT 1 FROM jobs WHERE id = ?1 AND worker = ?2 AND attempts = ?3 AND status = 'done'",
                    args![job.id, worker, job.attempt],
                )?;
                Ok(if done.is_empty() { Lease::Lost } else { Lease::Done })
            })
            .collect()
    }

    /// Stores a job's result and marks it done, in one transaction, if `worker` still holds
    /// its lease; false (and nothing stored) if it does not.
    pub fn complete(&self, job: &Job, worker: &str, metrics: &Metrics, seconds: f64) -> Result<bool, StoreError> {
        self.tx(|| {
            let held = self.exec(
                "UPDATE jobs SET status = 'done', lease_until = NULL
                 WHERE id = ?1 AND worker = ?2 AND attempts = ?3 AND status = 'running'",
                args![job.id, worker, job.attempt],
            )?;
            if held == 0 {
                return Ok(false);
            }
            self.exec(
                "INSERT INTO results (key, spec, fitness, test_accuracy, metrics, seconds, worker, finished)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, {now})",
                args![
                    &job.key,
                    job.spec.key(),
                    metrics.fitness,
                    metrics.test_accuracy,
                    serde_json::to_string(metrics).expect("plain data"),
                    seconds,
                    worker
                ],
            )?;
            Ok(true)
        })
    }

    /// Gives a job back after an attempt that ended without a result: to the queue, or failed
    /// for good after [`MAX_ATTEMPTS`], with `error` recorded either way.
    pub fn release(&self, job: &Job, worker: &str, error: &str) -> Result<(), StoreError> {
        self.release_claim(job.id, worker, job.attempt, error)
    }

    /// [`Store::release`] of a claim known by its job id, worker and attempt.
    fn release_claim(&self, id: i64, worker: &str, attempt: i64, error: &str) -> Result<(), StoreError> {
        self.exec(
            "UPDATE jobs SET status = CASE WHEN attempts >= ?4 THEN 'failed' ELSE 'pending' END,
                    worker = NULL, lease_until = NULL, error = ?5
             WHERE id = ?1 AND worker = ?2 AND attempts = ?3 AND status = 'running'",
            args![id, worker, attempt, MAX_ATTEMPTS, error],
        )?;
        Ok(())
    }

    /// Gives back a job `worker` claimed but cannot train on its machine (the job's device does
    /// not open there, or its data cannot be read there): pending again for another worker, the
    /// attempt not counted (the job did nothing wrong), `error` recorded for `lossc status`.
    pub fn decline(&self, job: &Job, worker: &str, error: &str) -> Result<(), StoreError> {
        self.exec(
            "UPDATE jobs SET status = 'pending', worker = NULL, lease_until = NULL, attempts = attempts - 1, error = ?4
             WHERE id = ?1 AND worker = ?2 AND attempts = ?3 AND status = 'running'",
            args![job.id, worker, job.attempt, error],
        )?;
        Ok(())
    }

    /// Puts back every job `worker` holds, unfinished but not failed (a search stopped at its
    /// time limit): pending again, and the attempt is not counted. The number put back.
    pub fn put_back(&self, worker: &str) -> Result<usize, StoreError> {
        let n = self.exec(
            "UPDATE jobs SET status = 'pending', worker = NULL, lease_until = NULL, attempts = attempts - 1
             WHERE worker = ?1 AND status = 'running'",
            args![worker],
        )?;
        Ok(n as usize)
    }

    /// Puts back every job whose lease has expired (its worker died or lost the store), or
    /// fails it after [`MAX_ATTEMPTS`]; the number put back or failed.
    pub fn expire(&self) -> Result<usize, StoreError> {
        let n = self.exec(
            "UPDATE jobs SET status = CASE WHEN attempts >= ?1 THEN 'failed' ELSE 'pending' END,
                    error = 'the lease of ' || worker || ' expired', worker = NULL, lease_until = NULL
             WHERE status = 'running' AND lease_until < {now}",
            args![MAX_ATTEMPTS],
        )?;
        Ok(n as usize)
    }

    /// Puts back at once the jobs held by worker processes of this machine that no longer
    /// exist (a killed search being restarted need not wait out their leases). Worker ids carry
    /// the host and its boot, so a live process on another machine is never taken for dead.
    pub fn release_dead_here(&self) -> Result<usize, StoreError> {
        let rows = self.rows("SELECT id, worker, attempts FROM jobs WHERE status = 'running'", &[])?;
        let here = format!("{}:", machine());
        let mut n = 0;
        for r in rows {
            let (id, worker, attempt) = (r.int(0)?, r.opt_text(1)?.unwrap_or_default(), r.int(2)?);
            let Some(rest) = worker.strip_prefix(&here) else { continue };
            let Some(pid) = rest.split(':').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                self.release_claim(id, &worker, attempt, &format!("worker {worker} is gone"))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        let rows = self
            .rows("SELECT id, key, status, worker, claimed, lease_until, attempts, error FROM jobs ORDER BY id", &[])?;
        rows.iter()
            .map(|r| {
                Ok(JobRow {
                    id: r.int(0)?,
                    key: r.text(1)?,
                    status: r.text(2)?,
                    worker: r.opt_text(3)?,
                    claimed: r.opt_real(4)?,
                    lease_until: r.opt_real(5)?,
                    attempts: r.int(6)?,
                    error: r.opt_text(7)?,
                })
            })
            .collect()
    }

    /// The store's clock (seconds since the epoch): what leases are measured against.
    pub fn clock(&self) -> Result<f64, StoreError> {
        let r = self.row("SELECT {now}", &[])?;
        r.map(|r| r.real(0)).transpose()?.ok_or_else(|| StoreError::Corrupt("the clock answered nothing".into()))
    }

    /// Every run: name, kind and number of candidates, oldest first.
    pub fn runs(&self) -> Result<Vec<(String, String, usize)>, StoreError> {
        let rows = self.rows(
            "SELECT r.name, r.kind, (SELECT COUNT(*) FROM candidates c WHERE c.run = r.name) FROM runs r ORDER BY r.created",
            &[],
        )?;
        rows.iter().map(|r| Ok((r.text(0)?, r.text(1)?, r.int(2)? as usize))).collect()
    }

    /// Jobs that failed for good.
    pub fn failed_jobs(&self) -> Result<usize, StoreError> {
        let r = self.row("SELECT COUNT(*) FROM jobs WHERE status = 'failed'", &[])?;
        Ok(r.map(|r| r.int(0)).transpose()?.unwrap_or(0) as usize)
    }

    /// Jobs not yet finished (pending or running).
    pub fn open_jobs(&self) -> Result<usize, StoreError> {
        let r = self.row("SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'running')", &[])?;
        Ok(r.map(|r| r.int(0)).transpose()?.unwrap_or(0) as usize)
    }

    /// Number of finished trainings, and of training attempts (claims), over the store.
    pub fn counts(&self) -> Result<(usize, usize), StoreError> {
        let count = |sql| -> Result<usize, StoreError> {
            Ok(self.row(sql, &[])?.map(|r| r.int(0)).transpose()?.unwrap_or(0) as usize)
        };
        Ok((
            count("SELECT COUNT(*) FROM results")?,
            count("SELECT CAST(COALESCE(SUM(attempts), 0) AS BIGINT) FROM jobs")?,
        ))
    }

    /// Replaces a run's stored population (candidate sequence numbers, oldest first).
    pub fn set_population(&self, run: &str, seqs: &[usize]) -> Result<(), StoreError> {
        self.tx(|| {
            self.exec("DELETE FROM population WHERE run = ?1", args![run])?;
            for (i, s) in seqs.iter().enumerate() {
                self.exec("INSERT INTO population (run, position, seq) VALUES (?1, ?2, ?3)", args![run, i, *s])?;
            }
            Ok(())
        })
    }

    /// A run's stored population, oldest first.
    pub fn population(&self, run: &str) -> Result<Vec<usize>, StoreError> {
        let rows = self.rows("SELECT seq FROM population WHERE run = ?1 ORDER BY position", args![run])?;
        rows.iter().map(|r| Ok(r.int(0)? as usize)).collect()
    }

    /// Every result under one spec, by key.
    pub fn results_for(&self, spec: &TrainSpec) -> Result<Vec<(String, Outcome)>, StoreError> {
        let sql = "SELECT key, fitness, test_accuracy, metrics, seconds FROM results WHERE spec = ?1";
        let rows = self.rows(sql, args![spec.key()])?;
        rows.iter().map(|r| Ok((r.text(0)?, Self::outcome(r, 1)?))).collect()
    }
}

/// The first leaf where two settings differ, as (dotted path, old, new).
fn first_difference(
    path: &str,
    old: &serde_json::Value,
    new: &serde_json::Value,
) -> Option<(String, serde_json::Value, serde_json::Value)> {
    const ABSENT: &serde_json::Value = &serde_json::Value::Null;
    match (old.as_object(), new.as_object()) {
        // Both sides' fields: a field left out where it has its default (a CPU spec's device)
        // differs from one that is written.
        (Some(o), Some(n)) => n.keys().chain(o.keys().filter(|k| !n.contains_key(*k))).find_map(|k| {
            let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            first_difference(&p, o.get(k).unwrap_or(ABSENT), n.get(k).unwrap_or(ABSENT))
        }),
        _ if old != new => Some((path.to_string(), old.clone(), new.clone())),
        _ => None,
    }
}

/// This machine's name, for worker ids.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "host".into())
}

/// This machine as worker ids name it: host name and boot, so two machines that share a host
/// name (containers, clones) are not taken for one.
fn machine() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    format!("{}@{}", hostname(), boot.trim().chars().take(8).collect::<String>())
}

/// A worker id: `host@boot:pid:n`, so a restarted process can tell its machine's dead claims
/// from live ones.
pub fn worker_id(n: usize) -> String {
    format!("{}:{}:{n}", machine(), std::process::id())
}
