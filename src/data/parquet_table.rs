//! Reading a small parquet table (the offline MovieLens-100k copy) into cells,
//! with errors that name the file, the row and the column. A table without rows is
//! an error.

use super::error::{DataError, DataResult, Place};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Int(i64),
    Float(f64),
    Str(String),
    Null,
    Other(String),
}

/// A parquet table with the requested columns, in the requested order.
pub struct Table {
    pub file: PathBuf,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

pub fn read(path: &Path, columns: &[&str], hint: &str) -> DataResult<Table> {
    let file = super::error::open_input(path, hint)?;
    let reader = SerializedFileReader::new(file).map_err(|e| {
        DataError::record(
            path,
            Place::File,
            format!("not a readable parquet file: {e}"),
        )
    })?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let names: Vec<String> = schema
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    let mut index = Vec::with_capacity(columns.len());
    for c in columns {
        match names.iter().position(|n| n == c) {
            Some(i) => index.push(i),
            None => {
                return Err(DataError::field(
                    path,
                    Place::File,
                    *c,
                    format!("column missing (the file has: {})", names.join(", ")),
                ));
            }
        }
    }
    let iter = reader
        .get_row_iter(None)
        .map_err(|e| DataError::record(path, Place::File, format!("cannot read rows: {e}")))?;
    let mut rows = Vec::new();
    for (i, row) in iter.enumerate() {
        let row = row.map_err(|e| {
            DataError::record(
                path,
                Place::Row(i as u64 + 1),
                format!("cannot decode: {e}"),
            )
        })?;
        let fields: Vec<&Field> = row.get_column_iter().map(|(_, f)| f).collect();
        let cells = index
            .iter()
            .map(|&j| match fields.get(j) {
                Some(Field::Long(v)) => Cell::Int(*v),
                Some(Field::Int(v)) => Cell::Int(i64::from(*v)),
                Some(Field::Short(v)) => Cell::Int(i64::from(*v)),
                Some(Field::Byte(v)) => Cell::Int(i64::from(*v)),
                Some(Field::UInt(v)) => Cell::Int(i64::from(*v)),
                Some(Field::Double(v)) => Cell::Float(*v),
                Some(Field::Float(v)) => Cell::Float(f64::from(*v)),
                Some(Field::Str(s)) => Cell::Str(s.clone()),
                Some(Field::Null) | None => Cell::Null,
                Some(other) => Cell::Other(format!("{other}")),
            })
            .collect();
        rows.push(cells);
    }
    if rows.is_empty() {
        return Err(DataError::record(
            path,
            Place::File,
            "no rows: the table is empty",
        ));
    }
    Ok(Table {
        file: path.to_path_buf(),
        columns: columns.iter().map(|s| s.to_string()).collect(),
        rows,
    })
}

impl Table {
    fn err(&self, row: usize, col: usize, msg: impl std::fmt::Display) -> DataError {
        DataError::field(
            &self.file,
            Place::Row(row as u64 + 1),
            &self.columns[col],
            msg,
        )
    }

    /// An integer cell (required).
    pub fn int(&self, row: usize, col: usize) -> DataResult<i64> {
        match &self.rows[row][col] {
            Cell::Int(v) => Ok(*v),
            Cell::Null => Err(self.err(row, col, "missing value (null)")),
            other => Err(self.err(row, col, format!("expected an integer, found {other:?}"))),
        }
    }

    /// A text cell; null gives `None`.
    pub fn text(&self, row: usize, col: usize) -> DataResult<Option<&str>> {
        match &self.rows[row][col] {
            Cell::Str(s) => Ok(Some(s)),
            Cell::Null => Ok(None),
            other => Err(self.err(row, col, format!("expected text, found {other:?}"))),
        }
    }

    /// A required text cell.
    pub fn req_text(&self, row: usize, col: usize) -> DataResult<&str> {
        self.text(row, col)?
            .ok_or_else(|| self.err(row, col, "missing value (null)"))
    }

    pub fn place(&self, row: usize) -> Place {
        Place::Row(row as u64 + 1)
    }
}
