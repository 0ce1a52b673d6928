//! The general pass of a kernel row (every class at its own `y`: the off-target pass of a
//! label kernel whose loss does not vanish off the label, and the dense pass) as a columnar
//! program that the generated code calls.
//!
//! Why not emit it: this pass evaluates the whole loss graph and its derivative on every
//! element, and in Cranelift 0.135's 128-bit code it ran at 0.6-1.1x XLA (M1, C2, dense
//! targets at 8192x100). Here rustc compiles the same `mathlib` routines for AVX2 + FMA
//! (8 lanes) and AVX-512 (16 lanes), and the program runs one graph node at a time over a
//! block of vectors, so dispatching a node costs once per block. The vectors of a group of
//! rows lie one after another in the kernel's scratch, and a block is a window of them (up to
//! 32 vectors: see `Program::block_vectors`) that the steps read and write in place. A
//! routine's loop interleaves four vectors' dependency chains (`mathlib::Multi`), which a
//! routine's latency needs (in blocks of 64 lanes, one vector at a time, C2's
//! off-target pass took 1.7x as long). Where all the lanes of the vectors fall on one side
//! of a routine's range split, only that side is computed (`mathlib::split!`).
//! The lanes compute what the [`Scalar`] machine computes (the tests check every op bit for
//! bit), and a processor without AVX2 + FMA runs the baseline build, which evaluates element
//! by element on `Scalar`.

use super::mathlib::{Multi, Scalar, Vm, sigmoid_family};
use super::vm;
use crate::ir::{BinOp, Graph, Input, Node, UnOp};
use std::collections::HashMap;

/// A graph as steps in node order, evaluated a block of lanes at a time.
pub struct Program {
    steps: Vec<Step>,
    /// The nodes of `y` and `p`, whose blocks the passes fill before evaluating.
    y_at: Option<usize>,
    p_at: Option<usize>,
    /// The nodes of `L` and `s = p dL/dp`.
    loss: usize,
    s: usize,
    eps: f32,
}

#[derive(Clone, Copy)]
enum Step {
    Y,
    P,
    /// A constant; its block is filled only where a step other than [`Step::BinaryK`] reads
    /// it, or it is an output.
    Const {
        value: f32,
        fill: bool,
    },
    Unary(UnOp, u32),
    Binary(BinOp, u32, u32),
    /// `a op k` (`k op a` where `k_left`) with the constant `k` broadcast in registers rather
    /// than read from a block its own step filled: a third of a loss's nodes are constants.
    BinaryK {
        op: BinOp,
        a: u32,
        k: f32,
        k_left: bool,
    },
    /// Two or three of `sigmoid(a)`, `dsigmoid(a)` and `dsigmoid_d(a)` in one step (one exp,
    /// `mathlib::sigmoid_family`): this node, `op`, is the first of them in node order, and
    /// the step fills `nodes` (in [`FAMILY`]'s order, `None` where the graph has no such node).
    SigmoidFamily {
        op: UnOp,
        a: u32,
        nodes: [Option<u32>; 3],
    },
    /// A node an earlier step filled: a later member of a sigmoid family.
    Filled(UnOp, u32),
}

/// The ops that `mathlib::sigmoid_family` computes from one exp, in its order: a loss with one
/// of them has the next in its gradient.
const FAMILY: [UnOp; 3] = [UnOp::Sigmoid, UnOp::Dsigmoid, UnOp::DsigmoidD];

impl Program {
    /// The program of a fused graph (outputs `L` and `s`).
    pub fn new(g: &Graph) -> Program {
        let member = |op: UnOp| FAMILY.iter().position(|&f| f == op);
        // The sigmoid family's nodes of each argument.
        let mut families: HashMap<u32, [Option<u32>; 3]> = HashMap::new();
        for (id, n) in g.iter() {
            if let Node::Unary(op, a) = n
                && let Some(k) = member(op)
            {
                families.entry(a.index() as u32).or_default()[k] = Some(id.index() as u32);
            }
        }
        let constant = |id: crate::ir::Id| g.node(id).as_const().map(|v| v as f32);
        // Constants read from their block: outputs, and operands of steps other than BinaryK.
        let mut read = vec![false; g.len()];
        for (_, id) in &g.outputs {
            read[id.index()] = true;
        }
        for (_, n) in g.iter() {
            match n {
                Node::Unary(_, a) => read[a.index()] = true,
                Node::Binary(_, a, b) if constant(a).is_some() == constant(b).is_some() => {
                    read[a.index()] = true;
                    read[b.index()] = true;
                }
                _ => {}
            }
        }
        let steps = g
            .iter()
            .map(|(id, n)| match n {
                Node::Input(Input::Y) => Step::Y,
                Node::Input(Input::P) => Step::P,
                Node::Const(bits) => Step::Const { value: f64::from_bits(bits) as f32, fill: read[id.index()] },
                Node::Unary(op, a) if member(op).is_some() => {
                    let (i, a) = (id.index() as u32, a.index() as u32);
                    let nodes = families[&a];
                    let present = nodes.iter().flatten();
                    if present.clone().count() < 2 {
                        Step::Unary(op, a)
                    } else if present.min() == Some(&i) {
                        Step::SigmoidFamily { op, a, nodes }
                    } else {
                        Step::Filled(op, a)
                    }
                }
                Node::Unary(op, a) => Step::Unary(op, a.index() as u32),
                Node::Binary(op, a, b) => match (constant(a), constant(b)) {
                    (Some(k), None) => Step::BinaryK { op, a: b.index() as u32, k, k_left: true },
                    (None, Some(k)) => Step::BinaryK { op, a: a.index() as u32, k, k_left: false },
                    _ => Step::Binary(op, a.index() as u32, b.index() as u32),
                },
            })
            .collect();
        let input = |which: Input| g.iter().position(|(_, n)| n == Node::Input(which));
        Program {
            steps,
            y_at: input(Input::Y),
            p_at: input(Input::P),
            loss: g.outputs[0].1.index(),
            s: g.outputs[1].1.index(),
            eps: g.eps as f32,
        }
    }

    /// Vectors per block for vectors of `bytes`, at most `most`: as many as keep all the
    /// nodes' blocks within 128 KiB, and at least 8. Larger blocks dispatch each node once
    /// for more rows; measured, blocks past L1 (R1 at 32 vectors) still gained, and a budget
    /// of 32 KiB made R1 1.1x slower.
    fn block_vectors(&self, bytes: usize, most: usize) -> usize {
        (128 * 1024 / (self.steps.len() * bytes)).clamp(8, most)
    }

    /// `(L, s)` at one point, on the [`Scalar`] machine.
    fn eval_scalar(&self, y: f32, p: f32, vals: &mut Vec<f32>) -> (f32, f32) {
        vals.clear();
        for step in &self.steps {
            let v = match *step {
                Step::Y => y,
                Step::P => p,
                Step::Const { value, .. } => value,
                Step::Unary(op, a) | Step::Filled(op, a) | Step::SigmoidFamily { op, a, .. } => {
                    vm::unary(&mut Scalar, op, vals[a as usize], self.eps)
                }
                Step::Binary(op, a, b) => vm::binary(&mut Scalar, op, vals[a as usize], vals[b as usize]),
                Step::BinaryK { op, a, k, k_left: true } => vm::binary(&mut Scalar, op, k, vals[a as usize]),
                Step::BinaryK { op, a, k, k_left: false } => vm::binary(&mut Scalar, op, vals[a as usize], k),
            };
            vals.push(v);
        }
        (vals[self.loss], vals[self.s])
    }
}

/// Rows per call of the kernel's general rows helper (`jit_rt::general_rows`): one vector of
/// label points on 16 lanes, and the rows' label terms in one program run instead of one each.
pub const GROUP_ROWS: usize = 16;

/// Floats per row of the general rows helper's scratch (`p` and `s`): the classes rounded up
/// to whole vectors of the widest build.
pub fn row_stride(classes: usize) -> usize {
    classes.div_ceil(16) * 16
}

/// Scratch floats in lines of one 16-lane vector, aligned as one: the SIMD general passes
/// read and write a row group's scratch rows as vectors in place.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct Line(pub [f32; 16]);

