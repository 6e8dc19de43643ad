//! Training: optimiser, data loading, the training loop, checkpoints.

pub mod trainer;
