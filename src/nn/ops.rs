//! Differentiable building blocks. candle's fused ops (`softmax_last_dim`,
//! `rms_norm`, ...) have no backward pass and silently drop gradients
//! (`grads.get(var)` is then None, with no error), so everything here is composed
//! of ops that do.

use candle_core::{D, Result, Tensor};

/// Softmax over the last dimension (the max shift is a constant for autograd).
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Logistic sigmoid, 0.5·(tanh(x/2) + 1): finite for any x.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    ((x * 0.5)?.tanh()? + 1.0)? * 0.5
}

/// Softplus, log(1 + exp(x)) computed as max(x, 0) + log(1 + exp(-|x|)).
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// Mean binary cross-entropy of logits `x` against labels `y` (same shape), in the
/// stable form max(x, 0) − x·y + log(1 + exp(−|x|)); candle's own is NaN for large
/// logits.
pub fn bce_with_logits(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    bce_terms(x, y)?.mean_all()
}

/// The summed (not averaged) binary cross-entropy of [`bce_with_logits`]: a
/// data-parallel rank divides it by the global batch size.
pub fn bce_with_logits_sum(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    bce_terms(x, y)?.sum_all()
}

/// [`bce_with_logits_sum`] with each row's term weighted by `w` (same shape).
pub fn bce_with_logits_weighted_sum(x: &Tensor, y: &Tensor, w: &Tensor) -> Result<Tensor> {
    (bce_terms(x, y)? * w)?.sum_all()
}

fn bce_terms(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    (x.relu()? - (x * y)?)? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// Inverted dropout with a mask from our seeded generator.
pub fn dropout(x: &Tensor, p: f64, rng: &mut super::rng::Rng) -> Result<Tensor> {
    let Some(keep) = dropout_mask(x.elem_count(), p, rng) else {
        return Ok(x.clone());
    };
    let mask = Tensor::from_vec(keep, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * mask
}

/// Inverted-dropout multipliers for `n` values: 0 with probability `p`, else
/// 1/(1 − p); None when p ≤ 0 (nothing drawn from `rng`).
pub fn dropout_mask(n: usize, p: f64, rng: &mut super::rng::Rng) -> Option<Vec<f32>> {
    if p <= 0.0 {
        return None;
    }
    Some(
        (0..n)
            .map(|_| {
                if rng.uniform() >= p {
                    (1.0 / (1.0 - p)) as f32
                } else {
                    0.0
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn bce_is_finite_and_correct() {
        let d = Device::Cpu;
        let x = Tensor::new(&[-100f32, 0.0, 3.0, 100.0], &d).unwrap();
        let y = Tensor::new(&[1f32, 0.0, 1.0, 0.0], &d).unwrap();
        let l = bce_with_logits(&x, &y).unwrap().to_scalar::<f32>().unwrap();
        // 100 + ln 2 + ln(1+e^-3) + 100, averaged.
        let want = (100.0 + 2f64.ln() + (1.0 + (-3f64).exp()).ln() + 100.0) / 4.0;
        assert!((l as f64 - want).abs() < 1e-4, "{l} vs {want}");
    }

    #[test]
    fn softmax_and_sigmoid_values_and_gradients() {
        let d = Device::Cpu;
        let v = Var::new(&[[1f64, 2.0, 3.0]], &d).unwrap();
        let s = softmax(v.as_tensor()).unwrap();
        let got = s.to_vec2::<f64>().unwrap()[0].clone();
        let z: f64 = [1f64, 2.0, 3.0].iter().map(|x| x.exp()).sum();
        for (g, x) in got.iter().zip([1f64, 2.0, 3.0]) {
            assert!((g - x.exp() / z).abs() < 1e-12);
        }
        // d/dx of s_0 · 1: s0 (1 − s0) for x0, −s0 s_j otherwise.
        let g = s
            .narrow(1, 0, 1)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gv = g
            .get(&v)
            .expect("softmax gradient")
            .to_vec2::<f64>()
            .unwrap()[0]
            .clone();
        let s0 = got[0];
        assert!((gv[0] - s0 * (1.0 - s0)).abs() < 1e-12);
        assert!((gv[2] + s0 * got[2]).abs() < 1e-12);

        let x = Tensor::new(&[-50f64, 0.0, 2.0], &d).unwrap();
        let sg = sigmoid(&x).unwrap().to_vec1::<f64>().unwrap();
        assert!((sg[1] - 0.5).abs() < 1e-15 && (sg[2] - 1.0 / (1.0 + (-2f64).exp())).abs() < 1e-12);
        assert!(sg[0] >= 0.0 && sg[0] < 1e-20);
        let sp = softplus(&x).unwrap().to_vec1::<f64>().unwrap();
        assert!((sp[2] - (1.0 + 2f64.exp()).ln()).abs() < 1e-12);
    }
}
