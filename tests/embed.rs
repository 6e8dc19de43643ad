//! `pipeline embed` end to end on a tiny random decoder and a small GroupLens fixture.

mod common;

use candle_core::Device;
use llmctr::config::Config;
use llmctr::llm::load::load_hf_dir;
use llmctr::stages::embed::{Method, embed, render_prompts};
use std::path::{Path, PathBuf};

/// A tiny decoder, a small GroupLens fixture, a template, and a fast embed config.
fn setup(tmp: &Path, seed: u64, template: &str, method: Method) -> (Config, PathBuf, PathBuf) {
    let model = tmp.join("tiny");
    common::write_tiny_llama(&model, seed, false);
    let raw = tmp.join("raw");
    common::write_small_ml100k(&raw.join("ml-100k"), 60, 50);
    let t = tmp.join("t.txt");
    std::fs::write(&t, template).unwrap();
    let mut cfg = common::config("ml100k-occupation", &raw, &tmp.join("prepared"));
    let e = &mut cfg.embed;
    e.model = model.display().to_string();
    e.method = method;
    e.template = t.clone();
    e.patience = 5;
    e.batch_size = 64;
    e.lr = 1e-2;
    e.runs_dir = tmp.join("runs");
    e.ptuning.virtual_tokens = 2;
    (cfg, model, t)
}

#[test]
fn embed_none_lora_ptuning_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "Domain {domain}: {rows} rows, {positive_pct}% liked; likes {top_categories}.\n";
    for method in [Method::None, Method::Lora, Method::Ptuning] {
        let (mut cfg, model, template) = setup(tmp.path(), 11, text, method);
        cfg.embed.epochs = 2;
        cfg.embed.batches_per_llm_step = 2;
        cfg.embed.ptuning.layers = vec![1];
        let r = embed(&cfg, false, None).unwrap().unwrap();
        let dir = std::path::PathBuf::from(&r.run_dir);
        assert!(r.probe_valid_auc.is_some(), "{method:?}");
        // The adapters' shift is measured against the frozen model's
        // embedding; trained adapters (and any prefix) move it.
        match (method, r.adapter_shift) {
            (Method::None, s) => assert!(s.is_none()),
            (_, Some(s)) => assert!(
                s.d2_median > 0.0 && s.ratio.is_finite(),
                "{method:?}: {s:?}"
            ),
            (_, None) => panic!("{method:?}: no adapter shift"),
        }
        assert_eq!(
            r.base_checksum_before, r.base_checksum_after,
            "base weights untouched"
        );
        for f in [
            "config.toml",
            "prompts.json",
            "metrics.jsonl",
            "token_states.safetensors",
            "domain_embeddings.safetensors",
            "result.json",
        ] {
            assert!(dir.join(f).is_file(), "{method:?}: {f}");
        }
        let prompts: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("prompts.json")).unwrap()).unwrap();
        assert_eq!(prompts.as_array().unwrap().len(), 21);
        assert!(
            prompts[18]["prompt"]
                .as_str()
                .unwrap()
                .starts_with("Domain student: ")
        );
        let saved =
            candle_core::safetensors::load(dir.join("domain_embeddings.safetensors"), &Device::Cpu)
                .unwrap();
        let saved = saved["domain_embeddings"].clone();
        assert_eq!(saved.dims(), &[21, 32]);
        if method == Method::None {
            assert_eq!(r.llm_steps, 0);
            assert!(!dir.join("adapter").exists());
            continue;
        }
        assert!(r.llm_steps > 0);
        // Loading the saved adapter reproduces the embeddings.
        let l = load_hf_dir(&model, &Device::Cpu).unwrap();
        let ad = llmctr::llm::peft::load(
            &dir.join("adapter"),
            &l.decoder.cfg,
            &Device::Cpu,
            l.decoder.rope,
        )
        .unwrap();
        let ds = llmctr::data::dataset::Dataset::load(
            &tmp.path().join("prepared/ml100k-occupation"),
            &[],
            0,
        )
        .unwrap();
        let p = render_prompts(&template, &ds.meta, None, &l, 512, &[]).unwrap();
        let states = l
            .decoder
            .hidden_states(&p.ids, &ad, false, &mut llmctr::nn::rng::Rng::new(0))
            .unwrap();
        let dm = llmctr::pool::parameterless(&states, p.tokens(), llmctr::pool::Query::Last, None)
            .unwrap();
        let diff = common::max_abs_diff(&dm, &saved);
        assert!(
            diff < 1e-4,
            "{method:?}: reloaded adapter gives embeddings {diff} away"
        );
        // Trained: differs from the base model's embeddings.
        let base = l
            .decoder
            .hidden_states(
                &p.ids,
                &llmctr::llm::adapters::Adapters::none(),
                false,
                &mut llmctr::nn::rng::Rng::new(0),
            )
            .unwrap();
        let bdm = llmctr::pool::parameterless(&base, p.tokens(), llmctr::pool::Query::Last, None)
            .unwrap();
        let moved = common::max_abs_diff(&bdm, &saved);
        assert!(
            moved > 1e-6,
            "{method:?}: the adapters did not move the embeddings"
        );
    }
}

