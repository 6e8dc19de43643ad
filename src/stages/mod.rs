//! The pipeline's stages, each a subcommand of `pipeline`.

pub mod ablate;
pub mod compare;
pub mod embed;
pub mod grid;
pub mod lodo;
pub mod models;
pub mod pool;
pub mod predict;
pub mod prepare;
pub mod run;
pub mod seen;
pub mod train;
