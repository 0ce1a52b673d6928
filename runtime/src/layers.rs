//! Layers with explicit forward and backward passes, over any [`Device`].
//!
//! A layer is built for a fixed input shape; `forward` takes a batch of N inputs, keeps what
//! `backward` needs, and `backward` takes the gradient of the loss with respect to the output,
//! accumulates parameter gradients and returns the gradient with respect to the input.
//! Activations are `[C, N, H*W]` (see `device.rs`). Layers that must keep their input
//! (convolution, dense) take it by value instead of copying it. Initialisation follows Keras:
//! Glorot-uniform weights, zero biases, BN gamma 1 / beta 0.

pub use crate::cpu::set_threads;
use crate::device::{BnGeom, BnState, ConvGeom, Device};
use crate::rng::Rng;

/// A parameter tensor with its gradient (accumulated by `backward`, cleared by the optimiser).
pub struct Param<D: Device> {
    pub value: D::Buf,
    pub grad: D::Buf,
    /// Whether weight decay applies (not to BN and biases).
    pub decay: bool,
}

impl<D: Device> Param<D> {
    fn new(dev: &D, value: &[f32], decay: bool) -> Param<D> {
        Param { value: dev.param(value), grad: dev.zeros(value.len()), decay }
    }
}

/// Glorot-uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Keras' default).
fn glorot(rng: &mut Rng, n: usize, fan_in: usize, fan_out: usize) -> Vec<f32> {
    let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
    (0..n).map(|_| ((2.0 * rng.f64() - 1.0) * a) as f32).collect()
}

/// 2-D convolution, no bias (a batch norm follows every convolution of the model).
pub struct Conv2d<D: Device> {
    dev: D,
    pub geom: ConvGeom,
    /// `[cout, cin, k, k]`.
    pub weight: Param<D>,
    x: Option<D::Buf>,
    n: usize,
}

impl<D: Device> Conv2d<D> {
    pub fn new(dev: &D, rng: &mut Rng, cin: usize, cout: usize, k: usize, stride: usize, hw: (usize, usize)) -> Self {
        let geom = ConvGeom::new(cin, cout, k, stride, hw);
        let fan = cin * k * k;
        let weight = Param::new(dev, &glorot(rng, cout * fan, fan, cout * k * k), true);
        Conv2d { dev: dev.clone(), geom, weight, x: None, n: 0 }
    }

    /// `[cin, n, h*w] -> [cout, n, oh*ow]`; keeps `x` for backward.
    pub fn forward(&mut self, x: D::Buf, n: usize) -> D::Buf {
        let y = self.apply(&x, n);
        (self.x, self.n) = (Some(x), n);
        y
    }

    /// The forward pass without keeping `x` (the network's first layer: its input is data the
    /// caller keeps, and needs no gradient).
    pub fn apply(&self, x: &D::Buf, n: usize) -> D::Buf {
        self.dev.conv_forward(&self.geom, n, &self.weight.value, x)
    }

    /// Accumulates the weight gradient and returns the input gradient.
    pub fn backward(&mut self, gy: &D::Buf) -> D::Buf {
        let x = self.x.as_ref().expect("Conv2d::backward before forward");
        let (w, dw) = (&self.weight.value, &mut self.weight.grad);
        self.dev.conv_backward(&self.geom, self.n, w, x, gy, dw, true).expect("asked for dx")
    }

    /// Accumulates the weight gradient of [`Conv2d::apply`] to `x` only.
    pub fn backward_weights(&mut self, x: &D::Buf, n: usize, gy: &D::Buf) {
        let (w, dw) = (&self.weight.value, &mut self.weight.grad);
        self.dev.conv_backward(&self.geom, n, w, x, gy, dw, false);
    }
}

/// Batch normalisation per channel over N, H, W (eps 1e-3 as Keras; running statistics with
/// momentum 0.9, not Keras' 0.99, so that the short runs of a search evaluate well), optionally
/// fused with the swish `z * sigmoid(z)` that follows every batch norm of the model.
pub struct BatchNorm<D: Device> {
    dev: D,
    pub c: usize,
    pub hw: usize,
    pub swish: bool,
    pub gamma: Param<D>,
    pub beta: Param<D>,
    pub momentum: f32,
    pub eps: f32,
    pub state: BnState<D::Buf>,
    n: usize,
}

impl<D: Device> BatchNorm<D> {
    pub fn new(dev: &D, c: usize, hw: usize) -> Self {
        BatchNorm {
            dev: dev.clone(),
            c,
            hw,
            swish: false,
            gamma: Param::new(dev, &vec![1.0; c], false),
            beta: Param::new(dev, &vec![0.0; c], false),
            momentum: 0.9,
            eps: 1e-3,
            state: BnState {
                running_mean: dev.zeros(c),
                running_var: dev.param(&vec![1.0; c]),
                xhat: dev.zeros(0),
                sig: dev.zeros(0),
                inv_std: dev.zeros(c),
            },
            n: 0,
        }
    }

    /// Batch norm followed by swish.
    pub fn with_swish(dev: &D, c: usize, hw: usize) -> Self {
        BatchNorm { swish: true, ..BatchNorm::new(dev, c, hw) }
    }

