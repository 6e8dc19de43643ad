//! Target attention over a history whose keys and values are rows of small
//! tables: row i's output is Σ_j w_ij · v[idx_ij], w_i = softmax over the
//! positions j with mask_ij = 1 of scale · (q_i · k[idx_ij]); a row with no
//! position gives zeros.
//!
//! Composed of candle ops this is a dense (rows × table rows) score matrix,
//! gathered at the positions, soft-maxed and scattered back before the product
//! with the values: a dozen graph nodes over (rows × table rows) buffers, each
//! with its gradient buffer. Here it is one graph node whose forward and
//! backward passes visit each row's positions only (rows × positions × width
//! operations). Other devices and dtypes take the composed path
//! (`sequence::Attention::target_compact`; tests compare both).

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{storage_f32 as f32s, with_f32s};
use super::vmath::dot;

/// Rows per task of the backward pass: each task sums its keys' and values'
/// gradients in a buffer of its own, the buffers added in task order, so the
/// digits do not depend on the thread count.
const ROWS_PER_TASK: usize = 256;

struct GatheredAttention {
    /// Table row of each (row, position), row-major (n × l).
    idx: Vec<u32>,
    /// 1 for a history position, 0 for padding (n × l).
    mask: Vec<f32>,
    l: usize,
    scale: f32,
}

impl GatheredAttention {
    /// Row i's attention weights over its positions (0 at padding) into `w`.
    fn weights(&self, i: usize, q: &[f32], k: &[f32], width: usize, w: &mut [f32]) {
        let (idx, mask) = (
            &self.idx[i * self.l..][..self.l],
            &self.mask[i * self.l..][..self.l],
        );
        let mut max = f32::NEG_INFINITY;
        for j in 0..self.l {
            if mask[j] != 0.0 {
                let r = idx[j] as usize;
                w[j] = dot(q, &k[r * width..][..width]) * self.scale;
                max = max.max(w[j]);
            }
        }
        let mut z = 0f32;
        for j in 0..self.l {
            w[j] = if mask[j] != 0.0 {
                (w[j] - max).exp()
            } else {
                0.0
            };
            z += w[j];
        }
        if z > 0.0 {
            for x in w.iter_mut() {
                *x /= z;
            }
        }
    }
}

impl CustomOp3 for GatheredAttention {
    fn name(&self) -> &'static str {
        "gathered-target-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (
            f32s(s1, l1, self.name())?,
            f32s(s2, l2, self.name())?,
            f32s(s3, l3, self.name())?,
        );
        let (n, width) = l1.shape().dims2()?;
        let dv = l3.shape().dims2()?.1;
        let mut out = vec![0f32; n * dv];
        out.par_chunks_mut(dv.max(1))
            .enumerate()
            .with_min_len(64)
            .for_each_init(
                || vec![0f32; self.l],
                |w, (i, o)| {
                    self.weights(i, &q[i * width..][..width], k, width, w);
                    for (j, &wj) in w.iter().enumerate() {
                        if wj != 0.0 {
                            let r = self.idx[i * self.l + j] as usize;
                            for (o, &x) in o.iter_mut().zip(&v[r * dv..][..dv]) {
                                *o += wj * x;
                            }
                        }
                    }
                },
            );
        Ok((CpuStorage::F32(out), Shape::from((n, dv))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, width) = q.dims2()?;
        let (u, dv) = v.dims2()?;
        let (dq, dk, dv_) = with_f32s(&[q, k, v, grad], |s| {
            self.grads(s[0], s[1], s[2], s[3], (n, width, u, dv))
        })?;
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, (n, width), dev)?),
            Some(Tensor::from_vec(dk, (u, width), dev)?),
            Some(Tensor::from_vec(dv_, (u, dv), dev)?),
        ))
    }
}

