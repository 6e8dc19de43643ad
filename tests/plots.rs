//! The figures: each SVG is well-formed XML, holds its title, its axis labels
//! and one series per arm, and keeps every text inside the picture with no two
//! category labels on top of each other.

use llmctr::metrics;
use llmctr::report::{self, Arm, Curve};
use llmctr::train::trainer::{EpochMetrics, FinalMetrics};
use std::collections::HashMap;

/// An element or text node of a parsed SVG.
#[derive(Debug)]
struct Elem {
    name: String,
    attrs: HashMap<String, String>,
    text: String,
}

/// The SVG read by roxmltree (an error when it is not well-formed XML): every
/// element in document order, with its attributes and direct text.
fn parse(svg: &str) -> Result<Vec<Elem>, String> {
    let doc = roxmltree::Document::parse(svg).map_err(|e| e.to_string())?;
    let root = doc.root_element();
    if root.tag_name().name() != "svg" {
        return Err(format!(
            "the root element is <{}>, not <svg>",
            root.tag_name().name()
        ));
    }
    Ok(root
        .descendants()
        .filter(roxmltree::Node::is_element)
        .map(|n| Elem {
            name: n.tag_name().name().to_string(),
            attrs: n
                .attributes()
                .map(|a| (a.name().to_string(), a.value().to_string()))
                .collect(),
            text: n
                .children()
                .filter(roxmltree::Node::is_text)
                .filter_map(|t| t.text())
                .collect(),
        })
        .collect())
}

fn num(e: &Elem, k: &str) -> f64 {
    e.attrs[k].parse().unwrap()
}

/// What a figure must hold: a title, the axis labels, one series per name.
fn check(svg: &str, title: &str, axis: &[&str], series: &[&str]) -> Vec<Elem> {
    let els = parse(svg).unwrap_or_else(|e| panic!("not well-formed: {e}\n{svg}"));
    let texts = |class: &str| -> Vec<&Elem> {
        els.iter()
            .filter(|e| e.name == "text" && e.attrs.get("class").is_some_and(|c| c == class))
            .collect()
    };
    let titles = texts("title");
    assert_eq!(titles.len(), 1);
    assert_eq!(titles[0].text, title);
    let labels: Vec<&str> = texts("axis-label")
        .iter()
        .map(|e| e.text.as_str())
        .collect();
    assert_eq!(labels.len(), axis.len(), "{labels:?}");
    for a in axis {
        assert!(labels.contains(a), "axis label {a:?} missing: {labels:?}");
    }
    let names: Vec<&str> = els
        .iter()
        .filter(|e| e.name == "g" && e.attrs.get("class").is_some_and(|c| c == "series"))
        .map(|e| e.attrs["data-name"].as_str())
        .collect();
    let mut want: Vec<&str> = series.to_vec();
    let mut got = names.clone();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want, "series");
    // Every text fits the picture (by the layout's own width estimate, which is
    // wider than a sans-serif font draws): nothing is cut.
    let (w, h) = (num(&els[0], "width"), num(&els[0], "height"));
    for t in els.iter().filter(|e| e.name == "text") {
        let size = num(t, "font-size");
        let tw = llmctr::plot::text_width(&t.text, size);
        let (x, y) = (num(t, "x"), num(t, "y"));
        let (x0, x1) = match t.attrs["text-anchor"].as_str() {
            "start" => (x, x + tw),
            "end" => (x - tw, x),
            _ => (x - tw / 2.0, x + tw / 2.0),
        };
        if t.attrs.contains_key("transform") {
            // Rotated a quarter turn about (x, y): the extent runs vertically.
            assert!(y - tw / 2.0 >= 0.0 && y + tw / 2.0 <= h, "{:?} cut", t.text);
            continue;
        }
        assert!(
            x0 >= 0.0 && x1 <= w,
            "{:?} cut: {x0:.0}..{x1:.0} of {w}",
            t.text
        );
        assert!(
            y - size / 2.0 >= 0.0 && y + size / 2.0 <= h,
            "{:?} cut",
            t.text
        );
    }
    // Category labels sit at least a line apart.
    let mut ys: Vec<f64> = texts("category").iter().map(|t| num(t, "y")).collect();
    ys.sort_by(f64::total_cmp);
    for p in ys.windows(2) {
        assert!(p[1] - p[0] >= 12.0, "category labels overlap: {ys:?}");
    }
    els
}

