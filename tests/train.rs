//! The trainer as a user runs it, on a small GroupLens fixture.

mod common;

use llmctr::config::Config;
use llmctr::models::config::ModelName;
use llmctr::stages::train::train;
use std::path::Path;
use std::process::Command;

fn cfg(tmp: &Path, model: ModelName, run: &str) -> Config {
    common::small_train_config(tmp, model, run)
}

#[test]
fn every_model_trains_and_writes_its_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    for m in ModelName::ALL {
        let c = cfg(tmp.path(), m, m.as_str());
        let out = train(&c, false, None).unwrap().unwrap();
        assert!(out.test.auc.is_some(), "{m:?}");
        assert!(out.test.logloss.is_finite());
        let dir = tmp.path().join("runs").join(m.as_str());
        for f in [
            "config.toml",
            "metrics.jsonl",
            "metrics.json",
            "report.md",
            "best.safetensors",
            "checkpoint.json",
        ] {
            assert!(dir.join(f).is_file(), "{m:?}: {f} missing");
        }
        let lines = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 4, "{m:?}: one line per epoch");
    }
}

/// Early stopping waits for `train.min_epochs`; without it (0), patience 1 stops a
/// run at its first epoch without a better valid AUC.
#[test]
fn min_epochs_holds_early_stopping_back() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path(), ModelName::Dnn, "patient");
    c.train.epochs = 12;
    c.train.patience = 1;
    c.train.min_epochs = 0;
    let quick = train(&c, false, None).unwrap().unwrap();
    assert!(
        quick.epochs_run < 12,
        "patience 1 should stop this run early"
    );
    c.train.run_name = Some("held".into());
    c.train.min_epochs = 12;
    let held = train(&c, false, None).unwrap().unwrap();
    assert_eq!(held.epochs_run, 12);
    // The epochs both runs share are the same epochs.
    assert!(held.best_epoch >= quick.best_epoch);
}

#[test]
fn same_seed_same_metrics_other_seed_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let a = train(&cfg(tmp.path(), ModelName::Cgc, "a"), false, None)
        .unwrap()
        .unwrap();
    let b = train(&cfg(tmp.path(), ModelName::Cgc, "b"), false, None)
        .unwrap()
        .unwrap();
    assert_eq!(a.test, b.test, "identical runs");
    let jl = |r: &str| {
        std::fs::read_to_string(tmp.path().join("runs").join(r).join("metrics.jsonl")).unwrap()
    };
    let strip = |s: String| {
        s.lines()
            .map(|l| l.split("\"seconds\"").next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(jl("a")), strip(jl("b")));
    let mut c = cfg(tmp.path(), ModelName::Cgc, "c");
    c.train.seed = 2;
    let other = train(&c, false, None).unwrap().unwrap();
    assert_ne!(a.test.auc, other.test.auc);
}

#[test]
fn stopping_and_resuming_gives_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    for model in [ModelName::Star, ModelName::Mmoe] {
        let full = train(
            &cfg(tmp.path(), model, &format!("{model:?}-full")),
            false,
            None,
        )
        .unwrap()
        .unwrap();
        let c = cfg(tmp.path(), model, &format!("{model:?}-parts"));
        assert!(
            train(&c, false, Some(1)).unwrap().is_none(),
            "stopped after 1 epoch"
        );
        assert!(
            train(&c, false, None).is_err(),
            "a second start without --resume is refused"
        );
        assert!(train(&c, true, Some(2)).unwrap().is_none());
        let resumed = train(&c, true, None).unwrap().unwrap();
        assert_eq!(full.test, resumed.test, "{model:?}");
        assert_eq!(full.best_epoch, resumed.best_epoch);
    }
}

