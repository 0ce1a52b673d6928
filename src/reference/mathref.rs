//! f64 reference implementations of the special functions the op table needs.
//!
//! These are the oracle's math, deliberately independent of the f32 approximations the kernels
//! use: the Bessel functions come from their power series (all terms positive, so summing in
//! f64 is accurate to a few ulps) and their asymptotic expansion for large arguments.

/// Below this |x| the Bessel power series is used, above it the asymptotic expansion (whose
/// smallest term there is ~e^-2x, far below f64 resolution).
const BESSEL_SERIES_MAX: f64 = 25.0;

/// NaN-propagating maximum (`f64::max` drops NaN) with `max(-0, 0) = 0` in either order, so
/// it is commutative (IEEE 754-2019 `maximum`).
/// Written with selects, not branches, so that columns of it vectorise (the search's screen).
#[inline]
pub fn max(a: f64, b: f64) -> f64 {
    let larger = if a > b { a } else { b };
    // Only the signs of zeros can differ, and -0 + 0 = 0.
    let r = if a == 0.0 && b == 0.0 { a + b } else { larger };
    if a.is_nan() | b.is_nan() { f64::NAN } else { r }
}

/// NaN-propagating minimum with `min(-0, 0) = -0` in either order.
#[inline]
pub fn min(a: f64, b: f64) -> f64 {
    let smaller = if a < b { a } else { b };
    let r = if a == 0.0 && b == 0.0 { -(-a + -b) } else { smaller };
    if a.is_nan() | b.is_nan() { f64::NAN } else { r }
}

/// -1, 0 or 1; NaN stays NaN.
pub fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x * 0.0 // 0 for ±0, NaN for NaN
    }
}

/// Heaviside step, 0.5 at 0.
pub fn step(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        0.0
    } else if x == 0.0 {
        0.5
    } else {
        x
    }
}

/// The elementary functions the op table's reference is built from. Each has one
/// implementation for a single value and for a slice, so that the screen's columns and the
/// interpreter's points agree bit for bit: glibc's vector math library (libmvec, four lanes,
/// within 4 ulp) where the processor has AVX2 and FMA, else Rust's std (and the libm crate for
/// erf and erfc). A single value is lane 0 of the vector call; a lane's result does not depend
/// on its neighbours (test `funcs_give_each_lane_the_scalar_bits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Exp,
    Ln,
    Ln1p,
    Sin,
    Cos,
    Sinh,
    Cosh,
    Asinh,
    Tanh,
    Atan,
    Erf,
    Erfc,
}

impl Func {
    pub const ALL: [Func; 12] = {
        use Func::*;
        [Exp, Ln, Ln1p, Sin, Cos, Sinh, Cosh, Asinh, Tanh, Atan, Erf, Erfc]
    };

    /// Without the vector library.
    fn scalar(self, x: f64) -> f64 {
        match self {
            Func::Exp => x.exp(),
            Func::Ln => x.ln(),
            Func::Ln1p => x.ln_1p(),
            Func::Sin => x.sin(),
            Func::Cos => x.cos(),
            Func::Sinh => x.sinh(),
            Func::Cosh => x.cosh(),
            Func::Asinh => x.asinh(),
            Func::Tanh => x.tanh(),
            Func::Atan => x.atan(),
            Func::Erf => libm::erf(x),
            Func::Erfc => libm::erfc(x),
        }
    }

    /// The function at x.
    #[inline]
    pub fn eval(self, x: f64) -> f64 {
        #[cfg(mvec)]
        if mvec::available() {
            let mut lanes = [x; 4];
            // SAFETY: the processor has AVX2 and FMA (checked above).
            unsafe { mvec::apply(self, &mut lanes) };
            return lanes[0];
        }
        self.scalar(x)
    }

    /// The function at each of `xs`, in place: [`Func::eval`]'s bits, four at a time.
    pub fn eval_in_place(self, xs: &mut [f64]) {
        #[cfg(mvec)]
        if mvec::available() {
            let whole = xs.len() / 4 * 4;
            let (body, tail) = xs.split_at_mut(whole);
            // SAFETY: the processor has AVX2 and FMA (checked above).
            unsafe { mvec::apply(self, body) };
            if !tail.is_empty() {
                let mut lanes = [0.0; 4];
                lanes[..tail.len()].copy_from_slice(tail);
                unsafe { mvec::apply(self, &mut lanes) };
                tail.copy_from_slice(&lanes[..tail.len()]);
            }
            return;
        }
        for x in xs {
            *x = self.scalar(*x);
        }
    }
}

