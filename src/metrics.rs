//! Prometheus metrics. Label values are bounded: tenants, sources and destinations come
//! from the config (a callback for an unknown tenant is counted without one), outcomes are
//! fixed words; no event ids or URLs. How many of those labels a series carries is
//! `[metrics] detail`: a platform of ten thousand tenants keeps its exposition in proportion.
//!
//! The `metrics` facade has one recorder per process, installed on first use.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::{Config, MetricsDetail};
use crate::store::admin::QueueStats;
use crate::store::{Store, now_ms};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
/// `[metrics] detail`, set once at start (`set_detail`).
static DETAIL: AtomicU8 = AtomicU8::new(0);

const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const BATCH_BUCKETS: [f64; 11] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// Installs the recorder (once per process) and returns its handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("batch_size".into()),
                    &BATCH_BUCKETS,
                )
            })
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding application's): then our
        // counters go there and this handle renders nothing of them.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// How finely series are labelled from now on. Called at start, before anything is
/// recorded: a change later would leave the old series beside the new.
pub fn set_detail(detail: MetricsDetail) {
    DETAIL.store(detail as u8, Ordering::Relaxed);
}

fn detail() -> MetricsDetail {
    match DETAIL.load(Ordering::Relaxed) {
        0 => MetricsDetail::Destination,
        1 => MetricsDetail::Tenant,
        _ => MetricsDetail::Gateway,
    }
}

/// The labels that say where a series belongs, at `detail`: the tenant, and `part` (the
/// source or destination) within it.
fn place_at(detail: MetricsDetail, tenant: &str, part: (&'static str, &str)) -> Vec<(&'static str, String)> {
    match detail {
        MetricsDetail::Destination => vec![("tenant", tenant.to_string()), (part.0, part.1.to_string())],
        MetricsDetail::Tenant => vec![("tenant", tenant.to_string())],
        MetricsDetail::Gateway => Vec::new(),
    }
}

/// `place_at` the configured detail, with `extra` labels after.
fn place(tenant: &str, part: (&'static str, &str), extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut labels = place_at(detail(), tenant, part);
    labels.extend(extra.iter().map(|&(k, v)| (k, v.to_string())));
    labels
}

/// The tenant's label, unless the detail is the gateway's (series kept per tenant at most).
fn tenant_only(tenant: &str) -> Vec<(&'static str, String)> {
    match detail() {
        MetricsDetail::Gateway => Vec::new(),
        _ => vec![("tenant", tenant.to_string())],
    }
}

/// Histogram samples wait in the recorder until they are folded into their buckets, which
/// a scrape does — and nothing else, with a recorder built by hand. A gateway nobody scrapes
/// would keep every sample of every request: the soak suite saw RSS grow ~220 bytes per
/// event. Folding them every few seconds bounds that whether Prometheus comes or not.
pub async fn upkeep(stop: tokio_util::sync::CancellationToken) {
    let handle = install();
    let mut every = tokio::time::interval(Duration::from_secs(5));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => handle.run_upkeep(),
        }
    }
}

/// A source's handles for an accepted callback, registered at its first one and then kept,
/// rather than looked up (with label strings built) on every request. Not at load: with
/// ten thousand tenants, series for sources that never took a callback cost memory and
/// scrape size for nothing.
pub struct Accepted {
    tenant: String,
    source: String,
    handles: OnceLock<(metrics::Counter, metrics::Histogram)>,
}

impl Accepted {
    pub fn new(tenant: &str, source: &str) -> Self {
        Self { tenant: tenant.to_string(), source: source.to_string(), handles: OnceLock::new() }
    }

    pub fn record(&self, latency: Duration) {
        let (requests, ack) = self.handles.get_or_init(|| {
            let labels = place(&self.tenant, ("source", &self.source), &[("outcome", "accepted")]);
            (
                counter!("switchboard_ingest_requests_total", &labels),
                histogram!("switchboard_ingest_ack_seconds", &tenant_only(&self.tenant)),
            )
        });
        requests.increment(1);
        ack.record(latency.as_secs_f64());
    }
}

/// A destination's handles for a delivered attempt, the common case: registered at its
/// first delivery (not at load, as `Accepted`), then kept.
pub struct Delivered {
    tenant: String,
    destination: String,
    handles: OnceLock<DeliveredHandles>,
}

