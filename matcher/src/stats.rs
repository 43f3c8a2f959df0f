//! Intervals for error rates measured by counting, shared by the matcher's benchmark and the
//! simulator's verdict.

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// The 95% Wilson score interval of `k` events in `n` trials (`(0, 1)` when `n` is 0). Unlike
/// the normal approximation it stays inside [0, 1] and is honest at small counts, which is
/// where error rates live: 0 of 1,000 gives [0, 0.38%], 1 of 1,000 [0.018%, 0.56%].
pub fn wilson(k: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_intervals_match_published_values() {
        // Newcombe (1998), table I: 0/10 → [0, 0.2775]; 1/10 → [0.0179, 0.4042];
        // 81/263 → [0.2553, 0.3662].
        let close = |(a, b): (f64, f64), (c, d): (f64, f64)| {
            assert!((a - c).abs() < 5e-4 && (b - d).abs() < 5e-4, "{a} {b}")
        };
        close(wilson(0, 10), (0.0, 0.2775));
        close(wilson(1, 10), (0.0179, 0.4042));
        close(wilson(81, 263), (0.2553, 0.3662));
        assert_eq!(wilson(0, 0), (0.0, 1.0));
    }
}
