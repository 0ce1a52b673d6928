//! The CUDA device: a population of K models trained on an NVIDIA GPU through the driver API
//! (cudarc), with the kernels of kernels/train.rs compiled by NVRTC once per machine (then read
//! from [`cache_dir`]) and each model's loss as its own emitted CUDA kernel
//! (kernels/loss.cu.in).
//!
//! Its device operations are the wgpu device's ([`crate::stacked`]: the same kernel text,
//! launch shapes and stacked buffers); this file is the [`Launcher`] underneath, through
//! cudarc. Everything runs in order on the device's own stream; the host waits only when it
//! reads a buffer back, which the training loop does at evaluation intervals, and at each
//! step's end for the step before it (one step queued). A model's loss kernel reads and writes
//! its own part of the stacked logits and gradient in place (no copies, unlike wgpu's
//! whole-buffer bindings).
//!
//! A training step's launches (the runtime's kernels and the K loss kernels) are recorded once
//! and then replayed as one CUDA graph a step ([`crate::replay`]); `LOSSC_CUDA_GRAPHS=0` turns
//! that off. Launches are made with raw device addresses, which is what a recording compares.
//! A replayed step's uploads are staged in pinned host memory (`Staging`;
//! `LOSSC_CUDA_PINNED=0` turns that off).

use crate::device::Device;
use crate::kernels::{self, KERNELS, Kernel, THREADS};
use crate::replay::{self, Held, Kind, Node, Recorder, Replay};
use crate::stacked::{self, Arg, Launcher, LossTargets, SBuf, u};
use crate::train::{DeviceLoss, LabelTargets, LossError};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, DeviceRepr, DriverError,
    LaunchConfig, PinnedHostSlice, PushKernelArg, ValidAsZeroBits,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

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
    #[error(
        "a population of {models} models of this size needs {floats} floats in one tensor; kernels index in i32 (at most 2^31 - 1)"
    )]
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

/// CUDA C to PTX with NVRTC for `arch`; the error is NVRTC's result and its log.
pub fn compile_ptx(src: &str, arch: &'static str) -> Result<cudarc::nvrtc::Ptx, String> {
    use cudarc::nvrtc::CompileError;
    let opts = cudarc::nvrtc::CompileOptions { arch: Some(arch), ..Default::default() };
    cudarc::nvrtc::compile_ptx_with_opts(src, opts).map_err(|e| match e {
        CompileError::CompileError { nvrtc, log, .. } => {
            format!("{:?} for {arch}: {}", nvrtc.0, log.to_string_lossy().trim_end())
        }
        e => format!("{e:?}"),
    })
}

/// Where compiled kernels are kept between processes: `LOSSC_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/lossc`, else `~/.cache/lossc`; none where `LOSSC_CACHE_DIR` is empty.
pub fn cache_dir() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    match std::env::var_os("LOSSC_CACHE_DIR") {
        Some(d) if d.is_empty() => None,
        Some(d) => Some(d.into()),
        None => (std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()).map(PathBuf::from))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("lossc")),
    }
}

/// NVRTC's version, (major, minor); callers have checked that NVRTC is present.
pub fn nvrtc_version() -> (i32, i32) {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC writes two ints.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    (major, minor)
}

