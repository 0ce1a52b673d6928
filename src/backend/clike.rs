//! The shared emitter for the C-like targets (CUDA C and WGSL): one op-to-syntax table with
//! per-target overrides, and a [`Vm`] that prints statements so the math routines of
//! `mathlib` become device functions with exactly the coefficients the CPU uses.

use super::mathlib::Vm;
use super::vm;
use crate::ir::{BinOp, Graph, Input, Node, UnOp};
use std::collections::BTreeSet;
use std::fmt::Write;

/// A C-like target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Cuda,
    Wgsl,
}

/// How each target spells the machine's operations. `{0}`, `{1}`, `{2}` are operands.
struct Syntax {
    /// `let` for one new f32 / bool value: name, expression.
    decl_f: &'static str,
    decl_b: &'static str,
    fma: &'static str,
    sqrt: &'static str,
    abs: &'static str,
    floor: &'static str,
    round: &'static str,
    select: &'static str,
    copysign: &'static str,
    pow2i: &'static str,
    /// `frexp`: declares `{0}_m` and `{0}_e` from `{1}`.
    frexp: &'static str,
    /// The bit pattern of an f32 as an unsigned 32-bit integer, and back.
    to_bits: &'static str,
    from_bits: &'static str,
    /// Function header: name, parameter list, body follows.
    func1: &'static str,
    func2: &'static str,
    func_end: &'static str,
    lit_suffix: &'static str,
}

const CUDA: Syntax = Syntax {
    decl_f: "    float {0} = {1};",
    decl_b: "    bool {0} = {1};",
    fma: "fmaf({0}, {1}, {2})",
    sqrt: "sqrtf({0})",
    abs: "fabsf({0})",
    floor: "floorf({0})",
    round: "rintf({0})",
    select: "({0} ? {1} : {2})",
    copysign: "copysignf({0}, {1})",
    pow2i: "__int_as_float(((int)({0}) + 127) << 23)",
    frexp: "    int {0}_i; float {0}_m = frexpf({1}, &{0}_i); float {0}_e = (float){0}_i;",
    to_bits: "__float_as_uint({0})",
    from_bits: "__uint_as_float({0})",
    func1: "__device__ __forceinline__ float {0}(float x) {{",
    func2: "__device__ __forceinline__ float {0}(float a, float b) {{",
    func_end: "}",
    lit_suffix: "f",
};

const WGSL: Syntax = Syntax {
    decl_f: "    let {0}: f32 = {1};",
    decl_b: "    let {0}: bool = {1};",
    fma: "fma({0}, {1}, {2})",
    sqrt: "sqrt({0})",
    abs: "abs({0})",
    floor: "floor({0})",
    round: "round({0})",
    select: "select({2}, {1}, {0})",
    copysign: "bitcast<f32>((bitcast<u32>({0}) & 0x7fffffffu) | (bitcast<u32>({1}) & 0x80000000u))",
    pow2i: "bitcast<f32>(u32(i32({0}) + 127) << 23u)",
    frexp: "    let {0}_fr = frexp({1}); let {0}_m: f32 = {0}_fr.fract; let {0}_e: f32 = f32({0}_fr.exp);",
    to_bits: "bitcast<u32>({0})",
    from_bits: "bitcast<f32>({0})",
    func1: "fn {0}(x: f32) -> f32 {{",
    func2: "fn {0}(a: f32, b: f32) -> f32 {{",
    func_end: "}",
    lit_suffix: "f",
};

impl Dialect {
    fn syntax(self) -> &'static Syntax {
        match self {
            Dialect::Cuda => &CUDA,
            Dialect::Wgsl => &WGSL,
        }
    }
}

/// Fills `{0}`, `{1}`, `{2}` in a template.
fn fill(t: &str, args: &[&str]) -> String {
    let mut s = t.replace("{{", "\u{1}").replace("}}", "\u{2}");
    for (i, a) in args.iter().enumerate() {
        s = s.replace(&format!("{{{i}}}"), a);
    }
    s.replace('\u{1}', "{").replace('\u{2}', "}")
}

/// An f32 literal that reads back to the same bits.
pub fn literal(d: Dialect, v: f32) -> String {
    let sx = d.syntax();
    if v.is_nan() {
        return fill(sx.from_bits, &["0x7fc00000u"]);
    }
    if v.is_infinite() {
        let bits = if v > 0.0 { "0x7f800000u" } else { "0xff800000u" };
        return fill(sx.from_bits, &[bits]);
    }
    let mut s = format!("{v:?}");
    if !s.contains(['.', 'e']) {
        s.push_str(".0");
    }
    if v.is_sign_negative() { format!("({s}{})", sx.lit_suffix) } else { format!("{s}{}", sx.lit_suffix) }
}

/// A printed value: an index into the printer's table of names and literals (the machine
/// trait wants `Copy` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Name(u32);

/// A statement printer: every operation becomes a named value.
pub struct Printer {
    pub dialect: Dialect,
    pub lines: Vec<String>,
    names: Vec<String>,
}

