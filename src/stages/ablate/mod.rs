//! `pipeline ablate CONFIG`: the grid prompt template × method × pooling × seed
//! of CGC on LLM domain embeddings, the baselines on the same split, and runs
//! with held-out (unseen) domains; one results table (CSV + Markdown, mean ± std
//! over seeds) and SVG plots. Every run is an ordinary run directory, reused when
//! it finished with the same settings.
//!
//! Seeds vary the pooling's and the CTR model's initialisation and shuffling; the
//! adapters of each (recipe, template, method) are trained once, with
//! `embed.seed` (an LLM run costs minutes on a laptop CPU, a CTR run seconds).

pub use crate::config::ablate::AblateConfig;

mod tables;

use tables::{plots, write_tables};

use crate::config::Config;
use crate::config::train::UnseenKernel;
use crate::fsutil::write_atomic;
use crate::models::config::DomainInput;
use crate::stages::embed::Method;
use crate::stages::pool::PoolMode;
use crate::stages::run::{Origin, ensure_embed, ensure_pool, ensure_train, llm_head, llm_run_name};
use crate::stats::mean_sd_defined;
use crate::train::trainer::FinalMetrics;
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One configuration of the grid and its runs (one per seed).
struct Row {
    recipe: String,
    holdout: bool,
    model: String,
    /// `id` or `<template>/<method>/<pooling>`.
    input: String,
    method: Option<Method>,
    runs: Vec<(FinalMetrics, PathBuf)>,
    /// Held-out rows: per run, (unseen AUC, kernel perplexity) with the pooling
    /// bandwidth and with the median heuristic.
    kernels: Vec<[(Option<f64>, f64); 2]>,
}

impl Row {
    fn label(&self) -> String {
        if self.method.is_some() {
            format!("cgc + LLM {}", self.input)
        } else {
            format!("{} + domain id", self.model)
        }
    }
    /// Train (or reuse) the run `c` names and add it; held-out runs are scored
    /// again with both kernels.
    fn train(&mut self, c: &Config, counts: &mut Counts, start: &Instant) -> Result<()> {
        let (m, dir, o) = ensure_train(c)?;
        counts.add(o);
        counts.time(&dir.display().to_string(), m.train_seconds);
        progress(start, counts, &m, &dir);
        if self.holdout {
            self.kernels.push(rescore(c, m.unseen_auc)?);
        }
        self.runs.push((m, dir));
        Ok(())
    }

    fn mean_valid(&self) -> f64 {
        let v: Vec<Option<f64>> = self.runs.iter().map(|(m, _)| m.valid_auc).collect();
        mean_sd_defined(&v).map_or(f64::NEG_INFINITY, |(m, _)| m)
    }
}

/// One embed run of the grid.
struct EmbedRow {
    recipe: String,
    holdout: bool,
    template: String,
    method: &'static str,
    probe_valid_auc: Option<f64>,
    llm_steps: usize,
    seconds: f64,
}

#[derive(Default)]
struct Counts {
    computed: usize,
    reused: usize,
    /// Recorded wall (embed, pool) and training seconds of every distinct run.
    seconds: f64,
    seen: std::collections::HashSet<String>,
}

impl Counts {
    fn time(&mut self, dir: &str, seconds: f64) {
        if self.seen.insert(dir.to_string()) {
            self.seconds += seconds;
        }
    }

    fn add(&mut self, o: Origin) {
        match o {
            Origin::Computed => self.computed += 1,
            Origin::Reused => self.reused += 1,
        }
    }
}

