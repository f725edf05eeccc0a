//! A destination's last hour on this node, minute by minute: attempts, successes and the
//! time they took. Sixty buckets in a ring, written once per attempt: what the console's
//! health charts draw, without a query over the attempt history.

use std::sync::Mutex;
use std::time::Duration;

const MINUTES: usize = 60;

#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Minute {
    /// Minutes since the Unix epoch.
    pub minute: i64,
    pub attempts: u32,
    pub succeeded: u32,
    /// Summed, for the minute's mean.
    #[serde(skip)]
    latency_us: u64,
    pub mean_latency_ms: f64,
}

/// The ring is made at the destination's first attempt: ten thousand tenants' idle
/// destinations held 2 KB of zeroed minutes each.
#[derive(Debug, Default)]
pub struct Health {
    ring: Mutex<Option<Box<[Minute; MINUTES]>>>,
}

impl Health {
    pub fn record(&self, now_ms: i64, succeeded: bool, latency: Duration) {
        let minute = now_ms.div_euclid(60_000);
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let ring = ring.get_or_insert_with(|| Box::new([Minute::default(); MINUTES]));
        let slot = &mut ring[minute.rem_euclid(MINUTES as i64) as usize];
        if slot.minute != minute {
            *slot = Minute { minute, ..Minute::default() };
        }
        slot.attempts += 1;
        slot.succeeded += u32::from(succeeded);
        slot.latency_us += latency.as_micros() as u64;
        slot.mean_latency_ms = slot.latency_us as f64 / 1000.0 / f64::from(slot.attempts);
    }

    /// The last hour, oldest minute first; minutes without an attempt are present, empty.
    pub fn last_hour(&self, now_ms: i64) -> Vec<Minute> {
        let now = now_ms.div_euclid(60_000);
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        (now - MINUTES as i64 + 1..=now)
            .map(|minute| match ring.as_deref().map(|r| r[minute.rem_euclid(MINUTES as i64) as usize]) {
                Some(slot) if slot.minute == minute => slot,
                _ => Minute { minute, ..Minute::default() },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_hour_counts_each_minute_and_forgets_older_ones() {
        let health = Health::default();
        let at = 1_800_000_000_000; // a minute boundary
        health.record(at, true, Duration::from_millis(10));
        health.record(at + 1_000, false, Duration::from_millis(30));
        health.record(at + 61_000, true, Duration::from_millis(5));
        let hour = health.last_hour(at + 61_000);
        assert_eq!(hour.len(), 60);
        let (before, last) = (hour[58], hour[59]);
        assert_eq!((before.attempts, before.succeeded, before.mean_latency_ms), (2, 1, 20.0));
        assert_eq!((last.attempts, last.succeeded), (1, 1));
        // An hour on, the same slots hold new minutes; the old counts are gone.
        health.record(at + 3_600_000, true, Duration::from_millis(1));
        let later = health.last_hour(at + 3_600_000);
        assert_eq!(later.iter().map(|m| m.attempts).sum::<u32>(), 2, "{later:?}");
    }

    #[test]
    fn a_destination_with_no_attempt_has_an_empty_hour_and_no_ring() {
        let health = Health::default();
        let hour = health.last_hour(1_800_000_000_000);
        assert_eq!(hour.len(), 60);
        assert!(hour.iter().all(|m| m.attempts == 0) && hour[59].minute == 30_000_000);
        assert!(health.ring.lock().unwrap().is_none(), "made at the first attempt");
    }
}
