//! The CPU device: buffers are `Vec<f32>`; convolutions are im2col + GEMM (`gemm-f32`)
//! over groups of images small enough that the im2col matrix stays in cache, split over
//! threads by image; batch norm and swish are one fused, vectorisable pass per channel.

use crate::device::{BnGeom, BnState, ConvGeom, Device, Tensors, Update};
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The CPU. Its thread count is process-wide ([`set_threads`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

static THREADS: AtomicUsize = AtomicUsize::new(1);

/// Sets how many threads the CPU device splits its work over (1 by default).
pub fn set_threads(n: usize) {
    THREADS.store(n.max(1), Ordering::Relaxed);
}

fn threads() -> usize {
    THREADS.load(Ordering::Relaxed)
}

/// Keeps freed activation buffers in the heap instead of returning them to the kernel: glibc
/// maps allocations over its (adaptive) threshold with mmap and unmaps them on free, so every
/// step page-faulted its multi-megabyte activations in afresh (keeping them: +7 % images/s on
/// one thread, +35 % on two, where the faults serialised the threads). Called once
/// per process by the training loop; a no-op outside glibc.
pub fn keep_freed_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters; it is called before the training
        // allocates, once.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        }
    });
}

/// A buffer that several threads write, each to a part no other thread touches.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: used through `part`, `fresh` and `at`, whose callers touch disjoint ranges from
// each thread.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    fn new(v: &mut [f32]) -> Shared {
        Shared(v.as_mut_ptr())
    }
    /// # Safety
    /// `off..off + len` is inside the buffer, and no other live reference covers it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn part(&self, off: usize, len: usize) -> &mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(off), len) }
    }
    /// [`Shared::part`] of a buffer being filled for the first time (see [`written`]).
    ///
    /// # Safety
    /// As [`Shared::part`].
    #[allow(clippy::mut_from_ref)]
    unsafe fn fresh(&self, off: usize, len: usize) -> &mut [MaybeUninit<f32>] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(off).cast(), len) }
    }
    fn at(&self, off: usize) -> *mut f32 {
        self.0.wrapping_add(off)
    }
}

/// Runs `f` on up to `threads()` contiguous parts of `0..n` (the first on the calling thread,
/// the others on [`crate::pool`]'s workers) and returns their results in order.
fn parallel<R: Send>(n: usize, f: impl Fn(Range<usize>) -> R + Sync) -> Vec<R> {
    let parts = threads().min(n).max(1);
    if parts == 1 {
        return vec![f(0..n)];
    }
    let per = n.div_ceil(parts);
    let ranges: Vec<Range<usize>> = (0..n).step_by(per).map(|s| s..(s + per).min(n)).collect();
    let out: Vec<std::sync::Mutex<Option<R>>> = ranges.iter().map(|_| Default::default()).collect();
    crate::pool::run(ranges.len(), &|i| {
        let r = f(ranges[i].clone());
        *out[i].lock().unwrap() = Some(r);
    });
    out.into_iter().map(|r| r.into_inner().unwrap().expect("every part ran")).collect()
}

/// `c (+)= a b` for `m x k` and `k x n` matrices given by pointers and (row, column) strides.
///
/// # Safety
/// Every element the strides address lies in its allocation, `c` aliases neither `a` nor `b`,
/// and no other thread touches the addressed part of `c`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
    (m, k, n): (usize, usize, usize),
    a: *const f32,
    (rsa, csa): (usize, usize),
    b: *const f32,
    (rsb, csb): (usize, usize),
    c: *mut f32,
    rsc: usize,
    accumulate: bool,
) {
    // gemm-f32 computes dst = alpha dst + beta lhs rhs, strides given (column, row), and
    // prefers a column-major dst: the row-major c is computed as c^T = b^T a^T (what the
    // `gemm` crate's generic wrapper does, without its f64 and complex kernels).
    unsafe {
        gemm_f32::gemm::f32::get_gemm_fn()(
            n,
            m,
            k,
            c,
            rsc as isize,
            1,
            accumulate,
            b,
            rsb as isize,
            csb as isize,
            a,
            rsa as isize,
            csa as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm_common::Parallelism::None,
        )
    }
}

