//! Field embeddings in one combined table, with row-sparse updates.
//!
//! candle's embedding gradient is dense: a zero tensor the size of the whole table
//! every step (candle 0.11). Here a batch gathers only the rows it uses
//! into a small `Var`, the model reads from that, and the optimiser updates those
//! rows in place — O(batch), not O(vocabulary). In `dense` mode every row takes
//! an Adam step each batch (zero gradient for untouched rows), which is exactly
//! PyTorch's dense `nn.Embedding` + `Adam`. Fields may be hashed into buckets.

use crate::data::split::fnv1a64;
use crate::nn::optim::{AdamConfig, Moments, adam_step};
use crate::nn::rng::Rng;
use candle_core::{DType, Device, Result, Tensor, Var};

/// Where each input slot's ids live in the combined table.
#[derive(Clone, Debug)]
pub struct Layout {
    /// First row of each slot.
    pub offsets: Vec<u32>,
    /// Rows of each slot (cardinality, or the bucket count when hashed).
    pub rows: Vec<u32>,
    /// Hashed slots map id → 1 + hash(slot, id) mod (rows − 1); id 0 stays 0.
    pub hashed: Vec<bool>,
}

impl Layout {
    /// `cards`: each slot's cardinality. Slots larger than `buckets` (if > 0) are hashed.
    pub fn new(cards: &[u32], buckets: u32) -> Self {
        let mut offsets = Vec::with_capacity(cards.len());
        let mut rows = Vec::with_capacity(cards.len());
        let mut hashed = Vec::with_capacity(cards.len());
        let mut next = 0u32;
        for &c in cards {
            let h = buckets > 1 && c > buckets;
            let r = if h { buckets } else { c.max(1) };
            offsets.push(next);
            rows.push(r);
            hashed.push(h);
            next += r;
        }
        Layout {
            offsets,
            rows,
            hashed,
        }
    }

    pub fn total_rows(&self) -> usize {
        self.rows.iter().map(|&r| r as usize).sum()
    }

