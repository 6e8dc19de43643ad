//! The geometry of token states before any kernel: per-dimension
//! standardisation, and ZCA whitening with shrinkage, estimated on the real
//! tokens of the training domains' prompts only (for a held-out run, the seen
//! domains), never on anything a test row decides.
//!
//! Raw LLM states are dominated by a few huge dimensions and one common
//! direction; under the Gaussian kernel w = 1/√h those dimensions decide every
//! distance. Standardising divides each dimension by its spread over the
//! training tokens; whitening also removes the correlations between dimensions
//! (shrunk towards the identity, since a prompt set has fewer tokens than the
//! state has dimensions). Centring alone changes no distance: it only matters
//! for the scale later layers start from.

use anyhow::{Result, bail};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    /// The states as the model wrote them.
    None,
    /// (x − μ) / σ per dimension.
    Standardize,
    /// Standardise, then multiply by S^{-1/2}, S = (1 − α)·C + α·I with C the
    /// correlation matrix of the standardised tokens and α the shrinkage.
    Whiten,
}

impl Normalize {
    pub fn as_str(self) -> &'static str {
        match self {
            Normalize::None => "none",
            Normalize::Standardize => "standardize",
            Normalize::Whiten => "whiten",
        }
    }
}

/// A fitted normalisation x ↦ (x − mean)·M, M (h, h) — diagonal for
/// standardisation.
pub struct Normalizer {
    pub mean: Vec<f64>,
    /// Row-major (h, h).
    pub matrix: Vec<f64>,
    /// Training tokens it was estimated on.
    pub tokens: usize,
}

impl Normalizer {
    /// Fit on the real tokens (`mask` 1) of the domains `fit_on` (rows of
    /// `states` (D, T, h)). `shrinkage` α ∈ (0, 1] is used by `Whiten` only.
    /// None for `Normalize::None`.
    pub fn fit(
        kind: Normalize,
        states: &Tensor,
        mask: &Tensor,
        fit_on: &[usize],
        shrinkage: f64,
    ) -> Result<Option<Normalizer>> {
        if kind == Normalize::None {
            return Ok(None);
        }
        let (_d, _t, h) = states.dims3()?;
        let s = states.to_dtype(DType::F64)?.to_vec3::<f64>()?;
        let m = mask.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        let mut rows: Vec<&[f64]> = Vec::new();
        for &d in fit_on {
            for (t, &mm) in m[d].iter().enumerate() {
                if mm != 0.0 {
                    rows.push(&s[d][t]);
                }
            }
        }
        let n = rows.len();
        if n < 2 {
            bail!(
                "cannot estimate the normalisation `{}` from {n} training token(s): it needs at least 2",
                kind.as_str()
            );
        }
        let mut mean = vec![0f64; h];
        for r in &rows {
            for (a, &x) in mean.iter_mut().zip(r.iter()) {
                *a += x;
            }
        }
        mean.iter_mut().for_each(|a| *a /= n as f64);
        let mut sd = vec![0f64; h];
        for r in &rows {
            for ((a, &x), &mu) in sd.iter_mut().zip(r.iter()).zip(&mean) {
                *a += (x - mu) * (x - mu);
            }
        }
        // A dimension constant over the training tokens is only centred.
        let inv: Vec<f64> = sd
            .iter()
            .map(|&v| {
                let s = (v / n as f64).sqrt();
                if s > 1e-12 { 1.0 / s } else { 1.0 }
            })
            .collect();
        let mut matrix = vec![0f64; h * h];
        match kind {
            Normalize::None => unreachable!(),
            Normalize::Standardize => {
                for i in 0..h {
                    matrix[i * h + i] = inv[i];
                }
            }
            Normalize::Whiten => {
                if !(shrinkage > 0.0 && shrinkage <= 1.0) {
                    bail!("whitening shrinkage {shrinkage} is not in (0, 1]");
                }
                // S = (1 − α)·C + α·I over the standardised tokens.
                let z: Vec<Vec<f64>> = rows
                    .iter()
                    .map(|r| {
                        r.iter()
                            .zip(&mean)
                            .zip(&inv)
                            .map(|((&x, &mu), &iv)| (x - mu) * iv)
                            .collect()
                    })
                    .collect();
                let mut c = vec![0f64; h * h];
                for zr in &z {
                    for i in 0..h {
                        let zi = zr[i];
                        if zi == 0.0 {
                            continue;
                        }
                        let row = &mut c[i * h..(i + 1) * h];
                        for (cij, &zj) in row.iter_mut().zip(zr) {
                            *cij += zi * zj;
                        }
                    }
                }
                for (k, v) in c.iter_mut().enumerate() {
                    *v = (1.0 - shrinkage) * *v / n as f64
                        + if k / h == k % h { shrinkage } else { 0.0 };
                }
                let (vals, vecs) = sym_eigen(c, h);
                // W = V Λ^{-1/2} Vᵀ; M = diag(1/σ)·W.
                let mut w = vec![0f64; h * h];
                for k in 0..h {
                    let f = 1.0 / vals[k].max(1e-300).sqrt();
                    for i in 0..h {
                        let vik = vecs[i * h + k] * f;
                        if vik == 0.0 {
                            continue;
                        }
                        for j in 0..h {
                            w[i * h + j] += vik * vecs[j * h + k];
                        }
                    }
                }
                for i in 0..h {
                    for j in 0..h {
                        matrix[i * h + j] = inv[i] * w[i * h + j];
                    }
                }
            }
        }
        Ok(Some(Normalizer {
            mean,
            matrix,
            tokens: n,
        }))
    }

