//! The f64 reference evaluator: the oracle every backend and test compares to.

use crate::ir::{Graph, Id};
use crate::passes::fuse::Fused;
use crate::reference::contract::{ContractError, KernelOutput, Targets, batch_size};

/// Evaluates every node at one point; `vals` is reused between calls ([`Graph::eval_into`]).
pub fn eval_into(g: &Graph, y: f64, p: f64, vals: &mut Vec<f64>) {
    g.eval_into(y, p, vals)
}

/// The value of one node at one point.
pub fn eval_scalar(g: &Graph, id: Id, y: f64, p: f64) -> f64 {
    let mut vals = Vec::with_capacity(g.len());
    g.eval_into(y, p, &mut vals);
    vals[id.index()]
}

/// Numerically stable softmax of one row.
pub fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Runs the kernel contract in f64 on a fused loss.
pub fn run(f: &Fused, logits: &[f64], classes: usize, targets: &Targets) -> Result<KernelOutput, ContractError> {
    let b = batch_size(logits.len(), classes)?;
    targets.check(b, classes)?;
    targets.check_distributions(classes)?;
    let (loss_id, s_id) = (f.loss(), f.s());
    let mut vals = Vec::with_capacity(f.graph.len());
    let mut row_loss = Vec::with_capacity(b);
    let mut grad = Vec::with_capacity(logits.len());
    let mut s = vec![0.0; classes];
    for (row, z) in logits.chunks_exact(classes).enumerate() {
        let p = softmax(z);
        let mut l = 0.0;
        for c in 0..classes {
            eval_into(&f.graph, targets.y(row, c, classes), p[c], &mut vals);
            l += vals[loss_id.index()];
            s[c] = vals[s_id.index()];
        }
        let sum_s: f64 = s.iter().sum();
        grad.extend((0..classes).map(|c| (s[c] - p[c] * sum_s) / b as f64));
        row_loss.push(l);
    }
    let loss = row_loss.iter().sum::<f64>() / b as f64;
    Ok(KernelOutput { loss, row_loss, grad })
}
