//! The wgpu device: a population of K models trained on any Vulkan adapter (a GPU, or lavapipe
//! on the CPU), with the kernels of kernels/train.rs and each model's own WGSL loss kernel.
//!
//! Work is recorded into one command encoder and submitted by [`Device::flush`] (the training
//! loop calls it once a step) or by a read-back; at most one step is in flight, so buffers
//! dropped by the host are reclaimed. Buffers are created zeroed; a buffer from
//! [`Device::upload`] is shared by all models (model stride 0), every other holds K tensors.

use crate::augment::{self, Augment, Plan};
use crate::device::{BnGeom, BnState, ConvGeom, Device, Update};
use crate::kernels::{self, Access, KERNELS, THREADS};
use crate::train::{DeviceLoss, LabelTargets, LossError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;

/// Why the wgpu device could not be opened or a kernel built.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no Vulkan adapter: {0}")]
    NoAdapter(String),
    #[error("cannot open {adapter}: {message}")]
    Open { adapter: String, message: String },
    #[error("the loss kernel of model {model} does not build: {message}")]
    LossKernel { model: usize, message: String },
    #[error(
        "a population of {models} models of this size needs {bytes} bytes in one buffer; the adapter allows {limit}"
    )]
    TooLarge { models: usize, bytes: u64, limit: u64 },
}

struct Pipe {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter: String,
    max_buffer: u64,
    pipes: HashMap<&'static str, Pipe>,
    pending: Mutex<Pending>,
    /// Two 4-byte buffers for bindings a dispatch does not use.
    spare: [wgpu::Buffer; 2],
}

#[derive(Default)]
struct Pending {
    encoder: Option<wgpu::CommandEncoder>,
    last: Option<wgpu::SubmissionIndex>,
}

/// The wgpu device with a population of `models` models.
#[derive(Clone)]
pub struct Wgpu {
    inner: Arc<Inner>,
    k: usize,
}

/// A device buffer: one tensor of `len` floats per model, or one for all (`shared`).
pub struct GBuf {
    buf: wgpu::Buffer,
    len: usize,
    shared: bool,
}

impl GBuf {
    /// Elements between one model's tensor and the next.
    fn stride(&self) -> u32 {
        if self.shared { 0 } else { self.len as u32 }
    }
}

const USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

fn u(x: usize) -> u32 {
    u32::try_from(x).expect("the population's tensors are checked to index in u32")
}

fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

fn uniform_entry(binding: u32) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// Builds a compute pipeline from WGSL with an explicit layout; a validation error is returned,
/// not raised.
fn build(
    device: &wgpu::Device,
    label: &str,
    src: &str,
    entries: &[wgpu::BindGroupLayoutEntry],
) -> Result<Pipe, String> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(src.into()),
    });
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries });
    let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(label),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: Some(&pl),
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    match pollster::block_on(scope.pop()) {
        Some(e) => Err(e.to_string()),
        None => Ok(Pipe { pipeline, layout }),
    }
}

