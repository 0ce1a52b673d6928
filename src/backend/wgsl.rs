//! WGSL emitter: the fused loss as one self-contained compute shader (kernels/loss.wgsl.in),
//! validated with naga, run through wgpu where an adapter exists.

use super::clike::{self, Dialect};
use crate::passes::fuse::Fused;

const TEMPLATE: &str = include_str!("../../kernels/loss.wgsl.in");

/// Options for the WGSL emitter.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The `.loss` text the kernel came from, quoted in the header.
    pub source: String,
}

/// Emits the WGSL source of a fused loss.
pub fn emit(f: &Fused, opts: &Options) -> String {
    let header = clike::header(&f.name, &opts.source);
    clike::render(Dialect::Wgsl, TEMPLATE, &header, &f.name, &f.graph)
}

/// What went wrong with a WGSL kernel or the device that runs it.
#[derive(Debug, thiserror::Error)]
pub enum WgslError {
    /// naga's diagnostic, rendered against the source.
    #[error("the WGSL does not validate:\n{0}")]
    Invalid(String),
    #[error("no Vulkan adapter: {0}")]
    NoAdapter(String),
    #[error("cannot open {adapter}: {message}")]
    Device { adapter: String, message: String },
    #[error("reading the results back failed: {0}")]
    ReadBack(String),
    #[error(transparent)]
    Batch(#[from] crate::reference::contract::ContractError),
}
crate::error::classify!(WgslError, input: [Batch]);

/// How to call the emitted kernel, for the manifest `lossc compile` writes.
pub fn manifest() -> serde_json::Value {
    serde_json::json!({
        "entry_point": "main",
        "workgroup_size": 64,
        "dispatch": "(min(B, 65535), ceil(B / 65535), 1)",
        "bindings": ["logits", "labels", "labels_b", "lam", "dense", "grad (rw)", "row_loss (rw)", "params {mode, rows, classes, alpha}"],
    })
}

/// Parses and validates WGSL with naga, returning its diagnostic on failure.
pub fn validate(src: &str) -> Result<(), WgslError> {
    let module = naga::front::wgsl::parse_str(src).map_err(|e| WgslError::Invalid(e.emit_to_string(src)))?;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::default())
        .validate(&module)
        .map(|_| ())
        .map_err(|e| WgslError::Invalid(e.emit_to_string(src)))
}

/// A wgpu device for running emitted kernels (any adapter: a GPU, or lavapipe on the CPU).
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    /// The adapter's name, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub adapter: String,
}

impl Gpu {
    /// The first Vulkan adapter, or why there is none.
    pub fn new() -> Result<Gpu, WgslError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::VULKAN;
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .map_err(|e| WgslError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))
            .map_err(|e| WgslError::Device { adapter: info.name.clone(), message: e.to_string() })?;
        Ok(Gpu { device, queue, adapter: info.name })
    }

    /// Runs the WGSL kernel of a fused loss on a batch: returns `(row_loss, grad)`.
    pub fn run(
        &self,
        f: &Fused,
        logits: &[f32],
        classes: usize,
        targets: &crate::reference::contract::Targets<f32>,
    ) -> Result<(Vec<f32>, Vec<f32>), WgslError> {
        use wgpu::util::DeviceExt;
        let b = crate::reference::contract::batch_size(logits.len(), classes)?;
        targets.check(b, classes)?;
        let src = emit(f, &Options::default());
        let d = &self.device;
        let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&f.name),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let pipeline = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&f.name),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let storage = |data: &[u8], extra: wgpu::BufferUsages| {
            // Unused inputs still need a (non-empty) binding.
            let data = if data.is_empty() { &[0u8; 4][..] } else { data };
            d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: data,
                usage: wgpu::BufferUsages::STORAGE | extra,
            })
        };
        let bytes_u32 = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let bytes_f32 = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let t = targets.flat();
        let (mode, alpha, labels, labels_b, lam, dense) = (t.mode, t.smoothing, t.labels, t.labels_b, t.lam, t.dense);
        let none = wgpu::BufferUsages::empty();
        let buffers = [
            storage(&bytes_f32(logits), none),
            storage(&bytes_u32(labels), none),
            storage(&bytes_u32(labels_b), none),
            storage(&bytes_f32(lam), none),
            storage(&bytes_f32(dense), none),
            storage(&vec![0u8; logits.len() * 4], wgpu::BufferUsages::COPY_SRC),
            storage(&vec![0u8; b * 4], wgpu::BufferUsages::COPY_SRC),
        ];
        let mut params = Vec::new();
        for v in [mode, b as u32, classes as u32, alpha.to_bits()] {
            params.extend(v.to_le_bytes());
        }
        let uniform = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: &params,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, buf)| wgpu::BindGroupEntry { binding: i as u32, resource: buf.as_entire_binding() })
            .collect();
        entries.push(wgpu::BindGroupEntry { binding: 7, resource: uniform.as_entire_binding() });
        let bind = d.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let read_grad = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (logits.len() * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let read_loss = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (b * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = d.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            let x = b.min(65535) as u32;
            let y = b.div_ceil(65535) as u32;
            pass.dispatch_workgroups(x, y, 1);
        }
        enc.copy_buffer_to_buffer(&buffers[5], 0, &read_grad, 0, (logits.len() * 4) as u64);
        enc.copy_buffer_to_buffer(&buffers[6], 0, &read_loss, 0, (b * 4) as u64);
        self.queue.submit([enc.finish()]);
        let read = |buf: &wgpu::Buffer| -> Result<Vec<f32>, WgslError> {
            let slice = buf.slice(..);
            slice.map_async(wgpu::MapMode::Read, |r| r.expect("map"));
            d.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| WgslError::ReadBack(e.to_string()))?;
            let data = slice.get_mapped_range().map_err(|e| WgslError::ReadBack(e.to_string()))?;
            let v = data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            drop(data);
            buf.unmap();
            Ok(v)
        };
        let grad = read(&read_grad)?;
        let row_loss = read(&read_loss)?;
        Ok((row_loss, grad))
    }
}
