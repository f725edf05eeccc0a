//! One store conformance suite, two backends: every behaviour the gateway relies on —
//! ingest, claim, lease expiry and fencing, retry scheduling, dead-lettering, replay,
//! dedupe, retention, pause, history — runs against a real SQLite file and a real
//! PostgreSQL database. PostgreSQL adds what only a shared store can show: several nodes
//! claiming from one queue at once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use switchboard::config::CallRules;
use switchboard::config::{self, Backend, Synchronous};
use switchboard::store::admin::{DeliveryQuery, EventQuery, Replay, ReplayFilter};
use switchboard::store::catalog::{AuditEntry, Change, KeyRecord, Written};
use switchboard::store::{
    AttemptRecord, CallPlace, ClaimRequest, ClaimedDelivery, Committed, Completion, Dedupe, DeliveryState, NewEvent,
    Next, PgStore, SqliteStore, Store, Target, now_ms,
};
use uuid::Uuid;

use crate::support::postgres::database;

pub(crate) type Shared = Arc<dyn Store>;

pub(crate) async fn sqlite(dir: &std::path::Path) -> Shared {
    let path = dir.join("store.db");
    let config = config::Store {
        backend: Backend::Sqlite { path: path.clone() },
        synchronous: Synchronous::Normal,
        max_size_bytes: None,
        retention: Duration::from_secs(60),
        dead_retention: Duration::from_secs(60),
    };
    Arc::new(SqliteStore::open(&path, &config, "node-a").unwrap())
}

async fn pg(url: &str, node: &str) -> Shared {
    Arc::new(PgStore::open(&url.parse().unwrap(), 8, node).await.unwrap())
}

/// One suite, two backends: each named test runs once per store.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::sqlite(dir.path()).await;
                    super::$name(store.clone()).await;
                    store.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(url) = crate::support::postgres::database().await else { return };
                    let store = super::pg(&url, "node-a").await;
                    super::$name(store.clone()).await;
                    store.close().await;
                }
            )*
        }
    };
}

conformance!(
    commits_an_event_with_one_delivery_per_destination,
    claims_lease_due_deliveries_once,
    an_expired_lease_is_claimed_again_and_fences_the_old_holder,
    retries_wait_until_their_due_time,
    dead_deliveries_are_kept_apart_and_replayed_as_a_new_series,
    bulk_replay_queues_each_finished_delivery_once,
    release_gives_a_delivery_back_without_an_attempt,
    dedupe_keys_hold_within_their_window_only,
    a_repeat_by_any_of_its_keys_stores_nothing_and_keeps_none_of_them,
    concurrent_repeats_store_one_event,
    retention_purges_finished_work_and_keeps_pending,
    pause_is_persisted,
    listings_page_and_filter,
    responder_exchanges_are_recorded_as_finished_deliveries,
    an_ordered_call_goes_one_delivery_at_a_time_and_others_are_not_held,
    a_status_the_call_has_left_is_superseded_not_sent,
    a_live_status_past_its_ttl_expires,
    a_sequenced_call_waits_for_its_turn_within_the_window,
    the_catalog_versions_every_change_and_keeps_tombstones,
    removing_a_destination_cancels_only_its_pending_deliveries,
    what_a_removal_left_behind_is_cancelled_up_to_a_time,
    keys_are_found_by_id_and_go_with_their_tenant,
    a_handed_over_delivery_is_committed_leased_and_comes_back_after_its_lease,
);

fn event(tenant: &str, destinations: &[&str]) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        tenant: tenant.into(),
        source: "telecmi".into(),
        received_at: now_ms(),
        content_type: Some("application/json".into()),
        query: Some("a=1".into()),
        body: bytes::Bytes::from_static(b"{\"cmiuid\":\"c1\"}"),
        normalized: "{\"status\":\"completed\"}".into(),
        destinations: destinations.iter().map(|&d| d.into()).collect(),
        call: None,
        dedupe: Vec::new(),
        call_id: Some("c1".into()),
        from: Some("+919100000000".into()),
        to: Some("04461000000".into()),
    }
}

fn request(destination: &str, lease: Duration) -> ClaimRequest {
    ClaimRequest {
        tenant: "acme".into(),
        destination: destination.into(),
        limit: 100,
        lease,
        calls: Default::default(),
    }
}

const LEASE: Duration = Duration::from_secs(60);

fn attempt(status: u16) -> AttemptRecord {
    AttemptRecord {
        started_at: now_ms(),
        latency: Duration::from_micros(1500),
        status: Some(status),
        error: None,
        response_prefix: b"ok".to_vec(),
    }
}

async fn state_of(store: &Shared, delivery: i64) -> DeliveryState {
    let all = store.deliveries(DeliveryQuery { limit: 1000, ..Default::default() }).await.unwrap();
    all.iter().find(|d| d.id == delivery).map(|d| d.state).expect("delivery listed")
}

async fn commits_an_event_with_one_delivery_per_destination(store: Shared) {
    let e = event("acme", &["crm", "analytics", "ticketing"]);
    assert_eq!(store.commit(e.clone()).await.unwrap(), Committed::New(Default::default()));
    assert_eq!(store.pending_deliveries(), 3);
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.pending, stats.delivered, stats.dead), (3, 0, 0));
    let detail = store.event(e.id).await.unwrap().expect("stored");
    assert_eq!(detail.body, e.body.to_vec());
    assert_eq!(detail.normalized.as_deref(), Some(&*e.normalized));
    assert_eq!(detail.content_type.as_deref(), Some("application/json"));
    assert_eq!(detail.query.as_deref(), Some("a=1"));
    assert_eq!(detail.summary.call_id.as_deref(), Some("c1"));
    let destinations: Vec<_> = detail.deliveries.iter().map(|d| d.destination.as_str()).collect();
    assert_eq!(destinations, ["crm", "analytics", "ticketing"]);
    assert!(detail.deliveries.iter().all(|d| d.state == DeliveryState::Pending && d.attempts.is_empty()));
    assert!(store.event(Uuid::now_v7()).await.unwrap().is_none());
}

