//! Every compiled backend against the f64 interpreter: the 16 paper losses and random
//! expressions over all operations, for labels (with smoothing), mixup pairs and dense targets.
//!
//! Tolerance: relative 1e-4 with an absolute floor set by the magnitude of the terms that
//! cancel (|s_c| + |p_c sum(s)| for gradients, sum |L_c| for row losses). Rows whose f64
//! intermediates leave f32's range, or whose value moves under 1e-6 relative noise on every
//! node (ill-conditioned: f32 rounding alone could move them), are not compared; the test
//! counts them and requires most rows to be compared. Row losses also get a floor of
//! 8 eps |s|: the rounding the kernel's f32 softmax output carries moves L by that much.

use lossc::backend::jit;
use lossc::contract::Targets;
use lossc::interp::{eval_into, softmax};
use lossc::ir::{Graph, Input, Node, random};
use lossc::passes::fuse::{self, Fused};
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
    let mut vals: Vec<f64> = Vec::with_capacity(g.len());
    for (_, n) in g.iter() {
        let v = match n {
            Node::Input(Input::Y) => y,
            Node::Input(Input::P) => p * (1.0 + 1e-6 * (2.0 * rng.f64() - 1.0)),
            Node::Const(b) => f64::from_bits(b),
            Node::Unary(op, a) => op.eval(vals[a.index()], g.eps),
            Node::Binary(op, a, b) => op.eval(vals[a.index()], vals[b.index()]),
        };
        vals.push(v * (1.0 + 1e-6 * (2.0 * rng.f64() - 1.0)));
    }
    (vals[g.outputs[0].1.index()], vals[g.outputs[1].1.index()])
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
    let c = batch.classes;
    let (mut lam, mut dense) = (Vec::new(), Vec::new());
    let t64 = widen(t, &mut lam, &mut dense);
    let logits: Vec<f64> = batch.logits.iter().map(|&v| v as f64).collect();
    let want = lossc::interp::run(f, &logits, c, &t64).unwrap();
    let b = want.row_loss.len();
    let mut rng = Rng::new(99);
    let (mut compared, mut skipped) = (0, 0);
    let mut vals = Vec::new();
    for row in 0..b {
        let p = softmax(&logits[row * c..(row + 1) * c]);
        let mut ok = true;
        let (mut l_scale, mut s_abs, mut s_sum) = (0.0, Vec::new(), 0.0);
        for k in 0..c {
            let y = t64.y(row, k, c);
            eval_into(&f.graph, y, p[k], &mut vals);
            let (l, s) = (vals[f.loss().index()], vals[f.s().index()]);
            ok &= in_f32_range(&vals);
            for _ in 0..4 {
                let (nl, ns) = noisy(&f.graph, y, p[k], &mut rng);
                ok &= close(nl, l, 1e-5, 1e-30) && close(ns, s, 1e-5, 1e-30);
            }
            l_scale += l.abs();
            s_abs.push(s.abs());
            s_sum += s;
        }
        if !ok && !strict {
            skipped += 1;
            continue;
        }
        let gl = got_loss[row] as f64;
        // The kernel's p carries a few f32 roundings (exp, the sum, the division), which moves L
        // by up to |dL/dp| p 8 eps = 8 eps |s|: part of the floor.
        let input_floor = 8.0 * f32::EPSILON as f64 * s_abs.iter().sum::<f64>();
        let floor = 1e-4 * l_scale + input_floor + 1e-30;
        assert!(close(gl, want.row_loss[row], 1e-4, floor), "{what} row {row}: loss {gl} vs {}", want.row_loss[row]);
        for k in 0..c {
            let g = got_grad[row * c + k] as f64;
            let w = want.grad[row * c + k];
            let floor = 1e-4 * (s_abs[k] + p[k] * s_sum.abs() + s_abs.iter().sum::<f64>() * 1e-3) / b as f64 + 1e-30;
            assert!(close(g, w, 1e-4, floor), "{what} row {row} class {k}: grad {g:e} vs {w:e} (floor {floor:e})");
        }
        compared += 1;
    }
    (compared, skipped)
}

