//! Checkpoint directories: latent (Hugging Face layout, read by `pack`) and packed (tern's
//! format, written by `pack` and read by `infer`).

pub mod latent;
pub mod packed;

pub use latent::{LatentCheckpoint, LinearSource};
pub use packed::{PackedCheckpoint, PackedTensor};