/// A buffer of `n` floats that `fill` writes completely (through the pointer it is given),
/// without zeroing it first: zeroing the outputs of GEMMs and element-wise passes cost ~8 % of
/// a training step.
///
/// # Safety
/// `fill` writes every one of the `n` elements.
unsafe fn written(n: usize, fill: impl FnOnce(Shared)) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    fill(Shared(v.as_mut_ptr()));
    // SAFETY: capacity n, all n elements initialised by `fill` (the caller's contract).
    unsafe { v.set_len(n) };
    v
}

/// Images per im2col group: about 128K floats (512 KB) of im2col matrix, which stays in L2.
fn group(g: &ConvGeom) -> usize {
    ((1 << 17) / (g.kk() * g.p()).max(1)).max(1)
}

/// Leading dimension of an im2col matrix with `cols` columns: a multiple of 16 floats that is
/// not a multiple of 256, so consecutive rows do not map to the same cache sets (a 128 KB row
/// stride halved the GEMMs' speed).
fn lead(cols: usize) -> usize {
    cols.next_multiple_of(16) + 16
}

/// Kernel column `kx`'s valid output columns `lo..hi`: those whose input column
/// `ox * stride + kx - pad` is inside the image (the rest are padding zeros).
fn valid_ox(g: &ConvGeom, kx: usize) -> (usize, usize) {
    let (s, pad) = (g.stride, g.pad);
    let lo = pad.saturating_sub(kx).div_ceil(s).min(g.ow);
    let hi = (g.w + pad).saturating_sub(kx).div_ceil(s).min(g.ow).max(lo);
    (lo, hi)
}

/// Calls `f(im2col row, channel, ky, kx, image)` for every plane of images `0..m`.
fn planes(g: &ConvGeom, m: usize, mut f: impl FnMut(usize, usize, usize, usize, usize)) {
    for c in 0..g.cin {
        for ky in 0..g.k {
            for kx in 0..g.k {
                for j in 0..m {
                    f((c * g.k + ky) * g.k + kx, c, ky, kx, j);
                }
            }
        }
    }
}

/// A stride-1 "same" convolution plane as one shifted copy: output pixel `t` (flat) reads
/// input pixel `t + shift`, valid for output rows `rows` and columns `cols`; the flat range
/// `flat` is where the shifted index stays inside the image.
struct Shift {
    shift: isize,
    rows: (usize, usize),
    cols: (usize, usize),
    flat: (usize, usize),
}

fn shift_plane(g: &ConvGeom, ky: usize, kx: usize) -> Option<Shift> {
    if g.stride != 1 || g.oh != g.h || g.ow != g.w {
        return None;
    }
    let (h, w) = (g.h as isize, g.w as isize);
    let (dy, dx) = (ky as isize - g.pad as isize, kx as isize - g.pad as isize);
    let shift = dy * w + dx;
    let (r0, r1) = ((-dy).clamp(0, h), (h - dy).clamp(0, h));
    let r1 = r1.max(r0);
    let (c0, c1) = ((-dx).clamp(0, w), (w - dx).clamp(0, w));
    let t0 = (r0 * w).max(-shift).min(r1 * w);
    let t1 = (r1 * w).min(h * w - shift).max(t0);
    let u = |v: isize| v as usize;
    Some(Shift { shift, rows: (u(r0), u(r1)), cols: (u(c0), u(c1.max(c0))), flat: (u(t0), u(t1)) })
}

/// Zeroes the invalid columns of the valid rows of a stride-1 plane.
/// Column by column: a row-wise loop over one or two elements becomes a memset call each.
fn zero_columns(d: &mut [f32], w: usize, sh: &Shift) {
    for ox in (0..sh.cols.0).chain(sh.cols.1..w) {
        for v in d[sh.rows.0 * w + ox..sh.rows.1 * w].iter_mut().step_by(w) {
            *v = 0.0;
        }
    }
}

