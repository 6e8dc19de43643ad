//! `run.workers`: training runs side by side. Alone in its test binary: above
//! one worker the process environment is changed while they train
//! (RAYON_NUM_THREADS), which no other test thread may read meanwhile.

mod common;

/// Runs trained side by side, one thread each (`run.workers`), give the digits
/// of the same runs trained one after the other on every core.
#[test]
fn workers_change_wall_time_not_digits() {
    use llmctr::models::config::ModelName;
    use llmctr::stages::run::{ensure_train, ensure_trains};
    let tmp = tempfile::tempdir().unwrap();
    let configs: Vec<_> = [
        (ModelName::Cgc, 1),
        (ModelName::Dnn, 2),
        (ModelName::Cgc, 2),
    ]
    .into_iter()
    .map(|(m, seed)| {
        let mut c = common::small_train_config(tmp.path(), m, &format!("{m:?}-{seed}"));
        c.train.seed = seed;
        c
    })
    .collect();
    let parallel = ensure_trains(&configs, 2).unwrap();
    for (c, (m, dir, _)) in configs.iter().zip(&parallel) {
        let mut alone = c.clone();
        alone.train.runs_dir = tmp.path().join("alone");
        let (a, adir, _) = ensure_train(&alone).unwrap();
        assert_eq!(a.test.auc, m.test.auc, "{}", dir.display());
        assert_eq!(a.test.logloss, m.test.logloss, "{}", dir.display());
        let scores = |d: &std::path::Path| {
            llmctr::tensor_io::load_safetensors(&d.join("predictions_test.safetensors")).unwrap()
                ["score"]
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(scores(dir), scores(&adir));
    }
}
