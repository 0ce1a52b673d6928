//! What the GPU devices share: every [`Device`] operation as launches of the kernels of
//! kernels/train.rs on stacked buffers (K tensors on a leading model axis; a buffer from
//! [`Device::upload`] is shared by all models, model stride 0), written once over a
//! [`Launcher`]: the few things a GPU API provides (zeroed buffers, uploads, read-backs,
//! kernel launches). wgpu ([`crate::gpu::Wgpu`]) and CUDA ([`crate::cuda::Cuda`]) implement
//! it, so the lavapipe runs of the wgpu device also check what the CUDA device launches.

use crate::augment::{self, Augment, Plan};
use crate::device::{BnGeom, BnState, ConvGeom, Device, Tensors, Update};
use crate::kernels::{self, CHANNEL_BLOCK, IMAGE_BLOCK, Kernel, THREADS};

/// A GPU API as the stacked device needs it. Launches run in order; [`Launcher::read`] waits
/// for the work before it.
pub trait Launcher: Clone + Send + Sync {
    /// A buffer of f32.
    type Mem: Send + Sync;
    /// A buffer of u32 (labels, augmentation draws).
    type Words: Send + Sync;
    /// The device in a few words, for a run's record.
    fn describe(&self) -> String;
    /// How many models every buffer holds (K).
    fn population(&self) -> usize;
    /// `floats` zeros (at least one).
    fn alloc(&self, floats: usize) -> Self::Mem;
    /// `floats` floats (at least one) for a kernel to write in full before anything reads
    /// them: their contents are undefined, which spares a GPU a memset per output. Zeros
    /// unless a launcher says otherwise.
    fn scratch(&self, floats: usize) -> Self::Mem {
        self.alloc(floats)
    }
    /// A copy of `data` (one zero when empty).
    fn init(&self, data: &[f32]) -> Self::Mem;
    /// A copy of `data` (one zero when empty).
    fn words(&self, data: &[u32]) -> Self::Words;
    /// The first `floats` values of `mem`.
    fn read(&self, mem: &Self::Mem, floats: usize) -> Vec<f32>;
    /// Sets the first `floats` values of `mem` to zero.
    fn zero(&self, mem: &Self::Mem, floats: usize);
    /// Kernel `k` over `args` (its buffers, in the table's order) with `params` (u32 bits, in
    /// the table's order) on `groups` blocks of [`THREADS`] (capped at 65,535; the kernels loop
    /// over the rest).
    fn launch(&self, k: &'static Kernel, args: &[Arg<'_, Self>], params: &[u32], groups: usize);
    /// A one-float buffer for arguments a launch does not use.
    fn spare(&self) -> &Self::Mem;
    /// A training step begins ([`Device::begin_step`]).
    fn begin_step(&self) {}
    /// Ends a training step: sends the recorded work, and waits for the step before it so that
    /// at most one step is queued behind the running one.
    fn submit(&self);
    /// The largest data set kept resident, in floats.
    fn max_floats(&self) -> usize;
    /// Threads the device runs at once when full. A convolution with work for many more
    /// threads than this gives each thread several images ([`IMAGE_BLOCK`]), so that a weight
    /// is loaded once for all of them; one with less keeps a thread per image, and a reduction
    /// with too few workgroups splits each over several, so that they still fill the device.
    fn resident_threads(&self) -> usize;
}