/// im2col of images `i0..i0 + m` of `x` (`[cin, n, h*w]`) into `cols` (`[cin*k*k, m*p]`,
/// rows `ld` apart). A stride-1 plane is one shifted copy plus its border; others go row by row.
fn im2col(g: &ConvGeom, x: &[f32], n: usize, i0: usize, m: usize, cols: &mut [f32], ld: usize) {
    let (p, hw) = (g.p(), g.h * g.w);
    planes(g, m, |row, c, ky, kx, j| {
        let src = &x[(c * n + i0 + j) * hw..][..hw];
        let dst = &mut cols[row * ld + j * p..][..p];
        if let Some(sh) = shift_plane(g, ky, kx) {
            let (t0, t1) = sh.flat;
            dst[..t0].fill(0.0);
            dst[t1..].fill(0.0);
            if t1 > t0 {
                let s0 = (t0 as isize + sh.shift) as usize;
                dst[t0..t1].copy_from_slice(&src[s0..s0 + (t1 - t0)]);
            }
            zero_columns(dst, g.w, &sh);
            return;
        }
        let (lo, hi) = valid_ox(g, kx);
        for (oy, d) in dst.chunks_exact_mut(g.ow).enumerate() {
            let iy = (oy * g.stride + ky).checked_sub(g.pad).filter(|&iy| iy < g.h);
            let Some(iy) = iy else {
                d.fill(0.0);
                continue;
            };
            let (head, tail) = d.split_at_mut(hi);
            for v in head[..lo].iter_mut().chain(tail) {
                *v = 0.0;
            }
            let srow = &src[iy * g.w..][..g.w];
            let first = lo * g.stride + kx - g.pad;
            gather(&mut d[lo..hi], &srow[first..], g.stride);
        }
    });
}

/// `d[o] = src[o * stride]`; stride 2 (every stride-2 convolution of the model) reads pairs,
/// which the compiler turns into a loop without bounds checks.
fn gather(d: &mut [f32], src: &[f32], stride: usize) {
    if d.is_empty() {
        return;
    }
    if stride == 2 {
        let (last, body) = d.split_last_mut().expect("not empty");
        for (v, pair) in body.iter_mut().zip(src.chunks_exact(2)) {
            *v = pair[0];
        }
        *last = src[2 * body.len()];
        return;
    }
    for (v, x) in d.iter_mut().zip(src.iter().step_by(stride)) {
        *v = *x;
    }
}

/// Adds `cols` (the gradient of an im2col matrix of images `i0..i0 + m`, whose padding
/// entries it zeroes first) back onto `dx`.
///
/// # Safety
/// `dx` is `[cin, n, h*w]` and no other thread writes images `i0..i0 + m` of it.
unsafe fn col2im(g: &ConvGeom, cols: &mut [f32], ld: usize, n: usize, i0: usize, m: usize, dx: Shared) {
    let (p, hw) = (g.p(), g.h * g.w);
    planes(g, m, |row, c, ky, kx, j| {
        let src = &mut cols[row * ld + j * p..][..p];
        // SAFETY: one image plane of this thread's images (the function's contract).
        let dst = unsafe { dx.part((c * n + i0 + j) * hw, hw) };
        if let Some(sh) = shift_plane(g, ky, kx) {
            zero_columns(src, g.w, &sh);
            let (t0, t1) = sh.flat;
            if t1 > t0 {
                let s0 = (t0 as isize + sh.shift) as usize;
                for (d, v) in dst[s0..s0 + (t1 - t0)].iter_mut().zip(&src[t0..t1]) {
                    *d += *v;
                }
            }
            return;
        }
        let (lo, hi) = valid_ox(g, kx);
        for (oy, d) in src.chunks_exact(g.ow).enumerate() {
            let iy = (oy * g.stride + ky).checked_sub(g.pad).filter(|&iy| iy < g.h);
            let Some(iy) = iy else { continue };
            let drow = &mut dst[iy * g.w..][..g.w];
            let first = (lo * g.stride + kx).wrapping_sub(g.pad);
            for (o, v) in d[lo..hi].iter().enumerate() {
                drow[first + o * g.stride] += *v;
            }
        }
    });
}

