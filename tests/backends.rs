//! Every compiled CPU kernel against the f64 interpreter: the 16 paper losses and random
//! expressions over all operations, for labels (with smoothing), mixup pairs and dense targets.
//! (Tolerances: see tests/common/mod.rs.)

mod common;

use common::{Batch, compare};
use lossc::backend::jit;
use lossc::ir::random;
use lossc::passes::fuse::{self, Fused};
use lossc::reference::contract::Targets;
use lossc::rng::Rng;

fn run_jit(f: &Fused, batch: &Batch, t: &Targets<f32>) -> (Vec<f32>, Vec<f32>) {
    let k = jit::compile(f, jit::Spec::of(t, batch.classes)).unwrap();
    let b = batch.logits.len() / batch.classes;
    let (mut grad, mut loss) = (vec![0f32; batch.logits.len()], vec![0f32; b]);
    k.run(&batch.logits, t, &mut grad, &mut loss, 1).unwrap();
    (loss, grad)
}

/// Kernels calling the baseline row helpers (what a processor without AVX2 + FMA runs), and
/// the AVX2 ones (what a processor without AVX-512 runs), against the interpreter, on every
/// example and target form, both tiers (tier 1 calls the routines and programs out of line);
/// the other tests run the best helpers the processor has.
#[test]
fn kernels_with_the_narrower_row_helpers_match_the_interpreter() {
    let mut rng = Rng::new(8);
    for classes in [3, 10, 17, 100] {
        let batch = Batch::random(&mut rng, 11, classes, 5.0);
        for (name, g) in common::example_graphs() {
            let f = fuse::fuse(&g, &name).unwrap();
            for kind in 0..5 {
                let t = batch.targets(kind);
                for tier in [jit::Tier::Quick, jit::Tier::Full] {
                    let spec = jit::Spec::of(&t, classes);
                    let builds = [
                        ("baseline", Some(jit::compile_baseline(&f, spec, tier))),
                        ("AVX2", jit::compile_avx2(&f, spec, tier)),
                    ];
                    for (build, k) in builds {
                        let Some(k) = k else { continue };
                        let (mut grad, mut loss) = (vec![0f32; batch.logits.len()], vec![0f32; 11]);
                        k.unwrap().run(&batch.logits, &t, &mut grad, &mut loss, 1).unwrap();
                        let what = format!("{build} {tier:?} {name} C={classes} targets#{kind}");
                        compare(&what, &f, &batch, &t, &loss, &grad, true);
                    }
                }
            }
        }
    }
}

#[test]
fn jit_matches_the_interpreter_on_every_example() {
    let mut rng = Rng::new(7);
    for classes in [2, 3, 4, 10, 17, 100] {
        for scale in [1.0, 5.0, 20.0] {
            let batch = Batch::random(&mut rng, 9, classes, scale);
            for (name, g) in common::example_graphs() {
                let f = fuse::fuse(&g, &name).unwrap();
                for kind in 0..5 {
                    let t = batch.targets(kind);
                    let (loss, grad) = run_jit(&f, &batch, &t);
                    let what = format!("{name} C={classes} scale={scale} targets#{kind}");
                    compare(&what, &f, &batch, &t, &loss, &grad, true);
                }
            }
        }
    }
}

#[test]
fn jit_matches_the_interpreter_on_random_expressions() {
    let mut rng = Rng::new(8);
    let (mut compared, mut skipped) = (0, 0);
    for case in 0..1200 {
        let g = random::loss(&mut rng, 4);
        let f = fuse::fuse(&g, "l").unwrap();
        let classes = [3, 5, 8, 40][case % 4]; // 40: the general pass as a columnar program
        let batch = Batch::random(&mut rng, 3, classes, 2.0);
        let t = batch.targets(case % 5);
        let (loss, grad) = run_jit(&f, &batch, &t);
        let what = format!("case {case}: {}", lossc::ir::print::to_text(&g));
        let (c, s) = compare(&what, &f, &batch, &t, &loss, &grad, false);
        compared += c;
        skipped += s;
    }
    println!("random expressions: {compared} rows compared, {skipped} skipped as ill-conditioned or out of f32 range");
    assert!(compared >= 2000 && compared > skipped, "{compared} compared vs {skipped} skipped");
}

#[test]
fn c2_stays_finite_where_softmax_underflows() {
    // Logit scale 20 and rows with a dominant logit: most p underflow to exactly 0 in f32.
    let g = lossc::syntax::parse(&std::fs::read_to_string("examples/c2.loss").unwrap()).unwrap();
    let f = fuse::fuse(&g, "c2").unwrap();
    let mut rng = Rng::new(11);
    let mut batch = Batch::random(&mut rng, 64, 100, 20.0);
    for row in 0..8 {
        batch.logits[row * 100] = 200.0; // p of every other class is exp(-200 - ...) = 0 in f32
    }
    for kind in 0..5 {
        let t = batch.targets(kind);
        let (loss, grad) = run_jit(&f, &batch, &t);
        assert!(loss.iter().chain(&grad).all(|v| v.is_finite()), "targets#{kind}: NaN or inf");
        compare(&format!("c2 underflow targets#{kind}"), &f, &batch, &t, &loss, &grad, true);
    }
}

