//! The decoder's layers `from..to` as one graph node with a hand-written
//! backward pass (CPU, f32).
//!
//! Even with one node per projection, MLP and attention, candle's backward
//! allocates, zero-fills and sums a gradient buffer for every node input: about
//! ten (tokens × hidden) buffers per layer. Here every adapter parameter of the
//! stack is one packed vector (a concatenation in the graph, so each variable
//! still gets its own gradient) and the layers run forward and backward on
//! slices: the backward pass is the layers' matrix products plus one pass per
//! norm, SwiGLU and attention block. The forward keeps each layer's activations
//! (about 30 MB per layer for SmolLM2 on 21 × 64 tokens) and the backward
//! recomputes what is cheap (attention probabilities; SwiGLU's output only where
//! the down projection has a LoRA term that needs it). New activations are
//! written by the matrix products without a zero-fill first, and the backward's
//! per-layer gradient buffers are reused from layer to layer.
//!
//! The same computation composed of per-block nodes is the decoder's other path
//! (`Decoder::stack_op = false`, and every device other than the CPU); a test
//! compares the two, values and gradients.

use super::adapters::{Adapters, PrefixKv, Target};
use super::config::RopeLayout;
use super::decoder::Decoder;
use super::frozen::{Linear, LoraS, swiglu_rows, swiglu_rows_bwd};
use crate::nn::attention::{Attention, Dims};
use crate::nn::fused::{rms_rows, rms_rows_bwd};
use crate::nn::gemm::{storage_f32, with_f32s};
use crate::nn::rng::Rng;
use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};
use std::sync::Mutex;

/// Where one LoRA module's factors sit in the packed vector, and its dropout mask.
struct LoraAt {
    a: usize,
    b: usize,
    r: usize,
    keep: Option<Vec<f32>>,
}

/// One layer's frozen weights (Target::ALL order, stored (in, out)), q/k/v
/// biases, norms, and where its adapters sit in the packed vector.
struct LayerOp {
    w: [Tensor; 7],
    bias: [Option<Vec<f32>>; 3],
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    lora: [Option<LoraAt>; 7],
    /// Offsets of the prefix keys and values, each (kv_heads, plen, head_dim).
    prefix: Option<(usize, usize)>,
}

/// What a layer's backward pass needs from its forward pass.
struct Saved {
    h_in: Vec<f32>,
    x2a: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    h_mid: Vec<f32>,
    x2m: Vec<f32>,
    gu: Vec<f32>,
}

/// Per-layer gradient buffers of the backward pass, reused from layer to layer
/// (each is overwritten before it is read).
struct Work {
    dact: Vec<f32>,
    dgu: Vec<f32>,
    dx2: Vec<f32>,
    datt: Vec<f32>,
}

struct Stack {
    layers: Vec<LayerOp>,
    /// (in, out) of each target.
    dims: [(usize, usize); 7],
    /// Attention sizes with plen = 0; layers with a prefix set their own plen.
    att: Dims,
    prefix_len: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
    eps: f32,
    lora_scale: f32,
    saved: Mutex<Vec<Saved>>,
    keep: bool,
}

const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const GATE: usize = 4;
const UP: usize = 5;
const DOWN: usize = 6;

impl Stack {
    fn attention(&self, layer: &LayerOp) -> Result<Attention> {
        let mut d = self.att;
        if layer.prefix.is_some() {
            d.plen = self.prefix_len;
        }
        Attention::new(
            d,
            self.cos.clone(),
            self.sin.clone(),
            1.0 / (d.head_dim as f64).sqrt(),
        )
    }