/// `e^x` to ~2 ulp without a libm call, branch-free so that loops over it vectorise:
/// `2^n e^r` with `n = round(x / ln 2)` and a degree-6 Taylor polynomial on |r| <= ln2 / 2.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 12582912.0) - 12582912.0; // round to nearest
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let q = 1.0 / 720.0;
    let q = q * r + 1.0 / 120.0;
    let q = q * r + 1.0 / 24.0;
    let q = q * r + 1.0 / 6.0;
    let q = q * r + 0.5;
    let q = q * r + 1.0;
    let q = q * r + 1.0;
    q * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

#[inline(always)]
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + exp(-z))
}

/// (sum a, sum a*b) with f32 lanes folded into f64 every 512 elements (vectorisable, and
/// accurate over the ~100k elements of a channel).
#[inline(always)]
fn sums(a: &[f32], b: &[f32]) -> (f64, f64) {
    let (mut s, mut sab) = (0.0f64, 0.0f64);
    for (ca, cb) in a.chunks(512).zip(b.chunks(512)) {
        let (mut l, mut lab) = ([0.0f32; 8], [0.0f32; 8]);
        let (ia, ib) = (ca.chunks_exact(8), cb.chunks_exact(8));
        let (ra, rb) = (ia.remainder(), ib.remainder());
        for (va, vb) in ia.zip(ib) {
            for t in 0..8 {
                l[t] += va[t];
                lab[t] += va[t] * vb[t];
            }
        }
        for (&x, &y) in ra.iter().zip(rb) {
            l[0] += x;
            lab[0] += x * y;
        }
        s += l.iter().map(|&v| v as f64).sum::<f64>();
        sab += lab.iter().map(|&v| v as f64).sum::<f64>();
    }
    (s, sab)
}

/// Defines `fn name(args) -> R` that runs `body` (an `#[inline(always)]` function of the same
/// arguments) compiled for AVX2 when the processor has it. The crate is built for baseline
/// x86-64, whose vectors are 4 wide; batch norm and swish vectorise 8 wide with AVX2.
macro_rules! wide {
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? = $body:ident;) => {
        $(#[$m])*
        fn $name($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($a: $t),*) $(-> $r)? {
                    $body($($a),*)
                }
                // SAFETY: the processor has AVX2 (checked just above).
                return unsafe { avx2($($a),*) };
            }
            $body($($a),*)
        }
    };
}

/// One channel's batch-norm constants: `z = gamma * (x - mean) * inv + beta`, then swish.
#[derive(Clone, Copy)]
struct Affine {
    mean: f32,
    inv: f32,
    gamma: f32,
    beta: f32,
    swish: bool,
}

wide! {
    /// Mean and (biased) variance of one channel.
    fn mean_var(x: &[f32]) -> (f32, f32) = mean_var_body;
}
#[inline(always)]
fn mean_var_body(x: &[f32]) -> (f32, f32) {
    let (s1, s2) = sums(x, x);
    let mean = s1 / x.len() as f64;
    (mean as f32, (s2 / x.len() as f64 - mean * mean).max(0.0) as f32)
}

wide! {
    /// Training forward of one channel; keeps `xhat` and (with swish) `sig` for backward.
    fn bn_train(a: Affine, x: &[f32], xhat: &mut [f32], sig: &mut [f32], y: &mut [MaybeUninit<f32>]) = bn_train_body;
}
#[inline(always)]
fn bn_train_body(a: Affine, x: &[f32], xhat: &mut [f32], sig: &mut [f32], y: &mut [MaybeUninit<f32>]) {
    for (xh, &x) in xhat.iter_mut().zip(x) {
        *xh = (x - a.mean) * a.inv;
    }
    if a.swish {
        for ((y, s), &xh) in y.iter_mut().zip(sig.iter_mut()).zip(xhat.iter()) {
            let z = a.gamma * xh + a.beta;
            *s = sigmoid(z);
            y.write(z * *s);
        }
    } else {
        for (y, &xh) in y.iter_mut().zip(xhat.iter()) {
            y.write(a.gamma * xh + a.beta);
        }
    }
}