    /// Apply to states (…, h) → same shape, in the states' dtype.
    pub fn apply(&self, states: &Tensor) -> Result<Tensor> {
        let h = self.mean.len();
        let shape = states.shape().clone();
        let dev = states.device();
        let x = states.to_dtype(DType::F64)?.reshape(((), h))?;
        let mu = Tensor::from_slice(&self.mean, h, dev)?;
        let m = Tensor::from_slice(&self.matrix, (h, h), dev)?;
        Ok(x.broadcast_sub(&mu)?
            .matmul(&m)?
            .reshape(shape)?
            .to_dtype(states.dtype())?)
    }

    /// From the tensors [`Normalizer::tensors`] saved: `mean` (h), `matrix` (h, h).
    pub fn from_tensors(mean: &Tensor, matrix: &Tensor) -> Result<Normalizer> {
        let h = mean.dim(0)?;
        if mean.rank() != 1 || matrix.dims() != [h, h] {
            bail!(
                "a normalisation is a mean (h) and a matrix (h, h); got {:?} and {:?}",
                mean.dims(),
                matrix.dims()
            );
        }
        let f = |t: &Tensor| -> Result<Vec<f64>> {
            Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
        };
        Ok(Normalizer {
            mean: f(mean)?,
            matrix: f(matrix)?,
            tokens: 0,
        })
    }

    /// `mean` (h) and `matrix` (h, h) as f32 tensors, to save with a run.
    pub fn tensors(&self) -> Result<(Tensor, Tensor)> {
        let h = self.mean.len();
        let dev = &candle_core::Device::Cpu;
        let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        Ok((
            Tensor::from_vec(f(&self.mean), h, dev)?,
            Tensor::from_vec(f(&self.matrix), (h, h), dev)?,
        ))
    }
}

