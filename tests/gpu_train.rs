//! Training on the wgpu device (lavapipe in CI): its loss curve follows the CPU device's, and a
//! population of models trains each model to the numbers it reaches alone.
//!
//! Without a Vulkan adapter the tests print why and pass, unless `LOSSC_REQUIRE_VULKAN` is set.
//! The data are small synthetic images (lavapipe runs the kernels on the CPU).

use lossc::ir::Graph;
use lossc::train::{TrainSpec, train_population};
use lossc_runtime::data::Dataset;
use lossc_runtime::gpu::Wgpu;
use lossc_runtime::rng::Rng;
use lossc_runtime::train::Metrics;

fn vulkan() -> bool {
    match Wgpu::new(1) {
        Ok(d) => {
            println!("wgpu adapter: {}", d.adapter());
            true
        }
        Err(e) => {
            println!("SKIPPED: {e} (install mesa-vulkan-drivers for lavapipe; scripts/test.sh does)");
            assert!(std::env::var_os("LOSSC_REQUIRE_VULKAN").is_none(), "LOSSC_REQUIRE_VULKAN is set: {e}");
            false
        }
    }
}

/// 1x8x8 images of 10 classes: class c has brightness (c + 1) / 11, plus noise (features that
/// survive the random shifts and flips of the base augmentation).
fn synthetic(n: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let mut images = Vec::with_capacity(n * 64);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let c = rng.below(10);
        images.extend((0..64).map(|_| (c + 1) as f32 / 11.0 + 0.1 * rng.f64() as f32));
        labels.push(c as u32);
    }
    Dataset { images, labels, shape: (1, 8, 8), classes: 10 }
}

fn splits() -> (Dataset, Dataset, Dataset) {
    (synthetic(256, 1), synthetic(64, 2), synthetic(64, 3))
}

fn spec(device: &str) -> TrainSpec {
    TrainSpec {
        steps: 20,
        batch: 16,
        lr: Some(3e-3),
        warmup: Some(4),
        eval_every: 5,
        gate_step: Some(10),
        gate_accuracy: 0.0,
        test: true,
        device: device.into(),
        ..TrainSpec::default()
    }
}

fn graph(file: &str) -> Graph {
    lossc::syntax::parse(&std::fs::read_to_string(file).unwrap()).unwrap()
}

#[track_caller]
fn same_curve(what: &str, got: &Metrics, want: &Metrics, tol: f64) {
    assert_eq!(got.steps, want.steps, "{what}: steps");
    assert_eq!(got.stopped, want.stopped, "{what}: early stop");
    assert_eq!(got.train.len(), want.train.len(), "{what}: intervals");
    for ((s1, l1, a1), (s2, l2, a2)) in got.train.iter().zip(&want.train) {
        assert_eq!(s1, s2, "{what}: interval steps");
        assert!((l1 - l2).abs() <= tol * l2.abs().max(1.0), "{what}: loss at step {s1}: {l1} vs {l2}");
        assert!((a1 - a2).abs() <= 1.5 / 80.0, "{what}: training accuracy at step {s1}: {a1} vs {a2}");
    }
    for ((s1, v1), (_, v2)) in got.validation.iter().zip(&want.validation) {
        assert!((v1 - v2).abs() <= 1.5 / 64.0, "{what}: validation accuracy at step {s1}: {v1} vs {v2}");
    }
}

/// 20 steps on wgpu and on the CPU: the interval losses agree to 1e-3 (float32 rounding grows
/// over the steps; a wrong kernel is off by far more), accuracies to one image.
#[test]
fn wgpu_training_follows_the_cpu_loss_curve() {
    if !vulkan() {
        return;
    }
    let data = splits();
    let g = graph("examples/a2.loss");
    let cpu = train_population(&[&g], &spec("cpu"), &data, &mut |_| {}).unwrap().remove(0);
    let gpu = train_population(&[&g], &spec("wgpu"), &data, &mut |_| {}).unwrap().remove(0);
    println!("cpu  {:?}\nwgpu {:?}", cpu.train, gpu.train);
    assert!(gpu.device.starts_with("wgpu"), "{}", gpu.device);
    assert!(cpu.train.last().unwrap().1 < cpu.train[0].1, "the loss falls: {:?}", cpu.train);
    same_curve("a2 wgpu vs cpu", &gpu, &cpu, 1e-3);
    assert!((gpu.test_accuracy.unwrap() - cpu.test_accuracy.unwrap()).abs() <= 1.5 / 64.0);
}

/// Model k of a population of four (four different losses, one of which overflows at once)
/// ends with the numbers it reaches when trained alone.
#[test]
fn a_population_trains_each_model_as_if_alone() {
    if !vulkan() {
        return;
    }
    let data = splits();
    let files = ["examples/ce.loss", "examples/a2.loss", "examples/m0.loss"];
    let mut graphs: Vec<Graph> = files.iter().map(|f| graph(f)).collect();
    graphs.insert(2, lossc::syntax::parse("loss overflow = exp(exp(10 - p));").unwrap());
    let refs: Vec<&Graph> = graphs.iter().collect();
    let together = train_population(&refs, &spec("wgpu"), &data, &mut |_| {}).unwrap();
    assert_eq!(together.len(), 4);
    for (k, g) in graphs.iter().enumerate() {
        let alone = train_population(&[g], &spec("wgpu"), &data, &mut |_| {}).unwrap().remove(0);
        let what = format!("model {k} ({})", g.outputs[0].0);
        println!("{what}: together {:?} alone {:?}", together[k].train, alone.train);
        assert_eq!(together[k].population, 4);
        same_curve(&what, &together[k], &alone, 1e-6);
        assert_eq!(together[k].validation, alone.validation, "{what}: validation");
        assert_eq!(together[k].test_accuracy, alone.test_accuracy, "{what}: test accuracy");
    }
    let stopped = together[2].stopped.as_deref().unwrap_or("");
    assert!(stopped.ends_with("at step 0"), "the overflowing loss stops at once: {stopped:?}");
    assert!(together.iter().enumerate().all(|(k, m)| k == 2 || m.stopped.is_none()));
}