    fn linear<'a>(&self, w: &[&'a [f32]], i: usize) -> Linear<'a> {
        Linear {
            wt: w[i],
            k: self.dims[i].0,
            out: self.dims[i].1,
        }
    }

    fn lora<'a>(&self, layer: &'a LayerOp, packed: &'a [f32], i: usize) -> Option<LoraS<'a>> {
        let l = layer.lora[i].as_ref()?;
        let (k, out) = self.dims[i];
        Some(LoraS {
            a: &packed[l.a..l.a + l.r * k],
            b: &packed[l.b..l.b + out * l.r],
            r: l.r,
            scale: self.lora_scale,
            keep: l.keep.as_deref(),
        })
    }

    /// Each sequence's prefix rows (if any) followed by its t projected rows:
    /// (b·(plen+t) × kvd).
    fn with_prefix(&self, x: Vec<f32>, prefix: Option<&[f32]>) -> Vec<f32> {
        let Some(p) = prefix else {
            return x;
        };
        let Dims {
            b, t, head_dim: hd, ..
        } = self.att;
        let (kvd, plen) = (self.att.kvd(), self.prefix_len);
        let s = plen + t;
        let mut out = vec![0f32; b * s * kvd];
        for bi in 0..b {
            for j in 0..plen {
                for g in 0..self.att.kv_heads {
                    let at = (bi * s + j) * kvd + g * hd;
                    out[at..at + hd].copy_from_slice(&p[(g * plen + j) * hd..][..hd]);
                }
            }
            out[(bi * s + plen) * kvd..(bi * s + s) * kvd]
                .copy_from_slice(&x[bi * t * kvd..(bi + 1) * t * kvd]);
        }
        out
    }

    /// Splits a gradient in the [`Stack::with_prefix`] layout into the token
    /// rows (n × kvd) and, summed over sequences, the prefix's (kv_heads, plen, hd).
    fn split_prefix(&self, d: Vec<f32>, plen: usize) -> (Vec<f32>, Vec<f32>) {
        if plen == 0 {
            return (d, Vec::new());
        }
        let Dims {
            b, t, head_dim: hd, ..
        } = self.att;
        let kvd = self.att.kvd();
        let s = plen + t;
        let mut rows = vec![0f32; b * t * kvd];
        let mut p = vec![0f32; self.att.kv_heads * plen * hd];
        for bi in 0..b {
            for j in 0..plen {
                for g in 0..self.att.kv_heads {
                    let at = (bi * s + j) * kvd + g * hd;
                    let dst = &mut p[(g * plen + j) * hd..][..hd];
                    dst.iter_mut()
                        .zip(&d[at..at + hd])
                        .for_each(|(p, d)| *p += d);
                }
            }
            rows[bi * t * kvd..(bi + 1) * t * kvd]
                .copy_from_slice(&d[(bi * s + plen) * kvd..(bi * s + s) * kvd]);
        }
        (rows, p)
    }

    fn layer_fwd(
        &self,
        layer: &LayerOp,
        w: &[&[f32]],
        packed: &[f32],
        h: Vec<f32>,
    ) -> Result<(Vec<f32>, Saved)> {
        let n = self.att.b * self.att.t;
        let x2a = rms_rows(&h, &layer.attn_norm, self.eps);
        let mut qkv: Vec<Vec<f32>> = Vec::with_capacity(3);
        for i in [Q, K, V] {
            let out = self.dims[i].1;
            let lora = self.lora(layer, packed, i);
            let mut y = Linear::side_by_side(&[(self.linear(w, i), lora.as_ref())], &x2a, n)?;
            if let Some(bias) = &layer.bias[i] {
                y.chunks_mut(out)
                    .for_each(|r| r.iter_mut().zip(bias).for_each(|(y, b)| *y += b));
            }
            qkv.push(y);
        }
        let v = qkv.pop().unwrap_or_default();
        let k = qkv.pop().unwrap_or_default();
        let q = qkv.pop().unwrap_or_default();
        let prefix = |at: usize| &packed[at..at + self.att.kvd() * self.prefix_len];
        let k = self.with_prefix(k, layer.prefix.map(|(pk, _)| prefix(pk)));
        let v = self.with_prefix(v, layer.prefix.map(|(_, pv)| prefix(pv)));
        let att = self.attention(layer)?.forward(&q, &k, &v)?;
        let o_lora = self.lora(layer, packed, O);
        let mut h_mid = Linear::side_by_side(&[(self.linear(w, O), o_lora.as_ref())], &att, n)?;
        h_mid.iter_mut().zip(&h).for_each(|(o, h)| *o += h);
        let x2m = rms_rows(&h_mid, &layer.ffn_norm, self.eps);
        let inter = self.dims[GATE].1;
        let (g_lora, u_lora) = (self.lora(layer, packed, GATE), self.lora(layer, packed, UP));
        let gu = Linear::side_by_side(
            &[
                (self.linear(w, GATE), g_lora.as_ref()),
                (self.linear(w, UP), u_lora.as_ref()),
            ],
            &x2m,
            n,
        )?;
        let act = swiglu_rows(&gu, inter);
        let d_lora = self.lora(layer, packed, DOWN);
        let mut out = Linear::side_by_side(&[(self.linear(w, DOWN), d_lora.as_ref())], &act, n)?;
        out.iter_mut().zip(&h_mid).for_each(|(o, h)| *o += h);
        let saved = Saved {
            h_in: h,
            x2a,
            q,
            k,
            v,
            att,
            h_mid,
            x2m,
            gu,
        };
        Ok((out, saved))
    }

    /// Turns dh (the gradient of the layer's output) into the gradient of its
    /// input, adding the adapters' gradients into `dpacked`.
    #[allow(clippy::too_many_arguments)]
    fn layer_bwd(
        &self,
        layer: &LayerOp,
        w: &[&[f32]],
        packed: &[f32],
        sv: &Saved,
        dh: &mut [f32],
        dpacked: &mut [f32],
        work: &mut Work,
    ) -> Result<()> {
        let n = self.att.b * self.att.t;
        let hsz = layer.attn_norm.len();
        let inter = self.dims[GATE].1;
        let mut put = |i: usize, g: Option<(Vec<f32>, Vec<f32>)>| {
            if let (Some(at), Some((da, db))) = (&layer.lora[i], g) {
                dpacked[at.a..at.a + da.len()].copy_from_slice(&da);
                dpacked[at.b..at.b + db.len()].copy_from_slice(&db);
            }
        };
        // MLP: dh flows to down, SwiGLU, gate and up, then through the norm.
        // The down projection's input is needed only for its LoRA gradients.
        let down_lora = self.lora(layer, packed, DOWN);
        let act = match down_lora {
            Some(_) => swiglu_rows(&sv.gu, inter),
            None => Vec::new(),
        };
        let Work {
            dact,
            dgu,
            dx2,
            datt,
        } = work;
        let g = self.linear(w, DOWN).backward(
            &act,
            n,
            dh,
            hsz,
            Some((&mut dact[..], false)),
            down_lora.as_ref(),
        )?;
        put(DOWN, g);
        swiglu_rows_bwd(&sv.gu, dact, inter, dgu);
        for (i, off, acc) in [(GATE, 0, false), (UP, inter, true)] {
            let g = self.linear(w, i).backward(
                &sv.x2m,
                n,
                &dgu[off..],
                2 * inter,
                Some((&mut dx2[..], acc)),
                self.lora(layer, packed, i).as_ref(),
            )?;
            put(i, g);
        }
        rms_rows_bwd(&sv.h_mid, &layer.ffn_norm, self.eps, dx2, dh, true);

        // Attention: dh flows to o, attention, q/k/v, then through the norm.
        let g = self.linear(w, O).backward(
            &sv.att,
            n,
            dh,
            hsz,
            Some((&mut datt[..], false)),
            self.lora(layer, packed, O).as_ref(),
        )?;
        put(O, g);
        let attn = self.attention(layer)?;
        let [dq, dk, dv] = attn.backward(&sv.q, &sv.k, &sv.v, datt)?;
        let plen = if layer.prefix.is_some() {
            self.prefix_len
        } else {
            0
        };
        let (dk, dpk) = self.split_prefix(dk, plen);
        let (dv, dpv) = self.split_prefix(dv, plen);
        for (i, d) in [(Q, &dq), (K, &dk), (V, &dv)] {
            let g = self.linear(w, i).backward(
                &sv.x2a,
                n,
                d,
                self.dims[i].1,
                Some((&mut dx2[..], i != Q)),
                self.lora(layer, packed, i).as_ref(),
            )?;
            put(i, g);
        }
        rms_rows_bwd(&sv.h_in, &layer.attn_norm, self.eps, dx2, dh, true);
        if let Some((pk, pv)) = layer.prefix {
            dpacked[pk..pk + dpk.len()].copy_from_slice(&dpk);
            dpacked[pv..pv + dpv.len()].copy_from_slice(&dpv);
        }
        Ok(())
    }
}

