//! Optimisers and the learning-rate schedule.

use crate::device::{Device, Tensors, Update};
use crate::layers::Param;

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// Adam (Keras defaults: beta1 0.9, beta2 0.999, eps 1e-7).
    Adam,
    /// SGD with Nesterov momentum 0.9.
    Sgd,
}

/// Optimiser state for a model's parameters (in `params()` order), on the model's device.
pub struct State<D: Device> {
    dev: D,
    pub kind: Optimizer,
    pub weight_decay: f32,
    m: Vec<D::Buf>,
    v: Vec<D::Buf>,
    t: i32,
}

impl<D: Device> State<D> {
    pub fn new(dev: &D, kind: Optimizer, weight_decay: f32) -> Self {
        State { dev: dev.clone(), kind, weight_decay, m: Vec::new(), v: Vec::new(), t: 0 }
    }

    /// The moments (`m` then `v`, one per parameter tensor, made zero where no step has run
    /// yet) and the number of steps taken: what the optimiser carries between steps.
    /// `lens` are the parameter tensors' lengths.
    pub fn state(&mut self, lens: &[usize]) -> (Vec<&mut D::Buf>, &mut i32) {
        if self.m.is_empty() {
            self.m = lens.iter().map(|&n| self.dev.zeros(n)).collect();
            self.v = lens.iter().map(|&n| self.dev.zeros(n)).collect();
        }
        (self.m.iter_mut().chain(self.v.iter_mut()).collect(), &mut self.t)
    }

    /// One update with learning rate `lr`; clears the gradients.
    pub fn step(&mut self, params: &mut [&mut Param<D>], lr: f32) {
        if self.m.is_empty() {
            self.m = params.iter().map(|p| self.dev.zeros(self.dev.len(&p.value))).collect();
            self.v = params.iter().map(|p| self.dev.zeros(self.dev.len(&p.value))).collect();
        }
        self.t += 1;
        let u = match self.kind {
            Optimizer::Adam => {
                let (b1, b2) = (0.9f32, 0.999f32);
                Update::Adam { lr, b1, b2, eps: 1e-7, c1: 1.0 - b1.powi(self.t), c2: 1.0 - b2.powi(self.t) }
            }
            Optimizer::Sgd => Update::Nesterov { lr, mu: 0.9 },
        };
        let mut tensors: Vec<Tensors<'_, D::Buf>> = params
            .iter_mut()
            .zip(&mut self.m)
            .zip(&mut self.v)
            .map(|((p, m), v)| Tensors {
                decay: if p.decay { self.weight_decay } else { 0.0 },
                value: &mut p.value,
                grad: &mut p.grad,
                m,
                v,
            })
            .collect();
        self.dev.update(&u, &mut tensors);
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
