//! Training on the GPU devices: wgpu (lavapipe in CI) and CUDA (an NVIDIA GPU; in CI, the fake
//! driver of tests/cuda_emu, which runs the kernels on the CPU emulator). On each, the loss
//! curve follows the CPU device's, a population of models trains each model to the numbers it
//! reaches alone, and paused models go on together; on wgpu a search worker trains its jobs as
//! one population; on CUDA graphs replay a training exactly; on a GPU with both, CUDA and wgpu
//! follow the same curve, and 300 steps on Fashion-MNIST reach the CPU's accuracy band.
//!
//! Without a Vulkan adapter or a CUDA device the tests print why and pass, unless
//! `LOSSC_REQUIRE_VULKAN` or `LOSSC_REQUIRE_CUDA` is set. The data of the curve tests are
//! small synthetic images (lavapipe runs the kernels on the CPU).

mod common;

use lossc::ir::Graph;
use lossc::train::{TrainSpec, train_population, train_population_from};
use lossc_runtime::cuda::Cuda;
use lossc_runtime::data::Dataset;
use lossc_runtime::rng::Rng;
use lossc_runtime::train::Metrics;
use lossc_runtime::train::{Checkpoint, Halt, Outcome, Start};

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

/// How far (relative) a model's losses in a population may be from its losses alone: the sums
/// of a weight gradient split over as many workgroups as fill the device, which depends on the
/// population's size (on lavapipe with 2 cores, the stem's in two parts alone and in one
/// beside others), so float32 rounding differs, and a diverging loss makes that grow. A model
/// given another's kernel or data is off by far more (2.46 against 3.64).
const AS_IF_ALONE: f64 = 1e-5;

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

/// 20 steps on `device` and on the CPU: the interval losses agree to 1e-3 (float32 rounding
/// grows over the steps; a wrong kernel is off by far more), accuracies to one image.
fn follows_the_cpu(device: &str) {
    if !common::have_device(device) {
        return;
    }
    let data = splits();
    let g = graph("examples/a2.loss");
    let cpu = train_population(&[&g], &spec("cpu"), &data, &mut |_| {}).unwrap().remove(0);
    let gpu = train_population(&[&g], &spec(device), &data, &mut |_| {}).unwrap().remove(0);
    println!("cpu  {:?}\n{device} {:?}", cpu.train, gpu.train);
    assert!(gpu.device.starts_with(device), "{}", gpu.device);
    assert!(cpu.train.last().unwrap().1 < cpu.train[0].1, "the loss falls: {:?}", cpu.train);
    same_curve(&format!("a2 {device} vs cpu"), &gpu, &cpu, 1e-3);
    assert!((gpu.test_accuracy.unwrap() - cpu.test_accuracy.unwrap()).abs() <= 1.5 / 64.0);
}

#[test]
fn wgpu_training_follows_the_cpu_loss_curve() {
    follows_the_cpu("wgpu");
}

#[test]
fn cuda_training_follows_the_cpu_loss_curve() {
    follows_the_cpu("cuda");
}

/// Model k of a population of four on `device` (CE, A2, a loss that overflows at once, and CE
/// again: one kernel built for two models) ends with the numbers it reaches when trained alone.
fn each_model_as_if_alone(device: &str) {
    if !common::have_device(device) {
        return;
    }
    let data = splits();
    let mut graphs = vec![graph("examples/ce.loss"), graph("examples/a2.loss")];
    graphs.push(lossc::syntax::parse("loss overflow = exp(exp(10 - p));").unwrap());
    let mut alone: Vec<Metrics> =
        graphs.iter().map(|g| train_population(&[g], &spec(device), &data, &mut |_| {}).unwrap().remove(0)).collect();
    graphs.push(graph("examples/ce.loss"));
    alone.push(alone[0].clone());
    let refs: Vec<&Graph> = graphs.iter().collect();
    let together = train_population(&refs, &spec(device), &data, &mut |_| {}).unwrap();
    assert_eq!(together.len(), 4);
    for (k, (g, alone)) in graphs.iter().zip(&alone).enumerate() {
        let what = format!("{device} model {k} ({})", g.outputs[0].0);
        println!("{what}: together {:?} alone {:?}", together[k].train, alone.train);
        assert_eq!(together[k].population, 4);
        same_curve(&what, &together[k], alone, AS_IF_ALONE);
        assert_eq!(together[k].validation, alone.validation, "{what}: validation");
        assert_eq!(together[k].test_accuracy, alone.test_accuracy, "{what}: test accuracy");
    }
    let stopped = together[2].stopped.as_deref().unwrap_or("");
    assert!(stopped.ends_with("at step 0"), "the overflowing loss stops at once: {stopped:?}");
    assert!(together.iter().enumerate().all(|(k, m)| k == 2 || m.stopped.is_none()));
}

