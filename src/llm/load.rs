//! Where a decoder comes from: a GGUF file (dequantised to f32), a Hugging Face
//! checkpoint folder (`config.json`, `tokenizer.json`, `model.safetensors` or a
//! sharded index), or a Hub id fetched with hf-hub (the local cache is used
//! first; `HF_HUB_OFFLINE=1` uses only the cache).

use super::config::{LlamaConfig, RopeLayout};
use super::decoder::Decoder;
use super::tokenizer::Tok;
use anyhow::{Context, Result, bail};
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub struct Loaded {
    pub decoder: Decoder,
    pub tokenizer: Tok,
    /// What was loaded, for configs and PEFT's `base_model_name_or_path`.
    pub source: String,
}

/// `spec`: a `.gguf` file, a checkpoint folder, or a Hub id like `HuggingFaceTB/SmolLM2-135M`.
pub fn load(spec: &str, device: &Device) -> Result<Loaded> {
    let p = Path::new(spec);
    if p.extension().is_some_and(|e| e == "gguf") {
        if !p.is_file() {
            bail!(
                "model file {spec} not found: run `pipeline data fetch smollm2` for the default \
                 SmolLM2-135M-Instruct GGUF, or give a checkpoint folder or Hub id"
            );
        }
        return load_gguf(p, RopeLayout::Interleaved, device);
    }
    if p.is_dir() {
        return load_hf_dir(p, device);
    }
    if spec.contains('/') && !p.exists() && !spec.starts_with('.') && !spec.starts_with('/') {
        return load_hub(spec, device);
    }
    bail!("model {spec:?}: not a .gguf file, a checkpoint folder, or a Hub id (owner/name)")
}

fn md_u32(ct: &gguf_file::Content, k: &str) -> Result<u32> {
    Ok(ct
        .metadata
        .get(k)
        .with_context(|| format!("GGUF metadata has no `{k}`"))?
        .to_u32()?)
}

fn md_f32(ct: &gguf_file::Content, k: &str) -> Option<f32> {
    ct.metadata.get(k).and_then(|v| v.to_f32().ok())
}

/// Undo llama.cpp's permutation of Q/K rows (interleaved → half-split rotary).
pub fn unpermute(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let hd = out / heads;
    Ok(w.reshape((heads, hd / 2, 2, inp))?
        .transpose(1, 2)?
        .reshape((out, inp))?)
}

/// llama.cpp's permutation of Q/K rows (half-split → interleaved rotary).
pub fn permute(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let hd = out / heads;
    Ok(w.reshape((heads, 2, hd / 2, inp))?
        .transpose(1, 2)?
        .reshape((out, inp))?)
}

/// A GGUF file; `rope` = Interleaved keeps llama.cpp's layout, HalfSplit un-permutes
/// Q and K as Hugging Face does (both give the same model).
/// The file is read and dequantised on the CPU; the f32 weights then move to `device`.
pub fn load_gguf(path: &Path, rope: RopeLayout, device: &Device) -> Result<Loaded> {
    let (cfg, tensors, tokenizer) = gguf_tensors(path, rope, &Device::Cpu)?;
    Ok(Loaded {
        decoder: Decoder::from_tensors(cfg, rope, tensors, device)?,
        tokenizer,
        source: path.display().to_string(),
    })
}

