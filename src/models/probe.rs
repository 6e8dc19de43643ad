//! The embed and pool stages' probe: a small CTR model that trains the adapters
//! (or the parametric pooling) through the domain embedding it is given.
//! Field embeddings, gated per field by a gate unit on the projected domain
//! vector (or concatenated with it), → MLP → logit.

use crate::data::dataset::{Dataset, SplitData};
use crate::metrics;
use crate::models::embedding::{EmbeddingTable, Layout, UpdateMode};
use crate::nn::linear::{Linear, Mlp};
use crate::nn::ops::{bce_with_logits, sigmoid};
use crate::nn::optim::{AdamConfig, DenseAdam, OptimizerKind};
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How the probe reads the domain embedding.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProbeHead {
    Concat,
    Gated,
}

/// The probe's own settings (`embed.probe_*` in a config).
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSettings {
    /// Width of the field embeddings and of the projected domain vector.
    pub dim: usize,
    /// Hidden widths of the MLP.
    pub hidden: Vec<usize>,
    /// Adam's learning rate.
    pub lr: f64,
    pub head: ProbeHead,
}

/// The probe: field embeddings ⊕ Linear(domain vector) → MLP → logit.
pub(crate) struct Probe {
    layout: Layout,
    table: EmbeddingTable,
    ps: ParamStore,
    proj: Linear,
    /// `gated`: per-field scales 2σ(z) from the projected domain embedding.
    gate: Option<crate::models::conditioning::GateUnit>,
    mlp: Mlp,
    dense: DenseAdam,
    adam: AdamConfig,
    pub(crate) step: u64,
}

impl Probe {
    pub(crate) fn new(ds: &Dataset, h: usize, cfg: &ProbeSettings, rng: &mut Rng) -> Result<Self> {
        let layout = Layout::new(&ds.cards, 0);
        let table = EmbeddingTable::new(layout.total_rows(), cfg.dim, 1e-4, UpdateMode::Auto, rng);
        let mut ps = ParamStore::new(DType::F32, &Device::Cpu);
        let proj = Linear::new(&mut ps, "probe.domain_proj", h, cfg.dim, rng)?;
        let gate = match cfg.head {
            ProbeHead::Concat => None,
            ProbeHead::Gated => Some(crate::models::conditioning::GateUnit::new(
                &mut ps,
                "probe.gate",
                cfg.dim,
                cfg.dim,
                ds.features.len(),
                rng,
            )?),
        };
        let width = (ds.features.len() + 1) * cfg.dim;
        let mlp = Mlp::new(&mut ps, "probe.mlp", width, &cfg.hidden, Some(1), 0.0, rng)?;
        let dense = DenseAdam::new(&ps)?;
        Ok(Probe {
            layout,
            table,
            ps,
            proj,
            gate,
            mlp,
            dense,
            adam: AdamConfig {
                kind: OptimizerKind::Adam,
                lr: cfg.lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            step: 0,
        })
    }

    /// Logits of `rows` given the domain matrix `dm` (D, h).
    fn logits(
        &mut self,
        split: &SplitData,
        rows: &[usize],
        dm: &Tensor,
    ) -> Result<(Tensor, Vec<u32>, Var)> {
        let n = rows.len();
        let nf = split.cols.len();
        let mut ids = Vec::with_capacity(n * nf);
        for &r in rows {
            for (s, c) in split.cols.iter().enumerate() {
                ids.push(self.layout.row(s, c[r]));
            }
        }
        let g = self.table.gather_ids(&ids);
        let var = self.table.rows_var(&g.unique, &Device::Cpu, DType::F32)?;
        let local = Tensor::from_vec(g.local, n * nf, &Device::Cpu)?;
        let fields = var
            .as_tensor()
            .index_select(&local, 0)?
            .reshape((n, nf * self.table.dim))?;
        let dom: Vec<u32> = rows.iter().map(|&r| split.domains[r]).collect();
        let d = self
            .proj
            .forward(dm)?
            .index_select(&Tensor::from_slice(&dom, n, &Device::Cpu)?, 0)?;
        let fields = match &self.gate {
            None => fields,
            Some(g) => {
                let dim = self.table.dim;
                let z = g
                    .logits(&d, &mut Rng::new(0))?
                    .unsqueeze(2)?
                    .broadcast_as((n, nf, dim))?
                    .reshape((n, nf * dim))?;
                crate::nn::fused::gated(&fields, &z)?
            }
        };
        let x = Tensor::cat(&[&fields, &d], 1)?;
        let logits = self.mlp.forward(&x, false, &mut Rng::new(0))?.squeeze(1)?;
        Ok((logits, g.unique, var))
    }

    /// One probe step (no update of the probe when `update` is false); returns
    /// the loss and the gradient w.r.t. `dm`.
    fn step(
        &mut self,
        split: &SplitData,
        rows: &[usize],
        dm: &Var,
        update: bool,
    ) -> Result<(f64, Option<Tensor>)> {
        let (logits, unique, var) = self.logits(split, rows, dm.as_tensor())?;
        let y: Vec<f32> = rows.iter().map(|&r| split.labels[r]).collect();
        let y = Tensor::from_vec(y, rows.len(), &Device::Cpu)?;
        let loss = bce_with_logits(&logits, &y)?;
        let value = loss.to_scalar::<f32>()? as f64;
        if !value.is_finite() {
            bail!("non-finite probe loss ({value})");
        }
        let grads = loss.backward()?;
        if !update {
            return Ok((value, grads.get(dm.as_tensor()).cloned()));
        }
        self.step += 1;
        self.dense.step(&self.ps, &grads, &self.adam, self.step)?;
        if let Some(g) = grads.get(var.as_tensor()) {
            self.table.step(
                &unique,
                &g.flatten_all()?.to_vec1::<f32>()?,
                &self.adam,
                self.step,
            );
        }
        Ok((value, grads.get(dm.as_tensor()).cloned()))
    }

    pub(crate) fn save_into(&self, out: &mut HashMap<String, Tensor>) -> Result<()> {
        let dev = &Device::Cpu;
        for (p, (w, mo)) in self.ps.params().iter().zip(&self.dense.state) {
            out.insert(
                format!("probe/{}", p.name),
                Tensor::from_slice(w, w.len(), dev)?,
            );
            out.insert(
                format!("probe_m/{}", p.name),
                Tensor::from_slice(&mo.m, w.len(), dev)?,
            );
            out.insert(
                format!("probe_v/{}", p.name),
                Tensor::from_slice(&mo.v, w.len(), dev)?,
            );
        }
        let t = &self.table;
        out.insert(
            "probe_table".into(),
            Tensor::from_slice(&t.weight, t.weight.len(), dev)?,
        );
        out.insert(
            "probe_table_m".into(),
            Tensor::from_slice(&t.moments.m, t.weight.len(), dev)?,
        );
        out.insert(
            "probe_table_v".into(),
            Tensor::from_slice(&t.moments.v, t.weight.len(), dev)?,
        );
        Ok(())
    }

    pub(crate) fn load_from(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        let get = |k: &str, len: usize| -> Result<Vec<f32>> {
            let x = t
                .get(k)
                .with_context(|| format!("checkpoint has no tensor `{k}`"))?;
            if x.dims() != [len] {
                bail!(
                    "tensor `{k}` is {:?}, this config needs [{len}] (was the probe changed?)",
                    x.dims()
                );
            }
            let v = x.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                bail!(
                    "tensor `{k}` holds {} at index [{i}]; every value must be a finite number",
                    v[i]
                );
            }
            Ok(v)
        };
        for (p, (w, mo)) in self.ps.params().iter().zip(self.dense.state.iter_mut()) {
            let n = w.len();
            *w = get(&format!("probe/{}", p.name), n)?;
            mo.m = get(&format!("probe_m/{}", p.name), n)?;
            mo.v = get(&format!("probe_v/{}", p.name), n)?;
            p.var
                .set(&Tensor::from_slice(w, p.var.shape(), &Device::Cpu)?)?;
        }
        let n = self.table.weight.len();
        self.table.weight = get("probe_table", n)?;
        self.table.moments.m = get("probe_table_m", n)?;
        self.table.moments.v = get("probe_table_v", n)?;
        Ok(())
    }

