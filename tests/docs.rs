//! The docs' examples are real: each `$ lossc check|simplify|grad|compile ...` with output in
//! a shell block of docs/walkthrough.md and the README prints what the block shows under it
//! (its error message, where it fails with exit code 2), given the files the blocks show with
//! `$ cat FILE`; and `$ cat examples/...` shows the repository's file. (Training, search and
//! evaluation output depends on the processor and is not compared.)
//!
//! `LOSSC_UPDATE_DOCS=1 cargo test --test docs` writes the commands' present output into the
//! docs instead.

use std::path::Path;
use std::process::Command;

/// The commands whose output is the same on every machine.
const DETERMINISTIC: [&str; 4] = ["check", "simplify", "grad", "compile"];

/// One `$ command` line of a shell block and the lines under it (up to the next command, a
/// blank line or the block's end).
struct Example {
    command: String,
    /// Line numbers (0-based) of the output in the document: `start..end`.
    start: usize,
    end: usize,
}

fn examples(doc: &str) -> Vec<Example> {
    let lines: Vec<&str> = doc.lines().collect();
    let ends_output = |l: &str| l.is_empty() || l.starts_with("$ ") || l.starts_with("```");
    let mut out = Vec::new();
    let mut in_sh = false;
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
        } else if let Some(command) = line.strip_prefix("$ ").filter(|_| in_sh) {
            let end = (i + 1..lines.len()).find(|&j| ends_output(lines[j])).unwrap_or(lines.len());
            out.push(Example { command: command.to_string(), start: i + 1, end });
        }
    }
    out
}

/// Runs the document's deterministic `lossc` commands in a scratch folder holding the files its
/// `cat` lines show (and the repository's `examples/`); returns (command, shown, printed) for
/// each, and rewrites the document with the printed output where `update` is set.
fn check_doc(name: &str, update: bool) -> Vec<(String, String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join(name);
    let doc = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = doc.lines().collect();
    let dir = tempdir(name);
    std::os::unix::fs::symlink(root.join("examples"), dir.join("examples")).unwrap();
    let mut results = Vec::new();
    let mut replaced: Vec<(usize, usize, String)> = Vec::new();
    for ex in examples(&doc) {
        let shown = trimmed(&lines[ex.start..ex.end].join("\n"));
        let words: Vec<&str> = ex.command.split_whitespace().collect();
        match words.as_slice() {
            // A file the reader writes (the repository's examples are read as they are).
            ["cat", file] if !file.contains('/') => {
                std::fs::write(dir.join(file), format!("{shown}\n")).unwrap();
            }
            ["cat", file] if file.starts_with("examples/") => {
                let text = std::fs::read_to_string(root.join(file)).unwrap();
                results.push((ex.command.clone(), shown.clone(), text.trim_end().to_string()));
            }
            // A command listed without output (the README's tour) shows nothing to compare.
            ["lossc", sub, args @ ..] if DETERMINISTIC.contains(sub) && !shown.is_empty() => {
                let _ = std::fs::remove_dir_all(dir.join("build"));
                let out =
                    Command::new(env!("CARGO_BIN_EXE_lossc")).arg(sub).args(args).current_dir(&dir).output().unwrap();
                // A command shown failing shows its message (exit code 2: bad input).
                let printed = match out.status.code() {
                    Some(0) => &out.stdout,
                    Some(2) => &out.stderr,
                    _ => panic!("{name}: `{}` failed: {}", ex.command, String::from_utf8_lossy(&out.stderr)),
                };
                let printed = trimmed(&String::from_utf8_lossy(printed));
                if update && printed != shown {
                    replaced.push((ex.start, ex.end, printed.clone()));
                }
                results.push((ex.command.clone(), shown, printed));
            }
            _ => {}
        }
    }
    if update && !replaced.is_empty() {
        let mut new: Vec<String> = Vec::new();
        let mut at = 0;
        for (start, end, text) in &replaced {
            new.extend(lines[at..*start].iter().map(|l| l.to_string()));
            new.extend(text.lines().map(String::from));
            at = *end;
        }
        new.extend(lines[at..].iter().map(|l| l.to_string()));
        std::fs::write(&path, new.join("\n") + "\n").unwrap();
        println!("{name}: {} outputs rewritten", replaced.len());
    }
    let _ = std::fs::remove_dir_all(&dir);
    results
}

/// Text without trailing blanks on its lines (ariadne's diagnostics end some lines with spaces,
/// which editors strip from documents).
fn trimmed(text: &str) -> String {
    text.lines().map(str::trim_end).collect::<Vec<_>>().join("\n").trim_end().to_string()
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "lossc-docs-{}-{}",
        name.replace('/', "-"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn assert_shown(name: &str, min: usize) {
    let update = std::env::var_os("LOSSC_UPDATE_DOCS").is_some_and(|v| v == "1");
    let results = check_doc(name, update);
    assert!(results.len() >= min, "{name}: {} examples found, expected at least {min}", results.len());
    if update {
        return;
    }
    for (command, shown, printed) in results {
        assert_eq!(
            shown, printed,
            "{name}: `{command}` prints something else than the document shows \
             (LOSSC_UPDATE_DOCS=1 cargo test --test docs rewrites it)"
        );
    }
}

#[test]
fn the_walkthroughs_compiler_examples_print_what_it_shows() {
    assert_shown("docs/walkthrough.md", 3);
}

#[test]
fn the_readmes_examples_print_what_it_shows() {
    assert_shown("README.md", 2);
}

/// The parser of the docs' shell blocks: commands, their output up to a blank line, and no
/// command outside a shell block.
#[test]
fn examples_are_read_from_shell_blocks_only() {
    let doc = "text\n$ not a command\n```sh\n$ lossc check a.loss\na.loss: ok\n\n$ cat a.loss\nloss a = p;\n```\n```\n$ lossc grad x\n```\n";
    let ex = examples(doc);
    let got: Vec<(&str, usize, usize)> = ex.iter().map(|e| (e.command.as_str(), e.start, e.end)).collect();
    assert_eq!(got, [("lossc check a.loss", 4, 5), ("cat a.loss", 7, 8)]);
}
