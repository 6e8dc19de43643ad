//! Held-out domains, `pool`, `ablate` and `report` on a small GroupLens fixture
//! and a tiny random decoder.

mod common;

use llmctr::config::Config;
use llmctr::data::dataset::Dataset;
use llmctr::models::config::ModelName;
use llmctr::stages::embed::{Method, embed};
use llmctr::stages::pool::{PoolMode, pool};
use llmctr::train::trainer::FinalMetrics;
use std::path::{Path, PathBuf};

/// A prepared fixture (occupations student, homemaker, writer, doctor present),
/// a tiny decoder and a config that trains fast.
fn setup(tmp: &Path) -> Config {
    let raw = tmp.join("raw");
    common::write_small_ml100k(&raw.join("ml-100k"), 60, 50);
    let model = tmp.join("tiny");
    common::write_tiny_llama(&model, 3, false);
    let mut cfg = common::config("ml100k-occupation", &raw, &tmp.join("prepared"));
    cfg.embed.model = model.display().to_string();
    cfg.embed.method = Method::None;
    cfg.embed.template = tmp.join("name.txt");
    std::fs::write(&cfg.embed.template, "The users \"{domain}\" of {dataset}.").unwrap();
    cfg.embed.batch_size = 64;
    cfg.embed.epochs = 2;
    cfg.embed.runs_dir = tmp.join("runs");
    cfg.pool.runs_dir = tmp.join("runs");
    cfg.pool.epochs = 3;
    cfg.train.runs_dir = tmp.join("runs");
    cfg.train.epochs = 2;
    cfg.train.batch_size = 64;
    cfg
}

fn domain_rows(s: &llmctr::data::dataset::SplitData, d: usize) -> usize {
    s.domains.iter().filter(|&&x| x as usize == d).count()
}

#[test]
fn holdout_leaves_no_row_of_the_domain_in_train_or_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = setup(tmp.path());
    let p = llmctr::stages::prepare::prepare(&cfg, false).unwrap();
    let full = Dataset::load(&p.dir, &[], 0).unwrap();
    let mut ds = Dataset::load(&p.dir, &[], 0).unwrap();
    let id = |n: &str| ds.domain_names.iter().position(|d| d == n).unwrap();
    let (home, doc) = (id("homemaker"), id("doctor"));
    assert!(domain_rows(&full.train, home) > 0 && domain_rows(&full.valid, home) > 0);
    ds.hold_out(&["homemaker".into(), "doctor".into()]).unwrap();
    for s in [&ds.train, &ds.valid] {
        assert_eq!(domain_rows(s, home) + domain_rows(s, doc), 0);
        assert_eq!(s.n, s.labels.len());
        assert!(s.cols.iter().all(|c| c.len() == s.n));
    }
    // Everything else is kept, row for row, and test is untouched.
    for d in 0..ds.domain_names.len() {
        if d != home && d != doc {
            assert_eq!(domain_rows(&ds.train, d), domain_rows(&full.train, d));
            assert_eq!(domain_rows(&ds.valid, d), domain_rows(&full.valid, d));
        }
    }
    let keep: Vec<usize> = (0..full.train.n)
        .filter(|&r| ![home, doc].contains(&(full.train.domains[r] as usize)))
        .collect();
    assert_eq!(
        ds.train.labels,
        keep.iter()
            .map(|&r| full.train.labels[r])
            .collect::<Vec<_>>()
    );
    assert_eq!(ds.test.n, full.test.n);
    let e = ds.hold_out(&["astronaut".into()]).unwrap_err().to_string();
    assert!(e.contains("astronaut") && e.contains("student"), "{e}");
}

