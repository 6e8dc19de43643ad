//! The embed run's checkpoint, written after every epoch: the adapters and their
//! Adam moments, the probe, and the best epoch's token states and domain
//! embeddings (`checkpoint.safetensors`), with the counters (`checkpoint.json`).
//! A resumed run reads it back, refusing a tensor of the wrong shape or holding
//! NaN.

use super::EmbedEpoch;
use crate::fsutil::{save_tensors_atomic, write_atomic};
use crate::llm::adapters::Adapters;
use crate::models::probe::Probe;
use crate::nn::optim::Moments;
use crate::tensor_io::{check_finite, load_safetensors};
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Counters saved with each epoch's checkpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub(super) struct EmbedProgress {
    pub epochs_done: usize,
    pub llm_steps: usize,
    pub probe_step: u64,
    pub best: Option<f64>,
    pub best_epoch: usize,
    pub bad: usize,
    pub history: Vec<EmbedEpoch>,
}

/// The best epoch so far: its domain embeddings (D, h), token states (D, T, h)
/// and background token states.
#[derive(Default)]
pub(super) struct Best {
    pub dm: Option<Tensor>,
    pub states: Option<Tensor>,
    pub bg: Option<Tensor>,
}

/// The sizes a checkpoint's tensors must have for this config.
pub(super) struct Shapes {
    pub domains: usize,
    pub tokens: usize,
    pub hidden: usize,
    /// Background prompts and their token length, when the run has them.
    pub background: Option<(usize, usize)>,
}

/// Read the checkpoint in `dir` into the adapters, their moments and the probe.
pub(super) fn load(
    dir: &Path,
    ad: &Adapters,
    moments: &mut [Moments],
    probe: &mut Probe,
    s: &Shapes,
    device: &Device,
) -> Result<(EmbedProgress, Best)> {
    let ck_json = dir.join("checkpoint.json");
    let pr: EmbedProgress = serde_json::from_slice(&std::fs::read(&ck_json)?)
        .with_context(|| format!("{} is not an embed checkpoint", ck_json.display()))?;
    let ck_file = dir.join("checkpoint.safetensors");
    let t = load_safetensors(&ck_file)?;
    // Every tensor named, of the shape this config makes, and finite.
    let get = |k: &str, shape: &[usize]| -> Result<Tensor> {
        let x = t
            .get(k)
            .with_context(|| format!("{} has no tensor `{k}`", ck_file.display()))?;
        if x.dims() != shape {
            bail!(
                "{}: tensor `{k}` is {:?}, this config needs {shape:?} (was the config changed?)",
                ck_file.display(),
                x.dims()
            );
        }
        check_finite(x, &ck_file, k)?;
        Ok(x.to_dtype(DType::F32)?)
    };
    for ((name, v), mo) in ad.vars().iter().zip(moments.iter_mut()) {
        let n = v.elem_count();
        v.set(&get(&format!("adapter/{name}"), v.dims())?.to_device(device)?)?;
        mo.m = get(&format!("adapter_m/{name}"), &[n])?.to_vec1::<f32>()?;
        mo.v = get(&format!("adapter_v/{name}"), &[n])?.to_vec1::<f32>()?;
    }
    probe
        .load_from(&t)
        .with_context(|| format!("in {}", ck_file.display()))?;
    probe.step = pr.probe_step;
    let mut best = Best::default();
    if t.contains_key("best_domain_embeddings") {
        let (d, h) = (s.domains, s.hidden);
        best.dm = Some(get("best_domain_embeddings", &[d, h])?);
        best.states = Some(get("best_states", &[d, s.tokens, h])?);
        if let Some((n, len)) = s.background {
            best.bg = Some(get("best_background_states", &[n, len, h])?);
        }
    }
    tracing::info!("resuming {} after epoch {}", dir.display(), pr.epochs_done);
    Ok((pr, best))
}

/// Write the checkpoint of the epoch just finished.
pub(super) fn save(
    dir: &Path,
    ad: &Adapters,
    moments: &[Moments],
    probe: &Probe,
    pr: &EmbedProgress,
    best: &Best,
) -> Result<()> {
    let cpu = Device::Cpu;
    let mut ck: HashMap<String, Tensor> = HashMap::new();
    for ((name, v), mo) in ad.vars().iter().zip(moments) {
        ck.insert(format!("adapter/{name}"), v.as_tensor().to_device(&cpu)?);
        ck.insert(
            format!("adapter_m/{name}"),
            Tensor::from_slice(&mo.m, mo.m.len(), &cpu)?,
        );
        ck.insert(
            format!("adapter_v/{name}"),
            Tensor::from_slice(&mo.v, mo.v.len(), &cpu)?,
        );
    }
    probe.save_into(&mut ck)?;
    if let (Some(d), Some(st)) = (&best.dm, &best.states) {
        ck.insert("best_domain_embeddings".into(), d.clone());
        ck.insert("best_states".into(), st.clone());
    }
    if let Some(b) = &best.bg {
        ck.insert("best_background_states".into(), b.clone());
    }
    save_tensors_atomic(&ck, &dir.join("checkpoint.safetensors"))?;
    write_atomic(
        &dir.join("checkpoint.json"),
        serde_json::to_string_pretty(pr)?.as_bytes(),
    )
}
