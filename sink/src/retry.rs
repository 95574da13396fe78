//! Retry pacing: exponential backoff with jitter, `Retry-After`, and when to give up.
//!
//! Pure: the caller passes the time spent so far and a random number, so every decision is
//! testable without a clock.

use std::time::{Duration, SystemTime};

use chainwatch_config::service::RetryConfig;

/// The longest `Retry-After` honoured: a destination asking for more is asked again after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Retry state for one finding.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    give_up_after: Option<Duration>,
    attempt: u32,
}

impl Backoff {
    /// Fresh state under `config`.
    pub fn new(config: &RetryConfig) -> Self {
        Self {
            initial: config.initial_backoff,
            max: config.max_backoff,
            give_up_after: config.retry_for,
            attempt: 0,
        }
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// After a failed attempt: how long to wait before the next one, or `None` to give up.
    ///
    /// The wait is "equal jitter" over the exponential step (half fixed, half random, so
    /// retries of many sinks spread out but never collapse to zero), capped at `max_backoff`.
    /// A `Retry-After` from the destination is a floor: the wait is never shorter than asked
    /// (up to [`MAX_RETRY_AFTER`]). `elapsed` is the time since the first attempt; once the
    /// next attempt would start after `retry_for`, the finding is given up. `random` is
    /// uniform in [0, 1).
    pub fn next(
        &mut self,
        elapsed: Duration,
        retry_after: Option<Duration>,
        random: f64,
    ) -> Option<Duration> {
        let step = self
            .initial
            .saturating_mul(2u32.saturating_pow(self.attempt.min(30)))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        let jittered = half + half.mul_f64(random.clamp(0.0, 1.0));
        let wait = match retry_after {
            Some(ra) => jittered.max(ra.min(MAX_RETRY_AFTER)),
            None => jittered,
        };
        match self.give_up_after {
            Some(limit) if elapsed.saturating_add(wait) > limit => None,
            _ => Some(wait),
        }
    }
}

/// Reads a `Retry-After` header: delay-seconds or an HTTP-date (relative to `now`). A date in
/// the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(initial_ms: u64, max_ms: u64, retry_for: Option<Duration>) -> RetryConfig {
        RetryConfig {
            initial_backoff: Duration::from_millis(initial_ms),
            max_backoff: Duration::from_millis(max_ms),
            retry_for,
        }
    }

    #[test]
    fn doubles_up_to_the_cap_with_jitter_within_the_step() {
        let mut b = Backoff::new(&policy(100, 1000, None));
        let ms = |d: Option<Duration>| d.unwrap().as_millis();
        // random = 1.0 gives the full step, 0.0 half of it.
        assert_eq!(ms(b.next(Duration::ZERO, None, 1.0)), 100);
        assert_eq!(ms(b.next(Duration::ZERO, None, 1.0)), 200);
        assert_eq!(ms(b.next(Duration::ZERO, None, 0.0)), 200, "half of 400");
        assert_eq!(ms(b.next(Duration::ZERO, None, 1.0)), 800);
        assert_eq!(ms(b.next(Duration::ZERO, None, 1.0)), 1000, "capped");
        for _ in 0..100 {
            let w = b.next(Duration::ZERO, None, 0.5).unwrap();
            assert!(w >= Duration::from_millis(500) && w <= Duration::from_millis(1000));
        }
        assert_eq!(b.attempts(), 105);
    }

    #[test]
    fn retry_after_is_a_floor_up_to_an_hour() {
        let mut b = Backoff::new(&policy(100, 1000, None));
        let w = b.next(Duration::ZERO, Some(Duration::from_secs(7)), 0.0);
        assert_eq!(w, Some(Duration::from_secs(7)));
        let w = b.next(Duration::ZERO, Some(Duration::from_millis(1)), 1.0);
        assert_eq!(
            w,
            Some(Duration::from_millis(200)),
            "a short Retry-After does not hurry us"
        );
        let w = b.next(Duration::ZERO, Some(Duration::from_secs(86400)), 0.0);
        assert_eq!(w, Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn gives_up_only_when_the_next_attempt_would_pass_the_limit() {
        let mut b = Backoff::new(&policy(100, 100, Some(Duration::from_secs(1))));
        assert!(b.next(Duration::from_millis(800), None, 1.0).is_some());
        assert!(b.next(Duration::from_millis(950), None, 1.0).is_none());
        let mut forever = Backoff::new(&policy(100, 100, None));
        assert!(
            forever
                .next(Duration::from_secs(86400 * 365), None, 1.0)
                .is_some()
        );
    }

    #[test]
    fn reads_both_retry_after_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