#[test]
fn kill_9_midway_then_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path(), ModelName::Cgc, "killed");
    c.train.epochs = 30;
    c.train.patience = 30;
    let full = {
        let mut f = c.clone();
        f.train.run_name = Some("whole".into());
        train(&f, false, None).unwrap().unwrap()
    };
    let file = tmp.path().join("run.toml");
    std::fs::write(&file, c.to_toml()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["train", "--config"])
        .arg(&file)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = tmp.path().join("runs/killed/checkpoint.json");
    let t0 = std::time::Instant::now();
    while !ckpt.is_file() && t0.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(ckpt.is_file(), "no checkpoint within 120 s");
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    // The kill must have landed mid-run: the process died of SIGKILL, and the
    // run had not finished (30 epochs, patience 30, killed after the first).
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "{status}: the run ended before the kill"
    );
    assert!(!tmp.path().join("runs/killed/metrics.json").exists());
    let o = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["train", "--resume", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: llmctr::train::trainer::FinalMetrics = serde_json::from_slice(
        &std::fs::read(tmp.path().join("runs/killed/metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        m.test, full.test,
        "killed ({status}) and resumed = uninterrupted"
    );
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path(), ModelName::Dnn, "nan");
    assert!(train(&c, false, Some(1)).unwrap().is_none());
    let before = std::fs::read(tmp.path().join("runs/nan/checkpoint.json")).unwrap();
    let mut other = c.clone();
    other.train.lr = 1e30;
    let e = format!("{:#}", train(&other, true, None).unwrap_err());
    assert!(
        e.contains("different config"),
        "resumed with other settings: {e}"
    );
    // A blow-up (a resume may not change the settings, so it is planted in the
    // checkpoint's weights).
    let weights = tmp.path().join("runs/nan/checkpoint.safetensors");
    let t = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu).unwrap();
    let broken: std::collections::HashMap<String, candle_core::Tensor> = t
        .into_iter()
        .map(|(k, v)| (k, (v * f64::NAN).unwrap()))
        .collect();
    candle_core::safetensors::save(&broken, &weights).unwrap();
    let file = tmp.path().join("nan.toml");
    std::fs::write(&file, c.to_toml()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["train", "--resume", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("non-finite loss") && err.contains("after epoch 1"),
        "{err}"
    );
    assert_eq!(
        before,
        std::fs::read(tmp.path().join("runs/nan/checkpoint.json")).unwrap()
    );
}

#[test]
fn out_of_range_ids_in_a_shard_are_an_error_naming_the_place() {
    use llmctr::data::shard::{ColumnData, read_shard, shard_bytes};
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path(), ModelName::Cgc, "bad");
    let prepared = llmctr::stages::prepare::prepare(&c, false).unwrap();
    let shard = prepared.dir.join("train/part-00000.safetensors");
    let mut cols = read_shard(&shard).unwrap();
    if let Some(ColumnData::U32(v)) = cols.get_mut("domain") {
        v[2] = 99;
    }
    std::fs::write(&shard, shard_bytes(&cols).unwrap()).unwrap();
    let e = format!(
        "{:#}",
        llmctr::train::trainer::Trainer::new(&c, &prepared.dir)
            .err()
            .unwrap()
    );
    assert!(
        e.contains("part-00000.safetensors") && e.contains("row 3") && e.contains("`domain`"),
        "{e}"
    );
}

