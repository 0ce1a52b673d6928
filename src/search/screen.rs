//! Cheap pre-screening before any training (SPEC section 4): the binary phenotype probe with
//! the predecessor's rejection rules, what the compiler can tell statically, and the keys that
//! deduplicate candidates.

use super::columns::{Columns, Points};
use crate::ir::{Graph, Id, Input, print};
use crate::passes::{fuse, simplify::simplify, simplify::simplify_keyed};
use rustc_hash::FxHashMap;

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

/// The probe's x values: `PHENOTYPE_POINTS` from eps to 1 - eps, symmetric to the bit
/// (`x[n - 1 - i] = 1 - x[i]`), so that the probe at y = 1, whose p is `1 - x`, runs over the
/// same points read backwards, and shares every column that does not depend on y.
fn probe_x() -> Vec<f64> {
    let (eps, n) = (1e-7, PHENOTYPE_POINTS);
    let mut x: Vec<f64> = (0..n).map(|i| eps + (1.0 - 2.0 * eps) * i as f64 / (n - 1) as f64).collect();
    for i in 0..n / 2 {
        x[n - 1 - i] = 1.0 - x[i];
    }
    x
}

/// The binary phenotype: two classes, y = (0, 1), p = (x, 1 - x), x from eps to 1 - eps; the
/// value is `L(0, x) + L(1, 1 - x)` (no sign applied).
pub fn phenotype(g: &Graph) -> Vec<f64> {
    Screener::new().phenotype(g)
}

/// The screen with its evaluator: the probe points, and the columns of subexpressions seen
/// before (cleared when it grows past `CACHE_COLUMNS`).
pub struct Screener {
    /// The evaluators of the phenotype's points and of the gradient's grid (apart, so that
    /// the grid's short columns lie close together).
    cols: Columns,
    grid_cols: Columns,
    x: (Points, Vec<f64>),
    grid: (Points, Vec<f64>),
    /// The pointwise baseline's output columns (two outputs at two values of y), reused.
    out: [Vec<f64>; 4],
    /// The last phenotype, reused.
    curve: Vec<f64>,
    /// Gradient verdicts by the simplified signed loss's key (and the guard): a loss that
    /// comes back (a neutral mutation, another genome of the same loss) is not differentiated
    /// again. Emptied when it reaches `VERDICTS`.
    gradients: FxHashMap<(u64, u64), Result<(), Rejection>>,
    /// Time per stage, when asked for, and the start of the current one.
    timing: Option<(Stages, std::time::Instant)>,
    /// Point by point through the interpreter, without the cache: the baseline that the
    /// benchmark and the tests compare the columns against.
    pointwise: bool,
}

/// The stages of [`Screener::screen`], in order.
#[derive(Clone, Copy, Debug)]
pub enum Stage {
    Phenotype,
    Rules,
    Simplify,
    Gradient,
    Key,
}

/// Time spent in each stage, indexed by [`Stage`].
#[derive(Clone, Debug, Default)]
pub struct Stages {
    pub nanos: [u64; 5],
}

impl Stages {
    pub const NAMES: [&str; 5] = ["phenotype", "rules", "simplify", "gradient", "key"];
}

/// Phenotype columns the cache keeps (only routines' columns are cached): 32 MB, enough for
/// the subexpressions a population shares. The gradient grid's cache keeps four times as many
/// of its short columns (13 MB).
const CACHE_COLUMNS: usize = 4096;

/// Gradient verdicts the screen keeps (24 bytes each: under 2 MB).
const VERDICTS: usize = 1 << 16;

impl Default for Screener {
    fn default() -> Self {
        Screener::new()
    }
}

impl Screener {
    pub fn new() -> Screener {
        let x = probe_x();
        let grid: Vec<f64> = (1..100).map(|i| i as f64 / 100.0).collect();
        let mut cols = Columns::new(x.len(), CACHE_COLUMNS);
        let mut grid_cols = Columns::new(grid.len(), 4 * CACHE_COLUMNS);
        Screener {
            x: (cols.points(&x), x),
            grid: (grid_cols.points(&grid), grid),
            cols,
            grid_cols,
            out: Default::default(),
            curve: Vec::new(),
            gradients: FxHashMap::default(),
            timing: None,
            pointwise: false,
        }
    }

    /// The baseline screener: the same rules, evaluated point by point, no cache.
    pub fn pointwise() -> Screener {
        Screener { pointwise: true, ..Screener::new() }
    }