wide! {
    /// Evaluation forward of one channel (running statistics; nothing kept).
    fn bn_eval(a: Affine, x: &[f32], y: &mut [MaybeUninit<f32>]) = bn_eval_body;
}
#[inline(always)]
fn bn_eval_body(a: Affine, x: &[f32], y: &mut [MaybeUninit<f32>]) {
    for (y, &x) in y.iter_mut().zip(x) {
        let z = a.gamma * ((x - a.mean) * a.inv) + a.beta;
        y.write(if a.swish { z * sigmoid(z) } else { z });
    }
}

wide! {
    /// Backward of one channel into `dx`; returns (sum dL/dz, sum dL/dz * xhat), the gradients
    /// of beta and gamma.
    fn bn_back(a: Affine, gy: &[f32], xhat: &[f32], sig: &[f32], dx: &mut [MaybeUninit<f32>]) -> (f64, f64)
        = bn_back_body;
}
#[inline(always)]
fn bn_back_body(a: Affine, gy: &[f32], xhat: &[f32], sig: &[f32], dx: &mut [MaybeUninit<f32>]) -> (f64, f64) {
    if a.swish {
        for (((d, &gy), &s), &xh) in dx.iter_mut().zip(gy).zip(sig).zip(xhat) {
            let z = a.gamma * xh + a.beta;
            d.write(gy * (s + z * s * (1.0 - s)));
        }
    } else {
        for (d, &gy) in dx.iter_mut().zip(gy) {
            d.write(gy);
        }
    }
    // SAFETY: every element was written just above (the zips cover dx: all have its length).
    let dz: &mut [f32] = unsafe { &mut *(dx as *mut [MaybeUninit<f32>] as *mut [f32]) };
    let (sg, sgx) = sums(dz, xhat);
    let m = dz.len() as f32;
    let k = a.gamma * a.inv / m;
    let (sg32, sgx32) = (sg as f32, sgx as f32);
    for (d, &xh) in dz.iter_mut().zip(xhat) {
        *d = k * (m * *d - sg32 - xh * sgx32);
    }
    (sg, sgx)
}

impl Device for Cpu {
    type Buf = Vec<f32>;
    const HOST: bool = true;

    fn name(&self) -> String {
        "cpu".into()
    }
    fn hits(&self, logits: &Vec<f32>, n: usize, classes: usize, labels: &[u32], stats: &mut Vec<f32>, slot: usize) {
        let hits = logits[..n * classes]
            .chunks(classes)
            .zip(labels)
            .filter(|(row, l)| {
                let first_max =
                    row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
                first_max.0 == **l as usize
            })
            .count();
        stats[slot] += hits as f32;
    }

