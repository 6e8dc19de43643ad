//! Plots, one style for every figure the pipeline writes: plain SVG written by
//! hand (no font files, no rendering library), laid out from the text it holds so
//! that labels never overlap, titles are never cut and legends sit outside the
//! data. Three kinds:
//!
//! - [`dot_plot`]: one value per category (a domain) and arm, categories on the
//!   y axis, one marker shape and colour per arm, a bar of ± 1 sample standard
//!   deviation over seeds where an arm has several runs;
//! - [`line_plot`]: several numeric series in one chart (learning curves);
//! - [`diff_bars`]: paired differences per category as horizontal bars around
//!   zero, one or more panels side by side sharing the category axis.
//!
//! Every series is a `<g class="series" data-name="…">`, the title a
//! `<text class="title">` and each axis label a `<text class="axis-label">`, so
//! a test (or a script) can find them.

use crate::fsutil::write_atomic;
use anyhow::{Result, bail};
use std::fmt::Write as _;
use std::path::Path;

/// Colour-blind-safe colours (Okabe–Ito, yellow left out: too pale on white).
const COLORS: [&str; 7] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
];
const FONT: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";
const TITLE_SIZE: f64 = 16.0;
const SUB_SIZE: f64 = 12.0;
const LABEL_SIZE: f64 = 13.0;
const TICK_SIZE: f64 = 12.0;
const PAD: f64 = 14.0;
const GRID: &str = "#e3e3e3";

/// The colour of series `i`.
pub fn color(i: usize) -> &'static str {
    COLORS[i % COLORS.len()]
}

/// A generous estimate of the width of `s` in pixels at font size `size`: a
/// sans-serif glyph averages about 0.55 em; 0.62 leaves room for wide ones.
pub fn text_width(s: &str, size: f64) -> f64 {
    s.chars().count() as f64 * size * 0.62
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// Round-ish tick values covering [lo, hi]: steps of 1, 2 or 5 × 10^k, about
/// `want` of them. Returns (ticks, decimals to print them with).
pub fn nice_ticks(lo: f64, hi: f64, want: usize) -> (Vec<f64>, usize) {
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    };
    let raw = (hi - lo) / want.max(2) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let start = (lo / step).floor();
    let end = (hi / step).ceil();
    let ticks = (start as i64..=end as i64)
        .map(|k| {
            let v = k as f64 * step;
            if v.abs() < step * 1e-9 { 0.0 } else { v }
        })
        .collect();
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    (ticks, decimals)
}

/// A minimal SVG document.
struct Svg {
    body: String,
}