impl Wgpu {
    /// The first Vulkan adapter, with every runtime kernel built, for a population of `models`.
    pub fn new(models: usize) -> Result<Wgpu, GpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::VULKAN;
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(
            adapter.request_device(&wgpu::DeviceDescriptor { required_limits: limits.clone(), ..Default::default() }),
        )
        .map_err(|e| GpuError::Open { adapter: info.name.clone(), message: e.to_string() })?;
        let mut pipes = HashMap::new();
        for k in KERNELS {
            let mut entries: Vec<_> =
                k.buffers.iter().enumerate().map(|(i, (_, a))| storage_entry(i as u32, *a != Access::Write)).collect();
            entries.push(uniform_entry(k.buffers.len() as u32));
            let pipe = build(&device, k.name, &kernels::wgsl(k), &entries)
                .unwrap_or_else(|e| panic!("runtime kernel {} does not build: {e}", k.name));
            pipes.insert(k.name, pipe);
        }
        let spare = [0, 1].map(|_| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: 4,
                usage: USAGE,
                mapped_at_creation: false,
            })
        });
        let max_buffer = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        let inner = Inner { device, queue, adapter: info.name, max_buffer, pipes, pending: Mutex::default(), spare };
        Ok(Wgpu { inner: Arc::new(inner), k: models.max(1) })
    }

    /// The adapter's name, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub fn adapter(&self) -> &str {
        &self.inner.adapter
    }

    /// Checks that a tensor of `per_model` floats for each of the K models fits in one buffer
    /// and in u32 indices.
    pub fn check_size(&self, per_model: usize) -> Result<(), GpuError> {
        let bytes = (per_model * self.k * 4) as u64;
        let limit = self.inner.max_buffer.min(u32::MAX as u64);
        if bytes > limit {
            return Err(GpuError::TooLarge { models: self.k, bytes, limit });
        }
        Ok(())
    }

    fn buffer(&self, floats: usize, len: usize, shared: bool) -> GBuf {
        let size = (floats.max(1) * 4) as u64;
        let buf = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: USAGE,
            mapped_at_creation: false,
        });
        GBuf { buf, len, shared }
    }

    fn init(&self, data: &[f32], len: usize, shared: bool) -> GBuf {
        let bytes: Vec<u8> =
            if data.is_empty() { vec![0; 4] } else { data.iter().flat_map(|v| v.to_le_bytes()).collect() };
        let buf = self.inner.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: &bytes,
            usage: USAGE,
        });
        GBuf { buf, len, shared }
    }

    fn labels(&self, labels: &[u32]) -> wgpu::Buffer {
        let bytes: Vec<u8> =
            if labels.is_empty() { vec![0; 4] } else { labels.iter().flat_map(|v| v.to_le_bytes()).collect() };
        self.inner.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: &bytes,
            usage: USAGE,
        })
    }

    /// Runs `f` on the pending command encoder.
    fn record(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        let mut p = self.inner.pending.lock().expect("pending work");
        let enc = p.encoder.get_or_insert_with(|| {
            self.inner.device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default())
        });
        f(enc);
    }

    /// Records kernel `name` over `buffers` with `params` (u32 bits, in the table's order) on
    /// `groups` workgroups (capped; the kernels loop over the rest).
    fn dispatch(&self, name: &str, buffers: &[&wgpu::Buffer], params: &[u32], groups: usize) {
        let k = kernels::kernel(name);
        debug_assert_eq!(buffers.len(), k.buffers.len(), "{name}: buffers");
        debug_assert_eq!(params.len(), k.params.len(), "{name}: parameters");
        let pipe = &self.inner.pipes[k.name];
        let mut bytes: Vec<u8> = params.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.resize(bytes.len().next_multiple_of(16).max(16), 0);
        let d = &self.inner.device;
        let uniform = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: &bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
            .collect();
        entries.push(wgpu::BindGroupEntry { binding: buffers.len() as u32, resource: uniform.as_entire_binding() });
        let bind = d.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(name),
            layout: &pipe.layout,
            entries: &entries,
        });
        self.record(|enc| {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(&pipe.pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(groups.clamp(1, 65535) as u32, 1, 1);
        });
    }

    /// [`Wgpu::dispatch`] over `total` elements, one thread each.
    fn each(&self, name: &str, buffers: &[&wgpu::Buffer], params: &[u32], total: usize) {
        self.dispatch(name, buffers, params, total.div_ceil(THREADS));
    }

    /// Submits the pending work and waits for the submission before it, so that at most one is
    /// in flight.
    fn submit(&self) {
        let mut p = self.inner.pending.lock().expect("pending work");
        let Some(enc) = p.encoder.take() else { return };
        let index = self.inner.queue.submit([enc.finish()]);
        if let Some(prev) = p.last.replace(index) {
            let _ = self.inner.device.poll(wgpu::PollType::Wait { submission_index: Some(prev), timeout: None });
        }
    }

    /// Copies `src` into a mappable buffer and reads it (waits for all work before it).
    fn read(&self, src: &wgpu::Buffer, bytes: u64) -> Vec<f32> {
        let d = &self.inner.device;
        let staging = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.record(|enc| enc.copy_buffer_to_buffer(src, 0, &staging, 0, bytes));
        self.submit();
        let slice = staging.slice(..);
        slice.map_async(wgpu::MapMode::Read, |r| r.expect("mapping a read-back buffer"));
        d.poll(wgpu::PollType::wait_indefinitely()).expect("waiting for the device");
        let data = slice.get_mapped_range().expect("a mapped read-back buffer");
        let v = data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        drop(data);
        staging.unmap();
        v
    }
}

