//! wav kernels (pure Rust; bindings in py/wav.rs).
