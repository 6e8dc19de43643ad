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

/// Rows `start..end` of a shard's columns: plain columns sliced, and each
/// multi-hot feature's offsets rebased to 0 with its values cut to match.
pub fn slice_rows(
    columns: &BTreeMap<String, ColumnData>,
    start: usize,
    end: usize,
) -> Result<BTreeMap<String, ColumnData>> {
    let mut out = BTreeMap::new();
    for (name, c) in columns {
        if name.ends_with(".values") {
            continue; // cut with its offsets
        }
        if let Some(field) = name.strip_suffix(".offsets") {
            let off = c
                .as_u32()
                .with_context(|| format!("column `{name}` is not U32"))?;
            let values = columns
                .get(&format!("{field}.values"))
                .and_then(ColumnData::as_u32)
                .with_context(|| format!("column `{name}` has no U32 `{field}.values`"))?;
            let (a, b) = (off[start], off[end]);
            out.insert(
                name.clone(),
                ColumnData::U32(off[start..=end].iter().map(|&o| o - a).collect()),
            );
            out.insert(
                format!("{field}.values"),
                ColumnData::U32(values[a as usize..b as usize].to_vec()),
            );
            continue;
        }
        let part = match c {
            ColumnData::U32(v) => ColumnData::U32(v[start..end].to_vec()),
            ColumnData::U8(v) => ColumnData::U8(v[start..end].to_vec()),
            ColumnData::I64(v) => ColumnData::I64(v[start..end].to_vec()),
        };
        out.insert(name.clone(), part);
    }
    Ok(out)
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

/// Buffers one split's rows and writes a shard every `cap` rows (streamed
/// recipes: Criteo, users' tables with `stream = true`).
pub struct ShardWriter {
    dir: std::path::PathBuf,
    names: Vec<String>,
    bag_names: Vec<String>,
    cap: usize,
    labels: Vec<u8>,
    domains: Vec<u32>,
    times: Vec<i64>,
    cols: Vec<Vec<u32>>,
    /// Per bag: (values, offsets).
    bags: Vec<(Vec<u32>, Vec<u32>)>,
    shards: Vec<String>,
    rows: u64,
}

impl ShardWriter {
    /// `names`: the categorical columns; `bags`: the multi-hot ones.
    pub fn new(dir: std::path::PathBuf, names: &[String], bags: &[String], cap: usize) -> Self {
        ShardWriter {
            dir,
            names: names.to_vec(),
            bag_names: bags.to_vec(),
            cap,
            labels: Vec::with_capacity(cap),
            domains: Vec::with_capacity(cap),
            times: Vec::with_capacity(cap),
            cols: names.iter().map(|_| Vec::with_capacity(cap)).collect(),
            bags: bags.iter().map(|_| (Vec::new(), vec![0])).collect(),
            shards: Vec::new(),
            rows: 0,
        }
    }

    /// One row: its categorical ids in `names` order, its bags in `bags` order.
    pub fn push(
        &mut self,
        label: u8,
        domain: u32,
        time: i64,
        ids: &[u32],
        bags: &[Vec<u32>],
    ) -> Result<()> {
        self.labels.push(label);
        self.domains.push(domain);
        self.times.push(time);
        for (c, &id) in self.cols.iter_mut().zip(ids) {
            c.push(id);
        }
        for ((values, offsets), b) in self.bags.iter_mut().zip(bags) {
            values.extend_from_slice(b);
            offsets.push(values.len() as u32);
        }
        self.rows += 1;
        if self.labels.len() >= self.cap {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.labels.is_empty() && !self.shards.is_empty() {
            return Ok(());
        }
        let mut cols = BTreeMap::new();
        cols.insert(
            "label".to_string(),
            ColumnData::U8(std::mem::take(&mut self.labels)),
        );
        cols.insert(
            "domain".to_string(),
            ColumnData::U32(std::mem::take(&mut self.domains)),
        );
        cols.insert(
            "timestamp".to_string(),
            ColumnData::I64(std::mem::take(&mut self.times)),
        );
        for (n, c) in self.names.iter().zip(&mut self.cols) {
            cols.insert(n.clone(), ColumnData::U32(std::mem::take(c)));
        }
        for (n, (values, offsets)) in self.bag_names.iter().zip(&mut self.bags) {
            cols.insert(
                format!("{n}.values"),
                ColumnData::U32(std::mem::take(values)),
            );
            let o = std::mem::replace(offsets, vec![0]);
            cols.insert(format!("{n}.offsets"), ColumnData::U32(o));
        }
        let name = shard_name(self.shards.len());
        crate::fsutil::write_atomic(&self.dir.join(&name), &shard_bytes(&cols)?)?;
        self.shards.push(name);
        self.labels.reserve(self.cap);
        self.domains.reserve(self.cap);
        self.times.reserve(self.cap);
        for c in &mut self.cols {
            c.reserve(self.cap);
        }
        Ok(())
    }

    /// Write what is buffered (a split without rows gets one empty shard).
    pub fn finish(mut self) -> Result<crate::data::meta::SplitMeta> {
        if !self.labels.is_empty() || self.shards.is_empty() {
            self.flush()?;
        }
        Ok(crate::data::meta::SplitMeta {
            rows: self.rows,
            shards: self.shards,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_of_every_width_put_back_together_give_the_shard() {
        // 7 rows; a multi-hot field of 0–3 values per row.
        let lens = [2u32, 0, 3, 1, 1, 0, 2];
        let mut off = vec![0u32];
        for l in lens {
            off.push(off.last().unwrap() + l);
        }
        let values: Vec<u32> = (10..10 + off[7]).collect();
        let cols = BTreeMap::from([
            (
                "label".to_string(),
                ColumnData::U8(vec![1, 0, 1, 1, 0, 0, 1]),
            ),
            ("user_id".to_string(), ColumnData::U32((1..=7).collect())),
            (
                "domain".to_string(),
                ColumnData::U32(vec![0, 1, 0, 2, 1, 0, 2]),
            ),
            ("timestamp".to_string(), ColumnData::I64((0..7).collect())),
            ("genres.offsets".to_string(), ColumnData::U32(off.clone())),
            ("genres.values".to_string(), ColumnData::U32(values.clone())),
        ]);
        for width in 1..=7 {
            let (mut users, mut vals, mut rows) = (Vec::new(), Vec::new(), 0);
            for start in (0..7).step_by(width) {
                let end = (start + width).min(7);
                let part = slice_rows(&cols, start, end).unwrap();
                // Each part is a valid shard on its own.
                let back = std::env::temp_dir().join(format!(
                    "llmctr-slice-{}-{width}-{start}.safetensors",
                    std::process::id()
                ));
                std::fs::write(&back, shard_bytes(&part).unwrap()).unwrap();
                assert_eq!(read_shard(&back).unwrap(), part);
                std::fs::remove_file(&back).unwrap();
                let o = part["genres.offsets"].as_u32().unwrap();
                assert_eq!(o.len(), end - start + 1);
                assert_eq!(o[0], 0);
                for r in 0..end - start {
                    assert_eq!(o[r + 1] - o[r], lens[start + r]);
                }
                users.extend_from_slice(part["user_id"].as_u32().unwrap());
                vals.extend_from_slice(part["genres.values"].as_u32().unwrap());
                rows += part["label"].len();
            }
            assert_eq!(rows, 7);
            assert_eq!(users, (1..=7).collect::<Vec<u32>>());
            assert_eq!(vals, values);
        }
    }
}
