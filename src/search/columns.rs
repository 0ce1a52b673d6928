//! Columnwise evaluation of a loss graph over the screen's fixed probe points: one op over all
//! points at a time (so each op's loop is specialised and vectorised), in reusable slots (no
//! allocation per column once warm), with the columns of routines (the costly ops) cached by a
//! structural hash of their subexpression, so that candidates sharing subexpressions (a child
//! and its parent; the probes at y = 0 and y = 1 of one candidate) share their work.

use crate::backend::vm::is_routine;
use crate::ir::op::Arg;
use crate::ir::{BinOp, Graph, Id, Input, Node, UnOp};
use crate::reference::mathref::{self as m, Bessel, Func, bessel_slice};
use rustc_hash::FxHashMap as HashMap;

/// A set of probe points (the values of p), pinned in a slot for the evaluator's lifetime.
#[derive(Clone, Copy, Debug)]
pub struct Points {
    slot: u32,
    len: usize,
    hash: u64,
}

impl Points {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A node's values: one number when it does not depend on p, else the slot of its column.
#[derive(Clone, Copy)]
enum Val {
    One(f64),
    Col(u32),
}

/// A node's values and structural hash at each y (the same for every y when it does not
/// depend on y).
#[derive(Clone, Copy)]
struct Entry {
    vals: [Val; MAX_YS],
    hashes: [u64; MAX_YS],
    ydep: bool,
}

/// How a column meets the cache.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cache {
    No,
    Read,
    ReadWrite,
}

/// A structural hash of a node from its parts: two chained 64x64 -> 128-bit multiplies, each
/// folded (wyhash's `mum`), so that distinct subexpressions do not share a cached column by
/// accident (test `structural_hashes_tell_subexpressions_apart`), at a few instructions a node.
#[inline(always)]
fn mix(parts: [u64; 4]) -> u64 {
    #[inline(always)]
    fn mum(a: u64, b: u64) -> u64 {
        let r = a as u128 * b as u128;
        r as u64 ^ (r >> 64) as u64
    }
    let h = mum(parts[0] ^ 0xA076_1D64_78BD_642F, parts[1] ^ 0xE703_7ED1_A0B4_28DB);
    mum(h ^ parts[2] ^ 0x8EBC_6AF0_9C88_C6E3, parts[3] ^ 0x5899_65CC_7537_4CC3)
}

/// The Bessel ops whose columns sum their series four points at a time.
fn bessel(op: UnOp) -> Option<Bessel> {
    Some(match op {
        UnOp::BesselI0 => Bessel::I0,
        UnOp::BesselI0e => Bessel::I0e,
        UnOp::BesselI1 => Bessel::I1,
        UnOp::BesselI1e => Bessel::I1e,
        UnOp::BesselI1x => Bessel::I1x,
        UnOp::BesselI1ex => Bessel::I1ex,
        _ => return None,
    })
}

/// The derivatives of the scaled Bessel ops, whose columns also sum their series by block: the
/// order of [`m::bessel_scaled_derivative_slice`].
fn bessel_scaled_derivative(op: UnOp) -> Option<u32> {
    match op {
        UnOp::BesselI0eD => Some(0),
        UnOp::BesselI1eD => Some(1),
        _ => None,
    }
}

wide!(
    /// A routine's column through [`Func::eval_in_place`], the op's reference in three passes:
    /// its function's argument at every point, the function on the whole column at once (four
    /// points per call), and the result finished point by point (the passes as wide as the
    /// processor allows). The same operations as [`UnOp::eval`], so the same bits (test
    /// `routine_columns_give_the_reference_bits`). False for an op that is not written here.
    routine_column(op: UnOp, xs: &[f64], eps: f64, out: &mut [f64]) -> bool => routine_passes(op, xs, eps, out)
);

/// `out[i] = f(xs[i], out[i])`.
#[inline(always)]
fn each(xs: &[f64], out: &mut [f64], f: impl Fn(f64, f64) -> f64) {
    for (o, &x) in out.iter_mut().zip(xs) {
        *o = f(x, *o);
    }
}

