//! The GPU emitters without a GPU: every emitted WGSL kernel parses and validates with naga,
//! and every emitted CUDA kernel compiles to PTX with NVRTC for sm_80 and sm_90 (NVRTC from
//! the `nvidia-cuda-nvrtc-cu12` wheel that scripts/test.sh installs; the test says so and
//! skips when libnvrtc cannot be loaded), every WGSL kernel runs through wgpu (lavapipe,
//! Mesa's software Vulkan, in CI) and matches the interpreter, and so does every CUDA kernel
//! compiled for the CPU with the emulator of tests/cuda_emu.

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

/// NVRTC's version, "major.minor" (scripts/gpu-prepare.sh checks which one compiled).
fn nvrtc_version() -> String {
    let (major, minor) = lossc_runtime::cuda::nvrtc_version();
    format!("{major}.{minor}")
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
    println!("compiled {} kernels for sm_80 and sm_90 with NVRTC {}", kernels.len(), nvrtc_version());
}

/// The runtime's kernels are compiled once a machine: a second build for an architecture reads
/// what the first stored (here a stand-in planted in its place), unless told to compile afresh;
/// another architecture and a changed source compile afresh.
#[test]
fn the_runtime_kernels_are_compiled_once_and_cached() {
    if !nvrtc_available() {
        println!("SKIPPED: libnvrtc not found (scripts/test.sh installs it)");
        assert!(std::env::var_os("LOSSC_REQUIRE_NVRTC").is_none(), "LOSSC_REQUIRE_NVRTC is set");
        return;
    }
    use lossc_runtime::cuda::cached_ptx;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ptx-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let src = lossc_runtime::kernels::cuda();
    let first = cached_ptx(Some(&dir), &src, "sm_90", false).unwrap().to_src();
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), first);
    std::fs::write(&files[0], "// planted").unwrap();
    assert_eq!(cached_ptx(Some(&dir), &src, "sm_90", false).unwrap().to_src(), "// planted");
    assert_eq!(cached_ptx(Some(&dir), &src, "sm_90", true).unwrap().to_src(), first, "fresh compiles again");
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), first, "and stores it");
    assert!(cached_ptx(Some(&dir), &src, "sm_80", false).unwrap().to_src().contains(".target sm_80"));
    assert!(cached_ptx(Some(&dir), &format!("{src}\n"), "sm_90", false).unwrap().to_src().contains(".target sm_90"));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
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
    println!("compiled the runtime's kernels for sm_80 and sm_90 with NVRTC {}", nvrtc_version());
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

