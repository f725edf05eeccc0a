//! Adaptive pacing of one destination from what it answers. `429`, `503`, `502` and `504`
//! say "too much" about the whole receiver, not one request: each doubles the spacing
//! between this destination's requests (from 50 ms up to 5 s), and a `Retry-After` holds
//! every request until then. Each delivered request halves the spacing, back to none: a
//! receiver that is shedding load gets less, and gets its normal rate back within a few
//! answers once it copes. A destination that was down altogether is the circuit breaker's
//! (`breaker`): the probe that finds it back resets the spacing, and the breaker's own
//! paced drain takes over. The delivery that got the answer keeps its own retry schedule
//! (`outcome`).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const MIN_SPACING: Duration = Duration::from_millis(50);
const MAX_SPACING: Duration = Duration::from_secs(5);
/// Below this the spacing is dropped: the destination is back to full speed.
const NEGLIGIBLE: Duration = Duration::from_millis(10);
/// The longest a `Retry-After` holds the whole destination.
const MAX_HOLD: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
pub struct Slowdown {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    spacing: Duration,
    /// No request before this (a Retry-After, or the reservations of requests waiting).
    next_at: Option<Instant>,
}

impl Slowdown {
    /// Reserves a turn to send: how long to wait before sending.
    pub fn reserve(&self, now: Instant) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.spacing.is_zero() && s.next_at.is_none_or(|at| at <= now) {
            s.next_at = None;
            return Duration::ZERO;
        }
        let at = s.next_at.map_or(now, |at| at.max(now));
        s.next_at = Some(at + s.spacing);
        at - now
    }

    /// When claiming more makes sense again, if not now: reservations already reach past
    /// `now` (those claimed are waiting their turn) or a Retry-After holds.
    pub fn held_until(&self, now: Instant) -> Option<Instant> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.next_at.filter(|&at| at > now)
    }

    /// How many to claim at once, so that none waits longer than `within` for its turn.
    pub fn allowance(&self, wanted: usize, within: Duration) -> usize {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.spacing.is_zero() {
            return wanted;
        }
        let fits = (within.as_millis() / s.spacing.as_millis().max(1)) as usize;
        wanted.min(fits.max(1))
    }

    /// Learns from one answer; returns the new spacing when it changed. A delivered probe
    /// (the circuit breaker found the destination back) resets it.
    pub fn record(
        &self,
        status: Option<u16>,
        delivered: bool,
        probe: bool,
        retry_after: Option<Duration>,
        now: Instant,
    ) -> Option<Duration> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let before = s.spacing;
        if delivered && probe {
            s.spacing = Duration::ZERO;
            s.next_at = None;
        } else if delivered {
            s.spacing /= 2;
            if s.spacing < NEGLIGIBLE {
                s.spacing = Duration::ZERO;
            }
        } else if matches!(status, Some(429 | 502 | 503 | 504)) {
            s.spacing = (s.spacing * 2).clamp(MIN_SPACING, MAX_SPACING);
            if let Some(after) = retry_after {
                let until = now + after.min(MAX_HOLD);
                s.next_at = Some(s.next_at.map_or(until, |at| at.max(until)));
            }
        }
        (s.spacing != before).then_some(s.spacing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_much_slows_the_whole_destination_and_success_recovers_it() {
        let t0 = Instant::now();
        let slow = Slowdown::default();
        assert_eq!(slow.reserve(t0), Duration::ZERO, "a healthy destination never waits");
        assert_eq!(slow.record(Some(500), false, false, None, t0), None, "a 500 is that request's problem");
        assert_eq!(slow.record(Some(429), false, false, None, t0), Some(MIN_SPACING));
        assert_eq!(slow.record(Some(503), false, false, None, t0), Some(MIN_SPACING * 2));
        // Requests now go out 100 ms apart, in turn.
        assert_eq!(slow.reserve(t0), Duration::ZERO);
        assert_eq!(slow.reserve(t0), Duration::from_millis(100));
        assert_eq!(slow.reserve(t0), Duration::from_millis(200));
        assert_eq!(slow.held_until(t0), Some(t0 + Duration::from_millis(300)));
        assert_eq!(slow.allowance(64, Duration::from_secs(1)), 10, "claim no more than can go out in time");
        // A Retry-After holds everything until then.
        slow.record(Some(429), false, false, Some(Duration::from_secs(5)), t0);
        assert_eq!(slow.reserve(t0), Duration::from_secs(5));
        // Success brings the rate back gradually, then entirely.
        let mut spacing = Duration::from_millis(200);
        let mut successes = 0;
        while !spacing.is_zero() {
            spacing = slow.record(Some(200), true, false, None, t0).unwrap();
            successes += 1;
        }
        assert_eq!(successes, 5, "200 ms → 0 by halves");
        assert_eq!(slow.allowance(64, Duration::from_secs(1)), 64);
        for _ in 0..20 {
            slow.record(Some(502), false, false, None, t0);
        }
        assert_eq!(slow.allowance(64, Duration::from_secs(10)), 2, "capped at 5 s apart");
        // The breaker's probe found it back: full speed at once, the breaker paces the drain.
        assert_eq!(slow.record(Some(200), true, true, None, t0), Some(Duration::ZERO));
        assert_eq!(slow.reserve(t0), Duration::ZERO);
    }
}