impl Printer {
    pub fn new(dialect: Dialect) -> Printer {
        Printer { dialect, lines: Vec::new(), names: Vec::new() }
    }
    /// A value spelled `text` (an input variable or a literal).
    pub fn input(&mut self, text: &str) -> Name {
        self.names.push(text.to_string());
        Name(self.names.len() as u32 - 1)
    }
    pub fn text(&self, v: Name) -> &str {
        &self.names[v.0 as usize]
    }
    fn decl(&mut self, template: &'static str, expr: String) -> Name {
        let n = format!("t{}", self.names.len());
        self.lines.push(fill(template, &[&n, &expr]));
        self.input(&n)
    }
    fn f(&mut self, expr: String) -> Name {
        self.decl(self.dialect.syntax().decl_f, expr)
    }
    fn b(&mut self, expr: String) -> Name {
        self.decl(self.dialect.syntax().decl_b, expr)
    }
    fn call(&mut self, t: &'static str, args: &[Name]) -> Name {
        let args: Vec<String> = args.iter().map(|a| self.text(*a).to_string()).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let e = fill(t, &args);
        self.f(e)
    }
    fn infix(&mut self, a: Name, op: &str, b: Name, boolean: bool) -> Name {
        let e = format!("{} {op} {}", self.text(a), self.text(b));
        if boolean { self.b(e) } else { self.f(e) }
    }
    /// A NaN test that no compiler may fold away (it reads bits).
    fn is_nan(&mut self, a: Name) -> Name {
        let bits = fill(self.dialect.syntax().to_bits, &[self.text(a)]);
        self.b(format!("(({bits} & 0x7fffffffu) > 0x7f800000u)"))
    }
}

impl Vm for Printer {
    type V = Name;
    type M = Name;
    fn c(&mut self, v: f32) -> Name {
        let l = literal(self.dialect, v);
        self.input(&l)
    }
    fn add(&mut self, a: Name, b: Name) -> Name {
        self.infix(a, "+", b, false)
    }
    fn sub(&mut self, a: Name, b: Name) -> Name {
        self.infix(a, "-", b, false)
    }
    fn mul(&mut self, a: Name, b: Name) -> Name {
        self.infix(a, "*", b, false)
    }
    fn div(&mut self, a: Name, b: Name) -> Name {
        self.infix(a, "/", b, false)
    }
    fn fma(&mut self, a: Name, b: Name, c: Name) -> Name {
        self.call(self.dialect.syntax().fma, &[a, b, c])
    }
    fn neg(&mut self, a: Name) -> Name {
        let e = format!("-{}", self.text(a));
        self.f(e)
    }
    fn abs(&mut self, a: Name) -> Name {
        self.call(self.dialect.syntax().abs, &[a])
    }
    fn sqrt(&mut self, a: Name) -> Name {
        self.call(self.dialect.syntax().sqrt, &[a])
    }
    fn min(&mut self, a: Name, b: Name) -> Name {
        self.call("lossc_min({0}, {1})", &[a, b])
    }
    fn max(&mut self, a: Name, b: Name) -> Name {
        self.call("lossc_max({0}, {1})", &[a, b])
    }
    fn round(&mut self, a: Name) -> Name {
        self.call(self.dialect.syntax().round, &[a])
    }
    fn floor(&mut self, a: Name) -> Name {
        self.call(self.dialect.syntax().floor, &[a])
    }
    fn lt(&mut self, a: Name, b: Name) -> Name {
        self.infix(a, "<", b, true)
    }
    fn eq(&mut self, a: Name, b: Name) -> Name {
        self.infix(a, "==", b, true)
    }
    fn and(&mut self, a: Name, b: Name) -> Name {
        self.infix(a, "&&", b, true)
    }
    fn or(&mut self, a: Name, b: Name) -> Name {
        self.infix(a, "||", b, true)
    }
    fn select(&mut self, m: Name, a: Name, b: Name) -> Name {
        self.call(self.dialect.syntax().select, &[m, a, b])
    }
    fn copysign(&mut self, mag: Name, sign: Name) -> Name {
        self.call(self.dialect.syntax().copysign, &[mag, sign])
    }
    fn pow2i(&mut self, k: Name) -> Name {
        self.call(self.dialect.syntax().pow2i, &[k])
    }
    fn frexp(&mut self, x: Name) -> (Name, Name) {
        let n = format!("t{}", self.names.len());
        self.lines.push(fill(self.dialect.syntax().frexp, &[&n, self.text(x)]));
        (self.input(&format!("{n}_m")), self.input(&format!("{n}_e")))
    }
}

/// Device function names.
pub fn unary_fn(op: UnOp) -> String {
    format!("lossc_{}", op.name())
}

