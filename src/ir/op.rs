//! The operation table: one row per operation.
//!
//! A row is everything the compiler knows of an operation: the variant, the name the language
//! uses, its number in the paper's search space (SPEC section 2; `None` for the helpers that
//! only gradients need), its parity and sign (for the simplifier), its cost (inline arithmetic
//! or a math routine), its f64 reference semantics with guards, its f32 form on the vector
//! machine every backend implements, its derivative as `.loss` text (expanded by
//! `passes::autodiff`), and the error bound of its f32 form. Adding an operation is a row here,
//! plus its routines in `kernels/mathlib.rs` (f32) and `reference/mathref.rs` (f64) where it
//! needs new ones; tests check every row's facts and the docs' table against this one.

use crate::backend::mathlib::{self as ml, Bessel};
use crate::reference::mathref::{self as mr, Func};

/// How far a backend's f32 routine may be from the op's f64 reference (tests/math_accuracy.rs
/// enforces it; docs/math-accuracy.md publishes it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Accuracy {
    /// The f32 result is the f64 reference rounded to f32, bit for bit.
    Exact,
    /// `|f32 - f64| / max(|f64|, floor) <= bound` for `|x| <= domain`.
    Within { domain: f64, floor: f64, bound: f64 },
}

/// `f(-x)` against `f(x)`: what the simplifier may do with a negated or absolute argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    /// `f(-x) = f(x)`: `f(neg x)` and `f(abs x)` become `f(x)`.
    Even,
    /// `f(-x) = -f(x)`: a negation moves outward where it can cancel.
    Odd,
    /// Neither (or not used).
    Neither,
}

/// The sign of an op's result, for the simplifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sign {
    /// Positive for every real argument (NaN aside), in exact arithmetic: in fused graphs
    /// `sign(f(x))` is 1, also where f32 underflows to 0 (1 is its exact value there).
    Pos,
    /// Never negative (NaN aside).
    NonNeg,
    Any,
}

/// What an op's f32 form costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cost {
    /// A few arithmetic instructions: always expanded inline.
    Arith,
    /// One of the math library's routines (tens of instructions): the JIT's quick tier calls
    /// it out of line, and the screener evaluates it on whole columns.
    Routine,
}

/// Code generic over a unary op known at compile time (see [`UnOp::with_const`]).
pub trait PerUnOp {
    type Out;
    /// Runs with `UnOp::ALL[OP]` as a constant.
    fn call<const OP: usize>(self) -> Self::Out;
}

/// Code generic over a binary op known at compile time (see [`BinOp::with_const`]).
pub trait PerBinOp {
    type Out;
    /// Runs with `BinOp::ALL[OP]` as a constant.
    fn call<const OP: usize>(self) -> Self::Out;
}

