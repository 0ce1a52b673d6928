//! Simplification: constant folding, algebraic identities, canonical operand order and
//! dead-node removal.
//!
//! The contract: wherever the original expression is finite (for y, p in [0, 1]), the simplified
//! one has the same value up to float rounding. Rules may therefore turn a NaN/inf into a
//! number (`x * 0 -> 0`, `x / x -> 1`, `p * (a / p) -> a`) but never the reverse. A property
//! test checks this on random expressions over every operation.

use crate::ir::op::{Parity, Sign};
use crate::ir::{BinOp, Graph, Id, Input, Node, UnOp};
use std::borrow::Cow;

/// Which rules a simplification applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rules {
    /// The rules the canonical keys of losses hang on ([`KEY_FORMAT`]: the search's store).
    Keyed,
    /// Also `sign(x) -> 1` where `x > 0` is known, for fused graphs (a loss with its
    /// derivatives), of which no key is made: the derivatives of `sqrt` and the guarded logs
    /// bring `sign` of their argument, often a sum such as `1 + x^2`. Under a factor `p`,
    /// `sign(x)` -> 1 where `x` is 0 exactly where `p` is (`s = p dL/dp` of a guarded log of
    /// `p / (y + eps)`). Constant factors of products and quotients move out and fold
    /// (`a / (k * x)` -> `(1/k) * (a / x)`). And a negated product with a constant factor
    /// takes the sign into the constant (`-(k * x)` -> `(-k) * x`, the same bits):
    /// `s = p dL/dp` of a negated loss is such a product, and a kernel evaluates one step
    /// less per class.
    Fused,
}

/// Rebuilds `g` simplified; outputs keep their names and order.
pub fn simplify(g: &Graph) -> Graph {
    simplify_keyed(g).0
}

/// [`simplify`] with the rules of `rules`.
pub fn simplify_with(g: &Graph, rules: Rules) -> Graph {
    simplify_rules(g, rules).0
}

/// [`simplify`], and a structural hash of the simplified first output (0 without outputs):
/// equal expressions get equal keys, so it can key what is known about a loss (the search's
/// screen keeps its gradient verdicts by it).
pub fn simplify_keyed(g: &Graph) -> (Graph, u64) {
    simplify_rules(g, Rules::Keyed)
}

fn simplify_rules(g: &Graph, rules: Rules) -> (Graph, u64) {
    // The first round reads `g` itself unless it has dead nodes (no copy of a graph whose
    // every node is live: the screen simplifies every candidate that passes its rules).
    let mut cur = if g.all_live() { Cow::Borrowed(g) } else { Cow::Owned(g.copy_live()) };
    let mut key = 0;
    // Rules fire while rebuilding bottom-up; a second round catches rules enabled by the first.
    for _ in 0..4 {
        let (next, fired, k) = round(&cur, rules);
        key = k;
        // A round in which no rule fired rebuilt each node as it was (operands in canonical
        // order, duplicates merged): the next round would meet the same facts node by node
        // and change nothing. Otherwise compare: both are compact and hash-consed, so equal
        // expressions have as many nodes.
        let done = !fired || (next.len() == cur.len() && next.same_as(&cur));
        // Every test that simplifies checks the shortcut's reasoning.
        debug_assert!(fired || round(&next, rules).0.same_as(&next), "a round without rules is a fixpoint");
        cur = Cow::Owned(next);
        if done {
            break;
        }
    }
    (cur.into_owned(), key)
}