impl Svg {
    fn new() -> Svg {
        Svg {
            body: String::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn text(&mut self, x: f64, y: f64, s: &str, size: f64, anchor: &str, class: &str, extra: &str) {
        let _ = writeln!(
            self.body,
            r#"<text class="{class}" x="{x:.1}" y="{y:.1}" font-size="{size}" text-anchor="{anchor}" dominant-baseline="middle"{extra}>{}</text>"#,
            esc(s)
        );
    }

    fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, stroke: &str, width: f64) {
        let _ = writeln!(
            self.body,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{stroke}" stroke-width="{width}"/>"#
        );
    }

    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, stroke: &str) {
        let _ = writeln!(
            self.body,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}" stroke="{stroke}"/>"#
        );
    }

    fn raw(&mut self, s: &str) {
        self.body.push_str(s);
        self.body.push('\n');
    }

    /// Marker `shape` (0 circle, 1 square, 2 triangle up, 3 diamond, 4 triangle
    /// down, 5 cross) of radius `r` at (x, y).
    fn marker(&mut self, shape: usize, x: f64, y: f64, r: f64, color: &str) {
        let s = match shape % 6 {
            0 => format!(r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r:.1}" fill="{color}"/>"#),
            1 => {
                let a = r * 0.9;
                format!(
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"/>"#,
                    x - a,
                    y - a,
                    2.0 * a,
                    2.0 * a
                )
            }
            2 => format!(
                r#"<path d="M{:.1},{:.1}L{:.1},{:.1}L{:.1},{:.1}Z" fill="{color}"/>"#,
                x,
                y - 1.2 * r,
                x + 1.1 * r,
                y + 0.8 * r,
                x - 1.1 * r,
                y + 0.8 * r
            ),
            3 => format!(
                r#"<path d="M{:.1},{:.1}L{:.1},{:.1}L{:.1},{:.1}L{:.1},{:.1}Z" fill="{color}"/>"#,
                x,
                y - 1.3 * r,
                x + 1.1 * r,
                y,
                x,
                y + 1.3 * r,
                x - 1.1 * r,
                y
            ),
            4 => format!(
                r#"<path d="M{:.1},{:.1}L{:.1},{:.1}L{:.1},{:.1}Z" fill="{color}"/>"#,
                x,
                y + 1.2 * r,
                x + 1.1 * r,
                y - 0.8 * r,
                x - 1.1 * r,
                y - 0.8 * r
            ),
            _ => format!(
                r#"<path d="M{:.1},{:.1}L{:.1},{:.1}M{:.1},{:.1}L{:.1},{:.1}" stroke="{color}" stroke-width="2.2"/>"#,
                x - r,
                y - r,
                x + r,
                y + r,
                x - r,
                y + r,
                x + r,
                y - r
            ),
        };
        self.raw(&s);
    }

    fn finish(self, w: f64, h: f64) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"{FONT}\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{}</svg>\n",
            self.body
        )
    }
}

/// Title and subtitle lines at the top; returns the y below them.
fn header(svg: &mut Svg, width: f64, title: &str, subtitle: &[String]) -> f64 {
    let mut y = PAD + TITLE_SIZE / 2.0 + 2.0;
    svg.text(
        width / 2.0,
        y,
        title,
        TITLE_SIZE,
        "middle",
        "title",
        r#" font-weight="bold""#,
    );
    y += TITLE_SIZE / 2.0 + 6.0;
    for s in subtitle {
        y += SUB_SIZE / 2.0 + 2.0;
        svg.text(
            width / 2.0,
            y,
            s,
            SUB_SIZE,
            "middle",
            "subtitle",
            r##" fill="#444""##,
        );
        y += SUB_SIZE / 2.0 + 2.0;
    }
    y + 10.0
}

fn header_width(title: &str, subtitle: &[String]) -> f64 {
    subtitle
        .iter()
        .map(|s| text_width(s, SUB_SIZE))
        .fold(text_width(title, TITLE_SIZE * 1.05), f64::max)
        + 2.0 * PAD
}

fn header_height(subtitle: &[String]) -> f64 {
    PAD + TITLE_SIZE + 8.0 + subtitle.len() as f64 * (SUB_SIZE + 4.0) + 10.0
}

/// Legend entries to the right of the plot at x, from y; each entry a marker
/// (or a bar swatch) and its name. `styles`: (colour, shape) of each entry.
fn legend(
    svg: &mut Svg,
    x: f64,
    y: f64,
    names: &[String],
    styles: &[(usize, usize)],
    swatch: bool,
) {
    for (i, (n, &(c, m))) in names.iter().zip(styles).enumerate() {
        let cy = y + i as f64 * (LABEL_SIZE + 8.0) + LABEL_SIZE / 2.0;
        if swatch {
            svg.rect(x, cy - 5.0, 14.0, 10.0, color(c), "none");
        } else {
            svg.marker(m, x + 7.0, cy, 4.5, color(c));
        }
        svg.text(x + 20.0, cy, n, LABEL_SIZE, "start", "legend", "");
    }
}

fn plain_styles(n: usize) -> Vec<(usize, usize)> {
    (0..n).map(|i| (i, i)).collect()
}

fn legend_width(names: &[String]) -> f64 {
    names
        .iter()
        .map(|n| text_width(n, LABEL_SIZE))
        .fold(0.0, f64::max)
        + 20.0
        + 2.0 * PAD
}

