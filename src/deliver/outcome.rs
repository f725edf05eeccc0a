//! The one place that decides what an attempt's result means: delivered, retry after a
//! delay, or dead. Only a status in the destination's success set is a delivery (by
//! default exactly 200 and 202); everything else — other 2xx, redirects, 4xx, 5xx,
//! timeouts, refused or reset connections — is a failed attempt.

use std::time::Duration;

use crate::config::{Destination, RetryPolicy, StatusAction};
use crate::store::AttemptRecord;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Retry {
        after: Duration,
    },
    Dead {
        reason: String,
    },
    /// The destination said it is gone: pause it; this delivery waits for the resume.
    PauseDestination {
        reason: String,
    },
}

/// `attempt` is the 1-based number of the attempt just made; `now` and `created_at` are
/// Unix milliseconds; `retry_after` is the response's Retry-After, if it had one.
pub fn decide(
    destination: &Destination,
    record: &AttemptRecord,
    retry_after: Option<Duration>,
    permanent: bool,
    attempt: u32,
    now: i64,
    created_at: i64,
) -> Outcome {
    if record.status.is_some_and(|s| destination.is_success(s)) {
        return Outcome::Delivered;
    }
    if permanent {
        return Outcome::Dead { reason: record.summary() };
    }
    let last = record.summary();
    match record.status.map(|s| destination.on_status.action(s)) {
        Some(StatusAction::Dead) => return Outcome::Dead { reason: format!("{last}: on_status says dead") },
        Some(StatusAction::Pause) => {
            return Outcome::PauseDestination { reason: format!("{last}: on_status says pause") };
        }
        Some(StatusAction::Retry) | None => {}
    }
    let policy = &destination.retry;
    if attempt >= policy.max_attempts {
        return Outcome::Dead { reason: format!("gave up after {attempt} attempts; last: {last}") };
    }
    let after = match (record.status, retry_after) {
        (Some(429 | 503), Some(asked)) => asked.min(policy.max_backoff),
        _ => backoff(policy, attempt),
    };
    let deadline = created_at.saturating_add(policy.deadline.as_millis() as i64);
    if now.saturating_add(after.as_millis() as i64) > deadline {
        return Outcome::Dead {
            reason: format!(
                "deadline of {} passed after {attempt} attempts; last: {last}",
                humantime::format_duration(policy.deadline)
            ),
        };
    }
    Outcome::Retry { after }
}

/// Exponential backoff with full jitter: the delay after attempt n is uniform between
/// `initial_backoff` and `min(max_backoff, initial_backoff · 2^(n-1))`. Jitter keeps a
/// destination that comes back from being hit by every delivery at the same instant.
pub fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let initial = policy.initial_backoff;
    let ceiling = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(30)).min(policy.max_backoff);
    let spread = ceiling.saturating_sub(initial).as_millis() as u64;
    initial + Duration::from_millis(fastrand::u64(0..=spread))
}

/// Retry-After as delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(max_attempts: u32) -> Destination {
        crate::deliver::testing::destination("http://127.0.0.1/", None, max_attempts)
    }

    fn status(code: u16) -> AttemptRecord {
        AttemptRecord {
            started_at: 0,
            latency: Duration::ZERO,
            status: Some(code),
            error: None,
            response_prefix: vec![],
        }
    }

    #[test]
    fn only_the_success_set_delivers() {
        let d = destination(5);
        assert_eq!(decide(&d, &status(200), None, false, 1, 0, 0), Outcome::Delivered);
        assert_eq!(decide(&d, &status(202), None, false, 1, 0, 0), Outcome::Delivered);
        for code in [201, 204, 301, 302, 401, 403, 404, 429, 500, 502, 503, 504] {
            assert!(matches!(decide(&d, &status(code), None, false, 1, 0, 0), Outcome::Retry { .. }), "{code}");
        }
        // What can never succeed as it is does not burn the retry budget.
        for code in [400, 413, 422] {
            let outcome = decide(&d, &status(code), None, false, 1, 0, 0);
            assert_eq!(outcome, Outcome::Dead { reason: format!("HTTP {code}: on_status says dead") });
        }
        assert!(matches!(decide(&d, &status(410), None, false, 1, 0, 0), Outcome::PauseDestination { .. }));
        let timeout = AttemptRecord { status: None, error: Some("timeout".into()), ..status(0) };
        assert!(matches!(decide(&d, &timeout, None, false, 1, 0, 0), Outcome::Retry { .. }));
    }

    #[test]
    fn dead_after_max_attempts_or_deadline() {
        let d = destination(3);
        assert!(matches!(decide(&d, &status(500), None, false, 3, 0, 0), Outcome::Dead { .. }));
        let an_hour = 3_600_000;
        assert!(matches!(decide(&d, &status(500), None, false, 1, an_hour - 10, 0), Outcome::Dead { .. }));
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_503_only_and_capped() {
        let d = destination(5);
        let asked = Some(Duration::from_secs(7));
        assert_eq!(decide(&d, &status(429), asked, false, 1, 0, 0), Outcome::Retry { after: Duration::from_secs(7) });
        assert_eq!(decide(&d, &status(503), asked, false, 1, 0, 0), Outcome::Retry { after: Duration::from_secs(7) });
        let long = Some(Duration::from_secs(600));
        assert_eq!(decide(&d, &status(429), long, false, 1, 0, 0), Outcome::Retry { after: Duration::from_secs(60) });
        // Elsewhere it is the backoff: attempt 1 waits exactly initial_backoff.
        assert_eq!(decide(&d, &status(500), asked, false, 1, 0, 0), Outcome::Retry { after: Duration::from_secs(1) });
    }

    #[test]
    fn backoff_grows_within_bounds() {
        let policy = destination(20).retry;
        for attempt in 1..20 {
            let ceiling = Duration::from_secs(1u64 << (attempt - 1).min(10)).min(policy.max_backoff);
            for _ in 0..50 {
                let b = backoff(&policy, attempt);
                assert!(b >= policy.initial_backoff && b <= ceiling, "attempt {attempt}: {b:?}");
            }
        }
    }

    #[test]
    fn retry_after_formats() {
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        let parsed = parse_retry_after(&soon).unwrap();
        assert!(parsed > Duration::from_secs(28) && parsed <= Duration::from_secs(30), "{parsed:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }
}