impl Device for Wgpu {
    type Buf = GBuf;

    fn name(&self) -> String {
        format!("wgpu ({})", self.inner.adapter)
    }
    fn models(&self) -> usize {
        self.k
    }
    fn zeros(&self, n: usize) -> GBuf {
        self.buffer(n * self.k, n, false)
    }
    fn upload(&self, host: &[f32]) -> GBuf {
        self.init(host, host.len(), true)
    }
    fn param(&self, host: &[f32]) -> GBuf {
        let all: Vec<f32> = (0..self.k).flat_map(|_| host.iter().copied()).collect();
        self.init(&all, host.len(), false)
    }
    /// A buffer holding a different tensor for each model (`tensors.len()` = K, equal lengths).
    fn stack(&self, tensors: &[Vec<f32>]) -> GBuf {
        assert!(tensors.len() == self.k && tensors.iter().all(|t| t.len() == tensors[0].len()), "stack: K tensors");
        self.init(&tensors.concat(), tensors[0].len(), false)
    }
    fn download(&self, buf: &GBuf) -> Vec<f32> {
        let n = if buf.shared { buf.len } else { buf.len * self.k };
        if n == 0 {
            return Vec::new();
        }
        self.read(&buf.buf, (n * 4) as u64)
    }
    fn len(&self, buf: &GBuf) -> usize {
        buf.len
    }
    fn flush(&self) {
        self.submit();
    }
    fn upload_images(&self, host: &[f32], n: usize, c: usize, hw: usize) -> GBuf {
        self.upload(&crate::cpu::Cpu.upload_images(host, n, c, hw))
    }
    fn resident(&self, images: &[f32]) -> Option<GBuf> {
        ((images.len() * 4) as u64 <= self.inner.max_buffer.min(u32::MAX as u64)).then(|| self.upload(images))
    }
    fn gather(&self, data: &GBuf, idx: &[usize], plan: &Plan, a: &Augment, (c, h, w): (usize, usize, usize)) -> GBuf {
        assert!(augment::is_gather(plan) && idx.len() == plan.images.len(), "gather: a plan without RandAug");
        let n = idx.len();
        let draws = augment::gather_draws(idx, plan, a);
        let lam = self.init(plan.mix.as_ref().map_or(&[][..], |(_, lam)| lam), n, true);
        let x = self.buffer(c * n * h * w, c * n * h * w, true);
        let total = x.len;
        let params = [total, n, c, h, w, a.pad, a.cutout, plan.mix.is_some() as usize].map(u);
        self.each("augment", &[&data.buf, &self.labels(&draws), &lam.buf, &x.buf], &params, total);
        x
    }

    fn conv_forward(&self, g: &ConvGeom, n: usize, w: &GBuf, x: &GBuf) -> GBuf {
        assert!(w.len == g.cout * g.kk() && x.len == g.cin * n * g.h * g.w, "conv_forward: shapes");
        let y = self.zeros(g.cout * n * g.p());
        let total = self.k * y.len;
        let params = [total, n, g.cin, g.cout, g.k, g.stride, g.pad, g.h, g.w, g.oh, g.ow].map(u);
        let params = [&params[..], &[x.stride()]].concat();
        self.each("conv_forward", &[&w.buf, &x.buf, &y.buf], &params, total);
        y
    }

