//! Stage `lodo`: leave-one-domain-out. The domains of a recipe are split into
//! folds (every domain alone, or k folds); each fold's domains are held out of
//! training (`data.holdout_domains`) and scored on test as unseen domains, for
//! each arm and seed:
//!
//! - `none`: no domain input (the floor);
//! - `id`: a trainable domain-id embedding — the held-out domain's row never
//!   trains, so this arm shows what an id can (not) do for an unseen domain;
//! - `embedding`: the fixed domain embeddings of `model.domain_embeddings`;
//! - `adapted`: the `[embed]` method (LoRA or P-Tuning v2) trained per fold on
//!   the fold's training domains only (the embed probe never sees a held-out
//!   domain's rows), then pooled with `[pool]`: the held-out domains' vectors
//!   come from adapters that never saw them. Embed and pool run once per fold
//!   and are reused across seeds;
//! - `random`: the control for `embedding` — a fixed random vector per domain,
//!   drawn (seeded) with the per-dimension mean and spread of the embedding
//!   file, so a gain of `embedding` over `random` is knowledge of the domain, not
//!   the mere presence of a distinct fixed vector per domain.
//!
//! Every arm drops the domain-defining field(s) from the features
//! (`model.domain_fields = "drop"`), so the arms differ in the domain input alone.
//! Per held-out domain: test AUC and logloss (a domain embedding that knows a
//! domain's base rate shows in calibration, not in the AUC within the domain),
//! averaged over seeds; per fold: the AUC pooled over its held-out domains; and
//! the paired difference of each arm against the floor (and against `random`)
//! over domains, with the sign count and a two-sided sign-flip permutation
//! p-value. Runs are reused
//! when finished (`pipeline run`'s rules), so an interrupted study continues.

use crate::config::Config;
use crate::fsutil::{CsvText, write_atomic};
use crate::metrics;
use crate::models::config::{DomainFields, DomainInput};
use crate::nn::rng::Rng;
use crate::stages::run::ensure_train;
use crate::stats::{mean, sign_flip_test};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `pipeline lodo` is asked for.
pub struct LodoPlan {
    /// 0: every domain alone; k: k folds (domain i in fold i mod k).
    pub folds: usize,
    pub seeds: Vec<u64>,
    pub arms: Vec<Arm>,
    /// Output stem: `<out>.md`, `<out>.csv`, `<out>.svg`.
    pub out: PathBuf,
}

pub use crate::config::ablate::Arm;

/// A paired difference over held-out domains: mean, how many domains went up
/// and down, and the sign-flip p-value.
#[derive(Clone, Copy, Debug)]
pub struct Paired {
    pub mean: Option<f64>,
    pub up: usize,
    pub down: usize,
    pub p: Option<f64>,
    /// The smallest mean difference the comparison could detect (80% power,
    /// 5% two-sided, from the spread of `d`; [`crate::stats::detectable`]).
    pub detectable: Option<f64>,
    /// The paired t-test's two-sided p-value (for few pairs, where the
    /// sign-flip test cannot go low: 3 seeds give at least 0.25).
    pub t_p: Option<f64>,
}

impl Paired {
    /// The paired differences `d`: their mean, sign counts and sign-flip
    /// p-value (exact up to 20 differences, else 20,000 draws from seed 7; as
    /// every study table uses).
    pub fn of(d: &[f64]) -> Paired {
        let (up, down, p) = sign_flip_test(d, 20_000, 7);
        Paired {
            mean: mean(d),
            up,
            down,
            p,
            detectable: crate::stats::detectable(d),
            t_p: crate::stats::paired_t_p(d),
        }
    }
}

/// One arm of a finished study: its means over the held-out domains and its
/// paired differences against `none` and `random` (AUC, then logloss; None
/// for the reference itself or when the study lacks it).
#[derive(Clone, Debug)]
pub struct ArmSummary {
    pub label: String,
    pub mean_auc: Option<f64>,
    pub mean_pooled_auc: Option<f64>,
    pub mean_logloss: Option<f64>,
    pub vs_none: Option<[Paired; 2]>,
    pub vs_random: Option<[Paired; 2]>,
}

