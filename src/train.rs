//! Glue between the compiler and the training runtime: a fused loss as the runtime's
//! [`LossFn`], through the JIT kernel (compiled once per target form and smoothing).

use crate::backend::jit::{self, Spec, TargetKind};
use crate::contract::Targets;
use crate::passes::fuse::Fused;
use lossc_runtime::train::{LabelTargets, LossFn};

/// A compiled loss for training.
pub struct JitLoss {
    pub fused: Fused,
}

impl LossFn for JitLoss {
    fn loss_and_grad(&self, logits: &[f32], classes: usize, t: &LabelTargets, grad: &mut [f32]) -> Result<f64, String> {
        let targets = match (t.labels_b, t.lam) {
            (Some(labels_b), Some(lam)) => Targets::Mixup { labels: t.labels, labels_b, lam, smoothing: t.smoothing },
            _ => Targets::Labels { labels: t.labels, smoothing: t.smoothing },
        };
        let kind = if matches!(targets, Targets::Mixup { .. }) { TargetKind::Mixup } else { TargetKind::Labels };
        let kernel =
            jit::compile(&self.fused, Spec { kind, smoothing: t.smoothing, classes }).map_err(|e| e.to_string())?;
        let mut row_loss = vec![0f32; t.labels.len()];
        kernel.run(logits, &targets, grad, &mut row_loss, 0).map_err(|e| e.to_string())
    }
}
