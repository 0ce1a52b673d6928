//! The search's surrogate: the predecessor's small ResNet9v2 (SPEC section 5), with a width
//! multiplier. conv 8 stem -> pre-activation residual block 16 -> block 32 -> BN-swish ->
//! global average pool -> dropout 0.5 -> dense; each block is BN-swish-conv(stride 2),
//! BN-swish-conv, BN-swish-conv plus a 1x1 stride-2 shortcut from the block's input.

use crate::layers::{BatchNorm, Conv2d, Dense, Dropout, GlobalAvgPool, Param, Swish};
use crate::rng::Rng;

/// One pre-activation residual block.
struct Block {
    bn: [BatchNorm; 3],
    act: [Swish; 3],
    conv: [Conv2d; 3],
    shortcut: Conv2d,
}

impl Block {
    fn new(rng: &mut Rng, cin: usize, cout: usize, (h, w): (usize, usize)) -> Block {
        let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
        Block {
            bn: [BatchNorm::new(cin, h * w), BatchNorm::new(cout, oh * ow), BatchNorm::new(cout, oh * ow)],
            act: Default::default(),
            conv: [
                Conv2d::new(rng, cin, cout, 3, 2, (h, w)),
                Conv2d::new(rng, cout, cout, 3, 1, (oh, ow)),
                Conv2d::new(rng, cout, cout, 3, 1, (oh, ow)),
            ],
            shortcut: Conv2d::new(rng, cin, cout, 1, 2, (h, w)),
        }
    }

    fn forward(&mut self, x: &[f32], n: usize, train: bool) -> Vec<f32> {
        let mut y = x.to_vec();
        for i in 0..3 {
            y = self.bn[i].forward(&y, n, train);
            y = self.act[i].forward(&y);
            y = self.conv[i].forward(&y, n);
        }
        let s = self.shortcut.forward(x, n);
        y.iter().zip(&s).map(|(a, b)| a + b).collect()
    }

    fn backward(&mut self, gy: &[f32]) -> Vec<f32> {
        let mut g = gy.to_vec();
        for i in (0..3).rev() {
            g = self.conv[i].backward(&g);
            g = self.act[i].backward(&g);
            g = self.bn[i].backward(&g);
        }
        let gs = self.shortcut.backward(gy);
        g.iter().zip(&gs).map(|(a, b)| a + b).collect()
    }

    fn params(&mut self) -> Vec<&mut Param> {
        let mut v: Vec<&mut Param> = Vec::new();
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

/// The surrogate network.
pub struct ResNet9v2 {
    stem: Conv2d,
    blocks: Vec<Block>,
    bn: BatchNorm,
    act: Swish,
    pool: GlobalAvgPool,
    dropout: Dropout,
    dense: Dense,
    pub classes: usize,
    /// Input shape (channels, height, width).
    pub input: (usize, usize, usize),
}

impl ResNet9v2 {
    /// `width` multiplies the channel counts 8, 16, 32.
    pub fn new(seed: u64, (c, h, w): (usize, usize, usize), classes: usize, width: usize) -> ResNet9v2 {
        let mut rng = Rng::new(seed);
        let (c1, c2, c3) = (8 * width, 16 * width, 32 * width);
        let stem = Conv2d::new(&mut rng, c, c1, 3, 1, (h, w));
        let b1 = Block::new(&mut rng, c1, c2, (h, w));
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        let b2 = Block::new(&mut rng, c2, c3, (h2, w2));
        let (h3, w3) = (h2.div_ceil(2), w2.div_ceil(2));
        ResNet9v2 {
            stem,
            blocks: vec![b1, b2],
            bn: BatchNorm::new(c3, h3 * w3),
            act: Swish::default(),
            pool: GlobalAvgPool { c: c3, hw: h3 * w3 },
            dropout: Dropout::new(0.5),
            dense: Dense::new(&mut rng, c3, classes),
            classes,
            input: (c, h, w),
        }
    }

    /// Logits `[n, classes]` of a batch `[n, C, H, W]`.
    pub fn forward(&mut self, x: &[f32], n: usize, train: bool, rng: &mut Rng) -> Vec<f32> {
        let mut y = self.stem.forward(x, n);
        for b in &mut self.blocks {
            y = b.forward(&y, n, train);
        }
        y = self.bn.forward(&y, n, train);
        y = self.act.forward(&y);
        y = self.pool.forward(&y, n);
        y = self.dropout.forward(&y, train, rng);
        self.dense.forward(&y, n)
    }

    /// Back-propagates the gradient of the loss with respect to the logits.
    pub fn backward(&mut self, dlogits: &[f32]) {
        let mut g = self.dense.backward(dlogits);
        g = self.dropout.backward(&g);
        g = self.pool.backward(&g);
        g = self.act.backward(&g);
        g = self.bn.backward(&g);
        for b in self.blocks.iter_mut().rev() {
            g = b.backward(&g);
        }
        self.stem.backward(&g);
    }

    pub fn params(&mut self) -> Vec<&mut Param> {
        let mut v: Vec<&mut Param> = vec![&mut self.stem.weight];
        for b in &mut self.blocks {
            v.extend(b.params());
        }
        v.push(&mut self.bn.gamma);
        v.push(&mut self.bn.beta);
        v.push(&mut self.dense.weight);
        v.push(&mut self.dense.bias);
        v
    }

    pub fn parameter_count(&mut self) -> usize {
        self.params().iter().map(|p| p.value.len()).sum()
    }
}