/// A finished study: where its table is, and its arms.
pub struct LodoStudyResult {
    pub md: PathBuf,
    pub recipe: String,
    pub model: String,
    pub runs: usize,
    /// Each run's directory and recorded training time (`train_seconds`),
    /// reused or not.
    pub run_seconds: Vec<(PathBuf, f64)>,
    pub arms: Vec<ArmSummary>,
}

/// The arm's name in tables and run names: `adapted` takes its method's
/// (`adapted-lora`, …) and its episodes' share (`adapted-lora-ep25`).
fn label(arm: Arm, base: &Config) -> String {
    match arm {
        Arm::Adapted => format!(
            "adapted-{}{}",
            base.embed.method.as_str(),
            base.embed.episodes_suffix()
        ),
        _ => arm.as_str().into(),
    }
}

/// The `adapted` arm's domain embeddings for one fold: `base`'s embed run with
/// the fold held out (trained, or reused when finished), then its pool run.
fn adapted_embeddings(fold_cfg: &Config, recipe: &str) -> Result<PathBuf> {
    crate::stages::run::ensure_embed(fold_cfg)?;
    crate::stages::run::ensure_pool(fold_cfg)?;
    Ok(fold_cfg
        .pool
        .run_dir(fold_cfg, recipe)
        .join("domain_embeddings.safetensors"))
}

/// One held-out domain's test metrics in one run.
#[derive(Clone, Copy, Debug)]
struct Cell {
    auc: Option<f64>,
    logloss: f64,
}

/// The held-out domains' test rows of a finished run, from its
/// `predictions_test.safetensors`: per domain, then pooled over them.
/// Scores and labels of some test rows.
type Rows = (Vec<f32>, Vec<f32>);

type HeldOut = (BTreeMap<usize, Cell>, Option<f64>, Rows);

fn held_out_metrics(run: &Path, held: &[usize]) -> Result<HeldOut> {
    let file = run.join("predictions_test.safetensors");
    let t = crate::tensor_io::load_safetensors(&file)?;
    let get = |k: &str| {
        t.get(k)
            .with_context(|| format!("{} has no tensor `{k}`", file.display()))
    };
    let dom = get("domain")?.to_vec1::<u32>()?;
    let lab: Vec<f32> = get("label")?
        .to_vec1::<u8>()?
        .into_iter()
        .map(f32::from)
        .collect();
    let score = get("score")?.to_vec1::<f32>()?;
    let (mut all_p, mut all_y) = (Vec::new(), Vec::new());
    let mut per = BTreeMap::new();
    for &d in held {
        let idx: Vec<usize> = (0..dom.len()).filter(|&i| dom[i] as usize == d).collect();
        let p: Vec<f32> = idx.iter().map(|&i| score[i]).collect();
        let y: Vec<f32> = idx.iter().map(|&i| lab[i]).collect();
        if !idx.is_empty() {
            per.insert(
                d,
                Cell {
                    auc: metrics::auc(&p, &y),
                    logloss: metrics::logloss(&p, &y),
                },
            );
        }
        all_p.extend(p);
        all_y.extend(y);
    }
    let pooled = metrics::auc(&all_p, &all_y);
    Ok((per, pooled, (all_p, all_y)))
}

fn fmt(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.4}"))
}

/// Run the study; returns the Markdown table's path.
pub fn lodo(base: &Config, plan: &LodoPlan) -> Result<PathBuf> {
    lodo_study(base, plan).map(|r| r.md)
}

