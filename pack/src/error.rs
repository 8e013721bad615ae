//! The one error type of `tern-pack`. Every variant that concerns a file names it, and every
//! variant that concerns a tensor names the tensor, so a user can find what is wrong.

use std::path::{Path, PathBuf};

/// Errors of the formats, the spec and the checkpoint readers and writers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error while touching `path`.
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },

    /// A `config.json` that is missing, not JSON, or not a model config we serve.
    #[error("{path}: invalid config: {reason}")]
    Config { path: PathBuf, reason: String },

    /// A config whose values are individually well-formed but inconsistent.
    #[error("invalid model spec: {0}")]
    Spec(String),

    /// A safetensors file whose header or layout cannot be trusted.
    #[error("{path}: malformed safetensors file: {reason}")]
    Header { path: PathBuf, reason: String },

    /// A tensor that is present but wrong (dtype, shape, values, size).
    #[error("{path}: tensor `{tensor}`: {reason}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },

    /// A tensor the config requires but no file provides.
    #[error("{path}: missing tensor `{tensor}`")]
    MissingTensor { path: PathBuf, tensor: String },

    /// A tensor no part of the config accounts for.
    #[error(
        "{path}: unknown tensor `{tensor}` (not part of a `{model_type}` model with this config)"
    )]
    UnknownTensor {
        path: PathBuf,
        tensor: String,
        model_type: String,
    },

    /// A packed buffer whose length or content does not fit the codec.
    #[error("codec: {0}")]
    Codec(String),

    /// A request that makes no sense (bad argument combination).
    #[error("{0}")]
    Usage(String),
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            err: source,
        }
    }

    pub(crate) fn header(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        Error::Header {
            path: path.as_ref().to_path_buf(),
            reason: reason.into(),
        }
    }

    pub(crate) fn tensor(
        path: impl AsRef<Path>,
        tensor: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Tensor {
            path: path.as_ref().to_path_buf(),
            tensor: tensor.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn config(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        Error::Config {
            path: path.as_ref().to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// Extension to attach a path to `std::io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
