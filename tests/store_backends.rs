//! The store's job queue, leases and identity, on both stores: every test runs on an SQLite
//! file and on a database of the PostgreSQL test server (scripts/test.sh starts one; CI
//! requires it). Then what only a server has: credentials from the URL, the PG environment
//! variables and `.pgpass`, never shown; TLS when the URL asks for it; a database that is not a
//! store refused and left as it was.

mod common;

use lossc::error::{Blame, Classify};
use lossc::search::store::{Db, Job, Lease, MAX_ATTEMPTS, SCHEMA_VERSION, Store, StoreError};
use lossc::train::TrainSpec;
use lossc_runtime::train::Metrics;
use std::time::Duration;

/// The stores a test runs on: a fresh SQLite file, and a fresh PostgreSQL database when the
/// test server is there.
fn stores(name: &str) -> Vec<Db> {
    let mut v = vec![Db::from(common::scratch_dir(name).join("s.db"))];
    if let Some(url) = common::pg_database(name) {
        v.push(url.parse().unwrap());
    }
    v
}

fn metrics(fitness: f64) -> Metrics {
    Metrics { fitness, ..Default::default() }
}

#[test]
fn concurrent_workers_claim_every_job_exactly_once() {
    for db in stores("claims") {
        let spec = TrainSpec::default();
        let store = Store::open(&db).unwrap();
        for i in 0..200 {
            store.enqueue(&format!("k{i}"), &spec, "loss l = -y * ln(p);").unwrap();
        }
        store.enqueue("k0", &spec, "a duplicate job is ignored").unwrap();
        let claimed: Vec<i64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|w| {
                    let db = db.clone();
                    s.spawn(move || {
                        let st = Store::open(&db).unwrap();
                        let mut mine = Vec::new();
                        while let Some(job) = st.claim(&format!("test:0:{w}"), 60.0).unwrap() {
                            assert_eq!(job.attempt, 1);
                            mine.push(job.id);
                        }
                        mine
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let unique: std::collections::HashSet<i64> = claimed.iter().copied().collect();
        assert_eq!((claimed.len(), unique.len()), (200, 200), "{db}");
        assert_eq!(store.open_jobs().unwrap(), 200, "{db}: all running, none done");
    }
}

/// A lease that runs out sends the job back with its attempt counted; the worker that lost it
/// can neither renew it nor store a result over the new holder's.
#[test]
fn an_expired_lease_goes_back_to_the_queue_and_only_its_holder_stores_a_result() {
    for db in stores("lease") {
        let spec = TrainSpec::default();
        let store = Store::open(&db).unwrap();
        store.enqueue("k", &spec, "loss l = -y * ln(p);").unwrap();
        let first = store.claim("w1", 0.4).unwrap().unwrap();
        assert!(store.claim("w2", 0.4).unwrap().is_none(), "{db}: a held job was claimed twice");
        assert_eq!(store.renew(std::slice::from_ref(&first), "w1", 0.4).unwrap(), [Lease::Renewed], "{db}");
        std::thread::sleep(Duration::from_millis(600));
        let second = store.claim("w2", 30.0).unwrap().expect("the expired job is claimed again");
        assert_eq!((second.id, second.attempt), (first.id, 2), "{db}");
        let row = &store.jobs().unwrap()[0];
        assert_eq!(row.error.as_deref(), Some("the lease of w1 expired"), "{db}");
        assert_eq!((row.status.as_str(), row.worker.as_deref(), row.attempts), ("running", Some("w2"), 2));

        assert_eq!(
            store.renew(std::slice::from_ref(&first), "w1", 30.0).unwrap(),
            [Lease::Lost],
            "{db}: a lost lease was renewed"
        );
        assert!(!store.complete(&first, "w1", &metrics(0.9), 1.0).unwrap(), "{db}: a lost lease stored a result");
        assert!(store.result("k", &spec).unwrap().is_none());
        assert!(store.complete(&second, "w2", &metrics(0.5), 1.0).unwrap());
        assert_eq!(
            store.renew(std::slice::from_ref(&second), "w2", 30.0).unwrap(),
            [Lease::Done],
            "{db}: done, not lost"
        );
        assert_eq!(
            store.renew(std::slice::from_ref(&first), "w1", 30.0).unwrap(),
            [Lease::Lost],
            "{db}: done by another claim"
        );
        assert_eq!(store.result("k", &spec).unwrap().unwrap().fitness, 0.5, "{db}");
        assert!(!store.complete(&second, "w2", &metrics(0.7), 1.0).unwrap(), "{db}: stored twice");
        assert_eq!(store.counts().unwrap(), (1, 2), "{db}: one result from two attempts");
        assert_eq!(store.open_jobs().unwrap(), 0);
    }
}

/// A worker filling a population claims only pending jobs with the first job's spec, oldest
/// first, each once.
#[test]
fn a_population_claims_only_jobs_of_its_spec() {
    for db in stores("claim-like") {
        let store = Store::open(&db).unwrap();
        let (a, b) = (TrainSpec::default(), TrainSpec { steps: 7, ..TrainSpec::default() });
        for (key, spec) in [("a1", &a), ("b1", &b), ("a2", &a), ("b2", &b), ("a3", &a)] {
            store.enqueue(key, spec, "loss l = -y * ln(p);").unwrap();
        }
        let first = store.claim("w1", 30.0).unwrap().unwrap();
        assert_eq!(first.key, "a1", "{db}");
        let mut keys = Vec::new();
        while let Some(j) = store.claim_like("w1", 30.0, &first).unwrap() {
            assert_eq!(j.spec, a, "{db}");
            keys.push(j.key);
        }
        assert_eq!(keys, ["a2", "a3"], "{db}");
        let other = store.claim("w2", 30.0).unwrap().unwrap();
        assert_eq!(other.key, "b1", "{db}: the other spec's jobs stay pending");
        assert_eq!(store.claim_like("w2", 30.0, &other).unwrap().map(|j| j.key).as_deref(), Some("b2"), "{db}");
        assert!(store.claim("w3", 30.0).unwrap().is_none(), "{db}");
    }
}

/// Heartbeats keep a job however long it trains; without them it is taken over.
#[test]
fn renewing_a_lease_keeps_the_job() {
    for db in stores("renew") {
        let store = Store::open(&db).unwrap();
        for k in ["a", "b", "c"] {
            store.enqueue(k, &TrainSpec::default(), "loss l = -y * ln(p);").unwrap();
        }
        // One worker's population: its three jobs renewed together.
        let jobs: Vec<Job> = (0..3).map(|_| store.claim("w1", 0.5).unwrap().unwrap()).collect();
        use Lease::{Done, Lost, Renewed};
        for _ in 0..8 {
            std::thread::sleep(Duration::from_millis(150));
            assert_eq!(store.renew(&jobs, "w1", 0.5).unwrap(), [Renewed; 3], "{db}");
            assert!(store.claim("w2", 0.5).unwrap().is_none(), "{db}: a renewed lease expired");
        }
        assert!(store.complete(&jobs[1], "w1", &metrics(0.5), 1.0).unwrap());
        assert_eq!(store.renew(&jobs, "w1", 0.5).unwrap(), [Renewed, Done, Renewed], "{db}");
        assert_eq!(store.renew(&jobs, "w2", 0.5).unwrap(), [Lost, Lost, Lost], "{db}: not w2's");
        std::thread::sleep(Duration::from_millis(700));
        let again = store.claim("w2", 0.5).unwrap().expect("a lapsed lease was kept");
        assert_eq!((again.key.as_str(), again.attempt), ("a", 2), "{db}");
        assert_eq!(store.renew(&jobs, "w1", 0.5).unwrap(), [Lost, Done, Lost], "{db}: lapsed, c pending again");
        assert_eq!(store.renew(&[again], "w2", 0.5).unwrap(), [Renewed], "{db}");
    }
}

/// A job that never finishes (its worker dies, or it keeps failing) fails for good after
/// MAX_ATTEMPTS claims, with the last error; it then counts as settled at fitness 0.
#[test]
fn a_job_fails_for_good_after_the_maximum_attempts() {
    for db in stores("attempts") {
        let spec = TrainSpec::default();
        let store = Store::open(&db).unwrap();
        store.enqueue("dies", &spec, "loss l = -y * ln(p);").unwrap();
        store.enqueue("errs", &spec, "loss l = -y * ln(p);").unwrap();
        for attempt in 1..=MAX_ATTEMPTS {
            let a = store.claim("w", 0.2).unwrap().unwrap();
            let b = store.claim("w", 30.0).unwrap().unwrap();
            assert_eq!((a.key.as_str(), a.attempt, b.key.as_str(), b.attempt), ("dies", attempt, "errs", attempt));
            assert!(store.settled("dies", &spec).unwrap().is_none(), "{db}: settled at attempt {attempt}");
            store.release(&b, "w", &format!("cannot read the data ({attempt})")).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            store.expire().unwrap();
        }
        assert!(store.claim("w", 1.0).unwrap().is_none(), "{db}: a failed job was claimed");
        assert_eq!(store.failed_jobs().unwrap(), 2);
        assert_eq!(store.open_jobs().unwrap(), 0);
        let dead = store.settled("dies", &spec).unwrap().expect("a failed job is settled");
        assert_eq!(dead.fitness, 0.0);
        let why = dead.metrics.stopped.unwrap();
        assert!(why.contains("the lease of w expired") && why.contains(&format!("{MAX_ATTEMPTS} attempts")), "{why}");
        let why = store.settled("errs", &spec).unwrap().unwrap().metrics.stopped.unwrap();
        assert!(why.contains(&format!("cannot read the data ({MAX_ATTEMPTS})")), "{db}: {why}");
        // Asking again for a failed training does not queue it again.
        store.enqueue("dies", &spec, "loss l = -y * ln(p);").unwrap();
        assert!(store.claim("w", 1.0).unwrap().is_none());
    }
}

/// Jobs put back (a search at its time limit, an interrupted worker) or declined (a worker
/// whose machine cannot train them) are pending again with their attempt not counted, however
/// often that happens; only the worker's running jobs go back, not its finished ones or another
/// worker's, and a declined job keeps the reason.
#[test]
fn jobs_put_back_do_not_count_an_attempt() {
    for db in stores("put-back") {
        let spec = TrainSpec::default();
        let store = Store::open(&db).unwrap();
        for k in ["a", "b", "c", "d"] {
            store.enqueue(k, &spec, "loss l = -y * ln(p);").unwrap();
        }
        for round in 0..MAX_ATTEMPTS + 2 {
            let a = store.claim("w1", 30.0).unwrap().unwrap();
            let b = store.claim("w1", 30.0).unwrap().unwrap();
            assert_eq!((a.key.as_str(), a.attempt, b.key.as_str(), b.attempt), ("a", 1, "b", 1), "{db}: round {round}");
            assert_eq!(store.put_back("w1").unwrap(), 2, "{db}");
        }
        let a = store.claim("w1", 30.0).unwrap().unwrap();
        assert!(store.complete(&a, "w1", &metrics(0.5), 1.0).unwrap());
        let b = store.claim("w1", 30.0).unwrap().unwrap();
        let c = store.claim("w2", 30.0).unwrap().unwrap();
        assert_eq!(store.put_back("w1").unwrap(), 1, "{db}: only w1's running job");
        let jobs: Vec<(String, String, i64)> =
            store.jobs().unwrap().into_iter().map(|j| (j.key, j.status, j.attempts)).collect();
        let want = [("a", "done", 1), ("b", "pending", 0), ("c", "running", 1), ("d", "pending", 0)];
        let want: Vec<(String, String, i64)> =
            want.iter().map(|(k, s, n)| (k.to_string(), s.to_string(), *n)).collect();
        assert_eq!(jobs, want, "{db}");
        assert_eq!(
            store.renew(std::slice::from_ref(&b), "w1", 30.0).unwrap(),
            [Lease::Lost],
            "{db}: a job put back is no longer w1's"
        );
        assert_eq!(store.renew(std::slice::from_ref(&c), "w2", 30.0).unwrap(), [Lease::Renewed], "{db}");
        for _ in 0..MAX_ATTEMPTS + 1 {
            let d = store.claim("w3", 30.0).unwrap().unwrap();
            assert_eq!((d.key.as_str(), d.attempt), ("b", 1), "{db}");
            // Only its holder declines it, and only this claim of it.
            store.decline(&d, "w1", "not w1's").unwrap();
            store.decline(&Job { attempt: 2, ..d.clone() }, "w3", "not this attempt").unwrap();
            store.decline(&d, "w3", "no GPU here").unwrap();
        }
        let b = store.jobs().unwrap().into_iter().find(|j| j.key == "b").unwrap();
        assert_eq!((b.status.as_str(), b.attempts, b.error.as_deref()), ("pending", 0, Some("no GPU here")), "{db}");
        assert_eq!(store.claim("w4", 30.0).unwrap().unwrap().attempt, 1, "{db}");
    }
}

/// A worker passes over the jobs whose spec it declined (named by the declined jobs' ids) and
/// takes the others oldest first; without the list every pending job is claimable again.
#[test]
fn a_claim_passes_over_the_specs_a_worker_declined() {
    for db in stores("unlike") {
        let gpu = TrainSpec { device: "cuda".into(), ..TrainSpec::default() };
        let cpu = TrainSpec::default();
        let wgpu = TrainSpec { device: "wgpu".into(), ..TrainSpec::default() };
        let store = Store::open(&db).unwrap();
        for (k, spec) in [("g1", &gpu), ("c1", &cpu), ("g2", &gpu), ("w1", &wgpu), ("c2", &cpu)] {
            store.enqueue(k, spec, "loss l = -y * ln(p);").unwrap();
        }
        let claim = |unlike: &[i64]| store.claim_unlike("w", 30.0, unlike).unwrap();
        let g1 = claim(&[]).unwrap();
        assert_eq!(g1.key, "g1", "{db}");
        store.decline(&g1, "w", "no GPU here").unwrap();
        let c1 = claim(&[g1.id]).unwrap();
        assert_eq!(c1.key, "c1", "{db}: the oldest job of another spec");
        store.decline(&c1, "w", "no data here").unwrap();
        let w1 = claim(&[g1.id, c1.id]).unwrap();
        assert_eq!(w1.key, "w1", "{db}: g2 has g1's spec, c1 and c2 the same");
        store.decline(&w1, "w", "no Vulkan here").unwrap();
        assert!(claim(&[g1.id, c1.id, w1.id]).is_none(), "{db}: every spec passed over");
        let got: Vec<(String, i64)> =
            std::iter::from_fn(|| claim(&[c1.id, w1.id])).map(|j| (j.key, j.attempt)).collect();
        assert_eq!(got, [("g1".to_string(), 1), ("g2".to_string(), 1)], "{db}: declines are not counted");
        assert_eq!(store.claim("w", 30.0).unwrap().unwrap().key, "c1", "{db}");
    }
}

/// Runs, candidates, results and populations read back as written on both stores.
#[test]
fn both_stores_keep_the_same_records() {
    for db in stores("records") {
        let store = Store::open(&db).unwrap();
        let settings = serde_json::json!({"evolution": {"round": 4}, "spec": {"steps": 10}});
        assert!(!store.begin_run("r", "search", &settings).unwrap());
        assert!(store.begin_run("r", "search", &settings).unwrap(), "{db}: not resumed");
        let changed = serde_json::json!({"evolution": {"round": 5}, "spec": {"steps": 10}});
        let e = store.begin_run("r", "search", &changed).unwrap_err();
        assert!(e.to_string().contains("evolution.round = 4, not 5"), "{db}: {e}");
        let c = lossc::search::store::CandidateRow {
            seq: 7,
            genome: Some("g".into()),
            text: "loss c7 = -y * ln(p);".into(),
            key: Some("key7".into()),
            verdict: "ok".into(),
            sign: Some(-1.0),
            phenotype: Some(vec![0.5, -2.25]),
        };
        store.record_candidate("r", &c).unwrap();
        store
            .record_candidate("r", &lossc::search::store::CandidateRow { text: "changed".into(), ..c.clone() })
            .unwrap();
        // Another loss at a recorded place: a replay that went elsewhere, refused.
        let other = lossc::search::store::CandidateRow { key: Some("key8".into()), ..c.clone() };
        let e = store.record_candidate("r", &other).unwrap_err();
        assert!(matches!(e, lossc::search::store::StoreError::Diverged { seq: 7, .. }), "{db}: {e}");
        let back = store.candidates("r").unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].seq, back[0].text.as_str(), back[0].sign), (7, c.text.as_str(), Some(-1.0)), "{db}");
        assert_eq!(back[0].phenotype, c.phenotype);
        store.set_population("r", &[7, 3, 9]).unwrap();
        store.set_population("r", &[3, 9]).unwrap();
        assert_eq!(store.population("r").unwrap(), vec![3, 9]);
        let spec = TrainSpec::default();
        store.enqueue("key7", &spec, &c.text).unwrap();
        let job = store.claim("w", 30.0).unwrap().unwrap();
        let m = Metrics { fitness: 0.625, test_accuracy: Some(0.5), ..Default::default() };
        assert!(store.complete(&job, "w", &m, 2.5).unwrap());
        let all = store.results_for(&spec).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].0.as_str(), all[0].1.fitness, all[0].1.test_accuracy), ("key7", 0.625, Some(0.5)));
        assert_eq!(all[0].1.seconds, 2.5);
        // A finished training is not asked for again.
        store.enqueue("key7", &spec, &c.text).unwrap();
        assert_eq!(store.open_jobs().unwrap(), 0, "{db}");
        store.check_integrity().unwrap();
    }
}

