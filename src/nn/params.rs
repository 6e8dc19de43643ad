//! Named trainable parameters. Every parameter is a candle `Var` created from our
//! seeded generator, registered here under a name that is also its name in
//! checkpoints.

use super::rng::Rng;
use candle_core::{DType, Device, Result, Tensor, Var};

pub struct Param {
    pub name: String,
    pub var: Var,
}

pub struct ParamStore {
    pub dtype: DType,
    pub device: Device,
    params: Vec<Param>,
}

impl ParamStore {
    pub fn new(dtype: DType, device: &Device) -> Self {
        ParamStore {
            dtype,
            device: device.clone(),
            params: Vec::new(),
        }
    }

    fn add(&mut self, name: String, values: Vec<f64>, shape: &[usize]) -> Result<Tensor> {
        if self.params.iter().any(|p| p.name == name) {
            candle_core::bail!("parameter {name} registered twice");
        }
        let t = Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.dtype)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        self.params.push(Param { name, var });
        Ok(out)
    }

    /// U(−bound, bound).
    pub fn uniform(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        bound: f64,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let n = shape.iter().product();
        let v = (0..n).map(|_| rng.uniform_in(-bound, bound)).collect();
        self.add(name.into(), v, shape)
    }

    /// N(0, std²).
    pub fn normal(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        std: f64,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let n = shape.iter().product();
        let v = (0..n).map(|_| rng.normal() * std).collect();
        self.add(name.into(), v, shape)
    }

    /// A constant fill.
    pub fn fill(&mut self, name: impl Into<String>, shape: &[usize], value: f64) -> Result<Tensor> {
        let n = shape.iter().product();
        self.add(name.into(), vec![value; n], shape)
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub fn get(&self, name: &str) -> Option<&Var> {
        self.params.iter().find(|p| p.name == name).map(|p| &p.var)
    }

    /// Total number of scalars.
    pub fn count(&self) -> usize {
        self.params.iter().map(|p| p.var.elem_count()).sum()
    }
}
