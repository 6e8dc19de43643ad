//! The statistics every table uses: means and standard deviations, medians,
//! paired comparisons (the sign-flip test, the paired t-test) and the smallest
//! difference a paired design could detect.

use crate::nn::rng::Rng;

/// Two-sided 5% and one-sided 80% quantiles of Student's t with 1..=30
/// degrees of freedom (standard tables, three decimals).
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];
const T80: [f64; 30] = [
    1.376, 1.061, 0.978, 0.941, 0.920, 0.906, 0.896, 0.889, 0.883, 0.879, 0.876, 0.873, 0.870,
    0.868, 0.866, 0.865, 0.863, 0.862, 0.861, 0.860, 0.859, 0.858, 0.858, 0.857, 0.856, 0.856,
    0.855, 0.855, 0.854, 0.854,
];

/// Student's t quantile for `df` degrees of freedom at 0.975 (`upper` = true)
/// or 0.80; beyond 30 the Cornish-Fisher expansion of the normal quantile.
pub fn t_quantile(df: usize, upper: bool) -> f64 {
    let table = if upper { &T975 } else { &T80 };
    if (1..=30).contains(&df) {
        return table[df - 1];
    }
    let z: f64 = if upper { 1.959_964 } else { 0.841_621 };
    let n = df.max(1) as f64;
    z + (z.powi(3) + z) / (4.0 * n)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * n * n)
}

/// Mean and sample standard deviation (None for an empty slice; sd 0 for one value).
pub fn mean_sd(v: &[f64]) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    Some((m, sd))
}

/// Mean (None for an empty slice).
pub fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// [`mean_sd`] of the values that are there (runs without a figure left out).
pub fn mean_sd_defined(v: &[Option<f64>]) -> Option<(f64, f64)> {
    mean_sd(&v.iter().flatten().copied().collect::<Vec<_>>())
}

/// [`mean_sd`] of the finite values of `v`.
pub fn mean_sd_finite(v: &[f64]) -> Option<(f64, f64)> {
    mean_sd(
        &v.iter()
            .copied()
            .filter(|x| x.is_finite())
            .collect::<Vec<_>>(),
    )
}

/// Median: the middle value, or the mean of the two middle values of an even
/// count (None for an empty slice).
pub fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Up to this many differences the sign-flip test enumerates every pattern.
pub const SIGN_FLIP_EXACT_MAX: usize = 20;

/// Paired differences `d`: the sign count (positive, negative) and the
/// two-sided p-value of a sign-flip permutation test of their mean — the share
/// of sign patterns whose |sum| reaches the observed one. Exact (all 2ⁿ
/// patterns) for n ≤ [`SIGN_FLIP_EXACT_MAX`]; beyond, `draws` random patterns
/// from `seed`, the observed one counted as one more.
pub fn sign_flip_test(d: &[f64], draws: usize, seed: u64) -> (usize, usize, Option<f64>) {
    let pos = d.iter().filter(|&&x| x > 0.0).count();
    let neg = d.iter().filter(|&&x| x < 0.0).count();
    if d.is_empty() {
        return (pos, neg, None);
    }
    let observed = d.iter().sum::<f64>().abs() - 1e-12;
    if d.len() <= SIGN_FLIP_EXACT_MAX {
        let patterns = 1u64 << d.len();
        let hits = (0..patterns)
            .filter(|mask| {
                let s: f64 = d
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| if mask >> i & 1 == 1 { -x } else { x })
                    .sum();
                s.abs() >= observed
            })
            .count();
        return (pos, neg, Some(hits as f64 / patterns as f64));
    }
    let mut rng = Rng::new(seed);
    let mut hits = 1usize;
    for _ in 0..draws {
        let s: f64 = d
            .iter()
            .map(|&x| if rng.uniform() < 0.5 { -x } else { x })
            .sum();
        if s.abs() >= observed {
            hits += 1;
        }
    }
    (pos, neg, Some(hits as f64 / (draws + 1) as f64))
}

/// The minimum detectable effect of a paired design with differences `d`: the
/// true mean difference a two-sided paired t-test at 5% would detect with 80%
/// power, given the observed spread, (t₀.₉₇₅ + t₀.₈₀)·sd/√n with n − 1
/// degrees of freedom. None with fewer than two differences.
pub fn detectable(d: &[f64]) -> Option<f64> {
    if d.len() < 2 {
        return None;
    }
    let (_, sd) = mean_sd(d)?;
    let df = d.len() - 1;
    Some((t_quantile(df, true) + t_quantile(df, false)) * sd / (d.len() as f64).sqrt())
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms; relative error below 1e-13).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularised incomplete beta function I_x(a, b) (continued fraction,
/// modified Lentz).
fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // The fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry otherwise.
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - incomplete_beta(1.0 - x, b, a);
    }
    let tiny = 1e-300;
    let (mut c, mut d) = (1.0, 1.0 - (a + b) * x / (a + 1.0));
    if d.abs() < tiny {
        d = tiny;
    }
    d = 1.0 / d;
    let mut f = d;
    for m in 1..300 {
        let m = m as f64;
        for num in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + num * d;
            if d.abs() < tiny {
                d = tiny;
            }
            c = 1.0 + num / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            f *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    front * f / a
}

