//! Prompt templates: plain text with `{placeholders}` filled from a prepared
//! dataset's `meta.json` (train-only statistics). See prompts/README.md.

use crate::data::meta::{DomainMeta, Meta};
use anyhow::{Result, bail};
use std::path::Path;

/// The `{placeholder}` names a template uses, in order.
pub fn placeholders(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else { break };
        out.push(after[..j].to_string());
        rest = &after[j + 1..];
    }
    out
}

/// Render `template` (read from `file`, named in errors) for one domain.
pub fn render(template: &str, file: &Path, meta: &Meta, d: &DomainMeta) -> Result<String> {
    Ok(render_spans(template, file, meta, d)?.0)
}

/// [`render`], and the byte ranges of the rendered text that hold the domain's
/// name (one per `{domain}` in the template, in order).
pub fn render_spans(
    template: &str,
    file: &Path,
    meta: &Meta,
    d: &DomainMeta,
) -> Result<(String, Vec<std::ops::Range<usize>>)> {
    let s = &d.train_stats;
    let join = |v: Vec<String>| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let value = |key: &str| -> Option<String> {
        Some(match key {
            "dataset" => meta.recipe.clone(),
            "domain" => d.name.clone(),
            "rows" => s.rows.to_string(),
            "users" => s
                .users
                .map_or("an unknown number of".into(), |u| u.to_string()),
            "items" => s
                .items
                .map_or("an unknown number of".into(), |u| u.to_string()),
            "positives" => s.positives.to_string(),
            "positive_pct" => s
                .positive_rate
                .map_or("an unknown share".into(), |r| format!("{:.1}", r * 100.0)),
            "category_name" => meta
                .category_name
                .clone()
                .unwrap_or_else(|| "categories".into()),
            "top_categories" => join(s.top_categories.iter().map(|c| c.name.clone()).collect()),
            "example_titles" => join(s.example_titles.clone()),
            _ => return None,
        })
    };
    let mut out = String::with_capacity(template.len() + 64);
    let mut spans = Vec::new();
    let mut rest = template;
    let mut line = 1;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        line += rest[..i].matches('\n').count();
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else {
            bail!("{}:{line}: `{{` without a closing `}}`", file.display());
        };
        let key = &after[..j];
        match value(key) {
            Some(v) => {
                if key == "domain" && !v.is_empty() {
                    spans.push(out.len()..out.len() + v.len());
                }
                out.push_str(&v)
            }
            None => bail!(
                "{}:{line}: unknown placeholder {{{key}}} (known: dataset, domain, rows, users, items, positives, positive_pct, category_name, top_categories, example_titles)",
                file.display()
            ),
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    let text = out.trim_end_matches('\n').to_string();
    let spans = spans
        .into_iter()
        .map(|r| r.start.min(text.len())..r.end.min(text.len()))
        .filter(|r| !r.is_empty())
        .collect();
    Ok((text, spans))
}

/// Which tokens overlap one of `spans` (byte ranges of the text), given each
/// token's byte offsets; tokens with an empty range (special tokens) never do.
pub fn tokens_in_spans(offsets: &[(usize, usize)], spans: &[std::ops::Range<usize>]) -> Vec<bool> {
    offsets
        .iter()
        .map(|&(a, b)| a < b && spans.iter().any(|s| a < s.end && b > s.start))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_overlapping_the_name() {
        // "a \"bc d\" e bc": name "bc d" at bytes 3..7, and again at 11..13.
        let spans = [3..7, 11..13];
        let offsets = [
            (0, 1),
            (2, 4),
            (4, 5),
            (5, 7),
            (7, 8),
            (0, 0),
            (9, 10),
            (10, 12),
        ];
        assert_eq!(
            super::tokens_in_spans(&offsets, &spans),
            vec![false, true, true, true, false, false, false, true]
        );
    }
}