/// A numeric axis: maps values to pixels between `p0` and `p1`.
struct Axis {
    lo: f64,
    hi: f64,
    p0: f64,
    p1: f64,
    ticks: Vec<f64>,
    decimals: usize,
}

impl Axis {
    /// `values` and `must` (values the range must hold, e.g. 0), padded by 4 %
    /// and widened to the outer ticks.
    fn new(values: impl Iterator<Item = f64>, must: &[f64], p0: f64, p1: f64, want: usize) -> Axis {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.chain(must.iter().copied()).filter(|v| v.is_finite()) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        let pad = ((hi - lo) * 0.04).max(1e-6);
        let (ticks, decimals) = nice_ticks(lo - pad, hi + pad, want);
        let lo = ticks.first().copied().unwrap_or(lo);
        let hi = ticks.last().copied().unwrap_or(hi);
        Axis {
            lo,
            hi,
            p0,
            p1,
            ticks,
            decimals,
        }
    }

    fn px(&self, v: f64) -> f64 {
        self.p0 + (v - self.lo) / (self.hi - self.lo).max(1e-12) * (self.p1 - self.p0)
    }

    fn label(&self, v: f64) -> String {
        format!("{v:.*}", self.decimals)
    }
}

/// One category row of a dot plot or bar chart: its label (e.g. `student (4,391)`).
pub struct Category {
    pub label: String,
}

/// One arm of a dot plot: per category, the values of its runs (seeds); an
/// empty list draws nothing for that category.
pub struct DotArm {
    pub name: String,
    pub values: Vec<Vec<f64>>,
}

/// Left margin for category labels at the y axis.
fn category_width(cats: &[Category]) -> f64 {
    cats.iter()
        .map(|c| text_width(&c.label, TICK_SIZE))
        .fold(0.0, f64::max)
        + PAD
        + 10.0
}

/// Horizontal category rows between `top` and `top + rows·band`: labels at the
/// left of `x0`, a light guide line per row across the plot. Returns each row's
/// centre.
fn category_rows(
    svg: &mut Svg,
    cats: &[Category],
    x0: f64,
    x1: f64,
    top: f64,
    band: f64,
) -> Vec<f64> {
    cats.iter()
        .enumerate()
        .map(|(i, c)| {
            let cy = top + (i as f64 + 0.5) * band;
            svg.line(x0, cy, x1, cy, "#f0f0f0", 1.0);
            svg.text(x0 - 8.0, cy, &c.label, TICK_SIZE, "end", "category", "");
            cy
        })
        .collect()
}

/// Vertical tick lines (light, major ticks only) and labels of a numeric x axis
/// below the plot; the axis label under them. Returns the y below the label.
/// The y axis' line at `left` from `top` down `plot_h`, and its title, turned
/// upright along the left edge.
fn y_axis_line(svg: &mut Svg, left: f64, top: f64, plot_h: f64, label: &str) {
    svg.line(left, top, left, top + plot_h, "#333", 1.0);
    let cy = top + plot_h / 2.0;
    svg.text(
        PAD,
        cy,
        label,
        LABEL_SIZE,
        "middle",
        "axis-label",
        &format!(
            r#" transform="rotate(-90 {:.1} {cy:.1})""#,
            PAD + LABEL_SIZE / 2.0
        ),
    );
}

fn x_axis(svg: &mut Svg, ax: &Axis, top: f64, bottom: f64, label: &str) -> f64 {
    for &t in &ax.ticks {
        let x = ax.px(t);
        svg.line(x, top, x, bottom, GRID, 1.0);
        svg.line(x, bottom, x, bottom + 4.0, "#333", 1.0);
        svg.text(
            x,
            bottom + 6.0 + TICK_SIZE / 2.0,
            &ax.label(t),
            TICK_SIZE,
            "middle",
            "tick",
            "",
        );
    }
    svg.line(ax.p0, bottom, ax.p1, bottom, "#333", 1.0);
    let y = bottom + 10.0 + TICK_SIZE + 8.0 + LABEL_SIZE / 2.0;
    svg.text(
        (ax.p0 + ax.p1) / 2.0,
        y,
        label,
        LABEL_SIZE,
        "middle",
        "axis-label",
        "",
    );
    y + LABEL_SIZE / 2.0 + PAD
}

