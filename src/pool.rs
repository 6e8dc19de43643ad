//! Gaussian attention pooling: Nadaraya–Watson kernel regression over a domain's
//! token states, f(q) = Σᵢ softmax_i(−½‖(q − kᵢ) ⊙ w‖²) · vᵢ with kᵢ = vᵢ the
//! token states. `parameterless`: w fixed (default 1/√h, so squared distances are
//! O(1)); the query is the last token's state, the mean state, or the mean of the
//! domain-name tokens' states (the tokens the prompt's `{domain}` became).
//! `parametric`: w learned per dimension (initialised at 1/√h), optionally a
//! learned query added to the chosen one ([`Parametric`]).

use crate::nn::ops::softmax;
use candle_core::{D, Result, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Query {
    /// The last (non-padding) token's state.
    Last,
    /// The mean of the token states.
    Mean,
    /// The mean of the domain-name tokens' states: the tokens that overlap the
    /// text `{domain}` was replaced with (`name_mask` of the token states).
    Name,
}

impl Query {
    pub fn as_str(self) -> &'static str {
        match self {
            Query::Last => "last",
            Query::Mean => "mean",
            Query::Name => "name",
        }
    }
}

/// Which tokens of each domain's prompt are real (`mask`, 1/0, (D, T)) and
/// which of them spell the domain's name (`names`, (D, T); None for token
/// states written before names were recorded).
#[derive(Clone, Copy)]
pub struct Tokens<'a> {
    pub mask: &'a Tensor,
    pub names: Option<&'a Tensor>,
}

impl<'a> Tokens<'a> {
    pub fn new(mask: &'a Tensor, names: Option<&'a Tensor>) -> Self {
        Tokens { mask, names }
    }
}

/// Masked mean over the tokens: states (D, T, h), m (D, T) of 1/0 → (D, h).
fn masked_mean(states: &Tensor, m: &Tensor) -> Result<Tensor> {
    states
        .broadcast_mul(&m.unsqueeze(2)?)?
        .sum(1)?
        .broadcast_div(&m.sum_keepdim(1)?)
}

/// The query of each domain: states (D, T, h) and their tokens → (D, h).
pub fn query(states: &Tensor, tok: Tokens, q: Query) -> Result<Tensor> {
    let (dn, _t, h) = states.dims3()?;
    let mask = tok.mask;
    match q {
        Query::Mean => masked_mean(states, mask),
        Query::Name => {
            let Some(names) = tok.names else {
                candle_core::bail!(
                    "the query `name` needs the domain-name tokens, which these token states do not record"
                )
            };
            masked_mean(states, names)
        }
        Query::Last => {
            // Index of the last real token of each row.
            let lens: Vec<u32> = mask
                .sum(1)?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?
                .iter()
                .map(|&l| (l.max(1.0) as u32) - 1)
                .collect();
            let idx = Tensor::from_vec(lens, (dn, 1, 1), states.device())?
                .broadcast_as((dn, 1, h))?
                .contiguous()?;
            states.gather(&idx, 1)?.squeeze(1)
        }
    }
}

/// Pool states (D, T, h) with mask (D, T) around queries (D, h) with per-dimension
/// weights w (h) → (D, h). Padding positions get no weight.
pub fn gaussian_pool(states: &Tensor, mask: &Tensor, q: &Tensor, w: &Tensor) -> Result<Tensor> {
    let diff = states.broadcast_sub(&q.unsqueeze(1)?)?.broadcast_mul(w)?; // (D, T, h)
    let logits = (diff.sqr()?.sum(D::Minus1)? * -0.5)?; // (D, T)
    let neg = ((mask.ones_like()? - mask)? * -1e9)?;
    let a = softmax(&(logits + neg)?)?; // (D, T)
    a.unsqueeze(2)?.broadcast_mul(states)?.sum(1)
}

/// The parameterless pooling: w = scale (1/√h when None) in every dimension.
pub fn parameterless(states: &Tensor, tok: Tokens, q: Query, scale: Option<f64>) -> Result<Tensor> {
    let h = states.dim(2)?;
    let s = scale.unwrap_or(1.0 / (h as f64).sqrt());
    let w = Tensor::full(s as f32, h, states.device())?.to_dtype(states.dtype())?;
    gaussian_pool(states, tok.mask, &query(states, tok, q)?, &w)
}

