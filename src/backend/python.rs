//! Python emitter: a loss as a self-contained JAX module (kernels/loss.jax.py.in) whose
//! function carries lossc's symbolic gradient through `jax.custom_vjp`, for researchers' own
//! training code. Each op is a helper of the template named after the op (`_ln`, `_bessel_i0e`,
//! ...), so the emitted body is one line per graph node.

use crate::ir::{BinOp, Graph, Id, Node};
use crate::passes::fuse::Fused;

const JAX_TEMPLATE: &str = include_str!("../../kernels/loss.jax.py.in");

/// A Python float literal for a constant.
fn literal(v: f64) -> String {
    if v.is_nan() {
        "float('nan')".into()
    } else if v.is_infinite() {
        if v > 0.0 { "float('inf')".into() } else { "float('-inf')".into() }
    } else {
        // Rust's shortest round-trip form; Python reads it back to the same f64.
        let s = format!("{v:?}");
        if s.contains(['.', 'e', 'E']) { s } else { format!("{s}.0") }
    }
}

/// The body of `_parts(y, p)`: one assignment per node the two outputs need.
fn body(g: &Graph, outputs: [Id; 2]) -> String {
    let live = g.reachable(&outputs);
    let mut out = String::new();
    for (id, n) in g.iter().filter(|(id, _)| live[id.index()]) {
        let v = |a: Id| format!("v{}", a.index());
        let rhs = match n {
            Node::Input(crate::ir::Input::Y) => "y".to_string(),
            Node::Input(crate::ir::Input::P) => "p".to_string(),
            Node::Const(bits) => literal(f64::from_bits(bits)),
            Node::Unary(op, a) => format!("_{}({})", op.name(), v(a)),
            Node::Binary(op, a, b) => match op.symbol() {
                Some(sym) if op != BinOp::Pow => format!("{} {sym} {}", v(a), v(b)),
                _ => format!("_{}({}, {})", op.name(), v(a), v(b)),
            },
        };
        out += &format!("    v{} = {rhs}\n", id.index());
    }
    let [l, s] = outputs.map(|o| format!("jnp.broadcast_to(v{}, jnp.shape(p))", o.index()));
    out + &format!("    return {l}, {s}\n")
}

/// The source text as a Python comment block.
fn comment(source: &str) -> String {
    let mut out = String::from("# The loss in lossc's language:\n");
    for line in source.lines() {
        out += &format!("#   {line}\n");
    }
    out
}

/// Emits the JAX module of a fused loss; `file` and `source` are where it came from.
pub fn emit_jax(f: &Fused, file: &str, source: &str) -> String {
    let eps = literal(f.graph.eps);
    JAX_TEMPLATE
        .replace("{{NAME}}", &f.name)
        .replace("{{FILE}}", file)
        .replace("{{EPS}}", &eps)
        .replace("{{SOURCE}}\n", &comment(source))
        .replace("{{BODY}}\n", &body(&f.graph, [f.loss(), f.s()]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::UnOp;

    /// Every op of the table has its helper in the template, so an emitted body never calls
    /// a function the module lacks.
    #[test]
    fn the_template_defines_every_op() {
        for op in UnOp::ALL {
            assert!(JAX_TEMPLATE.contains(&format!("\ndef _{}(x)", op.name())), "no _{} in loss.jax.py.in", op.name());
        }
        for op in BinOp::ALL.iter().filter(|o| o.symbol().is_none() || **o == BinOp::Pow) {
            assert!(JAX_TEMPLATE.contains(&format!("\ndef _{}(a, b)", op.name())), "no _{}", op.name());
        }
    }

    #[test]
    fn literals_read_back_in_python_form() {
        assert_eq!(literal(1.0), "1.0");
        assert_eq!(literal(1e-7), "1e-7");
        assert_eq!(literal(-2.5), "-2.5");
        assert_eq!(literal(f64::INFINITY), "float('inf')");
    }
}