/// [`compile_ptx`] through a cache in `dir`, keyed by the source, the architecture and NVRTC's
/// version: NVRTC takes about a second on the runtime's kernels, which every process that
/// opens the CUDA device would otherwise pay. `fresh` compiles and stores again whatever the
/// cache holds. A cache that cannot be read or written costs only the compile.
pub fn cached_ptx(
    dir: Option<&std::path::Path>,
    src: &str,
    arch: &'static str,
    fresh: bool,
) -> Result<cudarc::nvrtc::Ptx, String> {
    let Some(dir) = dir else { return compile_ptx(src, arch) };
    let (major, minor) = nvrtc_version();
    let key = format!("{arch}\0{major}.{minor}\0{src}").bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3) // FNV-1a
    });
    let path = dir.join(format!("kernels-{arch}-{key:016x}.ptx"));
    if let Some(text) = (!fresh).then(|| std::fs::read_to_string(&path).ok()).flatten() {
        return Ok(cudarc::nvrtc::Ptx::from_src(text));
    }
    let ptx = compile_ptx(src, arch)?;
    // Written whole and then renamed, so that a process reading it sees all of it or none.
    let tmp = dir.join(format!("kernels-{arch}-{key:016x}.{}.tmp", std::process::id()));
    let stored = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&tmp, ptx.to_src()))
        .and_then(|_| std::fs::rename(&tmp, &path));
    if stored.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(ptx)
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
    /// Threads the GPU runs at once: its multiprocessors times the threads each holds.
    resident: usize,
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
        keep_freed_memory(&ctx);
        let name = ctx.name().map_err(driver)?;
        let (major, minor) = ctx.compute_capability().map_err(driver)?;
        let arch = arch_of(major, minor);
        let src = kernels::cuda();
        let dir = cache_dir();
        let build = |fresh| {
            cached_ptx(dir.as_deref(), &src, arch, fresh).map_err(|message| CudaError::Kernels { arch, message })
        };
        // A cached file the driver refuses (damaged, say) is compiled and stored again.
        let module = match ctx.load_module(build(false)?) {
            Ok(m) => m,
            Err(_) => ctx.load_module(build(true)?).map_err(driver)?,
        };
        let mut functions = HashMap::new();
        for k in KERNELS {
            functions.insert(k.name, module.load_function(k.name).map_err(driver)?);
        }
        use cudarc::driver::sys::CUdevice_attribute as A;
        let attr = |a| ctx.attribute(a).map_err(driver);
        let resident = (attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?
            * attr(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR)?)
        .max(1) as usize;
        let s = Arc::new(Shared { ctx, name, arch, resident, functions });
        *shared = Some(s.clone());
        Ok(s)
    }
}

