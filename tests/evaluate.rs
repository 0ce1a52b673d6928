//! Evaluation, sampling and elimination from the command line, with real (small) training on
//! Fashion-MNIST: the tables print, the CSVs parse, reruns come from the store.

mod common;

use lossc::search::store::Store;
use std::path::Path;
use std::process::Command;

const SMALL: [&str; 14] = [
    "--steps",
    "40",
    "--batch",
    "32",
    "--lr",
    "0.003",
    "--warmup",
    "5",
    "--val",
    "300",
    "--eval-every",
    "20",
    "--gate-accuracy",
    "0.1",
];

fn lossc(args: &[&str], dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lossc")).args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn evaluate_prints_a_mean_std_table_and_reruns_from_the_store() {
    if !common::have_fashion_mnist() {
        return;
    }
    let dir = common::scratch_dir("evaluate");
    let root = env!("CARGO_MANIFEST_DIR");
    let (ce, a2) = (format!("{root}/examples/ce.loss"), format!("{root}/examples/a2.loss"));
    let mut args = vec!["evaluate", "--loss", &ce, "--loss", &a2, "--aug", "base,cutout", "--seeds", "2"];
    args.extend(["--db", "e.db", "--workers", "2", "--csv", "e.csv"]);
    args.extend(SMALL);
    let first = lossc(&args, &dir);
    println!("{first}");
    let (table, against) = first.split_once("Against ce").expect("a comparison with ce, the default baseline");
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ce ") || l.starts_with("| a2 ")).collect();
    assert_eq!(rows.len(), 2, "{first}");
    for r in &rows {
        assert_eq!(r.matches(" ± ").count(), 2, "{r}");
    }
    assert_eq!(first.matches("**").count(), 4, "one best per column: {first}");
    let vs: Vec<&str> = against.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(vs.len(), 2, "a header and a2's row: {against}");
    assert!(vs[1].starts_with("| a2 |") && vs[1].matches(" (p ").count() == 2, "{against}");
    let csv = std::fs::read_to_string(dir.join("e.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "loss,aug,runs,mean,std,values,against,diff,p");
    assert_eq!(lines.len(), 5);
    let mut cells = std::collections::HashMap::new();
    for l in &lines[1..] {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f[2], "2");
        let mean: f64 = f[3].parse().unwrap();
        assert!(mean > 0.2 && mean <= 1.0, "test accuracy far above chance expected: {l}");
        let values: Vec<f64> = f[5].trim_matches('"').split(' ').map(|v| v.parse().unwrap()).collect();
        cells.insert((f[0].trim_matches('"'), f[1]), (values, f[6..].to_vec()));
    }
    // a2 is compared with ce's runs of the same augmentation, seed by seed.
    for aug in ["base", "cutout"] {
        let (ce, none) = &cells[&("ce", aug)];
        assert_eq!(none, &["", "", ""], "ce is the baseline");
        let (a2, vs) = &cells[&("a2", aug)];
        let t = lossc::search::stats::paired_t(a2, ce).unwrap();
        assert_eq!(vs[0], "\"ce\"");
        assert!((vs[1].parse::<f64>().unwrap() - t.diff).abs() < 1e-4, "{aug}: {vs:?} against {t:?}");
        if !t.p.is_nan() {
            let p: f64 = vs[2].parse().unwrap();
            assert!((p - t.p).abs() <= 1e-4 * t.p, "{aug}: {vs:?} against {t:?}");
        }
    }
    let (done, attempts) = Store::open(dir.join("e.db")).unwrap().counts().unwrap();
    assert_eq!(done, 8);
    // The same command again trains nothing and prints the same table.
    let second = lossc(&args, &dir);
    assert_eq!(Store::open(dir.join("e.db")).unwrap().counts().unwrap(), (done, attempts));
    assert_eq!(second, first);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sample_prints_kendall_tau_from_real_training_and_plots_its_scatter() {
    if !common::have_fashion_mnist() {
        return;
    }
    let dir = common::scratch_dir("sample");
    let mut args = vec!["sample", "--n", "6", "--aug", "base,cutout", "--top", "4", "--db", "s.db", "--workers", "2"];
    args.extend(["--csv", "tau.csv", "--seed", "4"]);
    args.extend(SMALL);
    let out = lossc(&args, &dir);
    println!("{out}");
    assert!(out.contains("Kendall's tau, all 6 losses"), "{out}");
    assert!(out.contains("Kendall's tau, best 4 by mean fitness"), "{out}");
    assert!(out.contains("| base | 1.000 |"), "the diagonal is 1: {out}");
    let csv = std::fs::read_to_string(dir.join("tau.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "losses,aug_a,aug_b,n,kendall_tau");
    assert_eq!(lines.len(), 3);
    for l in &lines[1..] {
        let tau: f64 = l.rsplit(',').next().unwrap().parse().unwrap();
        assert!((-1.0..=1.0).contains(&tau), "{l}");
    }
    let (done, _) = Store::open(dir.join("s.db")).unwrap().counts().unwrap();
    assert_eq!(done, 12);
    let plot = lossc(&["plot", "scatter", "--db", "s.db", "--x", "base", "--y", "cutout", "-o", "f3.svg"], &dir);
    assert!(plot.contains("wrote f3.svg"));
    let svg = std::fs::read_to_string(dir.join("f3.svg")).unwrap();
    assert_eq!(svg.matches("<circle").count(), 6);
    let _ = std::fs::remove_dir_all(&dir);
}
