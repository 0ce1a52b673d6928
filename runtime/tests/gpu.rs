//! The GPU devices against the CPU device, method by method, on random inputs of odd sizes,
//! with a population of K = 3 models that each get their own tensors: wgpu (`wgpu_device::`),
//! CUDA (`cuda_device::`) and the CUDA kernels on the CPU emulator (`cuda_emulator::`, and
//! `cuda_emulator_wide::` taken for a large GPU, which changes how launches divide the work),
//! the same checks on each. Float32 throughout; the tolerances
//! (relative to the largest magnitude of the CPU's result) cover the different summation orders
//! of GEMM and direct loops.
//!
//! Without a Vulkan adapter (lavapipe counts) the wgpu tests print why and pass, unless
//! `LOSSC_REQUIRE_VULKAN` is set; without an NVIDIA GPU (driver and NVRTC) the CUDA tests do
//! the same, unless `LOSSC_REQUIRE_CUDA` is set.

use lossc_runtime::cpu::Cpu;
use lossc_runtime::cuda::Cuda;
use lossc_runtime::device::{BnGeom, BnState, ConvGeom, Device, Tensors, Update};
use lossc_runtime::gpu::Wgpu;
use lossc_runtime::profile;
use lossc_runtime::rng::Rng;

const K: usize = 3;

/// The device, or None with the reason printed (a failure where `require` is set).
fn open<D>(made: Result<D, impl std::fmt::Display>, require: &str) -> Option<D> {
    match made {
        Ok(d) => Some(d),
        Err(e) if std::env::var_os(require).is_some() => panic!("{require} is set: {e}"),
        Err(e) => {
            println!("SKIPPED: {e}");
            None
        }
    }
}

/// Every check below as a test on each device.
macro_rules! on_devices {
    ($($check:ident),* $(,)?) => {
        mod wgpu_device {
            $(#[test]
            fn $check() {
                if let Some(d) = super::open(super::Wgpu::new(super::K), "LOSSC_REQUIRE_VULKAN") {
                    println!("wgpu adapter: {}", d.adapter());
                    super::$check(&d);
                }
            })*
        }
        mod cuda_device {
            $(#[test]
            fn $check() {
                if let Some(d) = super::open(super::Cuda::new(super::K), "LOSSC_REQUIRE_CUDA") {
                    println!("CUDA device: {} ({})", d.device_name(), d.arch());
                    super::$check(&d);
                }
            })*
        }
        mod cuda_emulator {
            $(#[test]
            fn $check() {
                if let Some(d) = super::open(super::emu::Emu::new(super::K), "LOSSC_REQUIRE_GXX") {
                    super::$check(&d);
                }
            })*
        }
        /// The emulator taken for a large GPU: the launches pick a thread per image and split
        /// reductions over several workgroups, where the one above gives threads several
        /// images and does not split; and its threads and blocks run last to first, where the
        /// one above runs them first to last, so that a race reads wrong in one of the two.
        mod cuda_emulator_wide {
            $(#[test]
            fn $check() {
                if let Some(d) = super::open(super::emu::Emu::new(super::K), "LOSSC_REQUIRE_GXX") {
                    super::$check(&d.wide());
                }
            })*
        }
    };
}

/// The CUDA device's kernels without a GPU: the CUDA C translation unit of kernels/train.rs
/// (`kernels::cuda()`), compiled for the CPU by g++ with the emulator of tests/cuda_emu (a
/// fiber per CUDA thread, one block at a time, barriers for `__syncthreads`), behind the
/// same [`Launcher`] the CUDA device implements. It checks what the CUDA device launches
/// (the kernel bodies in C++, the CUDA prelude's `reduce_sum`, the parameter structs), not
/// the driver calls around them. Like the CUDA device it records a training step and replays
/// its launches (its "graph" runs them one by one from the recording).
mod emu {
    use lossc_runtime::kernels::{self, Access, KERNELS, Kernel, THREADS};
    use lossc_runtime::replay::{Counts, Held, Kind, Node, Recorder, Replay};
    use lossc_runtime::stacked::{Arg, Launcher};
    use std::cell::UnsafeCell;
    use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

    /// A buffer: the kernels write through shared references, as on a GPU.
    pub struct Mem<T>(UnsafeCell<Vec<T>>);
    // SAFETY: launches run one at a time and wait for their threads; nothing else writes.
    unsafe impl<T: Send> Sync for Mem<T> {}

    impl<T: Copy> Mem<T> {
        fn new(v: Vec<T>) -> Mem<T> {
            Mem(UnsafeCell::new(v))
        }
        fn ptr(&self) -> *mut T {
            // SAFETY: see the Sync impl.
            unsafe { (*self.0.get()).as_mut_ptr() }
        }
    }

    type LaunchFn = unsafe extern "C" fn(u32, *const *mut u8, *const u32);
    /// Sets the order the emulator runs threads and blocks in (`emu::backward`).
    type OrderFn = unsafe extern "C" fn(bool);
    /// The loaded library, its launch functions in the order of `KERNELS`, and its order.
    type Lib = Arc<(libloading::Library, Vec<LaunchFn>, OrderFn)>;

