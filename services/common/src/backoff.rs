//! Deterministic exponential backoff: `initial * 2^attempt`, capped at `max`, no jitter.
//!
//! Jitter-free on purpose: the schedule is predictable in tests and in logs. The callers retry
//! against one peer each, so there is no thundering herd to spread.

use std::time::Duration;

/// An exponential backoff schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
}

impl Backoff {
    /// A schedule starting at `initial` and never exceeding `max` (`max` is raised to
    /// `initial` if it is smaller).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
        }
    }

    /// The delay after failed attempt number `attempt` (0-based): `initial * 2^attempt`, capped.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.checked_pow(attempt).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The first `n` delays of the schedule.
    pub fn schedule(&self, n: u32) -> Vec<Duration> {
        (0..n).map(|a| self.delay(a)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn doubles_until_the_cap() {
        let b = Backoff::new(ms(200), ms(2_000));
        assert_eq!(
            b.schedule(6),
            vec![ms(200), ms(400), ms(800), ms(1_600), ms(2_000), ms(2_000)]
        );
    }

    #[test]
    fn huge_attempt_numbers_saturate_at_the_cap() {
        let b = Backoff::new(ms(100), ms(5_000));
        assert_eq!(b.delay(31), ms(5_000));
        assert_eq!(b.delay(32), ms(5_000));
        assert_eq!(b.delay(u32::MAX), ms(5_000));
        let big = Backoff::new(Duration::from_secs(u64::MAX / 2), Duration::MAX);
        assert_eq!(big.delay(3), Duration::MAX);
    }

    #[test]
    fn max_below_initial_is_raised() {
        let b = Backoff::new(ms(500), ms(100));
        assert_eq!(b.max, ms(500));
        assert_eq!(b.schedule(3), vec![ms(500); 3]);
    }

    #[test]
    fn zero_initial_stays_zero() {
        let b = Backoff::new(Duration::ZERO, ms(10));
        assert_eq!(b.schedule(3), vec![Duration::ZERO; 3]);
    }

    #[test]
    fn schedule_is_deterministic() {
        let b = Backoff::new(ms(7), ms(1_000));
        assert_eq!(b.schedule(10), b.schedule(10));
    }
}
