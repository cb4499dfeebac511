//! opus kernels (pure Rust; bindings in py/opus.rs).