struct DeliveredHandles {
    success: metrics::Counter,
    attempt: metrics::Histogram,
    since_created: metrics::Histogram,
}

impl Delivered {
    pub fn new(tenant: &str, destination: &str) -> Self {
        Self { tenant: tenant.to_string(), destination: destination.to_string(), handles: OnceLock::new() }
    }

    /// As `attempt` with outcome "success", then `delivered`.
    pub fn record(&self, latency: Duration, since_created: Duration) {
        let h = self.handles.get_or_init(|| {
            let labels = place(&self.tenant, ("destination", &self.destination), &[]);
            let with_outcome = place(&self.tenant, ("destination", &self.destination), &[("outcome", "success")]);
            DeliveredHandles {
                success: counter!("switchboard_delivery_attempts_total", &with_outcome),
                attempt: histogram!("switchboard_delivery_attempt_seconds", &labels),
                since_created: histogram!("switchboard_delivery_seconds", &labels),
            }
        });
        h.success.increment(1);
        h.attempt.record(latency.as_secs_f64());
        h.since_created.record(since_created.as_secs_f64());
    }
}

pub fn ingest(tenant: &str, source: &str, outcome: &'static str, latency: Duration) {
    counter!("switchboard_ingest_requests_total", &place(tenant, ("source", source), &[("outcome", outcome)]))
        .increment(1);
    if outcome == "accepted" || outcome == "duplicate" {
        histogram!("switchboard_ingest_ack_seconds", &tenant_only(tenant)).record(latency.as_secs_f64());
    }
}

pub fn attempt(tenant: &str, destination: &str, outcome: &'static str, latency: Duration) {
    let part = ("destination", destination);
    counter!("switchboard_delivery_attempts_total", &place(tenant, part, &[("outcome", outcome)])).increment(1);
    histogram!("switchboard_delivery_attempt_seconds", &place(tenant, part, &[])).record(latency.as_secs_f64());
}

pub fn retry(tenant: &str, destination: &str) {
    counter!("switchboard_delivery_retries_total", &place(tenant, ("destination", destination), &[])).increment(1);
}

pub fn dead(tenant: &str, destination: &str) {
    counter!("switchboard_dead_letters_total", &place(tenant, ("destination", destination), &[])).increment(1);
}

/// Deliveries a claim ended unsent: superseded by a later status of their call, or a live
/// status past the destination's `live_ttl`.
pub fn unsent(tenant: &str, destination: &str, superseded: u64, expired: u64) {
    for (reason, n) in [("superseded", superseded), ("expired", expired)] {
        if n > 0 {
            let labels = place(tenant, ("destination", destination), &[("reason", reason)]);
            counter!("switchboard_deliveries_unsent_total", &labels).increment(n);
        }
    }
}

/// A destination answered in a way that pauses it (410 Gone, or `on_status = "pause"`):
/// worth an alert, as nothing is delivered to it until someone resumes it.
pub fn paused_by_answer(tenant: &str, destination: &str) {
    counter!("switchboard_destination_paused_total", &place(tenant, ("destination", destination), &[])).increment(1);
}

/// The spacing a destination's answers set between its requests (0: full speed). A state
/// of one destination: there is no sum of it per tenant, so it is kept per destination or
/// not at all (the admin API shows it either way).
pub fn spacing(tenant: &str, destination: &str, spacing: Duration) {
    if detail() == MetricsDetail::Destination {
        let labels = place(tenant, ("destination", destination), &[]);
        gauge!("switchboard_destination_spacing_seconds", &labels).set(spacing.as_secs_f64());
    }
}

pub fn delivered(tenant: &str, destination: &str, since_created: Duration) {
    histogram!("switchboard_delivery_seconds", &place(tenant, ("destination", destination), &[]))
        .record(since_created.as_secs_f64());
}

/// A destination's circuit opened (`true`) or closed again. The open gauge is a state of one
/// destination, kept as `spacing` is; the count of openings adds up at any detail.
pub fn circuit(tenant: &str, destination: &str, open: bool) {
    let labels = place(tenant, ("destination", destination), &[]);
    if detail() == MetricsDetail::Destination {
        gauge!("switchboard_destination_circuit_open", &labels).set(if open { 1.0 } else { 0.0 });
    }
    if open {
        counter!("switchboard_destination_circuit_opened_total", &labels).increment(1);
    }
}

