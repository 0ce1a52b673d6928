//! Shared by the tests: random batches, the comparison of a kernel's output with the
//! interpreter, and the set-up of the tests that train on real data.
//!
//! Tolerance: relative 1e-4 with an absolute floor set by the magnitude of the terms that
//! cancel (|s_c| + |p_c sum(s)| for gradients, sum |L_c| for row losses). Rows whose f64
//! intermediates leave f32's range, or whose value moves under 1e-6 relative noise on every
//! node (ill-conditioned: f32 rounding alone could move them), are not compared unless the
//! caller asks for strictness; the counts are returned. Row losses also get a floor of
//! 8 eps |s|: the rounding the kernel's f32 softmax output carries moves L by that much.
#![allow(dead_code)]

use lossc::ir::{Graph, Input, Node};
use lossc::passes::fuse::Fused;
use lossc::reference::contract::Targets;
use lossc::reference::interp::{eval_into, softmax};
use lossc::rng::Rng;

pub struct Batch {
    pub classes: usize,
    pub logits: Vec<f32>,
    pub labels: Vec<u32>,
    pub labels_b: Vec<u32>,
    pub lam: Vec<f32>,
    pub dense: Vec<f32>,
}

impl Batch {
    pub fn random(rng: &mut Rng, rows: usize, classes: usize, scale: f64) -> Batch {
        let logits = (0..rows * classes).map(|_| (scale * rng.normal()) as f32).collect();
        let labels: Vec<u32> = (0..rows).map(|_| rng.below(classes) as u32).collect();
        let mut labels_b: Vec<u32> = (0..rows).map(|_| rng.below(classes) as u32).collect();
        labels_b[0] = *labels.first().unwrap(); // one row mixes a class with itself
        let lam = (0..rows).map(|_| rng.f64() as f32).collect();
        let mut dense = Vec::new();
        for _ in 0..rows {
            let w: Vec<f64> = (0..classes).map(|_| rng.f64()).collect();
            let s: f64 = w.iter().sum();
            dense.extend(w.iter().map(|v| (v / s) as f32));
        }
        Batch { classes, logits, labels, labels_b, lam, dense }
    }

    pub fn targets(&self, kind: usize) -> Targets<'_, f32> {
        match kind {
            0 => Targets::Labels { labels: &self.labels, smoothing: 0.0 },
            1 => Targets::Labels { labels: &self.labels, smoothing: 0.1 },
            2 => Targets::Mixup { labels: &self.labels, labels_b: &self.labels_b, lam: &self.lam, smoothing: 0.0 },
            3 => Targets::Mixup { labels: &self.labels, labels_b: &self.labels_b, lam: &self.lam, smoothing: 0.1 },
            _ => Targets::Dense { y: &self.dense },
        }
    }
}

/// The same targets in f64 for the interpreter.
fn widen<'a>(t: &Targets<'a, f32>, lam: &'a mut Vec<f64>, dense: &'a mut Vec<f64>) -> Targets<'a, f64> {
    match *t {
        Targets::Labels { labels, smoothing } => Targets::Labels { labels, smoothing },
        Targets::Mixup { labels, labels_b, lam: l, smoothing } => {
            *lam = l.iter().map(|&v| v as f64).collect();
            Targets::Mixup { labels, labels_b, lam: lam.as_slice(), smoothing }
        }
        Targets::Dense { y } => {
            *dense = y.iter().map(|&v| v as f64).collect();
            Targets::Dense { y: dense.as_slice() }
        }
    }
}

/// Per element: f64 values of every node, or None when an intermediate leaves f32's range.
fn in_f32_range(vals: &[f64]) -> bool {
    vals.iter().all(|v| v.is_finite() && v.abs() < 3e38 && (v.abs() > 1e-30 || *v == 0.0))
}

/// Evaluates `(L, s)` with relative noise of 1e-6 on every node.
fn noisy(g: &Graph, y: f64, p: f64, rng: &mut Rng) -> (f64, f64) {
    let mut vals = Vec::with_capacity(g.len());
    perturbed_into(g, y, p, 1e-6, rng, &mut vals);
    (vals[g.outputs[0].1.index()], vals[g.outputs[1].1.index()])
}

