//! Exponential backoff with full jitter.

use std::time::Duration;

use rand::RngExt;

/// Reconnect delay policy: exponential growth, capped, with full jitter.
///
/// After the `n`-th consecutive failure (n ≥ 1) the delay is drawn uniformly
/// from `[0, min(cap, base × factor^(n-1))]`. The cap is applied *before* the
/// jitter, so clients that have all reached the cap still spread out instead
/// of retrying in lockstep. Computed in floating point, so thousands of
/// attempts neither overflow nor panic.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Upper bound of the first delay.
    pub base: Duration,
    /// Growth factor per consecutive failure (values below 1 are treated as 1).
    pub factor: f64,
    /// Largest upper bound a delay can have.
    pub cap: Duration,
    /// Stop with [`Error::RetriesExhausted`](crate::Error::RetriesExhausted) after
    /// this many consecutive failures; `None` retries forever.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_millis(500), factor: 2.0, cap: Duration::from_secs(20), max_attempts: None }
    }
}

impl Backoff {
    /// The upper bound of the delay after `failures` consecutive failures.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(1024) as i32;
        let factor = if self.factor.is_finite() { self.factor.max(1.0) } else { 1.0 };
        let grown = self.base.as_secs_f64() * factor.powi(exp);
        let cap = self.cap.as_secs_f64();
        let secs = if grown.is_finite() { grown.min(cap) } else { cap };
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// A delay for `failures` consecutive failures, drawn with full jitter.
    pub fn delay(&self, failures: u32, rng: &mut impl rand::Rng) -> Duration {
        let ceiling = self.ceiling(failures);
        if ceiling.is_zero() {
            return ceiling;
        }
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn ceiling_grows_exponentially_then_caps() {
        let b = Backoff::default();
        assert_eq!(b.ceiling(1), Duration::from_millis(500));
        assert_eq!(b.ceiling(2), Duration::from_millis(1000));
        assert_eq!(b.ceiling(4), Duration::from_millis(4000));
        assert_eq!(b.ceiling(7), Duration::from_secs(20));
    }

    #[test]
    fn thousands_of_attempts_neither_overflow_nor_lose_jitter() {
        let b = Backoff::default();
        let mut rng = SmallRng::seed_from_u64(7);
        let delays: Vec<Duration> = (1..=5000).map(|n| b.delay(n, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= b.cap));
        assert_eq!(b.ceiling(u32::MAX), b.cap);
        // At the cap the delay is still spread over [0, cap]: look at the spread
        // of the last thousand draws.
        let tail = &delays[4000..];
        let below_half = tail.iter().filter(|d| **d < b.cap / 2).count();
        assert!((350..650).contains(&below_half), "jitter collapsed: {below_half} of 1000 below cap/2");
    }

    #[test]
    fn hostile_factor_values_do_not_panic() {
        for factor in [f64::NAN, f64::INFINITY, -3.0, 0.0, 1e308] {
            let b = Backoff { factor, ..Backoff::default() };
            let mut rng = SmallRng::seed_from_u64(1);
            for n in [0, 1, 2, 100, u32::MAX] {
                assert!(b.delay(n, &mut rng) <= b.cap);
            }
        }
    }
}