    /// Times each stage of [`Screener::screen`] from now on (see [`Screener::stages`]).
    pub fn time_stages(&mut self) {
        self.timing = Some((Stages::default(), std::time::Instant::now()));
    }

    /// The time per stage so far, if [`Screener::time_stages`] was called.
    pub fn stages(&self) -> Option<&Stages> {
        self.timing.as_ref().map(|t| &t.0)
    }

    /// Ends a stage: its time since the previous lap.
    fn lap(&mut self, stage: Stage) {
        if let Some((s, t)) = &mut self.timing {
            let now = std::time::Instant::now();
            s.nanos[stage as usize] += (now - *t).as_nanos() as u64;
            *t = now;
        }
    }

    /// Evaluates nodes `outs` (at most two) of `g` at each y in `ys` (at most two) and each
    /// probe point (the phenotype's x, or the gradient's grid): output k at `ys[j]` is then
    /// [`Screener::out`]`(grid, j, k)`.
    fn eval(&mut self, g: &Graph, outs: &[Id], ys: &[f64], grid: bool) {
        let (pts, ps) = if grid { &self.grid } else { &self.x };
        if !self.pointwise {
            let cols = if grid { &mut self.grid_cols } else { &mut self.cols };
            return cols.eval(g, ys, *pts, outs);
        }
        let mut vals = Vec::new();
        for c in &mut self.out {
            c.clear();
        }
        for (j, &y) in ys.iter().enumerate() {
            for &p in ps {
                crate::reference::interp::eval_into(g, y, p, &mut vals);
                for (k, o) in outs.iter().enumerate() {
                    self.out[2 * j + k].push(vals[o.index()]);
                }
            }
        }
    }

    /// Output `k` at the `j`-th y of the last [`Screener::eval`].
    fn out(&self, grid: bool, j: usize, k: usize) -> &[f64] {
        match (self.pointwise, grid) {
            (true, _) => &self.out[2 * j + k],
            (false, false) => self.cols.out(j, k),
            (false, true) => self.grid_cols.out(j, k),
        }
    }

    /// [`phenotype`], with the cache.
    pub fn phenotype(&mut self, g: &Graph) -> Vec<f64> {
        self.curve(g);
        self.curve.clone()
    }

    /// The phenotype into `self.curve`.
    fn curve(&mut self, g: &Graph) {
        self.eval(g, &[g.outputs[0].1], &[0.0, 1.0], false);
        // At y = 1, p = 1 - x[i] is x[n - 1 - i].
        let mut curve = std::mem::take(&mut self.curve);
        curve.resize(PHENOTYPE_POINTS, 0.0);
        add_reversed(self.out(false, 0, 0), self.out(false, 1, 0), &mut curve);
        self.curve = curve;
    }
}

super::columns::wide!(
    /// `out[i] = a[i] + b[n - 1 - i]`, vectorised (an index loop: the zip of a reversed
    /// iterator is not).
    add_reversed(a: &[f64], b: &[f64], out: &mut [f64]) => {
        let n = out.len();
        let (a, b) = (&a[..n], &b[..n]);
        for i in 0..n {
            out[i] = a[i] + b[n - 1 - i];
        }
    }
);

/// The predecessor's rules on the binary phenotype: not finite; flat (more than 10 zero steps,
/// or all zero); more than one extremum (sign change of the non-zero steps); the extremum in
/// the middle (the turn's index among the non-zero steps in 490..510). Written as counts over
/// the whole curve so that they vectorise; the common case has no zero step.
fn curve_rules(curve: &[f64]) -> Result<(), Rejection> {
    let c = curve_counts(curve);
    if c.not_finite {
        return Err(Rejection::NotFinite);
    }
    // An all-zero curve has only zero steps.
    if c.zero_steps > 10 {
        return Err(Rejection::Flat);
    }
    let (turns, middle) = if c.zero_steps == 0 {
        // The turn between steps i and i + 1 is at index i + 1 among the (all non-zero) steps,
        // so a lone turn is in the middle when it is at an i in 489..509.
        let near = 489..509.min(curve.len() - 2);
        (c.turns, c.turns == 1 && near.into_iter().any(|i| turn(curve[i], curve[i + 1], curve[i + 2])))
    } else {
        let (turns, first) = turns_across_zero_steps(curve);
        (turns, first.is_some_and(|t| (490..510).contains(&t)))
    };
    if turns > 1 {
        return Err(Rejection::Wiggly);
    }
    if middle {
        return Err(Rejection::MiddleExtremum);
    }
    Ok(())
}