/// g++ with C++20 (`std::barrier`), for the CUDA emulator.
fn gxx_available() -> bool {
    std::process::Command::new("g++").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// g++'s flags for the emulator's programs: with AddressSanitizer, so that a kernel reading or
/// writing past a buffer or its shared memory fails (the stack unchecked: fibers switch it).
const GXX_FLAGS: [&str; 5] = ["-std=c++20", "-O1", "-pthread", "-fsanitize=address", "--param=asan-stack=0"];

/// Precompiles the emulator's headers into `dir` (`emu_pch.h`, which `driver.cpp` includes
/// under `-DEMU_PCH`): they are more than half of each program's compile time. Where g++
/// cannot use the precompiled form, it reads the header as text.
fn precompile_emulator(dir: &std::path::Path) {
    let header = dir.join("emu_pch.h");
    std::fs::write(&header, "#include \"emu.h\"\n#include <cstdio>\n").unwrap();
    let out = std::process::Command::new("g++")
        .args(GXX_FLAGS)
        .args(["-I", "tests/cuda_emu", "-x", "c++-header"])
        .arg(&header)
        .arg("-o")
        .arg(dir.join("emu_pch.h.gch"))
        .output()
        .unwrap();
    assert!(out.status.success(), "g++ on the emulator's headers: {}", String::from_utf8_lossy(&out.stderr));
}

/// Compiles a loss's CUDA C with the CPU emulator of tests/cuda_emu (g++) into `dir`, which
/// holds the emulator's precompiled headers ([`precompile_emulator`]).
fn emulated(f: &Fused, dir: &std::path::Path) -> std::path::PathBuf {
    let src = dir.join(format!("{}.cu", f.name));
    std::fs::write(&src, cuda::emit(f, &cuda::Options::default())).unwrap();
    let bin = dir.join(&f.name);
    let p = cuda::prefix(&f.name);
    let out = std::process::Command::new("g++")
        .args(GXX_FLAGS)
        .arg("-I")
        .arg(dir)
        .args(["-I", "tests/cuda_emu", "-DEMU_PCH"])
        .arg(format!("-DKERNEL_FILE=\"{}\"", src.display()))
        .arg(format!("-DROWS={p}_rows"))
        .arg(format!("-DROWS_WARP={p}_rows_warp"))
        .arg(format!("-DMEAN={p}_mean"))
        .arg("tests/cuda_emu/driver.cpp")
        .arg("-o")
        .arg(&bin)
        .output()
        .unwrap();
    assert!(out.status.success(), "g++ on {}: {}", src.display(), String::from_utf8_lossy(&out.stderr));
    bin
}

/// Runs cases `(layout, batch, targets)` through an emulated kernel: `(row loss, grad)` each,
/// after checking that `_mean` gives the mean of the row losses.
fn run_emulated(
    bin: &std::path::Path,
    cases: &[(cuda::Layout, &Batch, lossc::reference::contract::Targets<f32>)],
) -> Vec<(Vec<f32>, Vec<f32>)> {
    use std::io::Write;
    let mut input = Vec::new();
    let f32s = |v: &[f32], out: &mut Vec<u8>| v.iter().for_each(|x| out.extend(x.to_le_bytes()));
    let u32s = |v: &[u32], out: &mut Vec<u8>| v.iter().for_each(|x| out.extend(x.to_le_bytes()));
    for (layout, b, t) in cases {
        let rows = b.labels.len();
        let n = rows * b.classes;
        let t = t.flat();
        let layout = (*layout == cuda::Layout::Warp) as u32;
        for w in [layout, t.mode, rows as u32, b.classes as u32] {
            input.extend(w.to_le_bytes());
        }
        input.extend(t.smoothing.to_le_bytes());
        f32s(&b.logits, &mut input);
        let pad_u = |v: &[u32]| if v.is_empty() { vec![0; rows] } else { v.to_vec() };
        let pad_f = |v: &[f32], len: usize| if v.is_empty() { vec![0.0; len] } else { v.to_vec() };
        u32s(&pad_u(t.labels), &mut input);
        u32s(&pad_u(t.labels_b), &mut input);
        f32s(&pad_f(t.lam, rows), &mut input);
        f32s(&pad_f(t.dense, n), &mut input);
    }
    let mut child = std::process::Command::new(bin)
        .env("ASAN_OPTIONS", "detect_leaks=0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A write fails only where the program ended early; its exit status and stderr say why.
    let writer = std::thread::spawn(move || stdin.write_all(&input).is_ok());
    let out = child.wait_with_output().unwrap();
    let written = writer.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} exited with {}: {err}", bin.display(), out.status);
    assert!(written, "{}: its input was not all read", bin.display());
    let mut bytes = out.stdout.as_slice();
    let mut take = |n: usize| {
        assert!(bytes.len() >= n, "{}: short output", bin.display());
        let (head, rest) = bytes.split_at(n);
        bytes = rest;
        head
    };
    let f32s = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>();
    cases
        .iter()
        .map(|(_, b, _)| {
            let rows = b.labels.len();
            let loss = f32s(take(4 * rows));
            let grad = f32s(take(4 * rows * b.classes));
            let mean = f64::from_le_bytes(take(8).try_into().unwrap());
            let want = loss.iter().map(|&l| l as f64).sum::<f64>() / rows as f64;
            let scale = loss.iter().map(|&l| (l as f64).abs()).sum::<f64>() / rows as f64;
            assert!(
                (mean - want).abs() <= 1e-12 * scale || (mean.is_nan() && want.is_nan()) || mean == want,
                "{}: _mean gave {mean}, the row losses' mean is {want}",
                bin.display()
            );
            (loss, grad)
        })
        .collect()
}

/// The CUDA kernels' logic without a GPU: each example's emitted `.cu`, compiled for the CPU
/// with the emulator of tests/cuda_emu (fibers for CUDA threads, barriers for
/// `__syncthreads` and warp shuffles), matches the interpreter in both row layouts, at class
/// counts on both sides of each layout's row cache, for every target form; and so do 40
/// random losses (every op's CUDA form) on a small batch. Every case gives the same bits with
/// the emulator's threads and blocks run in both orders (no races), and `_mean` gives the mean
/// of its row losses.
#[test]
fn cuda_kernels_match_the_interpreter_on_the_cpu_emulator() {
    if !gxx_available() {
        if std::env::var_os("LOSSC_REQUIRE_GXX").is_some() {
            panic!("LOSSC_REQUIRE_GXX is set but g++ is missing (scripts/test.sh installs it)");
        }
        println!("SKIPPED: g++ not found (scripts/test.sh installs it)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("lossc-cuda-emu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    precompile_emulator(&dir);
    let mut rng = Rng::new(43);
    // 9 rows: the warp layout's second block holds one row, and its other warps exit early.
    let batches: Vec<Batch> = [(9, 3), (9, 100), (9, 700), (3, 3000)]
        .into_iter()
        .map(|(rows, classes)| Batch::random(&mut rng, rows, classes, 4.0))
        .collect();
    // More rows than `_mean` has threads, so each sums several: one target form an example.
    let tall = Batch::random(&mut rng, 300, 3, 2.0);
    // The examples on every batch and target form; random losses (every op's CUDA form) on
    // a small batch, one target form each, as the GPU test runs them.
    let small = Batch::random(&mut rng, 3, 7, 2.0);
    let mut losses: Vec<(Fused, bool)> = examples().into_iter().map(|(_, f)| (f, true)).collect();
    losses.extend(random_losses(40).into_iter().enumerate().map(|(i, mut f)| {
        f.name = format!("random{i}");
        (f, false)
    }));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (compared, skipped) = (std::sync::atomic::AtomicUsize::new(0), std::sync::atomic::AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for (t, part) in losses.chunks(losses.len().div_ceil(threads)).enumerate() {
            let (dir, batches, tall, small) = (&dir, &batches, &tall, &small);
            let (compared, skipped) = (&compared, &skipped);
            scope.spawn(move || {
                for (i, (f, example)) in part.iter().enumerate() {
                    let bin = emulated(f, dir);
                    let mut cases = Vec::new();
                    if *example {
                        for b in batches {
                            for kind in 0..5 {
                                for layout in cuda::Layout::ALL {
                                    cases.push((layout, b, b.targets(kind)));
                                }
                            }
                        }
                        for layout in cuda::Layout::ALL {
                            cases.push((layout, tall, tall.targets((t + i) % 5)));
                        }
                    } else {
                        for layout in cuda::Layout::ALL {
                            cases.push((layout, small, small.targets((t + i) % 5)));
                        }
                    }
                    let outs = run_emulated(&bin, &cases);
                    for (pair, out) in cases.chunks(2).zip(outs.chunks(2)) {
                        let (_, b, t) = &pair[0];
                        let names =
                            pair.iter().map(|(l, b, _)| format!("cuda emulator {l:?} {} C={}", f.name, b.classes));
                        let names: Vec<String> = names.collect();
                        let outputs: Vec<(&str, &[f32], &[f32])> =
                            names.iter().zip(out).map(|(w, (l, g))| (w.as_str(), l.as_slice(), g.as_slice())).collect();
                        // The random losses with the conditioning filter of `tests/common`.
                        let (c, s) = compare_each(f, b, t, &outputs, *example);
                        compared.fetch_add(c, std::sync::atomic::Ordering::Relaxed);
                        skipped.fetch_add(s, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    std::fs::remove_dir_all(&dir).ok();
    let (compared, skipped) = (compared.into_inner(), skipped.into_inner());
    println!("cuda emulator: {compared} rows compared, {skipped} skipped");
    assert!(compared > 10 * skipped);
}