impl Line {
    /// Zeroed scratch of at least `floats` floats.
    pub fn scratch(floats: usize) -> Vec<Line> {
        vec![Line([0.0; 16]); floats.div_ceil(16)]
    }

    /// The floats of `lines`.
    pub fn floats(lines: &mut [Line]) -> &mut [f32] {
        // SAFETY: a `Line` is 16 floats with no padding (`repr(C)`, 64 bytes).
        unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * 16) }
    }
}

/// What the general rows helper runs for a kernel: the pass over every class, then the terms
/// at the label classes.
pub struct RowsPlan {
    /// The off-target program (`y` folded in) for labels and mixup, the general one for dense
    /// targets.
    pub pass: Program,
    pub labels: LabelTerms,
}

/// The label classes' terms of a row group.
pub enum LabelTerms {
    /// Dense targets: every class was in the pass.
    None,
    /// Integer labels: the on-target program (`y` folded in) at each row's label.
    Labels(Program),
    /// Mixup: the general program at each row's two labels, whose targets are
    /// `keep * lam + y_off` and `keep * (1 - lam) + y_off` (`keep = 1 - alpha`), their sum
    /// when both labels are one class.
    Mixup { general: Program, keep: f32, y_off: f32 },
}

/// The rows of a row group to run the general pass over: `p` holds each row's
/// `exp(z - m)` (rows of `stride` floats) and gets its `p = e * inv_s[r]` in their place (the
/// SIMD builds' lanes past `c` get copies of the row's last class); `y` holds each row's dense
/// targets (rows of `c`), or is `None` when `y` is folded into the program; `s` gets each
/// row's `s` (rows of `stride`) but at its label classes `labels[r]` (-1: none), which the
/// caller evaluates at their own `y` and writes. The SIMD builds take their own [`avx512::row_stride`]
/// and scratch of [`GROUP_ROWS`] rows.
pub struct Rows<'a> {
    pub p: &'a mut [f32],
    pub s: &'a mut [f32],
    pub stride: usize,
    pub y: Option<&'a [f32]>,
    pub c: usize,
    pub inv_s: &'a [f32],
    pub labels: &'a [[i64; 2]],
}

impl Rows<'_> {
    /// Checks the slices' lengths against the row count (`inv_s.len()`), so that the passes
    /// may index within them freely.
    fn check(&self, lanes: usize) -> usize {
        let n = self.inv_s.len();
        assert!(n <= GROUP_ROWS && self.labels.len() >= n);
        assert!(self.stride >= self.c.div_ceil(lanes) * lanes);
        assert!(self.p.len() >= n * self.stride && self.s.len() >= n * self.stride);
        assert!(self.y.is_none_or(|y| y.len() >= n * self.c));
        n
    }
}

/// The general pass over a group of rows, the baseline build: returns each row's sums of `L`
/// and `s` over the classes other than its labels, into `sums`.
pub fn graph_rows_body(prog: &Program, rows: Rows, sums: &mut [(f32, f32)]) {
    let n = rows.check(1);
    assert!(sums.len() >= n);
    let (c, stride) = (rows.c, rows.stride);
    let mut vals = Vec::with_capacity(prog.steps.len());
    for r in 0..n {
        let (mut sum_l, mut sum_s) = (0f32, 0f32);
        for i in 0..c {
            let at = r * stride + i;
            let p = rows.p[at] * rows.inv_s[r];
            rows.p[at] = p;
            let (l, s) = prog.eval_scalar(rows.y.map_or(0.0, |y| y[r * c + i]), p, &mut vals);
            let keep = !rows.labels[r].contains(&(i as i64));
            let (l, s) = if keep { (l, s) } else { (0.0, 0.0) };
            rows.s[at] = s;
            sum_l += l;
            sum_s += s;
        }
        sums[r] = (sum_l, sum_s);
    }
}

/// `L` and `s` of a program at each point `(ys[i], ps[i])` (`ys` is `None` when `y` is folded
/// in): the label classes of a group of rows. The baseline build.
pub fn points_body(prog: &Program, ys: Option<&[f32]>, ps: &[f32], ls: &mut [f32], ss: &mut [f32]) {
    assert!(ys.is_none_or(|y| y.len() >= ps.len()));
    let mut vals = Vec::with_capacity(prog.steps.len());
    for (i, ((&p, l), s)) in ps.iter().zip(ls).zip(ss).enumerate() {
        (*l, *s) = prog.eval_scalar(ys.map_or(0.0, |y| y[i]), p, &mut vals);
    }
}

/// A row's label classes as `(vector, lane)` for vectors of `lanes` lanes (`usize::MAX` for
/// no label): the SIMD passes leave each label's lane out of the row's sums.
#[inline(always)]
fn label_lanes(labels: [i64; 2], lanes: usize) -> [(usize, usize); 2] {
    labels.map(|k| if k < 0 { (usize::MAX, 0) } else { (k as usize / lanes, k as usize % lanes) })
}

/// The bits of sqrt(1/2) in f32, and what [`Vm::log_split`]'s integer form adds to
/// a float's bits: 1.0's bits less those.
const SQRT_HALF_BITS: i32 = std::f32::consts::FRAC_1_SQRT_2.to_bits() as i32;
const LOG_SPLIT_SHIFT: i32 = 1f32.to_bits() as i32 - SQRT_HALF_BITS;

/// Ops whose routines take one side of a range split only where every lane of the chain
/// does (the Bessel family, erf and erfc split at small and large arguments): on four
/// vectors that holds less often. Measured at 8192x100 with labels, two vectors per chain
/// for these made B1, B2 and R0 1.08-1.11x faster and M2 (whose Bessel argument is always
/// small) 1.08x slower than four for every op.
const fn short_chain(op: UnOp) -> bool {
    use UnOp::*;
    matches!(
        op,
        Erf | Erfc | BesselI0 | BesselI0e | BesselI1 | BesselI1e | BesselI1x | BesselI1ex | BesselI0eD | BesselI1eD
    )
}