    #[derive(Clone)]
    pub struct Emu {
        k: usize,
        lib: Lib,
        spare: Arc<Mem<f32>>,
        rec: Arc<Mutex<Recorder<Emu>>>,
        /// Whether launches run (a dry device only records and replays them).
        dry: bool,
        /// What [`Launcher::resident_threads`] says.
        resident: usize,
        /// Threads and blocks last to first.
        backward: bool,
    }

    /// A launch as a recording holds it: the kernel's index in `KERNELS`, its blocks, its
    /// buffers' addresses and its parameter words.
    #[derive(Clone, PartialEq)]
    pub struct Op {
        at: usize,
        groups: u32,
        bufs: Vec<u64>,
        params: [u32; 16],
    }

    /// A recorded step's nodes, owned.
    pub enum Step {
        Launch(Op),
        Zero(Arc<Mem<f32>>, usize),
    }

    /// The emulated kernels, built once per process (in the target directory).
    fn library() -> Result<Lib, String> {
        static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();
        LIB.get_or_init(|| {
            let mut src = kernels::cuda();
            src += "\n#include <cstring>\nextern \"C\" void emu_order(bool backward) { emu::backward = backward; }\n";
            for k in KERNELS {
                let args: Vec<String> = k
                    .buffers
                    .iter()
                    .enumerate()
                    .map(|(i, (_, a))| match a {
                        Access::Read => format!("(const f32*)b[{i}]"),
                        Access::ReadU32 => format!("(const u32*)b[{i}]"),
                        Access::Write => format!("(f32*)b[{i}]"),
                    })
                    .collect();
                src += &format!(
                    "extern \"C\" void emu_{0}(unsigned groups, void* const* b, const u32* params) {{\n    \
                     P_{0} p; std::memcpy(&p, params, sizeof p);\n    \
                     emu::launch(groups, {THREADS}, [&] {{ {0}({1}, p); }});\n}}\n",
                    k.name,
                    args.join(", ")
                );
            }
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cuda-emu");
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let (cpp, so) =
                (dir.join("train_kernels.cpp"), dir.join(format!("train_kernels_{}.so", std::process::id())));
            std::fs::write(&cpp, src).map_err(|e| e.to_string())?;
            let emu = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/cuda_emu/emu.h");
            let out = std::process::Command::new("g++")
                .args(["-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-include", emu])
                .arg(&cpp)
                .arg("-o")
                .arg(&so)
                .output()
                .map_err(|e| format!("g++ not found ({e}); scripts/test.sh installs it"))?;
            if !out.status.success() {
                panic!("g++ on {}: {}", cpp.display(), String::from_utf8_lossy(&out.stderr));
            }
            // SAFETY: the library was just built from the kernels above; its symbols have the
            // signature of `LaunchFn`.
            unsafe {
                let lib = libloading::Library::new(&so).map_err(|e| e.to_string())?;
                // Loaded: the file is no longer needed.
                std::fs::remove_file(&so).ok();
                let fns = KERNELS
                    .iter()
                    .map(|k| *lib.get::<LaunchFn>(format!("emu_{}", k.name).as_bytes()).expect("an emulated kernel"))
                    .collect();
                let order = *lib.get::<OrderFn>(b"emu_order").expect("the emulator's order");
                Ok(Arc::new((lib, fns, order)))
            }
        })
        .clone()
    }

    impl Emu {
        /// The emulated CUDA device, recording and replaying training steps.
        pub fn new(models: usize) -> Result<Emu, String> {
            Emu::with_graphs(models, true)
        }

        pub fn with_graphs(models: usize, graphs: bool) -> Result<Emu, String> {
            let rec = Arc::new(Mutex::new(Recorder::new(graphs)));
            let spare = Arc::new(Mem::new(vec![0.0]));
            Ok(Emu { k: models, lib: library()?, spare, rec, dry: false, resident: THREADS, backward: false })
        }

        /// The device taken for a GPU of 2^20 resident threads, not for one block at a time,
        /// whose threads and blocks run last to first.
        pub fn wide(self) -> Emu {
            Emu { resident: 1 << 20, backward: true, ..self }
        }

        /// A device whose launches do nothing: what a training records and replays, at no cost
        /// (a whole training on the emulator takes minutes).
        pub fn dry(self) -> Emu {
            Emu { dry: true, ..self }
        }

        /// Steps recorded, replayed and left.
        pub fn counts(&self) -> Counts {
            self.rec().counts()
        }

        /// A copy of `data` (one zero when empty), or the recorded buffer with `data` written
        /// in; `held` and `buf` wrap and unwrap the recording's variant for `T`.
        fn upload<T: Copy + Default>(
            &self,
            data: &[T],
            kind: Kind,
            held: fn(Arc<Mem<T>>) -> Held<Emu>,
            buf: fn(&Held<Emu>) -> &Arc<Mem<T>>,
        ) -> Arc<Mem<T>> {
            let make = || held(Arc::new(Mem::new(if data.is_empty() { vec![T::default()] } else { data.to_vec() })));
            // SAFETY: no launch is running (they are synchronous).
            let write = |h: &Held<Emu>| unsafe { (&mut *buf(h).0.get())[..data.len()].copy_from_slice(data) };
            buf(&self.rec().upload(self, kind, data.len(), make, write)).clone()
        }