impl CustomOp2 for Stack {
    fn name(&self) -> &'static str {
        "decoder-stack"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = storage_f32(s1, l1, "decoder stack: hidden states")?;
        let packed = storage_f32(s2, l2, "decoder stack: adapter parameters")?;
        let mut h = x.to_vec();
        let mut saved = Vec::new();
        for layer in &self.layers {
            let ws: Vec<&Tensor> = layer.w.iter().collect();
            let (out, sv) = with_f32s(&ws, |w| self.layer_fwd(layer, w, packed, h))??;
            h = out;
            if self.keep {
                saved.push(sv);
            }
        }
        *self.saved.lock().expect("decoder-stack lock") = saved;
        Ok((CpuStorage::F32(h), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        packed: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let saved = self.saved.lock().expect("decoder-stack lock");
        if saved.len() != self.layers.len() {
            candle_core::bail!("decoder stack: backward without the forward pass's activations");
        }
        let mut dh = crate::nn::gemm::with_f32(grad, <[f32]>::to_vec)?;
        let mut dpacked = vec![0f32; packed.elem_count()];
        let n = self.att.b * self.att.t;
        let (hsz, inter) = (self.dims[Q].0, self.dims[GATE].1);
        let mut work = Work {
            dact: vec![0f32; n * inter],
            dgu: vec![0f32; n * 2 * inter],
            dx2: vec![0f32; n * hsz],
            datt: vec![0f32; n * self.dims[O].0],
        };
        crate::nn::gemm::with_f32(packed, |p| -> Result<()> {
            for (layer, sv) in self.layers.iter().zip(saved.iter()).rev() {
                let ws: Vec<&Tensor> = layer.w.iter().collect();
                with_f32s(&ws, |w| {
                    self.layer_bwd(layer, w, p, sv, &mut dh, &mut dpacked, &mut work)
                })??;
            }
            Ok(())
        })??;
        let dx = if x.track_op() {
            Some(Tensor::from_vec(dh, x.shape(), &Device::Cpu)?)
        } else {
            None
        };
        let dp = if packed.track_op() {
            Some(Tensor::from_vec(dpacked, packed.shape(), &Device::Cpu)?)
        } else {
            None
        };
        Ok((dx, dp))
    }
}

/// Layers `from..to` of `dec` on hidden states x (b, t, h) as one node, with the
/// prefixes of [`Decoder::prefix_kv`], or None
/// where the op does not apply (other devices or dtypes): the caller then
/// composes per-block nodes. Draws LoRA dropout masks from `rng` in the same
/// order as the per-block path.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    dec: &Decoder,
    x: &Tensor,
    (from, to): (usize, usize),
    ad: &Adapters,
    prefix: &PrefixKv,
    train: bool,
    rng: &mut Rng,
    tables: (&Tensor, &Tensor),
) -> anyhow::Result<Option<Tensor>> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32 && ad.dtype() == DType::F32) {
        return Ok(None);
    }
    let (b, t, hsz) = x.dims3()?;
    let cfg = &dec.cfg;
    let (nkv, hd) = (cfg.kv_heads(), cfg.head_dim());
    let mut pieces: Vec<Tensor> = Vec::new();
    let mut at = 0usize;
    let mut push = |t: Tensor, pieces: &mut Vec<Tensor>| -> Result<usize> {
        let t = t.flatten_all()?;
        let start = at;
        at += t.elem_count();
        pieces.push(t);
        Ok(start)
    };
    let to_vec = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
    let mut layers = Vec::with_capacity(to.saturating_sub(from));
    for l in from..to {
        let lw = &dec.layers[l];
        let mut lora: [Option<LoraAt>; 7] = Default::default();
        for (i, target) in Target::ALL.into_iter().enumerate() {
            let n_in = b * t * target.dims(cfg).0;
            if let Some(part) = ad.lora_part(l, target, n_in, train, rng) {
                let r = part.a.dim(0)?;
                let a = push(part.a.clone(), &mut pieces)?;
                let bo = push(part.b.clone(), &mut pieces)?;
                lora[i] = Some(LoraAt {
                    a,
                    b: bo,
                    r,
                    keep: part.keep,
                });
            }
        }
        let prefix = match &prefix[l] {
            None => None,
            Some((pk, pv)) => Some((
                push(pk.clone(), &mut pieces)?,
                push(pv.clone(), &mut pieces)?,
            )),
        };
        let bias = [&lw.q.bias, &lw.k.bias, &lw.v.bias].map(|b| b.as_ref().map(to_vec));
        let [bq, bk, bv] = bias;
        layers.push(LayerOp {
            w: [
                lw.q.wt.clone(),
                lw.k.wt.clone(),
                lw.v.wt.clone(),
                lw.o.wt.clone(),
                lw.gate.wt.clone(),
                lw.up.wt.clone(),
                lw.down.wt.clone(),
            ],
            bias: [bq.transpose()?, bk.transpose()?, bv.transpose()?],
            attn_norm: to_vec(&lw.attn_norm)?,
            ffn_norm: to_vec(&lw.ffn_norm)?,
            lora,
            prefix,
        });
    }
    let packed = if pieces.is_empty() {
        Tensor::zeros(1, DType::F32, &Device::Cpu)?
    } else {
        Tensor::cat(&pieces, 0)?
    };
    let op = Stack {
        layers,
        dims: Target::ALL.map(|t| t.dims(cfg)),
        att: Dims {
            b,
            t,
            plen: 0,
            heads: cfg.num_attention_heads,
            kv_heads: nkv,
            head_dim: hd,
            interleaved: dec.rope == RopeLayout::Interleaved,
        },
        prefix_len: ad.prefix_len(),
        cos: to_vec(tables.0)?,
        sin: to_vec(tables.1)?,
        eps: cfg.rms_norm_eps as f32,
        lora_scale: ad.scale() as f32,
        saved: Mutex::new(Vec::new()),
        keep: x.track_op() || packed.track_op(),
    };
    let y = x
        .reshape((b * t, hsz))?
        .contiguous()?
        .apply_op2(&packed, op)?;
    Ok(Some(y.reshape((b, t, hsz))?))
}
