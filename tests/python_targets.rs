//! `lossc compile --target jax`: the generated module, run by JAX under `jax.jit`, computes the
//! f64 interpreter's row losses and logit gradients (its gradient is lossc's symbolic one,
//! through `jax.custom_vjp`), in f64 and in f32, on the 16 paper losses and random losses, with
//! labels, label smoothing, mixup pairs and dense targets.
//!
//! Needs Python with JAX: `bench/.venv` (scripts/test.sh creates it), or `LOSSC_PYTHON`. Skips
//! with a message without it, unless `LOSSC_REQUIRE_JAX` is set (CI).

mod common;

use common::Batch;
use lossc::passes::fuse;
use lossc::reference::contract::Targets;
use lossc::rng::Rng;
use std::path::PathBuf;

fn python() -> Option<PathBuf> {
    let p = std::env::var_os("LOSSC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/.venv/bin/python")));
    let ok = std::process::Command::new(&p).args(["-c", "import jax"]).output().is_ok_and(|o| o.status.success());
    ok.then_some(p)
}

/// A case's targets as JSON (batches of 6 classes).
fn json_targets(t: &Targets<f32>) -> (serde_json::Value, f64) {
    match *t {
        Targets::Labels { labels, smoothing } => (serde_json::json!({ "kind": "labels", "labels": labels }), smoothing),
        Targets::Mixup { labels, labels_b, lam, smoothing } => {
            (serde_json::json!({ "kind": "mixup", "labels": labels, "labels_b": labels_b, "lam": lam }), smoothing)
        }
        Targets::Dense { y } => {
            let rows: Vec<&[f32]> = y.chunks(6).collect();
            (serde_json::json!({ "kind": "dense", "dense": rows }), 0.0)
        }
    }
}

#[test]
fn the_jax_module_matches_the_interpreter() {
    let Some(py) = python() else {
        assert!(std::env::var_os("LOSSC_REQUIRE_JAX").is_none(), "LOSSC_REQUIRE_JAX is set but JAX is missing");
        eprintln!("skipped: no Python with JAX (bench/.venv or LOSSC_PYTHON)");
        return;
    };
    let dir = common::scratch_dir("jax");
    let mut losses: Vec<(String, lossc::ir::Graph, bool)> =
        common::example_graphs().into_iter().map(|(n, g)| (n, g, true)).collect();
    let mut rng = Rng::new(21);
    for i in 0..20 {
        let mut g = lossc::ir::random::loss(&mut rng, 4);
        g.outputs[0].0 = format!("random{i}");
        losses.push((format!("random{i}"), g, false));
    }
    let (mut cases, mut expect) = (Vec::new(), Vec::new());
    let mut batches = Vec::new();
    for (name, g, strict) in &losses {
        let f = fuse::fuse(g, name).unwrap();
        let path = dir.join(format!("{name}.py"));
        let text = lossc::ir::print::to_text(g);
        std::fs::write(&path, lossc::backend::python::emit_jax(&f, "test", &text)).unwrap();
        batches.push(Batch::random(&mut rng, 4, 6, 2.0));
        let batch = batches.last().unwrap();
        let rows: Vec<Vec<f32>> = batch.logits.chunks(6).map(<[f32]>::to_vec).collect();
        for kind in 0..5 {
            let (targets, smoothing) = json_targets(&batch.targets(kind));
            cases.push(serde_json::json!({ "path": path, "name": name, "logits": rows, "targets": targets, "smoothing": smoothing }));
            expect.push((f.clone(), batches.len() - 1, kind, *strict));
        }
    }
    let cases_file = dir.join("cases.json");
    std::fs::write(&cases_file, serde_json::to_string(&cases).unwrap()).unwrap();
    let out = std::process::Command::new(&py).arg("tests/python/run_jax.py").arg(&cases_file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), expect.len());
    let (mut compared, mut skipped) = (0, 0);
    for ((f, b, kind, strict), r) in expect.iter().zip(&results) {
        let (batch, t) = (&batches[*b], batches[*b].targets(*kind));
        for dtype in ["float64", "float32"] {
            let get = |key: &str| -> Vec<f32> {
                r[dtype][key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap_or(f64::NAN) as f32).collect()
            };
            let what = format!("jax {dtype} {} targets {kind}", f.name);
            // f64 results, rounded to f32, to lossc's kernel tolerance; f32 results to 1 %: JAX's
            // own f32 routines (i0e at large arguments, say) are not held to lossc's bounds.
            let rel = if dtype == "float64" { 1e-4 } else { 1e-2 };
            let (rows, grad) = (get("rows"), get("grad"));
            let (c, s) = common::compare_within(f, batch, &t, &[(&what, &rows, &grad)], *strict, rel);
            (compared, skipped) = (compared + c, skipped + s);
        }
        // In f64 the paper losses agree far more closely than the f32 tolerance above.
        if *strict {
            let (lam, dense): (Vec<f64>, Vec<f64>);
            let t64 = match t {
                Targets::Labels { labels, smoothing } => Targets::Labels { labels, smoothing },
                Targets::Mixup { labels, labels_b, lam: l, smoothing } => {
                    lam = l.iter().map(|&v| v as f64).collect();
                    Targets::Mixup { labels, labels_b, lam: &lam, smoothing }
                }
                Targets::Dense { y } => {
                    dense = y.iter().map(|&v| v as f64).collect();
                    Targets::Dense { y: &dense }
                }
            };
            let logits: Vec<f64> = batch.logits.iter().map(|&v| v as f64).collect();
            let want = lossc::reference::interp::run(f, &logits, batch.classes, &t64).unwrap();
            let got = |key: &str| -> Vec<f64> {
                r["float64"][key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect()
            };
            let scale = want.grad.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-300);
            for (g, w) in got("rows").iter().zip(&want.row_loss) {
                assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{} targets {kind}: row loss {g} vs {w}", f.name);
            }
            for (g, w) in got("grad").iter().zip(&want.grad) {
                assert!((g - w).abs() <= 1e-9 * scale, "{} targets {kind}: grad {g} vs {w}", f.name);
            }
        }
    }
    println!("{compared} rows compared, {skipped} skipped by the conditioning filter");
    assert!(compared > 2 * 16 * 5 * 4, "{compared} rows compared");
}
