//! The store's version and identity: a file that is not a lossc store is refused and left
//! byte for byte as it was; a store from before versioning has its keys made again in the
//! current key format; a store from a newer lossc is refused.

mod common;

use lossc::error::{Blame, Classify};
use lossc::search::store::{APPLICATION_ID, SCHEMA_VERSION, Store, StoreError};

/// The tables of the stores from before leases (versions 1 and 2), as they have them.
const OLD_TABLES: &str = "
    CREATE TABLE runs (name TEXT PRIMARY KEY, kind TEXT NOT NULL, settings TEXT NOT NULL, created REAL NOT NULL);
    CREATE TABLE candidates (run TEXT NOT NULL, seq INTEGER NOT NULL, genome TEXT, text TEXT NOT NULL, key TEXT,
        verdict TEXT NOT NULL, sign REAL, phenotype BLOB, PRIMARY KEY (run, seq));
    CREATE TABLE jobs (id INTEGER PRIMARY KEY, key TEXT NOT NULL, spec TEXT NOT NULL, text TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending', worker TEXT, claimed REAL, attempts INTEGER NOT NULL DEFAULT 0,
        UNIQUE (key, spec));
    CREATE TABLE results (key TEXT NOT NULL, spec TEXT NOT NULL, fitness REAL NOT NULL, test_accuracy REAL,
        metrics TEXT NOT NULL, seconds REAL NOT NULL, worker TEXT NOT NULL, finished REAL NOT NULL,
        PRIMARY KEY (key, spec));
    CREATE TABLE population (run TEXT NOT NULL, position INTEGER NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (run, position));";

#[test]
fn foreign_files_are_refused_and_left_untouched() {
    let dir = common::scratch_dir("store-foreign");
    let text = dir.join("notes.txt");
    std::fs::write(&text, "these are my notes, not a database\n".repeat(200)).unwrap();
    let other = dir.join("other.db");
    {
        let c = rusqlite::Connection::open(&other).unwrap();
        c.execute_batch("CREATE TABLE songs (title TEXT); INSERT INTO songs VALUES ('a');").unwrap();
    }
    for path in [&text, &other] {
        let before = std::fs::read(path).unwrap();
        let Err(e) = Store::open(path) else { panic!("{} opened as a store", path.display()) };
        assert!(matches!(e, StoreError::NotAStore { .. }), "{e}");
        assert_eq!(e.blame(), Blame::Input);
        assert!(e.to_string().contains("not a lossc store"), "{e}");
        assert_eq!(std::fs::read(path).unwrap(), before, "{} was changed", path.display());
        let wal = path.with_extension(format!("{}-wal", path.extension().unwrap().to_str().unwrap()));
        assert!(!wal.exists(), "{} was switched to WAL", path.display());
    }
}

#[test]
fn a_new_store_records_its_identity_and_a_newer_one_is_refused() {
    let dir = common::scratch_dir("store-new");
    let db = dir.join("s.db");
    Store::open(&db).unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    let app: i32 = c.pragma_query_value(None, "application_id", |r| r.get(0)).unwrap();
    let version: i32 = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!((app, version), (APPLICATION_ID, SCHEMA_VERSION));
    Store::open(&db).unwrap(); // and opens again
    c.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    drop(c);
    let Err(e) = Store::open(&db) else { panic!("a newer store opened") };
    assert!(matches!(e, StoreError::Newer { .. }), "{e}");
}

/// A version-1 store (no application id; keys made by an older key format) is upgraded in
/// place: every key becomes the current key of its text, results follow their jobs' keys.
#[test]
fn an_older_store_gets_the_current_keys() {
    let dir = common::scratch_dir("store-old");
    let db = dir.join("old.db");
    let text = "loss c0 = -(y * ln(p)) + max(p, y) * sigmoid(p);";
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        // The version-1 schema, as the stores from before versioning have it.
        c.execute_batch(OLD_TABLES).unwrap();
        c.execute("INSERT INTO candidates VALUES ('search', 0, NULL, ?1, 'OLD-KEY', 'ok', 1.0, NULL)", [text]).unwrap();
        c.execute("INSERT INTO jobs (key, spec, text, status) VALUES ('OLD-KEY', '{}', ?1, 'done')", [text]).unwrap();
        c.execute("INSERT INTO results VALUES ('OLD-KEY', '{}', 0.75, NULL, '{}', 1.0, 'w', 0.0)", []).unwrap();
    }
    Store::open(&db).unwrap();
    let want = lossc::search::screen::key(&lossc::syntax::parse(text).unwrap());
    let c = rusqlite::Connection::open(&db).unwrap();
    let one = |q: &str| -> String { c.query_row(q, [], |r| r.get(0)).unwrap() };
    assert_eq!(one("SELECT key FROM candidates"), want);
    assert_eq!(one("SELECT key FROM jobs"), want);
    assert_eq!(one("SELECT key FROM results"), want);
    let version: i32 = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