        fn rec(&self) -> MutexGuard<'_, Recorder<Emu>> {
            self.rec.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    impl Replay for Emu {
        type Mem = Arc<Mem<f32>>;
        type Words = Arc<Mem<u32>>;
        type Op = Op;
        type Graph = Vec<Step>;

        fn run(&self, op: &Op) {
            if self.dry {
                return;
            }
            let bufs: Vec<*mut u8> = op.bufs.iter().map(|&b| b as *mut u8).collect();
            // One launch at a time in the process: the emulator's block state and `__shared__`
            // arrays are globals, and the tests run in parallel.
            static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: `stacked::dispatch` checked the buffers against the kernel's table row
            // (and a recording holds them alive); the parameter struct is at most 16 words.
            unsafe {
                (self.lib.2)(self.backward);
                self.lib.1[op.at](op.groups, bufs.as_ptr(), op.params.as_ptr())
            }
        }
        fn zero(&self, mem: &Arc<Mem<f32>>, floats: usize) {
            // SAFETY: no launch is running (they are synchronous).
            unsafe { (&mut *mem.0.get())[..floats].fill(0.0) }
        }
        fn build(&self, nodes: &[Node<'_, Emu>]) -> Result<Vec<Step>, String> {
            Ok(nodes
                .iter()
                .map(|n| match n {
                    Node::Launch(op) => Step::Launch((*op).clone()),
                    Node::Zero(m, floats) => Step::Zero((*m).clone(), *floats),
                })
                .collect())
        }
        fn replay(&self, graph: &Vec<Step>) -> Result<(), String> {
            for s in graph {
                match s {
                    Step::Launch(op) => self.run(op),
                    Step::Zero(m, floats) => Replay::zero(self, m, *floats),
                }
            }
            Ok(())
        }
        fn pointers(op: &Op) -> Vec<u64> {
            op.bufs.clone()
        }
        fn span(buf: &Held<Emu>) -> std::ops::Range<u64> {
            // SAFETY: only the address and length are read.
            let (start, bytes) = unsafe {
                match buf {
                    Held::F(m) => (m.ptr() as u64, (*m.0.get()).len() * 4),
                    Held::W(w) => (w.ptr() as u64, (*w.0.get()).len() * 4),
                }
            };
            start..start + bytes as u64
        }
    }

    impl Launcher for Emu {
        type Mem = Arc<Mem<f32>>;
        type Words = Arc<Mem<u32>>;
        fn describe(&self) -> String {
            "cuda emulator".into()
        }
        fn population(&self) -> usize {
            self.k
        }
        fn alloc(&self, floats: usize) -> Self::Mem {
            self.rec().alloc(self, Kind::Zeros, floats, || Arc::new(Mem::new(vec![0.0; floats.max(1)])))
        }
        /// NaN, as the CUDA device's uninitialised memory might hold: a kernel that leaves an
        /// element of its output unwritten fails the comparison with the CPU.
        fn scratch(&self, floats: usize) -> Self::Mem {
            self.rec().alloc(self, Kind::Scratch, floats, || Arc::new(Mem::new(vec![f32::NAN; floats.max(1)])))
        }
        fn init(&self, data: &[f32]) -> Self::Mem {
            self.upload(data, Kind::Floats, Held::F, |h| match h {
                Held::F(m) => m,
                Held::W(_) => unreachable!("a float upload"),
            })
        }
        fn words(&self, data: &[u32]) -> Self::Words {
            self.upload(data, Kind::Words, Held::W, |h| match h {
                Held::W(w) => w,
                Held::F(_) => unreachable!("a word upload"),
            })
        }
        fn read(&self, mem: &Self::Mem, start: usize, floats: usize) -> Vec<f32> {
            self.rec().before_read(self);
            // SAFETY: no launch is running (they are synchronous).
            unsafe { (&*mem.0.get())[start..start + floats].to_vec() }
        }
        fn zero(&self, mem: &Self::Mem, start: usize, floats: usize) {
            self.rec().unrecorded(self);
            // SAFETY: no launch is running (they are synchronous).
            unsafe { (&mut *mem.0.get())[start..start + floats].fill(0.0) }
        }
        fn launch(&self, k: &'static Kernel, args: &[Arg<'_, Self>], params: &[u32], groups: usize) {
            let at = KERNELS.iter().position(|x| x.name == k.name).expect("a kernel of the table");
            let bufs: Vec<u64> = args
                .iter()
                .map(|a| match a {
                    Arg::F(m) => m.ptr() as u64,
                    Arg::Part(m, span) => {
                        // SAFETY: the part lies inside the buffer (checked).
                        assert!(span.end <= unsafe { (*m.0.get()).len() }, "{}: a part past its buffer", k.name);
                        m.ptr() as u64 + 4 * span.start as u64
                    }
                    Arg::U(m) => m.ptr() as u64,
                })
                .collect();
            let mut p = [0u32; 16];
            p[..params.len()].copy_from_slice(params);
            // The kernels loop grid-stride, so fewer blocks cover the same work: each emulated
            // block costs a round of thread switches.
            let groups = groups.clamp(1, 8) as u32;
            self.rec().launch(self, Op { at, groups, bufs, params: p });
        }
        fn spare(&self) -> &Self::Mem {
            &self.spare
        }
        fn begin_step(&self) {
            self.rec().begin_step(self);
        }
        fn submit(&self) {
            self.rec().end_step(self);
        }
        fn max_floats(&self) -> usize {
            1 << 26
        }
        fn resident_threads(&self) -> usize {
            self.resident
        }
    }
}

on_devices!(
    convolutions_match_the_cpu,
    batch_norm_matches_the_cpu,
    element_wise_pool_and_dense_match_the_cpu,
    optimiser_updates_and_hits_match_the_cpu,
    gathered_augmented_batches_match_the_host,
);

fn randv(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| (2.0 * rng.f64() - 1.0) as f32).collect()
}

