//! Reports: SVG plots (plotters' SVG backend, no font files needed) and
//! `pipeline report RUN`, which renders one run's `report.md` with its plots.

use crate::fsutil::write_atomic;
use crate::train::trainer::{EpochMetrics, FinalMetrics};
use anyhow::{Context, Result, bail};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// A named series of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn range(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for x in v.filter(|x| x.is_finite()) {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    (lo - pad, hi + pad)
}

/// A line chart with points. `x_labels`: names for integer x positions (a
/// categorical axis, drawn rotated) instead of numbers.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    x_labels: Option<&[String]>,
) -> Result<()> {
    let mut svg = String::new();
    {
        let height = if x_labels.is_some() { 620 } else { 440 };
        let root = SVGBackend::with_string(&mut svg, (900, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (x0, x1) = match x_labels {
            Some(l) => (-0.5, l.len() as f64 - 0.5),
            None => range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0))),
        };
        let (y0, y1) = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
        let labels: Vec<String> = x_labels.map(<[String]>::to_vec).unwrap_or_default();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(if x_labels.is_some() { 170 } else { 40 })
            .y_label_area_size(60)
            .right_y_label_area_size(0)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(x_desc)
            .y_desc(y_desc)
            .y_label_formatter(&|v| format!("{v:.3}"));
        let fmt_cat = |v: &f64| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                // plotters centres rotated text on the tick: pad with as many
                // no-break spaces so the visible name starts below the axis.
                labels
                    .get(i as usize)
                    .map(|l| format!("{}{l}", "\u{a0}".repeat(l.chars().count() + 1)))
                    .unwrap_or_default()
            } else {
                String::new()
            }
        };
        if x_labels.is_some() {
            mesh.x_labels(labels.len() * 2 + 1)
                .x_label_formatter(&fmt_cat)
                .x_label_style(
                    ("sans-serif", 12)
                        .into_font()
                        .transform(FontTransform::Rotate90),
                );
        } else {
            mesh.x_label_formatter(&|v| format!("{v:.0}"));
        }
        mesh.draw().map_err(|e| anyhow::anyhow!("{e}"))?;
        for (i, s) in series.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|p| p.1.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    write_atomic(path, svg.as_bytes())
}

/// Learning curve of a training run: valid AUC by epoch.
pub fn learning_curve_series(name: &str, history: &[EpochMetrics]) -> Series {
    Series {
        name: name.to_string(),
        points: history
            .iter()
            .filter_map(|e| e.valid_auc.map(|a| (e.epoch as f64, a)))
            .collect(),
    }
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

/// `pipeline report RUN`: for a training run (train, train-cgc, the CGC of
/// `run`), write `report.md` with `learning_curve.svg` and `domain_auc.svg`
/// next to it. Returns the report's path.
pub fn report(run: &Path) -> Result<PathBuf> {
    let mpath = run.join("metrics.json");
    if !mpath.is_file() {
        bail!(
            "{} is not a finished training run (no metrics.json); `pipeline report` renders runs of train, train-cgc and run",
            run.display()
        );
    }
    let m: FinalMetrics = serde_json::from_slice(&std::fs::read(&mpath)?)
        .with_context(|| format!("{} is not a run's metrics.json", mpath.display()))?;
    let history = read_history(run)?;
    line_chart(
        &run.join("learning_curve.svg"),
        &format!(
            "{} on {} (seed {}): valid AUC by epoch",
            m.model, m.recipe, m.seed
        ),
        "epoch",
        "valid AUC",
        &[learning_curve_series("valid AUC", &history)],
        None,
    )?;
    let names: Vec<String> = m
        .test
        .domains
        .iter()
        .map(|d| format!("{} ({})", d.domain, d.rows))
        .collect();
    let pts: Vec<(f64, f64)> = m
        .test
        .domains
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.auc.map(|a| (i as f64, a)))
        .collect();
    line_chart(
        &run.join("domain_auc.svg"),
        &format!(
            "{} on {}: test AUC per domain (test rows)",
            m.model, m.recipe
        ),
        "domain",
        "test AUC",
        &[Series {
            name: "test AUC".into(),
            points: pts,
        }],
        Some(&names),
    )?;
    let mut md = crate::train::trainer::report_md(&m, &history);
    md.push_str(
        "\n![valid AUC by epoch](learning_curve.svg)\n\n![test AUC per domain](domain_auc.svg)\n",
    );
    let out = run.join("report.md");
    write_atomic(&out, md.as_bytes())?;
    Ok(out)
}