/// [`routine_column`]'s passes (inlined into its wide and narrow versions: no closures here,
/// which would not be compiled for the wide one).
#[inline(always)]
fn routine_passes(op: UnOp, xs: &[f64], eps: f64, out: &mut [f64]) -> bool {
    use UnOp::*;
    #[inline(always)]
    fn direct(f: Func, xs: &[f64], out: &mut [f64]) {
        out.copy_from_slice(xs);
        f.eval_in_place(out);
    }
    /// Exp of -|x|: what the logistic ops and softplus are built from.
    #[inline(always)]
    fn exp_neg_abs(xs: &[f64], out: &mut [f64]) {
        each(xs, out, |x, _| -x.abs());
        Func::Exp.eval_in_place(out);
    }
    match op {
        Ln | Log10 | LnRaw => {
            if op != LnRaw {
                each(xs, out, |x, _| x.abs() + eps);
            } else {
                out.copy_from_slice(xs);
            }
            Func::Ln.eval_in_place(out);
            if op == Log10 {
                each(xs, out, |_, v| v / std::f64::consts::LN_10);
            }
        }
        Exp => direct(Func::Exp, xs, out),
        Erf => direct(Func::Erf, xs, out),
        Erfc => direct(Func::Erfc, xs, out),
        Sin => direct(Func::Sin, xs, out),
        Cos => direct(Func::Cos, xs, out),
        Sinh => direct(Func::Sinh, xs, out),
        Cosh => direct(Func::Cosh, xs, out),
        Asinh => direct(Func::Asinh, xs, out),
        Tanh => direct(Func::Tanh, xs, out),
        Atan => direct(Func::Atan, xs, out),
        Sigmoid => {
            exp_neg_abs(xs, out);
            each(xs, out, m::sigmoid_from);
        }
        Dsigmoid => {
            exp_neg_abs(xs, out);
            each(xs, out, |_, e| m::dsigmoid_from(e));
        }
        Softplus => {
            exp_neg_abs(xs, out);
            each(xs, out, |x, e| m::softplus_arg(x, e, eps));
            Func::Ln1p.eval_in_place(out);
            each(xs, out, m::softplus_from);
        }
        Dtanh => {
            direct(Func::Cosh, xs, out);
            each(xs, out, |_, c| m::dtanh_from(c));
        }
        _ => return false,
    }
    true
}

/// Whether `x op c` (`right`) or `c op x` equals x bit for bit for every x.
fn identity(op: BinOp, c: f64, right: bool) -> bool {
    match op {
        BinOp::Mul => c == 1.0,
        BinOp::Div => right && c == 1.0,
        BinOp::Sub => right && c.to_bits() == 0,
        BinOp::Add => c.to_bits() == (-0.0f64).to_bits(),
        _ => false,
    }
}

/// Defines `fn $name($args) -> $ret` running `$body` compiled for AVX2 where the processor has
/// it (four f64 lanes; SSE2 has two): the same IEEE operations either way (Rust never
/// contracts into FMA), so the same bits. For loops over columns of arithmetic: routines make
/// one call per point and gain nothing.
macro_rules! wide {
    ($(#[$doc:meta])* $vis:vis $name:ident($($arg:ident: $t:ty),*) $(-> $ret:ty)? => $body:expr) => {
        $(#[$doc])*
        $vis fn $name($($arg: $t),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $t),*) $(-> $ret)? {
                    $body
                }
                // SAFETY: the processor has AVX2 (checked above).
                return unsafe { avx2($($arg),*) };
            }
            $body
        }
    };
}
pub(crate) use wide;

/// A column's [`Facts`] in one pass, four lanes at a time where the processor has AVX.
fn column_facts(c: &[f64]) -> Facts {
    let (mut lo, mut hi, mut nan) = (f64::INFINITY, f64::NEG_INFINITY, false);
    let chunks = c.chunks_exact(4);
    for &v in chunks.remainder() {
        (lo, hi, nan) = (lo.min(v), hi.max(v), nan | v.is_nan());
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        #[target_feature(enable = "avx")]
        fn avx(chunks: std::slice::ChunksExact<'_, f64>) -> ([f64; 4], [f64; 4], bool) {
            use std::arch::x86_64::*;
            let (mut l, mut h) = (_mm256_set1_pd(f64::INFINITY), _mm256_set1_pd(f64::NEG_INFINITY));
            let mut u = _mm256_setzero_pd();
            for chunk in chunks {
                // SAFETY: four f64s.
                let v = unsafe { _mm256_loadu_pd(chunk.as_ptr()) };
                // vminpd(v, l) keeps l where v is NaN; NaNs are flagged apart.
                (l, h) = (_mm256_min_pd(v, l), _mm256_max_pd(v, h));
                u = _mm256_or_pd(u, _mm256_cmp_pd::<_CMP_UNORD_Q>(v, v));
            }
            let (mut lo, mut hi) = ([0.0; 4], [0.0; 4]);
            // SAFETY: four f64s each.
            unsafe { (_mm256_storeu_pd(lo.as_mut_ptr(), l), _mm256_storeu_pd(hi.as_mut_ptr(), h)) };
            (lo, hi, _mm256_movemask_pd(u) != 0)
        }
        // SAFETY: the processor has AVX (checked above).
        let (l, h, u) = unsafe { avx(chunks) };
        let lo = l.into_iter().fold(lo, f64::min);
        let hi = h.into_iter().fold(hi, f64::max);
        return Facts { lo, hi, nan: nan | u };
    }
    column_facts_scalar(c)
}

