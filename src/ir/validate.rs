//! The graph validator: run once after construction; later code indexes without checks.

use super::{Graph, Node};

/// A broken graph invariant.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("node %{node} reads %{arg}, which does not come before it")]
    ForwardReference { node: usize, arg: usize },
    #[error("nodes %{first} and %{second} are equal: the graph is not hash-consed")]
    Duplicate { first: usize, second: usize },
    #[error("output `{name}` points past the end of the graph")]
    DanglingOutput { name: String },
    #[error("eps = {0} is not a finite number >= 0")]
    BadEps(f64),
}

impl Graph {
    /// Checks the invariants the module docs state.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(ValidationError::BadEps(self.eps));
        }
        let mut seen = std::collections::HashMap::new();
        for (id, n) in self.iter() {
            for a in n.args() {
                if a >= id {
                    return Err(ValidationError::ForwardReference { node: id.index(), arg: a.index() });
                }
            }
            if let Some(first) = seen.insert(n, id) {
                return Err(ValidationError::Duplicate { first: first.index(), second: id.index() });
            }
            debug_assert!(!matches!(n, Node::Const(_)) || n.as_const().is_some());
        }
        for (name, id) in &self.outputs {
            if id.index() >= self.len() {
                return Err(ValidationError::DanglingOutput { name: name.clone() });
            }
        }
        Ok(())
    }
}
