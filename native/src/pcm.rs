//! pcm kernels (pure Rust; bindings in py/pcm.rs).
