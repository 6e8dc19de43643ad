//! Finite-difference gradient checks for layers built on a [`ParamStore`]: the
//! analytic gradient of a scalar function of the parameters against central
//! differences, in f64.

use super::params::ParamStore;
use candle_core::{Result, Tensor};

/// Compare autograd and central differences for every parameter of `ps` (which must
/// be f64), probing up to `probes` entries per parameter. The differences carry a
/// rounding error of about 1e-16·|f|/`eps` and a truncation error of about `eps`²,
/// and a kink (ReLU) inside a step spoils one probe: 1e-5 suits layers of unit
/// scale. Returns the largest
/// relative error max|a − n| / max(1e-6, |a| + |n|) and the parameters whose
/// analytic gradient is missing or all zero.
pub fn check(
    ps: &ParamStore,
    probes: usize,
    eps: f64,
    f: &dyn Fn() -> Result<Tensor>,
) -> Result<(f64, Vec<String>)> {
    let loss = f()?;
    let grads = loss.backward()?;
    let mut worst: f64 = 0.0;
    let mut dead = Vec::new();
    for p in ps.params() {
        let Some(g) = grads.get(p.var.as_tensor()) else {
            dead.push(p.name.clone());
            continue;
        };
        let g = g.flatten_all()?.to_vec1::<f64>()?;
        if g.iter().all(|x| *x == 0.0) || g.iter().any(|x| !x.is_finite()) {
            dead.push(p.name.clone());
        }
        let orig = p.var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        let shape = p.var.shape().clone();
        let n = orig.len();
        let step = (n / probes.max(1)).max(1);
        for i in (0..n).step_by(step).take(probes) {
            let mut v = orig.clone();
            v[i] = orig[i] + eps;
            p.var
                .set(&Tensor::from_vec(v.clone(), &shape, &ps.device)?)?;
            let up = f()?.to_scalar::<f64>()?;
            v[i] = orig[i] - eps;
            p.var.set(&Tensor::from_vec(v, &shape, &ps.device)?)?;
            let down = f()?.to_scalar::<f64>()?;
            p.var
                .set(&Tensor::from_vec(orig.clone(), &shape, &ps.device)?)?;
            let num = (up - down) / (2.0 * eps);
            let err = (g[i] - num).abs() / (g[i].abs() + num.abs()).max(1e-6);
            worst = worst.max(err);
        }
    }
    Ok((worst, dead))
}
