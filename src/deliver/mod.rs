//! Delivery: one worker per destination claims due deliveries from the store (leased, so a
//! crash or another node can take them over) and sends them, at most `max_in_flight` at
//! once per destination. A slow or broken destination only ever fills its own slots.
//!
//! After the commit the queue owns retries: attempt counts and next-attempt times live in
//! the store, so a crash loses no schedule. Workers sleep until the next due time or a wake
//! (from ingest, a replay, a resume). On a store shared by several nodes an idle worker
//! also looks for work another node queued, every `IDLE_POLL` — less often when there are
//! many destinations, so idle workers together claim at most `IDLE_CLAIMS_PER_SECOND`. On
//! the embedded store every delivery is made on this node, which wakes its worker: an idle
//! worker ends, and a destination with nothing to send costs no task and no claim.
//!
//! The dispatcher owns the workers: a config reload starts workers for new destinations,
//! hands changed ones their new settings (the next attempt uses them), and stops workers of
//! removed destinations — their pending deliveries stay in the store.

pub mod attempt;
pub mod breaker;
pub mod client;
pub mod health;
pub mod outcome;
pub mod preview;
pub mod respond;
mod slowdown;
pub mod ssrf;
mod worker;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use attempt::RESPONSE_PREFIX;
pub use client::Client;

use crate::config::{Config, Destination, RateLimit, Tenant};
use crate::store::{ClaimedDelivery, Leased, Store, Target};

/// Workers by tenant, then destination id.
type Workers = HashMap<String, HashMap<String, Running>>;

/// An idle worker's look for work other nodes queued, at most this often...
const IDLE_POLL: Duration = Duration::from_secs(5);
/// ...and all idle workers together at most this many claims per second.
const IDLE_CLAIMS_PER_SECOND: u64 = 200;

struct Shared {
    store: Arc<dyn Store>,
    /// Milliseconds between an idle worker's looks for work; 0: it waits for a wake.
    idle_poll_ms: std::sync::atomic::AtomicU64,
    client: Client,
    guard: Arc<ssrf::Guard>,
    tracker: TaskTracker,
    /// The drain time is over: give in-flight deliveries back to the queue.
    abort: CancellationToken,
    tail: Arc<crate::tail::Tail>,
}

impl Shared {
    /// How long an idle worker waits before it looks for work again unasked (with a tenth
    /// of jitter, so workers do not look all at once); `None`: until woken.
    fn idle_poll(&self) -> Option<Duration> {
        let ms = self.idle_poll_ms.load(Ordering::Relaxed);
        (ms > 0).then(|| Duration::from_millis(ms + fastrand::u64(0..=ms / 10)))
    }
}

/// What a worker reads on every turn.
struct Handle {
    destination: ArcSwap<Destination>,
    wake: Notify,
    paused: AtomicBool,
    breaker: Arc<breaker::Breaker>,
    /// The spacing its own answers (429, 503, …) ask for.
    slowdown: slowdown::Slowdown,
    /// Stops this worker alone (its destination was removed or reshaped).
    stop: CancellationToken,
    /// The handle that replaced this one when its destination was reshaped: what this
    /// worker gives back to the store, that one claims.
    successor: std::sync::OnceLock<Arc<Handle>>,
    /// A worker task runs for this destination. An idle worker ends; a wake starts one.
    running: AtomicBool,
    /// The destination's `rate_limit` bucket: it outlives the workers, so one that ends and
    /// starts again does not begin with a full burst.
    pacer: Option<governor::DefaultDirectRateLimiter>,
    /// Its last hour of attempts on this node, for the console (kept across reshapes).
    health: Arc<health::Health>,
    /// Deliveries handed over by ingest, committed already leased to this node: sent
    /// without a claim. Each holds a place of `room` until its worker takes it.
    handed: Mutex<VecDeque<(ClaimedDelivery, OwnedSemaphorePermit)>>,
    /// The metric handles of a delivered attempt, registered once.
    delivered: crate::metrics::Delivered,
    /// `max_in_flight` places: what waits in `handed` is bounded.
    room: Arc<Semaphore>,
    /// The store may hold work for this destination that no claim has seen yet (a commit
    /// not handed over, a replay, a resume): the worker claims before it waits again.
    store_work: AtomicBool,
}

