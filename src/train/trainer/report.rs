//! A run's `report.md`.

use super::{EpochMetrics, FinalMetrics};

fn fmt(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.4}"))
}

pub fn report_md(m: &FinalMetrics, history: &[EpochMetrics]) -> String {
    let mut s = format!(
        "# {} on {} (seed {})\n\nBest valid epoch {} of {} (valid AUC {}).\n\n| test metric | value |\n| --- | --- |\n| AUC | {} |\n| logloss | {:.4} |\n| weighted domain AUC | {} |\n| AUC of the 7 smallest domains (mean) | {} |\n",
        m.model,
        m.recipe,
        m.seed,
        m.best_epoch,
        m.epochs_run,
        fmt(m.valid_auc),
        fmt(m.test.auc),
        m.test.logloss,
        fmt(m.test.weighted_domain_auc),
        fmt(m.tail_auc)
    );
    if !m.unseen_domains.is_empty() {
        s.push_str(&format!(
            "| AUC of the held-out (unseen) domains {} | {} |\n",
            m.unseen_domains.join(", "),
            fmt(m.unseen_auc)
        ));
    }
    s.push('\n');
    s.push_str("| domain | test rows | AUC |\n| --- | --- | --- |\n");
    for d in &m.test.domains {
        s.push_str(&format!("| {} | {} | {} |\n", d.domain, d.rows, fmt(d.auc)));
    }
    s.push_str("\n| epoch | train loss | valid AUC | valid logloss | seconds |\n| --- | --- | --- | --- | --- |\n");
    for e in history {
        s.push_str(&format!(
            "| {} | {:.4} | {} | {:.4} | {:.1} |\n",
            e.epoch,
            e.train_loss,
            fmt(e.valid_auc),
            e.valid_logloss,
            e.seconds
        ));
    }
    s
}