/// [`column_facts`] one value at a time: the processors without AVX, and the test's reference.
fn column_facts_scalar(c: &[f64]) -> Facts {
    let (mut lo, mut hi, mut nan) = (f64::INFINITY, f64::NEG_INFINITY, false);
    for &v in c {
        (lo, hi, nan) = (lo.min(v), hi.max(v), nan | v.is_nan());
    }
    Facts { lo, hi, nan }
}

wide!(
    /// [`BinOp::eval_slice`], as wide as the processor allows.
    binary_slice(op: BinOp, a: Arg<'_>, b: Arg<'_>, out: &mut [f64]) => op.eval_slice(a, b, out)
);
wide!(
    /// [`UnOp::eval_slice`] of an arithmetic op, as wide as the processor allows.
    unary_slice(op: UnOp, xs: &[f64], eps: f64, out: &mut [f64]) => op.eval_slice(xs, eps, out)
);

/// The most y values one [`Columns::eval`] takes (the screen's probes use 0 and 1).
pub const MAX_YS: usize = 2;

/// The evaluator: column slots, the cache, and per-probe scratch, all reused.
pub struct Columns {
    /// Points per slot: the most a probe may use.
    stride: usize,
    slots: Vec<Box<[f64]>>,
    free: Vec<u32>,
    /// Structural hash -> slot of a routine's column; emptied when it reaches `capacity`.
    cache: HashMap<u64, u32>,
    capacity: usize,
    live: Vec<bool>,
    /// Per node of the last probe: its values and structural hashes.
    nodes: Vec<Entry>,
    /// Slots of the last probe's uncached columns, freed when the next one starts (the
    /// outputs are read from them in between).
    temp: Vec<u32>,
    /// The last probe's outputs: a slot per y and output.
    outs: Vec<[u32; MAX_YS]>,
    /// Points in the last probe.
    len: usize,
    /// Per slot: its column's [`Facts`], once asked for (forgotten when the slot is taken).
    facts: Vec<Option<Facts>>,
    /// The slots of constant outputs by the value's bits (see [`Columns::constant`]).
    constants: HashMap<u64, u32>,
}

/// What a column's values are known to lie in: the smallest and largest (NaN aside), and
/// whether there is a NaN. Enough to tell when an op with a constant gives a constant or the
/// column itself at every point.
#[derive(Clone, Copy, Debug)]
struct Facts {
    lo: f64,
    hi: f64,
    nan: bool,
}

impl Columns {
    /// An evaluator for sets of up to `stride` points, caching up to `capacity` columns.
    pub fn new(stride: usize, capacity: usize) -> Columns {
        Columns {
            stride,
            slots: Vec::new(),
            free: Vec::new(),
            cache: HashMap::default(),
            capacity,
            live: Vec::new(),
            nodes: Vec::new(),
            temp: Vec::new(),
            outs: Vec::new(),
            len: 0,
            facts: Vec::new(),
            constants: HashMap::default(),
        }
    }

    /// Pins a set of probe points (at most `stride`).
    pub fn points(&mut self, ps: &[f64]) -> Points {
        assert!(!ps.is_empty() && ps.len() <= self.stride, "probe points: 1..={}", self.stride);
        let slot = self.take();
        self.slots[slot as usize][..ps.len()].copy_from_slice(ps);
        let hash = mix([2, ps.len() as u64, ps[0].to_bits(), ps[ps.len() - 1].to_bits()]);
        Points { slot, len: ps.len(), hash }
    }

