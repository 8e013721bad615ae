//! tern-pack: the contract every other tern crate builds on.
//!
//! * [`spec`]: the model spec (Hugging Face `config.json` + tern's quantization fields);
//! * [`quant`]: the ternary weight quantizer and the int8 activation quantizer;
//! * [`codec`]: the lossless 2-bit and 1.6-bit packings, with their layouts;
//! * [`dot`]: the scalar reference dot products every kernel is tested against;
//! * [`safetensors`], [`checkpoint`]: bounded readers and streaming writers;
//! * [`convert`], [`init`]: pack, unpack and random initialisation.
//!
//! No Burn, no GPU: this crate is the leaf of the workspace.

pub mod checkpoint;
pub mod codec;
pub mod convert;
pub mod dot;
pub mod error;
pub mod fsutil;
pub mod init;
pub mod inspect;
pub mod quant;
pub mod safetensors;
pub mod spec;

pub use codec::Codec;
pub use error::{Error, Result};
