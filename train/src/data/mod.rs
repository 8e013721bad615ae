//! Training data: reading corpora ([`corpus`]), tokenizers and batches ([`tokenize`]), and
//! the synthetic demo corpus ([`synth`]).

pub mod corpus;
pub mod synth;
pub mod tokenize;
