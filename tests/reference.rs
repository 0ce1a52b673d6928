//! `lossc eval` against independent JAX float64 values (tests/data/reference.json, written by
//! scripts/reference.py): every paper loss, for one-hot, smoothed, mixup and dense targets.

use serde_json::Value;
use std::process::Command;

fn reference() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(floats).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        other => panic!("not a number: {other}"),
    }
}

/// Relative error with a floor at 1e-9 of the largest magnitude (for entries that cancel to ~0).
fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-9 * w.abs().max(scale * 1e-3).max(1e-300);
        assert!((g - w).abs() <= tol, "{what}[{i}]: lossc {g:e} vs JAX {w:e} (|diff| {:e} > {tol:e})", (g - w).abs());
    }
}

#[test]
fn eval_matches_jax_float64_on_all_examples_and_target_kinds() {
    let reference = reference();
    let dir = tempdir();
    let mut checked = 0;
    for case in reference["cases"].as_array().unwrap() {
        let mut input = case.clone();
        let expected = input.as_object_mut().unwrap().remove("expected").unwrap();
        input.as_object_mut().unwrap().remove("name");
        let path = dir.join(format!("{}.json", case["name"].as_str().unwrap()));
        std::fs::write(&path, input.to_string()).unwrap();
        for (loss, want) in expected.as_object().unwrap() {
            let out = Command::new(env!("CARGO_BIN_EXE_lossc"))
                .args(["eval", &format!("examples/{loss}.loss"), "--input"])
                .arg(&path)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .unwrap();
            assert!(out.status.success(), "{loss}: {}", String::from_utf8_lossy(&out.stderr));
            let got: Value = serde_json::from_slice(&out.stdout).unwrap();
            let what = format!("{loss}/{}", case["name"]);
            for key in ["loss", "row_loss", "grad_logits"] {
                assert_close(&format!("{what} {key}"), &floats(&got[key]), &floats(&want[key]));
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 16 * 4);
}

fn tempdir() -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lossc-ref-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