/// Every column of a shard, one row short or one row long, and a label outside
/// {0, 1}, or multi-hot offsets that go down, are refused on load with the shard's
/// path and the column — never a panic, never a silent reading.
#[test]
fn malformed_shards_are_refused_naming_the_file_and_column() {
    use llmctr::data::shard::{ColumnData, read_shard, shard_bytes};
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path(), ModelName::Cgc, "bad");
    let prepared = llmctr::stages::prepare::prepare(&c, false).unwrap();
    let shard = prepared.dir.join("valid/part-00000.safetensors");
    let good = read_shard(&shard).unwrap();
    let mut variants: Vec<(String, std::collections::BTreeMap<String, ColumnData>)> = Vec::new();
    for name in good.keys() {
        for longer in [false, true] {
            let mut cols = good.clone();
            match cols.get_mut(name).unwrap() {
                ColumnData::U32(v) if longer => v.push(0),
                ColumnData::U32(v) => drop(v.pop()),
                ColumnData::U8(v) if longer => v.push(0),
                ColumnData::U8(v) => drop(v.pop()),
                ColumnData::I64(v) if longer => v.push(0),
                ColumnData::I64(v) => drop(v.pop()),
            }
            variants.push((name.clone(), cols));
        }
    }
    let mut label = good.clone();
    if let Some(ColumnData::U8(v)) = label.get_mut("label") {
        v[4] = 2;
    }
    variants.push(("label".into(), label));
    let mut offsets = good.clone();
    if let Some(ColumnData::U32(v)) = offsets.get_mut("genres.offsets") {
        v.swap(1, 2);
    }
    variants.push(("genres.offsets".into(), offsets));
    assert!(variants.len() > 20, "{} columns", good.len());
    for (column, cols) in variants {
        std::fs::write(&shard, shard_bytes(&cols).unwrap()).unwrap();
        let e = match llmctr::train::trainer::Trainer::new(&c, &prepared.dir) {
            Ok(_) => panic!("a shard with a broken `{column}` was accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains("valid/part-00000.safetensors"), "{column}: {e}");
        // `.values` columns have no row count of their own: their offsets are named.
        let named = column.replace(".values", ".offsets");
        assert!(e.contains(&format!("`{named}`")), "{column}: {e}");
    }
}

/// The parameter counts docs/models.md compares with the PyTorch reference are the
/// same models': the count the reference recorded in its benchmark output
/// (notebooks/reference/results) equals ours on MovieLens-100k by occupation.
#[test]
fn parameter_counts_equal_the_pytorch_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for model in [ModelName::Cgc, ModelName::Mmoe] {
        let mut c = common::config("ml100k-occupation", &common::real_raw_dir(), tmp.path());
        c.model.name = model;
        let prepared = llmctr::stages::prepare::prepare(&c, false).unwrap();
        let t = llmctr::train::trainer::Trainer::new(&c, &prepared.dir).unwrap();
        let file = root.join(format!(
            "notebooks/reference/results/bench_{}_ml100k-occupation.json",
            model.as_str()
        ));
        let reference: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(
            Some(t.param_count() as u64),
            reference["bench"]["n_params"].as_u64(),
            "{model:?} against {}",
            file.display()
        );
    }
}

#[test]
fn streamed_training_matches_memory_and_resumes_mid_epoch() {
    use llmctr::train::trainer::Trainer;
    let tmp = tempfile::tempdir().unwrap();
    let mut base = cfg(tmp.path(), ModelName::Cgc, "memory");
    base.train.epochs = 3;
    let memory = train(&base, false, None).unwrap().unwrap();
    // The same data written in shards of 100 rows.
    let mut sharded = base.clone();
    sharded.data.prepared_dir = tmp.path().join("prepared-sharded");
    sharded.data.shard_rows = 100;
    let prepared = llmctr::stages::prepare::prepare(&sharded, false).unwrap();
    let shards = prepared.meta.splits.train.shards.len();
    assert!(shards >= 4, "{shards} train shards");
    // Streamed, one buffer holding every shard: the in-memory run, exactly.
    let mut all = sharded.clone();
    all.train.stream_shards = shards;
    all.train.run_name = Some("stream-all".into());
    let streamed = train(&all, false, None).unwrap().unwrap();
    assert_eq!(streamed.test, memory.test);
    assert_eq!(streamed.valid_auc, memory.valid_auc);
    // With a held-out domain (scored by the seen domains' networks): the same.
    let mut held = base.clone();
    held.data.holdout_domains = vec!["writer".into()];
    held.train.run_name = Some("memory-held".into());
    let memory_held = train(&held, false, None).unwrap().unwrap();
    let mut held_streamed = all.clone();
    held_streamed.data.holdout_domains = vec!["writer".into()];
    held_streamed.train.run_name = Some("stream-all-held".into());
    let streamed_held = train(&held_streamed, false, None).unwrap().unwrap();
    assert!(memory_held.unseen_auc.is_some());
    assert_eq!(streamed_held.test, memory_held.test);
    assert_eq!(streamed_held.unseen_auc, memory_held.unseen_auc);
    assert_ne!(memory_held.test, memory.test);
    // Two shards at a time: another order of the rows, a run of its own.
    let mut small = sharded.clone();
    small.train.stream_shards = 2;
    small.train.run_name = Some("stream-2".into());
    let whole = train(&small, false, None).unwrap().unwrap();
    assert_ne!(whole.test, memory.test, "the buffers changed the row order");
    assert!(whole.test.logloss.is_finite());
    // Stopped after 1, then 3 more buffers (mid-epoch both times), then resumed
    // to the end: the uninterrupted run.
    let mut parts = small.clone();
    parts.train.run_name = Some("stream-2-parts".into());
    let ckpt = tmp.path().join("runs/stream-2-parts/checkpoint.json");
    for (resume, stop) in [(false, 1), (true, 3)] {
        let mut t = Trainer::new(&parts, &prepared.dir).unwrap();
        t.stop_after_buffers = Some(stop);
        assert!(t.run(resume, None).unwrap().is_none());
        let saved = std::fs::read_to_string(&ckpt).unwrap();
        assert!(saved.contains("\"buffers_done\""), "mid-epoch: {saved}");
    }
    let mut t = Trainer::new(&parts, &prepared.dir).unwrap();
    let resumed = t.run(true, None).unwrap().unwrap();
    assert_eq!(resumed.test, whole.test);
    assert_eq!(resumed.best_epoch, whole.best_epoch);
}

