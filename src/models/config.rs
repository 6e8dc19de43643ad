//! `[model]`: which architecture and its hyper-parameters. Defaults follow the
//! literature recipe: embedding dim 16; MMoE 3 experts [16], towers [8]; CGC 2
//! specific + 1 shared experts [16], towers [8]; shared-bottom [128] + towers [8];
//! STAR [128, 64, 32].

use super::embedding::UpdateMode;
use super::gates::GateConfig;
use crate::checks::Checks;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ModelName {
    Dnn,
    Deepfm,
    SharedBottom,
    Mmoe,
    Cgc,
    Ple,
    Star,
    Din,
    Pepnet,
    M2m,
}

impl ModelName {
    pub const ALL: [ModelName; 10] = [
        ModelName::Dnn,
        ModelName::Deepfm,
        ModelName::SharedBottom,
        ModelName::Mmoe,
        ModelName::Cgc,
        ModelName::Ple,
        ModelName::Star,
        ModelName::Din,
        ModelName::Pepnet,
        ModelName::M2m,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelName::Dnn => "dnn",
            ModelName::Deepfm => "deepfm",
            ModelName::SharedBottom => "shared_bottom",
            ModelName::Mmoe => "mmoe",
            ModelName::Cgc => "cgc",
            ModelName::Ple => "ple",
            ModelName::Star => "star",
            ModelName::Din => "din",
            ModelName::Pepnet => "pepnet",
            ModelName::M2m => "m2m",
        }
    }
}

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
    /// The gate of MMoE, CGC and PLE.
    pub gate: GateConfig,
    pub dnn: DnnConfig,
    pub deepfm: DnnConfig,
    pub shared_bottom: SharedBottomConfig,
    pub mmoe: MmoeConfig,
    pub cgc: PleConfig,
    pub ple: PleConfig,
    pub star: StarConfig,
    pub din: DinConfig,
    pub pepnet: PepnetConfig,
    pub m2m: M2mConfig,
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
            dnn: DnnConfig::default(),
            deepfm: DnnConfig::default(),
            shared_bottom: SharedBottomConfig::default(),
            mmoe: MmoeConfig::default(),
            cgc: PleConfig::default(),
            ple: PleConfig {
                levels: 2,
                ..PleConfig::default()
            },
            star: StarConfig::default(),
            din: DinConfig::default(),
            pepnet: PepnetConfig::default(),
            m2m: M2mConfig::default(),
        }
    }
}

impl ModelConfig {
    /// The model's name in run names and reports: `cgc` and `ple` in their
    /// domain-conditioned form are `cgc_cond` and `ple_cond`.
    pub fn label(&self) -> &'static str {
        match self.name {
            ModelName::Cgc if self.conditioned(&self.cgc) => "cgc_cond",
            ModelName::Ple if self.conditioned(&self.ple) => "ple_cond",
            n => n.as_str(),
        }
    }

    /// Whether CGC/PLE with settings `p` take their domain-conditioned form.
    pub fn conditioned(&self, p: &PleConfig) -> bool {
        match p.conditioning {
            Conditioning::Auto => self.domain_input == DomainInput::Fixed,
            Conditioning::None => false,
            Conditioning::Domain => true,
        }
    }

    /// Ranges of every `[model]` key (see [`crate::config::Config::validate`]).
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
        c.widths("model.dnn.hidden", &self.dnn.hidden, false);
        c.widths("model.deepfm.hidden", &self.deepfm.hidden, false);
        c.widths(
            "model.shared_bottom.bottom",
            &self.shared_bottom.bottom,
            false,
        );
        c.widths(
            "model.shared_bottom.tower",
            &self.shared_bottom.tower,
            false,
        );
        c.at_least_one("model.mmoe.experts", self.mmoe.experts);
        c.widths("model.mmoe.expert_hidden", &self.mmoe.expert_hidden, true);
        c.widths("model.mmoe.tower", &self.mmoe.tower, false);
        for (name, p) in [("cgc", &self.cgc), ("ple", &self.ple)] {
            c.at_least_one(&format!("model.{name}.levels"), p.levels);
            c.at_least_one(
                &format!("model.{name}.specific_experts"),
                p.specific_experts,
            );
            c.at_least_one(&format!("model.{name}.shared_experts"), p.shared_experts);
            c.widths(
                &format!("model.{name}.expert_hidden"),
                &p.expert_hidden,
                true,
            );
            c.widths(&format!("model.{name}.tower"), &p.tower, false);
            c.fraction(&format!("model.{name}.shared_only"), p.shared_only);
            c.at_least_one(&format!("model.{name}.rank"), p.rank);
        }
        c.at_least_one("model.m2m.experts", self.m2m.experts);
        c.widths("model.m2m.expert_hidden", &self.m2m.expert_hidden, true);
        c.widths("model.m2m.tower", &self.m2m.tower, false);
        c.at_least_one("model.m2m.rank", self.m2m.rank);
        c.widths("model.pepnet.hidden", &self.pepnet.hidden, false);
        c.at_least_one("model.pepnet.gate_hidden", self.pepnet.gate_hidden);
        let s = &self.star;
        c.widths("model.star.hidden", &s.hidden, false);
        c.widths("model.star.aux_hidden", &s.aux_hidden, false);
        if !(s.pn_momentum > 0.0 && s.pn_momentum <= 1.0) {
            c.bad("model.star.pn_momentum", s.pn_momentum, "must be in (0, 1]");
        }
        c.at_least_one("model.din.history", self.din.history);
        c.widths("model.din.attention", &self.din.attention, false);
        c.widths("model.din.hidden", &self.din.hidden, false);
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DnnConfig {
    /// Hidden layers. Default [256, 128].
    pub hidden: Vec<usize>,
}

