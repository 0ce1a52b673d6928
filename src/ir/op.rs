//! The operation table: one row per operation.
//!
//! A row gives the variant, the name the language uses, the operation's number in the paper's
//! search space (SPEC section 2; `-` for the helpers that only gradients need) and its f64
//! reference semantics, guards included. Derivative rules live in `passes::autodiff`, one arm per
//! op; backend spellings in `backend::*`, one row per op.

use crate::reference::mathref::{self as m, Func};

macro_rules! unary_table {
    ($( $(#[$doc:meta])* $v:ident, $name:literal, $search:expr, |$x:ident, $e:ident| $eval:expr; )*) => {
        /// A unary operation.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum UnOp { $( $(#[$doc])* $v, )* }

        impl UnOp {
            /// Every unary operation, in table order.
            pub const ALL: &'static [UnOp] = &[$(UnOp::$v),*];

            /// The function name in `.loss` text.
            pub fn name(self) -> &'static str {
                match self { $(UnOp::$v => $name,)* }
            }

            /// The op's number among the 27 unary operations of the search space, if it is one.
            pub fn search_index(self) -> Option<u8> {
                match self { $(UnOp::$v => $search,)* }
            }

            /// f64 reference semantics; `eps` is the graph's guard value.
            #[allow(unused_variables, clippy::redundant_closure_call)]
            pub fn eval(self, x: f64, eps: f64) -> f64 {
                match self { $(UnOp::$v => (|$x: f64, $e: f64| -> f64 { $eval })(x, eps),)* }
            }

            /// [`UnOp::eval`] of each of `xs` into `out`, with the op chosen once (so the loop
            /// is specialised per op: the search's screen evaluates millions of points).
            #[allow(unused_variables, clippy::redundant_closure_call)]
            #[inline(always)]
            pub fn eval_slice(self, xs: &[f64], eps: f64, out: &mut [f64]) {
                debug_assert_eq!(xs.len(), out.len());
                match self { $(UnOp::$v => for (o, &x) in out.iter_mut().zip(xs) {
                    *o = (|$x: f64, $e: f64| -> f64 { $eval })(x, eps)
                },)* }
            }

            /// [`UnOp::eval_slice`] that reuses the previous result where an input repeats the
            /// previous one bit for bit: exact, and for ops that call a routine it skips the
            /// call for the ~20 % of screened inputs that repeat (clipped or saturated columns).
            #[allow(unused_variables, clippy::redundant_closure_call)]
            pub fn eval_slice_reusing(self, xs: &[f64], eps: f64, out: &mut [f64]) {
                debug_assert_eq!(xs.len(), out.len());
                match self { $(UnOp::$v => {
                    let f = |$x: f64, $e: f64| -> f64 { $eval };
                    let (mut bits, mut last) = (None, 0.0);
                    for (o, &x) in out.iter_mut().zip(xs) {
                        if bits != Some(x.to_bits()) {
                            (bits, last) = (Some(x.to_bits()), f(x, eps));
                        }
                        *o = last;
                    }
                },)* }
            }
        }
    };
}

unary_table! {
    // variant       name           search   f64 reference
    /// `-x`
    Neg,        "neg",         Some(0),  |x, eps| -x;
    /// Guarded natural log: `ln(|x| + eps)`.
    Ln,         "ln",          Some(1),  |x, eps| Func::Ln.eval(x.abs() + eps);
    /// Guarded base-10 log: `ln(|x| + eps) / ln(10)`. `log` is an alias.
    Log10,      "log10",       Some(2),  |x, eps| Func::Ln.eval(x.abs() + eps) / std::f64::consts::LN_10;
    /// `e^x`, unguarded.
    Exp,        "exp",         Some(3),  |x, eps| Func::Exp.eval(x);
    Abs,        "abs",         Some(4),  |x, eps| x.abs();
    /// `1 / (1 + e^-x)`
    Sigmoid,    "sigmoid",     Some(5),  |x, eps| m::sigmoid(x);
    /// `1 / (1 + |x|)`: the search space's op 6, which the paper labels "d/dx softsign" although
    /// the true derivative is `1 / (1 + |x|)^2`; named for what it computes.
    Inv1pAbs,   "inv1p_abs",   Some(6),  |x, eps| 1.0 / (1.0 + x.abs());
    /// Guarded softplus `ln(|1 + e^x| + eps)`, computed without overflow for large x.
    Softplus,   "softplus",    Some(7),  |x, eps| m::softplus_eps(x, eps);
    Erf,        "erf",         Some(8),  |x, eps| Func::Erf.eval(x);
    Erfc,       "erfc",        Some(9),  |x, eps| Func::Erfc.eval(x);
    Sin,        "sin",         Some(10), |x, eps| Func::Sin.eval(x);
    Sinh,       "sinh",        Some(11), |x, eps| Func::Sinh.eval(x);
    Asinh,      "asinh",       Some(12), |x, eps| Func::Asinh.eval(x);
    Tanh,       "tanh",        Some(13), |x, eps| Func::Tanh.eval(x);
    Atan,       "atan",        Some(14), |x, eps| Func::Atan.eval(x);
    /// Guarded reciprocal `1 / (x + eps)` (not sign-aware: `x = -eps` divides by zero).
    Recip,      "recip",       Some(15), |x, eps| 1.0 / (x + eps);
    /// Modified Bessel function of the first kind, order 0.
    BesselI0,   "bessel_i0",   Some(16), |x, eps| m::bessel_i0(x);
    /// `e^-|x| I0(x)`
    BesselI0e,  "bessel_i0e",  Some(17), |x, eps| m::bessel_i0e(x);
    /// Modified Bessel function of the first kind, order 1.
    BesselI1,   "bessel_i1",   Some(18), |x, eps| m::bessel_i1(x);
    /// `e^-|x| I1(x)`
    BesselI1e,  "bessel_i1e",  Some(19), |x, eps| m::bessel_i1e(x);
    /// `max(x, 0)`
    Relu,       "relu",        Some(20), |x, eps| m::max(x, 0.0);
    /// `min(x, 0)`
    Min0,       "min0",        Some(21), |x, eps| m::min(x, 0.0);
    Square,     "square",      Some(22), |x, eps| x * x;
    /// Guarded square root `sqrt(|x|)`.
    Sqrt,       "sqrt",        Some(23), |x, eps| x.abs().sqrt();
    /// `x / (1 + |x|)`
    Softsign,   "softsign",    Some(24), |x, eps| x / (1.0 + x.abs());
    /// `1 - tanh(x)^2`, computed as `sech(x)^2` so it does not cancel to 0 for large |x|.
    Dtanh,      "dtanh",       Some(25), |x, eps| m::dtanh(x);
    /// `sigmoid(x) * (1 - sigmoid(x))`
    Dsigmoid,   "dsigmoid",    Some(26), |x, eps| m::dsigmoid(x);
    // Helpers that derivatives need; also usable in text so printed gradients parse.
    Cos,        "cos",         None,     |x, eps| Func::Cos.eval(x);
    Cosh,       "cosh",        None,     |x, eps| Func::Cosh.eval(x);
    /// -1, 0 or 1 (0 at 0: the mean of the one-sided derivatives of `abs`).
    Sign,       "sign",        None,     |x, eps| m::sign(x);
    /// Heaviside step with `step(0) = 0.5` (the mean of one-sided derivatives at a kink).
    Step,       "step",        None,     |x, eps| m::step(x);
    /// `I1(x) / x`, 1/2 at 0; keeps the derivative of `bessel_i1` finite at 0.
    BesselI1x,  "bessel_i1x",  None,     |x, eps| m::bessel_i1x(x);
    /// `e^-|x| I1(x) / x`, 1/2 at 0.
    BesselI1ex, "bessel_i1ex", None,     |x, eps| m::bessel_i1ex(x);
    /// `d/dx bessel_i0e(x) = sign(x) (i1e(|x|) - i0e(|x|))`, 0 at the kink x = 0; a separate
    /// routine because that difference cancels for large |x|.
    BesselI0eD, "bessel_i0e_d", None,   |x, eps| m::bessel_i0e_d(x);
    /// `d/dx bessel_i1e(x) = i0e(x) - i1e(x)/x - sign(x) i1e(x)`, computed without cancellation.
    BesselI1eD, "bessel_i1e_d", None,   |x, eps| m::bessel_i1e_d(x);
    /// Unguarded natural log (NaN below 0); only the exponent derivative of `^` needs it.
    LnRaw,      "ln_raw",      None,     |x, eps| Func::Ln.eval(x);
}

macro_rules! binary_table {
    ($( $(#[$doc:meta])* $v:ident, $name:literal, $sym:expr, $search:expr, |$a:ident, $b:ident| $eval:expr; )*) => {
        /// A binary operation.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum BinOp { $( $(#[$doc])* $v, )* }

        impl BinOp {
            /// Every binary operation, in table order.
            pub const ALL: &'static [BinOp] = &[$(BinOp::$v),*];

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

            /// f64 reference semantics.
            #[allow(clippy::redundant_closure_call)]
            pub fn eval(self, a: f64, b: f64) -> f64 {
                match self { $(BinOp::$v => (|$a: f64, $b: f64| -> f64 { $eval })(a, b),)* }
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
    // variant  name    infix       search   f64 reference
    Add,       "add",  Some("+"),  Some(0), |a, b| a + b;
    Sub,       "sub",  Some("-"),  Some(1), |a, b| a - b;
    Mul,       "mul",  Some("*"),  Some(2), |a, b| a * b;
    /// NaN-propagating maximum.
    Max,       "max",  None,       Some(3), |a, b| m::max(a, b);
    /// NaN-propagating minimum.
    Min,       "min",  None,       Some(4), |a, b| m::min(a, b);
    /// Plain division. The search space's guarded division (op 5) is written `a / (b + eps)`.
    Div,       "div",  Some("/"),  None,    |a, b| a / b;
    /// `a^b` with IEEE `pow` semantics; outside the search space (the paper's R2 needs it).
    Pow,       "pow",  Some("^"),  None,    |a, b| a.powf(b);
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

impl BinOp {
    /// `a op b == b op a`.
    pub fn commutative(self) -> bool {
        matches!(self, BinOp::Add | BinOp::Mul | BinOp::Max | BinOp::Min)
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
