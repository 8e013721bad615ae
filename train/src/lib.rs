//! tern-train: quantization-aware training of ternary models on Burn.
//!
//! Nothing here yet beyond the crate itself (see the open issues).
