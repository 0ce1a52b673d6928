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
    let mut s = String::new();
    write_number(&mut s, v);
    s
}

fn write_number(out: &mut String, v: f64) {
    if v == v.trunc() && v.abs() < 1e15 {
        // What `{v}` prints for a whole number (`-0` included), without the float formatter:
        // the search prints a key for every candidate it screens.
        if v.is_sign_negative() {
            out.push('-');
        }
        let (mut digits, mut n, mut len) = ([0u8; 16], v.abs() as u64, 0);
        loop {
            digits[15 - len] = b'0' + (n % 10) as u8;
            (n, len) = (n / 10, len + 1);
            if n == 0 {
                break;
            }
        }
        out.push_str(std::str::from_utf8(&digits[16 - len..]).expect("ASCII digits"));
    } else {
        let _ = write!(out, "{v:?}");
    }
}

struct Printer<'g> {
    g: &'g Graph,
    /// The `let` name of each node that gets one (empty: none do).
    names: Vec<Option<String>>,
}

impl Printer<'_> {
    /// Writes the expression at `id` into `out`, in parentheses if it binds looser than `want`
    /// (one buffer for the whole text: the search prints a key for every screened candidate).
    fn expr(&self, id: Id, out: &mut String, want: Prec, top: bool) {
        if !top && let Some(Some(name)) = self.names.get(id.index()) {
            out.push_str(name);
            return;
        }
        if self.prec_of(id) < want {
            out.push('(');
            self.render(id, out);
            out.push(')');
        } else {
            self.render(id, out);
        }
    }

    /// `-c` would re-parse as the constant -c, so a negated constant keeps its name (and
    /// prints as a call).
    fn prefix_neg(&self, a: Id) -> bool {
        self.g.node(a).as_const().is_none() || self.names.get(a.index()).is_some_and(Option::is_some)
    }

    /// How tightly the node's own text binds.
    fn prec_of(&self, id: Id) -> Prec {
        match self.g.node(id) {
            Node::Input(_) => Prec::Atom,
            Node::Const(bits) => {
                let v = f64::from_bits(bits);
                let is_eps = bits == self.g.eps.to_bits() && v != 0.0;
                if !is_eps && v.is_sign_negative() { Prec::Prefix } else { Prec::Atom }
            }
            Node::Unary(UnOp::Neg, a) if self.prefix_neg(a) => Prec::Prefix,
            Node::Unary(..) => Prec::Atom,
            Node::Binary(op, ..) => match (prec(op), op.symbol()) {
                (Some(p), Some(_)) => p,
                _ => Prec::Atom,
            },
        }
    }

    /// The node's own text.
    fn render(&self, id: Id, out: &mut String) {
        match self.g.node(id) {
            Node::Input(super::Input::Y) => out.push('y'),
            Node::Input(super::Input::P) => out.push('p'),
            Node::Const(bits) => {
                let v = f64::from_bits(bits);
                if bits == self.g.eps.to_bits() && v != 0.0 { out.push_str("eps") } else { write_number(out, v) }
            }
            Node::Unary(UnOp::Neg, a) if self.prefix_neg(a) => {
                out.push('-');
                self.expr(a, out, Prec::Prefix, false);
            }
            Node::Unary(op, a) => {
                out.push_str(op.name());
                out.push('(');
                self.expr(a, out, Prec::Sum, false);
                out.push(')');
            }
            Node::Binary(op, a, b) => match (prec(op), op.symbol()) {
                (Some(p), Some(sym)) => {
                    // `^` binds its left operand as an atom and its right as a prefix; the
                    // others are left-associative, so the right operand needs parentheses at
                    // equal strength.
                    let (left, right) = match p {
                        Prec::Power => (Prec::Atom, Prec::Prefix),
                        Prec::Sum => (p, Prec::Product),
                        _ => (p, Prec::Prefix),
                    };
                    self.expr(a, out, left, false);
                    out.push(' ');
                    out.push_str(sym);
                    out.push(' ');
                    self.expr(b, out, right, false);
                }
                _ => {
                    out.push_str(op.name());
                    out.push('(');
                    self.expr(a, out, Prec::Sum, false);
                    out.push_str(", ");
                    self.expr(b, out, Prec::Sum, false);
                    out.push(')');
                }
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
    let pr = Printer { g, names: Vec::new() };
    let mut s = String::with_capacity(64);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whole numbers print as `{v}` would print them, by the digit loop.
    #[test]
    fn whole_numbers_print_as_the_formatter_does() {
        let mut rng = crate::rng::Rng::new(4);
        let mut vals = vec![0.0, -0.0, 1.0, -1.0, 9.0, 10.0, 99.0, 100.0, 1e14, -1e14, 999_999_999_999_999.0];
        vals.extend((0..2000).map(|i| ((rng.f64() - 0.5) * 10f64.powi(i % 16)).trunc()));
        for v in vals {
            assert_eq!(number(v), format!("{v}"), "{v:?}");
        }
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(1e15), format!("{:?}", 1e15));
    }
}
