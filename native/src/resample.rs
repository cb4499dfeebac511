//! resample kernels (pure Rust; bindings in py/resample.rs).
