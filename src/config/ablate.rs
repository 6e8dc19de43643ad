//! `[ablate]`: the grid of `pipeline ablate`.

use crate::config::embed::Method;
use crate::config::pool::PoolMode;
use crate::models::config::ModelName;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
        }
    }
}
