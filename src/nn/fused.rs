//! Fused CPU kernels with analytic backward passes for the decoder's
//! element-wise blocks: RMS norm (frozen weight), scaled masked softmax, SwiGLU;
//! and for the CTR heads: gate units, h ⊙ 2σ(z), the mixture of experts,
//! Σ_e w_e·x_e, and a linear layer's bias.
//!
//! Composed of candle ops, each block is 5–10 graph nodes, and candle's backward
//! allocates, zero-fills and adds a gradient buffer for every node. Here each
//! block is one node whose backward is one pass over the data (rows in parallel
//! with rayon). Other devices and dtypes fall back to the composed ops (same
//! values). Tests compare values and gradients with the composed versions.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::storage_f32 as f32s;
use super::vmath;

fn fused_ok(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

/// Rows of this many values or more are worth a rayon task.
const PAR_MIN: usize = 4096;

fn rows_mut<'a>(out: &'a mut [f32], h: usize) -> rayon::slice::ChunksMut<'a, f32> {
    out.par_chunks_mut(h.max(1))
}

// ---------------------------------------------------------------- RMS norm

struct RmsNorm {
    w: Vec<f32>,
    eps: f32,
}

fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    1.0 / (ms + eps).sqrt()
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s, l, self.name())?;
        let out = rms_rows(x, &self.w, self.eps);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let b = RmsNormBwd {
            w: self.w.clone(),
            eps: self.eps,
        };
        Ok(Some(
            arg.contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &b)?,
        ))
    }
}

/// dx = r·(w⊙dy) − x·r³·Σ(w⊙dy⊙x)/h, r = 1/√(mean(x²) + eps).
struct RmsNormBwd {
    w: Vec<f32>,
    eps: f32,
}

impl CustomOp2 for RmsNormBwd {
    fn name(&self) -> &'static str {
        "fused-rms-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, dy) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        let mut out = vec![0f32; x.len()];
        rms_rows_bwd(x, &self.w, self.eps, dy, &mut out, false);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// x · rsqrt(mean(x²) + eps) · w for each row of x (rows of w.len() values).
pub(crate) fn rms_rows(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let h = w.len();
    let mut out = vec![0f32; x.len()];
    rows_mut(&mut out, h)
        .zip(x.par_chunks(h))
        .with_min_len(PAR_MIN / h.max(1) + 1)
        .for_each(|(o, xr)| {
            let r = inv_rms(xr, eps);
            for ((o, &x), &w) in o.iter_mut().zip(xr).zip(w) {
                *o = x * r * w;
            }
        });
    out
}

/// Backward of [`rms_rows`]: writes, or adds if `acc`, dx = r·(w⊙dy) −
/// x·r³·Σ(w⊙dy⊙x)/h into `out`.
pub(crate) fn rms_rows_bwd(x: &[f32], w: &[f32], eps: f32, dy: &[f32], out: &mut [f32], acc: bool) {
    let h = w.len();
    rows_mut(out, h)
        .zip(x.par_chunks(h).zip(dy.par_chunks(h)))
        .with_min_len(PAR_MIN / h.max(1) + 1)
        .for_each(|(o, (xr, gr))| {
            let r = inv_rms(xr, eps);
            let dot: f32 = xr.iter().zip(gr).zip(w).map(|((x, g), w)| x * g * w).sum();
            let c = r * r * r * dot / h as f32;
            for (((o, &x), &g), &w) in o.iter_mut().zip(xr).zip(gr).zip(w) {
                let d = r * g * w - x * c;
                *o = if acc { *o + d } else { d };
            }
        });
}

/// RMS norm over the last dimension with a frozen weight `w` (no gradient).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused_ok(x) {
        let ms = x.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
        return x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w);
    }
    let op = RmsNorm {
        w: w.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?,
        eps: eps as f32,
    };
    if x.dim(candle_core::D::Minus1)? != op.w.len() {
        candle_core::bail!("rms_norm: last dimension differs from the weight's length");
    }
    x.contiguous()?.apply_op1(op)
}

// ---------------------------------------------------------------- softmax

