//! The runtime's kernels (kernels/train.rs) as WGSL modules and as one CUDA C translation unit.
//!
//! Both wrappers give a body the same names: its buffers, the parameter struct `p`, and the
//! thread indices `gid`, `lid`, `wg`, `nthreads`, `nwgs`. A body compiles in both languages, so
//! the WGSL device's tests vouch for the CUDA build of the same text.

#[path = "../../kernels/train.rs"]
mod table;

pub use table::{Access, CHANNEL_BLOCK, CUDA_PRELUDE, IMAGE_BLOCK, KERNELS, Kernel, WGSL_PRELUDE};

/// Threads per workgroup (block) of every kernel.
pub const THREADS: usize = 256;

/// A parameter's name and whether it is f32 (`name:f`) rather than u32.
pub fn param(spec: &str) -> (&str, bool) {
    match spec.strip_suffix(":f") {
        Some(name) => (name, true),
        None => (spec, false),
    }
}

/// The kernel named `name`.
pub fn kernel(name: &str) -> &'static Kernel {
    KERNELS.iter().find(|k| k.name == name).unwrap_or_else(|| panic!("no kernel {name}"))
}

/// One kernel as a WGSL module with entry point `main`: buffers at bindings 0.., the
/// parameters as a uniform at the next binding.
pub fn wgsl(k: &Kernel) -> String {
    let mut s = format!("// {} (kernels/train.rs)\n\nstruct P {{\n", k.name);
    for spec in k.params {
        let (name, float) = param(spec);
        s += &format!("    {name}: {},\n", if float { "f32" } else { "u32" });
    }
    s += "}\n\n";
    for (i, (name, access)) in k.buffers.iter().enumerate() {
        let (mode, ty) = match access {
            Access::Read => ("read", "f32"),
            Access::ReadU32 => ("read", "u32"),
            Access::Write => ("read_write", "f32"),
        };
        s += &format!("@group(0) @binding({i}) var<storage, {mode}> {name}: array<{ty}>;\n");
    }
    s += &format!("@group(0) @binding({}) var<uniform> p: P;\n\n", k.buffers.len());
    s += &format!("const CB: u32 = {CHANNEL_BLOCK}u;\n");
    s += WGSL_PRELUDE;
    s += &format!(
        "\n@compute @workgroup_size({THREADS})\nfn main(@builtin(workgroup_id) wid: vec3<u32>, \
         @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{\n    \
         let wg = wid.x + wid.y * nwg.x;\n    let lid = lid3.x;\n    let nwgs = nwg.x * nwg.y;\n    \
         let gid = wg * {THREADS}u + lid;\n    let nthreads = nwgs * {THREADS}u;\n"
    );
    s += k.body;
    s += "\n}\n";
    s
}

/// Every kernel in one CUDA C translation unit: `extern "C"` kernels named as in the table,
/// taking the buffers in order and then the parameter struct by value; blocks of 256 threads.
pub fn cuda() -> String {
    let mut s = String::from("// The training runtime's kernels (kernels/train.rs), CUDA C.\n\n");
    s += CUDA_PRELUDE;
    s += &format!("constexpr u32 CB = {CHANNEL_BLOCK}u;\n");
    for k in KERNELS {
        s += &format!("\nstruct P_{} {{\n", k.name);
        for spec in k.params {
            let (name, float) = param(spec);
            s += &format!("    {} {name};\n", if float { "f32" } else { "u32" });
        }
        s += "};\n\n";
        let args: Vec<String> = k
            .buffers
            .iter()
            .map(|(name, access)| match access {
                Access::Read => format!("const f32* __restrict__ {name}"),
                Access::ReadU32 => format!("const u32* __restrict__ {name}"),
                Access::Write => format!("f32* __restrict__ {name}"),
            })
            .collect();
        s += &format!(
            "extern \"C\" __global__ void __launch_bounds__({THREADS}) {}({}, P_{} p) {{\n    \
             const u32 wg = blockIdx.x + blockIdx.y * gridDim.x;\n    const u32 lid = threadIdx.x;\n    \
             const u32 nwgs = gridDim.x * gridDim.y;\n    const u32 gid = wg * {THREADS}u + lid;\n    \
             const u32 nthreads = nwgs * {THREADS}u;\n",
            k.name,
            args.join(", "),
            k.name
        );
        s += &to_cpp(k.body);
        s += "\n}\n";
    }
    s
}

/// WGSL declarations to C++: `const` to `constexpr auto`, `let` to `const auto`, `var` to
/// `auto` (whole words only).
fn to_cpp(body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 256);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(match word.as_str() {
            "const" => "constexpr auto",
            "let" => "const auto",
            "var" => "auto",
            w => w,
        });
        word.clear();
    };
    for ch in body.chars() {
        if ch.is_ascii_alphanumeric() || ch == '_' {
            word.push(ch);
        } else {
            flush(&mut word, &mut out);
            out.push(ch);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn declarations_become_cpp_and_nothing_else_changes() {
        let got = super::to_cpp("const N = 4u; let x = 1u; var letter = x; for (var i = 0u; i < n; i++) { vary(i); }");
        let want =
            "constexpr auto N = 4u; const auto x = 1u; auto letter = x; for (auto i = 0u; i < n; i++) { vary(i); }";
        assert_eq!(got, want);
    }
}
