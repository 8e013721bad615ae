//! tern-infer: the runtime that serves packed ternary checkpoints (CPU SIMD engine, wgpu path).
//!
//! Built on the formats of `tern-pack`; nothing here yet beyond the crate itself (see the open issues).