/// Wakes a destination's worker, starting one if none runs; with `store_work`, it claims
/// before it waits again.
fn poke(shared: &Arc<Shared>, handle: &Arc<Handle>, store_work: bool) {
    if store_work {
        handle.store_work.store(true, Ordering::SeqCst);
    }
    handle.wake.notify_one();
    if !handle.running.swap(true, Ordering::SeqCst) {
        shared.tracker.spawn(worker::run(shared.clone(), handle.clone()));
    }
}

/// How long a claim or a hand-over leases a delivery: well past the attempt's own timeout,
/// so only a dead process ever lets one expire.
pub(crate) fn lease_for(destination: &Destination) -> Duration {
    destination.timeout * 2 + Duration::from_secs(30)
}

impl Handle {
    /// A place for one handed-over delivery, if the worker can send it from memory now:
    /// running normally (not paused, paced, slowed down or with its circuit other than
    /// closed) and with room.
    fn place(&self) -> Option<OwnedSemaphorePermit> {
        let destination = self.destination.load();
        let free = !self.paused.load(Ordering::Relaxed)
            && self.pacer.is_none()
            && (destination.circuit_breaker.is_none() || self.breaker.circuit() == breaker::Circuit::Closed)
            && self.slowdown.held_until(tokio::time::Instant::now()).is_none();
        free.then(|| self.room.clone().try_acquire_owned().ok()).flatten()
    }

    /// Wakes the worker to claim again: a retry was scheduled, a probe ended, a call's turn
    /// passed.
    fn recheck(&self) {
        self.store_work.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// The next handed-over delivery; its place in `room` is free again.
    fn take_handed(&self) -> Option<ClaimedDelivery> {
        self.handed.lock().unwrap_or_else(|p| p.into_inner()).pop_front().map(|(delivery, _place)| delivery)
    }

    /// Gives every handed-over delivery not yet taken back to the store, due now: for a
    /// paused or removed destination, or a worker that stops. Returns how many.
    async fn release_handed(&self, store: &dyn Store) -> usize {
        let mut released = 0;
        while let Some(delivery) = self.take_handed() {
            released += 1;
            if let Err(e) = store.release(delivery.id, delivery.lease).await {
                tracing::warn!(error = %e, "could not release a handed-over delivery; it resumes when its lease expires");
            }
        }
        released
    }

    /// For a stopped worker: gives back what was handed to it, and wakes the worker that
    /// replaced it (a reshape) to claim those. A removed destination has none: its
    /// deliveries wait in the store (cancelled, when the API removed it).
    async fn give_back(&self, shared: &Arc<Shared>) {
        if self.release_handed(&*shared.store).await > 0
            && let Some(mut next) = self.successor.get()
        {
            // Reshaped again since: the newest worker claims.
            while let Some(newer) = next.successor.get() {
                next = newer;
            }
            poke(shared, next, true);
        }
    }

    /// Called by an idle worker with nothing in flight: marks it ended unless a wake came
    /// in meanwhile. `true`: end now.
    fn end_if_idle(&self) -> bool {
        self.running.store(false, Ordering::SeqCst);
        // A wake that came before the flag was cleared started no worker: it left a permit.
        let woken = std::pin::pin!(self.wake.notified()).enable();
        // Woken: go on as the worker, unless the waker already started another one.
        !woken || self.running.swap(true, Ordering::SeqCst)
    }
}

struct Running {
    handle: Arc<Handle>,
    /// What the worker was built with; a change needs a new worker.
    shape: (usize, Option<RateLimit>),
}

pub struct Dispatcher {
    shared: Arc<Shared>,
    stop: CancellationToken,
    workers: RwLock<Workers>,
}

/// Which destinations `Dispatcher::status_page` lists.
pub struct StatusPage<'a> {
    /// One tenant's only.
    pub tenant: Option<&'a str>,
    /// Those after this (tenant, id): the last of the previous page.
    pub after: Option<(&'a str, &'a str)>,
    pub limit: usize,
    /// Whether the caller may see a tenant's destinations.
    pub sees: &'a dyn Fn(&str) -> bool,
    pub with_health: bool,
}

/// A destination as this node's worker sees it.
#[derive(Debug, serde::Serialize)]
pub struct DestinationStatus {
    pub destination: String,
    pub paused: bool,
    pub circuit: breaker::Circuit,
    /// Minute by minute, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_hour: Option<Vec<health::Minute>>,
}

