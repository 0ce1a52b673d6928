//! `lossc compile --target jax|torch`: the generated module computes the f64 interpreter's row
//! losses and logit gradients (its gradient is lossc's symbolic one, through `jax.custom_vjp` or
//! a `torch.autograd.Function`), in f64 and in f32, on the 16 paper losses and random losses,
//! with labels, label smoothing, mixup pairs and dense targets. JAX runs the labels cases under
//! `jax.jit`; PyTorch runs its tensor-ops path on the CPU, compiles each module's CUDA kernel to
//! PTX through the module's own NVRTC loader, and on a GPU also runs the fused kernel.
//!
//! Needs Python with JAX (`bench/.venv`, which scripts/test.sh creates, or `LOSSC_PYTHON`) and
//! Python with PyTorch (Debian's python3-torch, which scripts/test.sh installs, or
//! `LOSSC_TORCH_PYTHON`). Each test skips with a message without its framework, unless
//! `LOSSC_REQUIRE_JAX` / `LOSSC_REQUIRE_TORCH` is set (CI).

mod common;

use common::Batch;
use lossc::passes::fuse;
use lossc::reference::contract::Targets;
use lossc::rng::Rng;

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
    let Some(py) = common::python("LOSSC_PYTHON", common::BENCH_PYTHON, "jax") else {
        assert!(std::env::var_os("LOSSC_REQUIRE_JAX").is_none(), "LOSSC_REQUIRE_JAX is set but JAX is missing");
        println!("SKIPPED: no Python with JAX (bench/.venv or LOSSC_PYTHON)");
        return;
    };
    let results = run_modules("jax", &py, lossc::backend::python::emit_jax);
    compare(&results, &["float64", "float32"]);
}

#[test]
fn the_torch_module_matches_the_interpreter() {
    let Some(py) = common::python("LOSSC_TORCH_PYTHON", "/usr/bin/python3", "torch") else {
        assert!(std::env::var_os("LOSSC_REQUIRE_TORCH").is_none(), "LOSSC_REQUIRE_TORCH is set but PyTorch is missing");
        println!("SKIPPED: no Python with PyTorch (/usr/bin/python3 with python3-torch, or LOSSC_TORCH_PYTHON)");
        return;
    };
    let results = run_modules("torch", &py, lossc::backend::python::emit_torch);
    println!("PyTorch {}, CUDA: {}", results.info["torch"], results.info["cuda"]);
    let mut dtypes = vec!["float64", "float32"];
    if results.info["cuda"] == true {
        dtypes.push("cuda");
        let fused = results.raw.iter().filter(|r| r["fused"] == true).count();
        assert_eq!(fused, results.raw.len(), "the fused kernel ran for {fused} of {} cases", results.raw.len());
    } else {
        println!("no GPU: the fused CUDA path is checked by scripts/gpu-check.sh where one is lent");
    }
    compare(&results, &dtypes);
    // Each module's kernel compiles through the module's own loader, where libnvrtc exists.
    let ptx = results.info["ptx"].as_object().unwrap();
    let compiled = ptx.values().filter(|v| **v == true).count();
    if compiled < ptx.len() {
        let why = ptx.values().find(|v| **v != true).unwrap();
        assert!(std::env::var_os("LOSSC_REQUIRE_NVRTC").is_none(), "LOSSC_REQUIRE_NVRTC is set, but: {why}");
        println!("SKIPPED the modules' NVRTC compile: {why}");
    } else {
        println!("{compiled} modules' CUDA kernels compiled to PTX through their own loader");
    }
}

/// What a framework's script returned, with the cases it ran.
struct Results {
    info: serde_json::Value,
    raw: Vec<serde_json::Value>,
    expect: Vec<(lossc::passes::fuse::Fused, usize, usize, bool)>,
    batches: Vec<Batch>,
}

/// Writes every loss's module for `fw` and runs `tests/python/run_FW.py` on all cases.
fn run_modules(fw: &str, py: &std::path::Path, emit: fn(&lossc::passes::fuse::Fused, &str, &str) -> String) -> Results {
    let dir = common::scratch_dir(fw);
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
        std::fs::write(&path, emit(&f, "test", &text)).unwrap();
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
    let script = format!("tests/python/run_{fw}.py");
    let out = std::process::Command::new(py).arg(&script).arg(&cases_file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let raw = match info.get("cases") {
        Some(c) => c.as_array().unwrap().clone(),
        None => info.as_array().unwrap().clone(),
    };
    assert_eq!(raw.len(), expect.len());
    Results { info, raw, expect, batches }
}

/// Each result in each of `dtypes` against the interpreter: all within the kernels' tolerance
/// (f64) or 1 % (f32), and the paper losses' f64 results within 1e-9.
fn compare(results: &Results, dtypes: &[&str]) {
    let (mut compared, mut skipped) = (0, 0);
    let batches = &results.batches;
    for ((f, b, kind, strict), r) in results.expect.iter().zip(&results.raw) {
        let (batch, t) = (&batches[*b], batches[*b].targets(*kind));
        for &dtype in dtypes {
            let get = |key: &str| -> Vec<f32> {
                r[dtype][key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap_or(f64::NAN) as f32).collect()
            };
            let what = format!("{dtype} {} targets {kind}", f.name);
            // f64 results, rounded to f32, and lossc's own CUDA kernel to lossc's kernel tolerance;
            // the frameworks' f32 results to 1 %: their own f32 routines (i0e at large
            // arguments, say) are not held to lossc's bounds.
            let rel = if dtype == "float32" { 1e-2 } else { 1e-4 };
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

/// `examples/jax_train.py` and `examples/torch_train.py` train their classifier with A2 from
/// `lossc compile` to high training accuracy (each where its framework is present).
#[test]
fn the_framework_examples_train_with_a_compiled_loss() {
    let dir = common::scratch_dir("framework-examples");
    let frameworks = [
        ("jax", common::python("LOSSC_PYTHON", common::BENCH_PYTHON, "jax")),
        ("torch", common::python("LOSSC_TORCH_PYTHON", "/usr/bin/python3", "torch")),
    ];
    for (fw, py) in frameworks {
        let Some(py) = py else {
            println!("SKIPPED examples/{fw}_train.py: no Python with {fw}");
            continue;
        };
        let out = dir.join(fw);
        let c = std::process::Command::new(env!("CARGO_BIN_EXE_lossc"))
            .args(["compile", "examples/a2.loss", "--target", fw, "-o"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
        let run = std::process::Command::new(&py)
            .arg(format!("examples/{fw}_train.py"))
            .arg(out.join("a2.py"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{fw}: {}", String::from_utf8_lossy(&run.stderr));
        let last = stdout.lines().last().unwrap_or_default();
        println!("{fw}: {last}");
        let accuracy: f64 =
            last.split("training accuracy ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
        assert!(accuracy > 0.9, "{fw}: {last}");
    }
}
