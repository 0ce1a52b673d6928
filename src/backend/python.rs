//! Python emitters: a loss as a self-contained JAX module (kernels/loss.jax.py.in) whose
//! function carries lossc's symbolic gradient through `jax.custom_vjp`, or as a PyTorch module
//! (kernels/loss.torch.py.in) whose `torch.autograd.Function` runs the fused CUDA kernel on a
//! GPU and the same loss as tensor ops elsewhere, for researchers' own training code. Each op is
//! a helper of the template named after the op (`_ln`, `_bessel_i0e`, ...), so the emitted body
//! is one line per graph node, the same for both frameworks but for constants and broadcasting.

use crate::ir::{BinOp, Graph, Id, Node};
use crate::passes::fuse::Fused;

const JAX_TEMPLATE: &str = include_str!("../../kernels/loss.jax.py.in");
const TORCH_TEMPLATE: &str = include_str!("../../kernels/loss.torch.py.in");

/// The framework a module is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framework {
    Jax,
    Torch,
}

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

/// The body of `_parts(y, p)`: one assignment per node the two outputs need. PyTorch's
/// constants are tensors (`_c(p, v)`: its element-wise functions take no Python floats).
fn body(g: &Graph, outputs: [Id; 2], fw: Framework) -> String {
    let live = g.reachable(&outputs);
    let mut out = String::new();
    for (id, n) in g.iter().filter(|(id, _)| live[id.index()]) {
        let v = |a: Id| format!("v{}", a.index());
        let rhs = match n {
            Node::Input(crate::ir::Input::Y) => "y".to_string(),
            Node::Input(crate::ir::Input::P) => "p".to_string(),
            Node::Const(bits) if fw == Framework::Torch => format!("_c(p, {})", literal(f64::from_bits(bits))),
            Node::Const(bits) => literal(f64::from_bits(bits)),
            Node::Unary(op, a) => format!("_{}({})", op.name(), v(a)),
            Node::Binary(op, a, b) => match op.symbol() {
                Some(sym) if op != BinOp::Pow => format!("{} {sym} {}", v(a), v(b)),
                _ => format!("_{}({}, {})", op.name(), v(a), v(b)),
            },
        };
        out += &format!("    v{} = {rhs}\n", id.index());
    }
    let [l, s] = outputs.map(|o| match fw {
        Framework::Jax => format!("jnp.broadcast_to(v{}, jnp.shape(p))", o.index()),
        Framework::Torch => format!("torch.broadcast_to(v{}, p.shape)", o.index()),
    });
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
        .replace("{{BODY}}\n", &body(&f.graph, [f.loss(), f.s()], Framework::Jax))
}

/// Emits the PyTorch module of a fused loss; `file` and `source` are where it came from. The
/// module carries the CUDA kernel's source (`backend::cuda`), escaped for a Python string.
pub fn emit_torch(f: &Fused, file: &str, source: &str) -> String {
    let cu = super::cuda::emit(f, &super::cuda::Options { source: source.to_string() });
    let cu = cu.replace('\\', "\\\\").replace("\"\"\"", "\\\"\\\"\\\"");
    TORCH_TEMPLATE
        .replace("{{PREFIX}}", &super::cuda::prefix(&f.name))
        .replace("{{NAME}}", &f.name)
        .replace("{{FILE}}", file)
        .replace("{{EPS}}", &literal(f.graph.eps))
        .replace("{{SOURCE}}\n", &comment(source))
        .replace("{{BODY}}\n", &body(&f.graph, [f.loss(), f.s()], Framework::Torch))
        .replace("{{CUDA}}", &cu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::UnOp;

    /// Every op of the table has its helper in the template, so an emitted body never calls
    /// a function the module lacks.
    #[test]
    fn the_templates_define_every_op() {
        for (file, t) in [("loss.jax.py.in", JAX_TEMPLATE), ("loss.torch.py.in", TORCH_TEMPLATE)] {
            for op in UnOp::ALL {
                assert!(t.contains(&format!("\ndef _{}(x)", op.name())), "no _{} in {file}", op.name());
            }
            for op in BinOp::ALL.iter().filter(|o| o.symbol().is_none() || **o == BinOp::Pow) {
                assert!(t.contains(&format!("\ndef _{}(a, b)", op.name())), "no _{} in {file}", op.name());
            }
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
