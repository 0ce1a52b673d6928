//! Lowering: syntax tree -> hash-consed graph, resolving names and checking arity.

use super::ast::{Expr, ExprKind, Name, Span, Stmt};
use super::diag::{Diagnostic, ErrorKind, nearest};
use crate::ir::op::Function;
use crate::ir::{BinOp, DEFAULT_EPS, Graph, Id, UnOp};
use std::collections::HashMap;

/// Names that are inputs, not bindable.
const INPUTS: &[&str] = &["y", "p"];

struct Lowerer {
    graph: Graph,
    /// `let` bindings: value and where they were defined.
    lets: HashMap<String, (Id, Span)>,
    losses: HashMap<String, Span>,
}

/// Lowers a parsed file into a graph with one output per `loss`.
pub fn lower(stmts: &[Stmt], src_len: usize) -> Result<Graph, Diagnostic> {
    let eps = file_eps(stmts)?;
    let mut l = Lowerer { graph: Graph::new(eps), lets: HashMap::new(), losses: HashMap::new() };
    for stmt in stmts {
        match stmt {
            Stmt::Eps { .. } => {}
            Stmt::Let { name, value } => {
                l.check_new_name(name, true)?;
                let id = l.expr(value)?;
                l.lets.insert(name.text.clone(), (id, name.span.clone()));
            }
            Stmt::Loss { name, value } => {
                l.check_new_name(name, false)?;
                let id = l.expr(value)?;
                l.losses.insert(name.text.clone(), name.span.clone());
                l.graph.outputs.push((name.text.clone(), id));
            }
        }
    }
    if l.graph.outputs.is_empty() {
        return Err(Diagnostic::new(ErrorKind::NoLoss, src_len..src_len, "this file defines no loss", "end of file")
            .with_help("add one, e.g. `loss ce = -y * ln(p);`"));
    }
    Ok(l.graph)
}

/// The `eps` of a file: set at most once, before any `let` or `loss`, to a constant >= 0.
fn file_eps(stmts: &[Stmt]) -> Result<f64, Diagnostic> {
    let mut eps = None;
    for (i, stmt) in stmts.iter().enumerate() {
        let Stmt::Eps { value, span } = stmt else {
            continue;
        };
        if let Some((_, first)) = &eps {
            return Err(Diagnostic::new(ErrorKind::MisplacedEps, span.clone(), "eps is set twice", "second setting")
                .with_related(Span::clone(first), "first set here"));
        }
        if i > 0 {
            return Err(Diagnostic::new(
                ErrorKind::MisplacedEps,
                span.clone(),
                "eps must be set before any `let` or `loss`",
                "set too late",
            )
            .with_help("move `eps = ...;` to the top of the file: every guard in the file uses it"));
        }
        let v = const_value(value)?;
        if !(v.is_finite() && v >= 0.0) {
            return Err(Diagnostic::new(
                ErrorKind::BadEps,
                value.span.clone(),
                format!("eps must be a finite number >= 0, found {}", crate::ir::print::number(v)),
                "not a valid guard",
            ));
        }
        eps = Some((v, span.clone()));
    }
    Ok(eps.map_or(DEFAULT_EPS, |(v, _)| v))
}

/// Evaluates a constant expression (for `eps = ...`).
fn const_value(e: &Expr) -> Result<f64, Diagnostic> {
    let mut g = Graph::new(DEFAULT_EPS);
    let mut l = Lowerer { graph: Graph::new(DEFAULT_EPS), lets: HashMap::new(), losses: HashMap::new() };
    let id = l.expr(e)?;
    let roots = [id];
    let id = l.graph.copy_into(&roots, &mut g)[0];
    let deps_y = g.depends_on(crate::ir::Input::Y)[id.index()];
    let deps_p = g.depends_on(crate::ir::Input::P)[id.index()];
    let uses_eps = matches!(e.kind, ExprKind::Eps) || contains_eps(e);
    if deps_y || deps_p || uses_eps {
        return Err(Diagnostic::new(
            ErrorKind::BadEps,
            e.span.clone(),
            "eps must be a constant",
            "depends on an input or on eps itself",
        ));
    }
    let mut vals = Vec::with_capacity(g.len());
    g.eval_into(0.0, 0.0, &mut vals);
    Ok(vals[id.index()])
}

fn contains_eps(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Eps => true,
        ExprKind::Num(_) | ExprKind::Var(_) => false,
        ExprKind::Call { args, .. } => args.iter().any(contains_eps),
        ExprKind::Neg(a) => contains_eps(a),
        ExprKind::Binary(_, a, b) => contains_eps(a) || contains_eps(b),
    }
}

impl Lowerer {
    fn check_new_name(&self, name: &Name, is_let: bool) -> Result<(), Diagnostic> {
        let n = name.text.as_str();
        if is_let && (INPUTS.contains(&n) || Function::lookup(n).is_some()) {
            let what = if INPUTS.contains(&n) { "an input" } else { "a function" };
            return Err(Diagnostic::new(
                ErrorKind::ReservedName,
                name.span.clone(),
                format!("`{n}` is {what} and cannot be rebound"),
                "reserved name",
            )
            .with_help("pick another name for this binding"));
        }
        let earlier = if is_let { self.lets.get(n).map(|(_, s)| s) } else { self.losses.get(n) };
        if let Some(first) = earlier {
            let what = if is_let { "binding" } else { "loss" };
            return Err(Diagnostic::new(
                ErrorKind::Redefined,
                name.span.clone(),
                format!("{what} `{n}` is defined twice"),
                "defined again here",
            )
            .with_related(first.clone(), "first defined here"));
        }
        Ok(())
    }

