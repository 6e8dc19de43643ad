//! The decoder's frozen projections as single graph nodes whose backward passes
//! compute only what the adapters need, and the slice-level kernels behind them
//! (shared with the whole-stack op of `stack.rs`).
//!
//! candle's matmul backward also computes the gradient of the right-hand operand,
//! frozen or not (candle 0.11), and every composed node costs a zeroed
//! and summed gradient buffer in backward. Here:
//! - [`frozen_linear`]: x·Wᵀ, plus LoRA's s·(x⊙keep)·Aᵀ·Bᵀ when the projection is
//!   adapted, one node with the gradients of x, A and B (never W);
//! - [`frozen_mlp`]: a whole SwiGLU MLP, down(silu(gate(x)) ⊙ up(x)), for layers
//!   whose MLP carries no adapter; it keeps gate(x) and up(x) for its backward.
//!
//! CPU and f32 only; other devices and dtypes use composed candle ops (same values).

use crate::nn::gemm::{Mat, Par, matmul, products, storage_f32, with_f32, with_f32s};
use crate::nn::vmath;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::Mutex;

fn input<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<(&'a [f32], usize, usize)> {
    let (n, k) = l.shape().dims2()?;
    Ok((storage_f32(s, l, op)?, n, k))
}

fn fused_ok(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

fn tensor(v: Vec<f32>, shape: (usize, usize)) -> Result<Tensor> {
    Tensor::from_vec(v, shape, &Device::Cpu)
}

// ------------------------------------------------------------ slice kernels

/// A frozen projection on slices: x (n × k) · wt (k × out), wt row-major.
#[derive(Clone, Copy)]
pub(crate) struct Linear<'a> {
    pub wt: &'a [f32],
    pub k: usize,
    pub out: usize,
}

/// LoRA's factors on slices: A (r × k), B (out × r), scale s, and the dropout
/// keep-mask (0 or 1/(1−p) per input value, n × k) when training with dropout.
#[derive(Clone, Copy)]
pub(crate) struct LoraS<'a> {
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub r: usize,
    pub scale: f32,
    pub keep: Option<&'a [f32]>,
}

impl LoraS<'_> {
    /// x⊙keep and s·(x⊙keep)·Aᵀ (n × r).
    fn xa<'x>(&self, x: &'x [f32], n: usize, k: usize) -> Result<(Cow<'x, [f32]>, Vec<f32>)> {
        let xk: Cow<'x, [f32]> = match self.keep {
            Some(m) => x.iter().zip(m).map(|(x, m)| x * m).collect(),
            None => Cow::Borrowed(x),
        };
        let mut xa = vec![0f32; n * self.r];
        matmul(
            (n, self.r, k),
            &mut xa,
            self.r,
            false,
            Mat::rows(&xk, k),
            Mat::rows_t(self.a, k),
            Par::Threads,
        )?;
        xa.iter_mut().for_each(|v| *v *= self.scale);
        Ok((xk, xa))
    }
}

