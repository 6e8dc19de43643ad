//! Statistics of paired comparisons: the smallest difference a paired design
//! could detect.

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
}
