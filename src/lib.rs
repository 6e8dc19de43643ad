//! llmctr: domain embeddings from a small frozen LLM, fed to a cross-domain
//! mixture-of-experts CTR model. One module per stage and per concept:
//! `data` (recipes, split, prepared format), `stages` (the CLI stages that wire
//! the parts together), `config`, `bench`.

pub mod bench;
pub mod checks;
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod dist;
pub mod fingerprint;
pub mod fsutil;
pub mod geometry;
pub mod llm;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod plot;
pub mod pool;
pub mod report;
pub mod runs;
pub mod stages;
pub mod stats;
pub mod tensor_io;
pub mod train;