    fn conv_backward(
        &self,
        g: &ConvGeom,
        n: usize,
        w: &GBuf,
        x: &GBuf,
        gy: &GBuf,
        dw: &mut GBuf,
        want_dx: bool,
    ) -> Option<GBuf> {
        assert!(gy.len == g.cout * n * g.p() && dw.len == g.cout * g.kk(), "conv_backward: shapes");
        let shape = [n, g.cin, g.cout, g.k, g.stride, g.pad, g.h, g.w, g.oh, g.ow].map(u);
        let groups = self.k * dw.len;
        let params = [&[u(groups)], &shape[..], &[x.stride()]].concat();
        self.dispatch("conv_backward_filter", &[&x.buf, &gy.buf, &dw.buf], &params, groups);
        want_dx.then(|| {
            let dx = self.zeros(g.cin * n * g.h * g.w);
            let total = self.k * dx.len;
            let params = [&[u(total)], &shape[..]].concat();
            self.each("conv_backward_data", &[&w.buf, &gy.buf, &dx.buf], &params, total);
            dx
        })
    }

    fn bn_forward(&self, g: &BnGeom, x: &GBuf, gamma: &GBuf, beta: &GBuf, s: &mut BnState<GBuf>, train: bool) -> GBuf {
        assert_eq!(x.len, g.c * g.len, "bn_forward: shape");
        let groups = self.k * g.c;
        let mean = self.zeros(g.c);
        if s.inv_std.len != g.c {
            s.inv_std = self.zeros(g.c);
        }
        if train {
            let params = [u(groups), u(g.len), g.momentum.to_bits(), g.eps.to_bits()];
            let bufs = [&x.buf, &mean.buf, &s.inv_std.buf, &s.running_mean.buf, &s.running_var.buf];
            self.dispatch("bn_stats", &bufs, &params, groups);
            if s.xhat.len != x.len {
                s.xhat = self.zeros(x.len);
            }
            if g.swish && s.sig.len != x.len {
                s.sig = self.zeros(x.len);
            }
        } else {
            let bufs = [&s.running_mean.buf, &s.running_var.buf, &mean.buf, &s.inv_std.buf];
            self.each("bn_running", &bufs, &[u(groups), g.eps.to_bits()], groups);
        }
        let y = self.zeros(x.len);
        let total = self.k * x.len;
        let params = [total, g.len, g.swish as usize, train as usize].map(u);
        let bufs = [&x.buf, &mean.buf, &s.inv_std.buf, &gamma.buf, &beta.buf, &y.buf, &s.xhat.buf, &s.sig.buf];
        self.each("bn_apply", &bufs, &params, total);
        y
    }

    fn bn_backward(
        &self,
        g: &BnGeom,
        gy: &GBuf,
        gamma: &GBuf,
        beta: &GBuf,
        s: &BnState<GBuf>,
        dgamma: &mut GBuf,
        dbeta: &mut GBuf,
    ) -> GBuf {
        assert!(gy.len == g.c * g.len && s.xhat.len == g.c * g.len, "bn_backward: shapes");
        let groups = self.k * g.c;
        let sums = self.zeros(2 * g.c);
        let sig = if g.swish { &s.sig.buf } else { &self.inner.spare[0] };
        let bufs = [&gy.buf, &s.xhat.buf, sig, &gamma.buf, &beta.buf, &sums.buf, &dgamma.buf, &dbeta.buf];
        self.dispatch("bn_backward_sums", &bufs, &[u(groups), u(g.len), g.swish as u32], groups);
        let dx = self.zeros(gy.len);
        let total = self.k * gy.len;
        let bufs = [&gy.buf, &s.xhat.buf, sig, &gamma.buf, &beta.buf, &s.inv_std.buf, &sums.buf, &dx.buf];
        self.each("bn_backward_dx", &bufs, &[u(total), u(g.len), g.swish as u32], total);
        dx
    }

