//! Stage `grid`: a grid of settings on the **valid** split. Every combination of
//! the `--set KEY=V1|V2|…` alternatives (TOML values) is applied to a base config
//! and trained for each seed; the table lists the combinations by mean valid AUC
//! (the AUC at the best valid epoch), with the best marked. Test metrics are not
//! shown: a grid chooses, the test split only judges what it chose. Runs are
//! reused when finished (`pipeline run`'s rules), so a grid continues where it
//! stopped.

use crate::config::Config;
use crate::fsutil::{CsvText, sha256_bytes, write_atomic};
use crate::stages::pool::PoolResult;
use crate::stages::run::{ensure_embed, ensure_pool, ensure_train, llm_head};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One axis: one dotted key, or several keys set together, and the
/// alternatives. With several keys every alternative is a TOML array holding
/// one value per key, in the keys' order.
#[derive(Clone, Debug)]
pub struct Axis {
    pub keys: Vec<String>,
    pub values: Vec<toml::Value>,
}

impl Axis {
    /// The (key, value) settings of alternative `v`.
    fn settings(&self, v: &toml::Value) -> Vec<(String, toml::Value)> {
        match (self.keys.len(), v) {
            (1, _) => vec![(self.keys[0].clone(), v.clone())],
            (_, toml::Value::Array(a)) => {
                self.keys.iter().cloned().zip(a.iter().cloned()).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// Parse `KEY=V1|V2|…` (each value a TOML value: `16`, `[64, 32]`, `"domain"`)
/// or `KEY1,KEY2=[V1a, V1b]|[V2a, V2b]` (keys set together).
pub fn parse_axis(s: &str) -> Result<Axis> {
    let (key, vals) = s
        .split_once('=')
        .with_context(|| format!("--set {s:?}: expected KEY=VALUE|VALUE…"))?;
    let keys: Vec<String> = key.split(',').map(|k| k.trim().to_string()).collect();
    for k in &keys {
        if k.is_empty() || k.split('.').any(str::is_empty) {
            bail!("--set {s:?}: {k:?} is not a dotted key like model.cgc.tower");
        }
    }
    let values = vals
        .split('|')
        .map(|v| {
            let doc = format!("x = {}", v.trim());
            toml::from_str::<toml::Table>(&doc)
                .ok()
                .and_then(|mut t| t.remove("x"))
                .with_context(|| format!("--set {key}: {:?} is not a TOML value", v.trim()))
        })
        .collect::<Result<Vec<_>>>()?;
    if keys.len() > 1 {
        for v in &values {
            if v.as_array().map(Vec::len) != Some(keys.len()) {
                bail!(
                    "--set {s:?}: {} keys are set together, so every alternative must be \
                     an array of {} values (one per key), not {v}",
                    keys.len(),
                    keys.len()
                );
            }
        }
    }
    Ok(Axis { keys, values })
}

/// Every combination of the axes' values (the last axis varies fastest).
fn combinations(axes: &[Axis]) -> Vec<Vec<(String, toml::Value)>> {
    let mut out = vec![Vec::new()];
    for a in axes {
        out = out
            .into_iter()
            .flat_map(|c| {
                a.values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.extend(a.settings(v));
                    c
                })
            })
            .collect();
    }
    out
}

pub struct GridPlan {
    pub axes: Vec<Axis>,
    pub seeds: Vec<u64>,
    /// Output stem: `<out>.md`, `<out>.csv`.
    pub out: PathBuf,
}

struct Point {
    label: String,
    /// LLM points: the pooled embedding's kernel perplexity (w = 1/√h) and its
    /// largest possible value.
    perplexity: Option<(f64, usize)>,
    valid: Vec<f64>,
    epochs: Vec<usize>,
    seconds: f64,
}

/// Run the grid on the config file `base` (None: the defaults); returns the
/// Markdown table's path.
pub fn grid(base: Option<&Path>, runs_dir: Option<&Path>, plan: &GridPlan) -> Result<PathBuf> {
    let start = Instant::now();
    let text = match base {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read config file {}", p.display()))?,
        None => String::new(),
    };
    let table: toml::Table = toml::from_str(&text).with_context(|| match base {
        Some(p) => format!("in config file {}", p.display()),
        None => "in the default config".into(),
    })?;
    if plan.seeds.is_empty() {
        bail!("grid needs at least one seed");
    }
    let combos = combinations(&plan.axes);
    let total = combos.len() * plan.seeds.len();
    let mut points = Vec::new();
    let mut done = 0;
    let mut first: Option<Config> = None;
    let mut llm_points = false;
    for combo in &combos {
        let mut t = table.clone();
        for (k, v) in combo {
            crate::config::set_key(&mut t, k, v.clone())?;
        }
        let label = combo
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cfg: Config =
            toml::from_str(&toml::to_string(&t)?).with_context(|| format!("grid point {label}"))?;
        if let Some(d) = runs_dir {
            cfg.train.runs_dir = d.to_path_buf();
        }
        cfg.validate()
            .with_context(|| format!("grid point {label}"))?;
        // The point's whole config names its runs: two grids on different base
        // configs never share a run directory.
        let tag = &sha256_bytes(cfg.to_toml().as_bytes())[..10];
        let (cfg, perplexity) = if uses_llm(&t, &cfg) {
            let (head, pooled) =
                embed_and_pool(&cfg).with_context(|| format!("grid point {label}"))?;
            let kp = pooled.kernel_perplexity.map(|k| (k.pooling, k.of));
            (head, kp)
        } else {
            (cfg, None)
        };
        llm_points |= perplexity.is_some();
        let mut p = Point {
            label: label.clone(),
            perplexity,
            valid: Vec::new(),
            epochs: Vec::new(),
            seconds: 0.0,
        };
        for &seed in &plan.seeds {
            let mut c = cfg.clone();
            c.train.seed = seed;
            c.train.run_name = Some(format!(
                "grid-{}-{}-{tag}-seed{seed}",
                c.model.label(),
                c.data.recipe
            ));
            let (m, dir, _) = ensure_train(&c)?;
            done += 1;
            tracing::info!(
                "[grid {done}/{total}, {:.0} s] {label} seed {seed}: valid AUC {} ({})",
                start.elapsed().as_secs_f64(),
                m.valid_auc.map_or("n/a".into(), |v| format!("{v:.4}")),
                dir.display()
            );
            if let Some(v) = m.valid_auc {
                p.valid.push(v);
            }
            p.epochs.push(m.best_epoch);
            p.seconds += m.train_seconds;
        }
        first.get_or_insert(cfg);
        points.push(p);
    }
    // NaN for no values (and, for the sd, fewer than two): printed as such.
    let mean = |v: &[f64]| crate::stats::mean(v).unwrap_or(f64::NAN);
    let sd = |v: &[f64]| match crate::stats::mean_sd(v) {
        Some((_, sd)) if v.len() > 1 => sd,
        _ => f64::NAN,
    };
    points.sort_by(|a, b| mean(&b.valid).total_cmp(&mean(&a.valid)));
    let cfg = first.context("grid has no point")?;
    let mut md = format!(
        "# Grid on valid: {} on {}\n\n{} points × seeds {:?} ({total} runs, {:.0} s of \
         recorded training; this call took {:.0} s, finished runs reused); base config {}. Sorted by mean valid AUC (best valid epoch); test not shown.{}\n\n\
         | # | setting | valid AUC (mean ± sd) | best epochs | train s |{}\n| --- | --- | --- | --- | --- |{}\n",
        cfg.model.label(),
        cfg.data.recipe,
        combos.len(),
        plan.seeds,
        points.iter().map(|p| p.seconds).sum::<f64>(),
        start.elapsed().as_secs_f64(),
        base.map_or("(defaults)".into(), |p| p.display().to_string()),
        if llm_points {
            " Each point's domain embeddings come from its `[embed]` and `[pool]` settings \
             (embed and pool runs in the runs folder, shared by points with the same \
             settings); kernel perplexity: the pooled embeddings' effective number of \
             neighbours per domain (w = 1/√h), of the largest possible."
        } else {
            ""
        },
        if llm_points {
            " kernel perplexity |"
        } else {
            ""
        },
        if llm_points { " --- |" } else { "" },
    );
    let mut csv = CsvText::new([
        "rank",
        "setting",
        "valid_auc_mean",
        "valid_auc_sd",
        "best_epochs",
        "train_seconds",
        "kernel_perplexity",
    ])?;
    for (i, p) in points.iter().enumerate() {
        let ep = p
            .epochs
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let kp = match p.perplexity {
            Some((v, of)) => format!(" {v:.1} of {of} |"),
            None if llm_points => " — |".into(),
            None => String::new(),
        };
        md.push_str(&format!(
            "| {}{} | `{}` | {:.4} ± {:.4} | {ep} | {:.0} |{kp}\n",
            i + 1,
            if i == 0 { " (best)" } else { "" },
            p.label,
            mean(&p.valid),
            sd(&p.valid),
            p.seconds
        ));
        csv.row([
            (i + 1).to_string(),
            p.label.clone(),
            format!("{:.6}", mean(&p.valid)),
            format!("{:.6}", sd(&p.valid)),
            ep.replace(", ", " "),
            format!("{:.1}", p.seconds),
            p.perplexity
                .map_or(String::new(), |(v, _)| format!("{v:.3}")),
        ])?;
    }
    if let Some(dir) = plan.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let md_path = plan.out.with_extension("md");
    write_atomic(&md_path, md.as_bytes())?;
    csv.write(&plan.out.with_extension("csv"))?;
    Ok(md_path)
}

/// Whether a point's domain embeddings come from its `[embed]` and `[pool]`
/// settings, as in `pipeline run`: its config has either table (from the base
/// config or an axis) and names no fixed embedding file.
fn uses_llm(t: &toml::Table, cfg: &Config) -> bool {
    (t.contains_key("embed") || t.contains_key("pool")) && cfg.model.domain_embeddings.is_none()
}

/// Embed and pool as `cfg` says (reusing finished runs), in the point's runs
/// folder; returns the point's head config on the pooled embeddings. The embed
/// run's name carries a hash of the `[embed]` settings, because settings its
/// default name leaves out (the probe's query, the adapters' sizes) differ
/// between points.
fn embed_and_pool(cfg: &Config) -> Result<(Config, PoolResult)> {
    let mut c = cfg.clone();
    c.embed.runs_dir = c.train.runs_dir.clone();
    c.pool.runs_dir = c.train.runs_dir.clone();
    c.embed.run_name = None;
    // The device is an execution setting (runs made on another are reused):
    // it does not name the run either.
    let mut key = c.embed.clone();
    key.device = crate::stages::embed::EmbedConfig::default().device;
    let etag = sha256_bytes(toml::to_string(&key)?.as_bytes());
    c.embed.run_name = Some(format!(
        "{}-{}",
        c.embed.run_name(&c.data.recipe, &c.data.holdout_domains),
        &etag[..10]
    ));
    let (embedded, _) = ensure_embed(&c)?;
    c.pool.from = Some(PathBuf::from(&embedded.run_dir));
    c.pool.run_name = None;
    let (pooled, _) = ensure_pool(&c)?;
    let head = llm_head(&c, Path::new(&pooled.run_dir), String::new());
    Ok((head, pooled))
}

/// `pipeline grid`.
#[derive(clap::Args, Debug)]
pub struct GridArgs {
    #[command(flatten)]
    pub config: crate::config::ConfigArg,
    /// An axis: a dotted config key and its alternatives as TOML values,
    /// separated by `|`, e.g. `model.cgc.tower=[8]|[64]`, or keys set together,
    /// each alternative an array with one value per key, e.g.
    /// `pool.mode,pool.query=["parametric", "last"]|["parameterless", "mean"]`
    /// (repeatable; the grid is every combination).
    #[arg(long = "set", required = true)]
    pub set: Vec<String>,
    /// Seeds.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub seeds: Vec<u64>,
    /// Output stem: writes <out>.md and <out>.csv.
    #[arg(long, default_value = "results/grid")]
    pub out: PathBuf,
    /// Runs folder (overrides train.runs_dir).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
}

/// Runs `pipeline grid` and prints its table.
pub fn command(args: &GridArgs) -> Result<()> {
    let plan = GridPlan {
        axes: args
            .set
            .iter()
            .map(|s| parse_axis(s))
            .collect::<Result<_>>()?,
        seeds: args.seeds.clone(),
        out: args.out.clone(),
    };
    let md = grid(
        args.config.config.as_deref(),
        args.runs_dir.as_deref(),
        &plan,
    )?;
    println!("{}", std::fs::read_to_string(&md)?);
    println!("wrote {}", md.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_parse_and_combine() {
        let a = parse_axis("model.cgc.tower=[8]|[64, 32]").unwrap();
        assert_eq!(a.keys, ["model.cgc.tower"]);
        assert_eq!(a.values.len(), 2);
        let b = parse_axis("model.cgc.conditioning=\"none\"|\"domain\"").unwrap();
        let c = combinations(&[a, b]);
        assert_eq!(c.len(), 4);
        let mut t = toml::Table::new();
        for (k, v) in &c[3] {
            crate::config::set_key(&mut t, k, v.clone()).unwrap();
        }
        let cfg: Config = toml::from_str(&toml::to_string(&t).unwrap()).unwrap();
        assert_eq!(cfg.model.cgc.tower, vec![64, 32]);
        assert_eq!(
            cfg.model.cgc.conditioning,
            crate::models::config::Conditioning::Domain
        );
        let linked = parse_axis(
            "pool.mode,pool.query=[\"parametric\", \"last\"]|[\"parameterless\", \"mean\"]",
        )
        .unwrap();
        let c = combinations(&[linked]);
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].len(), 2);
        assert_eq!(c[1][0], ("pool.mode".into(), "parameterless".into()));
        assert_eq!(c[1][1], ("pool.query".into(), "mean".into()));
        for bad in [
            "model.cgc.tower",
            "=3",
            "a..b=1",
            "model.x=[1",
            "pool.mode,pool.query=\"mean\"",
            "pool.mode,pool.query=[\"parametric\"]",
            "pool.mode,=[1, 2]",
        ] {
            assert!(parse_axis(bad).is_err(), "{bad}");
        }
    }
}