fn read_metrics(dir: &Path) -> FinalMetrics {
    serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn unseen_domains_are_scored_by_the_mixture_for_id_and_llm_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = setup(tmp.path());
    cfg.data.holdout_domains = vec!["homemaker".into(), "doctor".into()];
    // The one-hot CGC.
    let m = llmctr::stages::train::train(&cfg, false, None)
        .unwrap()
        .unwrap();
    let dir = cfg
        .train
        .runs_dir
        .join("cgc-ml100k-occupation-holdout-homemaker+doctor-seed1");
    assert_eq!(m, read_metrics(&dir));
    let mut held = m.unseen_domains.clone();
    held.sort();
    assert_eq!(held, ["doctor", "homemaker"]);
    assert!(m.unseen_auc.is_some(), "both classes among the unseen rows");
    // Every test row is scored, the held-out domains' included.
    let full = Dataset::load(&tmp.path().join("prepared/ml100k-occupation"), &[], 0).unwrap();
    assert_eq!(m.test.rows, full.test.n);
    for d in &m.test.domains {
        if held.contains(&d.domain) {
            assert!(d.rows > 0 && d.auc.is_some(), "{}", d.domain);
        }
    }
    for f in ["report.md", "learning_curve.svg", "domain_auc.svg"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("held-out (unseen) domains"), "{report}");

    // LLM embeddings: embed (the probe never sees the held-out rows), pool, CGC.
    let r = embed(&cfg, false, None).unwrap().unwrap();
    assert!(
        r.run_dir
            .ends_with("embed-none-ml100k-occupation-name-holdout-homemaker+doctor-seed1")
    );
    cfg.pool.mode = PoolMode::Parameterless;
    let pr = pool(&cfg).unwrap();
    let mut c = llmctr::stages::run::llm_head(&cfg, Path::new(&pr.run_dir), "llm".into());
    // The classic CGC, whose held-out domains have no networks of their own (the
    // conditioned form, the default on LLM embeddings, scores them directly).
    c.model.cgc.conditioning = llmctr::models::config::Conditioning::None;
    let t =
        llmctr::train::trainer::Trainer::new(&c, &tmp.path().join("prepared/ml100k-occupation"))
            .unwrap();
    let w = t.unseen_weights().unwrap();
    assert_eq!(w.len(), 2);
    for (_, ws) in &w {
        assert_eq!(ws.len(), 2, "the two seen domains");
        let s: f64 = ws.iter().map(|x| x.1).sum();
        assert!((s - 1.0).abs() < 1e-9);
    }
    let m2 = llmctr::stages::train::train(&c, false, None)
        .unwrap()
        .unwrap();
    assert!(m2.unseen_auc.is_some());
    assert_ne!(
        m2.unseen_auc, m.unseen_auc,
        "different models, different scores"
    );
}

#[test]
fn heldout_prompts_may_not_use_train_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = setup(tmp.path());
    cfg.data.holdout_domains = vec!["doctor".into()];
    std::fs::write(
        &cfg.embed.template,
        "{domain}: {rows} rows, {positive_pct}% liked",
    )
    .unwrap();
    let e = format!("{:#}", embed(&cfg, false, None).unwrap_err());
    assert!(e.contains("{rows}") && e.contains("doctor"), "{e}");
}

