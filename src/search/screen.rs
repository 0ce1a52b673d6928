//! Cheap pre-screening before any training (SPEC section 4): the binary phenotype probe with
//! the predecessor's rejection rules, what the compiler can tell statically, and the keys that
//! deduplicate candidates.

use crate::ir::{Graph, Id, Input, Node, print};
use crate::passes::{fuse, simplify::simplify};
use rustc_hash::FxHashMap as HashMap;
use std::rc::Rc;

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

/// The probe's x values: `PHENOTYPE_POINTS` from eps to 1 - eps.
fn probe_x() -> Vec<f64> {
    let eps = 1e-7;
    (0..PHENOTYPE_POINTS).map(|i| eps + (1.0 - 2.0 * eps) * i as f64 / (PHENOTYPE_POINTS - 1) as f64).collect()
}

/// The binary phenotype: two classes, y = (0, 1), p = (x, 1 - x), x from eps to 1 - eps; the
/// value is `L(0, x) + L(1, 1 - x)` (no sign applied).
pub fn phenotype(g: &Graph) -> Vec<f64> {
    Screener::new().phenotype(g)
}

/// A node's values over a column of points: one number when it does not depend on p.
#[derive(Clone)]
enum Col {
    One(f64),
    Many(Rc<[f64]>),
}

/// A structural hash of a node from its parts: cheap, and mixed well enough that distinct
/// subexpressions do not share a cached column by accident (splitmix64's finaliser).
fn mix(parts: [u64; 4]) -> u64 {
    let mut h = 0x9E37_79B9_7F4A_7C15u64;
    for p in parts {
        h = (h ^ p).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 31;
        h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 29;
    }
    h
}

/// Evaluates the nodes of `g` that `outs` need at y and each of `ps`, columnwise (one op
/// over all points at a time, which is what makes screening cheap), and returns the columns
/// of `outs`; `cache` keeps p-dependent columns by the node's structural hash, so candidates
/// sharing subexpressions share their work.
fn columns(g: &Graph, y: f64, ps: &Rc<[f64]>, outs: &[Id], cache: Option<&mut HashMap<u64, Rc<[f64]>>>) -> Vec<Col> {
    let needed = g.reachable(outs);
    // The requested columns themselves are a candidate's own (its loss, its gradient) and are
    // rarely met again: caching them only evicts shared subexpressions sooner.
    let mut is_out = vec![false; g.len()];
    for o in outs {
        is_out[o.index()] = true;
    }
    let mut cols: Vec<Col> = Vec::with_capacity(g.len());
    let mut hashes: Vec<u64> = Vec::with_capacity(g.len());
    let mut cache = cache;
    let points = mix([2, ps.len() as u64, ps[0].to_bits(), ps[ps.len() - 1].to_bits()]);
    for (id, n) in g.iter() {
        if !needed[id.index()] {
            cols.push(Col::One(f64::NAN));
            hashes.push(0);
            continue;
        }
        let h = match n {
            Node::Input(Input::Y) => mix([1, y.to_bits(), 0, 0]),
            Node::Input(Input::P) => points,
            Node::Const(bits) => mix([3, bits, 0, 0]),
            Node::Unary(op, a) => mix([4, op as u64, hashes[a.index()], g.eps.to_bits()]),
            Node::Binary(op, a, b) => mix([5 | (op as u64) << 8, hashes[a.index()], hashes[b.index()], 0]),
        };
        hashes.push(h);
        let one = |v: f64| Col::One(v);
        let col = match n {
            Node::Input(Input::Y) => one(y),
            Node::Input(Input::P) => Col::Many(ps.clone()),
            Node::Const(bits) => one(f64::from_bits(bits)),
            Node::Unary(op, a) => match &cols[a.index()] {
                Col::One(x) => one(op.eval(*x, g.eps)),
                Col::Many(xs) => {
                    let hit = cache.as_deref().and_then(|c| c.get(&h).filter(|v| v.len() == ps.len()).cloned());
                    Col::Many(hit.unwrap_or_else(|| {
                        let v = op.eval_column(xs, g.eps);
                        if let Some(c) = cache.as_deref_mut().filter(|_| !is_out[id.index()]) {
                            c.insert(h, v.clone());
                        }
                        v
                    }))
                }
            },
            Node::Binary(op, a, b) => match (&cols[a.index()], &cols[b.index()]) {
                (Col::One(x), Col::One(z)) => one(op.eval(*x, *z)),
                (ca, cb) => {
                    let hit = cache.as_deref().and_then(|c| c.get(&h).filter(|v| v.len() == ps.len()).cloned());
                    Col::Many(hit.unwrap_or_else(|| {
                        let n = ps.len();
                        let v = match (ca, cb) {
                            (Col::Many(xs), Col::One(z)) => op.eval_column(n, |i| xs[i], |_| *z),
                            (Col::One(x), Col::Many(zs)) => op.eval_column(n, |_| *x, |i| zs[i]),
                            (Col::Many(xs), Col::Many(zs)) => op.eval_column(n, |i| xs[i], |i| zs[i]),
                            (Col::One(_), Col::One(_)) => unreachable!("handled above"),
                        };
                        if let Some(c) = cache.as_deref_mut().filter(|_| !is_out[id.index()]) {
                            c.insert(h, v.clone());
                        }
                        v
                    }))
                }
            },
        };
        cols.push(col);
    }
    outs.iter().map(|o| cols[o.index()].clone()).collect()
}