/// The config, the dequantised f32 tensors under Hugging Face names, and the tokenizer.
pub fn gguf_tensors(
    path: &Path,
    rope: RopeLayout,
    device: &Device,
) -> Result<(LlamaConfig, HashMap<String, Tensor>, Tok)> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let ct = gguf_file::Content::read(&mut f).with_context(|| {
        format!(
            "{}: cannot read the GGUF header (truncated, or not a GGUF file)",
            path.display()
        )
    })?;
    let arch = ct
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_else(|| "llama".into());
    // llama.cpp writes other families' weights transformed (Gemma's norms
    // already hold 1 + w) or under other names: only these are read.
    if !["llama", "qwen2"].contains(&arch.as_str()) {
        bail!(
            "{}: general.architecture = {arch:?} is not supported in GGUF files (llama, qwen2); \
             give the Hugging Face checkpoint folder instead",
            path.display()
        );
    }
    let a = |k: &str| format!("{arch}.{k}");
    let heads = md_u32(&ct, &a("attention.head_count"))? as usize;
    let kv = md_u32(&ct, &a("attention.head_count_kv")).unwrap_or(heads as u32) as usize;
    let embd_info = ct
        .tensor_infos
        .get("token_embd.weight")
        .context("GGUF has no token_embd.weight")?;
    let vocab = embd_info.shape.dims().first().copied().unwrap_or(0);
    let tied = !ct.tensor_infos.contains_key("output.weight");
    let cfg = LlamaConfig {
        hidden_size: md_u32(&ct, &a("embedding_length"))? as usize,
        intermediate_size: md_u32(&ct, &a("feed_forward_length"))? as usize,
        num_hidden_layers: md_u32(&ct, &a("block_count"))? as usize,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv),
        head_dim: None,
        rms_norm_eps: md_f32(&ct, &a("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5) as f64,
        rope_theta: md_f32(&ct, &a("rope.freq_base")).unwrap_or(10_000.0) as f64,
        vocab_size: vocab,
        tie_word_embeddings: tied,
        attention_bias: ct.tensor_infos.contains_key("blk.0.attn_q.bias"),
        model_type: Some(arch.clone()),
        max_position_embeddings: 8192,
        bos_token_id: None,
        eos_token_id: None,
        arch: Default::default(),
    };
    cfg.validate()
        .with_context(|| format!("{}: GGUF metadata", path.display()))?;
    // In name order (candle keeps them in a HashMap), so a file with several
    // faults names the same one on every run.
    let mut names: Vec<(String, String)> = ct
        .tensor_infos
        .keys()
        .filter_map(|k| hf_name(k).map(|h| (k.clone(), h)))
        .collect();
    names.sort();
    // Shapes and sizes are checked before any data is read.
    let gguf_name: HashMap<&str, &str> = names
        .iter()
        .map(|(g, h)| (h.as_str(), g.as_str()))
        .collect();
    let dims: HashMap<String, Vec<usize>> = names
        .iter()
        .map(|(g, h)| (h.clone(), ct.tensor_infos[g].shape.dims().to_vec()))
        .collect();
    check_shapes(&cfg, &dims, &|h| {
        let g = gguf_name.get(h).copied().unwrap_or(h);
        format!("{}: tensor `{g}` ({h})", path.display())
    })
    .with_context(|| format!("{} does not match its own metadata", path.display()))?;
    let file_len = f
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    // The first tensor (in file order) that the file does not hold whole.
    let mut by_offset: Vec<&String> = names.iter().map(|(g, _)| g).collect();
    by_offset.sort_by_key(|g| ct.tensor_infos[*g].offset);
    for g in by_offset {
        let info = &ct.tensor_infos[g];
        let (block, size) = (info.ggml_dtype.block_size(), info.ggml_dtype.type_size());
        let bytes = (info.shape.elem_count() / block.max(1) * size) as u64;
        let end = ct
            .tensor_data_offset
            .checked_add(info.offset)
            .and_then(|e| e.checked_add(bytes))
            .unwrap_or(u64::MAX);
        if end > file_len {
            bail!(
                "{}: tensor `{g}` {:?} needs bytes up to {end}, the file has {file_len}: the file is truncated",
                path.display(),
                info.shape.dims()
            );
        }
    }
    let mut tensors = HashMap::new();
    for (g, h) in names {
        let mut t = ct
            .tensor(&mut f, &g, device)
            .and_then(|q| q.dequantize(device))
            .with_context(|| format!("{}: cannot read tensor `{g}`", path.display()))?;
        if rope == RopeLayout::HalfSplit {
            if g.ends_with("attn_q.weight") {
                t = unpermute(&t, heads)?;
            } else if g.ends_with("attn_k.weight") {
                t = unpermute(&t, kv)?;
            }
        }
        tensors.insert(h, t);
    }
    let tokenizer =
        Tok::from_gguf(&ct).with_context(|| format!("{}: tokenizer", path.display()))?;
    check_vocab(
        &tokenizer,
        &format!("{}: tokenizer.ggml.tokens", path.display()),
        vocab,
        &format!("{}: tensor `token_embd.weight`", path.display()),
    )?;
    Ok((cfg, tensors, tokenizer))
}

