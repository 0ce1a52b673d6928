//! Layers with explicit forward and backward passes over NCHW f32 batches.
//!
//! A layer is built for a fixed input shape (C, H, W); `forward` takes a batch of N such
//! images flattened, caches what `backward` needs, and `backward` takes the gradient of the
//! loss with respect to the output, accumulates parameter gradients and returns the gradient
//! with respect to the input. Initialisation follows Keras: Glorot-uniform weights, zero biases,
//! BN gamma 1 / beta 0.

use crate::rng::Rng;

/// A parameter tensor with its gradient (accumulated by `backward`, cleared by the optimiser).
#[derive(Clone, Debug)]
pub struct Param {
    pub value: Vec<f32>,
    pub grad: Vec<f32>,
    /// Whether weight decay applies (not to BN and biases).
    pub decay: bool,
}

impl Param {
    fn new(value: Vec<f32>, decay: bool) -> Param {
        let grad = vec![0.0; value.len()];
        Param { value, grad, decay }
    }
}

/// Glorot-uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Keras' default).
fn glorot(rng: &mut Rng, n: usize, fan_in: usize, fan_out: usize) -> Vec<f32> {
    let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
    (0..n).map(|_| ((2.0 * rng.f64() - 1.0) * a) as f32).collect()
}

/// `c[m, n] (+)= a[m, k] b[k, n]` with explicit row/column strides (matrixmultiply's sgemm).
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (isize, isize),
    b: &[f32],
    (rsb, csb): (isize, isize),
    c: &mut [f32],
    accumulate: bool,
) {
    // SAFETY: the callers pass slices of at least m*k, k*n and m*n elements laid out with the
    // given strides (checked by the debug asserts), and `c` does not alias `a` or `b`.
    debug_assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            if accumulate { 1.0 } else { 0.0 },
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// 2-D convolution, no bias (a batch norm follows every convolution of the model).
pub struct Conv2d {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub weight: Param,
    /// One per thread's share of the batch: the im2col of the last forward batch and the
    /// GEMM buffers, kept between steps (fresh zeroed buffers cost ~7 % of a training step).
    shares: Vec<Share>,
    n: usize,
}

impl Conv2d {
    pub fn new(rng: &mut Rng, cin: usize, cout: usize, k: usize, stride: usize, (h, w): (usize, usize)) -> Conv2d {
        let pad = k / 2; // "same" padding for odd k, as Keras with stride 1
        let oh = (h + 2 * pad - k) / stride + 1;
        let ow = (w + 2 * pad - k) / stride + 1;
        let fan = cin * k * k;
        let weight = Param::new(glorot(rng, cout * fan, fan, cout * k * k), true);
        Conv2d { cin, cout, k, stride, pad, h, w, oh, ow, weight, shares: Vec::new(), n: 0 }
    }

    /// The output columns `lo..hi` whose input column `ox * stride + kx - pad` is inside the
    /// image, for kernel column `kx` (outside them the im2col entries are padding zeros).
    fn valid_ox(&self, kx: usize) -> (usize, usize) {
        let (s, pad) = (self.stride, self.pad);
        let lo = pad.saturating_sub(kx).div_ceil(s).min(self.ow);
        // ix = ox * s + kx - pad < w  <=>  ox * s < w + pad - kx
        let hi = (self.w + pad).saturating_sub(kx).div_ceil(s).min(self.ow).max(lo);
        (lo, hi)
    }

    /// Writes image `x` into columns `off..off + oh*ow` of `cols`, whose rows are `stride` long.
    /// Row segments are copied whole (the padding is filled separately), which is what makes
    /// im2col cheap next to the GEMM.
    fn im2col(&self, x: &[f32], cols: &mut [f32], stride: usize, off: usize) {
        let (k, s) = (self.k, self.stride);
        for c in 0..self.cin {
            for ky in 0..k {
                for kx in 0..k {
                    let (lo, hi) = self.valid_ox(kx);
                    let row = &mut cols[((c * k + ky) * k + kx) * stride + off..][..self.oh * self.ow];
                    for (oy, dst) in row.chunks_exact_mut(self.ow).enumerate() {
                        let iy = (oy * s + ky) as isize - self.pad as isize;
                        if iy < 0 || iy as usize >= self.h {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = &x[(c * self.h + iy as usize) * self.w..][..self.w];
                        dst[..lo].fill(0.0);
                        dst[hi..].fill(0.0);
                        if lo == hi {
                            continue;
                        }
                        let first = lo * s + kx - self.pad;
                        if s == 1 {
                            dst[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                        } else {
                            for (d, v) in dst[lo..hi].iter_mut().zip(src[first..].iter().step_by(s)) {
                                *d = *v;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adds columns `off..off + oh*ow` of `cols` back onto image gradient `dx`.
    fn col2im(&self, cols: &[f32], stride: usize, off: usize, dx: &mut [f32]) {
        let (k, s) = (self.k, self.stride);
        for c in 0..self.cin {
            for ky in 0..k {
                for kx in 0..k {
                    let (lo, hi) = self.valid_ox(kx);
                    let row = &cols[((c * k + ky) * k + kx) * stride + off..][..self.oh * self.ow];
                    for (oy, g) in row.chunks_exact(self.ow).enumerate() {
                        let iy = (oy * s + ky) as isize - self.pad as isize;
                        if iy < 0 || iy as usize >= self.h || lo == hi {
                            continue;
                        }
                        let dst = &mut dx[(c * self.h + iy as usize) * self.w..][..self.w];
                        let first = lo * s + kx - self.pad;
                        if s == 1 {
                            for (d, v) in dst[first..first + (hi - lo)].iter_mut().zip(&g[lo..hi]) {
                                *d += *v;
                            }
                        } else {
                            for (d, v) in dst[first..].iter_mut().step_by(s).zip(&g[lo..hi]) {
                                *d += *v;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Per thread, one GEMM over its share of the batch: `Y[cout, m*p] = W[cout, kk] cols[kk, m*p]`.
    pub fn forward(&mut self, x: &[f32], n: usize) -> Vec<f32> {
        let p = self.oh * self.ow;
        let (isz, osz) = (self.cin * self.h * self.w, self.cout * p);
        self.n = n;
        let per = n.div_ceil(threads().min(n).max(1));
        let mut shares = std::mem::take(&mut self.shares);
        shares.resize_with(n.div_ceil(per), Share::default);
        let mut y = vec![0.0; n * osz];
        let this = &*self;
        if shares.len() == 1 {
            this.forward_chunk(x, &mut y, &mut shares[0]); // no thread for one share
        } else {
            std::thread::scope(|s| {
                for ((xs, ys), c) in x.chunks(per * isz).zip(y.chunks_mut(per * osz)).zip(shares.iter_mut()) {
                    s.spawn(move || this.forward_chunk(xs, ys, c));
                }
            });
        }
        self.shares = shares;
        y
    }

    fn forward_chunk(&self, x: &[f32], y: &mut [f32], share: &mut Share) {
        let (kk, p) = (self.cin * self.k * self.k, self.oh * self.ow);
        let isz = self.cin * self.h * self.w;
        let m = x.len() / isz;
        let mp = m * p;
        let Share { cols, tmp: yt, .. } = share;
        // Every entry of both buffers is written below (im2col, then a GEMM with beta 0).
        cols.resize(kk * mp, 0.0);
        for i in 0..m {
            self.im2col(&x[i * isz..(i + 1) * isz], cols, mp, i * p);
        }
        yt.resize(self.cout * mp, 0.0);
        gemm(self.cout, kk, mp, &self.weight.value, (kk as isize, 1), cols, (mp as isize, 1), yt, false);
        // [cout, m, p] -> [m, cout, p]
        for co in 0..self.cout {
            for i in 0..m {
                y[(i * self.cout + co) * p..(i * self.cout + co + 1) * p]
                    .copy_from_slice(&yt[co * mp + i * p..co * mp + (i + 1) * p]);
            }
        }
    }

    pub fn backward(&mut self, gy: &[f32]) -> Vec<f32> {
        let p = self.oh * self.ow;
        let (isz, osz) = (self.cin * self.h * self.w, self.cout * p);
        let n = self.n;
        let mut shares = std::mem::take(&mut self.shares);
        let per = n.div_ceil(shares.len().max(1));
        let mut dx = vec![0.0; n * isz];
        let this = &*self;
        let dws: Vec<Vec<f32>> = if shares.len() == 1 {
            vec![this.backward_chunk(gy, &mut dx, &mut shares[0])]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = gy
                    .chunks(per * osz)
                    .zip(dx.chunks_mut(per * isz))
                    .zip(shares.iter_mut())
                    .map(|((g, d), c)| s.spawn(move || this.backward_chunk(g, d, c)))
                    .collect();
                handles.into_iter().map(|h| h.join().expect("conv backward thread")).collect()
            })
        };
        self.shares = shares;
        for dw in dws {
            for (a, b) in self.weight.grad.iter_mut().zip(dw) {
                *a += b;
            }
        }
        dx
    }

    /// One chunk's input gradient (into `dx`) and weight gradient (returned).
    fn backward_chunk(&self, gy: &[f32], dx: &mut [f32], share: &mut Share) -> Vec<f32> {
        let (kk, p) = (self.cin * self.k * self.k, self.oh * self.ow);
        let isz = self.cin * self.h * self.w;
        let m = dx.len() / isz;
        let mp = m * p;
        let Share { cols, tmp: gt, dcols } = share;
        // Every entry of `gt` and `dcols` is written below (copies, a GEMM with beta 0).
        // [m, cout, p] -> [cout, m*p]
        gt.resize(self.cout * mp, 0.0);
        for co in 0..self.cout {
            for i in 0..m {
                gt[co * mp + i * p..co * mp + (i + 1) * p]
                    .copy_from_slice(&gy[(i * self.cout + co) * p..(i * self.cout + co + 1) * p]);
            }
        }
        // dW[cout, kk] = G[cout, m*p] cols^T[m*p, kk]
        let mut dw = vec![0.0; self.cout * kk];
        gemm(self.cout, mp, kk, gt, (mp as isize, 1), cols, (1, mp as isize), &mut dw, false);
        // dcols[kk, m*p] = W^T[kk, cout] G[cout, m*p]
        dcols.resize(kk * mp, 0.0);
        gemm(kk, self.cout, mp, &self.weight.value, (1, kk as isize), gt, (mp as isize, 1), dcols, false);
        for i in 0..m {
            self.col2im(dcols, mp, i * p, &mut dx[i * isz..(i + 1) * isz]);
        }
        dw
    }
}

/// A thread's buffers for its share of a convolution's batch.
#[derive(Clone, Default)]
struct Share {
    /// im2col of the share's images: [cin*k*k, m*oh*ow].
    cols: Vec<f32>,
    /// The GEMM output (forward) or the transposed output gradient (backward): [cout, m*oh*ow].
    tmp: Vec<f32>,
    /// The gradient of `cols`: [cin*k*k, m*oh*ow].
    dcols: Vec<f32>,
}

/// Threads the convolutions split a batch over (1 by default).
static THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// Sets how many threads the convolutions use.
pub fn set_threads(n: usize) {
    THREADS.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
}

fn threads() -> usize {
    THREADS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Batch normalisation over N, H, W per channel (eps 1e-3 as Keras; running statistics with
/// momentum 0.9, not Keras' 0.99, so that the short runs of a search evaluate well).
pub struct BatchNorm {
    pub c: usize,
    pub hw: usize,
    pub gamma: Param,
    pub beta: Param,
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
    pub momentum: f32,
    pub eps: f32,
    xhat: Vec<f32>,
    inv_std: Vec<f32>,
    n: usize,
}

impl BatchNorm {
    pub fn new(c: usize, hw: usize) -> BatchNorm {
        BatchNorm {
            c,
            hw,
            gamma: Param::new(vec![1.0; c], false),
            beta: Param::new(vec![0.0; c], false),
            running_mean: vec![0.0; c],
            running_var: vec![1.0; c],
            momentum: 0.9,
            eps: 1e-3,
            xhat: Vec::new(),
            inv_std: vec![0.0; c],
            n: 0,
        }
    }

    pub fn forward(&mut self, x: &[f32], n: usize, train: bool) -> Vec<f32> {
        let (c, hw) = (self.c, self.hw);
        self.n = n;
        let mut y = vec![0.0; x.len()];
        self.xhat.resize(x.len(), 0.0);
        for ch in 0..c {
            let (mean, var) = if train {
                let (mut s, mut s2) = (0.0f64, 0.0f64);
                for i in 0..n {
                    for &v in &x[(i * c + ch) * hw..(i * c + ch + 1) * hw] {
                        s += v as f64;
                        s2 += (v as f64) * (v as f64);
                    }
                }
                let m = (n * hw) as f64;
                let mean = s / m;
                let var = (s2 / m - mean * mean).max(0.0);
                let mo = self.momentum;
                self.running_mean[ch] = mo * self.running_mean[ch] + (1.0 - mo) * mean as f32;
                self.running_var[ch] = mo * self.running_var[ch] + (1.0 - mo) * var as f32;
                (mean as f32, var as f32)
            } else {
                (self.running_mean[ch], self.running_var[ch])
            };
            let inv = 1.0 / (var + self.eps).sqrt();
            self.inv_std[ch] = inv;
            let (g, b) = (self.gamma.value[ch], self.beta.value[ch]);
            for i in 0..n {
                let r = (i * c + ch) * hw..(i * c + ch + 1) * hw;
                for j in r {
                    let xh = (x[j] - mean) * inv;
                    self.xhat[j] = xh;
                    y[j] = g * xh + b;
                }
            }
        }
        y
    }

    /// Backward of the training-mode forward (batch statistics).
    pub fn backward(&mut self, gy: &[f32]) -> Vec<f32> {
        let (c, hw, n) = (self.c, self.hw, self.n);
        let m = (n * hw) as f32;
        let mut dx = vec![0.0; gy.len()];
        for ch in 0..c {
            let (mut sg, mut sgx) = (0.0f32, 0.0f32);
            for i in 0..n {
                for j in (i * c + ch) * hw..(i * c + ch + 1) * hw {
                    sg += gy[j];
                    sgx += gy[j] * self.xhat[j];
                }
            }
            self.beta.grad[ch] += sg;
            self.gamma.grad[ch] += sgx;
            let k = self.gamma.value[ch] * self.inv_std[ch] / m;
            for i in 0..n {
                for j in (i * c + ch) * hw..(i * c + ch + 1) * hw {
                    dx[j] = k * (m * gy[j] - sg - self.xhat[j] * sgx);
                }
            }
        }
        dx
    }
}

/// Swish `x * sigmoid(x)`.
#[derive(Default)]
pub struct Swish {
    x: Vec<f32>,
}

impl Swish {
    pub fn forward(&mut self, x: &[f32]) -> Vec<f32> {
        self.x = x.to_vec();
        x.iter().map(|&v| v / (1.0 + (-v).exp())).collect()
    }
    pub fn backward(&mut self, gy: &[f32]) -> Vec<f32> {
        gy.iter()
            .zip(&self.x)
            .map(|(&g, &x)| {
                let s = 1.0 / (1.0 + (-x).exp());
                g * (s + x * s * (1.0 - s))
            })
            .collect()
    }
}

/// ReLU.
#[derive(Default)]
pub struct Relu {
    x: Vec<f32>,
}

impl Relu {
    pub fn forward(&mut self, x: &[f32]) -> Vec<f32> {
        self.x = x.to_vec();
        x.iter().map(|&v| v.max(0.0)).collect()
    }
    pub fn backward(&mut self, gy: &[f32]) -> Vec<f32> {
        gy.iter().zip(&self.x).map(|(&g, &x)| if x > 0.0 { g } else { 0.0 }).collect()
    }
}

/// Global average pooling: [N, C, H, W] -> [N, C].
pub struct GlobalAvgPool {
    pub c: usize,
    pub hw: usize,
}

impl GlobalAvgPool {
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        (0..n * self.c).map(|i| x[i * self.hw..(i + 1) * self.hw].iter().sum::<f32>() / self.hw as f32).collect()
    }
    pub fn backward(&self, gy: &[f32]) -> Vec<f32> {
        gy.iter().flat_map(|&g| std::iter::repeat_n(g / self.hw as f32, self.hw)).collect()
    }
}

/// Inverted dropout: kept units are scaled by 1/(1-rate) in training; identity in evaluation.
pub struct Dropout {
    pub rate: f32,
    mask: Vec<f32>,
}

impl Dropout {
    pub fn new(rate: f32) -> Dropout {
        Dropout { rate, mask: Vec::new() }
    }
    pub fn forward(&mut self, x: &[f32], train: bool, rng: &mut Rng) -> Vec<f32> {
        if !train || self.rate == 0.0 {
            self.mask = vec![1.0; x.len()];
            return x.to_vec();
        }
        let keep = 1.0 / (1.0 - self.rate);
        self.mask = (0..x.len()).map(|_| if rng.f64() < self.rate as f64 { 0.0 } else { keep }).collect();
        x.iter().zip(&self.mask).map(|(a, m)| a * m).collect()
    }
    pub fn backward(&self, gy: &[f32]) -> Vec<f32> {
        gy.iter().zip(&self.mask).map(|(g, m)| g * m).collect()
    }
}

/// Fully connected layer `y = x W^T + b`.
pub struct Dense {
    pub inp: usize,
    pub out: usize,
    pub weight: Param,
    pub bias: Param,
    x: Vec<f32>,
    n: usize,
}

impl Dense {
    pub fn new(rng: &mut Rng, inp: usize, out: usize) -> Dense {
        Dense {
            inp,
            out,
            weight: Param::new(glorot(rng, inp * out, inp, out), true),
            bias: Param::new(vec![0.0; out], false),
            x: Vec::new(),
            n: 0,
        }
    }
    pub fn forward(&mut self, x: &[f32], n: usize) -> Vec<f32> {
        self.x = x.to_vec();
        self.n = n;
        let mut y = vec![0.0; n * self.out];
        for i in 0..n {
            y[i * self.out..(i + 1) * self.out].copy_from_slice(&self.bias.value);
        }
        // y[n, out] += x[n, inp] W^T[inp, out]
        gemm(
            n,
            self.inp,
            self.out,
            x,
            (self.inp as isize, 1),
            &self.weight.value,
            (1, self.inp as isize),
            &mut y,
            true,
        );
        y
    }
    pub fn backward(&mut self, gy: &[f32]) -> Vec<f32> {
        let n = self.n;
        for i in 0..n {
            for (b, g) in self.bias.grad.iter_mut().zip(&gy[i * self.out..(i + 1) * self.out]) {
                *b += g;
            }
        }
        // dW[out, inp] += gy^T[out, n] x[n, inp]
        gemm(
            self.out,
            n,
            self.inp,
            gy,
            (1, self.out as isize),
            &self.x,
            (self.inp as isize, 1),
            &mut self.weight.grad,
            true,
        );
        // dx[n, inp] = gy[n, out] W[out, inp]
        let mut dx = vec![0.0; n * self.inp];
        gemm(
            n,
            self.out,
            self.inp,
            gy,
            (self.out as isize, 1),
            &self.weight.value,
            (self.inp as isize, 1),
            &mut dx,
            false,
        );
        dx
    }
}
