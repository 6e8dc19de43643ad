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

use crate::config::Config;
use crate::config::train::UnseenKernel;
use crate::fsutil::CsvText;
use crate::fsutil::write_atomic;
use crate::models::config::DomainInput;
use crate::report::{Arm, Curve, domain_auc_plot, learning_curves_plot, read_history};
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

fn cell(v: &[Option<f64>]) -> String {
    mean_sd_defined(v).map_or("n/a".into(), |(m, s)| format!("{m:.4} ± {s:.4}"))
}

/// Mean and sd as two CSV fields (both empty without a value).
fn csv_pair(v: &[Option<f64>]) -> [String; 2] {
    mean_sd_defined(v).map_or([String::new(), String::new()], |(m, s)| {
        [format!("{m:.6}"), format!("{s:.6}")]
    })
}

fn opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |x| format!("{x:.6}"))
}

/// The metric columns of a row: AUC, logloss, weighted domain AUC, tail, unseen.
fn metric_columns(r: &Row) -> [Vec<Option<f64>>; 5] {
    let f = |g: &dyn Fn(&FinalMetrics) -> Option<f64>| -> Vec<Option<f64>> {
        r.runs.iter().map(|(m, _)| g(m)).collect()
    };
    [
        f(&|m| m.test.auc),
        f(&|m| Some(m.test.logloss)),
        f(&|m| m.test.weighted_domain_auc),
        f(&|m| {
            if m.tail_domains.len() >= 7 {
                m.tail_auc
            } else {
                None
            }
        }),
        f(&|m| m.unseen_auc),
    ]
}

fn write_tables(
    base: &Config,
    config_path: &Path,
    rows: &[Row],
    embeds: &[EmbedRow],
    counts: &Counts,
    seconds: f64,
) -> Result<()> {
    let a = &base.ablate;
    let out = &a.out_dir;
    let mut md = format!(
        "# Ablation\n\nGenerated by `pipeline ablate {}`: {} runs computed and {} reused in {:.0} s (this invocation); the runs listed took {:.0} s in all (recorded wall time of each embed and pool run, training time of each CTR run). Seeds {:?}; test metrics at the best valid epoch, mean ± sample std over seeds. Tail = mean AUC of the 7 domains with the fewest rows (recipes with fewer domains: n/a). Unseen = AUC over the test rows of the held-out domains, scored by the kernel-weighted mixture of the seen domains' experts, gates and towers (uniform weights for the domain id); the kernel's bandwidth is w = 1/√h (`train.unseen_kernel = \"pooling\"`); the held-out tables also score the same trained models with the median heuristic (w = 1/√median squared distance between seen domains' embeddings), and give each kernel's perplexity (the effective number of seen domains it mixes).\n\n",
        config_path.display(),
        counts.computed,
        counts.reused,
        seconds,
        counts.seconds,
        a.seeds
    );
    let mut csv = CsvText::new([
        "recipe",
        "holdout",
        "model",
        "domain_input",
        "seeds",
        "auc_mean",
        "auc_std",
        "logloss_mean",
        "logloss_std",
        "wauc_mean",
        "wauc_std",
        "tail_mean",
        "tail_std",
        "unseen_mean",
        "unseen_std",
        "valid_auc_mean",
        "unseen_median_mean",
        "unseen_median_std",
    ])?;
    let mut runs_csv = CsvText::new([
        "recipe",
        "holdout",
        "model",
        "domain_input",
        "seed",
        "test_auc",
        "test_logloss",
        "weighted_domain_auc",
        "tail_auc",
        "unseen_auc",
        "valid_auc",
        "best_epoch",
        "train_seconds",
        "run_dir",
        "unseen_auc_median_kernel",
        "kernel_perplexity",
        "kernel_perplexity_median",
    ])?;
    let mut dom_csv = CsvText::new([
        "recipe",
        "holdout",
        "model",
        "domain_input",
        "seed",
        "domain",
        "rows",
        "auc",
    ])?;
    let mut last: Option<(String, bool)> = None;
    for r in rows {
        let key = (r.recipe.clone(), r.holdout);
        if last.as_ref() != Some(&key) {
            md.push_str(&format!(
                "\n## {}{}\n\n| model | domain input (template/method/pooling) | test AUC | logloss | weighted domain AUC | tail AUC (7 smallest) | unseen AUC | valid AUC |{}\n| --- | --- | --- | --- | --- | --- | --- | --- |{}\n",
                r.recipe,
                if r.holdout {
                    format!(", held out: {}", a.holdout_domains.join(", "))
                } else {
                    String::new()
                },
                if r.holdout {
                    " kernel perplexity | unseen AUC, median kernel | its perplexity |"
                } else {
                    ""
                },
                if r.holdout { " --- | --- | --- |" } else { "" }
            ));
            last = Some(key);
        }
        let cols = metric_columns(r);
        let valid: Vec<Option<f64>> = r.runs.iter().map(|(m, _)| m.valid_auc).collect();
        let k = |i: usize, auc: bool| -> Vec<Option<f64>> {
            r.kernels
                .iter()
                .map(|x| if auc { x[i].0 } else { Some(x[i].1) })
                .collect()
        };
        let extra = if r.holdout {
            format!(
                " {} | {} | {} |",
                cell(&k(0, false)),
                cell(&k(1, true)),
                cell(&k(1, false))
            )
        } else {
            String::new()
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |{extra}\n",
            r.model,
            r.input,
            cell(&cols[0]),
            cell(&cols[1]),
            cell(&cols[2]),
            cell(&cols[3]),
            cell(&cols[4]),
            cell(&valid)
        ));
        let mut row = vec![
            r.recipe.clone(),
            r.holdout.to_string(),
            r.model.clone(),
            r.input.clone(),
            r.runs.len().to_string(),
        ];
        for c in &cols {
            row.extend(csv_pair(c));
        }
        row.push(opt(mean_sd_defined(&valid).map(|x| x.0)));
        row.extend(if r.holdout {
            csv_pair(&k(1, true))
        } else {
            [String::new(), String::new()]
        });
        csv.row(&row)?;
        for (i, (m, dir)) in r.runs.iter().enumerate() {
            let kern =
                r.kernels
                    .get(i)
                    .map_or([String::new(), String::new(), String::new()], |x| {
                        [
                            opt(x[1].0),
                            format!("{:.3}", x[0].1),
                            format!("{:.3}", x[1].1),
                        ]
                    });
            let mut row = vec![
                r.recipe.clone(),
                r.holdout.to_string(),
                r.model.clone(),
                r.input.clone(),
                m.seed.to_string(),
                opt(m.test.auc),
                format!("{:.6}", m.test.logloss),
                opt(m.test.weighted_domain_auc),
                opt(if m.tail_domains.len() >= 7 {
                    m.tail_auc
                } else {
                    None
                }),
                opt(m.unseen_auc),
                opt(m.valid_auc),
                m.best_epoch.to_string(),
                format!("{:.1}", m.train_seconds),
                dir.display().to_string(),
            ];
            row.extend(kern);
            runs_csv.row(&row)?;
            for d in &m.test.domains {
                dom_csv.row([
                    r.recipe.clone(),
                    r.holdout.to_string(),
                    r.model.clone(),
                    r.input.clone(),
                    m.seed.to_string(),
                    d.domain.clone(),
                    d.rows.to_string(),
                    opt(d.auc),
                ])?;
            }
        }
    }
    md.push_str("\n## Embed runs (adapters trained with the probe; one per recipe × template × method)\n\n| recipe | held out | template | method | probe valid AUC | LLM steps | seconds |\n| --- | --- | --- | --- | --- | --- | --- |\n");
    for e in embeds {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.0} |\n",
            e.recipe,
            if e.holdout { "yes" } else { "no" },
            e.template,
            e.method,
            e.probe_valid_auc
                .map_or("n/a".into(), |v| format!("{v:.4}")),
            e.llm_steps,
            e.seconds
        ));
    }
    md.push_str("\n## Plots\n\nSeries: CGC with the domain id, and for each method the LLM configuration with the best mean valid AUC (chosen on valid, not test).\n\n");
    for recipe in &a.recipes {
        md.push_str(&format!(
            "![{recipe}: test AUC per domain](domain_auc_{recipe}.svg)\n\n![{recipe}: learning curves](learning_curves_{recipe}.svg)\n\n"
        ));
        if a.holdout_recipe.as_ref() == Some(recipe) {
            md.push_str(&format!(
                "![{recipe}: unseen domains](unseen_auc_{recipe}.svg)\n\n"
            ));
        }
    }
    write_atomic(&out.join("ablation.md"), md.as_bytes())?;
    csv.write(&out.join("ablation.csv"))?;
    runs_csv.write(&out.join("runs.csv"))?;
    dom_csv.write(&out.join("domains.csv"))?;
    Ok(())
}

