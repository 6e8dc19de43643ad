//! Dataset recipes (`docs/data.md`), the language-independent split, and the
//! prepared format that every later stage reads.

pub mod amazon;
pub mod criteo;
pub mod dataset;
pub mod error;
pub mod fetch;
pub mod meta;
pub mod movielens;
pub mod next_item;
pub mod parquet_table;
pub mod recipe;
pub mod schema;
pub mod shard;
pub mod split;
pub mod table;
pub mod tabular;
pub mod text;