/// K random tensors of `n` values.
fn models(rng: &mut Rng, n: usize) -> Vec<Vec<f32>> {
    (0..K).map(|_| randv(rng, n)).collect()
}

/// The K tensors of a downloaded population buffer.
fn split(all: Vec<f32>) -> Vec<Vec<f32>> {
    let n = all.len() / K;
    all.chunks(n).map(|c| c.to_vec()).collect()
}

#[track_caller]
fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * scale, "{what}[{i}]: device {g} cpu {w} (scale {scale})");
    }
}

fn convolutions_match_the_cpu<D: Device>(gpu: &D) {
    let mut rng = Rng::new(1);
    // One input channel (the stem); channel counts that fill the kernels' blocks of 8 channels
    // (and the weight gradient's pairs) and counts that do not; the last four have more output
    // pixels than a workgroup's 256 threads (the weight gradient's threads then step through
    // several, with carries across rows and images); image counts that fill blocks of 4 images
    // and counts that do not; the last two have enough pixels that a wide device splits the
    // weight gradient (into 2 and 4 parts, the last one pixel short). Which of the entry points
    // for 1, 2 and 4 images a thread runs depends on the device's threads: on the emulator of
    // one workgroup, 4x4 images, 13 of them, take 2 a thread, the last block one short.
    let shapes = [
        (2, 3, 3, 1, 4, 4, 13),
        (1, 3, 3, 1, 6, 6, 2),
        (3, 5, 3, 1, 7, 5, 3),
        (2, 4, 3, 2, 9, 7, 2),
        (3, 2, 1, 2, 5, 5, 3),
        (9, 10, 3, 1, 6, 5, 2),
        (2, 3, 3, 1, 13, 11, 4),
        (3, 8, 3, 2, 17, 15, 5),
        (2, 3, 3, 1, 29, 27, 3),
        (1, 2, 3, 1, 41, 37, 3),
    ];
    for (cin, cout, k, stride, h, w, n) in shapes {
        let g = ConvGeom::new(cin, cout, k, stride, (h, w));
        let what = format!("conv {cin}->{cout} k{k} s{stride} {h}x{w} n{n}");
        let ws = models(&mut rng, cout * g.kk());
        let xs = models(&mut rng, cin * n * h * w);
        let gys = models(&mut rng, cout * n * g.p());
        let (wb, xb, gyb) = (gpu.stack(&ws), gpu.stack(&xs), gpu.stack(&gys));
        let y = split(gpu.download(&gpu.conv_forward(&g, n, &wb, &xb)));
        let mut dw = gpu.stack(&models(&mut rng, cout * g.kk()));
        let dw0 = split(gpu.download(&dw));
        let dx = split(gpu.download(&gpu.conv_backward(&g, n, &wb, &xb, &gyb, &mut dw, true).unwrap()));
        let dw = split(gpu.download(&dw));
        for m in 0..K {
            close(&format!("{what} y"), &y[m], &Cpu.conv_forward(&g, n, &ws[m], &xs[m]), 1e-5);
            let mut cdw = dw0[m].clone();
            let cdx = Cpu.conv_backward(&g, n, &ws[m], &xs[m], &gys[m], &mut cdw, true).unwrap();
            close(&format!("{what} dx"), &dx[m], &cdx, 1e-5);
            close(&format!("{what} dw (accumulated)"), &dw[m], &cdw, 1e-5);
        }
        // A shared input (the data batch) and no dx: the first layer.
        let x1 = randv(&mut rng, cin * n * h * w);
        let xb = gpu.upload(&x1);
        let y = split(gpu.download(&gpu.conv_forward(&g, n, &wb, &xb)));
        let mut dw = gpu.zeros(cout * g.kk());
        assert!(gpu.conv_backward(&g, n, &wb, &xb, &gyb, &mut dw, false).is_none());
        let dw = split(gpu.download(&dw));
        for m in 0..K {
            close(&format!("{what} y, shared x"), &y[m], &Cpu.conv_forward(&g, n, &ws[m], &x1), 1e-5);
            let mut cdw = vec![0.0; cout * g.kk()];
            Cpu.conv_backward(&g, n, &ws[m], &x1, &gys[m], &mut cdw, false);
            close(&format!("{what} dw, shared x"), &dw[m], &cdw, 1e-5);
        }
    }
}