pub fn ablate(base: &Config, config_path: &Path) -> Result<PathBuf> {
    let a = &base.ablate;
    if a.seeds.is_empty() || (a.recipes.is_empty() && a.lodo.is_empty() && a.seen.is_empty()) {
        bail!(
            "ablate.seeds must not be empty, and ablate.recipes, ablate.lodo or ablate.seen \
             must name something"
        );
    }
    if let Some(r) = &a.holdout_recipe
        && !a.recipes.contains(r)
    {
        bail!("ablate.holdout_recipe {r:?} is not among ablate.recipes");
    }
    let start = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let mut embeds: Vec<EmbedRow> = Vec::new();
    let mut counts = Counts::default();
    for recipe in &a.recipes {
        let mut cfg = base.clone();
        cfg.data.recipe = recipe.clone();
        cfg.data.holdout_domains.clear();
        crate::stages::prepare::prepare(&cfg, false)?;
        let mut settings = vec![(false, a.templates.clone(), a.baselines.clone())];
        if a.holdout_recipe.as_ref() == Some(recipe) {
            settings.push((
                true,
                vec![a.holdout_template.clone()],
                a.holdout_baselines.clone(),
            ));
        }
        for (holdout, templates, baselines) in settings {
            if holdout {
                cfg.data.holdout_domains = a.holdout_domains.clone();
            }
            for &model in &baselines {
                let mut row = Row {
                    recipe: recipe.clone(),
                    holdout,
                    model: model.as_str().into(),
                    input: "id".into(),
                    method: None,
                    runs: Vec::new(),
                    kernels: Vec::new(),
                };
                for &seed in &a.seeds {
                    let mut c = cfg.clone();
                    c.model.name = model;
                    c.model.domain_input = DomainInput::Id;
                    c.model.domain_embeddings = None;
                    c.train.seed = seed;
                    c.train.run_name = None;
                    row.train(&c, &mut counts, &start)?;
                }
                rows.push(row);
            }
            for template in &templates {
                for &method in &a.methods {
                    let mut ec = cfg.clone();
                    ec.embed.template = template.clone();
                    ec.embed.method = method;
                    let (er, o) = ensure_embed(&ec)?;
                    counts.add(o);
                    counts.time(&er.run_dir, er.wall_seconds);
                    embeds.push(EmbedRow {
                        recipe: recipe.clone(),
                        holdout,
                        template: ec.embed.template_stem(),
                        method: method.as_str(),
                        probe_valid_auc: er.probe_valid_auc,
                        llm_steps: er.llm_steps,
                        seconds: er.wall_seconds,
                    });
                    for &mode in &a.pooling {
                        let mut row = Row {
                            recipe: recipe.clone(),
                            holdout,
                            model: "cgc".into(),
                            input: format!(
                                "{}/{}/{}",
                                ec.embed.template_stem(),
                                method.as_str(),
                                mode.as_str()
                            ),
                            method: Some(method),
                            runs: Vec::new(),
                            kernels: Vec::new(),
                        };
                        for &seed in &a.seeds {
                            let mut pc = ec.clone();
                            pc.pool.mode = mode;
                            // Parameterless pooling has nothing random: one run for all seeds.
                            pc.pool.seed = match mode {
                                PoolMode::Parametric => seed,
                                PoolMode::Parameterless | PoolMode::Plain => 1,
                            };
                            pc.pool.from = Some(PathBuf::from(&er.run_dir));
                            pc.pool.run_name = None;
                            let (pr, o) = ensure_pool(&pc)?;
                            counts.add(o);
                            counts.time(&pr.run_dir, pr.wall_seconds);
                            let mut c = llm_head(&pc, Path::new(&pr.run_dir), String::new());
                            c.train.seed = seed;
                            c.train.run_name = Some(llm_run_name(&c));
                            row.train(&c, &mut counts, &start)?;
                        }
                        rows.push(row);
                    }
                }
            }
        }
    }
    let out = &a.out_dir;
    std::fs::create_dir_all(out)?;
    if !a.recipes.is_empty() {
        let seconds = start.elapsed().as_secs_f64();
        write_tables(base, config_path, &rows, &embeds, &counts, seconds)?;
        for recipe in &a.recipes {
            plots(out, recipe, &rows)?;
        }
    }
    let mut studies = Vec::with_capacity(a.lodo.len());
    for study in &a.lodo {
        let c = Config::load(Some(&study.config))?;
        let plan = crate::stages::lodo::LodoPlan {
            folds: study.folds,
            seeds: a.seeds.clone(),
            arms: study.arms.clone(),
            out: out.join(study.stem()),
        };
        tracing::info!(
            "[ablate {:.0} s] leave-one-domain-out study {}",
            start.elapsed().as_secs_f64(),
            study.config.display()
        );
        studies.push((study, crate::stages::lodo::lodo_study(&c, &plan)?));
    }
    let mut written = None;
    if !studies.is_empty() {
        let md = lodo_summary(config_path, &studies, a, start.elapsed().as_secs_f64());
        let path = out.join("lodo.md");
        write_atomic(&path, md.as_bytes())?;
        written = Some(path);
    }
    let mut seen = Vec::with_capacity(a.seen.len());
    for study in &a.seen {
        let c = Config::load(Some(&study.config))?;
        tracing::info!(
            "[ablate {:.0} s] seen-domain study {}",
            start.elapsed().as_secs_f64(),
            study.config.display()
        );
        let r = crate::stages::seen::seen_study(&c, &a.seeds, &out.join(study.stem()))?;
        seen.push((study, r));
    }
    if !seen.is_empty() {
        let md = seen_summary(config_path, &seen, a, start.elapsed().as_secs_f64());
        let path = out.join("seen.md");
        write_atomic(&path, md.as_bytes())?;
        written.get_or_insert(path);
    }
    Ok(if a.recipes.is_empty() {
        written.unwrap_or_else(|| out.join("lodo.md"))
    } else {
        out.join("ablation.md")
    })
}