#[test]
fn a_population_trains_each_model_as_if_alone() {
    each_model_as_if_alone("wgpu");
}

#[test]
fn a_cuda_population_trains_each_model_as_if_alone() {
    each_model_as_if_alone("cuda");
}

/// On a GPU with both devices: a population of two on CUDA and on wgpu follows the same
/// curves (the same kernel text, compiled by NVRTC and by the Vulkan driver).
#[test]
fn cuda_and_wgpu_agree_on_the_same_gpu() {
    if !common::have_device("cuda") || !common::have_device("wgpu") {
        return;
    }
    let data = splits();
    let graphs = [graph("examples/ce.loss"), graph("examples/m1.loss")];
    let refs: Vec<&Graph> = graphs.iter().collect();
    let cuda = train_population(&refs, &spec("cuda"), &data, &mut |_| {}).unwrap();
    let wgpu = train_population(&refs, &spec("wgpu"), &data, &mut |_| {}).unwrap();
    for k in 0..2 {
        same_curve(&format!("model {k}: cuda vs wgpu"), &cuda[k], &wgpu[k], 1e-3);
    }
}

/// On a CUDA device: 300 steps on Fashion-MNIST (batch 128, base augmentation) reach the
/// validation accuracy the CPU device reaches with the same seed, within 3 points.
#[test]
fn cuda_reaches_the_cpu_accuracy_on_fashion_mnist() {
    if !common::have_device("cuda") || !common::have_fashion_mnist() {
        return;
    }
    let spec = |device: &str| TrainSpec {
        steps: 300,
        eval_every: 100,
        val: 2000,
        gate_accuracy: 0.0,
        device: device.into(),
        ..TrainSpec::default()
    };
    let data = lossc::train::load_data(&spec("cpu").data, 2000).unwrap();
    let g = graph("examples/ce.loss");
    let cpu = train_population(&[&g], &spec("cpu"), &data, &mut |_| {}).unwrap().remove(0);
    let gpu = train_population(&[&g], &spec("cuda"), &data, &mut |_| {}).unwrap().remove(0);
    println!(
        "cpu  {:?} ({:.0} images/s)\ncuda {:?} ({:.0} images/s)",
        cpu.validation, cpu.images_per_second, gpu.validation, gpu.images_per_second
    );
    assert!(cpu.best_validation_accuracy > 0.6, "the CPU learns: {:?}", cpu.validation);
    let gap = (gpu.best_validation_accuracy - cpu.best_validation_accuracy).abs();
    assert!(gap <= 0.03, "cuda {} vs cpu {}", gpu.best_validation_accuracy, cpu.best_validation_accuracy);
}