/// Parametric Gaussian pooling: learned per-dimension weights w (initialised at
/// 1/√h) and, optionally, a learned offset added to the query.
pub struct Parametric {
    pub w: Tensor,
    pub query_offset: Option<Tensor>,
    pub query: Query,
}

impl Parametric {
    pub fn new(
        ps: &mut crate::nn::params::ParamStore,
        h: usize,
        query: Query,
        learned_query: bool,
    ) -> Result<Self> {
        let w = ps.fill("pool.w", &[h], 1.0 / (h as f64).sqrt())?;
        let query_offset = if learned_query {
            Some(ps.fill("pool.query_offset", &[h], 0.0)?)
        } else {
            None
        };
        Ok(Parametric {
            w,
            query_offset,
            query,
        })
    }

    /// States (D, T, h) and their tokens → (D, h).
    pub fn forward(&self, states: &Tensor, tok: Tokens) -> Result<Tensor> {
        let mut q = query(states, tok, self.query)?;
        if let Some(o) = &self.query_offset {
            q = q.broadcast_add(o)?;
        }
        gaussian_pool(states, tok.mask, &q, &self.w)
    }
}

/// Gaussian kernel weights of `others` around `q`: softmax_j(−½‖(q − e_j)·w‖²)
/// with w = `scale` (1/√h when None) in every dimension — the pooling's kernel,
/// used to mix the seen domains for an unseen one.
pub fn kernel_weights(q: &[f32], others: &[&[f32]], scale: Option<f64>) -> Vec<f64> {
    let w = scale.unwrap_or(1.0 / (q.len().max(1) as f64).sqrt());
    let logits: Vec<f64> = others
        .iter()
        .map(|e| {
            let d2: f64 = q
                .iter()
                .zip(e.iter())
                .map(|(&a, &b)| ((a as f64 - b as f64) * w).powi(2))
                .sum();
            -0.5 * d2
        })
        .collect();
    let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|v| v / z).collect()
}

/// The perplexity exp(−Σ a ln a) of weights a that sum to one: the effective
/// number of items they mix (n for uniform weights, 1 for one-hot).
pub fn perplexity(weights: &[f64]) -> f64 {
    (-weights
        .iter()
        .map(|&a| if a > 0.0 { a * a.ln() } else { 0.0 })
        .sum::<f64>())
    .exp()
}

/// The median-heuristic bandwidth over rows `among` of `m`: w = 1/√(median
/// squared distance between two of them); None when that median is 0 or there
/// are fewer than two rows.
pub fn median_scale(m: &[Vec<f32>], among: &[usize]) -> Option<f64> {
    let mut d2 = Vec::new();
    for (a, &i) in among.iter().enumerate() {
        for &j in &among[a + 1..] {
            d2.push(
                m[i].iter()
                    .zip(&m[j])
                    .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                    .sum::<f64>(),
            );
        }
    }
    d2.sort_by(f64::total_cmp);
    d2.get(d2.len() / 2)
        .filter(|&&v| v > 0.0)
        .map(|&v| 1.0 / v.sqrt())
}

/// Kernel perplexity of domain embeddings `m` (one row per domain): for each
/// domain, the perplexity of its [`kernel_weights`] over all the other domains
/// (bandwidth `scale`, 1/√h when None), averaged over the domains. It is the
/// effective number of neighbours a domain's kernel mixes: D − 1 when every
/// domain is equally far from every other (the embeddings do not separate), near
/// 1 when each domain has one clear nearest neighbour. NaN for fewer than two rows.
pub fn kernel_perplexity(m: &[Vec<f32>], scale: Option<f64>) -> f64 {
    if m.len() < 2 {
        return f64::NAN;
    }
    let sum: f64 = (0..m.len())
        .map(|i| {
            let others: Vec<&[f32]> = (0..m.len())
                .filter(|&j| j != i)
                .map(|j| m[j].as_slice())
                .collect();
            perplexity(&kernel_weights(&m[i], &others, scale))
        })
        .sum();
    sum / m.len() as f64
}

