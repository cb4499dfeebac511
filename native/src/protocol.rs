//! protocol kernels (pure Rust; bindings in py/protocol.rs).
