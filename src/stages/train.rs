//! Stages `train` and `train-cgc`: prepare the recipe (reused when unchanged), then
//! train the configured model on it.

use crate::config::{Config, ConfigArg, Flags, SetArg};
use crate::dist::Collective;
use crate::models::config::{DomainInput, ModelName};
use crate::stages::prepare::prepare;
use crate::train::trainer::{FinalMetrics, Trainer};
use anyhow::Result;
use std::path::PathBuf;
use std::rc::Rc;

/// Returns None when stopped early by `stop_after` (resumable). Under an MPI
/// launcher (`mpirun -np N`, a build with the `mpi` feature) this process is one
/// rank of a data-parallel run: rank 0 prepares the data and writes the run's
/// files; every rank returns the final metrics.
pub fn train(
    cfg: &Config,
    resume: bool,
    stop_after: Option<usize>,
) -> Result<Option<FinalMetrics>> {
    let comm = crate::dist::connect()?;
    let r = train_on(cfg, resume, stop_after, comm.clone());
    if comm.size() > 1
        && let Err(e) = &r
    {
        // The other ranks may wait in a collective call for ever: end the job.
        eprintln!("error on rank {} of {}: {e:#}", comm.rank(), comm.size());
        comm.abort(1);
    }
    r
}

fn train_on(
    cfg: &Config,
    resume: bool,
    stop_after: Option<usize>,
    comm: Rc<dyn Collective>,
) -> Result<Option<FinalMetrics>> {
    // Rank 0 prepares (or reuses) the data; the others then find it up to date.
    let prepared = if comm.rank() == 0 {
        let p = prepare(cfg, false)?;
        comm.barrier()?;
        p
    } else {
        comm.barrier()?;
        prepare(cfg, false)?
    };
    if comm.size() > 1 {
        tracing::info!(
            "rank {} of {} ({}): global batch {}, {} rows per rank",
            comm.rank(),
            comm.size(),
            comm.name(),
            cfg.train.batch_size,
            cfg.train.batch_size / comm.size()
        );
    }
    let mut t = Trainer::new(cfg, &prepared.dir)?;
    let writes = comm.rank() == 0;
    t.set_collective(comm)?;
    tracing::info!(
        "{} on {}: {} parameters, features {}, domain input {:?}, run dir {}",
        cfg.model.label(),
        prepared.meta.recipe,
        t.param_count(),
        t.ds.features
            .iter()
            .cloned()
            .chain(t.ds.bags.iter().map(|b| format!("{b} (bag)")))
            .collect::<Vec<_>>()
            .join(", "),
        cfg.model.domain_input,
        t.run_dir.display()
    );
    tracing::info!("{}", t.table_summary());
    let done = t.run(resume, stop_after)?;
    if done.is_some() && writes {
        crate::report::report(&t.run_dir)?;
    }
    Ok(done)
}

/// `pipeline train` / `pipeline train-cgc`: the config file, these flags (each
/// sets the config key it names), then `--set`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub settings: SetArg,
    /// Model (model.name). `cgc` and `ple` take their domain-conditioned form on
    /// fixed LLM embeddings (model.cgc.conditioning = "auto").
    #[arg(long, value_enum)]
    pub model: Option<ModelName>,
    /// Recipe (data.recipe).
    #[arg(long)]
    pub recipe: Option<String>,
    /// Seed (train.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Maximum epochs (train.epochs).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Run name under train.runs_dir (train.run_name).
    #[arg(long)]
    pub run_name: Option<String>,
    /// Runs folder (train.runs_dir).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
    /// Fixed domain embeddings, a safetensors file with a (domains × h) matrix
    /// (model.domain_embeddings); implies model.domain_input = "fixed".
    #[arg(long)]
    pub domain_embeddings: Option<PathBuf>,
    /// Remove this domain's rows from train and valid and score its test rows as an
    /// unseen domain (repeatable; data.holdout_domains).
    #[arg(long = "holdout-domain")]
    pub holdout_domains: Vec<String>,
    /// Continue the run from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Stop (resumably) after this many epochs of this invocation.
    #[arg(long)]
    pub stop_after_epochs: Option<usize>,
    /// Do not fetch the offline MovieLens-100k copy when it is missing
    /// (data.fetch = false).
    #[arg(long)]
    pub no_fetch: bool,
}

impl TrainArgs {
    /// The config file with this command's flags and `--set` applied; `model`
    /// (train-cgc's CGC) wins over `--model`.
    pub fn resolve(&self, model: Option<ModelName>) -> Result<Config> {
        Flags::default()
            .key("model.name", model.or(self.model))
            .key("data.recipe", self.recipe.as_ref())
            .key("train.seed", self.seed)
            .key("train.epochs", self.epochs)
            .key("train.run_name", self.run_name.as_ref())
            .key("train.runs_dir", self.runs_dir.as_ref())
            .key("model.domain_embeddings", self.domain_embeddings.as_ref())
            .key(
                "model.domain_input",
                self.domain_embeddings.as_ref().map(|_| DomainInput::Fixed),
            )
            .key("data.fetch", self.no_fetch.then_some(false))
            .key(
                "data.holdout_domains",
                (!self.holdout_domains.is_empty()).then_some(&self.holdout_domains),
            )
            .resolve(self.config.config.as_deref(), &self.settings.set)
    }
}

/// Runs `pipeline train` (`model` None) or `train-cgc` (`model` CGC) and prints
/// the final metrics on rank 0.
pub fn command(args: &TrainArgs, model: Option<ModelName>) -> Result<()> {
    let cfg = args.resolve(model)?;
    let m = train(&cfg, args.resume, args.stop_after_epochs)?;
    if crate::dist::launched_rank() == 0 {
        print_final(m.as_ref());
    }
    Ok(())
}

/// One line of a training run's final metrics (or how to continue it).
pub fn print_final(m: Option<&FinalMetrics>) {
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