/// glibc's libmvec, whose AVX2 entry points (`_ZGVdN4v_*`) take and return four f64 lanes.
#[cfg(mvec)]
mod mvec {
    use super::Func;
    use std::arch::x86_64::*;

    /// Four lanes in, four out (the AVX2 vector ABI: ymm0 both ways, which is what Rust passes
    /// from a caller compiled with AVX, as `apply` is).
    #[allow(improper_ctypes_definitions)]
    type Entry = unsafe extern "C" fn(__m256d) -> __m256d;

    macro_rules! entries {
        ($($f:ident => $sym:ident),* $(,)?) => {
            // Declared without their vector signature, which stable Rust does not accept in an
            // extern block, and called through `Entry`.
            #[link(name = "mvec")]
            unsafe extern "C" {
                $(fn $sym();)*
            }

            /// `f` on each whole group of four of `xs`, in place (a tail shorter than four is
            /// left alone).
            #[target_feature(enable = "avx2,fma")]
            pub unsafe fn apply(f: Func, xs: &mut [f64]) {
                // SAFETY: each symbol is a libmvec entry of this signature.
                let entry: Entry = unsafe {
                    match f { $(Func::$f => std::mem::transmute::<unsafe extern "C" fn(), Entry>($sym),)* }
                };
                let n = xs.len() / 4 * 4;
                let p = xs.as_mut_ptr();
                let mut i = 0;
                while i < n {
                    // SAFETY: i + 4 <= n <= xs.len().
                    unsafe { _mm256_storeu_pd(p.add(i), entry(_mm256_loadu_pd(p.add(i)))) };
                    i += 4;
                }
            }
        };
    }

    entries!(
        Exp => _ZGVdN4v_exp,
        Ln => _ZGVdN4v_log,
        Ln1p => _ZGVdN4v_log1p,
        Sin => _ZGVdN4v_sin,
        Cos => _ZGVdN4v_cos,
        Sinh => _ZGVdN4v_sinh,
        Cosh => _ZGVdN4v_cosh,
        Asinh => _ZGVdN4v_asinh,
        Tanh => _ZGVdN4v_tanh,
        Atan => _ZGVdN4v_atan,
        Erf => _ZGVdN4v_erf,
        Erfc => _ZGVdN4v_erfc,
    );

    /// Whether the processor runs the AVX2 entry points.
    #[inline]
    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
}

/// `e^x` (the reference's, see [`Func`]).
pub fn exp(x: f64) -> f64 {
    Func::Exp.eval(x)
}

/// Logistic sigmoid without overflow in either direction: from `e = e^-|x|`, which is `e^-x`
/// for x >= 0 and `e^x` below, `1 / (1 + e)` or `e / (1 + e)`.
pub fn sigmoid(x: f64) -> f64 {
    sigmoid_from(x, exp(-x.abs()))
}

/// [`sigmoid`] given `e = e^-|x|`.
#[inline(always)]
pub fn sigmoid_from(x: f64, e: f64) -> f64 {
    if x >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) }
}

/// `ln(1 + e^x + eps)`, exactly rewritten as `max(x,0) + ln1p(e^-|x| + eps e^-max(x,0))` so it
/// neither overflows for large x nor loses the eps guard for very negative x.
/// `e^-max(x,0)` is `e^-|x|` for x > 0 and 1 otherwise, so one exp serves both terms.
pub fn softplus_eps(x: f64, eps: f64) -> f64 {
    let e = exp(-x.abs());
    softplus_from(x, Func::Ln1p.eval(softplus_arg(x, e, eps)))
}

/// The argument of [`softplus_eps`]'s `ln1p`, given `e = e^-|x|`.
#[inline(always)]
pub fn softplus_arg(x: f64, e: f64, eps: f64) -> f64 {
    e + eps * if x > 0.0 { e } else { 1.0 }
}

/// [`softplus_eps`] given the `ln1p` of its argument.
#[inline(always)]
pub fn softplus_from(x: f64, l: f64) -> f64 {
    if x.is_nan() { x } else { x.max(0.0) + l }
}

/// `sigmoid(x) sigmoid(-x)`: both factors come from the one exp `e^-|x|` (as [`sigmoid`]
/// computes each of them), so it is computed once.
pub fn dsigmoid(x: f64) -> f64 {
    dsigmoid_from(exp(-x.abs()))
}

/// [`dsigmoid`] given `e = e^-|x|`.
#[inline(always)]
pub fn dsigmoid_from(e: f64) -> f64 {
    (1.0 / (1.0 + e)) * (e / (1.0 + e))
}

