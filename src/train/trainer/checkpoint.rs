//! Weights and checkpoints: the best epoch's weights, and after every epoch (and
//! every buffer of a streamed split) the weights, optimiser moments, running
//! statistics and counters that `--resume` continues from exactly.

use super::Trainer;
use crate::fsutil::write_atomic;
use anyhow::{Context, Result, bail};
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

impl Trainer {
    /// Load the best epoch's weights of a finished run (to score it again, e.g.
    /// with another `train.unseen_kernel`: training does not depend on it).
    pub fn load_best(&mut self) -> Result<()> {
        let best = self.run_dir.join("best.safetensors");
        self.load_weights(&best, false)
    }

    pub(super) fn weights(&self, with_moments: bool) -> Result<HashMap<String, Tensor>> {
        let dev = &self.device;
        let mut out = HashMap::new();
        for (p, (w, mo)) in self.ps.params().iter().zip(&self.dense.state) {
            out.insert(
                format!("param/{}", p.name),
                Tensor::from_slice(w, w.len(), dev)?,
            );
            if with_moments {
                out.insert(
                    format!("adam_m/{}", p.name),
                    Tensor::from_slice(&mo.m, w.len(), dev)?,
                );
                out.insert(
                    format!("adam_v/{}", p.name),
                    Tensor::from_slice(&mo.v, w.len(), dev)?,
                );
            }
        }
        let tables = [
            ("embedding", Some(&self.table)),
            ("first_order", self.first.as_ref()),
        ];
        for (name, t) in tables {
            if let Some(t) = t {
                out.insert(
                    format!("table/{name}"),
                    Tensor::from_slice(&t.weight, t.weight.len(), dev)?,
                );
                if with_moments {
                    out.insert(
                        format!("adam_m/table/{name}"),
                        Tensor::from_slice(&t.moments.m, t.weight.len(), dev)?,
                    );
                    out.insert(
                        format!("adam_v/table/{name}"),
                        Tensor::from_slice(&t.moments.v, t.weight.len(), dev)?,
                    );
                }
            }
        }
        for (name, v) in self.model.state() {
            out.insert(
                format!("state/{name}"),
                Tensor::from_slice(&v, v.len(), dev)?,
            );
        }
        Ok(out)
    }

    pub(super) fn save_weights(&self, path: &Path, with_moments: bool) -> Result<()> {
        crate::fsutil::save_tensors_atomic(&self.weights(with_moments)?, path)
    }

    pub(super) fn load_weights(&mut self, path: &Path, with_moments: bool) -> Result<()> {
        let all = candle_core::safetensors::load(path, &self.device)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let get = |k: &str| -> Result<Vec<f32>> {
            all.get(k)
                .with_context(|| {
                    format!(
                        "{} lacks `{k}` (written by another model or config?)",
                        path.display()
                    )
                })?
                .to_vec1::<f32>()
                .map_err(Into::into)
        };
        let fill = |dst: &mut Vec<f32>, src: Vec<f32>, k: &str| -> Result<()> {
            if dst.len() != src.len() {
                bail!(
                    "{}: `{k}` has {} values, the model {}",
                    path.display(),
                    src.len(),
                    dst.len()
                );
            }
            *dst = src;
            Ok(())
        };
        for (p, (w, mo)) in self.ps.params().iter().zip(self.dense.state.iter_mut()) {
            fill(w, get(&format!("param/{}", p.name))?, &p.name)?;
            if with_moments {
                fill(&mut mo.m, get(&format!("adam_m/{}", p.name))?, &p.name)?;
                fill(&mut mo.v, get(&format!("adam_v/{}", p.name))?, &p.name)?;
            }
            p.var
                .set(&Tensor::from_slice(w, p.var.shape(), &self.device)?)?;
        }
        for (name, t) in [
            ("embedding", Some(&mut self.table)),
            ("first_order", self.first.as_mut()),
        ] {
            if let Some(t) = t {
                fill(&mut t.weight, get(&format!("table/{name}"))?, name)?;
                if with_moments {
                    fill(
                        &mut t.moments.m,
                        get(&format!("adam_m/table/{name}"))?,
                        name,
                    )?;
                    fill(
                        &mut t.moments.v,
                        get(&format!("adam_v/table/{name}"))?,
                        name,
                    )?;
                }
            }
        }
        let state: Vec<(String, Vec<f32>)> = self
            .model
            .state()
            .into_iter()
            .map(|(n, _)| -> Result<_> { Ok((n.clone(), get(&format!("state/{n}"))?)) })
            .collect::<Result<_>>()?;
        self.model.load_state(&state)?;
        Ok(())
    }

    pub(super) fn save_checkpoint(&self) -> Result<()> {
        self.save_weights(&self.run_dir.join("checkpoint.safetensors"), true)?;
        let mut lines = String::new();
        for m in &self.progress.history {
            lines.push_str(&serde_json::to_string(m)?);
            lines.push('\n');
        }
        write_atomic(&self.run_dir.join("metrics.jsonl"), lines.as_bytes())?;
        // Written last: a checkpoint counts once this file names its epoch.
        write_atomic(
            &self.run_dir.join("checkpoint.json"),
            serde_json::to_string_pretty(&self.progress)?.as_bytes(),
        )
    }

    pub(super) fn load_checkpoint(&mut self) -> Result<()> {
        let p = self.run_dir.join("checkpoint.json");
        self.progress = serde_json::from_slice(&std::fs::read(&p)?)
            .with_context(|| format!("{} is not a checkpoint", p.display()))?;
        let w = self.run_dir.join("checkpoint.safetensors");
        self.load_weights(&w, true)
    }
}
