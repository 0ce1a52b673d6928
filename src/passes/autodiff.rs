//! Symbolic reverse-mode differentiation: appends gradient nodes to the same graph, so the
//! fused forward+backward kernel is one graph and shared work appears once.
//!
//! Kinks take the mean of the one-sided derivatives: `abs'(0) = 0`, `relu'(0) = min0'(0) = 1/2`,
//! and `max(a, b)` / `min(a, b)` split a tie 1/2 : 1/2. `sqrt(|x|)` has no derivative at 0
//! (NaN there); `sign` and `step` have derivative 0 away from 0.

use crate::ir::{BinOp, Graph, Id, Input, Node, UnOp};
use std::f64::consts::{LN_10, PI};

/// `d out / d wrt` as a new node of `g` (the constant 0 when `out` does not depend on `wrt`).
pub fn grad(g: &mut Graph, out: Id, wrt: Input) -> Id {
    let dep = g.depends_on(wrt);
    let mut adj: Vec<Option<Id>> = vec![None; out.index() + 1];
    adj[out.index()] = Some(g.constant(1.0));
    let mut result = None;
    for i in (0..=out.index()).rev() {
        let Some(a) = adj[i] else { continue };
        let id = Id::from_index(i);
        let node = g.node(id);
        if node == Node::Input(wrt) {
            result = Some(a);
        }
        // At most two local derivatives (no Vec per node: the search differentiates every
        // candidate it screens).
        let local: [Option<(Id, Id)>; 2] = match node {
            Node::Input(_) | Node::Const(_) => [None, None],
            Node::Unary(op, x) if dep[x.index()] => [Some((x, unary_rule(g, op, x, id))), None],
            Node::Binary(op, x, y) => {
                let (dx, dy) = binary_rule(g, op, x, y, id);
                [dep[x.index()].then_some((x, dx)), dep[y.index()].then_some((y, dy))]
            }
            _ => [None, None],
        };
        for (arg, d) in local.into_iter().flatten() {
            let contrib = times(g, a, d);
            adj[arg.index()] = Some(match adj[arg.index()] {
                None => contrib,
                Some(prev) => g.add(prev, contrib),
            });
        }
    }
    result.unwrap_or_else(|| g.constant(0.0))
}

/// `a * d`, or the other factor when one is the constant 1 (`1 * x` is x, bit for bit): the
/// chain rule's products start from the seed 1 and meet many derivatives that are 1, and the
/// search's screen evaluates derivatives before they are simplified.
fn times(g: &mut Graph, a: Id, d: Id) -> Id {
    let one = Node::Const(1f64.to_bits());
    if g.node(a) == one {
        d
    } else if g.node(d) == one {
        a
    } else {
        g.mul(a, d)
    }
}