/// Keeps the memory freed to the device's default pool (cudarc allocates stream-ordered from
/// it) instead of returning it to the driver at every synchronisation, which the pool does by
/// default: each training step frees its activations and the next allocates them again, so the
/// driver would unmap and map them each step. Best effort: without it training is slower, not
/// wrong.
fn keep_freed_memory(ctx: &CudaContext) {
    use cudarc::driver::sys;
    if !ctx.has_async_alloc() {
        return;
    }
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut threshold = u64::MAX;
    // SAFETY: `pool` receives the device's default pool, which lives as long as the device;
    // the release threshold attribute takes a pointer to a u64.
    unsafe {
        if sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) == sys::CUresult::CUDA_SUCCESS {
            let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD;
            let _ = sys::cuMemPoolSetAttribute(pool, attr, (&mut threshold as *mut u64).cast());
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    /// This device's stream: its work runs in order, beside other devices' (other threads).
    stream: Arc<CudaStream>,
    /// A one-element buffer for arguments a launch does not use.
    spare: Arc<CudaSlice<f32>>,
    /// The last training step, recorded for replaying as a graph.
    rec: Mutex<Recorder<Cuda>>,
    /// The end of the step before the last [`Device::flush`]: the host waits for it there, so
    /// that at most one step is queued behind the running one (each step allocates its
    /// activations; a host far ahead of the GPU would hold many steps' worth).
    last_step: Mutex<Option<CudaEvent>>,
    /// Where replayed steps' uploads are staged (`None` with `LOSSC_CUDA_PINNED=0`).
    staging: Option<Mutex<Staging>>,
}

/// Bytes of pinned memory a step's uploads may take ([`Staging`]); uploads past them are
/// copied from pageable memory.
const STAGING_STEP: usize = 4 << 20;

/// Pinned host memory that a replayed step's uploads pass through. A copy from pageable memory
/// may wait for the work queued before it, which would hold the host until the step before had
/// run; one from pinned memory is queued and returns. Two halves, a step each in turn: the host
/// writes a step's uploads while the step before (whose copies read the other half) may still
/// be queued, and the one before that has ended ([`Launcher::submit`] waits for it).
struct Staging {
    /// Owns the memory at `base`.
    _mem: PinnedHostSlice<u8>,
    base: usize,
    /// The half this step writes, and its bytes taken so far.
    half: usize,
    used: usize,
}

/// What the devices dropped so far did with their steps (see [`take_graph_totals`]).
static TOTALS: Mutex<(replay::Counts, Option<String>)> = Mutex::new((replay::Counts::NONE, None));

impl Drop for Inner {
    fn drop(&mut self) {
        // Queued copies may still read the staging memory, freed after this.
        let _ = self.stream.synchronize();
        let rec = self.rec.get_mut().unwrap_or_else(|e| e.into_inner());
        let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
        totals.0 += rec.counts();
        // Devices that trained no step (probes) have nothing to report.
        if let Some(why) = rec.off().filter(|_| rec.counts().steps() > 0) {
            totals.1 = Some(why.to_string());
        }
    }
}

/// The training steps the CUDA devices dropped since the last call recorded, replayed as
/// graphs and left their recordings (summed), and the latest reason a device gave for not
/// replaying; for a benchmark's report.
pub fn take_graph_totals() -> (replay::Counts, Option<String>) {
    std::mem::take(&mut *TOTALS.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The CUDA device with a population of `models` models.
#[derive(Clone)]
pub struct Cuda {
    inner: Arc<Inner>,
    k: usize,
}

/// A buffer of the CUDA device (shared: a recorded step holds its buffers to hand them out
/// again).
pub type CBuf = SBuf<Arc<CudaSlice<f32>>>;

/// A kernel's parameter struct (`P_name` in the CUDA translation unit: u32 and f32 fields),
/// passed by value. The driver copies as many bytes as the kernel's parameter has.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
struct Params([u32; 16]);
// SAFETY: plain 32-bit words, laid out as the kernels' parameter structs (4-byte fields).
unsafe impl DeviceRepr for Params {}

/// A launch argument as the driver takes it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Val {
    /// A device address.
    Ptr(u64),
    /// A 32-bit scalar (u32, i32 or f32 bits).
    Word(u32),
    Params(Params),
}

/// Which kernel a launch runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Key {
    Kernel(&'static str),
    /// Model `k`'s loss kernel of the [`CudaLosses`] numbered `set`.
    Loss {
        set: usize,
        k: usize,
    },
}

/// One launch with its raw arguments: what a step's recording holds and compares.
#[derive(Clone)]
pub struct CudaOp {
    key: Key,
    func: CudaFunction,
    grid: u32,
    vals: Vec<Val>,
}

impl PartialEq for CudaOp {
    fn eq(&self, o: &CudaOp) -> bool {
        (self.key, self.grid) == (o.key, o.grid) && self.vals == o.vals
    }
}

/// A recorded step as a CUDA graph, on the stream it replays on.
pub struct Graph {
    graph: CudaGraph,
    stream: Arc<CudaStream>,
}
// SAFETY: a graph is used only under its device's recorder lock, one thread at a time.
unsafe impl Send for Graph {}

impl Drop for Graph {
    /// A replay may still be running (one step is queued): it ends before the graph goes.
    fn drop(&mut self) {
        let _ = self.stream.synchronize();
    }
}

impl Cuda {
    /// GPU 0 on a stream of its own, for a population of `models`. The runtime's kernels are
    /// compiled by NVRTC on the machine's first call ([`cached_ptx`]). Its training steps
    /// replay as CUDA graphs unless `LOSSC_CUDA_GRAPHS` is `0`.
    pub fn new(models: usize) -> Result<Cuda, CudaError> {
        Cuda::with_graphs(models, std::env::var("LOSSC_CUDA_GRAPHS").map_or(true, |v| v != "0"))
    }

    /// [`Cuda::new`], replaying training steps as graphs or not.
    pub fn with_graphs(models: usize, graphs: bool) -> Result<Cuda, CudaError> {
        let shared = Shared::get()?;
        let stream = shared.ctx.new_stream().map_err(driver)?;
        let spare = Arc::new(stream.alloc_zeros::<f32>(1).map_err(driver)?);
        let rec = Mutex::new(Recorder::new(graphs));
        // Only replayed steps write into recorded buffers.
        let staging = match graphs && std::env::var("LOSSC_CUDA_PINNED").map_or(true, |v| v != "0") {
            false => None,
            true => {
                // SAFETY: a step's uploads write the bytes a copy reads before queueing it.
                let mut mem = unsafe { shared.ctx.alloc_pinned::<u8>(2 * STAGING_STEP) }.map_err(driver)?;
                let base = mem.as_mut_ptr().map_err(driver)? as usize;
                Some(Mutex::new(Staging { _mem: mem, base, half: 0, used: 0 }))
            }
        };
        let inner = Inner { shared, stream, spare, rec, last_step: Mutex::new(None), staging };
        Ok(Cuda { inner: Arc::new(inner), k: models.max(1) })
    }

    /// How many training steps were recorded, replayed as a graph, and left their recording;
    /// and why steps are not replayed, if they are not.
    pub fn graphs(&self) -> (replay::Counts, Option<String>) {
        let rec = self.rec();
        (rec.counts(), rec.off().map(str::to_string))
    }

    fn rec(&self) -> MutexGuard<'_, Recorder<Cuda>> {
        self.inner.rec.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The device address of a buffer.
    fn ptr<T>(&self, s: &CudaSlice<T>) -> u64 {
        s.device_ptr(&self.inner.stream).0
    }

    /// Launches `op` on the stream (or into the graph being captured).
    fn try_run(&self, op: &CudaOp) -> Result<(), DriverError> {
        let mut launch = self.inner.stream.launch_builder(&op.func);
        for v in &op.vals {
            match v {
                Val::Ptr(p) => launch.arg(p),
                Val::Word(w) => launch.arg(w),
                Val::Params(p) => launch.arg(p),
            };
        }
        let cfg = LaunchConfig { grid_dim: (op.grid, 1, 1), block_dim: (THREADS as u32, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: each op's values are its kernel's parameters in order (device addresses of
        // live buffers, 32-bit scalars, the parameter struct), made by `launch` or
        // `CudaLosses::run` from the kernel's table row or its template.
        unsafe { launch.launch(cfg) }.map(|_| ())
    }

    /// Zeroes the `floats` floats of `mem` from float `start`.
    fn try_zero(&self, mem: &CudaSlice<f32>, start: usize, floats: usize) -> Result<(), DriverError> {
        assert!(start + floats <= mem.len(), "zero: past the buffer's end");
        let at = self.ptr(mem) + 4 * start as u64;
        // SAFETY: `mem` holds the floats from `start` to `start + floats`.
        unsafe { cudarc::driver::result::memset_d8_async(at, 0, floats * 4, self.inner.stream.cu_stream()) }
    }
}

/// What a device uploads: floats or u32 words, each held by a recording in its own variant.
trait Upload: DeviceRepr + ValidAsZeroBits + Unpin + Copy {
    const KIND: Kind;
    fn held(buf: Arc<CudaSlice<Self>>) -> Held<Cuda>;
    fn buf(held: &Held<Cuda>) -> &Arc<CudaSlice<Self>>;
}

impl Upload for f32 {
    const KIND: Kind = Kind::Floats;
    fn held(buf: Arc<CudaSlice<f32>>) -> Held<Cuda> {
        Held::F(buf)
    }
    fn buf(held: &Held<Cuda>) -> &Arc<CudaSlice<f32>> {
        match held {
            Held::F(m) => m,
            Held::W(_) => unreachable!("a float upload"),
        }
    }
}

impl Upload for u32 {
    const KIND: Kind = Kind::Words;
    fn held(buf: Arc<CudaSlice<u32>>) -> Held<Cuda> {
        Held::W(buf)
    }
    fn buf(held: &Held<Cuda>) -> &Arc<CudaSlice<u32>> {
        match held {
            Held::W(w) => w,
            Held::F(_) => unreachable!("a word upload"),
        }
    }
}

impl Cuda {
    /// A copy of `data` (one zero when empty): a new buffer, or, when a step is replayed, its
    /// recorded buffer with `data` written in.
    fn upload<T: Upload>(&self, data: &[T]) -> Arc<CudaSlice<T>> {
        let s = &self.inner.stream;
        let make = || {
            T::held(Arc::new(if data.is_empty() { s.alloc_zeros(1) } else { s.clone_htod(data) }.expect("CUDA upload")))
        };
        let write = |h: &Held<Cuda>| {
            if !data.is_empty() {
                let src = self.stage(data).unwrap_or(data);
                // SAFETY: the recorded buffer holds `data.len()` values of `T`.
                unsafe { cudarc::driver::result::memcpy_htod_async(self.ptr(T::buf(h)), src, s.cu_stream()) }
                    .expect("CUDA upload");
            }
        };
        T::buf(&self.rec().upload(self, T::KIND, data.len(), make, write)).clone()
    }

    /// A copy of `data` in this step's half of the pinned staging memory, if it has room.
    fn stage<T: Copy>(&self, data: &[T]) -> Option<&[T]> {
        let mut s = self.inner.staging.as_ref()?.lock().expect("staging");
        let bytes = std::mem::size_of_val(data);
        let at = s.used.next_multiple_of(16);
        if at + bytes > STAGING_STEP {
            return None;
        }
        s.used = at + bytes;
        let p = (s.base + s.half * STAGING_STEP + at) as *mut u8;
        // SAFETY: the bytes lie in this step's half, which no queued copy reads (see
        // `Staging`), and `Inner` keeps the memory while `self` lives.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr().cast::<u8>(), p, bytes);
            Some(std::slice::from_raw_parts(p.cast::<T>(), data.len()))
        }
    }
}

impl Replay for Cuda {
    type Mem = Arc<CudaSlice<f32>>;
    type Words = Arc<CudaSlice<u32>>;
    type Op = CudaOp;
    type Graph = Graph;

    fn run(&self, op: &CudaOp) {
        self.try_run(op).unwrap_or_else(|e| panic!("CUDA launch of {:?}: {e:?}", op.key));
    }
    fn zero(&self, mem: &Arc<CudaSlice<f32>>, floats: usize) {
        self.try_zero(mem, 0, floats).expect("CUDA memset");
    }
    fn build(&self, nodes: &[Node<'_, Cuda>]) -> Result<Graph, String> {
        let s = &self.inner.stream;
        let mode = cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        s.begin_capture(mode).map_err(|e| format!("{e:?}"))?;
        let issued = nodes.iter().try_for_each(|n| match n {
            Node::Launch(op) => self.try_run(op),
            Node::Zero(mem, floats) => self.try_zero(mem, 0, *floats),
        });
        // Capture ends whether or not every node was issued.
        let graph = s.end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0));
        issued.map_err(|e| format!("{e:?}"))?;
        match graph.map_err(|e| format!("{e:?}"))? {
            Some(graph) => Ok(Graph { graph, stream: s.clone() }),
            None => Err("the capture was empty".into()),
        }
    }
    fn replay(&self, graph: &Graph) -> Result<(), String> {
        graph.graph.launch().map_err(|e| format!("{e:?}"))
    }
    fn pointers(op: &CudaOp) -> Vec<u64> {
        op.vals.iter().filter_map(|v| if let Val::Ptr(p) = v { Some(*p) } else { None }).collect()
    }
    fn span(buf: &Held<Cuda>) -> std::ops::Range<u64> {
        let (start, bytes) = match buf {
            Held::F(m) => (m.device_ptr(m.stream()).0, m.len() * 4),
            Held::W(w) => (w.device_ptr(w.stream()).0, w.len() * 4),
        };
        start..start + bytes as u64
    }
}

impl Cuda {
    /// The device's name, e.g. "NVIDIA H200".
    pub fn device_name(&self) -> &str {
        &self.inner.shared.name
    }

    /// The NVRTC architecture the kernels are compiled for.
    pub fn arch(&self) -> &'static str {
        self.inner.shared.arch
    }

    /// Checks that a tensor of `per_model` floats for each of the K models indexes in i32 (the
    /// weight gradient's loads of the input are signed, so that their offsets fold into the
    /// instructions).
    pub fn check_size(&self, per_model: usize) -> Result<(), CudaError> {
        let floats = (per_model * self.k) as u64;
        if floats > i32::MAX as u64 {
            return Err(CudaError::TooLarge { models: self.k, floats });
        }
        Ok(())
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) {
        self.inner.stream.synchronize().expect("CUDA stream");
    }
}

impl Launcher for Cuda {
    type Mem = Arc<CudaSlice<f32>>;
    type Words = Arc<CudaSlice<u32>>;

    fn describe(&self) -> String {
        format!("cuda ({})", self.inner.shared.name)
    }
    fn population(&self) -> usize {
        self.k
    }
    fn alloc(&self, floats: usize) -> Self::Mem {
        let s = &self.inner.stream;
        self.rec().alloc(self, Kind::Zeros, floats, || {
            Arc::new(s.alloc_zeros::<f32>(floats.max(1)).expect("CUDA allocation"))
        })
    }
    fn scratch(&self, floats: usize) -> Self::Mem {
        let s = &self.inner.stream;
        // SAFETY: any bits are an f32, and a scratch buffer is written in full before it is
        // read (the emulator's scratch buffers hold NaN, so its tests catch a kernel that
        // leaves some unwritten).
        let make = || Arc::new(unsafe { s.alloc::<f32>(floats.max(1)) }.expect("CUDA allocation"));
        self.rec().alloc(self, Kind::Scratch, floats, make)
    }
    fn init(&self, data: &[f32]) -> Self::Mem {
        self.upload(data)
    }
    fn words(&self, data: &[u32]) -> Self::Words {
        self.upload(data)
    }
    fn read(&self, mem: &Self::Mem, start: usize, floats: usize) -> Vec<f32> {
        self.rec().before_read(self);
        self.inner.stream.clone_dtoh(&mem.slice(start..start + floats)).expect("CUDA read-back")
    }
    fn zero(&self, mem: &Self::Mem, start: usize, floats: usize) {
        self.rec().unrecorded(self);
        self.try_zero(mem, start, floats).expect("CUDA memset");
    }
    fn launch(&self, k: &'static Kernel, args: &[Arg<'_, Self>], params: &[u32], groups: usize) {
        let mut p = Params([0; 16]);
        p.0[..params.len()].copy_from_slice(params);
        let mut vals: Vec<Val> = args
            .iter()
            .map(|a| match a {
                Arg::F(b) => Val::Ptr(self.ptr(b)),
                Arg::Part(b, span) => {
                    assert!(span.end <= b.len(), "{}: a part past its buffer's end", k.name);
                    Val::Ptr(self.ptr(b) + 4 * span.start as u64)
                }
                Arg::U(b) => Val::Ptr(self.ptr(b)),
            })
            .collect();
        vals.push(Val::Params(p));
        // `stacked::dispatch` checked the arguments against the kernel's table row: its buffers
        // in order (f32 or u32 as declared), then its parameter struct.
        let func = self.inner.shared.functions[k.name].clone();
        let op = CudaOp { key: Key::Kernel(k.name), func, grid: groups.clamp(1, 65535) as u32, vals };
        self.rec().launch(self, op);
    }
    fn spare(&self) -> &Self::Mem {
        &self.inner.spare
    }
    fn begin_step(&self) {
        if let Some(staging) = &self.inner.staging {
            let mut s = staging.lock().expect("staging");
            (s.half, s.used) = (1 - s.half, 0);
        }
        self.rec().begin_step(self);
    }
    fn submit(&self) {
        self.rec().end_step(self);
        let end = self.inner.stream.record_event(None).expect("CUDA event");
        let mut last = self.inner.last_step.lock().expect("last step");
        if let Some(prev) = last.replace(end) {
            prev.synchronize().expect("CUDA event");
        }
    }
    fn max_floats(&self) -> usize {
        self.inner.shared.ctx.mem_get_info().map_or(0, |(free, _)| free / 2 / 4)
    }
    fn resident_threads(&self) -> usize {
        self.inner.shared.resident
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
    /// This set's number, which tells its launches from another set's in a recording.
    set: usize,
    functions: Vec<(CudaFunction, usize)>,
    /// The row losses of all K models, reused while the batch size stays the same.
    row_loss: Mutex<Option<CBuf>>,
}

impl Cuda {
    /// Compiles each model's loss kernel (`sources.len()` = K), each distinct source once
    /// (NVRTC runs on all cores).
    pub fn losses(&self, sources: &[CudaLossSource]) -> Result<CudaLosses, CudaError> {
        assert_eq!(sources.len(), self.k, "one loss per model");
        let arch = self.inner.shared.arch;
        let (first, place) = stacked::distinct(&sources.iter().map(|s| (&s.src, &s.entry)).collect::<Vec<_>>());
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(first.len()).max(1);
        let chunk = first.len().div_ceil(threads);
        let ptx: Vec<Result<cudarc::nvrtc::Ptx, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = first
                .chunks(chunk)
                .map(|c| scope.spawn(move || c.iter().map(|&m| compile_ptx(&sources[m].src, arch)).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("an NVRTC thread")).collect()
        });
        let mut built = Vec::with_capacity(first.len());
        for (&model, ptx) in first.iter().zip(ptx) {
            let s = &sources[model];
            let ptx = ptx.map_err(|message| CudaError::LossKernel { model, message })?;
            let module = self.inner.shared.ctx.load_module(ptx).map_err(driver)?;
            let f = module
                .load_function(&s.entry)
                .map_err(|e| CudaError::LossKernel { model, message: format!("{e:?}") })?;
            built.push((f, s.rows_per_block.max(1)));
        }
        let functions = place.iter().map(|&i| built[i].clone()).collect();
        static SETS: AtomicUsize = AtomicUsize::new(0);
        Ok(CudaLosses { set: SETS.fetch_add(1, Ordering::Relaxed), functions, row_loss: Mutex::new(None) })
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
        let LossTargets { mode, labels, labels_b, lam } = LossTargets::upload(dev, t);
        let (alpha, b, c) = ((t.smoothing as f32).to_bits(), rows as u32, classes as u32);
        let at = |mem: &CudaSlice<f32>, start: usize| Val::Ptr(dev.ptr(mem) + 4 * start as u64);
        let targets =
            [Val::Word(mode), Val::Ptr(dev.ptr(&labels)), Val::Ptr(dev.ptr(&labels_b)), Val::Ptr(dev.ptr(&lam))];
        // Each model's own kernel: one profile entry for the K launches.
        crate::profile::timed(dev, "emitted loss", || {
            for (k, (f, per_block)) in self.functions.iter().enumerate() {
                // The `_rows` kernels of kernels/loss.cu.in: logits, mode, labels, partner
                // labels, mixup weights, dense targets (unused), alpha, B, C, gradient and row
                // losses; model k's logits, gradient and row losses are its own `size` and
                // `rows` elements.
                let mut vals = vec![at(&logits.mem, k * size)];
                vals.extend(targets);
                vals.extend([Val::Ptr(dev.ptr(&dev.inner.spare)), Val::Word(alpha), Val::Word(b), Val::Word(c)]);
                vals.extend([at(&grad.mem, k * size), at(&all_loss.mem, k * rows)]);
                let key = Key::Loss { set: self.set, k };
                let op = CudaOp { key, func: f.clone(), grid: rows.div_ceil(*per_block) as u32, vals };
                dev.rec().launch(dev, op);
            }
        });
        let step = dev.words(&[u(step)]);
        let args = [Arg::F(&all_loss.mem), Arg::F(&grad.mem), Arg::U(&step), Arg::F(&stats.mem)];
        stacked::dispatch(dev, "loss_stats", &args, &[dev.k, rows, classes].map(u), dev.k);
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