    fn add_assign(&self, a: &mut GBuf, b: &GBuf) {
        assert!(a.len == b.len && !a.shared && !b.shared, "add_assign: lengths");
        let total = self.k * a.len;
        self.each("add", &[&a.buf, &b.buf], &[u(total)], total);
    }
    fn mul(&self, a: &GBuf, b: &GBuf) -> GBuf {
        assert!(a.len == b.len && !a.shared, "mul: lengths");
        let y = self.zeros(a.len);
        let total = self.k * a.len;
        self.each("mul", &[&a.buf, &b.buf, &y.buf], &[u(total), u(a.len), b.stride()], total);
        y
    }
    fn pool_forward(&self, c: usize, n: usize, hw: usize, x: &GBuf) -> GBuf {
        let y = self.zeros(n * c);
        let total = self.k * y.len;
        self.each("pool_forward", &[&x.buf, &y.buf], &[total, c, n, hw].map(u), total);
        y
    }
    fn pool_backward(&self, c: usize, n: usize, hw: usize, gy: &GBuf) -> GBuf {
        let dx = self.zeros(c * n * hw);
        let total = self.k * dx.len;
        self.each("pool_backward", &[&gy.buf, &dx.buf], &[total, c, n, hw].map(u), total);
        dx
    }
    fn dense_forward(&self, n: usize, inp: usize, out: usize, x: &GBuf, w: &GBuf, b: &GBuf) -> GBuf {
        assert!(x.len == n * inp && w.len == out * inp && b.len == out && !x.shared, "dense_forward: shapes");
        let y = self.zeros(n * out);
        let total = self.k * y.len;
        self.each("dense_forward", &[&x.buf, &w.buf, &b.buf, &y.buf], &[total, n, inp, out].map(u), total);
        y
    }
    fn dense_backward(
        &self,
        n: usize,
        inp: usize,
        out: usize,
        x: &GBuf,
        w: &GBuf,
        gy: &GBuf,
        dw: &mut GBuf,
        db: &mut GBuf,
    ) -> GBuf {
        assert!(gy.len == n * out && dw.len == out * inp && db.len == out, "dense_backward: shapes");
        let total = self.k * dw.len;
        self.each("dense_backward_w", &[&x.buf, &gy.buf, &dw.buf, &db.buf], &[total, n, inp, out].map(u), total);
        let dx = self.zeros(n * inp);
        let total = self.k * dx.len;
        self.each("dense_backward_x", &[&w.buf, &gy.buf, &dx.buf], &[total, n, inp, out].map(u), total);
        dx
    }

    fn hits(&self, logits: &GBuf, n: usize, classes: usize, labels: &[u32], stats: &mut GBuf, slot: usize) {
        assert!(logits.len >= n * classes && labels.len() == n && slot < 4 && stats.len == 4, "hits: shapes");
        let labels = self.labels(labels);
        let params = [self.k, n, classes, slot].map(u);
        self.dispatch("hits", &[&logits.buf, &labels, &stats.buf], &params, self.k);
    }

    fn update(&self, up: &Update, decay: f32, value: &mut GBuf, grad: &mut GBuf, m: &mut GBuf, v: &mut GBuf) {
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
        self.each("update", &[&value.buf, &grad.buf, &m.buf, &v.buf], &params, total);
    }
}

/// Each model's loss as its own WGSL kernel (the one `lossc compile` emits, kernels/loss.wgsl.in).
pub struct WgslLosses {
    pipes: Vec<Pipe>,
    scratch: Mutex<Option<Scratch>>,
}

/// Per-model buffers a loss kernel binds whole (bindings take no offsets that are not
/// multiples of the adapter's alignment), reused while the batch shape stays the same.
struct Scratch {
    rows: usize,
    classes: usize,
    logits: Vec<wgpu::Buffer>,
    grad: Vec<wgpu::Buffer>,
    row_loss: Vec<wgpu::Buffer>,
    all_loss: GBuf,
}