#[test]
fn unknown_placeholder_names_the_template_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("bad.txt");
    std::fs::write(&t, "ok {domain}\nthen {colour}\n").unwrap();
    let meta: llmctr::data::meta::Meta = {
        let raw = tmp.path().join("raw");
        common::write_small_ml100k(&raw.join("ml-100k"), 20, 10);
        llmctr::stages::prepare::prepare(
            &common::config("ml100k-occupation", &raw, &tmp.path().join("p")),
            false,
        )
        .unwrap()
        .meta
    };
    let text = std::fs::read_to_string(&t).unwrap();
    let e = llmctr::llm::prompt::render(&text, &t, &meta, &meta.domains[0], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.txt:2") && e.contains("{colour}"), "{e}");
}

/// `data prepare` writes each domain's label-free catalogue statistics, and a
/// template reads them through `{catalog_…}`; what a recipe lacks is an error
/// naming the template's line.
#[test]
fn catalogue_statistics_fill_the_catalog_placeholders() {
    use llmctr::data::meta::Catalog;
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    common::write_small_ml100k(&raw.join("ml-100k"), 20, 10);
    let p = llmctr::stages::prepare::prepare(
        &common::config("ml100k-occupation", &raw, &tmp.path().join("p")),
        false,
    )
    .unwrap();
    let users = std::fs::read_to_string(raw.join("ml-100k").join("u.user")).unwrap();
    let cat = Catalog::read(&p.dir).unwrap();
    assert_eq!(cat.domains.len(), p.meta.domains.len());
    // Every user of the user table counted once, in its occupation.
    let total: u64 = cat.domains.iter().filter_map(|d| d.users).sum();
    assert_eq!(total as usize, users.lines().count());
    for (c, line) in [("student", "student"), ("writer", "writer")] {
        let n = users
            .lines()
            .filter(|l| l.split('|').nth(3) == Some(line))
            .count();
        let d = cat.domains.iter().find(|d| d.name == c).unwrap();
        assert_eq!(d.users, Some(n as u64), "{c}");
    }
    let t = tmp.path().join("cat.txt");
    std::fs::write(
        &t,
        "{domain}: {catalog_users} users\nlike {catalog_titles}\n",
    )
    .unwrap();
    assert!(
        llmctr::stages::embed::template_catalog(&t, &p.dir)
            .unwrap()
            .is_some()
    );
    let text = std::fs::read_to_string(&t).unwrap();
    let i = p
        .meta
        .domains
        .iter()
        .position(|d| d.name == "student")
        .unwrap();
    let e = format!(
        "{:#}",
        llmctr::llm::prompt::render(
            &text,
            &t,
            &p.meta,
            &p.meta.domains[i],
            Some(&cat.domains[i])
        )
        .unwrap_err()
    );
    assert!(e.contains("cat.txt:2: {catalog_titles}"), "{e}");
    std::fs::write(&t, "{domain}: {catalog_users} users\n").unwrap();
    let text = std::fs::read_to_string(&t).unwrap();
    let r = llmctr::llm::prompt::render(
        &text,
        &t,
        &p.meta,
        &p.meta.domains[i],
        Some(&cat.domains[i]),
    )
    .unwrap();
    assert_eq!(
        r,
        format!("student: {} users", cat.domains[i].users.unwrap())
    );
    // A dataset without the file: the error says how to make it.
    std::fs::remove_file(p.dir.join(Catalog::FILE)).unwrap();
    let e = format!(
        "{:#}",
        llmctr::stages::embed::template_catalog(&t, &p.dir).unwrap_err()
    );
    assert!(e.contains("--force") && e.contains("cat.txt"), "{e}");
}