/// Every node's f64 value into `vals`, with relative noise up to `rel` on p and on every node:
/// how far the outputs then move says how much their rounding can be amplified.
pub fn perturbed_into(g: &Graph, y: f64, p: f64, rel: f64, rng: &mut Rng, vals: &mut Vec<f64>) {
    vals.clear();
    for (_, n) in g.iter() {
        let v = match n {
            Node::Input(Input::Y) => y,
            Node::Input(Input::P) => p * (1.0 + rel * (2.0 * rng.f64() - 1.0)),
            Node::Const(b) => f64::from_bits(b),
            Node::Unary(op, a) => op.eval(vals[a.index()], g.eps),
            Node::Binary(op, a, b) => op.eval(vals[a.index()], vals[b.index()]),
        };
        vals.push(v * (1.0 + rel * (2.0 * rng.f64() - 1.0)));
    }
}

fn close(a: f64, b: f64, rel: f64, floor: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()) + floor
}

/// Per-row comparison. Returns (rows compared, rows skipped); panics on a mismatch.
pub fn compare(
    what: &str,
    f: &Fused,
    batch: &Batch,
    t: &Targets<f32>,
    got_loss: &[f32],
    got_grad: &[f32],
    strict: bool,
) -> (usize, usize) {
    compare_each(f, batch, t, &[(what, got_loss, got_grad)], strict)
}

/// [`compare`] for several kernels' outputs `(what, row loss, grad)` on the same batch: the f64
/// reference is computed once (at C = 100,000 it costs far more than the kernels).
pub fn compare_each(
    f: &Fused,
    batch: &Batch,
    t: &Targets<f32>,
    outputs: &[(&str, &[f32], &[f32])],
    strict: bool,
) -> (usize, usize) {
    compare_within(f, batch, t, outputs, strict, 1e-4)
}

/// [`compare_each`] with relative tolerance `rel` (1e-4 for lossc's kernels, whose routines
/// are held to docs/math-accuracy.md; looser for other libraries' f32 routines).
pub fn compare_within(
    f: &Fused,
    batch: &Batch,
    t: &Targets<f32>,
    outputs: &[(&str, &[f32], &[f32])],
    strict: bool,
    rel: f64,
) -> (usize, usize) {
    let c = batch.classes;
    let (mut lam, mut dense) = (Vec::new(), Vec::new());
    let t64 = widen(t, &mut lam, &mut dense);
    let logits: Vec<f64> = batch.logits.iter().map(|&v| v as f64).collect();
    let want = lossc::reference::interp::run(f, &logits, c, &t64).unwrap();
    let b = want.row_loss.len();
    let mut rng = Rng::new(99);
    let (mut compared, mut skipped) = (0, 0);
    let mut vals = Vec::new();
    for row in 0..b {
        let p = softmax(&logits[row * c..(row + 1) * c]);
        let mut ok = true;
        let (mut l_scale, mut s_abs, mut s_sum) = (0.0, Vec::new(), 0.0);
        // How far s moves when p moves by the kernel's f32 rounding of it (8 eps relative): at a
        // kink of L (the sign of ln(p + eps) flips at p = 1 - eps) that alone decides the side.
        let mut s_moves = Vec::new();
        for (k, &pk) in p.iter().enumerate() {
            let y = t64.y(row, k, c);
            eval_into(&f.graph, y, pk, &mut vals);
            let (l, s) = (vals[f.loss().index()], vals[f.s().index()]);
            ok &= in_f32_range(&vals);
            for _ in 0..4 {
                let (nl, ns) = noisy(&f.graph, y, pk, &mut rng);
                ok &= close(nl, l, 1e-5, 1e-30) && close(ns, s, 1e-5, 1e-30);
            }
            let mut moved: f64 = 0.0;
            for side in [-8.0, 8.0] {
                eval_into(&f.graph, y, pk * (1.0 + side * f32::EPSILON as f64), &mut vals);
                moved = moved.max((vals[f.s().index()] - s).abs());
            }
            s_moves.push(if moved.is_finite() { moved } else { 0.0 });
            l_scale += l.abs();
            s_abs.push(s.abs());
            s_sum += s;
        }
        if !ok && !strict {
            skipped += 1;
            continue;
        }
        // The kernel's p carries a few f32 roundings (exp, the sum, the division), which moves L
        // by up to |dL/dp| p 8 eps = 8 eps |s|: part of the floor.
        let s_abs_sum = s_abs.iter().sum::<f64>();
        let s_moved_sum = s_moves.iter().sum::<f64>();
        let input_floor = 8.0 * f32::EPSILON as f64 * s_abs_sum;
        let floor = rel * l_scale + input_floor + 1e-30;
        for &(what, got_loss, got_grad) in outputs {
            let gl = got_loss[row] as f64;
            assert!(close(gl, want.row_loss[row], rel, floor), "{what} row {row}: loss {gl} vs {}", want.row_loss[row]);
            for k in 0..c {
                let g = got_grad[row * c + k] as f64;
                let w = want.grad[row * c + k];
                let input = s_moves[k] + p[k] * s_moved_sum;
                let floor = (rel * (s_abs[k] + p[k] * s_sum.abs() + s_abs_sum * 1e-3) + input) / b as f64 + 1e-30;
                assert!(close(g, w, rel, floor), "{what} row {row} class {k}: grad {g:e} vs {w:e} (floor {floor:e})");
            }
        }
        compared += 1;
    }
    (compared, skipped)
}

