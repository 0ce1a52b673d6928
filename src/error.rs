//! How the library's errors are classified for the caller: the user's input was wrong (the
//! CLI exits 2), or something failed that input cannot fix (exit 1). Each module has its own
//! error enum (thiserror); this trait is the one thing they share.

/// Whose fault an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// A file, setting or batch the user gave is wrong; the message says where and how.
    Input,
    /// The input was fine and the work failed (a write, a device, a worker).
    Failure,
}

/// An error that knows whose fault it is.
pub trait Classify: std::error::Error {
    fn blame(&self) -> Blame;
}

/// Implements [`Classify`] for an enum from the variants that are the user's input.
macro_rules! classify {
    ($ty:ty, input: [$($v:ident),* $(,)?]) => {
        impl $crate::error::Classify for $ty {
            fn blame(&self) -> $crate::error::Blame {
                match self {
                    $(Self::$v { .. } => $crate::error::Blame::Input,)*
                    #[allow(unreachable_patterns)]
                    _ => $crate::error::Blame::Failure,
                }
            }
        }
    };
}
pub(crate) use classify;

/// Why no file can be made at `path` where that is the path's fault (it is a folder, or its
/// folder does not exist), so that commands refuse it before any work and say which; the
/// system's own error comes only at the write and names neither.
pub fn unwritable(path: &std::path::Path) -> Option<String> {
    if path.is_dir() {
        return Some("it is a folder".into());
    }
    let folder = path.parent().filter(|f| !f.as_os_str().is_empty() && !f.is_dir())?;
    Some(format!("the folder {} does not exist", folder.display()))
}
