//! The GPU emitters without a GPU: every emitted WGSL kernel parses and validates with naga,
//! and every emitted CUDA kernel compiles to PTX with NVRTC for sm_80 and sm_90 (NVRTC from
//! the `nvidia-cuda-nvrtc-cu12` wheel that scripts/test.sh installs; the test says so and
//! skips when libnvrtc cannot be loaded), and every WGSL kernel runs through wgpu (lavapipe,
//! Mesa's software Vulkan, in CI) and matches the interpreter.

mod common;

use common::{Batch, compare, compare_each};
use lossc::backend::{cuda, wgsl};
use lossc::ir::random;
use lossc::passes::fuse::{self, Fused};
use lossc::rng::Rng;

fn examples() -> Vec<(String, Fused)> {
    let mut v: Vec<_> = std::fs::read_dir("examples")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "loss"))
        .map(|path| {
            let src = std::fs::read_to_string(&path).unwrap();
            let g = lossc::syntax::parse(&src).unwrap();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (src, fuse::fuse(&g, &name).unwrap())
        })
        .collect();
    v.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    v
}

fn random_losses(n: usize) -> Vec<Fused> {
    let mut rng = Rng::new(21);
    (0..n).map(|_| fuse::fuse(&random::loss(&mut rng, 4), "l").unwrap()).collect()
}

#[test]
fn every_wgsl_kernel_validates_with_naga() {
    for (src, f) in examples() {
        let w = wgsl::emit(&f, &wgsl::Options { source: src });
        wgsl::validate(&w).unwrap_or_else(|e| panic!("{}: {e}\n{w}", f.name));
    }
    for f in random_losses(200) {
        let w = wgsl::emit(&f, &wgsl::Options::default());
        wgsl::validate(&w).unwrap_or_else(|e| panic!("{e}\n{w}"));
    }
}

fn nvrtc_available() -> bool {
    // cudarc panics when the library is missing; probe with dlopen first.
    let names = ["libnvrtc.so.12", "libnvrtc.so"];
    // SAFETY: loading NVRTC runs only its (side-effect free) initialisers.
    names.iter().any(|n| unsafe { libloading::Library::new(*n) }.is_ok())
}

#[test]
fn every_cuda_kernel_compiles_with_nvrtc() {
    if !nvrtc_available() {
        println!(
            "SKIPPED: libnvrtc not found (install nvidia-cuda-nvrtc-cu12 and put its lib/ on LD_LIBRARY_PATH; scripts/test.sh does)"
        );
        if std::env::var_os("LOSSC_REQUIRE_NVRTC").is_some() {
            panic!("LOSSC_REQUIRE_NVRTC is set but libnvrtc is missing");
        }
        return;
    }
    let mut kernels: Vec<(String, String)> = examples()
        .into_iter()
        .map(|(src, f)| (f.name.clone(), cuda::emit(&f, &cuda::Options { source: src })))
        .collect();
    kernels.extend(random_losses(20).iter().map(|f| ("random".to_string(), cuda::emit(f, &cuda::Options::default()))));
    for (name, src) in &kernels {
        for arch in ["sm_80", "sm_90"] {
            let ptx = cuda::compile_ptx(src, arch)
                .unwrap_or_else(|log| panic!("{name} for {arch}: NVRTC said:\n{log}\n{src}"));
            assert!(ptx.contains(".entry lossc_"), "{name}: no entry point in the PTX");
        }
    }
    println!("compiled {} kernels for sm_80 and sm_90", kernels.len());
}

#[test]
fn the_training_runtime_kernels_compile_with_nvrtc() {
    if !nvrtc_available() {
        println!("SKIPPED: libnvrtc not found (scripts/test.sh installs it)");
        assert!(
            std::env::var_os("LOSSC_REQUIRE_NVRTC").is_none(),
            "LOSSC_REQUIRE_NVRTC is set but libnvrtc is missing"
        );
        return;
    }
    let src = lossc_runtime::kernels::cuda();
    for arch in ["sm_80", "sm_90"] {
        let ptx = cuda::compile_ptx(&src, arch).unwrap_or_else(|log| panic!("{arch}: NVRTC said:\n{log}\n{src}"));
        for k in lossc_runtime::kernels::KERNELS {
            assert!(ptx.contains(&format!(".entry {}(", k.name)), "{arch}: no entry point {} in the PTX", k.name);
        }
    }
}