fn bn_state<D: Device>(d: &D, rm: D::Buf, rv: D::Buf, c: usize) -> BnState<D::Buf> {
    BnState { running_mean: rm, running_var: rv, xhat: d.zeros(0), sig: d.zeros(0), inv_std: d.zeros(c) }
}

fn batch_norm_matches_the_cpu<D: Device>(gpu: &D) {
    let mut rng = Rng::new(2);
    // 300 elements a channel: every thread of a workgroup holds a partial sum; 5,001: a wide
    // device splits each channel over 4 workgroups (1,251 elements each, the last 1,248).
    for (swish, (c, len)) in [(false, (3, 37)), (true, (3, 37)), (true, (2, 300)), (true, (2, 5001))] {
        let g = BnGeom { c, len, momentum: 0.9, eps: 1e-3, swish };
        let xs: Vec<Vec<f32>> =
            models(&mut rng, c * len).into_iter().map(|v| v.iter().map(|x| 3.0 * x + 1.0).collect()).collect();
        let (gammas, betas, gys) = (models(&mut rng, c), models(&mut rng, c), models(&mut rng, c * len));
        let rvs: Vec<Vec<f32>> =
            models(&mut rng, c).into_iter().map(|v| v.iter().map(|x| x.abs() + 0.5).collect()).collect();
        let rms = models(&mut rng, c);
        let (xb, gb, bb, gyb) = (gpu.stack(&xs), gpu.stack(&gammas), gpu.stack(&betas), gpu.stack(&gys));
        let mut s = bn_state(gpu, gpu.stack(&rms), gpu.stack(&rvs), c);
        let y = split(gpu.download(&gpu.bn_forward(&g, &xb, &gb, &bb, &mut s, true)));
        let (mut dg, mut db) = (gpu.zeros(c), gpu.zeros(c));
        let dx = split(gpu.download(&gpu.bn_backward(&g, &gyb, &gb, &bb, &s, &mut dg, &mut db)));
        let (dg, db) = (split(gpu.download(&dg)), split(gpu.download(&db)));
        let ye = split(gpu.download(&gpu.bn_forward(&g, &xb, &gb, &bb, &mut s, false)));
        let (rm, rv) = (split(gpu.download(&s.running_mean)), split(gpu.download(&s.running_var)));
        for m in 0..K {
            let what = format!("bn swish={swish} model {m}");
            let mut cs = bn_state(&Cpu, rms[m].clone(), rvs[m].clone(), c);
            close(&format!("{what} y"), &y[m], &Cpu.bn_forward(&g, &xs[m], &gammas[m], &betas[m], &mut cs, true), 1e-5);
            let (mut cdg, mut cdb) = (vec![0.0; c], vec![0.0; c]);
            let cdx = Cpu.bn_backward(&g, &gys[m], &gammas[m], &betas[m], &cs, &mut cdg, &mut cdb);
            close(&format!("{what} dx"), &dx[m], &cdx, 1e-4);
            close(&format!("{what} dgamma"), &dg[m], &cdg, 1e-5);
            close(&format!("{what} dbeta"), &db[m], &cdb, 1e-5);
            close(&format!("{what} running mean"), &rm[m], &cs.running_mean, 1e-5);
            close(&format!("{what} running var"), &rv[m], &cs.running_var, 1e-5);
            let cye = Cpu.bn_forward(&g, &xs[m], &gammas[m], &betas[m], &mut cs, false);
            close(&format!("{what} evaluation y"), &ye[m], &cye, 1e-5);
        }
    }
}