macro_rules! unary_table {
    (
        fn($x:ident, $e:ident, $m:ident);
        $( $(#[$doc:meta])* $v:ident $name:literal [$search:expr, $parity:ident, $sign:ident, $cost:ident]
            f64 $eval:expr,
            f32 $f32:expr,
            d $d:literal,
            acc $acc:expr;
        )*
    ) => {
        /// A unary operation.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum UnOp { $( $(#[$doc])* $v, )* }

        impl UnOp {
            /// Every unary operation, in table order.
            pub const ALL: &'static [UnOp] = &[$(UnOp::$v),*];

            /// Calls `v` with the op as a constant generic argument (its index in [`UnOp::ALL`]),
            /// so that code generic over it is compiled once per op with that op alone.
            #[inline(always)]
            pub fn with_const<V: PerUnOp>(self, v: V) -> V::Out {
                match self { $(UnOp::$v => v.call::<{ UnOp::$v as usize }>(),)* }
            }

            /// A hash of the op's name (FNV-1a), fixed at compile time: what the simplifier's
            /// structural keys hash, so that they do not depend on the op's place in the table.
            pub fn name_hash(self) -> u64 {
                match self { $(UnOp::$v => { const H: u64 = fnv1a($name); H },)* }
            }

            /// The function name in `.loss` text.
            pub fn name(self) -> &'static str {
                match self { $(UnOp::$v => $name,)* }
            }

            /// The op's number among the 27 unary operations of the search space, if it is one.
            pub fn search_index(self) -> Option<u8> {
                match self { $(UnOp::$v => $search,)* }
            }

            pub fn parity(self) -> Parity {
                match self { $(UnOp::$v => Parity::$parity,)* }
            }

            pub fn sign(self) -> Sign {
                match self { $(UnOp::$v => Sign::$sign,)* }
            }

            pub fn cost(self) -> Cost {
                match self { $(UnOp::$v => Cost::$cost,)* }
            }

            /// The derivative as `.loss` text in `x` (and `eps`); `passes::autodiff` expands it.
            pub fn derivative(self) -> &'static str {
                match self { $(UnOp::$v => $d,)* }
            }

            /// The bound on the f32 routine's error against [`UnOp::eval`].
            pub fn accuracy(self) -> Accuracy {
                match self { $(UnOp::$v => $acc,)* }
            }

            /// f64 reference semantics; `eps` is the graph's guard value.
            #[allow(unused_variables)]
            pub fn eval(self, $x: f64, $e: f64) -> f64 {
                match self { $(UnOp::$v => $eval,)* }
            }

            /// The f32 form on a vector machine (every backend: the JIT, CUDA C and WGSL
            /// through the C-like machine, the scalar reference). Inlined everywhere, so
            /// that the JIT's AVX2 pass gets the routines compiled for AVX2.
            #[allow(unused_variables)]
            #[inline(always)]
            pub fn f32<M: ml::Vm>(self, $m: &mut M, $x: M::V, $e: f32) -> M::V {
                match self { $(UnOp::$v => $f32,)* }
            }

            /// [`UnOp::eval`] of each of `xs` into `out`, with the op chosen once (so the loop
            /// is specialised per op: the search's screen evaluates millions of points).
            #[allow(unused_variables)]
            #[inline(always)]
            pub fn eval_slice(self, xs: &[f64], $e: f64, out: &mut [f64]) {
                debug_assert_eq!(xs.len(), out.len());
                match self { $(UnOp::$v => for (o, &$x) in out.iter_mut().zip(xs) { *o = $eval },)* }
            }

            /// [`UnOp::eval_slice`] that reuses the previous result where an input repeats the
            /// previous one bit for bit: exact, and for ops that call a routine it skips the
            /// call for the ~20 % of screened inputs that repeat (clipped or saturated columns).
            #[allow(unused_variables)]
            pub fn eval_slice_reusing(self, xs: &[f64], $e: f64, out: &mut [f64]) {
                debug_assert_eq!(xs.len(), out.len());
                match self { $(UnOp::$v => {
                    let (mut bits, mut last) = (None, 0.0);
                    for (o, &$x) in out.iter_mut().zip(xs) {
                        if bits != Some($x.to_bits()) {
                            (bits, last) = (Some($x.to_bits()), $eval);
                        }
                        *o = last;
                    }
                },)* }
            }
        }
    };
}