#[test]
fn pool_parameterless_equals_the_embed_pooling_and_parametric_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = setup(tmp.path());
    let r = embed(&cfg, false, None).unwrap().unwrap();
    let load = |p: PathBuf| {
        candle_core::safetensors::load(p, &candle_core::Device::Cpu)
            .unwrap()
            .remove("domain_embeddings")
            .unwrap()
    };
    let from_embed = load(PathBuf::from(&r.run_dir).join("domain_embeddings.safetensors"));
    cfg.pool.mode = PoolMode::Parameterless;
    let p = pool(&cfg).unwrap();
    let pooled = load(PathBuf::from(&p.run_dir).join("domain_embeddings.safetensors"));
    let diff = common::max_abs_diff(&from_embed, &pooled);
    assert!(diff < 1e-6, "{diff}");
    // A finished run is not overwritten.
    assert!(pool(&cfg).is_err());

    cfg.pool.mode = PoolMode::Parametric;
    cfg.pool.lr = 1e-2;
    let p = pool(&cfg).unwrap();
    assert!(p.probe_valid_auc.is_some() && p.best_epoch >= 1);
    let dir = PathBuf::from(&p.run_dir);
    assert!(dir.ends_with("pool-parametric-embed-none-ml100k-occupation-name-seed1-seed1"));
    let params = candle_core::safetensors::load(
        dir.join("pool_params.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let w = params["w"].to_vec1::<f32>().unwrap();
    let init = 1.0 / (w.len() as f32).sqrt();
    assert!(w.iter().any(|&x| (x - init).abs() > 1e-4), "w was trained");
    assert!(params.contains_key("query_offset"));
    let learned = load(dir.join("domain_embeddings.safetensors"));
    assert_eq!(learned.dims(), pooled.dims());
    assert!(
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count()
            >= 1
    );
}

#[test]
fn ablate_writes_tables_and_plots_and_reuses_every_run() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = setup(tmp.path());
    let a = &mut cfg.ablate;
    a.recipes = vec!["ml100k-occupation".into()];
    a.templates = vec![cfg.embed.template.clone()];
    a.methods = vec![Method::None];
    a.seeds = vec![1, 2];
    a.baselines = vec![ModelName::Cgc];
    a.holdout_recipe = Some("ml100k-occupation".into());
    a.holdout_domains = vec!["doctor".into()];
    a.holdout_template = cfg.embed.template.clone();
    a.out_dir = tmp.path().join("results");
    let path = tmp.path().join("ablate.toml");
    let out = llmctr::stages::ablate::ablate(&cfg, &path).unwrap();
    let md = std::fs::read_to_string(&out).unwrap();
    assert!(md.contains("| cgc | id |"), "{md}");
    assert!(md.contains("| cgc | name/none/parametric |"), "{md}");
    assert!(md.contains("held out: doctor"), "{md}");
    assert!(md.contains("unseen AUC, median kernel"), "{md}");
    let dir = tmp.path().join("results");
    let runs = std::fs::read_to_string(dir.join("runs.csv")).unwrap();
    // (1 baseline + 1 method × 2 poolings) × 2 seeds, without and with the hold-out.
    assert_eq!(runs.lines().count(), 1 + 2 * 3 * 2);
    // Held-out runs were scored again with the median-heuristic kernel.
    let header: Vec<&str> = runs.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let held: Vec<Vec<&str>> = runs
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f[col("holdout")] == "true")
        .collect();
    assert_eq!(held.len(), 6);
    for f in &held {
        // The conditioned CGC on the LLM embeddings scores a held-out domain
        // directly: no kernel, no perplexity.
        if f[col("run_dir")].contains("cgc_cond-llm") {
            let ppl = f[col("kernel_perplexity")];
            assert!(ppl.is_empty() || ppl == "NaN", "{ppl}");
            continue;
        }
        let ppl: f64 = f[col("kernel_perplexity")].parse().unwrap();
        assert!(
            ppl > 0.99 && ppl <= 3.0 + 1e-9,
            "perplexity {ppl} over 3 seen domains"
        );
        assert!(!f[col("unseen_auc_median_kernel")].is_empty());
    }
    let summary = std::fs::read_to_string(dir.join("ablation.csv")).unwrap();
    assert_eq!(summary.lines().count(), 1 + 2 * 3);
    for f in [
        "domains.csv",
        "domain_auc_ml100k-occupation.svg",
        "learning_curves_ml100k-occupation.svg",
        "unseen_auc_ml100k-occupation.svg",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let first = std::fs::read_to_string(dir.join("runs.csv")).unwrap();
    llmctr::stages::ablate::ablate(&cfg, &path).unwrap();
    let md = std::fs::read_to_string(&out).unwrap();
    assert!(md.contains(": 0 runs computed"), "{md}");
    assert_eq!(
        std::fs::read_to_string(dir.join("runs.csv")).unwrap(),
        first
    );
}