#[test]
fn threads_split_rows_without_changing_results() {
    let g = lossc::syntax::parse(&std::fs::read_to_string("examples/a2.loss").unwrap()).unwrap();
    let f = fuse::fuse(&g, "a2").unwrap();
    let batch = Batch::random(&mut Rng::new(12), 301, 37, 3.0);
    for kind in 0..5 {
        let t = batch.targets(kind);
        let k = jit::compile(&f, jit::Spec::of(&t, 37)).unwrap();
        let mut outs = Vec::new();
        for threads in [1, 2, 3] {
            let (mut grad, mut loss) = (vec![0f32; batch.logits.len()], vec![0f32; 301]);
            let mean = k.run(&batch.logits, &t, &mut grad, &mut loss, threads).unwrap();
            outs.push((mean, loss, grad));
        }
        assert!(outs.windows(2).all(|w| w[0] == w[1]), "targets#{kind}: results depend on the thread count");
    }
}

#[test]
fn the_same_loss_and_spec_compile_once() {
    let g = lossc::syntax::parse("loss ce = -y * ln(p);").unwrap();
    let f = fuse::fuse(&g, "ce").unwrap();
    let spec = jit::Spec { kind: jit::TargetKind::Labels, smoothing: 0.1, classes: 10 };
    let a = jit::compile(&f, spec).unwrap();
    let b = jit::compile(&fuse::fuse(&lossc::syntax::parse("loss ce = -y * ln(p);").unwrap(), "ce").unwrap(), spec)
        .unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    let c = jit::compile(&f, jit::Spec { smoothing: 0.0, ..spec }).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&a, &c));
}

#[test]
fn a_batch_that_does_not_fit_the_compiled_spec_is_refused() {
    let g = lossc::syntax::parse("loss ce = -y * ln(p);").unwrap();
    let f = fuse::fuse(&g, "ce").unwrap();
    let k = jit::compile(&f, jit::Spec { kind: jit::TargetKind::Labels, smoothing: 0.1, classes: 3 }).unwrap();
    let (mut grad, mut loss) = (vec![0f32; 6], vec![0f32; 2]);
    let z = [0f32; 6];
    let t = Targets::Labels { labels: &[0, 1], smoothing: 0.0 };
    assert!(matches!(
        k.run(&z, &t, &mut grad, &mut loss, 1),
        Err(lossc::reference::contract::ContractError::Spec { .. })
    ));
    let t = Targets::Labels { labels: &[0, 3], smoothing: 0.1 };
    assert!(k.run(&z, &t, &mut grad, &mut loss, 1).is_err());
}

/// The quick tier (math routines called out of line, single-pass register allocation) and the
/// optimised tier compute the same bits: training results do not depend on when the
/// background upgrade lands.
#[test]
fn both_compile_tiers_give_bit_identical_results_and_the_cache_upgrades() {
    let mut rng = Rng::new(11);
    let batch = Batch::random(&mut rng, 37, 10, 5.0);
    for (name, g) in common::example_graphs() {
        let f = fuse::fuse(&g, &name).unwrap();
        for kind in 0..5 {
            let t = batch.targets(kind);
            let spec = jit::Spec::of(&t, batch.classes);
            let outputs: Vec<(Vec<u32>, Vec<u32>, u64)> = [jit::Tier::Quick, jit::Tier::Full]
                .into_iter()
                .map(|tier| {
                    let k = jit::compile_tier(&f, spec, tier).unwrap();
                    let (mut grad, mut loss) = (vec![0f32; batch.logits.len()], vec![0f32; 37]);
                    let mean = k.run(&batch.logits, &t, &mut grad, &mut loss, 1).unwrap();
                    (
                        loss.iter().map(|v| v.to_bits()).collect(),
                        grad.iter().map(|v| v.to_bits()).collect(),
                        mean.to_bits(),
                    )
                })
                .collect();
            assert_eq!(outputs[0], outputs[1], "{name} targets#{kind}");
        }
    }
    // Random expressions cover every op, each routine the quick tier calls out of line
    // included (NaN counts as equal to NaN: the payload is not part of the contract).
    let mut rng = Rng::new(12);
    let bits = |v: &[f32]| -> Vec<u32> { v.iter().map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() }).collect() };
    for case in 0..300 {
        let g = random::loss(&mut rng, 4);
        let f = fuse::fuse(&g, "l").unwrap();
        let batch = Batch::random(&mut rng, 5, 7, 3.0);
        let t = batch.targets(case % 5);
        let spec = jit::Spec::of(&t, batch.classes);
        let [quick, full] = [jit::Tier::Quick, jit::Tier::Full].map(|tier| {
            let k = jit::compile_tier(&f, spec, tier).unwrap();
            let (mut grad, mut loss) = (vec![0f32; batch.logits.len()], vec![0f32; 5]);
            k.run(&batch.logits, &t, &mut grad, &mut loss, 1).unwrap();
            (bits(&loss), bits(&grad))
        });
        assert_eq!(quick, full, "case {case}: {}", lossc::ir::print::to_text(&g));
    }
    // The cached kernel starts at tier 1 and is upgraded in the background.
    let g = lossc::syntax::parse("loss tiered = -y * ln(p) + 0.25 * square(p);").unwrap();
    let f = fuse::fuse(&g, "tiered").unwrap();
    let k = jit::compile(&f, jit::Spec { kind: jit::TargetKind::Labels, smoothing: 0.0, classes: 10 }).unwrap();
    let start = std::time::Instant::now();
    while !k.is_optimised() {
        assert!(start.elapsed().as_secs() < 60, "the tier-2 kernel never arrived");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
