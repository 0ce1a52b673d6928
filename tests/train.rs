//! Training the surrogate on real Fashion-MNIST with compiled losses (Debian's
//! `dataset-fashion-mnist`, installed by scripts/test.sh).

mod common;

use lossc::passes::fuse;
use lossc::train::JitLoss;
use lossc_runtime::augment::{Augment, Technique};
use lossc_runtime::data;
use lossc_runtime::train::{Config, train};
use std::path::Path;

fn loss(file: &str) -> JitLoss {
    let g = lossc::syntax::parse(&std::fs::read_to_string(file).unwrap()).unwrap();
    let name = g.outputs[0].0.clone();
    JitLoss::new(fuse::fuse(&g, &name).unwrap())
}

/// 300 steps on Fashion-MNIST (one thread) reach a validation accuracy far above chance (0.1).
fn trains_far_above_chance(file: &str) {
    if !common::have_fashion_mnist() {
        return;
    }
    let (train_set, _) = data::fashion_mnist(Path::new(data::FASHION_MNIST_DIR)).unwrap();
    let (train_set, val) = train_set.split_validation(5000);
    let val = val.slice(0, 2000); // a quicker validation for the test
    let mut cfg = Config::new(300, Augment::new(Technique::Base));
    cfg.lr = 3e-3;
    cfg.warmup = 30;
    cfg.eval_every = 100;
    let m = train(&loss(file), &train_set, &val, &cfg, &mut |_| {});
    println!(
        "{file}: best validation accuracy {:.3} after {} steps ({:.0} images/s, {:.1} s)",
        m.best_validation_accuracy, m.steps, m.images_per_second, m.wall_seconds
    );
    assert!(m.stopped.is_none(), "{file}: {:?}", m.stopped);
    assert!(m.best_validation_accuracy >= 0.75, "{file}: {}", m.best_validation_accuracy);
}

// Two tests, not one loop: the harness runs them side by side.
#[test]
fn ce_trains_the_surrogate_far_above_chance_on_fashion_mnist() {
    trains_far_above_chance("examples/ce.loss");
}

#[test]
fn a2_trains_the_surrogate_far_above_chance_on_fashion_mnist() {
    trains_far_above_chance("examples/a2.loss");
}