/// The rows a plot shows: the domain-id CGC, and per method the LLM row with
/// the best mean valid AUC.
fn plotted<'a>(rows: &'a [Row], recipe: &str, holdout: bool) -> Vec<&'a Row> {
    let mine: Vec<&Row> = rows
        .iter()
        .filter(|r| r.recipe == recipe && r.holdout == holdout)
        .collect();
    let mut out: Vec<&Row> = mine
        .iter()
        .copied()
        .filter(|r| r.method.is_none() && r.model == "cgc")
        .collect();
    for m in [Method::None, Method::Lora, Method::Ptuning] {
        if let Some(best) = mine
            .iter()
            .copied()
            .filter(|r| r.method == Some(m))
            .max_by(|a, b| a.mean_valid().total_cmp(&b.mean_valid()))
        {
            out.push(best);
        }
    }
    out
}

fn plots(out: &Path, recipe: &str, rows: &[Row]) -> Result<()> {
    for holdout in [false, true] {
        let show = plotted(rows, recipe, holdout);
        let Some(first) = show.first().and_then(|r| r.runs.first()) else {
            continue;
        };
        let arms: Vec<Arm> = show
            .iter()
            .map(|r| Arm {
                name: r.label(),
                runs: r.runs.iter().map(|(m, _)| m).collect(),
            })
            .collect();
        if holdout {
            domain_auc_plot(
                &out.join(format!("unseen_auc_{recipe}.svg")),
                &format!("{recipe}: test AUC of the held-out domains"),
                &arms,
                Some(&first.0.unseen_domains),
            )?;
        } else {
            domain_auc_plot(
                &out.join(format!("domain_auc_{recipe}.svg")),
                &format!("{recipe}: test AUC per domain"),
                &arms,
                None,
            )?;
            let curves: Vec<Curve> = show
                .iter()
                .filter_map(|r| {
                    let (m, dir) = r.runs.first()?;
                    Some(Curve {
                        arm: r.label(),
                        seed: m.seed,
                        history: read_history(dir).ok()?,
                    })
                })
                .collect();
            learning_curves_plot(
                &out.join(format!("learning_curves_{recipe}.svg")),
                &format!("{recipe}: valid AUC by epoch"),
                &curves,
            )?;
        }
    }
    Ok(())
}
