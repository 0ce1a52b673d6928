//! One graph op -> one call into `mathlib`, for every backend that implements [`Vm`].

use super::mathlib::{self as ml, Bessel, Vm};
use crate::ir::{BinOp, Graph, Input, Node, UnOp};

/// `op(x)` with the graph's guard `eps`. Inlined everywhere, routines included, so that the
/// JIT's AVX2 column pass (`jit_pass`) gets them compiled for AVX2.
#[inline(always)]
pub fn unary<M: Vm>(m: &mut M, op: UnOp, x: M::V, eps: f32) -> M::V {
    use UnOp::*;
    /// `|x| + eps`. A function, not a closure, for the reason `mathlib::bessel` gives.
    #[inline(always)]
    fn guarded<M: Vm>(m: &mut M, x: M::V, eps: f32) -> M::V {
        let a = m.abs(x);
        let e = m.c(eps);
        m.add(a, e)
    }
    match op {
        Neg => m.neg(x),
        Ln => {
            let g = guarded(m, x, eps);
            ml::ln(m, g)
        }
        Log10 => {
            let g = guarded(m, x, eps);
            let l = ml::ln(m, g);
            let k = m.c(std::f32::consts::LOG10_E);
            m.mul(l, k)
        }
        Exp => ml::exp(m, x),
        Abs => m.abs(x),
        Sigmoid => ml::sigmoid(m, x),
        Inv1pAbs => {
            let one = m.c(1.0);
            let a = m.abs(x);
            let d = m.add(one, a);
            m.div(one, d)
        }
        Softplus => ml::softplus_eps(m, x, eps),
        Erf => ml::erf(m, x),
        Erfc => ml::erfc(m, x),
        Sin => ml::sin_or_cos(m, x, false),
        Cos => ml::sin_or_cos(m, x, true),
        Sinh => ml::sinh(m, x),
        Cosh => ml::cosh(m, x),
        Asinh => ml::asinh(m, x),
        Tanh => ml::tanh(m, x),
        Atan => ml::atan(m, x),
        Recip => {
            let one = m.c(1.0);
            let e = m.c(eps);
            let d = m.add(x, e);
            m.div(one, d)
        }
        BesselI0 => ml::bessel(m, x, Bessel::I0),
        BesselI0e => ml::bessel(m, x, Bessel::I0e),
        BesselI1 => ml::bessel(m, x, Bessel::I1),
        BesselI1e => ml::bessel(m, x, Bessel::I1e),
        BesselI1x => ml::bessel(m, x, Bessel::I1x),
        BesselI1ex => ml::bessel(m, x, Bessel::I1ex),
        BesselI0eD => ml::bessel_derivative(m, x, false),
        BesselI1eD => ml::bessel_derivative(m, x, true),
        Relu => {
            let z = m.c(0.0);
            m.max(x, z)
        }
        Min0 => {
            let z = m.c(0.0);
            m.min(x, z)
        }
        Square => m.mul(x, x),
        Sqrt => {
            let a = m.abs(x);
            m.sqrt(a)
        }
        Softsign => {
            let one = m.c(1.0);
            let a = m.abs(x);
            let d = m.add(one, a);
            m.div(x, d)
        }
        Dtanh => ml::dtanh(m, x),
        Dsigmoid => ml::dsigmoid(m, x),
        Sign => ml::sign(m, x),
        Step => ml::step(m, x),
        LnRaw => ml::ln(m, x),
    }
}

/// `a op b`.
#[inline(always)]
pub fn binary<M: Vm>(m: &mut M, op: BinOp, a: M::V, b: M::V) -> M::V {
    match op {
        BinOp::Add => m.add(a, b),
        BinOp::Sub => m.sub(a, b),
        BinOp::Mul => m.mul(a, b),
        BinOp::Div => m.div(a, b),
        BinOp::Max => m.max(a, b),
        BinOp::Min => m.min(a, b),
        BinOp::Pow => ml::pow(m, a, b),
    }
}

/// Whether `op` runs one of the math library's routines (tens of instructions), as opposed
/// to a few arithmetic operations. The JIT's quick tier calls routines out of line: inlined,
/// they are most of the code Cranelift compiles.
pub fn is_routine(op: UnOp) -> bool {
    use UnOp::*;
    !matches!(op, Neg | Abs | Inv1pAbs | Recip | Relu | Min0 | Square | Sqrt | Softsign)
}

/// A machine that may compute some ops itself rather than have them expanded here (the JIT's
/// quick tier calls routines out of line). The defaults expand every op.
pub trait Ops: Vm + Sized {
    fn unary_op(&mut self, op: UnOp, x: Self::V, eps: f32) -> Self::V {
        unary(self, op, x, eps)
    }
    fn binary_op(&mut self, op: BinOp, a: Self::V, b: Self::V) -> Self::V {
        binary(self, op, a, b)
    }
}

/// Every node's value, for inputs `y` and `p`, in f32 lanes.
pub fn eval_graph<M: Ops>(m: &mut M, g: &Graph, y: M::V, p: M::V) -> Vec<M::V> {
    let eps = g.eps as f32;
    let mut vals: Vec<M::V> = Vec::with_capacity(g.len());
    for (_, n) in g.iter() {
        let v = match n {
            Node::Input(Input::Y) => y,
            Node::Input(Input::P) => p,
            Node::Const(bits) => m.c(f64::from_bits(bits) as f32),
            Node::Unary(op, a) => m.unary_op(op, vals[a.index()], eps),
            Node::Binary(op, a, b) => m.binary_op(op, vals[a.index()], vals[b.index()]),
        };
        vals.push(v);
    }
    vals
}