/// Two-sided p-value of the paired t-test that the mean of `d` is 0 (None
/// with fewer than two differences; 0 when they are equal and not 0).
pub fn paired_t_p(d: &[f64]) -> Option<f64> {
    if d.len() < 2 {
        return None;
    }
    let (m, sd) = mean_sd(d)?;
    let df = (d.len() - 1) as f64;
    if sd == 0.0 {
        return Some(if m == 0.0 { 1.0 } else { 0.0 });
    }
    let t = m / (sd / (d.len() as f64).sqrt());
    Some(incomplete_beta(df / (df + t * t), df / 2.0, 0.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detectable_effect_of_a_paired_design() {
        // Five differences with sd 1: (2.776 + 0.941) / sqrt(5).
        let d = [-1.0, -0.5, 0.0, 0.5, 1.0];
        let sd = mean_sd(&d).unwrap().1;
        assert!((sd - 0.790_569).abs() < 1e-6);
        let m = detectable(&d).unwrap();
        assert!((m - 3.717 * sd / 5f64.sqrt()).abs() < 1e-9, "{m}");
        assert_eq!(detectable(&[1.0]), None);
        // Past the table the expansion joins it smoothly.
        assert!((t_quantile(31, true) - 2.040).abs() < 0.002);
        assert!((t_quantile(31, false) - 0.853).abs() < 0.002);
        assert!((t_quantile(1000, true) - 1.962).abs() < 0.001);
    }

    #[test]
    fn paired_t_p_values_match_the_t_table() {
        // A t statistic at the table's 0.975 quantile has p = 0.05.
        for (df, t) in [(2usize, 4.303), (5, 2.571), (10, 2.228), (29, 2.045)] {
            let n = df + 1;
            // Differences with mean t·sd/√n and sd 1.
            let mut d: Vec<f64> = (0..n)
                .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
                .collect();
            let (m0, sd0) = mean_sd(&d).unwrap();
            for x in &mut d {
                *x = (*x - m0) / sd0 + t / (n as f64).sqrt();
            }
            let p = paired_t_p(&d).unwrap();
            assert!((p - 0.05).abs() < 5e-4, "df {df}: p {p}");
        }
        assert!(paired_t_p(&[0.1, 0.1, 0.1]).unwrap() < 1e-12);
        assert_eq!(paired_t_p(&[0.1]), None);
        assert!((paired_t_p(&[1.0, -1.0, 0.5, -0.5]).unwrap() - 1.0).abs() < 1e-12);
    }
}

#[cfg(test)]
mod sign_flip {
    use super::*;

    #[test]
    fn exact_for_few_differences() {
        // Eight equal positive differences: only the all-positive and the
        // all-negative patterns reach the observed |sum|: p = 2/256 exactly.
        assert_eq!(
            sign_flip_test(&[0.1; 8], 20_000, 1),
            (8, 0, Some(2.0 / 256.0))
        );
        // No draws are made: the seed and the draw count change nothing.
        assert_eq!(sign_flip_test(&[0.1; 8], 10, 99), (8, 0, Some(2.0 / 256.0)));
        // Symmetric differences: every pattern reaches |sum| = 0 or more.
        assert_eq!(
            sign_flip_test(&[0.1, -0.1, 0.2, -0.2], 5_000, 1).2,
            Some(1.0)
        );
        // 3 seeds all favouring one arm: 2 of 8 patterns, p = 0.25.
        assert_eq!(sign_flip_test(&[0.01, 0.02, 0.03], 1, 1).2, Some(0.25));
        // [1, 2, 3, -0.5]: |sum| 5.5 is reached by the observed pattern, its
        // mirror, and (1, 2, 3, +0.5) and its mirror (6.5): 4 of 16.
        assert_eq!(
            sign_flip_test(&[1.0, 2.0, 3.0, -0.5], 1, 1),
            (3, 1, Some(0.25))
        );
        assert_eq!(sign_flip_test(&[], 10, 1).2, None);
    }

    #[test]
    fn seeded_monte_carlo_beyond_the_exact_range() {
        let d: Vec<f64> = (0..SIGN_FLIP_EXACT_MAX + 5)
            .map(|i| 0.1 + i as f64 * 0.01)
            .collect();
        let (up, down, p) = sign_flip_test(&d, 2_000, 7);
        assert_eq!((up, down), (d.len(), 0));
        // Every difference positive: no random pattern reaches the sum, p = 1/(draws + 1).
        assert_eq!(p, Some(1.0 / 2_001.0));
        // Mixed signs: the same seed gives the same p; another seed, a close one.
        let m: Vec<f64> = d
            .iter()
            .enumerate()
            .map(|(i, x)| if i % 3 == 0 { -x } else { *x })
            .collect();
        let a = sign_flip_test(&m, 4_000, 7).2.unwrap();
        assert_eq!(Some(a), sign_flip_test(&m, 4_000, 7).2);
        let b = sign_flip_test(&m, 4_000, 8).2.unwrap();
        assert!(a > 0.0 && a < 1.0 && (a - b).abs() < 0.05, "{a} {b}");
    }

    #[test]
    fn means_and_medians() {
        assert_eq!(mean(&[]), None);
        assert_eq!(mean(&[1.0, 2.0, 6.0]), Some(3.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(
            mean_sd_defined(&[Some(1.0), None, Some(3.0)]),
            mean_sd(&[1.0, 3.0])
        );
        assert_eq!(mean_sd_finite(&[1.0, f64::NAN, 3.0]), mean_sd(&[1.0, 3.0]));
    }
}
