//! The CPU backend: a Cranelift JIT that turns a fused loss into one native function
//! implementing the kernel contract with f32x4 SIMD.
//!
//! Per row the generated code makes these passes over the classes:
//! 1-2. `m = max z`, `e = exp(z - m)` into a scratch row, `S = sum e`: a call to a row helper
//!    (`jit_rt.rs`, AVX2 when the processor has it);
//! 3. `p = e / S`, then `L(y, p)` and `s = p dL/dp` with the row's constant off-target `y`
//!    (skipped when both are 0, as for CE without smoothing); the label classes are masked out;
//! 4. the label classes ("fix-ups"): `L` and `s` at their own `y`, one lane;
//! 5. `grad = (s - p sum(s)) / B`: a row helper again.
//!
//! Where the processor has AVX2 + FMA (with the baseline helpers: from 32 classes on), step 3
//! runs as a columnar program on 8 or 16 lanes (`jit_pass.rs`), and the code calls one helper
//! per 16 rows instead (`jit_rt::general_rows`), which makes all five steps and evaluates
//! step 4 for the 16 rows at once.
//! Label kernels whose loss vanishes off the label (CE, A2, ... without smoothing) take 16
//! rows per helper call (`jit_rt::label_rows`: the softmax passes, step 4 for the 16 rows on
//! 16 lanes, the scaling) where the processor has AVX2 + FMA, and eight rows at a time in
//! the code elsewhere (`label_rows`): one softmax helper call for the group, then step 4 for
//! the eight rows as two vectors, then one scaling call.
//!
//! Kernels compile in two tiers: tier 1 calls the math routines out of line
//! (`jit_rt::unary_lanes`) and is returned at once; tier 2 expands them inline and replaces it
//! when its background compile is done. Both compute the same bits.
//!
//! Label kernels are specialised on the target structure: with integer labels a row's `y`
//! takes two values, so the loss is compiled twice with `y` constant (off-target `alpha/C`,
//! on-target `1 - alpha + alpha/C`) and simplified each time; mixup rows use the constant
//! off-target graph plus the general graph for their two labels; dense targets use the general
//! graph. Compiled kernels are cached per process.

use super::jit_pass::{GROUP_ROWS, LabelTerms, Line, Program, RowsPlan, row_stride};
use super::jit_rt::Helpers;
use super::mathlib::Vm;
use super::vm::{self, Ops, eval_graph};
use crate::ir::{BinOp, Graph, Id, Input, Node, UnOp, print};
use crate::passes::fuse::Fused;
use crate::passes::simplify::{Rules, simplify_with};
use crate::reference::contract::{ContractError, Targets, batch_size};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I32, I32X4, I64};
use cranelift_codegen::ir::{
    AbiParam, BlockArg, Endianness, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, UserFuncName, Value,
};
use cranelift_codegen::isa::CallConv;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// How a batch gives its targets (the kernel is specialised on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetKind {
    Labels,
    Mixup,
    Dense,
}

/// What a kernel is specialised on besides the loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spec {
    pub kind: TargetKind,
    /// Label smoothing (ignored for dense targets).
    pub smoothing: f64,
    pub classes: usize,
}

impl Spec {
    /// The spec a batch's targets call for.
    pub fn of<F: Copy + Into<f64>>(targets: &Targets<F>, classes: usize) -> Spec {
        let (kind, smoothing) = match *targets {
            Targets::Labels { smoothing, .. } => (TargetKind::Labels, smoothing),
            Targets::Mixup { smoothing, .. } => (TargetKind::Mixup, smoothing),
            Targets::Dense { .. } => (TargetKind::Dense, 0.0),
        };
        Spec { kind, smoothing, classes }
    }
    fn y_off(&self) -> f64 {
        self.smoothing / self.classes as f64
    }
    fn y_on(&self) -> f64 {
        1.0 - self.smoothing + self.y_off()
    }
}

/// A JIT failure (a Cranelift error: a bug, or an unsupported host).
#[derive(Debug, thiserror::Error)]
pub enum JitError {
    #[error("the host is not supported by Cranelift: {0}")]
    Host(String),
    #[error("code generation failed: {0}")]
    Codegen(String),
}

/// The argument block of a generated kernel; the layout is the ABI (offsets below).
/// (`jit_rt::general_rows` reads it too.)
#[repr(C)]
pub(crate) struct Args {
    pub(crate) logits: *const f32,
    pub(crate) grad: *mut f32,
    pub(crate) row_loss: *mut f32,
    pub(crate) labels: *const u32,
    pub(crate) labels_b: *const u32,
    pub(crate) lam: *const f32,
    pub(crate) dense: *const f32,
    pub(crate) p_buf: *mut f32,
    pub(crate) s_buf: *mut f32,
    pub(crate) rows: u64,
    pub(crate) classes: u64,
    pub(crate) inv_batch: f32,
}

/// Byte offsets of the `Args` fields, in declaration order.
mod off {
    pub const LOGITS: i32 = 0;
    pub const GRAD: i32 = 8;
    pub const ROW_LOSS: i32 = 16;
    pub const LABELS: i32 = 24;
    pub const LABELS_B: i32 = 32;
    pub const LAM: i32 = 40;
    pub const DENSE: i32 = 48;
    pub const P_BUF: i32 = 56;
    pub const S_BUF: i32 = 64;
    pub const ROWS: i32 = 72;
    pub const CLASSES: i32 = 80;
    pub const INV_BATCH: i32 = 88;
}

/// A compiled kernel.
pub struct JitKernel {
    func: unsafe extern "C" fn(*const Args),
    /// Owns the code `func` points into.
    _module: JITModule,
    /// The programs and plans whose addresses the code holds (boxed, so that they do not
    /// move when the vector grows).
    _programs: Vec<Box<dyn Any>>,
    pub spec: Spec,
    /// Whether the off-target pass was compiled away (L and s are 0 off target).
    pub sparse: bool,
    pub tier: Tier,
    /// The tier-2 kernel, once compiled; `run` uses it from then on.
    upgrade: OnceLock<Box<JitKernel>>,
}

// SAFETY: the module's code is immutable once finalized, and the function reads only the
// argument block it is given; sharing the kernel across threads is sound.
unsafe impl Send for JitKernel {}
unsafe impl Sync for JitKernel {}

/// What a compiled kernel is cached by: the loss's text, the target kind, the smoothing's bits
/// and the classes.
type CacheKey = (String, TargetKind, u64, usize);
type KernelCache = Mutex<HashMap<CacheKey, Arc<JitKernel>>>;

/// Per-process cache: the same loss and spec compile once.
fn cache() -> &'static KernelCache {
    static CACHE: OnceLock<KernelCache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Compiles a fused loss for a spec, or returns the cached kernel.