#[test]
fn stopped_and_resumed_embed_equals_the_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut cfg, _, _) = setup(
        tmp.path(),
        12,
        "{domain} likes {top_categories}.",
        Method::Ptuning,
    );
    cfg.embed.epochs = 3;
    cfg.embed.batches_per_llm_step = 3;
    cfg.embed.run_name = Some("whole".into());
    let whole = embed(&cfg, false, None).unwrap().unwrap();
    cfg.embed.run_name = Some("parts".into());
    assert!(embed(&cfg, false, Some(1)).unwrap().is_none());
    assert!(
        embed(&cfg, false, None).is_err(),
        "an unfinished run needs --resume"
    );
    let parts = embed(&cfg, true, None).unwrap().unwrap();
    assert_eq!(whole.probe_valid_auc, parts.probe_valid_auc);
    assert_eq!(whole.llm_steps, parts.llm_steps);
    assert_eq!(load_embeddings(&whole), load_embeddings(&parts));
}

#[test]
fn episodes_leave_domains_out_of_the_probe_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut cfg, _, _) = setup(
        tmp.path(),
        13,
        "{domain} likes {top_categories}.",
        Method::Lora,
    );
    cfg.embed.epochs = 3;
    cfg.embed.batches_per_llm_step = 2;
    cfg.embed.episodes = 0.5;
    let whole = embed(&cfg, false, None).unwrap().unwrap();
    let dir = PathBuf::from(&whole.run_dir);
    assert!(
        dir.file_name()
            .unwrap()
            .to_string_lossy()
            .contains("-ep50-"),
        "{}",
        dir.display()
    );
    let epochs: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(epochs.len(), 3);
    // Half of the domains with training rows (the unit test checks the count).
    let domains = load_embeddings(&whole).len();
    let mut subsets = std::collections::BTreeSet::new();
    for e in &epochs {
        let held: Vec<String> = serde_json::from_value(e["episode_held_out"].clone()).unwrap();
        assert!(!held.is_empty() && held.len() < domains, "{e}");
        assert!(e["held_out_valid_auc"].is_number(), "{e}");
        assert!(e["trained_valid_auc"].is_number(), "{e}");
        subsets.insert(held);
    }
    assert!(subsets.len() > 1, "a new subset each epoch: {subsets:?}");
    assert_eq!(
        subsets
            .iter()
            .map(Vec::len)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        1,
        "the same share each epoch: {subsets:?}"
    );
    // The same settings without episodes train other adapters.
    let mut off = cfg.clone();
    off.embed.episodes = 0.0;
    let plain = embed(&off, false, None).unwrap().unwrap();
    assert!(
        !PathBuf::from(&plain.run_dir)
            .to_string_lossy()
            .contains("-ep")
    );
    assert_ne!(load_embeddings(&whole), load_embeddings(&plain));
    // Stopped after an epoch and resumed: the same numbers.
    cfg.embed.run_name = Some("parts".into());
    assert!(embed(&cfg, false, Some(1)).unwrap().is_none());
    let parts = embed(&cfg, true, None).unwrap().unwrap();
    assert_eq!(whole.probe_valid_auc, parts.probe_valid_auc);
    assert_eq!(load_embeddings(&whole), load_embeddings(&parts));
    // Out of range, or on a method without adapters: refused, naming the key.
    for (method, share) in [(Method::Lora, 1.0), (Method::None, 0.25)] {
        let mut c = cfg.clone();
        c.embed.method = method;
        c.embed.episodes = share;
        let err = format!("{:#}", c.validate().unwrap_err());
        assert!(err.contains("embed.episodes"), "{err}");
    }
}