/// `d op(x) / dx`, where `me` is the node `op(x)` itself (reused where the rule allows).
fn unary_rule(g: &mut Graph, op: UnOp, x: Id, me: Id) -> Id {
    use UnOp::*;
    let c = |g: &mut Graph, v: f64| g.constant(v);
    let u = |g: &mut Graph, op: UnOp, a: Id| g.unary(op, a);
    match op {
        Neg => c(g, -1.0), //                                    -1
        Ln | Log10 => {
            // sign(x) / ((|x| + eps) [* ln 10])
            let s = u(g, Sign, x);
            let ax = u(g, Abs, x);
            let e = g.eps_const();
            let mut den = g.add(ax, e);
            if op == Log10 {
                let l10 = c(g, LN_10);
                den = g.mul(den, l10);
            }
            g.div(s, den)
        }
        Exp => me,                    //                                            e^x
        Abs => u(g, Sign, x),         //                                 sign(x)
        Sigmoid => u(g, Dsigmoid, x), //                         s(x)(1 - s(x))
        Inv1pAbs => {
            let s = u(g, Sign, x); //                            -sign(x) / (1 + |x|)^2
            let sq = u(g, Square, me);
            let m = g.mul(s, sq);
            g.neg(m)
        }
        Softplus => {
            let d = g.sub(x, me); //                             e^x / (1 + e^x + eps) = e^(x - softplus(x))
            u(g, Exp, d)
        }
        Erf | Erfc => {
            let sq = u(g, Square, x); //                         ±2/sqrt(pi) e^(-x^2)
            let n = g.neg(sq);
            let e = u(g, Exp, n);
            let k = c(g, if op == Erf { 2.0 } else { -2.0 } / PI.sqrt());
            g.mul(k, e)
        }
        Sin => u(g, Cos, x), //                                  cos(x)
        Cos => {
            let s = u(g, Sin, x); //                             -sin(x)
            g.neg(s)
        }
        Sinh => u(g, Cosh, x), //                                cosh(x)
        Cosh => u(g, Sinh, x), //                                sinh(x)
        Asinh | Atan => {
            let one = c(g, 1.0); //                              1/sqrt(1 + x^2), 1/(1 + x^2)
            let sq = u(g, Square, x);
            let s = g.add(one, sq);
            let den = if op == Asinh { u(g, Sqrt, s) } else { s };
            g.div(one, den)
        }
        Tanh => u(g, Dtanh, x), //                               1 - tanh(x)^2
        Recip => {
            let sq = u(g, Square, me); //                        -1/(x + eps)^2
            g.neg(sq)
        }
        BesselI0 => u(g, BesselI1, x), //                        I1(x)
        BesselI1 => {
            let i0 = u(g, BesselI0, x); //                       I0(x) - I1(x)/x
            let ix = u(g, BesselI1x, x);
            g.sub(i0, ix)
        }
        BesselI0e => u(g, BesselI0eD, x), //                   i1e(x) - sign(x) i0e(x), without cancelling
        BesselI1e => u(g, BesselI1eD, x), //                   i0e(x) - i1e(x)/x - sign(x) i1e(x)
        BesselI0eD => {
            let d1 = u(g, BesselI1eD, x); //                     i0e'' = i1e' - sign(x) i0e'
            let s = u(g, Sign, x);
            let t = g.mul(s, me);
            g.sub(d1, t)
        }
        BesselI1eD => {
            let d0 = u(g, BesselI0eD, x); //                     i1e'' = i0e' - (i1e/x)' - sign(x) i1e'
            let ix = u(g, BesselI1ex, x);
            let dix = unary_rule(g, BesselI1ex, x, ix);
            let s = u(g, Sign, x);
            let t = g.mul(s, me);
            let a = g.sub(d0, dix);
            g.sub(a, t)
        }
        BesselI1x | BesselI1ex => {
            // (I1(x)/x)' = (I0(x) - 2 I1(x)/x) / x; the scaled form also loses sign(x) * itself.
            // Both limits are 0 at x = 0, where this form is 0/0 (NaN): a second-order helper only.
            let i0 = u(g, if op == BesselI1x { BesselI0 } else { BesselI0e }, x);
            let two = c(g, 2.0);
            let t = g.mul(two, me);
            let n = g.sub(i0, t);
            let d = g.div(n, x);
            if op == BesselI1x {
                d
            } else {
                let s = u(g, Sign, x);
                let sm = g.mul(s, me);
                g.sub(d, sm)
            }
        }
        Relu => u(g, Step, x), //                                step(x)
        Min0 => {
            let n = g.neg(x); //                                 step(-x)
            u(g, Step, n)
        }
        Square => {
            let two = c(g, 2.0); //                              2x
            g.mul(two, x)
        }
        Sqrt => {
            let s = u(g, Sign, x); //                            sign(x) / (2 sqrt|x|)
            let two = c(g, 2.0);
            let den = g.mul(two, me);
            g.div(s, den)
        }
        Softsign => {
            let r = u(g, Inv1pAbs, x); //                        1/(1 + |x|)^2
            u(g, Square, r)
        }
        Dtanh => {
            let t = u(g, Tanh, x); //                            -2 tanh(x) dtanh(x)
            let m2 = c(g, -2.0);
            let p = g.mul(t, me);
            g.mul(m2, p)
        }
        Dsigmoid => {
            let s = u(g, Sigmoid, x); //                         dsigmoid(x) (1 - 2 sigmoid(x))
            let two = c(g, 2.0);
            let one = c(g, 1.0);
            let t = g.mul(two, s);
            let f = g.sub(one, t);
            g.mul(me, f)
        }
        Sign | Step => c(g, 0.0), //                             0 away from the jump
        LnRaw => {
            let one = c(g, 1.0); //                              1/x
            g.div(one, x)
        }
    }
}

/// `(d op / da, d op / db)`, where `me` is the node `a op b`.
fn binary_rule(g: &mut Graph, op: BinOp, a: Id, b: Id, me: Id) -> (Id, Id) {
    use BinOp::*;
    let one = g.constant(1.0);
    match op {
        Add => (one, one),
        Sub => (one, g.constant(-1.0)),
        Mul => (b, a),
        Div => {
            let da = g.div(one, b); //                           1/b, -(a/b)/b
            let q = g.div(me, b);
            (da, g.neg(q))
        }
        Max | Min => {
            let (hi, lo) = if op == Max { (a, b) } else { (b, a) }; // step(a - b), step(b - a)
            let d1 = g.sub(hi, lo);
            let d2 = g.sub(lo, hi);
            (g.unary(UnOp::Step, d1), g.unary(UnOp::Step, d2))
        }
        Pow => {
            let bm1 = g.sub(b, one); //                          b a^(b-1), a^b ln(a)
            let pw = g.binary(Pow, a, bm1);
            let da = g.mul(b, pw);
            let la = g.unary(UnOp::LnRaw, a);
            (da, g.mul(me, la))
        }
    }
}
