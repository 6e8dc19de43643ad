//! `[ablate]`: the grid of `pipeline ablate`.

use crate::config::embed::Method;
use crate::config::pool::PoolMode;
use crate::models::config::ModelName;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// An arm of a leave-one-domain-out study (`pipeline lodo`, `[[ablate.lodo]]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arm {
    None,
    Id,
    Embedding,
    Adapted,
    Random,
}

impl Arm {
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::None => "none",
            Arm::Id => "id",
            Arm::Embedding => "embedding",
            Arm::Adapted => "adapted",
            Arm::Random => "random",
        }
    }
}

/// One leave-one-domain-out study of `[[ablate.lodo]]`: `pipeline lodo -c
/// <config> --folds <folds> --seeds <ablate.seeds> --arms <arms>`, written to
/// `<out_dir>/<name>.{md,csv,svg}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LodoStudy {
    /// The study's own config: recipe, head (`model.name`), the frozen
    /// embedding of the `embedding` arm and the `random` control
    /// (`model.domain_embeddings`), and the `[embed]` / `[pool]` of `adapted`.
    pub config: PathBuf,
    /// Default [none, embedding, random].
    #[serde(default = "default_arms")]
    pub arms: Vec<Arm>,
    /// 0: every domain alone; k: k folds. Default 5.
    #[serde(default = "default_folds")]
    pub folds: usize,
    /// Output stem. Default: `lodo-` and the config's file stem.
    #[serde(default)]
    pub name: Option<String>,
}

fn default_arms() -> Vec<Arm> {
    vec![Arm::None, Arm::Embedding, Arm::Random]
}

fn default_folds() -> usize {
    5
}

/// `name`, or `<prefix>-` and the config's file stem.
fn study_stem(prefix: &str, name: &Option<String>, config: &std::path::Path) -> String {
    name.clone().unwrap_or_else(|| {
        format!(
            "{prefix}-{}",
            config
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
        )
    })
}

impl LodoStudy {
    pub fn stem(&self) -> String {
        study_stem("lodo", &self.name, &self.config)
    }
}

/// One seen-domain study of `[[ablate.seen]]`: the config's LLM arm (as
/// `pipeline run` makes it) against the random control, the domain id, no
/// domain input and the DNN with the domain field kept, every domain trained,
/// seeds `ablate.seeds`; written to `<out_dir>/<name>.md`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SeenStudy {
    pub config: PathBuf,
    /// Output stem. Default: `seen-` and the config's file stem.
    #[serde(default)]
    pub name: Option<String>,
}

impl SeenStudy {
    pub fn stem(&self) -> String {
        study_stem("seen", &self.name, &self.config)
    }
}

/// `[ablate]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AblateConfig {
    /// Default [ml100k-occupation, ml100k-age3].
    pub recipes: Vec<String>,
    /// Default [prompts/name.txt, prompts/stats.txt, prompts/stats_examples.txt].
    pub templates: Vec<PathBuf>,
    /// Default [none, lora, ptuning].
    pub methods: Vec<Method>,
    /// Default [parameterless, parametric].
    pub pooling: Vec<PoolMode>,
    /// Default [1, 2, 3].
    pub seeds: Vec<u64>,
    /// Models trained on the domain id. Default [cgc, ple, mmoe, star, shared_bottom, deepfm].
    pub baselines: Vec<ModelName>,
    /// Recipe of the unseen-domain runs. Default none (no such runs).
    pub holdout_recipe: Option<String>,
    /// Domains held out together in those runs.
    pub holdout_domains: Vec<String>,
    /// Template of the unseen-domain runs: it may use only {dataset}, {domain} and
    /// {category_name}. Default prompts/name.txt.
    pub holdout_template: PathBuf,
    /// Models trained on the domain id in the unseen-domain runs. Default [cgc].
    pub holdout_baselines: Vec<ModelName>,
    /// Tables and plots go here. Default results/ablation.
    pub out_dir: PathBuf,
    /// Leave-one-domain-out studies, run after the grid with `seeds`; their
    /// arms are summarised in `<out_dir>/lodo.md`. Default none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lodo: Vec<LodoStudy>,
    /// Seen-domain studies, run after the leave-one-domain-out ones; summarised
    /// in `<out_dir>/seen.md`. Default none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<SeenStudy>,
}

impl Default for AblateConfig {
    fn default() -> Self {
        AblateConfig {
            recipes: vec!["ml100k-occupation".into(), "ml100k-age3".into()],
            templates: ["name", "stats", "stats_examples"]
                .iter()
                .map(|t| PathBuf::from(format!("prompts/{t}.txt")))
                .collect(),
            methods: vec![Method::None, Method::Lora, Method::Ptuning],
            pooling: vec![PoolMode::Parameterless, PoolMode::Parametric],
            seeds: vec![1, 2, 3],
            baselines: vec![
                ModelName::Cgc,
                ModelName::Ple,
                ModelName::Mmoe,
                ModelName::Star,
                ModelName::SharedBottom,
                ModelName::Deepfm,
            ],
            holdout_recipe: None,
            holdout_domains: Vec::new(),
            holdout_template: "prompts/name.txt".into(),
            holdout_baselines: vec![ModelName::Cgc],
            out_dir: "results/ablation".into(),
            lodo: Vec::new(),
            seen: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_study_is_named_by_its_name_or_its_config() {
        let lodo = LodoStudy {
            config: "configs/experiments/lodo-m2m.toml".into(),
            arms: default_arms(),
            folds: 5,
            name: None,
        };
        assert_eq!(lodo.stem(), "lodo-lodo-m2m");
        let seen = SeenStudy {
            config: "configs/experiments/seen-age3.toml".into(),
            name: None,
        };
        assert_eq!(seen.stem(), "seen-seen-age3");
        let named = SeenStudy {
            name: Some("seen-occupation".into()),
            ..seen
        };
        assert_eq!(named.stem(), "seen-occupation");
    }
}
