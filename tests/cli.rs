//! The `pipeline` binary as a user runs it.

mod common;

use std::process::Command;

fn pipeline() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
}

#[test]
fn help_explains_the_stages_and_recipes() {
    let out = pipeline()
        .args(["data", "prepare", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "ml100k-", "amazon-", "criteo", "--config", "--recipe", "--force",
    ] {
        assert!(text.contains(needle), "help lacks {needle}:\n{text}");
    }
}

/// `bench train --config` measures with the file's settings: its recipe (no
/// `--recipe` given) and its features, which a history model needs.
#[test]
fn bench_train_reads_a_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    common::write_small_ml100k(&raw.join("ml-100k"), 30, 150);
    let cfg = tmp.path().join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[data]\nrecipe = \"ml100k-nextitem\"\nraw_dir = {:?}\nprepared_dir = {:?}\nfetch = false\n[model]\nfeatures = [\"user_id\", \"item_id\", \"cate_id\"]\n",
            raw.display().to_string(),
            tmp.path().join("prepared").display().to_string()
        ),
    )
    .unwrap();
    let out = pipeline()
        .args(["bench", "train", "--config"])
        .arg(&cfg)
        .args([
            "--models", "dnn,moe", "--warmup", "1", "--steps", "2", "--reps", "1",
        ])
        .args(["--batch", "16", "--table-rows", "50"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("recipe ml100k-nextitem; settings "), "{text}");
    assert!(text.contains(&cfg.display().to_string()), "{text}");
    for row in ["| dnn |", "| moe |"] {
        assert!(text.contains(row), "no {row} row:\n{text}");
    }
    // A batch larger than the train split is an error that says so.
    let out = pipeline()
        .args(["bench", "train", "--config"])
        .arg(&cfg)
        .args([
            "--models",
            "dnn",
            "--batch",
            "1000000",
            "--table-rows",
            "50",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("fewer than one batch of 1000000") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn config_file_with_flag_override_and_resolved_config() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    common::write_small_ml100k(&raw.join("ml-100k"), 30, 20);
    let cfg = tmp.path().join("run.toml");
    let out = tmp.path().join("prepared");
    std::fs::write(
        &cfg,
        format!(
            "[data]\nrecipe = \"ml100k-gender\"\nraw_dir = {:?}\nprepared_dir = {:?}\nfetch = false\n",
            raw.display().to_string(),
            out.display().to_string()
        ),
    )
    .unwrap();
    let o = pipeline()
        .args(["data", "prepare", "--recipe", "ml100k-age3", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(
        stdout.contains("ml100k-age3") && stdout.contains("3 domains"),
        "{stdout}"
    );
    assert!(
        !out.join("ml100k-gender").exists(),
        "the flag overrides the file"
    );
    let resolved = std::fs::read_to_string(out.join("ml100k-age3/config.toml")).unwrap();
    assert!(resolved.contains("recipe = \"ml100k-age3\""), "{resolved}");
    assert!(
        resolved.contains("min_count = 10"),
        "defaults are written out: {resolved}"
    );

    let again = pipeline()
        .args(["data", "prepare", "--recipe", "ml100k-age3", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        String::from_utf8(again.stdout)
            .unwrap()
            .starts_with("up to date")
    );

    // `--set` reaches any key: the run's resolved config holds it.
    let runs = tmp.path().join("runs");
    let o = pipeline()
        .args([
            "train",
            "--model",
            "dnn",
            "--recipe",
            "ml100k-age3",
            "--run-name",
            "set",
        ])
        .args([
            "--set",
            "model.dnn.hidden=[8]",
            "--set",
            "train.epochs=1",
            "--config",
        ])
        .arg(&cfg)
        .arg("--runs-dir")
        .arg(&runs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let resolved = std::fs::read_to_string(runs.join("set/config.toml")).unwrap();
    assert!(
        resolved.contains("hidden = [8]") && resolved.contains("epochs = 1\n"),
        "{resolved}"
    );
    let o = pipeline()
        .args(["train", "--set", "train.lrr=1", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("lrr") && err.contains("--set"),
        "{err}"
    );
}

#[test]
fn config_errors_name_the_key_and_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "[data]\nrecipe = \"ml100k-age3\"\nraw-dir = \"x\"\n").unwrap();
    let o = pipeline()
        .args(["data", "prepare", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.contains("bad.toml") && err.contains("raw-dir") && err.contains("line 3"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    std::fs::write(&cfg, "[data]\nfetch = \"yes\"\n").unwrap();
    let o = pipeline()
        .args(["data", "prepare", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        !o.status.success() && err.contains("fetch") && err.contains("bad.toml"),
        "{err}"
    );
}

#[test]
fn unknown_recipe_lists_the_known_ones() {
    let o = pipeline()
        .args(["data", "prepare", "--recipe", "ml100k-zip", "--no-fetch"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.contains("ml100k-zip") && err.contains("ml100k-occupation"),
        "{err}"
    );
}

#[test]
fn model_recipe_files_are_written_from_the_code() {
    // configs/models/<name>.toml is what `pipeline models --write configs/models`
    // writes from each model's ABOUT and built-in defaults: byte for byte, and it
    // reads back as those defaults.
    use llmctr::config::{Config, model_recipe};
    use llmctr::models::config::ModelName;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/models");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut names: Vec<String> = ModelName::ALL
        .iter()
        .map(|m| format!("{}.toml", m.as_str()))
        .collect();
    names.sort();
    assert_eq!(
        files,
        names,
        "one recipe file per registered model in {}",
        dir.display()
    );
    for m in ModelName::ALL {
        let path = dir.join(format!("{}.toml", m.as_str()));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            model_recipe(m).unwrap(),
            "{} differs from the code's defaults: run `pipeline models --write configs/models`",
            path.display()
        );
        let mut built_in = Config::default();
        built_in.model.name = m;
        assert_eq!(
            Config::load(Some(&path)).unwrap(),
            built_in,
            "{}",
            path.display()
        );
    }
    // The command writes them so.
    let tmp = tempfile::tempdir().unwrap();
    let o = pipeline()
        .args(["models", "--write"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for m in ModelName::ALL {
        let f = format!("{}.toml", m.as_str());
        assert_eq!(
            std::fs::read_to_string(tmp.path().join(&f)).unwrap(),
            std::fs::read_to_string(dir.join(&f)).unwrap()
        );
    }
}

/// (Every committed config file is loaded by one walk, in tests/validation.rs.)
#[test]
fn the_ablation_studies_are_sound() {
    use llmctr::config::Config;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    // The ablation is a set of leave-one-domain-out studies: every study's config
    // parses, trains a domain-conditioned head, and its `adapted` arm (if any)
    // uses a template a held-out domain can fill (its name, no train statistics).
    let ablate = Config::load(Some(&dir.join("ablate.toml"))).unwrap();
    assert!(ablate.ablate.lodo.len() >= 2 && !ablate.ablate.seen.is_empty());
    for s in &ablate.ablate.seen {
        Config::load(Some(&s.config)).unwrap_or_else(|e| panic!("{}: {e:#}", s.config.display()));
    }
    for study in &ablate.ablate.lodo {
        let c = Config::load(Some(&study.config)).unwrap();
        use llmctr::models::config::ModelName;
        assert!(
            matches!(
                c.model.name,
                ModelName::Pepnet | ModelName::M2m | ModelName::Cgc
            ),
            "{}",
            study.config.display()
        );
        if study.arms.contains(&llmctr::config::ablate::Arm::Adapted) {
            let t = std::fs::read_to_string(&c.embed.template).unwrap();
            for key in llmctr::llm::prompt::placeholders(&t) {
                assert!(
                    ["dataset", "domain", "category_name"].contains(&key.as_str())
                        || llmctr::llm::prompt::CATALOG_PLACEHOLDERS.contains(&key.as_str()),
                    "{}: {{{key}}}",
                    c.embed.template.display()
                );
            }
        }
    }
}

#[test]
fn report_explains_what_is_missing_and_new_commands_have_help() {
    let tmp = tempfile::tempdir().unwrap();
    let out = pipeline().arg("report").arg(tmp.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metrics.json") && err.contains(&tmp.path().display().to_string()),
        "{err}"
    );
    // Each command's help in its own words.
    for (cmd, words) in [
        (
            "pool",
            &["parametric", "parameterless", "kernel perplexity"][..],
        ),
        (
            "ablate",
            &["leave-one-domain-out", "lodo.md", "seen.md"][..],
        ),
        ("models", &["registry", "--write"][..]),
    ] {
        let out = pipeline().args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        for w in words {
            assert!(text.contains(w), "`{cmd} --help` lacks {w:?}:\n{text}");
        }
    }
}

/// The README's stage-by-stage commands (`embed`, `pool`, `train-cgc` with the
/// pooled file) give the run command's LLM arm to the digit: the same test
/// metrics and predictions, on two copies of a tiny setup.
#[test]
fn stage_commands_give_the_run_commands_llm_arm() {
    let run_side = tempfile::tempdir().unwrap();
    let stage_side = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for tmp in [run_side.path(), stage_side.path()] {
        let cfg = common::tiny_run_config(tmp);
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text.push_str("[run]\nseeds = [1]\ncompare = false\n");
        std::fs::write(&cfg, text).unwrap();
        files.push(cfg);
    }
    let ok = |args: &[&std::ffi::OsStr]| -> String {
        let o = pipeline().args(args).output().unwrap();
        assert!(
            o.status.success(),
            "{:?}: {}",
            args,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(&["run".as_ref(), files[0].as_os_str()]);
    let runs = run_side.path().join("runs");
    let llm_run = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().contains("-llm-"))
        .unwrap();
    let c = files[1].as_os_str();
    ok(&["embed".as_ref(), "-c".as_ref(), c]);
    ok(&["pool".as_ref(), "-c".as_ref(), c]);
    let runs2 = stage_side.path().join("runs");
    let pooled = std::fs::read_dir(&runs2)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("pool-")
        })
        .unwrap()
        .join("domain_embeddings.safetensors");
    ok(&[
        "train-cgc".as_ref(),
        "-c".as_ref(),
        c,
        "--domain-embeddings".as_ref(),
        pooled.as_os_str(),
        "--seed".as_ref(),
        "1".as_ref(),
        "--run-name".as_ref(),
        "by-stage".as_ref(),
    ]);
    let metrics = |dir: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap()
    };
    let (a, b) = (metrics(&llm_run), metrics(&runs2.join("by-stage")));
    assert_eq!(a["test"], b["test"], "test metrics");
    assert_eq!(a["best_epoch"], b["best_epoch"]);
    let scores = |dir: &std::path::Path| {
        llmctr::tensor_io::load_safetensors(&dir.join("predictions_test.safetensors")).unwrap()
            ["score"]
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(scores(&llm_run), scores(&runs2.join("by-stage")));
}