/// [`lodo`], returning the arms' summaries too.
pub fn lodo_study(base: &Config, plan: &LodoPlan) -> Result<LodoStudyResult> {
    let start = Instant::now();
    let prepared = crate::stages::prepare::prepare(base, false)?;
    let names: Vec<String> = prepared
        .meta
        .domains
        .iter()
        .map(|d| d.name.clone())
        .collect();
    let d = names.len();
    let k = if plan.folds == 0 {
        d
    } else {
        plan.folds.min(d)
    };
    if k < 2 {
        bail!("lodo needs at least 2 folds (the recipe has {d} domains)");
    }
    if (plan.arms.contains(&Arm::Embedding) || plan.arms.contains(&Arm::Random))
        && base.model.domain_embeddings.is_none()
    {
        bail!(
            "the `embedding` and `random` arms need model.domain_embeddings (a safetensors file)"
        );
    }
    let random = match &base.model.domain_embeddings {
        Some(f) if plan.arms.contains(&Arm::Random) => Some(random_control(
            f,
            &base.model.domain_embeddings_tensor,
            &base.train.runs_dir,
        )?),
        _ => None,
    };
    let folds: Vec<Vec<usize>> = (0..k)
        .map(|f| (0..d).filter(|i| i % k == f).collect())
        .collect();
    // (arm, domain) → per-seed cells; (arm, fold) → per-seed pooled AUC.
    let mut cells: BTreeMap<(usize, usize), Vec<Cell>> = BTreeMap::new();
    let mut pooled: BTreeMap<(usize, usize), Vec<f64>> = BTreeMap::new();
    // (arm, seed) → every held-out test row of every fold: (scores, labels).
    let mut all_rows: BTreeMap<(usize, u64), Rows> = BTreeMap::new();
    let runs = plan.arms.len() * k * plan.seeds.len();
    let mut trained = 0.0;
    let mut run_seconds = Vec::with_capacity(runs);
    let mut done = 0;
    for (fi, fold) in folds.iter().enumerate() {
        for &seed in &plan.seeds {
            for (ai, &arm) in plan.arms.iter().enumerate() {
                let mut c = base.clone();
                c.data.holdout_domains = fold.iter().map(|&i| names[i].clone()).collect();
                c.model.domain_fields = DomainFields::Drop;
                c.model.domain_input = match arm {
                    Arm::None => DomainInput::None,
                    Arm::Id => DomainInput::Id,
                    Arm::Embedding | Arm::Adapted | Arm::Random => DomainInput::Fixed,
                };
                if arm == Arm::Adapted {
                    c.model.domain_embeddings =
                        Some(adapted_embeddings(&c, &prepared.meta.recipe)?);
                    c.model.domain_embeddings_tensor = "domain_embeddings".into();
                }
                if arm == Arm::Random {
                    c.model.domain_embeddings = random.clone();
                    c.model.domain_embeddings_tensor = "domain_embeddings".into();
                }
                c.train.seed = seed;
                c.train.run_name = Some(format!(
                    "lodo-{}-{}-{}-k{k}-fold{fi}-seed{seed}",
                    c.model.label(),
                    label(arm, base),
                    prepared.meta.recipe
                ));
                let (m, dir, _) = ensure_train(&c)?;
                trained += m.train_seconds;
                run_seconds.push((dir.clone(), m.train_seconds));
                let (per, all, (p, y)) = held_out_metrics(&dir, fold)?;
                let rows = all_rows.entry((ai, seed)).or_default();
                rows.0.extend(p);
                rows.1.extend(y);
                for (dom, cell) in per {
                    cells.entry((ai, dom)).or_default().push(cell);
                }
                if let Some(a) = all {
                    pooled.entry((ai, fi)).or_default().push(a);
                }
                done += 1;
                tracing::info!(
                    "[lodo {done}/{runs}, {:.0} s] fold {fi} seed {seed} {}: unseen AUC {}",
                    start.elapsed().as_secs_f64(),
                    arm.as_str(),
                    fmt(all)
                );
            }
        }
    }
    let per_arm = |ai: usize, dom: usize| -> (Option<f64>, Option<f64>) {
        let v = cells.get(&(ai, dom)).map(Vec::as_slice).unwrap_or(&[]);
        let aucs: Vec<f64> = v.iter().filter_map(|c| c.auc).collect();
        let lls: Vec<f64> = v.iter().map(|c| c.logloss).collect();
        (mean(&aucs), mean(&lls))
    };
    let seconds = start.elapsed().as_secs_f64();
    let labels: Vec<String> = plan.arms.iter().map(|&a| label(a, base)).collect();
    let arms: Vec<&str> = labels.iter().map(String::as_str).collect();
    let mut md = format!(
        "# Leave-one-domain-out: {} on {}\n\n{} folds ({}), seeds {:?}, arms {}; the \
         domain-defining field dropped in every arm. {runs} runs in {seconds:.0} s \
         (finished runs reused), {trained:.0} s of recorded training.\n\
         Per held-out domain: test AUC / logloss, mean over seeds.\n\n| domain | test rows |",
        base.model.label(),
        prepared.meta.recipe,
        k,
        if k == d {
            "each domain alone"
        } else {
            "domain i in fold i mod k"
        },
        plan.seeds,
        arms.join(", ")
    );
    let mut head = vec!["domain".to_string(), "test_rows".to_string()];
    for a in &arms {
        md.push_str(&format!(" {a} AUC | {a} logloss |"));
        head.extend([format!("{a}_auc"), format!("{a}_logloss")]);
    }
    let mut csv = CsvText::new(&head)?;
    md.push_str("\n| --- | --- |");
    md.push_str(&" --- | --- |".repeat(arms.len()));
    md.push('\n');
    for (dom, name) in names.iter().enumerate() {
        let rows = prepared.meta.domains[dom].rows.test;
        md.push_str(&format!("| {name} | {rows} |"));
        let mut row = vec![name.clone(), rows.to_string()];
        for ai in 0..arms.len() {
            let (a, l) = per_arm(ai, dom);
            md.push_str(&format!(" {} | {} |", fmt(a), fmt(l)));
            let cell = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.6}"));
            row.extend([cell(a), cell(l)]);
        }
        md.push('\n');
        csv.row(&row)?;
    }
    let refs: Vec<(usize, &str)> = [Arm::None, Arm::Random]
        .iter()
        .filter_map(|r| Some((plan.arms.iter().position(|a| a == r)?, r.as_str())))
        .collect();
    md.push_str(&format!(
        "\n## Means and paired differences against {}\n\n",
        refs.iter()
            .map(|r| format!("`{}`", r.1))
            .collect::<Vec<_>>()
            .join(" and ")
    ));
    md.push_str(
        "Over the held-out domains with a defined value in both arms; p: two-sided \
         sign-flip permutation test of the mean difference (exact up to 20 differences, else 20,000 draws); ±: the \
         smallest mean difference detectable at 80% power (5% two-sided) given the \
         spread of the paired differences.\n\n\
         | arm | mean AUC | mean pooled AUC per fold | mean logloss |",
    );
    for (_, r) in &refs {
        md.push_str(&format!(
            " ΔAUC vs {r} (+/−, p) | Δlogloss vs {r} (+/−, p) |"
        ));
    }
    md.push_str("\n| --- | --- | --- | --- |");
    md.push_str(&" --- | --- |".repeat(refs.len()));
    md.push('\n');
    let mut summaries = Vec::with_capacity(arms.len());
    for (ai, a) in arms.iter().enumerate() {
        let aucs: Vec<f64> = (0..d).filter_map(|dom| per_arm(ai, dom).0).collect();
        let lls: Vec<f64> = (0..d).filter_map(|dom| per_arm(ai, dom).1).collect();
        let pool: Vec<f64> = (0..k)
            .filter_map(|f| mean(pooled.get(&(ai, f)).map(Vec::as_slice).unwrap_or(&[])))
            .collect();
        let paired = |f: usize, pick: &dyn Fn((Option<f64>, Option<f64>)) -> Option<f64>| {
            let dv: Vec<f64> = (0..d)
                .filter_map(|dom| Some(pick(per_arm(ai, dom))? - pick(per_arm(f, dom))?))
                .collect();
            Paired::of(&dv)
        };
        let against = |r: Arm| -> Option<[Paired; 2]> {
            let f = plan.arms.iter().position(|a| *a == r)?;
            (f != ai).then(|| [paired(f, &|x| x.0), paired(f, &|x| x.1)])
        };
        let summary = ArmSummary {
            label: a.to_string(),
            mean_auc: mean(&aucs),
            mean_pooled_auc: mean(&pool),
            mean_logloss: mean(&lls),
            vs_none: against(Arm::None),
            vs_random: against(Arm::Random),
        };
        md.push_str(&format!(
            "| `{a}` | {} | {} | {} |",
            fmt(summary.mean_auc),
            fmt(summary.mean_pooled_auc),
            fmt(summary.mean_logloss),
        ));
        for (_, r) in &refs {
            let pair = if *r == "none" {
                summary.vs_none
            } else {
                summary.vs_random
            };
            match pair {
                Some([x, y]) => {
                    md.push_str(&format!(" {} | {} |", paired_cell(&x), paired_cell(&y)))
                }
                None => md.push_str(" — | — |"),
            }
        }
        md.push('\n');
        summaries.push(summary);
    }
    md.push_str(&pooled_section(&labels, &plan.seeds, &all_rows, &refs));
    let md_path = plan.out.with_extension("md");
    write_atomic(&md_path, md.as_bytes())?;
    csv.write(&plan.out.with_extension("csv"))?;
    draw(base, &prepared.meta.recipe, plan)?;
    Ok(LodoStudyResult {
        md: md_path,
        recipe: prepared.meta.recipe.clone(),
        model: base.model.label().into(),
        runs,
        run_seconds,
        arms: summaries,
    })
}

