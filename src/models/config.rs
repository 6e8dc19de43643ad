//! `[model]`: which architecture and its hyper-parameters. The settings every
//! model shares are here; each model's own `[model.<name>]` table is its
//! settings struct, in the model's file, with its defaults and validation.
//! `ModelName` and `ModelConfig` are declared from the registry in
//! `models/mod.rs` ([`super::for_each_model`]).

use super::embedding::UpdateMode;
use super::gates::GateConfig;
use super::{CtrModel, InputSpec, Model};
use crate::checks::Checks;
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use super::ple::Conditioning;

/// `ModelName` (one variant per model) and `ModelConfig` (the shared settings and
/// one `[model.<name>]` table per model), from the registry's lines.
macro_rules! declare_models {
    ($($variant:ident $field:ident $model:ty;)*) => {
        /// The CTR models, as `model.name` and `--model` spell them.
        #[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
        #[serde(rename_all = "snake_case")]
        pub enum ModelName {
            $($variant,)*
        }

        impl ModelName {
            pub const ALL: [ModelName; [$(stringify!($field)),*].len()] = [$(ModelName::$variant),*];

            /// The name in configs, run names and reports.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ModelName::$variant => stringify!($field),)*
                }
            }

            /// What the model is, with its reference (the head of its recipe file).
            pub fn about(self) -> &'static str {
                match self {
                    $(ModelName::$variant => <$model as Model>::ABOUT,)*
                }
            }

            /// Reads the first-order weights of the fields (DeepFM).
            pub fn needs_first_order(self) -> bool {
                match self {
                    $(ModelName::$variant => <$model as Model>::FIRST_ORDER,)*
                }
            }

            /// Reads the user's history of items (DIN).
            pub fn needs_history(self) -> bool {
                match self {
                    $(ModelName::$variant => <$model as Model>::HISTORY,)*
                }
            }

            /// Reads the history's categories and compact tables (the
            /// user-level family).
            pub fn needs_history_tables(self) -> bool {
                match self {
                    $(ModelName::$variant => <$model as Model>::HISTORY_TABLES,)*
                }
            }

            /// Mixes experts through `[model.gate]`.
            pub fn gated(self) -> bool {
                match self {
                    $(ModelName::$variant => <$model as Model>::GATED,)*
                }
            }
        }

        #[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields, default)]
        pub struct ModelConfig {
            pub name: ModelName,
            /// Embedding size of every field. Default 16.
            pub embedding_dim: usize,
            /// Standard deviation of the normal initialisation of embeddings. Default 1e-4.
            pub embedding_init_std: f64,
            /// Feature fields; empty = every categorical field of the dataset. Default empty.
            pub features: Vec<String>,
            /// Multi-hot fields read as one more feature each: the mean of the embeddings
            /// of a row's values (an embedding bag; zero for a row without values),
            /// updated row-sparsely like every table row (MovieLens: `genres`). A
            /// domain-defining one is left out under `domain_fields = "drop"`. Default
            /// empty.
            #[serde(skip_serializing_if = "Vec::is_empty")]
            pub bags: Vec<String>,
            /// `keep` or `drop` the domain-defining field(s) from the features. Default `keep`.
            pub domain_fields: DomainFields,
            /// `none`, `id` or `fixed`. Default `id`.
            pub domain_input: DomainInput,
            /// For `fixed`: a safetensors file holding a (domains × h) matrix.
            pub domain_embeddings: Option<PathBuf>,
            /// Name of that matrix in the file. Default `domain_embeddings`.
            pub domain_embeddings_tensor: String,
            /// Fields with more ids than this are hashed into this many rows; 0 = never. Default 0.
            pub hash_buckets: u32,
            /// `auto` (sparse above 200,000 rows), `dense` or `sparse`. Default `auto`.
            pub embedding_update: UpdateMode,
            /// Dropout after hidden layers. Default 0.
            pub dropout: f64,
            /// The gate of the models that mix experts (MMoE, CGC, PLE, M2M).
            pub gate: GateConfig,
            $(
                #[doc = concat!("`[model.", stringify!($field), "]`")]
                pub $field: <$model as Model>::Settings,
            )*
        }

        impl Default for ModelConfig {
            fn default() -> Self {
                ModelConfig {
                    name: ModelName::Cgc,
                    embedding_dim: 16,
                    embedding_init_std: 1e-4,
                    features: Vec::new(),
                    domain_fields: DomainFields::Keep,
                    domain_input: DomainInput::Id,
                    domain_embeddings: None,
                    domain_embeddings_tensor: "domain_embeddings".into(),
                    hash_buckets: 0,
                    bags: Vec::new(),
                    embedding_update: UpdateMode::Auto,
                    dropout: 0.0,
                    gate: GateConfig::default(),
                    $($field: Default::default(),)*
                }
            }
        }

        impl ModelConfig {
            /// Every model's settings table, validated whichever model is chosen.
            fn validate_models(&self, c: &mut Checks) {
                $(<$model as Model>::validate(&self.$field, concat!("model.", stringify!($field)), c);)*
            }

            /// How many history items the chosen model reads (0: none).
            pub fn history_len(&self) -> usize {
                match self.name {
                    $(ModelName::$variant => <$model as Model>::history(&self.$field),)*
                }
            }

            /// The chosen model's `[model.<name>]` table, as TOML.
            pub fn settings_toml(&self) -> Result<String, toml::ser::Error> {
                match self.name {
                    $(ModelName::$variant => toml::to_string(&self.$field),)*
                }
            }

            /// Every model's settings shrunk for a gradient check.
            #[cfg(test)]
            pub(crate) fn shrink(&mut self) {
                $(<$model as Model>::shrink(&mut self.$field);)*
            }
        }

        /// The model `cfg.name` names, its parameters registered in `ps`.
        pub fn build(
            cfg: &ModelConfig,
            spec: &InputSpec,
            ps: &mut ParamStore,
            rng: &mut Rng,
        ) -> candle_core::Result<Box<dyn CtrModel>> {
            match cfg.name {
                $(ModelName::$variant => Ok(Box::new(<$model>::new(cfg, spec, ps, rng)?)),)*
            }
        }
    };
}

