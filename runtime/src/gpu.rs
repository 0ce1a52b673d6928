//! The wgpu device: a population of K models trained on any Vulkan adapter (a GPU, or lavapipe
//! on the CPU), with the kernels of kernels/train.rs and each model's own WGSL loss kernel.
//!
//! Its device operations are written once for both GPU devices ([`crate::stacked`]); this file
//! is the [`Launcher`] underneath, through wgpu. Work is recorded into one command encoder and
//! submitted by [`Device::flush`] (the training loop calls it once a step) or by a read-back;
//! at most one step is in flight, so buffers dropped by the host are reclaimed. Buffers are
//! created zeroed.

use crate::device::Device;
use crate::kernels::{self, Access, KERNELS, Kernel};
use crate::stacked::{self, Arg, Launcher, LossTargets, SBuf, u};
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
    /// Threads the adapter runs at once ([`Launcher::resident_threads`]).
    resident: usize,
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

/// A buffer of the wgpu device.
pub type GBuf = SBuf<wgpu::Buffer>;

const USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

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
        // Vulkan does not tell how many threads a GPU holds: a large one's, about 64 cores of
        // 2,048. A CPU adapter (lavapipe) runs a workgroup per core.
        let resident = match info.device_type {
            wgpu::DeviceType::Cpu => std::thread::available_parallelism().map_or(1, |n| n.get()) * kernels::THREADS,
            _ => 1 << 17,
        };
        let adapter = info.name;
        let inner = Inner { device, queue, adapter, max_buffer, resident, pipes, pending: Mutex::default(), spare };
        Ok(Wgpu { inner: Arc::new(inner), k: models.max(1) })
    }

    /// The adapter's name, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub fn adapter(&self) -> &str {
        &self.inner.adapter
    }

    /// Checks that a tensor of `per_model` floats for each of the K models fits in one buffer
    /// and in u32 byte offsets (so its floats index in i32).
    pub fn check_size(&self, per_model: usize) -> Result<(), GpuError> {
        let bytes = (per_model * self.k * 4) as u64;
        let limit = self.inner.max_buffer.min(u32::MAX as u64);
        if bytes > limit {
            return Err(GpuError::TooLarge { models: self.k, bytes, limit });
        }
        Ok(())
    }

    fn bytes_buffer(&self, bytes: &[u8]) -> wgpu::Buffer {
        let contents = if bytes.is_empty() { &[0u8; 4][..] } else { bytes };
        self.inner.device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents, usage: USAGE })
    }

    /// Runs `f` on the pending command encoder.
    fn record(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        let mut p = self.inner.pending.lock().expect("pending work");
        let enc = p.encoder.get_or_insert_with(|| {
            self.inner.device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default())
        });
        f(enc);
    }

    /// Submits the pending work and waits for the submission before it, so that at most one is
    /// in flight.
    fn submit_pending(&self) {
        let mut p = self.inner.pending.lock().expect("pending work");
        let Some(enc) = p.encoder.take() else { return };
        let index = self.inner.queue.submit([enc.finish()]);
        if let Some(prev) = p.last.replace(index) {
            let _ = self.inner.device.poll(wgpu::PollType::Wait { submission_index: Some(prev), timeout: None });
        }
    }

    /// Copies `bytes` of `src` from byte `start` into a mappable buffer and reads them (waits
    /// for all work before it).
    fn read_bytes(&self, src: &wgpu::Buffer, start: u64, bytes: u64) -> Vec<f32> {
        let d = &self.inner.device;
        let staging = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.record(|enc| enc.copy_buffer_to_buffer(src, start, &staging, 0, bytes));
        self.submit_pending();
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

impl Launcher for Wgpu {
    type Mem = wgpu::Buffer;
    type Words = wgpu::Buffer;

    fn describe(&self) -> String {
        format!("wgpu ({})", self.inner.adapter)
    }
    fn population(&self) -> usize {
        self.k
    }
    fn alloc(&self, floats: usize) -> wgpu::Buffer {
        self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (floats.max(1) * 4) as u64,
            usage: USAGE,
            mapped_at_creation: false,
        })
    }
    fn init(&self, data: &[f32]) -> wgpu::Buffer {
        self.bytes_buffer(&data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
    }
    fn words(&self, data: &[u32]) -> wgpu::Buffer {
        self.bytes_buffer(&data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
    }
    fn read(&self, mem: &wgpu::Buffer, start: usize, floats: usize) -> Vec<f32> {
        self.read_bytes(mem, (start * 4) as u64, (floats * 4) as u64)
    }
    fn zero(&self, mem: &wgpu::Buffer, start: usize, floats: usize) {
        self.record(|enc| enc.clear_buffer(mem, (start * 4) as u64, Some((floats * 4) as u64)));
    }
    fn launch(&self, k: &'static Kernel, args: &[Arg<'_, Self>], params: &[u32], groups: usize) {
        let pipe = &self.inner.pipes[k.name];
        let mut bytes: Vec<u8> = params.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.resize(bytes.len().next_multiple_of(16).max(16), 0);
        let d = &self.inner.device;
        let uniform = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: &bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries: Vec<wgpu::BindGroupEntry> = args
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let resource = match a {
                    Arg::F(b) | Arg::U(b) => b.as_entire_binding(),
                    // Its own range, so that the parts of one buffer a launch binds do not
                    // overlap.
                    Arg::Part(b, span) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: b,
                        offset: (span.start * 4) as u64,
                        size: wgpu::BufferSize::new((span.len().max(1) * 4) as u64),
                    }),
                };
                wgpu::BindGroupEntry { binding: i as u32, resource }
            })
            .collect();
        entries.push(wgpu::BindGroupEntry { binding: args.len() as u32, resource: uniform.as_entire_binding() });
        let bind = d.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(k.name),
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
    fn spare(&self) -> &wgpu::Buffer {
        &self.inner.spare[0]
    }
    fn submit(&self) {
        self.submit_pending();
    }
    fn max_floats(&self) -> usize {
        (self.inner.max_buffer / 4) as usize
    }
    fn resident_threads(&self) -> usize {
        self.inner.resident
    }
}

