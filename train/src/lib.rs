//! tern-train: quantization-aware training of ternary models on Burn.
//!
//! * [`model`]: the transformer of a `tern_pack` model spec, with [`model::BitLinear`] layers
//!   (latent f32 weights, ternary fake-quantization in the forward, straight-through
//!   gradients — [`quant`]);
//! * [`data`]: corpora (text, directories, JSONL), a byte-level BPE learned from the corpus,
//!   packing into sequences, resumable batches, and the synthetic corpus of `tern data synth`;
//! * [`optim`]: AdamW, schedules, clipping; [`run`]: the loop with evaluation, [`metrics`],
//!   [`checkpoint`]s and resume, minimizing a [`run::Objective`] (next-token cross-entropy for
//!   `tern train`, a teacher's terms added by `tern-distill`); [`export`]: the latent
//!   checkpoint `tern pack` reads.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod export;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod params;
pub mod quant;
pub mod run;

pub use error::{Result, TrainError};
