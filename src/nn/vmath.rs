//! exp, sigmoid, SwiGLU and softmax rows in a form the compiler vectorises, run
//! with the widest vector instructions the CPU has (AVX-512, else AVX2, picked
//! at run time).
//!
//! The C library's `expf` is a scalar call: in the decoder's training step it
//! cost more than the attention products. [`exp`] is a branch-free polynomial
//! (Cody–Waite range reduction, degree-5 polynomial, the exponent put in by bit
//! arithmetic) that stays within 2 ulp of the exact value on the range used here. It
//! uses no fused multiply-add and every sum is taken in a fixed order of 16
//! partial sums, so results do not depend on the vector width: machines with
//! and without AVX-512 get the same bits.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2²³: adding it rounds a float below 2²² to an integer (to nearest, ties to even).
const ROUND: f32 = 12_582_912.0;
const LANES: usize = 16;

/// eˣ, including the subnormal range; +∞ above ln(f32::MAX) ≈ 88.72, 0 below
/// −103.9; NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Clamped so that n below stays in [−150, 128]; beyond, the result is 0 or ∞
    // either way.
    let x = if x < -104.0 { -104.0 } else { x };
    let x = if x > 88.8 { 88.8 } else { x };
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let ni = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_2e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2ⁿ as two normal powers of two, 2^⌊n/2⌋ · 2^(n − ⌊n/2⌋), so that n = 128
    // (overflow) and n < −126 (subnormal results) round correctly.
    let n1 = ni >> 1;
    let pow = |k: i32| f32::from_bits(((k + 127) << 23) as u32);
    e * pow(n1) * pow(ni - n1)
}

