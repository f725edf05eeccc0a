//! The hot path's pieces: normalizing each seed payload, verifying an HMAC signature, and
//! the group commit into SQLite at several batch sizes.
//! Run: `cargo bench --bench pipeline`. Figures are recorded in BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchboard::auth::signatures::{Algorithm, equal};
use switchboard::config::Provider;
use switchboard::ingest::payload::{self, Kind};
use switchboard::normalize::{self, Context};
use switchboard::store::{NewEvent, Store};

fn seed(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/seeds/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn normalization(c: &mut Criterion) {
    let tz = jiff::tz::TimeZone::get("Asia/Kolkata").unwrap();
    let mut group = c.benchmark_group("normalize");
    group.throughput(Throughput::Elements(1));
    for (provider, file) in [
        (Provider::Wavecell, "wavecell.json"),
        (Provider::Telecmi, "telecmi.json"),
        (Provider::Mobtexting, "mobtexting.json"),
        (Provider::Callerdesk, "callerdesk.json"),
    ] {
        let body = seed(file);
        group.bench_function(BenchmarkId::new("parse + normalize", provider.name()), |b| {
            b.iter(|| {
                let fields = payload::fields(Some(Kind::Json), black_box(&body), None).unwrap();
                let context =
                    Context { event_id: "e", tenant: "acme", source: "s", provider, received_at: 0, timezone: &tz };
                black_box(normalize::normalize(&fields, &context))
            })
        });
    }
    group.finish();
}

fn hmac(c: &mut Criterion) {
    let body = seed("callerdesk.json");
    let expected = Algorithm::Sha256.mac(b"hmac-key", &[&body]);
    let mut group = c.benchmark_group("auth");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hmac-sha256 verify (callerdesk seed)", |b| {
        b.iter(|| equal(&Algorithm::Sha256.mac(b"hmac-key", &[black_box(&body)]), &expected))
    });
    group.finish();
}

fn group_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = switchboard::config::Store {
        backend: switchboard::config::Backend::Sqlite { path: dir.path().join("bench.db") },
        synchronous: switchboard::config::Synchronous::Full,
        max_size_bytes: None,
        retention: std::time::Duration::from_secs(3600),
        dead_retention: std::time::Duration::from_secs(3600),
    };
    let switchboard::config::Backend::Sqlite { path } = &config.backend else { unreachable!() };
    let store: Arc<dyn Store> = Arc::new(switchboard::store::SqliteStore::open(path, &config, "bench").unwrap());
    let body = Bytes::from(seed("telecmi.json"));
    let mut group = c.benchmark_group("group commit (fsync on)");
    for batch in [1usize, 16, 128, 1024] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(BenchmarkId::new("events with 3 deliveries", batch), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let commits = (0..batch).map(|_| {
                        let store = store.clone();
                        let event = NewEvent {
                            id: uuid::Uuid::now_v7(),
                            tenant: "bench".into(),
                            source: "telecmi".into(),
                            received_at: switchboard::store::now_ms(),
                            content_type: Some("application/json".into()),
                            query: None,
                            body: body.clone(),
                            normalized: "{}".into(),
                            destinations: vec!["a".into(), "b".into(), "c".into()],
                            call: None,
                            dedupe: Vec::new(),
                            call_id: None,
                            from: None,
                            to: None,
                        };
                        tokio::spawn(async move { store.commit(event).await.unwrap() })
                    });
                    for commit in commits.collect::<Vec<_>>() {
                        commit.await.unwrap();
                    }
                })
            })
        });
    }
    group.finish();
    runtime.block_on(store.close());
}

criterion_group!(benches, normalization, hmac, group_commit);
criterion_main!(benches);