/// A finished run's metrics with per-domain AUCs from synthetic scores.
fn metrics(seed: u64, names: &[String], rows: &[usize], skill: f32) -> FinalMetrics {
    let (mut p, mut y, mut d) = (Vec::new(), Vec::new(), Vec::new());
    for (dom, &n) in rows.iter().enumerate() {
        for i in 0..n {
            let label = (i % 3 == 0) as u8 as f32;
            let noise = ((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 1000.0;
            p.push(skill * label + noise);
            y.push(label);
            d.push(dom as u32);
        }
    }
    let test = metrics::report(&p, &y, &d, names);
    FinalMetrics {
        model: "cgc".into(),
        recipe: "toy".into(),
        seed,
        best_epoch: 2,
        epochs_run: 3,
        valid_auc: test.auc,
        test,
        test_gauc: None,
        tail_auc: None,
        tail_domains: Vec::new(),
        unseen_auc: None,
        unseen_domains: vec!["a domain with a rather long name".into()],
        train_seconds: 1.0,
    }
}

#[test]
fn domain_auc_dot_plot_has_every_arm_sorted_domains_and_error_bars() {
    let tmp = tempfile::tempdir().unwrap();
    let names: Vec<String> = ["small", "a domain with a rather long name", "big & <odd>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let rows = [30, 300, 4391];
    let a: Vec<FinalMetrics> = (1..=3).map(|s| metrics(s, &names, &rows, 0.3)).collect();
    let b = [metrics(1, &names, &rows, 0.6)];
    let path = tmp.path().join("d.svg");
    report::domain_auc_plot(
        &path,
        "toy: test AUC per domain",
        &[
            Arm {
                name: "cgc + LLM".into(),
                runs: a.iter().collect(),
            },
            Arm {
                name: "dnn".into(),
                runs: b.iter().collect(),
            },
        ],
        None,
    )
    .unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    let els = check(
        &svg,
        "toy: test AUC per domain",
        &["domain (test rows)", "test AUC"],
        &["cgc + LLM", "dnn"],
    );
    // Most test rows first, labelled with their rows; the held-out one marked.
    let cats: Vec<&str> = els
        .iter()
        .filter(|e| e.attrs.get("class").is_some_and(|c| c == "category"))
        .map(|e| e.text.as_str())
        .collect();
    assert_eq!(
        cats,
        [
            "big & <odd> (4,391)",
            "a domain with a rather long name (300, unseen)",
            "small (30)"
        ]
    );
    // Three seeds: one error bar (a line and two caps) per domain for the first
    // arm; one run: none for the second.
    let lines_in = |name: &str| {
        let start = svg.find(&format!("data-name=\"{name}\"")).unwrap();
        let end = start + svg[start..].find("</g>").unwrap();
        svg[start..end].matches("<line").count()
    };
    assert_eq!(lines_in("cgc + LLM"), 3 * 3);
    assert_eq!(lines_in("dnn"), 0);
    assert!(svg.contains("bar: ± 1 sample sd"));
}

#[test]
fn learning_curves_of_several_runs_share_one_chart() {
    let tmp = tempfile::tempdir().unwrap();
    let h = |base: f64| -> Vec<EpochMetrics> {
        (1..=4)
            .map(|e| EpochMetrics {
                epoch: e,
                train_loss: 0.5,
                valid_auc: Some(base + e as f64 * 0.01),
                valid_logloss: 0.5,
                seconds: 1.0,
                train_seconds: 0.9,
            })
            .collect()
    };
    let runs = [
        Curve {
            arm: "cgc".into(),
            seed: 1,
            history: h(0.7),
        },
        Curve {
            arm: "cgc".into(),
            seed: 2,
            history: h(0.71),
        },
        Curve {
            arm: "dnn".into(),
            seed: 1,
            history: h(0.75),
        },
    ];
    let path = tmp.path().join("c.svg");
    report::learning_curves_plot(&path, "toy: valid AUC by epoch", &runs).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    check(
        &svg,
        "toy: valid AUC by epoch",
        &["epoch", "valid AUC"],
        &["cgc (seed 1)", "cgc (seed 2)", "dnn (seed 1)"],
    );
    // Runs of one arm share a colour, the other arm has its own.
    let color_of = |name: &str| {
        let start = svg.find(&format!("data-name=\"{name}\"")).unwrap();
        let s = &svg[start..];
        let k = s.find("stroke=\"").unwrap() + 8;
        s[k..k + 7].to_string()
    };
    assert_eq!(color_of("cgc (seed 1)"), color_of("cgc (seed 2)"));
    assert_ne!(color_of("cgc (seed 1)"), color_of("dnn (seed 1)"));
}

#[test]
fn lodo_table_draws_paired_differences_around_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("lodo.csv");
    std::fs::write(
        &csv,
        "domain,test_rows,none_auc,none_logloss,id_auc,id_logloss,embedding_auc,embedding_logloss\n\
         doctor,51,0.70,0.60,0.71,0.59,0.69,0.62\n\
         student,2251,0.80,0.50,0.80,0.49,0.81,0.51\n\
         homemaker,36,,0.70,,0.69,,0.72\n",
    )
    .unwrap();
    // `pipeline report` on a lodo table draws it next to it.
    let out = report::report(&csv).unwrap();
    assert_eq!(out, tmp.path().join("lodo.svg"));
    let svg = std::fs::read_to_string(&out).unwrap();
    let els = check(
        &svg,
        "Leave-one-domain-out (lodo): paired differences against no domain input",
        &[
            "Δ test AUC vs none (higher is better)",
            "Δ test logloss vs none (lower is better)",
        ],
        // One series per arm and panel; `none` is the zero line.
        &["id", "embedding", "id", "embedding"],
    );
    // ΔAUC of `id` on doctor is +0.01: a bar to the right of zero; homemaker
    // has no AUC in any arm: no bar in the AUC panel.
    let bars = |arm: &str, panel: &str| -> Vec<&Elem> {
        let start = els
            .iter()
            .position(|e| {
                e.attrs.get("data-name").is_some_and(|n| n == arm)
                    && e.attrs
                        .get("data-panel")
                        .is_some_and(|p| p.starts_with(panel))
            })
            .unwrap();
        els[start + 1..]
            .iter()
            .take_while(|e| e.name == "rect")
            .collect()
    };
    assert_eq!(bars("id", "Δ test AUC").len(), 2);
    assert_eq!(bars("id", "Δ test logloss").len(), 3);
    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, "domain,test_rows,none_auc\nx,1,0.5\n").unwrap();
    let err = format!("{:#}", report::report(&bad).unwrap_err());
    assert!(
        err.contains("bad.csv:1") && err.contains("not a lodo table"),
        "{err}"
    );
}

#[test]
fn a_well_formedness_check_that_can_fail() {
    assert!(parse("<svg><g></svg>").is_err());
    assert!(parse("<svg><text>a & b</text></svg>").is_err());
    assert!(parse("<svg width=1></svg>").is_err());
    assert!(parse("<svg></svg><svg></svg>").is_err());
    assert!(parse("<svg><text x=\"1\">a &amp; b</text></svg>").is_ok());
}
