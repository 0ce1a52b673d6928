//! The loss genome of the predecessor (SPEC section 3): inputs `y`, `p`, `1`, `-1`; hidden
//! nodes; a root. Each hidden/root node has a unary op gene, a binary op gene, an arity flag and
//! two operand links. A genome becomes IR (and so `.loss` text) through [`Genome::to_graph`].

use crate::ir::{BinOp, DEFAULT_EPS, Graph, Id, Input, UnOp};
use crate::rng::Rng;

/// Nodes 0..4 are the inputs y, p, 1, -1.
pub const INPUTS: usize = 4;

/// The seven binary operations of the search space, in SPEC order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinGene {
    Add,
    Sub,
    Mul,
    Max,
    Min,
    /// `a / (b + eps)`
    GuardedDiv,
    /// `a / sqrt(1 + b^2)`
    AnalyticQuotient,
}

impl BinGene {
    /// Names in stored genomes.
    pub fn name(self) -> &'static str {
        match self {
            BinGene::Add => "add",
            BinGene::Sub => "sub",
            BinGene::Mul => "mul",
            BinGene::Max => "max",
            BinGene::Min => "min",
            BinGene::GuardedDiv => "div",
            BinGene::AnalyticQuotient => "aq",
        }
    }
    pub const ALL: [BinGene; 7] = [
        BinGene::Add,
        BinGene::Sub,
        BinGene::Mul,
        BinGene::Max,
        BinGene::Min,
        BinGene::GuardedDiv,
        BinGene::AnalyticQuotient,
    ];
}

/// The 27 unary operations of the search space, in SPEC order.
pub fn unary_ops() -> Vec<UnOp> {
    let mut ops: Vec<UnOp> = UnOp::ALL.iter().copied().filter(|o| o.search_index().is_some()).collect();
    ops.sort_by_key(|o| o.search_index());
    ops
}

/// One hidden or root node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Gene {
    pub unary: UnOp,
    pub binary: BinGene,
    pub is_binary: bool,
    /// Operand links: node indices.
    pub a: usize,
    pub b: usize,
}

/// A loss genome: `hidden` hidden nodes then the root.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Genome {
    pub genes: Vec<Gene>,
}

impl Genome {
    pub fn hidden(&self) -> usize {
        self.genes.len() - 1
    }
    fn root(&self) -> usize {
        INPUTS + self.hidden()
    }
    fn gene(&self, node: usize) -> &Gene {
        &self.genes[node - INPUTS]
    }

    /// One line: `unary binary arity a b` per node, `;` between nodes (e.g. `ln add 1 1 0;…`),
    /// as the store keeps it.
    pub fn encode(&self) -> String {
        let genes: Vec<String> = self
            .genes
            .iter()
            .map(|g| format!("{} {} {} {} {}", g.unary.name(), g.binary.name(), g.is_binary as u8 + 1, g.a, g.b))
            .collect();
        genes.join("; ")
    }

    /// Reads [`Genome::encode`]'s format back.
    pub fn decode(s: &str) -> Option<Genome> {
        let genes = s
            .split(';')
            .map(|g| {
                let f: Vec<&str> = g.split_whitespace().collect();
                let [u, b, arity, a, bb] = f[..] else { return None };
                Some(Gene {
                    unary: *UnOp::ALL.iter().find(|o| o.name() == u)?,
                    binary: *BinGene::ALL.iter().find(|o| o.name() == b)?,
                    is_binary: arity == "2",
                    a: a.parse().ok()?,
                    b: bb.parse().ok()?,
                })
            })
            .collect::<Option<Vec<Gene>>>()?;
        let g = Genome { genes };
        let max = INPUTS + g.genes.len();
        (!g.genes.is_empty() && g.genes.iter().all(|x| x.a < max && x.b < max)).then_some(g)
    }

    /// The nodes the root reaches, or None if they form a cycle.
    pub fn active(&self) -> Option<Vec<usize>> {
        let mut state = vec![0u8; self.root() + 1]; // 0 new, 1 on the stack, 2 done
        let mut order = Vec::with_capacity(self.root() + 1);
        fn visit(g: &Genome, n: usize, state: &mut [u8], order: &mut Vec<usize>) -> bool {
            match state[n] {
                1 => return false,
                2 => return true,
                _ => {}
            }
            state[n] = 1;
            if n >= INPUTS {
                let gene = g.gene(n);
                let ok = visit(g, gene.a, state, order) && (!gene.is_binary || visit(g, gene.b, state, order));
                if !ok {
                    return false;
                }
            }
            state[n] = 2;
            order.push(n);
            true
        }
        visit(self, self.root(), &mut state, &mut order).then_some(order)
    }