/// Every weight the decoder reads is there with the shape `cfg` implies; `origin`
/// names where a weight comes from (file, name there) for the error.
fn check_shapes(
    cfg: &LlamaConfig,
    dims: &HashMap<String, Vec<usize>>,
    origin: &dyn Fn(&str) -> String,
) -> Result<()> {
    for (name, shape) in cfg.tensor_shapes() {
        match dims.get(&name) {
            None => bail!("no tensor `{name}`, which the config needs with shape {shape:?}"),
            Some(d) if *d != shape => bail!(
                "{}: shape {d:?}, expected {shape:?} (hidden {}, {} heads × {} over {} key/value heads, intermediate {}, vocabulary {})",
                origin(&name),
                cfg.hidden_size,
                cfg.num_attention_heads,
                cfg.head_dim(),
                cfg.kv_heads(),
                cfg.intermediate_size,
                cfg.vocab_size
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

/// The tokenizer's ids all have a row in the embedding matrix (`rows` rows).
fn check_vocab(tok: &Tok, tok_origin: &str, rows: usize, embed_origin: &str) -> Result<()> {
    let n = tok.id_count();
    if n > rows {
        bail!(
            "{tok_origin}: the tokenizer has ids up to {}, but the embedding matrix ({embed_origin}) has only {rows} rows",
            n - 1
        );
    }
    Ok(())
}

/// GGUF tensor name → Hugging Face name.
fn hf_name(g: &str) -> Option<String> {
    Some(match g {
        "token_embd.weight" => "model.embed_tokens.weight".into(),
        "output_norm.weight" => "model.norm.weight".into(),
        "output.weight" => "lm_head.weight".into(),
        _ => {
            let rest = g.strip_prefix("blk.")?;
            let (i, name) = rest.split_once('.')?;
            let m = match name {
                "attn_q.weight" => "self_attn.q_proj.weight",
                "attn_q.bias" => "self_attn.q_proj.bias",
                "attn_k.weight" => "self_attn.k_proj.weight",
                "attn_k.bias" => "self_attn.k_proj.bias",
                "attn_v.weight" => "self_attn.v_proj.weight",
                "attn_v.bias" => "self_attn.v_proj.bias",
                "attn_output.weight" => "self_attn.o_proj.weight",
                "ffn_gate.weight" => "mlp.gate_proj.weight",
                "ffn_up.weight" => "mlp.up_proj.weight",
                "ffn_down.weight" => "mlp.down_proj.weight",
                "attn_norm.weight" => "input_layernorm.weight",
                "ffn_norm.weight" => "post_attention_layernorm.weight",
                _ => return None,
            };
            format!("model.layers.{i}.{m}")
        }
    })
}

/// The weight files of a checkpoint folder: `model.safetensors`, or the shards
/// that `model.safetensors.index.json` lists.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if single.is_file() {
        return Ok(vec![single]);
    }
    if !index.is_file() {
        bail!(
            "{} has neither model.safetensors nor model.safetensors.index.json",
            dir.display()
        );
    }
    let idx: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&index).with_context(|| format!("cannot read {}", index.display()))?,
    )
    .with_context(|| format!("{} is not JSON", index.display()))?;
    let map = idx
        .get("weight_map")
        .and_then(|m| m.as_object())
        .with_context(|| format!("{} has no weight_map", index.display()))?;
    let mut shards: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    shards.sort();
    shards.dedup();
    Ok(shards.into_iter().map(|s| dir.join(s)).collect())
}

/// A Hugging Face checkpoint folder.
pub fn load_hf_dir(dir: &Path, device: &Device) -> Result<Loaded> {
    let cfg_path = dir.join("config.json");
    let cfg: LlamaConfig = serde_json::from_slice(
        &std::fs::read(&cfg_path).with_context(|| format!("cannot read {}", cfg_path.display()))?,
    )
    .with_context(|| format!("{} is not a Llama-family config", cfg_path.display()))?;
    cfg.validate()
        .with_context(|| format!("in {}", cfg_path.display()))?;
    let files = weight_files(dir)?;
    let mut tensors = HashMap::new();
    let mut file_of: HashMap<String, PathBuf> = HashMap::new();
    for f in &files {
        let t = crate::tensor_io::load_safetensors(f)?;
        file_of.extend(t.keys().map(|k| (k.clone(), f.clone())));
        tensors.extend(t);
    }
    split_fused(&cfg, &mut tensors, &mut file_of)?;
    let dims: HashMap<String, Vec<usize>> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect();
    check_shapes(&cfg, &dims, &|name| {
        let f = file_of.get(name).map_or(dir, |p| p.as_path());
        format!("{}: tensor `{name}`", f.display())
    })
    .with_context(|| {
        format!(
            "{} does not fit {}",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            cfg_path.display()
        )
    })?;
    let tok = dir.join("tokenizer.json");
    let tokenizer = Tok::from_file(&tok)?;
    let embed = "model.embed_tokens.weight";
    check_vocab(
        &tokenizer,
        &tok.display().to_string(),
        cfg.vocab_size,
        &format!(
            "{}: tensor `{embed}`",
            file_of.get(embed).map_or(dir, |p| p.as_path()).display()
        ),
    )?;
    Ok(Loaded {
        decoder: Decoder::from_tensors(cfg, RopeLayout::HalfSplit, tensors, device)?,
        tokenizer,
        source: dir.display().to_string(),
    })
}