/// The tables' section on every held-out row of every fold pooled: per arm,
/// AUC and logloss (mean ± sd over seeds), and the paired differences over
/// seeds against `refs` (a per-domain constant cannot move the AUC within a
/// domain; pooled, it moves the ranking across domains and the calibration).
fn pooled_section(
    labels: &[String],
    seeds: &[u64],
    rows: &BTreeMap<(usize, u64), Rows>,
    refs: &[(usize, &str)],
) -> String {
    let metric = |ai: usize, seed: u64| -> Option<(f64, f64)> {
        let (p, y) = rows.get(&(ai, seed))?;
        Some((metrics::auc(p, y)?, metrics::logloss(p, y)))
    };
    let n_rows = rows.get(&(0, seeds[0])).map_or(0, |r| r.0.len());
    let mut md = format!(
        "\n## Pooled over all held-out rows\n\nEvery fold's held-out test rows together \
         ({n_rows} rows): AUC and logloss per seed, mean ± sd over seeds {seeds:?}; the \
         differences are paired over seeds (p: sign-flip test over seeds, which cannot go \
         below 2/2ⁿ with n seeds; t: the paired t-test's p; ±: the smallest mean \
         difference detectable at 80% power, 5% two-sided, from the spread of the paired \
         differences).\n\n| arm | pooled AUC | pooled logloss |"
    );
    for (_, r) in refs {
        md.push_str(&format!(" ΔAUC vs {r} | Δlogloss vs {r} |"));
    }
    md.push_str("\n| --- | --- | --- |");
    md.push_str(&" --- | --- |".repeat(refs.len()));
    md.push('\n');
    let ms = |v: &[f64]| {
        crate::stats::mean_sd(v).map_or("n/a".into(), |(m, s)| format!("{m:.4} ± {s:.4}"))
    };
    for (ai, label) in labels.iter().enumerate() {
        let per: Vec<(f64, f64)> = seeds.iter().filter_map(|&s| metric(ai, s)).collect();
        let aucs: Vec<f64> = per.iter().map(|x| x.0).collect();
        let lls: Vec<f64> = per.iter().map(|x| x.1).collect();
        md.push_str(&format!("| `{label}` | {} | {} |", ms(&aucs), ms(&lls)));
        for &(ri, _) in refs {
            if ri == ai {
                md.push_str(" — | — |");
                continue;
            }
            let diff = |pick: fn((f64, f64)) -> f64| -> Vec<f64> {
                seeds
                    .iter()
                    .filter_map(|&s| Some(pick(metric(ai, s)?) - pick(metric(ri, s)?)))
                    .collect()
            };
            let cell = |d: Vec<f64>| {
                let x = Paired::of(&d);
                format!(
                    "{} ({}/{}, p {}, t {}, ±{})",
                    fmt(x.mean),
                    x.up,
                    x.down,
                    fmt(x.p),
                    fmt(x.t_p),
                    fmt(x.detectable)
                )
            };
            md.push_str(&format!(
                " {} | {} |",
                cell(diff(|x| x.0)),
                cell(diff(|x| x.1))
            ));
        }
        md.push('\n');
    }
    md
}