    fn expr(&mut self, e: &Expr) -> Result<Id, Diagnostic> {
        Ok(match &e.kind {
            ExprKind::Num(text) => {
                let v = number(text, &e.span)?;
                self.graph.constant(v)
            }
            ExprKind::Eps => self.graph.eps_const(),
            ExprKind::Var(name) => self.var(name, &e.span)?,
            ExprKind::Neg(inner) => {
                // A negated literal is one constant, so `-2` prints and re-parses as itself.
                if let ExprKind::Num(text) = &inner.kind {
                    let v = number(text, &inner.span)?;
                    return Ok(self.graph.constant(-v));
                }
                let a = self.expr(inner)?;
                self.graph.neg(a)
            }
            ExprKind::Binary(op, a, b) => {
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                self.graph.binary(*op, a, b)
            }
            ExprKind::Call { name, args } => self.call(name, args, &e.span)?,
        })
    }

    fn var(&mut self, name: &str, span: &Span) -> Result<Id, Diagnostic> {
        match name {
            "y" => return Ok(self.graph.y()),
            "p" => return Ok(self.graph.p()),
            _ => {}
        }
        if let Some((id, _)) = self.lets.get(name) {
            return Ok(*id);
        }
        if Function::lookup(name).is_some() {
            return Err(Diagnostic::new(
                ErrorKind::NotAValue,
                span.clone(),
                format!("`{name}` is a function, not a value"),
                "needs arguments",
            )
            .with_help(format!("call it: `{name}(...)`")));
        }
        let mut known: Vec<&str> = vec!["y", "p", "eps"];
        known.extend(self.lets.keys().map(String::as_str));
        let mut d =
            Diagnostic::new(ErrorKind::UnknownName, span.clone(), format!("unknown name `{name}`"), "not defined");
        d = match nearest(name, known) {
            Some(k) => d.with_help(format!("did you mean `{k}`?")),
            None => d.with_help("the inputs are `y` (target) and `p` (softmax output); define other names with `let`"),
        };
        Err(d)
    }

    fn call(&mut self, name: &Name, args: &[Expr], span: &Span) -> Result<Id, Diagnostic> {
        let n = name.text.as_str();
        let Some(f) = Function::lookup(n) else {
            if self.lets.contains_key(n) || INPUTS.contains(&n) {
                return Err(Diagnostic::new(
                    ErrorKind::NotAFunction,
                    name.span.clone(),
                    format!("`{n}` is a value, not a function"),
                    "cannot be called",
                )
                .with_help("for multiplication write `*`, e.g. `y * (p + 1)`"));
            }
            let mut d = Diagnostic::new(
                ErrorKind::UnknownFunction,
                name.span.clone(),
                format!("unknown function `{n}`"),
                "no such function",
            );
            d = match nearest(n, Function::all_names()) {
                Some(k) => d.with_help(format!("did you mean `{k}`?")),
                None => d.with_help("see docs/language.md for the list of functions"),
            };
            return Err(d);
        };
        if args.len() != f.arity() {
            let plural = if f.arity() == 1 { "" } else { "s" };
            return Err(Diagnostic::new(
                ErrorKind::WrongArity,
                span.clone(),
                format!("`{n}` takes {} argument{plural}, found {}", f.arity(), args.len()),
                format!("expected {} argument{plural}", f.arity()),
            ));
        }
        let ids: Vec<Id> = args.iter().map(|a| self.expr(a)).collect::<Result<_, _>>()?;
        let g = &mut self.graph;
        Ok(match f {
            Function::Unary(op) => g.unary(op, ids[0]),
            Function::Binary(op) => g.binary(op, ids[0], ids[1]),
            Function::Aq => {
                // aq(a, b) = a / sqrt(1 + b^2)
                let one = g.constant(1.0);
                let sq = g.unary(UnOp::Square, ids[1]);
                let s = g.add(one, sq);
                let r = g.unary(UnOp::Sqrt, s);
                g.binary(BinOp::Div, ids[0], r)
            }
        })
    }
}

/// Parses a numeric literal, rejecting values that overflow f64.
fn number(text: &str, span: &Span) -> Result<f64, Diagnostic> {
    // A literal with a nonzero digit before its exponent that parses to 0 underflowed.
    let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
    let nonzero = mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b));
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && (v != 0.0 || !nonzero) => Ok(v),
        Ok(0.0) => Err(Diagnostic::new(
            ErrorKind::BadNumber,
            span.clone(),
            format!("number `{text}` is too small for an f64"),
            "would read as 0",
        )
        .with_help("the smallest f64 is about 4.9e-324; write 0 if 0 is meant")),
        _ => Err(Diagnostic::new(
            ErrorKind::BadNumber,
            span.clone(),
            format!("number `{text}` is out of range"),
            "does not fit an f64",
        )
        .with_help("f64 numbers lie within about 1.8e308")),
    }
}