/// `seen.md`: every seen-domain study's arms in one table.
fn seen_summary(
    config_path: &Path,
    studies: &[(
        &crate::config::ablate::SeenStudy,
        crate::stages::seen::SeenStudyResult,
    )],
    a: &AblateConfig,
    seconds: f64,
) -> String {
    let trained: f64 = studies.iter().map(|(_, r)| r.train_seconds).sum();
    let mut md = format!(
        "# Seen-domain studies\n\nGenerated by `pipeline ablate {}` in {seconds:.0} s \
         (finished runs reused). Seeds {:?}; every domain trained; test split. Per arm: \
         test AUC and logloss, mean ± sample sd over seeds, and the embedding arm (first row) minus the arm \
         over domains (per-domain AUC averaged over seeds; +/− domains, two-sided sign-flip \
         p). The head runs hold {trained:.0} s of recorded training (embed and pool not \
         counted). Each study's own table (per seed, per domain) is linked.\n\n\
         | study | recipe | arm | test AUC | logloss | embedding − arm, domain AUC |\n\
         | --- | --- | --- | --- | --- | --- |\n",
        config_path.display(),
        a.seeds
    );
    let pm = |v: Vec<Option<f64>>| {
        mean_sd_defined(&v).map_or("n/a".into(), |(m, sd)| format!("{m:.4} ± {sd:.4}"))
    };
    for (study, r) in studies {
        let stem = study.stem();
        for arm in &r.arms {
            md.push_str(&format!(
                "| [{stem}]({stem}.md) | {} | {} | {} | {} | {} |\n",
                r.recipe,
                arm.label,
                pm(arm.runs.iter().map(|m| m.test.auc).collect()),
                pm(arm.runs.iter().map(|m| Some(m.test.logloss)).collect()),
                arm.vs_llm
                    .as_ref()
                    .map_or("—".into(), crate::stages::lodo::paired_cell),
            ));
        }
    }
    md
}