pub fn compile(fused: &Fused, spec: Spec) -> Result<Arc<JitKernel>, JitError> {
    let key = (print::to_text(&fused.graph), spec.kind, spec.smoothing.to_bits(), spec.classes);
    if let Some(k) = cache().lock().unwrap().get(&key) {
        return Ok(k.clone());
    }
    let kernel = Arc::new(build(fused, spec, None, Tier::Quick, Helpers::for_host())?);
    cache().lock().unwrap().insert(key, kernel.clone());
    let (quick, fused) = (kernel.clone(), fused.clone());
    std::thread::spawn(move || {
        if let Ok(full) = build(&fused, spec, None, Tier::Full, Helpers::for_host()) {
            let _ = quick.upgrade.set(Box::new(full));
        }
    });
    Ok(kernel)
}

/// Compiles one tier without the cache or the background upgrade (tests and benchmarks).
pub fn compile_tier(fused: &Fused, spec: Spec, tier: Tier) -> Result<JitKernel, JitError> {
    build(fused, spec, None, tier, Helpers::for_host())
}

impl JitKernel {
    /// Whether the optimised kernel is in use (tier 2 itself, or its upgrade has arrived).
    pub fn is_optimised(&self) -> bool {
        self.tier == Tier::Full || self.upgrade.get().is_some()
    }
}

/// `graph` with `y` replaced by a constant, simplified.
fn with_y(g: &Graph, y: f64) -> Graph {
    let mut out = Graph::new(g.eps);
    let mut map: Vec<Id> = Vec::with_capacity(g.len());
    for (_, n) in g.iter() {
        let m = |a: Id| map[a.index()];
        let new = match n {
            Node::Input(Input::Y) => out.constant(y),
            Node::Input(_) | Node::Const(_) => out.insert(n),
            Node::Unary(op, a) => out.unary(op, m(a)),
            Node::Binary(op, a, b) => out.binary(op, m(a), m(b)),
        };
        map.push(new);
    }
    out.outputs = g.outputs.iter().map(|(name, id)| (name.clone(), map[id.index()])).collect();
    simplify_with(&out, Rules::Fused)
}

fn is_zero(g: &Graph, id: Id) -> bool {
    g.node(id).as_const() == Some(0.0)
}

/// Compiles the optimised tier without the cache.
pub fn compile_uncached(fused: &Fused, spec: Spec) -> Result<JitKernel, JitError> {
    build(fused, spec, None, Tier::Full, Helpers::for_host())
}

/// [`compile_tier`] calling the baseline row helpers whatever the processor has: what a
/// machine without AVX2 + FMA runs (the tests run it here too).
pub fn compile_baseline(fused: &Fused, spec: Spec, tier: Tier) -> Result<JitKernel, JitError> {
    build(fused, spec, None, tier, Helpers::baseline())
}

/// [`compile_tier`] calling the AVX2 row helpers on a processor that would otherwise run the
/// AVX-512 ones (the tests run both there); `None` without AVX2 + FMA.
pub fn compile_avx2(fused: &Fused, spec: Spec, tier: Tier) -> Option<Result<JitKernel, JitError>> {
    Helpers::avx2().map(|h| build(fused, spec, None, tier, h))
}

/// The kernel's Cranelift IR as text (what `lossc compile --target cpu` writes).
pub fn clif(fused: &Fused, spec: Spec) -> Result<String, JitError> {
    let mut text = String::new();
    build(fused, spec, Some(&mut text), Tier::Full, Helpers::for_host())?;
    Ok(text)
}

/// How hard Cranelift works: a kernel is first compiled quickly, and the optimised kernel
/// replaces it when its background compile finishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Quick,
    Full,
}

/// The largest fused graph (in nodes) whose tier-2 kernel uses the backtracking register
/// allocator. The paper's losses have at most ~100; the search's at most a few hundred.
pub const BACKTRACKING_MAX_NODES: usize = 400;

fn build(
    fused: &Fused,
    spec: Spec,
    clif_out: Option<&mut String>,
    tier: Tier,
    helpers: Helpers,
) -> Result<JitKernel, JitError> {
    let general = &fused.graph;
    let (off, on) = match spec.kind {
        TargetKind::Labels => (Some(with_y(general, spec.y_off())), Some(with_y(general, spec.y_on()))),
        TargetKind::Mixup => (Some(with_y(general, spec.y_off())), None),
        TargetKind::Dense => (None, None),
    };
    let sparse = off.as_ref().is_some_and(|g| is_zero(g, g.outputs[0].1) && is_zero(g, g.outputs[1].1));

    let mut flags = settings::builder();
    fn set(f: &mut settings::Builder, k: &str, v: &str) -> Result<(), JitError> {
        f.set(k, v).map_err(|e| JitError::Host(e.to_string()))
    }
    // The emitter already places code (constants loaded in the blocks that use them, row values
    // before the class loops) and the graph arrives simplified and hash-consed; Cranelift's e-graph
    // pass would only cost compile time, and it sinks row-level work into the class loops.
    set(&mut flags, "opt_level", "none")?;
    // The IR is built by this emitter and checked by its tests; verifying it again on every
    // compile costs ~7 % of compile time.
    set(&mut flags, "enable_verifier", "false")?;
    // Tier 1 allocates registers in a single pass (~4x faster to compile, ~2x slower code);
    // tier 2 with the backtracking allocator, up to a size: its time grows faster than the
    // function (a 2,000-term sum took 20 s), so larger losses get the single pass in both
    // tiers. Allocation changes moves and spills only, so every tier computes the same bits.
    let backtracking = tier == Tier::Full && general.len() <= BACKTRACKING_MAX_NODES;
    let algorithm = if backtracking { "backtracking" } else { "single_pass" };
    set(&mut flags, "regalloc_algorithm", algorithm)?;
    set(&mut flags, "is_pic", "false")?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    let isa = cranelift_native::builder()
        .map_err(|e| JitError::Host(e.to_string()))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| JitError::Host(e.to_string()))?;
    let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
    let mut ctx = module.make_context();
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(I64));
    ctx.func.signature = sig.clone();
    let id =
        module.declare_function("loss_kernel", Linkage::Local, &sig).map_err(|e| JitError::Codegen(e.to_string()))?;
    ctx.func.name = UserFuncName::user(0, id.as_u32());
    let mut fctx = FunctionBuilderContext::new();
    let mut programs = Vec::new();
    {
        let b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let call_conv = module.isa().default_call_conv();
        let full = tier == Tier::Full;
        let mut e = Emitter { b, consts: HashMap::new(), pair: full, inline_math: full, helpers, call_conv, programs };
        let graphs = Graphs { general, off: off.as_ref(), on: on.as_ref(), sparse };
        e.kernel(&spec, &graphs);
        e.b.seal_all_blocks();
        e.b.finalize(module.target_config());
        programs = e.programs;
    }
    if let Some(out) = clif_out {
        *out = ctx.func.display().to_string();
    }
    module.define_function(id, &mut ctx).map_err(|e| JitError::Codegen(format!("{e:?}")))?;
    module.clear_context(&mut ctx);
    module.finalize_definitions().map_err(|e| JitError::Codegen(e.to_string()))?;
    let ptr = module.get_finalized_function(id);
    // SAFETY: `ptr` is the finalized code of a function with signature `fn(i64)` under the
    // host's default calling convention, which is `extern "C" fn(*const Args)`.
    let func = unsafe { std::mem::transmute::<*const u8, unsafe extern "C" fn(*const Args)>(ptr) };
    Ok(JitKernel { func, _module: module, _programs: programs, spec, sparse, tier, upgrade: OnceLock::new() })
}

