//! The pipeline's stages, each a subcommand of `pipeline`.

pub mod prepare;