/// `mean (up/down, p …, ±detectable)`, as the tables print a paired
/// difference: a difference smaller in size than the last figure could not
/// have been told from none.
pub fn paired_cell(x: &Paired) -> String {
    format!(
        "{} ({}/{}, p {}, ±{})",
        fmt(x.mean),
        x.up,
        x.down,
        fmt(x.p),
        fmt(x.detectable)
    )
}

/// The `random` arm's domain embeddings: one vector per domain, each dimension
/// drawn from a normal with that dimension's mean and standard deviation over
/// the domains of `file` (seeded, so the same file gives the same control).
/// Written to `<runs_dir>/lodo-random-<stem>.safetensors`, returned.
pub fn random_control(file: &Path, tensor: &str, runs_dir: &Path) -> Result<PathBuf> {
    let all = crate::tensor_io::load_safetensors(file)?;
    let m = all
        .get(tensor)
        .with_context(|| format!("{} has no tensor `{tensor}`", file.display()))?
        .to_dtype(candle_core::DType::F32)?;
    let (d, h) = m
        .dims2()
        .with_context(|| format!("{}: `{tensor}` must be (domains, h)", file.display()))?;
    let v = m.to_vec2::<f32>()?;
    let mut rng = Rng::new(0x5eed_d0e5);
    let mut out = vec![0f32; d * h];
    for j in 0..h {
        let col: Vec<f64> = v.iter().map(|r| f64::from(r[j])).collect();
        let mu = col.iter().sum::<f64>() / d as f64;
        let sd = (col.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / d as f64).sqrt();
        for i in 0..d {
            out[i * h + j] = (mu + sd * rng.normal()) as f32;
        }
    }
    let t = candle_core::Tensor::from_vec(out, (d, h), &candle_core::Device::Cpu)?;
    let stem = file
        .with_extension("")
        .to_string_lossy()
        .replace(['/', '\\', '.'], "_");
    let path = runs_dir.join(format!(
        "lodo-random-{}.safetensors",
        stem.trim_matches('_')
    ));
    std::fs::create_dir_all(runs_dir)
        .with_context(|| format!("cannot create {}", runs_dir.display()))?;
    let bytes = safetensors::serialize([("domain_embeddings", &t)], None)
        .context("serialising the random control")?;
    // Rewritten only when different, so an unchanged control keeps its stamp.
    if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
        write_atomic(&path, &bytes)?;
    }
    Ok(path)
}

