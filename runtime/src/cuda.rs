//! The CUDA device: a population of K models trained on an NVIDIA GPU through the driver API
//! (cudarc), with the kernels of kernels/train.rs compiled once per process by NVRTC and each
//! model's loss as its own emitted CUDA kernel (kernels/loss.cu.in).
//!
//! It is the wgpu device ([`crate::gpu`]) with CUDA underneath: the same kernel text, the same
//! launch shapes (blocks of 256 threads, at most 65,535 blocks, the kernels loop over the rest),
//! the same buffer layout (K tensors on a leading model axis; a buffer from
//! [`Device::upload`] is shared by all models, model stride 0). Everything runs in order on one
//! stream; the host waits only when it reads a buffer back, which the training loop does at
//! evaluation intervals, and at each step's end for the step before it (one step queued). A model's loss kernel reads and writes its own part of the stacked
//! logits and gradient in place (no copies, unlike wgpu's whole-buffer bindings).

use crate::augment::{self, Augment, Plan};
use crate::device::{BnGeom, BnState, ConvGeom, Device, Update};
use crate::kernels::{self, Access, KERNELS, THREADS};
use crate::train::{DeviceLoss, LabelTargets, LossError};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Why the CUDA device could not be opened or a kernel built.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("libcuda (the NVIDIA driver) is not installed")]
    NoDriver,
    #[error("libnvrtc (NVRTC, CUDA's run-time compiler) is not installed or not on the library path")]
    NoNvrtc,
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    #[error("the training kernels do not build for {arch}: {message}")]
    Kernels { arch: &'static str, message: String },
    #[error("the loss kernel of model {model} does not build: {message}")]
    LossKernel { model: usize, message: String },
    #[error("CUDA driver: {0}")]
    Driver(String),
    #[error("a population of {models} models of this size needs {floats} floats in one tensor; kernels index in u32")]
    TooLarge { models: usize, floats: u64 },
}

fn driver(e: impl std::fmt::Debug) -> CudaError {
    CudaError::Driver(format!("{e:?}"))
}

/// The NVRTC architecture flag for a compute capability (the newest we name, else sm_80).
pub fn arch_of(major: i32, minor: i32) -> &'static str {
    match (major, minor) {
        (9, _) => "sm_90",
        (8, 9) => "sm_89",
        (8, 6) => "sm_86",
        (m, _) if m >= 10 => "sm_90",
        _ => "sm_80",
    }
}

/// CUDA C to PTX with NVRTC for `arch`; the error is NVRTC's log.
pub fn compile_ptx(src: &str, arch: &'static str) -> Result<cudarc::nvrtc::Ptx, String> {
    let opts = cudarc::nvrtc::CompileOptions { arch: Some(arch), ..Default::default() };
    cudarc::nvrtc::compile_ptx_with_opts(src, opts).map_err(|e| format!("{e:?}"))
}

/// Whether libnvrtc can be opened (cudarc loads it on first use and panics without it).
pub fn nvrtc_present() -> bool {
    // SAFETY: only probes for the shared library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// What every device of the process shares: the context of GPU 0 and the runtime's kernels,
/// compiled once.
struct Shared {
    ctx: Arc<CudaContext>,
    name: String,
    arch: &'static str,
    functions: HashMap<&'static str, CudaFunction>,
}

impl Shared {
    /// The process's context and kernels, made on first use (a failure is not kept: the
    /// next call tries again).
    fn get() -> Result<Arc<Shared>, CudaError> {
        static SHARED: Mutex<Option<Arc<Shared>>> = Mutex::new(None);
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = &*shared {
            return Ok(s.clone());
        }
        // SAFETY: only probes for the shared library (`CudaContext::new` panics without it).
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(CudaError::NoDriver);
        }
        if !nvrtc_present() {
            return Err(CudaError::NoNvrtc);
        }
        let ctx = CudaContext::new(0).map_err(|e| CudaError::NoDevice(format!("{e:?}")))?;
        // SAFETY: each device does all its work on its own stream and no buffer moves between
        // devices, so cudarc's events between streams are not needed; no buffer exists yet.
        unsafe { ctx.disable_event_tracking() };
        let name = ctx.name().map_err(driver)?;
        let (major, minor) = ctx.compute_capability().map_err(driver)?;
        let arch = arch_of(major, minor);
        let ptx = compile_ptx(&kernels::cuda(), arch).map_err(|message| CudaError::Kernels { arch, message })?;
        let module = ctx.load_module(ptx).map_err(driver)?;
        let mut functions = HashMap::new();
        for k in KERNELS {
            functions.insert(k.name, module.load_function(k.name).map_err(driver)?);
        }
        let s = Arc::new(Shared { ctx, name, arch, functions });
        *shared = Some(s.clone());
        Ok(s)
    }
}