pub fn group_commit(batch: usize, latency: Duration) {
    histogram!("switchboard_store_commit_batch_size").record(batch as f64);
    histogram!("switchboard_store_commit_seconds").record(latency.as_secs_f64());
}

/// How stale the queue gauges may be. Counting the queue reads the whole deliveries table,
/// so it is done at most this often, however often Prometheus (or anyone) scrapes.
pub const QUEUE_FIGURES_MAX_AGE: Duration = Duration::from_secs(10);

/// The last queue figures read from the store, and when.
#[derive(Default)]
pub struct QueueFigures {
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, QueueStats)>>,
    /// How many times the store was asked (for tests).
    reads: std::sync::atomic::AtomicU64,
}

impl QueueFigures {
    /// The cached figures, read again from the store when older than the maximum age.
    /// Concurrent scrapes wait for one read rather than each starting its own.
    pub async fn get(&self, store: &dyn Store) -> Result<QueueStats, crate::store::StoreError> {
        let mut last = self.last.lock().await;
        if let Some((at, stats)) = last.as_ref()
            && at.elapsed() < QUEUE_FIGURES_MAX_AGE
        {
            return Ok(stats.clone());
        }
        self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stats = store.queue_stats().await?;
        *last = Some((tokio::time::Instant::now(), stats.clone()));
        Ok(stats)
    }