impl Linear<'_> {
    /// y (n × out, row stride `y_rs`) = x·wt [+ s·(x⊙keep)·Aᵀ·Bᵀ].
    pub fn forward(
        &self,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        y_rs: usize,
        lora: Option<&LoraS>,
    ) -> Result<()> {
        let (k, out) = (self.k, self.out);
        matmul(
            (n, out, k),
            y,
            y_rs,
            false,
            Mat::rows(x, k),
            Mat::rows(self.wt, out),
            Par::Threads,
        )?;
        self.add_lora(x, n, y, y_rs, lora)
    }

    /// [`Linear::forward`] of several projections of the same x, side by side
    /// in a new (n × Σ out) buffer.
    pub fn side_by_side(
        parts: &[(Linear, Option<&LoraS>)],
        x: &[f32],
        n: usize,
    ) -> Result<Vec<f32>> {
        let products_of: Vec<_> = parts
            .iter()
            .map(|(l, _)| (l.out, l.k, Mat::rows(x, l.k), Mat::rows(l.wt, l.out)))
            .collect();
        let cols: usize = parts.iter().map(|(l, _)| l.out).sum();
        let mut y = products(n, &products_of, Par::Threads)?;
        let mut col = 0;
        for (l, lora) in parts {
            l.add_lora(x, n, &mut y[col..], cols, *lora)?;
            col += l.out;
        }
        Ok(y)
    }

    /// y += s·(x⊙keep)·Aᵀ·Bᵀ if the projection is adapted.
    fn add_lora(
        &self,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        y_rs: usize,
        lora: Option<&LoraS>,
    ) -> Result<()> {
        if let Some(l) = lora {
            let (_, xa) = l.xa(x, n, self.k)?;
            matmul(
                (n, self.out, l.r),
                y,
                y_rs,
                true,
                Mat::rows(&xa, l.r),
                Mat::rows_t(l.b, l.r),
                Par::Threads,
            )?;
        }
        Ok(())
    }

    /// Backward of [`Linear::forward`] for dy (n × out, row stride `dy_rs`): adds
    /// (`acc`) or writes dy·wtᵀ + ((s·dy·B)·A)⊙keep into `dx` if given, and
    /// returns LoRA's (dA, dB).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        x: &[f32],
        n: usize,
        dy: &[f32],
        dy_rs: usize,
        dx: Option<(&mut [f32], bool)>,
        lora: Option<&LoraS>,
    ) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
        let (k, out) = (self.k, self.out);
        let dy_m = Mat {
            data: dy,
            rs: dy_rs,
            cs: 1,
        };
        let mut grads = None;
        let mut lora_dx = None;
        if let Some(l) = lora {
            let r = l.r;
            // s·dy·B (n × r): the gradient reaching s·(x⊙keep)·Aᵀ.
            let mut dyb = vec![0f32; n * r];
            matmul(
                (n, r, out),
                &mut dyb,
                r,
                false,
                dy_m,
                Mat::rows(l.b, r),
                Par::Threads,
            )?;
            dyb.iter_mut().for_each(|v| *v *= l.scale);
            let (xk, xa) = l.xa(x, n, k)?;
            // dA = (s·dy·B)ᵀ · (x⊙keep); dB = dyᵀ · s·(x⊙keep)·Aᵀ.
            let mut da = vec![0f32; r * k];
            matmul(
                (r, k, n),
                &mut da,
                k,
                false,
                Mat::rows_t(&dyb, r),
                Mat::rows(&xk, k),
                Par::Threads,
            )?;
            let mut db = vec![0f32; out * r];
            matmul(
                (out, r, n),
                &mut db,
                r,
                false,
                Mat {
                    data: dy,
                    rs: 1,
                    cs: dy_rs,
                },
                Mat::rows(&xa, r),
                Par::Threads,
            )?;
            grads = Some((da, db));
            lora_dx = Some((dyb, l));
        }
        if let Some((dx, acc)) = dx {
            matmul(
                (n, k, out),
                dx,
                k,
                acc,
                dy_m,
                Mat::rows_t(self.wt, out),
                Par::Threads,
            )?;
            if let Some((dyb, l)) = lora_dx {
                let dyba = (n, k, l.r);
                let (dyb, a) = (Mat::rows(&dyb, l.r), Mat::rows(l.a, k));
                match l.keep {
                    // Without dropout the LoRA term is one more accumulated product.
                    None => matmul(dyba, dx, k, true, dyb, a, Par::Threads)?,
                    Some(m) => {
                        let mut t = vec![0f32; n * k];
                        matmul(dyba, &mut t, k, false, dyb, a, Par::Threads)?;
                        dx.iter_mut()
                            .zip(&t)
                            .zip(m)
                            .for_each(|((d, t), m)| *d += t * m);
                    }
                }
            }
        }
        Ok(grads)
    }
}