    /// A slot holding `v` at every point, for an output that is one value (common once the
    /// facts fold `0 * x` at y = 0): kept for the evaluator's lifetime, so that it is filled once
    /// (up to `CONSTANTS` values; others are filled for the call).
    fn constant(&mut self, v: f64) -> u32 {
        const CONSTANTS: usize = 64;
        if let Some(&s) = self.constants.get(&v.to_bits()) {
            return s;
        }
        let s = self.take();
        self.slots[s as usize].fill(v);
        if self.constants.len() < CONSTANTS {
            self.constants.insert(v.to_bits(), s);
        } else {
            self.temp.push(s);
        }
        s
    }

    /// A free slot, to be written.
    fn take(&mut self) -> u32 {
        let s = self.free.pop().unwrap_or_else(|| {
            self.slots.push(vec![0.0; self.stride].into());
            self.facts.push(None);
            (self.slots.len() - 1) as u32
        });
        self.facts[s as usize] = None;
        s
    }

    /// The facts of the column in slot `s` (its first `n` points).
    fn facts(&mut self, s: u32, n: usize) -> Facts {
        *self.facts[s as usize].get_or_insert_with(|| column_facts(&self.slots[s as usize][..n]))
    }

    /// `op(col)` where the column's facts decide it for every point, as [`Columns::fold`]:
    /// the ops that are constant or the identity on each side of 0.
    fn fold_unary(&mut self, op: UnOp, s: u32, n: usize) -> Option<Val> {
        if !matches!(op, UnOp::Abs | UnOp::Relu | UnOp::Min0 | UnOp::Sign | UnOp::Step) {
            return None;
        }
        let f = self.facts(s, n);
        let (positive, negative) = (!f.nan && f.lo > 0.0, !f.nan && f.hi < 0.0);
        match op {
            UnOp::Abs | UnOp::Relu if positive => Some(Val::Col(s)),
            UnOp::Min0 if negative => Some(Val::Col(s)),
            UnOp::Relu if negative => Some(Val::One(0.0)),
            UnOp::Min0 if positive => Some(Val::One(0.0)),
            UnOp::Sign | UnOp::Step if positive || negative => Some(Val::One(op.eval(f.lo, 0.0))),
            _ => None,
        }
    }

    /// `col op c` (`right`) or `c op col` where the column's facts decide it for every point,
    /// bit for bit: the column itself, or one value; `None` where the column must be computed.
    fn fold(&mut self, op: BinOp, s: u32, c: f64, right: bool, n: usize) -> Option<Val> {
        if identity(op, c, right) {
            return Some(Val::Col(s));
        }
        let useful = match op {
            BinOp::Mul | BinOp::Add => c == 0.0,
            BinOp::Sub => right && c == 0.0,
            BinOp::Div => c == 0.0,
            BinOp::Max | BinOp::Min => true,
            BinOp::Pow => false,
        };
        if !useful {
            return None;
        }
        let f = self.facts(s, n);
        if f.nan {
            return None;
        }
        // Every value finite, or every value of one sign and not zero.
        let finite = f.lo > f64::NEG_INFINITY && f.hi < f64::INFINITY;
        let one_sign = f.lo > 0.0 || f.hi < 0.0;
        let value = |v: f64| Some(Val::One(if right { op.eval(v, c) } else { op.eval(c, v) }));
        match op {
            // 0 * v and 0 / v (v finite, not 0) are zeros whose sign is v's, v / 0 an infinity.
            BinOp::Mul if finite && one_sign => value(f.lo),
            BinOp::Div if one_sign && (finite || right) => value(f.lo),
            // v + 0 and v - 0 are v when v is not 0 (nor NaN).
            BinOp::Add | BinOp::Sub if one_sign => Some(Val::Col(s)),
            BinOp::Max if f.lo > c => Some(Val::Col(s)),
            BinOp::Max if f.hi < c => Some(Val::One(c)),
            BinOp::Min if f.hi < c => Some(Val::Col(s)),
            BinOp::Min if f.lo > c => Some(Val::One(c)),
            _ => None,
        }
    }

