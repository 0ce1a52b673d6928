//! The search's surrogate: the predecessor's small ResNet9v2 (SPEC section 5), with a width
//! multiplier. conv 8 stem -> pre-activation residual block 16 -> block 32 -> BN-swish ->
//! global average pool -> dropout 0.5 -> dense; each block is BN-swish-conv(stride 2),
//! BN-swish-conv, BN-swish-conv plus a 1x1 stride-2 shortcut from the block's input.

use crate::cpu::Cpu;
use crate::device::Device;
use crate::layers::{BatchNorm, Conv2d, Dense, Dropout, GlobalAvgPool, Param};
use crate::rng::Rng;

/// One pre-activation residual block.
struct Block<D: Device> {
    dev: D,
    bn: [BatchNorm<D>; 3],
    conv: [Conv2d<D>; 3],
    shortcut: Conv2d<D>,
}

impl<D: Device> Block<D> {
    fn new(dev: &D, rng: &mut Rng, cin: usize, cout: usize, (h, w): (usize, usize)) -> Self {
        let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
        Block {
            dev: dev.clone(),
            bn: [
                BatchNorm::with_swish(dev, cin, h * w),
                BatchNorm::with_swish(dev, cout, oh * ow),
                BatchNorm::with_swish(dev, cout, oh * ow),
            ],
            conv: [
                Conv2d::new(dev, rng, cin, cout, 3, 2, (h, w)),
                Conv2d::new(dev, rng, cout, cout, 3, 1, (oh, ow)),
                Conv2d::new(dev, rng, cout, cout, 3, 1, (oh, ow)),
            ],
            shortcut: Conv2d::new(dev, rng, cin, cout, 1, 2, (h, w)),
        }
    }

    fn forward(&mut self, x: D::Buf, n: usize, train: bool) -> D::Buf {
        let mut y = self.conv[0].forward(self.bn[0].forward(&x, n, train), n);
        for i in 1..3 {
            y = self.conv[i].forward(self.bn[i].forward(&y, n, train), n);
        }
        let mut s = self.shortcut.forward(x, n);
        self.dev.add_assign(&mut s, &y);
        s
    }

    fn backward(&mut self, gy: &D::Buf) -> D::Buf {
        let mut g = self.bn[2].backward(&self.conv[2].backward(gy));
        for i in (0..2).rev() {
            g = self.bn[i].backward(&self.conv[i].backward(&g));
        }
        let gs = self.shortcut.backward(gy);
        self.dev.add_assign(&mut g, &gs);
        g
    }

    fn params(&mut self) -> Vec<&mut Param<D>> {
        let mut v: Vec<&mut Param<D>> = Vec::new();
        for bn in &mut self.bn {
            v.push(&mut bn.gamma);
            v.push(&mut bn.beta);
        }
        for c in &mut self.conv {
            v.push(&mut c.weight);
        }
        v.push(&mut self.shortcut.weight);
        v
    }
}

/// The surrogate network, on device `D` (the CPU unless built with [`ResNet9v2::on`]).
pub struct ResNet9v2<D: Device = Cpu> {
    dev: D,
    stem: Conv2d<D>,
    blocks: Vec<Block<D>>,
    bn: BatchNorm<D>,
    pool: GlobalAvgPool<D>,
    dropout: Dropout<D>,
    dense: Dense<D>,
    pub classes: usize,
    /// Input shape (channels, height, width).
    pub input: (usize, usize, usize),
    /// The device batch of the last host [`ResNet9v2::forward`], for its backward.
    input_batch: Option<D::Buf>,
    /// The batch size of the last forward pass.
    n: usize,
}

impl ResNet9v2<Cpu> {
    /// The surrogate on the CPU; `width` multiplies the channel counts 8, 16, 32.
    pub fn new(seed: u64, input: (usize, usize, usize), classes: usize, width: usize) -> Self {
        ResNet9v2::on(Cpu, seed, input, classes, width)
    }
}

impl<D: Device> ResNet9v2<D> {
    /// The surrogate on `dev`; the same seed gives the same initial weights on every device.
    pub fn on(dev: D, seed: u64, (c, h, w): (usize, usize, usize), classes: usize, width: usize) -> Self {
        let mut rng = Rng::new(seed);
        let (c1, c2, c3) = (8 * width, 16 * width, 32 * width);
        let stem = Conv2d::new(&dev, &mut rng, c, c1, 3, 1, (h, w));
        let b1 = Block::new(&dev, &mut rng, c1, c2, (h, w));
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        let b2 = Block::new(&dev, &mut rng, c2, c3, (h2, w2));
        let (h3, w3) = (h2.div_ceil(2), w2.div_ceil(2));
        ResNet9v2 {
            stem,
            blocks: vec![b1, b2],
            bn: BatchNorm::with_swish(&dev, c3, h3 * w3),
            pool: GlobalAvgPool::new(&dev, c3, h3 * w3),
            dropout: Dropout::new(&dev, 0.5),
            dense: Dense::new(&dev, &mut rng, c3, classes),
            classes,
            input: (c, h, w),
            input_batch: None,
            n: 0,
            dev,
        }
    }

