//! tern-distill: ternary students distilled from full-precision teachers (BitDistill,
//! arXiv 2510.13998), on the training loop of `tern_train`.
//!
//! * [`teacher`]: a frozen Hugging Face `llama` / `qwen2` / `bitnet` checkpoint, or a model
//!   from `tern train`, read into Burn without autodiff state;
//! * [`objective`]: the student's loss — cross-entropy, KL to the teacher's logits at a
//!   temperature, MiniLM-style q/k/v relation distillation of one layer, hidden-state MSE
//!   ([`losses`]) — and the checks that the teacher fits the student;
//! * [`config`]: `configs/distill/*.toml`; [`run`]: `tern distill`.

pub mod config;
pub mod losses;
pub mod objective;
pub mod run;
pub mod teacher;

pub use run::distill;