    /// Evaluates the nodes of `g` that `outs` need at each of `pts` and each y in `ys` (at
    /// most [`MAX_YS`]), in one sweep: a node that does not depend on y is computed once for
    /// all of them. Output k at `ys[j]` is then [`Columns::out`]`(j, k)`, until the next call.
    pub fn eval(&mut self, g: &Graph, ys: &[f64], pts: Points, outs: &[Id]) {
        assert!((1..=MAX_YS).contains(&ys.len()), "1..={MAX_YS} values of y");
        self.free.append(&mut self.temp);
        if self.cache.len() >= self.capacity {
            self.free.extend(self.cache.drain().map(|(_, s)| s));
        }
        let n = pts.len;
        self.len = n;
        // Which nodes the outputs need (children come before parents, so one backward sweep).
        self.live.clear();
        self.live.resize(g.len(), false);
        for o in outs {
            self.live[o.index()] = true;
        }
        for i in (0..g.len()).rev() {
            if self.live[i] {
                for a in g.node(Id::from_index(i)).args() {
                    self.live[a.index()] = true;
                }
            }
        }
        self.nodes.clear();
        for (id, node) in g.iter() {
            if !self.live[id.index()] {
                // Never read: a live node's operands are live.
                self.nodes.push(Entry { vals: [Val::One(f64::NAN); MAX_YS], hashes: [0; MAX_YS], ydep: false });
                continue;
            }
            let dep = match node {
                Node::Input(i) => i == Input::Y,
                Node::Const(_) => false,
                Node::Unary(_, a) => self.nodes[a.index()].ydep,
                Node::Binary(_, a, b) => self.nodes[a.index()].ydep || self.nodes[b.index()].ydep,
            };
            // Only columns of routines are worth keeping (and looking up): arithmetic is
            // cheaper to redo than to fetch from a cache too large for the processor's, and
            // would evict them sooner. The outputs are a candidate's own (its loss, its
            // gradient), rarely met again: looked up, not kept.
            let worth = match node {
                Node::Unary(op, _) => is_routine(op),
                Node::Binary(op, ..) => op == BinOp::Pow,
                _ => false,
            };
            let cache = match worth {
                false => Cache::No,
                true if outs.contains(&id) => Cache::Read,
                true => Cache::ReadWrite,
            };
            let mut e = Entry { vals: [Val::One(f64::NAN); MAX_YS], hashes: [0; MAX_YS], ydep: dep };
            // A node that does not depend on y is computed at the first y only.
            let distinct = if dep { ys.len() } else { 1 };
            for (j, &y) in ys[..distinct].iter().enumerate() {
                (e.vals[j], e.hashes[j]) = self.node(g, node, j, y, pts, cache);
            }
            if !dep {
                (e.vals, e.hashes) = ([e.vals[0]; MAX_YS], [e.hashes[0]; MAX_YS]);
            }
            self.nodes.push(e);
        }
        self.outs.clear();
        for o in outs {
            let mut slots = [0; MAX_YS];
            for (j, slot) in slots.iter_mut().enumerate().take(ys.len()) {
                *slot = match self.nodes[o.index()].vals[j] {
                    Val::Col(s) => s,
                    Val::One(v) => self.constant(v),
                };
            }
            self.outs.push(slots);
        }
    }

    /// Output `k` of the last [`Columns::eval`] at its `j`-th y.
    pub fn out(&self, j: usize, k: usize) -> &[f64] {
        &self.slots[self.outs[k][j] as usize][..self.len]
    }

    /// Node `a`'s value at the `j`-th y (a copy, so that a match on it may borrow `self` again).
    fn val(&self, a: Id, j: usize) -> Val {
        self.nodes[a.index()].vals[j]
    }