/// silu(g) ⊙ u for rows of gate|up side by side (n × 2·inter) → (n × inter).
pub(crate) fn swiglu_rows(gu: &[f32], inter: usize) -> Vec<f32> {
    let mut act = vec![0f32; gu.len() / 2];
    act.par_chunks_mut(inter)
        .zip(gu.par_chunks(2 * inter))
        .for_each(|(a, gu)| {
            let (g, u) = gu.split_at(inter);
            vmath::swiglu(a, g, u);
        });
    act
}

/// Backward of [`swiglu_rows`]: d(gate) | d(up) side by side from d(act), into
/// `dgu` (the size of `gu`).
pub(crate) fn swiglu_rows_bwd(gu: &[f32], dact: &[f32], inter: usize, dgu: &mut [f32]) {
    dgu.par_chunks_mut(2 * inter)
        .zip(gu.par_chunks(2 * inter).zip(dact.par_chunks(inter)))
        .for_each(|(d, (gu, da))| {
            let (g, u) = gu.split_at(inter);
            let (dg, du) = d.split_at_mut(inter);
            vmath::swiglu_bwd(dg, du, g, u, da);
        });
}

// ------------------------------------------------------------ frozen linear

/// LoRA's part of a projection: scale s, factors A (r × in) and B (out × r), and
/// the dropout keep-mask (0 or 1/(1−p) per input value) when training with dropout.
pub struct Lora<'a> {
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    pub scale: f64,
    pub keep: Option<Vec<f32>>,
}

struct Frozen {
    wt: Tensor,
}

impl CustomOp1 for Frozen {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, n, k) = input(s, l, self.name())?;
        let out = self.wt.dim(1)?;
        let mut y = vec![0f32; n * out];
        with_f32(&self.wt, |wt| {
            Linear { wt, k, out }.forward(x, n, &mut y, out, None)
        })??;
        Ok((CpuStorage::F32(y), Shape::from((n, out))))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.wt.t()?)?))
    }
}

struct FrozenLora {
    wt: Tensor,
    scale: f32,
    keep: Option<Vec<f32>>,
}

impl FrozenLora {
    fn lora<'a>(&'a self, a: &'a [f32], b: &'a [f32], r: usize) -> LoraS<'a> {
        LoraS {
            a,
            b,
            r,
            scale: self.scale,
            keep: self.keep.as_deref(),
        }
    }
}

impl CustomOp3 for FrozenLora {
    fn name(&self) -> &'static str {
        "frozen-linear-lora"
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
        let (x, n, k) = input(s1, l1, self.name())?;
        let (a, r, _) = input(s2, l2, self.name())?;
        let (b, out, _) = input(s3, l3, self.name())?;
        let mut y = vec![0f32; n * out];
        let lora = self.lora(a, b, r);
        with_f32(&self.wt, |wt| {
            Linear { wt, k, out }.forward(x, n, &mut y, out, Some(&lora))
        })??;
        Ok((CpuStorage::F32(y), Shape::from((n, out))))
    }

    fn bwd(
        &self,
        x_t: &Tensor,
        a_t: &Tensor,
        b_t: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, k) = x_t.dims2()?;
        let (out, r) = b_t.dims2()?;
        let mut dx = x_t.track_op().then(|| vec![0f32; n * k]);
        let grads = with_f32s(&[x_t, a_t, b_t, grad, &self.wt], |s| {
            let lin = Linear { wt: s[4], k, out };
            let lora = self.lora(s[1], s[2], r);
            lin.backward(
                s[0],
                n,
                s[3],
                out,
                dx.as_mut().map(|d| (&mut d[..], false)),
                Some(&lora),
            )
        })??;
        let Some((da, db)) = grads else {
            candle_core::bail!("frozen-linear-lora: no LoRA gradients");
        };
        Ok((
            dx.map(|dx| tensor(dx, (n, k))).transpose()?,
            Some(tensor(da, (r, k))?),
            Some(tensor(db, (out, r))?),
        ))
    }
}

