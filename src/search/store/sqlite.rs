//! The embedded store: one SQLite file, in WAL mode, shared by any number of worker threads
//! and processes on this machine. Its identity is SQLite's `application_id`, its version
//! `user_version`.

use super::{APPLICATION_ID, Conn, DEFAULT_LEASE, Dialect, Row, SCHEMA_VERSION, SqlError, StoreError, TABLES, Val};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, params};
use std::path::Path;
use std::time::Duration;

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
-- Trainings asked for: pending, running (leased by a worker until lease_until), done, or
-- failed (after the maximum number of attempts, with the last error).
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    spec TEXT NOT NULL,
    text TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    worker TEXT,
    claimed REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_until REAL,
    error TEXT,
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

pub(super) struct Sqlite {
    conn: Connection,
}

/// Opens (creating if needed) the store file at `path`; `at` names it in errors.
pub(super) fn open(path: &Path, at: &str) -> Result<Sqlite, StoreError> {
    let err = |source: rusqlite::Error| StoreError::Sql { path: at.to_string(), source: source.into() };
    // SQLite says only "unable to open database file" for these.
    if let Some(why) = crate::error::unwritable(path) {
        return Err(StoreError::Path { path: at.to_string(), why });
    }
    let conn = Connection::open(path).map_err(err)?;
    // Several processes write: wait for each other instead of failing.
    conn.busy_timeout(Duration::from_secs(60)).map_err(err)?;
    // Only reads until the file is known to be a store (or empty).
    let version = version(&conn, at)?;
    use_wal(&conn).map_err(err)?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
    if version != Some(SCHEMA_VERSION) {
        upgrade(&conn, version).map_err(err)?;
    }
    Ok(Sqlite { conn })
}

/// Puts the file in WAL mode (once: the mode is stored in the file). Switching takes an
/// exclusive lock and SQLite answers "database is locked" at once, without waiting, when
/// another process opens the file meanwhile, so the switch is retried for a while.
fn use_wal(conn: &Connection) -> rusqlite::Result<()> {
    let start = std::time::Instant::now();
    loop {
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(());
        }
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::DatabaseBusy && start.elapsed() < Duration::from_secs(60) =>
            {
                std::thread::sleep(Duration::from_millis(5))
            }
            other => return other,
        }
    }
}

/// The store's schema version: `None` for an empty file, 1 for a store from before
/// versioning; an error for anything that is not a lossc store or is newer than this lossc.
fn version(conn: &Connection, at: &str) -> Result<Option<i32>, StoreError> {
    let not_ours = |why: &str| StoreError::NotAStore { path: at.to_string(), why: why.to_string() };
    let err = |source: rusqlite::Error| StoreError::Sql { path: at.to_string(), source: source.into() };
    let pragma = |name: &str| -> Result<i32, StoreError> {
        conn.pragma_query_value(None, name, |r| r.get(0)).map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
                not_ours("not an SQLite database")
            }
            e => err(e),
        })
    };
    let (app, version) = (pragma("application_id")?, pragma("user_version")?);
    let mut st = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").map_err(err)?;
    let tables: Vec<String> = st.query_map([], |r| r.get(0)).map_err(err)?.collect::<Result<_, _>>().map_err(err)?;
    match app {
        APPLICATION_ID if version > SCHEMA_VERSION => Err(StoreError::Newer { path: at.to_string(), version }),
        APPLICATION_ID => Ok(Some(version)),
        0 if tables.is_empty() => Ok(None),
        0 if tables.iter().all(|t| TABLES.contains(&t.as_str())) && tables.iter().any(|t| t == "results") => {
            Ok(Some(1))
        }
        0 => Err(not_ours("an SQLite database with other tables")),
        _ => Err(not_ours("an SQLite database of another application")),
    }
}

/// Creates the tables (`None`) or brings an older store to this version, in one transaction:
/// version 1 has its keys made again from the stored texts
/// ([`crate::passes::simplify::KEY_FORMAT`] changed); versions 1 and 2 get the lease columns,
/// and their running jobs a lease from now.
fn upgrade(conn: &Connection, from: Option<i32>) -> rusqlite::Result<()> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    // Another process may have set the store up meanwhile.
    let now: i32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if now != SCHEMA_VERSION {
        tx.execute_batch(SCHEMA)?;
        if from == Some(1) {
            rekey(&tx)?;
        }
        if from.is_some_and(|v| v < 3) {
            tx.execute_batch("ALTER TABLE jobs ADD COLUMN lease_until REAL; ALTER TABLE jobs ADD COLUMN error TEXT;")?;
            tx.execute(
                "UPDATE jobs SET lease_until = (julianday('now') - 2440587.5) * 86400.0 + ?1 WHERE status = 'running'",
                [DEFAULT_LEASE],
            )?;
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()
}

/// Makes every key again from its text: candidates and jobs from their own, results through
/// the jobs that produced them.
fn rekey(tx: &rusqlite::Transaction) -> rusqlite::Result<()> {
    let key_of = |text: &str| crate::syntax::parse(text).ok().map(|g| crate::search::screen::key(&g));
    let rows = |q: &str| -> rusqlite::Result<Vec<(i64, String, String)>> {
        let mut st = tx.prepare(q)?;
        let v = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        v.collect()
    };
    let mut renamed = std::collections::HashMap::new();
    for (id, old, text) in rows("SELECT id, key, text FROM jobs")? {
        if let Some(new) = key_of(&text).filter(|k| *k != old) {
            tx.execute("UPDATE OR IGNORE jobs SET key = ?1 WHERE id = ?2", params![new, id])?;
            renamed.insert(old, new);
        }
    }
    for (rowid, old, text) in rows("SELECT rowid, key, text FROM candidates WHERE key IS NOT NULL")? {
        if let Some(new) = key_of(&text).filter(|k| *k != old) {
            tx.execute("UPDATE candidates SET key = ?1 WHERE rowid = ?2", params![new, rowid])?;
        }
    }
    for (old, new) in renamed {
        tx.execute("UPDATE OR IGNORE results SET key = ?1 WHERE key = ?2", params![new, old])?;
    }
    Ok(())
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Val::Null => ValueRef::Null,
            Val::Int(v) => ValueRef::Integer(*v),
            Val::Real(v) => ValueRef::Real(*v),
            Val::Text(s) => ValueRef::Text(s.as_bytes()),
            Val::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn val(v: ValueRef) -> Val {
    match v {
        ValueRef::Null => Val::Null,
        ValueRef::Integer(i) => Val::Int(i),
        ValueRef::Real(r) => Val::Real(r),
        ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Val::Blob(b.to_vec()),
    }
}

impl Conn for Sqlite {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, sql: &str, args: &[Val]) -> Result<u64, SqlError> {
        let mut st = self.conn.prepare_cached(sql)?;
        Ok(st.execute(rusqlite::params_from_iter(args))? as u64)
    }

    fn query(&self, sql: &str, args: &[Val]) -> Result<Vec<Row>, SqlError> {
        let mut st = self.conn.prepare_cached(sql)?;
        let n = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(Row((0..n).map(|i| r.get_ref(i).map(val)).collect::<Result<_, _>>()?));
        }
        Ok(out)
    }

    fn batch(&self, sql: &str) -> Result<(), SqlError> {
        Ok(self.conn.execute_batch(sql)?)
    }

    fn integrity(&self) -> Result<Option<String>, SqlError> {
        let verdict: String = self.conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        Ok((verdict != "ok").then_some(verdict))
    }
}
