//! The op table (`src/ir/op.rs`) is the single source of every op's facts: each row's facts
//! hold numerically, and the docs' tables agree with it.
//!
//! `LOSSC_UPDATE_DOCS=1 cargo test --test op_table` rewrites the generated derivative table in
//! docs/language.md from the op table.

use lossc::ir::op::{Parity, Sign};
use lossc::ir::{BinOp, Graph, UnOp};

const EPS: f64 = 1e-7;

/// Points of both signs over many scales, away from 0.
fn points() -> Vec<f64> {
    let mut xs = Vec::new();
    for k in -40..=40 {
        let x = 10f64.powf(k as f64 / 10.0) * 1.0137;
        xs.extend([x, -x]);
    }
    xs
}

#[test]
fn parity_and_sign_facts_hold() {
    for &op in UnOp::ALL {
        for x in points().into_iter().chain([0.0, 1e-300, 700.0, f64::INFINITY]) {
            let (f, g) = (op.eval(x, EPS), op.eval(-x, EPS));
            let close =
                |a: f64, b: f64| a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs()) || (a.is_nan() && b.is_nan());
            match op.parity() {
                Parity::Even => assert!(close(f, g), "{op:?} is not even at {x}: {f} vs {g}"),
                Parity::Odd => assert!(close(f, -g), "{op:?} is not odd at {x}: {f} vs {g}"),
                Parity::Neither => {}
            }
            if op.sign() == Sign::NonNeg {
                assert!(f >= 0.0 || f.is_nan(), "{op:?}({x}) = {f} < 0, but the table says it is never negative");
            }
        }
    }
}

/// The derivative of `f` at `x` by the op table's rule, through autodiff.
fn symbolic(f: impl Fn(&mut Graph) -> lossc::ir::Id, x: f64) -> f64 {
    let mut g = Graph::new(EPS);
    let out = f(&mut g);
    let d = lossc::passes::autodiff::grad(&mut g, out, lossc::ir::Input::P);
    lossc::reference::interp::eval_scalar(&g, d, 0.25, x)
}

/// Every derivative rule parses and agrees with central differences away from kinks.
#[test]
fn derivative_rules_match_finite_differences() {
    for &op in UnOp::ALL {
        for x in points().into_iter().filter(|x| x.abs() > 1e-3 && x.abs() < 50.0) {
            let h = 1e-6 * x.abs().max(1e-2);
            let fd = (op.eval(x + h, EPS) - op.eval(x - h, EPS)) / (2.0 * h);
            let d = symbolic(
                |g| {
                    let p = g.p();
                    g.unary(op, p)
                },
                x,
            );
            if !fd.is_finite() || !d.is_finite() {
                continue;
            }
            // Central differences lose about eps * |f| / h to rounding.
            let rounding = 4.0 * f64::EPSILON * op.eval(x, EPS).abs() / h;
            let scale = fd.abs().max(d.abs()).max(1e-8);
            assert!(
                (d - fd).abs() <= 1e-4 * scale + rounding,
                "d/dx {}({x}) = {d}, finite differences {fd} ({})",
                op.name(),
                op.derivative()
            );
        }
    }
    for &op in BinOp::ALL {
        for x in points().into_iter().filter(|x| x.abs() > 1e-3 && x.abs() < 20.0) {
            let a = 1.7; // `y` holds a; p is b
            let f = |b: f64| op.eval(a, b);
            let h = 1e-6 * x.abs();
            let fd = (f(x + h) - f(x - h)) / (2.0 * h);
            let mut g = Graph::new(EPS);
            let (ya, pb) = (g.y(), g.p());
            let out = g.binary(op, ya, pb);
            let d = lossc::passes::autodiff::grad(&mut g, out, lossc::ir::Input::P);
            let d = lossc::reference::interp::eval_scalar(&g, d, a, x);
            let rounding = 4.0 * f64::EPSILON * f(x).abs() / h;
            if fd.is_finite() && d.is_finite() && (a - x).abs() > 1e-3 {
                assert!(
                    (d - fd).abs() <= 1e-4 * fd.abs().max(1e-8) + rounding,
                    "d/db {}({a}, {x}) = {d}, fd {fd}",
                    op.name()
                );
            }
        }
    }
}

