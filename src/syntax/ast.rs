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
    /// Nesting depth: 1 for a leaf, one more than the deepest operand otherwise.
    pub depth: u32,
}

/// How deep an expression may nest (a sum of N terms nests N deep; so do N nested calls).
/// Every later stage recurses over the syntax tree at most this deep, so the limit, checked
/// once as the tree is built, is what keeps any input from exhausting the stack.
pub const MAX_DEPTH: u32 = 1000;

/// An expression nested deeper than [`MAX_DEPTH`], at its span.
#[derive(Clone, Debug, PartialEq)]
pub struct TooDeep {
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
    /// A literal, `eps` or a name.
    pub fn leaf(kind: ExprKind, l: usize, r: usize) -> Expr {
        Expr { kind, span: l..r, depth: 1 }
    }

    /// A node over `children`, unless it would nest deeper than [`MAX_DEPTH`].
    fn node(kind: ExprKind, depth: u32, l: usize, r: usize) -> Result<Expr, TooDeep> {
        if depth > MAX_DEPTH { Err(TooDeep { span: l..r }) } else { Ok(Expr { kind, span: l..r, depth }) }
    }

    pub fn binary(op: BinOp, a: Expr, b: Expr, l: usize, r: usize) -> Result<Expr, TooDeep> {
        let depth = 1 + a.depth.max(b.depth);
        Expr::node(ExprKind::Binary(op, Box::new(a), Box::new(b)), depth, l, r)
    }

    pub fn neg(a: Expr, l: usize, r: usize) -> Result<Expr, TooDeep> {
        let depth = 1 + a.depth;
        Expr::node(ExprKind::Neg(Box::new(a)), depth, l, r)
    }

    pub fn call(name: Name, args: Vec<Expr>, l: usize, r: usize) -> Result<Expr, TooDeep> {
        let depth = 1 + args.iter().map(|a| a.depth).max().unwrap_or(0);
        Expr::node(ExprKind::Call { name, args }, depth, l, r)
    }
}