/// Each model's loss as its own WGSL kernel (the one `lossc compile` emits, kernels/loss.wgsl.in).
pub struct WgslLosses {
    /// Each model's kernel (models with the same source share one).
    pipes: Vec<Arc<Pipe>>,
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
    /// Builds each model's loss kernel from its WGSL source (`sources.len()` = K), each
    /// distinct source once.
    pub fn losses(&self, sources: &[String]) -> Result<WgslLosses, GpuError> {
        assert_eq!(sources.len(), self.k, "one loss per model");
        let mut entries: Vec<_> = (0..7).map(|i| storage_entry(i, i < 5)).collect();
        entries.push(uniform_entry(7));
        let (first, place) = stacked::distinct(sources);
        let built = (first.into_iter())
            .map(|model| {
                build(&self.inner.device, "loss", &sources[model], &entries)
                    .map(Arc::new)
                    .map_err(|message| GpuError::LossKernel { model, message })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let pipes = place.iter().map(|&i| built[i].clone()).collect();
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
            let make = |n: usize| (0..dev.k).map(|_| dev.alloc(n)).collect::<Vec<_>>();
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
        let LossTargets { mode, labels, labels_b, lam } = LossTargets::upload(dev, t);
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
        // Each model's own kernel: one profile entry for the K dispatches and their copies.
        crate::profile::timed(dev, "emitted loss", || {
            for (k, pipe) in self.pipes.iter().enumerate() {
                let bufs = [&s.logits[k], &labels, &labels_b, &lam, dev.spare(), &s.grad[k], &s.row_loss[k], &uniform];
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
                    enc.copy_buffer_to_buffer(&logits.mem, k as u64 * bytes, &s.logits[k], 0, bytes);
                    {
                        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                        pass.set_pipeline(&pipe.pipeline);
                        pass.set_bind_group(0, &bind, &[]);
                        pass.dispatch_workgroups(rows.min(65535) as u32, rows.div_ceil(65535) as u32, 1);
                    }
                    enc.copy_buffer_to_buffer(&s.grad[k], 0, &grad.mem, k as u64 * bytes, bytes);
                    enc.copy_buffer_to_buffer(
                        &s.row_loss[k],
                        0,
                        &s.all_loss.mem,
                        (k * rows * 4) as u64,
                        (rows * 4) as u64,
                    );
                });
            }
        });
        let at = dev.words(&[u(step)]);
        let args = [Arg::F(&s.all_loss.mem), Arg::F(&grad.mem), Arg::U(&at), Arg::F(&stats.mem)];
        stacked::dispatch(dev, "loss_stats", &args, &[dev.k, rows, classes].map(u), dev.k);
        Ok(())
    }
}