/// [`kernel_perplexity`] of a (D, h) tensor with the pooling's bandwidth (1/√h)
/// and with the median heuristic: what `embed` and `pool` report.
pub fn kernel_perplexities(dm: &Tensor) -> Result<KernelPerplexity> {
    let m = dm.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
    let all: Vec<usize> = (0..m.len()).collect();
    let h = m.first().map_or(1, Vec::len).max(1) as f64;
    let mut d2 = Vec::new();
    for i in 0..m.len() {
        for j in i + 1..m.len() {
            d2.push(
                m[i].iter()
                    .zip(&m[j])
                    .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                    .sum::<f64>()
                    / h,
            );
        }
    }
    d2.sort_by(f64::total_cmp);
    let at = |q: f64| {
        d2.get(((d2.len().saturating_sub(1)) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(KernelPerplexity {
        pooling: kernel_perplexity(&m, None),
        median: kernel_perplexity(&m, median_scale(&m, &all)),
        of: m.len().saturating_sub(1),
        d2_min: at(0.0),
        d2_median: at(0.5),
        d2_max: at(1.0),
    })
}

/// How far adapters moved the domain embeddings: each domain's squared distance
/// / h between its embedding with and without the adapters, set against the
/// squared distances / h between two domains without them. A `ratio` near 0
/// means the adapters left every domain where the frozen model put it, relative
/// to how far apart the domains are.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct AdapterShift {
    /// Over the domains: median and largest squared distance / h moved.
    pub d2_median: f64,
    pub d2_max: f64,
    /// Median squared distance / h between two domains without adapters.
    pub between_domains_d2_median: f64,
    /// d2_median / between_domains_d2_median.
    pub ratio: f64,
}

/// [`AdapterShift`] of `adapted` against `frozen`, both (D, h).
pub fn adapter_shift(adapted: &Tensor, frozen: &Tensor) -> Result<AdapterShift> {
    let a = adapted
        .to_dtype(candle_core::DType::F32)?
        .to_vec2::<f32>()?;
    let f = frozen.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
    let h = f.first().map_or(1, Vec::len).max(1) as f64;
    let d2 = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(p, q)| (f64::from(*p) - f64::from(*q)).powi(2))
            .sum::<f64>()
            / h
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let moved: Vec<f64> = a.iter().zip(&f).map(|(x, y)| d2(x, y)).collect();
    let d2_max = moved.iter().copied().fold(f64::NAN, f64::max);
    let mut between = Vec::new();
    for i in 0..f.len() {
        for j in i + 1..f.len() {
            between.push(d2(&f[i], &f[j]));
        }
    }
    let (d2_median, between) = (median(moved), median(between));
    Ok(AdapterShift {
        d2_median,
        d2_max,
        between_domains_d2_median: between,
        ratio: d2_median / between,
    })
}

impl std::fmt::Display for AdapterShift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "adapters moved each domain by a squared distance / h of {:.5} (median; largest {:.5}), {:.3}× the median between two domains without them ({:.5})",
            self.d2_median, self.d2_max, self.ratio, self.between_domains_d2_median
        )
    }
}

/// Kernel perplexities of a set of domain embeddings (see [`kernel_perplexity`]).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct KernelPerplexity {
    /// With w = 1/√h (the pooling's and `train.unseen_kernel = "pooling"`'s).
    pub pooling: f64,
    /// With the median heuristic (`train.unseen_kernel = "median"`).
    pub median: f64,
    /// The largest possible value: the number of other domains.
    pub of: usize,
    /// Squared distances between two domains' embeddings, divided by h (so they
    /// read against the pooling kernel's w² = 1/h: its logit is −½ of them):
    /// smallest, median and largest over the pairs. A small spread between them
    /// keeps every kernel weight alike, whatever the neighbours' order.
    #[serde(default)]
    pub d2_min: f64,
    #[serde(default)]
    pub d2_median: f64,
    #[serde(default)]
    pub d2_max: f64,
}