/// `pipeline run` hashes what each stage read: an unchanged re-run reuses every
/// stage; an edit to the prompt template, the raw ratings, the model's bytes or
/// the pooled domain embeddings recomputes exactly the stages that read it
/// (directly or through an upstream result), keeping each stale run aside.
#[test]
fn run_recomputes_exactly_the_stages_whose_inputs_changed() {
    use Origin::{Computed as C, Reused as R};
    use llmctr::stages::run::{Origin, run};
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = setup(tmp.path());
    cfg.embed.epochs = 1;
    cfg.pool.epochs = 1;
    cfg.train.epochs = 1;
    cfg.model.cgc.specific_experts = 1;
    let first = run(&cfg).unwrap();
    assert_eq!(first.origins, [C, C, C]);
    assert_eq!(run(&cfg).unwrap().origins, [R, R, R], "nothing changed");
    let embed_dir = PathBuf::from(&first.embed.run_dir);
    let stale = |dir: &Path, n: usize| {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        dir.with_file_name(format!("{name}.stale-{n}")).is_dir()
    };

    // The template's text (same path, same config).
    let t = std::fs::read_to_string(&cfg.embed.template).unwrap();
    std::fs::write(&cfg.embed.template, format!("{t} Edited.")).unwrap();
    assert_eq!(run(&cfg).unwrap().origins, [C, C, C], "template edited");
    assert!(stale(&embed_dir, 1));
    let prompts = std::fs::read_to_string(embed_dir.join("prompts.json")).unwrap();
    assert!(prompts.contains("Edited."), "{prompts}");

    // The model's weights, rewritten with other values under the same path.
    common::write_tiny_llama(&tmp.path().join("tiny"), 4, false);
    assert_eq!(run(&cfg).unwrap().origins, [C, C, C], "model replaced");
    assert!(stale(&embed_dir, 2));

    // The pooled domain embeddings, edited by hand: only train-cgc reads them.
    let pooled = PathBuf::from(&first.pool.run_dir).join("domain_embeddings.safetensors");
    let mut t = candle_core::safetensors::load(&pooled, &candle_core::Device::Cpu).unwrap();
    let m = t.remove("domain_embeddings").unwrap();
    t.insert("domain_embeddings".into(), (m * 2.0).unwrap());
    candle_core::safetensors::save(&t, &pooled).unwrap();
    assert_eq!(
        run(&cfg).unwrap().origins,
        [R, R, C],
        "pooled matrix edited"
    );
    assert!(stale(&first.cgc_dir, 3));

    // One rating in the raw data: prepare recomputes, and so does every stage.
    let raw = cfg.data.raw_dir.join("ml-100k/u.data");
    let text = std::fs::read_to_string(&raw).unwrap();
    let (line, rest) = text.split_once('\n').unwrap();
    let f: Vec<&str> = line.split('\t').collect();
    let rating = if f[2] == "5" { "1" } else { "5" };
    std::fs::write(
        &raw,
        format!("{}\t{}\t{rating}\t{}\n{rest}", f[0], f[1], f[3]),
    )
    .unwrap();
    assert_eq!(run(&cfg).unwrap().origins, [C, C, C], "a rating changed");
    assert!(stale(&embed_dir, 3));
    assert_eq!(run(&cfg).unwrap().origins, [R, R, R], "and now nothing did");
}

/// A run interrupted and then resumed after one of its inputs changed is refused,
/// naming the input, at every stage that resumes.
#[test]
fn resuming_after_an_input_changed_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = setup(tmp.path());
    cfg.embed.epochs = 3;
    cfg.embed.patience = 3;
    assert!(embed(&cfg, false, Some(1)).unwrap().is_none());
    std::fs::write(&cfg.embed.template, "Users who are {domain}.").unwrap();
    let e = format!("{:#}", embed(&cfg, true, None).unwrap_err());
    assert!(
        e.contains("prompt template") && e.contains("name.txt"),
        "{e}"
    );

    cfg.train.epochs = 3;
    cfg.train.patience = 3;
    let train = llmctr::stages::train::train;
    assert!(train(&cfg, false, Some(1)).unwrap().is_none());
    let raw = cfg.data.raw_dir.join("ml-100k/u.data");
    let text = std::fs::read_to_string(&raw).unwrap();
    std::fs::write(
        &raw,
        text.lines().skip(1).collect::<Vec<_>>().join("\n") + "\n",
    )
    .unwrap();
    let e = format!("{:#}", train(&cfg, true, None).unwrap_err());
    assert!(
        e.contains("prepared data") && e.contains("cannot be resumed"),
        "{e}"
    );
}

/// `pipeline compare` with held-out domains names its runs as `train` does, so a
/// second call reuses them instead of failing on a run it mistook for another.
#[test]
fn compare_with_held_out_domains_reuses_its_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = setup(tmp.path());
    cfg.data.holdout_domains = vec!["homemaker".into()];
    cfg.train.epochs = 1;
    let file = tmp.path().join("c.toml");
    std::fs::write(&file, cfg.to_toml()).unwrap();
    let compare = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .args([
                "compare",
                "--models",
                "dnn",
                "--recipes",
                "ml100k-occupation",
            ])
            .args(["--seeds", "1", "--config"])
            .arg(&file)
            .arg("--out")
            .arg(tmp.path().join("table"))
            .output()
            .unwrap()
    };
    for _ in 0..2 {
        let o = compare();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let run = cfg
        .train
        .runs_dir
        .join("dnn-ml100k-occupation-holdout-homemaker-seed1");
    assert!(run.join("metrics.json").is_file());
    // Reused, not recomputed: nothing was set aside.
    let names: Vec<String> = std::fs::read_dir(&cfg.train.runs_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".stale-")), "{names:?}");
}