super::for_each_model!(declare_models);

/// Whether the field(s) a recipe's domains are made from (occupation, age,
/// gender, Criteo's domain column) stay among the model's features.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DomainFields {
    /// Kept: every arm then has a free vector per domain already.
    Keep,
    /// Dropped: the domain reaches the model only through `domain_input`, so
    /// arms that compare domain inputs differ in that alone.
    Drop,
}

/// How the domain enters a model.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DomainInput {
    /// Not at all (towers are still per domain where the model has them).
    None,
    /// A trainable domain-id embedding ("one-hot").
    Id,
    /// A fixed D×h matrix (`domain_embeddings`) through a trainable projection.
    Fixed,
}

impl ModelConfig {
    /// The model's name in run names and reports: `cgc` and `ple` in their
    /// domain-conditioned form are `cgc_cond` and `ple_cond`.
    pub fn label(&self) -> &'static str {
        match self.name {
            ModelName::Cgc if self.conditioned(self.cgc.conditioning) => "cgc_cond",
            ModelName::Ple if self.conditioned(self.ple.conditioning) => "ple_cond",
            n => n.as_str(),
        }
    }

    /// Whether CGC/PLE with `conditioning` take their domain-conditioned form.
    pub fn conditioned(&self, conditioning: Conditioning) -> bool {
        match conditioning {
            Conditioning::Auto => self.domain_input == DomainInput::Fixed,
            Conditioning::None => false,
            Conditioning::Domain => true,
        }
    }

    /// Ranges of every `[model]` key (see `Config::validate`).
    pub(crate) fn validate(&self, c: &mut Checks) {
        c.at_least_one("model.embedding_dim", self.embedding_dim);
        c.non_negative("model.embedding_init_std", self.embedding_init_std);
        if let Some(p) = &self.domain_embeddings {
            c.file("model.domain_embeddings", p);
        }
        if self.domain_embeddings_tensor.is_empty() {
            c.bad(
                "model.domain_embeddings_tensor",
                "\"\"",
                "must name a tensor",
            );
        }
        c.fraction("model.dropout", self.dropout);
        let g = &self.gate;
        c.at_least_one("model.gate.k", g.k);
        c.non_negative("model.gate.balance_weight", g.balance_weight);
        c.positive("model.gate.gamma", g.gamma);
        self.validate_models(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_ple_table_keeps_two_levels() {
        // Each model's table fills its missing keys from its own defaults: PLE's
        // `levels` stays 2 when only another key is given (CGC's stays 1).
        let m: ModelConfig = toml::from_str("[ple]\ntower = [4]\n[cgc]\ntower = [4]\n").unwrap();
        assert_eq!((m.ple.levels, m.ple.tower.clone()), (2, vec![4]));
        assert_eq!(m.cgc.levels, 1);
    }

    #[test]
    fn names_in_configs_are_the_registry_names() {
        for m in ModelName::ALL {
            let v = toml::Value::try_from(m).unwrap();
            assert_eq!(v.as_str(), Some(m.as_str()));
            assert!(!m.about().is_empty(), "{m:?}");
        }
    }
}