fn element_wise_pool_and_dense_match_the_cpu<D: Device>(gpu: &D) {
    let mut rng = Rng::new(3);
    let (c, n, hw) = (5, 3, 7);
    // add, and mul by a mask every model shares.
    let (a, b) = (models(&mut rng, 11), models(&mut rng, 11));
    let mut ab = gpu.stack(&a);
    gpu.add_assign(&mut ab, &gpu.stack(&b));
    let mask = randv(&mut rng, 11);
    let prod = split(gpu.download(&gpu.mul(&ab, &gpu.upload(&mask))));
    let sum = split(gpu.download(&ab));
    for m in 0..K {
        let mut ca = a[m].clone();
        Cpu.add_assign(&mut ca, &b[m]);
        close("add", &sum[m], &ca, 1e-6);
        close("mul by a shared mask", &prod[m], &Cpu.mul(&ca, &mask), 1e-6);
    }
    let xs = models(&mut rng, c * n * hw);
    let gys = models(&mut rng, n * c);
    let y = split(gpu.download(&gpu.pool_forward(c, n, hw, &gpu.stack(&xs))));
    let dx = split(gpu.download(&gpu.pool_backward(c, n, hw, &gpu.stack(&gys))));
    for m in 0..K {
        close("pool", &y[m], &Cpu.pool_forward(c, n, hw, &xs[m]), 1e-6);
        close("pool backward", &dx[m], &Cpu.pool_backward(c, n, hw, &gys[m]), 1e-6);
    }
    let (inp, out) = (13, 7);
    let (xs, ws, bs, gys) =
        (models(&mut rng, n * inp), models(&mut rng, out * inp), models(&mut rng, out), models(&mut rng, n * out));
    let (xb, wb) = (gpu.stack(&xs), gpu.stack(&ws));
    let y = split(gpu.download(&gpu.dense_forward(n, inp, out, &xb, &wb, &gpu.stack(&bs))));
    let (mut dw, mut db) = (gpu.stack(&models(&mut rng, out * inp)), gpu.zeros(out));
    let dw0 = split(gpu.download(&dw));
    let dx = split(gpu.download(&gpu.dense_backward(n, inp, out, &xb, &wb, &gpu.stack(&gys), &mut dw, &mut db)));
    let (dw, db) = (split(gpu.download(&dw)), split(gpu.download(&db)));
    for m in 0..K {
        close("dense", &y[m], &Cpu.dense_forward(n, inp, out, &xs[m], &ws[m], &bs[m]), 1e-5);
        let (mut cdw, mut cdb) = (dw0[m].clone(), vec![0.0; out]);
        let cdx = Cpu.dense_backward(n, inp, out, &xs[m], &ws[m], &gys[m], &mut cdw, &mut cdb);
        close("dense dx", &dx[m], &cdx, 1e-5);
        close("dense dw (accumulated)", &dw[m], &cdw, 1e-5);
        close("dense db", &db[m], &cdb, 1e-5);
    }
}

fn optimiser_updates_and_hits_match_the_cpu<D: Device>(gpu: &D) {
    let mut rng = Rng::new(4);
    let adam = Update::Adam { lr: 0.01, b1: 0.9, b2: 0.999, eps: 1e-7, c1: 0.19, c2: 0.002 };
    let nesterov = Update::Nesterov { lr: 0.05, mu: 0.9 };
    // Tensors of odd lengths, with and without decay: the device packs them into arenas (with
    // zeros between tensors) and updates each run of one decay in one launch.
    let lens = [29, 3, 70];
    for (u, wd) in [(adam, 0.0), (adam, 5e-4), (nesterov, 5e-4)] {
        let decays = [wd, 0.0, wd];
        let host: Vec<[Vec<Vec<f32>>; 4]> = lens
            .iter()
            .map(|&n| {
                let v0 = models(&mut rng, n).into_iter().map(|v| v.iter().map(|x| x.abs()).collect()).collect();
                [models(&mut rng, n), models(&mut rng, n), models(&mut rng, n), v0]
            })
            .collect();
        let mut bufs: Vec<[D::Buf; 4]> = host.iter().map(|t| t.each_ref().map(|x| gpu.stack(x))).collect();
        let update = |bufs: &mut Vec<[D::Buf; 4]>| {
            let mut tensors: Vec<Tensors<'_, D::Buf>> = bufs
                .iter_mut()
                .zip(decays)
                .map(|([value, grad, m, v], decay)| Tensors { decay, value, grad, m, v })
                .collect();
            gpu.update(&u, &mut tensors);
        };
        // Two steps: the second sees the first's moments and a cleared gradient.
        for _ in 0..2 {
            update(&mut bufs);
        }
        for (t, (b, decay)) in bufs.iter().zip(decays).enumerate() {
            let got: Vec<Vec<Vec<f32>>> = b.iter().map(|b| split(gpu.download(b))).collect();
            for k in 0..K {
                let [mut cw, mut cg, mut cm, mut cv] = host[t].each_ref().map(|x| x[k].clone());
                for _ in 0..2 {
                    Cpu.update(&u, &mut [Tensors { decay, value: &mut cw, grad: &mut cg, m: &mut cm, v: &mut cv }]);
                }
                for (what, got, want) in [("value", &got[0][k], &cw), ("grad", &got[1][k], &cg), ("m", &got[2][k], &cm)]
                {
                    close(&format!("{u:?} tensor {t} decay {decay} {what}"), got, want, 1e-6);
                }
                if matches!(u, Update::Adam { .. }) {
                    close(&format!("{u:?} tensor {t} v"), &got[3][k], &cv, 1e-6);
                }
            }
        }
        // Packed: a launch for each decay, no copies.
        profile::start();
        update(&mut bufs);
        let got: Vec<(&str, usize)> = profile::stop().iter().map(|k| (k.name, k.launches)).collect();
        assert_eq!(got, [("update", if wd == 0.0 { 1 } else { 2 })], "{u:?} decay {wd}");
    }
    // hits: ties go to the first maximum, as on the CPU.
    let (n, classes) = (37, 6);
    let logits: Vec<Vec<f32>> =
        models(&mut rng, n * classes).into_iter().map(|v| v.iter().map(|x| (x * 3.0).round()).collect()).collect();
    let labels: Vec<u32> = (0..n).map(|_| rng.below(classes) as u32).collect();
    let mut stats = gpu.zeros(4);
    gpu.hits(&gpu.stack(&logits), n, classes, &labels, &mut stats, 1);
    let got = split(gpu.download(&stats));
    for k in 0..K {
        let mut want = vec![0.0; 4];
        Cpu.hits(&logits[k], n, classes, &labels, &mut want, 1);
        assert_eq!(got[k], want, "hits of model {k}");
    }
}

