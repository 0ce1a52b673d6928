//! Random expressions over every operation, for property tests of the passes and backends.

use super::{BinOp, Graph, Id, UnOp};
use crate::rng::Rng;

/// Constants random expressions draw from: signs, small and large magnitudes.
const CONSTANTS: &[f64] = &[0.5, 2.0, -1.0, 1e-3, 3.0, 0.0, 1.0];

/// Adds a random expression of at most `depth` levels to `g` and returns it.
pub fn expr(g: &mut Graph, rng: &mut Rng, depth: u32) -> Id {
    if depth == 0 || rng.chance(0.15) {
        return match rng.below(5) {
            0 | 1 => g.p(),
            2 | 3 => g.y(),
            _ => g.constant(*rng.pick(CONSTANTS)),
        };
    }
    if rng.chance(0.6) {
        let op = *rng.pick(UnOp::ALL);
        let a = expr(g, rng, depth - 1);
        g.unary(op, a)
    } else {
        let op = *rng.pick(BinOp::ALL);
        let a = expr(g, rng, depth - 1);
        let b = expr(g, rng, depth - 1);
        g.binary(op, a, b)
    }
}

/// A graph with one random loss named `l` that depends on `p`.
pub fn loss(rng: &mut Rng, depth: u32) -> Graph {
    loop {
        let mut g = Graph::new(super::DEFAULT_EPS);
        let id = expr(&mut g, rng, depth);
        if g.depends_on(super::Input::P)[id.index()] {
            g.outputs.push(("l".into(), id));
            return g.compact();
        }
    }
}
