//! tern-distill: distillation of a full-precision teacher into a ternary student.
//!
//! Nothing here yet beyond the crate itself (see the open issues).