/// The turns of a curve with a few zero steps (at most 10; the rules' slow path), and the
/// first turn's index among the non-zero steps: the turns between neighbouring non-zero steps
/// counted in one vectorised pass, then those across each run of zero steps.
fn turns_across_zero_steps(curve: &[f64]) -> (u64, Option<usize>) {
    let steps = curve.len() - 1;
    let step = |i: usize| curve[i + 1] - curve[i];
    let mut zeros = [0usize; 10];
    let m = zero_steps(curve, &mut zeros);
    let zeros = &zeros[..m];
    // A step's index among the non-zero steps.
    let rank = |i: usize| i - zeros.iter().filter(|&&z| z < i).count();
    let (mut turns, turn_sum) = nonzero_turns(curve);
    let mut across = None;
    let mut k = 0;
    while k < m {
        let (start, mut end) = (zeros[k], zeros[k]);
        while k + 1 < m && zeros[k + 1] == end + 1 {
            (k, end) = (k + 1, end + 1);
        }
        k += 1;
        if start > 0 && end + 1 < steps && (step(start - 1) > 0.0) != (step(end + 1) > 0.0) {
            turns += 1;
            across.get_or_insert(rank(end + 1));
        }
    }
    // Only a lone turn's index matters (more than one is wiggly).
    let first = match (turns, across) {
        (1, Some(t)) => Some(t),
        (1, None) => Some(rank(turn_sum as usize + 1)),
        _ => None,
    };
    (turns, first)
}

/// The indices of a curve's zero steps (at most `zeros.len()` of them, which the caller knows
/// from the counts), four steps a compare where the processor has AVX; how many.
fn zero_steps(curve: &[f64], zeros: &mut [usize]) -> usize {
    let (mut m, mut done) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        /// Steps `0..steps / 4 * 4` (no closures here: they would not be compiled for AVX).
        #[target_feature(enable = "avx")]
        fn avx(curve: &[f64], zeros: &mut [usize]) -> usize {
            use std::arch::x86_64::*;
            let mut m = 0;
            for i in (0..(curve.len() - 1) / 4 * 4).step_by(4) {
                let (a, b) = (&curve[i..i + 4], &curve[i + 1..i + 5]);
                // SAFETY: four f64s each.
                let (a, b) = unsafe { (_mm256_loadu_pd(a.as_ptr()), _mm256_loadu_pd(b.as_ptr())) };
                let z = _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_EQ_OQ>(_mm256_sub_pd(b, a), _mm256_setzero_pd()));
                for k in 0..4 {
                    if z >> k & 1 == 1 {
                        zeros[m] = i + k;
                        m += 1;
                    }
                }
            }
            m
        }
        // SAFETY: the processor has AVX (checked above).
        m = unsafe { avx(curve, zeros) };
        done = (curve.len() - 1) / 4 * 4;
    }
    m + zero_steps_scalar(&curve[done..], done, &mut zeros[m..])
}

/// [`zero_steps`] one step at a time, for steps `first..` of the whole curve (`curve` starts at
/// step `first`): the processors without AVX, the ragged end, and the test's reference.
fn zero_steps_scalar(curve: &[f64], first: usize, zeros: &mut [usize]) -> usize {
    let mut m = 0;
    for i in 0..curve.len().saturating_sub(1) {
        if curve[i + 1] - curve[i] == 0.0 {
            zeros[m] = first + i;
            m += 1;
        }
    }
    m
}

super::columns::wide!(
    /// The turns between neighbouring steps that are both non-zero, and the sum of the indices
    /// i where steps i and i + 1 turn, vectorised.
    nonzero_turns(curve: &[f64]) -> (u64, u64) => {
        let n = curve.len() - 2;
        let (a, b, c) = (&curve[..n], &curve[1..n + 1], &curve[2..n + 2]);
        let (mut turns, mut turn_sum) = (0u64, 0u64);
        for i in 0..n {
            let (d0, d1) = (b[i] - a[i], c[i] - b[i]);
            let t = (((d0 > 0.0) != (d1 > 0.0)) & (d0 != 0.0) & (d1 != 0.0)) as u64;
            turns += t;
            turn_sum += i as u64 & t.wrapping_neg();
        }
        (turns, turn_sum)
    }
);

/// Whether the steps `b - a` and `c - b` rise and fall (or fall and rise).
#[inline(always)]
fn turn(a: f64, b: f64, c: f64) -> bool {
    (b - a > 0.0) != (c - b > 0.0)
}