/// An embed run's domain embeddings, one row per domain.
fn load_embeddings(r: &llmctr::stages::embed::EmbedResult) -> Vec<Vec<f32>> {
    candle_core::safetensors::load(
        Path::new(&r.run_dir).join("domain_embeddings.safetensors"),
        &Device::Cpu,
    )
    .unwrap()["domain_embeddings"]
        .to_vec2::<f32>()
        .unwrap()
}

#[test]
fn pipeline_run_chains_the_stages_and_reuses_finished_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = common::tiny_run_config(tmp.path());
    // The best configuration found on valid, reported beside the run's arm:
    // here the frozen decoder.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let best = tmp.path().join("best.toml");
    std::fs::write(
        &best,
        text.replace("[embed]\n", "[embed]\nmethod = \"none\"\n"),
    )
    .unwrap();
    std::fs::write(
        &cfg,
        format!("{text}[run]\nbest = {:?}\n", best.display().to_string()),
    )
    .unwrap();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .arg("run")
            .arg(&cfg)
            .output()
            .unwrap()
    };
    let o = run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("report: ") && out.contains("cgc_cond on ml100k-occupation"),
        "{out}"
    );
    let report = tmp
        .path()
        .join("runs/cgc_cond-llm-lora-ml100k-occupation-t-parametric-seed1/report.md");
    // The report opens with the comparison of the arms, seeds 1-3, and a verdict.
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.starts_with("# Does the LLM embedding help?"), "{md}");
    for arm in [
        "| domain id |",
        "| no domain input |",
        "| random vector per domain |",
        "| dnn, domain field kept |",
        "| best configuration found on valid: cgc_cond on the LLM embeddings (none / t / parametric) |",
    ] {
        assert!(md.contains(arm), "{arm} missing: {md}");
    }
    assert!(
        md.contains("**Verdict:**") && md.contains("Seeds 1, 2, 3"),
        "{md}"
    );
    let runs = tmp.path().join("runs");
    for arm in [
        "cgc_cond-id-ml100k-occupation-seed3",
        "cgc_cond-none-ml100k-occupation-seed3",
        "cgc_cond-random-pool-parametric-embed-lora-ml100k-occupation-t-seed1-seed1-seed3",
        "dnn-keep-ml100k-occupation-seed3",
    ] {
        assert!(runs.join(arm).join("metrics.json").is_file(), "{arm}");
    }
    let o = run();
    assert!(o.status.success());
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.contains("embed: reusing") && err.contains("pool: reusing"),
        "{err}"
    );
    // Every training run, the comparison arms' included, is reused.
    // (embed, pool and 5 arms × 3 seeds; the best configuration's embed, pool
    // and 3 seeds.)
    assert_eq!(err.matches(": reusing").count(), 2 + 5 * 3 + 2 + 3, "{err}");
    // A changed config must not silently reuse the old result.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("epochs = 1\n", "epochs = 2\n");
    std::fs::write(&cfg, text).unwrap();
    let o = run();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("different config"), "{err}");
}