fn stop_all(tenant: &str, workers: HashMap<String, Running>, applied: &mut Applied) {
    for (id, running) in workers {
        running.handle.stop.cancel();
        applied.removed.push(format!("{tenant}/{id}"));
    }
}

/// What a reload changed.
#[derive(Debug, Default, serde::Serialize)]
pub struct Applied {
    pub started: Vec<String>,
    pub updated: Vec<String>,
    pub removed: Vec<String>,
}

/// Places taken, before a commit, in the workers that will get its deliveries from memory.
/// Dropped unused (the commit failed, or was a repeat), the places are free again.
#[derive(Default)]
pub struct HandOver {
    places: Vec<(Arc<Handle>, OwnedSemaphorePermit)>,
    /// The workers of the other targets: they claim theirs after the commit.
    queued: Vec<Arc<Handle>>,
}

impl Dispatcher {
    /// A dispatcher with no destination yet: `apply_starting` gives it the config's.
    pub fn new(
        store: Arc<dyn Store>,
        client: Client,
        guard: Arc<ssrf::Guard>,
        tracker: &TaskTracker,
        (stop, abort): (CancellationToken, CancellationToken),
        tail: Arc<crate::tail::Tail>,
    ) -> Arc<Self> {
        let idle_poll_ms = std::sync::atomic::AtomicU64::new(0);
        let shared = Arc::new(Shared { store, idle_poll_ms, client, guard, tracker: tracker.clone(), abort, tail });
        Arc::new(Self { shared, stop, workers: RwLock::new(HashMap::new()) })
    }

    /// A destination's handle, and its worker when `start` (else the first wake starts it).
    fn spawn(
        &self,
        destination: &Arc<Destination>,
        paused: bool,
        (breaker, health): (Option<Arc<breaker::Breaker>>, Option<Arc<health::Health>>),
        start: bool,
    ) -> Running {
        let handle = Arc::new(Handle {
            handed: Mutex::new(VecDeque::new()),
            room: Arc::new(Semaphore::new(destination.max_in_flight)),
            store_work: AtomicBool::new(true),
            delivered: crate::metrics::Delivered::new(&destination.tenant, &destination.id),
            destination: ArcSwap::new(destination.clone()),
            wake: Notify::new(),
            paused: AtomicBool::new(paused),
            breaker: breaker.unwrap_or_default(),
            slowdown: slowdown::Slowdown::default(),
            stop: self.stop.child_token(),
            successor: std::sync::OnceLock::new(),
            running: AtomicBool::new(false),
            pacer: destination.rate_limit.map(|r| r.limiter()),
            health: health.unwrap_or_default(),
        });
        if start {
            self.poke(&handle, true);
        }
        Running { handle, shape: (destination.max_in_flight, destination.rate_limit) }
    }

    fn poke(&self, handle: &Arc<Handle>, store_work: bool) {
        poke(&self.shared, handle, store_work);
    }

    /// Brings the workers in line with `config`.
    pub fn apply(&self, config: &Config) -> Applied {
        self.apply_starting(config, &|_, _| true)
    }

    /// As `apply`; a new destination's worker starts at once only if `busy` says it may
    /// have work (at start: pending deliveries in the store), else at its first wake.
    pub fn apply_starting(&self, config: &Config, busy: &dyn Fn(&str, &str) -> bool) -> Applied {
        let mut applied = Applied::default();
        let mut workers = self.workers.write().unwrap_or_else(|p| p.into_inner());
        let mut next: Workers = HashMap::with_capacity(config.tenants.len());
        for tenant in config.tenants.values() {
            let old = workers.remove(&tenant.id).unwrap_or_default();
            next.insert(tenant.id.clone(), self.tenant_workers(tenant, old, &mut applied, busy));
        }
        for (tenant, old) in workers.drain() {
            stop_all(&tenant, old, &mut applied);
        }
        *workers = next;
        self.pace_idle_polls(&workers);
        applied
    }

    /// Spreads idle workers' looks for other nodes' work so that, however many destinations
    /// there are, together they claim at most `IDLE_CLAIMS_PER_SECOND`.
    fn pace_idle_polls(&self, workers: &Workers) {
        if !self.shared.store.shared() {
            return;
        }
        let count = workers.values().map(HashMap::len).sum::<usize>() as u64;
        let every = IDLE_POLL.max(Duration::from_millis(count * 1000 / IDLE_CLAIMS_PER_SECOND));
        self.shared.idle_poll_ms.store(every.as_millis() as u64, Ordering::Relaxed);
    }