/// `dsigmoid(x) (1 - 2 sigmoid(x))` as `-dsigmoid(x) tanh(x / 2)`, which does not cancel near 0.
pub fn dsigmoid_d(x: f64) -> f64 {
    -(dsigmoid(x) * Func::Tanh.eval(0.5 * x))
}

/// `1 - tanh(x)^2` as `sech(x)^2`.
pub fn dtanh(x: f64) -> f64 {
    dtanh_from(Func::Cosh.eval(x))
}

/// [`dtanh`] given `cosh(x)`.
#[inline(always)]
pub fn dtanh_from(c: f64) -> f64 {
    1.0 / (c * c)
}

/// Room for the series' terms: at |x| = `BESSEL_SERIES_MAX` it stops near k = 40 (a shorter
/// table would cut the sum short there, which `series_and_asymptotic_both_match_scipy_around_
/// the_switch` would see).
const SERIES_TERMS: usize = 64;

/// `1 / (k (k + nu))` for nu in {0, 1} and k in 1..`SERIES_TERMS` (0 at k = 0): each term's
/// ratio to the previous one is q times this (a multiply, not a division per term).
const SERIES_RATIOS: [[f64; SERIES_TERMS]; 2] = {
    let mut t = [[0.0; SERIES_TERMS]; 2];
    let mut k = 1;
    while k < SERIES_TERMS {
        t[0][k] = 1.0 / (k * k) as f64;
        t[1][k] = 1.0 / (k * (k + 1)) as f64;
        k += 1;
    }
    t
};

/// `sum_k (x^2/4)^k / (k! (k+nu)!)` for nu in {0, 1} and |x| <= `BESSEL_SERIES_MAX`: the
/// Bessel series without its `(x/2)^nu`. All terms are positive, so the sum is accurate to a
/// few ulps; it stops at the first term below 1e-17 of the sum.
fn bessel_series(x: f64, nu: u32) -> f64 {
    let q = x * x / 4.0;
    let (mut term, mut sum) = (1.0, 1.0);
    for &r in &SERIES_RATIOS[nu as usize][1..] {
        term *= q * r;
        sum += term;
        if term <= sum * 1e-17 {
            break;
        }
    }
    sum
}

/// The terms `c_k / x^k` of the Hankel expansion of `sqrt(2 pi x) e^-x I_nu(x)`, up to where
/// they stop decreasing or fall below f64 resolution.
fn hankel_terms(x: f64, nu: u32, n: usize) -> Vec<f64> {
    let mu = 4.0 * (nu * nu) as f64;
    let mut terms = vec![1.0];
    for k in 1..n {
        let kf = k as f64;
        let prev = terms[k - 1];
        terms.push(-prev * (mu - (2.0 * kf - 1.0).powi(2)) / (kf * 8.0 * x));
    }
    terms
}

/// How many Hankel terms to use at x > BESSEL_SERIES_MAX (the terms decrease up to k ~ 2x).
const HANKEL_TERMS: usize = 40;

/// `d/dx e^-|x| I0(x)`: `sign(x) (i1e(|x|) - i0e(|x|))`, 0 at x = 0. For large |x| the
/// difference is taken term by term in the asymptotic series, so nothing cancels.
pub fn bessel_i0e_d(x: f64) -> f64 {
    let a = x.abs();
    if a <= BESSEL_SERIES_MAX {
        return scaled_derivative_from_series(0, x, a, bessel_series(a, 0), bessel_series(a, 1), Func::Exp.eval(-a));
    }
    let (t0, t1) = (hankel_terms(a, 0, HANKEL_TERMS), hankel_terms(a, 1, HANKEL_TERMS));
    let v = t0.iter().zip(&t1).map(|(u, v)| v - u).sum::<f64>() / (2.0 * std::f64::consts::PI * a).sqrt();
    sign(x) * v
}

/// `d/dx e^-|x| I1(x)` = `i0e(x) - i1e(x)/x - sign(x) i1e(x)` (even in x, 1/2 at 0).
pub fn bessel_i1e_d(x: f64) -> f64 {
    let a = x.abs();
    if a <= BESSEL_SERIES_MAX {
        return scaled_derivative_from_series(1, x, a, bessel_series(a, 0), bessel_series(a, 1), Func::Exp.eval(-a));
    }
    let (t0, t1) = (hankel_terms(a, 0, HANKEL_TERMS), hankel_terms(a, 1, HANKEL_TERMS));
    let diff: f64 = t0.iter().zip(&t1).map(|(u, v)| u - v).sum();
    let over: f64 = t1.iter().sum::<f64>() / a;
    (diff - over) / (2.0 * std::f64::consts::PI * a).sqrt()
}

