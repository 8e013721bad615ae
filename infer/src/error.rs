//! Errors of the runtime. Every variant names what it is about (file, tensor, prompt).

use std::path::PathBuf;

/// Errors of `tern-infer`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A checkpoint, config or tensor problem found by `tern-pack`'s readers.
    #[error(transparent)]
    Pack(#[from] tern_pack::Error),
    /// A tensor that is present but cannot serve (wrong dtype, shape or values).
    #[error("{path}: tensor `{tensor}`: {reason}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    /// `tokenizer.json` is missing or unreadable.
    #[error("{path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    /// A prompt that cannot be served (empty, too long, unknown token ids).
    #[error("prompt: {0}")]
    Prompt(String),
    /// Bad options (sampling parameters, thread counts, ...).
    #[error("{0}")]
    Usage(String),
    /// The GPU path (feature `gpu`).
    #[cfg(feature = "gpu")]
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
    /// A file or stream that could not be read or written.
    #[error("{path}: {err}")]
    Io {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn tensor(
        path: impl Into<PathBuf>,
        tensor: &str,
        reason: impl Into<String>,
    ) -> Self {
        Error::Tensor {
            path: path.into(),
            tensor: tensor.to_string(),
            reason: reason.into(),
        }
    }
}
