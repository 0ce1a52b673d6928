//! The device layer: where tensors live and the operations the layers are written in.
//!
//! The layers (`layers.rs`) hold their parameters and saved activations as `D::Buf` and do all
//! arithmetic through a [`Device`]; they never touch the numbers themselves. A device decides
//! the algorithm: the CPU ([`crate::cpu::Cpu`]) runs im2col + GEMM over cache-sized groups of
//! images on its own threads; the wgpu device ([`crate::gpu::Wgpu`]) and the CUDA device
//! ([`crate::cuda::Cuda`]) run the kernels of kernels/train.rs on a population of models.
//! Adding one changes neither the layers nor their callers (the model and the training loop).
//!
//! Activations are channel-major, `[C, N, H*W]` ("CNHW"): a convolution's GEMM output is then
//! already the next layer's input (no transposes), and batch norm reduces over one contiguous
//! run per channel. Host images are `[N, C, H, W]`; [`Device::upload_images`] converts.

use crate::augment::{Augment, Plan};

/// Shape of a 2-D convolution with "same"-style padding `k / 2`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvGeom {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    pub fn new(cin: usize, cout: usize, k: usize, stride: usize, (h, w): (usize, usize)) -> ConvGeom {
        let pad = k / 2;
        let oh = (h + 2 * pad - k) / stride + 1;
        let ow = (w + 2 * pad - k) / stride + 1;
        ConvGeom { cin, cout, k, stride, pad, h, w, oh, ow }
    }
    /// Rows of the im2col matrix (and columns of the weight matrix `[cout, cin*k*k]`).
    pub fn kk(&self) -> usize {
        self.cin * self.k * self.k
    }
    /// Output pixels per image and channel.
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }
}

/// Batch norm's state that lives on the device: running statistics and what backward needs.
pub struct BnState<B> {
    pub running_mean: B,
    pub running_var: B,
    /// The normalised input of the last training forward pass, `[C, N*HW]`.
    pub xhat: B,
    /// sigmoid of the output before swish (empty without swish, and on the GPU devices, whose
    /// backward passes compute it again from `xhat`).
    pub sig: B,
    /// 1 / sqrt(var + eps) per channel, of the last forward pass.
    pub inv_std: B,
}

/// Batch norm's constants.
#[derive(Clone, Copy, Debug)]
pub struct BnGeom {
    pub c: usize,
    /// Elements per channel: N * H * W.
    pub len: usize,
    pub momentum: f32,
    pub eps: f32,
    /// Whether swish follows (fused: one pass over the data instead of two).
    pub swish: bool,
}

/// One optimiser update of a parameter tensor.
#[derive(Clone, Copy, Debug)]
pub enum Update {
    /// Adam with bias corrections `c1 = 1 - b1^t`, `c2 = 1 - b2^t`.
    Adam { lr: f32, b1: f32, b2: f32, eps: f32, c1: f32, c2: f32 },
    /// SGD with Nesterov momentum `mu` (`v` is unused).
    Nesterov { lr: f32, mu: f32 },
}

/// A parameter tensor and its optimiser state, as [`Device::update`] takes them.
pub struct Tensors<'a, B> {
    /// The L2 weight decay added to its gradient.
    pub decay: f32,
    pub value: &'a mut B,
    pub grad: &'a mut B,
    pub m: &'a mut B,
    pub v: &'a mut B,
}

/// Where the surrogate trains. Every operation takes and returns device buffers; only
/// `upload*` and `download` cross to the host (the loss kernel reads the logits on the host:
/// `[N, classes]` is small).
///
/// A device trains a population of [`Device::models`] models at once (K; the CPU's is 1):
/// every buffer holds one tensor per model, stacked on a leading model axis, and every
/// operation applies to all K. Shapes and lengths in this trait are those of one model.
pub trait Device: Clone + Send + Sync {
    /// A buffer of f32 on the device.
    type Buf: Send + Sync;
    /// Whether reading a buffer back costs nothing (the host is the device), so the training
    /// loop may look at every step's numbers instead of only at evaluation intervals.
    const HOST: bool = false;