/// FNV-1a of a name's bytes.
const fn fnv1a(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h = (h ^ bytes[i] as u64).wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

/// Bounds of the routines, measured by tests/math_accuracy.rs: the error is relative, with a
/// floor that makes it absolute where the function crosses 0 away from x = 0 (sin, cos: 1e-3;
/// bessel_i1e_d, which crosses 0 near x = 1.5 and peaks at 0.5: 0.5); 1e-30 ignores results
/// near the end of f32's range.
const fn within(domain: f64, floor: f64, bound: f64) -> Accuracy {
    Accuracy::Within { domain, floor, bound }
}

unary_table! {
    fn(x, eps, m);
    // variant  name        [search, parity, sign, cost]
    //          f64 reference; f32 form on a machine `m`; derivative in x; f32 error bound
    /// `-x`
    Neg "neg" [Some(0), Neither, Any, Arith]
        f64 -x,
        f32 m.neg(x),
        d "-1",
        acc Accuracy::Exact;
    /// Guarded natural log: `ln(|x| + eps)`.
    Ln "ln" [Some(1), Even, Any, Routine]
        f64 Func::Ln.eval(x.abs() + eps),
        f32 ml::ln_guarded(m, x, eps),
        d "sign(x) / (abs(x) + eps)",
        acc within(1e30, 1e-30, 3e-7);
    /// Guarded base-10 log: `ln(|x| + eps) / ln(10)`. `log` is an alias.
    Log10 "log10" [Some(2), Even, Any, Routine]
        f64 Func::Ln.eval(x.abs() + eps) / std::f64::consts::LN_10,
        f32 { let l = ml::ln_guarded(m, x, eps); let k = m.c(std::f32::consts::LOG10_E); m.mul(l, k) },
        d "sign(x) / ((abs(x) + eps) * 2.302585092994046)",
        acc within(1e30, 1e-30, 3e-7);
    /// `e^x`, unguarded.
    Exp "exp" [Some(3), Neither, Pos, Routine]
        f64 Func::Exp.eval(x),
        f32 ml::exp(m, x),
        d "exp(x)",
        acc within(88.0, 1e-30, 3e-7);
    Abs "abs" [Some(4), Even, NonNeg, Arith]
        f64 x.abs(),
        f32 m.abs(x),
        d "sign(x)",
        acc Accuracy::Exact;
    /// `1 / (1 + e^-x)`
    Sigmoid "sigmoid" [Some(5), Neither, Pos, Routine]
        f64 mr::sigmoid(x),
        f32 ml::sigmoid(m, x),
        d "dsigmoid(x)",
        acc within(1e3, 1e-30, 3e-7);
    /// `1 / (1 + |x|)`: the search space's op 6, which the paper labels "d/dx softsign" although
    /// the true derivative is `1 / (1 + |x|)^2`; named for what it computes.
    Inv1pAbs "inv1p_abs" [Some(6), Even, Pos, Arith]
        f64 1.0 / (1.0 + x.abs()),
        f32 { let one = m.c(1.0); ml::over_1p_abs(m, one, x) },
        d "-(sign(x) * square(inv1p_abs(x)))",
        acc within(1e30, 1e-30, 2e-7);
    /// Guarded softplus `ln(|1 + e^x| + eps)`, computed without overflow for large x.
    Softplus "softplus" [Some(7), Neither, Pos, Routine]
        f64 mr::softplus_eps(x, eps),
        f32 ml::softplus_eps(m, x, eps),
        d "exp(x - softplus(x))",
        acc within(1e30, 1e-30, 3e-7);
    Erf "erf" [Some(8), Odd, Any, Routine]
        f64 Func::Erf.eval(x),
        f32 ml::erf(m, x),
        d "1.1283791670955126 * exp(-square(x))",
        acc within(1e30, 1e-30, 3e-7);
    Erfc "erfc" [Some(9), Neither, Pos, Routine]
        f64 Func::Erfc.eval(x),
        f32 ml::erfc(m, x),
        d "-1.1283791670955126 * exp(-square(x))",
        acc within(1e30, 1e-30, 1e-6);
    Sin "sin" [Some(10), Odd, Any, Routine]
        f64 Func::Sin.eval(x),
        f32 ml::sin_or_cos(m, x, false),
        d "cos(x)",
        acc within(8192.0, 1e-3, 3e-7);
    Sinh "sinh" [Some(11), Odd, Any, Routine]
        f64 Func::Sinh.eval(x),
        f32 ml::sinh(m, x),
        d "cosh(x)",
        acc within(89.0, 1e-30, 3e-7);
    Asinh "asinh" [Some(12), Odd, Any, Routine]
        f64 Func::Asinh.eval(x),
        f32 ml::asinh(m, x),
        d "1 / sqrt(1 + square(x))",
        acc within(1e30, 1e-30, 3e-7);
    Tanh "tanh" [Some(13), Odd, Any, Routine]
        f64 Func::Tanh.eval(x),
        f32 ml::tanh(m, x),
        d "dtanh(x)",
        acc within(1e30, 1e-30, 3e-7);
    Atan "atan" [Some(14), Odd, Any, Routine]
        f64 Func::Atan.eval(x),
        f32 ml::atan(m, x),
        d "1 / (1 + square(x))",
        acc within(1e30, 1e-30, 3e-7);
    /// Guarded reciprocal `1 / (x + eps)` (not sign-aware: `x = -eps` divides by zero).
    Recip "recip" [Some(15), Neither, Any, Arith]
        f64 1.0 / (x + eps),
        f32 ml::recip(m, x, eps),
        d "-square(recip(x))",
        acc within(1e30, 1e-30, 2e-7);
    /// Modified Bessel function of the first kind, order 0.
    BesselI0 "bessel_i0" [Some(16), Even, Pos, Routine]
        f64 mr::bessel_i0(x),
        f32 ml::bessel(m, x, Bessel::I0),
        d "bessel_i1(x)",
        acc within(91.0, 1e-30, 5e-7);
    /// `e^-|x| I0(x)`
    BesselI0e "bessel_i0e" [Some(17), Even, Pos, Routine]
        f64 mr::bessel_i0e(x),
        f32 ml::bessel(m, x, Bessel::I0e),
        d "bessel_i0e_d(x)",
        acc within(1e30, 1e-30, 5e-7);
    /// Modified Bessel function of the first kind, order 1.
    BesselI1 "bessel_i1" [Some(18), Odd, Any, Routine]
        f64 mr::bessel_i1(x),
        f32 ml::bessel(m, x, Bessel::I1),
        d "bessel_i0(x) - bessel_i1x(x)",
        acc within(91.0, 1e-30, 6e-7);
    /// `e^-|x| I1(x)`
    BesselI1e "bessel_i1e" [Some(19), Odd, Any, Routine]
        f64 mr::bessel_i1e(x),
        f32 ml::bessel(m, x, Bessel::I1e),
        d "bessel_i1e_d(x)",
        acc within(1e30, 1e-30, 5e-7);
    /// `max(x, 0)`
    Relu "relu" [Some(20), Neither, NonNeg, Arith]
        f64 mr::max(x, 0.0),
        f32 { let z = m.c(0.0); m.max(x, z) },
        d "step(x)",
        acc Accuracy::Exact;
    /// `min(x, 0)`
    Min0 "min0" [Some(21), Neither, Any, Arith]
        f64 mr::min(x, 0.0),
        f32 { let z = m.c(0.0); m.min(x, z) },
        d "step(-x)",
        acc Accuracy::Exact;
    Square "square" [Some(22), Even, NonNeg, Arith]
        f64 x * x,
        f32 m.mul(x, x),
        d "2 * x",
        acc Accuracy::Exact;
    /// Guarded square root `sqrt(|x|)`.
    Sqrt "sqrt" [Some(23), Even, NonNeg, Arith]
        f64 x.abs().sqrt(),
        f32 { let a = m.abs(x); m.sqrt(a) },
        d "sign(x) / (2 * sqrt(x) + (1 - abs(sign(x))))",
        acc within(1e30, 1e-30, 1e-7);
    /// `x / (1 + |x|)`
    Softsign "softsign" [Some(24), Odd, Any, Arith]
        f64 x / (1.0 + x.abs()),
        f32 ml::over_1p_abs(m, x, x),
        d "square(inv1p_abs(x))",
        acc within(1e30, 1e-30, 2e-7);
    /// `1 - tanh(x)^2`, computed as `sech(x)^2` so it does not cancel to 0 for large |x|.
    Dtanh "dtanh" [Some(25), Even, Pos, Routine]
        f64 mr::dtanh(x),
        f32 ml::dtanh(m, x),
        d "-2 * (tanh(x) * dtanh(x))",
        acc within(1e3, 1e-30, 4e-7);
    /// `sigmoid(x) * (1 - sigmoid(x))`
    Dsigmoid "dsigmoid" [Some(26), Even, Pos, Routine]
        f64 mr::dsigmoid(x),
        f32 ml::dsigmoid(m, x),
        d "dsigmoid_d(x)",
        acc within(1e3, 1e-30, 4e-7);
    // Helpers that derivatives need; also usable in text so printed gradients parse.
    Cos "cos" [None, Even, Any, Routine]
        f64 Func::Cos.eval(x),
        f32 ml::sin_or_cos(m, x, true),
        d "-sin(x)",
        acc within(8192.0, 1e-3, 3e-7);
    Cosh "cosh" [None, Even, Pos, Routine]
        f64 Func::Cosh.eval(x),
        f32 ml::cosh(m, x),
        d "sinh(x)",
        acc within(89.0, 1e-30, 3e-7);
    /// -1, 0 or 1 (0 at 0: the mean of the one-sided derivatives of `abs`).
    Sign "sign" [None, Odd, Any, Routine]
        f64 mr::sign(x),
        f32 ml::sign(m, x),
        d "0",
        acc Accuracy::Exact;
    /// Heaviside step with `step(0) = 0.5` (the mean of one-sided derivatives at a kink).
    Step "step" [None, Neither, NonNeg, Routine]
        f64 mr::step(x),
        f32 ml::step(m, x),
        d "0",
        acc Accuracy::Exact;
    /// `d/dx dsigmoid(x) = dsigmoid(x) (1 - 2 sigmoid(x))`, computed without the cancellation
    /// of `1 - 2 sigmoid(x)` near 0.
    DsigmoidD "dsigmoid_d" [None, Odd, Any, Routine]
        f64 mr::dsigmoid_d(x),
        f32 ml::dsigmoid_d(m, x),
        d "dsigmoid(x) * (1 - 6 * dsigmoid(x))",
        acc within(1e3, 1e-30, 5e-7);
    /// `I1(x) / x`, 1/2 at 0; keeps the derivative of `bessel_i1` finite at 0.
    BesselI1x "bessel_i1x" [None, Even, Pos, Routine]
        f64 mr::bessel_i1x(x),
        f32 ml::bessel(m, x, Bessel::I1x),
        d "(bessel_i0(x) - 2 * bessel_i1x(x)) / x",
        acc within(91.0, 1e-30, 6e-7);
    /// `e^-|x| I1(x) / x`, 1/2 at 0.
    BesselI1ex "bessel_i1ex" [None, Even, Pos, Routine]
        f64 mr::bessel_i1ex(x),
        f32 ml::bessel(m, x, Bessel::I1ex),
        d "(bessel_i0e(x) - 2 * bessel_i1ex(x)) / x - sign(x) * bessel_i1ex(x)",
        acc within(1e30, 1e-30, 5e-7);
    /// `d/dx bessel_i0e(x) = sign(x) (i1e(|x|) - i0e(|x|))`, 0 at the kink x = 0; a separate
    /// routine because that difference cancels for large |x|.
    BesselI0eD "bessel_i0e_d" [None, Neither, Any, Routine]
        f64 mr::bessel_i0e_d(x),
        f32 ml::bessel_derivative(m, x, false),
        d "bessel_i1e_d(x) - sign(x) * bessel_i0e_d(x)",
        acc within(1e30, 1e-30, 5e-7);
    /// `d/dx bessel_i1e(x) = i0e(x) - i1e(x)/x - sign(x) i1e(x)`, computed without cancellation.
    BesselI1eD "bessel_i1e_d" [None, Neither, Any, Routine]
        f64 mr::bessel_i1e_d(x),
        f32 ml::bessel_derivative(m, x, true),
        d "bessel_i0e_d(x) - ((bessel_i0e(x) - 2 * bessel_i1ex(x)) / x - sign(x) * bessel_i1ex(x)) - sign(x) * bessel_i1e_d(x)",
        acc within(1e30, 0.5, 5e-7);
    /// Unguarded natural log (NaN below 0); only the exponent derivative of `^` needs it.
    LnRaw "ln_raw" [None, Neither, Any, Routine]
        f64 Func::Ln.eval(x),
        f32 ml::ln(m, x),
        d "1 / x",
        acc within(1e30, 1e-30, 3e-7);
}

macro_rules! binary_table {
    (
        fn($a:ident, $b:ident, $m:ident);
        $( $(#[$doc:meta])* $v:ident $name:literal [$sym:expr, $search:expr, $commutes:literal]
            f64 $eval:expr,
            f32 $f32:expr,
            d ($da:literal, $db:literal);
        )*
    ) => {
        /// A binary operation.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum BinOp { $( $(#[$doc])* $v, )* }

        impl BinOp {
            /// Every binary operation, in table order.
            pub const ALL: &'static [BinOp] = &[$(BinOp::$v),*];

            /// Calls `v` with the op as a constant generic argument (its index in [`BinOp::ALL`]),
            /// so that code generic over it is compiled once per op with that op alone.
            #[inline(always)]
            pub fn with_const<V: PerBinOp>(self, v: V) -> V::Out {
                match self { $(BinOp::$v => v.call::<{ BinOp::$v as usize }>(),)* }
            }

            /// A hash of the op's name (FNV-1a), fixed at compile time: what the simplifier's
            /// structural keys hash, so that they do not depend on the op's place in the table.
            pub fn name_hash(self) -> u64 {
                match self { $(BinOp::$v => { const H: u64 = fnv1a($name); H },)* }
            }

            /// The function name in `.loss` text (`max(a, b)`).
            pub fn name(self) -> &'static str {
                match self { $(BinOp::$v => $name,)* }
            }

            /// The infix symbol, for operators written between their operands.
            pub fn symbol(self) -> Option<&'static str> {
                match self { $(BinOp::$v => $sym,)* }
            }

            /// The op's number among the 7 binary operations of the search space, if it is one.
            pub fn search_index(self) -> Option<u8> {
                match self { $(BinOp::$v => $search,)* }
            }

            /// `a op b == b op a`.
            pub fn commutative(self) -> bool {
                match self { $(BinOp::$v => $commutes,)* }
            }

            /// The partial derivatives as `.loss` text in `a` and `b`.
            pub fn derivatives(self) -> (&'static str, &'static str) {
                match self { $(BinOp::$v => ($da, $db),)* }
            }

            /// f64 reference semantics.
            pub fn eval(self, $a: f64, $b: f64) -> f64 {
                match self { $(BinOp::$v => $eval,)* }
            }

            /// The f32 form on a vector machine.
            #[inline(always)]
            pub fn f32<M: ml::Vm>(self, $m: &mut M, $a: M::V, $b: M::V) -> M::V {
                match self { $(BinOp::$v => $f32,)* }
            }

            /// [`BinOp::eval`] of each pair of operands into `out`, with the op chosen once.
            /// Inlined so that a caller compiled for wider vectors gets them here too.
            #[allow(clippy::redundant_closure_call)]
            #[inline(always)]
            pub fn eval_slice(self, a: Arg<'_>, b: Arg<'_>, out: &mut [f64]) {
                match self { $(BinOp::$v => zip_args(a, b, out, |$a: f64, $b: f64| -> f64 { $eval }),)* }
            }
        }
    };
}

