//! Adapters on disk in the Hugging Face PEFT layout: `adapter_model.safetensors`
//! and `adapter_config.json`, LORA or PREFIX_TUNING, so a Python user can load
//! them onto the same base model with `PeftModel.from_pretrained`.
//!
//! LoRA tensors: `base_model.model.model.layers.{i}.{self_attn|mlp}.{proj}.lora_A.weight`
//! (r × in) and `lora_B.weight` (out × r). Prefix tuning: `prompt_embeddings`
//! (virtual tokens × layers · 2 · kv_dim), saved after the optional projection
//! with `inference_mode: true`, as PEFT itself saves it.

use super::adapters::{Adapters, LoraConfig, LoraModule, Prefix, PrefixConfig, Target};
use super::config::{LlamaConfig, RopeLayout};
use super::load::{permute, unpermute};
use crate::fsutil::write_atomic;
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor, Var};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

/// Heads of a LoRA target's output rows when they follow the rotary permutation.
fn rotary_heads(target: Target, model: &LlamaConfig) -> Option<usize> {
    match target {
        Target::Q => Some(model.num_attention_heads),
        Target::K => Some(model.kv_heads()),
        _ => None,
    }
}

/// Save in PEFT's layout. `rope` is the layout the adapters were trained in: with a
/// GGUF model (interleaved), `lora_B` rows of q/k are un-permuted to Hugging Face's order.
pub fn save(
    dir: &Path,
    ad: &Adapters,
    model: &LlamaConfig,
    base: &str,
    rope: RopeLayout,
) -> Result<()> {
    // Both files go into a staging folder that is swapped in whole, so the weights
    // and the config always belong together.
    let staging = crate::fsutil::StagingDir::new(dir)?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let config = if let Some(c) = &ad.lora_cfg {
        for m in &ad.lora {
            let base = format!(
                "base_model.model.model.layers.{}.{}.{}",
                m.layer,
                m.target.parent(),
                m.target.module()
            );
            let mut b = m.b.as_tensor().clone();
            if let (RopeLayout::Interleaved, Some(h)) = (rope, rotary_heads(m.target, model)) {
                b = unpermute(&b, h)?;
            }
            tensors.insert(format!("{base}.lora_A.weight"), m.a.as_tensor().clone());
            tensors.insert(format!("{base}.lora_B.weight"), b);
        }
        let layers: Option<Vec<usize>> = (!c.layers.is_empty()).then(|| {
            let mut l = c.layers.clone();
            l.sort_unstable();
            l.dedup();
            l
        });
        json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base,
            "r": c.r,
            "lora_alpha": c.alpha,
            "lora_dropout": c.dropout,
            "target_modules": c.targets.iter().map(|t| t.module()).collect::<Vec<_>>(),
            "layers_to_transform": layers,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "use_rslora": false,
            "use_dora": false,
            "modules_to_save": null,
            "revision": null
        })
    } else if let Some(p) = &ad.prefix {
        let emb = ad
            .prompt_embeddings()?
            .context("prefix without embeddings")?;
        tensors.insert("prompt_embeddings".into(), emb);
        let all_layers = p.layers.len() == model.num_hidden_layers;
        json!({
            "peft_type": "PREFIX_TUNING",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base,
            "num_virtual_tokens": p.cfg.virtual_tokens,
            "num_layers": model.num_hidden_layers,
            "num_attention_heads": model.num_attention_heads,
            "token_dim": model.hidden_size,
            "num_transformer_submodules": 1,
            "encoder_hidden_size": p.cfg.projection_hidden,
            "prefix_projection": false,
            "inference_mode": true,
            "modules_to_save": null,
            "revision": null,
            // Not a PEFT field: the layers that have prefixes when not all do
            // (such a file cannot be loaded by PEFT, which puts prefixes everywhere).
            "llmctr_layers": if all_layers { serde_json::Value::Null } else { json!(p.layers) }
        })
    } else {
        bail!("no adapters to save");
    };
    crate::fsutil::save_tensors_atomic(
        &tensors,
        &staging.path().join("adapter_model.safetensors"),
    )?;
    write_atomic(
        &staging.path().join("adapter_config.json"),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;
    staging.commit()
}