    pub fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The exposition, with queue gauges from figures at most `QUEUE_FIGURES_MAX_AGE` old.
pub async fn render(config: &Config, store: &dyn Store, figures: &QueueFigures) -> String {
    let handle = install();
    match figures.get(store).await {
        Ok(stats) => {
            for (state, n) in [
                ("pending", stats.pending),
                ("delivered", stats.delivered),
                ("dead", stats.dead),
                ("superseded", stats.superseded),
                ("expired", stats.expired),
                ("cancelled", stats.cancelled),
            ] {
                gauge!("switchboard_deliveries", "state" => state).set(n as f64);
            }
            for (labels, (pending, oldest)) in queue_gauges(detail(), config, &stats, now_ms()) {
                gauge!("switchboard_pending_deliveries", &labels).set(pending as f64);
                gauge!("switchboard_oldest_pending_seconds", &labels).set(oldest);
            }
        }
        Err(e) => tracing::warn!(error = %e, "queue figures unavailable for this scrape"),
    }
    handle.render()
}

/// Pending deliveries and the oldest one's age in seconds, per place at `detail`: summed
/// (and the oldest taken) over the destinations a place holds. Every configured destination
/// counts, so a drained queue reads 0 rather than vanishing.
fn queue_gauges(
    detail: MetricsDetail,
    config: &Config,
    stats: &QueueStats,
    now: i64,
) -> std::collections::BTreeMap<Vec<(&'static str, String)>, (u64, f64)> {
    let waiting = stats.waiting();
    let mut gauges = std::collections::BTreeMap::new();
    for tenant in config.tenants.values() {
        for d in &tenant.destinations {
            let (pending, oldest) = waiting
                .get(&(tenant.id.as_str(), d.id.as_str()))
                .map_or((0, 0.0), |(n, created)| (*n, (now - created).max(0) as f64 / 1000.0));
            let entry: &mut (u64, f64) =
                gauges.entry(place_at(detail, &tenant.id, ("destination", &d.id))).or_default();
            entry.0 += pending;
            entry.1 = entry.1.max(oldest);
        }
    }
    gauges
}

/// The outcome label of an attempt.
pub fn attempt_outcome(
    status: Option<u16>,
    delivered: bool,
    error: Option<&crate::deliver::attempt::AttemptError>,
) -> &'static str {
    match (delivered, status, error) {
        (true, _, _) => "success",
        (_, _, Some(e)) => e.label(),
        (_, Some(s), _) if s < 200 => "http_1xx",
        (_, Some(s), _) if s < 300 => "http_2xx",
        (_, Some(s), _) if s < 400 => "http_3xx",
        (_, Some(s), _) if s < 500 => "http_4xx",
        (_, Some(_), _) => "http_5xx",
        (_, None, None) => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_detail_drops_a_label_of_place() {
        let part = ("destination", "crm");
        let at = |detail| place_at(detail, "acme", part);
        assert_eq!(at(MetricsDetail::Destination), [("tenant", "acme".into()), ("destination", "crm".into())]);
        assert_eq!(at(MetricsDetail::Tenant), [("tenant", "acme".to_string())]);
        assert!(at(MetricsDetail::Gateway).is_empty());
    }

    /// The queue gauges add up per place: a tenant's pending deliveries are the sum over its
    /// destinations, its oldest the oldest of theirs, and a destination with none counts 0.
    #[test]
    fn queue_gauges_add_up_over_the_destinations_a_place_holds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tenants")).unwrap();
        let main = dir.path().join("switchboard.toml");
        std::fs::write(&main, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
        for (tenant, destinations) in [("acme", ["crm", "desk"]), ("globex", ["crm", "bi"])] {
            let mut text = format!("id = \"{tenant}\"\n");
            for d in destinations {
                text += &format!("[[destination]]\nid = \"{d}\"\nurl = \"http://127.0.0.1:9/{d}\"\n");
            }
            std::fs::write(dir.path().join(format!("tenants/{tenant}.toml")), text).unwrap();
        }
        let config = crate::config::load(&main).unwrap();
        let now = 100_000;
        let stats = QueueStats {
            per_destination: vec![
                ("acme".into(), "crm".into(), 3, now - 5_000),
                ("acme".into(), "desk".into(), 4, now - 9_000),
                ("globex".into(), "bi".into(), 2, now - 1_000),
            ],
            ..QueueStats::default()
        };
        let gauges = |detail| queue_gauges(detail, &config, &stats, now).into_iter().collect::<Vec<_>>();
        let labels =
            |pairs: &[(&'static str, &str)]| pairs.iter().map(|&(k, v)| (k, v.to_string())).collect::<Vec<_>>();
        assert_eq!(
            gauges(MetricsDetail::Destination),
            [
                (labels(&[("tenant", "acme"), ("destination", "crm")]), (3, 5.0)),
                (labels(&[("tenant", "acme"), ("destination", "desk")]), (4, 9.0)),
                (labels(&[("tenant", "globex"), ("destination", "bi")]), (2, 1.0)),
                (labels(&[("tenant", "globex"), ("destination", "crm")]), (0, 0.0)),
            ]
        );
        assert_eq!(
            gauges(MetricsDetail::Tenant),
            [(labels(&[("tenant", "acme")]), (7, 9.0)), (labels(&[("tenant", "globex")]), (2, 1.0))]
        );
        assert_eq!(gauges(MetricsDetail::Gateway), [(labels(&[]), (9, 9.0))]);
    }

    /// Ten thousand tenants of five destinations made a 164 MB exposition and 200 MB of
    /// histograms when every source and destination registered its series at load.
    #[test]
    fn sources_and_destinations_have_series_once_they_have_traffic_not_before() {
        let handle = install();
        let accepted = Accepted::new("quiet-tenant", "quiet-source");
        let delivered = Delivered::new("quiet-tenant", "quiet-destination");
        let text = handle.render();
        assert!(!text.contains("quiet-source") && !text.contains("quiet-destination"), "{text}");

        accepted.record(Duration::from_millis(2));
        delivered.record(Duration::from_millis(3), Duration::from_millis(5));
        delivered.record(Duration::from_millis(3), Duration::from_millis(5));
        let text = handle.render();
        for line in [
            r#"switchboard_ingest_requests_total{tenant="quiet-tenant",source="quiet-source",outcome="accepted"} 1"#,
            r#"switchboard_ingest_ack_seconds_count{tenant="quiet-tenant"} 1"#,
            r#"switchboard_delivery_attempts_total{tenant="quiet-tenant",destination="quiet-destination",outcome="success"} 2"#,
            r#"switchboard_delivery_attempt_seconds_count{tenant="quiet-tenant",destination="quiet-destination"} 2"#,
            r#"switchboard_delivery_seconds_count{tenant="quiet-tenant",destination="quiet-destination"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
    }
}