/// x (n, in) · wt (in, out), wt frozen (no gradient), plus LoRA's term if given.
pub fn frozen_linear(x: &Tensor, wt: &Tensor, lora: Option<Lora>) -> Result<Tensor> {
    let Some(lora) = lora else {
        return if fused_ok(x) {
            x.contiguous()?.apply_op1(Frozen { wt: wt.clone() })
        } else {
            x.matmul(wt)
        };
    };
    if !fused_ok(x) {
        let xk = match &lora.keep {
            Some(m) => (x * Tensor::from_slice(m, x.shape(), x.device())?.to_dtype(x.dtype())?)?,
            None => x.clone(),
        };
        let d = xk.matmul(&lora.a.t()?)?.matmul(&lora.b.t()?)?;
        return x.matmul(wt)? + (d * lora.scale)?;
    }
    if let Some(m) = &lora.keep
        && m.len() != x.elem_count()
    {
        candle_core::bail!("frozen_linear: dropout mask does not fit the input");
    }
    let op = FrozenLora {
        wt: wt.clone(),
        scale: lora.scale as f32,
        keep: lora.keep,
    };
    x.contiguous()?
        .apply_op3(&lora.a.contiguous()?, &lora.b.contiguous()?, op)
}

// ------------------------------------------------------------ frozen MLP

struct FrozenMlp {
    /// (in, inter), (in, inter), (inter, in); contiguous.
    gate: Tensor,
    up: Tensor,
    down: Tensor,
    /// gate(x) | up(x) per row (n × 2·inter), kept for the backward pass.
    saved: Mutex<Option<Vec<f32>>>,
    keep: bool,
}

impl CustomOp1 for FrozenMlp {
    fn name(&self) -> &'static str {
        "frozen-swiglu-mlp"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, n, h) = input(s, l, self.name())?;
        let inter = self.gate.dim(1)?;
        let (gu, y) = with_f32s(&[&self.gate, &self.up, &self.down], |w| -> Result<_> {
            let lin = |wt, k, out| Linear { wt, k, out };
            let gu = Linear::side_by_side(
                &[(lin(w[0], h, inter), None), (lin(w[1], h, inter), None)],
                x,
                n,
            )?;
            let act = swiglu_rows(&gu, inter);
            let y = Linear::side_by_side(&[(lin(w[2], inter, h), None)], &act, n)?;
            Ok((gu, y))
        })??;
        if self.keep {
            *self.saved.lock().expect("frozen-mlp lock") = Some(gu);
        }
        Ok((CpuStorage::F32(y), Shape::from((n, h))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if !x.track_op() {
            return Ok(None);
        }
        let (n, h) = x.dims2()?;
        let inter = self.gate.dim(1)?;
        let saved = self.saved.lock().expect("frozen-mlp lock");
        let Some(gu) = saved.as_ref() else {
            candle_core::bail!("frozen-mlp: backward without the forward pass's activations");
        };
        let mut dx = vec![0f32; n * h];
        with_f32s(
            &[grad, &self.gate, &self.up, &self.down],
            |s| -> Result<()> {
                // The inputs of down (act) and of gate/up (x) only matter for LoRA
                // gradients, and there are none here.
                let mut dact = vec![0f32; n * inter];
                let down = Linear {
                    wt: s[3],
                    k: inter,
                    out: h,
                };
                down.backward(&[], n, s[0], h, Some((&mut dact[..], false)), None)?;
                let mut dgu = vec![0f32; gu.len()];
                swiglu_rows_bwd(gu, &dact, inter, &mut dgu);
                for (wt, off, acc) in [(s[1], 0, false), (s[2], inter, true)] {
                    let lin = Linear {
                        wt,
                        k: h,
                        out: inter,
                    };
                    lin.backward(
                        &[],
                        n,
                        &dgu[off..],
                        2 * inter,
                        Some((&mut dx[..], acc)),
                        None,
                    )?;
                }
                Ok(())
            },
        )??;
        Ok(Some(tensor(dx, (n, h))?))
    }
}