/// The graphs a kernel evaluates.
struct Graphs<'g> {
    general: &'g Graph,
    off: Option<&'g Graph>,
    on: Option<&'g Graph>,
    sparse: bool,
}

/// A Cranelift function under construction; implements the math library's vector machine
/// on f32x4 values.
struct Emitter<'a> {
    b: FunctionBuilder<'a>,
    /// Vector constants already loaded in a block.
    consts: HashMap<(u32, cranelift_codegen::ir::Type, cranelift_codegen::ir::Block), Value>,
    /// Two chunks per iteration of the exp and general passes, their chains emitted in step
    /// (`Pair`): one chunk's chain (exp then ln is over 100 cycles of latency) leaves the core
    /// idle, and the reorder window holds less than two iterations of it. The optimised tier
    /// only: it doubles the IR of those loops, and the quick tier is about compile time. The
    /// per-lane arithmetic and the order of the sums are the same, so the tiers stay
    /// bit-identical.
    pair: bool,
    /// Whether math routines are expanded inline (tier 2) or called (tier 1: a third to a
    /// fifth of the code to compile; the same operations, so the same bits).
    inline_math: bool,
    /// The programs and plans the code calls with, kept alive by the kernel (boxed: the code
    /// holds their addresses).
    programs: Vec<Box<dyn Any>>,
    /// The row helpers' addresses, and the convention to call them with.
    helpers: Helpers,
    call_conv: CallConv,
}

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}
fn little() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

impl Vm for Emitter<'_> {
    type V = Value;
    type M = Value;
    fn c(&mut self, v: f32) -> Value {
        self.splat_const(v.to_bits(), F32X4)
    }
    fn add(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fadd(a, b)
    }
    fn sub(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fsub(a, b)
    }
    fn mul(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmul(a, b)
    }
    fn div(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fdiv(a, b)
    }
    fn fma(&mut self, a: Value, b: Value, c: Value) -> Value {
        self.b.ins().fma(a, b, c)
    }
    fn neg(&mut self, a: Value) -> Value {
        self.b.ins().fneg(a)
    }
    fn abs(&mut self, a: Value) -> Value {
        self.b.ins().fabs(a)
    }
    fn sqrt(&mut self, a: Value) -> Value {
        self.b.ins().sqrt(a)
    }
    fn min(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmin(a, b) // NaN-propagating, as the op table requires
    }
    fn max(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmax(a, b)
    }
    fn round(&mut self, a: Value) -> Value {
        self.b.ins().nearest(a)
    }
    fn floor(&mut self, a: Value) -> Value {
        self.b.ins().floor(a)
    }
    fn lt(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fcmp(FloatCC::LessThan, a, b)
    }
    fn eq(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fcmp(FloatCC::Equal, a, b)
    }
    fn and(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().band(a, b)
    }
    fn or(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().bor(a, b)
    }
    fn select(&mut self, m: Value, a: Value, b: Value) -> Value {
        // Lane masks are i32x4 all-ones/all-zeros; bitselect wants one type throughout.
        let m = self.b.ins().bitcast(F32X4, little(), m);
        self.b.ins().bitselect(m, a, b)
    }
    fn copysign(&mut self, mag: Value, sign: Value) -> Value {
        let mi = self.b.ins().bitcast(I32X4, little(), mag);
        let si = self.b.ins().bitcast(I32X4, little(), sign);
        let lo = self.i32s(0x7fff_ffff);
        let hi = self.i32s(i32::MIN);
        let m = self.b.ins().band(mi, lo);
        let s = self.b.ins().band(si, hi);
        let r = self.b.ins().bor(m, s);
        self.b.ins().bitcast(F32X4, little(), r)
    }
    fn pow2i(&mut self, k: Value) -> Value {
        // k + 1.5 * 2^23 holds the integer k in its low mantissa bits (|k| < 2^22): cheaper
        // than a saturating conversion.
        let magic = self.c(12_582_912.0);
        let t = self.b.ins().fadd(k, magic);
        let bits = self.b.ins().bitcast(I32X4, little(), t);
        let bias = self.i32s(0x4B40_0000 - 127);
        let e = self.b.ins().isub(bits, bias);
        let bits = self.b.ins().ishl_imm_u(e, 23);
        self.b.ins().bitcast(F32X4, little(), bits)
    }
    fn frexp(&mut self, x: Value) -> (Value, Value) {
        // Subnormals: scale by 2^24 first so the exponent field is meaningful.
        let tiny = self.c(f32::MIN_POSITIVE);
        let sub = self.lt(x, tiny);
        let big = self.c(16_777_216.0);
        let xs = self.mul(x, big);
        let x = self.select(sub, xs, x);
        let bits = self.b.ins().bitcast(I32X4, little(), x);
        let sh = self.b.ins().ushr_imm_u(bits, 23);
        let ff = self.i32s(0xff);
        let ex = self.b.ins().band(sh, ff);
        let bias = self.i32s(126);
        let ex = self.b.ins().isub(ex, bias);
        let e = self.b.ins().fcvt_from_sint(F32X4, ex);
        let (z, k24) = (self.c(0.0), self.c(24.0));
        let adj = self.select(sub, k24, z);
        let e = self.sub(e, adj);
        let keep = self.i32s(0x807f_ffffu32 as i32);
        let half = self.i32s(0x3f00_0000);
        let mbits = self.b.ins().band(bits, keep);
        let mbits = self.b.ins().bor(mbits, half);
        (self.b.ins().bitcast(F32X4, little(), mbits), e)
    }
}

