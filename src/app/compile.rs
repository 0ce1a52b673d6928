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
    #[error("internal error: {0}")]
    Wgsl(#[from] wgsl::WgslError),
    #[error(transparent)]
    Jit(#[from] jit::JitError),
}
crate::error::classify!(CompileError, input: [Create, Write, Link]);

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
    std::fs::create_dir_all(out).map_err(|source| CompileError::Create { path: out.into(), source })?;
    files.into_iter().map(|(name, ext, text)| write_file(&out.join(format!("{name}.{ext}")), &text)).collect()
}

/// Writes `text` to `path` through a temporary file and a rename, so that a link at `path` is
/// refused rather than followed and a reader never sees half a file.
fn write_file(path: &Path, text: &str) -> Result<Written, CompileError> {
    let meta = std::fs::symlink_metadata(path).ok();
    if meta.as_ref().is_some_and(|m| m.file_type().is_symlink()) {
        return Err(CompileError::Link(path.into()));
    }
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let fail = |source| CompileError::Write { path: path.into(), source };
    std::fs::write(&tmp, text).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })?;
    Ok(Written { path: path.into(), replaced: meta.is_some() })
}