/// One bottom-up rebuild, whether any rule fired (a node came out other than as itself, with
/// its operands mapped and, if commutative, in either order), and the first output's key.
fn round(g: &Graph, rules: Rules) -> (Graph, bool, u64) {
    let n = g.len();
    let mut s = Simplifier {
        g: Graph::with_capacity(g.eps, n),
        key: Vec::with_capacity(n),
        nonneg: Vec::with_capacity(n),
        pos: Vec::with_capacity(n),
        zero_with_p: Vec::with_capacity(n),
        rules,
    };
    let mut map: Vec<Id> = Vec::with_capacity(g.len());
    let mut fired = false;
    for (_, n) in g.iter() {
        let m = |a: Id| map[a.index()];
        let (new, same) = match n {
            Node::Input(_) | Node::Const(_) => (s.mk(n), n),
            Node::Unary(op, a) => (s.un(op, m(a)), Node::Unary(op, m(a))),
            Node::Binary(op, a, b) => {
                let new = s.bin(op, m(a), m(b));
                let swapped = Node::Binary(op, m(b), m(a));
                (new, if op.commutative() && s.node(new) == swapped { swapped } else { Node::Binary(op, m(a), m(b)) })
            }
        };
        fired |= s.node(new) != same;
        map.push(new);
    }
    s.g.outputs = g.outputs.iter().map(|(name, id)| (name.clone(), map[id.index()])).collect();
    let key = s.g.outputs.first().map_or(0, |o| s.key[o.1.index()]);
    (s.g.into_compact(), fired, key)
}

struct Simplifier {
    g: Graph,
    /// Structural hash of each node: equal for equal expressions whatever the insertion order,
    /// so sorting commutative operands by it gives a canonical form.
    key: Vec<u64>,
    /// Known to be >= 0 (or NaN) for y, p in [0, 1].
    nonneg: Vec<bool>,
    /// Known to be > 0 (or NaN) for y, p in [0, 1], in exact arithmetic.
    pos: Vec<bool>,
    /// Known to be >= 0 and 0 exactly where p is, in exact arithmetic: p, and its products and
    /// quotients with positives.
    zero_with_p: Vec<bool>,
    rules: Rules,
}

/// Unary ops with `f(-x) = f(x)`: `f(neg x)` and `f(abs x)` become `f(x)`.
fn even(op: UnOp) -> bool {
    op.parity() == Parity::Even
}

/// Unary ops with `f(-x) = -f(x)`: the negation moves outward where it can cancel.
fn odd(op: UnOp) -> bool {
    op.parity() == Parity::Odd
}

/// Unary ops whose result is never negative.
fn nonneg_op(op: UnOp) -> bool {
    op.sign() != Sign::Any
}

/// The version of the canonical keys ([`simplify_keyed`], and the printed text it orders) the search's store use: keys of
/// another version order commutative operands differently and must not be compared with these.
/// Version 2 hashes an op by its name (version 1 hashed its position in the op table, so a row
/// added anywhere but the end changed every key).
pub const KEY_FORMAT: u32 = 2;