/// What both SIMD builds share, for a machine `$m` on vectors `$v` compiled with `$features`:
/// the ops on one vector (for the tests), the evaluation of a program over a block, its per-op
/// loops, and the block buffer.
#[cfg(target_arch = "x86_64")]
macro_rules! block_eval {
    ($m:ident, $v:ty, $features:literal, $lanes:literal) => {
        #[doc = concat!("`op(x)` on vectors of ", $lanes, " lanes, `CHAIN` at a time as a program runs it")]
        /// (the tests compare it with [`Scalar`] per lane); `xs.len()` is a multiple of `CHAIN`.
        ///
        /// # Safety
        #[doc = concat!("Only where the processor has ", $features, ".")]
        #[target_feature(enable = $features)]
        pub fn unary(op: UnOp, xs: &[$v], eps: f32) -> Vec<$v> {
            assert!(xs.len().is_multiple_of(CHAIN));
            let mut out = xs.to_vec();
            unary_block(op, xs, &mut out, eps);
            out
        }

        #[doc = concat!("`a op b` on ", $lanes, " lanes.")]
        ///
        /// # Safety
        #[doc = concat!("Only where the processor has ", $features, ".")]
        #[target_feature(enable = $features)]
        pub fn binary(op: BinOp, a: $v, b: $v) -> $v {
            vm::binary(&mut $m, op, a, b)
        }

        /// Every node of the program over the first `n` vectors of a block, node `i`'s
        /// vectors at `at[i]`. One node at a time: the op is matched once per vector, and the
        /// block keeps the node values in L1. (`y` and `p` are in their nodes' blocks
        /// already.) The vectors past `n`, up to a whole number of chains, are computed on
        /// too and never read: each block holds that many.
        ///
        /// # Safety
        /// Each `at[i]` points at `n.next_multiple_of(CHAIN)` vectors, and no two overlap.
        #[target_feature(enable = $features)]
        unsafe fn eval(prog: &Program, n: usize, at: &[*mut $v]) {
            const { assert!(K % CHAIN == 0) };
            let n = n.next_multiple_of(CHAIN);
            // SAFETY: the contract above; a step reads only earlier nodes and writes its own
            // (a sigmoid family also its later nodes'), so no block is both read and written.
            let arg = |a: u32| unsafe { std::slice::from_raw_parts(at[a as usize].cast_const(), n) };
            let out = |i: u32| unsafe { std::slice::from_raw_parts_mut(at[i as usize], n) };
            for (i, step) in prog.steps.iter().enumerate() {
                let i = i as u32;
                match *step {
                    Step::Y | Step::P => {}
                    Step::Const { value, fill: true } => out(i).fill(Vm::c(&mut $m, value)),
                    Step::Const { fill: false, .. } => {}
                    Step::Unary(op, a) => unary_block(op, arg(a), out(i), prog.eps),
                    Step::Binary(op, a, b) => binary_block(op, arg(a), arg(b), out(i)),
                    Step::BinaryK { op, a, k, k_left } => binary_k_block(op, arg(a), k, k_left, out(i)),
                    Step::SigmoidFamily { a, nodes, .. } => sigmoid_family_block(arg(a), nodes.map(|n| n.map(out))),
                    Step::Filled(..) => {}
                }
            }
        }

        /// `out[j] = op(a[j])`: a loop compiled once per op, the op a constant in it, so that
        /// `vm`'s own match folds away and the loop holds only the op's instructions (matched
        /// per vector, the dispatch cost more than most ops).
        #[target_feature(enable = $features)]
        fn unary_block(op: UnOp, a: &[$v], out: &mut [$v], eps: f32) {
            struct Block<'a>(&'a [$v], &'a mut [$v], f32);
            impl PerUnOp for Block<'_> {
                type Out = ();
                #[inline(always)]
                fn call<const OP: usize>(self) {
                    // SAFETY: reached only from `unary_block`, which runs where the processor
                    // has the build's features.
                    unsafe { unary_loop::<OP>(self.0, self.1, self.2) }
                }
            }
            op.with_const(Block(a, out, eps))
        }

        /// `outs[k][j] = FAMILY[k](a[j])` for each of `outs` that is there.
        #[target_feature(enable = $features)]
        fn sigmoid_family_block(a: &[$v], mut outs: [Option<&mut [$v]>; 3]) {
            let want = outs.each_ref().map(Option::is_some);
            for (j, a) in a.chunks_exact(CHAIN).enumerate() {
                let vs = sigmoid_family(&mut Multi::<_, CHAIN>(&mut $m), a.try_into().unwrap(), want);
                for (out, v) in outs.iter_mut().zip(vs) {
                    if let Some(out) = out {
                        out[j * CHAIN..(j + 1) * CHAIN].copy_from_slice(&v);
                    }
                }
            }
        }

        /// `CHAIN` vectors at a time (see [`Multi`]), half as many for the ops of
        /// [`short_chain`].
        #[target_feature(enable = $features)]
        fn unary_loop<const OP: usize>(a: &[$v], out: &mut [$v], eps: f32) {
            let op = const { UnOp::ALL[OP] };
            if const { short_chain(UnOp::ALL[OP]) } {
                for (o, a) in out.chunks_exact_mut(CHAIN / 2).zip(a.chunks_exact(CHAIN / 2)) {
                    let m = &mut Multi::<_, { CHAIN / 2 }>(&mut $m);
                    o.copy_from_slice(&vm::unary(m, op, a.try_into().unwrap(), eps));
                }
            } else {
                for (o, a) in out.chunks_exact_mut(CHAIN).zip(a.chunks_exact(CHAIN)) {
                    let m = &mut Multi::<_, CHAIN>(&mut $m);
                    o.copy_from_slice(&vm::unary(m, op, a.try_into().unwrap(), eps));
                }
            }
        }

        /// `out[j] = a[j] op b[j]`, compiled once per op like [`unary_block`].
        #[target_feature(enable = $features)]
        fn binary_block(op: BinOp, a: &[$v], b: &[$v], out: &mut [$v]) {
            struct Block<'a>(&'a [$v], &'a [$v], &'a mut [$v]);
            impl PerBinOp for Block<'_> {
                type Out = ();
                #[inline(always)]
                fn call<const OP: usize>(self) {
                    // SAFETY: as in `unary_block`.
                    unsafe { binary_loop::<OP>(self.0, self.1, self.2) }
                }
            }
            op.with_const(Block(a, b, out))
        }

        /// `out[j] = a[j] op k` (or `k op a[j]`), compiled once per op like [`unary_block`].
        #[target_feature(enable = $features)]
        fn binary_k_block(op: BinOp, a: &[$v], k: f32, k_left: bool, out: &mut [$v]) {
            struct Block<'a>(&'a [$v], f32, bool, &'a mut [$v]);
            impl PerBinOp for Block<'_> {
                type Out = ();
                #[inline(always)]
                fn call<const OP: usize>(self) {
                    // SAFETY: as in `unary_block`.
                    unsafe { binary_k_loop::<OP>(self.0, self.1, self.2, self.3) }
                }
            }
            op.with_const(Block(a, k, k_left, out))
        }

        #[target_feature(enable = $features)]
        fn binary_k_loop<const OP: usize>(a: &[$v], k: f32, k_left: bool, out: &mut [$v]) {
            let op = const { BinOp::ALL[OP] };
            let k = Vm::c(&mut $m, k);
            if k_left {
                for (o, &a) in out.iter_mut().zip(a) {
                    *o = vm::binary(&mut $m, op, k, a);
                }
            } else {
                for (o, &a) in out.iter_mut().zip(a) {
                    *o = vm::binary(&mut $m, op, a, k);
                }
            }
        }

        #[target_feature(enable = $features)]
        fn binary_loop<const OP: usize>(a: &[$v], b: &[$v], out: &mut [$v]) {
            let op = const { BinOp::ALL[OP] };
            for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                *o = vm::binary(&mut $m, op, a, b);
            }
        }

        /// [`super::graph_rows_body`] on this build's vectors. The rows are whole vectors
        /// one after another in the scratch (`stride` is this build's [`row_stride`]), so a
        /// block is a window of them: `p`'s block is the scratch itself, normalised in place,
        /// and the steps of `L` and `s` write their windows of the flat `L` buffer and of the
        /// `s` scratch, with no copy in or out. Each row's sums add its vectors in order, so
        /// they do not depend on where the blocks fall.
        ///
        /// # Safety
        #[doc = concat!("Only where the processor has ", $features, ".")]
        #[target_feature(enable = $features)]
        pub fn graph_rows_body(prog: &Program, rows: Rows, sums: &mut [(f32, f32)]) {
            let n = rows.check(W);
            assert!(sums.len() >= n);
            let c = rows.c;
            let nvec = c.div_ceil(W);
            assert_eq!(rows.stride, nvec * W, "rows of whole vectors");
            // `eval` computes whole chains: the vectors rounded up to them.
            let total = n * nvec;
            let padded = total.next_multiple_of(CHAIN);
            assert!(rows.p.len() >= padded * W && rows.s.len() >= padded * W);
            let (p, s) = (rows.p.as_mut_ptr().cast::<$v>(), rows.s.as_mut_ptr().cast::<$v>());
            // `eval` reads and writes them as vectors in place ([`Line`]).
            assert!(p.is_aligned() && s.is_aligned(), "vector-aligned scratch");
            let zero = Vm::c(&mut $m, 0.0);
            // The lanes of a row's last vector that hold classes.
            let last = c - (nvec - 1) * W;
            // SAFETY (the loads and stores of `p`, `s` and the buffers below): vectors below
            // `padded` (asserted above, and the buffers' sizes).
            for r in 0..n {
                let inv = Vm::c(&mut $m, rows.inv_s[r]);
                for j in r * nvec..(r + 1) * nvec {
                    unsafe {
                        let v = Vm::mul(&mut $m, p.add(j).read(), inv);
                        // The lanes past c get a copy of the row's last class: their results
                        // are dropped, and so a routine's range split (`mathlib::split!`) is
                        // decided by the row's own values, not by padding (at p = 0,
                        // `exp(-(p / eps)^2)` took both sides in every row's last vector).
                        let v = if j + 1 == (r + 1) * nvec { pad_last(v, last) } else { v };
                        p.add(j).write(v);
                    }
                }
            }
            // SAFETY: this thread's buffers, and nothing else borrows them while this pass
            // runs (it calls no code that could reach them).
            let ([lbuf, ybuf], vals, at) = unsafe {
                (&mut *FLAT.with(|f| f.as_ptr()), &mut *VALS.with(|v| v.as_ptr()), &mut *AT.with(|a| a.as_ptr()))
            };
            lbuf.resize(padded, zero);
            if prog.y_at.is_some() {
                ybuf.resize(padded, zero);
                for r in 0..n {
                    for j in 0..nvec {
                        let v = match rows.y {
                            // SAFETY: within row r's `c` targets (`check`), the last vector's
                            // lanes past c not read.
                            Some(y) => unsafe {
                                let from = y.as_ptr().add(r * c + j * W);
                                if j + 1 == nvec {
                                    pad_last(load_first(from, last), last)
                                } else {
                                    from.cast::<$v>().read_unaligned()
                                }
                            },
                            None => zero,
                        };
                        ybuf[r * nvec + j] = v;
                    }
                }
            }
            vals.resize(prog.steps.len(), [zero; K]);
            // Outputs that a step computes write their flat windows directly; any other
            // (an input or a constant) is copied there after the block.
            let computed = |i: usize| !matches!(prog.steps[i], Step::Y | Step::P | Step::Const { .. });
            let s_direct = computed(prog.s);
            let l_direct = computed(prog.loss) && prog.loss != prog.s;
            let block = prog.block_vectors(size_of::<$v>(), K) / CHAIN * CHAIN;
            let (l, y) = (lbuf.as_mut_ptr(), ybuf.as_mut_ptr());
            let mut t0 = 0;
            while t0 < total {
                let m = (total - t0).min(block);
                at.clear();
                at.extend(vals.iter_mut().map(|b| b.as_mut_ptr()));
                unsafe {
                    if let Some(i) = prog.p_at {
                        at[i] = p.add(t0);
                    }
                    if let Some(i) = prog.y_at {
                        at[i] = y.add(t0);
                    }
                    if s_direct {
                        at[prog.s] = s.add(t0);
                    }
                    if l_direct {
                        at[prog.loss] = l.add(t0);
                    }
                    // SAFETY: every block holds `block` or K vectors, which are whole chains,
                    // and the flat windows lie below `padded`; the blocks are distinct nodes'.
                    eval(prog, m, at);
                    for (direct, node, to) in [(s_direct, prog.s, s), (l_direct, prog.loss, l)] {
                        if !direct {
                            std::ptr::copy_nonoverlapping(at[node].cast_const(), to.add(t0), m);
                        }
                    }
                }
                t0 += m;
            }
            // Per row, the sums of its classes but its labels (the caller evaluates those at
            // their own y, and writes their s). The labels' lanes are dropped in registers: a
            // store of them into the buffers, then a load, stalled on the store's forwarding.
            for r in 0..n {
                let [(j0, lane0), (j1, lane1)] = label_lanes(rows.labels[r], W);
                let (mut acc_l, mut acc_s) = (zero, zero);
                for j in 0..nvec {
                    let k = r * nvec + j;
                    // The lanes to add, as bits: the classes less the labels, without a branch
                    // (which of the row's vectors holds a label is anyone's guess).
                    let mut keep = if j + 1 == nvec { (1 << last) - 1 } else { (1 << W) - 1 };
                    keep &= !(if j == j0 { 1 << lane0 } else { 0 });
                    keep &= !(if j == j1 { 1 << lane1 } else { 0 });
                    let (lv, sv) = unsafe { (l.add(k).read(), s.add(k).read()) };
                    acc_l = Vm::add(&mut $m, acc_l, keep_lanes(lv, keep));
                    acc_s = Vm::add(&mut $m, acc_s, keep_lanes(sv, keep));
                }
                sums[r] = (hsum(acc_l), hsum(acc_s));
            }
        }

        #[doc = concat!("[`super::points_body`] on ", $lanes, " lanes, at most `", $lanes, " * K` points")]
        /// (the label classes of a group of rows).
        ///
        /// # Safety
        #[doc = concat!("Only where the processor has ", $features, ".")]
        #[target_feature(enable = $features)]
        pub fn points_body(prog: &Program, ys: Option<&[f32]>, ps: &[f32], ls: &mut [f32], ss: &mut [f32]) {
            let n = ps.len();
            assert!(n <= W * K && ls.len() >= n && ss.len() >= n && ys.is_none_or(|y| y.len() >= n));
            let zero = Vm::c(&mut $m, 0.0);
            // SAFETY: as in `graph_rows_body`.
            let (vals, at) = unsafe { (&mut *VALS.with(|v| v.as_ptr()), &mut *AT.with(|a| a.as_ptr())) };
            vals.resize(prog.steps.len(), [zero; K]);
            let nvec = n.div_ceil(W);
            let lanes = |j: usize| (n - j * W).min(W);
            for j in 0..nvec {
                // SAFETY: the lanes past n are not read.
                let p = unsafe { load_first(ps.as_ptr().add(j * W), lanes(j)) };
                put(vals, prog.p_at, j, p);
                let y = match ys {
                    // SAFETY: as above.
                    Some(y) => unsafe { load_first(y.as_ptr().add(j * W), lanes(j)) },
                    None => zero,
                };
                put(vals, prog.y_at, j, y);
            }
            at.clear();
            at.extend(vals.iter_mut().map(|b| b.as_mut_ptr()));
            // SAFETY: the nodes' own blocks of K vectors, and nvec <= K.
            unsafe { eval(prog, nvec, at) };
            for (j, (&l, &s)) in vals[prog.loss][..nvec].iter().zip(&vals[prog.s][..nvec]).enumerate() {
                // SAFETY: the lanes past n are not written.
                unsafe {
                    store_first(ls.as_mut_ptr().add(j * W), lanes(j), l);
                    store_first(ss.as_mut_ptr().add(j * W), lanes(j), s);
                }
            }
        }

        /// Vector `j` of an input's block (`at`: its node, if the program reads it).
        #[inline(always)]
        fn put(vals: &mut [Block], at: Option<usize>, j: usize, v: $v) {
            if let Some(at) = at {
                vals[at][j] = v;
            }
        }

        /// This build's floats per row of the general rows helper's scratch: the classes
        /// rounded up to whole vectors, so that the rows' vectors follow one another.
        pub fn row_stride(classes: usize) -> usize {
            classes.div_ceil(W) * W
        }

        thread_local! {
            /// Node values of a block, reused across rows (a program's size is not known until
            /// run time).
            static VALS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
            /// A row group's `L` and `y`, laid out as the scratch rows.
            static FLAT: RefCell<[Vec<$v>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
            /// Each node's vectors in the block being evaluated.
            static AT: RefCell<Vec<*mut $v>> = const { RefCell::new(Vec::new()) };
        }
    };
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    //! The AVX2 + FMA build. The [`Avx`] machine's methods are `#[inline(always)]` without a
    //! target feature of their own: they, `vm::unary` and the `mathlib` routines inline into
    //! the `#[target_feature]` functions below, where the intrinsics compile to AVX2.
    //! (Called from a function without the feature, the intrinsics would not inline.) Every
    //! intrinsic call is sound because these functions run only where the processor has
    //! AVX2 + FMA (`Helpers::for_host` checks).

    use super::*;
    use crate::ir::op::{PerBinOp, PerUnOp};
    use std::arch::x86_64::*;
    use std::cell::RefCell;

    const W: usize = 8;
    /// The most vectors per block (see [`Program::block_vectors`]).
    const K: usize = 32;
    type Block = [__m256; K];
    /// Vectors per chain of a routine's loop (see [`Multi`]).
    const CHAIN: usize = 4;

    /// The math library's machine on 8 lanes, with the [`Scalar`] machine's results.
    pub struct Avx;

    /// `min` and `max` give a NaN when either operand is one; the comparison instructions
    /// would return the second operand.
    #[inline(always)]
    fn nan_if_either(a: __m256, b: __m256, r: __m256) -> __m256 {
        unsafe {
            let unordered = _mm256_cmp_ps::<_CMP_UNORD_Q>(a, b);
            _mm256_blendv_ps(r, _mm256_set1_ps(f32::NAN), unordered)
        }
    }

    /// Vm methods that are one intrinsic on their operands.
    macro_rules! one_intrinsic {
        ($($f:ident($($a:ident),*) => $intrinsic:ident;)*) => {
            $(#[inline(always)]
            fn $f(&mut self, $($a: __m256),*) -> __m256 {
                unsafe { $intrinsic($($a),*) }
            })*
        };
    }

    impl Vm for Avx {
        type V = __m256;
        type M = __m256;
        one_intrinsic! {
            add(a, b) => _mm256_add_ps; sub(a, b) => _mm256_sub_ps; mul(a, b) => _mm256_mul_ps;
            div(a, b) => _mm256_div_ps; and(a, b) => _mm256_and_ps; or(a, b) => _mm256_or_ps;
            fma(a, b, c) => _mm256_fmadd_ps; sqrt(a) => _mm256_sqrt_ps; floor(a) => _mm256_floor_ps;
        }
        #[inline(always)]
        fn c(&mut self, v: f32) -> __m256 {
            unsafe { _mm256_set1_ps(v) }
        }
        #[inline(always)]
        fn neg(&mut self, a: __m256) -> __m256 {
            unsafe { _mm256_xor_ps(a, _mm256_set1_ps(-0.0)) }
        }
        #[inline(always)]
        fn abs(&mut self, a: __m256) -> __m256 {
            unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), a) }
        }
        /// IEEE 754-2019 minimum: either order's `minps` and their OR, so min(-0, +0) = -0.
        #[inline(always)]
        fn min(&mut self, a: __m256, b: __m256) -> __m256 {
            unsafe { nan_if_either(a, b, _mm256_or_ps(_mm256_min_ps(a, b), _mm256_min_ps(b, a))) }
        }
        /// IEEE 754-2019 maximum: the AND of both orders, so max(-0, +0) = +0.
        #[inline(always)]
        fn max(&mut self, a: __m256, b: __m256) -> __m256 {
            unsafe { nan_if_either(a, b, _mm256_and_ps(_mm256_max_ps(a, b), _mm256_max_ps(b, a))) }
        }
        #[inline(always)]
        fn round(&mut self, a: __m256) -> __m256 {
            unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        fn lt(&mut self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(a, b) }
        }
        #[inline(always)]
        fn eq(&mut self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_cmp_ps::<_CMP_EQ_OQ>(a, b) }
        }
        #[inline(always)]
        fn select(&mut self, m: __m256, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_blendv_ps(b, a, m) }
        }
        #[inline(always)]
        fn uniform(&mut self, m: __m256) -> Option<bool> {
            match unsafe { _mm256_movemask_ps(m) } {
                0xff => Some(true),
                0 => Some(false),
                _ => None,
            }
        }
        #[inline(always)]
        fn copysign(&mut self, mag: __m256, sign: __m256) -> __m256 {
            unsafe {
                let s = _mm256_set1_ps(-0.0);
                _mm256_or_ps(_mm256_andnot_ps(s, mag), _mm256_and_ps(s, sign))
            }
        }
        /// The bit trick of `Scalar::pow2i`: k + 1.5 * 2^23 holds k in its low mantissa bits.
        #[inline(always)]
        fn pow2i(&mut self, k: __m256) -> __m256 {
            unsafe {
                let t = _mm256_castps_si256(_mm256_add_ps(k, _mm256_set1_ps(12_582_912.0)));
                let e = _mm256_sub_epi32(t, _mm256_set1_epi32(0x4B40_0000 - 127));
                _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e))
            }
        }
        #[inline(always)]
        fn frexp(&mut self, x: __m256) -> (__m256, __m256) {
            unsafe {
                // Subnormals: scale by 2^24 first so the exponent field is meaningful.
                let sub = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(f32::MIN_POSITIVE));
                let x = _mm256_blendv_ps(x, _mm256_mul_ps(x, _mm256_set1_ps(16_777_216.0)), sub);
                let (mant, e) = self.frexp_normal(x);
                (mant, _mm256_sub_ps(e, _mm256_and_ps(sub, _mm256_set1_ps(24.0))))
            }
        }
        #[inline(always)]
        fn frexp_normal(&mut self, x: __m256) -> (__m256, __m256) {
            unsafe {
                let bits = _mm256_castps_si256(x);
                let ex = _mm256_and_si256(_mm256_srli_epi32::<23>(bits), _mm256_set1_epi32(0xff));
                let e = _mm256_cvtepi32_ps(_mm256_sub_epi32(ex, _mm256_set1_epi32(126)));
                let mant = _mm256_or_si256(
                    _mm256_and_si256(bits, _mm256_set1_epi32(0x807f_ffffu32 as i32)),
                    _mm256_set1_epi32(0x3f00_0000),
                );
                (_mm256_castsi256_ps(mant), e)
            }
        }
        /// The default's values in integer steps: adding `1 - sqrt(1/2)`'s bits carries into
        /// the exponent exactly where the mantissa is at least sqrt(2)'s, and the mantissa
        /// bits come back with sqrt(1/2)'s exponent and offset.
        #[inline(always)]
        fn log_split(&mut self, x: __m256) -> (__m256, __m256) {
            unsafe {
                let b = _mm256_add_epi32(_mm256_castps_si256(x), _mm256_set1_epi32(LOG_SPLIT_SHIFT));
                let e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32::<23>(b), _mm256_set1_epi32(127)));
                let mant = _mm256_add_epi32(
                    _mm256_and_si256(b, _mm256_set1_epi32(0x007f_ffff)),
                    _mm256_set1_epi32(SQRT_HALF_BITS),
                );
                (_mm256_castsi256_ps(mant), e)
            }
        }
    }

    block_eval!(Avx, __m256, "avx2,fma", "8");

    /// The lanes below `k` (`k <= 8`), as a mask.
    #[inline(always)]
    fn first(k: usize) -> __m256i {
        // SAFETY: AVX2 is present wherever this module's passes run.
        unsafe { _mm256_cmpgt_epi32(_mm256_set1_epi32(k as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)) }
    }

    /// `v` with its lanes from `k` on (`0 < k`) copies of lane `k - 1`.
    #[inline(always)]
    fn pad_last(v: __m256, k: usize) -> __m256 {
        if k >= W {
            return v;
        }
        // SAFETY: as in `first`.
        unsafe {
            let copy = _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(k as i32 - 1));
            _mm256_blendv_ps(copy, v, _mm256_castsi256_ps(first(k)))
        }
    }

    /// `v` with the lanes whose bit in `keep` is clear zeroed.
    #[inline(always)]
    fn keep_lanes(v: __m256, keep: u32) -> __m256 {
        // SAFETY: as in `first`.
        unsafe {
            let bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
            let mask = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(keep as i32), bit), bit);
            _mm256_and_ps(v, _mm256_castsi256_ps(mask))
        }
    }

    /// The first `k` floats at `at`, zeros in the other lanes.
    ///
    /// # Safety
    /// `at` points at `k` floats.
    #[inline(always)]
    unsafe fn load_first(at: *const f32, k: usize) -> __m256 {
        unsafe { _mm256_maskload_ps(at, first(k)) }
    }

    /// The first `k` lanes of `v` into the `k` floats at `at`.
    ///
    /// # Safety
    /// `at` points at `k` floats.
    #[inline(always)]
    unsafe fn store_first(at: *mut f32, k: usize, v: __m256) {
        unsafe { _mm256_maskstore_ps(at, first(k), v) }
    }

    #[inline(always)]
    fn hsum(v: __m256) -> f32 {
        // SAFETY: as in `first`.
        unsafe {
            let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)))
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    //! The AVX-512 build: [`avx2`]'s pass on 16 lanes, for processors with
    //! AVX-512F (masks are `__mmask16`; the rest is the same instructions, twice as wide, with
    //! the same results as [`Scalar`]). Every intrinsic call is sound because these functions
    //! run only where the processor has AVX-512F, AVX2 and FMA (`Helpers::for_host` checks).

    use super::*;
    use crate::ir::op::{PerBinOp, PerUnOp};
    use std::arch::x86_64::*;
    use std::cell::RefCell;

    const W: usize = 16;
    /// The most vectors per block, as in the AVX2 pass.
    const K: usize = 32;
    type Block = [__m512; K];
    /// Vectors per chain of a routine's loop (see [`Multi`]).
    const CHAIN: usize = 4;

    /// The math library's machine on 16 lanes.
    pub struct Avx512;

    const SIGN: i32 = i32::MIN;

    #[inline(always)]
    fn bits(a: __m512) -> __m512i {
        unsafe { _mm512_castps_si512(a) }
    }
    #[inline(always)]
    fn float(a: __m512i) -> __m512 {
        unsafe { _mm512_castsi512_ps(a) }
    }

    /// `min` and `max` give a NaN when either operand is one.
    #[inline(always)]
    fn nan_if_either(a: __m512, b: __m512, r: __m512) -> __m512 {
        unsafe {
            let unordered = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, b);
            _mm512_mask_blend_ps(unordered, r, _mm512_set1_ps(f32::NAN))
        }
    }

    macro_rules! one_intrinsic {
        ($($f:ident($($a:ident),*) => $intrinsic:ident;)*) => {
            $(#[inline(always)]
            fn $f(&mut self, $($a: __m512),*) -> __m512 {
                unsafe { $intrinsic($($a),*) }
            })*
        };
    }

    impl Vm for Avx512 {
        type V = __m512;
        type M = __mmask16;
        one_intrinsic! {
            add(a, b) => _mm512_add_ps; sub(a, b) => _mm512_sub_ps; mul(a, b) => _mm512_mul_ps;
            div(a, b) => _mm512_div_ps; fma(a, b, c) => _mm512_fmadd_ps; sqrt(a) => _mm512_sqrt_ps;
            abs(a) => _mm512_abs_ps;
        }
        #[inline(always)]
        fn c(&mut self, v: f32) -> __m512 {
            unsafe { _mm512_set1_ps(v) }
        }
        #[inline(always)]
        fn neg(&mut self, a: __m512) -> __m512 {
            unsafe { float(_mm512_xor_si512(bits(a), _mm512_set1_epi32(SIGN))) }
        }
        /// IEEE 754-2019 minimum: either order's `vminps` and their OR, so min(-0, +0) = -0.
        #[inline(always)]
        fn min(&mut self, a: __m512, b: __m512) -> __m512 {
            let r = unsafe { float(_mm512_or_si512(bits(_mm512_min_ps(a, b)), bits(_mm512_min_ps(b, a)))) };
            nan_if_either(a, b, r)
        }
        /// IEEE 754-2019 maximum: the AND of both orders, so max(-0, +0) = +0.
        #[inline(always)]
        fn max(&mut self, a: __m512, b: __m512) -> __m512 {
            let r = unsafe { float(_mm512_and_si512(bits(_mm512_max_ps(a, b)), bits(_mm512_max_ps(b, a)))) };
            nan_if_either(a, b, r)
        }
        #[inline(always)]
        fn round(&mut self, a: __m512) -> __m512 {
            unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        fn floor(&mut self, a: __m512) -> __m512 {
            unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        fn lt(&mut self, a: __m512, b: __m512) -> __mmask16 {
            unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b) }
        }
        #[inline(always)]
        fn eq(&mut self, a: __m512, b: __m512) -> __mmask16 {
            unsafe { _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, b) }
        }
        #[inline(always)]
        fn and(&mut self, a: __mmask16, b: __mmask16) -> __mmask16 {
            a & b
        }
        #[inline(always)]
        fn or(&mut self, a: __mmask16, b: __mmask16) -> __mmask16 {
            a | b
        }
        #[inline(always)]
        fn select(&mut self, m: __mmask16, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_mask_blend_ps(m, b, a) }
        }
        #[inline(always)]
        fn uniform(&mut self, m: __mmask16) -> Option<bool> {
            match m {
                0xffff => Some(true),
                0 => Some(false),
                _ => None,
            }
        }
        #[inline(always)]
        fn copysign(&mut self, mag: __m512, sign: __m512) -> __m512 {
            unsafe {
                let s = _mm512_set1_epi32(SIGN);
                float(_mm512_or_si512(_mm512_andnot_si512(s, bits(mag)), _mm512_and_si512(s, bits(sign))))
            }
        }
        /// The bit trick of `Scalar::pow2i`: k + 1.5 * 2^23 holds k in its low mantissa bits.
        #[inline(always)]
        fn pow2i(&mut self, k: __m512) -> __m512 {
            unsafe {
                let t = bits(_mm512_add_ps(k, _mm512_set1_ps(12_582_912.0)));
                let e = _mm512_sub_epi32(t, _mm512_set1_epi32(0x4B40_0000 - 127));
                float(_mm512_slli_epi32::<23>(e))
            }
        }
        #[inline(always)]
        fn frexp(&mut self, x: __m512) -> (__m512, __m512) {
            unsafe {
                // Subnormals: scale by 2^24 first so the exponent field is meaningful.
                let sub = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(f32::MIN_POSITIVE));
                let x = _mm512_mask_mul_ps(x, sub, x, _mm512_set1_ps(16_777_216.0));
                let (mant, e) = self.frexp_normal(x);
                (mant, _mm512_mask_sub_ps(e, sub, e, _mm512_set1_ps(24.0)))
            }
        }
        #[inline(always)]
        fn frexp_normal(&mut self, x: __m512) -> (__m512, __m512) {
            unsafe {
                let b = bits(x);
                let ex = _mm512_and_si512(_mm512_srli_epi32::<23>(b), _mm512_set1_epi32(0xff));
                let e = _mm512_cvtepi32_ps(_mm512_sub_epi32(ex, _mm512_set1_epi32(126)));
                let mant = _mm512_or_si512(
                    _mm512_and_si512(b, _mm512_set1_epi32(0x807f_ffffu32 as i32)),
                    _mm512_set1_epi32(0x3f00_0000),
                );
                (float(mant), e)
            }
        }
        /// As the AVX2 machine's.
        #[inline(always)]
        fn log_split(&mut self, x: __m512) -> (__m512, __m512) {
            unsafe {
                let b = _mm512_add_epi32(bits(x), _mm512_set1_epi32(LOG_SPLIT_SHIFT));
                let e = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32::<23>(b), _mm512_set1_epi32(127)));
                let mant = _mm512_add_epi32(
                    _mm512_and_si512(b, _mm512_set1_epi32(0x007f_ffff)),
                    _mm512_set1_epi32(SQRT_HALF_BITS),
                );
                (float(mant), e)
            }
        }
    }

    block_eval!(Avx512, __m512, "avx512f,avx2,fma", "16");

    /// The first `n` lanes (n <= 16).
    #[inline(always)]
    fn first(n: usize) -> __mmask16 {
        if n >= W { 0xffff } else { ((1u32 << n) - 1) as u16 }
    }

    /// `v` with its lanes from `k` on (`0 < k`) copies of lane `k - 1`.
    #[inline(always)]
    fn pad_last(v: __m512, k: usize) -> __m512 {
        if k >= W {
            return v;
        }
        // SAFETY: as in `keep_lanes`.
        unsafe { _mm512_mask_blend_ps(first(k), _mm512_permutexvar_ps(_mm512_set1_epi32(k as i32 - 1), v), v) }
    }

    /// `v` with the lanes whose bit in `keep` is clear zeroed.
    #[inline(always)]
    fn keep_lanes(v: __m512, keep: u32) -> __m512 {
        // SAFETY: AVX-512F is present wherever this module's passes run.
        unsafe { _mm512_maskz_mov_ps(keep as u16, v) }
    }

    /// The first `k` floats at `at`, zeros in the other lanes.
    ///
    /// # Safety
    /// `at` points at `k` floats.
    #[inline(always)]
    unsafe fn load_first(at: *const f32, k: usize) -> __m512 {
        unsafe { _mm512_maskz_loadu_ps(first(k), at) }
    }

    /// The first `k` lanes of `v` into the `k` floats at `at`.
    ///
    /// # Safety
    /// `at` points at `k` floats.
    #[inline(always)]
    unsafe fn store_first(at: *mut f32, k: usize, v: __m512) {
        unsafe { _mm512_mask_storeu_ps(at, first(k), v) }
    }

    #[inline(always)]
    fn hsum(v: __m512) -> f32 {
        // SAFETY: as in `keep_lanes`.
        unsafe { _mm512_reduce_add_ps(v) }
    }
}

