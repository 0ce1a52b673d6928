//! Statistics for comparing runs: mean and standard deviation, Kendall's tau, the paired t-test.

/// Mean and sample standard deviation (0 for fewer than two values).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// Kendall's tau-b of paired samples (ties in either variable handled as scipy does); NaN
/// for fewer than two pairs or a constant variable.
pub fn kendall_tau(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len());
    let (mut concordant, mut discordant, mut tie_x, mut tie_y) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..x.len() {
        for j in i + 1..x.len() {
            let dx = x[i] - x[j];
            let dy = y[i] - y[j];
            if dx == 0.0 && dy == 0.0 {
                continue;
            } else if dx == 0.0 {
                tie_x += 1;
            } else if dy == 0.0 {
                tie_y += 1;
            } else if (dx > 0.0) == (dy > 0.0) {
                concordant += 1;
            } else {
                discordant += 1;
            }
        }
    }
    let n0 = (concordant + discordant + tie_x) as f64;
    let n1 = (concordant + discordant + tie_y) as f64;
    if n0 == 0.0 || n1 == 0.0 {
        return f64::NAN;
    }
    (concordant - discordant) as f64 / (n0 * n1).sqrt()
}

/// A paired comparison of two sets of runs (run i of each under the same seed).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Paired {
    /// The mean of the differences a - b.
    pub diff: f64,
    /// Student's t of the differences (infinite where they are all equal and not zero).
    pub t: f64,
    /// The two-sided p-value of t with n - 1 degrees of freedom; NaN where every difference is
    /// zero (as scipy's `ttest_rel`).
    pub p: f64,
}

/// Student's paired t-test of `a` against `b`, two-sided, as scipy's `ttest_rel`. Pairing by
/// seed is what makes small differences visible: runs of one seed share their initial weights,
/// data order and augmentation draws, so only the loss differs. `None` for fewer than two pairs.
pub fn paired_t(a: &[f64], b: &[f64]) -> Option<Paired> {
    assert_eq!(a.len(), b.len());
    if a.len() < 2 {
        return None;
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let (diff, sd) = mean_std(&d);
    let df = (d.len() - 1) as f64;
    let t = diff / (sd / (d.len() as f64).sqrt());
    // P(|T| > t) = I_{df / (df + t^2)}(df / 2, 1 / 2).
    let p = if t.is_nan() { f64::NAN } else { beta_inc(df / 2.0, 0.5, df / (df + t * t)) };
    Some(Paired { diff, t, p })
}

/// The regularized incomplete beta function I_x(a, b), by its continued fraction (Lentz's
/// method) on the side of x where it converges fast.
fn beta_inc(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

/// The continued fraction of I_x(a, b) (Numerical Recipes' `betacf`).
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let nonzero = |v: f64| if v.abs() < TINY { TINY } else { v };
    let mut c = 1.0;
    let mut d = 1.0 / nonzero(1.0 - (a + b) * x / (a + 1.0));
    let mut h = d;
    for m in 1..1000 {
        let m = m as f64;
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        d = 1.0 / nonzero(1.0 + even * d);
        c = nonzero(1.0 + even / c);
        h *= d * c;
        let odd = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        d = 1.0 / nonzero(1.0 + odd * d);
        c = nonzero(1.0 + odd / c);
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x >= 1/2 (Lanczos, g = 7, 9 terms: about 15 digits).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
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
    let x = x - 1.0;
    let sum = G[1..].iter().enumerate().fold(G[0], |s, (i, g)| s + g / (x + i as f64 + 1.0));
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}