async fn claims_lease_due_deliveries_once(store: Shared) {
    let events: Vec<_> = (0..5).map(|_| event("acme", &["crm", "analytics"])).collect();
    for e in &events {
        store.commit(e.clone()).await.unwrap();
    }
    let claim = store.claim(ClaimRequest { limit: 3, ..request("crm", LEASE) }).await.unwrap();
    assert_eq!(claim.deliveries.len(), 3, "limit honoured");
    let first = &claim.deliveries[0];
    assert_eq!(first.event_id, events[0].id, "oldest first");
    assert_eq!(first.attempt, 1);
    assert_eq!(&first.body[..], &events[0].body[..]);
    assert_eq!(first.normalized.as_deref(), Some(&*events[0].normalized));
    let rest = store.claim(request("crm", LEASE)).await.unwrap();
    assert_eq!(rest.deliveries.len(), 2, "leased deliveries are not handed out twice");
    let ids: HashSet<i64> = claim.deliveries.iter().chain(&rest.deliveries).map(|d| d.id).collect();
    assert_eq!(ids.len(), 5);
    let none = store.claim(request("crm", LEASE)).await.unwrap();
    assert!(none.deliveries.is_empty());
    let next_due = none.next_due.expect("leased deliveries come due at their lease's end");
    assert!(next_due >= now_ms() + LEASE.as_millis() as i64 - 5_000, "next due at the lease end, not now");
    assert_eq!(store.claim(request("analytics", LEASE)).await.unwrap().deliveries.len(), 5, "destinations apart");
    let other_tenant = ClaimRequest { tenant: "other".into(), ..request("crm", LEASE) };
    assert!(store.claim(other_tenant).await.unwrap().deliveries.is_empty());
}

async fn an_expired_lease_is_claimed_again_and_fences_the_old_holder(store: Shared) {
    store.commit(event("acme", &["crm"])).await.unwrap();
    let old = store.claim(request("crm", Duration::from_millis(1))).await.unwrap().deliveries.remove(0);
    // The holder "died": once its lease has run out, anyone may claim the delivery.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let new = loop {
        let mut claim = store.claim(request("crm", LEASE)).await.unwrap();
        if let Some(d) = claim.deliveries.pop() {
            break d;
        }
        assert!(std::time::Instant::now() < deadline, "the expired lease was never taken over");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(new.id, old.id);
    assert_ne!(new.lease, old.lease, "a new lease token");
    assert_eq!(new.attempt, 1, "an expired lease is not an attempt");
    // The old holder's late result is refused; the new holder's is recorded.
    let late = Completion { delivery: old.id, lease: old.lease, attempt: attempt(200), next: Next::Delivered };
    assert!(!store.complete(late).await.unwrap(), "a lost lease records nothing");
    assert_eq!(state_of(&store, new.id).await, DeliveryState::Pending);
    let done = Completion {
        delivery: new.id,
        lease: new.lease,
        attempt: attempt(500),
        next: Next::Dead { reason: "r".into() },
    };
    assert!(store.complete(done).await.unwrap());
    let records = store.deliveries_of(new.event_id).await.unwrap();
    assert_eq!(records[0].attempts.len(), 1, "only the holder's attempt is in the history");
    assert_eq!(records[0].attempts[0].status, Some(500));
    // And once finished, no lease at all can record over it.
    let again = Completion { delivery: new.id, lease: new.lease, attempt: attempt(200), next: Next::Delivered };
    assert!(!store.complete(again).await.unwrap());
}

async fn retries_wait_until_their_due_time(store: Shared) {
    store.commit(event("acme", &["crm"])).await.unwrap();
    let d = store.claim(request("crm", LEASE)).await.unwrap().deliveries.remove(0);
    let at = now_ms() + 3_600_000;
    let retry = Completion { delivery: d.id, lease: d.lease, attempt: attempt(503), next: Next::Retry { at } };
    assert!(store.complete(retry).await.unwrap());
    let claim = store.claim(request("crm", LEASE)).await.unwrap();
    assert!(claim.deliveries.is_empty(), "not before its due time");
    assert_eq!(claim.next_due, Some(at));
    assert_eq!(store.pending_deliveries(), 1, "a retry is still pending");
    let listed = store.deliveries(DeliveryQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!((listed[0].attempts, listed[0].due_at), (1, at));
    assert_eq!(listed[0].last_error.as_deref(), Some("HTTP 503"));

    // A retry already due is claimable at once, as the next attempt.
    store.commit(event("acme", &["ivr"])).await.unwrap();
    let d = store.claim(request("ivr", LEASE)).await.unwrap().deliveries.remove(0);
    let now =
        Completion { delivery: d.id, lease: d.lease, attempt: attempt(500), next: Next::Retry { at: now_ms() - 1 } };
    assert!(store.complete(now).await.unwrap());
    let d = store.claim(request("ivr", LEASE)).await.unwrap().deliveries.remove(0);
    assert_eq!(d.attempt, 2);
}

async fn dead_deliveries_are_kept_apart_and_replayed_as_a_new_series(store: Shared) {
    let e = event("acme", &["crm"]);
    store.commit(e.clone()).await.unwrap();
    for n in 1..=3 {
        let d = store.claim(request("crm", LEASE)).await.unwrap().deliveries.remove(0);
        assert_eq!(d.attempt, n);
        let next = if n < 3 {
            Next::Retry { at: now_ms() - 1 }
        } else {
            Next::Dead { reason: "gave up after 3 attempts".into() }
        };
        assert!(
            store.complete(Completion { delivery: d.id, lease: d.lease, attempt: attempt(500), next }).await.unwrap()
        );
    }
    assert_eq!(store.pending_deliveries(), 0);
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead), (0, 1));
    let dead = store
        .deliveries(DeliveryQuery { state: Some(DeliveryState::Dead), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error.as_deref(), Some("gave up after 3 attempts"));
    assert!(store.claim(request("crm", LEASE)).await.unwrap().deliveries.is_empty(), "dead is not claimable");

    assert_eq!(store.replay(dead[0].id).await.unwrap(), Replay::Queued);
    assert_eq!(store.replay(dead[0].id).await.unwrap(), Replay::AlreadyPending, "idempotent");
    assert_eq!(store.replay(i64::MAX).await.unwrap(), Replay::NotFound);
    assert_eq!(store.pending_deliveries(), 1);
    let d = store.claim(request("crm", LEASE)).await.unwrap().deliveries.remove(0);
    assert_eq!((d.event_id, d.attempt), (e.id, 1), "same event, attempts start over");
    assert!(
        store
            .complete(Completion { delivery: d.id, lease: d.lease, attempt: attempt(200), next: Next::Delivered })
            .await
            .unwrap()
    );
    let history = store.deliveries_of(e.id).await.unwrap();
    assert_eq!(history[0].state, DeliveryState::Delivered);
    let statuses: Vec<_> = history[0].attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(500), Some(200)], "history kept across the replay");
}

