//! The expression graph every stage shares.
//!
//! Invariants (checked by [`Graph::validate`], relied on everywhere else):
//! - Nodes live in one arena and are named by typed handles ([`Id`]).
//! - Children come before parents: an operand's index is always lower than its user's, so arena
//!   order is a topological order and every pass is a plain forward loop.
//! - Hash-consed: no two nodes are equal, so equal subexpressions are one node (common
//!   subexpression elimination for free). Constants are stored as bits so `Eq`/`Hash` hold.
//! - `eps` is one value per graph: the guard used by `ln`, `log10`, `softplus`, `recip` and the
//!   `eps` constant of the source file.

pub mod op;
pub mod print;
pub mod random;
pub mod validate;

use rustc_hash::FxHashMap as HashMap;
use std::fmt;
use std::num::NonZeroU32;

pub use op::{BinOp, UnOp};

/// Keras' epsilon, the paper's default guard.
pub const DEFAULT_EPS: f64 = 1e-7;

/// A typed handle to a node in a [`Graph`]. Only valid for the graph that made it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(NonZeroU32);

impl Id {
    /// The handle at an arena position (for passes that walk positions).
    pub fn from_index(i: usize) -> Id {
        Id(NonZeroU32::new(i as u32 + 1).expect("graph too large"))
    }
    /// Position in the arena (and in any per-node table a pass builds).
    pub fn index(self) -> usize {
        self.0.get() as usize - 1
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.index())
    }
}

/// The two per-element inputs of a loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Input {
    /// Target probability of the class.
    Y,
    /// Softmax output of the class.
    P,
}

/// One node of the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    Input(Input),
    /// An f64 constant, stored as its bit pattern (so `-0.0` and `0.0` are distinct nodes).
    Const(u64),
    Unary(UnOp, Id),
    Binary(BinOp, Id, Id),
}

impl Node {
    /// The operands, in order.
    pub fn args(&self) -> impl Iterator<Item = Id> {
        let (a, b) = match *self {
            Node::Input(_) | Node::Const(_) => (None, None),
            Node::Unary(_, a) => (Some(a), None),
            Node::Binary(_, a, b) => (Some(a), Some(b)),
        };
        a.into_iter().chain(b)
    }

    /// The value of a constant node.
    pub fn as_const(&self) -> Option<f64> {
        match *self {
            Node::Const(bits) => Some(f64::from_bits(bits)),
            _ => None,
        }
    }
}

/// A hash-consed expression graph with named outputs (the losses of a file, or the fused
/// forward+backward outputs of one loss).
#[derive(Clone, Debug)]
pub struct Graph {
    nodes: Vec<Node>,
    memo: HashMap<Node, Id>,
    /// The guard value of this graph (see the module docs).
    pub eps: f64,
    /// Named outputs in source order.
    pub outputs: Vec<(String, Id)>,
}

impl Graph {
    pub fn new(eps: f64) -> Graph {
        Graph { nodes: Vec::new(), memo: HashMap::default(), eps, outputs: Vec::new() }
    }

    /// An empty graph with room for `n` nodes (passes that rebuild a graph know about how many
    /// it will have; growing the memo table step by step costs more than the nodes do).
    pub fn with_capacity(eps: f64, n: usize) -> Graph {
        let memo = HashMap::with_capacity_and_hasher(n, Default::default());
        Graph { nodes: Vec::with_capacity(n), memo, eps, outputs: Vec::new() }
    }

    /// Inserts a node, returning the existing handle when an equal node is already present.
    pub fn insert(&mut self, node: Node) -> Id {
        // One probe of the memo table for both the lookup and the insertion.
        match self.memo.entry(node) {
            std::collections::hash_map::Entry::Occupied(e) => *e.get(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let id = Id::from_index(self.nodes.len());
                debug_assert!(node.args().all(|a| a < id), "children must come before parents");
                self.nodes.push(node);
                *e.insert(id)
            }
        }
    }

    /// Room for `n` more nodes.
    pub fn reserve(&mut self, n: usize) {
        self.nodes.reserve(n);
        self.memo.reserve(n);
    }

    pub fn input(&mut self, i: Input) -> Id {
        self.insert(Node::Input(i))
    }
    pub fn y(&mut self) -> Id {
        self.input(Input::Y)
    }
    pub fn p(&mut self) -> Id {
        self.input(Input::P)
    }
    pub fn constant(&mut self, v: f64) -> Id {
        self.insert(Node::Const(v.to_bits()))
    }
    /// The `eps` constant of this graph.
    pub fn eps_const(&mut self) -> Id {
        self.constant(self.eps)
    }
    pub fn unary(&mut self, op: UnOp, a: Id) -> Id {
        self.insert(Node::Unary(op, a))
    }
    pub fn binary(&mut self, op: BinOp, a: Id, b: Id) -> Id {
        self.insert(Node::Binary(op, a, b))
    }