/// [`bessel_i0e_d`] (`order` 0) or [`bessel_i1e_d`] (1) at x from `a = |x| <= BESSEL_SERIES_MAX`,
/// both series' sums at a, and `e^-a`.
#[inline(always)]
fn scaled_derivative_from_series(order: u32, x: f64, a: f64, s0: f64, s1: f64, e: f64) -> f64 {
    let i0e = bessel_from_series(Bessel::I0e, a, a, s0, || e);
    let i1e = bessel_from_series(Bessel::I1e, a, a, s1, || e);
    if order == 0 { sign(x) * (i1e - i0e) } else { i0e - bessel_from_series(Bessel::I1ex, a, a, s1, || e) - i1e }
}

/// `e^-x I_nu(x)` for x > BESSEL_SERIES_MAX by the asymptotic (Hankel) expansion.
fn bessel_asymptotic_scaled(x: f64, nu: u32) -> f64 {
    let mu = 4.0 * (nu * nu) as f64;
    let mut term: f64 = 1.0;
    let mut sum: f64 = 1.0;
    for k in 1..200 {
        let kf = k as f64;
        let next = -term * (mu - (2.0 * kf - 1.0).powi(2)) / (kf * 8.0 * x);
        if next.abs() >= term.abs() || next.abs() < sum.abs() * 1e-17 {
            if next.abs() < term.abs() {
                sum += next;
            }
            break;
        }
        term = next;
        sum += term;
    }
    sum / (2.0 * std::f64::consts::PI * x).sqrt()
}

/// Which Bessel function: the kernels' enum, here for the reference's own f64 definitions.
pub use crate::backend::mathlib::Bessel;

/// The order of `f`'s power series.
const fn series_order(f: Bessel) -> u32 {
    match f {
        Bessel::I0 | Bessel::I0e => 0,
        _ => 1,
    }
}

/// An odd function's value at x from its value `v` at |x|.
#[inline(always)]
fn odd(x: f64, v: f64) -> f64 {
    if x < 0.0 { -v } else { v }
}

/// `f` at x from `a = |x| <= BESSEL_SERIES_MAX`, the series' sum `s` at a, and `e^-a` (called
/// only by the scaled functions): what tells the six functions apart on the series' branch,
/// shared by [`bessel`] and [`bessel_slice`].
#[inline(always)]
fn bessel_from_series(f: Bessel, x: f64, a: f64, s: f64, e: impl FnOnce() -> f64) -> f64 {
    match f {
        Bessel::I0 => s,
        Bessel::I0e => s * e(),
        Bessel::I1 => odd(x, 0.5 * a * s),
        Bessel::I1e => odd(x, 0.5 * a * s * e()),
        Bessel::I1x => 0.5 * s,
        Bessel::I1ex => 0.5 * s * e(),
    }
}

/// The Bessel function `f` at x: the power series up to `BESSEL_SERIES_MAX`, the asymptotic
/// expansion beyond.
pub fn bessel(f: Bessel, x: f64) -> f64 {
    let a = x.abs();
    if a <= BESSEL_SERIES_MAX {
        return bessel_from_series(f, x, a, bessel_series(a, series_order(f)), || Func::Exp.eval(-a));
    }
    match f {
        Bessel::I1 | Bessel::I1e if x.is_nan() => x,
        Bessel::I0 => bessel_asymptotic_scaled(a, 0) * a.exp(),
        Bessel::I0e => bessel_asymptotic_scaled(a, 0),
        Bessel::I1 => odd(x, bessel_asymptotic_scaled(a, 1) * a.exp()),
        Bessel::I1e => odd(x, bessel_asymptotic_scaled(a, 1)),
        Bessel::I1x => bessel_asymptotic_scaled(a, 1) * a.exp() / a,
        Bessel::I1ex => bessel_asymptotic_scaled(a, 1) / a,
    }
}

/// `f` at each of `xs`, the same bits as [`bessel`] one by one (see `series_blocks`).
pub fn bessel_slice(f: Bessel, xs: &[f64], out: &mut [f64]) {
    // One loop per function (its finishing step specialised), not a match per point.
    macro_rules! each {
        ($($f:ident)*) => {
            match f {
                $(Bessel::$f => {
                    const NU: usize = series_order(Bessel::$f) as usize;
                    const SCALED: bool = matches!(Bessel::$f, Bessel::I0e | Bessel::I1e | Bessel::I1ex);
                    series_blocks(
                        xs,
                        out,
                        [NU == 0, NU == 1],
                        SCALED,
                        |x, a, s, e| bessel_from_series(Bessel::$f, x, a, s[NU], || e),
                        |x| bessel(Bessel::$f, x),
                    )
                })*
            }
        };
    }
    each!(I0 I0e I1 I1e I1x I1ex);
}

