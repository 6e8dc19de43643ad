//! Shared parameters that are a function of the domain vector e_d. A domain
//! vector fed into a network of its own domain is a constant there (a bias); it
//! pays off through parameters shared by all domains and conditioned on it, so
//! that similar domains share what they learn and an unseen domain gets its
//! parameters from its vector alone.
//!
//! - [`GateUnit`]: the gate neural unit of EPNet/PPNet (Chang et al., "PEPNet:
//!   Parameter and Embedding Personalized Network for Infusing with Personalized
//!   Prior Information", KDD 2023): 2·σ(MLP(c)), one scale per unit of the gated
//!   layer, exactly 1 at initialisation (its output layer starts at zero), so a
//!   gated network starts as the ungated one.
//! - [`GeneratedMlp`]: the meta unit of M2M (Zhang et al., "Leaving No One Behind:
//!   A Multi-Scenario Multi-Task Meta Learning Approach for Advertiser Modeling",
//!   WSDM 2022), in low rank: each layer's weights are W₀ + A(e_d)·B(e_d), with
//!   A(e_d) (in × r) and B(e_d) (r × out) linear in e_d, and its bias b₀ + C·e_d.
//!   One set of parameters serves every domain; B and C start at zero, so the
//!   network starts as the shared W₀ one.

use super::Segment;
use crate::nn::linear::{Linear, Mlp};
use crate::nn::ops::sigmoid;
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::{Result, Tensor};

/// 2·σ(MLP(c)): (n, c_in) → (n, out), in (0, 2), 1 at initialisation.
pub struct GateUnit {
    hidden: Mlp,
    out: Linear,
}

impl GateUnit {
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        c_in: usize,
        hidden: usize,
        out: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        let hidden_mlp = Mlp::new(
            ps,
            &format!("{name}.hidden"),
            c_in,
            &[hidden],
            None,
            0.0,
            rng,
        )?;
        let out = Linear {
            w: ps.fill(format!("{name}.out.weight"), &[hidden, out], 0.0)?,
            b: ps.fill(format!("{name}.out.bias"), &[out], 0.0)?,
        };
        Ok(GateUnit {
            hidden: hidden_mlp,
            out,
        })
    }

    pub fn forward(&self, c: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        sigmoid(&self.logits(c, rng)?)? * 2.0
    }

    /// The gate's pre-activation z: the gate is 2·σ(z).
    pub fn logits(&self, c: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        let h = self.hidden.forward(c, false, rng)?;
        self.out.forward(&h)
    }

    /// h (n, out) scaled by the gate on c: h ⊙ 2σ(z), one fused step.
    pub fn apply(&self, h: &Tensor, c: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        crate::nn::fused::gated(h, &self.logits(c, rng)?)
    }
}

/// A linear layer whose weights are generated from the domain vector:
/// y = x·(W₀ + A(e)·B(e)) + b₀ + C·e, per domain.
pub struct GeneratedLinear {
    base: Linear,
    /// e → A (in · r), e → B (r · out), e → Δb (out); no biases.
    gen_a: Tensor,
    gen_b: Tensor,
    gen_bias: Tensor,
    d_in: usize,
    d_out: usize,
    rank: usize,
}

impl GeneratedLinear {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        cond: usize,
        d_in: usize,
        d_out: usize,
        rank: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        let base = Linear::new(ps, name, d_in, d_out, rng)?;
        let bound = 1.0 / (cond as f64).sqrt();
        Ok(GeneratedLinear {
            base,
            gen_a: ps.uniform(format!("{name}.gen_a"), &[cond, d_in * rank], bound, rng)?,
            gen_b: ps.fill(format!("{name}.gen_b"), &[cond, rank * d_out], 0.0)?,
            gen_bias: ps.fill(format!("{name}.gen_bias"), &[cond, d_out], 0.0)?,
            d_in,
            d_out,
            rank,
        })
    }

    /// x (n, in) with rows grouped by `segments` (contiguous, in order, one
    /// domain each); `e` (n, cond) the domain vector of each row (constant
    /// within a segment), or none: the shared layer.
    ///
    /// All segments go through in a few matrix products, without a loop over
    /// them: with S segments, A = [A₁ … A_S] (in, S·r) gives x·A (n, S·r), of
    /// which a row keeps its own segment's block (a 0/1 mask M) summed into
    /// (n, r); placed back in that block and multiplied by [B₁; …; B_S]
    /// (S·r, out), it gives the low-rank term.
    pub fn forward(&self, x: &Tensor, e: Option<&Tensor>, segments: &[Segment]) -> Result<Tensor> {
        let Some(e) = e else {
            return self.base.forward(x);
        };
        let (n, r, s) = (x.dim(0)?, self.rank, segments.len());
        let dev = x.device();
        let mut mask = vec![0f32; n * s * r];
        let mut covered = 0;
        for (k, seg) in segments.iter().enumerate() {
            if seg.start != covered || seg.start + seg.len > n {
                candle_core::bail!("segments must cover the {n} rows in order");
            }
            for i in seg.start..seg.start + seg.len {
                mask[i * s * r + k * r..i * s * r + (k + 1) * r].fill(1.0);
            }
            covered += seg.len;
        }
        if covered != n {
            candle_core::bail!("segments cover {covered} of {n} rows");
        }
        let mask = Tensor::from_vec(mask, (n, s * r), dev)?.to_dtype(x.dtype())?;
        // (S·r, r): S stacked identities; it sums a row's blocks into one.
        let mut sel = vec![0f32; s * r * r];
        for k in 0..s * r {
            sel[k * r + k % r] = 1.0;
        }
        let sel = Tensor::from_vec(sel, (s * r, r), dev)?.to_dtype(x.dtype())?;
        let starts: Vec<u32> = segments.iter().map(|g| g.start as u32).collect();
        let u = e
            .contiguous()?
            .index_select(&Tensor::new(starts.as_slice(), dev)?, 0)?; // (S, cond)
        // Scaled so that A·B has the variance of one weight of W₀ per unit of
        // B, whatever the rank.
        let a = u
            .matmul(&self.gen_a)?
            .reshape((s, self.d_in, r))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((self.d_in, s * r))?
            .affine(1.0 / (r as f64).sqrt(), 0.0)?;
        let xa = (x.matmul(&a)? * &mask)?.matmul(&sel)?; // (n, r)
        let b = u.matmul(&self.gen_b)?.reshape((s * r, self.d_out))?;
        let low = (xa.matmul(&sel.t()?)? * &mask)?.matmul(&b)?;
        (self.base.forward(x)? + low)? + e.matmul(&self.gen_bias)?
    }
}