/// Phi-3 stores q, k and v as one `qkv_proj` and the MLP's gate and up as one
/// `gate_up_proj` (gate first): split them into the separate projections the
/// decoder (and its adapters) use. Shapes are checked afterwards.
fn split_fused(
    cfg: &LlamaConfig,
    t: &mut HashMap<String, Tensor>,
    file_of: &mut HashMap<String, PathBuf>,
) -> Result<()> {
    let q = cfg.num_attention_heads * cfg.head_dim();
    let kv = cfg.kv_heads() * cfg.head_dim();
    let i = cfg.intermediate_size;
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (fused, parts) in [
            (
                format!("{p}.self_attn.qkv_proj.weight"),
                vec![
                    ("self_attn.q_proj.weight", q),
                    ("self_attn.k_proj.weight", kv),
                    ("self_attn.v_proj.weight", kv),
                ],
            ),
            (
                format!("{p}.mlp.gate_up_proj.weight"),
                vec![("mlp.gate_proj.weight", i), ("mlp.up_proj.weight", i)],
            ),
        ] {
            let Some(w) = t.remove(&fused) else { continue };
            let origin = file_of.get(&fused).cloned().unwrap_or_default();
            let rows: usize = parts.iter().map(|(_, n)| n).sum();
            if w.dims().len() != 2 || w.dim(0)? != rows {
                bail!(
                    "{}: tensor `{fused}` is {:?}; the config implies ({rows}, hidden) for its parts {}",
                    origin.display(),
                    w.dims(),
                    parts.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                );
            }
            let mut at = 0;
            for (name, n) in parts {
                let key = format!("{p}.{name}");
                t.insert(key.clone(), w.narrow(0, at, n)?.contiguous()?);
                file_of.insert(key, origin.clone());
                at += n;
            }
        }
    }
    Ok(())
}

/// A Hub id: files come from the local Hugging Face cache, or are downloaded.
pub fn load_hub(id: &str, device: &Device) -> Result<Loaded> {
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v == "true");
    let cache = hf_hub::Cache::from_env();
    let cached = cache.model(id.to_string());
    let get = |file: &str| -> Result<Option<PathBuf>> {
        if let Some(p) = cached.get(file) {
            return Ok(Some(p));
        }
        if offline {
            return Ok(None);
        }
        let api =
            hf_hub::api::sync::Api::new().context("cannot start the Hugging Face Hub client")?;
        match api.model(id.to_string()).get(file) {
            Ok(p) => Ok(Some(p)),
            Err(_) => Ok(None),
        }
    };
    let cfg = get("config.json")?.with_context(|| {
        format!(
            "{id}: config.json is not in the Hugging Face cache and could not be downloaded{}",
            if offline { " (HF_HUB_OFFLINE=1)" } else { "" }
        )
    })?;
    get("tokenizer.json")?.with_context(|| format!("{id}: no tokenizer.json"))?;
    if get("model.safetensors")?.is_none() {
        let idx = get("model.safetensors.index.json")?
            .with_context(|| format!("{id}: no model.safetensors"))?;
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&idx)?)?;
        if let Some(map) = v.get("weight_map").and_then(|m| m.as_object()) {
            for shard in map.values().filter_map(|s| s.as_str()) {
                get(shard)?.with_context(|| format!("{id}: shard {shard} missing"))?;
            }
        }
    }
    let dir = cfg.parent().context("cache path")?.to_path_buf();
    let mut l = load_hf_dir(&dir, device)?;
    l.source = id.to_string();
    Ok(l)
}