/// [`bessel_i0e_d`] (`order` 0) or [`bessel_i1e_d`] (1) at each of `xs`, the same bits as one
/// by one (see `series_blocks`).
pub fn bessel_scaled_derivative_slice(order: u32, xs: &[f64], out: &mut [f64]) {
    let scalar = if order == 0 { bessel_i0e_d } else { bessel_i1e_d };
    series_blocks(
        xs,
        out,
        [true, true],
        true,
        |x, a, s, e| scaled_derivative_from_series(order, x, a, s[0], s[1], e),
        scalar,
    );
}

/// `out[i] = finish(x, |x|, [series of order 0, of order 1], e^-|x|)` for each x of `xs` with
/// |x| <= `BESSEL_SERIES_MAX`, and `beyond(x)` for the others, a block at a time: the series
/// that `orders` asks for summed eight lanes side by side ([`bessel_series_block`]), and (if
/// `scaled`) `e^-|x|` four at a time; the others are 0. Every point is finished first (a loop
/// without branches, which vectorises), then the few beyond the series' range are redone.
#[inline(always)]
fn series_blocks(
    xs: &[f64],
    out: &mut [f64],
    orders: [bool; 2],
    scaled: bool,
    finish: impl Fn(f64, f64, [f64; 2], f64) -> f64,
    beyond: impl Fn(f64) -> f64,
) {
    assert_eq!(xs.len(), out.len());
    const BLOCK: usize = 64;
    let (mut s, mut e) = ([[0.0; BLOCK]; 2], [0.0; BLOCK]);
    for (xb, ob) in xs.chunks(BLOCK).zip(out.chunks_mut(BLOCK)) {
        let n = xb.len();
        for nu in 0..2 {
            if orders[nu] {
                bessel_series_block(xb, nu as u32, &mut s[nu][..n]);
            }
        }
        if scaled {
            for (e, x) in e.iter_mut().zip(xb) {
                *e = -x.abs();
            }
            Func::Exp.eval_in_place(&mut e[..n]);
        }
        for (i, (o, &x)) in ob.iter_mut().zip(xb).enumerate() {
            *o = finish(x, x.abs(), [s[0][i], s[1][i]], e[i]);
        }
        for (o, &x) in ob.iter_mut().zip(xb) {
            if x.abs() > BESSEL_SERIES_MAX || x.is_nan() {
                *o = beyond(x);
            }
        }
    }
}

/// [`bessel_series`] at `|x|` for each of `xs` within the series' range (anything at the
/// others), into `out`.
fn bessel_series_block(xs: &[f64], nu: u32, out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        let whole = xs.len() / 8 * 8;
        for (x8, o8) in xs[..whole].chunks_exact(8).zip(out[..whole].chunks_exact_mut(8)) {
            // SAFETY: the processor has AVX (checked above); eight points each side.
            unsafe { bessel_series8(x8.as_ptr(), nu, o8.as_mut_ptr()) };
        }
        if whole < xs.len() {
            let (mut x8, mut o8) = ([0.0; 8], [0.0; 8]);
            x8[..xs.len() - whole].copy_from_slice(&xs[whole..]);
            // SAFETY: as above.
            unsafe { bessel_series8(x8.as_ptr(), nu, o8.as_mut_ptr()) };
            out[whole..].copy_from_slice(&o8[..xs.len() - whole]);
        }
        return;
    }
    for (o, &x) in out.iter_mut().zip(xs) {
        let a = x.abs();
        *o = if a <= BESSEL_SERIES_MAX { bessel_series(a, nu) } else { 0.0 };
    }
}