/// Linear → ReLU for each hidden size, then one output unit, every layer a
/// [`GeneratedLinear`]: a tower generated from the domain vector.
pub struct GeneratedMlp {
    layers: Vec<GeneratedLinear>,
    out: GeneratedLinear,
    dropout: f64,
}

impl GeneratedMlp {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        cond: usize,
        d_in: usize,
        hidden: &[usize],
        rank: usize,
        dropout: f64,
        rng: &mut Rng,
    ) -> Result<Self> {
        let mut layers = Vec::new();
        let mut d = d_in;
        for (i, &h) in hidden.iter().enumerate() {
            layers.push(GeneratedLinear::new(
                ps,
                &format!("{name}.{i}"),
                cond,
                d,
                h,
                rank,
                rng,
            )?);
            d = h;
        }
        let out = GeneratedLinear::new(ps, &format!("{name}.out"), cond, d, 1, rank, rng)?;
        Ok(GeneratedMlp {
            layers,
            out,
            dropout,
        })
    }

    /// (n, in) → (n, 1).
    pub fn forward(
        &self,
        x: &Tensor,
        e: Option<&Tensor>,
        segments: &[Segment],
        train: bool,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &self.layers {
            h = l.forward(&h, e, segments)?.relu()?;
            if train && self.dropout > 0.0 {
                h = crate::nn::ops::dropout(&h, self.dropout, rng)?;
            }
        }
        self.out.forward(&h, e, segments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Domains 0 and 2 in consecutive segments of `lens` rows.
    fn segments(lens: [usize; 2]) -> Vec<Segment> {
        vec![
            Segment {
                domain: 0,
                start: 0,
                len: lens[0],
            },
            Segment {
                domain: 2,
                start: lens[0],
                len: lens[1],
            },
        ]
    }

    /// Every parameter set to random values: away from the initial point,
    /// where B and the gate's output layer are zero.
    fn randomise(ps: &ParamStore, dev: &Device, rng: &mut Rng) {
        for p in ps.params() {
            let v = rng
                .normal_tensor(p.var.shape(), 0.5, DType::F64, dev)
                .unwrap();
            p.var.set(&v).unwrap();
        }
    }

    /// Rows 0–1 carry one domain vector, rows 2–5 another.
    fn domain_rows(dev: &Device) -> Tensor {
        let a = Tensor::new(&[[0.3f64, -1.0, 0.5]], dev).unwrap();
        let b = Tensor::new(&[[-0.7f64, 0.2, 1.1]], dev).unwrap();
        Tensor::cat(
            &[
                a.broadcast_as((2, 3)).unwrap(),
                b.broadcast_as((4, 3)).unwrap(),
            ],
            0,
        )
        .unwrap()
    }

    #[test]
    fn a_generated_tower_starts_as_its_shared_tower_and_has_exact_gradients() {
        let dev = Device::Cpu;
        let mut ps = ParamStore::new(DType::F64, &dev);
        let mut rng = Rng::new(5);
        let t = GeneratedMlp::new(&mut ps, "t", 3, 4, &[5], 2, 0.0, &mut rng).unwrap();
        let x = rng.normal_tensor((6, 4), 1.0, DType::F64, &dev).unwrap();
        let e = domain_rows(&dev);
        let seg = segments([2, 4]);
        let with = t.forward(&x, Some(&e), &seg, false, &mut rng).unwrap();
        let without = t.forward(&x, None, &seg, false, &mut rng).unwrap();
        let diff = (with - without).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f64>().unwrap(), 0.0);
        randomise(&ps, &dev, &mut rng);
        // Away from the initial point the two domains get different weights.
        let y = t.forward(&x, Some(&e), &seg, false, &mut rng).unwrap();
        let x_same =
            Tensor::cat(&[x.narrow(0, 0, 2).unwrap(), x.narrow(0, 0, 2).unwrap()], 0).unwrap();
        let e_two =
            Tensor::cat(&[e.narrow(0, 0, 2).unwrap(), e.narrow(0, 2, 2).unwrap()], 0).unwrap();
        let two = segments([2, 2]);
        let y2 = t
            .forward(&x_same, Some(&e_two), &two, false, &mut rng)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        assert!((y2[0][0] - y2[2][0]).abs() > 1e-6, "{y2:?}");
        assert_eq!(y.dims(), &[6, 1]);
        let w = rng.normal_tensor((6, 1), 1.0, DType::F64, &dev).unwrap();
        let f = || (t.forward(&x, Some(&e), &seg, false, &mut Rng::new(0))? * &w)?.sum_all();
        let (err, dead) = crate::nn::gradcheck::check(&ps, 6, 1e-5, &f).unwrap();
        assert!(dead.is_empty(), "{dead:?}");
        assert!(err < 1e-6, "relative error {err}");
    }

    /// The masked block products equal the layer written out: per domain,
    /// the weight matrix W₀ + A(e)·B(e)/√r and the bias b₀ + C·e.
    #[test]
    fn a_generated_layer_equals_its_weights_written_out_per_domain() {
        let dev = Device::Cpu;
        let mut ps = ParamStore::new(DType::F64, &dev);
        let mut rng = Rng::new(11);
        let (cond, d_in, d_out, rank) = (3, 4, 5, 2);
        let l = GeneratedLinear::new(&mut ps, "l", cond, d_in, d_out, rank, &mut rng).unwrap();
        randomise(&ps, &dev, &mut rng);
        let x = rng.normal_tensor((6, d_in), 1.0, DType::F64, &dev).unwrap();
        let e = domain_rows(&dev);
        let got = l
            .forward(&x, Some(&e), &segments([2, 4]))
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        for (start, len) in [(0, 2), (2, 4)] {
            let ed = e.narrow(0, start, 1).unwrap();
            let a = ed.matmul(&l.gen_a).unwrap().reshape((d_in, rank)).unwrap();
            let b = ed.matmul(&l.gen_b).unwrap().reshape((rank, d_out)).unwrap();
            let w = (&l.base.w + (a.matmul(&b).unwrap() / (rank as f64).sqrt()).unwrap()).unwrap();
            let bias = (&l.base.b + ed.matmul(&l.gen_bias).unwrap().squeeze(0).unwrap()).unwrap();
            let want = x
                .narrow(0, start, len)
                .unwrap()
                .matmul(&w)
                .unwrap()
                .broadcast_add(&bias)
                .unwrap()
                .to_vec2::<f64>()
                .unwrap();
            for (i, row) in want.iter().enumerate() {
                for (j, v) in row.iter().enumerate() {
                    let g = got[start + i][j];
                    assert!(
                        (g - v).abs() < 1e-12,
                        "row {} col {j}: {g} vs {v}",
                        start + i
                    );
                }
            }
        }
    }

    #[test]
    fn the_gate_is_identity_at_initialisation_and_has_exact_gradients() {
        let dev = Device::Cpu;
        let mut ps = ParamStore::new(DType::F64, &dev);
        let mut rng = Rng::new(3);
        let g = GateUnit::new(&mut ps, "g", 4, 5, 3, &mut rng).unwrap();
        let c = rng.normal_tensor((6, 4), 1.0, DType::F64, &dev).unwrap();
        let out = g.forward(&c, &mut rng).unwrap().to_vec2::<f64>().unwrap();
        assert!(out.iter().flatten().all(|&v| v == 1.0), "{out:?}");
        // Away from the initial point (the output layer is zero there, which
        // leaves the hidden layer without gradient), against finite differences.
        randomise(&ps, &dev, &mut rng);
        let w = rng.normal_tensor((6, 3), 1.0, DType::F64, &dev).unwrap();
        let f = || (g.forward(&c, &mut Rng::new(0))? * &w)?.sum_all();
        // A step of 1e-5: at 1e-6 the rounding error of the differences alone
        // reaches 1e-6 on the smaller gradients (it grows as 1/step).
        let (err, dead) = crate::nn::gradcheck::check(&ps, 6, 1e-5, &f).unwrap();
        assert!(dead.is_empty(), "{dead:?}");
        assert!(err < 1e-6, "relative error {err}");
    }
}