/// A dot plot: categories on the y axis (in the order given), `x_label` on the
/// x axis, one marker shape and colour per arm, offset vertically within a
/// category so arms never hide each other; a horizontal bar of ± 1 sample sd
/// where an arm has several values for a category.
pub fn dot_plot(
    path: &Path,
    title: &str,
    subtitle: &[String],
    y_label: &str,
    x_label: &str,
    cats: &[Category],
    arms: &[DotArm],
) -> Result<()> {
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    write_atomic(
        path,
        dot_plot_svg(title, subtitle, y_label, x_label, cats, arms)?.as_bytes(),
    )
}

/// [`dot_plot`]'s document.
pub fn dot_plot_svg(
    title: &str,
    subtitle: &[String],
    y_label: &str,
    x_label: &str,
    cats: &[Category],
    arms: &[DotArm],
) -> Result<String> {
    if cats.is_empty() || arms.is_empty() {
        bail!("a dot plot needs at least one category and one arm ({title})");
    }
    if let Some(a) = arms.iter().find(|a| a.values.len() != cats.len()) {
        bail!(
            "internal: arm {} has {} categories, the plot {}",
            a.name,
            a.values.len(),
            cats.len()
        );
    }
    let names: Vec<String> = arms.iter().map(|a| a.name.clone()).collect();
    let stats: Vec<Vec<Option<(f64, f64)>>> = arms
        .iter()
        .map(|a| {
            a.values
                .iter()
                .map(|v| crate::stats::mean_sd_finite(v))
                .collect()
        })
        .collect();
    let y_label_w = LABEL_SIZE + 10.0;
    let left = y_label_w + category_width(cats);
    let plot_w = 460.0;
    let lw = legend_width(&names);
    let width = (left + plot_w + lw).max(header_width(title, subtitle));
    let band = (arms.len() as f64 * 7.0 + 12.0).max(22.0);
    let top = header_height(subtitle);
    let plot_h = band * cats.len() as f64;
    let ax = Axis::new(
        stats
            .iter()
            .flatten()
            .flatten()
            .flat_map(|&(m, s)| [m - s, m + s]),
        &[],
        left,
        left + plot_w,
        6,
    );
    let mut svg = Svg::new();
    header(&mut svg, width, title, subtitle);
    let centres = category_rows(&mut svg, cats, left, left + plot_w, top, band);
    let height = x_axis(&mut svg, &ax, top, top + plot_h, x_label);
    y_axis_line(&mut svg, left, top, plot_h, y_label);
    let k = arms.len() as f64;
    for (ai, (arm, st)) in arms.iter().zip(&stats).enumerate() {
        svg.raw(&format!(
            r#"<g class="series" data-name="{}">"#,
            esc(&arm.name)
        ));
        let dy = (ai as f64 - (k - 1.0) / 2.0) * 7.0;
        for (ci, s) in st.iter().enumerate() {
            let Some((m, sd)) = *s else { continue };
            let y = centres[ci] + dy;
            if sd > 0.0 {
                let (a, b) = (ax.px(m - sd), ax.px(m + sd));
                svg.line(a, y, b, y, color(ai), 1.4);
                svg.line(a, y - 3.0, a, y + 3.0, color(ai), 1.4);
                svg.line(b, y - 3.0, b, y + 3.0, color(ai), 1.4);
            }
            svg.marker(ai, ax.px(m), y, 4.0, color(ai));
        }
        svg.raw("</g>");
    }
    legend(
        &mut svg,
        left + plot_w + PAD,
        top,
        &names,
        &plain_styles(names.len()),
        false,
    );
    let height = height.max(top + names.len() as f64 * (LABEL_SIZE + 8.0) + PAD);
    Ok(svg.finish(width, height))
}

