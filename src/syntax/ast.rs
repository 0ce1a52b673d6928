//! The syntax tree the grammar builds; every node keeps its byte span for diagnostics.

use crate::ir::BinOp;
use std::ops::Range;

pub type Span = Range<usize>;

/// A name with where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Name {
    pub text: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// A numeric literal, still as text (checked for range when lowered).
    Num(String),
    /// The file's `eps`.
    Eps,
    /// `y`, `p` or a `let` name.
    Var(String),
    Call {
        name: Name,
        args: Vec<Expr>,
    },
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `eps = 1e-7;`
    Eps { value: Expr, span: Span },
    /// `let name = expr;`
    Let { name: Name, value: Expr },
    /// `loss name = expr;`
    Loss { name: Name, value: Expr },
}

impl Expr {
    pub fn binary(op: BinOp, a: Expr, b: Expr, l: usize, r: usize) -> Expr {
        Expr { kind: ExprKind::Binary(op, Box::new(a), Box::new(b)), span: l..r }
    }
}
