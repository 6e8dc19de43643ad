//! Batch assembly: rows grouped by domain, their ids gathered from the embedding
//! table (features, multi-hot bags, the domain id, DIN's histories), the fixed
//! domain embeddings through their projection.

use super::Trainer;
use crate::data::dataset::SplitData;
use crate::models::{Compact, Inputs, Segment};
use anyhow::{Result, bail};
use candle_core::{DType, Tensor};

/// A batch ready for the model, and what the optimiser needs after backward.
pub(super) struct Prepared {
    pub(super) inputs: Inputs,
    pub(super) labels: Tensor,
    pub(super) domains: Vec<u32>,
    /// The split's row of each prepared row (grouped by domain).
    pub(super) rows: Vec<usize>,
    pub(super) unique: Vec<u32>,
    pub(super) var: candle_core::Var,
    pub(super) first_var: Option<candle_core::Var>,
}

impl Trainer {
    /// Group `rows` by domain (stable) and embed them. With `route`, every row
    /// runs through that domain's experts, gate and tower, while its domain input
    /// (id or fixed embedding) stays its own.
    pub(super) fn prepare(
        &mut self,
        split: &SplitData,
        rows: &[usize],
        route: Option<u32>,
    ) -> Result<Prepared> {
        let n_dom = self.ds.domain_names.len();
        let seg = |d: u32| route.unwrap_or(d) as usize;
        let mut counts = vec![0usize; n_dom];
        for &r in rows {
            counts[seg(split.domains[r])] += 1;
        }
        let mut starts = vec![0usize; n_dom];
        let mut segments = Vec::new();
        let mut acc = 0;
        for d in 0..n_dom {
            starts[d] = acc;
            if counts[d] > 0 {
                segments.push(Segment {
                    domain: d,
                    start: acc,
                    len: counts[d],
                });
            }
            acc += counts[d];
        }
        let mut ordered = vec![0usize; rows.len()];
        let mut fill = starts.clone();
        for &r in rows {
            let d = seg(split.domains[r]);
            ordered[fill[d]] = r;
            fill[d] += 1;
        }
        let n = ordered.len();
        let nf = self.ds.features.len();
        let id_slots = nf + usize::from(self.domain_slot);
        let hl = if split.history.is_some() {
            self.ds.history_len
        } else {
            0
        };
        let mut ids = Vec::with_capacity(n * (id_slots + hl));
        for &r in &ordered {
            for (s, col) in split.cols.iter().enumerate() {
                ids.push(self.layout.row(s, col[r]));
            }
            if self.domain_slot {
                ids.push(self.layout.row(nf, split.domains[r]));
            }
        }
        if let (Some(h), Some(item)) = (&split.history, self.item_slot) {
            for &r in &ordered {
                for k in 0..hl {
                    ids.push(self.layout.row(item, h[r * hl + k]));
                }
            }
        }
        let cate_slot = self
            .cate_slot
            .filter(|_| hl > 0 && split.history_cats.is_some());
        if let (Some(h), Some(cate)) = (&split.history_cats, cate_slot) {
            for &r in &ordered {
                for k in 0..hl {
                    ids.push(self.layout.row(cate, h[r * hl + k]));
                }
            }
        }
        // Bags: every value of every row, then its mean per (row, bag).
        let nb = self.ds.bags.len();
        if split.bags.len() != nb {
            bail!(
                "these rows carry {} of the run's {nb} multi-hot fields (model.bags)",
                split.bags.len()
            );
        }
        let bag_start = ids.len();
        let (mut bag_target, mut bag_weight) = (Vec::new(), Vec::new());
        for (i, &r) in ordered.iter().enumerate() {
            for (b, (off, vals)) in split.bags.iter().enumerate() {
                let v = &vals[off[r] as usize..off[r + 1] as usize];
                for &x in v {
                    ids.push(self.layout.row(id_slots + b, x));
                    bag_target.push((i * nb + b) as u32);
                    bag_weight.push(1.0 / v.len() as f32);
                }
            }
        }
        let g = self.table.gather_ids(&ids);
        let var = self.table.rows_var(&g.unique, &self.device, DType::F32)?;
        // The histories compactly: their distinct rows of `var`, and per position
        // an index into those.
        let compact = |start: usize| -> Result<Compact> {
            let mut slot = vec![u32::MAX; g.unique.len()];
            let mut rows = Vec::new();
            let mut idx = Vec::with_capacity(n * hl);
            for &l in &g.local[start..start + n * hl] {
                if slot[l as usize] == u32::MAX {
                    slot[l as usize] = rows.len() as u32;
                    rows.push(l);
                }
                idx.push(slot[l as usize]);
            }
            let u = rows.len();
            let rows = Tensor::from_vec(rows, u, &self.device)?;
            Ok(Compact {
                table: var.as_tensor().index_select(&rows, 0)?,
                idx: Tensor::from_vec(idx, (n, hl), &self.device)?,
            })
        };
        let hist_start = n * id_slots;
        let compact_items =
            if self.history_tables && hl > 0 && split.history.is_some() && self.item_slot.is_some()
            {
                Some(compact(hist_start)?)
            } else {
                None
            };
        let compact_cats = match cate_slot {
            Some(_) => Some(compact(hist_start + n * hl)?),
            None => None,
        };
        let local = Tensor::from_vec(g.local, ids.len(), &self.device)?;
        let emb = var.as_tensor().index_select(&local, 0)?;
        let dim = self.table.dim;
        let mut fields = emb
            .narrow(0, 0, n * id_slots)?
            .reshape((n, id_slots, dim))?;
        let bag_mean = |values: &Tensor, width: usize| -> Result<Tensor> {
            let zeros = Tensor::zeros((n * nb, width), DType::F32, &self.device)?;
            if bag_target.is_empty() {
                return Ok(zeros);
            }
            let k = bag_target.len();
            let w = Tensor::from_slice(&bag_weight, (k, 1), &self.device)?;
            let t = Tensor::from_slice(&bag_target, k, &self.device)?;
            Ok(zeros.index_add(&t, &values.broadcast_mul(&w)?, 0)?)
        };
        if nb > 0 {
            let vals = emb.narrow(0, bag_start, bag_target.len())?;
            let bagged = bag_mean(&vals, dim)?.reshape((n, nb, dim))?;
            let (nf, rest) = (self.ds.features.len(), id_slots - self.ds.features.len());
            let mut parts = vec![fields.narrow(1, 0, nf)?, bagged];
            if rest > 0 {
                parts.push(fields.narrow(1, nf, rest)?);
            }
            fields = Tensor::cat(&parts, 1)?;
        }
        let domains: Vec<u32> = ordered.iter().map(|&r| split.domains[r]).collect();
        if let Some((mat, proj)) = &self.fixed {
            let idx = Tensor::from_slice(&domains, n, &self.device)?;
            let d = proj.forward(mat)?.index_select(&idx, 0)?.unsqueeze(1)?;
            fields = Tensor::cat(&[&fields, &d], 1)?;
        }
        let history_cats = match cate_slot {
            Some(_) => Some(
                emb.narrow(0, n * (id_slots + hl), n * hl)?
                    .reshape((n, hl, dim))?,
            ),
            None => None,
        };
        let history = if hl > 0 {
            let hist = emb.narrow(0, n * id_slots, n * hl)?.reshape((n, hl, dim))?;
            let h = split.history.as_ref().map(|h| {
                ordered
                    .iter()
                    .flat_map(|&r| {
                        h[r * hl..(r + 1) * hl]
                            .iter()
                            .map(|&i| f32::from(u8::from(i != 0)))
                    })
                    .collect::<Vec<f32>>()
            });
            let mask = Tensor::from_vec(h.unwrap_or_default(), (n, hl), &self.device)?;
            Some((hist, mask))
        } else {
            None
        };
        let first_var = match &self.first {
            Some(f) => Some(f.rows_var(&g.unique, &self.device, DType::F32)?),
            None => None,
        };
        let first_order = match &first_var {
            Some(v) => {
                // The first-order table shares the gathered rows: same local indices.
                let idx = local.narrow(0, 0, n * id_slots)?;
                let mut fo = v
                    .as_tensor()
                    .index_select(&idx, 0)?
                    .reshape((n, id_slots))?;
                if nb > 0 {
                    let bl = local.narrow(0, bag_start, bag_target.len())?;
                    let vals = v.as_tensor().index_select(&bl, 0)?;
                    let bagged = bag_mean(&vals, 1)?.reshape((n, nb))?;
                    let (nf, rest) = (self.ds.features.len(), id_slots - self.ds.features.len());
                    let mut parts = vec![fo.narrow(1, 0, nf)?, bagged];
                    if rest > 0 {
                        parts.push(fo.narrow(1, nf, rest)?);
                    }
                    fo = Tensor::cat(&parts, 1)?;
                }
                if self.fixed.is_some() {
                    fo = Tensor::cat(&[&fo, &Tensor::zeros((n, 1), DType::F32, &self.device)?], 1)?;
                }
                Some(fo)
            }
            None => None,
        };
        let x = fields.reshape((n, self.slots * dim))?;
        let domain = if self.domain_slot || self.fixed.is_some() {
            Some(fields.narrow(1, self.slots - 1, 1)?.squeeze(1)?)
        } else {
            None
        };
        let item = match self.item_slot {
            Some(i) if hl > 0 => Some(fields.narrow(1, i, 1)?.squeeze(1)?),
            _ => None,
        };
        let item_cate = match cate_slot {
            Some(c) => Some(fields.narrow(1, c, 1)?.squeeze(1)?),
            None => None,
        };
        let labels: Vec<f32> = ordered.iter().map(|&r| split.labels[r]).collect();
        Ok(Prepared {
            inputs: Inputs {
                x,
                fields,
                first_order,
                domain,
                item,
                history,
                item_cate,
                history_cats,
                compact_items,
                compact_cats,
                segments,
            },
            labels: Tensor::from_vec(labels, n, &self.device)?,
            domains,
            rows: ordered,
            unique: g.unique,
            var,
            first_var,
        })
    }
}