    /// Brings the workers of the tenants `ids` alone in line with `config`: what a change
    /// to a few tenants costs, however many others there are.
    pub fn apply_tenants(&self, config: &Config, ids: &[&str]) -> Applied {
        let mut applied = Applied::default();
        let mut workers = self.workers.write().unwrap_or_else(|p| p.into_inner());
        for &id in ids {
            let old = workers.remove(id).unwrap_or_default();
            match config.tenants.get(id) {
                Some(tenant) => {
                    let running = self.tenant_workers(tenant, old, &mut applied, &|_, _| true);
                    workers.insert(id.to_string(), running);
                }
                None => stop_all(id, old, &mut applied),
            }
        }
        self.pace_idle_polls(&workers);
        applied
    }

    /// One tenant's workers: kept where the destination's shape is the same, restarted
    /// (with its circuit state) where it changed, started for new destinations, stopped
    /// for removed ones.
    fn tenant_workers(
        &self,
        tenant: &Tenant,
        mut old: HashMap<String, Running>,
        applied: &mut Applied,
        busy: &dyn Fn(&str, &str) -> bool,
    ) -> HashMap<String, Running> {
        let mut running_now = HashMap::with_capacity(tenant.destinations.len());
        for destination in &tenant.destinations {
            let name = format!("{}/{}", tenant.id, destination.id);
            let shape = (destination.max_in_flight, destination.rate_limit);
            let running = match old.remove(&destination.id) {
                Some(running) if running.shape == shape => {
                    running.handle.destination.store(destination.clone());
                    applied.updated.push(name);
                    running
                }
                Some(running) => {
                    // Slots and pacing belong to the worker: start a fresh one. A tripped
                    // breaker stays tripped: the destination is the same one. What the old
                    // one held goes back to the store, for the new one to claim.
                    applied.updated.push(name);
                    let paused = running.handle.paused.load(Ordering::Relaxed);
                    let kept = (Some(running.handle.breaker.clone()), Some(running.handle.health.clone()));
                    let next = self.spawn(destination, paused, kept, true);
                    let _ = running.handle.successor.set(next.handle.clone());
                    running.handle.stop.cancel();
                    next
                }
                None => {
                    applied.started.push(name);
                    let start = self.shared.store.shared() || busy(&tenant.id, &destination.id);
                    self.spawn(destination, false, (None, None), start)
                }
            };
            running_now.insert(destination.id.clone(), running);
        }
        stop_all(&tenant.id, old, applied);
        running_now
    }

    /// Before a commit: gives a lease to each of `targets` whose worker can send it from
    /// memory, and takes its place there. Deliveries that go by call are never handed over
    /// (their turn is decided by the claim).
    pub fn reserve(&self, tenant: &str, targets: &mut [Target]) -> HandOver {
        let mut hand_over = HandOver::default();
        let workers = self.workers.read().unwrap_or_else(|p| p.into_inner());
        let Some(of_tenant) = workers.get(tenant) else { return hand_over };
        for target in targets.iter_mut() {
            let Some(running) = of_tenant.get(&target.destination) else { continue };
            if target.by_call {
                hand_over.queued.push(running.handle.clone());
                continue;
            }
            match running.handle.place() {
                Some(place) => {
                    target.lease = Some(lease_for(&running.handle.destination.load()));
                    hand_over.places.push((running.handle.clone(), place));
                }
                None => hand_over.queued.push(running.handle.clone()),
            }
        }
        hand_over
    }

    /// After the commit of `event`: hands each leased delivery to its worker, and wakes the
    /// workers of its other deliveries to claim them.
    pub fn committed(&self, event: &ClaimedDelivery, hand_over: HandOver, leased: &Leased) {
        for ((handle, place), &id) in hand_over.places.into_iter().zip(&leased.ids) {
            let delivery = ClaimedDelivery { id, lease: leased.lease, ..event.clone() };
            handle.handed.lock().unwrap_or_else(|p| p.into_inner()).push_back((delivery, place));
            if handle.stop.is_cancelled() {
                // Its worker stopped while this was committed (reshaped, removed) and may
                // have given back what it held already: this one goes back too.
                let shared = self.shared.clone();
                self.shared.tracker.spawn(async move { handle.give_back(&shared).await });
            } else {
                self.poke(&handle, false);
            }
        }
        for handle in &hand_over.queued {
            self.poke(handle, true);
        }
    }