    /// Probe steps on `group` in batches of `batch_size`, the domain matrix `dm`
    /// held fixed; returns the summed loss (weighted by rows) and the mean over
    /// the batches of the gradient w.r.t. `dm`, to push once through whatever
    /// made `dm` (the LLM, the pooling). With `update` false the probe is left
    /// as it is: only the loss and the gradient are computed (episodes).
    pub(crate) fn steps(
        &mut self,
        split: &SplitData,
        group: &[usize],
        batch_size: usize,
        dm: &Tensor,
        update: bool,
    ) -> Result<(f64, Option<Tensor>)> {
        let dv = Var::from_tensor(&dm.detach())?;
        let (mut sum, mut acc, mut k) = (0.0, None::<Tensor>, 0usize);
        for batch in group.chunks(batch_size.max(1)) {
            let (l, g) = self.step(split, batch, &dv, update)?;
            sum += l * batch.len() as f64;
            if let Some(g) = g {
                acc = Some(match acc {
                    Some(a) => (a + g)?,
                    None => g,
                });
            }
            k += 1;
        }
        let mean = match acc {
            Some(g) => Some((g / k as f64)?.detach()),
            None => None,
        };
        Ok((sum, mean))
    }

    pub(crate) fn evaluate(
        &mut self,
        split: &SplitData,
        dm: &Tensor,
        names: &[String],
    ) -> Result<metrics::Report> {
        let rows: Vec<usize> = (0..split.n).collect();
        let (mut p, mut y, mut d) = (Vec::new(), Vec::new(), Vec::new());
        for c in rows.chunks(8192) {
            let (l, _, _) = self.logits(split, c, dm)?;
            p.extend(sigmoid(&l)?.to_vec1::<f32>()?);
            y.extend(c.iter().map(|&r| split.labels[r]));
            d.extend(c.iter().map(|&r| split.domains[r]));
        }
        Ok(metrics::report(&p, &y, &d, names))
    }
}