/// A grid over `[pool]` (and keys set together) on a config with `[embed]`:
/// every point embeds and pools as `pipeline run` does, points with the same
/// `[embed]` settings share one embed run, each point trains on its own pooled
/// matrix, and the table gives the pooled embeddings' kernel perplexity.
#[test]
fn grid_points_embed_and_pool_their_own_domain_embeddings() {
    use llmctr::stages::grid::{GridPlan, grid, parse_axis};
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = setup(tmp.path());
    cfg.pool.mode = PoolMode::Parameterless;
    cfg.model.cgc.specific_experts = 1;
    let base = tmp.path().join("base.toml");
    std::fs::write(&base, cfg.to_toml()).unwrap();
    let plan = GridPlan {
        axes: vec![
            parse_axis(
                "pool.query,pool.normalize=[\"mean\", \"none\"]|[\"last\", \"standardize\"]",
            )
            .unwrap(),
        ],
        seeds: vec![1],
        out: tmp.path().join("grid"),
    };
    let md_path = grid(Some(&base), None, &plan).unwrap();
    let md = std::fs::read_to_string(&md_path).unwrap();
    assert!(md.contains("kernel perplexity |"), "{md}");
    assert!(
        md.contains("pool.query=\"last\" pool.normalize=\"standardize\""),
        "{md}"
    );
    let runs = tmp.path().join("runs");
    let names: Vec<String> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.iter().filter(|n| n.starts_with("embed-")).count(),
        1,
        "one embed run shared by both points: {names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| n.starts_with("pool-")).count(),
        2,
        "{names:?}"
    );
    let heads: Vec<&String> = names.iter().filter(|n| n.starts_with("grid-")).collect();
    assert_eq!(heads.len(), 2, "{names:?}");
    let read = |n: &str| {
        Config::parse_saved(&std::fs::read_to_string(runs.join(n).join("config.toml")).unwrap())
            .unwrap()
    };
    let (a, b) = (read(heads[0]), read(heads[1]));
    assert_ne!(a.model.domain_embeddings, b.model.domain_embeddings);
    for c in [&a, &b] {
        let e = c.model.domain_embeddings.as_ref().unwrap();
        assert!(e.starts_with(&runs) && e.is_file(), "{}", e.display());
    }
    // Reused on a second call: no new run directory.
    grid(Some(&base), None, &plan).unwrap();
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), names.len());
}