/// `v - v`: +0 (all bits 0) for a finite v, NaN for an infinity or NaN.
#[inline(always)]
#[allow(clippy::eq_op)]
fn nan_unless_finite(v: f64) -> f64 {
    v - v
}

/// What the rules count over a whole curve; `turns` is right only without zero steps.
struct Counts {
    not_finite: bool,
    zero_steps: u64,
    turns: u64,
}

super::columns::wide!(
    /// The rules' counts in one loop over the curve, vectorised. `v - v` is +0 (all bits 0)
    /// for a finite v and NaN otherwise, so one OR of those bits finds a non-finite point.
    curve_counts(curve: &[f64]) -> Counts => {
        let n = curve.len() - 2;
        let (a, b, c) = (&curve[..n], &curve[1..n + 1], &curve[2..n + 2]);
        let (mut not_finite, mut zero_steps, mut turns) = (0u64, 0u64, 0u64);
        for i in 0..n {
            not_finite |= nan_unless_finite(a[i]).to_bits();
            zero_steps += (b[i] - a[i] == 0.0) as u64;
            turns += turn(a[i], b[i], c[i]) as u64;
        }
        // The last two points and the last step.
        let (y, z) = (curve[n], curve[n + 1]);
        not_finite |= nan_unless_finite(y).to_bits() | nan_unless_finite(z).to_bits();
        zero_steps += (z - y == 0.0) as u64;
        Counts { not_finite: not_finite != 0, zero_steps, turns }
    }
);

/// Min-max normalisation to [0, 1] (all zeros for a constant curve). The curve is finite (the
/// rules ran first).
pub fn normalise(c: &[f64]) -> Vec<f64> {
    let (lo, hi) = lane_extremes(c);
    let lo = lo.into_iter().fold(f64::MAX, f64::min);
    let hi = hi.into_iter().fold(f64::MIN, f64::max);
    if hi <= lo {
        return vec![0.0; c.len()];
    }
    rescale(c, lo, hi - lo)
}

/// The minimum and maximum of each of four lanes: lane k holds the elements at k mod 4 of the
/// whole chunks and element k of the remainder, which comes first. Each step keeps the
/// incumbent unless the new value is strictly smaller (larger), which is also what the
/// processor's `vminpd`/`vmaxpd` do, so both paths give the same bits, zeros' signs included.
fn lane_extremes(c: &[f64]) -> ([f64; 4], [f64; 4]) {
    let (mut lo, mut hi) = ([f64::MAX; 4], [f64::MIN; 4]);
    let chunks = c.chunks_exact(4);
    for (k, &v) in chunks.remainder().iter().enumerate() {
        lo[k] = if v < lo[k] { v } else { lo[k] };
        hi[k] = if v > hi[k] { v } else { hi[k] };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        #[target_feature(enable = "avx")]
        fn avx(chunks: std::slice::ChunksExact<'_, f64>, lo: &mut [f64; 4], hi: &mut [f64; 4]) {
            use std::arch::x86_64::*;
            // SAFETY (the loads and stores): four f64s each.
            let (mut l, mut h) = unsafe { (_mm256_loadu_pd(lo.as_ptr()), _mm256_loadu_pd(hi.as_ptr())) };
            for chunk in chunks {
                let v = unsafe { _mm256_loadu_pd(chunk.as_ptr()) };
                // vminpd(v, l) is `v < l ? v : l`, lane by lane.
                (l, h) = (_mm256_min_pd(v, l), _mm256_max_pd(v, h));
            }
            unsafe { (_mm256_storeu_pd(lo.as_mut_ptr(), l), _mm256_storeu_pd(hi.as_mut_ptr(), h)) };
        }
        // SAFETY: the processor has AVX (checked above).
        unsafe { avx(chunks, &mut lo, &mut hi) };
        return (lo, hi);
    }
    for chunk in chunks {
        for k in 0..4 {
            lo[k] = if chunk[k] < lo[k] { chunk[k] } else { lo[k] };
            hi[k] = if chunk[k] > hi[k] { chunk[k] } else { hi[k] };
        }
    }
    (lo, hi)
}