/// softmax(scale · x + mask) over the last dimension; `mask` (rows, s) is added
/// to every block of `rows` consecutive rows of x (…, k·rows, s).
struct MaskedSoftmax {
    mask: Option<Vec<f32>>,
    s: usize,
    scale: f32,
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "fused-masked-softmax"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(st, l, self.name())?;
        let s = self.s;
        let mrows = self.mask.as_ref().map_or(1, |m| m.len() / s);
        let mut out = vec![0f32; x.len()];
        rows_mut(&mut out, s)
            .zip(x.par_chunks(s))
            .enumerate()
            .with_min_len(PAR_MIN / s.max(1) + 1)
            .for_each(|(i, (o, xr))| {
                let m = self
                    .mask
                    .as_ref()
                    .map(|m| &m[(i % mrows) * s..(i % mrows + 1) * s]);
                let mut max = f32::NEG_INFINITY;
                for (j, (o, &x)) in o.iter_mut().zip(xr).enumerate() {
                    *o = x * self.scale + m.map_or(0.0, |m| m[j]);
                    max = max.max(*o);
                }
                let mut z = 0f32;
                for o in o.iter_mut() {
                    *o = (*o - max).exp();
                    z += *o;
                }
                let inv = 1.0 / z;
                for o in o.iter_mut() {
                    *o *= inv;
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let b = SoftmaxBwd {
            s: self.s,
            scale: self.scale,
        };
        Ok(Some(
            res.contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &b)?,
        ))
    }
}

/// dx = scale · y ⊙ (dy − Σ dy⊙y).
struct SoftmaxBwd {
    s: usize,
    scale: f32,
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "fused-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, dy) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        let s = self.s;
        let mut out = vec![0f32; y.len()];
        rows_mut(&mut out, s)
            .zip(y.par_chunks(s).zip(dy.par_chunks(s)))
            .with_min_len(PAR_MIN / s.max(1) + 1)
            .for_each(|(o, (yr, gr))| {
                let dot: f32 = yr.iter().zip(gr).map(|(y, g)| y * g).sum();
                for ((o, &y), &g) in o.iter_mut().zip(yr).zip(gr) {
                    *o = self.scale * y * (g - dot);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// softmax(scale · x + mask) over the last dimension. `mask`: (rows, s), added
/// to every block of `rows` consecutive rows of x (…, k·rows, s), no gradient;
/// None = no mask.
pub fn masked_softmax(x: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    if !fused_ok(x) {
        let mut z = (x * scale)?;
        if let Some(m) = mask {
            let (rows, s) = m.dims2()?;
            let mut dims = x.dims().to_vec();
            let n = dims.len();
            let k = dims[n - 2] / rows.max(1);
            dims[n - 2] = k;
            dims.insert(n - 1, rows);
            // (…, k, rows, s) + mask, then back.
            z = z
                .reshape(dims)?
                .broadcast_add(&m.reshape((1, rows, s))?)?
                .reshape(x.shape())?;
        }
        return super::ops::softmax(&z);
    }
    let s = x.dim(candle_core::D::Minus1)?;
    let mask = match mask {
        Some(m) => {
            let (rows, ms) = m.dims2()?;
            let xr = x.dim(candle_core::D::Minus2)?;
            if ms != s || rows == 0 || xr % rows != 0 {
                candle_core::bail!(
                    "masked_softmax: mask {:?} does not fit {:?}",
                    m.dims(),
                    x.dims()
                );
            }
            Some(
                m.to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            )
        }
        None => None,
    };
    x.contiguous()?.apply_op1(MaskedSoftmax {
        mask,
        s,
        scale: scale as f32,
    })
}

// ---------------------------------------------------------------- rotary

/// Rotary position embedding of x (…, t, d) with angle tables cos, sin (t, d/2):
/// pairs (x_i, x_{i+d/2}) (`interleaved` false, Hugging Face) or (x_{2i}, x_{2i+1})
/// (true, GGUF) are rotated by the angle of position t and frequency i. The map
/// is a rotation, so its backward is the same op with −sin.
#[derive(Clone)]
struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    t: usize,
    d: usize,
    interleaved: bool,
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(st, l, self.name())?;
        let (t, d, half) = (self.t, self.d, self.d / 2);
        let mut out = vec![0f32; x.len()];
        rows_mut(&mut out, d)
            .zip(x.par_chunks(d))
            .enumerate()
            .with_min_len(PAR_MIN / d.max(1) + 1)
            .for_each(|(r, (o, xr))| {
                let p = r % t;
                let (c, s) = (
                    &self.cos[p * half..(p + 1) * half],
                    &self.sin[p * half..(p + 1) * half],
                );
                for i in 0..half {
                    let (a, b) = if self.interleaved {
                        (2 * i, 2 * i + 1)
                    } else {
                        (i, i + half)
                    };
                    o[a] = xr[a] * c[i] - xr[b] * s[i];
                    o[b] = xr[a] * s[i] + xr[b] * c[i];
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let mut inv = self.clone();
        inv.sin.iter_mut().for_each(|v| *v = -*v);
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&inv)?))
    }
}

/// Rotary embedding of x (…, t, d) with tables cos, sin (t, d/2) (no gradient),
/// in the `interleaved` (GGUF) or half-split (Hugging Face) layout. Falls back to
/// composed ops off the CPU or for other dtypes.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let n = dims.len();
    if n < 2 {
        candle_core::bail!("rope: x needs (…, t, d)");
    }
    let (t, d) = (dims[n - 2], dims[n - 1]);
    if cos.dims() != [t, d / 2] || sin.dims() != [t, d / 2] || d % 2 != 0 {
        candle_core::bail!("rope: tables {:?} do not fit {:?}", cos.dims(), dims);
    }
    if !fused_ok(x) {
        return if interleaved {
            let mut pd = dims.clone();
            pd[n - 1] = d / 2;
            pd.push(2);
            let xr = x.reshape(pd.as_slice())?;
            let xe = xr.narrow(n, 0, 1)?;
            let xo = xr.narrow(n, 1, 1)?;
            let (c, s) = (cos.unsqueeze(2)?, sin.unsqueeze(2)?);
            let e = (xe.broadcast_mul(&c)? - xo.broadcast_mul(&s)?)?;
            let o = (xe.broadcast_mul(&s)? + xo.broadcast_mul(&c)?)?;
            Tensor::cat(&[&e, &o], n)?.reshape(dims.as_slice())
        } else {
            let c = Tensor::cat(&[cos, cos], 1)?;
            let s = Tensor::cat(&[sin, sin], 1)?;
            let x1 = x.narrow(n - 1, 0, d / 2)?;
            let x2 = x.narrow(n - 1, d / 2, d / 2)?;
            let rot = Tensor::cat(&[&x2.neg()?, &x1], n - 1)?;
            x.broadcast_mul(&c)? + rot.broadcast_mul(&s)?
        };
    }
    let v = |a: &Tensor| -> Result<Vec<f32>> {
        a.to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()
    };
    x.contiguous()?.apply_op1(Rope {
        cos: v(cos)?,
        sin: v(sin)?,
        t,
        d,
        interleaved,
    })
}

// ------------------------------------------- element-wise pairs: SwiGLU, gates

/// `bwd(da, db, a, b, dy)`: both gradients of an element-wise pair, one pass.
type PairGrad = fn(&mut [f32], &mut [f32], &[f32], &[f32], &[f32]);

/// y = f(a, b) element-wise over two same-shaped f32 tensors, with both
/// gradients from one pass. Chunks run in parallel.
struct Pair {
    name: &'static str,
    fwd: fn(&mut [f32], &[f32], &[f32]),
    bwd: PairGrad,
}

impl CustomOp2 for Pair {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (f32s(s1, l1, self.name)?, f32s(s2, l2, self.name)?);
        let mut out = vec![0f32; a.len()];
        out.par_chunks_mut(PAR_MIN)
            .zip(a.par_chunks(PAR_MIN).zip(b.par_chunks(PAR_MIN)))
            .for_each(|(o, (a, b))| (self.fwd)(o, a, b));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (a, b, dy) = (a.contiguous()?, b.contiguous()?, grad.contiguous()?);
        // Both gradients in one pass: rows 0 and 1 of a (2, n) tensor.
        let both = a.apply_op3_no_bwd(&b, &dy, &PairBwd(self.name, self.bwd))?;
        let da = both.get(0)?.reshape(a.shape())?;
        let db = both.get(1)?.reshape(a.shape())?;
        Ok((Some(da), Some(db)))
    }
}

/// The backward of a [`Pair`]: d/da and d/db as the rows of a (2, n) tensor.
struct PairBwd(&'static str, PairGrad);

impl CustomOp3 for PairBwd {
    fn name(&self) -> &'static str {
        self.0
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
        let a = f32s(s1, l1, self.0)?;
        let b = f32s(s2, l2, self.0)?;
        let dy = f32s(s3, l3, self.0)?;
        let n = a.len();
        let mut out = vec![0f32; 2 * n];
        let (da, db) = out.split_at_mut(n);
        da.par_chunks_mut(PAR_MIN)
            .zip(db.par_chunks_mut(PAR_MIN))
            .zip(
                a.par_chunks(PAR_MIN)
                    .zip(b.par_chunks(PAR_MIN).zip(dy.par_chunks(PAR_MIN))),
            )
            .for_each(|((da, db), (a, (b, d)))| (self.1)(da, db, a, b, d));
        Ok((CpuStorage::F32(out), Shape::from((2, n))))
    }
}

/// silu(g) ⊙ u, the SwiGLU of a Llama MLP.
pub fn swiglu(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    if !fused_ok(g) || g.shape() != u.shape() {
        return g.silu()? * u;
    }
    let op = Pair {
        name: "fused-swiglu",
        fwd: vmath::swiglu,
        bwd: vmath::swiglu_bwd,
    };
    g.contiguous()?.apply_op2(&u.contiguous()?, op)
}

/// h ⊙ 2σ(z) (same shapes): a gate unit's output scaling h, one graph node.
pub fn gated(h: &Tensor, z: &Tensor) -> Result<Tensor> {
    if !fused_ok(h) || h.shape() != z.shape() || z.dtype() != h.dtype() {
        return h * (super::ops::sigmoid(z)? * 2.0)?;
    }
    let op = Pair {
        name: "fused-gated",
        fwd: vmath::gated,
        bwd: vmath::gated_bwd,
    };
    h.contiguous()?.apply_op2(&z.contiguous()?, op)
}

// ------------------------------------------------------ mixture of experts

/// Σ_e w[i, e]·x[i, e, :]: experts x (n, E, h) mixed by weights w (n, E).
struct Mix {
    e: usize,
    h: usize,
}

impl CustomOp2 for Mix {
    fn name(&self) -> &'static str {
        "fused-mix"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        let (e, h) = (self.e, self.h);
        let n = w.len() / e.max(1);
        let mut out = vec![0f32; n * h];
        rows_mut(&mut out, h)
            .zip(x.par_chunks((e * h).max(1)).zip(w.par_chunks(e.max(1))))
            .with_min_len(PAR_MIN / (e * h).max(1) + 1)
            .for_each(|(o, (x, w))| {
                for (xe, &we) in x.chunks(h.max(1)).zip(w) {
                    for (o, &v) in o.iter_mut().zip(xe) {
                        *o += we * v;
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, h))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (x, w, dy) = (x.contiguous()?, w.contiguous()?, grad.contiguous()?);
        let (e, h) = (self.e, self.h);
        let n = w.dim(0)?;
        // Both gradients in one pass: dx (n·E·h values), then dw (n·E).
        let both = x.apply_op3_no_bwd(&w, &dy, &MixBwd { e, h })?;
        let dx = both.narrow(0, 0, n * e * h)?.reshape((n, e, h))?;
        let dw = both.narrow(0, n * e * h, n * e)?.reshape((n, e))?;
        Ok((Some(dx), Some(dw)))
    }
}

/// dx[i, e, :] = w[i, e]·dy[i, :]; dw[i, e] = Σ_h dy[i, h]·x[i, e, h].
struct MixBwd {
    e: usize,
    h: usize,
}

impl CustomOp3 for MixBwd {
    fn name(&self) -> &'static str {
        "fused-mix-bwd"
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
        let x = f32s(s1, l1, self.name())?;
        let w = f32s(s2, l2, self.name())?;
        let dy = f32s(s3, l3, self.name())?;
        let (e, h) = (self.e.max(1), self.h.max(1));
        let mut out = vec![0f32; x.len() + w.len()];
        let (dx, dw) = out.split_at_mut(x.len());
        dx.par_chunks_mut(e * h)
            .zip(dw.par_chunks_mut(e))
            .zip(
                x.par_chunks(e * h)
                    .zip(w.par_chunks(e).zip(dy.par_chunks(h))),
            )
            .with_min_len(PAR_MIN / (e * h) + 1)
            .for_each(|((dx, dw), (x, (w, dy)))| {
                for (((dxe, dwe), xe), &we) in dx.chunks_mut(h).zip(dw).zip(x.chunks(h)).zip(w) {
                    let mut dot = 0f32;
                    for ((d, &g), &v) in dxe.iter_mut().zip(dy).zip(xe) {
                        *d = we * g;
                        dot += g * v;
                    }
                    *dwe = dot;
                }
            });
        Ok((CpuStorage::F32(out), Shape::from(x.len() + w.len())))
    }
}

/// Experts (n, E, h) mixed by gate weights (n, E): (n, h), one graph node.
pub fn mix(experts: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let (n, e, h) = experts.dims3()?;
    if !fused_ok(experts) || weights.dims() != [n, e] || weights.dtype() != experts.dtype() {
        return experts
            .broadcast_mul(&weights.unsqueeze(candle_core::D::Minus1)?)?
            .sum(1);
    }
    experts
        .contiguous()?
        .apply_op2(&weights.contiguous()?, Mix { e, h })
}

// ------------------------------------------------------------ bias add

/// x (n, o) + b (o). Its backward sums the gradient's rows into b's gradient
/// row by row; candle's composed `broadcast_add` reduces over the first axis
/// with strided reads, which took a fifth of a PEPNet training step.
struct BiasAdd {
    o: usize,
}

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "fused-bias-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, b) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        let o = self.o.max(1);
        let mut out = x.to_vec();
        out.par_chunks_mut(o)
            .with_min_len(PAR_MIN / o + 1)
            .for_each(|row| {
                for (y, &b) in row.iter_mut().zip(b) {
                    *y += b;
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let db = grad
            .contiguous()?
            .apply_op1_no_bwd(&ColumnSum { o: self.o })?;
        Ok((Some(grad.clone()), Some(db)))
    }
}

/// The sum of the rows of g (n, o): (o), rows added in order.
struct ColumnSum {
    o: usize,
}

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "fused-column-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = f32s(s, l, self.name())?;
        let mut acc = vec![0f32; self.o];
        for row in g.chunks(self.o.max(1)) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
        Ok((CpuStorage::F32(acc), Shape::from(self.o)))
    }
}