/// The wgpu device, or None with the reason printed (and a failure where CI requires one).
fn gpu() -> Option<wgsl::Gpu> {
    match wgsl::Gpu::new() {
        Ok(g) => {
            println!("wgpu adapter: {}", g.adapter);
            Some(g)
        }
        Err(why) => {
            println!("SKIPPED: {why} (install mesa-vulkan-drivers for lavapipe; scripts/test.sh does)");
            assert!(std::env::var_os("LOSSC_REQUIRE_VULKAN").is_none(), "LOSSC_REQUIRE_VULKAN is set: {why}");
            None
        }
    }
}

#[test]
fn wgsl_kernels_run_and_match_the_interpreter() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(31);
    for classes in [3, 10, 130] {
        let batch = Batch::random(&mut rng, 6, classes, 4.0);
        for (_, f) in examples() {
            for kind in 0..5 {
                let t = batch.targets(kind);
                let (loss, grad) = gpu.run(&f, &batch.logits, classes, &t).unwrap();
                compare(&format!("wgsl {} C={classes} targets#{kind}", f.name), &f, &batch, &t, &loss, &grad, true);
            }
        }
    }
    let (mut compared, mut skipped) = (0, 0);
    for (i, f) in random_losses(60).iter().enumerate() {
        let batch = Batch::random(&mut rng, 3, 7, 2.0);
        let t = batch.targets(i % 5);
        let (loss, grad) = gpu.run(f, &batch.logits, 7, &t).unwrap();
        let (c, s) = compare(
            &format!("wgsl random #{i}: {}", lossc::ir::print::to_text(&f.graph)),
            f,
            &batch,
            &t,
            &loss,
            &grad,
            false,
        );
        compared += c;
        skipped += s;
    }
    println!("random expressions on wgsl: {compared} rows compared, {skipped} skipped");
    assert!(compared > skipped);
}

#[test]
fn cuda_kernels_match_the_interpreter_on_a_gpu() {
    let gpu = match cuda::Cuda::new() {
        Ok(g) => g,
        Err(why) => {
            println!("SKIPPED: {why}: no GPU here (scripts/gpu-check.sh runs this on one)");
            return;
        }
    };
    println!("CUDA device: {}", gpu.name);
    let mut rng = Rng::new(41);
    let kernels: Vec<_> = examples().into_iter().map(|(_, f)| (gpu.compile(&f).unwrap(), f)).collect();
    for classes in [3, 10, 33, 100, 1000, 100_000] {
        // 33 rows: the warp layout's last block holds one row, and its other warps exit early.
        let rows = if classes > 1000 { 4 } else { 33 };
        let batch = Batch::random(&mut rng, rows, classes, 4.0);
        // The GPU runs first; the f64 reference, most of the time at large C, then runs on
        // every core, once per loss and target kind for both layouts.
        let mut runs = Vec::new();
        for (k, f) in &kernels {
            for kind in 0..5 {
                let t = batch.targets(kind);
                let out = [cuda::Layout::Block, cuda::Layout::Warp].map(|layout| {
                    let (_, loss, grad) = gpu.run_with(layout, k, &batch.logits, classes, &t).unwrap();
                    (format!("cuda {layout:?} {} C={classes} targets#{kind}", f.name), loss, grad)
                });
                runs.push((f, kind, out));
            }
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = runs.len().div_ceil(threads);
        std::thread::scope(|scope| {
            for part in runs.chunks(chunk) {
                let batch = &batch;
                scope.spawn(move || {
                    for (f, kind, out) in part {
                        let outputs = out.each_ref().map(|(w, l, g)| (w.as_str(), l.as_slice(), g.as_slice()));
                        compare_each(f, batch, &batch.targets(*kind), &outputs, true);
                    }
                });
            }
        });
    }
    let (mut compared, mut skipped) = (0, 0);
    for (i, f) in random_losses(200).iter().enumerate() {
        let k = gpu.compile(f).unwrap();
        let batch = Batch::random(&mut rng, 3, 7, 2.0);
        let t = batch.targets(i % 5);
        let (_, loss, grad) = gpu.run(&k, &batch.logits, 7, &t).unwrap();
        let what = format!("cuda random #{i}: {}", lossc::ir::print::to_text(&f.graph));
        let (c, s) = compare(&what, f, &batch, &t, &loss, &grad, false);
        compared += c;
        skipped += s;
    }
    println!("random expressions on cuda: {compared} rows compared, {skipped} skipped");
    assert!(compared > skipped);
}
