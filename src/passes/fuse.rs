//! Fusion: one loss -> one graph with two outputs, the loss `L(y, p)` and `s = p * dL/dp`.
//!
//! With these two per element a kernel finishes the gradient through the softmax per row:
//! `dL/dz_j = s_j - p_j * sum_c s_c`. Forming `s` symbolically, before simplification, lets
//! factors such as `p * (r / p)` cancel instead of producing `0 * inf` when `p` underflows.

use super::autodiff;
use super::simplify::{Rules, simplify, simplify_with};
use crate::ir::{Graph, Id, Input};

/// Output names of a fused graph.
pub const LOSS: &str = "L";
pub const S: &str = "s";
pub const DL_DP: &str = "dL_dp";

/// The fused forward+backward graph of one loss.
#[derive(Clone, Debug)]
pub struct Fused {
    /// The loss's name in its source file.
    pub name: String,
    /// Outputs `loss` then `s`.
    pub graph: Graph,
}

impl Fused {
    pub fn loss(&self) -> Id {
        self.graph.outputs[0].1
    }
    pub fn s(&self) -> Id {
        self.graph.outputs[1].1
    }
}

/// The loss, `dL/dp` and `s = p * dL/dp` of one output of a module, simplified together, as
/// outputs `loss`, `dL_dp`, `s`; `None` if there is no such loss.
pub fn derivatives(module: &Graph, name: &str) -> Option<Graph> {
    Some(derivatives_of(simplify(&module.extract(name)?)))
}

/// [`derivatives`] of a graph whose first output is the loss, already simplified (the search's
/// screen has just simplified it; a second pass would double the cost).
pub fn derivatives_of(g: Graph) -> Graph {
    simplify_with(&derivatives_unsimplified(g), Rules::Fused)
}

/// [`derivatives_of`] before its final simplification: where this graph is finite the
/// simplified one has the same values (the simplifier's contract), so the search's screen
/// evaluates it first and simplifies only when it meets a NaN or infinity.
pub fn derivatives_unsimplified(mut g: Graph) -> Graph {
    g.outputs.truncate(1);
    g.reserve(3 * g.len()); // a derivative takes a few nodes per node
    let l = g.outputs[0].1;
    let d = autodiff::grad(&mut g, l, Input::P);
    let p = g.p();
    let s = g.mul(p, d);
    g.outputs = vec![(LOSS.into(), l), (DL_DP.into(), d), (S.into(), s)];
    g
}

/// Fuses the named loss of a module; `None` if there is no such loss.
pub fn fuse(module: &Graph, name: &str) -> Option<Fused> {
    let mut g = derivatives(module, name)?;
    g.outputs.remove(1);
    Some(Fused { name: name.to_string(), graph: g.compact() })
}