    /// Valid: the active subgraph is acyclic and reads both y and p.
    pub fn is_valid(&self) -> bool {
        self.active().is_some_and(|a| a.contains(&0) && a.contains(&1))
    }

    /// The loss as a graph with one output `name` (None if invalid).
    pub fn to_graph(&self, name: &str) -> Option<Graph> {
        let order = self.active()?;
        // Sized up front: growing the memo table node by node cost more than the rest of this.
        let mut g = Graph::with_capacity(DEFAULT_EPS, order.len());
        let mut ids: Vec<Option<Id>> = vec![None; self.root() + 1];
        for n in order {
            let id = match n {
                0 => g.input(Input::Y),
                1 => g.input(Input::P),
                2 => g.constant(1.0),
                3 => g.constant(-1.0),
                _ => {
                    let gene = self.gene(n);
                    let a = ids[gene.a].expect("operands come first");
                    if gene.is_binary {
                        let b = ids[gene.b].expect("operands come first");
                        binary(&mut g, gene.binary, a, b)
                    } else {
                        g.unary(gene.unary, a)
                    }
                }
            };
            ids[n] = Some(id);
        }
        g.outputs.push((name.to_string(), ids[self.root()]?));
        Some(g)
    }

    /// A random valid genome (SPEC: hidden nodes 70 % unary, the root 20 % unary).
    pub fn random(rng: &mut Rng, hidden: usize) -> Genome {
        loop {
            let genes = (0..=hidden)
                .map(|i| {
                    let root = i == hidden;
                    let pick = |rng: &mut Rng| {
                        if root {
                            INPUTS + rng.below(hidden)
                        } else {
                            // any node 0..INPUTS+hidden except itself
                            let k = rng.below(INPUTS + hidden - 1);
                            if k >= INPUTS + i { k + 1 } else { k }
                        }
                    };
                    Gene {
                        unary: *rng.pick(&unary_ops()),
                        binary: *rng.pick(&BinGene::ALL),
                        is_binary: rng.chance(if root { 0.8 } else { 0.3 }),
                        a: pick(rng),
                        b: pick(rng),
                    }
                })
                .collect();
            let g = Genome { genes };
            if g.is_valid() {
                return g;
            }
        }
    }

    /// A mutated copy (SPEC section 3): one active hidden-or-root node; 70 % a new op of the
    /// same arity, 15 % a rewired operand, 15 % a toggled arity; retried until valid and
    /// different (up to 2,500 tries, as the predecessor).
    pub fn mutate(&self, rng: &mut Rng) -> Option<Genome> {
        let hidden = self.hidden();
        let active: Vec<usize> = self.active()?.into_iter().filter(|&n| n >= INPUTS).collect();
        for _ in 0..2500 {
            let mut child = self.clone();
            let n = *rng.pick(&active);
            let root = n == self.root();
            let operand = |rng: &mut Rng| {
                if root {
                    INPUTS + rng.below(hidden)
                } else {
                    let k = rng.below(INPUTS + hidden - 1);
                    if k >= n { k + 1 } else { k }
                }
            };
            let gene = &mut child.genes[n - INPUTS];
            let r = rng.f64();
            if r < 0.70 {
                if gene.is_binary {
                    gene.binary = *rng.pick(&BinGene::ALL);
                } else {
                    gene.unary = *rng.pick(&unary_ops());
                }
            } else if r < 0.85 {
                if gene.is_binary && rng.chance(0.2) {
                    std::mem::swap(&mut gene.a, &mut gene.b);
                } else if gene.is_binary && rng.chance(0.5) {
                    gene.b = operand(rng);
                } else {
                    gene.a = operand(rng);
                }
            } else {
                gene.is_binary = !gene.is_binary;
                if gene.is_binary {
                    gene.b = operand(rng);
                }
            }
            if child != *self && child.is_valid() {
                return Some(child);
            }
        }
        None
    }
}

/// A binary gene applied to two nodes, in the language's terms.
fn binary(g: &mut Graph, op: BinGene, a: Id, b: Id) -> Id {
    match op {
        BinGene::Add => g.add(a, b),
        BinGene::Sub => g.sub(a, b),
        BinGene::Mul => g.mul(a, b),
        BinGene::Max => g.binary(BinOp::Max, a, b),
        BinGene::Min => g.binary(BinOp::Min, a, b),
        BinGene::GuardedDiv => {
            let e = g.eps_const();
            let d = g.add(b, e);
            g.div(a, d)
        }
        BinGene::AnalyticQuotient => {
            let one = g.constant(1.0);
            let sq = g.unary(UnOp::Square, b);
            let s = g.add(one, sq);
            let r = g.unary(UnOp::Sqrt, s);
            g.div(a, r)
        }
    }
}
