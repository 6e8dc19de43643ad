//! Reports: the pipeline's figures (drawn in the one style of [`crate::plot`])
//! and `pipeline report RUN`, which renders one run's `report.md` with its plots.
//!
//! - [`domain_auc_plot`]: test AUC per domain as a dot plot, domains sorted by
//!   test rows (most first) and labelled with them, one marker per arm, a bar of
//!   ± 1 sd where an arm has several seeds;
//! - [`learning_curves_plot`]: valid AUC by epoch of several runs in one chart,
//!   one colour per arm;
//! - [`lodo_plot`]: a `pipeline lodo` table (its CSV) as paired differences
//!   against the `none` floor per held-out domain, bars around zero.

use crate::fsutil::write_atomic;
use crate::plot::{self, Category, DiffPanel, DotArm, Series};
use crate::train::trainer::{EpochMetrics, FinalMetrics};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// `4391` → `4,391`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An arm of a comparison: its name and its runs (one per seed).
pub struct Arm<'a> {
    pub name: String,
    pub runs: Vec<&'a FinalMetrics>,
}

/// Test AUC per domain of several arms as a dot plot. Domains come from the
/// first arm's first run, sorted by test rows (most first); `only` keeps the
/// named domains (e.g. the held-out ones). A domain whose rows hold one class
/// has no AUC and shows no marker.
pub fn domain_auc_plot(
    path: &Path,
    title: &str,
    arms: &[Arm],
    only: Option<&[String]>,
) -> Result<()> {
    let first = arms
        .iter()
        .find_map(|a| a.runs.first())
        .with_context(|| format!("no run to draw {}", path.display()))?;
    let mut doms: Vec<(&str, usize)> = first
        .test
        .domains
        .iter()
        .filter(|d| only.is_none_or(|o| o.contains(&d.domain)))
        .map(|d| (d.domain.as_str(), d.rows))
        .collect();
    doms.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    // Domains held out of training are marked: their AUC is an unseen domain's.
    let cats: Vec<Category> = doms
        .iter()
        .map(|(n, r)| Category {
            label: if first.unseen_domains.iter().any(|u| u == n) {
                format!("{n} ({}, unseen)", thousands(*r))
            } else {
                format!("{n} ({})", thousands(*r))
            },
        })
        .collect();
    let dots: Vec<DotArm> = arms
        .iter()
        .map(|a| DotArm {
            name: a.name.clone(),
            values: doms
                .iter()
                .map(|(n, _)| {
                    a.runs
                        .iter()
                        .filter_map(|m| m.test.domains.iter().find(|d| d.domain == *n)?.auc)
                        .collect()
                })
                .collect(),
        })
        .collect();
    let seeds = arms.iter().map(|a| a.runs.len()).max().unwrap_or(0);
    let mut sub = vec!["domains by test rows (in brackets), most first".to_string()];
    if seeds > 1 {
        sub.push(format!(
            "marker: mean over seeds ({} per arm), bar: ± 1 sample sd",
            arms.iter()
                .map(|a| a.runs.len().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    plot::dot_plot(
        path,
        title,
        &sub,
        "domain (test rows)",
        "test AUC",
        &cats,
        &dots,
    )
}

/// One run's learning curve for [`learning_curves_plot`]: its arm (runs of one
/// arm share a colour) and its seed.
pub struct Curve {
    pub arm: String,
    pub seed: u64,
    pub history: Vec<EpochMetrics>,
}

/// Valid AUC by epoch of several runs in one chart: one colour per arm, one
/// marker shape per run within an arm, labelled `arm (seed s)`.
pub fn learning_curves_plot(path: &Path, title: &str, runs: &[Curve]) -> Result<()> {
    let mut arms: Vec<&str> = Vec::new();
    let mut within: Vec<usize> = Vec::new();
    let series: Vec<Series> = runs
        .iter()
        .map(|c| {
            let color = match arms.iter().position(|a| *a == c.arm) {
                Some(i) => i,
                None => {
                    arms.push(&c.arm);
                    within.push(0);
                    arms.len() - 1
                }
            };
            let shape = within[color];
            within[color] += 1;
            Series {
                name: format!("{} (seed {})", c.arm, c.seed),
                points: learning_curve_points(&c.history),
                color,
                shape,
            }
        })
        .collect();
    plot::line_plot(path, title, &[], "epoch", "valid AUC", &series)
}

/// Valid AUC by epoch, for the epochs that have one.
pub fn learning_curve_points(history: &[EpochMetrics]) -> Vec<(f64, f64)> {
    history
        .iter()
        .filter_map(|e| e.valid_auc.map(|a| (e.epoch as f64, a)))
        .collect()
}

/// One cell of a lodo table: (AUC, logloss) of an arm on a domain.
pub type Cell = (Option<f64>, Option<f64>);

/// A `pipeline lodo` table as read back from its CSV: per held-out domain, its
/// test rows and, per arm, the AUC and logloss (mean over seeds; None = empty).
#[derive(Debug)]
pub struct LodoTable {
    pub arms: Vec<String>,
    pub domains: Vec<(String, usize)>,
    /// [arm][domain] (auc, logloss).
    pub cells: Vec<Vec<Cell>>,
}

/// Read a `pipeline lodo` CSV (`domain,test_rows,<arm>_auc,<arm>_logloss,…`).
pub fn read_lodo_csv(path: &Path) -> Result<LodoTable> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let header = reader
        .headers()
        .with_context(|| format!("{}: expected a lodo table", path.display()))?
        .clone();
    let head = header.iter().collect::<Vec<_>>().join(",");
    let cols: Vec<&str> = header.iter().collect();
    if cols.len() < 4
        || cols[0] != "domain"
        || cols[1] != "test_rows"
        || !cols.len().is_multiple_of(2)
    {
        bail!(
            "{}:1: not a lodo table: expected the header domain,test_rows,<arm>_auc,<arm>_logloss,…; found {head}",
            path.display()
        );
    }
    let mut arms = Vec::new();
    for pair in cols[2..].chunks(2) {
        let arm = pair[0].strip_suffix("_auc");
        if arm.is_none() || Some(pair[1]) != arm.map(|a| format!("{a}_logloss")).as_deref() {
            bail!(
                "{}:1: columns {} and {} are not <arm>_auc,<arm>_logloss",
                path.display(),
                pair[0],
                pair[1]
            );
        }
        arms.extend(arm.map(str::to_string));
    }
    let mut domains = Vec::new();
    let mut cells = vec![Vec::new(); arms.len()];
    for record in reader.records() {
        // Uneven rows are refused by the reader, naming the line.
        let f = record.with_context(|| format!("in {}", path.display()))?;
        let line = f.position().map_or(0, |p| p.line());
        let num = |j: usize| -> Result<Option<f64>> {
            if f[j].is_empty() {
                return Ok(None);
            }
            f[j].parse().map(Some).with_context(|| {
                format!(
                    "{}:{}: field {}: {:?} is not a number",
                    path.display(),
                    line,
                    cols[j],
                    &f[j]
                )
            })
        };
        let rows = f[1].parse().with_context(|| {
            format!(
                "{}:{}: field test_rows: {:?} is not a row count",
                path.display(),
                line,
                &f[1]
            )
        })?;
        domains.push((f[0].to_string(), rows));
        for (a, c) in cells.iter_mut().enumerate() {
            c.push((num(2 + 2 * a)?, num(3 + 2 * a)?));
        }
    }
    if domains.is_empty() {
        bail!("{}: no domain rows under the header", path.display());
    }
    Ok(LodoTable {
        arms,
        domains,
        cells,
    })
}

/// Draw a lodo table as paired differences against the `none` arm per held-out
/// domain (domains by test rows, most first): ΔAUC and Δlogloss side by side.
pub fn lodo_plot(table: &LodoTable, title: &str, path: &Path) -> Result<()> {
    let floor = table
        .arms
        .iter()
        .position(|a| a == "none")
        .context("a lodo difference chart needs the `none` arm (the floor)")?;
    let others: Vec<usize> = (0..table.arms.len()).filter(|&a| a != floor).collect();
    if others.is_empty() {
        bail!("a lodo difference chart needs an arm besides `none`");
    }
    let mut order: Vec<usize> = (0..table.domains.len()).collect();
    order.sort_by(|&a, &b| {
        table.domains[b]
            .1
            .cmp(&table.domains[a].1)
            .then(table.domains[a].0.cmp(&table.domains[b].0))
    });
    let cats: Vec<Category> = order
        .iter()
        .map(|&d| Category {
            label: format!("{} ({})", table.domains[d].0, thousands(table.domains[d].1)),
        })
        .collect();
    let diff = |pick: fn(&Cell) -> Option<f64>| -> Vec<Vec<Option<f64>>> {
        others
            .iter()
            .map(|&a| {
                order
                    .iter()
                    .map(|&d| Some(pick(&table.cells[a][d])? - pick(&table.cells[floor][d])?))
                    .collect()
            })
            .collect()
    };
    let panels = [
        DiffPanel {
            x_label: "Δ test AUC vs none (higher is better)".into(),
            values: diff(|c| c.0),
        },
        DiffPanel {
            x_label: "Δ test logloss vs none (lower is better)".into(),
            values: diff(|c| c.1),
        },
    ];
    let arms: Vec<String> = others.iter().map(|&a| table.arms[a].clone()).collect();
    plot::diff_bars(
        path,
        title,
        &["each domain held out and scored as unseen; mean over seeds; domains by test rows, most first".into()],
        &cats,
        &arms,
        &panels,
    )
}

/// Read a training run's `metrics.jsonl`.
pub fn read_history(dir: &Path) -> Result<Vec<EpochMetrics>> {
    let p = dir.join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not an epoch line", p.display(), i + 1))
        })
        .collect()
}

/// `pipeline report RUN`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// A run directory (runs/<name>/) holding metrics.json and metrics.jsonl, or
    /// a `pipeline lodo` table (<out>.csv).
    pub run: PathBuf,
}