/// [`bessel_series`] at |x| for eight points, in the lanes of two vectors summed side by side
/// (the loop's one long dependency, an add per term, then overlaps). Each lane takes the scalar
/// loop's operations in its order (no FMA), and its result is its running sum up to the term
/// where it alone would stop. Points beyond the series' range (NaN and infinities too) sum
/// the series at its end instead, which bounds the loop; their results are not used.
///
/// # Safety
/// The processor must have AVX, and `xs` and `out` must point to eight f64s.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn bessel_series8(xs: *const f64, nu: u32, out: *mut f64) {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_pd(-0.0);
    let top = _mm256_set1_pd(BESSEL_SERIES_MAX);
    // |x|, at most the top (vminpd gives its second operand when the first is NaN). No
    // closures here: they would not be compiled for AVX.
    let (x0, x1) = unsafe { (_mm256_loadu_pd(xs), _mm256_loadu_pd(xs.add(4))) };
    let (x0, x1) = (_mm256_min_pd(_mm256_andnot_pd(sign, x0), top), _mm256_min_pd(_mm256_andnot_pd(sign, x1), top));
    let four = _mm256_set1_pd(4.0);
    let (q0, q1) = (_mm256_div_pd(_mm256_mul_pd(x0, x0), four), _mm256_div_pd(_mm256_mul_pd(x1, x1), four));
    let one = _mm256_set1_pd(1.0);
    let (mut term0, mut sum0, mut result0, mut term1, mut sum1, mut result1) = (one, one, one, one, one, one);
    let all = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));
    let (mut running0, mut running1) = (all, all);
    let tiny = _mm256_set1_pd(1e-17);
    for &r in &SERIES_RATIOS[nu as usize][1..] {
        let r = _mm256_set1_pd(r);
        term0 = _mm256_mul_pd(term0, _mm256_mul_pd(q0, r));
        term1 = _mm256_mul_pd(term1, _mm256_mul_pd(q1, r));
        sum0 = _mm256_add_pd(sum0, term0);
        sum1 = _mm256_add_pd(sum1, term1);
        result0 = _mm256_blendv_pd(result0, sum0, running0);
        result1 = _mm256_blendv_pd(result1, sum1, running1);
        let stop0 = _mm256_cmp_pd::<_CMP_LE_OQ>(term0, _mm256_mul_pd(sum0, tiny));
        let stop1 = _mm256_cmp_pd::<_CMP_LE_OQ>(term1, _mm256_mul_pd(sum1, tiny));
        running0 = _mm256_andnot_pd(stop0, running0);
        running1 = _mm256_andnot_pd(stop1, running1);
        if _mm256_movemask_pd(_mm256_or_pd(running0, running1)) == 0 {
            break;
        }
    }
    unsafe {
        _mm256_storeu_pd(out, result0);
        _mm256_storeu_pd(out.add(4), result1);
    }
}

/// Modified Bessel function of the first kind, order 0.
pub fn bessel_i0(x: f64) -> f64 {
    bessel(Bessel::I0, x)
}

/// `e^-|x| I0(x)`.
pub fn bessel_i0e(x: f64) -> f64 {
    bessel(Bessel::I0e, x)
}

/// `I1(x) / x`, 1/2 at 0 (even in x).
pub fn bessel_i1x(x: f64) -> f64 {
    bessel(Bessel::I1x, x)
}

/// `e^-|x| I1(x) / x`, 1/2 at 0 (even in x).
pub fn bessel_i1ex(x: f64) -> f64 {
    bessel(Bessel::I1ex, x)
}

/// Modified Bessel function of the first kind, order 1 (odd in x).
pub fn bessel_i1(x: f64) -> f64 {
    bessel(Bessel::I1, x)
}

/// `e^-|x| I1(x)` (odd in x).
pub fn bessel_i1e(x: f64) -> f64 {
    bessel(Bessel::I1e, x)
}