binary_table! {
    fn(a, b, m);
    // variant  name   [infix, search, commutes]; f64; f32; (d/da, d/db)
    Add "add" [Some("+"), Some(0), true]
        f64 a + b,
        f32 m.add(a, b),
        d ("1", "1");
    Sub "sub" [Some("-"), Some(1), false]
        f64 a - b,
        f32 m.sub(a, b),
        d ("1", "-1");
    Mul "mul" [Some("*"), Some(2), true]
        f64 a * b,
        f32 m.mul(a, b),
        d ("b", "a");
    /// NaN-propagating maximum; a tie splits the derivative 1/2 : 1/2.
    Max "max" [None, Some(3), true]
        f64 mr::max(a, b),
        f32 m.max(a, b),
        d ("step(a - b)", "step(b - a)");
    /// NaN-propagating minimum.
    Min "min" [None, Some(4), true]
        f64 mr::min(a, b),
        f32 m.min(a, b),
        d ("step(b - a)", "step(a - b)");
    /// Plain division. The search space's guarded division (op 5) is written `a / (b + eps)`.
    Div "div" [Some("/"), None, false]
        f64 a / b,
        f32 m.div(a, b),
        d ("1 / b", "-(a / b / b)");
    /// `a^b` with IEEE `pow` semantics; outside the search space (the paper's R2 needs it).
    Pow "pow" [Some("^"), None, false]
        f64 a.powf(b),
        f32 ml::pow(m, a, b),
        d ("b * a ^ (b - 1)", "a ^ b * ln_raw(a)");
}

