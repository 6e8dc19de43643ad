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
            Some(v) => out.push_str(&v),
            None => bail!(
                "{}:{line}: unknown placeholder {{{key}}} (known: dataset, domain, rows, users, items, positives, positive_pct, category_name, top_categories, example_titles)",
                file.display()
            ),
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out.trim_end_matches('\n').to_string())
}
