//! Errors about input data. Every one names the place: file, line (or row) and field,
//! so a user can open the file and fix it.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where in an input a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A text file: 1-based line number.
    Line(u64),
    /// A columnar file (parquet): 1-based row number.
    Row(u64),
    /// The file as a whole (header, schema).
    File,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A value that is malformed, out of range or inconsistent.
    #[error("{}{}: field `{field}`: {msg}", .file.display(), place_suffix(.place))]
    Field {
        file: PathBuf,
        place: Place,
        field: String,
        msg: String,
    },
    /// A line that cannot be split into fields at all, or bytes that are not text.
    #[error("{}{}: {msg}", .file.display(), place_suffix(.place))]
    Record {
        file: PathBuf,
        place: Place,
        msg: String,
    },
    /// A required input file that is not there.
    #[error("missing input file {}: {hint}", .file.display())]
    Missing { file: PathBuf, hint: String },
    /// Two files that could each be the input (`x.json` and `x.json.gz`).
    #[error(
        "ambiguous input: both {} and {} are present; keep the one that holds your data \
         and move the other away",
        .first.display(),
        .second.display()
    )]
    Ambiguous { first: PathBuf, second: PathBuf },
    /// Reading failed (permissions, disk, a broken compressed stream).
    #[error("cannot read {}: {source}", .file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl fmt::Display for Place {
    /// `line 3`, `row 3`, `the file`: for messages that name a second place.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Line(n) => write!(f, "line {n}"),
            Place::Row(n) => write!(f, "row {n}"),
            Place::File => f.write_str("the file"),
        }
    }
}

fn place_suffix(place: &Place) -> String {
    match place {
        Place::Line(n) => format!(":{n}"),
        Place::Row(n) => format!(": row {n}"),
        Place::File => String::new(),
    }
}

impl DataError {
    pub fn field(
        file: &Path,
        place: Place,
        field: impl Into<String>,
        msg: impl fmt::Display,
    ) -> Self {
        DataError::Field {
            file: file.to_path_buf(),
            place,
            field: field.into(),
            msg: msg.to_string(),
        }
    }

    pub fn record(file: &Path, place: Place, msg: impl fmt::Display) -> Self {
        DataError::Record {
            file: file.to_path_buf(),
            place,
            msg: msg.to_string(),
        }
    }

    pub fn io(file: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            file: file.to_path_buf(),
            source,
        }
    }
}

pub type DataResult<T> = Result<T, DataError>;

/// Open an input file; a missing one is [`DataError::Missing`] with `hint`.
pub fn open_input(path: &Path, hint: &str) -> DataResult<std::fs::File> {
    std::fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing {
                file: path.to_path_buf(),
                hint: hint.to_string(),
            }
        } else {
            DataError::io(path, e)
        }
    })
}