struct Inner {
    shared: Arc<Shared>,
    /// This device's stream: its work runs in order, beside other devices' (other threads).
    stream: Arc<CudaStream>,
    /// A one-element buffer for arguments a launch does not use.
    spare: CudaSlice<f32>,
    /// The end of the step before the last [`Device::flush`]: the host waits for it there, so
    /// that at most one step is queued behind the running one (each step allocates its
    /// activations; a host far ahead of the GPU would hold many steps' worth).
    last_step: Mutex<Option<CudaEvent>>,
}

/// The CUDA device with a population of `models` models.
#[derive(Clone)]
pub struct Cuda {
    inner: Arc<Inner>,
    k: usize,
}

/// A device buffer: one tensor of `len` floats per model, or one for all (`shared`).
pub struct CBuf {
    buf: CudaSlice<f32>,
    len: usize,
    shared: bool,
}

impl CBuf {
    /// Elements between one model's tensor and the next.
    fn stride(&self) -> u32 {
        if self.shared { 0 } else { self.len as u32 }
    }
}

/// A kernel's parameter struct (`P_name` in the CUDA translation unit: u32 and f32 fields),
/// passed by value. The driver copies as many bytes as the kernel's parameter has.
#[repr(C)]
#[derive(Clone, Copy)]
struct Params([u32; 16]);
// SAFETY: plain 32-bit words, laid out as the kernels' parameter structs (4-byte fields).
unsafe impl DeviceRepr for Params {}