/// Batches gathered and augmented on the device equal the host's augmentation of the same
/// draws: base, cutout, mixup, and all three at once (RandAug stays on the host).
fn gathered_augmented_batches_match_the_host<D: Device>(gpu: &D) {
    use lossc_runtime::augment::{self, Augment, Technique};
    let mut rng = Rng::new(5);
    let shape = (3, 9, 7);
    let size = 3 * 9 * 7;
    let data: Vec<f32> = (0..20 * size).map(|_| rng.f64() as f32).collect();
    let resident = gpu.resident(&data).expect("a small set fits");
    let all_but_randaug = Augment { randaug_n: 0, cutout: 5, ..Augment::new(Technique::All) };
    let mut techniques: Vec<Augment> = [Technique::Base, Technique::Cutout, Technique::Mixup]
        .map(|t| Augment { cutout: 4, ..Augment::new(t) })
        .to_vec();
    techniques.push(all_but_randaug);
    for a in techniques {
        let idx: Vec<usize> = (0..11).map(|_| rng.below(20)).collect();
        let plan = augment::plan(&a, idx.len(), shape, &mut rng);
        assert!(augment::is_gather(&plan) && a.is_gather());
        let got = gpu.download(&gpu.gather(&resident, &idx, &plan, &a, shape));
        let images: Vec<f32> = idx.iter().flat_map(|&i| data[i * size..(i + 1) * size].iter().copied()).collect();
        let labels = vec![0; idx.len()];
        let want = augment::apply_plan(&a, &plan, &images, &labels, shape);
        close(&format!("{:?} gather", a.technique), &got, &Cpu.upload_images(&want.images, idx.len(), 3, 63), 1e-6);
    }
}

/// A profile times this thread's launches while it is on, each under its kernel's name (the
/// emulated CUDA kernels stand in for a GPU).
#[test]
fn a_profile_counts_each_launch_while_on() {
    let Some(d) = open(emu::Emu::new(K), "LOSSC_REQUIRE_GXX") else { return };
    let g = ConvGeom::new(2, 3, 3, 1, (4, 4));
    let (w, x) = (d.param(&vec![0.5; 3 * g.kk()]), d.upload(&vec![1.0; 2 * 2 * 16]));
    d.conv_forward(&g, 2, &w, &x);
    profile::start();
    let y = d.conv_forward(&g, 2, &w, &x);
    let mut z = d.conv_forward(&g, 2, &w, &x);
    d.add_assign(&mut z, &y);
    let got: Vec<(&str, usize)> = profile::stop().iter().map(|k| (k.name, k.launches)).collect();
    assert_eq!(got, [("conv_forward_1", 2), ("add", 1)]);
    d.conv_forward(&g, 2, &w, &x);
    assert!(profile::stop().is_empty(), "no profile after stop");
}

/// A step replayed from its recording computes what the same step run as it comes computes,
/// bit for bit: new uploads each step (inputs, a mask, labels, the learning rate), zeroed
/// buffers zeroed again, statistics read and cleared between steps; a step of another shape
/// leaves the recording and runs as it comes, and the step after it is recorded afresh; so
/// does a step whose weights moved to new buffers.
#[test]
fn replayed_steps_equal_steps_run_as_they_come() {
    use lossc_runtime::replay::Counts;
    let Some(graphs) = open(emu::Emu::with_graphs(2, true), "LOSSC_REQUIRE_GXX") else { return };
    let direct = emu::Emu::with_graphs(2, false).expect("built above");
    let batches = [4, 4, 4, 4, 3, 4, 4, 4, 4, 4];
    assert_eq!(train_steps(&graphs, &batches), train_steps(&direct, &batches));
    // The first step runs as it comes; the fifth (another shape) and the seventh (new weight
    // buffers) leave their recordings, and the steps after them are recorded.
    assert_eq!(graphs.counts(), Counts { direct: 1, recorded: 3, replayed: 4, diverged: 2 });
    assert_eq!(direct.counts(), Counts { direct: batches.len(), ..Counts::NONE });
}

/// The two tensors of a population of 2.
fn split2(all: Vec<f32>) -> [Vec<f32>; 2] {
    let (a, b) = all.split_at(all.len() / 2);
    [a.to_vec(), b.to_vec()]
}

