//! Data-parallel training: N ranks with a global batch B against one process
//! with batch B. The ranks here are threads ([`llmctr::dist::local`]); the same
//! trainer code runs under MPI (`tests/mpi.rs`).

mod common;

use llmctr::config::Config;
use llmctr::models::config::ModelName;
use llmctr::stages::train::train;
use llmctr::train::trainer::{FinalMetrics, Trainer};
use std::path::Path;

fn cfg(tmp: &Path, model: ModelName, run: &str) -> Config {
    let mut c = common::small_train_config(tmp, model, run);
    c.train.epochs = 3;
    c
}

/// Train `c` on `n` thread ranks; every rank's final metrics.
fn on_ranks(c: &Config, n: usize) -> Vec<anyhow::Result<FinalMetrics>> {
    let dir = c.data.prepared_dir.join(&c.data.recipe);
    let handles: Vec<_> = llmctr::dist::local::ranks(n)
        .into_iter()
        .map(|rank| {
            let (c, dir) = (c.clone(), dir.clone());
            std::thread::spawn(move || {
                let mut t = Trainer::new(&c, &dir)?;
                t.set_collective(std::rc::Rc::new(rank))?;
                Ok(t.run(false, None)?.expect("ran to the end"))
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn n_ranks_compute_what_one_process_computes_with_the_same_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    // DNN; CGC (per-domain towers: a rank's slice may leave a tower without
    // gradient that the other rank's slice reaches); DeepFM (a second,
    // first-order table).
    for m in [ModelName::Dnn, ModelName::Cgc, ModelName::Deepfm] {
        let one = cfg(tmp.path(), m, &format!("{}-one", m.as_str()));
        let single = train(&one, false, None).unwrap().unwrap();
        for n in [2, 3] {
            let mut c = one.clone();
            c.train.run_name = Some(format!("{}-ranks{n}", m.as_str()));
            let outs: Vec<FinalMetrics> = on_ranks(&c, n).into_iter().map(Result::unwrap).collect();
            // Every rank ends with the same metrics (replicas stayed identical).
            for o in &outs[1..] {
                assert_eq!(o.test, outs[0].test, "{m:?} on {n} ranks");
            }
            let o = &outs[0];
            let (a, b) = (o.test.auc.unwrap(), single.test.auc.unwrap());
            eprintln!(
                "{m:?} on {n} ranks: |Δ test AUC| {:.2e}, |Δ logloss| {:.2e}",
                (a - b).abs(),
                (o.test.logloss - single.test.logloss).abs()
            );
            assert!(
                (a - b).abs() < 1e-6,
                "{m:?}, {n} ranks: test AUC {a} against {b} in one process"
            );
            assert!(
                (o.test.logloss - single.test.logloss).abs() < 1e-6,
                "{m:?}, {n} ranks: logloss {} against {}",
                o.test.logloss,
                single.test.logloss
            );
            assert_eq!(o.best_epoch, single.best_epoch, "{m:?} on {n} ranks");
            // Rank 0 wrote the run's files.
            let run = tmp
                .path()
                .join("runs")
                .join(c.train.run_name.as_ref().unwrap());
            let written: FinalMetrics =
                serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap())
                    .unwrap();
            assert_eq!(written.test, o.test);
        }
    }
}

#[test]
fn ranks_stream_their_buffers_like_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path(), ModelName::Dnn, "stream-one");
    c.data.prepared_dir = tmp.path().join("prepared-sharded");
    c.data.shard_rows = 100;
    c.train.stream_shards = 2;
    let single = train(&c, false, None).unwrap().unwrap();
    c.train.run_name = Some("stream-ranks2".into());
    let outs: Vec<FinalMetrics> = on_ranks(&c, 2).into_iter().map(Result::unwrap).collect();
    assert_eq!(outs[0].test, outs[1].test);
    let (a, b) = (outs[0].test.auc.unwrap(), single.test.auc.unwrap());
    assert!(
        (a - b).abs() < 1e-6,
        "streamed on 2 ranks {a}, one process {b}"
    );
    assert!((outs[0].test.logloss - single.test.logloss).abs() < 1e-6);
}

#[test]
fn a_model_whose_result_depends_on_the_split_of_a_batch_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path(), ModelName::Dnn, "dropout");
    c.model.dropout = 0.2;
    llmctr::stages::prepare::prepare(&c, false).unwrap();
    for r in on_ranks(&c, 2) {
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("model.dropout = 0.2"), "{e}");
    }
    let mut c = cfg(tmp.path(), ModelName::Star, "star");
    c.model.dropout = 0.0;
    for r in on_ranks(&c, 2) {
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("STAR"), "{e}");
    }
}
