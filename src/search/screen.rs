//! Cheap pre-screening before any training (SPEC section 4): the binary phenotype probe with
//! the predecessor's rejection rules, what the compiler can tell statically, and the keys that
//! deduplicate candidates.

use crate::interp::eval_into;
use crate::ir::{Graph, Input, print};
use crate::passes::{fuse, simplify::simplify};

/// Points of the binary phenotype.
pub const PHENOTYPE_POINTS: usize = 1000;

/// Why a candidate is rejected before training.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The simplified loss does not depend on p.
    IgnoresP,
    /// The binary phenotype is flat (more than 10 zero steps, or all zero) or not finite.
    Flat,
    NotFinite,
    /// More than one extremum.
    Wiggly,
    /// Its extremum sits in the middle (index 490..509).
    MiddleExtremum,
    /// `s = p dL/dp` is NaN or inf somewhere on the domain.
    GradientNotFinite,
    /// After the sign is chosen, the gradient still lowers the target's probability.
    WrongDirection,
}

/// A screened candidate: the loss with its sign applied, and what dedup needs.
#[derive(Clone, Debug)]
pub struct Screened {
    /// 1 or -1: chosen so the loss falls as p of the true class rises.
    pub sign: f64,
    /// The loss with the sign applied, simplified.
    pub graph: Graph,
    /// The binary phenotype (sign applied), and normalised to [0, 1].
    pub phenotype: Vec<f64>,
    pub normalised: Vec<f64>,
    /// Canonical key: the simplified expression as one line of text.
    pub key: String,
}

/// The binary phenotype: two classes, y = (0, 1), p = (x, 1 - x), x from eps to 1 - eps; the
/// value is `L(0, x) + L(1, 1 - x)` (no sign applied).
pub fn phenotype(g: &Graph) -> Vec<f64> {
    let out = g.outputs[0].1;
    let eps = 1e-7;
    let mut vals = Vec::new();
    (0..PHENOTYPE_POINTS)
        .map(|i| {
            let x = eps + (1.0 - 2.0 * eps) * i as f64 / (PHENOTYPE_POINTS - 1) as f64;
            eval_into(g, 0.0, x, &mut vals);
            let a = vals[out.index()];
            eval_into(g, 1.0, 1.0 - x, &mut vals);
            a + vals[out.index()]
        })
        .collect()
}

/// Min-max normalisation to [0, 1] (all zeros for a constant curve).
pub fn normalise(c: &[f64]) -> Vec<f64> {
    let (lo, hi) = c.iter().fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    c.iter().map(|v| if hi > lo { (v - lo) / (hi - lo) } else { 0.0 }).collect()
}

/// Root-mean-square distance of two normalised phenotypes (duplicates: <= 0.01).
pub fn distance(a: &[f64], b: &[f64]) -> f64 {
    (a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / a.len() as f64).sqrt()
}

/// The canonical key of a loss graph's first output: simplified, one line.
pub fn key(g: &Graph) -> String {
    let s = simplify(g);
    print::expr_to_string(&s, s.outputs[0].1)
}

/// Screens a candidate loss (one output).
pub fn screen(g: &Graph) -> Result<Screened, Rejection> {
    let g = simplify(g);
    let out = g.outputs[0].1;
    if !g.depends_on(Input::P)[out.index()] {
        return Err(Rejection::IgnoresP);
    }
    let curve = phenotype(&g);
    if curve.iter().any(|v| !v.is_finite()) {
        return Err(Rejection::NotFinite);
    }
    let steps: Vec<f64> = curve.windows(2).map(|w| w[1] - w[0]).collect();
    let zero_steps = steps.iter().filter(|d| **d == 0.0).count();
    if zero_steps > 10 || curve.iter().all(|v| *v == 0.0) {
        return Err(Rejection::Flat);
    }
    // Extrema: sign changes of the non-zero steps.
    let signs: Vec<bool> = steps.iter().filter(|d| **d != 0.0).map(|d| *d > 0.0).collect();
    let turns: Vec<usize> = (1..signs.len()).filter(|&i| signs[i] != signs[i - 1]).collect();
    if turns.len() > 1 {
        return Err(Rejection::Wiggly);
    }
    if let Some(&t) = turns.first() {
        if (490..510).contains(&t) {
            return Err(Rejection::MiddleExtremum);
        }
    }
    // As x rises the true class's p = 1 - x falls, so the loss must rise: choose the sign from
    // the curve before any sign is applied.
    let sign = if curve[PHENOTYPE_POINTS - 1] >= curve[0] { 1.0 } else { -1.0 };
    let mut signed = g.clone();
    if sign < 0.0 {
        let neg = signed.neg(out);
        signed.outputs[0].1 = neg;
    }
    let signed = simplify(&signed);
    check_gradient(&signed)?;
    let phenotype: Vec<f64> = curve.iter().map(|v| sign * v).collect();
    let normalised = normalise(&phenotype);
    let key = key(&signed);
    Ok(Screened { sign, graph: signed, phenotype, normalised, key })
}

/// `s` finite on a grid of the domain, and on average pushing the target's p up.
fn check_gradient(g: &Graph) -> Result<(), Rejection> {
    let name = g.outputs[0].0.clone();
    let d = fuse::derivatives(g, &name).expect("one output");
    let dl = d.outputs[1].1;
    let s = d.outputs[2].1;
    let mut vals = Vec::new();
    let mut mean_target_slope = 0.0;
    for i in 1..100 {
        let p = i as f64 / 100.0;
        for y in [0.0, 1.0] {
            eval_into(&d, y, p, &mut vals);
            if !vals[s.index()].is_finite() {
                return Err(Rejection::GradientNotFinite);
            }
            if y == 1.0 {
                mean_target_slope += vals[dl.index()];
            }
        }
    }
    if mean_target_slope > 0.0 {
        return Err(Rejection::WrongDirection);
    }
    Ok(())
}
