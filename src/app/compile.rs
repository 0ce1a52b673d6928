//! `lossc compile`: a file's losses written out as kernels (CUDA C, WGSL, Cranelift IR) with a
//! JSON manifest that says how to call each one.

use crate::backend::{cuda, jit, python, wgsl};
use crate::ir::{Graph, print};
use crate::passes::fuse;
use std::path::{Path, PathBuf};

/// Which kernels to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Cuda,
    Wgsl,
    Cpu,
    /// The three kernels above.
    All,
    /// A JAX module `NAME.py` with the loss and its symbolic gradient (jax.custom_vjp).
    Jax,
    /// A PyTorch module `NAME.py`: a torch.autograd.Function with the fused CUDA kernel on a
    /// GPU and the loss as tensor ops elsewhere, both with lossc's symbolic gradient.
    Torch,
}

/// Why kernels were not written.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{0} is a symbolic link; lossc does not write through links")]
    Link(PathBuf),
    #[error("{0} exists and was not written by lossc; not overwriting it")]
    NotOurs(PathBuf),
    #[error("{0} is a file; -o names the folder the kernels go in")]
    NotAFolder(PathBuf),
    #[error("internal error: {0}")]
    Wgsl(#[from] wgsl::WgslError),
    #[error(transparent)]
    Jit(#[from] jit::JitError),
}
crate::error::classify!(CompileError, input: [Create, Write, Link, NotOurs, NotAFolder]);

/// One file written, and whether it replaced an older one.
pub struct Written {
    pub path: PathBuf,
    pub replaced: bool,
}

/// Writes the `target` kernels of each loss `names` of module `g` (read from `file`, whose text
/// is `source`) into `out`, with a manifest `NAME.json` each.
pub fn write(
    g: &Graph,
    names: &[String],
    file: &Path,
    source: &str,
    target: Target,
    out: &Path,
) -> Result<Vec<Written>, CompileError> {
    // Everything is generated before the first write, so a failure leaves nothing behind.
    let mut files: Vec<(String, String, String)> = Vec::new(); // (loss, ext, text)
    for name in names {
        let fused = fuse::fuse(g, name).expect("names are outputs");
        let mut exts = Vec::new();
        if matches!(target, Target::Cuda | Target::All) {
            exts.push(("cu", cuda::emit(&fused, &cuda::Options { source: source.to_string() })));
        }
        if matches!(target, Target::Wgsl | Target::All) {
            let w = wgsl::emit(&fused, &wgsl::Options { source: source.to_string() });
            wgsl::validate(&w)?;
            exts.push(("wgsl", w));
        }
        if matches!(target, Target::Cpu | Target::All) {
            let spec = jit::Spec { kind: jit::TargetKind::Labels, smoothing: 0.0, classes: 2 };
            let header = format!(
                ";; Cranelift IR of the CPU kernel for `{name}` (integer labels, no smoothing), from {}.\n;; lossc JIT-compiles this at run time; `lossc eval --backend jit` runs it.\n",
                file.display()
            );
            exts.push(("clif", header + &jit::clif(&fused, spec)?));
        }
        if matches!(target, Target::Jax | Target::Torch) {
            let emit = if target == Target::Jax { python::emit_jax } else { python::emit_torch };
            let py = emit(&fused, &file.display().to_string(), source);
            files.push((name.clone(), "py".to_string(), py));
            continue;
        }
        let listed: serde_json::Map<String, serde_json::Value> =
            exts.iter().map(|(e, _)| (e.to_string(), format!("{name}.{e}").into())).collect();
        let manifest = serde_json::json!({
            "loss": name,
            "source": file.display().to_string(),
            "text": print::to_text(&g.extract(name).expect("names are outputs")),
            "eps": g.eps,
            "files": listed,
            "cuda": cuda::manifest(name),
            "wgsl": wgsl::manifest(),
        });
        exts.push(("json", serde_json::to_string_pretty(&manifest).expect("json")));
        files.extend(exts.into_iter().map(|(e, t)| (name.clone(), e.to_string(), t)));
    }
    // Every path is checked before the first write, so a refusal leaves nothing half-written.
    if out.exists() && !out.is_dir() {
        return Err(CompileError::NotAFolder(out.into()));
    }
    let files: Vec<(PathBuf, String)> =
        files.into_iter().map(|(name, ext, text)| (out.join(format!("{name}.{ext}")), text)).collect();
    for (path, _) in &files {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => return Err(CompileError::Link(path.clone())),
            Ok(_) if !written_by_lossc(path) => return Err(CompileError::NotOurs(path.clone())),
            _ => {}
        }
    }
    std::fs::create_dir_all(out).map_err(|source| CompileError::Create { path: out.into(), source })?;
    files.iter().map(|(path, text)| write_file(path, text)).collect()
}

/// How each kind of file `write` makes begins: a file that begins otherwise is the user's.
const HEADERS: [(&str, &str); 4] = [
    ("cu", "// Generated by lossc "),
    ("wgsl", "// Generated by lossc "),
    ("clif", ";; Cranelift IR of the CPU kernel for "),
    ("py", " a loss from lossc, as a "),
];

/// Whether the file at `path` is one lossc wrote, and so may be replaced: its first line has
/// the header of its kind ([`HEADERS`]), or, for a manifest, it is a JSON object naming a loss
/// and its files.
fn written_by_lossc(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| {
            v.get("loss").is_some_and(|l| l.is_string()) && v.get("files").is_some_and(|f| f.is_object())
        }),
        ext => {
            let first = text.lines().next().unwrap_or("");
            HEADERS.iter().any(|(e, h)| Some(*e) == ext && first.contains(h))
        }
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so that a link made at
/// `path` since the check is replaced rather than followed and a reader never sees half a file.
fn write_file(path: &Path, text: &str) -> Result<Written, CompileError> {
    let meta = std::fs::symlink_metadata(path).ok();
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let fail = |source| CompileError::Write { path: path.into(), source };
    std::fs::write(&tmp, text).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })?;
    Ok(Written { path: path.into(), replaced: meta.is_some() })
}
