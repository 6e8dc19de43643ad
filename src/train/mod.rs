//! Training: optimiser, data loading, the training loop, checkpoints.

pub mod config;
pub mod data;
pub mod optim;
pub mod trainer;