/// SipHash-1-3 with zero keys of little-endian u64 words: what `DefaultHasher::new()` returns
/// after `write_u64` of each (a test holds them equal), without its byte buffering.
fn sip13(words: &[u64]) -> u64 {
    let mut v = [0x736f_6d65_7073_6575u64, 0x646f_7261_6e64_6f6d, 0x6c79_6765_6e65_7261, 0x7465_6462_7974_6573];
    let round = |v: &mut [u64; 4]| {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    };
    for &m in words {
        v[3] ^= m;
        round(&mut v);
        v[0] ^= m;
    }
    let b = ((words.len() as u64 * 8) & 0xff) << 56;
    v[3] ^= b;
    round(&mut v);
    v[0] ^= b;
    v[2] ^= 0xff;
    for _ in 0..3 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

impl Simplifier {
    /// Inserts a node as is, recording its facts.
    fn mk(&mut self, n: Node) -> Id {
        let id = self.g.insert(n);
        if id.index() == self.key.len() {
            // The operands' keys, the op's name hash and the node's variant: keys, and the
            // canonical order that hangs on them, depend on no op's position in the table.
            let variant = |n: &Node| match n {
                Node::Input(_) => 0u64,
                Node::Const(_) => 1,
                Node::Unary(..) => 2,
                Node::Binary(..) => 3,
            };
            let (nonneg, pos, key) = match n {
                Node::Input(i) => (true, false, sip13(&[i as u64, variant(&n)])),
                Node::Const(bits) => {
                    let v = f64::from_bits(bits);
                    (v >= 0.0, v > 0.0, sip13(&[bits, variant(&n)]))
                }
                Node::Unary(op, a) => {
                    let pa = self.pos[a.index()];
                    let pos = match op {
                        UnOp::Abs | UnOp::Square | UnOp::Sqrt => pa,
                        _ => op.sign() == Sign::Pos,
                    };
                    (nonneg_op(op), pos, sip13(&[self.key[a.index()], op.name_hash(), variant(&n)]))
                }
                Node::Binary(op, a, b) => {
                    let (na, nb) = (self.nonneg[a.index()], self.nonneg[b.index()]);
                    let (pa, pb) = (self.pos[a.index()], self.pos[b.index()]);
                    let nn = match op {
                        BinOp::Add | BinOp::Mul | BinOp::Div | BinOp::Min => na && nb,
                        BinOp::Max => na || nb,
                        BinOp::Pow => na,
                        BinOp::Sub => false,
                    };
                    let pos = match op {
                        BinOp::Add => (pa && nb) || (na && pb),
                        BinOp::Mul | BinOp::Div | BinOp::Min => pa && pb,
                        BinOp::Max => pa || pb,
                        BinOp::Pow | BinOp::Sub => false,
                    };
                    (nn, pos, sip13(&[self.key[a.index()], self.key[b.index()], op.name_hash(), variant(&n)]))
                }
            };
            self.key.push(key);
            self.nonneg.push(nonneg);
            self.pos.push(pos);
            let z = |id: Id| self.zero_with_p[id.index()];
            let zero_with_p = match n {
                Node::Input(i) => i == Input::P,
                Node::Const(_) => false,
                Node::Unary(UnOp::Abs | UnOp::Square | UnOp::Sqrt, a) => z(a),
                Node::Unary(..) => false,
                Node::Binary(BinOp::Mul, a, b) => {
                    let (pa, pb) = (self.pos[a.index()], self.pos[b.index()]);
                    (z(a) && (pb || z(b))) || (pa && z(b))
                }
                Node::Binary(BinOp::Div, a, b) => z(a) && self.pos[b.index()],
                Node::Binary(..) => false,
            };
            self.zero_with_p.push(zero_with_p);
        }
        id
    }

    fn c(&mut self, v: f64) -> Id {
        self.mk(Node::Const(v.to_bits()))
    }
    fn node(&self, id: Id) -> Node {
        self.g.node(id)
    }
    fn konst(&self, id: Id) -> Option<f64> {
        self.g.node(id).as_const()
    }
    fn is(&self, id: Id, v: f64) -> bool {
        self.konst(id) == Some(v)
    }
    /// `Some(x)` when `id` is `neg(x)`.
    fn negated(&self, id: Id) -> Option<Id> {
        match self.node(id) {
            Node::Unary(UnOp::Neg, x) => Some(x),
            _ => None,
        }
    }

    /// `(k, x)` where `id` is `k * x` with a constant `k` (or, with `quotients`, `k / d` with
    /// `k` other than 1: then `x` is `1 / d`, made here).
    fn constant_times(&mut self, id: Id, quotients: bool) -> Option<(f64, Id)> {
        match self.node(id) {
            Node::Binary(BinOp::Mul, k, x) => Some((self.konst(k)?, x)),
            Node::Binary(BinOp::Div, k, d)
                if quotients && self.konst(k).is_some_and(|k| k != 1.0) && self.konst(d).is_none() =>
            {
                let one = self.c(1.0);
                Some((self.konst(k)?, self.bin(BinOp::Div, one, d)))
            }
            _ => None,
        }
    }

    /// `(p, d)` where `a * b` is `p * d`.
    fn p_times(&self, a: Id, b: Id) -> Option<(Id, Id)> {
        let is_p = |id: Id| self.node(id) == Node::Input(Input::P);
        if is_p(a) {
            Some((a, b))
        } else if is_p(b) {
            Some((b, a))
        } else {
            None
        }
    }

    /// `(x / d, r)` where `q` is `r / d` and `x / d` is an older node: `x * q` is then
    /// `r * (x / d)`, one division fewer where `q` has no other use. `s = p dL/dp` of a loss of
    /// `p / (y + eps)` ends in `p * (r / (y + eps))`, and the loss itself has `p / (y + eps)`.
    /// (Older only: `r * (x / d)` with `r / d` a node would otherwise turn back.)
    fn reuse_quotient(&self, x: Id, q: Id) -> Option<(Id, Id)> {
        match self.node(q) {
            Node::Binary(BinOp::Div, r, d) if self.konst(x).is_none() => {
                self.g.find(&Node::Binary(BinOp::Div, x, d)).filter(|xd| xd.index() < q.index()).map(|xd| (xd, r))
            }
            _ => None,
        }
    }

    /// The product or quotient `id` without its factors `sign(x)` (in numerators, at most
    /// `depth` deep) where `x` is 0 exactly where `p` is; `None` where there are none. Under
    /// a factor `p`, such a sign is 1 where `p > 0`, and where `p = 0` the product is 0 (or
    /// NaN, where the rest is infinite or NaN) with the sign or without it, with the same
    /// sign of zero: `s = p dL/dp` of a guarded log of `p / (y + eps)` has one.
    fn drop_sign_factors(&mut self, id: Id, depth: u32) -> Option<Id> {
        if depth == 0 {
            return None;
        }
        match self.node(id) {
            Node::Unary(UnOp::Sign, x) if self.zero_with_p[x.index()] => Some(self.c(1.0)),
            Node::Unary(UnOp::Neg, a) => {
                let a = self.drop_sign_factors(a, depth - 1)?;
                Some(self.un(UnOp::Neg, a))
            }
            Node::Binary(BinOp::Mul, a, b) => {
                let (da, db) = (self.drop_sign_factors(a, depth - 1), self.drop_sign_factors(b, depth - 1));
                if da.is_none() && db.is_none() {
                    return None;
                }
                Some(self.bin(BinOp::Mul, da.unwrap_or(a), db.unwrap_or(b)))
            }
            Node::Binary(BinOp::Div, a, b) => {
                let a = self.drop_sign_factors(a, depth - 1)?;
                Some(self.bin(BinOp::Div, a, b))
            }
            _ => None,
        }
    }

    /// A unary op applied to a simplified operand, simplified.
    fn un(&mut self, op: UnOp, x: Id) -> Id {
        use UnOp::*;
        if let Some(v) = self.konst(x) {
            let r = op.eval(v, self.g.eps);
            if r.is_finite() {
                return self.c(r); //                          fold constants (never to inf/NaN)
            }
        }
        let xn = self.node(x);
        match (op, xn) {
            (Neg, Node::Unary(Neg, a)) => return a, //          --a -> a
            (Neg, Node::Binary(BinOp::Sub, a, b)) => return self.bin(BinOp::Sub, b, a), // -(a-b) -> b-a
            (Abs | Relu, _) if self.nonneg[x.index()] => return x, // |a| -> a when a >= 0
            (Sign, _) if self.rules == Rules::Fused && self.pos[x.index()] => return self.c(1.0), // sign(a) -> 1 when a > 0
            // Constant factors have moved out of products and quotients (see `bin`), so a
            // negated one with a constant factor is `-(k * a)`.
            (Neg, _)
                if self.rules == Rules::Fused
                    && let Some((k, a)) = self.constant_times(x, false) =>
            {
                let k = self.c(-k);
                return self.bin(BinOp::Mul, k, a); //            -(k * a) -> (-k) * a
            }
            (Sqrt, Node::Unary(Square, a)) => return self.un(Abs, a), // sqrt(a^2) -> |a|
            (_, Node::Unary(Neg | Abs, a)) if even(op) => return self.un(op, a), // f(-a) -> f(a)
            (_, Node::Unary(Neg, a)) if odd(op) => {
                let inner = self.un(op, a); //                   f(-a) -> -f(a)
                return self.un(Neg, inner);
            }
            _ => {}
        }
        self.mk(Node::Unary(op, x))
    }

    /// A binary op applied to simplified operands, simplified.
    fn bin(&mut self, op: BinOp, a: Id, b: Id) -> Id {
        use BinOp::*;
        if let (Some(x), Some(y)) = (self.konst(a), self.konst(b)) {
            let r = op.eval(x, y);
            if r.is_finite() {
                return self.c(r); //                          fold constants (never to inf/NaN)
            }
        }
        // Canonical order for commutative ops: constants first, then by structural key.
        let (a, b) = if op.commutative() && self.order_key(b) < self.order_key(a) { (b, a) } else { (a, b) };
        let (na, nb) = (self.negated(a), self.negated(b));
        match op {
            Add if self.is(a, 0.0) => return b,                     //              0 + b -> b
            Add if let Some(x) = nb => return self.bin(Sub, a, x),  // a + -x -> a - x
            Add if let Some(x) = na => return self.bin(Sub, b, x),  // -x + b -> b - x
            Sub if self.is(b, 0.0) => return a,                     //              a - 0 -> a
            Sub if self.is(a, 0.0) => return self.un(UnOp::Neg, b), // 0 - b -> -b
            Sub if a == b => return self.c(0.0),                    //              a - a -> 0
            Sub if let Some(x) = nb => return self.bin(Add, a, x),  // a - -x -> a + x
            Sub if let Some(x) = na => {
                let s = self.bin(Add, x, b); //                  -x - b -> -(x + b)
                return self.un(UnOp::Neg, s);
            }
            Mul if self.rules == Rules::Fused
                && let Some((p, d)) = self.p_times(a, b)
                && let Some(d) = self.drop_sign_factors(d, 6) =>
            {
                return self.bin(Mul, p, d); //                 p * (sign(x) * d) -> p * d where x is 0 with p
            }
            Mul if self.rules == Rules::Fused
                && self.konst(a).is_none()
                && let Some((other, (k, x))) = self
                    .constant_times(b, true)
                    .map(|f| (a, f))
                    .or_else(|| self.constant_times(a, true).map(|f| (b, f)))
                && self.konst(x).is_none() =>
            {
                // a * (k * x) -> k * (a * x), (k * x) * b -> k * (x * b): constants move out,
                // where they meet and fold.
                let inner = self.bin(Mul, other, x);
                let k = self.c(k);
                return self.bin(Mul, k, inner);
            }
            Mul if self.rules == Rules::Fused
                && let Some((x, r)) = self.reuse_quotient(a, b).or_else(|| self.reuse_quotient(b, a)) =>
            {
                return self.bin(Mul, r, x); //                  x * (r / d) -> r * (x / d) where x / d is a node
            }
            Mul if self.is(a, 1.0) => return b, //              1 * b -> b
            Mul if self.is(a, 0.0) => return a, //              0 * b -> 0 (b finite, or the original was NaN)
            Mul if self.is(a, -1.0) => return self.un(UnOp::Neg, b), // -1 * b -> -b
            Mul if a == b => return self.un(UnOp::Square, a), // a * a -> a^2
            Mul if let (Some(x), Some(y)) = (na, nb) => return self.bin(Mul, x, y), // -x * -y -> x * y
            Mul if let Some(x) = na.or(nb) => {
                let other = if na.is_some() { b } else { a }; // -x * b -> -(x * b)
                let m = self.bin(Mul, x, other);
                return self.un(UnOp::Neg, m);
            }
            Mul if let Node::Binary(Div, one, d) = self.node(b)
                && self.is(one, 1.0) =>
            {
                return self.bin(Div, a, d); //                  a * (1 / d) -> a / d
            }
            Mul if let Node::Binary(Div, one, d) = self.node(a)
                && self.is(one, 1.0) =>
            {
                return self.bin(Div, b, d); //                  (1 / d) * b -> b / d
            }
            Mul => {
                if let Some(r) = self.cancel(a, b).or_else(|| self.cancel(b, a)) {
                    return r; //                                   x * (r / x) -> r
                }
                if let (Some(c1), Node::Binary(Mul, c2, x)) = (self.konst(a), self.node(b))
                    && let Some(c2) = self.konst(c2)
                {
                    let c = self.c(c1 * c2); //                 c1 * (c2 * x) -> (c1 c2) * x
                    return self.bin(Mul, c, x);
                }
            }
            Div if self.rules == Rules::Fused
                && let Some((k, x)) = self.constant_times(b, false)
                && (1.0 / k).is_finite()
                && 1.0 / k != 0.0 =>
            {
                let q = self.bin(Div, a, x); //                  a / (k * x) -> (1/k) * (a / x)
                let inv = self.c(1.0 / k);
                return self.bin(Mul, inv, q);
            }
            Div if self.rules == Rules::Fused
                && let Some((k, x)) = self.constant_times(a, false) =>
            {
                let q = self.bin(Div, x, b); //                  (k * x) / b -> k * (x / b)
                let k = self.c(k);
                return self.bin(Mul, k, q);
            }
            Div if self.is(b, 1.0) => return a,  //              a / 1 -> a
            Div if a == b => return self.c(1.0), //              a / a -> 1
            Div if self.is(a, 0.0) => return a,  //              0 / b -> 0
            Div if let Some(x) = na => {
                let d = self.bin(Div, x, b); //                  -x / b -> -(x / b)
                return self.un(UnOp::Neg, d);
            }
            Div if let Some(x) = nb => {
                let d = self.bin(Div, a, x); //                  a / -x -> -(a / x)
                return self.un(UnOp::Neg, d);
            }
            Div if let Node::Binary(Mul, x, r) = self.node(a)
                && (x == b || r == b) =>
            {
                return if x == b { r } else { x }; //            (x * r) / x -> r
            }
            Div if let Some(c) = self.konst(b)
                && (1.0 / c).is_finite()
                && (1.0 / c) != 0.0 =>
            {
                let inv = self.c(1.0 / c); //                    a / c -> (1/c) * a
                return self.bin(Mul, inv, a);
            }
            Pow if self.is(b, 1.0) => return a, //              a^1 -> a
            Pow if self.is(b, 2.0) => return self.un(UnOp::Square, a), // a^2 -> square(a)
            Pow if self.is(b, 0.0) => return self.c(1.0), //    a^0 -> 1 (IEEE pow: even for NaN)
            Max | Min if a == b => return a,    //                  max(a, a) -> a
            _ => {}
        }
        self.mk(Node::Binary(op, a, b))
    }

    /// `Some(r)` when `x * d` with `d = r / x` cancels to `r`.
    fn cancel(&self, x: Id, d: Id) -> Option<Id> {
        match self.node(d) {
            Node::Binary(BinOp::Div, r, den) if den == x => Some(r),
            _ => None,
        }
    }

    fn order_key(&self, id: Id) -> (u8, u64) {
        let rank = match self.node(id) {
            Node::Const(_) => 0,
            Node::Input(Input::Y) => 1,
            Node::Input(Input::P) => 2,
            _ => 3,
        };
        (rank, self.key[id.index()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{DefaultHasher, Hash, Hasher};

    /// The keys stored searches hold were made by `DefaultHasher` from these words (the
    /// variant as the `isize` of `std::mem::discriminant`): `sip13` must give the same.
    #[test]
    fn sip13_is_the_default_hasher_on_words() {
        let mut rng = crate::rng::Rng::new(11);
        for len in 1..6 {
            for _ in 0..200 {
                let words: Vec<u64> = (0..len).map(|_| rng.next_u64() >> rng.below(64)).collect();
                let mut h = DefaultHasher::new();
                words.iter().for_each(|w| w.hash(&mut h));
                assert_eq!(sip13(&words), h.finish(), "{words:?}");
            }
        }
        // The variant's word is what `discriminant` hashes.
        let n = Node::Unary(UnOp::Exp, Id::from_index(0));
        let (mut a, mut b) = (DefaultHasher::new(), DefaultHasher::new());
        std::mem::discriminant(&n).hash(&mut a);
        2u64.hash(&mut b);
        assert_eq!(a.finish(), b.finish());
        for (node, word) in
            [(Node::Input(Input::P), 0u64), (Node::Const(0), 1), (Node::Binary(BinOp::Add, n_id(), n_id()), 3)]
        {
            let (mut a, mut b) = (DefaultHasher::new(), DefaultHasher::new());
            std::mem::discriminant(&node).hash(&mut a);
            word.hash(&mut b);
            assert_eq!(a.finish(), b.finish(), "{node:?}");
        }
    }

    fn n_id() -> Id {
        Id::from_index(1)
    }

    /// In fused graphs only, the constant factors of a product or quotient move out, where
    /// they fold, and a negated product with a constant factor takes the sign into the
    /// constant; without a constant factor the negation stays.
    #[test]
    fn constants_and_negations_gather_in_fused_graphs_only() {
        let g = crate::syntax::parse("loss l = -(p * (exp(y) / (3 * y)));\nloss m = -(p * exp(y));").unwrap();
        let text = |rules| crate::ir::print::to_text(&simplify_with(&g, rules));
        let keyed = text(Rules::Keyed);
        assert!(keyed.contains("l = -(p * (t1 / (3 * y)))") && keyed.contains("m = -(p * t1)"), "{keyed}");
        let fused = text(Rules::Fused);
        assert!(
            fused.contains("l = -0.3333333333333333 * (p * (t1 / y))") && fused.contains("m = -(p * t1)"),
            "{fused}"
        );
        // 2 x / (-2 t) -> -(x / t): R1's derivative had both constants.
        let g = crate::syntax::parse("loss l = 2 * y * (p / (-2 * exp(y)));").unwrap();
        assert_eq!(crate::ir::print::to_text(&simplify_with(&g, Rules::Fused)), "loss l = -(y * (p / exp(y)));\n");
    }

    /// In fused graphs only, `x * (r / d)` reuses an older `x / d`, and stops there (the
    /// product it gives has a quotient `r / d` too, which it must not turn back into).
    #[test]
    fn products_reuse_an_older_quotient_in_fused_graphs_only() {
        let g = crate::syntax::parse("loss l = p / (y + 1) + p * (exp(y) / (y + 1));").unwrap();
        let text = |rules| crate::ir::print::to_text(&simplify_with(&g, rules));
        let keyed = text(Rules::Keyed);
        assert_eq!(keyed.matches(" / ").count(), 2, "{keyed}");
        let fused = text(Rules::Fused);
        assert_eq!(fused, "let t1 = p / (1 + y);\nloss l = t1 + t1 * exp(y);\n");
    }

    /// `sign` of what is known positive is 1 in fused graphs only: the keys of losses, which
    /// the search's store holds, do not change.
    #[test]
    fn sign_of_a_positive_sum_folds_in_fused_graphs_only() {
        let g = crate::syntax::parse(
            "loss l = sign(1 + square(p)) * p + sign(exp(y) * 2) + sign(p) + sign(1 - p) \
             + sign(inv1p_abs(log(p))) * y + sign(sigmoid(p - y) / cosh(y)) + sign(step(p - y)) + sign(relu(p - y));",
        )
        .unwrap();
        let text = |rules| crate::ir::print::to_text(&simplify_with(&g, rules));
        let keyed = text(Rules::Keyed);
        assert_eq!(keyed.matches("sign(").count(), 8, "{keyed}");
        let fused = text(Rules::Fused);
        // sign(p) (p may be 0), sign(1 - p), and the signs of step and relu (0 below 0) stay.
        assert_eq!(fused.matches("sign(").count(), 4, "{fused}");
        for stays in ["sign(p)", "sign(1 - p)", "sign(step(", "sign(relu("] {
            assert!(fused.contains(stays), "{stays}: {fused}");
        }
    }
}