impl Emitter<'_> {
    fn i32s(&mut self, v: i32) -> Value {
        self.splat_const(v as u32, I32X4)
    }

    /// A splatted constant as a constant-pool load in the block that uses it (once per block).
    /// Hoisting every constant into the entry block kept them all live across every loop: with
    /// sixteen vector registers they spilled, and the allocator reloaded and shuffled them in
    /// each iteration of every loop, even loops that never used them.
    fn splat_const(&mut self, bits: u32, ty: cranelift_codegen::ir::Type) -> Value {
        let block = self.b.current_block().expect("constants are requested inside a block");
        if let Some(&v) = self.consts.get(&(bits, ty, block)) {
            return v;
        }
        let data: Vec<u8> = (0..4).flat_map(|_| bits.to_le_bytes()).collect();
        let handle = self.b.func.dfg.constants.insert(data.into());
        let v = self.b.ins().vconst(ty, handle);
        self.consts.insert((bits, ty, block), v);
        v
    }
    fn i64c(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }
    fn load(&mut self, ty: cranelift_codegen::ir::Type, base: Value, offset: i32) -> Value {
        self.b.ins().load(ty, flags(), base, offset)
    }
    /// `base + index * size`
    fn elem(&mut self, base: Value, index: Value, size: i64) -> Value {
        let o = self.b.ins().imul_imm_s(index, size);
        self.b.ins().iadd(base, o)
    }
    fn hreduce(&mut self, v: Value, max: bool) -> Value {
        let mut acc = self.b.ins().extractlane(v, 0);
        for lane in 1..4u8 {
            let x = self.b.ins().extractlane(v, lane);
            acc = if max { self.b.ins().fmax(acc, x) } else { self.b.ins().fadd(acc, x) };
        }
        acc
    }

    /// `for i in (start..end).step_by(step)` with loop-carried values; returns their final values.
    fn for_loop(
        &mut self,
        start: Value,
        end: Value,
        step: i64,
        carried: &[Value],
        body: impl FnOnce(&mut Self, Value, &[Value]) -> Vec<Value>,
    ) -> Vec<Value> {
        let header = self.b.create_block();
        let body_block = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, I64);
        for &c in carried {
            let ty = self.b.func.dfg.value_type(c);
            self.b.append_block_param(header, ty);
            self.b.append_block_param(exit, ty);
        }
        let args: Vec<BlockArg> = std::iter::once(start).chain(carried.iter().copied()).map(BlockArg::from).collect();
        self.b.ins().jump(header, &args);
        self.b.switch_to_block(header);
        let params = self.b.block_params(header).to_vec();
        let (i, cur) = (params[0], params[1..].to_vec());
        let go = self.b.ins().icmp(IntCC::SignedLessThan, i, end);
        let exit_args: Vec<BlockArg> = cur.iter().copied().map(BlockArg::from).collect();
        self.b.ins().brif(go, body_block, &[], exit, &exit_args);
        self.b.switch_to_block(body_block);
        let next = body(self, i, &cur);
        let i2 = self.b.ins().iadd_imm_s(i, step);
        let args: Vec<BlockArg> = std::iter::once(i2).chain(next).map(BlockArg::from).collect();
        self.b.ins().jump(header, &args);
        self.b.switch_to_block(exit);
        self.b.block_params(exit).to_vec()
    }

    /// `(L, s)` of a graph at vector inputs.
    fn graph(&mut self, g: &Graph, y: Value, p: Value) -> (Value, Value) {
        let vals = eval_graph(self, g, y, p);
        (vals[g.outputs[0].1.index()], vals[g.outputs[1].1.index()])
    }

    /// `(L, s)` of a graph at scalar inputs (lane 0 of a splat).
    fn graph_scalar(&mut self, g: &Graph, y: Value, p: Value) -> (Value, Value) {
        let yv = self.b.ins().splat(F32X4, y);
        let pv = self.b.ins().splat(F32X4, p);
        let (l, s) = self.graph(g, yv, pv);
        (self.b.ins().extractlane(l, 0), self.b.ins().extractlane(s, 0))
    }

    /// Copies `src[from..n]` (fewer than 4 floats) into a 4-lane stack slot padded with `pad`
    /// and returns the slot's address: the ragged end of a row as one chunk.
    fn tail_slot(&mut self, src: Value, from: Value, n: Value, pad: f32) -> Value {
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 16, 4));
        let padv = self.c(pad);
        self.b.ins().stack_store(I64, padv, slot, 0);
        let base = self.b.ins().stack_addr(I64, slot, 0);
        self.for_loop(from, n, 1, &[], |e, c, _| {
            let at = e.elem(src, c, 4);
            let v = e.load(F32, at, 0);
            let k = e.b.ins().isub(c, from);
            let dst = e.elem(base, k, 4);
            e.b.ins().store(flags(), v, dst, 0);
            vec![]
        });
        base
    }

    /// Calls the host function at `addr` with the given argument types; its result, if any.
    fn call(
        &mut self,
        addr: usize,
        args: &[Value],
        params: &[cranelift_codegen::ir::Type],
        ret: Option<cranelift_codegen::ir::Type>,
    ) -> Option<Value> {
        let mut sig = cranelift_codegen::ir::Signature::new(self.call_conv);
        sig.params.extend(params.iter().map(|&t| AbiParam::new(t)));
        sig.returns.extend(ret.map(AbiParam::new));
        let sig = self.b.import_signature(sig);
        let callee = self.b.ins().iconst(I64, addr as i64);
        let call = self.b.ins().call_indirect(sig, callee, args);
        self.b.inst_results(call).first().copied()
    }

    /// The whole kernel function.
    fn kernel(&mut self, spec: &Spec, g: &Graphs) {
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        let args = self.b.block_params(entry)[0];
        let ld = |e: &mut Self, o| e.load(I64, args, o);
        let (logits, grad, row_loss) = (ld(self, off::LOGITS), ld(self, off::GRAD), ld(self, off::ROW_LOSS));
        let (labels, labels_b, lam, dense) =
            (ld(self, off::LABELS), ld(self, off::LABELS_B), ld(self, off::LAM), ld(self, off::DENSE));
        let (p_buf, s_buf, rows, classes) =
            (ld(self, off::P_BUF), ld(self, off::S_BUF), ld(self, off::ROWS), ld(self, off::CLASSES));
        let inv_batch = self.load(F32, args, off::INV_BATCH);
        let zero = self.i64c(0);
        let c4 = self.b.ins().band_imm_s(classes, !3i64);
        let padded = self.b.ins().iadd_imm_s(c4, 4);
        let body = self.b.create_block();
        self.b.ins().jump(body, &[]);
        self.b.switch_to_block(body);
        let ctx = RowCtx {
            logits,
            grad,
            row_loss,
            labels,
            labels_b,
            lam,
            dense,
            p_buf,
            s_buf,
            classes,
            c4,
            padded,
            inv_batch,
        };
        if spec.kind == TargetKind::Labels && g.sparse && self.helpers.avx2 {
            let on = self.program(g.on.expect("label kernels have an on-target graph"));
            self.group_calls(self.helpers.label_rows, args, rows, on);
        } else if spec.kind == TargetKind::Labels && g.sparse {
            self.for_loop(zero, rows, LABEL_ROWS as i64, &[], |e, r0, _| {
                e.label_rows(g, &ctx, r0, rows, spec);
                vec![]
            });
        } else if !g.sparse && (self.helpers.avx2 || spec.classes >= COLUMN_PASS_MIN_CLASSES) {
            let plan = self.rows_plan(spec, g);
            self.group_calls(self.helpers.general_rows, args, rows, plan);
        } else {
            self.for_loop(zero, rows, 1, &[], |e, r, _| {
                e.row(spec, g, &ctx, r);
                vec![]
            });
        }
        self.b.ins().return_(&[]);
    }

    /// `helper(args, r0, n, data)` for each group of up to [`GROUP_ROWS`] rows from `r0`:
    /// the row helpers that take a whole group (`jit_rt::general_rows`, `label_rows`).
    fn group_calls(&mut self, helper: usize, args: Value, rows: Value, data: Value) {
        let zero = self.i64c(0);
        self.for_loop(zero, rows, GROUP_ROWS as i64, &[], |e, r0, _| {
            let left = e.b.ins().isub(rows, r0);
            let most = e.i64c(GROUP_ROWS as i64);
            let fewer = e.b.ins().icmp(IntCC::SignedLessThan, left, most);
            let n = e.b.ins().select(fewer, left, most);
            e.call(helper, &[args, r0, n, data], &[I64, I64, I64, I64], None);
            vec![]
        });
    }

    /// Classes per iteration of the exp and general passes (see `pair`).
    fn step(&self) -> i64 {
        if self.pair { 8 } else { 4 }
    }

    /// The first class of each chunk an iteration starting at `c` handles.
    fn chunk_starts(&mut self, c: Value) -> Vec<Value> {
        if self.pair { vec![c, self.b.ins().iadd_imm_s(c, 4)] } else { vec![c] }
    }

    /// `(L, s)` of `g` for each chunk, emitted in step.
    fn graphs(&mut self, g: &Graph, y: &[Value], p: &[Value]) -> Vec<(Value, Value)> {
        let (lo, so) = (g.outputs[0].1.index(), g.outputs[1].1.index());
        match (y, p) {
            (&[y], &[p]) => {
                let v = eval_graph(self, g, y, p);
                vec![(v[lo], v[so])]
            }
            (&[y0, y1], &[p0, p1]) => {
                let v = eval_graph(&mut Pair(self), g, (y0, y1), (p0, p1));
                vec![(v[lo].0, v[so].0), (v[lo].1, v[so].1)]
            }
            _ => unreachable!("one or two chunks"),
        }
    }

    /// A pointer to 4 floats at `base[c..]`, or to `tail` for the last (ragged) chunk.
    fn chunk_ptr(&mut self, base: Value, c: Value, c4: Value, tail: Value) -> Value {
        let full = self.b.ins().icmp(IntCC::SignedLessThan, c, c4);
        let at = self.elem(base, c, 4);
        self.b.ins().select(full, at, tail)
    }

    /// One row of the contract.
    fn row(&mut self, spec: &Spec, g: &Graphs, x: &RowCtx, r: Value) {
        let zero = self.i64c(0);
        let row_start = self.b.ins().imul(r, x.classes);
        let z = self.elem(x.logits, row_start, 4);
        let grow = self.elem(x.grad, row_start, 4);

        // 1-2. m = max z; e = exp(z - m) into p_buf (zeros past the classes); S = sum e
        let e_len = self.b.ins().iadd_imm_s(x.c4, 8);
        let vzero = self.c(0.0);
        let sum = self
            .call(self.helpers.softmax_exp, &[z, x.classes, x.p_buf, e_len], &[I64, I64, I64, I64], Some(F32))
            .expect("returns the sum");
        let one = self.b.ins().f32const(1.0);
        let inv_s = self.b.ins().fdiv(one, sum);
        let inv_sv = self.b.ins().splat(F32X4, inv_s);

        // Which classes hold labels (-1 when none).
        let (ka, kb, lam) = match spec.kind {
            TargetKind::Dense => (None, None, None),
            TargetKind::Labels => (Some(self.label(x.labels, r)), None, None),
            TargetKind::Mixup => {
                let at = self.elem(x.lam, r, 4);
                (Some(self.label(x.labels, r)), Some(self.label(x.labels_b, r)), Some(self.load(F32, at, 0)))
            }
        };

        // 3. the off-target (or dense) pass over all classes: p into p_buf, s into s_buf.
        let (mut row_l, mut sigma) = (self.b.ins().f32const(0.0), self.b.ins().f32const(0.0));
        if !g.sparse {
            let iota = self.iota();
            let c_splat = |e: &mut Self, c: Value| {
                let c32 = e.b.ins().ireduce(I32, c);
                let cs = e.b.ins().splat(I32X4, c32);
                e.b.ins().iadd(cs, iota)
            };
            let ncls = self.b.ins().ireduce(I32, x.classes);
            let ncls = self.b.ins().splat(I32X4, ncls);
            let kav = ka.map(|k| {
                let k32 = self.b.ins().ireduce(I32, k);
                self.b.ins().splat(I32X4, k32)
            });
            let kbv = kb.map(|k| {
                let k32 = self.b.ins().ireduce(I32, k);
                self.b.ins().splat(I32X4, k32)
            });
            let dense_row = self.elem(x.dense, row_start, 4);
            let chunks = |e: &mut Self, c: Value, ys: &[Value], acc: &[Value]| -> Vec<Value> {
                let cs = e.chunk_starts(c);
                let mut ps = Vec::new();
                for &ci in &cs {
                    let at = e.elem(x.p_buf, ci, 4);
                    let ev = e.load(F32X4, at, 0);
                    let p = e.b.ins().fmul(ev, inv_sv);
                    e.b.ins().store(flags(), p, at, 0);
                    ps.push(p);
                }
                let ls = e.graphs(g.off.unwrap_or(g.general), ys, &ps);
                let mut acc = acc.to_vec();
                for (&ci, &(l, s)) in cs.iter().zip(&ls) {
                    // Keep lanes that are real classes and not labels (those get their own y
                    // below); a second chunk past the padded classes keeps none.
                    let cv = c_splat(e, ci);
                    let mut keep = e.b.ins().icmp(IntCC::SignedLessThan, cv, ncls);
                    for k in [kav, kbv].into_iter().flatten() {
                        let ne = e.b.ins().icmp(IntCC::NotEqual, cv, k);
                        keep = e.b.ins().band(keep, ne);
                    }
                    let vz = e.c(0.0);
                    let l = e.select(keep, l, vz);
                    let s = e.select(keep, s, vz);
                    let dst = e.elem(x.s_buf, ci, 4);
                    e.b.ins().store(flags(), s, dst, 0);
                    acc = vec![e.b.ins().fadd(acc[0], l), e.b.ins().fadd(acc[1], s)];
                }
                acc
            };
            let step = self.step();
            let acc = if spec.kind == TargetKind::Dense {
                let ytail = self.tail_slot(dense_row, x.c4, x.classes, 0.0);
                self.for_loop(zero, x.padded, step, &[vzero, vzero], |e, c, acc| {
                    let mut ys = Vec::new();
                    for ci in e.chunk_starts(c) {
                        let at = e.chunk_ptr(dense_row, ci, x.c4, ytail);
                        ys.push(e.load(F32X4, at, 0));
                    }
                    chunks(e, c, &ys, acc)
                })
            } else {
                let unused = self.c(0.0); // the off-target graph has y folded in
                let ys = vec![unused; (step / 4) as usize];
                self.for_loop(zero, x.padded, step, &[vzero, vzero], |e, c, acc| chunks(e, c, &ys, acc))
            };
            row_l = self.hreduce(acc[0], false);
            sigma = self.hreduce(acc[1], false);
        }

        // 4. the label classes at their own y
        let mut fixups: Vec<(Value, Value)> = Vec::new(); // (class, s)
        let p_at = |e: &mut Self, k: Value| {
            let at = e.elem(x.p_buf, k, 4);
            let v = e.load(F32, at, 0);
            if g.sparse { e.b.ins().fmul(v, inv_s) } else { v }
        };
        match (ka, kb) {
            (Some(k), None) => {
                let y = self.b.ins().f32const(spec.y_on() as f32);
                let pk = p_at(self, k);
                let (l, s) = self.graph_scalar(g.on.unwrap(), y, pk);
                row_l = self.b.ins().fadd(row_l, l);
                sigma = self.b.ins().fadd(sigma, s);
                fixups.push((k, s));
            }
            (Some(a), Some(b)) => {
                // y_a = (1-alpha) lam + alpha/C, y_b = (1-alpha)(1-lam) + alpha/C; one class when a == b.
                let lam = lam.unwrap();
                let keep = self.b.ins().f32const((1.0 - spec.smoothing) as f32);
                let yo = self.b.ins().f32const(spec.y_off() as f32);
                let one = self.b.ins().f32const(1.0);
                let la = self.b.ins().fmul(keep, lam);
                let ya = self.b.ins().fadd(la, yo);
                let oml = self.b.ins().fsub(one, lam);
                let lb = self.b.ins().fmul(keep, oml);
                let yb = self.b.ins().fadd(lb, yo);
                let same = self.b.ins().icmp(IntCC::Equal, a, b);
                let yab = self.b.ins().fadd(la, lb);
                let yab = self.b.ins().fadd(yab, yo);
                let ya = self.b.ins().select(same, yab, ya);
                let (pa, pb) = (p_at(self, a), p_at(self, b));
                let (la_, sa) = self.graph_scalar(g.general, ya, pa);
                let (lb_, sb) = self.graph_scalar(g.general, yb, pb);
                let fz = self.b.ins().f32const(0.0);
                let lb_ = self.b.ins().select(same, fz, lb_);
                let sb = self.b.ins().select(same, fz, sb);
                row_l = self.b.ins().fadd(row_l, la_);
                row_l = self.b.ins().fadd(row_l, lb_);
                sigma = self.b.ins().fadd(sigma, sa);
                sigma = self.b.ins().fadd(sigma, sb);
                fixups.push((b, sb)); // written first: when a == b, a's value wins
                fixups.push((a, sa));
            }
            _ => {}
        }
        let rl = self.elem(x.row_loss, r, 4);
        self.b.ins().store(flags(), row_l, rl, 0);

        // 5. grad = (s - p sigma) / B
        if !g.sparse {
            for &(k, s) in &fixups {
                let at = self.elem(x.s_buf, k, 4);
                self.b.ins().store(flags(), s, at, 0);
            }
        }
        let sparse = g.sparse;
        if sparse {
            // p sigma / B with p = e / S: one factor for the whole row.
            let k = self.b.ins().fmul(inv_s, sigma);
            let k = self.b.ins().fmul(k, x.inv_batch);
            let k = self.b.ins().fneg(k);
            self.call(self.helpers.scale, &[x.p_buf, x.classes, k, grow], &[I64, I64, F32, I64], None);
        } else {
            let args = [x.p_buf, x.s_buf, x.classes, sigma, x.inv_batch, grow];
            self.call(self.helpers.grad, &args, &[I64, I64, I64, F32, F32, I64], None);
        }
        if sparse {
            // The label classes: grad_k = (s_k - p_k sigma) / B.
            for &(k, s) in &fixups {
                let pk = p_at(self, k);
                let ps = self.b.ins().fmul(pk, sigma);
                let d = self.b.ins().fsub(s, ps);
                let gv = self.b.ins().fmul(d, x.inv_batch);
                let dst = self.elem(grow, k, 4);
                self.b.ins().store(flags(), gv, dst, 0);
            }
        }
    }

    /// Up to [`LABEL_ROWS`] rows from `r0` of a label kernel whose loss vanishes off the label
    /// (CE, A2, ... without smoothing): one helper call writes each row's `e = exp(z - m)` into
    /// its gradient row and `S = sum e` into a slot; the on-target graph then runs once for
    /// the rows' `p_label` as two vectors emitted in step; one helper call scales each row's
    /// `e` into its gradient, and the labels' entries are fixed up. Calls per group, not per
    /// row: each call re-enters the helper and spills the kernel's vector registers. One graph
    /// evaluation per eight rows instead of one on a splat per row, and the rows' softmax
    /// passes do not wait on each other's graph.
    fn label_rows(&mut self, g: &Graphs, x: &RowCtx, r0: Value, rows: Value, spec: &Spec) {
        let zero = self.i64c(0);
        let left = self.b.ins().isub(rows, r0);
        let most = self.i64c(LABEL_ROWS as i64);
        let fewer = self.b.ins().icmp(IntCC::SignedLessThan, left, most);
        let n = self.b.ins().select(fewer, left, most);
        let slot = |e: &mut Self, fill: f32| {
            let bytes = 4 * LABEL_ROWS as u32;
            let s = e.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, bytes, 4));
            let v = e.c(fill);
            for o in (0..bytes).step_by(16) {
                e.b.ins().stack_store(F32X4, v, s, o as i32);
            }
            e.b.ins().stack_addr(I64, s, 0)
        };
        // Lanes of rows past the batch's end hold e = 0.5 and S = 1 and are never stored.
        let (e_slot, sums, l_slot, f_slot, gk_slot) =
            (slot(self, 0.5), slot(self, 1.0), slot(self, 0.0), slot(self, 0.0), slot(self, 0.0));
        let row_ptr = |e: &mut Self, base: Value, r: Value| {
            let start = e.b.ins().imul(r, x.classes);
            e.elem(base, start, 4)
        };
        let (z0, g0) = (row_ptr(self, x.logits, r0), row_ptr(self, x.grad, r0));
        let args = [z0, x.classes, n, g0, sums];
        self.call(self.helpers.softmax_rows, &args, &[I64, I64, I64, I64, I64], None);
        // e at each row's label.
        self.for_loop(zero, n, 1, &[], |e, i, _| {
            let r = e.b.ins().iadd(r0, i);
            let grow = row_ptr(e, x.grad, r);
            let k = e.label(x.labels, r);
            let at = e.elem(grow, k, 4);
            let ek = e.load(F32, at, 0);
            let to = e.elem(e_slot, i, 4);
            e.b.ins().store(flags(), ek, to, 0);
            vec![]
        });
        let one = self.c(1.0);
        let (mut inv_s, mut p) = (Vec::new(), Vec::new());
        for h in 0..2 {
            let sum = self.load(F32X4, sums, 16 * h);
            let inv = self.b.ins().fdiv(one, sum);
            let ek = self.load(F32X4, e_slot, 16 * h);
            p.push(self.b.ins().fmul(ek, inv));
            inv_s.push(inv);
        }
        let y = self.c(spec.y_on() as f32);
        let on = g.on.expect("label kernels have an on-target graph");
        // Tier 1 runs the on-target graph as a program (the same bits; no graph to compile).
        let ls = if self.inline_math { self.graphs(on, &[y, y], &p) } else { self.program_points(on, &p) };
        let inv_b = self.b.ins().splat(F32X4, x.inv_batch);
        for (h, (l, sigma)) in ls.into_iter().enumerate() {
            let o = 16 * h as i32;
            self.b.ins().store(flags(), l, l_slot, o);
            // Off the label s = 0, so sigma = s_label and grad = -p sigma / B = e (-sigma / (S B)).
            let f = self.b.ins().fmul(inv_s[h], sigma);
            let f = self.b.ins().fmul(f, inv_b);
            let f = self.b.ins().fneg(f);
            self.b.ins().store(flags(), f, f_slot, o);
            // At the label: (s - p sigma) / B.
            let ps = self.b.ins().fmul(p[h], sigma);
            let d = self.b.ins().fsub(sigma, ps);
            let gk = self.b.ins().fmul(d, inv_b);
            self.b.ins().store(flags(), gk, gk_slot, o);
        }
        self.call(self.helpers.scale_rows, &[g0, x.classes, n, f_slot], &[I64, I64, I64, I64], None);
        self.for_loop(zero, n, 1, &[], |e, i, _| {
            let r = e.b.ins().iadd(r0, i);
            let [l, gk] = [l_slot, gk_slot].map(|slot| {
                let at = e.elem(slot, i, 4);
                e.load(F32, at, 0)
            });
            let rl = e.elem(x.row_loss, r, 4);
            e.b.ins().store(flags(), l, rl, 0);
            let grow = row_ptr(e, x.grad, r);
            let k = e.label(x.labels, r);
            let at = e.elem(grow, k, 4);
            e.b.ins().store(flags(), gk, at, 0);
            vec![]
        });
    }

    /// The label of row `r` as an i64 class index.
    fn label(&mut self, labels: Value, r: Value) -> Value {
        let at = self.elem(labels, r, 4);
        let l = self.load(I32, at, 0);
        self.b.ins().uextend(I64, l)
    }

    /// `[0, 1, 2, 3]` as i32x4.
    fn iota(&mut self) -> Value {
        let mut v = self.i32s(0);
        for lane in 1..4u8 {
            let k = self.b.ins().iconst(I32, lane as i64);
            v = self.b.ins().insertlane(v, k, lane);
        }
        v
    }
}