/// An operand of a columnwise binary op: a column, or one value for every point.
#[derive(Clone, Copy, Debug)]
pub enum Arg<'a> {
    Col(&'a [f64]),
    One(f64),
}

/// `out[i] = f(a[i], b[i])`, one loop per operand shape so that each one vectorises.
#[inline(always)]
fn zip_args(a: Arg<'_>, b: Arg<'_>, out: &mut [f64], f: impl Fn(f64, f64) -> f64) {
    match (a, b) {
        (Arg::Col(x), Arg::Col(z)) => {
            debug_assert!(x.len() == out.len() && z.len() == out.len());
            for ((o, &x), &z) in out.iter_mut().zip(x).zip(z) {
                *o = f(x, z)
            }
        }
        (Arg::Col(x), Arg::One(z)) => {
            debug_assert_eq!(x.len(), out.len());
            for (o, &x) in out.iter_mut().zip(x) {
                *o = f(x, z)
            }
        }
        (Arg::One(x), Arg::Col(z)) => {
            debug_assert_eq!(z.len(), out.len());
            for (o, &z) in out.iter_mut().zip(z) {
                *o = f(x, z)
            }
        }
        (Arg::One(x), Arg::One(z)) => out.fill(f(x, z)),
    }
}

/// Names accepted in text besides the table's own.
pub const ALIASES: &[(&str, &str)] = &[("log", "log10"), ("arctan", "atan"), ("arcsinh", "asinh")];