impl GatheredAttention {
    /// With w_j the weights, gv_j = g · v[idx_j] and ds_j = w_j (gv_j − Σ w gv):
    /// dq = scale Σ_j ds_j k[idx_j]; dk[idx_j] += scale ds_j q; dv[idx_j] += w_j g.
    #[allow(clippy::type_complexity)]
    fn grads(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        g: &[f32],
        (n, width, u, dv): (usize, usize, usize, usize),
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut dq = vec![0f32; n * width];
        let parts: Vec<(Vec<f32>, Vec<f32>)> = dq
            .par_chunks_mut(ROWS_PER_TASK * width)
            .enumerate()
            .map(|(t, dq)| {
                let mut dk = vec![0f32; u * width];
                let mut dvt = vec![0f32; u * dv];
                let (mut w, mut ds) = (vec![0f32; self.l], vec![0f32; self.l]);
                for (a, dqi) in dq.chunks_mut(width).enumerate() {
                    let i = t * ROWS_PER_TASK + a;
                    let (qi, gi) = (&q[i * width..][..width], &g[i * dv..][..dv]);
                    self.weights(i, qi, k, width, &mut w);
                    let idx = &self.idx[i * self.l..][..self.l];
                    let mut mean = 0f32;
                    for j in 0..self.l {
                        if w[j] != 0.0 {
                            ds[j] = dot(gi, &v[idx[j] as usize * dv..][..dv]);
                            mean += w[j] * ds[j];
                        }
                    }
                    for j in 0..self.l {
                        if w[j] == 0.0 {
                            continue;
                        }
                        let r = idx[j] as usize;
                        let s = w[j] * (ds[j] - mean) * self.scale;
                        let kr = &k[r * width..][..width];
                        for (d, &x) in dqi.iter_mut().zip(kr) {
                            *d += s * x;
                        }
                        for (d, &x) in dk[r * width..][..width].iter_mut().zip(qi) {
                            *d += s * x;
                        }
                        for (d, &x) in dvt[r * dv..][..dv].iter_mut().zip(gi) {
                            *d += w[j] * x;
                        }
                    }
                }
                (dk, dvt)
            })
            .collect();
        let mut parts = parts.into_iter();
        let (mut dk, mut dvt) = parts
            .next()
            .unwrap_or_else(|| (vec![0f32; u * width], vec![0f32; u * dv]));
        for (a, b) in parts {
            dk.iter_mut().zip(a).for_each(|(x, y)| *x += y);
            dvt.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        (dq, dk, dvt)
    }
}

/// The attention of `q` (n, width) over each row's `l` history positions,
/// keys `k` (u, width) and values `v` (u, dv) looked up by `idx` (n·l table
/// rows, row-major), `mask` (n·l) 1 at a position and 0 at padding, scores
/// scaled by `scale`: (n, dv). For f32 CPU tensors only (`fits` says).
pub fn gathered_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    idx: Vec<u32>,
    mask: Vec<f32>,
    scale: f64,
) -> Result<Tensor> {
    let (n, width) = q.dims2()?;
    let (u, kw) = k.dims2()?;
    let (vu, _) = v.dims2()?;
    if kw != width || vu != u || idx.len() != mask.len() || n == 0 || !idx.len().is_multiple_of(n) {
        candle_core::bail!(
            "gathered attention: queries {:?}, keys {:?}, values {:?} and {} positions do not match",
            q.dims(),
            k.dims(),
            v.dims(),
            idx.len()
        );
    }
    if let Some(&bad) = idx.iter().find(|&&r| r as usize >= u) {
        candle_core::bail!("gathered attention: table row {bad} of {u}");
    }
    let l = idx.len() / n;
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        GatheredAttention {
            idx,
            mask,
            l,
            scale: scale as f32,
        },
    )
}

/// Whether [`gathered_attention`] runs for these tensors (f32 on the CPU).
pub fn fits(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::fused::tests::{rand, same};
    use candle_core::Device;

    /// Row-major (n × l) positions into a table of `u` rows and their mask:
    /// row i keeps its first (i mod (l + 1)) positions (row 0: none), and
    /// repeats table rows.
    fn history(n: usize, l: usize, u: usize) -> (Vec<u32>, Vec<f32>) {
        let idx = (0..n * l).map(|p| ((p * 7 + p / l) % u) as u32).collect();
        let mask = (0..n * l)
            .map(|p| if p % l < (p / l) % (l + 1) { 1.0 } else { 0.0 })
            .collect();
        (idx, mask)
    }

    /// The same attention from candle ops: keys and values gathered per
    /// position, a masked softmax, the weighted sum.
    fn composed(t: &[Tensor], idx: &[u32], mask: &[f32], l: usize, scale: f64) -> Result<Tensor> {
        let (q, k, v) = (&t[0], &t[1], &t[2]);
        let n = q.dim(0)?;
        let at = Tensor::from_vec(idx.to_vec(), n * l, &Device::Cpu)?;
        let m = Tensor::from_vec(mask.to_vec(), (n, l), &Device::Cpu)?;
        let kg = k.index_select(&at, 0)?.reshape((n, l, k.dim(1)?))?;
        let vg = v.index_select(&at, 0)?.reshape((n, l, v.dim(1)?))?;
        let s = (kg.broadcast_mul(&q.unsqueeze(1)?)?.sum(2)? * scale)?;
        let w = (crate::nn::ops::softmax(&(&s + ((&m - 1.0)? * 1e9)?)?)? * &m)?;
        vg.broadcast_mul(&w.unsqueeze(2)?)?.sum(1)
    }

    #[test]
    fn matches_the_composed_attention_values_and_gradients() {
        // 600 rows: three backward tasks, the last one partial.
        for (n, l, u, w, dv) in [(600, 6, 11, 8, 5), (3, 4, 2, 3, 2)] {
            let (idx, mask) = history(n, l, u);
            let scale = 1.0 / (w as f64).sqrt();
            same(
                &[rand(&[n, w], 41), rand(&[u, w], 42), rand(&[u, dv], 43)],
                |t| gathered_attention(&t[0], &t[1], &t[2], idx.clone(), mask.clone(), scale),
                |t| composed(t, &idx, &mask, l, scale),
            );
        }
    }

    #[test]
    fn a_row_without_history_gives_zeros_and_bad_rows_are_errors() {
        let (q, k, v) = (rand(&[2, 3], 1), rand(&[4, 3], 2), rand(&[4, 2], 3));
        let out = gathered_attention(&q, &k, &v, vec![1, 2, 3, 0], vec![0., 0., 1., 1.], 1.0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(out[0], vec![0.0, 0.0]);
        assert!(out[1].iter().all(|x| *x != 0.0));
        let e = gathered_attention(&q, &k, &v, vec![1, 4, 0, 0], vec![1.; 4], 1.0);
        assert!(e.unwrap_err().to_string().contains("table row 4 of 4"));
    }
}
