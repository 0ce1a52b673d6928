//! The `lossc` command as a user runs it: exit codes, messages, and outputs that parse.

mod common;

use std::process::{Command, Output};

fn lossc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lossc")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap()
}

fn temp(name: &str, text: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lossc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn check_accepts_every_example() {
    let files: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().into_owned())
        .filter(|p| p.ends_with(".loss"))
        .collect();
    assert_eq!(files.len(), 16);
    let args: Vec<&str> = std::iter::once("check").chain(files.iter().map(String::as_str)).collect();
    let out = lossc(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 16);
}

/// Output into a pipe whose reader is gone ends the process by SIGPIPE, as `head` expects of
/// other tools, not with a panic message. The reader is closed before the process starts, so
/// its first write meets the closed pipe.
#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_lossc"))
        .args(["check", "examples/a2.loss"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}: {err}", out.status);
}

#[test]
fn bad_input_exits_2_with_file_line_and_column() {
    let path = temp("bad.loss", "loss a = -y * lm(p);\n");
    let out = lossc(&["check", &path]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.loss:1:15"), "{err}");
    assert!(err.contains("did you mean `ln`?"), "{err}");
}

#[test]
fn missing_file_unknown_loss_and_bad_batch_exit_2() {
    assert_eq!(lossc(&["check", "/nonexistent/x.loss"]).status.code(), Some(2));
    let batch = temp("b.json", r#"{"logits": [[1, 2], [3, 4]], "labels": [0, 1]}"#);
    assert_eq!(lossc(&["eval", "examples/a2.loss", "--loss", "zz", "--input", &batch]).status.code(), Some(2));
    let bad_label = temp("c.json", r#"{"logits": [[1, 2]], "labels": [5]}"#);
    let out = lossc(&["eval", "examples/a2.loss", "--input", &bad_label]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("label 5 is out of range"));
    let ragged = temp("d.json", r#"{"logits": [[1, 2], [3]], "labels": [0, 0]}"#);
    assert_eq!(lossc(&["eval", "examples/a2.loss", "--input", &ragged]).status.code(), Some(2));
    let out = lossc(&["eval", "examples/a2.loss", "--input", &batch]);
    assert!(out.status.success());
}

#[test]
fn grad_and_simplify_print_text_that_parses() {
    for cmd in ["grad", "simplify"] {
        let out = lossc(&[cmd, "examples/r1.loss"]);
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let g = lossc::syntax::parse(&text).unwrap_or_else(|d| panic!("{cmd}: {}\n{text}", d.message));
        let want = if cmd == "grad" { 3 } else { 1 };
        assert_eq!(g.outputs.len(), want, "{text}");
    }
}

#[test]
fn eval_with_the_jit_backend_agrees_with_the_interpreter() {
    let batch = temp(
        "m.json",
        r#"{"logits": [[1, 2, -3], [0.5, 0, 4]], "labels": [0, 2], "labels_b": [1, 2], "lam": [0.3, 0.6], "label_smoothing": 0.1}"#,
    );
    let run = |backend: &str| {
        let out = lossc(&["eval", "examples/a2.loss", "--input", &batch, "--backend", backend]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let (a, b) = (run("interp"), run("jit"));
    let (la, lb) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
    assert!((la - lb).abs() <= 1e-5 * la.abs(), "{la} vs {lb}");
    let flat = |v: &serde_json::Value| -> Vec<f64> {
        v["grad_logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
            .collect()
    };
    for (x, y) in flat(&a).iter().zip(flat(&b)) {
        assert!((x - y).abs() <= 1e-5 * x.abs() + 1e-7, "{x} vs {y}");
    }
}

/// Search, evaluation and plotting refuse bad input with exit code 2 and a message that names
/// the problem, and never overwrite what the user has.
#[test]
fn search_and_report_commands_reject_bad_input() {
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lossc-cli-search-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("s.db").to_string_lossy().into_owned();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mine = out.join("best-1.loss");
    std::fs::write(&mine, "loss mine = -y * ln(p);\n").unwrap();
    let out_s = out.to_string_lossy().into_owned();
    let fails = |args: &[&str], needle: &str| {
        let o = lossc(args);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    fails(&["search", "--db", &db, "--population", "0"], "--population");
    // A round larger than the population would push its own first children out before any
    // tournament saw them: refused, with both ways out named.
    let db2 = dir.join("round.db").to_string_lossy().into_owned();
    let round = ["search", "--db", &db2, "--population", "4", "--initial", "8", "--round", "7"];
    fails(&round, "--round 7 is more than --population 4: the first 3 children of each round would leave");
    fails(&round, "give --population 7 or more, or --round 4 or less");
    assert!(!std::path::Path::new(&db2).exists(), "a refused search made a store");
    fails(&["search", "--db", &db, "--aug", "base,cutout"], "take one value");
    fails(&["search", "--db", &db, "--out", &out_s], "was not written by lossc");
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "loss mine = -y * ln(p);\n");
    fails(&["train", "--loss", "examples/ce.loss", "--label-smoothing", "0,0.1"], "take one value");
    fails(&["evaluate", "--loss", "examples/ce.loss", "--db", &db, "--aug", "base,nope"], "augmentation `nope`");
    fails(&["evaluate", "--loss", "examples/ce.loss", "--db", &db, "--baseline", "a2"], "--baseline a2: no loss");
    fails(&["eliminate", "--db", &db, "--stage", "3:100:1"], "no such store");
    // A worker waits its idle time for a missing store to appear; it makes none.
    fails(&["worker", "--db", &db, "--idle", "0.3"], "no such store");
    assert!(!std::path::Path::new(&db).exists(), "a worker made a store");
    lossc::search::store::Store::open(std::path::Path::new(&db)).unwrap();
    assert!(lossc(&["worker", "--db", &db, "--idle", "0"]).status.success(), "an empty store");
    fails(&["eliminate", "--db", &db, "--stage", "3:100:1"], "no search run named `search`");
    fails(&["eliminate", "--db", &db, "--stage", "3:100"], "KEEP:STEPS:SEEDS");
    fails(&["plot", "surface", "examples/ce.loss", "-o", "/tmp/ce.jpg"], ".png or .svg");
    fails(&["plot", "scatter", "--db", &db, "--x", "base", "--y", "cutout", "-o", "/tmp/s.png"], "no sample run");
    fails(&["worker", "--db", "mysql://u:pw@host/db"], "`mysql://` stores are not supported");
    fails(&["worker", "--db", "postgres://u:secret@host:port/db"], "port `port` is not a port number");
    fails(&["worker", "--db", &db, "--lease", "0.1"], "from 0.5 to 86400");
    fails(&["search", "--db", &db, "--workers", "0"], "give --round N");
    fails(&["search", "--db", &db, "--workers", "0", "--round", "0"], "'0' for '--round <ROUND>'");
    fails(&["sample", "--db", &db, "--top", "1"], "'1' for '--top <TOP>'");
    for limit in ["0", "-5m", "10ms", "1d", "soon", "9000h"] {
        fails(&["search", "--db", &db, &format!("--time-limit={limit}")], "is not a time span");
    }
    // Settings that are not finite or out of range are refused before anything runs, and are
    // never stored as if they were absent.
    for (flag, value, needle) in [
        ("--lr", "NaN", "learning rate NaN"),
        ("--lr", "1e39", "learning rate inf"),
        ("--lr", "-0.001", "learning rate -0.001"),
        ("--weight-decay", "NaN", "weight decay NaN"),
        ("--weight-decay", "-1", "weight decay -1"),
        ("--batch", "70000", "batch 70000: at most"),
        ("--width", "100", "width 100: at most 16"),
        ("--steps", "0", "steps must be positive"),
        ("--val", "0", "val must be positive"),
        ("--eval-every", "0", "eval-every must be positive"),
        ("--gate-step", "0", "gate-step must be positive"),
    ] {
        let arg = format!("{flag}={value}");
        fails(&["search", "--db", &db, &arg], needle);
        fails(&["train", "--loss", "examples/ce.loss", &arg], needle);
    }
    if std::path::Path::new(lossc_runtime::data::FASHION_MNIST_DIR).exists() {
        // A tiny run (one candidate, one step), then a resume with other settings.
        let tiny = ["--initial", "1", "--population", "1", "--iterations", "0", "--steps", "1", "--val", "100"];
        let ok = lossc(&[&["search", "--db", &db, "--out", &dir.join("o2").to_string_lossy()], &tiny[..]].concat());
        assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
        let mut other = tiny;
        other[7] = "2";
        fails(&[&["search", "--db", &db], &other[..]].concat(), "spec.steps = 1, not 2");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_screen_checks_its_verdicts_and_prints_where_the_time_goes() {
    let out = lossc(&["bench-screen", "--n", "400"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // The machine comes first, so that figures from different hosts are told apart.
    let host = text.lines().next().unwrap_or("");
    assert!(host.starts_with("host: ") && host.contains(" CPUs; one thread"), "{text}");
    // Random genomes and mutation chains, each compared with the pointwise baseline.
    assert_eq!(text.matches("verdicts differ").count(), 2, "{text}");
    assert_eq!(text.matches("; 0 verdicts differ").count(), 2, "{text}");
    assert_eq!(text.matches("us per candidate:").count(), 2, "{text}");
    // Five timed rounds by default: the median, then the slowest and fastest round.
    assert_eq!(text.matches("(median of 5 rounds, ").count(), 2, "{text}");
    for line in text.lines().filter(|l| l.contains("us per candidate:")) {
        let parts: Vec<&str> = line.split(':').nth(1).unwrap().split('+').map(str::trim).collect();
        let names: Vec<&str> = parts.iter().map(|p| p.split(' ').next().unwrap()).collect();
        assert_eq!(names, ["phenotype", "rules", "simplify", "gradient", "key"], "{line}");
        let total: f64 = parts.iter().map(|p| p.split(' ').nth(1).unwrap().parse::<f64>().unwrap()).sum();
        assert!(total > 0.0, "{line}");
    }
    let out = lossc(&["bench-screen", "--n", "200", "--no-baseline", "--rounds", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !text.contains("pointwise") && text.contains("columnar"), "{text}");
    assert!(!text.contains("rounds"), "{text}");
}

/// `compile -o DIR` writes nothing when the loss is not in the file (no empty DIR left
/// behind), replaces a link inside DIR neither by following it nor at all, replaces the files
/// it wrote itself and no others, and writes nothing at all when it refuses one file.
#[cfg(unix)]
#[test]
fn compile_writes_nothing_on_bad_input_and_never_through_a_link() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lossc-cli-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let fresh = dir.join("fresh");
    let o = lossc(&["compile", "examples/a2.loss", "--loss", "nope", "-o", &fresh.to_string_lossy()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!fresh.exists(), "a failed compile left {} behind", fresh.display());
    // -o naming a file (a loss file, say) is refused and the file kept.
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mine.loss");
    std::fs::write(&file, "loss mine = -y * ln(p);\n").unwrap();
    let o = lossc(&["compile", "examples/a2.loss", "-o", &file.to_string_lossy()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("is a file; -o names the folder"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "loss mine = -y * ln(p);\n");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, "mine").unwrap();
    // The manifest is written last: a refusal there must come before the first write.
    std::os::unix::fs::symlink(&victim, out.join("a2.json")).unwrap();
    let o = lossc(&["compile", "examples/a2.loss", "-o", &out.to_string_lossy()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "mine");
    assert!(!out.join("a2.cu").exists(), "a2.cu written before the refusal");

    // Every kind of file compile writes is recognised as its own and replaced.
    let own = dir.join("own").to_string_lossy().into_owned();
    for target in ["all", "jax", "torch", "all"] {
        let o = lossc(&["compile", "examples/a2.loss", "--target", target, "-o", &own]);
        assert!(o.status.success(), "{target}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let again = String::from_utf8_lossy(&lossc(&["compile", "examples/a2.loss", "-o", &own]).stdout).to_string();
    assert_eq!(again.matches("replaced").count(), 4, "{again}");
    // A file of the same name that lossc did not write is left alone, and so is the rest.
    for (name, text) in [("a2.cu", "my kernel\n"), ("a2.json", "{\"loss\": 1}\n"), ("a2.py", "import torch\n")] {
        let user = dir.join("user");
        let _ = std::fs::remove_dir_all(&user);
        std::fs::create_dir_all(&user).unwrap();
        std::fs::write(user.join(name), text).unwrap();
        let target = if name.ends_with(".py") { "torch" } else { "all" };
        let o = lossc(&["compile", "examples/a2.loss", "--target", target, "-o", &user.to_string_lossy()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains("was not written by lossc"), "{name}: {err}");
        assert_eq!(std::fs::read_to_string(user.join(name)).unwrap(), text);
        assert_eq!(std::fs::read_dir(&user).unwrap().count(), 1, "{name}: other files were written");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `train` prints a short summary for a person; `--json` prints the full record instead, and
/// `--out` writes it.
#[test]
fn train_prints_a_summary_and_the_record_on_request() {
    if !std::path::Path::new(lossc_runtime::data::FASHION_MNIST_DIR).exists() {
        eprintln!("skipped: Fashion-MNIST is not installed (apt install dataset-fashion-mnist)");
        return;
    }
    let record = temp("record.json", "");
    let args = [
        "train",
        "--loss",
        "examples/ce.loss",
        "--steps",
        "4",
        "--batch",
        "16",
        "--val",
        "200",
        "--gate-accuracy",
        "0",
    ];
    let o = lossc(&[&args[..], &["--out", &record]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with("ce: best validation accuracy ") && text.contains("images/s"), "{text}");
    assert!(text.lines().count() <= 3, "{text}");
    let stored: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(stored["metrics"]["steps"], 4);
    let o = lossc(&[&args[..], &["--json"]].concat());
    let printed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(printed["spec"], stored["spec"]);
    // The augmentations' settings: in the record where they differ from their usual values,
    // checked like every setting.
    assert!(stored["spec"].get("cutout").is_none(), "{stored}");
    let o = lossc(&[&args[..], &["--aug", "cutout", "--cutout", "5", "--json"]].concat());
    let printed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((&printed["spec"]["aug"], &printed["spec"]["cutout"]), (&"cutout".into(), &5.into()));
    fails_with(&[&args[..], &["--pad", "33"]].concat(), "pad 33: expected 0 to 32 pixels");
    fails_with(&[&args[..], &["--mixup-alpha", "0"]].concat(), "mixup alpha 0: expected a value above 0");
}

fn fails_with(args: &[&str], needle: &str) {
    let o = lossc(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

/// Input nested past the language's limit is refused at its place; at the limit, every stage
/// works (no stack overflow in the parser, lowering, passes or the JIT).
#[test]
fn nesting_past_the_limit_is_a_located_error_and_the_limit_itself_works() {
    let deep = |n: usize| format!("loss a = {}p{};\n", "sin(".repeat(n), ")".repeat(n));
    let sum = |n: usize| format!("loss a = {};\n", vec!["p"; n].join(" + "));
    for (name, text) in [
        ("calls.loss", deep(5000)),
        ("sum.loss", sum(10_000)),
        ("neg.loss", format!("loss a = {}p;\n", "-".repeat(10_000))),
        ("pow.loss", format!("loss a = p{};\n", "^-p".repeat(5000))),
        ("err.loss", format!("loss a = {} + ;\n", vec!["p"; 150_000].join(" + "))),
    ] {
        fails_with(&["check", &temp(name, &text)], "[E15] Error: this expression nests more than 1000 levels deep");
    }
    let at_limit = temp("limit.loss", &deep(999));
    let batch = temp("limit.json", r#"{"logits": [[0.5, -1.0, 2.0]], "labels": [2]}"#);
    for args in [
        vec!["check", &at_limit],
        vec!["grad", &at_limit],
        vec!["eval", &at_limit, "--input", &batch, "--backend", "jit"],
    ] {
        let o = lossc(&args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

/// Numbers that would silently change, input that never ends, and characters that hide text.
#[test]
fn numbers_sizes_and_invisible_characters_are_reported() {
    fails_with(&["check", &temp("tiny.loss", "loss a = 1e-400 * p;\n")], "number `1e-400` is too small");
    assert!(lossc(&["check", &temp("zero.loss", "loss a = 0e-400 * p + 0.0 * y + p;\n")]).status.success());
    fails_with(&["check", "/dev/zero"], "larger than 256 MiB");
    fails_with(&["bench-screen", "--n", "0"], "--n takes 1 to 10,000,000");
    fails_with(&["bench-train", "--threads", "100000"], "is not in 1..=256");
    fails_with(&["bench", "examples/ce.loss", "--shapes", "100000x100000"], "B * C <= 2^28");
    let o = lossc(&["check", &temp("bidi.loss", "loss a = p \u{202e}+ y;\n")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("`\\u{202e}`") && !err.contains('\u{202e}'), "{err}");
}

/// `eval` refuses batches the kernels would get wrong or the contract does not allow, with
/// the file named and exit code 2 on every backend.
#[test]
fn eval_refuses_batches_outside_the_contract() {
    let loss = "examples/a2.loss";
    for (name, json, needle) in [
        ("big.json", r#"{"logits": [[1e39, 0.0]], "labels": [0]}"#, "beyond the f32 range"),
        (
            "lam.json",
            r#"{"logits": [[1.0, 0.0]], "labels": [0], "labels_b": [1], "lam": [1.0000001]}"#,
            "lam = 1.0000001",
        ),
        ("neg.json", r#"{"logits": [[1.0, 0.0]], "targets": [[-0.5, 1.5]]}"#, "a dense target = -0.5"),
        ("sum.json", r#"{"logits": [[1.0, 0.0]], "targets": [[0.5, 0.6]]}"#, "sums to 1.1"),
        ("empty.json", r#"{"logits": [], "labels": []}"#, "the batch is empty"),
    ] {
        let path = temp(name, json);
        for backend in ["interp", "jit"] {
            if name == "big.json" && backend == "interp" {
                continue; // f64 holds it
            }
            fails_with(&["eval", loss, "--input", &path, "--backend", backend], needle);
            fails_with(&["eval", loss, "--input", &path, "--backend", backend], name);
        }
    }
}

/// Stores and outputs that cannot be used are refused before any work.
#[test]
fn unusable_stores_and_outputs_are_refused_first() {
    let notes = temp("notes.txt", "my notes\n");
    fails_with(&["worker", "--db", &notes, "--idle", "0"], "not a lossc store");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes\n");
    let db = temp("x.db", "");
    std::fs::remove_file(&db).unwrap();
    fails_with(&["search", "--db", &db, "--out", &notes], "is not a directory");
    // SQLite says only "unable to open database file" for a folder or a missing folder.
    let folder = std::path::Path::new(&notes).parent().unwrap().to_string_lossy().into_owned();
    fails_with(&["search", "--db", &folder, "--steps", "10"], "it is a folder");
    let lost = format!("{folder}/no-such-folder/s.db");
    fails_with(&["search", "--db", &lost, "--steps", "10"], "no-such-folder does not exist");
    // Commands that read a run from a store do not leave a new, empty one behind.
    for args in [
        vec!["status", "--db", &db],
        vec!["eliminate", "--db", &db, "--stage", "1:10:1"],
        vec!["plot", "scatter", "--db", &db, "--x", "base", "--y", "cutout", "--out", "s.png"],
    ] {
        fails_with(&args, "no such store");
        assert!(!std::path::Path::new(&db).exists(), "{args:?} created {db}");
    }
    fails_with(
        &["plot", "phenotype", "examples/a2.loss", "-o", &format!("{folder}/nope/a2.png")],
        "nope does not exist",
    );
    // Output files are checked before any training.
    let nope = format!("{folder}/nope/out");
    fails_with(&["train", "--loss", "examples/ce.loss", "--out", &nope], "nope does not exist");
    fails_with(&["train", "--loss", "examples/ce.loss", "--out", &folder], "it is a folder");
    fails_with(&["evaluate", "--loss", "examples/ce.loss", "--db", &db, "--csv", &nope], "nope does not exist");
    fails_with(&["sample", "--db", &db, "--aug", "base,cutout", "--csv", &folder], "it is a folder");
    assert!(!std::path::Path::new(&db).exists());
    // Data that does not load leaves no run behind (a run keeps its --data, and its jobs would
    // wait in the store).
    let data = format!("cifar10:{folder}/no-cifar");
    for args in [
        vec!["search", "--db", &db, "--data", &data, "--steps", "10"],
        vec!["search", "--db", &db, "--data", &data, "--steps", "10", "--workers", "0", "--round", "2"],
        vec!["sample", "--db", &db, "--data", &data, "--aug", "base,cutout", "--n", "2", "--steps", "10"],
        vec!["evaluate", "--db", &db, "--data", &data, "--loss", "examples/ce.loss", "--steps", "10"],
    ] {
        fails_with(&args, "no-cifar/data_batch_1.bin");
        assert!(!std::path::Path::new(&db).exists(), "{args:?} created {db}");
    }
}

/// The WGSL backend works without `XDG_RUNTIME_DIR` and says nothing about it.
#[test]
fn the_wgsl_backend_is_quiet_without_a_runtime_dir() {
    let batch = temp("w.json", r#"{"logits": [[0.5, -1.0, 2.0]], "labels": [2]}"#);
    let o = Command::new(env!("CARGO_BIN_EXE_lossc"))
        .args(["eval", "examples/a2.loss", "--input", &batch, "--backend", "wgsl"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() && err.contains("no Vulkan adapter") && std::env::var_os("LOSSC_REQUIRE_VULKAN").is_none() {
        eprintln!("skipped: no Vulkan adapter ({err})");
        return;
    }
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("XDG_RUNTIME_DIR"), "{err}");
}

/// A loss at the nesting limit trains in a worker thread too (`evaluate` trains on workers,
/// whose stacks are smaller than the main thread's by default).
#[test]
fn a_loss_at_the_nesting_limit_trains_on_a_worker() {
    if !std::path::Path::new(lossc_runtime::data::FASHION_MNIST_DIR).exists() {
        eprintln!("skipped: Fashion-MNIST is not installed (apt install dataset-fashion-mnist)");
        return;
    }
    let deep = temp("deep999.loss", &format!("loss a = {}p{};\n", "sin(".repeat(999), ")".repeat(999)));
    let db = temp("deep.db", "");
    std::fs::remove_file(&db).unwrap();
    let o = lossc(&[
        "evaluate",
        "--loss",
        &deep,
        "--db",
        &db,
        "--steps",
        "2",
        "--batch",
        "8",
        "--val",
        "100",
        "--seeds",
        "1",
        "--eval-every",
        "1",
        "--workers",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `--device auto` trains on CUDA where a CUDA device opens, else on the CPU; `cuda` without
/// one is a clear failure (exit 1), not a silent fallback.
#[test]
fn device_auto_falls_back_to_the_cpu_and_cuda_does_not() {
    let cuda = lossc_runtime::cuda::Cuda::new(1).is_ok();
    let out = lossc(&["bench-train", "--device", "auto", "--steps", "2", "--batch", "8"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.contains("thread(s)"), !cuda, "{text}");
    if !cuda {
        let out = lossc(&["bench-train", "--device", "cuda", "--steps", "2", "--batch", "8"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("error: "), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A search, sample or evaluation whose workers here cannot open its device fails (exit 1)
/// before its store records a run or jobs: a stored run keeps its device. A coordinator that
/// trains nothing here (`--workers 0`) stores the run for workers elsewhere, and says so; resuming it with
/// another device is refused (exit 2), the CPU's default included.
#[test]
fn a_run_on_a_device_this_machine_lacks_stores_nothing() {
    if lossc_runtime::cuda::Cuda::new(1).is_ok() {
        eprintln!("skipped: a CUDA device opens here");
        return;
    }
    let db = temp("nodevice.db", "");
    std::fs::remove_file(&db).unwrap();
    let small = ["--steps", "4", "--batch", "8", "--device", "cuda"];
    for args in [
        vec!["search", "--db", &db, "--initial", "4", "--population", "2", "--iterations", "2"],
        vec!["sample", "--db", &db, "--aug", "base,cutout", "--n", "2"],
        vec!["evaluate", "--db", &db, "--loss", "examples/ce.loss"],
    ] {
        let o = lossc(&[&args[..], &small[..]].concat());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("error: ") && !err.contains("panicked"), "{args:?}: {err}");
        assert!(!std::path::Path::new(&db).exists(), "{args:?} created {db}");
    }
    let search = ["search", "--db", &db, "--initial", "4", "--population", "2", "--iterations", "2", "--workers", "0"];
    let o = lossc(&[&search[..], &["--round", "2", "--time-limit", "0.5s"], &small[..]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // It says who trains, rather than wait in silence.
    assert!(err.contains(&format!("the trainings wait for `lossc worker --db {db}` processes")), "{err}");
    // (A time limit: resumed, it would wait for workers that never come.)
    fails_with(
        &[&search[..], &["--steps", "4", "--batch", "8", "--time-limit", "5s"]].concat(),
        r#"started with spec.device = "cuda", not its default"#,
    );
}

/// `bench/gpu_train_table.py` turns the GPU run's log (`bench-train --device cuda` at each K,
/// then the PyTorch baselines) into the table of docs/gpu.md and checks the goals: here on the
/// real output of `bench-train` (on a GPU, or in CI on the fake driver) with PyTorch lines in
/// the baseline script's format, at rates that put one goal each side.
#[test]
fn the_gpu_benchmark_table_reads_bench_train_on_cuda() {
    if !common::have_device("cuda") {
        return;
    }
    let mut log = String::new();
    let mut rate = Vec::new();
    for k in ["1", "2"] {
        let out = lossc(&["bench-train", "--device", "cuda", "--population", k, "--steps", "2", "--batch", "8"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let r: f64 =
            text.split(" candidate-steps/s").next().and_then(|t| t.rsplit(' ').next()).unwrap().parse().unwrap();
        log += &text;
        rate.push(r);
    }
    // As bench/torch_gpu_train_baseline.py prints them (with more digits, for the emulator's
    // slow rates): eager a quarter of lossc's K = 1, the ensemble of K = 2 as fast as lossc's.
    let torch = |what: &str, r: f64| format!("{what}: {r:.4} candidate-steps/s, {:.0} images/s\n", r * 128.0);
    log += "pytorch 2.11.0 on NVIDIA H200, batch 128, 1x32x32, Adam, CE\n";
    log += &torch("torch eager, 1 model", rate[0] / 4.0);
    log += &torch("torch.func ensemble, K = 2", rate[1]);
    log += "torch.func ensemble K = 8 failed: OutOfMemoryError: CUDA out of memory\n";
    let dir = common::scratch_dir("gpu-table");
    std::fs::write(dir.join("gpu-check.txt"), &log).unwrap();
    let out = Command::new("python3")
        .args([
            concat!(env!("CARGO_MANIFEST_DIR"), "/bench/gpu_train_table.py"),
            dir.join("gpu-check.txt").to_str().unwrap(),
        ])
        .output()
        .expect("python3");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| 1 |") || l.starts_with("| 2 |")).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows[0].ends_with("| 4.0x | - |"), "K = 1 against eager, no torch.compile: {table}");
    assert!(rows[1].contains("| 1.0x |"), "K = 2 against its ensemble: {table}");
    assert!(table.contains("at least 3x eager: 4.0x, met"), "{table}");
    let population = if rate[1] >= 4000.0 { "met" } else { "not met" };
    assert!(table.contains(&format!("at K = 2, {population}")), "{table}");
    assert!(table.contains("met at none; not met at K = 2"), "{table}");
}

/// `search --device cuda --models 3` trains its jobs as populations on a CUDA device (on a GPU,
/// or in CI on the fake driver of tests/cuda_emu) and stores each result with the device and
/// the population it trained in.
#[test]
fn a_search_trains_its_jobs_as_populations_on_cuda() {
    if !common::have_device("cuda") || !common::have_fashion_mnist() {
        return;
    }
    let dir = common::scratch_dir("cuda-search");
    let db = dir.join("s.db");
    let (db, out) = (db.to_str().unwrap(), dir.join("out"));
    let search = "search --population 3 --initial 3 --tournament 2 --iterations 3 --round 3 --steps 6 --batch 8 \
                  --val 64 --eval-every 3 --lr 0.003 --warmup 2 --gate-step 3 --gate-accuracy 0 --seed 3 \
                  --device cuda --workers 1 --models 3";
    let mut args: Vec<&str> = search.split_whitespace().collect();
    args.extend(["--db", db, "--out", out.to_str().unwrap()]);
    let o = lossc(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut q = conn.prepare("SELECT metrics FROM results").unwrap();
    let metrics: Vec<serde_json::Value> = q
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|m| serde_json::from_str(&m.unwrap()).unwrap())
        .collect();
    assert_eq!(metrics.len(), 6, "3 initial losses and 3 children");
    for m in &metrics {
        assert!(m["device"].as_str().unwrap().starts_with("cuda"), "{m}");
        assert!(m["steps"] == 6 || m["stopped"].is_string(), "{m}");
    }
    assert!(metrics.iter().any(|m| m["population"] == 3), "a population of 3 trained together");
}

/// A tiny Fashion-MNIST in IDX form (`n` training and `test` test images of 28x28, pixels
/// from a hash of their index, labels cycling over the 10 classes), for trainings that must be
/// quick on an emulated device.
fn tiny_fashion_mnist(dir: &std::path::Path, n: u32, test: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, count) in [("train", n), ("t10k", test)] {
        let mut images = [0, 0, 8, 3].to_vec();
        images.extend([count, 28, 28].iter().flat_map(|d| d.to_be_bytes()));
        images.extend((0..count * 784).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8));
        let mut labels = [0, 0, 8, 1].to_vec();
        labels.extend(count.to_be_bytes());
        labels.extend((0..count).map(|i| (i % 10) as u8));
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
}

/// Workers each with a CUDA device of their own (streams of one context, graphs captured
/// per thread) train what one worker does: `evaluate` with 3 workers, a seed each, stores the
/// numbers of 1 worker, bit for bit.
#[test]
fn several_workers_train_the_same_numbers_on_cuda() {
    if !common::have_device("cuda") {
        return;
    }
    let dir = common::scratch_dir("cuda-workers");
    tiny_fashion_mnist(&dir.join("data"), 48, 16);
    let data = format!("fashion-mnist:{}", dir.join("data").display());
    let evaluate = |workers: &str| {
        let db = dir.join(format!("w{workers}.db"));
        let out = Command::new(env!("CARGO_BIN_EXE_lossc"))
            .args(["evaluate", "--device", "cuda", "--models", "2", "--seeds", "3", "--steps", "4", "--batch", "8"])
            .args(["--val", "16", "--eval-every", "2", "--warmup", "1", "--workers", workers, "--data", &data])
            .args(["--loss", "examples/ce.loss", "--loss", "examples/a2.loss", "--db"])
            .arg(&db)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut q = conn.prepare("SELECT key, spec, metrics FROM results ORDER BY key, spec").unwrap();
        let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)));
        rows.unwrap()
            .map(|r| {
                let (key, spec, m) = r.unwrap();
                let mut m: serde_json::Value = serde_json::from_str(&m).unwrap();
                for timing in ["wall_seconds", "images_per_second"] {
                    m.as_object_mut().unwrap().remove(timing);
                }
                (key, spec, m)
            })
            .collect::<Vec<_>>()
    };
    let one = evaluate("1");
    assert_eq!(one.len(), 6, "2 losses x 3 seeds");
    assert!(one.iter().all(|r| r.2["population"] == 2 && r.2["steps"] == 4), "{one:?}");
    assert_eq!(evaluate("3"), one, "3 workers stored other numbers than 1");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A loss kernel that NVRTC refuses fails its own job, with NVRTC's log as the reason; the
/// rest of its population trains on without it, each loss's result equal to the one from a run
/// where every kernel built. Needs the fake CUDA driver of tests/cuda_emu, whose NVRTC refuses
/// a source containing LOSSC_FAKE_NVRTC_REFUSE (here a2's kernel name).
#[test]
fn a_loss_kernel_that_does_not_build_fails_only_its_own_job_on_cuda() {
    if !common::have_device("cuda") {
        return;
    }
    if !lossc_runtime::cuda::Cuda::new(1).unwrap().device_name().contains("fake") {
        println!("SKIPPED: only the fake CUDA driver (tests/cuda_emu) refuses a kernel on request");
        return;
    }
    let dir = common::scratch_dir("cuda-refused");
    tiny_fashion_mnist(&dir.join("data"), 48, 16);
    let data = format!("fashion-mnist:{}", dir.join("data").display());
    // Each loss's (name, metrics) from one evaluation of ce, a2 and m1 as one population.
    let evaluate = |db: &str, refuse: &str| {
        let db = dir.join(db);
        let out = Command::new(env!("CARGO_BIN_EXE_lossc"))
            .args(["evaluate", "--device", "cuda", "--models", "3", "--seeds", "1", "--steps", "4", "--batch", "8"])
            .args(["--val", "16", "--eval-every", "2", "--warmup", "1", "--data", &data, "--db"])
            .arg(&db)
            .args(["--loss", "examples/ce.loss", "--loss", "examples/a2.loss", "--loss", "examples/m1.loss"])
            .env("LOSSC_FAKE_NVRTC_REFUSE", refuse)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut q = conn.prepare("SELECT j.text, r.metrics FROM results r JOIN jobs j USING (key, spec)").unwrap();
        let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).unwrap();
        let mut v: Vec<(String, serde_json::Value)> = rows
            .map(|r| r.unwrap())
            .map(|(text, m)| (text.split_whitespace().nth(1).unwrap().to_string(), serde_json::from_str(&m).unwrap()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let all = evaluate("all.db", "");
    let refused = evaluate("refused.db", "lossc_a2_");
    let names = |v: &[(String, serde_json::Value)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&all), ["a2", "ce", "m1"]);
    assert_eq!(names(&refused), ["a2", "ce", "m1"]);
    for (name, m) in &all {
        assert!(m["stopped"].is_null() && m["population"] == 3, "{name}: {m}");
    }
    let a2 = &refused[0].1;
    let why = a2["stopped"].as_str().unwrap_or_default();
    assert!(why.starts_with("the loss kernel of model "), "{a2}");
    assert!(why.contains("NVRTC_ERROR_COMPILATION for sm_"), "{a2}");
    assert!(why.contains(": fake nvrtc: refused a source containing `lossc_a2_`"), "NVRTC's log is the reason: {a2}");
    for ((name, alone), (_, with)) in all.iter().zip(&refused).skip(1) {
        assert_eq!(with["population"], 2, "{name} trained in a population of the two that built: {with}");
        for field in ["train", "validation", "test_accuracy", "steps"] {
            assert_eq!(alone[field], with[field], "{name}: {field}");
        }
    }
}

/// `bench-train` times the steps after its warm-up and says so; `--profile` lists each GPU
/// kernel's launches per training step (the surrogate's nine convolutions: a stem and four a
/// block, over the entry points for blocks of images), and on the CPU says there is
/// nothing to time.
#[test]
fn bench_train_profiles_the_kernels_of_a_step() {
    let out = lossc(&["bench-train", "--steps", "5", "--batch", "8", "--profile"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("(4 steps timed after 1 warm-up;"), "{text}");
    assert!(text.contains("9.19 M multiply-adds a training image in the convolutions and the dense layer: "), "{text}");
    assert!(text.contains("profile: this device launches no kernels to time (the CPU device)"), "{text}");
    let out = lossc(&["bench-train", "--device", "wgpu", "--steps", "5", "--batch", "2", "--profile"]);
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(std::env::var_os("LOSSC_REQUIRE_VULKAN").is_none(), "LOSSC_REQUIRE_VULKAN is set: {err}");
        println!("SKIPPED: {err}");
        return;
    }
    let row = |name: &str| text.lines().find(|l| l.split_whitespace().next() == Some(name)).map(str::to_string);
    let launches = |prefix: &str| -> f64 {
        let rows = text.lines().filter(|l| l.split_whitespace().next().is_some_and(|n| n.starts_with(prefix)));
        rows.map(|l| l.split_whitespace().nth(1).and_then(|x| x.parse::<f64>().ok()).unwrap_or(f64::NAN)).sum()
    };
    assert_eq!(launches("conv_forward_"), 9.0, "{text}");
    assert_eq!(launches("conv_backward_filter"), 9.0, "{text}");
    assert_eq!(launches("conv_backward_data_"), 8.0, "{text}");
    assert!(text.contains("profile over 3 steps, each launch waited for:"), "{text}");
    assert!(row("all").is_some_and(|l| l.contains("wall")), "{text}");
}

/// `bench --jax` times the paper's losses in JAX (hand-written) beside the kernel, and leaves
/// the JAX columns of any other loss empty, also one that takes a paper loss's name.
#[test]
fn bench_with_jax_times_the_paper_losses_and_leaves_others_out() {
    // bench/jax_baseline.sh runs bench/.venv's Python.
    if !common::imports(common::BENCH_PYTHON.as_ref(), "jax") {
        assert!(std::env::var_os("LOSSC_REQUIRE_JAX").is_none(), "LOSSC_REQUIRE_JAX is set but JAX is missing");
        println!("SKIPPED: no JAX in bench/.venv");
        return;
    }
    // `a2` here is not the paper's A2: JAX's A2 would time another function.
    let mine = temp("mine.loss", "loss mine = -y * ln(p) + 0.5 * y * square(1 - p);\nloss a2 = -y * ln(p);\n");
    let o = lossc(&["bench", "examples/ce.loss", &mine, "--jax", "--shapes", "256x10", "--targets", "labels"]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{out}{err}");
    let row = |name: &str| -> Vec<String> {
        let text = format!("{out}{err}");
        let line =
            text.lines().find(|l| l.starts_with(&format!("{name} ")) && l.contains("256x10")).unwrap_or_default();
        line.split_whitespace().map(str::to_string).collect()
    };
    let ce = row("ce");
    assert_eq!(ce.len(), 10, "{out}{err}");
    assert!(ce[8].parse::<f64>().is_ok_and(|ms| ms > 0.0) && ce[9].ends_with('x'), "{ce:?}");
    for other in [row("mine"), row("a2")] {
        assert_eq!(other.len(), 10, "{out}{err}");
        assert_eq!(&other[8..], ["-", "-"], "{other:?}");
    }
}