/// A numeric series of a line plot, drawn in colour `color` with marker
/// `shape` (indices into the palette and the marker shapes; runs of one arm
/// share a colour and differ in shape).
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: usize,
    pub shape: usize,
}

/// Several series (lines with markers) in one chart, the legend to the right.
pub fn line_plot(
    path: &Path,
    title: &str,
    subtitle: &[String],
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    write_atomic(
        path,
        line_plot_svg(title, subtitle, x_label, y_label, series)?.as_bytes(),
    )
}

/// [`line_plot`]'s document.
pub fn line_plot_svg(
    title: &str,
    subtitle: &[String],
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<String> {
    if series.is_empty() {
        bail!("a line plot needs at least one series ({title})");
    }
    let names: Vec<String> = series.iter().map(|s| s.name.clone()).collect();
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let top = header_height(subtitle);
    let plot_h = 300.0;
    let ay = Axis::new(
        series
            .iter()
            .flat_map(|s| s.points.iter().filter(finite).map(|p| p.1)),
        &[],
        top + plot_h,
        top,
        6,
    );
    let tick_w = ay
        .ticks
        .iter()
        .map(|&t| text_width(&ay.label(t), TICK_SIZE))
        .fold(0.0, f64::max);
    let left = PAD + LABEL_SIZE + 12.0 + tick_w + 8.0;
    let plot_w = 520.0;
    let lw = legend_width(&names);
    let width = (left + plot_w + lw).max(header_width(title, subtitle));
    let mut ax = Axis::new(
        series
            .iter()
            .flat_map(|s| s.points.iter().filter(finite).map(|p| p.0)),
        &[],
        left,
        left + plot_w,
        8,
    );
    let integral = series
        .iter()
        .flat_map(|s| &s.points)
        .all(|p| p.0.fract() == 0.0);
    if integral && ax.decimals > 0 {
        // Integer x (epochs): whole-number ticks only.
        ax.ticks.retain(|t| t.fract() == 0.0);
        ax.decimals = 0;
    }
    let mut svg = Svg::new();
    header(&mut svg, width, title, subtitle);
    let height = x_axis(&mut svg, &ax, top, top + plot_h, x_label);
    for &t in &ay.ticks {
        let y = ay.px(t);
        svg.line(left, y, left + plot_w, y, GRID, 1.0);
        svg.line(left - 4.0, y, left, y, "#333", 1.0);
        svg.text(left - 7.0, y, &ay.label(t), TICK_SIZE, "end", "tick", "");
    }
    y_axis_line(&mut svg, left, top, plot_h, y_label);
    for s in series {
        svg.raw(&format!(
            r#"<g class="series" data-name="{}">"#,
            esc(&s.name)
        ));
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(finite)
            .map(|&(x, y)| (ax.px(x), ay.px(y)))
            .collect();
        if pts.len() > 1 {
            let d: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            svg.raw(&format!(
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.8"/>"#,
                d.join(" "),
                color(s.color)
            ));
        }
        for (x, y) in pts {
            svg.marker(s.shape, x, y, 3.5, color(s.color));
        }
        svg.raw("</g>");
    }
    let styles: Vec<(usize, usize)> = series.iter().map(|s| (s.color, s.shape)).collect();
    legend(&mut svg, left + plot_w + PAD, top, &names, &styles, false);
    let height = height.max(top + names.len() as f64 * (LABEL_SIZE + 8.0) + PAD);
    Ok(svg.finish(width, height))
}

/// One panel of a [`diff_bars`] chart: its x-axis label and, per arm, one
/// difference per category (None: not defined, nothing drawn).
pub struct DiffPanel {
    pub x_label: String,
    pub values: Vec<Vec<Option<f64>>>,
}

/// Paired differences as horizontal bars around a zero line: categories on the
/// y axis, one colour per arm (`arms`), panels side by side.
pub fn diff_bars(
    path: &Path,
    title: &str,
    subtitle: &[String],
    cats: &[Category],
    arms: &[String],
    panels: &[DiffPanel],
) -> Result<()> {
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    write_atomic(
        path,
        diff_bars_svg(title, subtitle, cats, arms, panels)?.as_bytes(),
    )
}

/// [`diff_bars`]'s document.
pub fn diff_bars_svg(
    title: &str,
    subtitle: &[String],
    cats: &[Category],
    arms: &[String],
    panels: &[DiffPanel],
) -> Result<String> {
    if cats.is_empty() || arms.is_empty() || panels.is_empty() {
        bail!("a difference chart needs categories, arms and a panel ({title})");
    }
    for p in panels {
        if p.values.len() != arms.len() || p.values.iter().any(|v| v.len() != cats.len()) {
            bail!(
                "internal: panel {} does not match the arms × categories",
                p.x_label
            );
        }
    }
    let left = category_width(cats);
    let panel_w = 300.0;
    let gap = 64.0;
    let lw = legend_width(arms);
    let plots_w = panels.len() as f64 * panel_w + (panels.len() - 1) as f64 * gap;
    let width = (left + plots_w + lw).max(header_width(title, subtitle));
    let band = (arms.len() as f64 * 8.0 + 10.0).max(20.0);
    let top = header_height(subtitle);
    let plot_h = band * cats.len() as f64;
    let mut svg = Svg::new();
    header(&mut svg, width, title, subtitle);
    let mut height: f64 = 0.0;
    let k = arms.len() as f64;
    let bar_h = 7.0;
    for (pi, p) in panels.iter().enumerate() {
        let x0 = left + pi as f64 * (panel_w + gap);
        let ax = Axis::new(
            p.values.iter().flatten().flatten().copied(),
            &[0.0],
            x0,
            x0 + panel_w,
            5,
        );
        let centres: Vec<f64> = if pi == 0 {
            category_rows(&mut svg, cats, x0, x0 + panel_w, top, band)
        } else {
            (0..cats.len())
                .map(|i| {
                    let cy = top + (i as f64 + 0.5) * band;
                    svg.line(x0, cy, x0 + panel_w, cy, "#f0f0f0", 1.0);
                    cy
                })
                .collect()
        };
        height = height.max(x_axis(&mut svg, &ax, top, top + plot_h, &p.x_label));
        let zero = ax.px(0.0);
        for (ai, (arm, vals)) in arms.iter().zip(&p.values).enumerate() {
            svg.raw(&format!(
                r#"<g class="series" data-name="{}" data-panel="{}">"#,
                esc(arm),
                esc(&p.x_label)
            ));
            let dy = (ai as f64 - (k - 1.0) / 2.0) * (bar_h + 1.0);
            for (ci, v) in vals.iter().enumerate() {
                let Some(v) = *v else { continue };
                let x = ax.px(v);
                let y = centres[ci] + dy - bar_h / 2.0;
                svg.rect(
                    zero.min(x),
                    y,
                    (x - zero).abs().max(0.5),
                    bar_h,
                    color(ai),
                    "none",
                );
            }
            svg.raw("</g>");
        }
        svg.line(zero, top, zero, top + plot_h, "#000", 1.2);
    }
    legend(
        &mut svg,
        left + plots_w + PAD,
        top,
        arms,
        &plain_styles(arms.len()),
        true,
    );
    let height = height.max(top + arms.len() as f64 * (LABEL_SIZE + 8.0) + PAD);
    Ok(svg.finish(width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let (t, d) = nice_ticks(0.61, 0.79, 6);
        assert_eq!(d, 2);
        assert!(t.first().unwrap() <= &0.61 && t.last().unwrap() >= &0.79);
        assert!((t[1] - t[0] - 0.05).abs() < 1e-12, "{t:?}");
        let (t, d) = nice_ticks(-0.012, 0.004, 5);
        assert_eq!(d, 3);
        assert!(t.contains(&0.0), "{t:?}");
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(esc("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