impl Wgpu {
    /// Builds one loss kernel per model from its WGSL source (`sources.len()` = K).
    pub fn losses(&self, sources: &[String]) -> Result<WgslLosses, GpuError> {
        assert_eq!(sources.len(), self.k, "one loss per model");
        let mut entries: Vec<_> = (0..7).map(|i| storage_entry(i, i < 5)).collect();
        entries.push(uniform_entry(7));
        let pipes = sources
            .iter()
            .enumerate()
            .map(|(model, src)| {
                build(&self.inner.device, "loss", src, &entries)
                    .map_err(|message| GpuError::LossKernel { model, message })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(WgslLosses { pipes, scratch: Mutex::new(None) })
    }
}

impl DeviceLoss<Wgpu> for WgslLosses {
    fn run(
        &self,
        dev: &Wgpu,
        logits: &GBuf,
        classes: usize,
        t: &LabelTargets,
        grad: &mut GBuf,
        stats: &mut GBuf,
        step: usize,
    ) -> Result<(), LossError> {
        let rows = t.labels.len();
        let size = rows * classes;
        assert!(logits.len == size && !logits.shared, "loss: logits shape");
        let mut scratch = self.scratch.lock().expect("loss scratch");
        if !matches!(&*scratch, Some(s) if s.rows == rows && s.classes == classes) {
            let make = |n: usize| (0..dev.k).map(|_| dev.buffer(n, n, true).buf).collect::<Vec<_>>();
            *scratch = Some(Scratch {
                rows,
                classes,
                logits: make(size),
                grad: make(size),
                row_loss: make(rows),
                all_loss: dev.zeros(rows),
            });
        }
        let s = scratch.as_ref().expect("made above");
        if grad.len != size {
            *grad = dev.zeros(size);
        }
        let mixup = t.labels_b.zip(t.lam);
        let labels = dev.labels(t.labels);
        let labels_b = dev.labels(mixup.map_or(&[][..], |m| m.0));
        let lam = dev.init(mixup.map_or(&[][..], |m| m.1), rows, true);
        let mode = if mixup.is_some() { 1u32 } else { 0 };
        let mut params = Vec::new();
        for v in [mode, rows as u32, classes as u32, (t.smoothing as f32).to_bits()] {
            params.extend(v.to_le_bytes());
        }
        let d = &dev.inner.device;
        let uniform = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: &params,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let bytes = (size * 4) as u64;
        for (k, pipe) in self.pipes.iter().enumerate() {
            let bufs =
                [&s.logits[k], &labels, &labels_b, &lam.buf, &dev.inner.spare[0], &s.grad[k], &s.row_loss[k], &uniform];
            let entries: Vec<_> = bufs
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
                .collect();
            let bind = d.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("loss"),
                layout: &pipe.layout,
                entries: &entries,
            });
            dev.record(|enc| {
                enc.copy_buffer_to_buffer(&logits.buf, k as u64 * bytes, &s.logits[k], 0, bytes);
                {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                    pass.set_pipeline(&pipe.pipeline);
                    pass.set_bind_group(0, &bind, &[]);
                    pass.dispatch_workgroups(rows.min(65535) as u32, rows.div_ceil(65535) as u32, 1);
                }
                enc.copy_buffer_to_buffer(&s.grad[k], 0, &grad.buf, k as u64 * bytes, bytes);
                enc.copy_buffer_to_buffer(&s.row_loss[k], 0, &s.all_loss.buf, (k * rows * 4) as u64, (rows * 4) as u64);
            });
        }
        let params = [dev.k, rows, classes, step].map(u);
        dev.dispatch("loss_stats", &[&s.all_loss.buf, &grad.buf, &stats.buf], &params, dev.k);
        Ok(())
    }
}
