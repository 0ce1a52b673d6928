//! The accuracy table of the shared f32 math routines (docs/math-accuracy.md), enforced.
//!
//! Each routine runs through `mathlib::Scalar`, which computes in f32 exactly what the kernels
//! compute lane by lane, and is compared with the f64 reference of the op table over its whole
//! domain: dense samples on a log scale of both signs plus a linear grid.

use lossc::backend::mathlib::Scalar;
use lossc::backend::vm;
use lossc::ir::op::Accuracy;
use lossc::ir::{BinOp, UnOp};

/// The guard as the kernels hold it (1e-7 rounded to f32), so the table measures the routines,
/// not the representation of eps.
const EPS: f64 = 1e-7f32 as f64;

/// Sample points: ±10^k for k on a fine grid over [lo_exp, hi_exp], plus 0 and a linear grid.
fn samples(max: f64) -> Vec<f64> {
    let mut xs = vec![0.0];
    let n = 4000;
    for i in 0..=n {
        let k = -30.0 + (max.log10() + 30.0) * i as f64 / n as f64;
        let x = 10f64.powf(k);
        xs.push(x);
        xs.push(-x);
    }
    for i in 0..=4000 {
        xs.push(-max.min(20.0) + 2.0 * max.min(20.0) * i as f64 / 4000.0);
    }
    // Round to f32 so both sides see the same input.
    xs.into_iter().map(|x| x as f32 as f64).filter(|x| x.abs() <= max).collect()
}

/// Max of |f32 - f64| / max(|f64|, floor) over the samples where the f64 value is finite and
/// within f32 range.
fn max_error(op: UnOp, max: f64, floor: f64) -> (f64, f64) {
    let mut worst = (0.0, 0.0);
    for x in samples(max) {
        let want = op.eval(x, EPS);
        if !want.is_finite() || want.abs() > f32::MAX as f64 {
            continue;
        }
        let got = vm::unary(&mut Scalar, op, x as f32, EPS as f32) as f64;
        let err = (got - want).abs() / want.abs().max(floor);
        if err.is_nan() || err > worst.0 {
            worst = (err, x);
        }
    }
    worst
}