/// `pipeline lodo`'s `adapted` arm: per fold, LoRA is trained through the embed
/// probe with the fold's domains held out (their rows never reach it), pooled,
/// and the head trained on those vectors; embed and pool runs are named by the
/// fold and reused on a second call.
#[test]
fn lodo_adapted_arm_trains_adapters_per_fold_without_the_held_out_domains() {
    use llmctr::stages::lodo::{Arm, LodoPlan, lodo};
    let tmp = tempfile::tempdir().unwrap();
    let path = common::tiny_run_config(tmp.path());
    // A label-free template: a held-out domain's prompt may only name it.
    std::fs::write(tmp.path().join("t.txt"), "Users who work as {domain}.").unwrap();
    let mut c = llmctr::config::Config::load(Some(&path)).unwrap();
    c.model.name = llmctr::models::config::ModelName::Pepnet;
    c.train.epochs = 1;
    c.train.min_epochs = 1;
    c.pool.mode = llmctr::stages::pool::PoolMode::Parameterless;
    // Three folds of the 21 occupations: the fixture's users are students
    // (fold 0) and doctors, homemakers and writers (fold 2).
    let plan = LodoPlan {
        folds: 3,
        seeds: vec![1],
        arms: vec![Arm::None, Arm::Adapted],
        out: tmp.path().join("lodo"),
    };
    let md = std::fs::read_to_string(lodo(&c, &plan).unwrap()).unwrap();
    assert!(md.contains("adapted-lora AUC"), "{md}");
    assert!(md.contains("| `adapted-lora` |"), "{md}");
    let runs = tmp.path().join("runs");
    let embeds: Vec<std::path::PathBuf> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("embed-lora-") && n.contains("-holdout-")
        })
        .collect();
    assert_eq!(embeds.len(), 3, "one embed run per fold: {embeds:?}");
    for e in &embeds {
        // Each embed run held its fold's domains out of the probe's training.
        let saved =
            llmctr::config::Config::parse(&std::fs::read_to_string(e.join("config.toml")).unwrap())
                .unwrap();
        assert!(!saved.data.holdout_domains.is_empty(), "{}", e.display());
        let r = std::fs::read_to_string(e.join("result.json")).unwrap();
        assert!(r.contains("\"llm_steps\""), "{r}");
    }
    let before: Vec<_> = embeds
        .iter()
        .map(|e| {
            std::fs::metadata(e.join("result.json"))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();
    let again = std::fs::read_to_string(lodo(&c, &plan).unwrap()).unwrap();
    let body = |s: &str| s.lines().skip(3).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&md), body(&again));
    for (e, t) in embeds.iter().zip(before) {
        let now = std::fs::metadata(e.join("result.json"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(now, t, "{} was trained again", e.display());
    }
}

/// The background prompts' states come from the adapters of the best epoch, and
/// a stopped and resumed run writes the same ones as the uninterrupted run.
#[test]
fn background_states_survive_a_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut cfg, _, _) = setup(tmp.path(), 12, "{domain} likes films.", Method::Ptuning);
    let bg = tmp.path().join("bg.txt");
    std::fs::write(&bg, "nurse\npilot\nbaker\n").unwrap();
    cfg.embed.background = Some(bg);
    cfg.embed.epochs = 3;
    cfg.embed.batches_per_llm_step = 3;
    cfg.embed.run_name = Some("whole".into());
    let whole = embed(&cfg, false, None).unwrap().unwrap();
    cfg.embed.run_name = Some("parts".into());
    assert!(embed(&cfg, false, Some(1)).unwrap().is_none());
    let parts = embed(&cfg, true, None).unwrap().unwrap();
    let load = |r: &llmctr::stages::embed::EmbedResult| {
        candle_core::safetensors::load(
            std::path::Path::new(&r.run_dir).join("background_states.safetensors"),
            &Device::Cpu,
        )
        .unwrap()["states"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let (a, b) = (load(&whole), load(&parts));
    assert_eq!(a, b);
    // Not the frozen model's: the adapters moved them.
    cfg.embed.method = Method::None;
    cfg.embed.run_name = Some("frozen".into());
    let frozen = embed(&cfg, false, None).unwrap().unwrap();
    assert_ne!(load(&frozen), a);
}
