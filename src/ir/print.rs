//! Printing a graph back to `.loss` text. Parsing the printed text gives the same graph
//! (tested); shared subexpressions become `let` bindings so gradients stay readable.

use super::{BinOp, DEFAULT_EPS, Graph, Id, Node, UnOp};
use std::fmt::Write;

/// Binding strength, loosest first (matches `grammar/loss.lalrpop`).
#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Prec {
    Sum,
    Product,
    Prefix,
    Power,
    Atom,
}

fn prec(op: BinOp) -> Option<Prec> {
    match op {
        BinOp::Add | BinOp::Sub => Some(Prec::Sum),
        BinOp::Mul | BinOp::Div => Some(Prec::Product),
        BinOp::Pow => Some(Prec::Power),
        BinOp::Max | BinOp::Min => None,
    }
}

/// Formats a constant so that it parses back to the same bits (negative values as `-x`).
pub fn number(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 { format!("{v}") } else { format!("{v:?}") }
}

struct Printer<'g> {
    g: &'g Graph,
    /// The `let` name of each node that gets one.
    names: Vec<Option<String>>,
}

impl Printer<'_> {
    fn expr(&self, id: Id, out: &mut String, want: Prec, top: bool) {
        if !top && let Some(name) = &self.names[id.index()] {
            out.push_str(name);
            return;
        }
        let (text, p) = self.render(id);
        if p < want {
            let _ = write!(out, "({text})");
        } else {
            out.push_str(&text);
        }
    }

    fn sub(&self, id: Id, want: Prec) -> String {
        let mut s = String::new();
        self.expr(id, &mut s, want, false);
        s
    }

    /// The node's own text and how tightly it binds.
    fn render(&self, id: Id) -> (String, Prec) {
        match self.g.node(id) {
            Node::Input(super::Input::Y) => ("y".into(), Prec::Atom),
            Node::Input(super::Input::P) => ("p".into(), Prec::Atom),
            Node::Const(bits) => {
                let v = f64::from_bits(bits);
                if bits == self.g.eps.to_bits() && v != 0.0 {
                    ("eps".into(), Prec::Atom)
                } else if v.is_sign_negative() {
                    (number(v), Prec::Prefix)
                } else {
                    (number(v), Prec::Atom)
                }
            }
            // `-c` would re-parse as the constant -c, so a negated constant keeps its name.
            Node::Unary(UnOp::Neg, a) if self.g.node(a).as_const().is_none() || self.names[a.index()].is_some() => {
                (format!("-{}", self.sub(a, Prec::Prefix)), Prec::Prefix)
            }
            Node::Unary(op, a) => (format!("{}({})", op.name(), self.sub(a, Prec::Sum)), Prec::Atom),
            Node::Binary(op, a, b) => match (prec(op), op.symbol()) {
                (Some(Prec::Power), Some(sym)) => {
                    (format!("{} {sym} {}", self.sub(a, Prec::Atom), self.sub(b, Prec::Prefix)), Prec::Power)
                }
                (Some(p), Some(sym)) => {
                    // Left-associative: the right operand needs parentheses at equal strength.
                    let right = if p == Prec::Sum { Prec::Product } else { Prec::Prefix };
                    (format!("{} {sym} {}", self.sub(a, p), self.sub(b, right)), p)
                }
                _ => (format!("{}({}, {})", op.name(), self.sub(a, Prec::Sum), self.sub(b, Prec::Sum)), Prec::Atom),
            },
        }
    }
}

/// Prints every output of the graph as a `.loss` file.
pub fn to_text(g: &Graph) -> String {
    let roots: Vec<Id> = g.outputs.iter().map(|(_, id)| *id).collect();
    let live = g.reachable(&roots);
    // Count uses among live nodes; an op used twice or more gets a binding.
    let mut uses = vec![0usize; g.len()];
    for (id, n) in g.iter() {
        if live[id.index()] {
            for a in n.args() {
                uses[a.index()] += 1;
            }
        }
    }
    let mut names = vec![None; g.len()];
    let mut order = Vec::new();
    for (id, n) in g.iter() {
        let is_op = matches!(n, Node::Unary(..) | Node::Binary(..));
        let is_neg_const = matches!(n, Node::Const(b) if f64::from_bits(b).is_sign_negative());
        if live[id.index()] && uses[id.index()] >= 2 && (is_op && !is_neg_const) {
            names[id.index()] = Some(format!("t{}", order.len() + 1));
            order.push(id);
        }
    }
    let pr = Printer { g, names };
    let mut out = String::new();
    if g.eps.to_bits() != DEFAULT_EPS.to_bits() {
        let _ = writeln!(out, "eps = {};", number(g.eps));
    }
    for id in order {
        let mut s = String::new();
        pr.expr(id, &mut s, Prec::Sum, true);
        let _ = writeln!(out, "let {} = {s};", pr.names[id.index()].as_ref().unwrap());
    }
    for (name, id) in &g.outputs {
        let mut s = String::new();
        pr.expr(*id, &mut s, Prec::Sum, false);
        let _ = writeln!(out, "loss {name} = {s};");
    }
    out
}

/// One expression as text with no bindings (for short messages and genome printouts).
pub fn expr_to_string(g: &Graph, id: Id) -> String {
    let pr = Printer { g, names: vec![None; g.len()] };
    let mut s = String::new();
    pr.expr(id, &mut s, Prec::Sum, false);
    s
}

/// The arena as a numbered node list (`%3 = mul %1 %2`), for debugging and snapshots.
pub fn dump(g: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "eps {}", number(g.eps));
    for (id, n) in g.iter() {
        let _ = match n {
            Node::Input(i) => writeln!(out, "{id:?} = {}", if i == super::Input::Y { "y" } else { "p" }),
            Node::Const(b) => writeln!(out, "{id:?} = const {}", number(f64::from_bits(b))),
            Node::Unary(op, a) => writeln!(out, "{id:?} = {} {a:?}", op.name()),
            Node::Binary(op, a, b) => writeln!(out, "{id:?} = {} {a:?} {b:?}", op.name()),
        };
    }
    for (name, id) in &g.outputs {
        let _ = writeln!(out, "out {name} = {id:?}");
    }
    out
}
