//! Causal self-attention with rotary embeddings, grouped-query heads and optional
//! key/value prefixes, as one graph node with an analytic backward (CPU, f32).
//!
//! Composed of candle ops, attention is ~12 nodes per layer (transposes, rotary,
//! prefix concatenation, two batched products, softmax), each with a zeroed and
//! summed gradient buffer in backward. This op reads the projections in their
//! natural (tokens × heads·head_dim) layout and works per (sequence, key/value
//! head): the query heads sharing a key/value head are stacked as rows, so keys
//! and values are never repeated. Its backward recomputes the attention
//! probabilities (a small share of the layer's work) instead of storing them.

use super::gemm::{Mat, Par, matmul};
use super::vmath;
use candle_core::{CpuStorage, CustomOp3, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    /// Sequences and real tokens per sequence.
    pub b: usize,
    pub t: usize,
    /// Prefix key/value rows before each sequence's own (visible to every token,
    /// not rotated: P-Tuning v2's virtual tokens).
    pub plen: usize,
    /// Query heads, key/value heads, head size.
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// GGUF's interleaved rotary pairs (2i, 2i+1), else Hugging Face's (i, i+d/2).
    pub interleaved: bool,
}

impl Dims {
    pub(crate) fn s(&self) -> usize {
        self.plen + self.t
    }
    pub(crate) fn rep(&self) -> usize {
        self.heads / self.kv_heads
    }
    pub(crate) fn qd(&self) -> usize {
        self.heads * self.head_dim
    }
    pub(crate) fn kvd(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

pub(crate) struct Attention {
    d: Dims,
    /// Rotary tables for the real tokens, (t, head_dim/2).
    cos: Vec<f32>,
    sin: Vec<f32>,
    scale: f32,
}

/// One (sequence, key/value head) block's inputs: rotated queries of the `rep`
/// heads stacked as rows (rep·t × hd), rotated keys (s × hd) and the softmax
/// probabilities (rep·t × s, zero where masked).
struct Block {
    q: Vec<f32>,
    k: Vec<f32>,
    p: Vec<f32>,
}

impl Attention {
    /// `cos`, `sin`: rotary tables for the real tokens, (t × head_dim/2) values.
    pub(crate) fn new(d: Dims, cos: Vec<f32>, sin: Vec<f32>, scale: f64) -> Result<Self> {
        if d.kv_heads == 0 || !d.heads.is_multiple_of(d.kv_heads) || !d.head_dim.is_multiple_of(2) {
            candle_core::bail!("fused attention: unsupported head layout {d:?}");
        }
        if cos.len() != d.t * d.head_dim / 2 || sin.len() != cos.len() {
            candle_core::bail!("fused attention: rotary tables do not fit {d:?}");
        }
        Ok(Attention {
            d,
            cos,
            sin,
            scale: scale as f32,
        })
    }

    /// Rotates one head row in place for real token `pos`; `sign` −1 undoes it.
    fn rotate(&self, row: &mut [f32], pos: usize, sign: f32) {
        let half = self.d.head_dim / 2;
        let c = &self.cos[pos * half..(pos + 1) * half];
        let s = &self.sin[pos * half..(pos + 1) * half];
        for i in 0..half {
            let (a, b) = if self.d.interleaved {
                (2 * i, 2 * i + 1)
            } else {
                (i, i + half)
            };
            let (xa, xb, si) = (row[a], row[b], sign * s[i]);
            row[a] = xa * c[i] - xb * si;
            row[b] = xa * si + xb * c[i];
        }
    }

    /// Rows r·t + i of the block ↔ token i of query head g·rep + r.
    fn gather_q(&self, q: &[f32], bi: usize, g: usize) -> Vec<f32> {
        let Dims {
            t, head_dim: hd, ..
        } = self.d;
        let (rep, qd) = (self.d.rep(), self.d.qd());
        let mut out = vec![0f32; rep * t * hd];
        for r in 0..rep {
            let col = (g * rep + r) * hd;
            for i in 0..t {
                let src = (bi * t + i) * qd + col;
                out[(r * t + i) * hd..][..hd].copy_from_slice(&q[src..src + hd]);
            }
        }
        out
    }

    fn scatter_q(&self, block: &[f32], dst: &mut [f32], bi: usize, g: usize) {
        let Dims {
            t, head_dim: hd, ..
        } = self.d;
        let (rep, qd) = (self.d.rep(), self.d.qd());
        for r in 0..rep {
            let col = (g * rep + r) * hd;
            for i in 0..t {
                let at = (bi * t + i) * qd + col;
                dst[at..at + hd].copy_from_slice(&block[(r * t + i) * hd..][..hd]);
            }
        }
    }

    /// Key/value rows of sequence bi, head g: a (s × hd) view into k or v.
    fn kv_view<'a>(&self, kv: &'a [f32], bi: usize, g: usize) -> Mat<'a> {
        Mat {
            data: &kv[bi * self.d.s() * self.d.kvd() + g * self.d.head_dim..],
            rs: self.d.kvd(),
            cs: 1,
        }
    }

