//! Evaluation metrics: AUC (rank-based, ties get the average rank), logloss, AUC
//! per domain (null when a domain's rows have one class), and their row-weighted
//! mean.

use serde::{Deserialize, Serialize};

/// Area under the ROC curve, Mann–Whitney form with average ranks for ties.
/// None when the labels have one class only.
pub fn auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    let n = scores.len();
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0; // ranks i+1 ..= j+1
        for &k in &idx[i..=j] {
            if labels[k] > 0.5 {
                rank_sum_pos += avg;
            }
        }
        i = j + 1;
    }
    let pos = labels.iter().filter(|&&y| y > 0.5).count() as f64;
    let neg = n as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    Some((rank_sum_pos - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

/// Mean binary cross-entropy of probabilities clipped to [1e-7, 1 − 1e-7].
pub fn logloss(probs: &[f32], labels: &[f32]) -> f64 {
    let s: f64 = probs
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = (p as f64).clamp(1e-7, 1.0 - 1e-7);
            if y > 0.5 { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    s / probs.len().max(1) as f64
}

/// Group AUC: the AUC of each group's rows (a user's, for GAUC), over the groups
/// with both classes, weighted by their rows. Group 0 is an id unseen in
/// training (every cold user at once), not a group, and is left out. None when
/// no group has both classes.
pub fn gauc(scores: &[f32], labels: &[f32], groups: &[u32]) -> Option<f64> {
    let mut by: std::collections::BTreeMap<u32, (Vec<f32>, Vec<f32>)> = Default::default();
    for ((&p, &y), &g) in scores.iter().zip(labels).zip(groups) {
        if g == 0 {
            continue;
        }
        let e = by.entry(g).or_default();
        e.0.push(p);
        e.1.push(y);
    }
    let (mut num, mut den) = (0.0, 0.0);
    for (p, y) in by.values() {
        if let Some(a) = auc(p, y) {
            num += a * p.len() as f64;
            den += p.len() as f64;
        }
    }
    (den > 0.0).then(|| num / den)
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DomainAuc {
    pub domain: String,
    pub rows: usize,
    pub auc: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub auc: Option<f64>,
    pub logloss: f64,
    pub rows: usize,
    pub domains: Vec<DomainAuc>,
    /// Mean of the defined per-domain AUCs weighted by their rows.
    pub weighted_domain_auc: Option<f64>,
}

/// Overall and per-domain metrics. `probs`, `labels`, `domains` are aligned.
pub fn report(probs: &[f32], labels: &[f32], domains: &[u32], names: &[String]) -> Report {
    let mut per: Vec<(Vec<f32>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); names.len()];
    for ((&p, &y), &d) in probs.iter().zip(labels).zip(domains) {
        per[d as usize].0.push(p);
        per[d as usize].1.push(y);
    }
    let doms: Vec<DomainAuc> = per
        .iter()
        .zip(names)
        .map(|((p, y), n)| DomainAuc {
            domain: n.clone(),
            rows: p.len(),
            auc: auc(p, y),
        })
        .collect();
    Report {
        auc: auc(probs, labels),
        logloss: logloss(probs, labels),
        rows: probs.len(),
        weighted_domain_auc: weighted_auc(&doms),
        domains: doms,
    }
}

/// The mean of the defined per-domain AUCs weighted by their rows; `None` when
/// no domain has one.
pub fn weighted_auc<'a>(domains: impl IntoIterator<Item = &'a DomainAuc>) -> Option<f64> {
    let (mut num, mut den) = (0.0, 0.0);
    for d in domains {
        if let Some(a) = d.auc {
            num += a * d.rows as f64;
            den += d.rows as f64;
        }
    }
    (den > 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_by_hand_with_ties() {
        // Scores 0.1(−) 0.4(+) 0.4(−) 0.8(+): pairs (+,−): (0.4,0.1)=1, (0.4,0.4)=½,
        // (0.8,0.1)=1, (0.8,0.4)=1 → 3.5 / 4.
        let a = auc(&[0.1, 0.4, 0.4, 0.8], &[0., 1., 0., 1.]).unwrap();
        assert!((a - 0.875).abs() < 1e-12);
        assert_eq!(auc(&[0.2, 0.3], &[1., 1.]), None);
        assert!((auc(&[0.5; 6], &[0., 1., 0., 1., 1., 0.]).unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn gauc_by_hand() {
        // User 1: (0.9+, 0.2−, 0.5−) → AUC 1, 3 rows; user 2: (0.3+, 0.6−) → 0,
        // 2 rows; user 3: one class → left out; id 0 (unseen users) left out.
        // (1·3 + 0·2) / 5.
        let g = gauc(
            &[0.9, 0.2, 0.5, 0.3, 0.6, 0.7, 0.1, 0.8],
            &[1., 0., 0., 1., 0., 1., 1., 0.],
            &[1, 1, 1, 2, 2, 3, 0, 0],
        );
        assert_eq!(g, Some(0.6));
        assert_eq!(gauc(&[0.1, 0.2], &[1., 1.], &[1, 2]), None);
    }

    #[test]
    fn logloss_and_domains() {
        let l = logloss(&[0.5, 0.9], &[1.0, 0.0]);
        assert!((l - (2f64.ln() + 10f64.ln()) / 2.0).abs() < 1e-6);
        let names = vec!["a".to_string(), "b".to_string()];
        let r = report(
            &[0.9, 0.1, 0.3, 0.6],
            &[1., 0., 1., 1.],
            &[0, 0, 1, 1],
            &names,
        );
        assert_eq!(r.domains[0].auc, Some(1.0));
        assert_eq!(r.domains[1].auc, None, "one class → null, not NaN");
        assert_eq!(r.weighted_domain_auc, Some(1.0));
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"auc\":null"));
    }
}