/// Every unary op against its row's bound (`UnOp::accuracy`): exact ops give the f64 reference
/// rounded to f32 bit for bit; the others stay within their relative error over their domain.
#[test]
fn every_routine_is_within_its_published_bound() {
    let mut failures = Vec::new();
    println!("| routine | domain | max error | at x | bound |");
    for &op in UnOp::ALL {
        match op.accuracy() {
            Accuracy::Exact => {
                for x in samples(1e30).into_iter().chain([f64::INFINITY, f64::NEG_INFINITY, f64::NAN]) {
                    let want = op.eval(x, EPS) as f32;
                    let got = vm::unary(&mut Scalar, op, x as f32, EPS as f32);
                    if got.to_bits() != want.to_bits() && !(got.is_nan() && want.is_nan()) {
                        failures.push(format!("{}({x:e}) = {got:e}, not {want:e} exactly", op.name()));
                        break;
                    }
                }
            }
            Accuracy::Within { domain, floor, bound } => {
                let (err, at) = max_error(op, domain, floor);
                println!("| {} | abs(x) <= {domain:e} | {err:.2e} | {at:.4e} | {bound:.0e} |", op.name());
                if err.is_nan() || err > bound {
                    failures.push(format!("{}: {err:e} at {at:e} > {bound:e}", op.name()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The published table (docs/math-accuracy.md) lists every bounded op with its row's domain
/// and bound.
#[test]
fn the_docs_table_is_the_op_table() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/math-accuracy.md")).unwrap();
    for &op in UnOp::ALL {
        let Accuracy::Within { domain, bound, .. } = op.accuracy() else { continue };
        let row = doc.lines().find(|l| l.starts_with(&format!("| {} |", op.name())));
        let row = row.unwrap_or_else(|| panic!("docs/math-accuracy.md has no row for {}", op.name()));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[2], format!("abs(x) <= {domain:e}"), "{row}");
        assert_eq!(cells[cells.len() - 2], format!("{bound:.0e}"), "{row}");
    }
}

#[test]
fn pow_matches_ieee_pow() {
    let vals = [0.0, 0.5, 1.0, 2.0, 3.0, -2.0, -0.5, 10.0, 1e-7, 7.5];
    for &a in &vals {
        for &b in &vals {
            let (a, b) = (a as f32 as f64, b as f32 as f64);
            let want = BinOp::Pow.eval(a, b);
            let got = vm::binary(&mut Scalar, BinOp::Pow, a as f32, b as f32) as f64;
            if want.is_nan() {
                assert!(got.is_nan(), "pow({a}, {b}) = {got}, want NaN");
            } else if want.is_infinite() || want.abs() > f32::MAX as f64 {
                assert!(got.is_infinite(), "pow({a}, {b}) = {got}, want {want}");
            } else {
                // e^(b ln|a|): the rounding of b ln|a| scales the error by |b ln a|.
                let k = (b * a.abs().ln()).abs();
                let cond = 1.0 + if k.is_finite() { k } else { 0.0 };
                assert!((got - want).abs() <= 3e-7 * cond * want.abs() + 1e-30, "pow({a}, {b}) = {got}, want {want}");
            }
        }
    }
}

#[test]
fn special_values() {
    let f = |op: UnOp, x: f32| vm::unary(&mut Scalar, op, x, EPS as f32);
    assert_eq!(f(UnOp::Exp, f32::INFINITY), f32::INFINITY);
    assert_eq!(f(UnOp::Exp, f32::NEG_INFINITY), 0.0);
    assert!(f(UnOp::Exp, f32::NAN).is_nan());
    // softplus takes e^-max(x, 0) as 1 for x <= 0 without calling exp.
    assert_eq!((f(UnOp::Exp, 0.0), f(UnOp::Exp, -0.0)), (1.0, 1.0));
    assert!(f(UnOp::Softplus, f32::NAN).is_nan());
    let at_minus_inf = f(UnOp::Softplus, f32::NEG_INFINITY) as f64; // ln(1 + eps)
    assert!((at_minus_inf - EPS.ln_1p()).abs() <= 3e-7 * EPS, "{at_minus_inf}");
    assert_eq!(f(UnOp::LnRaw, 0.0), f32::NEG_INFINITY);
    assert!(f(UnOp::LnRaw, -1.0).is_nan());
    assert!(f(UnOp::LnRaw, f32::NAN).is_nan());
    assert_eq!(f(UnOp::LnRaw, f32::INFINITY), f32::INFINITY);
    assert_eq!(f(UnOp::Softplus, 1000.0), 1000.0);
    assert_eq!(f(UnOp::BesselI0, 100.0), f32::INFINITY);
    assert_eq!(f(UnOp::BesselI0e, f32::INFINITY), 0.0);
    assert_eq!(f(UnOp::Erfc, f32::INFINITY), 0.0);
    assert_eq!(f(UnOp::Erfc, f32::NEG_INFINITY), 2.0);
    assert_eq!(f(UnOp::Tanh, f32::NEG_INFINITY), -1.0);
    assert_eq!(f(UnOp::Atan, f32::INFINITY), std::f32::consts::FRAC_PI_2);
    assert_eq!(f(UnOp::Sign, -0.0), 0.0);
    assert_eq!(f(UnOp::Step, 0.0), 0.5);
    assert!(f(UnOp::Relu, f32::NAN).is_nan());
}

/// The guarded logs are relative to f32 precision where `ln(|x| + eps)` crosses zero: at every
/// f32 within 300 ulps of |x| = 1 and of |x| = 1 - eps, where rounding `|x| + eps` to f32 alone
/// (`1 + 1e-7` is `1 + 1.19e-7`) would make the result up to 19 % too large.
#[test]
fn the_guarded_logs_are_relative_near_one() {
    let mut xs = Vec::new();
    for centre in [1.0f32, (1.0 - EPS) as f32] {
        let bits = centre.to_bits();
        for d in 0..=600u32 {
            let x = f32::from_bits(bits - 300 + d);
            xs.extend([x, -x]);
        }
    }
    for op in [UnOp::Ln, UnOp::Log10] {
        let mut worst = (0.0f64, 0.0f32);
        for &x in &xs {
            let want = op.eval(x as f64, EPS);
            let got = vm::unary(&mut Scalar, op, x, EPS as f32) as f64;
            let err = if want == 0.0 { got.abs() } else { (got - want).abs() / want.abs() };
            if err > worst.0 {
                worst = (err, x);
            }
        }
        println!("{}: max relative error {:.2e} at x = {:e}", op.name(), worst.0, worst.1);
        assert!(worst.0 <= 3e-7, "{}: relative error {:.2e} at x = {:e}", op.name(), worst.0, worst.1);
    }
}

/// Derivatives of a ratio to a shifted denominator, `m x / (x + eps)` and `m x * recip(x)`,
/// hold f32 precision: the quotient rule's two paths (`m / (x + eps) - m x / (x + eps)^2`)
/// would cancel to nothing where x >> eps, so autodiff forms `m eps / (x + eps)^2` instead.
/// Every node of the fused graph in f32 (the op table's forms, as every kernel computes them)
/// against the f64 interpreter, for p from 1e-6 to 1; the f64 derivative against a central
/// difference of the loss.
#[test]
fn derivatives_of_ratios_to_a_shifted_denominator_keep_f32_precision() {
    let text = "loss a = y * (p / (p + eps));
                loss b = y * p * recip(p);
                loss c = -y * ln(p / (p + eps));
                loss d = y * p / (p + eps);
                loss e = sigmoid(p) * p / (eps + p);";
    s_keeps_f32_precision(text, &[0.3, 1.0], 1e-5);
}

/// `dsigmoid`'s derivative, `dsigmoid(x) (1 - 2 sigmoid(x))`, is the routine `dsigmoid_d`:
/// written as that product its second factor cancels near x = 0 (at p = 1e-6, `y * dsigmoid(p)`
/// had s off by 14 %). B1 (`h`) gives `dsigmoid` arguments near 0 off the label (y = 0).
#[test]
fn derivatives_of_dsigmoid_keep_f32_precision_near_0() {
    let text = "loss f = y * dsigmoid(p);
                loss g = y * dsigmoid(p - 0.5) + sigmoid(p);
                loss h = -dsigmoid(bessel_i0e(p / (y + eps)));";
    s_keeps_f32_precision(text, &[0.0, 0.3, 1.0], 1e-5);
}

/// Every node of each loss's fused graph in f32 (the op table's forms, as every kernel
/// computes them) against the f64 interpreter, for p from 1e-6 to 1 at each of `ys`: s within
/// `bound` relative; and the f64 derivative against a central difference of the loss.
fn s_keeps_f32_precision(text: &str, ys: &[f32], bound: f64) {
    let module = lossc::syntax::parse(text).unwrap();
    for (name, _) in &module.outputs {
        let f = lossc::passes::fuse::fuse(&module, name).unwrap();
        let mut vals = Vec::new();
        let mut worst = (0.0f64, 0.0);
        for i in 0..=600 {
            let p = 10f64.powf(-6.0 + 6.0 * i as f64 / 600.0) as f32;
            for &y in ys {
                lossc::reference::interp::eval_into(&f.graph, y as f64, p as f64, &mut vals);
                let want = vals[f.s().index()];
                let got = vm::eval_graph(&mut Scalar, &f.graph, y, p)[f.s().index()] as f64;
                let err = (got - want).abs() / want.abs().max(1e-30);
                if err > worst.0 {
                    worst = (err, p as f64);
                }
                // The f64 derivative itself against a central difference of the loss, within
                // 1e-3 and the difference's rounding (where L hardly changes, as dsigmoid(p)
                // near 0).
                let (pf, h) = (p as f64, 1e-3);
                let loss_at = |q: f64, vals: &mut Vec<f64>| {
                    lossc::reference::interp::eval_into(&f.graph, y as f64, q, vals);
                    vals[f.loss().index()]
                };
                let fd =
                    pf * (loss_at(pf * (1.0 + h), &mut vals) - loss_at(pf * (1.0 - h), &mut vals)) / (2.0 * h * pf);
                let rounding = f64::EPSILON * loss_at(pf, &mut vals).abs() / h;
                assert!(
                    (fd - want).abs() <= 1e-3 * want.abs() + rounding,
                    "{name} at p = {pf:e}, y = {y}: s = {want:e}, differences {fd:e}"
                );
            }
        }
        println!("{name}: s = p dL/dp to relative {:.1e} (worst at p = {:.3e})", worst.0, worst.1);
        assert!(worst.0 < bound, "{name}: s off by {:.2e} at p = {:e}", worst.0, worst.1);
    }
}

/// Every search-space op's derivative, as its rule in the op table computes it in f32, against
/// the same rule in f64, for |x| from 1e-6 to 1e3: a rule that subtracts close terms (as
/// `dsigmoid`'s `dsigmoid(x) (1 - 2 sigmoid(x))` did near 0, off by 10 % at x = 1e-6) fails.
/// Where the rule is one routine, that routine's floor applies (`bessel_i1e_d` crosses 0 near
/// x = 1.5). The bound is the routines' (a rule of several routines adds their errors), except
/// that `erf`'s and `erfc`'s `exp(-square(x))` carry the rounding of x^2 into the exponent:
/// 3.8e-6 relative at |x| = 8.3, where the derivative is 1e-30.
#[test]
fn search_op_derivatives_keep_f32_precision() {
    let mut failures = Vec::new();
    for &op in UnOp::ALL.iter().filter(|op| op.search_index().is_some()) {
        let module = lossc::syntax::parse(&format!("loss l = {}(p);", op.name())).unwrap();
        let g = lossc::passes::fuse::derivatives(&module, "l").unwrap();
        let d = g.outputs[1].1;
        let floor = match g.node(d) {
            lossc::ir::Node::Unary(rule, _) => match rule.accuracy() {
                Accuracy::Within { floor, .. } => floor,
                Accuracy::Exact => 1e-30,
            },
            _ => 1e-30,
        };
        let bound = if matches!(op, UnOp::Erf | UnOp::Erfc) { 4e-6 } else { 6e-7 };
        let (mut vals, mut worst) = (Vec::new(), (0.0f64, 0.0f64));
        for x in samples(1e3).into_iter().filter(|x| x.abs() >= 1e-6) {
            let x = x as f32;
            g.eval_into(0.0, x as f64, &mut vals);
            let want = vals[d.index()];
            if !want.is_finite() || want.abs() > 1e30 {
                continue;
            }
            let got = vm::eval_graph(&mut Scalar, &g, 0.0, x)[d.index()] as f64;
            let err = (got - want).abs() / want.abs().max(floor);
            if err.is_nan() || err > worst.0 {
                worst = (err, x as f64);
            }
        }
        println!("d/dx {}: max relative error {:.2e} at x = {:e}", op.name(), worst.0, worst.1);
        if worst.0.is_nan() || worst.0 > bound {
            failures.push(format!("d/dx {}: {:e} at x = {:e} > {bound:e}", op.name(), worst.0, worst.1));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
