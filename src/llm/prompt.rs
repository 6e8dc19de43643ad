//! Prompt templates: plain text with `{placeholders}` filled from a prepared
//! dataset's `meta.json` (train-only statistics) and `catalog.json` (label-free
//! statistics, `{catalog_…}`). See prompts/README.md.

use crate::data::meta::{CatalogDomain, DomainMeta, Meta};
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

/// The placeholders filled from the catalogue statistics (`catalog.json`).
pub const CATALOG_PLACEHOLDERS: [&str; 9] = [
    "catalog_users",
    "catalog_female_pct",
    "catalog_age",
    "catalog_items",
    "catalog_year",
    "catalog_titles",
    "description",
    "catalog_rows",
    "catalog_shares",
];

/// Render `template` (read from `file`, named in errors) for one domain;
/// `catalog`: the domain's catalogue statistics, when the dataset has them.
pub fn render(
    template: &str,
    file: &Path,
    meta: &Meta,
    d: &DomainMeta,
    catalog: Option<&CatalogDomain>,
) -> Result<String> {
    Ok(render_spans(template, file, meta, d, catalog)?.0)
}

/// The value of a `{catalog_…}` placeholder, or why there is none.
fn catalog_value(key: &str, c: Option<&CatalogDomain>) -> std::result::Result<String, String> {
    let Some(c) = c else {
        return Err(
            "needs the prepared dataset's catalogue statistics (catalog.json), \
                    which the MovieLens recipes and users' tables have"
                .into(),
        );
    };
    let missing = |what: &str| format!("has no value for domain {:?}: {what}", c.name);
    let users = "its recipe's domains are not groups of users";
    let items = "its recipe's domains are not groups of items";
    match key {
        "catalog_users" => c.users.map(|u| u.to_string()).ok_or_else(|| missing(users)),
        "catalog_female_pct" => c
            .female_pct
            .map(|p| format!("{p:.0}"))
            .ok_or_else(|| missing("it has no users, or its domains are not groups of users")),
        "catalog_age" => c.age.clone().ok_or_else(|| missing(users)),
        "catalog_items" => c.items.map(|i| i.to_string()).ok_or_else(|| missing(items)),
        "catalog_year" => c
            .year
            .clone()
            .ok_or_else(|| missing("none of its items has a release year")),
        "catalog_titles" if c.titles.is_empty() => Err(missing(items)),
        "catalog_titles" => Ok(c.titles.join(", ")),
        _ => Err(format!("unknown catalogue placeholder {key}")),
    }
}

/// [`render`], and the byte ranges of the rendered text that hold the domain's
/// name (one per `{domain}` in the template, in order).
pub fn render_spans(
    template: &str,
    file: &Path,
    meta: &Meta,
    d: &DomainMeta,
    catalog: Option<&CatalogDomain>,
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
        if CATALOG_PLACEHOLDERS.contains(&key) {
            match catalog_value(key, catalog) {
                Ok(v) => out.push_str(&v),
                Err(why) => bail!("{}:{line}: {{{key}}} {why}", file.display()),
            }
            rest = &after[j + 1..];
            continue;
        }
        match value(key) {
            Some(v) => {
                if key == "domain" && !v.is_empty() {
                    spans.push(out.len()..out.len() + v.len());
                }
                out.push_str(&v)
            }
            None => bail!(
                "{}:{line}: unknown placeholder {{{key}}} (known: dataset, domain, rows, users, items, positives, positive_pct, category_name, top_categories, example_titles, and the label-free catalog_users, catalog_female_pct, catalog_age, catalog_items, catalog_year, catalog_titles, description, catalog_rows, catalog_shares)",
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
    use crate::data::meta::CatalogDomain;

    #[test]
    fn catalogue_values_or_why_not() {
        let genre = CatalogDomain {
            name: "Sci-Fi".into(),
            items: Some(58),
            year: Some("1994".into()),
            titles: vec!["Star Wars (1977)".into(), "Contact (1997)".into()],
            ..Default::default()
        };
        let v = |k: &str, c: Option<&CatalogDomain>| super::catalog_value(k, c);
        assert_eq!(v("catalog_items", Some(&genre)).unwrap(), "58");
        assert_eq!(v("catalog_year", Some(&genre)).unwrap(), "1994");
        assert_eq!(
            v("catalog_titles", Some(&genre)).unwrap(),
            "Star Wars (1977), Contact (1997)"
        );
        let e = v("catalog_users", Some(&genre)).unwrap_err();
        assert!(
            e.contains("\"Sci-Fi\"") && e.contains("not groups of users"),
            "{e}"
        );
        assert!(
            v("catalog_titles", None)
                .unwrap_err()
                .contains("catalog.json")
        );
        let users = CatalogDomain {
            name: "retired".into(),
            users: Some(14),
            female_pct: Some(7.14),
            age: Some("56 and over".into()),
            ..Default::default()
        };
        assert_eq!(v("catalog_users", Some(&users)).unwrap(), "14");
        assert_eq!(v("catalog_female_pct", Some(&users)).unwrap(), "7");
        assert_eq!(v("catalog_age", Some(&users)).unwrap(), "56 and over");
        assert!(
            v("catalog_titles", Some(&users))
                .unwrap_err()
                .contains("not groups of items")
        );
    }

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