/// Points that reach every branch of the elementary functions, for tests: a wide log-spaced
/// sweep of both signs, ordinary values, and the special ones.
#[cfg(test)]
pub(crate) fn test_points(rng: &mut crate::rng::Rng) -> Vec<f64> {
    let mut xs: Vec<f64> = (0..3000)
        .map(|i| {
            let v = match i % 3 {
                0 => 10f64.powf(rng.f64() * 40.0 - 20.0),
                1 => 10f64.powf(rng.f64() * 600.0 - 300.0),
                _ => 8.0 * rng.f64(),
            };
            if rng.chance(0.5) { -v } else { v }
        })
        .collect();
    xs.extend([0.0, -0.0, 1.0, -1.0, -0.5, 1e-7, -1e-7, 710.0, -745.5, 20.0, 27.0, 1e-310, f64::MAX]);
    xs.extend([f64::MIN_POSITIVE, f64::NAN, f64::INFINITY, f64::NEG_INFINITY]);
    xs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_and_min_propagate_nan_and_order_signed_zeros() {
        let vals = [f64::NAN, f64::NEG_INFINITY, -2.5, -0.0, 0.0, 1e-300, 3.0, f64::INFINITY];
        for a in vals {
            for b in vals {
                let (mx, mn) = (max(a, b), min(a, b));
                if a.is_nan() || b.is_nan() {
                    assert!(mx.is_nan() && mn.is_nan(), "{a} {b}");
                    continue;
                }
                let (hi, lo) = if a == 0.0 && b == 0.0 { (a + b, -(-a + -b)) } else { (a.max(b), a.min(b)) };
                assert_eq!((mx.to_bits(), mn.to_bits()), (hi.to_bits(), lo.to_bits()), "{a} {b}");
                // Commutative, signs of zeros included.
                assert_eq!((mx.to_bits(), mn.to_bits()), (max(b, a).to_bits(), min(b, a).to_bits()));
            }
        }
        assert_eq!(max(-0.0, 0.0).to_bits(), 0.0f64.to_bits());
        assert_eq!(min(0.0, -0.0).to_bits(), (-0.0f64).to_bits());
    }

    #[test]
    fn one_exp_softplus_and_dsigmoid_give_the_two_exp_formulas_bits() {
        let two_exp_softplus = |x: f64, eps: f64| {
            let mx = x.max(0.0);
            mx + Func::Ln1p.eval(exp(-x.abs()) + eps * exp(-mx))
        };
        let mut xs = vec![0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::MIN_POSITIVE, 800.0, -800.0];
        xs.extend((0..20000).map(|i| (i as f64 - 10000.0) * 0.0731));
        xs.extend((0..2000).map(|i| 1e-300 * 1.5f64.powi(i % 1000) * if i < 1000 { 1.0 } else { -1.0 }));
        for x in xs {
            for eps in [0.0, 1e-7] {
                assert_eq!(softplus_eps(x, eps).to_bits(), two_exp_softplus(x, eps).to_bits(), "softplus {x} {eps}");
            }
            assert_eq!(dsigmoid(x).to_bits(), (sigmoid(x) * sigmoid(-x)).to_bits(), "dsigmoid {x}");
        }
        assert!(softplus_eps(f64::NAN, 1e-7).is_nan() && dsigmoid(f64::NAN).is_nan());
    }

    /// Each lane of a slice gets what the function gives the value alone, whatever its
    /// neighbours (a special value in one lane sends libmvec down its slow path), at every
    /// tail length.
    #[test]
    fn funcs_give_each_lane_the_scalar_bits() {
        let mut rng = crate::rng::Rng::new(11);
        let mut xs = test_points(&mut rng);
        // Shuffled, so special values share groups of four with ordinary ones.
        for i in (1..xs.len()).rev() {
            xs.swap(i, rng.below(i + 1));
        }
        for f in Func::ALL {
            for len in [xs.len(), 1, 2, 3, 5, 7] {
                let mut col = xs[..len].to_vec();
                f.eval_in_place(&mut col);
                for (&x, &v) in xs.iter().zip(&col) {
                    assert_eq!(v.to_bits(), f.eval(x).to_bits(), "{f:?}({x}) in a slice of {len}");
                }
            }
        }
    }

    /// The functions agree with Rust's std (and libm's erf, erfc) within 4 ulp wherever the
    /// result is a normal number, and on NaN, infinities and signed zeros.
    #[test]
    fn funcs_are_within_4_ulp_of_std() {
        let mut rng = crate::rng::Rng::new(12);
        let xs = test_points(&mut rng);
        let ulps = |a: f64, b: f64| {
            let key = |v: f64| {
                let i = v.to_bits() as i64;
                if i < 0 { i64::MIN - i } else { i }
            };
            (key(a) as i128 - key(b) as i128).unsigned_abs()
        };
        for f in Func::ALL {
            let mut worst = (0, 0.0);
            for &x in &xs {
                let (got, mut want) = (f.eval(x), f.scalar(x));
                if f == Func::Asinh && x.is_finite() && want.is_infinite() {
                    // std's asinh overflows near f64::MAX, where it is ln(2|x|) ~ 710.
                    want = (x.abs().ln() + std::f64::consts::LN_2).copysign(x);
                }
                if !want.is_normal() {
                    // Infinity, NaN, zero and subnormals: the same class, and the same sign
                    // unless the result is NaN.
                    let class = |v: f64| (v.is_nan(), v.is_infinite(), v == 0.0, v.is_nan() || v.is_sign_negative());
                    if want == 0.0 || want.is_subnormal() {
                        assert!(got.abs() <= 4.0 * f64::MIN_POSITIVE, "{f:?}({x}) = {got}, std {want}");
                    } else {
                        assert_eq!(class(got), class(want), "{f:?}({x}) = {got}, std {want}");
                    }
                    continue;
                }
                let d = ulps(got, want);
                if d > worst.0 {
                    worst = (d, x);
                }
            }
            assert!(worst.0 <= 4, "{f:?}: {} ulp at {}", worst.0, worst.1);
        }
    }

    /// The eight-lane series gives each point the bits of the scalar function, whichever lane
    /// stops first, across the switch to the asymptotic branch, on NaN, infinities and zeros,
    /// and in a short tail.
    #[test]
    fn bessel_slices_give_the_scalar_bits() {
        let mut rng = crate::rng::Rng::new(7);
        let mut xs: Vec<f64> = (0..4000)
            .map(|i| match i % 4 {
                0 => 60.0 * rng.f64() - 30.0,
                1 => (rng.f64() - 0.5) * 1e-3,
                2 => 24.0 + 2.0 * rng.f64(),
                _ => 2.0 * rng.f64(),
            })
            .collect();
        xs.extend([0.0, -0.0, 25.0, -25.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e-300, 700.0, 3.0, 3.0]);
        use Bessel::*;
        for len in [xs.len(), 13] {
            let xs = &xs[xs.len() - len..];
            let mut out = vec![0.0; len];
            for f in [I0, I0e, I1, I1e, I1x, I1ex] {
                bessel_slice(f, xs, &mut out);
                for (&x, &v) in xs.iter().zip(&out) {
                    assert_eq!(v.to_bits(), bessel(f, x).to_bits(), "{f:?}({x})");
                }
            }
            for (order, f) in [(0, bessel_i0e_d as fn(f64) -> f64), (1, bessel_i1e_d)] {
                bessel_scaled_derivative_slice(order, xs, &mut out);
                for (&x, &v) in xs.iter().zip(&out) {
                    assert_eq!(v.to_bits(), f(x).to_bits(), "derivative of order {order} at {x}");
                }
            }
        }
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs()
    }

    #[test]
    fn bessel_values_match_published_tables() {
        // Values from scipy.special 1.17 (i0, i1, i0e, i1e).
        assert!(close(bessel_i0(1.0), 1.266_065_877_752_008_4, 1e-15));
        assert!(close(bessel_i1(1.0), 0.565_159_103_992_485, 1e-15));
        assert!(close(bessel_i0(10.0), 2_815.716_628_466_254, 1e-14));
        assert!(close(bessel_i1(-10.0), -2_670.988_303_701_255, 1e-14));
        assert!(close(bessel_i0e(30.0), 0.073_145_946_482_237_3, 1e-13));
        assert!(close(bessel_i1e(30.0), 0.071_916_330_598_647_55, 1e-13));
        assert!(close(bessel_i0e(1000.0), 0.012_617_240_455_891_257, 1e-13));
        assert_eq!(bessel_i1x(0.0), 0.5);
    }

    #[test]
    fn bessel_derivatives_match_central_differences() {
        for &x in &[0.3f64, 2.0, 7.9, 8.1, 24.0, 26.0, 100.0, 1e4, -3.0, -40.0] {
            let h = 1e-5 * x.abs().max(1.0);
            let fd0 = (bessel_i0e(x + h) - bessel_i0e(x - h)) / (2.0 * h);
            let fd1 = (bessel_i1e(x + h) - bessel_i1e(x - h)) / (2.0 * h);
            assert!(close(bessel_i0e_d(x), fd0, 1e-6), "i0e'({x}) = {} vs {fd0}", bessel_i0e_d(x));
            assert!(close(bessel_i1e_d(x), fd1, 1e-6), "i1e'({x}) = {} vs {fd1}", bessel_i1e_d(x));
        }
        assert_eq!(bessel_i0e_d(0.0), 0.0);
        assert_eq!(bessel_i1e_d(0.0), 0.5);
    }

    #[test]
    fn series_and_asymptotic_both_match_scipy_around_the_switch() {
        // scipy.special.i0e / i1e at 24.9, 25.1 and 26 (either side of BESSEL_SERIES_MAX).
        let table = [
            (24.9, 0.080_359_332_611_532_2, 0.078_728_794_882_103_13),
            (25.1, 0.080_035_197_254_296_24, 0.078_424_315_178_368_43),
            (26.0, 0.078_623_652_040_013_73, 0.077_096_524_569_666_24),
        ];
        for (x, i0e, i1e) in table {
            assert!(close(bessel_i0e(x), i0e, 1e-14), "i0e({x})");
            assert!(close(bessel_i1e(x), i1e, 1e-14), "i1e({x})");
            assert!(close(bessel_i1ex(x) * x, i1e, 1e-14), "i1ex({x})");
        }
    }

    #[test]
    fn softplus_is_stable_and_guarded() {
        let eps = 1e-7;
        assert!(close(softplus_eps(0.0, eps), (2.0f64 + eps).ln(), 1e-15));
        assert!(close(softplus_eps(1000.0, eps), 1000.0, 1e-15));
        assert!(close(softplus_eps(-1000.0, eps), eps.ln_1p(), 1e-12));
        assert!(close(softplus_eps(3.0, eps), (1.0 + 3.0f64.exp() + eps).ln(), 1e-15));
    }
}
