//! Recipe names of `docs/data.md`, parsed.

use super::movielens::{DomainKind, Version};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipe {
    /// `ml100k-age3`, `ml1m-occupation`, ...
    MovieLens {
        version: Version,
        domains: DomainKind,
    },
    /// `amazon-<cat1>+<cat2>+...`: one domain per category file, in this order;
    /// `amazon-nextitem-<cat1>+...`: the next-item protocol over those files'
    /// reviews, one domain per history-length group.
    Amazon {
        categories: Vec<String>,
        next_item: bool,
    },
    /// `criteo`: domain = one categorical column chosen in the config.
    Criteo,
    /// `table-<name>`: a user's own table, described by `[data.table]`.
    Table { name: String },
}

pub const RECIPES_HELP: &str = "ml100k-age3, ml100k-occupation, ml100k-gender, ml100k-genre, \
    ml100k-nextitem, ml1m-age3, ml1m-occupation, ml1m-gender, ml1m-genre, ml1m-nextitem, amazon-<Category>+<Category>+..., \
    amazon-nextitem-<Category>+..., criteo, \
    table-<name> (your own table, described by [data.table])";

impl FromStr for Recipe {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "criteo" {
            return Ok(Recipe::Criteo);
        }
        if let Some(name) = s.strip_prefix("table-") {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
            {
                return Err(format!(
                    "recipe {s:?}: a table's name is letters, digits, `_` and `-` \
                     (table-adult-education)"
                ));
            }
            return Ok(Recipe::Table { name: name.into() });
        }
        if let Some(rest) = s.strip_prefix("amazon-") {
            let (next_item, rest) = match rest.strip_prefix("nextitem-") {
                Some(r) => (true, r),
                None => (false, rest),
            };
            let categories: Vec<String> = rest.split('+').map(str::to_string).collect();
            if categories.iter().any(|c| {
                c.is_empty()
                    || !c
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
            }) {
                return Err(format!(
                    "recipe {s:?}: categories are file stems like Musical_Instruments, \
                     joined by '+' (amazon-Musical_Instruments+Digital_Music)"
                ));
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(dup) = categories.iter().find(|c| !seen.insert(*c)) {
                return Err(format!("recipe {s:?}: category {dup} is named twice"));
            }
            return Ok(Recipe::Amazon {
                categories,
                next_item,
            });
        }
        let (version, rest) = if let Some(r) = s.strip_prefix("ml100k-") {
            (Version::K100, r)
        } else if let Some(r) = s.strip_prefix("ml1m-") {
            (Version::M1, r)
        } else {
            return Err(format!("unknown recipe {s:?}; known: {RECIPES_HELP}"));
        };
        let domains = match rest {
            "age3" => DomainKind::Age3,
            "occupation" => DomainKind::Occupation,
            "gender" => DomainKind::Gender,
            "genre" => DomainKind::Genre,
            "nextitem" => DomainKind::History,
            _ => return Err(format!("unknown recipe {s:?}; known: {RECIPES_HELP}")),
        };
        Ok(Recipe::MovieLens { version, domains })
    }
}

impl Recipe {
    /// The feature fields the domains are made from (`criteo_field`: Criteo's
    /// configured domain column). Amazon's domains are its category files, which
    /// no feature encodes.
    pub fn domain_fields(&self, criteo_field: &str) -> Vec<String> {
        match self {
            Recipe::MovieLens { domains, .. } => match domains {
                DomainKind::Age3 => vec!["age"],
                DomainKind::Occupation => vec!["occupation"],
                DomainKind::Gender => vec!["gender"],
                // The first genre is the domain; the multi-hot genres contain it.
                DomainKind::Genre => vec!["cate_id", "genres"],
                // The history length defines it, which no feature holds.
                DomainKind::History => vec![],
            }
            .into_iter()
            .map(String::from)
            .collect(),
            // A table's are in its prepared meta.json (`domain_fields`).
            Recipe::Amazon { .. } | Recipe::Table { .. } => Vec::new(),
            Recipe::Criteo => vec![criteo_field.to_string()],
        }
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recipe::MovieLens { version, domains } => {
                let v = match version {
                    Version::K100 => "ml100k",
                    Version::M1 => "ml1m",
                };
                let d = match domains {
                    DomainKind::Age3 => "age3",
                    DomainKind::Occupation => "occupation",
                    DomainKind::Gender => "gender",
                    DomainKind::Genre => "genre",
                    DomainKind::History => "nextitem",
                };
                write!(f, "{v}-{d}")
            }
            Recipe::Amazon {
                categories,
                next_item,
            } => write!(
                f,
                "amazon-{}{}",
                if *next_item { "nextitem-" } else { "" },
                categories.join("+")
            ),
            Recipe::Criteo => write!(f, "criteo"),
            Recipe::Table { name } => write!(f, "table-{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in [
            "ml100k-age3",
            "ml100k-occupation",
            "ml100k-gender",
            "ml1m-age3",
            "ml1m-occupation",
            "ml1m-gender",
            "ml100k-genre",
            "ml1m-genre",
            "ml100k-nextitem",
            "amazon-Books+Digital_Music",
            "amazon-nextitem-Books+Digital_Music",
            "criteo",
            "table-adult-education",
        ] {
            assert_eq!(s.parse::<Recipe>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn bad_names_say_what_is_known() {
        let e = "ml100k-zip".parse::<Recipe>().unwrap_err();
        assert!(e.contains("ml100k-occupation"), "{e}");
        assert!("amazon-".parse::<Recipe>().is_err());
        assert!("amazon-nextitem-".parse::<Recipe>().is_err());
        assert!(
            "amazon-A+A"
                .parse::<Recipe>()
                .unwrap_err()
                .contains("twice")
        );
        assert!("amazon-../x".parse::<Recipe>().is_err());
    }
}
