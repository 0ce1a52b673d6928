//! A graph on a vector machine: each op through the op table's f32 form (`ir::op`), for every
//! backend that implements [`Vm`].

use super::mathlib::Vm;
use crate::ir::{BinOp, Graph, Input, Node, UnOp};

/// `op(x)` with the graph's guard `eps`: the op table's f32 form. Inlined everywhere, routines
/// included, so that the JIT's AVX2 column pass (`jit_pass`) gets them compiled for AVX2.
#[inline(always)]
pub fn unary<M: Vm>(m: &mut M, op: UnOp, x: M::V, eps: f32) -> M::V {
    op.f32(m, x, eps)
}

/// `a op b`.
#[inline(always)]
pub fn binary<M: Vm>(m: &mut M, op: BinOp, a: M::V, b: M::V) -> M::V {
    op.f32(m, a, b)
}

/// Whether `op` runs one of the math library's routines (tens of instructions), as opposed
/// to a few arithmetic operations. The JIT's quick tier calls routines out of line: inlined,
/// they are most of the code Cranelift compiles.
pub fn is_routine(op: UnOp) -> bool {
    op.cost() == crate::ir::op::Cost::Routine
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

/// Rust f32 computes every op as the op table writes it.
impl Ops for super::mathlib::Scalar {}

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