impl Default for DnnConfig {
    fn default() -> Self {
        DnnConfig {
            hidden: vec![256, 128],
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SharedBottomConfig {
    /// Shared bottom. Default [128].
    pub bottom: Vec<usize>,
    /// Per-domain tower hidden layers. Default [8].
    pub tower: Vec<usize>,
}

impl Default for SharedBottomConfig {
    fn default() -> Self {
        SharedBottomConfig {
            bottom: vec![128],
            tower: vec![8],
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MmoeConfig {
    /// Shared experts. Default 3.
    pub experts: usize,
    /// Expert hidden layers. Default [16].
    pub expert_hidden: Vec<usize>,
    /// Per-domain tower hidden layers. Default [8].
    pub tower: Vec<usize>,
}

impl Default for MmoeConfig {
    fn default() -> Self {
        MmoeConfig {
            experts: 3,
            expert_hidden: vec![16],
            tower: vec![8],
        }
    }
}

/// CGC is PLE with one level.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PleConfig {
    /// Extraction levels. Default 1 for CGC, 2 for PLE.
    pub levels: usize,
    /// Specific experts per domain. Default 2.
    pub specific_experts: usize,
    /// Shared experts. Default 1.
    pub shared_experts: usize,
    /// Expert hidden layers. Default [16].
    pub expert_hidden: Vec<usize>,
    /// Tower hidden layers (per domain, or the one generated tower). Default [8].
    pub tower: Vec<usize>,
    /// `auto` (default: `domain` on fixed LLM embeddings, else `none`), `none`
    /// (classic) or `domain` (shared gate and generated tower).
    pub conditioning: Conditioning,
    /// `domain` only: the rate at which, in training, a domain's rows go through
    /// the shared experts alone (as an unseen domain's do, having no specific
    /// experts trained). Default 0.2.
    pub shared_only: f64,
    /// `domain` only: rank of the generated tower's weight updates. Default 4.
    pub rank: usize,
}

impl Default for PleConfig {
    fn default() -> Self {
        PleConfig {
            levels: 1,
            specific_experts: 2,
            shared_experts: 1,
            expert_hidden: vec![16],
            tower: vec![8],
            conditioning: Conditioning::Auto,
            shared_only: 0.2,
            rank: 4,
        }
    }
}

/// How CGC/PLE see the domain: `none` (classic: a gate and a tower per domain),
/// `domain` (one gate over [x; e_d] and one tower generated from e_d, shared by
/// every domain; the specific experts stay per domain), or `auto`: `domain` on
/// fixed (LLM) domain embeddings, `none` on the id or without a domain input.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Conditioning {
    Auto,
    None,
    Domain,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct M2mConfig {
    /// Shared experts. Default 4.
    pub experts: usize,
    /// Each expert's hidden layers. Default [128].
    pub expert_hidden: Vec<usize>,
    /// The generated tower's hidden layers. Default [64].
    pub tower: Vec<usize>,
    /// Rank of each generated weight update A(e_d)·B(e_d). Default 4.
    pub rank: usize,
}

impl Default for M2mConfig {
    fn default() -> Self {
        M2mConfig {
            experts: 4,
            expert_hidden: vec![128],
            tower: vec![64],
            rank: 4,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StarConfig {
    /// Star-topology layers. Default [128, 64, 32].
    pub hidden: Vec<usize>,
    /// Auxiliary network on the domain embedding. Default [32].
    pub aux_hidden: Vec<usize>,
    /// Momentum of the per-domain running statistics of partitioned normalisation. Default 0.1.
    pub pn_momentum: f64,
}

impl Default for StarConfig {
    fn default() -> Self {
        StarConfig {
            hidden: vec![128, 64, 32],
            aux_hidden: vec![32],
            pn_momentum: 0.1,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DinConfig {
    /// Most recent positively rated train items, strictly earlier in time. Default 20.
    pub history: usize,
    /// Attention unit hidden layers. Default [80, 40].
    pub attention: Vec<usize>,
    /// Prediction MLP. Default [200, 80].
    pub hidden: Vec<usize>,
}

impl Default for DinConfig {
    fn default() -> Self {
        DinConfig {
            history: 20,
            attention: vec![80, 40],
            hidden: vec![200, 80],
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PepnetConfig {
    /// Hidden layers of the shared DNN, each with a PPNet gate. Default [256, 128].
    pub hidden: Vec<usize>,
    /// Hidden width of each gate unit (EPNet and PPNet). Default 64.
    pub gate_hidden: usize,
}

impl Default for PepnetConfig {
    fn default() -> Self {
        PepnetConfig {
            hidden: vec![256, 128],
            gate_hidden: 64,
        }
    }
}
