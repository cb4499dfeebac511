//! vowel kernels (pure Rust; bindings in py/vowel.rs).