impl Ops for Emitter<'_> {
    fn unary_op(&mut self, op: UnOp, x: Value, eps: f32) -> Value {
        match self.out_of_line(Routine::Unary(op, eps)) {
            Some(r) => self.routine_call(r, &[x], &[])[0],
            None => vm::unary(self, op, x, eps),
        }
    }
    fn binary_op(&mut self, op: BinOp, a: Value, b: Value) -> Value {
        match self.out_of_line(Routine::Binary(op)) {
            Some(r) => self.routine_call(r, &[a], &[b])[0],
            None => vm::binary(self, op, a, b),
        }
    }
}

impl Ops for Pair<'_, '_> {
    fn unary_op(&mut self, op: UnOp, x: (Value, Value), eps: f32) -> (Value, Value) {
        match self.0.out_of_line(Routine::Unary(op, eps)) {
            Some(r) => <[Value; 2]>::try_from(self.0.routine_call(r, &[x.0, x.1], &[])).unwrap().into(),
            None => vm::unary(self, op, x, eps),
        }
    }
    fn binary_op(&mut self, op: BinOp, a: (Value, Value), b: (Value, Value)) -> (Value, Value) {
        match self.0.out_of_line(Routine::Binary(op)) {
            Some(r) => <[Value; 2]>::try_from(self.0.routine_call(r, &[a.0, a.1], &[b.0, b.1])).unwrap().into(),
            None => vm::binary(self, op, a, b),
        }
    }
}

