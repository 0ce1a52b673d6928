//! What the GPU devices share: every [`Device`] operation as launches of the kernels of
//! kernels/train.rs on stacked buffers (K tensors on a leading model axis; a buffer from
//! [`Device::upload`] is shared by all models, model stride 0), written once over a
//! [`Launcher`]: the few things a GPU API provides (zeroed buffers, uploads, read-backs,
//! kernel launches). wgpu ([`crate::gpu::Wgpu`]) and CUDA ([`crate::cuda::Cuda`]) implement
//! it, so the lavapipe runs of the wgpu device also check what the CUDA device launches.

use crate::augment::{self, Augment, Plan};
use crate::device::{BnGeom, BnState, ConvGeom, Device, Tensors, Update};
use crate::kernels::{self, CHANNEL_BLOCK, IMAGE_BLOCK, Kernel, THREADS};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

/// A GPU API as the stacked device needs it. Launches run in order; [`Launcher::read`] waits
/// for the work before it.
pub trait Launcher: Clone + Send + Sync {
    /// A buffer of f32 (a handle: a clone is the same buffer).
    type Mem: Clone + Send + Sync;
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
    /// The `floats` values of `mem` from float `start`.
    fn read(&self, mem: &Self::Mem, start: usize, floats: usize) -> Vec<f32>;
    /// Sets the `floats` values of `mem` from float `start` to zero.
    fn zero(&self, mem: &Self::Mem, start: usize, floats: usize);
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
    /// The floats `.1` of a buffer (a packed tensor, `SBuf::packed`), which the kernel sees
    /// as its whole buffer.
    Part(&'a L::Mem, Range<usize>),
    U(&'a L::Words),
}
use Arg::{F, U};

/// The launch argument of a device buffer.
fn f<L: Launcher>(b: &SBuf<L::Mem>) -> Arg<'_, L> {
    match &b.packed {
        None => F(&b.mem),
        Some((_, span)) => Arg::Part(&b.mem, span.clone()),
    }
}

/// `floats` floats from the start of a packed buffer (a run of tensors, [`runs`]).
fn from<L: Launcher>(b: &SBuf<L::Mem>, floats: usize) -> Arg<'_, L> {
    Arg::Part(&b.mem, b.start()..b.start() + floats)
}

/// A device buffer: one tensor of `len` floats per model, or one for all (`shared`). A packed
/// one holds the floats `span` of an allocation it shares with the other tensors of its arena
/// (an id, see `pack`).
pub struct SBuf<M> {
    pub(crate) mem: M,
    pub(crate) len: usize,
    pub(crate) shared: bool,
    pub(crate) packed: Option<(u64, Range<usize>)>,
}