    pub fn device(&self) -> &D {
        &self.dev
    }

    /// Logits `[n, classes]` (on the host) of host images `[n, C, H, W]`.
    pub fn forward(&mut self, x: &[f32], n: usize, train: bool, rng: &mut Rng) -> Vec<f32> {
        let (c, h, w) = self.input;
        let x = self.dev.upload_images(x, n, c, h * w);
        let y = self.forward_buf(&x, n, train, rng);
        self.input_batch = Some(x);
        self.dev.download(&y)
    }

    /// Back-propagates the gradient of the loss with respect to the logits (host `[n, classes]`)
    /// of the last [`ResNet9v2::forward`].
    pub fn backward(&mut self, dlogits: &[f32]) {
        let x = self.input_batch.take().expect("ResNet9v2::backward before forward");
        self.backward_buf(&x, &self.dev.upload(dlogits));
    }

    /// Logits `[n, classes]` per model, on the device, of a device batch `[C, n, H*W]`.
    pub fn forward_buf(&mut self, x: &D::Buf, n: usize, train: bool, rng: &mut Rng) -> D::Buf {
        self.n = n;
        let mut y = self.stem.apply(x, n);
        for b in &mut self.blocks {
            y = b.forward(y, n, train);
        }
        y = self.bn.forward(&y, n, train);
        y = self.pool.forward(&y, n);
        y = self.dropout.forward(y, train, rng);
        self.dense.forward(y, n)
    }

    /// Back-propagates `dlogits` (per model, on the device) of the last training forward of `x`.
    pub fn backward_buf(&mut self, x: &D::Buf, dlogits: &D::Buf) {
        let mut g = self.dense.backward(dlogits);
        g = self.dropout.backward(g);
        g = self.pool.backward(&g);
        g = self.bn.backward(&g);
        for b in self.blocks.iter_mut().rev() {
            g = b.backward(&g);
        }
        self.stem.backward_weights(x, self.n, &g);
    }

    pub fn params(&mut self) -> Vec<&mut Param<D>> {
        let mut v: Vec<&mut Param<D>> = vec![&mut self.stem.weight];
        for b in &mut self.blocks {
            v.extend(b.params());
        }
        v.push(&mut self.bn.gamma);
        v.push(&mut self.bn.beta);
        v.push(&mut self.dense.weight);
        v.push(&mut self.dense.bias);
        v
    }

    /// Every tensor a model carries from one step to the next besides the optimiser's: the
    /// parameters' values, then batch norm's running statistics. (Gradients are cleared by
    /// each update; the other saved activations are rewritten by each forward pass.)
    pub fn state(&mut self) -> Vec<&mut D::Buf> {
        fn bn<D: Device>(bn: &mut BatchNorm<D>) -> [&mut D::Buf; 4] {
            [&mut bn.gamma.value, &mut bn.beta.value, &mut bn.state.running_mean, &mut bn.state.running_var]
        }
        let mut v: Vec<&mut D::Buf> = vec![&mut self.stem.weight.value];
        for b in &mut self.blocks {
            for n in &mut b.bn {
                v.extend(bn(n));
            }
            v.extend(b.conv.iter_mut().map(|c| &mut c.weight.value));
            v.push(&mut b.shortcut.weight.value);
        }
        v.extend(bn(&mut self.bn));
        v.push(&mut self.dense.weight.value);
        v.push(&mut self.dense.bias.value);
        v
    }

    /// Multiply-adds of one training step per image in the convolutions and the dense layer:
    /// each one's forward pass, its weights' gradient, and its input's gradient (not the stem's,
    /// which nothing needs); each of the three costs the same. The arithmetic a device's speed
    /// is measured against; batch norm, swish and the pool move memory and add few.
    pub fn train_macs_per_image(&self) -> usize {
        let conv = |c: &Conv2d<D>| c.geom.cout * c.geom.kk() * c.geom.p();
        let blocks: usize =
            self.blocks.iter().map(|b| b.conv.iter().chain([&b.shortcut]).map(conv).sum::<usize>()).sum();
        2 * conv(&self.stem) + 3 * (blocks + self.dense.inp * self.dense.out)
    }

    pub fn parameter_count(&mut self) -> usize {
        let dev = self.dev.clone();
        self.params().iter().map(|p| dev.len(&p.value)).sum()
    }
}