    /// One node's values and structural hash at the `j`-th y (its arguments' are known).
    fn node(&mut self, g: &Graph, node: Node, j: usize, y: f64, pts: Points, cache: Cache) -> (Val, u64) {
        let n = pts.len;
        let h = match node {
            Node::Input(Input::Y) => mix([1, y.to_bits(), 0, 0]),
            Node::Input(Input::P) => pts.hash,
            Node::Const(bits) => mix([3, bits, 0, 0]),
            Node::Unary(op, a) => mix([4, op as u64, self.nodes[a.index()].hashes[j], g.eps.to_bits()]),
            Node::Binary(op, a, b) => {
                mix([5 | (op as u64) << 8, self.nodes[a.index()].hashes[j], self.nodes[b.index()].hashes[j], 0])
            }
        };
        let val = match node {
            Node::Input(Input::Y) => Val::One(y),
            Node::Input(Input::P) => Val::Col(pts.slot),
            Node::Const(bits) => Val::One(f64::from_bits(bits)),
            Node::Unary(op, a) => match self.val(a, j) {
                Val::One(x) => Val::One(op.eval(x, g.eps)),
                Val::Col(s) if let Some(v) = self.fold_unary(op, s, n) => v,
                Val::Col(s) => self.compute(h, cache, n, |slots, out| {
                    let xs = &slots[s as usize][..n];
                    if let Some(f) = bessel(op) {
                        bessel_slice(f, xs, out)
                    } else if let Some(order) = bessel_scaled_derivative(op) {
                        m::bessel_scaled_derivative_slice(order, xs, out)
                    } else if is_routine(op) {
                        if !routine_column(op, xs, g.eps, out) {
                            op.eval_slice_reusing(xs, g.eps, out)
                        }
                    } else {
                        unary_slice(op, xs, g.eps, out)
                    }
                }),
            },
            Node::Binary(op, a, b) => match (self.nodes[a.index()].vals[j], self.nodes[b.index()].vals[j]) {
                (Val::One(x), Val::One(z)) => Val::One(op.eval(x, z)),
                // x * 1, 1 * x, x / 1, x - 0 and x + -0 are x, bit for bit, and the column's
                // range decides others (0 * x at y = 0, max(1, p)): the column is shared, or
                // the node is one value, not computed (unsimplified derivatives are full of them).
                (Val::Col(s), Val::One(z)) if let Some(v) = self.fold(op, s, z, true, n) => v,
                (Val::One(z), Val::Col(s)) if let Some(v) = self.fold(op, s, z, false, n) => v,
                (va, vb) => self.compute(h, cache, n, |slots, out| {
                    let arg = |v: Val| match v {
                        Val::One(x) => Arg::One(x),
                        Val::Col(s) => Arg::Col(&slots[s as usize][..n]),
                    };
                    binary_slice(op, arg(va), arg(vb), out)
                }),
            },
        };
        (val, h)
    }