/// A launch argument: a buffer of floats or of u32.
pub enum Arg<'a, L: Launcher> {
    F(&'a L::Mem),
    U(&'a L::Words),
}
use Arg::{F, U};

/// A device buffer: one tensor of `len` floats per model, or one for all (`shared`).
pub struct SBuf<M> {
    pub(crate) mem: M,
    pub(crate) len: usize,
    pub(crate) shared: bool,
}

impl<M> SBuf<M> {
    /// Elements between one model's tensor and the next.
    pub(crate) fn stride(&self) -> u32 {
        if self.shared { 0 } else { self.len as u32 }
    }
}

/// A batch's targets on the device, as the emitted loss kernels take them: mode (0 labels,
/// 1 mixup pairs), labels, partner labels and mixup weights (one zero where unused).
pub(crate) struct LossTargets<L: Launcher> {
    pub mode: u32,
    pub labels: L::Words,
    pub labels_b: L::Words,
    pub lam: L::Mem,
}

impl<L: Launcher> LossTargets<L> {
    pub(crate) fn upload(l: &L, t: &crate::train::LabelTargets) -> LossTargets<L> {
        let mixup = t.labels_b.zip(t.lam);
        LossTargets {
            mode: mixup.is_some() as u32,
            labels: l.words(t.labels),
            labels_b: l.words(mixup.map_or(&[][..], |m| m.0)),
            lam: l.init(mixup.map_or(&[][..], |m| m.1)),
        }
    }
}

pub(crate) fn u(x: usize) -> u32 {
    u32::try_from(x).expect("the population's tensors are checked to index in u32")
}

/// A zeroed buffer of `floats` holding tensors of `len`.
pub(crate) fn buffer<L: Launcher>(l: &L, floats: usize, len: usize, shared: bool) -> SBuf<L::Mem> {
    SBuf { mem: l.alloc(floats.max(1)), len, shared }
}

/// A buffer of K tensors of `len` that a kernel writes in full before anything reads it
/// ([`Launcher::scratch`]).
pub(crate) fn output<L: Launcher>(l: &L, len: usize) -> SBuf<L::Mem> {
    SBuf { mem: l.scratch((len * l.population()).max(1)), len, shared: false }
}

/// A buffer with `data`, holding tensors of `len`.
pub(crate) fn init<L: Launcher>(l: &L, data: &[f32], len: usize, shared: bool) -> SBuf<L::Mem> {
    SBuf { mem: l.init(data), len, shared }
}

/// Images a thread of a convolution computes, where `threads(ib)` is the kernel's thread count
/// at `ib` images a thread: the most, up to [`IMAGE_BLOCK`], that still fill the device.
fn images_per_thread<L: Launcher>(l: &L, threads: impl Fn(usize) -> usize) -> usize {
    let mut ib = IMAGE_BLOCK;
    while ib > 1 && threads(ib) < l.resident_threads() {
        ib /= 2;
    }
    ib
}

/// The fewest values a workgroup of a split reduction sums (four a thread).
const PART_MIN: usize = 4 * THREADS;

/// How many workgroups share each of `groups` reductions over `len` values (batch-norm
/// statistics, a weight gradient): one where `groups` workgroups fill the device; else enough
/// to fill it, each with at least [`PART_MIN`] values.
fn parts<L: Launcher>(l: &L, groups: usize, len: usize) -> usize {
    l.resident_threads().div_ceil(groups * THREADS).min(len / PART_MIN).max(1)
}

/// Launches kernel `name`, checking its arguments against the table.
pub(crate) fn dispatch<L: Launcher>(l: &L, name: &str, args: &[Arg<'_, L>], params: &[u32], groups: usize) {
    let k = kernels::kernel(name);
    assert_eq!(args.len(), k.buffers.len(), "{name}: buffers");
    assert_eq!(params.len(), k.params.len(), "{name}: parameters");
    for (a, (buf, access)) in args.iter().zip(k.buffers) {
        assert_eq!(matches!(a, U(_)), *access == kernels::Access::ReadU32, "{name}: buffer {buf}");
    }
    crate::profile::timed(l, k.name, || l.launch(k, args, params, groups));
}

/// [`dispatch`] over `total` elements, one thread each.
pub(crate) fn each<L: Launcher>(l: &L, name: &str, args: &[Arg<'_, L>], params: &[u32], total: usize) {
    dispatch(l, name, args, params, total.div_ceil(THREADS));
}

impl<L: Launcher> Device for L {
    type Buf = SBuf<L::Mem>;

    fn name(&self) -> String {
        self.describe()
    }
    fn models(&self) -> usize {
        self.population()
    }
    fn zeros(&self, n: usize) -> SBuf<L::Mem> {
        buffer(self, n * self.population(), n, false)
    }
    fn upload(&self, host: &[f32]) -> SBuf<L::Mem> {
        init(self, host, host.len(), true)
    }
    fn param(&self, host: &[f32]) -> SBuf<L::Mem> {
        let all: Vec<f32> = (0..self.population()).flat_map(|_| host.iter().copied()).collect();
        init(self, &all, host.len(), false)
    }
    /// A buffer holding a different tensor for each model (`tensors.len()` = K, equal lengths).
    fn stack(&self, tensors: &[Vec<f32>]) -> SBuf<L::Mem> {
        assert!(
            tensors.len() == self.population() && tensors.iter().all(|t| t.len() == tensors[0].len()),
            "stack: K tensors"
        );
        init(self, &tensors.concat(), tensors[0].len(), false)
    }
    fn download(&self, buf: &SBuf<L::Mem>) -> Vec<f32> {
        let n = if buf.shared { buf.len } else { buf.len * self.population() };
        if n == 0 {
            return Vec::new();
        }
        self.read(&buf.mem, n)
    }
    fn len(&self, buf: &SBuf<L::Mem>) -> usize {
        buf.len
    }
    fn begin_step(&self) {
        Launcher::begin_step(self);
    }
    fn flush(&self) {
        self.submit();
    }
    fn clear(&self, buf: &mut SBuf<L::Mem>) {
        let n = if buf.shared { buf.len } else { buf.len * self.population() };
        self.zero(&buf.mem, n.max(1));
    }
    fn upload_images(&self, host: &[f32], n: usize, c: usize, hw: usize) -> SBuf<L::Mem> {
        self.upload(&crate::cpu::Cpu.upload_images(host, n, c, hw))
    }
    fn resident(&self, images: &[f32]) -> Option<SBuf<L::Mem>> {
        (images.len() <= self.max_floats().min(u32::MAX as usize)).then(|| self.upload(images))
    }
    fn gather(
        &self,
        data: &SBuf<L::Mem>,
        idx: &[usize],
        plan: &Plan,
        a: &Augment,
        (c, h, w): (usize, usize, usize),
    ) -> SBuf<L::Mem> {
        assert!(augment::is_gather(plan) && idx.len() == plan.images.len(), "gather: a plan without RandAug");
        let n = idx.len();
        let draws = augment::gather_draws(idx, plan, a);
        let lam = init(self, plan.mix.as_ref().map_or(&[][..], |(_, lam)| lam), n, true);
        let x = SBuf { mem: self.scratch(c * n * h * w), len: c * n * h * w, shared: true };
        let total = x.len;
        let params = [total, n, c, h, w, a.pad, a.cutout, plan.mix.is_some() as usize].map(u);
        each(self, "augment", &[F(&data.mem), U(&self.words(&draws)), F(&lam.mem), F(&x.mem)], &params, total);
        x
    }

    fn conv_forward(&self, g: &ConvGeom, n: usize, w: &SBuf<L::Mem>, x: &SBuf<L::Mem>) -> SBuf<L::Mem> {
        assert!(w.len == g.cout * g.kk() && x.len == g.cin * n * g.h * g.w, "conv_forward: shapes");
        let y = output(self, g.cout * n * g.p());
        let threads = |ib: usize| self.population() * g.cout.div_ceil(CHANNEL_BLOCK) * n.div_ceil(ib) * g.p();
        let ib = images_per_thread(self, threads);
        let total = threads(ib);
        let params = [total, n, g.cin, g.cout, g.k, g.stride, g.pad, g.h, g.w, g.oh, g.ow].map(u);
        let params = [&params[..], &[x.stride()]].concat();
        each(self, &format!("conv_forward_{ib}"), &[F(&w.mem), F(&x.mem), F(&y.mem)], &params, total);
        y
    }

    fn conv_backward(
        &self,
        g: &ConvGeom,
        n: usize,
        w: &SBuf<L::Mem>,
        x: &SBuf<L::Mem>,
        gy: &SBuf<L::Mem>,
        dw: &mut SBuf<L::Mem>,
        want_dx: bool,
    ) -> Option<SBuf<L::Mem>> {
        assert!(gy.len == g.cout * n * g.p() && dw.len == g.cout * g.kk(), "conv_backward: shapes");
        assert!(g.k <= 3, "conv_backward: the GPU kernels take kernels of at most 3x3");
        let shape = [n, g.cin, g.cout, g.k, g.stride, g.pad, g.h, g.w, g.oh, g.ow].map(u);
        // A workgroup per (model, block of `ob` output channels, pair of input channels, part of
        // the pixels): two output channels where their count is even and that still fills the
        // device, else one, and the pixels split where one workgroup each would leave it idle.
        let groups = |ob: usize| self.population() * g.cout.div_ceil(ob) * g.cin.div_ceil(2);
        let ob = if g.cout.is_multiple_of(2) && groups(2) * THREADS >= self.resident_threads() { 2 } else { 1 };
        let parts = parts(self, groups(ob), n * g.p());
        let groups = groups(ob) * parts;
        let params = [&[u(groups)], &shape[..], &[x.stride(), u(parts)]].concat();
        // One part adds into dw; several write 36 sums a workgroup, which a merge adds up.
        let part = (parts > 1).then(|| output(self, 36 * groups / self.population()));
        let (to_dw, to_part) = match &part {
            Some(part) => (self.spare(), &part.mem),
            None => (&dw.mem, self.spare()),
        };
        let name = format!("conv_backward_filter_{ob}");
        dispatch(self, &name, &[F(&x.mem), F(&gy.mem), F(to_dw), F(to_part)], &params, groups);
        if let Some(part) = part {
            let total = self.population() * dw.len;
            assert_eq!(ob, 1, "a split weight gradient has blocks of one output channel");
            let params = [total, g.cin, g.k, parts].map(u);
            each(self, "conv_filter_merge", &[F(&part.mem), F(&dw.mem)], &params, total);
        }
        want_dx.then(|| {
            let dx = output(self, g.cin * n * g.h * g.w);
            let threads = |ib: usize| self.population() * g.cin.div_ceil(CHANNEL_BLOCK) * n.div_ceil(ib) * g.h * g.w;
            let ib = images_per_thread(self, threads);
            let total = threads(ib);
            let params = [&[u(total)], &shape[..]].concat();
            let name = format!("conv_backward_data_{ib}");
            each(self, &name, &[F(&w.mem), F(&gy.mem), F(&dx.mem)], &params, total);
            dx
        })
    }

    fn bn_forward(
        &self,
        g: &BnGeom,
        x: &SBuf<L::Mem>,
        gamma: &SBuf<L::Mem>,
        beta: &SBuf<L::Mem>,
        s: &mut BnState<SBuf<L::Mem>>,
        train: bool,
    ) -> SBuf<L::Mem> {
        assert_eq!(x.len, g.c * g.len, "bn_forward: shape");
        let groups = self.population() * g.c;
        let mean = output(self, g.c);
        if s.inv_std.len != g.c {
            s.inv_std = self.zeros(g.c);
        }
        if train {
            let parts = parts(self, groups, g.len);
            let part = output(self, 3 * g.c * parts);
            dispatch(
                self,
                "bn_stats",
                &[F(&x.mem), F(&part.mem)],
                &[groups * parts, g.len, parts].map(u),
                groups * parts,
            );
            let params = [u(groups), u(parts), g.momentum.to_bits(), g.eps.to_bits()];
            let bufs = [&part.mem, &mean.mem, &s.inv_std.mem, &s.running_mean.mem, &s.running_var.mem].map(F);
            each(self, "bn_merge", &bufs, &params, groups);
            if s.xhat.len != x.len {
                s.xhat = self.zeros(x.len);
            }
            if g.swish && s.sig.len != x.len {
                s.sig = self.zeros(x.len);
            }
        } else {
            let bufs = [&s.running_mean.mem, &s.running_var.mem, &mean.mem, &s.inv_std.mem].map(F);
            each(self, "bn_running", &bufs, &[u(groups), g.eps.to_bits()], groups);
        }
        let y = output(self, x.len);
        let total = self.population() * x.len;
        let params = [total, g.len, g.swish as usize, train as usize].map(u);
        let bufs = [&x.mem, &mean.mem, &s.inv_std.mem, &gamma.mem, &beta.mem, &y.mem, &s.xhat.mem, &s.sig.mem].map(F);
        each(self, "bn_apply", &bufs, &params, total);
        y
    }

    fn bn_backward(
        &self,
        g: &BnGeom,
        gy: &SBuf<L::Mem>,
        gamma: &SBuf<L::Mem>,
        beta: &SBuf<L::Mem>,
        s: &BnState<SBuf<L::Mem>>,
        dgamma: &mut SBuf<L::Mem>,
        dbeta: &mut SBuf<L::Mem>,
    ) -> SBuf<L::Mem> {
        assert!(gy.len == g.c * g.len && s.xhat.len == g.c * g.len, "bn_backward: shapes");
        let groups = self.population() * g.c;
        let parts = parts(self, groups, g.len);
        let part = output(self, 2 * g.c * parts);
        let sig = if g.swish { &s.sig.mem } else { self.spare() };
        let bufs = [&gy.mem, &s.xhat.mem, sig, &gamma.mem, &beta.mem, &part.mem].map(F);
        let params = [groups * parts, g.len, g.swish as usize, parts].map(u);
        dispatch(self, "bn_backward_sums", &bufs, &params, groups * parts);
        let sums = output(self, 2 * g.c);
        let bufs = [&part.mem, &sums.mem, &dgamma.mem, &dbeta.mem].map(F);
        each(self, "bn_sums_merge", &bufs, &[u(groups), u(parts)], groups);
        let dx = output(self, gy.len);
        let total = self.population() * gy.len;
        let bufs = [&gy.mem, &s.xhat.mem, sig, &gamma.mem, &beta.mem, &s.inv_std.mem, &sums.mem, &dx.mem].map(F);
        each(self, "bn_backward_dx", &bufs, &[u(total), u(g.len), g.swish as u32], total);
        dx
    }

    fn add_assign(&self, a: &mut SBuf<L::Mem>, b: &SBuf<L::Mem>) {
        assert!(a.len == b.len && !a.shared && !b.shared, "add_assign: lengths");
        let total = self.population() * a.len;
        each(self, "add", &[F(&a.mem), F(&b.mem)], &[u(total)], total);
    }
    fn mul(&self, a: &SBuf<L::Mem>, b: &SBuf<L::Mem>) -> SBuf<L::Mem> {
        assert!(a.len == b.len && !a.shared, "mul: lengths");
        let y = output(self, a.len);
        let total = self.population() * a.len;
        each(self, "mul", &[F(&a.mem), F(&b.mem), F(&y.mem)], &[u(total), u(a.len), b.stride()], total);
        y
    }
    fn pool_forward(&self, c: usize, n: usize, hw: usize, x: &SBuf<L::Mem>) -> SBuf<L::Mem> {
        let y = output(self, n * c);
        let total = self.population() * y.len;
        each(self, "pool_forward", &[F(&x.mem), F(&y.mem)], &[total, c, n, hw].map(u), total);
        y
    }
    fn pool_backward(&self, c: usize, n: usize, hw: usize, gy: &SBuf<L::Mem>) -> SBuf<L::Mem> {
        let dx = output(self, c * n * hw);
        let total = self.population() * dx.len;
        each(self, "pool_backward", &[F(&gy.mem), F(&dx.mem)], &[total, c, n, hw].map(u), total);
        dx
    }
    fn dense_forward(
        &self,
        n: usize,
        inp: usize,
        out: usize,
        x: &SBuf<L::Mem>,
        w: &SBuf<L::Mem>,
        b: &SBuf<L::Mem>,
    ) -> SBuf<L::Mem> {
        assert!(x.len == n * inp && w.len == out * inp && b.len == out && !x.shared, "dense_forward: shapes");
        let y = output(self, n * out);
        let total = self.population() * y.len;
        each(self, "dense_forward", &[F(&x.mem), F(&w.mem), F(&b.mem), F(&y.mem)], &[total, n, inp, out].map(u), total);
        y
    }
    fn dense_backward(
        &self,
        n: usize,
        inp: usize,
        out: usize,
        x: &SBuf<L::Mem>,
        w: &SBuf<L::Mem>,
        gy: &SBuf<L::Mem>,
        dw: &mut SBuf<L::Mem>,
        db: &mut SBuf<L::Mem>,
    ) -> SBuf<L::Mem> {
        assert!(gy.len == n * out && dw.len == out * inp && db.len == out, "dense_backward: shapes");
        let total = self.population() * dw.len;
        each(
            self,
            "dense_backward_w",
            &[F(&x.mem), F(&gy.mem), F(&dw.mem), F(&db.mem)],
            &[total, n, inp, out].map(u),
            total,
        );
        let dx = output(self, n * inp);
        let total = self.population() * dx.len;
        each(self, "dense_backward_x", &[F(&w.mem), F(&gy.mem), F(&dx.mem)], &[total, n, inp, out].map(u), total);
        dx
    }

    fn hits(
        &self,
        logits: &SBuf<L::Mem>,
        n: usize,
        classes: usize,
        labels: &[u32],
        stats: &mut SBuf<L::Mem>,
        slot: usize,
    ) {
        assert!(logits.len >= n * classes && labels.len() == n && slot < 4 && stats.len == 4, "hits: shapes");
        let labels = self.words(labels);
        let params = [self.population(), n, classes, slot].map(u);
        dispatch(self, "hits", &[F(&logits.mem), U(&labels), F(&stats.mem)], &params, self.population());
    }

    fn update(&self, up: &Update, tensors: &mut [Tensors<'_, SBuf<L::Mem>>]) {
        let f = |x: f32| x.to_bits();
        let (sched, params) = match *up {
            Update::Adam { lr, b1, b2, eps, c1, c2 } => ([lr, c1, c2], [1, f(b1), f(b2), f(eps), 0]),
            Update::Nesterov { lr, mu } => ([lr, 1.0, 1.0], [0, 0, 0, 0, f(mu)]),
        };
        let sched = init(self, &sched, 3, true);
        for t in tensors {
            for s in [&mut *t.m, &mut *t.v] {
                if s.len != t.value.len {
                    *s = self.zeros(t.value.len);
                }
            }
            let total = self.population() * t.value.len;
            let params = [&[u(total)], &params[..], &[f(t.decay)]].concat();
            let bufs = [&t.value.mem, &t.grad.mem, &t.m.mem, &t.v.mem, &sched.mem].map(F);
            each(self, "update", &bufs, &params, total);
        }
    }
}