#[cfg(test)]
mod tests {
    /// The code the AVX2 pass inlines (`vm.rs` and the math library) has no closure over the
    /// machine `m`: a closure is compiled apart from the `#[target_feature]` function it is
    /// inlined into, so the machine's intrinsics in it become calls. One in `mathlib::bessel`
    /// made M2's kernel 7.6x slower (59 ms against 7.8 ms at 8192x100). (Closures that build
    /// constant tables from plain `f32` are harmless.)
    #[test]
    fn the_inlined_routines_define_no_closures() {
        for (file, text) in [
            ("src/backend/vm.rs", include_str!("vm.rs")),
            ("src/ir/op.rs", include_str!("../ir/op.rs")),
            ("kernels/mathlib.rs", include_str!("../../kernels/mathlib.rs")),
        ] {
            let code = text.split("#[cfg(test)]").next().unwrap();
            for (n, line) in code.lines().enumerate() {
                let line = line.split("//").next().unwrap();
                let closure = ["|m:", "|m,", "|m|"].iter().any(|p| line.contains(p));
                assert!(!closure, "{file}:{}: a closure in code the AVX2 pass inlines: {line}", n + 1);
            }
        }
    }

    /// Arguments spanning the ops' domains and the special values, a multiple of 64.
    #[cfg(target_arch = "x86_64")]
    fn arguments() -> Vec<f32> {
        let mut xs: Vec<f32> = vec![0.0, -0.0, 1.0, -1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-40, -1e-40];
        xs.extend([f32::MIN_POSITIVE, f32::MAX, f32::MIN, 0.5, 88.0, -88.0, 1e-7, 3.0e38]);
        let mut seed = 3u64;
        for _ in 0..20_000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let u = (seed >> 40) as f32 / (1u64 << 24) as f32;
            let scale = [1.0f32, 4.0, 30.0, 100.0, 1e-3][(seed >> 20) as usize % 5];
            xs.push((u - 0.5) * 2.0 * scale);
        }
        while !xs.len().is_multiple_of(64) {
            xs.push(0.25);
        }
        xs
    }

    /// Every op on a SIMD machine of `w` lanes (`unary` runs four vectors of the given lanes
    /// as one chain, `binary` one vector) gives the `Scalar` machine's bits, NaN for NaN. The arguments come in two
    /// orders: shuffled, where a vector's lanes fall on both sides of a routine's range splits
    /// (both sides computed and selected), and sorted by magnitude, where most vectors fall
    /// wholly on one side (that side alone computed, `mathlib::split!`).
    #[cfg(target_arch = "x86_64")]
    fn matches_scalar(
        w: usize,
        unary: impl Fn(super::UnOp, &[f32], f32) -> Vec<f32>,
        binary: impl Fn(super::BinOp, &[f32], &[f32]) -> Vec<f32>,
    ) {
        let mut sorted = arguments();
        sorted.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
        for xs in [arguments(), sorted] {
            matches_scalar_on(w, &xs, &unary, &binary);
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn matches_scalar_on(
        w: usize,
        xs: &[f32],
        unary: impl Fn(super::UnOp, &[f32], f32) -> Vec<f32>,
        binary: impl Fn(super::BinOp, &[f32], &[f32]) -> Vec<f32>,
    ) {
        use super::*;
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        // The guards' eps: normal (the usual), and 0 (no guard).
        for (&op, eps) in UnOp::ALL.iter().flat_map(|op| [(op, 1e-7), (op, 0.0)]) {
            for ch in xs.chunks_exact(4 * w) {
                for (x, g) in ch.iter().zip(unary(op, ch, eps)) {
                    let want = vm::unary(&mut Scalar, op, *x, eps);
                    assert!(same(g, want), "{w} lanes, eps {eps}: {}({x}): {g} vs {want}", op.name());
                }
            }
        }
        for &op in BinOp::ALL {
            for (ch, other) in xs.chunks_exact(w).zip(xs.chunks_exact(w).rev()) {
                for ((a, b), g) in ch.iter().zip(other).zip(binary(op, ch, other)) {
                    let want = vm::binary(&mut Scalar, op, *a, *b);
                    assert!(same(g, want), "{w} lanes: {}({a}, {b}): {g} vs {want}", op.name());
                }
            }
        }
    }

    /// Every op on the AVX2 machine gives the `Scalar` machine's bits (NaN for NaN), over
    /// arguments spanning the ops' domains and the special values.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx_machine_matches_scalar_on_every_op() {
        use super::*;
        use std::arch::x86_64::*;
        if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")) {
            println!("SKIPPED: this processor has no AVX2 + FMA");
            return;
        }
        // SAFETY (all three): AVX2 and FMA are present (checked above); every slice holds a
        // whole number of vectors of 8 floats.
        let load = |x: &[f32]| x.chunks_exact(8).map(|x| unsafe { _mm256_loadu_ps(x.as_ptr()) }).collect::<Vec<_>>();
        let lanes = |vs: &[__m256]| {
            let mut out = vec![0f32; 8 * vs.len()];
            for (o, &v) in out.chunks_exact_mut(8).zip(vs) {
                unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) };
            }
            out
        };
        matches_scalar(
            8,
            |op, x, eps| lanes(&unsafe { avx2::unary(op, &load(x), eps) }),
            |op, a, b| lanes(&[unsafe { avx2::binary(op, load(a)[0], load(b)[0]) }]),
        );
    }

    /// The same for the AVX-512 machine.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_machine_matches_scalar_on_every_op() {
        use super::*;
        use std::arch::x86_64::*;
        if !(std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")) {
            println!("SKIPPED: this processor has no AVX-512F");
            return;
        }
        // SAFETY (all three): AVX-512F, AVX2 and FMA are present; every slice holds a whole
        // number of vectors of 16 floats.
        let load = |x: &[f32]| x.chunks_exact(16).map(|x| unsafe { _mm512_loadu_ps(x.as_ptr()) }).collect::<Vec<_>>();
        let lanes = |vs: &[__m512]| {
            let mut out = vec![0f32; 16 * vs.len()];
            for (o, &v) in out.chunks_exact_mut(16).zip(vs) {
                unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) };
            }
            out
        };
        matches_scalar(
            16,
            |op, x, eps| lanes(&unsafe { avx512::unary(op, &load(x), eps) }),
            |op, a, b| lanes(&[unsafe { avx512::binary(op, load(a)[0], load(b)[0]) }]),
        );
    }

    /// The columnar pass on each SIMD machine gives the baseline pass's bits over whole fused
    /// losses, for groups of rows of several widths with labels masked out: the wiring of the
    /// steps (operands, a sigmoid pair filling two nodes in either order, constants broadcast
    /// or filled, the side of a range split taken per vector, rows packed into blocks) as well
    /// as each op. A row's results do not depend on the rows around it.
    /// The SIMD machines' integer `log_split` gives the default's values on every exponent of
    /// the normal floats, at sqrt(2)'s mantissa and around it.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn log_split_in_integer_steps_gives_the_default_values() {
        use super::*;
        use std::arch::x86_64::*;
        if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")) {
            println!("SKIPPED: this processor has no AVX2 + FMA");
            return;
        }
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        let sqrt2 = SQRT_HALF_BITS as u32 & 0x007f_ffff;
        let mut xs = Vec::new();
        for ex in 1u32..=254 {
            for mb in [0, 1, sqrt2 - 2, sqrt2 - 1, sqrt2, sqrt2 + 1, 0x40_0000, 0x7f_fffe, 0x7f_ffff] {
                xs.push(f32::from_bits(ex << 23 | mb));
            }
        }
        xs.resize(xs.len().next_multiple_of(16), 1.0);
        let want: Vec<(u32, u32)> = xs
            .iter()
            .map(|&x| {
                // Scalar keeps the default.
                let (m, e) = Scalar.log_split(x);
                (m.to_bits(), e.to_bits())
            })
            .collect();
        let got8: Vec<(u32, u32)> = xs
            .chunks_exact(8)
            .flat_map(|x| {
                // SAFETY: AVX2 is present.
                let (m, e) = unsafe { avx2::Avx.log_split(_mm256_loadu_ps(x.as_ptr())) };
                let (mut ms, mut es) = ([0f32; 8], [0f32; 8]);
                unsafe { (_mm256_storeu_ps(ms.as_mut_ptr(), m), _mm256_storeu_ps(es.as_mut_ptr(), e)) };
                (0..8).map(move |i| (ms[i].to_bits(), es[i].to_bits()))
            })
            .collect();
        assert_eq!(got8, want, "AVX2");
        if avx512 {
            let got16: Vec<(u32, u32)> = xs
                .chunks_exact(16)
                .flat_map(|x| {
                    // SAFETY: AVX-512F is present.
                    let (m, e) = unsafe { avx512::Avx512.log_split(_mm512_loadu_ps(x.as_ptr())) };
                    let (mut ms, mut es) = ([0f32; 16], [0f32; 16]);
                    unsafe { (_mm512_storeu_ps(ms.as_mut_ptr(), m), _mm512_storeu_ps(es.as_mut_ptr(), e)) };
                    (0..16).map(move |i| (ms[i].to_bits(), es[i].to_bits()))
                })
                .collect();
            assert_eq!(got16, want, "AVX-512");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_passes_give_the_baseline_bits_on_fused_losses() {
        use super::*;
        /// A pass over a group of rows, returning their `s` and sums.
        type Pass<'a> = &'a dyn Fn(&Program, Rows, &mut [(f32, f32)]);
        /// A SIMD build's pass and its row stride.
        type Build<'a> = (&'a str, Pass<'a>, fn(usize) -> usize);
        let texts = [
            "-sigmoid(log(p / (y + eps)))",
            "dsigmoid(p - y) * 3",
            // all three of the family, dsigmoid_d first
            "dsigmoid_d(p - y) + sigmoid(p - y)",
            "-bessel_i1e(erf(p / (y + eps)))",
            "ln(1 + exp(p - y)) + erfc(p * 40 - y)",
            "sinh(p * 8 - 4) * atan(y * 5 - p) + asinh(p * 1e20)",
            // s = 0: a constant output, filled by its own step
            "y * 2 + 1",
        ];
        let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
        let avx512 = avx2 && std::arch::is_x86_feature_detected!("avx512f");
        if !avx2 {
            println!("SKIPPED: this processor has no AVX2 + FMA");
            return;
        }
        let mut passes: Vec<Build> =
            vec![("AVX2", &|prog, rows, sums| unsafe { avx2::graph_rows_body(prog, rows, sums) }, avx2::row_stride)];
        if avx512 {
            passes.push((
                "AVX-512",
                &|prog, rows, sums| unsafe { avx512::graph_rows_body(prog, rows, sums) },
                avx512::row_stride,
            ));
        }
        let (mut firsts, mut triple, mut broadcast, mut filled) = ([false; 3], false, false, false);
        let mut seed = 11u64;
        for text in texts {
            let module = crate::syntax::parse(&format!("loss x = {text};")).unwrap();
            let fused = crate::passes::fuse::fuse(&module, "x").unwrap();
            let prog = Program::new(&fused.graph);
            for step in &prog.steps {
                match *step {
                    Step::SigmoidFamily { op, nodes, .. } => {
                        firsts[FAMILY.iter().position(|&f| f == op).unwrap()] = true;
                        triple |= nodes.iter().all(Option::is_some);
                    }
                    Step::BinaryK { .. } => broadcast = true,
                    Step::Const { fill: true, .. } => filled = true,
                    _ => {}
                }
            }
            // (classes, rows, sorted): 16 rows of 5 classes share a block; 3 rows of 100
            // straddle blocks; a row of 300 takes several; 16 rows of 16 (AVX-512) or 8 (AVX2)
            // vectors fill every block.
            for (c, n, sorted) in
                [(5usize, 16usize, false), (100, 3, false), (100, 3, true), (300, 2, false), (128, 16, false)]
            {
                let mut uniform = || {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    (seed >> 40) as f32 / (1u64 << 24) as f32
                };
                let mut e: Vec<f32> = (0..n * c).map(|_| (uniform() * 8.0 - 6.0).exp()).collect();
                if sorted {
                    e.chunks_mut(c).for_each(|row| row.sort_by(f32::total_cmp));
                }
                let y: Vec<f32> = (0..n * c).map(|_| uniform()).collect();
                let inv_s: Vec<f32> = e.chunks(c).map(|row| 1.0 / row.iter().sum::<f32>()).collect();
                // One label, two, none.
                let labels: Vec<[i64; 2]> = (0..n).map(|r| [[3, -1], [0, c as i64 - 1], [-1, -1]][r % 3]).collect();
                // The rows' p and s (rows of c) and sums, from scratch rows of `stride` whose
                // lanes past c hold NaN: no padding may reach a result.
                let run = |pass: Pass, stride: usize, rows: std::ops::Range<usize>| {
                    let (mut p_lines, mut s_lines) =
                        (Line::scratch(GROUP_ROWS * stride), Line::scratch(GROUP_ROWS * stride));
                    let (p, s) = (Line::floats(&mut p_lines), Line::floats(&mut s_lines));
                    p.fill(f32::NAN);
                    s.fill(f32::NAN);
                    for (k, r) in rows.clone().enumerate() {
                        p[k * stride..k * stride + c].copy_from_slice(&e[r * c..(r + 1) * c]);
                    }
                    let mut sums = vec![(0f32, 0f32); rows.len()];
                    let group = Rows {
                        p: &mut *p,
                        s: &mut *s,
                        stride,
                        y: Some(&y[rows.start * c..rows.end * c]),
                        c,
                        inv_s: &inv_s[rows.clone()],
                        labels: &labels[rows.clone()],
                    };
                    pass(&prog, group, &mut sums);
                    // The labels' s is the caller's to write.
                    for (k, r) in rows.clone().enumerate() {
                        for lab in labels[r].into_iter().filter(|&lab| lab >= 0) {
                            s[k * stride + lab as usize] = 0.0;
                        }
                    }
                    let unpad =
                        |v: &[f32]| (0..rows.len()).flat_map(|k| v[k * stride..k * stride + c].to_vec()).collect();
                    (unpad(p), unpad(s), sums)
                };
                let want: (Vec<f32>, Vec<f32>, _) = run(&|prog, rows, sums| graph_rows_body(prog, rows, sums), c, 0..n);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                for &(name, pass, stride) in &passes {
                    let (p, s, sums) = run(pass, stride(c), 0..n);
                    for (r, &sum) in sums.iter().enumerate() {
                        let what = format!("{name}, {text}, {c} classes, row {r}");
                        let row = r * c..(r + 1) * c;
                        assert_eq!(bits(&p[row.clone()]), bits(&want.0[row.clone()]), "{what}: p");
                        assert_eq!(bits(&s[row.clone()]), bits(&want.1[row.clone()]), "{what}: s");
                        // The sums add in another order.
                        for (g, w) in [(sum.0, want.2[r].0), (sum.1, want.2[r].1)] {
                            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{what}: sum {g} vs {w}");
                        }
                        // Alone, the row gives the same bits, sums included.
                        let (_, alone, alone_sums) = run(pass, stride(c), r..r + 1);
                        assert_eq!(bits(&alone), bits(&s[row]), "{what}: s alone");
                        assert_eq!(
                            bits(&[alone_sums[0].0, alone_sums[0].1]),
                            bits(&[sum.0, sum.1]),
                            "{what}: sums alone"
                        );
                    }
                }
            }
        }
        assert!(firsts == [true; 3] && triple, "sigmoid families led by each member, and one of all three");
        assert!(broadcast && filled, "constants as broadcast operands and as a filled output");
    }
}