/// Load a PEFT adapter for a decoder whose rotary layout is `rope`.
pub fn load(
    dir: &Path,
    model: &LlamaConfig,
    device: &Device,
    rope: RopeLayout,
) -> Result<Adapters> {
    let cfg_path = dir.join("adapter_config.json");
    let c: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&cfg_path).with_context(|| format!("cannot read {}", cfg_path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", cfg_path.display()))?;
    let st = dir.join("adapter_model.safetensors");
    let t = crate::tensor_io::load_safetensors(&st)?;
    crate::tensor_io::check_all_finite(&t, &st)?;
    let t: HashMap<String, Tensor> = t
        .into_iter()
        .map(|(k, x)| Ok((k, x.to_device(device)?)))
        .collect::<Result<_>>()?;
    match c.get("peft_type").and_then(|v| v.as_str()) {
        Some("LORA") => {
            for flag in ["use_rslora", "use_dora", "fan_in_fan_out"] {
                if c.get(flag).and_then(|v| v.as_bool()) == Some(true) {
                    bail!(
                        "{}: `{flag}: true` is not supported (plain LoRA only)",
                        cfg_path.display()
                    );
                }
            }
            let r = c["r"]
                .as_u64()
                .with_context(|| format!("{}: `r` is not a number", cfg_path.display()))?
                as usize;
            let alpha = c["lora_alpha"]
                .as_f64()
                .with_context(|| format!("{}: `lora_alpha` is not a number", cfg_path.display()))?;
            let mut mods = Vec::new();
            let mut targets = Vec::new();
            let mut layers = Vec::new();
            // In name order, so a file with two faults names the same one each run.
            let mut names: Vec<&String> = t.keys().collect();
            names.sort();
            let mut seen = std::collections::BTreeMap::new();
            for name in names {
                let a = &t[name];
                let Some(base) = name.strip_suffix(".lora_A.weight") else {
                    continue;
                };
                let b = t
                    .get(&format!("{base}.lora_B.weight"))
                    .with_context(|| format!("{} lacks {base}.lora_B.weight", st.display()))?;
                let parts: Vec<&str> = base.split('.').collect();
                let li = parts
                    .iter()
                    .position(|p| *p == "layers")
                    .with_context(|| format!("{}: tensor {name} names no layer", st.display()))?;
                let layer: usize = parts
                    .get(li + 1)
                    .and_then(|p| p.parse().ok())
                    .with_context(|| {
                        format!("{}: tensor {name} has no layer number", st.display())
                    })?;
                if layer >= model.num_hidden_layers {
                    bail!(
                        "{}: {name} adapts layer {layer}, the model has {}",
                        st.display(),
                        model.num_hidden_layers
                    );
                }
                let target = Target::from_module(parts.last().copied().unwrap_or(""))
                    .with_context(|| {
                        format!("{}: tensor {name} adapts an unknown module", st.display())
                    })?;
                if let Some(first) = seen.insert((layer, target), name) {
                    bail!(
                        "{}: {first} and {name} both adapt {} of layer {layer}",
                        st.display(),
                        target.module()
                    );
                }
                let (d_in, d_out) = target.dims(model);
                if a.dims() != [r, d_in] || b.dims() != [d_out, r] {
                    bail!(
                        "{}: {name} is {:?} / lora_B {:?}, expected ({r}, {d_in}) / ({d_out}, {r})",
                        st.display(),
                        a.dims(),
                        b.dims()
                    );
                }
                // PEFT files are in Hugging Face's order; a GGUF model permutes q/k rows.
                let b = match (rope, rotary_heads(target, model)) {
                    (RopeLayout::Interleaved, Some(h)) => permute(b, h)?,
                    _ => b.clone(),
                };
                targets.push(target);
                layers.push(layer);
                mods.push(LoraModule {
                    layer,
                    target,
                    a: Var::from_tensor(a)?,
                    b: Var::from_tensor(&b)?,
                });
            }
            mods.sort_by_key(|m| (m.layer, m.target));
            targets.sort();
            targets.dedup();
            layers.sort_unstable();
            layers.dedup();
            let all = layers.len() == model.num_hidden_layers;
            let cfg = LoraConfig {
                r,
                alpha,
                dropout: c["lora_dropout"].as_f64().unwrap_or(0.0),
                targets,
                layers: if all { Vec::new() } else { layers },
            };
            Ok(Adapters::from_parts(mods, Some(cfg), None))
        }
        Some("PREFIX_TUNING") => {
            let emb = t
                .get("prompt_embeddings")
                .with_context(|| format!("{} lacks prompt_embeddings", st.display()))?;
            let n = c["num_virtual_tokens"].as_u64().with_context(|| {
                format!(
                    "{}: `num_virtual_tokens` is not a number",
                    cfg_path.display()
                )
            })? as usize;
            let layers: Vec<usize> = match c.get("llmctr_layers").and_then(|v| v.as_array()) {
                Some(a) => a
                    .iter()
                    .map(|x| match x.as_u64() {
                        Some(l) if (l as usize) < model.num_hidden_layers => Ok(l as usize),
                        _ => Err(anyhow::anyhow!(
                            "{}: llmctr_layers entry {x} is not a layer of the model (0..{})",
                            cfg_path.display(),
                            model.num_hidden_layers
                        )),
                    })
                    .collect::<Result<_>>()?,
                None => (0..model.num_hidden_layers).collect(),
            };
            let kv = model.kv_heads() * model.head_dim();
            if emb.dims() != [n, layers.len() * 2 * kv] {
                bail!(
                    "{}: prompt_embeddings is {:?}, expected ({n}, {})",
                    st.display(),
                    emb.dims(),
                    layers.len() * 2 * kv
                );
            }
            let cfg = PrefixConfig {
                virtual_tokens: n,
                layers: layers.clone(),
                ..PrefixConfig::default()
            };
            let p = Prefix::from_direct(
                cfg,
                layers,
                Var::from_tensor(emb)?,
                model.kv_heads(),
                model.head_dim(),
            );
            Ok(Adapters::from_parts(Vec::new(), None, Some(p)))
        }
        other => bail!(
            "{}: unsupported peft_type {other:?} (LORA and PREFIX_TUNING are)",
            cfg_path.display()
        ),
    }
}