#[test]
fn a_database_that_is_not_a_store_is_refused_and_left_untouched() {
    let Some(url) = common::pg_database("foreign") else { return };
    let mut c = common::pg_client(&url);
    c.batch_execute("CREATE TABLE songs (title TEXT); INSERT INTO songs VALUES ('a');").unwrap();
    let tables = |c: &mut postgres::Client| -> Vec<String> {
        let q = "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1";
        c.query(q, &[]).unwrap().iter().map(|r| r.get(0)).collect()
    };
    let Err(e) = Store::open(url.parse::<Db>().unwrap()) else { panic!("a foreign database opened as a store") };
    assert!(matches!(e, StoreError::NotAStore { .. }), "{e}");
    assert_eq!(e.blame(), Blame::Input);
    assert!(e.to_string().contains("not a lossc store") && e.to_string().contains("songs"), "{e}");
    assert_eq!(tables(&mut c), vec!["songs"], "the database was extended");

    // A store written by a newer lossc is refused too.
    let Some(url) = common::pg_database("newer") else { return };
    Store::open(url.parse::<Db>().unwrap()).unwrap();
    common::pg_client(&url).batch_execute(&format!("UPDATE lossc_store SET version = {}", SCHEMA_VERSION + 1)).unwrap();
    let Err(e) = Store::open(url.parse::<Db>().unwrap()) else { panic!("a newer store opened") };
    assert!(matches!(e, StoreError::Newer { .. }), "{e}");
}