    fn zeros(&self, n: usize) -> Vec<f32> {
        vec![0.0; n]
    }
    fn upload(&self, host: &[f32]) -> Vec<f32> {
        host.to_vec()
    }
    fn download(&self, buf: &Vec<f32>) -> Vec<f32> {
        buf.clone()
    }
    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }
    fn clear(&self, buf: &mut Vec<f32>) {
        buf.fill(0.0);
    }
    fn upload_images(&self, host: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
        if c == 1 {
            return host[..n * hw].to_vec(); // [n, 1, hw] is [1, n, hw]
        }
        let mut out = vec![0.0; c * n * hw];
        for i in 0..n {
            for ch in 0..c {
                out[(ch * n + i) * hw..][..hw].copy_from_slice(&host[(i * c + ch) * hw..][..hw]);
            }
        }
        out
    }

    fn conv_forward(&self, g: &ConvGeom, n: usize, w: &Vec<f32>, x: &Vec<f32>) -> Vec<f32> {
        let (kk, p) = (g.kk(), g.p());
        assert!(w.len() == g.cout * kk && x.len() == g.cin * n * g.h * g.w, "conv_forward: shapes");
        let size = group(g);
        let conv = |out: Shared| {
            parallel(n, |r| {
                let mut cols = Vec::new();
                for i0 in r.clone().step_by(size) {
                    let m = size.min(r.end - i0);
                    let ld = lead(m * p);
                    cols.resize(kk * ld, 0.0);
                    im2col(g, x, n, i0, m, &mut cols, ld);
                    // SAFETY: y is [cout, n*p]; this writes columns i0*p..(i0+m)*p of each row,
                    // which belong to this thread's images only.
                    unsafe {
                        let y0 = out.at(i0 * p);
                        gemm((g.cout, kk, m * p), w.as_ptr(), (kk, 1), cols.as_ptr(), (ld, 1), y0, n * p, false)
                    };
                }
            });
        };
        // SAFETY: the threads' groups cover all n images, and each GEMM (beta 0) writes every
        // row of its images' columns.
        unsafe { written(g.cout * n * p, conv) }
    }

    fn conv_backward(
        &self,
        g: &ConvGeom,
        n: usize,
        w: &Vec<f32>,
        x: &Vec<f32>,
        gy: &Vec<f32>,
        dw: &mut Vec<f32>,
        want_dx: bool,
    ) -> Option<Vec<f32>> {
        let (kk, p) = (g.kk(), g.p());
        assert!(gy.len() == g.cout * n * p && dw.len() == g.cout * kk, "conv_backward: shapes");
        let (size, hw) = (group(g), g.h * g.w);
        let mut dws = Vec::new();
        let backward = |dxs: Shared| {
            dws = parallel(n, |r| {
                let mut dw = vec![0.0f32; g.cout * kk];
                let (mut cols, mut dcols) = (Vec::new(), Vec::new());
                for i0 in r.clone().step_by(size) {
                    let m = size.min(r.end - i0);
                    let ld = lead(m * p);
                    cols.resize(kk * ld, 0.0);
                    im2col(g, x, n, i0, m, &mut cols, ld);
                    let gy0 = gy[i0 * p..].as_ptr();
                    // SAFETY: dw is this thread's; gy's rows are n*p long and this reads m*p of each.
                    // dW[cout, kk] += G[cout, m*p] cols[kk, m*p]^T
                    unsafe {
                        gemm((g.cout, m * p, kk), gy0, (n * p, 1), cols.as_ptr(), (1, ld), dw.as_mut_ptr(), kk, true)
                    };
                    if want_dx {
                        dcols.resize(kk * ld, 0.0);
                        // SAFETY: dcols is this thread's [kk, ld] buffer.
                        // dcols[kk, m*p] = W[cout, kk]^T G[cout, m*p]
                        unsafe {
                            gemm(
                                (kk, g.cout, m * p),
                                w.as_ptr(),
                                (1, kk),
                                gy0,
                                (n * p, 1),
                                dcols.as_mut_ptr(),
                                ld,
                                false,
                            )
                        };
                        for c in 0..g.cin {
                            // SAFETY: images i0..i0+m of channel c are this thread's.
                            for v in unsafe { dxs.fresh((c * n + i0) * hw, m * hw) } {
                                v.write(0.0);
                            }
                        }
                        // SAFETY: images i0..i0+m are this thread's, and zeroed just above.
                        unsafe { col2im(g, &mut dcols, ld, n, i0, m, dxs) };
                    }
                }
                dw
            });
        };
        // SAFETY: with want_dx, the threads' groups cover all n images, and each zeroes its
        // images in every channel before adding into them.
        let dx = unsafe { written(if want_dx { g.cin * n * hw } else { 0 }, backward) };
        for part in dws {
            for (a, b) in dw.iter_mut().zip(part) {
                *a += b;
            }
        }
        want_dx.then_some(dx)
    }

    fn bn_forward(
        &self,
        g: &BnGeom,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        s: &mut BnState<Vec<f32>>,
        train: bool,
    ) -> Vec<f32> {
        let (c, len) = (g.c, g.len);
        assert_eq!(x.len(), c * len, "bn_forward: shape");
        let stats: Vec<(f32, f32)> = if train {
            let per = parallel(c, |r| r.map(|ch| mean_var(&x[ch * len..][..len])).collect::<Vec<_>>());
            let stats: Vec<(f32, f32)> = per.concat();
            for (ch, &(mean, var)) in stats.iter().enumerate() {
                let mo = g.momentum;
                s.running_mean[ch] = mo * s.running_mean[ch] + (1.0 - mo) * mean;
                s.running_var[ch] = mo * s.running_var[ch] + (1.0 - mo) * var;
            }
            s.xhat.resize(c * len, 0.0);
            s.sig.resize(if g.swish { c * len } else { 0 }, 0.0);
            stats
        } else {
            s.running_mean.iter().zip(&s.running_var).map(|(&m, &v)| (m, v)).collect()
        };
        s.inv_std = stats.iter().map(|&(_, v)| 1.0 / (v + g.eps).sqrt()).collect();
        let (xh, sg) = (Shared::new(&mut s.xhat), Shared::new(&mut s.sig));
        let inv = &s.inv_std;
        let normalise = |ys: Shared| {
            parallel(c, |r| {
                for ch in r {
                    let a =
                        Affine { mean: stats[ch].0, inv: inv[ch], gamma: gamma[ch], beta: beta[ch], swish: g.swish };
                    let xs = &x[ch * len..][..len];
                    // SAFETY: channel ch of each buffer; channels are split between threads.
                    let y = unsafe { ys.fresh(ch * len, len) };
                    if train {
                        let xhat = unsafe { xh.part(ch * len, len) };
                        let sig = if g.swish { unsafe { sg.part(ch * len, len) } } else { &mut [] };
                        bn_train(a, xs, xhat, sig, y);
                    } else {
                        bn_eval(a, xs, y);
                    }
                }
            });
        };
        // SAFETY: the threads cover all channels and write every element of theirs.
        unsafe { written(c * len, normalise) }
    }

    fn bn_backward(
        &self,
        g: &BnGeom,
        gy: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        s: &BnState<Vec<f32>>,
        dgamma: &mut Vec<f32>,
        dbeta: &mut Vec<f32>,
    ) -> Vec<f32> {
        let (c, len) = (g.c, g.len);
        assert!(gy.len() == c * len && s.xhat.len() == c * len, "bn_backward: shapes");
        let mut sums_per = Vec::new();
        let backward = |dxs: Shared| {
            sums_per = parallel(c, |r| {
                r.map(|ch| {
                    let a = Affine { mean: 0.0, inv: s.inv_std[ch], gamma: gamma[ch], beta: beta[ch], swish: g.swish };
                    let sig = if g.swish { &s.sig[ch * len..][..len] } else { &[] };
                    // SAFETY: channel ch of dx; channels are split between threads.
                    let dx = unsafe { dxs.fresh(ch * len, len) };
                    bn_back(a, &gy[ch * len..][..len], &s.xhat[ch * len..][..len], sig, dx)
                })
                .collect::<Vec<_>>()
            });
        };
        // SAFETY: the threads cover all channels and write every element of theirs.
        let dx = unsafe { written(c * len, backward) };
        for (ch, (sg, sgx)) in sums_per.concat().into_iter().enumerate() {
            dbeta[ch] += sg as f32;
            dgamma[ch] += sgx as f32;
        }
        dx
    }

    fn add_assign(&self, a: &mut Vec<f32>, b: &Vec<f32>) {
        assert_eq!(a.len(), b.len(), "add_assign: lengths");
        for (a, b) in a.iter_mut().zip(b) {
            *a += b;
        }
    }
    fn mul(&self, a: &Vec<f32>, b: &Vec<f32>) -> Vec<f32> {
        assert_eq!(a.len(), b.len(), "mul: lengths");
        a.iter().zip(b).map(|(a, b)| a * b).collect()
    }
    fn pool_forward(&self, c: usize, n: usize, hw: usize, x: &Vec<f32>) -> Vec<f32> {
        let mut y = vec![0.0; n * c];
        for ch in 0..c {
            for i in 0..n {
                y[i * c + ch] = x[(ch * n + i) * hw..][..hw].iter().sum::<f32>() / hw as f32;
            }
        }
        y
    }
    fn pool_backward(&self, c: usize, n: usize, hw: usize, gy: &Vec<f32>) -> Vec<f32> {
        let mut dx = vec![0.0; c * n * hw];
        for ch in 0..c {
            for i in 0..n {
                dx[(ch * n + i) * hw..][..hw].fill(gy[i * c + ch] / hw as f32);
            }
        }
        dx
    }
    fn dense_forward(&self, n: usize, inp: usize, out: usize, x: &Vec<f32>, w: &Vec<f32>, b: &Vec<f32>) -> Vec<f32> {
        assert!(x.len() == n * inp && w.len() == out * inp && b.len() == out, "dense_forward: shapes");
        let mut y: Vec<f32> = b.iter().copied().cycle().take(n * out).collect();
        // SAFETY: shapes checked above; y is local.
        unsafe { gemm((n, inp, out), x.as_ptr(), (inp, 1), w.as_ptr(), (1, inp), y.as_mut_ptr(), out, true) };
        y
    }
    fn dense_backward(
        &self,
        n: usize,
        inp: usize,
        out: usize,
        x: &Vec<f32>,
        w: &Vec<f32>,
        gy: &Vec<f32>,
        dw: &mut Vec<f32>,
        db: &mut Vec<f32>,
    ) -> Vec<f32> {
        assert!(gy.len() == n * out && dw.len() == out * inp && db.len() == out, "dense_backward: shapes");
        for row in gy.chunks(out) {
            for (b, g) in db.iter_mut().zip(row) {
                *b += g;
            }
        }
        let mut dx = vec![0.0; n * inp];
        // SAFETY: shapes checked above; dw and dx are exclusively borrowed.
        unsafe {
            // dW[out, inp] += gy^T[out, n] x[n, inp]
            gemm((out, n, inp), gy.as_ptr(), (1, out), x.as_ptr(), (inp, 1), dw.as_mut_ptr(), inp, true);
            // dx[n, inp] = gy[n, out] W[out, inp]
            gemm((n, out, inp), gy.as_ptr(), (out, 1), w.as_ptr(), (inp, 1), dx.as_mut_ptr(), inp, false);
        }
        dx
    }

    fn update(&self, u: &Update, tensors: &mut [Tensors<'_, Vec<f32>>]) {
        for t in tensors {
            let (value, decay) = (&mut *t.value, t.decay);
            t.m.resize(value.len(), 0.0);
            t.v.resize(value.len(), 0.0);
            for (((w, g), m), v) in value.iter_mut().zip(t.grad.iter_mut()).zip(t.m.iter_mut()).zip(t.v.iter_mut()) {
                // L2 weight decay, added to the gradient.
                let gr = *g + decay * *w;
                match *u {
                    Update::Adam { lr, b1, b2, eps, c1, c2 } => {
                        *m = b1 * *m + (1.0 - b1) * gr;
                        *v = b2 * *v + (1.0 - b2) * gr * gr;
                        *w -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                    }
                    Update::Nesterov { lr, mu } => {
                        *m = mu * *m + gr;
                        *w -= lr * (gr + mu * *m);
                    }
                }
                *g = 0.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The vectorisable exp against std's over the range swish and sigmoid use.
    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0.0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let (got, want) = (super::exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 4e-7, "max relative error {worst:e}");
    }
}