/// The screen with its caches: the probe points and the columns of subexpressions seen
/// before (cleared when it grows past `CACHE_COLUMNS`).
pub struct Screener {
    x: Rc<[f64]>,
    one_minus_x: Rc<[f64]>,
    grid: Rc<[f64]>,
    cache: HashMap<u64, Rc<[f64]>>,
    /// Point by point through the interpreter, without the cache: the baseline that the
    /// benchmark and the tests compare the columns against.
    pointwise: bool,
}

const CACHE_COLUMNS: usize = 8192;

impl Default for Screener {
    fn default() -> Self {
        Screener::new()
    }
}

impl Screener {
    pub fn new() -> Screener {
        let x = probe_x();
        Screener {
            one_minus_x: x.iter().map(|v| 1.0 - v).collect(),
            x: x.into(),
            grid: (1..100).map(|i| i as f64 / 100.0).collect(),
            cache: HashMap::default(),
            pointwise: false,
        }
    }

    /// The baseline screener: the same rules, evaluated point by point, no cache.
    pub fn pointwise() -> Screener {
        Screener { pointwise: true, ..Screener::new() }
    }

    /// The columns of nodes `outs` of `g` at y and each of `ps`.
    fn columns(&mut self, g: &Graph, outs: &[Id], y: f64, ps: &Rc<[f64]>) -> Vec<Col> {
        if self.pointwise {
            let mut vals = Vec::new();
            let mut cols = vec![Vec::with_capacity(ps.len()); outs.len()];
            for &p in ps.iter() {
                crate::interp::eval_into(g, y, p, &mut vals);
                for (c, o) in cols.iter_mut().zip(outs) {
                    c.push(vals[o.index()]);
                }
            }
            return cols.into_iter().map(|c| Col::Many(c.into())).collect();
        }
        if self.cache.len() > CACHE_COLUMNS {
            self.cache.clear();
        }
        columns(g, y, ps, outs, Some(&mut self.cache))
    }

    /// [`phenotype`], with the cache.
    pub fn phenotype(&mut self, g: &Graph) -> Vec<f64> {
        let out = g.outputs[0].1;
        let (x, one_minus_x) = (self.x.clone(), self.one_minus_x.clone());
        let a = self.columns(g, &[out], 0.0, &x).remove(0);
        let b = self.columns(g, &[out], 1.0, &one_minus_x).remove(0);
        let n = x.len();
        (0..n).map(|i| at(&a, i) + at(&b, i)).collect()
    }
}

