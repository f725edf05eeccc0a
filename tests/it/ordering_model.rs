//! The per-call rules as a model: a few lines of plain Rust that say which deliveries a
//! claim may hand out and which it ends as superseded, checked against the real store (a
//! SQLite file) over random interleavings of commits, claims and results.

use std::time::Duration;

use proptest::prelude::*;
use switchboard::config::CallRules;
use switchboard::store::{
    AttemptRecord, CallPlace, ClaimRequest, ClaimedDelivery, Completion, NewEvent, Next, Target, now_ms,
};
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Op {
    /// An event of call `call` (`None`: names no call) with a status of `rank`.
    Commit {
        call: Option<u8>,
        rank: Option<i16>,
    },
    Claim,
    /// The result of the `n`-th delivery in flight (modulo how many are).
    Finish {
        n: usize,
        outcome: Outcome,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Retry,
    Dead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    InFlight,
    Delivered,
    Dead,
    Superseded,
}

#[derive(Debug)]
struct Delivery {
    event: Uuid,
    call: Option<u8>,
    rank: Option<i16>,
    state: State,
}

/// What a claim must do, by the rules in docs/configuration.md: returns the indexes it
/// hands out and the ones it supersedes.
fn model_claim(all: &mut [Delivery], rules: CallRules) -> (Vec<usize>, Vec<usize>) {
    let (mut handed, mut superseded) = (Vec::new(), Vec::new());
    loop {
        let waiting_behind = |i: usize, all: &[Delivery]| {
            rules.ordered
                && all[i].call.is_some()
                && all.iter().enumerate().any(|(j, p)| {
                    j != i
                        && p.call == all[i].call
                        && (p.state == State::InFlight || (p.state == State::Pending && j < i))
                })
        };
        let candidates: Vec<usize> =
            (0..all.len()).filter(|&i| all[i].state == State::Pending && !waiting_behind(i, all)).collect();
        if candidates.is_empty() {
            break;
        }
        let stale: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| {
                rules.supersede
                    && all[i].call.is_some()
                    && all.iter().enumerate().any(|(j, s)| {
                        j != i
                            && s.call == all[i].call
                            && matches!((s.rank, all[i].rank), (Some(a), Some(b)) if a > b)
                            && matches!(s.state, State::Pending | State::InFlight | State::Delivered)
                    })
            })
            .collect();
        for &i in &candidates {
            if stale.contains(&i) {
                all[i].state = State::Superseded;
                superseded.push(i);
            } else {
                all[i].state = State::InFlight;
                handed.push(i);
            }
        }
        if stale.is_empty() {
            break;
        }
    }
    (handed, superseded)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (proptest::option::weighted(0.85, 0u8..3), proptest::option::weighted(0.85, 1i16..5))
            .prop_map(|(call, rank)| Op::Commit { call, rank }),
        3 => Just(Op::Claim),
        3 => (0usize..8, prop_oneof![Just(Outcome::Delivered), Just(Outcome::Retry), Just(Outcome::Dead)])
            .prop_map(|(n, outcome)| Op::Finish { n, outcome }),
    ]
}

async fn run(ops: Vec<Op>, rules: CallRules) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::sqlite(dir.path()).await;
    let mut model: Vec<Delivery> = Vec::new();
    let mut in_flight: Vec<(usize, ClaimedDelivery)> = Vec::new();
    for op in ops {
        match op {
            Op::Commit { call, rank } => {
                let event = NewEvent {
                    id: Uuid::now_v7(),
                    tenant: "acme".into(),
                    source: "s".into(),
                    received_at: now_ms(),
                    content_type: None,
                    query: None,
                    body: bytes::Bytes::from_static(b"{}"),
                    normalized: "{}".into(),
                    destinations: vec![Target { destination: "crm".into(), by_call: true, lease: None }],
                    call: call.map(|c| CallPlace { key: format!("call-{c}"), rank, sequence: None }),
                    dedupe: Vec::new(),
                    call_id: None,
                    from: None,
                    to: None,
                };
                store.commit(event.clone()).await.unwrap();
                model.push(Delivery { event: event.id, call, rank, state: State::Pending });
            }
            Op::Claim => {
                let request = ClaimRequest {
                    tenant: "acme".into(),
                    destination: "crm".into(),
                    limit: 100,
                    lease: Duration::from_secs(60),
                    calls: rules,
                };
                let claim = store.claim(request).await.unwrap();
                let (handed, superseded) = model_claim(&mut model, rules);
                let mut expected: Vec<Uuid> = handed.iter().map(|&i| model[i].event).collect();
                let mut got: Vec<Uuid> = claim.deliveries.iter().map(|d| d.event_id).collect();
                expected.sort();
                got.sort();
                prop_assert_eq!(got, expected, "handed out");
                prop_assert_eq!(claim.superseded, superseded.len() as u64, "superseded");
                for d in claim.deliveries {
                    let i = model.iter().position(|m| m.event == d.event_id).unwrap();
                    in_flight.push((i, d));
                }
                if rules.ordered {
                    // Never two of one call in flight.
                    let mut calls: Vec<u8> = in_flight.iter().filter_map(|(i, _)| model[*i].call).collect();
                    let all = calls.len();
                    calls.sort();
                    calls.dedup();
                    prop_assert_eq!(calls.len(), all, "two deliveries of one call in flight");
                }
            }
            Op::Finish { n, outcome } => {
                if in_flight.is_empty() {
                    continue;
                }
                let (i, d) = in_flight.remove(n % in_flight.len());
                let (next, state) = match outcome {
                    Outcome::Delivered => (Next::Delivered, State::Delivered),
                    // Due again at once: only the call's turn can hold it back.
                    Outcome::Retry => (Next::Retry { at: now_ms() - 1 }, State::Pending),
                    Outcome::Dead => (Next::Dead { reason: "gave up".into() }, State::Dead),
                };
                let attempt = AttemptRecord {
                    started_at: now_ms(),
                    latency: Duration::from_millis(1),
                    status: Some(if outcome == Outcome::Delivered { 200 } else { 500 }),
                    error: None,
                    response_prefix: Vec::new(),
                };
                let recorded =
                    store.complete(Completion { delivery: d.id, lease: d.lease, attempt, next }).await.unwrap();
                prop_assert!(recorded, "the lease was held");
                model[i].state = state;
            }
        }
    }
    store.close().await;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_store_claims_as_the_model_says(
        ops in proptest::collection::vec(op(), 1..40),
        ordered in any::<bool>(),
        supersede in any::<bool>(),
    ) {
        let rules = CallRules { ordered, supersede, live_ttl: None };
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.block_on(run(ops, rules))?;
    }
}