#[test]
fn a_genres_bag_is_the_mean_of_a_rows_genres_and_streams_like_memory() {
    use llmctr::data::dataset::SplitData;
    use llmctr::train::trainer::Trainer;
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path(), ModelName::Dnn, "bag");
    c.model.bags = vec!["genres".into()];
    c.train.epochs = 2;
    let with = train(&c, false, None).unwrap().unwrap();
    let mut plain = c.clone();
    plain.model.bags.clear();
    plain.train.run_name = Some("plain".into());
    let without = train(&plain, false, None).unwrap().unwrap();
    assert_ne!(with.test, without.test, "the bag is a feature");

    // Scores of hand-made rows: the same genres in another order and repeated
    // give the same mean, so the same score; other genres another one.
    let prepared = llmctr::stages::prepare::prepare(&c, false).unwrap();
    let mut t = Trainer::new(&c, &prepared.dir).unwrap();
    t.load_best().unwrap();
    assert_eq!(t.ds.bags, ["genres"]);
    let genres = |rows: &[&[u32]]| {
        let mut off = vec![0u32];
        let mut vals = Vec::new();
        for r in rows {
            vals.extend_from_slice(r);
            off.push(vals.len() as u32);
        }
        (off, vals)
    };
    let n = 4;
    let mut cols = vec![vec![1u32; n]; t.ds.features.len()];
    cols[0] = vec![2; n];
    let split = SplitData {
        n,
        cols,
        labels: vec![1.0, 0.0, 1.0, 0.0],
        domains: vec![0; n],
        users: Vec::new(),
        history: None,
        history_cats: None,
        bags: vec![genres(&[&[1, 3], &[3, 1, 1, 3], &[5], &[]])],
    };
    let p = t.predict_split(split).unwrap();
    let score = |row: usize| p.probs[p.rows.iter().position(|&r| r == row).unwrap()];
    assert!(
        (score(0) - score(1)).abs() < 1e-6,
        "{} vs {}",
        score(0),
        score(1)
    );
    assert_ne!(score(0), score(2));
    assert_ne!(score(2), score(3));

    // The same run streamed from shards of 100 rows: the same metrics.
    let mut streamed = c.clone();
    streamed.data.prepared_dir = tmp.path().join("prepared-sharded");
    streamed.data.shard_rows = 100;
    streamed.train.stream_shards = 1000;
    streamed.train.run_name = Some("bag-streamed".into());
    assert_eq!(
        train(&streamed, false, None).unwrap().unwrap().test,
        with.test
    );

    // On the genre recipe the genres are domain-defining: dropped with the domain fields.
    let mut genre = c.clone();
    genre.data.recipe = "ml100k-genre".into();
    genre.model.domain_fields = llmctr::models::config::DomainFields::Drop;
    let prepared = llmctr::stages::prepare::prepare(&genre, false).unwrap();
    let t = Trainer::new(&genre, &prepared.dir).unwrap();
    assert!(t.ds.bags.is_empty());
}
