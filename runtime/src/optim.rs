//! Optimisers and the learning-rate schedule.

use crate::layers::Param;

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// Adam (Keras defaults: beta1 0.9, beta2 0.999, eps 1e-7).
    Adam,
    /// SGD with Nesterov momentum 0.9.
    Sgd,
}

/// Optimiser state for a model's parameters (in `params()` order).
pub struct State {
    pub kind: Optimizer,
    pub weight_decay: f32,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    t: i32,
}

impl State {
    pub fn new(kind: Optimizer, weight_decay: f32) -> State {
        State { kind, weight_decay, m: Vec::new(), v: Vec::new(), t: 0 }
    }

    /// One update with learning rate `lr`; clears the gradients.
    pub fn step(&mut self, params: &mut [&mut Param], lr: f32) {
        if self.m.is_empty() {
            self.m = params.iter().map(|p| vec![0.0; p.value.len()]).collect();
            self.v = params.iter().map(|p| vec![0.0; p.value.len()]).collect();
        }
        self.t += 1;
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-7f32);
        let (c1, c2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        for (i, p) in params.iter_mut().enumerate() {
            let wd = if p.decay { self.weight_decay } else { 0.0 };
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            for j in 0..p.value.len() {
                // L2 weight decay, added to the gradient.
                let g = p.grad[j] + wd * p.value[j];
                match self.kind {
                    Optimizer::Adam => {
                        m[j] = b1 * m[j] + (1.0 - b1) * g;
                        v[j] = b2 * v[j] + (1.0 - b2) * g * g;
                        p.value[j] -= lr * (m[j] / c1) / ((v[j] / c2).sqrt() + eps);
                    }
                    Optimizer::Sgd => {
                        m[j] = 0.9 * m[j] + g;
                        p.value[j] -= lr * (g + 0.9 * m[j]);
                    }
                }
                p.grad[j] = 0.0;
            }
        }
    }
}

/// One-cycle cosine schedule: linear warm-up from 0 to `peak` over `warmup` steps, then cosine
/// decay to 0 at `total`.
pub fn one_cycle(step: usize, total: usize, warmup: usize, peak: f32) -> f32 {
    if step < warmup {
        peak * (step as f32 + 1.0) / warmup as f32
    } else {
        let t = (step - warmup) as f32 / (total.saturating_sub(warmup)).max(1) as f32;
        0.5 * peak * (1.0 + (std::f32::consts::PI * t.min(1.0)).cos())
    }
}