/// A search whose worker claims up to 3 jobs at a time and trains them as one population
/// (`--models 3`: to the gate, where the survivors of two populations are parked and go on
/// together) stores the results of one job at a time (`--models 1`), and the jobs of a round
/// did train together. On wgpu (lavapipe in CI).
#[test]
fn a_search_worker_trains_its_jobs_as_one_population() {
    if !common::have_device("wgpu") || !common::have_fashion_mnist() {
        return;
    }
    let run = |models: &str| {
        let dir = common::scratch_dir(&format!("population-search-{models}"));
        let db = dir.join("s.db");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lossc"))
            .args(["search", "--population", "3", "--initial", "6", "--tournament", "2", "--iterations", "3"])
            .args(["--round", "3", "--steps", "9", "--batch", "8", "--val", "64", "--eval-every", "3"])
            .args(["--gate-step", "6", "--gate-accuracy", "0.1", "--lr", "0.003", "--warmup", "2", "--seed", "3"])
            .args(["--device", "wgpu", "--workers", "1", "--models", models, "--lease", "1"])
            .arg("--db")
            .arg(&db)
            .arg("--out")
            .arg(dir.join("out"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        // Heartbeats every 0.2 s (--lease 1) meet jobs stored at the gate while the survivors
        // train on: done, not lost.
        assert!(!err.contains("lost the lease"), "{err}");
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut q = conn.prepare("SELECT key, metrics FROM results ORDER BY key").unwrap();
        let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).unwrap();
        rows.map(|r| r.unwrap()).map(|(k, m)| (k, serde_json::from_str::<Metrics>(&m).unwrap())).collect::<Vec<_>>()
    };
    let together = run("3");
    let alone = run("1");
    assert_eq!(together.len(), 9, "6 initial losses and 3 children");
    assert_eq!(together.iter().map(|r| &r.0).collect::<Vec<_>>(), alone.iter().map(|r| &r.0).collect::<Vec<_>>());
    for ((key, t), (_, a)) in together.iter().zip(&alone) {
        println!("{key}: population {} / {}, fitness {} / {}", t.population, a.population, t.fitness, a.fitness);
        assert!(t.population <= 3 && a.population == 1, "{key}");
        same_curve(key, t, a, AS_IF_ALONE);
        assert_eq!(t.validation, a.validation, "{key}");
        assert_eq!(t.fitness, a.fitness, "{key}");
    }
    assert!(together.iter().any(|r| r.1.population == 3), "some round trained as one population of 3");
    let gated =
        together.iter().filter(|r| r.1.stopped.as_deref().is_some_and(|s| s.contains("< 0.1 at step 6"))).count();
    assert!(gated > 0 && together.iter().any(|r| r.1.steps == 9), "some fail the gate ({gated}), some go on");
}

/// Without `--round`, a search on a GPU device generates a child for each model its workers
/// train at once (`--workers` times `--models`), so that no population runs with empty slots,
/// up to the evolution's population; on the CPU, which trains one job at a time, a child per
/// worker. A second round is generated ahead (`--lag 1`) where two rounds fit in the
/// population.
#[test]
fn a_gpu_search_without_round_fills_its_workers_populations() {
    if !common::have_device("wgpu") || !common::have_fashion_mnist() {
        return;
    }
    let dir = common::scratch_dir("search-round");
    let round = |device: &str, population: &str| {
        let db = dir.join(format!("{device}-{population}.db"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lossc"))
            .args(["search", "--population", population, "--initial", "8", "--tournament", "2", "--iterations", "4"])
            .args(["--steps", "4", "--batch", "8", "--val", "64", "--device", device, "--workers", "2"])
            .args(["--models", "3", "--time-limit", "1s", "--db"])
            .arg(&db)
            .arg("--out")
            .arg(dir.join(format!("{device}-{population}-out")))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let conn = rusqlite::Connection::open(&db).unwrap();
        let settings: String =
            conn.query_row("SELECT settings FROM runs WHERE name = 'search'", [], |r| r.get(0)).unwrap();
        let v = serde_json::from_str::<serde_json::Value>(&settings).unwrap();
        (v["evolution"]["round"].as_u64(), v["evolution"]["lag"].as_u64())
    };
    // Two rounds in flight where both fit in the population; the lag is left out where 0.
    assert_eq!(round("wgpu", "8"), (Some(6), None), "2 workers with populations of 3");
    assert_eq!(round("wgpu", "4"), (Some(4), None), "at most the evolution's population");
    assert_eq!(round("cpu", "8"), (Some(2), Some(1)), "2 workers, one job at a time");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each model's outcome of a run paused at `pause` (10 of the spec's 20 steps).
fn paused_run(
    graphs: &[&Graph],
    spec: &TrainSpec,
    data: &(Dataset, Dataset, Dataset),
) -> (Vec<Outcome>, Option<Checkpoint>) {
    train_population_from(graphs, spec, data, Start::Fresh, Halt { pause: Some(10), ..Halt::default() }, &mut |_| {})
        .unwrap()
}

/// A training paused at step 10 and resumed ends where the uninterrupted one does, on
/// `device`; on a GPU device the paused models go on in a new population, beside models
/// paused in another one, in another order. A model that stopped before the pause comes back
/// done.
fn pause_and_resume(device: &str, tol: f64) {
    if !common::have_device(device) {
        return;
    }
    let data = splits();
    let spec = spec(device);
    let graphs: Vec<Graph> = ["ce", "a2", "m0", "m1"].iter().map(|l| graph(&format!("examples/{l}.loss"))).collect();
    let overflow = lossc::syntax::parse("loss overflow = exp(exp(10 - p));").unwrap();
    let (first, second) = ([&graphs[0], &graphs[1], &overflow], [&graphs[2], &graphs[3]]);
    let (mut a, at_a) = paused_run(&first, &spec, &data);
    let (mut b, at_b) = paused_run(&second, &spec, &data);
    let at = at_a.expect("paused");
    assert_eq!(Some(&at), at_b.as_ref(), "the same seed pauses at the same checkpoint");
    assert_eq!(at.step, 10);
    match a.pop() {
        Some(Outcome::Done(m)) => assert!(m.stopped.is_some(), "the overflowing loss stopped early"),
        _ => panic!("a model that stopped before the pause comes back done"),
    }
    let take = |o: Outcome| match o {
        Outcome::Paused(p) => p,
        Outcome::Done(m) => panic!("still running at the pause: {m:?}"),
        Outcome::Abandoned => panic!("abandoned, not paused"),
    };
    // m1 (from the second population), ce, a2 and m0: resumed together on a GPU device.
    let (b1, b0, a1, a0) = (b.pop().unwrap(), b.pop().unwrap(), a.pop().unwrap(), a.pop().unwrap());
    let resumed = [&graphs[3], &graphs[0], &graphs[1], &graphs[2]];
    let paused = vec![take(b1), take(a0), take(a1), take(b0)];
    let (done, again) =
        train_population_from(&resumed, &spec, &data, Start::Resume(&at, paused), Halt::default(), &mut |_| {})
            .unwrap();
    assert!(again.is_none());
    // The uninterrupted runs: each population from the start to the end.
    let mut whole = train_population(&first, &spec, &data, &mut |_| {}).unwrap();
    whole.truncate(2);
    whole.extend(train_population(&second, &spec, &data, &mut |_| {}).unwrap());
    let wants = [&whole[3], &whole[0], &whole[1], &whole[2]];
    for ((g, o), want) in resumed.iter().zip(done).zip(wants) {
        let Outcome::Done(got) = o else { panic!("ran to the end") };
        let what = format!("{device} {} paused and resumed", g.outputs[0].0);
        println!("{what}: {:?} / {:?}", got.train, want.train);
        same_curve(&what, &got, want, tol);
        assert_eq!(got.validation, want.validation, "{what}: validation");
        assert_eq!(got.test_accuracy, want.test_accuracy, "{what}: test accuracy");
        assert_eq!(got.fitness, want.fitness, "{what}: fitness");
    }
}

#[test]
fn a_cpu_training_paused_and_resumed_is_the_uninterrupted_one() {
    pause_and_resume("cpu", 0.0);
}

#[test]
fn wgpu_models_paused_in_two_populations_go_on_together() {
    pause_and_resume("wgpu", AS_IF_ALONE);
}

#[test]
fn cuda_models_paused_in_two_populations_go_on_together() {
    pause_and_resume("cuda", AS_IF_ALONE);
}

/// A training abandoned at step 7 (as a search at its time limit abandons it) gives back the
/// models still running as abandoned, and the record of a model that stopped before then, on
/// `device`.
fn abandon(device: &str) {
    if !common::have_device(device) {
        return;
    }
    let data = splits();
    let spec = spec(device);
    let overflow = lossc::syntax::parse("loss overflow = exp(exp(10 - p));").unwrap();
    let (ce, a2) = (graph("examples/ce.loss"), graph("examples/a2.loss"));
    let flag = std::sync::atomic::AtomicBool::new(false);
    let halt = Halt { abandon: Some(&flag), ..Halt::default() };
    let mut last = 0;
    let mut progress = |p: &lossc_runtime::train::Progress| {
        last = p.step;
        if p.step == 7 {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    };
    let (outcomes, at) =
        train_population_from(&[&overflow, &ce, &a2], &spec, &data, Start::Fresh, halt, &mut progress).unwrap();
    assert!(at.is_none(), "{device}: no checkpoint");
    assert_eq!(last, 7, "{device}: the training ended at the step the flag was set");
    let alone = train_population(&[&overflow], &spec, &data, &mut |_| {}).unwrap().remove(0);
    match &outcomes[..] {
        [Outcome::Done(m), Outcome::Abandoned, Outcome::Abandoned] => {
            assert!(m.stopped.is_some(), "{device}: the overflowing loss stopped early");
            assert_eq!((&m.train, m.fitness, m.test_accuracy), (&alone.train, alone.fitness, alone.test_accuracy));
        }
        _ => panic!("{device}: want the stopped model done and the others abandoned"),
    }
}

#[test]
fn an_abandoned_cpu_training_keeps_only_what_ended() {
    abandon("cpu");
}

#[test]
fn an_abandoned_wgpu_training_keeps_only_what_ended() {
    abandon("wgpu");
}

#[test]
fn an_abandoned_cuda_training_keeps_only_what_ended() {
    abandon("cuda");
}

/// On a GPU: a population trained with its steps replayed as CUDA graphs ends with exactly the
/// numbers of the same population launched kernel by kernel, and its steps did replay.
#[test]
fn cuda_graphs_replay_a_training_exactly() {
    if !common::have_device("cuda") {
        return;
    }
    let (train, val, test) = splits();
    let files = ["examples/ce.loss", "examples/a2.loss", "examples/m0.loss"];
    let graphs: Vec<Graph> = files.iter().map(|f| graph(f)).collect();
    let fused: Vec<_> = graphs.iter().map(|g| lossc::passes::fuse::fuse(g, &g.outputs[0].0).expect("a loss")).collect();
    let cfg = spec("cuda").config().unwrap();
    let run = |graphs_on: bool| {
        let dev = Cuda::with_graphs(fused.len(), graphs_on).unwrap();
        let losses = lossc::train::cuda_losses(&dev, &fused, train.classes).unwrap();
        let m =
            lossc_runtime::train::train_population(dev.clone(), &losses, &train, &val, Some(&test), &cfg, &mut |_| {});
        (m, dev.graphs())
    };
    let (replayed, (counts, off)) = run(true);
    let (direct, _) = run(false);
    println!("graphs: {counts:?} {off:?}");
    assert!(off.is_none() && counts.replayed >= cfg.steps / 2, "steps replayed: {counts:?} {off:?}");
    for (k, (a, b)) in replayed.iter().zip(&direct).enumerate() {
        assert_eq!(a.train, b.train, "model {k}: training curve");
        assert_eq!(a.validation, b.validation, "model {k}: validation");
        assert_eq!(a.test_accuracy, b.test_accuracy, "model {k}: test accuracy");
    }
}