/// A function the language knows, resolved from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Unary(UnOp),
    Binary(BinOp),
    /// The analytic quotient `aq(a, b) = a / sqrt(1 + b^2)` (search-space binary op 6), which
    /// lowers to that expression.
    Aq,
}

impl Function {
    /// Looks a function up by name or alias.
    pub fn lookup(name: &str) -> Option<Function> {
        let name = ALIASES.iter().find(|(a, _)| *a == name).map_or(name, |(_, n)| n);
        if name == "aq" {
            return Some(Function::Aq);
        }
        if let Some(op) = UnOp::ALL.iter().find(|o| o.name() == name) {
            return Some(Function::Unary(*op));
        }
        BinOp::ALL.iter().find(|o| o.name() == name).map(|o| Function::Binary(*o))
    }

    pub fn arity(self) -> usize {
        match self {
            Function::Unary(_) => 1,
            Function::Binary(_) | Function::Aq => 2,
        }
    }

    /// Every name the language accepts for a function (for "did you mean" hints).
    pub fn all_names() -> Vec<&'static str> {
        let mut v: Vec<&str> = UnOp::ALL.iter().map(|o| o.name()).collect();
        v.extend(BinOp::ALL.iter().map(|o| o.name()));
        v.push("aq");
        v.extend(ALIASES.iter().map(|(a, _)| *a));
        v
    }
}
