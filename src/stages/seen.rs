//! A seen-domain study of `pipeline ablate` (`[[ablate.seen]]`): every domain
//! is trained, and the config's LLM arm (embed → pool → its head, as `pipeline
//! run` makes it) is compared on the test split with the same head on a random
//! vector per domain (the control of `pipeline lodo`), on the domain id, without
//! a domain input, and with the DNN that keeps the domain-defining field.
//! Differences are paired per seed and over domains (per-domain test AUC
//! averaged over seeds, two-sided sign-flip test).

use crate::config::Config;
use crate::fsutil::write_atomic;
use crate::stages::lodo::{Paired, paired_cell};
use crate::stages::run::{comparison_arms, comparison_md, llm_arm};
use crate::train::trainer::FinalMetrics;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// One arm of a seen-domain study.
pub struct SeenArm {
    pub label: String,
    pub runs: Vec<FinalMetrics>,
    /// The LLM arm minus this arm, over domains (None for the LLM arm itself).
    pub vs_llm: Option<Paired>,
}

pub struct SeenStudyResult {
    pub md: PathBuf,
    pub recipe: String,
    pub model: String,
    /// The LLM arm first.
    pub arms: Vec<SeenArm>,
    /// Recorded training time of the study's head runs (embed and pool not counted).
    pub train_seconds: f64,
}

/// Per-domain test AUC averaged over a run list's seeds (domains in the
/// recipe's order; None where a seed has no defined AUC).
fn domain_means(runs: &[FinalMetrics]) -> Vec<(String, Option<f64>)> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .test
        .domains
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let v: Option<Vec<f64>> = runs
                .iter()
                .map(|r| r.test.domains.get(i).and_then(|x| x.auc))
                .collect();
            let m = v.map(|v| v.iter().sum::<f64>() / v.len() as f64);
            (d.domain.clone(), m)
        })
        .collect()
}

/// `a` minus `b` over the domains where both are defined.
fn paired_over_domains(a: &[FinalMetrics], b: &[FinalMetrics]) -> Paired {
    let (da, db) = (domain_means(a), domain_means(b));
    let d: Vec<f64> = da
        .iter()
        .zip(&db)
        .filter_map(|((_, x), (_, y))| Some((*x)? - (*y)?))
        .collect();
    Paired::of(&d)
}

/// Run (or reuse) the study of `cfg` over `seeds`; writes `<out>.md`.
pub fn seen_study(cfg: &Config, seeds: &[u64], out: &Path) -> Result<SeenStudyResult> {
    let mut c = cfg.clone();
    c.run.seeds = seeds.to_vec();
    c.data.holdout_domains.clear();
    let llm = llm_arm(&c)?;
    let label = llm.label();
    let mut arms = vec![(label.clone(), llm.runs.clone())];

    arms.extend(comparison_arms(&llm.head, seeds)?);

    let result_arms: Vec<SeenArm> = arms
        .iter()
        .enumerate()
        .map(|(i, (name, runs))| SeenArm {
            label: name.clone(),
            runs: runs.clone(),
            vs_llm: (i > 0).then(|| paired_over_domains(&llm.runs, runs)),
        })
        .collect();
    let recipe = llm.runs[0].recipe.clone();
    let mut md = comparison_md(&arms).replacen(
        "# Does the LLM embedding help?",
        &format!("# Seen domains: {recipe}, {}", llm.head.model.label()),
        1,
    );
    md.push_str(&format!(
        "\nEmbed run `{}`, pool run `{}`.\n\n## Paired over domains\n\n\
         Per-domain test AUC averaged over the seeds; the embedding arm (first row) minus the arm \
         (+/− domains, two-sided sign-flip p: exact over all sign patterns up to 20 differences, else 20,000 seeded draws). With few domains the \
         smallest p a sign-flip test can give is 2/2^domains.\n\n\
         | arm | Δ domain AUC (+/−, p) |\n| --- | --- |\n",
        llm.embed.run_dir, llm.pool.run_dir
    ));
    for a in result_arms.iter().skip(1) {
        if let Some(p) = &a.vs_llm {
            md.push_str(&format!("| {} | {} |\n", a.label, paired_cell(p)));
        }
    }
    md.push_str("\n## Per domain (test AUC, mean over seeds)\n\n| domain |");
    for a in &result_arms {
        md.push_str(&format!(" {} |", a.label));
    }
    md.push_str(&format!(
        "\n| --- |{}\n",
        " --- |".repeat(result_arms.len())
    ));
    let per: Vec<Vec<(String, Option<f64>)>> =
        result_arms.iter().map(|a| domain_means(&a.runs)).collect();
    for (i, (domain, _)) in per[0].iter().enumerate() {
        md.push_str(&format!("| {domain} |"));
        for p in &per {
            let v = p.get(i).and_then(|x| x.1);
            md.push_str(&format!(
                " {} |",
                v.map_or("n/a".into(), |v| format!("{v:.4}"))
            ));
        }
        md.push('\n');
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let md_path = out.with_extension("md");
    write_atomic(&md_path, md.as_bytes())?;
    let train_seconds = result_arms
        .iter()
        .flat_map(|a| a.runs.iter().map(|m| m.train_seconds))
        .sum();
    Ok(SeenStudyResult {
        md: md_path,
        recipe,
        model: llm.head.model.label().to_string(),
        arms: result_arms,
        train_seconds,
    })
}