/// `lodo.md`: every study's arms in one table, with the paired differences
/// against no domain input and against the random control.
fn lodo_summary(
    config_path: &Path,
    studies: &[(
        &crate::config::ablate::LodoStudy,
        crate::stages::lodo::LodoStudyResult,
    )],
    a: &AblateConfig,
    seconds: f64,
) -> String {
    use crate::stages::lodo::paired_cell;
    let mut md = format!(
        "# Leave-one-domain-out studies\n\nGenerated by `pipeline ablate {}` in {seconds:.0} s \
         (finished runs reused). Seeds {:?}. Per study: test AUC and logloss of each held-out \
         domain, averaged over seeds, then over domains; paired differences over the held-out \
         domains (+/− domains, two-sided sign-flip p: exact over all sign patterns up to 20 differences, else 20,000 seeded draws). Each study's own table \
         (per domain, per fold) is linked.\n\n\
         | study | recipe | head | arm | mean AUC | mean logloss | ΔAUC vs none | Δlogloss vs none | ΔAUC vs random | Δlogloss vs random |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        config_path.display(),
        a.seeds
    );
    let distinct: std::collections::BTreeMap<&Path, f64> = studies
        .iter()
        .flat_map(|(_, r)| r.run_seconds.iter().map(|(d, t)| (d.as_path(), *t)))
        .collect();
    let runs = distinct.len();
    let trained: f64 = distinct.values().sum();
    md = md.replacen(
        "\n\n| study |",
        &format!(
            " The studies hold {runs} distinct training runs (studies share their `none` \
             and `random` runs), with {trained:.0} s of recorded training time in all (1 thread each; embed and pool \
             runs of the adapted arms not counted).\n\n| study |"
        ),
        1,
    );
    let f = |x: Option<f64>| x.map_or("n/a".into(), |v| format!("{v:.4}"));
    let pair = |p: &Option<[crate::stages::lodo::Paired; 2]>, i: usize| {
        p.as_ref().map_or("—".into(), |x| paired_cell(&x[i]))
    };
    for (study, r) in studies {
        let stem = study.stem();
        for arm in &r.arms {
            md.push_str(&format!(
                "| [{stem}]({stem}.md) | {} | {} | `{}` | {} | {} | {} | {} | {} | {} |\n",
                r.recipe,
                r.model,
                arm.label,
                f(arm.mean_auc),
                f(arm.mean_logloss),
                pair(&arm.vs_none, 0),
                pair(&arm.vs_none, 1),
                pair(&arm.vs_random, 0),
                pair(&arm.vs_random, 1),
            ));
        }
    }
    md
}

/// Score a finished held-out run's best weights again with both kernel
/// bandwidths (training does not depend on it): (unseen AUC, mean perplexity of
/// the kernel weights) for `pooling` and `median`.
/// The rescored `pooling` AUC must equal the run's own (`recorded`).
fn rescore(c: &Config, recorded: Option<f64>) -> Result<[(Option<f64>, f64); 2]> {
    let dir = c.data.prepared_dir.join(&c.data.recipe);
    let mut t = crate::train::trainer::Trainer::new(c, &dir)?;
    t.load_best()?;
    let mut out = [(None, 0.0); 2];
    for (o, k) in out
        .iter_mut()
        .zip([UnseenKernel::Pooling, UnseenKernel::Median])
    {
        t.cfg.train.unseen_kernel = k;
        *o = t.unseen_auc()?;
    }
    let same = match (out[0].0, recorded) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-9,
        (a, b) => a == b,
    };
    if !same {
        bail!(
            "{}: scoring the best weights again gives unseen AUC {:?}, the run recorded {recorded:?}",
            t.run_dir.display(),
            out[0].0
        );
    }
    Ok(out)
}

fn progress(start: &Instant, c: &Counts, m: &FinalMetrics, dir: &Path) {
    tracing::info!(
        "[ablate {:.0} s, {} computed, {} reused] {}: test AUC {}",
        start.elapsed().as_secs_f64(),
        c.computed,
        c.reused,
        dir.display(),
        m.test.auc.map_or("n/a".into(), |a| format!("{a:.4}"))
    );
}

/// Runs `pipeline ablate CONFIG` and prints where its table is.
pub fn command(args: &crate::stages::run::RunArgs) -> Result<()> {
    let cfg = Config::load(Some(&args.config))?;
    let start = Instant::now();
    let out = ablate(&cfg, &args.config)?;
    println!(
        "ablation done in {:.0} s; table: {}",
        start.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}