/// down(silu(x·gate) ⊙ (x·up)) for x (n, in) and frozen weights stored (in, out).
pub fn frozen_mlp(x: &Tensor, gate: &Tensor, up: &Tensor, down: &Tensor) -> Result<Tensor> {
    if !fused_ok(x) {
        let g = x.matmul(gate)?;
        return (g.silu()? * x.matmul(up)?)?.matmul(down);
    }
    x.contiguous()?.apply_op1(FrozenMlp {
        gate: gate.clone(),
        up: up.clone(),
        down: down.clone(),
        saved: Mutex::new(None),
        keep: x.track_op(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gemm::max_abs;
    use crate::nn::rng::Rng;
    use candle_core::{DType, Var};

    fn rand(shape: (usize, usize), seed: u64) -> Tensor {
        let mut rng = Rng::new(seed);
        let v: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| rng.normal() as f32 * 0.7)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Max |a − b| / max |b|.
    fn rel(a: &Tensor, b: &Tensor) -> f32 {
        max_abs(&(a - b).unwrap()) / max_abs(b).max(1e-9)
    }

    /// Values and gradients of the fused op equal those of the same function in
    /// f64 through composed candle ops (the fallback path), under a random read-out.
    fn check(vars: &[Var], fused: impl Fn(&[Tensor]) -> Result<Tensor>) {
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = fused(&ts).unwrap();
        let v64: Vec<Var> = ts
            .iter()
            .map(|t| Var::from_tensor(&t.to_dtype(DType::F64).unwrap()).unwrap())
            .collect();
        let t64: Vec<Tensor> = v64.iter().map(|v| v.as_tensor().clone()).collect();
        let y64 = fused(&t64).unwrap();
        assert!(rel(&y, &y64.to_dtype(DType::F32).unwrap()) < 1e-5);
        let probe = rand(y.dims2().unwrap(), 77);
        let g = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let g64 = (y64 * probe.to_dtype(DType::F64).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (v, v64) in vars.iter().zip(&v64) {
            let a = g.get(v.as_tensor()).expect("a gradient for every input");
            let b = g64
                .get(v64.as_tensor())
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            assert!(rel(a, &b) < 1e-5, "gradient: {}", rel(a, &b));
            assert!(max_abs(a) > 0.0);
        }
    }

    #[test]
    fn frozen_linear_matches_composed_ops_with_and_without_lora_and_dropout() {
        let (n, k, out, r) = (11, 24, 19, 4);
        let wt = rand((k, out), 1);
        let x = Var::from_tensor(&rand((n, k), 2)).unwrap();
        check(std::slice::from_ref(&x), |t| {
            frozen_linear(&t[0], &wt.to_dtype(t[0].dtype())?, None)
        });
        let a = Var::from_tensor(&rand((r, k), 3)).unwrap();
        let b = Var::from_tensor(&rand((out, r), 4)).unwrap();
        let mut rng = Rng::new(5);
        let keep: Vec<f32> = (0..n * k)
            .map(|_| if rng.uniform() < 0.3 { 0.0 } else { 1.0 / 0.7 })
            .collect();
        for keep in [None, Some(keep)] {
            check(&[x.clone(), a.clone(), b.clone()], |t| {
                let lora = Lora {
                    a: &t[1],
                    b: &t[2],
                    scale: 2.5,
                    keep: keep.clone(),
                };
                frozen_linear(&t[0], &wt.to_dtype(t[0].dtype())?, Some(lora))
            });
        }
    }

    #[test]
    fn frozen_mlp_matches_composed_ops() {
        let (n, h, inter) = (9, 16, 40);
        let (g, u, d) = (
            rand((h, inter), 1),
            rand((h, inter), 2),
            rand((inter, h), 3),
        );
        let x = Var::from_tensor(&rand((n, h), 4)).unwrap();
        check(&[x], |t| {
            let dt = t[0].dtype();
            frozen_mlp(&t[0], &g.to_dtype(dt)?, &u.to_dtype(dt)?, &d.to_dtype(dt)?)
        });
    }
}
