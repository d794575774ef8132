//! kiln-backend-cpu: the CPU backend.

pub mod simd;