    fn scatter_kv(&self, block: &[f32], dst: &mut [f32], bi: usize, g: usize) {
        let (hd, kvd, s) = (self.d.head_dim, self.d.kvd(), self.d.s());
        for j in 0..s {
            let at = (bi * s + j) * kvd + g * hd;
            dst[at..at + hd].copy_from_slice(&block[j * hd..][..hd]);
        }
    }

    /// The output (b·t × heads·hd) for q, k, v in the op's input layouts.
    pub(crate) fn forward(&self, q: &[f32], k: &[f32], v: &[f32]) -> Result<Vec<f32>> {
        let d = self.d;
        let (rep, s, hd) = (d.rep(), d.s(), d.head_dim);
        let blocks: Vec<Vec<f32>> = (0..d.b * d.kv_heads)
            .into_par_iter()
            .map(|task| {
                let (bi, g) = (task / d.kv_heads, task % d.kv_heads);
                let blk = self.block(q, k, bi, g)?;
                let mut o = vec![0f32; rep * d.t * hd];
                matmul(
                    (rep * d.t, hd, s),
                    &mut o,
                    hd,
                    false,
                    Mat::rows(&blk.p, s),
                    self.kv_view(v, bi, g),
                    Par::Serial,
                )?;
                Ok(o)
            })
            .collect::<Result<_>>()?;
        let mut out = vec![0f32; d.b * d.t * d.qd()];
        for (task, o) in blocks.iter().enumerate() {
            self.scatter_q(o, &mut out, task / d.kv_heads, task % d.kv_heads);
        }
        Ok(out)
    }

    /// Gradients of q, k and v (layouts as the inputs) from the output's dy.
    pub(crate) fn backward(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        dy: &[f32],
    ) -> Result<[Vec<f32>; 3]> {
        let d = self.d;
        let (rep, s, hd, t) = (d.rep(), d.s(), d.head_dim, d.t);
        let grads: Vec<[Vec<f32>; 3]> = (0..d.b * d.kv_heads)
            .into_par_iter()
            .map(|task| {
                let (bi, g) = (task / d.kv_heads, task % d.kv_heads);
                let blk = self.block(q, k, bi, g)?;
                let dout = self.gather_q(dy, bi, g);
                let vv = self.kv_view(v, bi, g);
                // dV = Pᵀ·dO, dP = dO·Vᵀ.
                let mut dv = vec![0f32; s * hd];
                matmul(
                    (s, hd, rep * t),
                    &mut dv,
                    hd,
                    false,
                    Mat::rows_t(&blk.p, s),
                    Mat::rows(&dout, hd),
                    Par::Serial,
                )?;
                let mut ds = vec![0f32; rep * t * s];
                matmul(
                    (rep * t, s, hd),
                    &mut ds,
                    s,
                    false,
                    Mat::rows(&dout, hd),
                    Mat {
                        data: vv.data,
                        rs: 1,
                        cs: vv.rs,
                    },
                    Par::Serial,
                )?;
                // Softmax backward: dS = scale · P ⊙ (dP − Σ_j P·dP).
                for (dr, pr) in ds.chunks_mut(s).zip(blk.p.chunks(s)) {
                    vmath::softmax_bwd(dr, pr, self.scale);
                }
                let mut dq = vec![0f32; rep * t * hd];
                matmul(
                    (rep * t, hd, s),
                    &mut dq,
                    hd,
                    false,
                    Mat::rows(&ds, s),
                    Mat::rows(&blk.k, hd),
                    Par::Serial,
                )?;
                let mut dk = vec![0f32; s * hd];
                matmul(
                    (s, hd, rep * t),
                    &mut dk,
                    hd,
                    false,
                    Mat::rows_t(&ds, s),
                    Mat::rows(&blk.q, hd),
                    Par::Serial,
                )?;
                // Back through the rotations (their inverse is their transpose).
                for (row, r) in dq.chunks_mut(hd).zip(0..) {
                    self.rotate(row, r % t, -1.0);
                }
                for (j, row) in dk.chunks_mut(hd).enumerate().skip(d.plen) {
                    self.rotate(row, j - d.plen, -1.0);
                }
                Ok([dq, dk, dv])
            })
            .collect::<Result<_>>()?;
        let mut dq = vec![0f32; q.len()];
        let mut dk = vec![0f32; k.len()];
        let mut dv = vec![0f32; v.len()];
        for (task, [bq, bk, bv]) in grads.iter().enumerate() {
            let (bi, g) = (task / d.kv_heads, task % d.kv_heads);
            self.scatter_q(bq, &mut dq, bi, g);
            self.scatter_kv(bk, &mut dk, bi, g);
            self.scatter_kv(bv, &mut dv, bi, g);
        }
        Ok([dq, dk, dv])
    }