/// 1 / (1 + e⁻ˣ).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Defines `pub fn $name(args)` whose body is compiled three times (AVX-512,
/// AVX2, the build's baseline) and run in the widest form the CPU supports.
macro_rules! wide {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$m])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn v4($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                fn v3($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the feature (checked just above).
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: as above.
                    return unsafe { v3($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// Σ a·b in a fixed order (16 partial sums, then the tail).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Σ a in the order of [`dot`].
#[inline(always)]
fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let ra = ca.remainder();
    for x in ca {
        for l in 0..LANES {
            acc[l] += x[l];
        }
    }
    acc.iter().sum::<f32>() + ra.iter().sum::<f32>()
}

wide! {
    /// act = silu(g) ⊙ u, one row.
    pub fn swiglu(act: &mut [f32], g: &[f32], u: &[f32]) {
        for ((a, &g), &u) in act.iter_mut().zip(g).zip(u) {
            *a = g * sigmoid(g) * u;
        }
    }
}

wide! {
    /// Backward of [`swiglu`] for one row: d(gate), d(up) from d(act).
    pub fn swiglu_bwd(dg: &mut [f32], du: &mut [f32], g: &[f32], u: &[f32], da: &[f32]) {
        for ((((dg, du), &g), &u), &da) in dg.iter_mut().zip(du).zip(g).zip(u).zip(da) {
            let s = sigmoid(g);
            *dg = da * u * s * (1.0 + g * (1.0 - s));
            *du = da * g * s;
        }
    }
}

wide! {
    /// out = h ⊙ 2σ(z): a gate unit's scale applied (PEPNet).
    pub fn gated(out: &mut [f32], h: &[f32], z: &[f32]) {
        for ((o, &h), &z) in out.iter_mut().zip(h).zip(z) {
            *o = 2.0 * h * sigmoid(z);
        }
    }
}

wide! {
    /// Backward of [`gated`]: d(h) = dy·2σ(z), d(z) = dy·h·2σ(z)(1 − σ(z)).
    pub fn gated_bwd(dh: &mut [f32], dz: &mut [f32], h: &[f32], z: &[f32], dy: &[f32]) {
        for ((((dh, dz), &h), &z), &d) in dh.iter_mut().zip(dz).zip(h).zip(z).zip(dy) {
            let s = sigmoid(z);
            *dh = 2.0 * d * s;
            *dz = 2.0 * d * h * s * (1.0 - s);
        }
    }
}

wide! {
    /// softmax(scale·row) in place.
    pub fn softmax(row: &mut [f32], scale: f32) {
        let mut m = f32::NEG_INFINITY;
        for &v in row.iter() {
            let v = v * scale;
            m = if v > m { v } else { m };
        }
        for v in row.iter_mut() {
            *v = exp(*v * scale - m);
        }
        let inv = 1.0 / sum(row);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

wide! {
    /// Softmax backward for one row of probabilities p: d ← scale·p ⊙ (d − Σ p·d).
    pub fn softmax_bwd(d: &mut [f32], p: &[f32], scale: f32) {
        let dot = dot(d, p);
        for (x, &p) in d.iter_mut().zip(p) {
            *x = scale * p * (*x - dot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f64) -> f64 {
        let b32 = b as f32;
        let ulp = (f32::from_bits(b32.to_bits() + 1) - b32).abs() as f64;
        (a as f64 - b).abs() / ulp
    }

    #[test]
    fn exp_within_two_ulp_and_limits() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.7 {
            worst = worst.max(ulps(exp(x), (x as f64).exp()));
            x += 0.001_37;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        // Subnormal results: within one step of the smallest subnormal.
        let mut x = -103.0f32;
        while x < -87.0 {
            let err = (exp(x) as f64 - (x as f64).exp()).abs();
            assert!(err <= 1.5e-45, "exp({x}): error {err}");
            x += 0.01;
        }
        assert_eq!(exp(0.0), 1.0);
        // ln(f32::MAX) = 88.7228…: finite just below, +∞ above.
        assert!(exp(88.72).is_finite() && exp(88.72) > 3.3e38);
        assert!(exp(88.73).is_infinite() && exp(1e30).is_infinite());
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-200.0), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert!((sigmoid(-200.0)).abs() < 1e-30 && sigmoid(200.0) == 1.0);
    }

    #[test]
    fn vector_code_gives_the_scalar_bits() {
        // The dispatched (here: widest) form must round exactly like the scalar
        // formula: no fused multiply-add, no reordering.
        let n = 1000;
        let g: Vec<f32> = (0..n).map(|i| (i as f32 * 0.61).sin() * 12.0).collect();
        let u: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).cos() * 3.0).collect();
        let da: Vec<f32> = (0..n).map(|i| (i as f32 * 0.13).sin()).collect();
        let mut act = vec![0f32; n];
        swiglu(&mut act, &g, &u);
        let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
        swiglu_bwd(&mut dg, &mut du, &g, &u, &da);
        for i in 0..n {
            let s = std::hint::black_box(sigmoid(g[i]));
            assert_eq!(act[i].to_bits(), (g[i] * s * u[i]).to_bits(), "act {i}");
            let want = da[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
            assert_eq!(dg[i].to_bits(), want.to_bits(), "dg {i}");
            assert_eq!(du[i].to_bits(), (da[i] * g[i] * s).to_bits(), "du {i}");
        }
    }

    #[test]
    fn rows_match_the_formulas() {
        let n = 37; // not a multiple of 16: exercises the tails
        let g: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin() * 6.0).collect();
        let u: Vec<f32> = (0..n).map(|i| (i as f32 * 0.3).cos()).collect();
        let da: Vec<f32> = (0..n).map(|i| (i as f32 * 0.9).sin()).collect();
        let sig = |x: f32| 1.0 / (1.0 + (-(x as f64)).exp());
        let mut act = vec![0f32; n];
        swiglu(&mut act, &g, &u);
        let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
        swiglu_bwd(&mut dg, &mut du, &g, &u, &da);
        for i in 0..n {
            let (g, u, da) = (g[i] as f64, u[i] as f64, da[i] as f64);
            let s = sig(g as f32);
            assert!((act[i] as f64 - g * s * u).abs() < 1e-6);
            assert!((dg[i] as f64 - da * u * s * (1.0 + g * (1.0 - s))).abs() < 1e-6);
            assert!((du[i] as f64 - da * g * s).abs() < 1e-6);
        }
        let mut p = g.clone();
        softmax(&mut p, 0.5);
        let z: f64 = g.iter().map(|&v| (0.5 * v as f64).exp()).sum();
        for i in 0..n {
            assert!((p[i] as f64 - (0.5 * g[i] as f64).exp() / z).abs() < 1e-7);
        }
        let mut d = da.clone();
        softmax_bwd(&mut d, &p, 0.5);
        let pd: f64 = p.iter().zip(&da).map(|(&p, &d)| p as f64 * d as f64).sum();
        for i in 0..n {
            let want = 0.5 * p[i] as f64 * (da[i] as f64 - pd);
            assert!((d[i] as f64 - want).abs() < 1e-7);
        }
    }
}