/// A launch argument: a buffer of floats or of u32.
enum Arg<'a> {
    F(&'a CudaSlice<f32>),
    U(&'a CudaSlice<u32>),
}

fn u(x: usize) -> u32 {
    u32::try_from(x).expect("the population's tensors are checked to index in u32")
}

impl Cuda {
    /// GPU 0 on a stream of its own, for a population of `models`. The runtime's kernels are
    /// compiled by NVRTC on the process's first call.
    pub fn new(models: usize) -> Result<Cuda, CudaError> {
        let shared = Shared::get()?;
        let stream = shared.ctx.new_stream().map_err(driver)?;
        let spare = stream.alloc_zeros::<f32>(1).map_err(driver)?;
        let inner = Inner { shared, stream, spare, last_step: Mutex::new(None) };
        Ok(Cuda { inner: Arc::new(inner), k: models.max(1) })
    }

    /// The device's name, e.g. "NVIDIA H200".
    pub fn device_name(&self) -> &str {
        &self.inner.shared.name
    }

    /// The NVRTC architecture the kernels are compiled for.
    pub fn arch(&self) -> &'static str {
        self.inner.shared.arch
    }

    /// Checks that a tensor of `per_model` floats for each of the K models indexes in u32.
    pub fn check_size(&self, per_model: usize) -> Result<(), CudaError> {
        let floats = (per_model * self.k) as u64;
        if floats > u32::MAX as u64 {
            return Err(CudaError::TooLarge { models: self.k, floats });
        }
        Ok(())
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) {
        self.inner.stream.synchronize().expect("CUDA stream");
    }

    fn buffer(&self, floats: usize, len: usize, shared: bool) -> CBuf {
        let buf = self.inner.stream.alloc_zeros::<f32>(floats.max(1)).expect("CUDA allocation");
        CBuf { buf, len, shared }
    }

    fn init(&self, data: &[f32], len: usize, shared: bool) -> CBuf {
        let buf =
            if data.is_empty() { self.inner.stream.alloc_zeros::<f32>(1) } else { self.inner.stream.clone_htod(data) };
        CBuf { buf: buf.expect("CUDA upload"), len, shared }
    }

    fn labels(&self, labels: &[u32]) -> CudaSlice<u32> {
        let s = &self.inner.stream;
        if labels.is_empty() { s.alloc_zeros::<u32>(1) } else { s.clone_htod(labels) }.expect("CUDA upload")
    }

    /// Launches kernel `name` over `args` with `params` (u32 bits, in the table's order) on
    /// `groups` blocks (capped; the kernels loop over the rest).
    fn dispatch(&self, name: &str, args: &[Arg], params: &[u32], groups: usize) {
        let k = kernels::kernel(name);
        debug_assert_eq!(args.len(), k.buffers.len(), "{name}: buffers");
        debug_assert_eq!(params.len(), k.params.len(), "{name}: parameters");
        for (arg, (buf, access)) in args.iter().zip(k.buffers) {
            debug_assert_eq!(matches!(arg, Arg::U(_)), *access == Access::ReadU32, "{name}: buffer {buf}");
        }
        let mut p = Params([0; 16]);
        p.0[..params.len()].copy_from_slice(params);
        let mut launch = self.inner.stream.launch_builder(&self.inner.shared.functions[k.name]);
        for a in args {
            match a {
                Arg::F(b) => launch.arg(*b),
                Arg::U(b) => launch.arg(*b),
            };
        }
        launch.arg(&p);
        let cfg = LaunchConfig {
            grid_dim: (groups.clamp(1, 65535) as u32, 1, 1),
            block_dim: (THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments are the kernel's buffers in the table's order, then its
        // parameter struct; every buffer holds what the Device method's assertions checked.
        unsafe { launch.launch(cfg) }.unwrap_or_else(|e| panic!("CUDA launch of {name}: {e:?}"));
    }

    /// [`Cuda::dispatch`] over `total` elements, one thread each.
    fn each(&self, name: &str, args: &[Arg], params: &[u32], total: usize) {
        self.dispatch(name, args, params, total.div_ceil(THREADS));
    }
}

impl Device for Cuda {
    type Buf = CBuf;

    fn name(&self) -> String {
        format!("cuda ({})", self.inner.shared.name)
    }
    fn models(&self) -> usize {
        self.k
    }
    fn zeros(&self, n: usize) -> CBuf {
        self.buffer(n * self.k, n, false)
    }
    fn upload(&self, host: &[f32]) -> CBuf {
        self.init(host, host.len(), true)
    }
    fn param(&self, host: &[f32]) -> CBuf {
        let all: Vec<f32> = (0..self.k).flat_map(|_| host.iter().copied()).collect();
        self.init(&all, host.len(), false)
    }
    /// A buffer holding a different tensor for each model (`tensors.len()` = K, equal lengths).
    fn stack(&self, tensors: &[Vec<f32>]) -> CBuf {
        assert!(tensors.len() == self.k && tensors.iter().all(|t| t.len() == tensors[0].len()), "stack: K tensors");
        self.init(&tensors.concat(), tensors[0].len(), false)
    }
    fn download(&self, buf: &CBuf) -> Vec<f32> {
        let n = if buf.shared { buf.len } else { buf.len * self.k };
        if n == 0 {
            return Vec::new();
        }
        self.inner.stream.clone_dtoh(&buf.buf.slice(..n)).expect("CUDA read-back")
    }
    fn len(&self, buf: &CBuf) -> usize {
        buf.len
    }
    fn flush(&self) {
        let end = self.inner.stream.record_event(None).expect("CUDA event");
        let mut last = self.inner.last_step.lock().expect("last step");
        if let Some(prev) = last.replace(end) {
            prev.synchronize().expect("CUDA event");
        }
    }
    fn upload_images(&self, host: &[f32], n: usize, c: usize, hw: usize) -> CBuf {
        self.upload(&crate::cpu::Cpu.upload_images(host, n, c, hw))
    }
    fn resident(&self, images: &[f32]) -> Option<CBuf> {
        let (free, _) = self.inner.shared.ctx.mem_get_info().ok()?;
        (images.len() <= u32::MAX as usize && images.len() * 4 < free / 2).then(|| self.upload(images))
    }
    fn gather(&self, data: &CBuf, idx: &[usize], plan: &Plan, a: &Augment, (c, h, w): (usize, usize, usize)) -> CBuf {
        assert!(augment::is_gather(plan) && idx.len() == plan.images.len(), "gather: a plan without RandAug");
        let n = idx.len();
        let draws = augment::gather_draws(idx, plan, a);
        let lam = self.init(plan.mix.as_ref().map_or(&[][..], |(_, lam)| lam), n, true);
        let x = self.buffer(c * n * h * w, c * n * h * w, true);
        let total = x.len;
        let params = [total, n, c, h, w, a.pad, a.cutout, plan.mix.is_some() as usize].map(u);
        let draws = self.labels(&draws);
        self.each("augment", &[Arg::F(&data.buf), Arg::U(&draws), Arg::F(&lam.buf), Arg::F(&x.buf)], &params, total);
        x
    }

    fn conv_forward(&self, g: &ConvGeom, n: usize, w: &CBuf, x: &CBuf) -> CBuf {
        assert!(w.len == g.cout * g.kk() && x.len == g.cin * n * g.h * g.w, "conv_forward: shapes");
        let y = self.zeros(g.cout * n * g.p());
        let total = self.k * y.len;
        let params = [total, n, g.cin, g.cout, g.k, g.stride, g.pad, g.h, g.w, g.oh, g.ow].map(u);
        let params = [&params[..], &[x.stride()]].concat();
        self.each("conv_forward", &[Arg::F(&w.buf), Arg::F(&x.buf), Arg::F(&y.buf)], &params, total);
        y
    }

    fn conv_backward(
        &self,
        g: &ConvGeom,
        n: usize,
        w: &CBuf,
        x: &CBuf,
        gy: &CBuf,
        dw: &mut CBuf,
        want_dx: bool,
    ) -> Option<CBuf> {
        assert!(gy.len == g.cout * n * g.p() && dw.len == g.cout * g.kk(), "conv_backward: shapes");
        let shape = [n, g.cin, g.cout, g.k, g.stride, g.pad, g.h, g.w, g.oh, g.ow].map(u);
        let groups = self.k * dw.len;
        let params = [&[u(groups)], &shape[..], &[x.stride()]].concat();
        self.dispatch("conv_backward_filter", &[Arg::F(&x.buf), Arg::F(&gy.buf), Arg::F(&dw.buf)], &params, groups);
        want_dx.then(|| {
            let dx = self.zeros(g.cin * n * g.h * g.w);
            let total = self.k * dx.len;
            let params = [&[u(total)], &shape[..]].concat();
            self.each("conv_backward_data", &[Arg::F(&w.buf), Arg::F(&gy.buf), Arg::F(&dx.buf)], &params, total);
            dx
        })
    }

    fn bn_forward(&self, g: &BnGeom, x: &CBuf, gamma: &CBuf, beta: &CBuf, s: &mut BnState<CBuf>, train: bool) -> CBuf {
        assert_eq!(x.len, g.c * g.len, "bn_forward: shape");
        let groups = self.k * g.c;
        let mean = self.zeros(g.c);
        if s.inv_std.len != g.c {
            s.inv_std = self.zeros(g.c);
        }
        if train {
            let params = [u(groups), u(g.len), g.momentum.to_bits(), g.eps.to_bits()];
            let args = [&x.buf, &mean.buf, &s.inv_std.buf, &s.running_mean.buf, &s.running_var.buf].map(Arg::F);
            self.dispatch("bn_stats", &args, &params, groups);
            if s.xhat.len != x.len {
                s.xhat = self.zeros(x.len);
            }
            if g.swish && s.sig.len != x.len {
                s.sig = self.zeros(x.len);
            }
        } else {
            let args = [&s.running_mean.buf, &s.running_var.buf, &mean.buf, &s.inv_std.buf].map(Arg::F);
            self.each("bn_running", &args, &[u(groups), g.eps.to_bits()], groups);
        }
        let y = self.zeros(x.len);
        let total = self.k * x.len;
        let params = [total, g.len, g.swish as usize, train as usize].map(u);
        let args = [&x.buf, &mean.buf, &s.inv_std.buf, &gamma.buf, &beta.buf, &y.buf, &s.xhat.buf, &s.sig.buf];
        self.each("bn_apply", &args.map(Arg::F), &params, total);
        y
    }

    fn bn_backward(
        &self,
        g: &BnGeom,
        gy: &CBuf,
        gamma: &CBuf,
        beta: &CBuf,
        s: &BnState<CBuf>,
        dgamma: &mut CBuf,
        dbeta: &mut CBuf,
    ) -> CBuf {
        assert!(gy.len == g.c * g.len && s.xhat.len == g.c * g.len, "bn_backward: shapes");
        let groups = self.k * g.c;
        let sums = self.zeros(2 * g.c);
        let sig = if g.swish { &s.sig.buf } else { &self.inner.spare };
        let args = [&gy.buf, &s.xhat.buf, sig, &gamma.buf, &beta.buf, &sums.buf, &dgamma.buf, &dbeta.buf];
        self.dispatch("bn_backward_sums", &args.map(Arg::F), &[u(groups), u(g.len), g.swish as u32], groups);
        let dx = self.zeros(gy.len);
        let total = self.k * gy.len;
        let args = [&gy.buf, &s.xhat.buf, sig, &gamma.buf, &beta.buf, &s.inv_std.buf, &sums.buf, &dx.buf];
        self.each("bn_backward_dx", &args.map(Arg::F), &[u(total), u(g.len), g.swish as u32], total);
        dx
    }

    fn add_assign(&self, a: &mut CBuf, b: &CBuf) {
        assert!(a.len == b.len && !a.shared && !b.shared, "add_assign: lengths");
        let total = self.k * a.len;
        self.each("add", &[Arg::F(&a.buf), Arg::F(&b.buf)], &[u(total)], total);
    }
    fn mul(&self, a: &CBuf, b: &CBuf) -> CBuf {
        assert!(a.len == b.len && !a.shared, "mul: lengths");
        let y = self.zeros(a.len);
        let total = self.k * a.len;
        let params = [u(total), u(a.len), b.stride()];
        self.each("mul", &[Arg::F(&a.buf), Arg::F(&b.buf), Arg::F(&y.buf)], &params, total);
        y
    }
    fn pool_forward(&self, c: usize, n: usize, hw: usize, x: &CBuf) -> CBuf {
        let y = self.zeros(n * c);
        let total = self.k * y.len;
        self.each("pool_forward", &[Arg::F(&x.buf), Arg::F(&y.buf)], &[total, c, n, hw].map(u), total);
        y
    }
    fn pool_backward(&self, c: usize, n: usize, hw: usize, gy: &CBuf) -> CBuf {
        let dx = self.zeros(c * n * hw);
        let total = self.k * dx.len;
        self.each("pool_backward", &[Arg::F(&gy.buf), Arg::F(&dx.buf)], &[total, c, n, hw].map(u), total);
        dx
    }
    fn dense_forward(&self, n: usize, inp: usize, out: usize, x: &CBuf, w: &CBuf, b: &CBuf) -> CBuf {
        assert!(x.len == n * inp && w.len == out * inp && b.len == out && !x.shared, "dense_forward: shapes");
        let y = self.zeros(n * out);
        let total = self.k * y.len;
        let args = [&x.buf, &w.buf, &b.buf, &y.buf].map(Arg::F);
        self.each("dense_forward", &args, &[total, n, inp, out].map(u), total);
        y
    }
    fn dense_backward(
        &self,
        n: usize,
        inp: usize,
        out: usize,
        x: &CBuf,
        w: &CBuf,
        gy: &CBuf,
        dw: &mut CBuf,
        db: &mut CBuf,
    ) -> CBuf {
        assert!(gy.len == n * out && dw.len == out * inp && db.len == out, "dense_backward: shapes");
        let total = self.k * dw.len;
        let args = [&x.buf, &gy.buf, &dw.buf, &db.buf].map(Arg::F);
        self.each("dense_backward_w", &args, &[total, n, inp, out].map(u), total);
        let dx = self.zeros(n * inp);
        let total = self.k * dx.len;
        let args = [&w.buf, &gy.buf, &dx.buf].map(Arg::F);
        self.each("dense_backward_x", &args, &[total, n, inp, out].map(u), total);
        dx
    }

    fn hits(&self, logits: &CBuf, n: usize, classes: usize, labels: &[u32], stats: &mut CBuf, slot: usize) {
        assert!(logits.len >= n * classes && labels.len() == n && slot < 4 && stats.len == 4, "hits: shapes");
        let labels = self.labels(labels);
        let params = [self.k, n, classes, slot].map(u);
        self.dispatch("hits", &[Arg::F(&logits.buf), Arg::U(&labels), Arg::F(&stats.buf)], &params, self.k);
    }

    fn update(&self, up: &Update, decay: f32, value: &mut CBuf, grad: &mut CBuf, m: &mut CBuf, v: &mut CBuf) {
        for s in [&mut *m, &mut *v] {
            if s.len != value.len {
                *s = self.zeros(value.len);
            }
        }
        let total = self.k * value.len;
        let f = |x: f32| x.to_bits();
        let params = match *up {
            Update::Adam { lr, b1, b2, eps, c1, c2 } => {
                [u(total), 1, f(lr), f(b1), f(b2), f(eps), f(c1), f(c2), 0, f(decay)]
            }
            Update::Nesterov { lr, mu } => [u(total), 0, f(lr), 0, 0, 0, f(1.0), f(1.0), f(mu), f(decay)],
        };
        let args = [&value.buf, &grad.buf, &m.buf, &v.buf].map(Arg::F);
        self.each("update", &args, &params, total);
    }
}

/// One model's loss: the CUDA C `lossc compile` emits, the entry point to launch, and how
/// many rows a block of 256 threads covers (1 for `_rows`, 8 for `_rows_warp`).
pub struct CudaLossSource {
    pub src: String,
    pub entry: String,
    pub rows_per_block: usize,
}

/// Each model's loss as its own CUDA kernel.
pub struct CudaLosses {
    functions: Vec<(CudaFunction, usize)>,
    /// The row losses of all K models, reused while the batch size stays the same.
    row_loss: Mutex<Option<CBuf>>,
}

impl Cuda {
    /// Compiles one loss kernel per model (`sources.len()` = K; NVRTC runs on all cores).
    pub fn losses(&self, sources: &[CudaLossSource]) -> Result<CudaLosses, CudaError> {
        assert_eq!(sources.len(), self.k, "one loss per model");
        let arch = self.inner.shared.arch;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(sources.len()).max(1);
        let chunk = sources.len().div_ceil(threads);
        let ptx: Vec<Result<cudarc::nvrtc::Ptx, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = sources
                .chunks(chunk)
                .map(|c| scope.spawn(move || c.iter().map(|s| compile_ptx(&s.src, arch)).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("an NVRTC thread")).collect()
        });
        let mut functions = Vec::with_capacity(sources.len());
        for (model, (s, ptx)) in sources.iter().zip(ptx).enumerate() {
            let ptx = ptx.map_err(|message| CudaError::LossKernel { model, message })?;
            let module = self.inner.shared.ctx.load_module(ptx).map_err(driver)?;
            let f = module
                .load_function(&s.entry)
                .map_err(|e| CudaError::LossKernel { model, message: format!("{e:?}") })?;
            functions.push((f, s.rows_per_block.max(1)));
        }
        Ok(CudaLosses { functions, row_loss: Mutex::new(None) })
    }
}

impl DeviceLoss<Cuda> for CudaLosses {
    fn run(
        &self,
        dev: &Cuda,
        logits: &CBuf,
        classes: usize,
        t: &LabelTargets,
        grad: &mut CBuf,
        stats: &mut CBuf,
        step: usize,
    ) -> Result<(), LossError> {
        let rows = t.labels.len();
        let size = rows * classes;
        assert!(logits.len == size && !logits.shared, "loss: logits shape");
        if grad.len != size {
            *grad = dev.zeros(size);
        }
        let mut row_loss = self.row_loss.lock().expect("loss scratch");
        if !matches!(&*row_loss, Some(b) if b.len == rows) {
            *row_loss = Some(dev.zeros(rows));
        }
        let all_loss = row_loss.as_mut().expect("made above");
        let mixup = t.labels_b.zip(t.lam);
        let labels = dev.labels(t.labels);
        let labels_b = dev.labels(mixup.map_or(&[][..], |m| m.0));
        let lam = dev.init(mixup.map_or(&[][..], |m| m.1), rows, true);
        let mode: i32 = if mixup.is_some() { 1 } else { 0 };
        let (alpha, b, c) = (t.smoothing as f32, rows as i32, classes as i32);
        let s = &dev.inner.stream;
        for (k, (f, per_block)) in self.functions.iter().enumerate() {
            let x = logits.buf.slice(k * size..(k + 1) * size);
            let mut g = grad.buf.slice_mut(k * size..(k + 1) * size);
            let mut r = all_loss.buf.slice_mut(k * rows..(k + 1) * rows);
            let mut launch = s.launch_builder(f);
            launch.arg(&x).arg(&mode).arg(&labels).arg(&labels_b).arg(&lam.buf).arg(&dev.inner.spare);
            launch.arg(&alpha).arg(&b).arg(&c).arg(&mut g).arg(&mut r);
            let cfg = LaunchConfig {
                grid_dim: (rows.div_ceil(*per_block) as u32, 1, 1),
                block_dim: (THREADS as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the arguments match the `_rows` kernels of kernels/loss.cu.in; model k's
            // logits, gradient and row losses are its own `size` and `rows` elements.
            unsafe { launch.launch(cfg) }.map_err(|e| format!("CUDA launch of model {k}'s loss: {e:?}"))?;
        }
        let params = [dev.k, rows, classes, step].map(u);
        let args = [Arg::F(&all_loss.buf), Arg::F(&grad.buf), Arg::F(&stats.buf)];
        dev.dispatch("loss_stats", &args, &params, dev.k);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel's parameter struct fits the words a launch passes (all fields are 4 bytes).
    #[test]
    fn every_parameter_struct_fits_a_launch() {
        for k in KERNELS {
            assert!(k.params.len() <= std::mem::size_of::<Params>() / 4, "{}: {} parameters", k.name, k.params.len());
        }
    }
}