async fn bulk_replay_queues_each_finished_delivery_once(store: Shared) {
    for _ in 0..4 {
        store.commit(event("acme", &["crm"])).await.unwrap();
    }
    store.commit(event("acme", &["analytics"])).await.unwrap();
    for destination in ["crm", "analytics"] {
        for d in store.claim(request(destination, LEASE)).await.unwrap().deliveries {
            let next = Next::Dead { reason: "x".into() };
            store.complete(Completion { delivery: d.id, lease: d.lease, attempt: attempt(500), next }).await.unwrap();
        }
    }
    let filter = |limit| ReplayFilter {
        tenant: Some("acme".into()),
        destination: Some("crm".into()),
        state: DeliveryState::Dead,
        since: None,
        until: None,
        limit,
    };
    assert_eq!(store.replay_matching(filter(3)).await.unwrap(), 3, "at most the limit");
    assert_eq!(store.replay_matching(filter(100)).await.unwrap(), 1, "the rest, not those already queued");
    assert_eq!(store.replay_matching(filter(100)).await.unwrap(), 0);
    assert_eq!(store.claim(request("crm", LEASE)).await.unwrap().deliveries.len(), 4);
    assert!(store.claim(request("analytics", LEASE)).await.unwrap().deliveries.is_empty(), "filter honoured");
}

async fn release_gives_a_delivery_back_without_an_attempt(store: Shared) {
    store.commit(event("acme", &["crm"])).await.unwrap();
    let d = store.claim(request("crm", LEASE)).await.unwrap().deliveries.remove(0);
    store.release(d.id, d.lease).await.unwrap();
    let again = store.claim(request("crm", LEASE)).await.unwrap().deliveries.remove(0);
    assert_eq!((again.id, again.attempt), (d.id, 1));
    // A stale release (old token) does not free the new holder's lease.
    store.release(d.id, d.lease).await.unwrap();
    assert!(store.claim(request("crm", LEASE)).await.unwrap().deliveries.is_empty());
}

async fn dedupe_keys_hold_within_their_window_only(store: Shared) {
    let keyed =
        |key: &str, until: i64| NewEvent { dedupe: vec![Dedupe { key: key.into(), until }], ..event("acme", &["crm"]) };
    let first = keyed("call-1/completed", now_ms() + 60_000);
    assert_eq!(store.commit(first.clone()).await.unwrap(), Committed::New(Default::default()));
    let repeat = keyed("call-1/completed", now_ms() + 60_000);
    assert_eq!(store.commit(repeat.clone()).await.unwrap(), Committed::Duplicate(first.id));
    assert!(store.event(repeat.id).await.unwrap().is_none(), "a repeat stores nothing");
    assert_eq!(store.pending_deliveries(), 1);
    // Keys are per tenant and source.
    let other = NewEvent { tenant: "globex".into(), ..keyed("call-1/completed", now_ms() + 60_000) };
    assert_eq!(store.commit(other).await.unwrap(), Committed::New(Default::default()));
    // A window that has closed lets the key through again.
    let short = keyed("call-2/completed", now_ms() - 1);
    assert_eq!(store.commit(short).await.unwrap(), Committed::New(Default::default()));
    let later = keyed("call-2/completed", now_ms() + 60_000);
    assert_eq!(store.commit(later).await.unwrap(), Committed::New(Default::default()));
}

/// An event may carry several keys (the provider's, the signed message's): a repeat by one of
/// them is a repeat, and its other keys, written on the way, must not stay behind naming an
/// event that was never stored (a later callback with that key would be dropped as its repeat).
async fn a_repeat_by_any_of_its_keys_stores_nothing_and_keeps_none_of_them(store: Shared) {
    let keyed = |keys: &[&str]| NewEvent {
        dedupe: keys.iter().map(|k| Dedupe { key: (*k).into(), until: now_ms() + 60_000 }).collect(),
        ..event("acme", &["crm"])
    };
    let first = keyed(&["msg-1"]);
    assert_eq!(store.commit(first.clone()).await.unwrap(), Committed::New(Default::default()));
    // "call-1/answered" is new and sorts before "msg-1", which repeats the first event.
    let repeat = keyed(&["call-1/answered", "msg-1"]);
    assert_eq!(store.commit(repeat.clone()).await.unwrap(), Committed::Duplicate(first.id));
    assert!(store.event(repeat.id).await.unwrap().is_none(), "a repeat stores nothing");
    let later = keyed(&["call-1/answered"]);
    assert_eq!(store.commit(later.clone()).await.unwrap(), Committed::New(Default::default()), "the key stayed free");
    assert_eq!(store.commit(keyed(&["call-1/answered"])).await.unwrap(), Committed::Duplicate(later.id));
    assert_eq!(store.pending_deliveries(), 2);
}

