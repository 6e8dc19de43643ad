//! One shard of a prepared split: named columns in a safetensors file.
//!
//! Columns: one `U32` tensor per categorical feature (0 = missing or not seen in
//! train), `{name}.values`/`{name}.offsets` (`U32`) per multi-hot feature,
//! `label` (`U8`, 0/1), `domain` (`U32`, 0-based) and `timestamp` (`I64`, seconds).

use anyhow::{Context, Result, bail};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub enum ColumnData {
    U32(Vec<u32>),
    U8(Vec<u8>),
    I64(Vec<i64>),
}

impl ColumnData {
    pub fn len(&self) -> usize {
        match self {
            ColumnData::U32(v) => v.len(),
            ColumnData::U8(v) => v.len(),
            ColumnData::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn dtype(&self) -> Dtype {
        match self {
            ColumnData::U32(_) => Dtype::U32,
            ColumnData::U8(_) => Dtype::U8,
            ColumnData::I64(_) => Dtype::I64,
        }
    }

    fn le_bytes(&self) -> Vec<u8> {
        match self {
            ColumnData::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ColumnData::U8(v) => v.clone(),
            ColumnData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    pub fn as_u32(&self) -> Option<&[u32]> {
        match self {
            ColumnData::U32(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_u8(&self) -> Option<&[u8]> {
        match self {
            ColumnData::U8(v) => Some(v),
            _ => None,
        }
    }
}

/// Serialise named columns to safetensors bytes (deterministic: sorted by name).
pub fn shard_bytes(columns: &BTreeMap<String, ColumnData>) -> Result<Vec<u8>> {
    let raw: Vec<(String, Dtype, usize, Vec<u8>)> = columns
        .iter()
        .map(|(n, c)| (n.clone(), c.dtype(), c.len(), c.le_bytes()))
        .collect();
    let mut views = Vec::with_capacity(raw.len());
    for (name, dtype, len, bytes) in &raw {
        views.push((name.as_str(), TensorView::new(*dtype, vec![*len], bytes)?));
    }
    Ok(safetensors::tensor::serialize(views, None)?)
}

/// Read every column of a shard file.
pub fn read_shard(path: &Path) -> Result<BTreeMap<String, ColumnData>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let col = match view.dtype() {
            Dtype::U32 => ColumnData::U32(
                data.chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
            Dtype::U8 => ColumnData::U8(data.to_vec()),
            Dtype::I64 => ColumnData::I64(
                data.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
            other => bail!(
                "{}: column `{name}` has dtype {other:?}, expected U32, U8 or I64",
                path.display()
            ),
        };
        out.insert(name, col);
    }
    check_shard(&out).with_context(|| format!("{} is not a valid shard", path.display()))?;
    Ok(out)
}

/// A shard's columns must describe one table: a `label` column of 0/1 and a
/// `domain` column, every plain column as long as `label`, and each multi-hot
/// feature's offsets (one more than the rows, rising, ending at the values' length).
fn check_shard(cols: &BTreeMap<String, ColumnData>) -> Result<()> {
    let labels = match cols.get("label") {
        Some(ColumnData::U8(v)) => v,
        Some(c) => bail!("column `label` has dtype {:?}, expected U8", c.dtype()),
        None => bail!("no `label` column"),
    };
    if let Some(r) = labels.iter().position(|&y| y > 1) {
        bail!("column `label`: row {}: {} is not 0 or 1", r + 1, labels[r]);
    }
    if !matches!(cols.get("domain"), Some(ColumnData::U32(_))) {
        bail!("no U32 `domain` column");
    }
    let n = labels.len();
    for (name, c) in cols {
        if let Some(field) = name.strip_suffix(".offsets") {
            let off = c
                .as_u32()
                .with_context(|| format!("column `{name}` must be U32"))?;
            let values = cols
                .get(&format!("{field}.values"))
                .with_context(|| format!("column `{name}` has no `{field}.values`"))?
                .len();
            if off.len() != n + 1 || off.first() != Some(&0) || off.last() != Some(&(values as u32))
            {
                bail!(
                    "column `{name}` must hold {} offsets from 0 to {values} (the length of `{field}.values`), it holds {}",
                    n + 1,
                    off.len()
                );
            }
            if let Some(r) = off.windows(2).position(|w| w[0] > w[1]) {
                bail!("column `{name}`: row {}: offsets go down", r + 1);
            }
        } else if !name.ends_with(".values") && c.len() != n {
            bail!(
                "column `{name}` has {} rows, `label` has {n}: columns must be equally long",
                c.len()
            );
        }
    }
    Ok(())
}

/// File name of shard `i` inside a split directory.
pub fn shard_name(i: usize) -> String {
    format!("part-{i:05}.safetensors")
}
