//! The pipeline's stages, each a subcommand of `pipeline`.

pub mod compare;
pub mod embed;
pub mod prepare;
pub mod run;
pub mod train;
