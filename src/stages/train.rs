//! Stages `train` and `train-cgc`: prepare the recipe (reused when unchanged), then
//! train the configured model on it.

use crate::config::Config;
use crate::dist::Collective;
use crate::stages::prepare::prepare;
use crate::train::trainer::{FinalMetrics, Trainer};
use anyhow::Result;
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