    pub fn neg(&mut self, a: Id) -> Id {
        self.unary(UnOp::Neg, a)
    }
    pub fn add(&mut self, a: Id, b: Id) -> Id {
        self.binary(BinOp::Add, a, b)
    }
    pub fn sub(&mut self, a: Id, b: Id) -> Id {
        self.binary(BinOp::Sub, a, b)
    }
    pub fn mul(&mut self, a: Id, b: Id) -> Id {
        self.binary(BinOp::Mul, a, b)
    }
    pub fn div(&mut self, a: Id, b: Id) -> Id {
        self.binary(BinOp::Div, a, b)
    }

    /// The node behind a handle.
    pub fn node(&self, id: Id) -> Node {
        self.nodes[id.index()]
    }
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    /// All nodes with their handles, children before parents.
    pub fn iter(&self) -> impl Iterator<Item = (Id, Node)> + '_ {
        self.nodes.iter().enumerate().map(|(i, n)| (Id::from_index(i), *n))
    }
    /// The handle of an existing node, if present.
    pub fn find(&self, node: &Node) -> Option<Id> {
        self.memo.get(node).copied()
    }
    /// The output with this name.
    pub fn output(&self, name: &str) -> Option<Id> {
        self.outputs.iter().find(|(n, _)| n == name).map(|(_, id)| *id)
    }

    /// Which nodes the given roots reach (inclusive).
    pub fn reachable(&self, roots: &[Id]) -> Vec<bool> {
        let mut live = vec![false; self.len()];
        for r in roots {
            live[r.index()] = true;
        }
        for i in (0..self.len()).rev() {
            if live[i] {
                for a in self.nodes[i].args() {
                    live[a.index()] = true;
                }
            }
        }
        live
    }

    /// Whether the expression at `root` reads the input `which`: one entry of
    /// [`Graph::depends_on`], without a table on the heap for small graphs (the search's screen
    /// asks it of every candidate).
    pub fn reads(&self, root: Id, which: Input) -> bool {
        let n = root.index() + 1;
        let mut small = [false; 64];
        let mut large = Vec::new();
        let live: &mut [bool] = if n <= small.len() {
            &mut small[..n]
        } else {
            large.resize(n, false);
            &mut large
        };
        live[root.index()] = true;
        for i in (0..n).rev() {
            if live[i] {
                if self.nodes[i] == Node::Input(which) {
                    return true;
                }
                for a in self.nodes[i].args() {
                    live[a.index()] = true;
                }
            }
        }
        false
    }

    /// Which nodes depend on the input `which`.
    pub fn depends_on(&self, which: Input) -> Vec<bool> {
        let mut dep = vec![false; self.len()];
        for (id, n) in self.iter() {
            dep[id.index()] = match n {
                Node::Input(i) => i == which,
                Node::Const(_) => false,
                _ => n.args().any(|a| dep[a.index()]),
            };
        }
        dep
    }

    /// Every node's f64 value at one point, by the op table's reference semantics; `vals` is
    /// reused between calls. (The interpreter runs this per element; the front end folds
    /// `eps` with it.)
    pub fn eval_into(&self, y: f64, p: f64, vals: &mut Vec<f64>) {
        vals.clear();
        for (_, n) in self.iter() {
            let v = match n {
                Node::Input(Input::Y) => y,
                Node::Input(Input::P) => p,
                Node::Const(bits) => f64::from_bits(bits),
                Node::Unary(op, a) => op.eval(vals[a.index()], self.eps),
                Node::Binary(op, a, b) => op.eval(vals[a.index()], vals[b.index()]),
            };
            vals.push(v);
        }
    }

    /// Number of operation nodes (unary + binary) reachable from the outputs.
    pub fn op_count(&self) -> usize {
        let roots: Vec<Id> = self.outputs.iter().map(|(_, id)| *id).collect();
        let live = self.reachable(&roots);
        self.iter().filter(|(id, n)| live[id.index()] && matches!(n, Node::Unary(..) | Node::Binary(..))).count()
    }

    /// Copies the subgraph reachable from `roots` into `dst`, returning the new handles.
    /// This is dead-node removal when `dst` starts empty.
    pub fn copy_into(&self, roots: &[Id], dst: &mut Graph) -> Vec<Id> {
        let live = self.reachable(roots);
        let mut map: Vec<Option<Id>> = vec![None; self.len()];
        for (id, n) in self.iter() {
            if !live[id.index()] {
                continue;
            }
            let m = |a: Id| map[a.index()].expect("child copied first");
            let new = match n {
                Node::Input(_) | Node::Const(_) => n,
                Node::Unary(op, a) => Node::Unary(op, m(a)),
                Node::Binary(op, a, b) => Node::Binary(op, m(a), m(b)),
            };
            map[id.index()] = Some(dst.insert(new));
        }
        roots.iter().map(|r| map[r.index()].unwrap()).collect()
    }

    /// A new graph holding only what the named outputs reach, in the same order.
    pub fn compact(&self) -> Graph {
        if self.all_live() { self.clone() } else { self.copy_live() }
    }

    /// [`Graph::compact`], reusing this graph when nothing in it is dead.
    pub fn into_compact(self) -> Graph {
        if self.all_live() { self } else { self.copy_live() }
    }

    /// Whether the outputs reach every node (then compacting copies the graph node for node).
    pub fn all_live(&self) -> bool {
        // Without allocating for the small graphs the search builds by the million.
        let mut small = [false; 64];
        let mut large = Vec::new();
        let live: &mut [bool] = if self.len() <= small.len() {
            &mut small[..self.len()]
        } else {
            large.resize(self.len(), false);
            &mut large
        };
        for (_, id) in &self.outputs {
            live[id.index()] = true;
        }
        for i in (0..self.len()).rev() {
            if live[i] {
                for a in self.nodes[i].args() {
                    live[a.index()] = true;
                }
            }
        }
        live.iter().all(|&l| l)
    }

    pub(crate) fn copy_live(&self) -> Graph {
        let mut g = Graph::with_capacity(self.eps, self.len());
        let roots: Vec<Id> = self.outputs.iter().map(|(_, id)| *id).collect();
        let new = self.copy_into(&roots, &mut g);
        g.outputs = self.outputs.iter().zip(new).map(|((n, _), id)| (n.clone(), id)).collect();
        g
    }

    /// A graph holding one output of this one.
    pub fn extract(&self, name: &str) -> Option<Graph> {
        let id = self.output(name)?;
        let mut g = Graph::new(self.eps);
        let new = self.copy_into(&[id], &mut g)[0];
        g.outputs.push((name.to_string(), new));
        Some(g)
    }

    /// Structural equality of two expressions that may live in different graphs.
    pub fn same_expr(&self, a: Id, other: &Graph, b: Id) -> bool {
        let mut memo = HashMap::default();
        self.same_rec(a, other, b, &mut memo)
    }

    fn same_rec(&self, a: Id, o: &Graph, b: Id, memo: &mut HashMap<(Id, Id), bool>) -> bool {
        if let Some(&r) = memo.get(&(a, b)) {
            return r;
        }
        let r = match (self.node(a), o.node(b)) {
            (Node::Input(x), Node::Input(y)) => x == y,
            (Node::Const(x), Node::Const(y)) => x == y,
            (Node::Unary(f, x), Node::Unary(g, y)) => f == g && self.same_rec(x, o, y, memo),
            (Node::Binary(f, x1, x2), Node::Binary(g, y1, y2)) => {
                f == g && self.same_rec(x1, o, y1, memo) && self.same_rec(x2, o, y2, memo)
            }
            _ => false,
        };
        memo.insert((a, b), r);
        r
    }

    /// Same eps, same output names, and structurally equal outputs.
    pub fn same_as(&self, other: &Graph) -> bool {
        if self.eps.to_bits() != other.eps.to_bits() || self.outputs.len() != other.outputs.len() {
            return false;
        }
        // The same arena and outputs: equal without a walk (the common case of a pass that
        // reached its fixpoint, which rebuilds a compact graph in the same order).
        if self.nodes == other.nodes && self.outputs == other.outputs {
            return true;
        }
        self.outputs.iter().zip(&other.outputs).all(|((n1, a), (n2, b))| n1 == n2 && self.same_expr(*a, other, *b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `reads` is the matching entry of `depends_on`, for every node of random graphs small and
    /// large (past the 64 nodes it keeps on the stack) and both inputs.
    #[test]
    fn reads_agrees_with_depends_on() {
        let mut rng = crate::rng::Rng::new(21);
        let mut large = 0;
        for _ in 0..300 {
            let mut g = Graph::new(DEFAULT_EPS);
            for _ in 0..1 + rng.below(40) {
                let depth = 1 + rng.below(7) as u32;
                random::expr(&mut g, &mut rng, depth);
            }
            large += (g.len() > 64) as usize;
            for which in [Input::Y, Input::P] {
                let dep = g.depends_on(which);
                for (id, _) in g.iter() {
                    assert_eq!(g.reads(id, which), dep[id.index()], "{which:?} at {id:?}:\n{}", print::dump(&g));
                }
            }
        }
        assert!(large > 10, "{large} graphs past 64 nodes");
    }
}