fn examples() -> Vec<(String, Graph)> {
    let mut v: Vec<_> = std::fs::read_dir("examples")
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let g = lossc::syntax::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
            (path.file_stem().unwrap().to_string_lossy().into_owned(), g)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn run_jit(f: &Fused, batch: &Batch, t: &Targets<f32>) -> (Vec<f32>, Vec<f32>) {
    let k = jit::compile(f, jit::Spec::of(t, batch.classes)).unwrap();
    let b = batch.logits.len() / batch.classes;
    let (mut grad, mut loss) = (vec![0f32; batch.logits.len()], vec![0f32; b]);
    k.run(&batch.logits, t, &mut grad, &mut loss, 1).unwrap();
    (loss, grad)
}

#[test]
fn jit_matches_the_interpreter_on_every_example() {
    let mut rng = Rng::new(7);
    for classes in [2, 3, 4, 10, 17, 100] {
        for scale in [1.0, 5.0, 20.0] {
            let batch = Batch::random(&mut rng, 9, classes, scale);
            for (name, g) in examples() {
                let f = fuse::fuse(&g, &name).unwrap();
                for kind in 0..5 {
                    let t = batch.targets(kind);
                    let (loss, grad) = run_jit(&f, &batch, &t);
                    let what = format!("{name} C={classes} scale={scale} targets#{kind}");
                    compare(&what, &f, &batch, &t, &loss, &grad, true);
                }
            }
        }
    }
}

#[test]
fn jit_matches_the_interpreter_on_random_expressions() {
    let mut rng = Rng::new(8);
    let (mut compared, mut skipped) = (0, 0);
    for case in 0..1200 {
        let g = random::loss(&mut rng, 4);
        let f = fuse::fuse(&g, "l").unwrap();
        let classes = [3, 5, 8][case % 3];
        let batch = Batch::random(&mut rng, 3, classes, 2.0);
        let t = batch.targets(case % 5);
        let (loss, grad) = run_jit(&f, &batch, &t);
        let what = format!("case {case}: {}", lossc::ir::print::to_text(&g));
        let (c, s) = compare(&what, &f, &batch, &t, &loss, &grad, false);
        compared += c;
        skipped += s;
    }
    println!("random expressions: {compared} rows compared, {skipped} skipped as ill-conditioned or out of f32 range");
    assert!(compared >= 2000 && compared > skipped, "{compared} compared vs {skipped} skipped");
}

#[test]
fn c2_stays_finite_where_softmax_underflows() {
    // Logit scale 20 and rows with a dominant logit: most p underflow to exactly 0 in f32.
    let g = lossc::syntax::parse(&std::fs::read_to_string("examples/c2.loss").unwrap()).unwrap();
    let f = fuse::fuse(&g, "c2").unwrap();
    let mut rng = Rng::new(11);
    let mut batch = Batch::random(&mut rng, 64, 100, 20.0);
    for row in 0..8 {
        batch.logits[row * 100] = 200.0; // p of every other class is exp(-200 - ...) = 0 in f32
    }
    for kind in 0..5 {
        let t = batch.targets(kind);
        let (loss, grad) = run_jit(&f, &batch, &t);
        assert!(loss.iter().chain(&grad).all(|v| v.is_finite()), "targets#{kind}: NaN or inf");
        compare(&format!("c2 underflow targets#{kind}"), &f, &batch, &t, &loss, &grad, true);
    }
}

#[test]
fn threads_split_rows_without_changing_results() {
    let g = lossc::syntax::parse(&std::fs::read_to_string("examples/a2.loss").unwrap()).unwrap();
    let f = fuse::fuse(&g, "a2").unwrap();
    let batch = Batch::random(&mut Rng::new(12), 301, 37, 3.0);
    for kind in 0..5 {
        let t = batch.targets(kind);
        let k = jit::compile(&f, jit::Spec::of(&t, 37)).unwrap();
        let mut outs = Vec::new();
        for threads in [1, 2, 3] {
            let (mut grad, mut loss) = (vec![0f32; batch.logits.len()], vec![0f32; 301]);
            let mean = k.run(&batch.logits, &t, &mut grad, &mut loss, threads).unwrap();
            outs.push((mean, loss, grad));
        }
        assert!(outs.windows(2).all(|w| w[0] == w[1]), "targets#{kind}: results depend on the thread count");
    }
}

#[test]
fn the_same_loss_and_spec_compile_once() {
    let g = lossc::syntax::parse("loss ce = -y * ln(p);").unwrap();
    let f = fuse::fuse(&g, "ce").unwrap();
    let spec = jit::Spec { kind: jit::TargetKind::Labels, smoothing: 0.1, classes: 10 };
    let a = jit::compile(&f, spec).unwrap();
    let b = jit::compile(&fuse::fuse(&lossc::syntax::parse("loss ce = -y * ln(p);").unwrap(), "ce").unwrap(), spec)
        .unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    let c = jit::compile(&f, jit::Spec { smoothing: 0.0, ..spec }).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&a, &c));
}

#[test]
fn a_batch_that_does_not_fit_the_compiled_spec_is_refused() {
    let g = lossc::syntax::parse("loss ce = -y * ln(p);").unwrap();
    let f = fuse::fuse(&g, "ce").unwrap();
    let k = jit::compile(&f, jit::Spec { kind: jit::TargetKind::Labels, smoothing: 0.1, classes: 3 }).unwrap();
    let (mut grad, mut loss) = (vec![0f32; 6], vec![0f32; 2]);
    let z = [0f32; 6];
    let t = Targets::Labels { labels: &[0, 1], smoothing: 0.0 };
    assert!(matches!(k.run(&z, &t, &mut grad, &mut loss, 1), Err(lossc::contract::ContractError::Spec { .. })));
    let t = Targets::Labels { labels: &[0, 3], smoothing: 0.1 };
    assert!(k.run(&z, &t, &mut grad, &mut loss, 1).is_err());
}
