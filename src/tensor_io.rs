//! Tensor files: reading safetensors with an error naming the file, and refusing
//! tensors that hold NaN, infinities or absurd magnitudes. A leaf: it names no
//! other module of the crate.

use anyhow::{Context, Result, bail};
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

/// [`check_finite`] on every tensor of a file, in name order, so a file with
/// several bad tensors names the same one on every run.
pub fn check_all_finite(tensors: &HashMap<String, Tensor>, file: &Path) -> Result<()> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        check_finite(&tensors[name], file, name)?;
    }
    Ok(())
}

/// Refuse a tensor read from `file` (named `name` there) that holds NaN or an
/// infinity, naming the first such value's index.
pub fn check_finite(t: &Tensor, file: &Path, name: &str) -> Result<()> {
    let v = t
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let Some(i) = v.iter().position(|x| !x.is_finite()) else {
        return Ok(());
    };
    // The flat index as one index per dimension.
    let mut idx = vec![0; t.rank()];
    let mut rest = i;
    for (k, &d) in t.dims().iter().enumerate().rev() {
        idx[k] = rest % d.max(1);
        rest /= d.max(1);
    }
    bail!(
        "{}: tensor `{name}` {:?} holds {} at index {idx:?}; every value must be a finite number",
        file.display(),
        t.dims(),
        v[i]
    )
}

/// Refuse values larger in size than `limit` (an embedding file holding 1e30
/// trains without an error but means nothing), naming the file, tensor, index
/// and value.
pub fn check_magnitude(t: &Tensor, file: &Path, name: &str, limit: f32) -> Result<()> {
    let v = t
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let Some(i) = v.iter().position(|x| x.abs() > limit) else {
        return Ok(());
    };
    let cols = t.dims().last().copied().unwrap_or(1).max(1);
    bail!(
        "{}: tensor `{name}` {:?} holds {} at row {}, column {}; values beyond ±{limit:e} are refused \
         (is it the right file, in the right dtype?)",
        file.display(),
        t.dims(),
        v[i],
        i / cols,
        i % cols
    )
}

/// A safetensors file's tensors; an unreadable or truncated file is an error naming it.
pub fn load_safetensors(file: &Path) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(file, &candle_core::Device::Cpu).with_context(|| {
        format!(
            "cannot read {} (missing, truncated or not a safetensors file)",
            file.display()
        )
    })
}