/// `[[ablate.seen]]`: the config's LLM arm against the random control, the id,
/// no domain input and the DNN with the field kept, every domain trained; the
/// study's table (per seed, over domains, per domain) and `seen.md`; a second
/// call trains nothing.
#[test]
fn ablate_seen_study_compares_the_llm_arm_with_its_controls() {
    use llmctr::config::ablate::SeenStudy;
    use llmctr::models::config::DomainFields;
    let tmp = tempfile::tempdir().unwrap();
    let mut study = setup(tmp.path());
    study.pool.mode = PoolMode::Parameterless;
    study.model.name = ModelName::Pepnet;
    study.model.domain_fields = DomainFields::Drop;
    let study_path = tmp.path().join("study.toml");
    std::fs::write(&study_path, study.to_toml()).unwrap();
    let mut cfg = setup(tmp.path());
    let a = &mut cfg.ablate;
    a.recipes = Vec::new();
    a.seeds = vec![1, 2];
    a.out_dir = tmp.path().join("results");
    a.seen = vec![SeenStudy {
        config: study_path,
        name: Some("seen-occupation".into()),
    }];
    let out = llmctr::stages::ablate::ablate(&cfg, &tmp.path().join("ablate.toml")).unwrap();
    assert_eq!(out, tmp.path().join("results/seen.md"));
    let md = std::fs::read_to_string(&out).unwrap();
    for arm in [
        "pepnet on the LLM embeddings (none / name / parameterless)",
        "random vector per domain",
        "domain id",
        "no domain input",
        "dnn, domain field kept",
    ] {
        assert!(md.contains(&format!("| {arm} |")), "{arm}: {md}");
    }
    // 4 domains with test rows: a paired cell has a sign count and a p-value.
    assert!(md.contains(", p "), "{md}");
    let own = std::fs::read_to_string(tmp.path().join("results/seen-occupation.md")).unwrap();
    assert!(
        own.starts_with("# Seen domains: ml100k-occupation, pepnet"),
        "{own}"
    );
    for d in ["student", "homemaker", "writer", "doctor"] {
        assert!(own.contains(&format!("| {d} |")), "{d}: {own}");
    }
    let runs = tmp.path().join("runs");
    let count = || std::fs::read_dir(&runs).unwrap().count();
    let before = count();
    // 5 arms × 2 seeds, one embed and one pool run, the random matrix.
    assert_eq!(
        before,
        5 * 2 + 3,
        "{:?}",
        std::fs::read_dir(&runs)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
    llmctr::stages::ablate::ablate(&cfg, &tmp.path().join("ablate.toml")).unwrap();
    assert_eq!(count(), before, "nothing trained again");
}

/// `embed.background`: the background names are embedded with the template and
/// `pool.normalize_on = "background"` estimates the normalisation on their
/// tokens; label-based placeholders, repeated names and a missing background
/// file are errors that say where.
#[test]
fn pool_normalises_on_background_prompts() {
    use llmctr::config::pool::NormalizeOn;
    use llmctr::geometry::Normalize;
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = setup(tmp.path());
    let bg = tmp.path().join("background.txt");
    std::fs::write(
        &bg,
        "# jobs\nnurse\npilot  # a comment\n\nbaker\nfarmer\nchef\n",
    )
    .unwrap();
    cfg.embed.background = Some(bg.clone());
    let r = embed(&cfg, false, None).unwrap().unwrap();
    assert_eq!(r.background, Some(5));
    assert!(r.run_dir.contains("-bg-background-"), "{}", r.run_dir);
    let t = candle_core::safetensors::load(
        Path::new(&r.run_dir).join("background_states.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(t["states"].dim(0).unwrap(), 5);
    assert_eq!(t["mask"].dim(0).unwrap(), 5);

    cfg.pool.mode = PoolMode::Parameterless;
    cfg.pool.normalize = Normalize::Standardize;
    let on_domains = pool(&cfg).unwrap();
    cfg.pool.normalize_on = NormalizeOn::Background;
    let on_bg = pool(&cfg).unwrap();
    assert!(
        on_bg.run_dir.contains("-standardize-bg-"),
        "{}",
        on_bg.run_dir
    );
    let read = |d: &str| {
        candle_core::safetensors::load(
            Path::new(d).join("domain_embeddings.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap()["domain_embeddings"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let (a, b) = (read(&on_domains.run_dir), read(&on_bg.run_dir));
    assert_eq!(a.len(), b.len());
    assert!(
        a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-4),
        "the estimate's source must matter"
    );
    assert!(b.iter().all(|x| x.is_finite()));

    // An embed run without background prompts cannot feed it.
    let mut plain = cfg.clone();
    plain.embed.background = None;
    embed(&plain, false, None).unwrap().unwrap();
    plain.pool.run_name = Some("pool-needs-bg".into());
    let err = format!("{:#}", pool(&plain).unwrap_err());
    assert!(
        err.contains("background_states.safetensors is missing"),
        "{err}"
    );
    // Background names have no train statistics.
    let stats = tmp.path().join("stats.txt");
    std::fs::write(&stats, "The users \"{domain}\": {rows} ratings.").unwrap();
    let mut c = cfg.clone();
    c.embed.template = stats;
    let err = format!("{:#}", embed(&c, false, None).unwrap_err());
    assert!(
        err.contains("{rows}") && err.contains("background"),
        "{err}"
    );
    // A name listed twice, by line.
    std::fs::write(&bg, "nurse\npilot\nnurse\n").unwrap();
    let mut c = cfg.clone();
    c.embed.run_name = Some("embed-dup".into());
    let err = format!("{:#}", embed(&c, false, None).unwrap_err());
    assert!(
        err.contains("background.txt:3") && err.contains("twice"),
        "{err}"
    );
}
