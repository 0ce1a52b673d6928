//! Symbolic reverse-mode differentiation: appends gradient nodes to the same graph, so the
//! fused forward+backward kernel is one graph and shared work appears once. Each op's local
//! derivative is the op table's rule (`.loss` text), parsed once and expanded where needed.
//!
//! Kinks take the mean of the one-sided derivatives: `abs'(0) = 0`, `relu'(0) = min0'(0) = 1/2`,
//! and `max(a, b)` / `min(a, b)` split a tie 1/2 : 1/2. `sqrt(|x|)` has no derivative at 0
//! (NaN there); `sign` and `step` have derivative 0 away from 0.

use crate::ir::{BinOp, Graph, Id, Input, Node, UnOp};
use std::sync::OnceLock;

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
            Node::Binary(..) if let Some(local) = ratio_to_shifted(g, node, &dep) => local,
            Node::Unary(op, x) if dep[x.index()] => [Some((x, unary_rule(g, op, x))), None],
            Node::Binary(op, x, y) => {
                let (dx, dy) = binary_rule(g, op, x, y);
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

/// The local derivatives of `m x / (x + k)` (or `m x * recip(x)`, which is `m x / (x + eps)`;
/// `m` may be absent) when `k` does not depend on the variable: `m k / (x + k)^2` to `x`, and
/// `x / (x + k)` to `m`. The quotient rule's two paths to `x`, `m / (x + k) - m x / (x + k)^2`,
/// are nearly equal where |x| >> |k| and their difference cancels to nothing in f32 (at x = 1
/// and k = eps, all of it). Taken whole, the ratio's derivative skips the product and the
/// shared `x + k`, which keep what their other uses give them.
fn ratio_to_shifted(g: &mut Graph, node: Node, dep: &[bool]) -> Option<[Option<(Id, Id)>; 2]> {
    let depends = |id: Id| dep.get(id.index()).copied().unwrap_or(false);
    // (numerator, x, k, the shifted denominator `x + k` or `recip(x)`, whether it is recip)
    let (num, x, k, den, recip) = match node {
        Node::Binary(BinOp::Div, a, b) => match g.node(b) {
            Node::Binary(BinOp::Add, u, k) | Node::Binary(BinOp::Add, k, u) if u == a || factor(g, a, u).is_some() => {
                (a, u, k, b, false)
            }
            _ => return None,
        },
        Node::Binary(BinOp::Mul, u, v) => match (g.node(u), g.node(v)) {
            (_, Node::Unary(UnOp::Recip, w)) if w == u || factor(g, u, w).is_some() => (u, w, g.eps_const(), v, true),
            (Node::Unary(UnOp::Recip, w), _) if w == v || factor(g, v, w).is_some() => (v, w, g.eps_const(), u, true),
            _ => return None,
        },
        _ => return None,
    };
    let m = if num == x { None } else { factor(g, num, x) };
    if !depends(x) || depends(k) || m == Some(x) {
        return None;
    }
    // k / (x + k)^2, or eps * recip(x)^2.
    let dx = if recip {
        let kr = g.mul(k, den);
        g.mul(kr, den)
    } else {
        let q = g.div(k, den);
        g.div(q, den)
    };
    Some(match m {
        None => [Some((x, dx)), None],
        Some(m) => {
            let mdx = g.mul(m, dx);
            // x / (x + k) to m.
            let ratio = if recip { g.mul(x, den) } else { g.div(x, den) };
            [Some((x, mdx)), depends(m).then_some((m, ratio))]
        }
    })
}

/// The other factor of `prod` when it is `m * x` or `x * m`.
fn factor(g: &Graph, prod: Id, x: Id) -> Option<Id> {
    match g.node(prod) {
        Node::Binary(BinOp::Mul, u, v) if v == x => Some(u),
        Node::Binary(BinOp::Mul, u, v) if u == x => Some(v),
        _ => None,
    }
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

/// A derivative rule of the op table, parsed once: a small graph whose inputs stand for the
/// op's arguments (`p` for `x`, or `y` for `a` and `p` for `b`) and whose `eps` is a sentinel.
struct Template {
    graph: Graph,
    out: Id,
}

/// The most nodes a derivative rule may have (the largest has about 20).
const MAX_TEMPLATE: usize = 48;

/// The `eps` a template is parsed with, so that its guard is told apart from its constants.
const EPS_MARK: f64 = 7.77e-301;

impl Template {
    /// Parses `text` with `let` bindings for the argument names.
    fn parse(text: &str, args: &str) -> Template {
        let src = format!("eps = {EPS_MARK:e};\n{args}\nloss d = {text};");
        let graph = crate::syntax::parse(&src).unwrap_or_else(|d| panic!("op table rule `{text}`: {}", d.message));
        assert!(graph.len() <= MAX_TEMPLATE, "op table rule `{text}` has over {MAX_TEMPLATE} nodes");
        let out = graph.outputs[0].1;
        Template { graph, out }
    }

    /// The rule's value in `g`, with `y` and `p` of the template standing for `a` and `x`.
    fn expand(&self, g: &mut Graph, a: Id, x: Id) -> Id {
        // On the stack: the screen differentiates every candidate, and rules are small.
        let mut map = [x; MAX_TEMPLATE];
        for (i, n) in self.graph.iter() {
            let id = match n {
                Node::Input(Input::Y) => a,
                Node::Input(Input::P) => x,
                Node::Const(bits) if bits == EPS_MARK.to_bits() => g.eps_const(),
                Node::Const(bits) => g.constant(f64::from_bits(bits)),
                Node::Unary(op, u) => g.unary(op, map[u.index()]),
                Node::Binary(op, u, v) => g.binary(op, map[u.index()], map[v.index()]),
            };
            map[i.index()] = id;
        }
        map[self.out.index()]
    }
}

/// `d op(x) / dx`: the op table's rule, expanded in `g` (where `op(x)` already is, so the rules
/// that use it share that node).
fn unary_rule(g: &mut Graph, op: UnOp, x: Id) -> Id {
    static RULES: [OnceLock<Template>; UnOp::ALL.len()] = [const { OnceLock::new() }; UnOp::ALL.len()];
    let i = op as usize;
    RULES[i].get_or_init(|| Template::parse(op.derivative(), "let x = p;")).expand(g, x, x)
}

/// `(d op / da, d op / db)`: the op table's rules, expanded in `g`.
fn binary_rule(g: &mut Graph, op: BinOp, a: Id, b: Id) -> (Id, Id) {
    static RULES: [OnceLock<(Template, Template)>; BinOp::ALL.len()] = [const { OnceLock::new() }; BinOp::ALL.len()];
    let (da, db) = op.derivatives();
    let args = "let a = y; let b = p;";
    let (ra, rb) = RULES[op as usize].get_or_init(|| (Template::parse(da, args), Template::parse(db, args)));
    (ra.expand(g, a, b), rb.expand(g, a, b))
}