    /// Row of id `id` of slot `slot`.
    pub fn row(&self, slot: usize, id: u32) -> u32 {
        let local = if self.hashed[slot] && id != 0 {
            let mut key = [0u8; 8];
            key[..4].copy_from_slice(&(slot as u32).to_le_bytes());
            key[4..].copy_from_slice(&id.to_le_bytes());
            1 + (fnv1a64(&key) % u64::from(self.rows[slot] - 1)) as u32
        } else {
            id // ids are checked against the cardinality when a dataset is loaded
        };
        self.offsets[slot] + local
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateMode {
    /// Dense for tables up to 200,000 rows, sparse above.
    Auto,
    Dense,
    Sparse,
}

pub struct EmbeddingTable {
    pub rows: usize,
    pub dim: usize,
    pub weight: Vec<f32>,
    pub moments: Moments,
    pub sparse: bool,
    /// Row → position in the current batch's unique list (u32::MAX = absent).
    mark: Vec<u32>,
}

/// The rows a batch uses: the table rows in order of first use, and for every
/// input position its index into that list.
pub struct Gathered {
    pub unique: Vec<u32>,
    pub local: Vec<u32>,
}

impl EmbeddingTable {
    pub fn new(rows: usize, dim: usize, std: f64, mode: UpdateMode, rng: &mut Rng) -> Self {
        let weight = (0..rows * dim)
            .map(|_| (rng.normal() * std) as f32)
            .collect();
        let sparse = match mode {
            UpdateMode::Auto => rows > 200_000,
            UpdateMode::Dense => false,
            UpdateMode::Sparse => true,
        };
        EmbeddingTable {
            rows,
            dim,
            weight,
            moments: Moments::zeros(rows * dim),
            sparse,
            mark: vec![u32::MAX; rows],
        }
    }

    /// Deduplicate `rows` (table rows, any order). O(len), no allocation of table size.
    pub fn gather_ids(&mut self, rows: &[u32]) -> Gathered {
        let mut unique = Vec::new();
        let mut local = Vec::with_capacity(rows.len());
        for &r in rows {
            let m = &mut self.mark[r as usize];
            if *m == u32::MAX {
                *m = unique.len() as u32;
                unique.push(r);
            }
            local.push(*m);
        }
        for &r in &unique {
            self.mark[r as usize] = u32::MAX;
        }
        Gathered { unique, local }
    }

    /// The unique rows as a trainable (u, dim) variable.
    pub fn rows_var(&self, unique: &[u32], device: &Device, dtype: DType) -> Result<Var> {
        let mut buf = Vec::with_capacity(unique.len() * self.dim);
        for &r in unique {
            let s = r as usize * self.dim;
            buf.extend_from_slice(&self.weight[s..s + self.dim]);
        }
        let t = Tensor::from_vec(buf, (unique.len(), self.dim), device)?.to_dtype(dtype)?;
        Var::from_tensor(&t)
    }

    /// Adam step with the gradient of the gathered rows (u, dim), flattened.
    pub fn step(&mut self, unique: &[u32], grad: &[f32], cfg: &AdamConfig, t: u64) {
        let d = self.dim;
        if self.sparse {
            // Lazy Adam: only the touched rows move (moments of the others are kept).
            let mut w = vec![0f32; d];
            let mut mo = Moments::zeros(d);
            for (k, &r) in unique.iter().enumerate() {
                let s = r as usize * d;
                w.copy_from_slice(&self.weight[s..s + d]);
                mo.m.copy_from_slice(&self.moments.m[s..s + d]);
                mo.v.copy_from_slice(&self.moments.v[s..s + d]);
                adam_step(&mut w, Some(&grad[k * d..(k + 1) * d]), &mut mo, cfg, t);
                self.weight[s..s + d].copy_from_slice(&w);
                self.moments.m[s..s + d].copy_from_slice(&mo.m);
                self.moments.v[s..s + d].copy_from_slice(&mo.v);
            }
        } else {
            let mut dense = vec![0f32; self.rows * d];
            for (k, &r) in unique.iter().enumerate() {
                let s = r as usize * d;
                dense[s..s + d].copy_from_slice(&grad[k * d..(k + 1) * d]);
            }
            adam_step(&mut self.weight, Some(&dense), &mut self.moments, cfg, t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::optim::OptimizerKind;

    fn cfg() -> AdamConfig {
        AdamConfig {
            kind: OptimizerKind::Adam,
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-3,
        }
    }

    #[test]
    fn layout_offsets_and_hashing() {
        let l = Layout::new(&[10, 1000, 5], 100);
        assert_eq!(l.offsets, vec![0, 10, 110]);
        assert_eq!(l.rows, vec![10, 100, 5]);
        assert_eq!(l.row(0, 3), 3);
        assert_eq!(l.row(1, 0), 10, "id 0 stays the missing row");
        let r = l.row(1, 999);
        assert!((11..110).contains(&r));
        assert_eq!(l.row(2, 4), 114);
    }

    #[test]
    fn sparse_and_dense_agree_on_touched_rows_and_differ_elsewhere() {
        let mut a = EmbeddingTable::new(50, 4, 0.1, UpdateMode::Sparse, &mut Rng::new(1));
        let mut b = EmbeddingTable::new(50, 4, 0.1, UpdateMode::Dense, &mut Rng::new(1));
        let g = a.gather_ids(&[7, 3, 7, 9]);
        assert_eq!(g.unique, vec![7, 3, 9]);
        assert_eq!(g.local, vec![0, 1, 0, 2]);
        let grad: Vec<f32> = (0..12).map(|i| i as f32 * 0.1 - 0.5).collect();
        let before = a.weight.clone();
        a.step(&g.unique, &grad, &cfg(), 1);
        b.step(&g.unique, &grad, &cfg(), 1);
        for r in [7usize, 3, 9] {
            assert_eq!(a.weight[r * 4..r * 4 + 4], b.weight[r * 4..r * 4 + 4]);
        }
        // Untouched rows: sparse leaves them, dense applies the weight-decay step.
        assert_eq!(a.weight[0..4], before[0..4]);
        assert_ne!(b.weight[0..4], before[0..4]);
    }

    #[test]
    fn gather_matches_the_table() {
        let t = EmbeddingTable::new(20, 3, 1.0, UpdateMode::Auto, &mut Rng::new(2));
        let v = t.rows_var(&[5, 2], &Device::Cpu, DType::F32).unwrap();
        let got = v.as_tensor().to_vec2::<f32>().unwrap();
        assert_eq!(got[0], t.weight[15..18].to_vec());
        assert_eq!(got[1], t.weight[6..9].to_vec());
    }
}