/// Point `i` of a column.
fn at(c: &Col, i: usize) -> f64 {
    match c {
        Col::One(v) => *v,
        Col::Many(v) => v[i],
    }
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
    Screener::new().screen(g)
}

impl Screener {
    /// Screens a candidate loss (one output): the phenotype rules on the loss as written (as
    /// the predecessor evaluates its genomes), then the sign, the simplified graph and its key,
    /// then the gradient. Cheap checks come first: most candidates never reach the compiler.
    pub fn screen(&mut self, g: &Graph) -> Result<Screened, Rejection> {
        let curve = self.phenotype(g);
        if !g.depends_on(Input::P)[g.outputs[0].1.index()] {
            return Err(Rejection::IgnoresP);
        }
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
        if let Some(&t) = turns.first()
            && (490..510).contains(&t)
        {
            return Err(Rejection::MiddleExtremum);
        }
        // As x rises the true class's p = 1 - x falls, so the loss must rise: choose the sign
        // from the curve before any sign is applied.
        let sign = if curve[PHENOTYPE_POINTS - 1] >= curve[0] { 1.0 } else { -1.0 };
        let mut signed = g.clone();
        if sign < 0.0 {
            let out = signed.outputs[0].1;
            let neg = signed.neg(out);
            signed.outputs[0].1 = neg;
        }
        let signed = simplify(&signed);
        if !signed.depends_on(Input::P)[signed.outputs[0].1.index()] {
            return Err(Rejection::IgnoresP);
        }
        self.check_gradient(&signed)?;
        let phenotype: Vec<f64> = curve.iter().map(|v| sign * v).collect();
        let normalised = normalise(&phenotype);
        let key = print::expr_to_string(&signed, signed.outputs[0].1);
        Ok(Screened { sign, graph: signed, phenotype, normalised, key })
    }

    /// `s` finite on a grid of the domain, and on average pushing the target's p up.
    /// The derivatives are those the kernel compiles (simplified); the columnar screener
    /// evaluates them unsimplified first, which gives the same values wherever it is finite,
    /// and simplifies only when it meets a NaN or infinity (the pointwise baseline always does).
    fn check_gradient(&mut self, g: &Graph) -> Result<(), Rejection> {
        let raw = fuse::derivatives_unsimplified(g.clone());
        let grid = self.grid.clone();
        let probe = |this: &mut Screener, d: &Graph| {
            let (dl, s) = (d.outputs[1].1, d.outputs[2].1);
            let at0 = this.columns(d, &[s], 0.0, &grid);
            let at1 = this.columns(d, &[s, dl], 1.0, &grid);
            let n = grid.len();
            let finite = (0..n).all(|i| at(&at0[0], i).is_finite() && at(&at1[0], i).is_finite());
            let slope = (0..n).map(|i| at(&at1[1], i)).sum::<f64>();
            let size = (0..n).map(|i| at(&at1[1], i).abs()).sum::<f64>();
            (finite, slope, size)
        };
        let (mut finite, mut slope, mut size) =
            if self.pointwise { (false, f64::NAN, f64::NAN) } else { probe(self, &raw) };
        if !finite {
            (finite, slope, size) = probe(self, &fuse::derivatives_of(g.clone()));
        }
        if !finite {
            return Err(Rejection::GradientNotFinite);
        }
        // A slope within rounding of zero (e.g. atan(p (y - p)), whose gradient at y = 1 is
        // antisymmetric about p = 1/2) is a tie, not a wrong direction: otherwise the verdict
        // would hang on the rounding of the simplified or unsimplified derivative.
        if slope > 1e-9 * size {
            return Err(Rejection::WrongDirection);
        }
        Ok(())
    }
}