    fn block(&self, q: &[f32], k: &[f32], bi: usize, g: usize) -> Result<Block> {
        let Dims {
            t,
            plen,
            head_dim: hd,
            ..
        } = self.d;
        let (s, rep) = (self.d.s(), self.d.rep());
        let mut qb = self.gather_q(q, bi, g);
        for (row, r) in qb.chunks_mut(hd).zip(0..) {
            self.rotate(row, r % t, 1.0);
        }
        let kv = self.kv_view(k, bi, g);
        let mut kb = vec![0f32; s * hd];
        for (j, row) in kb.chunks_mut(hd).enumerate() {
            row.copy_from_slice(&kv.data[j * kv.rs..][..hd]);
            if j >= plen {
                self.rotate(row, j - plen, 1.0);
            }
        }
        let mut p = vec![0f32; rep * t * s];
        matmul(
            (rep * t, s, hd),
            &mut p,
            s,
            false,
            Mat::rows(&qb, hd),
            Mat::rows_t(&kb, hd),
            Par::Serial,
        )?;
        for (row, r) in p.chunks_mut(s).zip(0..) {
            // Token i sees the prefix and tokens 0..=i.
            let seen = plen + r % t + 1;
            let (vis, hidden) = row.split_at_mut(seen);
            vmath::softmax(vis, self.scale);
            hidden.fill(0.0);
        }
        Ok(Block { q: qb, k: kb, p })
    }
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, n: usize, what: &str) -> Result<&'a [f32]> {
    let v = super::gemm::storage_f32(s, l, what)?;
    if v.len() != n {
        candle_core::bail!(
            "fused attention: {what} has {} values, {n} expected",
            v.len()
        );
    }
    Ok(v)
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
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
        let d = self.d;
        let q = slice(s1, l1, d.b * d.t * d.qd(), "queries")?;
        let k = slice(s2, l2, d.b * d.s() * d.kvd(), "keys")?;
        let v = slice(s3, l3, d.b * d.s() * d.kvd(), "values")?;
        let out = self.forward(q, k, v)?;
        Ok((CpuStorage::F32(out), Shape::from((d.b * d.t, d.qd()))))
    }

    fn bwd(
        &self,
        q_t: &Tensor,
        k_t: &Tensor,
        v_t: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [dq, dk, dv] = super::gemm::with_f32s(&[q_t, k_t, v_t, grad], |s| {
            self.backward(s[0], s[1], s[2], s[3])
        })??;
        let out = |x: Vec<f32>, like: &Tensor| -> Result<Option<Tensor>> {
            if like.track_op() {
                Ok(Some(Tensor::from_vec(x, like.shape(), &Device::Cpu)?))
            } else {
                Ok(None)
            }
        };
        Ok((out(dq, q_t)?, out(dk, k_t)?, out(dv, v_t)?))
    }
}