impl std::fmt::Display for KernelPerplexity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "kernel perplexity {:.2} of {} (w = 1/√h), {:.2} (median heuristic); squared distances / h between domains: min {:.4}, median {:.4}, max {:.4}",
            self.pooling, self.of, self.median, self.d2_min, self.d2_median, self.d2_max
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn adapter_shift_by_hand() {
        use candle_core::{Device, Tensor};
        // Frozen: three domains on a line at 0, 2, 4 (h = 1): squared
        // distances 4, 16, 4, median 4. Adapted: the first moves by 1, the
        // others stay: moved 1, 0, 0, median 0, largest 1.
        let dev = Device::Cpu;
        let frozen = Tensor::new(&[[0f32], [2.], [4.]], &dev).unwrap();
        let adapted = Tensor::new(&[[1f32], [2.], [4.]], &dev).unwrap();
        let s = super::adapter_shift(&adapted, &frozen).unwrap();
        assert_eq!(s.d2_median, 0.0);
        assert_eq!(s.d2_max, 1.0);
        assert_eq!(s.between_domains_d2_median, 4.0);
        assert_eq!(s.ratio, 0.0);
        let s = super::adapter_shift(&(frozen.clone() + 1.0).unwrap(), &frozen).unwrap();
        assert_eq!((s.d2_median, s.ratio), (1.0, 0.25));
    }

    #[test]
    fn kernel_weights_by_hand() {
        // q = (0, 0); e0 = (1, 0) at d² 1, e1 = (0, 2) at d² 4, w = 1:
        // weights ∝ e^-0.5, e^-2.
        let w = super::kernel_weights(&[0., 0.], &[&[1., 0.], &[0., 2.]], Some(1.0));
        let a = (-0.5f64).exp() / ((-0.5f64).exp() + (-2f64).exp());
        assert!(
            (w[0] - a).abs() < 1e-12 && (w[1] - (1.0 - a)).abs() < 1e-12,
            "{w:?}"
        );
        // Equidistant (one-hot) vectors get equal weights.
        let w = super::kernel_weights(&[1., 0., 0.], &[&[0., 1., 0.], &[0., 0., 1.]], None);
        assert!((w[0] - 0.5).abs() < 1e-12);
    }

    use super::*;
    use candle_core::Device;

    #[test]
    fn parametric_starts_as_parameterless_and_matches_finite_differences() {
        use crate::nn::params::ParamStore;
        use crate::nn::rng::Rng;
        let d = Device::Cpu;
        let mut rng = Rng::new(4);
        let v: Vec<f64> = (0..3 * 5 * 4).map(|_| rng.normal()).collect();
        let states = Tensor::from_vec(v, (3, 5, 4), &d).unwrap();
        let mask = Tensor::new(
            &[
                [1f64, 1., 1., 1., 1.],
                [1., 1., 1., 0., 0.],
                [1., 0., 0., 0., 0.],
            ],
            &d,
        )
        .unwrap();
        // Name tokens: two of the first row, one of the second, the only token of the third.
        let names = Tensor::new(
            &[
                [0f64, 1., 1., 0., 0.],
                [0., 0., 1., 0., 0.],
                [1., 0., 0., 0., 0.],
            ],
            &d,
        )
        .unwrap();
        let tok = Tokens::new(&mask, Some(&names));
        for q in [Query::Last, Query::Mean, Query::Name] {
            let mut ps = ParamStore::new(candle_core::DType::F64, &d);
            let layer = Parametric::new(&mut ps, 4, q, true).unwrap();
            let a = layer.forward(&states, tok).unwrap();
            let b = parameterless(&states, tok, q, None).unwrap();
            let diff = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(
                diff < 1e-12,
                "at initialisation it is the parameterless pooling"
            );
            // Move off the initial point so every gradient is generic, then check.
            ps.get("pool.w")
                .unwrap()
                .set(&Tensor::new(&[0.3f64, 0.7, 0.45, 0.9], &d).unwrap())
                .unwrap();
            ps.get("pool.query_offset")
                .unwrap()
                .set(&Tensor::new(&[0.1f64, -0.2, 0.05, 0.3], &d).unwrap())
                .unwrap();
            let probe = Tensor::from_vec(
                (0..12).map(|i| (i as f64 * 0.61).sin()).collect::<Vec<_>>(),
                (3, 4),
                &d,
            )
            .unwrap();
            let f = || (layer.forward(&states, tok)? * &probe)?.sum_all();
            let (err, dead) = crate::nn::gradcheck::check(&ps, 4, 1e-6, &f).unwrap();
            assert!(dead.is_empty(), "{q:?}: no gradient for {dead:?}");
            assert!(err < 1e-5, "{q:?}: relative error {err}");
        }
    }

    #[test]
    fn hand_computed_example() {
        // One domain, three tokens in 2-D, the third is padding; w = 1.
        // q = last real token = (1, 0). Distances²: k0 = (0, 0) → 1, k1 = (1, 0) → 0.
        // Weights ∝ exp(−0.5), exp(0) → a0 = 1/(1+e^0.5), a1 = e^0.5/(1+e^0.5).
        // f = a0·(0,0) + a1·(1,0) = (a1, 0).
        let d = Device::Cpu;
        let states = Tensor::new(&[[[0f64, 0.], [1., 0.], [9., 9.]]], &d).unwrap();
        let mask = Tensor::new(&[[1f64, 1., 0.]], &d).unwrap();
        let out = parameterless(&states, Tokens::new(&mask, None), Query::Last, Some(1.0))
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        let a1 = 0.5f64.exp() / (1.0 + 0.5f64.exp());
        assert!((out[0][0] - a1).abs() < 1e-12, "{:?}", out);
        assert!(out[0][1].abs() < 1e-12);
        // Mean query: q = (0.5, 0): both at distance² 0.25 → equal weights → (0.5, 0).
        let out = parameterless(&states, Tokens::new(&mask, None), Query::Mean, Some(1.0))
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        assert!((out[0][0] - 0.5).abs() < 1e-12 && out[0][1].abs() < 1e-12);
        // Name query over token 0 only: q = (0, 0); distances² 0 and 1 →
        // weights ∝ 1, e^-0.5 → f = (a1', 0) with a1' = e^-0.5/(1+e^-0.5).
        let names = Tensor::new(&[[1f64, 0., 0.]], &d).unwrap();
        let tok = Tokens::new(&mask, Some(&names));
        let q = query(&states, tok, Query::Name)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        assert_eq!(q, vec![vec![0.0, 0.0]]);
        let out = parameterless(&states, tok, Query::Name, Some(1.0))
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        let b = (-0.5f64).exp() / (1.0 + (-0.5f64).exp());
        assert!(
            (out[0][0] - b).abs() < 1e-12 && out[0][1].abs() < 1e-12,
            "{out:?}"
        );
        // Without recorded names the name query is an error, not a guess.
        let e = query(&states, Tokens::new(&mask, None), Query::Name).unwrap_err();
        assert!(e.to_string().contains("domain-name tokens"), "{e}");
    }

    #[test]
    fn kernel_perplexity_by_hand() {
        assert!((perplexity(&[0.25; 4]) - 4.0).abs() < 1e-12);
        assert!((perplexity(&[1.0, 0.0, 0.0]) - 1.0).abs() < 1e-12);
        // Three one-hot rows are equidistant: every domain mixes its 2 others equally.
        let m = vec![vec![1f32, 0., 0.], vec![0., 1., 0.], vec![0., 0., 1.]];
        assert!((kernel_perplexity(&m, None) - 2.0).abs() < 1e-12);
        // Two close rows and a far one, w = 1: row 0 sees row 1 at d² 0.01 and row
        // 2 at d² 100 → nearly one-hot, perplexity ≈ 1; row 2 sees both at ≈100 → 2.
        let m = vec![vec![0f32, 0.], vec![0.1, 0.], vec![10., 0.]];
        let p = kernel_perplexity(&m, Some(1.0));
        let w2 = kernel_weights(&m[2], &[&m[0], &m[1]], Some(1.0));
        let want = (1.0 + 1.0 + perplexity(&w2)) / 3.0;
        assert!((p - want).abs() < 1e-9, "{p} vs {want}");
        assert!(p < 1.7, "{p}");
        // Median heuristic: squared distances 0.01, 100, 98.01 → median 98.01.
        let s = median_scale(&m, &[0, 1, 2]).unwrap();
        assert!((s - 1.0 / 98.01f64.sqrt()).abs() < 1e-6, "{s}");
        assert!(kernel_perplexity(&m[..1], None).is_nan());
        // The distance summary, h = 2: d² 0.01, 98.01, 100 → /2.
        let t = Tensor::new(&[[0f32, 0.], [0.1, 0.], [10., 0.]], &Device::Cpu).unwrap();
        let k = kernel_perplexities(&t).unwrap();
        assert_eq!(k.of, 2);
        assert!((k.d2_min - 0.005).abs() < 1e-6, "{k:?}");
        assert!((k.d2_median - 49.005).abs() < 1e-4, "{k:?}");
        assert!((k.d2_max - 50.0).abs() < 1e-4, "{k:?}");
        let w = 1.0 / 2f64.sqrt();
        assert!(
            (k.pooling - kernel_perplexity(&[vec![0., 0.], vec![0.1, 0.], vec![10., 0.]], Some(w)))
                .abs()
                < 1e-12
        );
    }
}