/// The math prelude a graph needs: NaN-propagating min/max, then one function per unary op
/// used (and `pow`), each printed from the shared routine.
pub fn prelude(d: Dialect, g: &Graph) -> String {
    let sx = d.syntax();
    let mut out = String::new();
    // min/max: IEEE 754-2019 minimum/maximum (NaN wins, -0 < +0), as on the CPU.
    for (name, pick, zero) in [("lossc_min", "<", "-((-a) + (-b))"), ("lossc_max", ">", "a + b")] {
        let mut p = Printer::new(d);
        let (a, b) = (p.input("a"), p.input("b"));
        let (na, nb) = (p.is_nan(a), p.is_nan(b));
        let z = literal(d, 0.0);
        let both0 = p.b(format!("a == {z} && b == {z}"));
        let pick_ab = p.b(format!("a {pick} b"));
        let r = p.call(sx.select, &[pick_ab, a, b]);
        let zero = p.input(zero);
        let r = p.call(sx.select, &[both0, zero, r]);
        let either = p.infix(na, "||", nb, true);
        let nan = p.c(f32::NAN);
        let r = p.call(sx.select, &[either, nan, r]);
        emit_function(&mut out, sx.func2, name, &p, r);
    }
    // exp is always needed: the kernel templates compute the softmax with it.
    let mut used: BTreeSet<UnOp> = BTreeSet::from([UnOp::Exp]);
    let mut pow = false;
    for (_, n) in g.iter() {
        match n {
            Node::Unary(op, _) => {
                used.insert(op);
            }
            Node::Binary(BinOp::Pow, ..) => pow = true,
            _ => {}
        }
    }
    for op in used {
        let mut p = Printer::new(d);
        let x = p.input("x");
        let r = vm::unary(&mut p, op, x, g.eps as f32);
        let _ = writeln!(out, "// {}: the shared routine of kernels/mathlib.rs", op.name());
        emit_function(&mut out, sx.func1, &unary_fn(op), &p, r);
    }
    if pow {
        let mut p = Printer::new(d);
        let (a, b) = (p.input("a"), p.input("b"));
        let r = vm::binary(&mut p, BinOp::Pow, a, b);
        emit_function(&mut out, sx.func2, "lossc_pow", &p, r);
    }
    out
}

fn emit_function(out: &mut String, header: &str, name: &str, p: &Printer, result: Name) {
    let _ = writeln!(out, "{}", fill(header, &[name]));
    for l in &p.lines {
        let _ = writeln!(out, "{l}");
    }
    let _ = writeln!(out, "    return {};\n{}\n", p.text(result), p.dialect.syntax().func_end);
}

/// The per-element statements computing `L` and `s` (into the names `l_out`, `s_out`) from
/// the variables `y` and `p`, one statement per graph node.
pub fn element(d: Dialect, g: &Graph, l_out: &str, s_out: &str) -> String {
    let sx = d.syntax();
    let mut names: Vec<String> = Vec::with_capacity(g.len());
    let mut out = String::new();
    for (id, n) in g.iter() {
        let expr = match n {
            Node::Input(Input::Y) => "y".to_string(),
            Node::Input(Input::P) => "p".to_string(),
            Node::Const(b) => literal(d, f64::from_bits(b) as f32),
            Node::Unary(UnOp::Neg, a) => format!("-{}", names[a.index()]),
            Node::Unary(op, a) => format!("{}({})", unary_fn(op), names[a.index()]),
            Node::Binary(op, a, b) => {
                let (a, b) = (&names[a.index()], &names[b.index()]);
                match op.symbol() {
                    Some(sym) if op != BinOp::Pow => format!("{a} {sym} {b}"),
                    _ => format!("lossc_{}({a}, {b})", op.name()),
                }
            }
        };
        let name = format!("v{}", id.index());
        let _ = writeln!(out, "{}", fill(&sx.decl_f.replace("    ", "        "), &[&name, &expr]));
        names.push(name);
    }
    let _ = writeln!(out, "        {l_out} = {};", names[g.outputs[0].1.index()]);
    let _ = writeln!(out, "        {s_out} = {};", names[g.outputs[1].1.index()]);
    out
}

/// Fills a kernel template: the header comment, the entry-point name prefix, the math prelude
/// and the per-element code of the fused graph.
pub fn render(d: Dialect, template: &str, header: &str, name: &str, g: &Graph) -> String {
    template
        .replace("{{HEADER}}", &header.replace('\n', "\n// "))
        .replace("{{NAME}}", name)
        .replace("{{PRELUDE}}", prelude(d, g).trim_end())
        .replace("{{ELEMENT}}", element(d, g, "l_out", "s_out").trim_end())
}

/// The header every emitted kernel starts with: what it computes and from which source.
pub fn header(fused_name: &str, source: &str) -> String {
    let mut h = format!("Generated by lossc {} from the loss `{fused_name}`:\n", env!("CARGO_PKG_VERSION"));
    for line in source.lines() {
        h.push_str("    ");
        h.push_str(line);
        h.push('\n');
    }
    h.push_str("Batch loss = mean over rows of sum over classes of L(y, p), p = softmax(logits);\n");
    h.push_str("the kernel also writes its gradient with respect to the logits (docs/kernel-contract.md).");
    h
}