/// An op the quick tier may call out of line.
#[derive(Clone, Copy)]
enum Routine {
    Unary(UnOp, f32),
    Binary(BinOp),
}

impl Emitter<'_> {
    /// The address of `g`'s columnar program, which the kernel keeps alive.
    fn program(&mut self, g: &Graph) -> Value {
        self.keep(Box::new(Program::new(g)))
    }

    /// The address of a value the code reads, which the kernel keeps alive.
    fn keep<T: 'static>(&mut self, value: Box<T>) -> Value {
        let at = self.b.ins().iconst(I64, &*value as *const T as i64);
        self.programs.push(value);
        at
    }

    /// The plan of the general rows helper (`jit_rt::general_rows`) for this spec.
    fn rows_plan(&mut self, spec: &Spec, g: &Graphs) -> Value {
        let labels = match spec.kind {
            TargetKind::Dense => LabelTerms::None,
            TargetKind::Labels => {
                LabelTerms::Labels(Program::new(g.on.expect("label kernels have an on-target graph")))
            }
            TargetKind::Mixup => LabelTerms::Mixup {
                general: Program::new(g.general),
                keep: (1.0 - spec.smoothing) as f32,
                y_off: spec.y_off() as f32,
            },
        };
        self.keep(Box::new(RowsPlan { pass: Program::new(g.off.unwrap_or(g.general)), labels }))
    }

    /// `(L, s)` of `g` (its `y` folded in) at the lanes of `ps`, by the columnar program
    /// (`jit_pass`), which the kernel keeps.
    fn program_points(&mut self, g: &Graph, ps: &[Value]) -> Vec<(Value, Value)> {
        let prog = self.program(g);
        let bytes = 16 * ps.len() as u32;
        let [pslot, lslot, sslot] =
            [(); 3].map(|_| self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, bytes, 4)));
        for (i, &p) in ps.iter().enumerate() {
            self.b.ins().stack_store(I64, p, pslot, 16 * i as i32);
        }
        let [pa, la, sa] = [pslot, lslot, sslot].map(|slot| self.b.ins().stack_addr(I64, slot, 0));
        let n = self.b.ins().iconst(I64, 4 * ps.len() as i64);
        self.call(self.helpers.graph_points, &[prog, pa, n, la, sa], &[I64, I64, I64, I64, I64], None);
        (0..ps.len() as i32)
            .map(|i| {
                let l = self.b.ins().stack_load(I64, F32X4, lslot, 16 * i);
                let s = self.b.ins().stack_load(I64, F32X4, sslot, 16 * i);
                (l, s)
            })
            .collect()
    }

    /// `r` when this tier calls it out of line: in tier 1, the math library's routines.
    fn out_of_line(&self, r: Routine) -> Option<Routine> {
        let routine = match r {
            Routine::Unary(op, _) => vm::is_routine(op),
            Routine::Binary(op) => op == BinOp::Pow,
        };
        (!self.inline_math && routine).then_some(r)
    }

    /// Calls a routine on the lanes of `xs` (and `pow`'s exponents `bs`) through stack slots:
    /// the vectors are stored, the helper works on them in place, and they are loaded back.
    fn routine_call(&mut self, r: Routine, xs: &[Value], bs: &[Value]) -> Vec<Value> {
        let bytes = 16 * xs.len() as u32;
        let slot =
            |e: &mut Self| e.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, bytes, 4));
        let xslot = slot(self);
        for (i, &x) in xs.iter().enumerate() {
            self.b.ins().stack_store(I64, x, xslot, 16 * i as i32);
        }
        let xa = self.b.ins().stack_addr(I64, xslot, 0);
        let n = self.b.ins().iconst(I64, 4 * xs.len() as i64);
        match r {
            Routine::Unary(op, eps) => {
                let code = UnOp::ALL.iter().position(|&o| o == op).expect("op in the table");
                let code = self.b.ins().iconst(I32, code as i64);
                let eps = self.b.ins().f32const(eps);
                self.call(self.helpers.unary_lanes, &[code, eps, xa, n], &[I32, F32, I64, I64], None);
            }
            Routine::Binary(op) => {
                assert_eq!(op, BinOp::Pow, "pow is the only binary routine");
                let bslot = slot(self);
                for (i, &b) in bs.iter().enumerate() {
                    self.b.ins().stack_store(I64, b, bslot, 16 * i as i32);
                }
                let ba = self.b.ins().stack_addr(I64, bslot, 0);
                self.call(self.helpers.pow_lanes, &[xa, ba, n], &[I64, I64, I64], None);
            }
        }
        (0..xs.len()).map(|i| self.b.ins().stack_load(I64, F32X4, xslot, 16 * i as i32)).collect()
    }
}

