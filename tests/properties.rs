//! Property tests over random expressions on every operation: simplification keeps values,
//! printing round-trips, and symbolic gradients match central finite differences.

mod common;

use lossc::ir::{Graph, Id, Input, print, random};
use lossc::passes::{
    fuse,
    simplify::{Rules, simplify, simplify_with},
};
use lossc::reference::interp::{eval_into, eval_scalar};
use lossc::rng::Rng;

/// Points of the domain y, p in [0, 1], edges included.
const GRID: &[f64] = &[0.0, 1e-9, 0.03, 0.2, 0.5, 0.77, 0.999, 1.0];

fn value(g: &Graph, y: f64, p: f64) -> f64 {
    eval_scalar(g, g.outputs[0].1, y, p)
}

/// Simplification reorders arithmetic, which moves a value by f64 roundings; where the
/// expression amplifies them (`cos` of 5e8, say), a value off by more than 1e-9 is held to a
/// tolerance widened by how far it moves under relative noise of 1e-13 on every node.
#[test]
fn simplify_never_changes_a_finite_value() {
    let mut rng = Rng::new(1);
    let mut noise = Rng::new(2);
    let mut vals = Vec::new();
    let (mut checked, mut shrunk) = (0, 0);
    for case in 0..3000 {
        let g = random::loss(&mut rng, 5);
        for rules in [Rules::Keyed, Rules::Fused] {
            let s = simplify_with(&g, rules);
            s.validate().unwrap();
            shrunk += (rules == Rules::Keyed && s.op_count() < g.op_count()) as usize;
            for &y in GRID {
                for &p in GRID {
                    let (a, b) = (value(&g, y, p), value(&s, y, p));
                    if !a.is_finite() {
                        continue;
                    }
                    let mut tol = 1e-9 * a.abs().max(b.abs()) + 1e-12;
                    if (a - b).abs() > tol {
                        let mut moved: f64 = 0.0;
                        for _ in 0..2 {
                            common::perturbed_into(&g, y, p, 1e-13, &mut noise, &mut vals);
                            moved = moved.max((vals[g.outputs[0].1.index()] - a).abs());
                        }
                        tol += 10.0 * moved;
                    }
                    assert!(
                        (a - b).abs() <= tol,
                        "case {case} ({rules:?}) at y={y}, p={p}: {a} became {b}\n  original:   {}\n  simplified: {}",
                        print::to_text(&g),
                        print::to_text(&s)
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 200_000, "only {checked} finite points checked");
    assert!(shrunk > 300, "simplify shrank only {shrunk} of 3000 expressions");
}

/// In a fused graph, `s` is `p * dL/dp` where that is finite, p = 0 included, though the
/// fused rules drop the factors `sign(x)` of `s` (not of `dL/dp`) where `x` is 0 exactly
/// where `p` is (a guarded log of `p / (y + eps)` brings one).
#[test]
fn s_stays_p_times_the_derivative_in_fused_graphs() {
    let mut rng = Rng::new(5);
    let (mut checked, mut dropped) = (0, 0);
    for case in 0..3000 {
        let fused = fuse::derivatives_of(simplify(&random::loss(&mut rng, 5)));
        let out = |name: &str| fused.outputs.iter().find(|o| o.0 == name).unwrap().1;
        let (d, s) = (out(fuse::DL_DP), out(fuse::S));
        let signs = |id| print::expr_to_string(&fused, id).matches("sign(").count();
        dropped += (signs(s) < signs(d)) as usize;
        for &y in GRID {
            for &p in GRID {
                let want = p * eval_scalar(&fused, d, y, p);
                if !want.is_finite() {
                    continue;
                }
                let got = eval_scalar(&fused, s, y, p);
                assert!(
                    (got - want).abs() <= 1e-12 * want.abs(),
                    "case {case} at y={y}, p={p}: s = {got}, p dL/dp = {want}\n{}",
                    print::to_text(&fused)
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 100_000, "only {checked} finite points checked");
    assert!(dropped > 20, "s lost a sign in only {dropped} of 3000 graphs");
}

#[test]
fn printed_text_parses_back_to_the_same_graph() {
    let mut rng = Rng::new(2);
    for case in 0..2000 {
        let g = random::loss(&mut rng, 5);
        for g in [g.clone(), simplify(&g), fuse::derivatives(&g, "l").unwrap()] {
            let text = print::to_text(&g);
            let back = lossc::syntax::parse(&text).unwrap_or_else(|d| panic!("case {case}: {}\n{text}", d.message));
            assert!(
                back.same_as(&g.compact()),
                "case {case} did not round-trip:\n{text}\n---\n{}",
                print::to_text(&back)
            );
        }
    }
}

#[test]
fn example_files_round_trip_through_the_printer() {
    for (name, g) in common::example_graphs() {
        let back = lossc::syntax::parse(&print::to_text(&g)).unwrap();
        assert!(back.same_as(&g), "{name}");
    }
}

/// Central difference of `f` at `x` with step `h`.
fn central(f: &dyn Fn(f64) -> f64, x: f64, h: f64) -> f64 {
    (f(x + h) - f(x - h)) / (2.0 * h)
}

/// Compares a symbolic derivative with central differences where the function is smooth:
/// two step sizes must agree with each other before the comparison counts.
fn check_derivative(what: &str, f: &dyn Fn(f64) -> f64, x: f64, symbolic: f64) -> bool {
    let (d1, d2) = (central(f, x, 1e-5), central(f, x, 1e-6));
    if !(d1.is_finite() && d2.is_finite() && symbolic.is_finite()) {
        return false;
    }
    let scale = d1.abs().max(1e-3);
    if (d1 - d2).abs() > 1e-5 * scale {
        return false; // a kink, a jump or too much curvature: differences are not a reference here
    }
    assert!((symbolic - d1).abs() <= 1e-5 * scale, "{what} at {x}: symbolic {symbolic}, finite difference {d1}");
    true
}

#[test]
fn gradients_of_random_expressions_match_finite_differences() {
    let mut rng = Rng::new(3);
    let mut checked = 0;
    for case in 0..3000 {
        let g = random::loss(&mut rng, 4);
        let d = fuse::derivatives(&g, "l").unwrap();
        let (l, dl) = (d.outputs[0].1, d.outputs[1].1);
        let mut vals = Vec::new();
        for &y in &[0.0, 0.3, 1.0] {
            for &p in &[0.05, 0.31, 0.62, 0.93] {
                eval_into(&d, y, p, &mut vals);
                let f = |p: f64| eval_scalar(&d, l, y, p);
                if eval_scalar(&g, g.outputs[0].1, y, p).is_finite() {
                    checked += check_derivative(
                        &format!("case {case} y={y}: {}", print::to_text(&g)),
                        &f,
                        p,
                        vals[dl.index()],
                    ) as usize;
                }
            }
        }
    }
    assert!(checked > 10_000, "only {checked} smooth points checked");
}

#[test]
fn gradients_of_the_examples_match_finite_differences_on_a_grid() {
    for (name, g) in common::example_graphs() {
        let d = fuse::derivatives(&g, &name).unwrap();
        let (l, dl): (Id, Id) = (d.outputs[0].1, d.outputs[1].1);
        let mut checked = 0;
        for &y in &[0.0, 0.02, 0.5, 0.9, 1.0] {
            for i in 1..40 {
                let p = i as f64 / 40.0;
                let f = |p: f64| eval_scalar(&d, l, y, p);
                checked += check_derivative(&format!("{name} y={y}"), &f, p, eval_scalar(&d, dl, y, p)) as usize;
            }
        }
        assert!(checked > 150, "{name}: only {checked} points checked");
    }
}

#[test]
fn logit_gradients_of_the_examples_match_finite_differences() {
    use lossc::reference::contract::Targets;
    let mut rng = Rng::new(4);
    let (b, c) = (3, 4);
    let logits: Vec<f64> = (0..b * c).map(|_| 2.0 * rng.normal()).collect();
    let labels = [1u32, 3, 0];
    let lam = [0.3, 0.8, 0.5];
    let all = [
        Targets::Labels { labels: &labels, smoothing: 0.0 },
        Targets::Labels { labels: &labels, smoothing: 0.1 },
        Targets::Mixup { labels: &labels, labels_b: &[2, 2, 1], lam: &lam, smoothing: 0.0 },
    ];
    for (name, g) in common::example_graphs() {
        let f = fuse::fuse(&g, &name).unwrap();
        for t in &all {
            let out = lossc::reference::interp::run(&f, &logits, c, t).unwrap();
            for k in 0..b * c {
                let at = |v: f64| {
                    let mut z = logits.clone();
                    z[k] = v;
                    lossc::reference::interp::run(&f, &z, c, t).unwrap().loss
                };
                let fd = central(&at, logits[k], 1e-6);
                let scale = out.grad.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
                assert!((out.grad[k] - fd).abs() <= 1e-5 * scale, "{name} {t:?} dz[{k}]: {} vs {fd}", out.grad[k]);
            }
        }
    }
}

#[test]
fn a_loss_without_p_has_zero_gradient() {
    let g = lossc::syntax::parse("loss k = y * 2;").unwrap();
    let d = fuse::derivatives(&g, "k").unwrap();
    assert_eq!(d.node(d.outputs[2].1).as_const(), Some(0.0));
    let _ = Input::P;
}