    /// The delivery client and its SSRF guard, for the synchronous responder.
    pub fn client(&self) -> (&Client, &ssrf::Guard) {
        (&self.shared.client, &self.shared.guard)
    }

    /// Wakes the workers a replay queued work for: those of `tenant` and `destination`
    /// when given, else all of them.
    pub fn wake_matching(&self, tenant: Option<&str>, destination: Option<&str>) {
        let workers = self.workers.read().unwrap_or_else(|p| p.into_inner());
        let tenants = workers.iter().filter(|(t, _)| tenant.is_none_or(|want| want == t.as_str()));
        for (_, of_tenant) in tenants {
            for (_, running) in of_tenant.iter().filter(|(d, _)| destination.is_none_or(|want| want == d.as_str())) {
                self.poke(&running.handle, true);
            }
        }
    }

    /// One page of the destinations on this node, in (tenant, id) order: those after
    /// `page.after` that `page.sees`, at most `page.limit`, and whether more follow. Only the
    /// page's own statuses (and health hours) are built, so a platform with 50,000
    /// destinations pays for the page it asked for.
    pub fn status_page(&self, page: &StatusPage<'_>) -> (Vec<DestinationStatus>, bool) {
        let workers = self.workers.read().unwrap_or_else(|p| p.into_inner());
        let now = crate::store::now_ms();
        let mut chosen: Vec<(&str, &str, &Running)> = workers
            .iter()
            .filter(|(t, _)| page.tenant.is_none_or(|want| want == t.as_str()) && (page.sees)(t))
            .flat_map(|(t, of_tenant)| of_tenant.iter().map(move |(id, running)| (t.as_str(), id.as_str(), running)))
            .filter(|&(t, id, _)| page.after.is_none_or(|after| (t, id) > after))
            .collect();
        let more = chosen.len() > page.limit;
        if more {
            chosen.select_nth_unstable_by(page.limit, |a, b| (a.0, a.1).cmp(&(b.0, b.1)));
            chosen.truncate(page.limit);
        }
        chosen.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let statuses = chosen
            .into_iter()
            .map(|(tenant, id, running)| DestinationStatus {
                destination: format!("{tenant}/{id}"),
                paused: running.handle.paused.load(Ordering::Relaxed),
                circuit: running.handle.breaker.circuit(),
                last_hour: page.with_health.then(|| running.handle.health.last_hour(now)),
            })
            .collect();
        (statuses, more)
    }

    /// Pauses or resumes a destination's worker; `false` if there is no such destination.
    pub fn set_paused(&self, tenant: &str, destination: &str, paused: bool) -> bool {
        let workers = self.workers.read().unwrap_or_else(|p| p.into_inner());
        let Some(running) = workers.get(tenant).and_then(|t| t.get(destination)) else { return false };
        running.handle.paused.store(paused, Ordering::Relaxed);
        self.poke(&running.handle, true);
        true
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::time::Duration;

    use crate::config::{Destination, RetryPolicy};
    use crate::template::request::{BodyTemplate, RequestTemplate};
    use crate::template::{Kind, Template};

    /// A destination for unit tests: `url` and an optional JSON `body`, both templates.
    pub fn destination(url: &str, body: Option<&str>, max_attempts: u32) -> Destination {
        let body = match body {
            None => BodyTemplate::Original,
            Some(body) => BodyTemplate::Json {
                template: Template::compile(body, Kind::JsonBody, &|_| None).unwrap(),
                content_type: http::HeaderValue::from_static("application/json"),
            },
        };
        Destination {
            tenant: "t".into(),
            id: "d".into(),
            request: RequestTemplate::new(Template::compile(url, Kind::Url, &|_| None).unwrap(), Vec::new(), body),
            method: http::Method::POST,
            when: crate::fanout::When::default(),
            rate_limit: None,
            signing_keys: Vec::new(),
            pass_through_codes: Vec::new(),
            max_response_bytes: 1024,
            success_codes: vec![200, 202],
            on_status: crate::config::OnStatus::default(),
            timeout: Duration::from_secs(1),
            max_in_flight: 1,
            retry: RetryPolicy {
                max_attempts,
                initial_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(60),
                deadline: Duration::from_secs(3600),
            },
            circuit_breaker: None,
            calls: crate::config::CallRules::default(),
        }
    }
}