impl<M> SBuf<M> {
    /// A buffer of its own.
    pub(crate) fn own(mem: M, len: usize, shared: bool) -> SBuf<M> {
        SBuf { mem, len, shared, packed: None }
    }
    /// Elements between one model's tensor and the next.
    pub(crate) fn stride(&self) -> u32 {
        if self.shared { 0 } else { self.len as u32 }
    }
    /// Where its floats start in its allocation.
    fn start(&self) -> usize {
        self.packed.as_ref().map_or(0, |(_, span)| span.start)
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

/// The first index of each distinct item, and each item's place among those: the models of a
/// population that share a loss (a benchmark's K copies of CE) share its kernel, built once.
pub(crate) fn distinct<T: std::hash::Hash + Eq>(items: &[T]) -> (Vec<usize>, Vec<usize>) {
    let (mut first, mut seen) = (Vec::new(), std::collections::HashMap::new());
    let place = (items.iter().enumerate())
        .map(|(i, item)| {
            *seen.entry(item).or_insert_with(|| {
                first.push(i);
                first.len() - 1
            })
        })
        .collect();
    (first, place)
}

pub(crate) fn u(x: usize) -> u32 {
    u32::try_from(x).expect("the population's tensors are checked to index in u32")
}

/// A zeroed buffer of `floats` holding tensors of `len`.
pub(crate) fn buffer<L: Launcher>(l: &L, floats: usize, len: usize, shared: bool) -> SBuf<L::Mem> {
    SBuf::own(l.alloc(floats.max(1)), len, shared)
}

/// A buffer of K tensors of `len` that a kernel writes in full before anything reads it
/// ([`Launcher::scratch`]).
pub(crate) fn output<L: Launcher>(l: &L, len: usize) -> SBuf<L::Mem> {
    SBuf::own(l.scratch((len * l.population()).max(1)), len, false)
}

/// A buffer with `data`, holding tensors of `len`.
pub(crate) fn init<L: Launcher>(l: &L, data: &[f32], len: usize, shared: bool) -> SBuf<L::Mem> {
    SBuf::own(l.init(data), len, shared)
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
        self.read(&buf.mem, buf.start(), n)
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
        self.zero(&buf.mem, buf.start(), n.max(1));
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
        let x = SBuf::own(self.scratch(c * n * h * w), c * n * h * w, true);
        let total = x.len;
        let params = [total, n, c, h, w, a.pad, a.cutout, plan.mix.is_some() as usize].map(u);
        each(self, "augment", &[f(data), U(&self.words(&draws)), f(&lam), f(&x)], &params, total);
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
        each(self, &format!("conv_forward_{ib}"), &[f(w), f(x), f(&y)], &params, total);
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
        // A workgroup per (model, block of CHANNEL_BLOCK output channels, input channel, part of
        // the pixels): the pixels split where one workgroup each would leave the device idle.
        let groups = self.population() * g.cout.div_ceil(CHANNEL_BLOCK) * g.cin;
        let parts = parts(self, groups, n * g.p());
        let groups = groups * parts;
        let params = [&[u(groups)], &shape[..], &[x.stride(), u(parts)]].concat();
        // One part adds into dw; several write their sums (9 a channel), which a merge adds up.
        let part = (parts > 1).then(|| output(self, 9 * CHANNEL_BLOCK * groups / self.population()));
        let (to_dw, to_part) = match &part {
            Some(part) => (F(self.spare()), f(part)),
            None => (f(dw), F(self.spare())),
        };
        dispatch(self, "conv_backward_filter", &[f(x), f(gy), to_dw, to_part], &params, groups);
        if let Some(part) = part {
            let total = self.population() * dw.len;
            let params = [total, g.cin, g.cout, g.k, parts].map(u);
            each(self, "conv_filter_merge", &[f(&part), f(dw)], &params, total);
        }
        want_dx.then(|| {
            let dx = output(self, g.cin * n * g.h * g.w);
            let threads = |ib: usize| self.population() * g.cin.div_ceil(CHANNEL_BLOCK) * n.div_ceil(ib) * g.h * g.w;
            let ib = images_per_thread(self, threads);
            let total = threads(ib);
            let params = [&[u(total)], &shape[..]].concat();
            let name = format!("conv_backward_data_{ib}");
            each(self, &name, &[f(w), f(gy), f(&dx)], &params, total);
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
            dispatch(self, "bn_stats", &[f(x), f(&part)], &[groups * parts, g.len, parts].map(u), groups * parts);
            let params = [u(groups), u(parts), g.momentum.to_bits(), g.eps.to_bits()];
            let bufs = [&part, &mean, &s.inv_std, &s.running_mean, &s.running_var].map(f);
            each(self, "bn_merge", &bufs, &params, groups);
            if s.xhat.len != x.len {
                s.xhat = self.zeros(x.len);
            }
        } else {
            let bufs = [&s.running_mean, &s.running_var, &mean, &s.inv_std].map(f);
            each(self, "bn_running", &bufs, &[u(groups), g.eps.to_bits()], groups);
        }
        let y = output(self, x.len);
        let total = self.population() * x.len;
        let params = [total, g.len, g.swish as usize, train as usize].map(u);
        let bufs = [x, &mean, &s.inv_std, gamma, beta, &y, &s.xhat].map(f);
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
        let bufs = [gy, &s.xhat, gamma, beta, &part].map(f);
        let params = [groups * parts, g.len, g.swish as usize, parts].map(u);
        dispatch(self, "bn_backward_sums", &bufs, &params, groups * parts);
        let sums = output(self, 2 * g.c);
        let bufs = [&part, &sums, dgamma, dbeta].map(f);
        each(self, "bn_sums_merge", &bufs, &[u(groups), u(parts)], groups);
        let dx = output(self, gy.len);
        let total = self.population() * gy.len;
        let bufs = [gy, &s.xhat, gamma, beta, &s.inv_std, &sums, &dx].map(f);
        each(self, "bn_backward_dx", &bufs, &[u(total), u(g.len), g.swish as u32], total);
        dx
    }

    fn add_assign(&self, a: &mut SBuf<L::Mem>, b: &SBuf<L::Mem>) {
        assert!(a.len == b.len && !a.shared && !b.shared, "add_assign: lengths");
        let total = self.population() * a.len;
        each(self, "add", &[f(a), f(b)], &[u(total)], total);
    }
    fn mul(&self, a: &SBuf<L::Mem>, b: &SBuf<L::Mem>) -> SBuf<L::Mem> {
        assert!(a.len == b.len && !a.shared, "mul: lengths");
        let y = output(self, a.len);
        let total = self.population() * a.len;
        each(self, "mul", &[f(a), f(b), f(&y)], &[u(total), u(a.len), b.stride()], total);
        y
    }
    fn pool_forward(&self, c: usize, n: usize, hw: usize, x: &SBuf<L::Mem>) -> SBuf<L::Mem> {
        let y = output(self, n * c);
        let total = self.population() * y.len;
        each(self, "pool_forward", &[f(x), f(&y)], &[total, c, n, hw].map(u), total);
        y
    }
    fn pool_backward(&self, c: usize, n: usize, hw: usize, gy: &SBuf<L::Mem>) -> SBuf<L::Mem> {
        let dx = output(self, c * n * hw);
        let total = self.population() * dx.len;
        each(self, "pool_backward", &[f(gy), f(&dx)], &[total, c, n, hw].map(u), total);
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
        each(self, "dense_forward", &[f(x), f(w), f(b), f(&y)], &[total, n, inp, out].map(u), total);
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
        each(self, "dense_backward_w", &[f(x), f(gy), f(dw), f(db)], &[total, n, inp, out].map(u), total);
        let dx = output(self, n * inp);
        let total = self.population() * dx.len;
        each(self, "dense_backward_x", &[f(w), f(gy), f(&dx)], &[total, n, inp, out].map(u), total);
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
        dispatch(self, "hits", &[f(logits), U(&labels), f(stats)], &params, self.population());
    }

    fn update(&self, up: &Update, tensors: &mut [Tensors<'_, SBuf<L::Mem>>]) {
        let bits = |x: f32| x.to_bits();
        let (sched, params) = match *up {
            Update::Adam { lr, b1, b2, eps, c1, c2 } => ([lr, c1, c2], [1, bits(b1), bits(b2), bits(eps), 0]),
            Update::Nesterov { lr, mu } => ([lr, 1.0, 1.0], [0, 0, 0, 0, bits(mu)]),
        };
        if tensors.is_empty() {
            return;
        }
        let sched = init(self, &sched, 3, true);
        for t in tensors.iter_mut() {
            for s in [&mut *t.m, &mut *t.v] {
                if s.len != t.value.len {
                    *s = self.zeros(t.value.len);
                }
            }
        }
        let runs = runs(tensors).unwrap_or_else(|| {
            pack(self, tensors);
            runs(tensors).expect("packed tensors")
        });
        for (first, floats) in runs {
            let t = &tensors[first];
            let bufs = [from(t.value, floats), from(t.grad, floats), from(t.m, floats), from(t.v, floats), f(&sched)];
            let params = [&[u(floats)], &params[..], &[bits(t.decay)]].concat();
            each(self, "update", &bufs, &params, floats);
        }
    }
}

/// Where packed tensors start: a multiple of 64 floats, 256 bytes, the alignment of a wgpu
/// binding's offset.
const PACK_ALIGN: usize = 64;

/// The id of the next arena ([`pack`]).
static NEXT_ARENA: AtomicU64 = AtomicU64::new(1);

/// Moves the values of `tensors` into one allocation (an arena), tensor after tensor, the
/// tensors of the same decay together; their gradients and both moments into three more, at the
/// same places. One launch then updates each run of tensors of the same decay ([`runs`]): one
/// or two a step where there was one a tensor. The floats between tensors hold zeros, which an
/// update leaves zero.
fn pack<L: Launcher>(l: &L, tensors: &mut [Tensors<'_, SBuf<L::Mem>>]) {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| tensors[b].decay.total_cmp(&tensors[a].decay));
    let mut spans = vec![0..0; tensors.len()];
    let mut end = 0usize;
    for &i in &order {
        assert!(!tensors[i].value.shared, "update: a tensor of each model");
        let start = end.next_multiple_of(PACK_ALIGN);
        end = start + l.population() * tensors[i].value.len;
        spans[i] = start..end;
    }
    let arenas: [_; 4] = std::array::from_fn(|_| (NEXT_ARENA.fetch_add(1, Ordering::Relaxed), l.alloc(end)));
    for (t, span) in tensors.iter_mut().zip(spans) {
        for (b, (id, arena)) in [&mut *t.value, &mut *t.grad, &mut *t.m, &mut *t.v].into_iter().zip(&arenas) {
            let to = SBuf { mem: arena.clone(), len: b.len, shared: false, packed: Some((*id, span.clone())) };
            each(l, "copy", &[f(b), f(&to)], &[u(span.len())], span.len());
            *b = to;
        }
    }
}

/// The runs of tensors of the same decay in [`pack`]'s arenas, in arena order: the first
/// tensor's index and the floats from its start to the run's end. `None` unless each tensor's
/// value, gradient and moments lie at one place in four arenas, the tensors one after another
/// from the start.
fn runs<M>(tensors: &[Tensors<'_, SBuf<M>>]) -> Option<Vec<(usize, usize)>> {
    let first = tensors.first()?;
    let ids = [&first.value, &first.grad, &first.m, &first.v].map(|b| b.packed.as_ref().map(|(id, _)| *id));
    let mut at: Vec<(Range<usize>, usize)> = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        let span = t.value.packed.as_ref()?.1.clone();
        for (b, want) in [&t.value, &t.grad, &t.m, &t.v].into_iter().zip(ids) {
            let (id, s) = b.packed.as_ref()?;
            if Some(*id) != want || *s != span {
                return None;
            }
        }
        at.push((span, i));
    }
    at.sort_by_key(|(span, _)| span.start);
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut end = 0usize;
    for (span, i) in at {
        if span.start != end.next_multiple_of(PACK_ALIGN) {
            return None;
        }
        match runs.last_mut() {
            Some((j, floats)) if tensors[*j].decay.to_bits() == tensors[i].decay.to_bits() => {
                *floats = span.end - tensors[*j].value.start();
            }
            _ => runs.push((i, span.len())),
        }
        end = span.end;
    }
    Some(runs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn distinct_items_are_numbered_in_order_of_first_sight() {
        let (first, place) = super::distinct(&["ce", "a2", "ce", "m0", "a2"]);
        assert_eq!(first, [0, 1, 3]);
        assert_eq!(place, [0, 1, 0, 2, 1]);
    }
}
