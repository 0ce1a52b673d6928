//! The `lossc` command against adversarial input: seeded random `.loss` files from the grammar
//! (every op, extreme literals, nesting past the limit), mutated and random bytes, and random
//! `eval` batches. Every run must end with exit code 0 or 2: never a panic (101), an abort
//! (a signal: stack overflow, out of memory) or a hang.
//!
//! A fixed count runs in CI in well under a minute; `LOSSC_FUZZ_CASES=20000 cargo test --release
//! --test fuzz -- --nocapture` runs a longer campaign (`LOSSC_FUZZ_SEED` picks another seed).

use lossc::ir::{BinOp, UnOp};
use lossc::rng::Rng;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn cases() -> usize {
    std::env::var("LOSSC_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1500)
}

fn seed() -> u64 {
    std::env::var("LOSSC_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(7)
}

/// Runs `lossc args` with a time limit; returns the exit code, or says how it failed.
fn run(args: &[&str]) -> Result<i32, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lossc"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return match status.code() {
                Some(c @ (0 | 2)) if !err.contains("panicked") => Ok(c),
                Some(c) => Err(format!("exit {c}: {}", err.chars().take(600).collect::<String>())),
                None => Err(format!("killed by a signal ({status:?}): {}", err.chars().take(600).collect::<String>())),
            };
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            return Err("no answer in 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A random expression of about `budget` nodes over every op of the table.
fn expr(rng: &mut Rng, budget: usize, out: &mut String) {
    const LEAVES: &[&str] =
        &["y", "p", "eps", "0", "1", "-1", "0.5", "2", "1e308", "1e-308", "4.9e-324", "1e-7", "3.14159", "10"];
    if budget <= 1 {
        out.push_str(rng.pick::<&str>(LEAVES));
        return;
    }
    match rng.below(6) {
        0 | 1 => {
            let op = rng.pick(UnOp::ALL);
            out.push_str(op.name());
            out.push('(');
            expr(rng, budget - 1, out);
            out.push(')');
        }
        2 => {
            let op = rng.pick(BinOp::ALL);
            out.push_str(op.name());
            out.push('(');
            expr(rng, budget / 2, out);
            out.push_str(", ");
            expr(rng, budget / 2, out);
            out.push(')');
        }
        3 => {
            out.push('(');
            expr(rng, budget / 2, out);
            out.push_str([" + ", " - ", " * ", " / ", " ^ "][rng.below(5)]);
            expr(rng, budget / 2, out);
            out.push(')');
        }
        4 => {
            out.push('-');
            expr(rng, budget - 1, out);
        }
        _ => {
            out.push_str("aq(");
            expr(rng, budget / 2, out);
            out.push_str(", ");
            expr(rng, budget / 2, out);
            out.push(')');
        }
    }
}

/// One adversarial `.loss` file's bytes.
fn loss_file(rng: &mut Rng) -> Vec<u8> {
    let mut text = String::new();
    if rng.chance(0.2) {
        text.push_str(["eps = 0;\n", "eps = 1e-300;\n", "eps = 1;\n", "eps = 1e308;\n"][rng.below(4)]);
    }
    match rng.below(8) {
        // A long chain past the nesting limit: calls, a flat sum, unary minus, powers.
        0 => {
            let n = 900 + rng.below(400);
            let body = match rng.below(4) {
                0 => format!("{}p{}", "sin(".repeat(n), ")".repeat(n)),
                1 => vec!["p"; n].join(" + "),
                2 => format!("{}p", "-".repeat(n)),
                _ => format!("p{}", "^-p".repeat(n)),
            };
            text += &format!("loss a = {body};\n");
        }
        // Many terms through `let`s (deep graph, shallow syntax).
        1 => {
            text += "let t0 = p;\n";
            let k = 2 + rng.below(30);
            for i in 1..k {
                text += &format!("let t{i} = t{} * y + sin(t{}) + {};\n", i - 1, i - 1, rng.below(100));
            }
            text += &format!("loss a = t{};\n", k - 1);
        }
        _ => {
            let mut e = String::new();
            let size = 1 + rng.below(40);
            expr(rng, size, &mut e);
            text += &format!("loss a = {e};\n");
        }
    }
    let mut bytes = text.into_bytes();
    // Mutations: flip, drop or insert bytes, some of them not UTF-8 or invisible.
    if rng.chance(0.3) {
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len() + 1);
            match rng.below(4) {
                0 if at < bytes.len() => bytes[at] = rng.below(256) as u8,
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                2 => bytes.splice(at..at, "\u{202e}".bytes()).for_each(drop),
                _ => bytes.insert(at, b"(),;^*-+=#/ \n\x00\xff"[rng.below(15)]),
            }
        }
    }
    if rng.chance(0.05) {
        bytes = (0..rng.below(300)).map(|_| rng.below(256) as u8).collect();
    }
    bytes
}