fn lossc(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_lossc"));
    c.args(args);
    for var in ["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGPASSFILE", "PGSSLMODE"] {
        c.env_remove(var);
    }
    c.envs(env.iter().copied());
    c.output().unwrap()
}

/// The password from the URL, `PGPASSWORD` or `.pgpass` connects; it never shows in output,
/// errors or stored records; a wrong one is the user's error (exit 2).
#[test]
fn credentials_come_from_the_url_the_environment_or_pgpass_and_are_never_shown() {
    let Some(url) = common::pg_database("creds") else { return };
    let rest = url.strip_prefix("postgres://postgres:").unwrap();
    let (password, hostdb) = rest.split_once('@').unwrap();
    let (hostport, dbname) = hostdb.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let worker = |db: &str, env: &[(&str, &str)]| lossc(&["worker", "--db", db, "--idle", "0"], env);
    let shown = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };

    let o = worker(&url, &[]);
    assert!(o.status.success(), "{}", shown(&o));
    assert!(shown(&o).contains(&format!("postgres://postgres@{hostport}/{dbname}")), "{}", shown(&o));
    assert!(!shown(&o).contains(password));

    let bare = format!("postgres://{hostport}/{dbname}");
    let o = worker(&bare, &[("PGUSER", "postgres"), ("PGPASSWORD", password)]);
    assert!(o.status.success(), "PGUSER + PGPASSWORD: {}", shown(&o));
    let o = worker(
        "postgres:///",
        &[("PGHOST", host), ("PGPORT", port), ("PGUSER", "postgres"), ("PGDATABASE", dbname), ("PGPASSWORD", password)],
    );
    assert!(o.status.success(), "PGHOST, PGPORT, PGUSER, PGDATABASE: {}", shown(&o));

    let dir = common::scratch_dir("pgpass");
    let pgpass = dir.join("pgpass");
    std::fs::write(&pgpass, format!("# lossc test\notherhost:*:*:*:nope\n{host}:{port}:*:postgres:{password}\n"))
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pass = pgpass.to_str().unwrap();
    let o = worker(&format!("postgres://postgres@{hostport}/{dbname}"), &[("PGPASSFILE", pass)]);
    assert!(o.status.success(), ".pgpass: {}", shown(&o));
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = worker(&format!("postgres://postgres@{hostport}/{dbname}"), &[("PGPASSFILE", pass)]);
    assert_eq!(o.status.code(), Some(2), "a readable .pgpass is ignored, as libpq does: {}", shown(&o));
    assert!(shown(&o).contains("group or world access"), "{}", shown(&o));

    let wrong = format!("postgres://postgres:not-{password}@{hostport}/{dbname}");
    let o = worker(&wrong, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", shown(&o));
    assert!(shown(&o).contains("password authentication failed"), "{}", shown(&o));
    assert!(!shown(&o).contains(password), "{}", shown(&o));
    let o = worker(&format!("postgres://postgres:{password}@{hostport}/no_such_db"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", shown(&o));
    assert!(shown(&o).contains("no_such_db") && !shown(&o).contains(password), "{}", shown(&o));
    let o = worker(&format!("postgres://postgres:{password}@{hostport}/{dbname}?sslmode=sometimes"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", shown(&o));
    assert!(shown(&o).contains("sslmode `sometimes`") && !shown(&o).contains(password), "{}", shown(&o));

    // Nothing a store records holds the password.
    let store = Store::open(url.parse::<Db>().unwrap()).unwrap();
    store.begin_run("r", "search", &serde_json::json!({"db": store.path()})).unwrap();
    let mut c = common::pg_client(&url);
    for table in ["runs", "candidates", "jobs", "results", "population", "lossc_store"] {
        for r in c.query(&format!("SELECT row_to_json(t)::text FROM {table} t"), &[]).unwrap() {
            let row: String = r.get(0);
            assert!(!row.contains(password), "{table}: {row}");
        }
    }
    assert!(!format!("{:?}", url.parse::<Db>().unwrap().to_string()).contains(password));
}

/// `sslmode` as libpq reads it: `require` encrypts, `verify-full` also checks the certificate
/// against `sslrootcert` and the host name, `disable` does not encrypt.
#[test]
fn tls_is_used_when_the_url_asks_for_it() {
    let Some(url) = common::pg_database("tls") else { return };
    let ca = std::env::var("LOSSC_TEST_PG_CA").expect("scripts/test.sh gives the server's certificate");
    let open = |params: &str| Store::open(format!("{url}?{params}").parse::<Db>().unwrap());
    assert!(open("sslmode=require").unwrap().encrypted().unwrap());
    assert!(!open("sslmode=disable").unwrap().encrypted().unwrap());
    assert!(open("sslmode=prefer").unwrap().encrypted().unwrap());
    let local = url.replace("127.0.0.1", "localhost");
    let full = format!("{local}?sslmode=verify-full&sslrootcert={ca}");
    assert!(Store::open(full.parse::<Db>().unwrap()).unwrap().encrypted().unwrap());
    // Self-signed: without its certificate as the root, verification fails, clearly.
    let Err(e) = open("sslmode=verify-ca") else { panic!("an unverifiable server passed verify-ca") };
    assert!(matches!(e, StoreError::Connect { .. }), "{e}");
    assert!(e.to_string().contains("cannot connect") && e.to_string().to_lowercase().contains("certificate"), "{e}");
    // A certificate for `localhost` does not verify 127.0.0.1 under verify-full.
    let Err(e) = open(&format!("sslmode=verify-full&sslrootcert={ca}")) else { panic!("verify-full ignored the host") };
    assert!(matches!(e, StoreError::Connect { .. }), "{e}");
}

/// Processes that open a new store at once all get it: one creates the tables, the others
/// wait for it and find them.
#[test]
fn stores_opened_together_are_made_once() {
    for round in 0..5 {
        for db in stores(&format!("together{round}")) {
            let barrier = std::sync::Barrier::new(4);
            let results: Vec<Result<bool, String>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            let store = Store::open(&db).map_err(|e| e.to_string())?;
                            store.begin_run("search", "search", &serde_json::json!({"n": 1})).map_err(|e| e.to_string())
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let created = results.iter().filter(|r| matches!(r, Ok(false))).count();
            assert!(results.iter().all(Result::is_ok) && created == 1, "{db}: {results:?}");
        }
    }
}

/// `lossc status` shows the runs, the jobs by status, who holds the running ones and until
/// when, and why the failed ones failed; a missing SQLite file is an error, not a new store.
#[test]
fn status_shows_the_queue_and_its_leases() {
    for db in stores("status") {
        let store = Store::open(&db).unwrap();
        store.begin_run("search", "search", &serde_json::json!({})).unwrap();
        let spec = TrainSpec::default();
        for k in ["a", "b", "c"] {
            store.enqueue(k, &spec, "loss l = -y * ln(p);").unwrap();
        }
        store.claim("host@1:2:0", 60.0).unwrap().unwrap();
        for _ in 0..MAX_ATTEMPTS {
            let j = store.claim("w", 60.0).unwrap().unwrap();
            store.release(&j, "w", "cannot read the data").unwrap();
        }
        // A population: jobs 4 to 8 but 6, which its worker gave back; 4 at its second attempt.
        // (Passing over the CPU spec of job 1 leaves job 3 pending.)
        let gpu = TrainSpec { device: "cuda".into(), ..TrainSpec::default() };
        for k in ["d", "e", "f", "g", "h"] {
            store.enqueue(k, &gpu, "loss l = -y * ln(p);").unwrap();
        }
        let h = store.claim_unlike("gpu@3:4:0", 0.1, &[1]).unwrap().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let population: Vec<Job> =
            (0..5).map(|_| store.claim_unlike("gpu@3:4:0", 60.0, &[1]).unwrap().unwrap()).collect();
        assert_eq!((h.id, population[0].id, population[0].attempt), (4, 4, 2), "{db}: the lapsed claim again");
        store.decline(&population[2], "gpu@3:4:0", "no room here").unwrap();
        // The command line's --db: the path, or the URL with the test server's password.
        let arg = match &db {
            Db::Sqlite(p) => p.to_str().unwrap().to_string(),
            Db::Postgres(t) => {
                let server = std::env::var("LOSSC_TEST_PG").unwrap();
                format!("{}/{}", server.rsplit_once('/').unwrap().0, t.dbname.as_deref().unwrap())
            }
        };
        let o = lossc(&["status", "--db", &arg], &[]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{db}: {}", String::from_utf8_lossy(&o.stderr));
        println!("{out}");
        assert!(out.contains("run `search`: search, 0 candidates"), "{out}");
        assert!(out.contains("jobs: 2 pending, 5 running, 0 done (0 results), 1 failed"), "{out}");
        assert!(out.contains("running: job 1 (attempt 1) on host@1:2:0, claimed "), "{out}");
        let left: f64 = out.split(", lease ends in ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        assert!((50.0..=60.0).contains(&left), "{out}");
        // A worker's population is one line.
        let line = out.lines().find(|l| l.contains(" on gpu@3:4:0")).unwrap();
        assert!(
            line.starts_with("  running: 4 jobs: 4-5, 7-8 (attempts 1-2) on gpu@3:4:0, claimed 0 s ago, "),
            "{out}"
        );
        let left: f64 =
            line.split("the first lease ends in ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        assert!((50.0..=60.0).contains(&left), "{out}");
        assert!(out.contains("pending: job 6 (0 attempts so far), given back: no room here"), "{out}");
        assert!(out.contains("failed: job 2 after 3 attempts: cannot read the data"), "{out}");
    }
    let missing = common::scratch_dir("status-missing").join("none.db");
    let o = lossc(&["status", "--db", missing.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!missing.exists(), "status created a store");
}