/// The emitter on two chunks at once: every operation is emitted for both, one after the
/// other, so their dependency chains interleave in the instruction stream.
struct Pair<'e, 'a>(&'e mut Emitter<'a>);

/// Vm methods that apply the emitter's method to each half.
macro_rules! on_both {
    ($($f:ident($($a:ident),*);)*) => {
        $(fn $f(&mut self, $($a: (Value, Value)),*) -> (Value, Value) {
            (self.0.$f($($a.0),*), self.0.$f($($a.1),*))
        })*
    };
}

impl Vm for Pair<'_, '_> {
    type V = (Value, Value);
    type M = (Value, Value);
    fn c(&mut self, v: f32) -> Self::V {
        let x = self.0.c(v);
        (x, x)
    }
    fn frexp(&mut self, x: Self::V) -> (Self::V, Self::V) {
        let ((m0, e0), (m1, e1)) = (self.0.frexp(x.0), self.0.frexp(x.1));
        ((m0, m1), (e0, e1))
    }
    on_both! {
        add(a, b); sub(a, b); mul(a, b); div(a, b); fma(a, b, c); neg(a); abs(a); sqrt(a);
        min(a, b); max(a, b); round(a); floor(a); lt(a, b); eq(a, b); and(a, b); or(a, b);
        select(m, a, b); copysign(mag, sign); pow2i(k);
    }
}