/// The paper's losses in examples/*.loss, by file stem, sorted.
pub fn example_graphs() -> Vec<(String, Graph)> {
    let mut v: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "loss"))
        .map(|path| {
            let g = lossc::syntax::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
            (path.file_stem().unwrap().to_string_lossy().into_owned(), g)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(v.len(), 16, "the 16 paper losses");
    v
}

/// Whether `device` can be opened here; prints why not (and fails where it is required).
pub fn have_device(device: &str) -> bool {
    let (made, require) = match device {
        "cpu" => return true,
        "wgpu" => (
            lossc_runtime::gpu::Wgpu::new(1)
                .map(|d| format!("wgpu adapter: {}", d.adapter()))
                .map_err(|e| e.to_string()),
            "LOSSC_REQUIRE_VULKAN",
        ),
        "cuda" => (
            lossc_runtime::cuda::Cuda::new(1)
                .map(|d| format!("CUDA device: {} ({})", d.device_name(), d.arch()))
                .map_err(|e| e.to_string()),
            "LOSSC_REQUIRE_CUDA",
        ),
        other => panic!("no device {other}"),
    };
    match made {
        Ok(name) => {
            println!("{name}");
            true
        }
        Err(e) => {
            let hint =
                if device == "wgpu" { " (install mesa-vulkan-drivers for lavapipe; scripts/test.sh does)" } else { "" };
            println!("SKIPPED: {e}{hint}");
            assert!(std::env::var_os(require).is_none(), "{require} is set: {e}");
            false
        }
    }
}

/// Whether Debian's Fashion-MNIST is installed; without it a training test prints why it
/// skips, and fails under CI (scripts/test.sh installs it).
pub fn have_fashion_mnist() -> bool {
    let ok = std::path::Path::new(lossc_runtime::data::FASHION_MNIST_DIR).exists();
    if !ok {
        println!("SKIPPED: Fashion-MNIST missing (apt install dataset-fashion-mnist; scripts/test.sh does)");
        assert!(std::env::var_os("CI").is_none(), "CI must have Fashion-MNIST");
    }
    ok
}

/// A fresh, empty scratch directory for one test, under `target/tmp` (Cargo's scratch space
/// for integration tests), not the system's temporary directory.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lossc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A fresh, empty database on the test's PostgreSQL server (`LOSSC_TEST_PG`, which
/// `scripts/test.sh` starts), as a URL; `None`, with the reason printed, when there is no
/// server, except in CI, which must have one.
pub fn pg_database(name: &str) -> Option<String> {
    let Ok(url) = std::env::var("LOSSC_TEST_PG") else {
        println!("SKIPPED on PostgreSQL: LOSSC_TEST_PG names no server (scripts/test.sh starts one)");
        assert!(
            std::env::var_os("LOSSC_REQUIRE_POSTGRES").is_none(),
            "CI must test on PostgreSQL: LOSSC_TEST_PG is not set"
        );
        return None;
    };
    let db: String = format!("lossc_{name}_{}", std::process::id())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).expect("the test server accepts its URL");
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
    let (server, _) = url.rsplit_once('/').expect("a URL with a database");
    Some(format!("{server}/{db}"))
}

/// A plain connection to the database at `url`, as the test's superuser.
pub fn pg_client(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("the test server accepts its URL")
}

/// The Python of `bench/.venv` (JAX, with scipy), which scripts/test.sh creates.
pub const BENCH_PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/.venv/bin/python");

/// Whether the Python at `py` imports `module`.
pub fn imports(py: &std::path::Path, module: &str) -> bool {
    let import = format!("import {module}");
    std::process::Command::new(py).args(["-c", &import]).output().is_ok_and(|o| o.status.success())
}

/// A Python that imports `module`: `$var` if set, else `default`.
pub fn python(var: &str, default: &str, module: &str) -> Option<std::path::PathBuf> {
    let p = std::env::var_os(var).map(std::path::PathBuf::from).unwrap_or_else(|| default.into());
    imports(&p, module).then_some(p)
}
