//! The sentence-encoder baseline of `embed --method encoder`: a frozen BERT
//! (Devlin et al., "BERT", 2019) — by default all-MiniLM-L6-v2 (Wang et al.,
//! "MiniLM", 2020, trained for sentence similarity by sentence-transformers) —
//! run through candle-transformers' BERT, its last layer's token states
//! mean-pooled over the attention mask. That is what sentence-transformers
//! computes for this model before its final L2 normalisation (which changes
//! only each vector's length); tests/encoder.rs checks both against the
//! reference library's output.
//!
//! Nothing here is trained: the encoder is the zero-training baseline an LLM
//! domain embedding must beat. The run writes the same files as a decoder embed
//! run (token states with their mask and domain-name mask, domain embeddings),
//! so `pipeline pool` and `train` take it as they take the LLM's.

use crate::llm::tokenizer::Tok;
use crate::pool::{self, Query, Tokens};
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use std::collections::HashMap;
use std::path::Path;

pub struct Encoder {
    pub model: BertModel,
    pub tokenizer: Tok,
    pub cfg: BertConfig,
    pub source: String,
}

/// Load a BERT checkpoint folder: `config.json`, `tokenizer.json` and the
/// safetensors weights (`model.safetensors` or an index's shards).
pub fn load_encoder(dir: &Path, device: &Device) -> Result<Encoder> {
    if !dir.is_dir() {
        bail!(
            "embed.encoder = {:?}: no such folder (a BERT checkpoint folder with config.json, tokenizer.json and safetensors weights; `pipeline data fetch minilm` gets all-MiniLM-L6-v2)",
            dir.display().to_string()
        );
    }
    let cfg_path = dir.join("config.json");
    let cfg: BertConfig = serde_json::from_slice(
        &std::fs::read(&cfg_path).with_context(|| format!("cannot read {}", cfg_path.display()))?,
    )
    .with_context(|| format!("{} is not a BERT config", cfg_path.display()))?;
    let mut tokenizer = Tok::from_file(&dir.join("tokenizer.json"))?;
    // The file may pad and truncate to a fixed length; prompts are padded here
    // and a prompt too long is an error, never cut.
    tokenizer.inner.with_padding(None);
    tokenizer
        .inner
        .with_truncation(None)
        .map_err(|e| anyhow::anyhow!("cannot turn truncation off: {e}"))?;
    let mut tensors = HashMap::new();
    let files = crate::llm::load::weight_files(dir)?;
    for f in &files {
        let t = crate::tensor_io::load_safetensors(f)?;
        crate::tensor_io::check_all_finite(&t, f)?;
        tensors.extend(t);
    }
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, device);
    let model = BertModel::load(vb, &cfg).with_context(|| {
        format!(
            "{} does not hold the BERT weights {} describes",
            dir.display(),
            cfg_path.display()
        )
    })?;
    Ok(Encoder {
        model,
        tokenizer,
        cfg,
        source: dir.display().to_string(),
    })
}

impl Encoder {
    /// Last-layer token states (D, T, h) of ids (D, T) with mask (D, T) of 1/0.
    pub fn states(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let types = ids.zeros_like()?;
        Ok(self.model.forward(ids, &types, Some(mask))?)
    }

    /// Mean-pooled embeddings (n, h) of `texts`, special tokens added, as
    /// sentence-transformers computes them before its L2 normalisation.
    pub fn encode(&self, texts: &[&str]) -> Result<Tensor> {
        let dev = &self.model.device;
        let enc: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| Ok(self.tokenizer.encode_offsets(t, true)?.0))
            .collect::<Result<_>>()?;
        let t = enc.iter().map(Vec::len).max().unwrap_or(1);
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for e in &enc {
            for i in 0..t {
                ids.push(e.get(i).copied().unwrap_or(0));
                mask.push(if i < e.len() { 1f32 } else { 0.0 });
            }
        }
        let ids = Tensor::from_vec(ids, (enc.len(), t), dev)?;
        let mask = Tensor::from_vec(mask, (enc.len(), t), dev)?;
        let states = self.states(&ids, &mask)?;
        Ok(pool::query(&states, Tokens::new(&mask, None), Query::Mean)?)
    }
}
