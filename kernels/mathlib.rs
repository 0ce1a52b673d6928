//! The f32 math routines every backend uses, written once.
//!
//! Each routine is generic over [`Vm`], a tiny "vector machine" of f32 lanes with
//! branch-free selects. The Cranelift JIT implements `Vm` by emitting f32x4 instructions, the
//! C-like emitters by printing statements, and [`Scalar`] by computing in Rust `f32`, so one
//! definition (and one set of coefficients, `coeffs.rs`) serves every target and the accuracy
//! table (docs/math-accuracy.md) measures exactly what the kernels compute.
//!
//! Routines are branch-free where the lanes disagree: both sides of a range split are computed
//! and one is selected, which is what SIMD lanes and GPU threads want. A machine that can see
//! its lanes at run time ([`Vm::uniform`]) computes only the side they all take (`split!`),
//! which gives every lane the value the select would.

use super::coeffs;

/// The operations the routines are written in. `V` is a value of f32 lanes, `M` a lane mask.
pub trait Vm {
    type V: Copy;
    type M: Copy;
    fn c(&mut self, v: f32) -> Self::V;
    fn add(&mut self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(&mut self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(&mut self, a: Self::V, b: Self::V) -> Self::V;
    fn div(&mut self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c` with one rounding (every target here has fused multiply-add).
    fn fma(&mut self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    fn neg(&mut self, a: Self::V) -> Self::V;
    fn abs(&mut self, a: Self::V) -> Self::V;
    fn sqrt(&mut self, a: Self::V) -> Self::V;
    /// NaN-propagating minimum and maximum (IEEE 754-2019 `minimum`/`maximum`: -0 < +0).
    fn min(&mut self, a: Self::V, b: Self::V) -> Self::V;
    fn max(&mut self, a: Self::V, b: Self::V) -> Self::V;
    /// Round to nearest, ties to even.
    fn round(&mut self, a: Self::V) -> Self::V;
    fn floor(&mut self, a: Self::V) -> Self::V;
    fn lt(&mut self, a: Self::V, b: Self::V) -> Self::M;
    fn eq(&mut self, a: Self::V, b: Self::V) -> Self::M;
    fn and(&mut self, a: Self::M, b: Self::M) -> Self::M;
    fn or(&mut self, a: Self::M, b: Self::M) -> Self::M;
    /// `m ? a : b` per lane.
    fn select(&mut self, m: Self::M, a: Self::V, b: Self::V) -> Self::V;
    /// `|mag|` with the sign bit of `sign`.
    fn copysign(&mut self, mag: Self::V, sign: Self::V) -> Self::V;
    /// `2^k` for integral `k` in [-126, 127].
    fn pow2i(&mut self, k: Self::V) -> Self::V;
    /// `x = m * 2^e` with `m` in [0.5, 1), for finite `x > 0` (subnormals included).
    fn frexp(&mut self, x: Self::V) -> (Self::V, Self::V);
    /// [`Vm::frexp`] where `x` is known to be normal: a machine may skip the subnormal case.
    #[inline(always)]
    fn frexp_normal(&mut self, x: Self::V) -> (Self::V, Self::V) {
        self.frexp(x)
    }
    /// `x = m * 2^e` with `m` in [sqrt(1/2), sqrt(2)) for normal `x > 0`: the split of a
    /// log's argument (`frexp_normal` then [`to_log_octave`]). A machine with integer lanes
    /// may compute the same values in fewer steps.
    #[inline(always)]
    fn log_split(&mut self, x: Self::V) -> (Self::V, Self::V)
    where
        Self: Sized,
    {
        let (mant, e) = self.frexp_normal(x);
        to_log_octave(self, mant, e)
    }
    /// `Some(b)` when every lane of `m` is `b`; `None` when they differ, or when the machine
    /// emits code and cannot know (the default).
    #[inline(always)]
    fn uniform(&mut self, _m: Self::M) -> Option<bool> {
        None
    }
}

/// `N` vectors of a machine as one: each operation is applied to every vector before the
/// next operation, so the instruction stream interleaves `N` independent dependency chains.
/// A routine's chain (a log is some 35 operations deep) on one vector at a time fills the
/// core's schedulers with instructions waiting on each other; interleaved, the schedulers
/// hold instructions that can issue. Each vector gets the inner machine's bits, and a range
/// split takes one side only when every lane of every vector does. (Plain loops, no
/// closures: see `split!`.)
pub struct Multi<'a, I, const N: usize>(pub &'a mut I);

/// `Multi` methods that apply the inner machine's method to each vector.
macro_rules! on_each {
    ($($f:ident($($a:ident),*) -> $out:ident;)*) => {
        $(#[inline(always)]
        fn $f(&mut self, $($a: Self::$out),*) -> Self::$out {
            let mut r = [self.0.$f($($a[0]),*); N];
            for i in 1..N {
                r[i] = self.0.$f($($a[i]),*);
            }
            r
        })*
    };
}

impl<I: Vm, const N: usize> Vm for Multi<'_, I, N> {
    type V = [I::V; N];
    type M = [I::M; N];
    #[inline(always)]
    fn c(&mut self, v: f32) -> Self::V {
        [self.0.c(v); N]
    }
    on_each! {
        add(a, b) -> V; sub(a, b) -> V; mul(a, b) -> V; div(a, b) -> V; fma(a, b, c) -> V;
        neg(a) -> V; abs(a) -> V; sqrt(a) -> V; min(a, b) -> V; max(a, b) -> V; round(a) -> V;
        floor(a) -> V; and(a, b) -> M; or(a, b) -> M; copysign(mag, sign) -> V; pow2i(k) -> V;
    }
    #[inline(always)]
    fn lt(&mut self, a: Self::V, b: Self::V) -> Self::M {
        let mut r = [self.0.lt(a[0], b[0]); N];
        for i in 1..N {
            r[i] = self.0.lt(a[i], b[i]);
        }
        r
    }
    #[inline(always)]
    fn eq(&mut self, a: Self::V, b: Self::V) -> Self::M {
        let mut r = [self.0.eq(a[0], b[0]); N];
        for i in 1..N {
            r[i] = self.0.eq(a[i], b[i]);
        }
        r
    }
    #[inline(always)]
    fn select(&mut self, m: Self::M, a: Self::V, b: Self::V) -> Self::V {
        let mut r = a;
        for i in 0..N {
            r[i] = self.0.select(m[i], a[i], b[i]);
        }
        r
    }
    #[inline(always)]
    fn frexp(&mut self, x: Self::V) -> (Self::V, Self::V) {
        let (mut m, mut e) = (x, x);
        for i in 0..N {
            (m[i], e[i]) = self.0.frexp(x[i]);
        }
        (m, e)
    }
    #[inline(always)]
    fn frexp_normal(&mut self, x: Self::V) -> (Self::V, Self::V) {
        let (mut m, mut e) = (x, x);
        for i in 0..N {
            (m[i], e[i]) = self.0.frexp_normal(x[i]);
        }
        (m, e)
    }
    #[inline(always)]
    fn log_split(&mut self, x: Self::V) -> (Self::V, Self::V) {
        let (mut m, mut e) = (x, x);
        for i in 0..N {
            (m[i], e[i]) = self.0.log_split(x[i]);
        }
        (m, e)
    }
    #[inline(always)]
    fn uniform(&mut self, m: Self::M) -> Option<bool> {
        let first = self.0.uniform(m[0])?;
        for &m in &m[1..] {
            if self.0.uniform(m) != Some(first) {
                return None;
            }
        }
        Some(first)
    }
}

/// `mask ? yes : no` per lane, `yes` and `no` being expressions on the machine `$m`: only the
/// side every lane takes when [`Vm::uniform`] knows it, else both and a select. A macro, not a
/// function of two closures: a closure would not get the target features of the SIMD passes
/// these routines inline into.
macro_rules! split {
    ($m:ident, $mask:expr, $yes:expr, $no:expr) => {{
        let mask = $mask;
        match $m.uniform(mask) {
            Some(true) => $yes,
            Some(false) => $no,
            None => {
                let yes = $yes;
                let no = $no;
                $m.select(mask, yes, no)
            }
        }
    }};
}

// Cody-Waite splits: the high parts have few significant bits so `n * HI` is exact.
pub const LN2_HI: f32 = 355.0 / 512.0;
pub const LN2_LO: f32 = -2.121_944_4e-4;
pub const LOG2E: f32 = std::f32::consts::LOG2_E;
const PIO2_1: f32 = 1.570_312_5;
const PIO2_2: f32 = 4.837_513e-4;
const PIO2_3: f32 = 7.549_79e-8;
const FRAC_2_SQRT_PI: f32 = std::f32::consts::FRAC_2_SQRT_PI;

/// `sum_i c[i] x^i` by Horner's rule (c in ascending order).
#[inline(always)]
pub fn poly<M: Vm>(m: &mut M, x: M::V, c: &[f32]) -> M::V {
    let mut acc = m.c(c[c.len() - 1]);
    for &k in c[..c.len() - 1].iter().rev() {
        let k = m.c(k);
        acc = m.fma(acc, x, k);
    }
    acc
}

/// `sum_k c[k] T_k(t)` by Clenshaw's recurrence.
#[inline(always)]
pub fn chebyshev<M: Vm>(m: &mut M, t: M::V, c: &[f64]) -> M::V {
    let two_t = m.add(t, t);
    let (mut b1, mut b2) = (m.c(0.0), m.c(0.0));
    for &k in c[1..].iter().rev() {
        // b_k = 2t b_{k+1} + (c_k - b_{k+2})
        let k = m.c(k as f32);
        let d = m.sub(k, b2);
        b2 = b1;
        b1 = m.fma(two_t, b1, d);
    }
    // f = t b_1 + (c_0 - b_2)
    let c0 = m.c(c[0] as f32);
    let d = m.sub(c0, b2);
    m.fma(t, b1, d)
}

/// [`coeffs::EXP_POLY`] in f32, converted once at compile time (the JIT's AVX2 row helper in
/// `backend/jit_rt.rs` restates `exp` with these constants).
pub const EXP_POLY_F32: [f32; coeffs::EXP_POLY.len()] = {
    let mut c = [0f32; coeffs::EXP_POLY.len()];
    let mut i = 0;
    while i < c.len() {
        c[i] = coeffs::EXP_POLY[i] as f32;
        i += 1;
    }
    c
};

/// The clamps of [`exp`]'s argument.
pub const EXP_LO: f32 = -86.9;
pub const EXP_HI: f32 = 89.0;

/// `e^x`. Results below ~1.5e-38 (x < -86.9) flush to 0; above f32's range they are inf.
/// Lanes all below the range take the 0 alone: `e^(-(p / eps)^2)` and the like, whose
/// arguments are huge, are common in the paper's losses.
#[inline(always)]
pub fn exp<M: Vm>(m: &mut M, x: M::V) -> M::V {
    exp_parts(m, x).0
}

/// `(e^x, q, r)`: `exp` with the pieces of its last step, `e^x = (q r + 1) 2^n` after the
/// reduction `x = n ln 2 + r`. Where |x| < ln(2) / 2, n = 0 and r = x, so `q r` is
/// `e^x - 1` without its cancellation.
#[inline(always)]
fn exp_parts<M: Vm>(m: &mut M, x: M::V) -> (M::V, M::V, M::V) {
    let (lo, hi, zero) = (m.c(EXP_LO), m.c(EXP_HI), m.c(0.0));
    let below = m.lt(x, lo);
    if m.uniform(below) == Some(true) {
        return (zero, zero, zero);
    }
    // Clamp with compare+select so NaN passes through (a NaN compares false).
    let xc = m.select(below, lo, x);
    let above = m.lt(hi, xc);
    let xc = m.select(above, hi, xc);
    let l2e = m.c(LOG2E);
    let t = m.mul(xc, l2e);
    let n = m.round(t); // in [-125, 128]
    let (h, l) = (m.c(-LN2_HI), m.c(-LN2_LO));
    let r = m.fma(n, h, xc);
    let r = m.fma(n, l, r);
    // Horner's rule over EXP_POLY_F32[1..], then its last step by hand.
    let q = poly(m, r, &EXP_POLY_F32[1..]);
    let one = m.c(1.0);
    let p = m.fma(q, r, one);
    // p 2^n as (2p) 2^(n-1), so n = 128 overflows to inf only through the product.
    let nm1 = m.sub(n, one);
    let scale = m.pow2i(nm1);
    let p2 = m.add(p, p);
    let v = m.mul(p2, scale);
    (m.select(below, zero, v), q, r)
}

/// `e^x - 1`, accurate near 0.
#[inline(always)]
pub fn expm1<M: Vm>(m: &mut M, x: M::V) -> M::V {
    let ax = m.abs(x);
    let half = m.c(0.5);
    let is_small = m.lt(ax, half);
    split!(
        m,
        is_small,
        {
            let c: [f32; 9] = std::array::from_fn(|k| 1.0 / (1..=k + 1).map(|i| i as f32).product::<f32>());
            let q = poly(m, x, &c); // 1 + x/2 + x^2/6 + ... (x^9/10! < 3e-10 at |x| = 0.5)
            m.mul(x, q)
        },
        {
            let e = exp(m, x);
            let one = m.c(1.0);
            m.sub(e, one)
        }
    )
}

/// Natural log, unguarded: NaN below 0, -inf at 0.
#[inline(always)]
pub fn ln<M: Vm>(m: &mut M, x: M::V) -> M::V {
    let (mant, e) = m.frexp(x);
    let (mant, e) = to_log_octave(m, mant, e);
    let r = ln_reduced(m, mant, e);
    // Specials: x = inf -> inf and NaN -> NaN (x itself, where x < inf is false), x < 0 ->
    // NaN, x = 0 -> -inf.
    let zero = m.c(0.0);
    let inf = m.c(f32::INFINITY);
    let finite = m.lt(x, inf);
    let r = m.select(finite, r, x);
    let is_zero = m.eq(x, zero);
    let is_neg = m.lt(x, zero);
    let ninf = m.c(f32::NEG_INFINITY);
    let nan = m.c(f32::NAN);
    let r = m.select(is_neg, nan, r);
    m.select(is_zero, ninf, r)
}

/// [`ln`] of an `x` that is positive and normal, +inf or NaN, without the cases that cannot
/// occur then (zero, negative, subnormal): the same bits, fewer operations. The guarded log's
/// `|x| + eps` is such an `x` when `eps` is normal.
#[inline(always)]
fn ln_normal<M: Vm>(m: &mut M, x: M::V) -> M::V {
    let (mant, e) = m.log_split(x);
    let r = ln_reduced(m, mant, e);
    // x = inf -> inf and NaN -> NaN: x itself, where x < inf is false.
    let inf = m.c(f32::INFINITY);
    let finite = m.lt(x, inf);
    m.select(finite, r, x)
}

/// `(mant, e)` from [`Vm::frexp`] (`mant` in [0.5, 1)) with `mant` moved into
/// [sqrt(1/2), sqrt(2)): the octave `ln_reduced` takes.
#[inline(always)]
pub fn to_log_octave<M: Vm>(m: &mut M, mant: M::V, e: M::V) -> (M::V, M::V) {
    let sqrt_half = m.c(std::f32::consts::FRAC_1_SQRT_2);
    let small = m.lt(mant, sqrt_half);
    let mant2 = m.add(mant, mant);
    let mant = m.select(small, mant2, mant);
    let one = m.c(1.0);
    let em1 = m.sub(e, one);
    (mant, m.select(small, em1, e))
}

/// `ln(mant * 2^e)` for `mant` in [sqrt(1/2), sqrt(2)).
#[inline(always)]
fn ln_reduced<M: Vm>(m: &mut M, mant: M::V, e: M::V) -> M::V {
    // ln(1 + f) = 2 atanh(f / (2 + f)) = 2 s (1 + s^2/3 + s^4/5 + ...), |s| <= 0.172.
    let one = m.c(1.0);
    let f = m.sub(mant, one);
    let two = m.c(2.0);
    let d = m.add(two, f);
    let s = m.div(f, d);
    let z = m.mul(s, s);
    let q = poly(m, z, &[2.0, 2.0 / 3.0, 2.0 / 5.0, 2.0 / 7.0, 2.0 / 9.0, 2.0 / 11.0]);
    let lnm = m.mul(s, q);
    let (h, l) = (m.c(LN2_HI), m.c(LN2_LO));
    let el = m.mul(e, l);
    let eh = m.mul(e, h);
    let r = m.add(lnm, el);
    m.add(eh, r)
}

/// `ln(1 + u)`, accurate for tiny `u` (Kahan's trick: the rounding of `1 + u` cancels).
#[inline(always)]
pub fn log1p<M: Vm>(m: &mut M, u: M::V) -> M::V {
    let one = m.c(1.0);
    let w = m.add(one, u);
    let lw = ln(m, w);
    let wm1 = m.sub(w, one);
    let ratio = m.div(u, wm1);
    let r = m.mul(lw, ratio);
    let exact = m.eq(w, one);
    let r = m.select(exact, u, r);
    let inf = m.c(f32::INFINITY);
    let is_inf = m.eq(w, inf);
    m.select(is_inf, inf, r)
}

/// The guarded log `ln(|x| + eps)`, without the rounding of the sum: `w = |x| + eps` rounds
/// (at |x| = 1, `1 + 1e-7` becomes `1 + 1.19e-7`, which would make the log 19 % too large), so
/// the sum's exact error `r` (TwoSum) is added back as `ln(w) + r / w` (`r / w` < 2^-24, so
/// `log1p` of it is `r / w` to f32 precision). Relative accuracy everywhere, one division more.
/// Outside [1/2, 2], where |ln w| > 0.69, the correction is below 2^-24 / 0.69 relative and
/// is skipped: a loss's logs of `p / eps` and the like mostly fall there.
#[inline(always)]
pub fn ln_guarded<M: Vm>(m: &mut M, x: M::V, eps: f32) -> M::V {
    let a = m.abs(x);
    let e = m.c(eps);
    let w = m.add(a, e);
    // w >= eps: with eps normal, w is positive and normal (or inf, or NaN).
    let lw = if eps >= f32::MIN_POSITIVE { ln_normal(m, w) } else { ln(m, w) };
    let (half, two) = (m.c(0.5), m.c(2.0));
    let below = m.lt(w, half);
    let above = m.lt(two, w);
    let far = m.or(below, above);
    split!(m, far, lw, {
        // TwoSum: r = (a + e) - w exactly.
        let e1 = m.sub(w, a);
        let a1 = m.sub(w, e1);
        let ea = m.sub(a, a1);
        let ee = m.sub(e, e1);
        let r = m.add(ea, ee);
        let q = m.div(r, w);
        m.add(lw, q)
    })
}

/// `n / (1 + |x|)`: `inv1p_abs` (n = 1) and `softsign` (n = x).
#[inline(always)]
pub fn over_1p_abs<M: Vm>(m: &mut M, n: M::V, x: M::V) -> M::V {
    let one = m.c(1.0);
    let a = m.abs(x);
    let d = m.add(one, a);
    m.div(n, d)
}

/// The guarded reciprocal `1 / (x + eps)`.
#[inline(always)]
pub fn recip<M: Vm>(m: &mut M, x: M::V, eps: f32) -> M::V {
    let one = m.c(1.0);
    let e = m.c(eps);
    let d = m.add(x, e);
    m.div(one, d)
}

/// `1 / (1 + e^-x)`: `1 / (1 + e)` for x >= 0 and `e / (1 + e)` below, with `e = e^-|x|`.
#[inline(always)]
pub fn sigmoid<M: Vm>(m: &mut M, x: M::V) -> M::V {
    sigmoid_family(m, x, [true, false, false])[0]
}

/// `sigmoid(x) (1 - sigmoid(x)) = e / (1 + e)^2` with `e = e^-|x|`.
#[inline(always)]
pub fn dsigmoid<M: Vm>(m: &mut M, x: M::V) -> M::V {
    sigmoid_family(m, x, [false, true, false])[1]
}

/// `d/dx dsigmoid(x) = dsigmoid(x) (1 - 2 sigmoid(x))`, written `dsigmoid(x) expm1(-|x|) /
/// (1 + e)` with the sign of -x: `1 - 2 sigmoid(x)` itself cancels near 0.
#[inline(always)]
pub fn dsigmoid_d<M: Vm>(m: &mut M, x: M::V) -> M::V {
    sigmoid_family(m, x, [false, false, true])[2]
}

/// `[sigmoid(x), dsigmoid(x), dsigmoid_d(x)]` from one exp, those that `want` names (the
/// others are x), each with the bits it has alone: a loss with one of them has the next in
/// its gradient, and the JIT's columnar pass computes them together.
#[inline(always)]
pub fn sigmoid_family<M: Vm>(m: &mut M, x: M::V, want: [bool; 3]) -> [M::V; 3] {
    let a = m.abs(x);
    let na = m.neg(a);
    let (e, q, r) = exp_parts(m, na);
    let one = m.c(1.0);
    let d = m.add(one, e);
    let mut out = [x; 3];
    if want[0] {
        out[0] = sigmoid_from(m, x, e, d);
    }
    if want[1] || want[2] {
        let d2 = m.mul(d, d);
        out[1] = m.div(e, d2);
    }
    if want[2] {
        // e - 1 = expm1(-|x|): `q r` where exp's reduction left r = -|x| (n = 0).
        let third = m.c(0.34);
        let is_small = m.lt(a, third);
        let qr = m.mul(q, r);
        let em1 = m.sub(e, one);
        let em = m.select(is_small, qr, em1);
        let ratio = m.div(em, d);
        let v = m.mul(out[1], ratio); // dsigmoid(|x|) (1 - 2 sigmoid(|x|)) <= 0
        let nx = m.neg(x);
        out[2] = m.copysign(v, nx);
    }
    out
}

#[inline(always)]
fn sigmoid_from<M: Vm>(m: &mut M, x: M::V, e: M::V, d: M::V) -> M::V {
    let (zero, one) = (m.c(0.0), m.c(1.0));
    let neg = m.lt(x, zero);
    let num = m.select(neg, e, one);
    m.div(num, d)
}

/// `ln(1 + e^x + eps)` as `max(x,0) + log1p(e^-|x| + eps e^-max(x,0))`.
#[inline(always)]
pub fn softplus_eps<M: Vm>(m: &mut M, x: M::V, eps: f32) -> M::V {
    let zero = m.c(0.0);
    let mx = m.max(x, zero);
    let a = m.abs(x);
    let na = m.neg(a);
    let e1 = exp(m, na);
    // e^-max(x, 0): e1 where x > 0, else e^0, which `exp` gives as exactly 1.
    let pos = m.lt(zero, x);
    let one = m.c(1.0);
    let e2 = m.select(pos, e1, one);
    let eps = m.c(eps);
    let t = m.mul(eps, e2);
    let u = m.add(e1, t);
    let l = log1p(m, u);
    m.add(mx, l)
}

/// `tanh(x) = expm1(2x) / (expm1(2x) + 2)`, odd.
#[inline(always)]
pub fn tanh<M: Vm>(m: &mut M, x: M::V) -> M::V {
    let a = m.abs(x);
    let ten = m.c(10.0);
    let a = m.min(a, ten);
    let a2 = m.add(a, a);
    let em = expm1(m, a2);
    let two = m.c(2.0);
    let d = m.add(em, two);
    let t = m.div(em, d);
    m.copysign(t, x)
}

/// `1 - tanh(x)^2 = 4e / (1 + e)^2` with `e = e^-2|x|`: no cancellation, no overflow.
#[inline(always)]
pub fn dtanh<M: Vm>(m: &mut M, x: M::V) -> M::V {
    let a = m.abs(x);
    let m2 = m.c(-2.0);
    let t = m.mul(a, m2);
    let e = exp(m, t);
    let one = m.c(1.0);
    let d = m.add(one, e);
    let d2 = m.mul(d, d);
    let four = m.c(4.0);
    let n = m.mul(four, e);
    m.div(n, d2)
}

/// `e^|x| / 2` without overflowing before the result does.
#[inline(always)]
fn half_exp_abs<M: Vm>(m: &mut M, a: M::V) -> M::V {
    let half = m.c(0.5);
    let ah = m.mul(a, half);
    let e = exp(m, ah);
    let eh = m.mul(e, half);
    m.mul(e, eh)
}

/// `sinh(x)`, odd.
#[inline(always)]
pub fn sinh<M: Vm>(m: &mut M, x: M::V) -> M::V {
    let a = m.abs(x);
    let one = m.c(1.0);
    let is_small = m.lt(a, one);
    let v = split!(
        m,
        is_small,
        {
            let em = expm1(m, a);
            let half = m.c(0.5);
            let e1 = m.add(em, one);
            let q = m.div(em, e1);
            let s = m.add(em, q);
            m.mul(half, s) // (em + em/(em+1)) / 2
        },
        {
            let h = half_exp_abs(m, a);
            let quarter = m.c(0.25);
            let r = m.div(quarter, h);
            m.sub(h, r)
        }
    );
    m.copysign(v, x)
}

/// `cosh(x)`.
#[inline(always)]
pub fn cosh<M: Vm>(m: &mut M, x: M::V) -> M::V {
    let a = m.abs(x);
    let h = half_exp_abs(m, a);
    let quarter = m.c(0.25);
    let r = m.div(quarter, h);
    m.add(h, r)
}

/// `asinh(x) = log1p(a + a^2 / (1 + sqrt(1 + a^2)))`, odd; `ln(a) + ln 2` for huge `a`.
#[inline(always)]
pub fn asinh<M: Vm>(m: &mut M, x: M::V) -> M::V {
    let a = m.abs(x);
    let big = m.c(1e18);
    let is_big = m.lt(big, a);
    let v = split!(
        m,
        is_big,
        {
            let la = ln(m, a);
            let l2 = m.c(std::f32::consts::LN_2);
            m.add(la, l2)
        },
        {
            let one = m.c(1.0);
            let a2 = m.mul(a, a);
            let s = m.add(one, a2);
            let r = m.sqrt(s);
            let d = m.add(one, r);
            let q = m.div(a2, d);
            let u = m.add(a, q);
            log1p(m, u)
        }
    );
    m.copysign(v, x)
}

/// `atan(x)`: reduce to |t| <= tan(pi/8), then Taylor in t (10 terms), odd.
#[inline(always)]
pub fn atan<M: Vm>(m: &mut M, x: M::V) -> M::V {
    let a = m.abs(x);
    let one = m.c(1.0);
    let (t3p8, tp8) = (m.c(2.414_213_6), m.c(0.414_213_57));
    let big = m.lt(t3p8, a);
    let mid = m.lt(tp8, a);
    let t = split!(
        m,
        big,
        {
            let na = m.neg(one);
            m.div(na, a)
        },
        split!(
            m,
            mid,
            {
                let am1 = m.sub(a, one);
                let ap1 = m.add(a, one);
                m.div(am1, ap1)
            },
            a
        )
    );
    let (pio4, pio2, zero) = (m.c(std::f32::consts::FRAC_PI_4), m.c(std::f32::consts::FRAC_PI_2), m.c(0.0));
    let y0 = m.select(mid, pio4, zero);
    let y0 = m.select(big, pio2, y0);
    let z = m.mul(t, t);
    let c: [f32; 10] = std::array::from_fn(|k| if k % 2 == 0 { 1.0 } else { -1.0 } / (2 * k + 1) as f32);
    let q = poly(m, z, &c);
    let r = m.mul(t, q);
    let v = m.add(y0, r);
    m.copysign(v, x)
}

/// `(sin r, cos r)` on |r| <= pi/4 by Taylor series.
#[inline(always)]
fn sincos_reduced<M: Vm>(m: &mut M, r: M::V) -> (M::V, M::V) {
    let z = m.mul(r, r);
    let ps = poly(m, z, &[1.0, -1.0 / 6.0, 1.0 / 120.0, -1.0 / 5040.0, 1.0 / 362_880.0, -1.0 / 39_916_800.0]);
    let s = m.mul(r, ps);
    let c = poly(m, z, &[1.0, -0.5, 1.0 / 24.0, -1.0 / 720.0, 1.0 / 40320.0, -1.0 / 3_628_800.0, 1.0 / 479_001_600.0]);
    (s, c)
}

/// `sin(x)` (`cos = false`) or `cos(x)`: quadrant reduction by a three-part pi/2, accurate to
/// about |x| <= 8192.
#[inline(always)]
pub fn sin_or_cos<M: Vm>(m: &mut M, x: M::V, cos: bool) -> M::V {
    let two_over_pi = m.c(std::f32::consts::FRAC_2_PI);
    let t = m.mul(x, two_over_pi);
    let q = m.round(t);
    let mut r = x;
    for part in [PIO2_1, PIO2_2, PIO2_3] {
        let k = m.c(part);
        let qk = m.mul(q, k);
        r = m.sub(r, qk);
    }
    let (s, c) = sincos_reduced(m, r);
    // Quadrant k = q mod 4; cos(x) = sin(x + pi/2) is quadrant k + 1.
    let quarter = m.c(0.25);
    let four = m.c(4.0);
    let qq = if cos {
        let one = m.c(1.0);
        m.add(q, one)
    } else {
        q
    };
    let d = m.mul(qq, quarter);
    let fl = m.floor(d);
    let f4 = m.mul(fl, four);
    let k = m.sub(qq, f4);
    let (one, two) = (m.c(1.0), m.c(2.0));
    let odd = {
        let k1 = m.eq(k, one);
        let three = m.c(3.0);
        let k3 = m.eq(k, three);
        m.or(k1, k3)
    };
    let base = m.select(odd, c, s);
    let hi = m.lt(k, two);
    let nb = m.neg(base);
    m.select(hi, base, nb)
}

/// `e^(-x^2)` for x >= 0 without the rounding error of `x^2`: x = h + l with h on a 1/64 grid.
#[inline(always)]
fn exp_minus_square<M: Vm>(m: &mut M, a: M::V) -> M::V {
    let cap = m.c(11.0);
    let a = m.min(a, cap);
    let s64 = m.c(64.0);
    let inv64 = m.c(1.0 / 64.0);
    let t = m.mul(a, s64);
    let t = m.round(t);
    let h = m.mul(t, inv64);
    let l = m.sub(a, h);
    let hh = m.mul(h, h);
    let nhh = m.neg(hh);
    let e1 = exp(m, nhh);
    let ah = m.add(a, h);
    let r = m.mul(l, ah);
    let nr = m.neg(r);
    let e2 = exp(m, nr);
    m.mul(e1, e2)
}

/// `erf(x)` for |x| < 1 by its Taylor series (12 terms).
#[inline(always)]
fn erf_small<M: Vm>(m: &mut M, x: M::V) -> M::V {
    let mut c = [0f32; 12]; // an array, not a Vec: the JIT's column pass runs this per vector
    let mut fact = 1.0f64;
    for (n, c) in c.iter_mut().enumerate() {
        if n > 0 {
            fact *= n as f64;
        }
        let sign = if n % 2 == 0 { 1.0 } else { -1.0 };
        *c = (sign * FRAC_2_SQRT_PI as f64 / (fact * (2 * n + 1) as f64)) as f32;
    }
    let z = m.mul(x, x);
    let q = poly(m, z, &c);
    m.mul(x, q)
}

/// `erfc(|x|)` for |x| >= 1 from the shared erfcx series.
#[inline(always)]
fn erfc_large<M: Vm>(m: &mut M, a: M::V) -> M::V {
    let four = m.c(4.0);
    let is_mid = m.lt(a, four);
    let x = split!(
        m,
        is_mid,
        {
            // [1, 4]: erfcx(a) at t = (2a - 5)/3
            let (two, five, third) = (m.c(2.0), m.c(5.0), m.c(1.0 / 3.0));
            let t = m.mul(a, two);
            let t = m.sub(t, five);
            let t = m.mul(t, third);
            chebyshev(m, t, coeffs::ERFCX_MID)
        },
        {
            // [4, inf): a erfcx(a) at t = 8/a - 1
            let (eight, one) = (m.c(8.0), m.c(1.0));
            let t = m.div(eight, a);
            let t = m.sub(t, one);
            let g = chebyshev(m, t, coeffs::ERFCX_LARGE);
            m.div(g, a)
        }
    );
    let e = exp_minus_square(m, a);
    m.mul(x, e)
}

/// `erf(x)`, odd.
#[inline(always)]
pub fn erf<M: Vm>(m: &mut M, x: M::V) -> M::V {
    let a = m.abs(x);
    let one = m.c(1.0);
    let is_small = m.lt(a, one);
    // Above 4, erfc(|x|) < 2^-25 and `1 - erfc` rounds to 1.
    let four = m.c(4.0);
    let saturated = m.lt(four, a);
    let v = split!(m, saturated, one, {
        split!(m, is_small, erf_small(m, a), {
            let ec = erfc_large(m, a);
            m.sub(one, ec)
        })
    });
    m.copysign(v, x)
}

/// `erfc(x)`.
#[inline(always)]
pub fn erfc<M: Vm>(m: &mut M, x: M::V) -> M::V {
    let a = m.abs(x);
    let one = m.c(1.0);
    let is_small = m.lt(a, one);
    let v = split!(
        m,
        is_small,
        {
            let es = erf_small(m, a);
            m.sub(one, es)
        },
        erfc_large(m, a)
    );
    let two = m.c(2.0);
    let flipped = m.sub(two, v);
    let zero = m.c(0.0);
    let neg = m.lt(x, zero);
    m.select(neg, flipped, v)
}

/// The scaled Bessel pieces shared by the six Bessel routines, for a = |x|:
/// `(e^-a I0(a), e^-a I1(a) / a, e^-a I1(a))`, from three ranges: [0, 2], (2, 8) and [8, inf).
#[inline(always)]
fn bessel_scaled<M: Vm>(m: &mut M, a: M::V) -> (M::V, M::V, M::V) {
    let (two, eight) = (m.c(2.0), m.c(8.0));
    let above_two = m.lt(two, a);
    let is_small = m.lt(a, eight);
    /// Each of the three pieces where `mask`, else `other`'s.
    #[inline(always)]
    fn select3<M: Vm>(m: &mut M, mask: M::M, a: (M::V, M::V, M::V), b: (M::V, M::V, M::V)) -> (M::V, M::V, M::V) {
        (m.select(mask, a.0, b.0), m.select(mask, a.1, b.1), m.select(mask, a.2, b.2))
    }
    let (i0e, i1ex, i1e) = match m.uniform(above_two) {
        Some(false) => bessel_scaled_tiny(m, a),
        above => {
            let rest = match m.uniform(is_small) {
                Some(true) => bessel_scaled_small(m, a),
                Some(false) => bessel_scaled_large(m, a),
                None => {
                    let small = bessel_scaled_small(m, a);
                    let large = bessel_scaled_large(m, a);
                    select3(m, is_small, small, large)
                }
            };
            if above.is_none() {
                let tiny = bessel_scaled_tiny(m, a);
                select3(m, above_two, rest, tiny)
            } else {
                rest
            }
        }
    };
    // At a = inf the scaled functions are 0.
    let inf = m.c(f32::INFINITY);
    let zero = m.c(0.0);
    let is_inf = m.eq(a, inf);
    (m.select(is_inf, zero, i0e), m.select(is_inf, zero, i1ex), m.select(is_inf, zero, i1e))
}

/// [`bessel_scaled`] on [0, 2] (NaN included), without divisions.
#[inline(always)]
fn bessel_scaled_tiny<M: Vm>(m: &mut M, a: M::V) -> (M::V, M::V, M::V) {
    let t = tiny_t(m, a);
    let i0 = chebyshev(m, t, coeffs::I0E_TINY);
    let i1x = chebyshev(m, t, coeffs::I1EX_TINY);
    let i1 = m.mul(i1x, a);
    (i0, i1x, i1)
}

/// `t = a - 1`, the argument of the series on [0, 2].
#[inline(always)]
fn tiny_t<M: Vm>(m: &mut M, a: M::V) -> M::V {
    let one = m.c(1.0);
    m.sub(a, one)
}

/// `(t, w) = ((a - 5) / 3, 1 + a/4)`: the argument of the series on [2, 8], and the factor
/// they are flattened by.
#[inline(always)]
fn small_t<M: Vm>(m: &mut M, a: M::V) -> (M::V, M::V) {
    let (five, third, quarter, one) = (m.c(5.0), m.c(1.0 / 3.0), m.c(0.25), m.c(1.0));
    let t = m.sub(a, five);
    let t = m.mul(t, third);
    (t, m.fma(a, quarter, one))
}

/// [`bessel_scaled`] on (2, 8).
#[inline(always)]
fn bessel_scaled_small<M: Vm>(m: &mut M, a: M::V) -> (M::V, M::V, M::V) {
    let (t, w) = small_t(m, a);
    let f0 = chebyshev(m, t, coeffs::I0E_SMALL);
    let f1 = chebyshev(m, t, coeffs::I1EX_SMALL);
    let i0 = m.div(f0, w);
    let w2 = m.mul(w, w);
    let i1x = m.div(f1, w2);
    let i1 = m.mul(i1x, a);
    (i0, i1x, i1)
}

/// [`bessel_scaled`] from 8 on.
#[inline(always)]
fn bessel_scaled_large<M: Vm>(m: &mut M, a: M::V) -> (M::V, M::V, M::V) {
    let (one, sixteen) = (m.c(1.0), m.c(16.0));
    let t = m.div(sixteen, a);
    let t = m.sub(t, one);
    let r = m.sqrt(a);
    let b0 = chebyshev(m, t, coeffs::I0E_LARGE);
    let b1 = chebyshev(m, t, coeffs::I1E_LARGE);
    let i0 = m.div(b0, r);
    let i1 = m.div(b1, r);
    let i1x = m.div(i1, a);
    (i0, i1x, i1)
}

/// Which Bessel-family function to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bessel {
    I0,
    I0e,
    I1,
    I1e,
    /// `I1(x) / x`
    I1x,
    /// `e^-|x| I1(x) / x`
    I1ex,
}

/// The Bessel family from one evaluation of the shared series.
#[inline(always)]
pub fn bessel<M: Vm>(m: &mut M, x: M::V, which: Bessel) -> M::V {
    let a = m.abs(x);
    let (i0e, i1ex, i1e) = bessel_scaled(m, a);
    /// `v e^a`, as e^a = (e^(a/2))^2 so that I0 overflows where it should (|x| ~ 91.9), not
    /// at 88.7. A function, not a closure: a closure would not get the target features of
    /// the AVX2 pass this inlines into, and its intrinsics would become calls (~30x slower).
    #[inline(always)]
    fn unscale<M: Vm>(m: &mut M, a: M::V, v: M::V) -> M::V {
        let half = m.c(0.5);
        let ah = m.mul(a, half);
        let e = exp(m, ah);
        let v = m.mul(v, e);
        let v = m.mul(v, e);
        let inf = m.c(f32::INFINITY);
        let is_inf = m.eq(a, inf);
        m.select(is_inf, inf, v)
    }
    match which {
        Bessel::I0e => i0e,
        Bessel::I1ex => i1ex,
        Bessel::I1e => m.copysign(i1e, x),
        Bessel::I0 => unscale(m, a, i0e),
        Bessel::I1x => unscale(m, a, i1ex),
        Bessel::I1 => {
            let v = unscale(m, a, i1ex);
            let v = m.mul(v, a);
            m.copysign(v, x)
        }
    }
}

/// `d/dx e^-|x| I0(x)` (`i1 = false`, odd, 0 at 0) or `d/dx e^-|x| I1(x)` (`i1 = true`, even),
/// from their own series: the textbook forms `i1e - i0e` cancel for large |x|.
#[inline(always)]
pub fn bessel_derivative<M: Vm>(m: &mut M, x: M::V, i1: bool) -> M::V {
    let (tiny_c, small_c, large_c) = if i1 {
        (coeffs::I1E_D_TINY, coeffs::I1E_D_SMALL, coeffs::I1E_D_LARGE)
    } else {
        (coeffs::I0E_D_TINY, coeffs::I0E_D_SMALL, coeffs::I0E_D_LARGE)
    };
    let a = m.abs(x);
    let (one, two, eight) = (m.c(1.0), m.c(2.0), m.c(8.0));
    let above_two = m.lt(two, a);
    let is_small = m.lt(a, eight);
    let v = split!(
        m,
        above_two,
        split!(
            m,
            is_small,
            {
                let (t, w) = small_t(m, a);
                let f = chebyshev(m, t, small_c);
                let w3 = m.mul(w, w);
                let w3 = m.mul(w3, w);
                m.div(f, w3)
            },
            {
                let sixteen = m.c(16.0);
                let t = m.div(sixteen, a);
                let t = m.sub(t, one);
                let g = chebyshev(m, t, large_c);
                let r = m.sqrt(a);
                let g = m.div(g, r);
                m.div(g, a)
            }
        ),
        {
            let t = tiny_t(m, a);
            chebyshev(m, t, tiny_c)
        }
    );
    let inf = m.c(f32::INFINITY);
    let zero = m.c(0.0);
    let is_inf = m.eq(a, inf);
    let v = m.select(is_inf, zero, v);
    if i1 {
        v
    } else {
        // odd, with the kink at 0 given the mean of its one-sided slopes (0)
        let neg = m.lt(x, zero);
        let nv = m.neg(v);
        let v = m.select(neg, nv, v);
        let is0 = m.eq(x, zero);
        m.select(is0, zero, v)
    }
}

/// IEEE-style `a^b` = `e^(b ln|a|)` with the sign rules for negative `a` and integral `b`.
#[inline(always)]
pub fn pow<M: Vm>(m: &mut M, a: M::V, b: M::V) -> M::V {
    let aa = m.abs(a);
    let l = ln(m, aa);
    let bl = m.mul(b, l);
    let mag = exp(m, bl);
    let zero = m.c(0.0);
    let one = m.c(1.0);
    let half = m.c(0.5);
    let fb = m.floor(b);
    let is_int = m.eq(fb, b);
    let hb = m.mul(b, half);
    let fhb = m.floor(hb);
    let even = m.eq(fhb, hb);
    let neg_a = m.lt(a, zero);
    let nmag = m.neg(mag);
    let signed = m.select(even, mag, nmag);
    let nan = m.c(f32::NAN);
    let neg_result = m.select(is_int, signed, nan);
    let r = m.select(neg_a, neg_result, mag);
    // b = 0 -> 1 whatever a is; a = 1 -> 1 whatever b is.
    let b0 = m.eq(b, zero);
    let a1 = m.eq(a, one);
    let unit = m.or(b0, a1);
    m.select(unit, one, r)
}

/// `-1`, `0` or `1`; NaN stays NaN.
#[inline(always)]
pub fn sign<M: Vm>(m: &mut M, x: M::V) -> M::V {
    let (zero, one, mone) = (m.c(0.0), m.c(1.0), m.c(-1.0));
    let pos = m.lt(zero, x);
    let neg = m.lt(x, zero);
    let z = m.mul(x, zero);
    let r = m.select(neg, mone, z);
    m.select(pos, one, r)
}

/// Heaviside step with `step(0) = 0.5`; NaN stays NaN.
#[inline(always)]
pub fn step<M: Vm>(m: &mut M, x: M::V) -> M::V {
    let (zero, one, half) = (m.c(0.0), m.c(1.0), m.c(0.5));
    let pos = m.lt(zero, x);
    let neg = m.lt(x, zero);
    let is0 = m.eq(x, zero);
    let r = m.select(is0, half, x);
    let r = m.select(neg, zero, r);
    m.select(pos, one, r)
}

/// `Vm` in plain Rust f32: what the accuracy table measures, lane for lane what the JIT computes.
pub struct Scalar;

impl Vm for Scalar {
    type V = f32;
    type M = bool;
    fn c(&mut self, v: f32) -> f32 {
        v
    }
    fn add(&mut self, a: f32, b: f32) -> f32 {
        a + b
    }
    fn sub(&mut self, a: f32, b: f32) -> f32 {
        a - b
    }
    fn mul(&mut self, a: f32, b: f32) -> f32 {
        a * b
    }
    fn div(&mut self, a: f32, b: f32) -> f32 {
        a / b
    }
    fn fma(&mut self, a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    fn neg(&mut self, a: f32) -> f32 {
        -a
    }
    fn abs(&mut self, a: f32) -> f32 {
        a.abs()
    }
    fn sqrt(&mut self, a: f32) -> f32 {
        a.sqrt()
    }
    fn min(&mut self, a: f32, b: f32) -> f32 {
        // IEEE 754-2019 minimum, as Cranelift's fmin: NaN wins, min(-0, 0) = -0 either way.
        if a.is_nan() || b.is_nan() {
            f32::NAN
        } else if a == 0.0 && b == 0.0 {
            -(-a + -b)
        } else {
            a.min(b)
        }
    }
    fn max(&mut self, a: f32, b: f32) -> f32 {
        if a.is_nan() || b.is_nan() {
            f32::NAN
        } else if a == 0.0 && b == 0.0 {
            a + b
        } else {
            a.max(b)
        }
    }
    fn round(&mut self, a: f32) -> f32 {
        a.round_ties_even()
    }
    fn floor(&mut self, a: f32) -> f32 {
        a.floor()
    }
    fn lt(&mut self, a: f32, b: f32) -> bool {
        a < b
    }
    fn eq(&mut self, a: f32, b: f32) -> bool {
        a == b
    }
    fn and(&mut self, a: bool, b: bool) -> bool {
        a && b
    }
    fn or(&mut self, a: bool, b: bool) -> bool {
        a || b
    }
    fn select(&mut self, m: bool, a: f32, b: f32) -> f32 {
        if m { a } else { b }
    }
    fn copysign(&mut self, mag: f32, sign: f32) -> f32 {
        mag.abs().copysign(sign)
    }
    fn pow2i(&mut self, k: f32) -> f32 {
        // The same bit trick as the JIT: k + 1.5 * 2^23 holds k in its low mantissa bits.
        let bits = (k + 12_582_912.0).to_bits();
        f32::from_bits(bits.wrapping_sub(0x4B40_0000 - 127) << 23)
    }
    fn uniform(&mut self, m: bool) -> Option<bool> {
        Some(m)
    }
    fn frexp(&mut self, x: f32) -> (f32, f32) {
        let sub = x < f32::MIN_POSITIVE;
        let x = if sub { x * 16_777_216.0 } else { x };
        let bits = x.to_bits();
        let e = ((bits >> 23) & 0xff) as i32 - 126 - if sub { 24 } else { 0 };
        (f32::from_bits((bits & 0x807f_ffff) | 0x3f00_0000), e as f32)
    }
}
