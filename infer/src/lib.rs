//! tern-infer: the runtime that serves packed ternary checkpoints on the CPU.
//!
//! * [`kernels`]: packed 2-bit / 1.6-bit × int8 (and × f32), dense int8 and float kernels; a
//!   generic path plus AVX2 and AVX-512 versions picked at run time.
//! * [`linear`]: every weight format behind one [`linear::Linear`] trait, split over threads.
//! * [`model`]: one transformer for BitNet b1.58, TriLM-style ternary Llama and float Llama.
//! * [`load`]: models from packed checkpoints (zero-copy memory map) or float weights.
//! * [`generate`], [`sample`]: tokenizer, prefill + decode loop, sampling, stop tokens.
//! * [`team`]: the fork-join of the decode step's short parallel regions (spinning workers).
//! * [`bench`](mod@bench): throughput, memory and roofline measurements for `tern bench`.
//! * `gpu` (feature `gpu`): the whole forward pass on a GPU through wgpu: WGSL kernels on the
//!   packed ternary matrices, attention with a GPU KV cache, one submission per token.

pub mod attention;
pub mod bench;
pub mod error;
pub mod generate;
#[cfg(feature = "gpu")]
pub mod gpu;
mod hugemem;
pub mod kernels;
pub mod linear;
pub mod load;
pub mod model;
pub mod sample;
pub mod team;

pub use attention::{KvCache, KvDtype};
pub use error::{Error, Result};
pub use kernels::StreamHint;
pub use load::{ActivationFormat, HeadFormat, LoadOptions};
pub use model::{Logits, Model, Prefetch};