/// The pointers and sizes every row reads.
struct RowCtx {
    logits: Value,
    grad: Value,
    row_loss: Value,
    labels: Value,
    labels_b: Value,
    lam: Value,
    dense: Value,
    p_buf: Value,
    s_buf: Value,
    classes: Value,
    /// `classes` rounded down and up to a multiple of 4.
    c4: Value,
    padded: Value,
    inv_batch: Value,
}

/// With the baseline helpers (a processor without AVX2 + FMA, where the program runs element
/// by element), the fewest classes for which the general pass runs as a columnar program
/// (`jit_pass`) rather than inline: measured, the program was slower at 10 classes and faster
/// at 100. With the AVX2 and AVX-512 helpers the row groups (`jit_rt::general_rows`) take
/// every class count: at 2-20 classes they were 2.2-4.2x faster than the inline pass.
const COLUMN_PASS_MIN_CLASSES: usize = 32;

/// Rows per group of a sparse label kernel (`label_rows`): two vectors of `p_label`.
const LABEL_ROWS: usize = 8;

/// Below this many elements a batch runs on one thread.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 18;

impl JitKernel {
    /// Runs the kernel: fills `grad [B, C]` and `row_loss [B]` and returns the batch loss
    /// (the mean of `row_loss`, summed in f64). `threads` = 0 picks by size.
    pub fn run(
        &self,
        logits: &[f32],
        targets: &Targets<f32>,
        grad: &mut [f32],
        row_loss: &mut [f32],
        threads: usize,
    ) -> Result<f64, ContractError> {
        if let Some(k) = self.upgrade.get() {
            return k.run(logits, targets, grad, row_loss, threads);
        }
        let c = self.spec.classes;
        let b = batch_size(logits.len(), c)?;
        targets.check(b, c)?;
        let want = Spec::of(targets, c);
        if want.kind != self.spec.kind
            || (want.kind != TargetKind::Dense && want.smoothing.to_bits() != self.spec.smoothing.to_bits())
        {
            return Err(ContractError::Spec { compiled: format!("{:?}", self.spec), given: format!("{want:?}") });
        }
        if grad.len() != logits.len() || row_loss.len() != b {
            return Err(ContractError::Length { what: "output", got: grad.len(), want: logits.len() });
        }
        let threads = match threads {
            0 if b * c >= PARALLEL_MIN_ELEMENTS => std::thread::available_parallelism().map_or(1, |n| n.get()),
            0 => 1,
            n => n,
        }
        .min(b);
        let rows_per = b.div_ceil(threads);
        let inv_batch = 1.0 / b as f32;
        let run_rows = |start: usize, grad: &mut [f32], row_loss: &mut [f32]| {
            let n = row_loss.len();
            // Per row, padded classes plus one chunk (the inline general pass runs chunks in
            // pairs); for the general rows helper, GROUP_ROWS rows of whole vectors.
            let len = ((c & !3) + 8).max(GROUP_ROWS * row_stride(c));
            let (mut p_buf, mut s_buf) = (Line::scratch(len), Line::scratch(len));
            let rows = start..start + n;
            let (mut labels, mut labels_b): (*const u32, *const u32) = (std::ptr::null(), std::ptr::null());
            let (mut lam, mut dense): (*const f32, *const f32) = (std::ptr::null(), std::ptr::null());
            match *targets {
                Targets::Labels { labels: l, .. } => labels = l[rows].as_ptr(),
                Targets::Mixup { labels: l, labels_b: lb, lam: lm, .. } => {
                    labels = l[rows.clone()].as_ptr();
                    labels_b = lb[rows.clone()].as_ptr();
                    lam = lm[rows].as_ptr();
                }
                Targets::Dense { y } => dense = y[start * c..(start + n) * c].as_ptr(),
            }
            let args = Args {
                logits: logits[start * c..(start + n) * c].as_ptr(),
                grad: grad.as_mut_ptr(),
                row_loss: row_loss.as_mut_ptr(),
                labels,
                labels_b,
                lam,
                dense,
                p_buf: p_buf.as_mut_ptr().cast(),
                s_buf: s_buf.as_mut_ptr().cast(),
                rows: n as u64,
                classes: c as u64,
                inv_batch,
            };
            // SAFETY: every pointer in `args` covers `n` rows of `c` classes (the slices above
            // are bounds-checked and `targets.check` verified the label ranges), the scratch
            // rows hold `(c & !3) + 4` floats as the kernel expects, and the kernel was
            // compiled for this spec.
            unsafe { (self.func)(&args) };
        };
        if threads == 1 {
            run_rows(0, grad, row_loss);
        } else {
            std::thread::scope(|scope| {
                for (i, (g, l)) in grad.chunks_mut(rows_per * c).zip(row_loss.chunks_mut(rows_per)).enumerate() {
                    let run_rows = &run_rows;
                    scope.spawn(move || run_rows(i * rows_per, g, l));
                }
            });
        }
        Ok(row_loss.iter().map(|&v| v as f64).sum::<f64>() / b as f64)
    }
}
