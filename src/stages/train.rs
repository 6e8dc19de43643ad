//! Stages `train` and `train-cgc`: prepare the recipe (reused when unchanged), then
//! train the configured model on it.

use crate::config::Config;
use crate::stages::prepare::prepare;
use crate::train::trainer::{FinalMetrics, Trainer};
use anyhow::Result;

/// Returns None when stopped early by `stop_after` (resumable).
pub fn train(
    cfg: &Config,
    resume: bool,
    stop_after: Option<usize>,
) -> Result<Option<FinalMetrics>> {
    let prepared = prepare(cfg, false)?;
    let mut t = Trainer::new(cfg, &prepared.dir)?;
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
    t.run(resume, stop_after)
}