/// One adversarial `eval` batch.
fn batch(rng: &mut Rng) -> String {
    const VALUES: &[&str] = &["0", "1", "-1", "0.5", "1e39", "-1e39", "1e308", "1e-320", "100", "-100", "3"];
    let (rows, classes) = (rng.below(4), rng.below(5));
    let row = |rng: &mut Rng| {
        let n = if rng.chance(0.9) { classes } else { rng.below(6) };
        format!("[{}]", (0..n).map(|_| *rng.pick(VALUES)).collect::<Vec<_>>().join(", "))
    };
    let logits: Vec<String> = (0..rows).map(|_| row(rng)).collect();
    let labels = |rng: &mut Rng| (0..rows).map(|_| rng.below(classes + 2).to_string()).collect::<Vec<_>>().join(", ");
    let mut json = format!("{{\"logits\": [{}]", logits.join(", "));
    match rng.below(4) {
        0 => json += &format!(", \"labels\": [{}]", labels(rng)),
        1 => json += &format!(", \"labels\": [{}], \"label_smoothing\": {}", labels(rng), rng.pick(VALUES)),
        2 => {
            let lam: Vec<&str> = (0..rows).map(|_| *rng.pick(&["0", "1", "0.3", "1.0000001", "-0.1"])).collect();
            json += &format!(
                ", \"labels\": [{}], \"labels_b\": [{}], \"lam\": [{}]",
                labels(rng),
                labels(rng),
                lam.join(", ")
            );
        }
        _ => json += &format!(", \"targets\": [{}]", (0..rows).map(|_| row(rng)).collect::<Vec<_>>().join(", ")),
    }
    json + "}"
}

fn scratch() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lossc-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn adversarial_loss_files_and_batches_end_with_exit_0_or_2() {
    let dir = scratch();
    let mut rng = Rng::new(seed());
    let mut failures = Vec::new();
    let (mut ok, mut refused) = (0, 0);
    let good_batch = dir.join("good.json");
    std::fs::write(&good_batch, r#"{"logits": [[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]], "labels": [2, 0]}"#).unwrap();
    for case in 0..cases() {
        let file = dir.join(format!("c{case}.loss"));
        std::fs::write(&file, loss_file(&mut rng)).unwrap();
        let f = file.to_str().unwrap();
        let mut commands: Vec<Vec<String>> = Vec::new();
        if case % 3 == 0 {
            let json = dir.join(format!("b{case}.json"));
            std::fs::write(&json, batch(&mut rng)).unwrap();
            let backend = if case % 2 == 0 { "jit" } else { "interp" };
            commands.push(vec![
                "eval".into(),
                "examples/a2.loss".into(),
                "--input".into(),
                json.to_str().unwrap().into(),
                "--backend".into(),
                backend.into(),
            ]);
        }
        match run(&["check", f]) {
            Ok(0) => {
                ok += 1;
                commands.push(vec!["grad".into(), f.into()]);
                let backend = ["interp", "jit"][case % 2];
                let b = good_batch.to_str().unwrap();
                commands.push(vec![
                    "eval".into(),
                    f.into(),
                    "--input".into(),
                    b.into(),
                    "--backend".into(),
                    backend.into(),
                ]);
                if case % 8 == 0 {
                    commands.push(vec![
                        "compile".into(),
                        f.into(),
                        "--target".into(),
                        "cpu".into(),
                        "-o".into(),
                        dir.join("out").to_str().unwrap().into(),
                    ]);
                }
            }
            Ok(_) => refused += 1,
            Err(e) => failures.push(format!("check {f}: {e}")),
        }
        for args in &commands {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if let Err(e) = run(&args) {
                failures.push(format!("{args:?}: {e}"));
            }
        }
    }
    println!("{} cases: {ok} checked, {refused} refused with exit 2; {} failures", cases(), failures.len());
    assert!(failures.is_empty(), "{failures:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}