/// `<out>.svg`: the table just written, as paired differences against `none`
/// per held-out domain (when the study has `none` and another arm).
fn draw(base: &Config, recipe: &str, plan: &LodoPlan) -> Result<()> {
    if !plan.arms.contains(&Arm::None) || plan.arms.len() < 2 {
        return Ok(());
    }
    let table = crate::report::read_lodo_csv(&plan.out.with_extension("csv"))?;
    crate::report::lodo_plot(
        &table,
        &format!(
            "Leave-one-domain-out: {} on {recipe}, paired differences against no domain input",
            base.model.label()
        ),
        &plan.out.with_extension("svg"),
    )
}

/// `pipeline lodo`.
#[derive(clap::Args, Debug)]
pub struct LodoArgs {
    #[command(flatten)]
    pub config: crate::config::ConfigArg,
    /// Folds over the domains: 0 holds out each domain alone; k puts domain i in
    /// fold i mod k.
    #[arg(long, default_value_t = 0)]
    pub folds: usize,
    /// Seeds.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub seeds: Vec<u64>,
    /// Arms: none (no domain input), id (trainable id embedding), embedding (the
    /// fixed matrix of model.domain_embeddings), adapted (the [embed] method, e.g.
    /// LoRA, trained per fold on the fold's training domains, pooled with [pool]),
    /// random (the control: a fixed random vector per domain with the per-dimension
    /// mean and spread of model.domain_embeddings).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "none,id,embedding,random"
    )]
    pub arms: Vec<Arm>,
    /// Output stem: writes <out>.md, <out>.csv and <out>.svg (the paired
    /// differences against `none` per domain).
    #[arg(long, default_value = "results/lodo")]
    pub out: PathBuf,
}

/// Runs `pipeline lodo` and prints its table.
pub fn command(args: &LodoArgs) -> Result<()> {
    let cfg = Config::load(args.config.config.as_deref())?;
    let plan = LodoPlan {
        folds: args.folds,
        seeds: args.seeds.clone(),
        arms: args.arms.clone(),
        out: args.out.clone(),
    };
    let md = lodo(&cfg, &plan)?;
    println!("{}", std::fs::read_to_string(&md)?);
    println!("wrote {}", md.display());
    Ok(())
}
