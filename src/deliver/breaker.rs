//! A destination's circuit breaker. After `failures` failed attempts in a row the circuit
//! opens: the worker claims nothing, so pending deliveries wait in the queue instead of each
//! spending its own attempts against a system that is down. When the cooldown is over one
//! delivery goes out as a probe; its success closes the circuit and the backlog drains
//! (paced by the destination's rate limit), its failure reopens it for twice as long, up to
//! `max_cooldown`. Attempts against a dead destination are so bounded by time, not by the
//! size of the backlog.
//!
//! The state is per node and in memory: a restart starts closed, and N nodes probe N times.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::CircuitBreaker;

/// What an attempt says about the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Success,
    Failure,
    /// Nothing (the request could not even be built, or the attempt was given back).
    Neutral,
}

/// What the worker may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Claim as usual.
    Send,
    /// Claim exactly one delivery and send it as the probe.
    Probe,
    /// Claim nothing until then.
    WaitUntil(Instant),
    /// A probe is out; claim nothing until its result.
    AwaitProbe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, cooldown: Duration },
    Probing { cooldown: Duration },
}

/// The circuit's state as reported by the admin API and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    Closed,
    Open,
    Probing,
}

/// A change the caller should log and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened { cooldown: Duration },
    Closed,
}

#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self { state: Mutex::new(State::Closed { failures: 0 }) }
    }
}

impl Breaker {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn circuit(&self) -> Circuit {
        match *self.state() {
            State::Closed { .. } => Circuit::Closed,
            State::Open { .. } => Circuit::Open,
            State::Probing { .. } => Circuit::Probing,
        }
    }

    /// Asked by the worker before each claim.
    pub fn permit(&self, now: Instant) -> Permit {
        let mut state = self.state();
        match *state {
            State::Closed { .. } => Permit::Send,
            State::Open { until, .. } if now < until => Permit::WaitUntil(until),
            State::Open { cooldown, .. } => {
                *state = State::Probing { cooldown };
                Permit::Probe
            }
            State::Probing { .. } => Permit::AwaitProbe,
        }
    }

    /// The probe the worker was permitted found nothing due (or the claim failed): the next
    /// turn may probe again.
    pub fn probe_unused(&self, now: Instant) {
        let mut state = self.state();
        if let State::Probing { cooldown } = *state {
            *state = State::Open { until: now, cooldown };
        }
    }

    /// Records an attempt's result. `probe` marks the attempt sent under `Permit::Probe`;
    /// results of attempts that were already out when the circuit opened only close it
    /// (the destination answered), they never reopen or extend it.
    pub fn record(&self, settings: &CircuitBreaker, signal: Signal, probe: bool, now: Instant) -> Option<Transition> {
        let mut state = self.state();
        let (next, transition) = match (*state, signal) {
            (_, Signal::Success) => {
                let was_closed = matches!(*state, State::Closed { .. });
                (State::Closed { failures: 0 }, (!was_closed).then_some(Transition::Closed))
            }
            (State::Closed { failures }, Signal::Failure) => {
                let failures = failures + 1;
                if failures >= settings.failures.get() {
                    let cooldown = settings.cooldown;
                    (State::Open { until: now + cooldown, cooldown }, Some(Transition::Opened { cooldown }))
                } else {
                    (State::Closed { failures }, None)
                }
            }
            (State::Probing { cooldown }, Signal::Failure) if probe => {
                let cooldown = (cooldown * 2).min(settings.max_cooldown);
                (State::Open { until: now + cooldown, cooldown }, Some(Transition::Opened { cooldown }))
            }
            (State::Probing { cooldown }, Signal::Neutral) if probe => (State::Open { until: now, cooldown }, None),
            (state, _) => (state, None),
        };
        *state = next;
        transition
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn settings() -> CircuitBreaker {
        CircuitBreaker {
            failures: NonZeroU32::new(3).unwrap(),
            cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(4),
        }
    }

    fn fail(b: &Breaker, n: u32, probe: bool, now: Instant) -> Option<Transition> {
        let s = settings();
        (0..n).map(|_| b.record(&s, Signal::Failure, probe, now)).last().flatten()
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let (b, s, t0) = (Breaker::default(), settings(), Instant::now());
        assert_eq!(fail(&b, 2, false, t0), None);
        assert_eq!(b.record(&s, Signal::Success, false, t0), None, "a success resets the count");
        assert_eq!(fail(&b, 2, false, t0), None);
        assert_eq!(b.permit(t0), Permit::Send);
        assert_eq!(fail(&b, 1, false, t0), Some(Transition::Opened { cooldown: s.cooldown }));
        assert_eq!(b.permit(t0), Permit::WaitUntil(t0 + s.cooldown));
        assert_eq!(b.circuit(), Circuit::Open);
    }

    #[test]
    fn one_probe_after_the_cooldown_and_it_decides() {
        let (b, s, t0) = (Breaker::default(), settings(), Instant::now());
        fail(&b, 3, false, t0);
        let t1 = t0 + s.cooldown;
        assert_eq!(b.permit(t1), Permit::Probe);
        assert_eq!(b.permit(t1), Permit::AwaitProbe, "one probe at a time");
        // Results of attempts sent before the circuit opened neither reopen nor extend it.
        assert_eq!(b.record(&s, Signal::Failure, false, t1), None);
        assert_eq!(b.permit(t1), Permit::AwaitProbe);
        assert_eq!(b.record(&s, Signal::Failure, true, t1), Some(Transition::Opened { cooldown: s.cooldown * 2 }));
        let t2 = t1 + s.cooldown * 2;
        assert_eq!(b.permit(t2 - Duration::from_millis(1)), Permit::WaitUntil(t2));
        assert_eq!(b.permit(t2), Permit::Probe);
        assert_eq!(b.record(&s, Signal::Success, true, t2), Some(Transition::Closed));
        assert_eq!(b.permit(t2), Permit::Send);
        assert_eq!(b.circuit(), Circuit::Closed);
    }

    #[test]
    fn the_cooldown_doubles_up_to_its_ceiling() {
        let (b, s, mut now) = (Breaker::default(), settings(), Instant::now());
        fail(&b, 3, false, now);
        let mut cooldowns = Vec::new();
        for _ in 0..5 {
            let Permit::WaitUntil(until) = b.permit(now) else { panic!("open") };
            now = until;
            assert_eq!(b.permit(now), Permit::Probe);
            match b.record(&s, Signal::Failure, true, now) {
                Some(Transition::Opened { cooldown }) => cooldowns.push(cooldown.as_secs()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(cooldowns, [2, 4, 4, 4, 4]);
    }

    #[test]
    fn a_probe_that_found_nothing_or_proved_nothing_is_retried_at_once() {
        let (b, s, t0) = (Breaker::default(), settings(), Instant::now());
        fail(&b, 3, false, t0);
        let t1 = t0 + s.cooldown;
        assert_eq!(b.permit(t1), Permit::Probe);
        b.probe_unused(t1);
        assert_eq!(b.permit(t1), Permit::Probe);
        assert_eq!(b.record(&s, Signal::Neutral, true, t1), None);
        assert_eq!(b.permit(t1), Permit::Probe);
        assert_eq!(b.circuit(), Circuit::Probing);
    }

    #[test]
    fn an_answer_from_an_attempt_already_out_closes_it() {
        let (b, s, t0) = (Breaker::default(), settings(), Instant::now());
        fail(&b, 3, false, t0);
        assert_eq!(b.record(&s, Signal::Success, false, t0), Some(Transition::Closed));
        assert_eq!(b.permit(t0), Permit::Send);
    }
}