/// Attention of queries q (b·t, heads·hd) over keys and values k, v
/// (b·(plen+t), kv_heads·hd), each sequence's plen prefix rows first; rotary
/// tables cos, sin (t, hd/2) for the real tokens; scores scaled by `scale`.
/// Returns (b·t, heads·hd). One fused node on the CPU in f32; composed candle ops
/// ([`attention_composed`]) on other devices and dtypes.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    d: Dims,
    scale: f64,
) -> Result<Tensor> {
    if cos.dims() != [d.t, d.head_dim / 2] || sin.dims() != cos.dims() {
        candle_core::bail!(
            "fused attention: rotary tables {:?} do not fit {d:?}",
            cos.dims()
        );
    }
    if !(q.device().is_cpu() && q.dtype() == candle_core::DType::F32) {
        return attention_composed(q, k, v, cos, sin, d, scale);
    }
    let table = |x: &Tensor| super::gemm::with_f32(x, <[f32]>::to_vec);
    let op = Attention::new(d, table(cos)?, table(sin)?, scale)?;
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// [`attention`] composed of candle ops (the fused rotary and softmax nodes, which
/// themselves fall back to plain ops off the CPU): same inputs, same result.
pub fn attention_composed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    d: Dims,
    scale: f64,
) -> Result<Tensor> {
    let Dims {
        b,
        t,
        plen,
        heads,
        kv_heads,
        head_dim: hd,
        interleaved,
    } = d;
    let s = d.s();
    let rope = |x: &Tensor| super::fused::rope(x, cos, sin, interleaved);
    let q = q
        .reshape((b, t, heads, hd))?
        .transpose(1, 2)?
        .contiguous()?;
    let heads_first = |x: &Tensor| -> Result<Tensor> {
        x.reshape((b, s, kv_heads, hd))?
            .transpose(1, 2)?
            .contiguous()
    };
    let (k, v) = (heads_first(k)?, heads_first(v)?);
    let q = rope(&q)?;
    let k = if plen > 0 {
        Tensor::cat(&[&k.narrow(2, 0, plen)?, &rope(&k.narrow(2, plen, t)?)?], 2)?
    } else {
        rope(&k)?
    };
    // The query heads of key/value head g as rows: (b, kv_heads, rep·t, hd).
    let qg = q.reshape((b, kv_heads, d.rep() * t, hd))?;
    let scores = qg.matmul(&k.t()?)?;
    let mut m = vec![0f32; t * s];
    for i in 0..t {
        for j in plen + i + 1..s {
            m[i * s + j] = f32::NEG_INFINITY;
        }
    }
    let mask = Tensor::from_vec(m, (t, s), q.device())?.to_dtype(q.dtype())?;
    let probs = super::fused::masked_softmax(&scores, Some(&mask), scale)?;
    probs
        .matmul(&v)?
        .reshape((b, heads, t, hd))?
        .transpose(1, 2)?
        .reshape((b * t, heads * hd))
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
            .map(|_| rng.normal() as f32)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The fused op against the composed ops in f64: values and the gradients of
    /// q, k and v, for grouped heads, both rotary layouts, with and without prefix.
    #[test]
    fn fused_attention_matches_the_composed_ops() {
        for (plen, interleaved, heads, kv_heads) in [
            (0, false, 4, 2),
            (3, true, 4, 2),
            (2, false, 3, 3),
            (0, true, 6, 1),
        ] {
            let d = Dims {
                b: 2,
                t: 5,
                plen,
                heads,
                kv_heads,
                head_dim: 8,
                interleaved,
            };
            let ang: Vec<f32> = (0..d.t * 4)
                .map(|i| (i as f32 * 0.41).sin() * 2.0)
                .collect();
            let ang = Tensor::from_vec(ang, (d.t, 4), &Device::Cpu).unwrap();
            let (cos, sin) = (ang.cos().unwrap(), ang.sin().unwrap());
            let q = Var::from_tensor(&rand((d.b * d.t, d.qd()), 1)).unwrap();
            let k = Var::from_tensor(&rand((d.b * d.s(), d.kvd()), 2)).unwrap();
            let v = Var::from_tensor(&rand((d.b * d.s(), d.kvd()), 3)).unwrap();
            let y = attention(
                q.as_tensor(),
                k.as_tensor(),
                v.as_tensor(),
                &cos,
                &sin,
                d,
                0.35,
            )
            .unwrap();
            let f64s: Vec<Var> = [&q, &k, &v]
                .iter()
                .map(|x| Var::from_tensor(&x.as_tensor().to_dtype(DType::F64).unwrap()).unwrap())
                .collect();
            let c64 = cos.to_dtype(DType::F64).unwrap();
            let s64 = sin.to_dtype(DType::F64).unwrap();
            let y64 = attention(
                f64s[0].as_tensor(),
                f64s[1].as_tensor(),
                f64s[2].as_tensor(),
                &c64,
                &s64,
                d,
                0.35,
            )
            .unwrap();
            let diff = max_abs(&(y64.to_dtype(DType::F32).unwrap() - &y).unwrap());
            assert!(diff < 1e-5 * max_abs(&y), "{d:?}: values differ by {diff}");
            let probe = rand(y.dims2().unwrap(), 9);
            let g = (&y * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g64 = (&y64 * probe.to_dtype(DType::F64).unwrap())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (x, x64) in [&q, &k, &v].iter().zip(&f64s) {
                let a = g.get(x.as_tensor()).unwrap();
                let b = g64
                    .get(x64.as_tensor())
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap();
                let diff = max_abs(&(a - &b).unwrap());
                assert!(
                    diff < 1e-4 * max_abs(&b),
                    "{d:?}: gradients differ by {diff}"
                );
                assert!(max_abs(a) > 0.0);
            }
            // The prefix rows of each sequence are seen by every token: their
            // value gradient is non-zero, and the last token sees all rows.
            if plen > 0 {
                let gv = g.get(v.as_tensor()).unwrap();
                assert!(max_abs(&gv.narrow(0, 0, plen).unwrap()) > 0.0);
            }
        }
    }
}