/// Processes that start the same new run at once all get it: one creates it, the others resume.
#[test]
fn runs_started_together_on_a_new_store_all_start() {
    for round in 0..20 {
        let dir = common::scratch_dir(&format!("store-race-{round}"));
        let db = dir.join("s.db");
        let barrier = std::sync::Barrier::new(3);
        let settings = serde_json::json!({ "n": 1 });
        let results: Vec<Result<bool, String>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        let store = Store::open(&db).map_err(|e| e.to_string());
                        barrier.wait();
                        store?.begin_run("search", "search", &settings).map_err(|e| e.to_string())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let created = results.iter().filter(|r| matches!(r, Ok(false))).count();
        assert!(results.iter().all(Result::is_ok) && created == 1, "round {round}: {results:?}");
    }
}

/// A store damaged on disk is reported when a run or a worker starts, not taken for empty.
#[test]
fn a_damaged_store_is_reported() {
    let dir = common::scratch_dir("store-damaged");
    let db = dir.join("s.db");
    Store::open(&db).unwrap().begin_run("search", "search", &serde_json::json!({})).unwrap();
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 3 * 4096, "the store has several pages");
    for (i, b) in bytes[4096..3 * 4096].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    std::fs::write(&db, bytes).unwrap();
    let e = Store::open(&db).and_then(|s| s.check_integrity()).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt(_)) && e.to_string().contains("damaged"), "{e}");
}

/// A version-2 store (before leases) gets the lease columns; a job that was running keeps its
/// claim, with a lease from now, and the queue goes on.
#[test]
fn a_store_from_before_leases_gets_them() {
    let dir = common::scratch_dir("store-v2");
    let db = dir.join("v2.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(OLD_TABLES).unwrap();
        c.pragma_update(None, "user_version", 2).unwrap();
        c.pragma_update(None, "application_id", APPLICATION_ID).unwrap();
        let spec = serde_json::to_string(&lossc::train::TrainSpec::default()).unwrap();
        let ins = "INSERT INTO jobs (key, spec, text, status, worker, claimed, attempts) VALUES (?1, ?2, 'loss l = p;', ?3, ?4, 0.0, ?5)";
        c.execute(ins, rusqlite::params!["running", spec, "running", "elsewhere:1:0", 1]).unwrap();
        c.execute(ins, rusqlite::params!["pending", spec, "pending", None::<String>, 0]).unwrap();
    }
    let store = Store::open(&db).unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    let version: i32 = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let lease: f64 = c.query_row("SELECT lease_until FROM jobs WHERE key = 'running'", [], |r| r.get(0)).unwrap();
    let ahead = lease - lossc::search::store::now();
    assert!(ahead > 10.0 && ahead <= lossc::search::store::DEFAULT_LEASE + 1.0, "lease ends in {ahead} s");
    assert_eq!(store.expire().unwrap(), 0, "a fresh lease expired");
    let job = store.claim("w", 30.0).unwrap().unwrap();
    assert_eq!((job.key.as_str(), job.attempt), ("pending", 1));
    assert!(store.claim("w", 30.0).unwrap().is_none(), "the running job was claimed twice");
}

/// The training spec is a result's key: a spec stored before the augmentations' settings
/// were part of it reads back as their usual values and keeps its key, so a store made then
/// finds its results; a setting away from its usual value is in the key and in the training.
#[test]
fn specs_from_before_the_augmentation_settings_keep_their_keys() {
    use lossc::train::TrainSpec;
    // The default spec's key as stores hold it (the fields of the spec before `pad`).
    let stored = r#"{"data":"fashion-mnist","aug":"base","steps":1000,"batch":128,"seed":0,"label_smoothing":0.0,"optimizer":"adam","lr":null,"warmup":null,"weight_decay":0.0,"width":1,"eval_every":200,"val":5000,"gate_step":null,"gate_accuracy":0.35,"test":false}"#;
    let spec: TrainSpec = serde_json::from_str(stored).unwrap();
    assert_eq!(spec, TrainSpec::default());
    assert_eq!(spec.key(), stored);
    let cfg = spec.config().unwrap().augment;
    assert_eq!((cfg.pad, cfg.cutout, cfg.mixup_alpha, cfg.randaug_n, cfg.randaug_m), (4, 16, 0.4, 2, 5.0));
    let other = TrainSpec { cutout: 8, mixup_alpha: 1.0, ..TrainSpec::default() };
    assert!(other.key().ends_with(r#""test":false,"cutout":8,"mixup_alpha":1.0}"#), "{}", other.key());
    assert_eq!(serde_json::from_str::<TrainSpec>(&other.key()).unwrap(), other);
    let cfg = other.config().unwrap().augment;
    assert_eq!((cfg.pad, cfg.cutout, cfg.mixup_alpha), (4, 8, 1.0));
}