    /// A node's column: from the cache, or computed by `f` into a free slot (whose facts, if
    /// asked for later, are its new values').
    fn compute(&mut self, h: u64, cache: Cache, n: usize, f: impl FnOnce(&[Box<[f64]>], &mut [f64])) -> Val {
        if cache != Cache::No
            && let Some(&s) = self.cache.get(&h)
        {
            return Val::Col(s);
        }
        let s = self.take();
        let mut buf = std::mem::take(&mut self.slots[s as usize]);
        f(&self.slots, &mut buf[..n]);
        self.slots[s as usize] = buf;
        if cache == Cache::ReadWrite {
            self.cache.insert(h, s);
        } else {
            self.temp.push(s);
        }
        Val::Col(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No two of ~200,000 distinct small expressions share a structural hash (a shared hash
    /// would hand one expression the other's cached column).
    #[test]
    fn structural_hashes_tell_subexpressions_apart() {
        let eps = 1e-7f64.to_bits();
        let mut level: Vec<u64> = vec![mix([1, 0f64.to_bits(), 0, 0]), mix([1, 1f64.to_bits(), 0, 0])];
        level.push(mix([2, 1000, 1e-7f64.to_bits(), (1.0 - 1e-7f64).to_bits()]));
        level.extend([0.0, 1.0, -1.0, 0.5, 2.0].map(|c: f64| mix([3, c.to_bits(), 0, 0])));
        let mut all = level.clone();
        for _ in 0..2 {
            let mut next = Vec::new();
            for &a in &level {
                for op in 0..UnOp::ALL.len() as u64 {
                    next.push(mix([4, op, a, eps]));
                }
                for &b in level.iter().take(40) {
                    for op in 0..BinOp::ALL.len() as u64 {
                        next.push(mix([5 | op << 8, a, b, 0]));
                    }
                }
            }
            all.extend(&next);
            level = next;
            level.truncate(2000);
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert!(n > 100_000, "{n} expressions");
        assert_eq!(all.len(), n, "{} collisions", n - all.len());
    }

    /// The vector facts are the scalar loop's (min and max by value; NaN flagged apart), at
    /// every length and with NaN in any lane.
    #[test]
    fn column_facts_agree_with_the_scalar_loop() {
        let mut rng = crate::rng::Rng::new(13);
        let palette = [0.0, -0.0, 1.0, -2.0, 1e300, -1e-300, f64::INFINITY, f64::NEG_INFINITY, f64::NAN];
        for case in 0..3000 {
            let n = 1 + rng.below(23);
            let c: Vec<f64> = (0..n)
                .map(|_| if rng.chance(0.3) { palette[rng.below(palette.len())] } else { rng.normal() })
                .collect();
            let (got, want) = (column_facts(&c), column_facts_scalar(&c));
            let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan());
            assert!(same(got.lo, want.lo) && same(got.hi, want.hi) && got.nan == want.nan, "case {case}: {c:?}");
        }
    }

    /// Where a column's facts fold an op (with a constant), the folded node has the bits that
    /// computing it would give at every point: columns of mixed signs, zeros of both signs,
    /// infinities and NaN, with constants on either side.
    #[test]
    fn folded_nodes_give_the_computed_bits() {
        let mut rng = crate::rng::Rng::new(9);
        let palette =
            [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, -3.0, 1e-300, -1e300, f64::INFINITY, f64::NEG_INFINITY, f64::NAN];
        let consts = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-7, f64::INFINITY, f64::NAN];
        let mut cols = Columns::new(16, 0);
        let (mut folded, mut kinds) = (0, std::collections::BTreeSet::new());
        for case in 0..3000 {
            let n = 1 + rng.below(16);
            // Mostly values of one sign (what folds), sometimes anything from the palette.
            let sign = if rng.chance(0.5) { 1.0 } else { -1.0 };
            let col: Vec<f64> = (0..n)
                .map(|_| if case % 3 == 0 { palette[rng.below(palette.len())] } else { sign * (0.1 + 3.0 * rng.f64()) })
                .collect();
            let pts = cols.points(&col);
            for &op in UnOp::ALL {
                let Some(v) = cols.fold_unary(op, pts.slot, n) else { continue };
                folded += 1;
                kinds.insert((100 + op as u8, matches!(v, Val::One(_))));
                for &x in &col {
                    let got = match v {
                        Val::One(g) => g,
                        Val::Col(_) => x,
                    };
                    assert_eq!(got.to_bits(), op.eval(x, 1e-7).to_bits(), "{op:?} at {x}: {col:?}");
                }
            }
            for &op in BinOp::ALL {
                for &c in &consts {
                    for right in [true, false] {
                        let Some(v) = cols.fold(op, pts.slot, c, right, n) else { continue };
                        folded += 1;
                        kinds.insert((op as u8, matches!(v, Val::One(_))));
                        for &x in &col {
                            let want = if right { op.eval(x, c) } else { op.eval(c, x) };
                            let got = match v {
                                Val::One(g) => g,
                                Val::Col(s) => {
                                    assert_eq!(s, pts.slot);
                                    x
                                }
                            };
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{op:?}, const {c} right {right}, at {x}: {col:?}"
                            );
                        }
                    }
                }
            }
            cols.free.push(pts.slot);
        }
        // Each rule folded something: the shared column and the one value, for every op.
        assert!(folded > 10_000, "{folded} folds");
        assert!(kinds.len() >= 16, "{kinds:?}");
    }

    /// Every routine written in passes gives each point the bits of the op's reference: the
    /// screen's verdicts must not hang on which path computed a column.
    #[test]
    fn routine_columns_give_the_reference_bits() {
        let xs = crate::reference::mathref::test_points(&mut crate::rng::Rng::new(5));
        let mut written = Vec::new();
        for &op in UnOp::ALL {
            for eps in [1e-7, 0.0] {
                for len in [xs.len(), 3] {
                    let mut out = vec![0.0; len];
                    if !routine_column(op, &xs[..len], eps, &mut out) {
                        continue;
                    }
                    written.push(op);
                    for (&x, &v) in xs.iter().zip(&out) {
                        assert_eq!(v.to_bits(), op.eval(x, eps).to_bits(), "{op:?}({x}), eps {eps}");
                    }
                }
            }
        }
        // Every routine of the search space is written, but the Bessel functions (their own
        // four-lane series).
        for &op in UnOp::ALL {
            if is_routine(op) && bessel(op).is_none() && op.search_index().is_some() {
                assert!(written.contains(&op), "{op:?} has no column in passes");
            }
        }
    }
}