/// Runs `pipeline report` and prints the report's path.
pub fn command(args: &ReportArgs) -> Result<()> {
    println!("report: {}", report(&args.run)?.display());
    Ok(())
}

/// `pipeline report RUN`: for a training run (train, train-cgc, the CGC of
/// `run`), write `report.md` with `learning_curve.svg` and `domain_auc.svg`
/// next to it; for a `pipeline lodo` table (`<out>.csv`), draw its paired
/// differences as `<out>.svg`. Returns the report's (or the figure's) path.
pub fn report(run: &Path) -> Result<PathBuf> {
    if run.is_file() && run.extension().is_some_and(|e| e == "csv") {
        let table = read_lodo_csv(run)?;
        let out = run.with_extension("svg");
        let stem = run
            .file_stem()
            .map_or(String::new(), |s| s.to_string_lossy().into_owned());
        lodo_plot(
            &table,
            &format!("Leave-one-domain-out ({stem}): paired differences against no domain input"),
            &out,
        )?;
        return Ok(out);
    }
    let mpath = run.join("metrics.json");
    if !mpath.is_file() {
        bail!(
            "{} is not a finished training run (no metrics.json) nor a lodo table (.csv); `pipeline report` renders runs of train, train-cgc and run, and the tables of lodo",
            run.display()
        );
    }
    let m: FinalMetrics = serde_json::from_slice(&std::fs::read(&mpath)?)
        .with_context(|| format!("{} is not a run's metrics.json", mpath.display()))?;
    let history = read_history(run)?;
    learning_curves_plot(
        &run.join("learning_curve.svg"),
        &format!("{} on {}: valid AUC by epoch", m.model, m.recipe),
        &[Curve {
            arm: m.model.clone(),
            seed: m.seed,
            history: history.clone(),
        }],
    )?;
    domain_auc_plot(
        &run.join("domain_auc.svg"),
        &format!("{} on {}: test AUC per domain", m.model, m.recipe),
        &[Arm {
            name: format!("{} (seed {})", m.model, m.seed),
            runs: vec![&m],
        }],
        None,
    )?;
    let mut md = crate::train::trainer::report_md(&m, &history);
    md.push_str(
        "\n![valid AUC by epoch](learning_curve.svg)\n\n![test AUC per domain](domain_auc.svg)\n",
    );
    let out = run.join("report.md");
    write_atomic(&out, md.as_bytes())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::CsvText;

    #[test]
    fn a_quoted_domain_name_round_trips_through_a_lodo_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lodo.csv");
        let name = "a, \"b\"";
        let mut csv = CsvText::new([
            "domain",
            "test_rows",
            "none_auc",
            "none_logloss",
            "id_auc",
            "id_logloss",
        ])
        .unwrap();
        csv.row([name, "12", "0.5", "0.69", "", "0.7"]).unwrap();
        csv.row(["plain", "3", "0.6", "0.6", "0.61", "0.59"])
            .unwrap();
        csv.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"a, \"\"b\"\"\",12,"), "{text}");
        let t = read_lodo_csv(&path).unwrap();
        assert_eq!(t.arms, ["none", "id"]);
        assert_eq!(
            t.domains,
            [(name.to_string(), 12), ("plain".to_string(), 3)]
        );
        assert_eq!(t.cells[1][0], (None, Some(0.7)));
        // A row with a field too many is refused, naming the file and line.
        std::fs::write(&path, text + "x,1,2,3,4,5,6\n").unwrap();
        let e = format!("{:#}", read_lodo_csv(&path).unwrap_err());
        assert!(e.contains("lodo.csv") && e.contains("line: 4"), "{e}");
    }
}
