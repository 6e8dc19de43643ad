//! A frozen linear map whose backward pass computes only the input's gradient.
//!
//! candle's matmul backward also computes the gradient of the right-hand operand,
//! frozen or not (specs/candle-notes.md): for a frozen LLM that is one wasted
//! matrix product per projection per step, plus a zero tensor the size of the
//! weight. This custom op keeps the weight outside the graph. On CPU only; other
//! devices use a plain matmul (same result, the wasted work included).

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor};

struct FrozenMatmul {
    /// (in, out), contiguous.
    wt: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, k) = l.shape().dims2()?;
        let CpuStorage::F32(data) = s else {
            candle_core::bail!("frozen-matmul: f32 input expected");
        };
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("frozen-matmul: contiguous input expected");
        };
        let x = Tensor::from_slice(&data[start..end], (n, k), &Device::Cpu)?;
        let y = x.matmul(&self.wt)?;
        let out = y.dim(1)?;
        Ok((
            CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?),
            Shape::from((n, out)),
        ))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.wt.t()?)?))
    }
}

/// x (n, in) · wt (in, out), with no gradient for `wt`.
pub fn frozen_matmul(x: &Tensor, wt: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1(FrozenMatmul { wt: wt.clone() })
    } else {
        x.matmul(wt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    #[test]
    fn same_values_and_input_gradient_as_matmul() {
        let d = Device::Cpu;
        let xs: Vec<f32> = (0..12).map(|i| (i as f32 * 0.3).sin()).collect();
        let ws: Vec<f32> = (0..15).map(|i| (i as f32 * 0.7).cos()).collect();
        let wt = Tensor::from_vec(ws, (3, 5), &d).unwrap();
        let x = Var::from_tensor(&Tensor::from_vec(xs, (4, 3), &d).unwrap()).unwrap();
        let a = frozen_matmul(x.as_tensor(), &wt).unwrap();
        let b = x.as_tensor().matmul(&wt).unwrap();
        assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
        let ga = a.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let gb = b.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let (ga, gb) = (ga.get(&x).unwrap(), gb.get(&x).unwrap());
        let diff = (ga - gb)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "{diff}");
        assert!(
            ga.to_vec2::<f32>()
                .unwrap()
                .iter()
                .flatten()
                .any(|v| *v != 0.0)
        );
    }
}
