//! Errors of training: every message names the file, tensor or field at fault.

use std::path::PathBuf;

/// Everything that can stop a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Pack(#[from] tern_pack::error::Error),
    #[error(transparent)]
    Data(#[from] crate::data::corpus::DataError),
    /// A config value out of range or inconsistent (names the field).
    #[error("invalid config: {0}")]
    Config(String),
    /// A checkpoint that does not fit the model (names the file and tensor).
    #[error("bad checkpoint: {0}")]
    Checkpoint(String),
    /// The loss became NaN or infinite.
    #[error(
        "the loss is not finite ({loss}) at step {step}; stopped. The last good checkpoint is kept \
         in {}; lower the learning rate or raise the warm-up, then --resume",
        checkpoint.display()
    )]
    NonFinite {
        step: u64,
        loss: f32,
        checkpoint: PathBuf,
    },
    /// A distillation teacher that cannot be used (names the file and why).
    #[error("teacher: {0}")]
    Teacher(String),
    /// No usable device.
    #[error("device: {0}")]
    Device(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Result with [`TrainError`].
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Attaches a path to I/O errors.
pub trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
