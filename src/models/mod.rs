//! CTR models: shared layers, gates, and the domain-aware architectures.

pub mod gates;