    /// The device in a few words, for a run's record: "cpu", "wgpu (llvmpipe ...)".
    fn name(&self) -> String;
    /// How many models every buffer holds.
    fn models(&self) -> usize {
        1
    }
    /// `n` zeros per model.
    fn zeros(&self, n: usize) -> Self::Buf;
    /// One tensor every model reads (inputs, masks): stored once, never written.
    fn upload(&self, host: &[f32]) -> Self::Buf;
    /// One tensor each model gets its own copy of (parameters, running statistics).
    fn param(&self, host: &[f32]) -> Self::Buf {
        self.upload(host)
    }
    /// A buffer holding a different tensor for each model (`tensors.len()` = K, equal lengths).
    fn stack(&self, tensors: &[Vec<f32>]) -> Self::Buf {
        assert!(tensors.len() == 1 && self.models() == 1, "stack: one tensor per model");
        self.param(&tensors[0])
    }
    /// The whole buffer: K tensors one after another (one for a shared buffer).
    fn download(&self, buf: &Self::Buf) -> Vec<f32>;
    fn len(&self, buf: &Self::Buf) -> usize;
    /// A training step begins; [`Device::flush`] ends it. Between the two the host makes the
    /// same calls every step, which lets a device replay the step's launches as one graph
    /// (`crate::replay`).
    fn begin_step(&self) {}
    /// Sends the work recorded so far to the device (a no-op where work runs as it is called).
    fn flush(&self) {}
    /// Sets every value of `buf` to zero, in place.
    fn clear(&self, buf: &mut Self::Buf);
    /// Host images `[n, c, hw]` to a device batch `[c, n, hw]`.
    fn upload_images(&self, host: &[f32], n: usize, c: usize, hw: usize) -> Self::Buf;
    /// A data set `[N, C, H*W]` kept on the device to gather training batches from, or None
    /// where batches come up from the host (the CPU; a set too large for one buffer).
    fn resident(&self, _images: &[f32]) -> Option<Self::Buf> {
        None
    }
    /// The training batch `[C, n, H*W]` of images `idx` of a [`Device::resident`] set with
    /// `plan`'s draws applied (base, cutout, mixup: [`crate::augment::is_gather`] plans).
    fn gather(
        &self,
        _data: &Self::Buf,
        _idx: &[usize],
        _plan: &Plan,
        _a: &Augment,
        _shape: (usize, usize, usize),
    ) -> Self::Buf {
        unreachable!("gather on a device without resident data sets")
    }

    /// `y[cout, n, p] = conv(x[cin, n, h*w], w[cout, cin, k, k])`.
    fn conv_forward(&self, g: &ConvGeom, n: usize, w: &Self::Buf, x: &Self::Buf) -> Self::Buf;
    /// Adds dL/dw into `dw`; returns dL/dx when `want_dx` (the stem's input needs none).
    #[allow(clippy::too_many_arguments)]
    fn conv_backward(
        &self,
        g: &ConvGeom,
        n: usize,
        w: &Self::Buf,
        x: &Self::Buf,
        gy: &Self::Buf,
        dw: &mut Self::Buf,
        want_dx: bool,
    ) -> Option<Self::Buf>;

    /// Batch norm (batch statistics in training, running ones otherwise), then swish when
    /// `g.swish`. Training updates the running statistics and saves `xhat`, `sig` (the CPU
    /// device), `inv_std`.
    fn bn_forward(
        &self,
        g: &BnGeom,
        x: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        s: &mut BnState<Self::Buf>,
        train: bool,
    ) -> Self::Buf;
    /// Backward of the training forward: adds into `dgamma`, `dbeta`; returns dL/dx.
    #[allow(clippy::too_many_arguments)]
    fn bn_backward(
        &self,
        g: &BnGeom,
        gy: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        s: &BnState<Self::Buf>,
        dgamma: &mut Self::Buf,
        dbeta: &mut Self::Buf,
    ) -> Self::Buf;

    /// `a += b`.
    fn add_assign(&self, a: &mut Self::Buf, b: &Self::Buf);
    /// Element-wise `a * b`.
    fn mul(&self, a: &Self::Buf, b: &Self::Buf) -> Self::Buf;
    /// Global average pool `[c, n, hw] -> [n, c]`.
    fn pool_forward(&self, c: usize, n: usize, hw: usize, x: &Self::Buf) -> Self::Buf;
    /// Its backward `[n, c] -> [c, n, hw]`.
    fn pool_backward(&self, c: usize, n: usize, hw: usize, gy: &Self::Buf) -> Self::Buf;
    /// `y[n, out] = x[n, inp] w[out, inp]^T + b`.
    fn dense_forward(&self, n: usize, inp: usize, out: usize, x: &Self::Buf, w: &Self::Buf, b: &Self::Buf)
    -> Self::Buf;
    /// Adds into `dw` and `db`; returns dL/dx `[n, inp]`.
    #[allow(clippy::too_many_arguments)]
    fn dense_backward(
        &self,
        n: usize,
        inp: usize,
        out: usize,
        x: &Self::Buf,
        w: &Self::Buf,
        gy: &Self::Buf,
        dw: &mut Self::Buf,
        db: &mut Self::Buf,
    ) -> Self::Buf;

    /// Adds to `stats[slot]` of each model how many of the `n` rows of its logits
    /// `[n, classes]` have their first maximum at `labels[row]`.
    fn hits(&self, logits: &Self::Buf, n: usize, classes: usize, labels: &[u32], stats: &mut Self::Buf, slot: usize);

    /// One optimiser step on each tensor: `value` with gradient `grad + decay * value`; clears
    /// `grad`. One call a step, so that a device uploads the step's learning rate once.
    fn update(&self, u: &Update, tensors: &mut [Tensors<'_, Self::Buf>]);
}