/// A few steps of a convolution trained with Adam on a population of 2; the weights and each
/// step's statistics.
fn train_steps<D: Device>(d: &D, batches: &[usize]) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut rng = Rng::new(7);
    let g = ConvGeom::new(2, 3, 3, 1, (5, 5));
    let classes = 3 * 25;
    let mut w = d.stack(&[randv(&mut rng, 3 * g.kk()), randv(&mut rng, 3 * g.kk())]);
    let (mut dw, mut m, mut v) = (d.zeros(3 * g.kk()), d.zeros(0), d.zeros(0));
    let mut stats = d.zeros(4);
    let mut seen = Vec::new();
    for (step, &n) in batches.iter().enumerate() {
        if step == 6 {
            w = d.stack(&split2(d.download(&w)));
        }
        d.begin_step();
        let x = d.upload(&randv(&mut rng, 2 * n * 25));
        let y = d.conv_forward(&g, n, &w, &x);
        let mask = d.upload(&randv(&mut rng, 3 * n * 25));
        let z = d.mul(&y, &mask);
        // An accumulator the step allocates zeroed.
        let mut acc = d.zeros(3 * n * 25);
        d.add_assign(&mut acc, &z);
        d.conv_backward(&g, n, &w, &x, &acc, &mut dw, false);
        let t = step as i32 + 1;
        let (b1, b2) = (0.9f32, 0.999f32);
        let lr = 0.01 / t as f32;
        let u = Update::Adam { lr, b1, b2, eps: 1e-7, c1: 1.0 - b1.powi(t), c2: 1.0 - b2.powi(t) };
        d.update(&u, &mut [Tensors { decay: 1e-3, value: &mut w, grad: &mut dw, m: &mut m, v: &mut v }]);
        let labels: Vec<u32> = (0..n).map(|_| rng.below(classes) as u32).collect();
        d.hits(&z, n, classes, &labels, &mut stats, 1);
        d.flush();
        if step % 3 == 2 {
            seen.push(d.download(&stats));
            d.clear(&mut stats);
        }
    }
    seen.push(d.download(&stats));
    (d.download(&w), seen)
}

/// The loss of the training test: the logits' product with an upload (the emitted loss
/// kernels are not part of the emulated device).
struct Product;

impl<D: Device> lossc_runtime::train::DeviceLoss<D> for Product {
    fn run(
        &self,
        dev: &D,
        logits: &D::Buf,
        _classes: usize,
        _t: &lossc_runtime::train::LabelTargets,
        grad: &mut D::Buf,
        _stats: &mut D::Buf,
        _step: usize,
    ) -> Result<(), lossc_runtime::train::LossError> {
        *grad = dev.mul(logits, &dev.upload(&vec![0.5; dev.len(logits)]));
        Ok(())
    }
}

/// A whole training (batches gathered on the device with mixup and cutout, dropout, Adam's
/// schedule, evaluations and statistics read between steps) makes the same launches every
/// step: each step after the recorded second replays it, on a device of one block and on one
/// taken for a large GPU.
#[test]
fn every_training_step_after_the_second_replays() {
    use lossc_runtime::augment::{Augment, Technique};
    use lossc_runtime::data::Dataset;
    use lossc_runtime::replay::Counts;
    use lossc_runtime::train::{Config, train_population};
    let Some(d) = open(emu::Emu::with_graphs(2, true), "LOSSC_REQUIRE_GXX") else { return };
    let d = d.dry();
    let data = |n: usize| Dataset {
        images: vec![0.5; n * 16],
        labels: (0..n).map(|i| (i % 3) as u32).collect(),
        shape: (1, 4, 4),
        classes: 3,
    };
    let augment = Augment { pad: 1, cutout: 2, randaug_n: 0, ..Augment::new(Technique::All) };
    let cfg = Config { batch: 4, eval_every: 4, gate_accuracy: 0.0, ..Config::new(12, augment) };
    let m = train_population(d.clone(), &Product, &data(24), &data(8), None, &cfg, &mut |_| {});
    assert_eq!(m[0].steps, 12);
    assert_eq!(d.counts(), Counts { direct: 1, recorded: 1, replayed: 10, diverged: 0 });
    // Taken for a large GPU, with 32x32 images: the reductions split (8 parts a channel in the
    // first block), which adds launches but not ones that differ from step to step.
    let wide = emu::Emu::with_graphs(2, true).unwrap().dry().wide();
    let data = |n: usize| Dataset {
        images: vec![0.5; n * 1024],
        labels: (0..n).map(|i| (i % 3) as u32).collect(),
        shape: (1, 32, 32),
        classes: 3,
    };
    let cfg = Config { batch: 8, ..cfg };
    let m = train_population(wide.clone(), &Product, &data(24), &data(8), None, &cfg, &mut |_| {});
    assert_eq!(m[0].steps, 12);
    assert_eq!(wide.counts(), Counts { direct: 1, recorded: 1, replayed: 10, diverged: 0 });
}