super::columns::wide!(
    /// `(v - lo) / range` for each v of the curve, written once (not zeroed first).
    rescale(c: &[f64], lo: f64, range: f64) -> Vec<f64> => {
        let mut out = Vec::with_capacity(c.len());
        for (o, &v) in out.spare_capacity_mut().iter_mut().zip(c) {
            o.write((v - lo) / range);
        }
        // SAFETY: the loop wrote all c.len() elements.
        unsafe { out.set_len(c.len()) };
        out
    }
);

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
        if let Some((_, t)) = &mut self.timing {
            *t = std::time::Instant::now();
        }
        self.curve(g);
        self.lap(Stage::Phenotype);
        if !g.reads(g.outputs[0].1, Input::P) {
            return Err(Rejection::IgnoresP);
        }
        let rules = curve_rules(&self.curve);
        self.lap(Stage::Rules);
        rules?;
        // As x rises the true class's p = 1 - x falls, so the loss must rise: choose the sign
        // from the curve before any sign is applied.
        let sign = if self.curve[PHENOTYPE_POINTS - 1] >= self.curve[0] { 1.0 } else { -1.0 };
        let (signed, loss_key) = if sign < 0.0 {
            let mut negated = g.clone();
            let out = negated.outputs[0].1;
            negated.outputs[0].1 = negated.neg(out);
            simplify_keyed(&negated)
        } else {
            simplify_keyed(g)
        };
        self.lap(Stage::Simplify);
        if !signed.reads(signed.outputs[0].1, Input::P) {
            return Err(Rejection::IgnoresP);
        }
        // The pointwise baseline keeps nothing between candidates.
        let loss_key = (loss_key, signed.eps.to_bits());
        let gradient = match self.gradients.get(&loss_key) {
            Some(verdict) if !self.pointwise => verdict.clone(),
            _ => {
                let verdict = self.check_gradient(&signed);
                if !self.pointwise {
                    if self.gradients.len() >= VERDICTS {
                        self.gradients.clear();
                    }
                    self.gradients.insert(loss_key, verdict.clone());
                }
                verdict
            }
        };
        self.lap(Stage::Gradient);
        gradient?;
        let curve: Vec<f64> = self.curve.iter().map(|v| v * sign).collect();
        let normalised = normalise(&curve);
        let key = print::expr_to_string(&signed, signed.outputs[0].1);
        self.lap(Stage::Key);
        Ok(Screened { sign, graph: signed, phenotype: curve, normalised, key })
    }

    /// `s` finite on a grid of the domain, and on average pushing the target's p up.
    /// The derivatives are those the kernel compiles (simplified); the columnar screener
    /// evaluates them unsimplified first, which gives the same values wherever it is finite,
    /// and simplifies only when it meets a NaN or infinity (the pointwise baseline always does).
    fn check_gradient(&mut self, g: &Graph) -> Result<(), Rejection> {
        let raw = fuse::derivatives_unsimplified(g.clone());
        let probe = |this: &mut Screener, d: &Graph| {
            let (dl, s) = (d.outputs[1].1, d.outputs[2].1);
            this.eval(d, &[s, dl], &[0.0, 1.0], true);
            let finite = (0..2).all(|j| this.out(true, j, 0).iter().all(|v| v.is_finite()));
            let slope = this.out(true, 1, 1).iter().sum::<f64>();
            let size = this.out(true, 1, 1).iter().map(|v| v.abs()).sum::<f64>();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules as first written (vectors of steps, signs and turns): the reference for the
    /// counting version, which has a fast path for curves without zero steps.
    fn rules_reference(curve: &[f64]) -> Result<(), Rejection> {
        if curve.iter().any(|v| !v.is_finite()) {
            return Err(Rejection::NotFinite);
        }
        let steps: Vec<f64> = curve.windows(2).map(|w| w[1] - w[0]).collect();
        if steps.iter().filter(|d| **d == 0.0).count() > 10 || curve.iter().all(|v| *v == 0.0) {
            return Err(Rejection::Flat);
        }
        let signs: Vec<bool> = steps.iter().filter(|d| **d != 0.0).map(|d| *d > 0.0).collect();
        let turns: Vec<usize> = (1..signs.len()).filter(|&i| signs[i] != signs[i - 1]).collect();
        if turns.len() > 1 {
            return Err(Rejection::Wiggly);
        }
        if turns.first().is_some_and(|t| (490..510).contains(t)) {
            return Err(Rejection::MiddleExtremum);
        }
        Ok(())
    }

    #[test]
    fn the_counting_rules_agree_with_the_reference() {
        let mut rng = crate::rng::Rng::new(7);
        let mut verdicts = std::collections::BTreeMap::new();
        for case in 0..4000 {
            // A curve with up to two extrema anywhere (often near the middle), some zero steps
            // (plateaus) and the odd non-finite point.
            let turns: Vec<usize> =
                (0..rng.below(3)).map(|_| 480 + rng.below(40) * (1 + rng.below(12)) % 999).collect();
            let mut curve: Vec<f64> = (0..PHENOTYPE_POINTS)
                .map(|i| {
                    let flips = turns.iter().filter(|&&t| i > t).count();
                    let x = i as f64 / 999.0;
                    if flips % 2 == 0 { x } else { 2.0 * turns[0] as f64 / 999.0 - x }
                })
                .collect();
            for _ in 0..[0, 0, 1, 5, 11][case % 5] {
                // Plateaus of one to three zero steps.
                let i = 1 + rng.below(997);
                for k in 0..1 + rng.below(3) {
                    curve[i + k] = curve[i - 1];
                }
            }
            if case % 7 == 0 {
                curve[999] = curve[998]; // a zero last step, which the counts handle apart
            }
            if case % 97 == 0 {
                curve[rng.below(1000)] = f64::NAN;
            }
            let want = rules_reference(&curve);
            assert_eq!(curve_rules(&curve), want, "case {case}, turns at {turns:?}");
            *verdicts.entry(format!("{want:?}")).or_insert(0) += 1;
        }
        // Every verdict was exercised.
        assert_eq!(verdicts.len(), 5, "{verdicts:?}");
        // A lone extremum next to the middle's edges, with plateaus at the turn itself (a turn
        // across zero steps) and before it (which shift the turn's index among the steps).
        for t in 480..520 {
            for (len, offset, before) in [(1, 0, 0), (2, 0, 0), (3, 1, 0), (1, 1, 2), (2, 2, 1), (1, 0, 3)] {
                let mut curve: Vec<f64> = (0..PHENOTYPE_POINTS).map(|i| -((i as f64 - t as f64).abs())).collect();
                for k in 0..len {
                    curve[t - offset + k + 1] = curve[t - offset];
                }
                for k in 0..before {
                    curve[100 + 10 * k] = curve[99 + 10 * k];
                }
                assert_eq!(curve_rules(&curve), rules_reference(&curve), "turn at {t}, plateau {len} at -{offset}");
            }
        }
    }

    /// The zero steps found four at a time are the scalar loop's, at every length.
    #[test]
    fn zero_steps_agree_with_the_scalar_loop() {
        let mut rng = crate::rng::Rng::new(17);
        for case in 0..2000 {
            let n = 2 + rng.below(40);
            let mut curve: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
            for _ in 0..rng.below(6) {
                let i = 1 + rng.below(n - 1);
                curve[i] = curve[i - 1];
            }
            let (mut got, mut want) = ([0; 64], [0; 64]);
            let (g, w) = (zero_steps(&curve, &mut got), zero_steps_scalar(&curve, 0, &mut want));
            assert_eq!(&got[..g], &want[..w], "case {case}: {curve:?}");
        }
    }

    /// The vector extremes keep what the first scalar loop kept, bit for bit: the first of
    /// equal values (so -0 or 0, whichever came first), lane by lane, remainder first.
    #[test]
    fn lane_extremes_agree_with_the_scalar_loop() {
        let reference = |c: &[f64]| {
            let (mut lo, mut hi) = ([f64::MAX; 4], [f64::MIN; 4]);
            let chunks = c.chunks_exact(4);
            for (k, &v) in chunks.remainder().iter().enumerate() {
                lo[k] = if v < lo[k] { v } else { lo[k] };
                hi[k] = if v > hi[k] { v } else { hi[k] };
            }
            for chunk in chunks {
                for k in 0..4 {
                    lo[k] = if chunk[k] < lo[k] { chunk[k] } else { lo[k] };
                    hi[k] = if chunk[k] > hi[k] { chunk[k] } else { hi[k] };
                }
            }
            (lo, hi)
        };
        let bits = |a: [f64; 4]| a.map(f64::to_bits);
        let mut rng = crate::rng::Rng::new(3);
        for case in 0..500 {
            let n = 1 + rng.below(40);
            let c: Vec<f64> = (0..n).map(|_| [0.0, -0.0, 1.0, -1.0, rng.normal()][rng.below(5)]).collect();
            let (want, got) = (reference(&c), lane_extremes(&c));
            assert_eq!((bits(got.0), bits(got.1)), (bits(want.0), bits(want.1)), "case {case}: {c:?}");
        }
    }
}