/// Eigen-decomposition of a symmetric matrix `a` (row-major n × n), by
/// nalgebra's symmetric eigensolver: eigenvalues, and eigenvectors as the
/// columns of a row-major n × n matrix V, so that A = V·diag(λ)·Vᵀ.
pub fn sym_eigen(a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    let e = nalgebra::DMatrix::from_row_slice(n, n, &a).symmetric_eigen();
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        for k in 0..n {
            v[i * n + k] = e.eigenvectors[(i, k)];
        }
    }
    (e.eigenvalues.iter().copied().collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::rng::Rng;
    use candle_core::Device;

    #[test]
    fn eigen_by_hand_and_reconstructs() {
        // [[2, 1], [1, 2]]: eigenvalues 1 and 3.
        let (mut l, _) = sym_eigen(vec![2., 1., 1., 2.], 2);
        l.sort_by(f64::total_cmp);
        assert!(
            (l[0] - 1.0).abs() < 1e-12 && (l[1] - 3.0).abs() < 1e-12,
            "{l:?}"
        );
        // A random symmetric 7 × 7: V·Λ·Vᵀ = A and VᵀV = I.
        let n = 7;
        let mut rng = Rng::new(3);
        let mut a = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..=i {
                let x = rng.normal();
                a[i * n + j] = x;
                a[j * n + i] = x;
            }
        }
        let (l, v) = sym_eigen(a.clone(), n);
        for i in 0..n {
            for j in 0..n {
                let rec: f64 = (0..n).map(|k| v[i * n + k] * l[k] * v[j * n + k]).sum();
                let id: f64 = (0..n).map(|k| v[k * n + i] * v[k * n + j]).sum();
                assert!((rec - a[i * n + j]).abs() < 1e-10, "A[{i},{j}]");
                assert!(
                    (id - f64::from(u8::from(i == j))).abs() < 1e-10,
                    "VᵀV[{i},{j}]"
                );
            }
        }
    }

    /// Tokens (1, n, h) with a mean, very different scales and correlated dimensions.
    fn tokens(n: usize, h: usize) -> (Tensor, Tensor) {
        let mut rng = Rng::new(5);
        let mut v = Vec::new();
        for _ in 0..n {
            let common = rng.normal();
            for j in 0..h {
                let scale = if j == 0 { 1000.0 } else { 1.0 + j as f64 };
                v.push(5.0 + scale * (rng.normal() + 2.0 * common));
            }
        }
        let s = Tensor::from_vec(v, (1, n, h), &Device::Cpu).unwrap();
        let m = Tensor::ones((1, n), DType::F64, &Device::Cpu).unwrap();
        (s, m)
    }

    /// Covariance (population) of the rows of x (n, h).
    fn cov(x: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let (n, h) = (x.len(), x[0].len());
        let mu: Vec<f64> = (0..h)
            .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n as f64)
            .collect();
        (0..h)
            .map(|i| {
                (0..h)
                    .map(|j| {
                        x.iter()
                            .map(|r| (r[i] - mu[i]) * (r[j] - mu[j]))
                            .sum::<f64>()
                            / n as f64
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn standardize_gives_unit_variance_and_whiten_the_shrunk_identity() {
        let (h, n) = (4, 400);
        let (s, m) = tokens(n, h);
        let st = Normalizer::fit(Normalize::Standardize, &s, &m, &[0], 0.1)
            .unwrap()
            .unwrap();
        let x = st
            .apply(&s)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        let c = cov(&x);
        for (i, row) in c.iter().enumerate() {
            assert!((row[i] - 1.0).abs() < 1e-9, "var {i} = {}", row[i]);
        }
        assert!(c[0][1].abs() > 0.3, "standardising keeps correlations");
        // Whitening with α: the covariance of the output is C·S⁻¹ with
        // S = (1 − α)C + αI; α → 0 gives I.
        for alpha in [1e-9, 0.5] {
            let wh = Normalizer::fit(Normalize::Whiten, &s, &m, &[0], alpha)
                .unwrap()
                .unwrap();
            let x = wh
                .apply(&s)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec2::<f64>()
                .unwrap();
            let cw = cov(&x);
            // Eigenvalues of the output covariance are λ/((1−α)λ+α) ≤ 1/(1−α).
            let flat: Vec<f64> = cw.iter().flatten().copied().collect();
            let (l, _) = sym_eigen(flat, h);
            let (lc, _) = sym_eigen(c.iter().flatten().copied().collect(), h);
            let mut want: Vec<f64> = lc
                .iter()
                .map(|&v| v / ((1.0 - alpha) * v + alpha))
                .collect();
            let mut got = l.clone();
            want.sort_by(f64::total_cmp);
            got.sort_by(f64::total_cmp);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-8, "α {alpha}: {got:?} vs {want:?}");
            }
            if alpha < 1e-6 {
                for (i, row) in cw.iter().enumerate() {
                    for (j, &v) in row.iter().enumerate() {
                        let id = f64::from(u8::from(i == j));
                        assert!((v - id).abs() < 1e-6, "cov[{i},{j}] = {v}");
                    }
                }
            }
        }
        // α = 1 is standardisation.
        let w1 = Normalizer::fit(Normalize::Whiten, &s, &m, &[0], 1.0)
            .unwrap()
            .unwrap();
        for (a, b) in w1.matrix.iter().zip(&st.matrix) {
            assert!((a - b).abs() < 1e-12);
        }
    }

    #[test]
    fn fit_sees_only_the_named_domains_and_real_tokens() {
        // Domain 0: tokens 1 and 3 (real), domain 1: huge values (held out),
        // padding of domain 0 holds huge values too.
        let s = Tensor::new(
            &[[[1f64], [1e6], [3.]], [[1e9], [1e9], [-1e9]]],
            &Device::Cpu,
        )
        .unwrap();
        let m = Tensor::new(&[[1f64, 0., 1.], [1., 1., 1.]], &Device::Cpu).unwrap();
        let st = Normalizer::fit(Normalize::Standardize, &s, &m, &[0], 0.1)
            .unwrap()
            .unwrap();
        assert_eq!(st.tokens, 2);
        assert!((st.mean[0] - 2.0).abs() < 1e-12);
        assert!((st.matrix[0] - 1.0).abs() < 1e-12, "σ = 1");
        assert!(
            Normalizer::fit(Normalize::None, &s, &m, &[0], 0.1)
                .unwrap()
                .is_none()
        );
        let e = Normalizer::fit(
            Normalize::Standardize,
            &s,
            &m.zeros_like().unwrap(),
            &[0],
            0.1,
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("0 training token"), "{e}");
    }
}