async fn concurrent_repeats_store_one_event(store: Shared) {
    // Forty copies of one callback at once share group-commit batches (and, on a shared
    // store, compete across connections): exactly one is new, the rest name it.
    let commits: Vec<_> = (0..40)
        .map(|_| {
            let store = store.clone();
            let e = NewEvent {
                dedupe: vec![Dedupe { key: "call-9/answered".into(), until: now_ms() + 60_000 }],
                ..event("acme", &["crm"])
            };
            tokio::spawn(async move { store.commit(e).await.unwrap() })
        })
        .collect();
    let mut new = Vec::new();
    let mut named = HashSet::new();
    for commit in commits {
        match commit.await.unwrap() {
            Committed::New(_) => new.push(()),
            Committed::Duplicate(id) => {
                named.insert(id);
            }
        }
    }
    assert_eq!(new.len(), 1, "one new event");
    assert_eq!(named.len(), 1, "every repeat names the same stored event");
    let stored = store.events(EventQuery { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(named.contains(&stored[0].event_id));
}

async fn retention_purges_finished_work_and_keeps_pending(store: Shared) {
    let delivered = event("acme", &["crm"]);
    let dead = event("acme", &["analytics"]);
    let pending = event("acme", &["ivr"]);
    for e in [&delivered, &dead, &pending] {
        store.commit(e.clone()).await.unwrap();
    }
    let d = store.claim(request("crm", LEASE)).await.unwrap().deliveries.remove(0);
    store
        .complete(Completion { delivery: d.id, lease: d.lease, attempt: attempt(200), next: Next::Delivered })
        .await
        .unwrap();
    let d = store.claim(request("analytics", LEASE)).await.unwrap().deliveries.remove(0);
    let next = Next::Dead { reason: "x".into() };
    store.complete(Completion { delivery: d.id, lease: d.lease, attempt: attempt(500), next }).await.unwrap();

    // Dead work is kept longer: a cut-off that only reaches delivered work leaves it.
    let future = now_ms() + 1_000;
    let mut purged = 0;
    loop {
        let n = store.purge(future, 0, 1).await.unwrap();
        if n == 0 {
            break;
        }
        purged += n;
    }
    assert!(purged >= 3, "delivery, attempt and event went: {purged}");
    assert!(store.event(delivered.id).await.unwrap().is_none(), "the delivered event went");
    assert!(store.event(dead.id).await.unwrap().is_some(), "dead work kept for its own retention");
    assert!(store.event(pending.id).await.unwrap().is_some(), "pending work is never purged");
    store.purge(future, future, 100).await.unwrap();
    assert!(store.event(dead.id).await.unwrap().is_none());
    let kept = store.event(pending.id).await.unwrap().expect("pending kept");
    assert_eq!(kept.deliveries.len(), 1);
    assert_eq!(store.claim(request("ivr", LEASE)).await.unwrap().deliveries.len(), 1);
}

async fn pause_is_persisted(store: Shared) {
    store.set_paused("acme", "crm", true).await.unwrap();
    store.set_paused("acme", "crm", true).await.unwrap();
    store.set_paused("acme", "analytics", true).await.unwrap();
    store.set_paused("acme", "analytics", false).await.unwrap();
    assert_eq!(store.paused().await.unwrap(), [("acme".to_string(), "crm".to_string())]);
}

async fn listings_page_and_filter(store: Shared) {
    let mut ids = Vec::new();
    for n in 0..5 {
        let e = NewEvent {
            call_id: Some(format!("call-{n}")),
            // Calls 1 and 3 are from one number; call 4 is to it.
            from: Some(if n % 2 == 1 { "+919100000001".into() } else { format!("+91910000010{n}") }),
            to: Some(if n == 4 { "+919100000001".into() } else { "04461000000".into() }),
            ..event(if n % 2 == 0 { "acme" } else { "globex" }, &["crm"])
        };
        ids.push(e.id);
        store.commit(e).await.unwrap();
    }
    let page = store.events(EventQuery { limit: 2, ..Default::default() }).await.unwrap();
    assert_eq!(page.iter().map(|e| e.event_id).collect::<Vec<_>>(), [ids[4], ids[3]], "newest first");
    let next = store.events(EventQuery { limit: 2, before: Some(ids[3]), ..Default::default() }).await.unwrap();
    assert_eq!(next.iter().map(|e| e.event_id).collect::<Vec<_>>(), [ids[2], ids[1]]);
    let acme = store.events(EventQuery { tenant: Some("acme".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(acme.len(), 3);
    let call =
        store.events(EventQuery { call_id: Some("call-3".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(call.iter().map(|e| e.event_id).collect::<Vec<_>>(), [ids[3]]);
    // By phone number, from or to, with the other filters and the cursor.
    let number = |tenant: Option<&str>, before: Option<Uuid>| EventQuery {
        phone: Some("+919100000001".into()),
        tenant: tenant.map(str::to_string),
        before,
        limit: 10,
        ..Default::default()
    };
    let found = store.events(number(None, None)).await.unwrap();
    assert_eq!(found.iter().map(|e| e.event_id).collect::<Vec<_>>(), [ids[4], ids[3], ids[1]]);
    assert_eq!(found[0].to.as_deref(), Some("+919100000001"));
    assert_eq!(found[1].from.as_deref(), Some("+919100000001"));
    let acme = store.events(number(Some("acme"), None)).await.unwrap();
    assert_eq!(acme.iter().map(|e| e.event_id).collect::<Vec<_>>(), [ids[4]]);
    let older = store.events(number(None, Some(ids[3]))).await.unwrap();
    assert_eq!(older.iter().map(|e| e.event_id).collect::<Vec<_>>(), [ids[1]]);
    let deliveries = store
        .deliveries(DeliveryQuery { tenant: Some("globex".into()), limit: 1, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1);
    let older = store
        .deliveries(DeliveryQuery {
            tenant: Some("globex".into()),
            before: Some(deliveries[0].id),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(older.len(), 1);
    assert_eq!(older[0].event_id, ids[1]);
}

async fn responder_exchanges_are_recorded_as_finished_deliveries(store: Shared) {
    let e = event("acme", &[]);
    store.commit(e.clone()).await.unwrap();
    store.record_exchange(e.id, "acme", "ivr", attempt(200), true).await.unwrap();
    store.record_exchange(e.id, "acme", "ivr", attempt(500), false).await.unwrap();
    let records = store.deliveries_of(e.id).await.unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].state, DeliveryState::Delivered);
    assert_eq!((records[1].state, records[1].last_error.as_deref()), (DeliveryState::Dead, Some("HTTP 500")));
    assert_eq!(records[0].attempts[0].response_prefix, b"ok");
    assert_eq!(store.pending_deliveries(), 0);
}

/// Three nodes claim one queue at once: each delivery goes to exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nodes_never_claim_the_same_delivery() {
    let Some(url) = database().await else { return };
    let nodes = [pg(&url, "node-a").await, pg(&url, "node-b").await, pg(&url, "node-c").await];
    for _ in 0..300 {
        nodes[0].commit(event("acme", &["crm"])).await.unwrap();
    }
    let claimers: Vec<_> = nodes
        .iter()
        .map(|node| {
            let node = node.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let claim = node.claim(ClaimRequest { limit: 7, ..request("crm", LEASE) }).await.unwrap();
                    if claim.deliveries.is_empty() {
                        break mine;
                    }
                    for d in claim.deliveries {
                        let done =
                            Completion { delivery: d.id, lease: d.lease, attempt: attempt(200), next: Next::Delivered };
                        assert!(node.complete(done).await.unwrap());
                        mine.push(d.id);
                    }
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut per_node = Vec::new();
    for claimer in claimers {
        let mine = claimer.await.unwrap();
        per_node.push(mine.len());
        all.extend(mine);
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (300, 300), "each delivery claimed once: {per_node:?}");
    assert_eq!(nodes[1].queue_stats().await.unwrap().delivered, 300);
    for node in nodes {
        node.close().await;
    }
}

/// Several nodes starting at once on an empty database: one migrates, none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nodes_starting_together_migrate_once() {
    let Some(url) = database().await else { return };
    let opening: Vec<_> = (0..4)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move { pg(&url, &format!("n{i}")).await })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opening {
        stores.push(open.await.unwrap());
    }
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    // One row per migration, each applied once (not once per node).
    let versions: i64 = client.query_one("SELECT count(*) FROM switchboard_migrations", &[]).await.unwrap().get(0);
    let distinct: i64 =
        client.query_one("SELECT count(DISTINCT version) FROM switchboard_migrations", &[]).await.unwrap().get(0);
    let last: i32 = client.query_one("SELECT max(version) FROM switchboard_migrations", &[]).await.unwrap().get(0);
    assert_eq!((versions, distinct), (i64::from(last), i64::from(last)), "each of the {last} migrations once");
    for store in stores {
        store.close().await;
    }
}

/// The same callback reaching two nodes at once is one event: the unique key decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dedupe_holds_across_nodes() {
    let Some(url) = database().await else { return };
    let nodes = [pg(&url, "node-a").await, pg(&url, "node-b").await];
    let commits: Vec<_> = (0..40)
        .map(|i| {
            let node = nodes[i % 2].clone();
            let e = NewEvent {
                dedupe: vec![Dedupe { key: format!("call-{}/completed", i / 4), until: now_ms() + 60_000 }],
                ..event("acme", &["crm"])
            };
            tokio::spawn(async move { node.commit(e).await.unwrap() })
        })
        .collect();
    let mut new = 0;
    for commit in commits {
        if commit.await.unwrap() == Committed::New(Default::default()) {
            new += 1;
        }
    }
    assert_eq!(new, 10, "one event per distinct callback, whichever node took it");
    assert_eq!(nodes[1].queue_stats().await.unwrap().pending, 10);
    for node in nodes {
        node.close().await;
    }
}

/// A delivery whose stored data no longer decodes (an event id that is not a UUID, an event
/// row that is gone) ends dead at the claim with the reason: never handed out with a nil
/// webhook-id or an empty event, and never left to be claimed again forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_deliveries_with_undecodable_data_end_dead_at_the_claim() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path()).await;
    let (bad_id, gone, intact) = (event("acme", &["crm"]), event("acme", &["crm"]), event("acme", &["crm"]));
    for e in [&bad_id, &gone, &intact] {
        store.commit(e.clone()).await.unwrap();
    }
    assert_eq!(store.pending_deliveries(), 3);
    let raw = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    raw.busy_timeout(Duration::from_secs(5)).unwrap();
    raw.execute("UPDATE deliveries SET event_id = x'0102' WHERE event_id = ?1", [&bad_id.id.as_bytes()[..]]).unwrap();
    raw.execute("DELETE FROM events WHERE id = ?1", [&gone.id.as_bytes()[..]]).unwrap();

    let claim = store.claim(request("crm", Duration::from_secs(30))).await.unwrap();
    assert_eq!(claim.deliveries.iter().map(|d| d.event_id).collect::<Vec<_>>(), vec![intact.id]);
    assert_eq!(claim.dead, 2);
    assert_eq!(store.pending_deliveries(), 1, "the dead ones no longer count as pending");
    let mut reasons: Vec<(i64, String)> = raw
        .prepare("SELECT state, last_error FROM deliveries WHERE state != 0 ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            (2, "not sent: the delivery's event is no longer stored".to_string()),
            (2, "not sent: the stored event id is not a UUID".to_string()),
        ]
    );
    // Nothing is left to claim: the dead ones are not handed out again.
    assert!(store.claim(request("crm", Duration::from_secs(30))).await.unwrap().deliveries.is_empty());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_delivery_whose_event_is_gone_ends_dead_at_the_claim() {
    let Some(url) = database().await else { return };
    let store = pg(&url, "node-a").await;
    let (gone, intact) = (event("acme", &["crm"]), event("acme", &["crm"]));
    store.commit(gone.clone()).await.unwrap();
    store.commit(intact.clone()).await.unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.execute("DELETE FROM events WHERE id = $1", &[&gone.id]).await.unwrap();

    let claim = store.claim(request("crm", Duration::from_secs(30))).await.unwrap();
    assert_eq!(claim.deliveries.iter().map(|d| d.event_id).collect::<Vec<_>>(), vec![intact.id]);
    assert_eq!(claim.dead, 1);
    let row =
        client.query_one("SELECT state, last_error FROM deliveries WHERE event_id = $1", &[&gone.id]).await.unwrap();
    assert_eq!(
        (row.get::<_, i16>(0), row.get::<_, String>(1)),
        (2, "not sent: the delivery's event is no longer stored".into())
    );
    assert!(store.claim(request("crm", Duration::from_secs(30))).await.unwrap().deliveries.is_empty());
    store.close().await;
}

/// An event of `call` with a status of `rank`, to one destination that goes by call.
fn call_event(call: &str, rank: Option<i16>, sequence: Option<(i64, i64)>) -> NewEvent {
    NewEvent {
        destinations: vec![Target { destination: "crm".into(), by_call: true, lease: None }],
        call: Some(CallPlace { key: call.into(), rank, sequence }),
        call_id: Some(call.into()),
        ..event("acme", &[])
    }
}

fn by_call(calls: CallRules) -> ClaimRequest {
    ClaimRequest { calls, ..request("crm", LEASE) }
}

const ORDERED: CallRules = CallRules { ordered: true, supersede: false, live_ttl: None };

/// Claims and returns the claimed deliveries' event ids.
async fn claim_events(store: &Shared, calls: CallRules) -> Vec<(Uuid, ClaimedDelivery)> {
    let claim = store.claim(by_call(calls)).await.unwrap();
    claim.deliveries.into_iter().map(|d| (d.event_id, d)).collect()
}

async fn finish(store: &Shared, d: &ClaimedDelivery, next: Next) {
    let status = if next == Next::Delivered { 200 } else { 500 };
    assert!(
        store.complete(Completion { delivery: d.id, lease: d.lease, attempt: attempt(status), next }).await.unwrap()
    );
}

async fn an_ordered_call_goes_one_delivery_at_a_time_and_others_are_not_held(store: Shared) {
    let a: Vec<NewEvent> = (0..3).map(|_| call_event("call-a", Some(2), None)).collect();
    let b = call_event("call-b", Some(2), None);
    let loose = NewEvent { call: None, ..call_event("", None, None) };
    for e in a.iter().chain([&b, &loose]) {
        store.commit(e.clone()).await.unwrap();
    }
    // The first of each call, and the event that names no call.
    let first = claim_events(&store, ORDERED).await;
    let ids: HashSet<Uuid> = first.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, HashSet::from([a[0].id, b.id, loose.id]));
    // Nothing more of call-a while its first is in flight.
    assert!(claim_events(&store, ORDERED).await.is_empty());
    // A retry keeps the call's turn: call-a's second waits for its first, even past due.
    let a0 = &first.iter().find(|(id, _)| *id == a[0].id).unwrap().1;
    finish(&store, a0, Next::Retry { at: now_ms() - 1 }).await;
    let again = claim_events(&store, ORDERED).await;
    assert_eq!(again.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [a[0].id], "the retry, not the next event");
    finish(&store, &again[0].1, Next::Dead { reason: "gave up".into() }).await;
    // Dead ends its turn: the second goes, then the third after it.
    let second = claim_events(&store, ORDERED).await;
    assert_eq!(second.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [a[1].id]);
    finish(&store, &second[0].1, Next::Delivered).await;
    let third = claim_events(&store, ORDERED).await;
    assert_eq!(third.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [a[2].id]);
    // Unordered, the same destination would have sent every event of the call at once.
    let c: Vec<NewEvent> = (0..3).map(|_| call_event("call-c", Some(2), None)).collect();
    for e in &c {
        store.commit(e.clone()).await.unwrap();
    }
    assert_eq!(claim_events(&store, CallRules { ordered: false, ..ORDERED }).await.len(), 3);
}

async fn a_status_the_call_has_left_is_superseded_not_sent(store: Shared) {
    let supersede = CallRules { ordered: true, supersede: true, live_ttl: None };
    // completed arrives before ringing and in-progress.
    let completed = call_event("call-a", Some(4), None);
    let ringing = call_event("call-a", Some(2), None);
    let report = call_event("call-a", Some(4), None);
    for e in [&completed, &ringing, &report] {
        store.commit(e.clone()).await.unwrap();
    }
    let first = claim_events(&store, supersede).await;
    assert_eq!(first.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [completed.id]);
    finish(&store, &first[0].1, Next::Delivered).await;
    // ringing's turn: the call has left it, so it ends unsent; the report (same rank as
    // completed) is not stale and goes.
    let claim = store.claim(by_call(supersede)).await.unwrap();
    assert_eq!(claim.superseded, 1);
    assert_eq!(claim.deliveries.iter().map(|d| d.event_id).collect::<Vec<_>>(), [report.id]);
    let history = store.deliveries_of(ringing.id).await.unwrap();
    assert_eq!(history[0].state, DeliveryState::Superseded);
    let reason = history[0].last_error.as_deref().unwrap();
    assert!(reason.contains(&completed.id.to_string()), "{reason}");
    assert!(history[0].attempts.is_empty(), "never sent");
    // Queued behind: ringing then in-progress then completed, all waiting: only completed goes.
    let shuffled: Vec<NewEvent> = [Some(2), Some(3), Some(4)].map(|r| call_event("call-b", r, None)).into();
    for e in &shuffled {
        store.commit(e.clone()).await.unwrap();
    }
    let claim = store.claim(by_call(supersede)).await.unwrap();
    assert_eq!(claim.superseded, 2);
    assert_eq!(claim.deliveries.iter().map(|d| d.event_id).collect::<Vec<_>>(), [shuffled[2].id]);
    let stats = store.queue_stats().await.unwrap();
    assert_eq!(stats.superseded, 3);
    assert_eq!(store.pending_deliveries(), 2, "report and call-b's completed are in flight; nothing else pending");
    // A bulk replay of dead deliveries never brings a superseded one back.
    let replayed = store
        .replay_matching(ReplayFilter {
            tenant: None,
            destination: None,
            state: DeliveryState::Dead,
            since: None,
            until: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(replayed, 0);
    // An unknown status has no rank: it neither supersedes nor is superseded.
    let unknown = call_event("call-c", None, None);
    let ended = call_event("call-c", Some(4), None);
    store.commit(unknown.clone()).await.unwrap();
    store.commit(ended.clone()).await.unwrap();
    let claim = store.claim(by_call(CallRules { ordered: false, ..supersede })).await.unwrap();
    assert_eq!(claim.superseded, 0);
    assert_eq!(claim.deliveries.len(), 2);
}

async fn a_live_status_past_its_ttl_expires(store: Shared) {
    let ttl = CallRules { ordered: false, supersede: false, live_ttl: Some(Duration::from_secs(60)) };
    let old = |rank| NewEvent { received_at: now_ms() - 120_000, ..call_event("call-a", rank, None) };
    let (ringing, completed, fresh) = (old(Some(2)), old(Some(4)), call_event("call-b", Some(3), None));
    for e in [&ringing, &completed, &fresh] {
        store.commit(e.clone()).await.unwrap();
    }
    let claim = store.claim(by_call(ttl)).await.unwrap();
    assert_eq!(claim.expired, 1);
    let sent: HashSet<Uuid> = claim.deliveries.iter().map(|d| d.event_id).collect();
    assert_eq!(sent, HashSet::from([completed.id, fresh.id]), "a report keeps its retry deadline");
    assert_eq!(store.deliveries_of(ringing.id).await.unwrap()[0].state, DeliveryState::Expired);
    assert_eq!(store.queue_stats().await.unwrap().expired, 1);
}

async fn a_sequenced_call_waits_for_its_turn_within_the_window(store: Shared) {
    let later = now_ms() + 60_000;
    // Sequence 1 arrives before 0: it waits for 0, which goes at once.
    let one = call_event("call-a", Some(3), Some((1, later)));
    let zero = call_event("call-a", Some(2), Some((0, later)));
    store.commit(one.clone()).await.unwrap();
    store.commit(zero.clone()).await.unwrap();
    let first = claim_events(&store, ORDERED).await;
    assert_eq!(first.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [zero.id]);
    finish(&store, &first[0].1, Next::Delivered).await;
    // 1 follows the last one finished: it goes without waiting out its window.
    let second = claim_events(&store, ORDERED).await;
    assert_eq!(second.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [one.id]);
    finish(&store, &second[0].1, Next::Delivered).await;
    // A gap (3 without 2) waits for the window; the claim says when to look again.
    let three = call_event("call-a", Some(4), Some((3, later)));
    store.commit(three.clone()).await.unwrap();
    let claim = store.claim(by_call(ORDERED)).await.unwrap();
    assert!(claim.deliveries.is_empty());
    assert_eq!(claim.next_due, Some(later), "woken when the window ends");
    // Once the window has passed, it goes without 2.
    let five = call_event("call-b", Some(4), Some((5, now_ms() - 1)));
    store.commit(five.clone()).await.unwrap();
    let claimed = claim_events(&store, ORDERED).await;
    assert_eq!(claimed.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [five.id]);
}

fn change(tenant: &str, expect: Option<i64>, document: Option<&str>, secrets: &[(&str, Option<&[u8]>)]) -> Change {
    Change {
        tenant: tenant.to_string(),
        expect,
        document: document.map(str::to_string),
        secrets: secrets.iter().map(|(n, v)| (n.to_string(), v.map(<[u8]>::to_vec))).collect(),
        cancel: Vec::new(),
        audit: AuditEntry { actor: "admin".into(), kind: "tenant".into(), target: tenant.into(), action: "put".into() },
    }
}

async fn written(store: &Shared, change: Change) -> (i64, i64, bool) {
    match store.catalog_write(change).await.unwrap() {
        Written::Done { version, seq, created, .. } => (version, seq, created),
        other => panic!("not written: {other:?}"),
    }
}

async fn the_catalog_versions_every_change_and_keeps_tombstones(store: Shared) {
    assert_eq!(store.catalog_seq().await.unwrap(), 0);
    let (v1, s1, created) =
        written(&store, change("acme", None, Some("{}"), &[("a", Some(b"1")), ("b", Some(b"2"))])).await;
    assert_eq!((v1, created), (1, true));
    // A write on a version that moved writes nothing, not even a sequence number.
    let stale = store.catalog_write(change("acme", Some(7), Some("{\"x\":1}"), &[])).await.unwrap();
    assert_eq!(stale, Written::VersionMismatch { current: Some(1) });
    let missing = store.catalog_write(change("nobody", Some(1), Some("{}"), &[])).await.unwrap();
    assert_eq!(missing, Written::VersionMismatch { current: None });
    assert_eq!(store.catalog_seq().await.unwrap(), s1);
    let (v2, s2, created) = written(&store, change("acme", Some(1), Some("{\"x\":1}"), &[("a", None)])).await;
    assert_eq!((v2, s2 > s1, created), (2, true, false));
    let acme = store.catalog_tenant("acme").await.unwrap().unwrap();
    assert_eq!(acme.document.as_deref(), Some("{\"x\":1}"));
    assert_eq!(acme.secrets, vec![("b".to_string(), b"2".to_vec())]);
    written(&store, change("globex", None, Some("{}"), &[])).await;
    let listed: Vec<String> = store.catalog_list(None, 10).await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(listed, ["acme", "globex"]);
    assert_eq!(store.catalog_list(Some("acme".into()), 10).await.unwrap()[0].id, "globex");

    // Deleted: a tombstone that still numbers versions and tells other nodes.
    let before_delete = store.catalog_seq().await.unwrap();
    let (v3, ..) = written(&store, change("acme", Some(2), None, &[])).await;
    assert_eq!(v3, 3);
    let changes = store.catalog_changes(before_delete).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].id.as_str(), changes[0].document.is_none(), changes[0].secrets.len()), ("acme", true, 0));
    assert_eq!(store.catalog_list(None, 10).await.unwrap().len(), 1);
    let (v4, _, created) = written(&store, change("acme", None, Some("{}"), &[])).await;
    assert_eq!((v4, created), (4, true));
    let all = store.catalog_changes(0).await.unwrap();
    let seqs: Vec<i64> = all.iter().map(|t| t.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in sequence order: {seqs:?}");

    let audit = store.audit(Some("acme".into()), None, 10).await.unwrap();
    let versions: Vec<(Option<i64>, Option<i64>)> = audit.iter().map(|a| (a.before_version, a.after_version)).collect();
    assert_eq!(versions, [(None, Some(4)), (Some(2), None), (Some(1), Some(2)), (None, Some(1))]);
    let page = store.audit(Some("acme".into()), Some(audit[1].seq), 1).await.unwrap();
    assert_eq!(page[0].seq, audit[2].seq, "the cursor pages backwards");
}

async fn removing_a_destination_cancels_only_its_pending_deliveries(store: Shared) {
    written(&store, change("acme", None, Some("{}"), &[])).await;
    for _ in 0..3 {
        store.commit(event("acme", &["crm", "helpdesk"])).await.unwrap();
    }
    let claim = store.claim(request("helpdesk", Duration::from_secs(60))).await.unwrap();
    let done = &claim.deliveries[0];
    let completion = Completion { delivery: done.id, lease: done.lease, attempt: attempt(200), next: Next::Delivered };
    assert!(store.complete(completion).await.unwrap());
    let pending = store.pending_deliveries();
    let mut remove = change("acme", Some(1), Some("{}"), &[]);
    remove.cancel = vec!["helpdesk".into()];
    match store.catalog_write(remove).await.unwrap() {
        Written::Done { cancelled, .. } => assert_eq!(cancelled, 2, "the two still pending, leased or not"),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.pending_deliveries(), pending - 2);
    let cancelled = store
        .deliveries(DeliveryQuery {
            tenant: Some("acme".into()),
            state: Some(DeliveryState::Cancelled),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(cancelled.len(), 2);
    assert!(cancelled.iter().all(|d| d.destination == "helpdesk"));
    assert_eq!(state_of(&store, done.id).await, DeliveryState::Delivered, "finished work is left as it is");
    // A lease taken before the cancel records nothing now.
    let lost = &claim.deliveries[1];
    let late = Completion { delivery: lost.id, lease: lost.lease, attempt: attempt(200), next: Next::Delivered };
    assert!(!store.complete(late).await.unwrap());
    assert_eq!(state_of(&store, lost.id).await, DeliveryState::Cancelled);
    assert!(store.claim(request("helpdesk", Duration::from_secs(60))).await.unwrap().deliveries.is_empty());
    assert_eq!(store.claim(request("crm", Duration::from_secs(60))).await.unwrap().deliveries.len(), 3);
    assert_eq!(store.queue_stats().await.unwrap().cancelled, 2);
}

/// Deliveries committed for a destination after its removal had cancelled the others (by
/// requests still routing to it) are cancelled up to a time: one created later (the
/// destination added back), other destinations and other tenants are left as they are.
async fn what_a_removal_left_behind_is_cancelled_up_to_a_time(store: Shared) {
    let now = now_ms();
    let at =
        |tenant: &str, destinations: &[&str], received_at: i64| NewEvent { received_at, ..event(tenant, destinations) };
    store.commit(at("acme", &["crm", "helpdesk"], now - 2_000)).await.unwrap();
    store.commit(at("acme", &["helpdesk"], now - 1_000)).await.unwrap();
    store.commit(at("acme", &["helpdesk"], now + 60_000)).await.unwrap();
    store.commit(at("globex", &["helpdesk"], now - 1_000)).await.unwrap();
    let pending = store.pending_deliveries();
    assert_eq!(store.cancel_left_behind("acme", Some("helpdesk"), now).await.unwrap(), 2);
    assert_eq!(store.pending_deliveries(), pending - 2);
    let cancelled = |store: Shared| async move {
        let query = DeliveryQuery {
            tenant: Some("acme".into()),
            state: Some(DeliveryState::Cancelled),
            limit: 10,
            ..Default::default()
        };
        store.deliveries(query).await.unwrap()
    };
    let first = cancelled(store.clone()).await;
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|d| d.destination == "helpdesk" && d.created_at <= now));
    assert!(first.iter().all(|d| d.last_error.as_deref() == Some("cancelled: the destination was removed")));
    // A deleted tenant: every destination of its own.
    assert_eq!(store.cancel_left_behind("acme", None, now).await.unwrap(), 1, "the crm delivery");
    let all = cancelled(store.clone()).await;
    let crm = all.iter().find(|d| d.destination == "crm").expect("cancelled");
    assert_eq!(crm.last_error.as_deref(), Some("cancelled: the tenant was deleted"));
    assert_eq!(store.pending_deliveries(), pending - 3);
    assert_eq!(store.queue_stats().await.unwrap().pending, 2, "acme's later helpdesk delivery and globex's");
}

async fn keys_are_found_by_id_and_go_with_their_tenant(store: Shared) {
    written(&store, change("acme", None, Some("{}"), &[])).await;
    let audit = |action: &str| AuditEntry {
        actor: "admin".into(),
        kind: "key".into(),
        target: "k1".into(),
        action: action.into(),
    };
    let key = KeyRecord { key_id: "k1".into(), tenant: "acme".into(), hash: vec![1, 2, 3], created_at: now_ms() };
    assert!(store.key_create(key.clone(), audit("create")).await.unwrap());
    assert_eq!(store.key("k1").await.unwrap(), Some(key.clone()));
    assert_eq!(store.keys("acme").await.unwrap(), vec![key]);
    assert!(!store.key_delete("globex", "k1", audit("delete")).await.unwrap(), "another tenant's key id");
    written(&store, change("acme", Some(1), None, &[])).await;
    assert_eq!(store.key("k1").await.unwrap(), None, "a deleted tenant's keys go with it");
    let trail = store.audit(Some("acme".into()), None, 10).await.unwrap();
    assert_eq!(trail.iter().filter(|a| a.entry.kind == "key").count(), 1);
}

/// A commit hands deliveries over by writing them leased to its node: their ids come back in
/// the order of the leased targets, no claim hands them out while the lease holds, the lease
/// records their result, a release gives them to the queue, and an expired lease makes them
/// due for anyone (a node that died after the commit loses nothing).
async fn a_handed_over_delivery_is_committed_leased_and_comes_back_after_its_lease(store: Shared) {
    let mut e = event("acme", &["crm", "analytics", "ticketing"]);
    e.destinations[0].lease = Some(LEASE);
    e.destinations[2].lease = Some(Duration::from_millis(1));
    let Committed::New(leased) = store.commit(e.clone()).await.unwrap() else { panic!("a new event") };
    assert_eq!(leased.ids.len(), 2, "one id per leased target");
    assert!(leased.lease > 0);
    assert_eq!(store.pending_deliveries(), 3, "leased deliveries are pending until recorded");
    let detail = store.event(e.id).await.unwrap().expect("stored");
    let id_of = |d: &str| detail.deliveries.iter().find(|x| x.destination == d).map(|x| x.id).unwrap();
    assert_eq!(leased.ids, [id_of("crm"), id_of("ticketing")], "ids in the order of the leased targets");

    assert!(store.claim(request("crm", LEASE)).await.unwrap().deliveries.is_empty(), "held by its lease");
    let analytics = store.claim(request("analytics", LEASE)).await.unwrap();
    assert_eq!(analytics.deliveries.len(), 1, "a target without a lease is queued as before");

    let done =
        Completion { delivery: leased.ids[0], lease: leased.lease, attempt: attempt(200), next: Next::Delivered };
    assert!(store.complete(done).await.unwrap(), "the commit's lease records the result");
    assert_eq!(state_of(&store, leased.ids[0]).await, DeliveryState::Delivered);
    assert_eq!(store.pending_deliveries(), 2);

    // The short lease ran out: the delivery is due again, and the old lease is fenced.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let again = loop {
        let mut claim = store.claim(request("ticketing", LEASE)).await.unwrap();
        if let Some(d) = claim.deliveries.pop() {
            break d;
        }
        assert!(std::time::Instant::now() < deadline, "the expired hand-over lease was never taken over");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(again.id, leased.ids[1]);
    assert_eq!(again.attempt, 1, "a hand-over that was never sent is not an attempt");
    assert_eq!(&again.body[..], &e.body[..]);
    let late =
        Completion { delivery: leased.ids[1], lease: leased.lease, attempt: attempt(200), next: Next::Delivered };
    assert!(!store.complete(late).await.unwrap(), "the lapsed hand-over lease records nothing");

    // A release gives a handed-over delivery to the queue at once.
    let mut f = event("acme", &["crm"]);
    f.destinations[0].lease = Some(LEASE);
    let Committed::New(held) = store.commit(f).await.unwrap() else { panic!("a new event") };
    store.release(held.ids[0], held.lease).await.unwrap();
    let claimed = store.claim(request("crm", LEASE)).await.unwrap();
    assert_eq!(claimed.deliveries.iter().map(|d| d.id).collect::<Vec<_>>(), held.ids);
}

/// A plan a connection keeps is made once. Made while the queue was small (a fresh database,
/// a quiet hour), the completion's plan found a batch's rows by reading every pending
/// delivery, so each batch cost as much as the backlog. Warm every pooled connection up on a
/// queue of one (its statistics taken), build a backlog for another destination, then send
/// and complete: the queue is read for what is sent, not once per pending delivery per batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_plans_made_on_a_small_queue_do_not_scan_a_large_one() {
    let Some(url) = database().await else { return };
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let node = pg(&url, "node-a").await;
    let cycle = |node: Shared| async move {
        node.commit(event("acme", &["crm"])).await.unwrap();
        for d in node.claim(request("crm", LEASE)).await.unwrap().deliveries {
            let done = Completion { delivery: d.id, lease: d.lease, attempt: attempt(200), next: Next::Delivered };
            assert!(node.complete(done).await.unwrap(), "recorded");
        }
    };
    for _ in 0..10 {
        cycle(node.clone()).await;
    }
    // Statistics that say "small" (autovacuum's view of a fresh database), before the plans
    // are kept: PostgreSQL keeps a generic plan after 5 runs on each of the pool's 8 connections.
    client.batch_execute("ANALYZE deliveries; ANALYZE events; ANALYZE dedupe").await.unwrap();
    for _ in 0..70 {
        cycle(node.clone()).await;
    }
    const BACKLOG: i64 = 5_000;
    client
        .execute(
            "INSERT INTO deliveries (event_id, tenant, destination, created_at, due_at)
             SELECT gen_random_uuid(), 'acme', 'backlog', 0, 0 FROM generate_series(1, $1::int8)",
            &[&BACKLOG],
        )
        .await
        .unwrap();
    for _ in 0..40 {
        cycle(node.clone()).await;
    }
    node.close().await;
    // A backend hands its statistics over as it exits: wait for the store's to be gone.
    let mut left = i64::MAX;
    for _ in 0..200 {
        left = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "the store's connections closed");
    let read = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let queue = read("SELECT idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'deliveries_queue'").await;
    let scanned = read("SELECT coalesce(seq_tup_read, 0) FROM pg_stat_user_tables WHERE relname = 'deliveries'").await;
    // A scan of the backlog per completion reads 40 × 5,000 rows; the pending gauge's count,
    // once a second, reads it once.
    assert!(queue < 10 * BACKLOG, "the queue index was read {queue} times for 120 deliveries");
    assert!(scanned < 10 * BACKLOG, "deliveries were scanned {scanned} rows for 120 deliveries");
}
