//! A fused loss as the runtime's [`LossFn`], through the JIT kernel (compiled once per target
//! form and smoothing).

use crate::backend::jit::{self, JitKernel, Spec, TargetKind};
use crate::passes::fuse::Fused;
use crate::reference::contract::Targets;
use lossc_runtime::train::{LabelTargets, LossError, LossFn};
use std::sync::{Arc, Mutex};

/// A compiled loss for training. Kernels are kept per spec here, so a training step does not
/// pay the process cache's key (the printed graph) each time.
pub struct JitLoss {
    pub fused: Fused,
    kernels: Mutex<Vec<(Spec, Arc<JitKernel>)>>,
}

impl JitLoss {
    pub fn new(fused: Fused) -> JitLoss {
        JitLoss { fused, kernels: Mutex::new(Vec::new()) }
    }

    fn kernel(&self, spec: Spec) -> Result<Arc<JitKernel>, jit::JitError> {
        let mut ks = self.kernels.lock().expect("kernel list");
        if let Some((_, k)) = ks.iter().find(|(s, _)| *s == spec) {
            return Ok(k.clone());
        }
        let k = jit::compile(&self.fused, spec)?;
        ks.push((spec, k.clone()));
        Ok(k)
    }
}

impl LossFn for JitLoss {
    fn loss_and_grad(
        &self,
        logits: &[f32],
        classes: usize,
        t: &LabelTargets,
        grad: &mut [f32],
    ) -> Result<f64, LossError> {
        let targets = match (t.labels_b, t.lam) {
            (Some(labels_b), Some(lam)) => Targets::Mixup { labels: t.labels, labels_b, lam, smoothing: t.smoothing },
            _ => Targets::Labels { labels: t.labels, smoothing: t.smoothing },
        };
        let kind = if matches!(targets, Targets::Mixup { .. }) { TargetKind::Mixup } else { TargetKind::Labels };
        let kernel = self.kernel(Spec { kind, smoothing: t.smoothing, classes })?;
        let mut row_loss = vec![0f32; t.labels.len()];
        Ok(kernel.run(logits, &targets, grad, &mut row_loss, 0)?)
    }
}
