//! The accuracy table of the shared f32 math routines (docs/math-accuracy.md), enforced.
//!
//! Each routine runs through `mathlib::Scalar`, which computes in f32 exactly what the kernels
//! compute lane by lane, and is compared with the f64 reference of the op table over its whole
//! domain: dense samples on a log scale of both signs plus a linear grid.

use lossc::backend::mathlib::Scalar;
use lossc::backend::vm;
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

/// (op, domain |x| <= max, floor, bound): the error is |f32 - f64| / max(|f64|, floor). The
/// floor makes it absolute error where the function crosses 0 away from x = 0 (sin, cos: 1e-3;
/// bessel_i1e_d, which crosses 0 near x = 1.5 and peaks at 0.5: 0.5;
/// the guarded logs near x = 1 - eps, where rounding `|x| + eps` to f32 dominates: 1) and
/// ignores results below 1e-30, near the end of f32's range.
const TABLE: &[(UnOp, f64, f64, f64)] = &[
    (UnOp::Exp, 88.0, 1e-30, 3e-7),
    (UnOp::Ln, 1e30, 1.0, 3e-7),
    (UnOp::LnRaw, 1e30, 1e-30, 3e-7),
    (UnOp::Log10, 1e30, 1.0, 3e-7),
    (UnOp::Sigmoid, 1e3, 1e-30, 3e-7),
    (UnOp::Dsigmoid, 1e3, 1e-30, 4e-7),
    (UnOp::Softplus, 1e30, 1e-30, 3e-7),
    (UnOp::Tanh, 1e30, 1e-30, 3e-7),
    (UnOp::Dtanh, 1e3, 1e-30, 4e-7),
    (UnOp::Sinh, 89.0, 1e-30, 3e-7),
    (UnOp::Cosh, 89.0, 1e-30, 3e-7),
    (UnOp::Asinh, 1e30, 1e-30, 3e-7),
    (UnOp::Atan, 1e30, 1e-30, 3e-7),
    (UnOp::Sin, 8192.0, 1e-3, 3e-7),
    (UnOp::Cos, 8192.0, 1e-3, 3e-7),
    (UnOp::Erf, 1e30, 1e-30, 3e-7),
    (UnOp::Erfc, 1e30, 1e-30, 1e-6),
    (UnOp::BesselI0, 91.0, 1e-30, 5e-7),
    (UnOp::BesselI0e, 1e30, 1e-30, 5e-7),
    (UnOp::BesselI1, 91.0, 1e-30, 6e-7),
    (UnOp::BesselI1e, 1e30, 1e-30, 5e-7),
    (UnOp::BesselI1x, 91.0, 1e-30, 6e-7),
    (UnOp::BesselI1ex, 1e30, 1e-30, 5e-7),
    (UnOp::BesselI0eD, 1e30, 1e-30, 5e-7),
    (UnOp::BesselI1eD, 1e30, 0.5, 5e-7),
    (UnOp::Sqrt, 1e30, 1e-30, 1e-7),
    (UnOp::Recip, 1e30, 1e-30, 2e-7),
    (UnOp::Softsign, 1e30, 1e-30, 2e-7),
    (UnOp::Inv1pAbs, 1e30, 1e-30, 2e-7),
];

#[test]
fn every_routine_is_within_its_published_bound() {
    let mut failures = Vec::new();
    println!("| routine | domain | max error | at x | bound |");
    for &(op, max, floor, bound) in TABLE {
        let (err, at) = max_error(op, max, floor);
        println!("| {} | abs(x) <= {max:e} | {err:.2e} | {at:.4e} | {bound:.0e} |", op.name());
        if err.is_nan() || err > bound {
            failures.push(format!("{}: {err:e} at {at:e} > {bound:e}", op.name()));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
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