/// x (n, o) + b (o): a linear layer's bias, one graph node.
pub fn bias_add(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    let o = b.elem_count();
    if !fused_ok(x) || x.rank() != 2 || x.dim(1)? != o || b.rank() != 1 || b.dtype() != x.dtype() {
        return x.broadcast_add(b);
    }
    x.contiguous()?.apply_op2(&b.contiguous()?, BiasAdd { o })
}

// ------------------------------------------------------ bias add + ReLU

/// max(x + b, 0) for x (g, n, o) and b (g, o): a layer's bias and ReLU (g = 1
/// for a linear layer, g experts for a batched bank). Candle's composed ReLU
/// backward makes four passes and three buffers (zeros, x ≥ 0, its cast, the
/// product) before the bias' own; here forward and backward are one pass each.
struct BiasRelu {
    g: usize,
    o: usize,
}

impl CustomOp2 for BiasRelu {
    fn name(&self) -> &'static str {
        "fused-bias-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, b) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        let (g, o) = (self.g.max(1), self.o.max(1));
        let per = x.len() / g;
        let mut out = x.to_vec();
        out.par_chunks_mut(o)
            .enumerate()
            .with_min_len(PAR_MIN / o + 1)
            .for_each(|(r, row)| {
                let b = &b[(r * o / per.max(1)) * o..][..o];
                for (y, &b) in row.iter_mut().zip(b) {
                    *y = (*y + b).max(0.0);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (x, b, dy) = (x.contiguous()?, b.contiguous()?, grad.contiguous()?);
        let n = x.elem_count();
        let both = x.apply_op3_no_bwd(
            &b,
            &dy,
            &BiasReluBwd {
                g: self.g,
                o: self.o,
            },
        )?;
        let dx = both.narrow(0, 0, n)?.reshape(x.shape())?;
        let db = both.narrow(0, n, b.elem_count())?.reshape(b.shape())?;
        Ok((Some(dx), Some(db)))
    }
}

/// dx = dy where x + b ≥ 0 (else 0), as candle's ReLU; db = the sum of each
/// group's rows of dx, rows added in order.
struct BiasReluBwd {
    g: usize,
    o: usize,
}

impl CustomOp3 for BiasReluBwd {
    fn name(&self) -> &'static str {
        "fused-bias-relu-bwd"
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
        let x = f32s(s1, l1, self.name())?;
        let b = f32s(s2, l2, self.name())?;
        let dy = f32s(s3, l3, self.name())?;
        let (g, o) = (self.g.max(1), self.o.max(1));
        let per = x.len() / g;
        let mut out = vec![0f32; x.len() + b.len()];
        let (dx, db) = out.split_at_mut(x.len());
        dx.par_chunks_mut(o)
            .zip(x.par_chunks(o).zip(dy.par_chunks(o)))
            .enumerate()
            .with_min_len(PAR_MIN / o + 1)
            .for_each(|(r, (dx, (x, dy)))| {
                let b = &b[(r * o / per.max(1)) * o..][..o];
                for (((d, &v), &g), &b) in dx.iter_mut().zip(x).zip(dy).zip(b) {
                    *d = if v + b >= 0.0 { g } else { 0.0 };
                }
            });
        let dx = &*dx;
        db.par_chunks_mut(o)
            .zip(dx.par_chunks(per.max(1)))
            .for_each(|(acc, rows)| {
                for row in rows.chunks(o) {
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a += v;
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from(x.len() + b.len())))
    }
}

/// max(x + b, 0): x (n, o) with b (o), or x (g, n, o) with b (g, 1, o) (a
/// batched bank of g layers), one graph node.
pub fn bias_relu(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    let o = x.dims().last().copied().unwrap_or(0);
    let g = match (x.dims(), b.dims()) {
        ([_, xo], [bo]) if xo == bo => 1,
        ([xg, _, xo], [bg, 1, bo]) if xg == bg && xo == bo => *xg,
        _ => 0,
    };
    if !fused_ok(x) || g == 0 || o == 0 || b.dtype() != x.dtype() {
        return x.broadcast_add(b)?.relu();
    }
    x.contiguous()?
        .apply_op2(&b.contiguous()?, BiasRelu { g, o })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{D, Device, Var};

    pub(crate) fn rand(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::nn::rng::Rng::new(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 1.5).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        let s = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        d.to_scalar::<f32>().unwrap() / s.to_scalar::<f32>().unwrap().max(1e-6)
    }

    /// Values and input gradients of `fused` and `composed` under a random
    /// linear read-out.
    pub(crate) fn same(
        inputs: &[Tensor],
        fused: impl Fn(&[Tensor]) -> Result<Tensor>,
        composed: impl Fn(&[Tensor]) -> Result<Tensor>,
    ) {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let a = fused(&ts).unwrap();
        let b = composed(&ts).unwrap();
        assert!(max_rel(&a, &b) < 1e-5, "values: {}", max_rel(&a, &b));
        let probe = rand(a.dims(), 99);
        let ga = (a * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for v in &vars {
            let (x, y) = (
                ga.get(v.as_tensor()).unwrap(),
                gb.get(v.as_tensor()).unwrap(),
            );
            assert!(max_rel(x, y) < 1e-4, "gradient: {}", max_rel(x, y));
            assert!(
                x.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    > 0.0
            );
        }
    }

    #[test]
    fn rms_norm_matches_the_composed_ops() {
        let w = (rand(&[48], 2).abs().unwrap() + 0.5).unwrap();
        let composed = |t: &[Tensor]| {
            let ms = t[0].sqr()?.mean_keepdim(D::Minus1)?;
            t[0].broadcast_div(&(ms + 1e-5)?.sqrt()?)?.broadcast_mul(&w)
        };
        same(
            &[rand(&[3, 5, 48], 1)],
            |t| rms_norm(&t[0], &w, 1e-5),
            composed,
        );
    }

    #[test]
    fn masked_softmax_matches_the_composed_ops() {
        // A causal mask over (t = 4, s = 6): two prefix positions always visible.
        let mut m = vec![0f32; 24];
        for i in 0..4 {
            for j in 0..6 {
                if j > i + 2 {
                    m[i * 6 + j] = -1e9;
                }
            }
        }
        let mask = Tensor::from_vec(m, (4, 6), &Device::Cpu).unwrap();
        let composed =
            |t: &[Tensor]| crate::nn::ops::softmax(&(&t[0] * 0.35)?.broadcast_add(&mask)?);
        same(
            &[rand(&[2, 3, 4, 6], 3)],
            |t| masked_softmax(&t[0], Some(&mask), 0.35),
            composed,
        );
        // Grouped rows (GQA): the mask repeats over blocks of 4 rows.
        let tiled = Tensor::cat(&[&mask, &mask], 0).unwrap();
        same(
            &[rand(&[2, 3, 8, 6], 7)],
            |t| masked_softmax(&t[0], Some(&mask), 0.35),
            |t| crate::nn::ops::softmax(&(&t[0] * 0.35)?.broadcast_add(&tiled)?),
        );
        same(
            &[rand(&[7, 9], 4)],
            |t| masked_softmax(&t[0], None, 1.0),
            |t| crate::nn::ops::softmax(&t[0]),
        );
    }

    #[test]
    fn rope_matches_the_composed_ops_in_both_layouts() {
        let (t, d) = (5, 8);
        let ang: Vec<f32> = (0..t * d / 2)
            .map(|i| (i as f32 * 0.37).sin() * 3.0)
            .collect();
        let a = Tensor::from_vec(ang, (t, d / 2), &Device::Cpu).unwrap();
        let (cos, sin) = (a.cos().unwrap(), a.sin().unwrap());
        for interleaved in [false, true] {
            // The composed path is what the fused op falls back to for f64.
            same(
                &[rand(&[2, 3, t, d], 8)],
                |x| rope(&x[0], &cos, &sin, interleaved),
                |x| {
                    let y = rope(
                        &x[0].to_dtype(candle_core::DType::F64)?,
                        &cos.to_dtype(candle_core::DType::F64)?,
                        &sin.to_dtype(candle_core::DType::F64)?,
                        interleaved,
                    )?;
                    y.to_dtype(candle_core::DType::F32)
                },
            );
        }
    }

    #[test]
    fn gated_matches_the_composed_ops() {
        same(
            &[rand(&[7, 300], 8), rand(&[7, 300], 9)],
            |t| gated(&t[0], &t[1]),
            |t| &t[0] * (crate::nn::ops::sigmoid(&t[1])? * 2.0)?,
        );
    }

    #[test]
    fn mix_matches_the_composed_ops() {
        same(
            &[rand(&[9, 4, 33], 12), rand(&[9, 4], 13)],
            |t| mix(&t[0], &t[1]),
            |t| t[0].broadcast_mul(&t[1].unsqueeze(D::Minus1)?)?.sum(1),
        );
        // Many rows: the parallel chunks.
        same(
            &[rand(&[600, 3, 64], 14), rand(&[600, 3], 15)],
            |t| mix(&t[0], &t[1]),
            |t| t[0].broadcast_mul(&t[1].unsqueeze(D::Minus1)?)?.sum(1),
        );
    }

    #[test]
    fn bias_add_matches_the_composed_ops() {
        for n in [5, 700] {
            same(
                &[rand(&[n, 37], 16), rand(&[37], 17)],
                |t| bias_add(&t[0], &t[1]),
                |t| t[0].broadcast_add(&t[1]),
            );
        }
    }

    #[test]
    fn bias_relu_matches_the_composed_ops() {
        for n in [5, 700] {
            same(
                &[rand(&[n, 37], 18), rand(&[37], 19)],
                |t| bias_relu(&t[0], &t[1]),
                |t| t[0].broadcast_add(&t[1])?.relu(),
            );
            same(
                &[rand(&[3, n, 11], 20), rand(&[3, 1, 11], 21)],
                |t| bias_relu(&t[0], &t[1]),
                |t| t[0].broadcast_add(&t[1])?.relu(),
            );
        }
    }

    /// A linear layer's bias + ReLU gives the digits of `bias_add` then candle's
    /// ReLU, values and gradients (runs made before the fusion stay reproducible).
    #[test]
    fn bias_relu_equals_bias_add_then_relu_to_the_bit() {
        let x = Var::from_tensor(&rand(&[300, 40], 22)).unwrap();
        let b = Var::from_tensor(&rand(&[40], 23)).unwrap();
        let probe = rand(&[300, 40], 24);
        let run = |f: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>| {
            let y = f(x.as_tensor(), b.as_tensor()).unwrap();
            let g = (&y * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            [
                y,
                g.get(x.as_tensor()).unwrap().clone(),
                g.get(b.as_tensor()).unwrap().clone(),
            ]
            .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        };
        let fused = run(&|x, b| bias_relu(x, b));
        let composed = run(&|x, b| bias_add(x, b)?.relu());
        assert_eq!(fused, composed);
    }

    #[test]
    fn swiglu_matches_the_composed_ops() {
        same(
            &[rand(&[6, 40], 5), rand(&[6, 40], 6)],
            |t| swiglu(&t[0], &t[1]),
            |t| t[0].silu()? * &t[1],
        );
    }
}