    fn geom(&self, n: usize) -> BnGeom {
        BnGeom { c: self.c, len: n * self.hw, momentum: self.momentum, eps: self.eps, swish: self.swish }
    }

    pub fn forward(&mut self, x: &D::Buf, n: usize, train: bool) -> D::Buf {
        self.n = n;
        let g = self.geom(n);
        self.dev.bn_forward(&g, x, &self.gamma.value, &self.beta.value, &mut self.state, train)
    }

    /// Backward of the training-mode forward (batch statistics).
    pub fn backward(&mut self, gy: &D::Buf) -> D::Buf {
        let g = self.geom(self.n);
        let (gamma, beta) = (&mut self.gamma, &mut self.beta);
        self.dev.bn_backward(&g, gy, &gamma.value, &beta.value, &self.state, &mut gamma.grad, &mut beta.grad)
    }
}

/// Global average pooling: `[C, N, H*W] -> [N, C]`.
pub struct GlobalAvgPool<D: Device> {
    dev: D,
    pub c: usize,
    pub hw: usize,
    n: usize,
}

impl<D: Device> GlobalAvgPool<D> {
    pub fn new(dev: &D, c: usize, hw: usize) -> Self {
        GlobalAvgPool { dev: dev.clone(), c, hw, n: 0 }
    }
    pub fn forward(&mut self, x: &D::Buf, n: usize) -> D::Buf {
        self.n = n;
        self.dev.pool_forward(self.c, n, self.hw, x)
    }
    pub fn backward(&self, gy: &D::Buf) -> D::Buf {
        self.dev.pool_backward(self.c, self.n, self.hw, gy)
    }
}

/// Inverted dropout: kept units are scaled by 1/(1-rate) in training; identity in evaluation.
/// The mask is drawn on the host from the run's generator, so runs are reproducible on any
/// device; the models of a population share it.
pub struct Dropout<D: Device> {
    dev: D,
    pub rate: f32,
    mask: Option<D::Buf>,
}

impl<D: Device> Dropout<D> {
    pub fn new(dev: &D, rate: f32) -> Self {
        Dropout { dev: dev.clone(), rate, mask: None }
    }
    pub fn forward(&mut self, x: D::Buf, train: bool, rng: &mut Rng) -> D::Buf {
        if !train || self.rate == 0.0 {
            self.mask = None;
            return x;
        }
        let mask = self.dev.upload(&dropout_mask(rng, self.dev.len(&x), self.rate));
        let y = self.dev.mul(&x, &mask);
        self.mask = Some(mask);
        y
    }
    pub fn backward(&self, gy: D::Buf) -> D::Buf {
        match &self.mask {
            Some(mask) => self.dev.mul(&gy, mask),
            None => gy,
        }
    }
}

/// `len` mask values: 0 where `rng.f64() < rate` (the unit is dropped), else 1/(1-rate), one
/// draw each. The comparison is made on the draw's 53 bits against `rate` scaled to them
/// (exact: a float in [0, 1) times 2^53, rounded up, is the least integer not below it), the
/// value is chosen without a branch (half the units drop at random), and the values are
/// written into a zeroed vector rather than collected from an iterator, which ran three times
/// slower: at batch 128 this loop was a third of a GPU training step's host work.
pub fn dropout_mask(rng: &mut Rng, len: usize, rate: f32) -> Vec<f32> {
    let keep = if rate < 1.0 { 1.0 / (1.0 - rate) } else { 0.0 };
    let threshold = (rate as f64 * (1u64 << 53) as f64).ceil() as u64;
    let mut mask = vec![0.0; len];
    for m in &mut mask {
        *m = ((rng.next_u64() >> 11) >= threshold) as u32 as f32 * keep;
    }
    mask
}

/// Fully connected layer `y = x W^T + b` on `[N, inp]` rows.
pub struct Dense<D: Device> {
    dev: D,
    pub inp: usize,
    pub out: usize,
    /// `[out, inp]`.
    pub weight: Param<D>,
    pub bias: Param<D>,
    x: Option<D::Buf>,
    n: usize,
}

impl<D: Device> Dense<D> {
    pub fn new(dev: &D, rng: &mut Rng, inp: usize, out: usize) -> Self {
        Dense {
            dev: dev.clone(),
            inp,
            out,
            weight: Param::new(dev, &glorot(rng, inp * out, inp, out), true),
            bias: Param::new(dev, &vec![0.0; out], false),
            x: None,
            n: 0,
        }
    }
    pub fn forward(&mut self, x: D::Buf, n: usize) -> D::Buf {
        let y = self.dev.dense_forward(n, self.inp, self.out, &x, &self.weight.value, &self.bias.value);
        (self.x, self.n) = (Some(x), n);
        y
    }
    pub fn backward(&mut self, gy: &D::Buf) -> D::Buf {
        let x = self.x.as_ref().expect("Dense::backward before forward");
        let (w, b) = (&mut self.weight, &mut self.bias);
        self.dev.dense_backward(self.n, self.inp, self.out, x, &w.value, gy, &mut w.grad, &mut b.grad)
    }
}