/// At 0 and at the smallest magnitudes, every op's derivative is a number (or infinite, as
/// `ln_raw`'s at 5e-324) wherever the op is finite:
/// a NaN there is a NaN gradient for every class whose argument is exactly 0, as `y * p` is off
/// the label. (The kinks take the mean of their one-sided derivatives, and `sqrt`, whose
/// one-sided derivatives are infinite, takes 0 as `abs` does.) Except at 0 itself the helpers
/// whose rules divide by x (`bessel_i1x`, `bessel_i1ex`, `bessel_i1e_d`: second derivatives
/// only; docs/language.md says so).
#[test]
fn derivatives_are_numbers_at_0() {
    for &op in UnOp::ALL {
        for x in [0.0, -0.0, 1e-300, -1e-300, 5e-324] {
            if !op.eval(x, EPS).is_finite() {
                continue;
            }
            let d = symbolic(
                |g| {
                    let p = g.p();
                    g.unary(op, p)
                },
                x,
            );
            let divides_by_x = matches!(op, UnOp::BesselI1x | UnOp::BesselI1ex | UnOp::BesselI1eD);
            assert!(!d.is_nan() || (divides_by_x && x == 0.0), "d/dx {}({x:e}) = {d}", op.name());
        }
    }
}

fn language_md() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/language.md")).unwrap()
}

/// The search-space table of docs/language.md lists exactly the table's search ops, each by
/// its number and name, and the helpers' paragraph names every helper.
#[test]
fn the_docs_op_table_is_the_op_table() {
    let doc = language_md();
    let rows: Vec<Vec<String>> = doc
        .lines()
        .filter(|l| l.starts_with("| u") || l.starts_with("| b"))
        .map(|l| l.replace("\\|", "¦").split('|').skip(1).map(|c| c.trim().to_string()).collect())
        .collect();
    let unary: Vec<&UnOp> = UnOp::ALL.iter().filter(|o| o.search_index().is_some()).collect();
    assert_eq!(rows.iter().filter(|r| r[0].starts_with('u')).count(), unary.len(), "unary rows");
    for op in unary {
        let tag = format!("u{}", op.search_index().unwrap());
        let row = rows.iter().find(|r| r[0] == tag).unwrap_or_else(|| panic!("no row {tag} for {}", op.name()));
        assert!(
            row[3].contains(&format!("`{}(x)`", op.name())),
            "row {tag} does not write `{}(x)`: {row:?}",
            op.name()
        );
    }
    for op in BinOp::ALL.iter().filter(|o| o.search_index().is_some()) {
        let tag = format!("b{}", op.search_index().unwrap());
        let row = rows.iter().find(|r| r[0] == tag).unwrap_or_else(|| panic!("no row {tag} for {}", op.name()));
        assert_eq!(row[1], op.name(), "row {tag}");
    }
    let helpers = doc.split("The helpers that gradients use").nth(1).expect("the helpers' paragraph");
    let helpers = helpers.split("\n\n").next().unwrap();
    for op in UnOp::ALL.iter().filter(|o| o.search_index().is_none()) {
        assert!(helpers.contains(&format!("`{}`", op.name())), "the helpers' paragraph does not name `{}`", op.name());
    }
}

/// The derivative table in docs/language.md, generated from the op table.
fn derivative_table() -> String {
    let mut s = String::from("| op | derivative |\n|---|---|\n");
    for op in UnOp::ALL {
        s += &format!("| `{}(x)` | `{}` |\n", op.name(), op.derivative().replace('|', "\\|"));
    }
    for op in BinOp::ALL {
        let (da, db) = op.derivatives();
        s += &format!("| `{}(a, b)` | `{da}`, `{db}` |\n", op.name());
    }
    s
}

#[test]
fn the_docs_derivative_table_is_generated_from_the_op_table() {
    const BEGIN: &str = "<!-- derivatives: generated by tests/op_table.rs -->\n";
    const END: &str = "<!-- end of derivatives -->";
    let doc = language_md();
    let (head, rest) = doc.split_once(BEGIN).expect("docs/language.md has the derivative table's markers");
    let (table, tail) = rest.split_once(END).expect("the end marker");
    let want = derivative_table();
    if std::env::var_os("LOSSC_UPDATE_DOCS").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/language.md");
        std::fs::write(path, format!("{head}{BEGIN}{want}{END}{tail}")).unwrap();
        return;
    }
    assert_eq!(
        table, want,
        "docs/language.md's derivative table is stale: run LOSSC_UPDATE_DOCS=1 cargo test --test op_table"
    );
}
