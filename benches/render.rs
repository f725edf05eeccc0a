//! Rendering a typical destination: a URL with 3 placeholders and a 10-field JSON body.
//! Run: `cargo bench --bench render`. The figure is recorded in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchboard::normalize::{CallEvent, Direction, Payload, Status};
use switchboard::template::{Data, Kind, Template};

pub const URL: &str = "https://crm.example.com/ack/receive?id=<<id>>&to=<<to>>&status=<<status>>";
pub const BODY: &str = r#"{
  "id": "<<id>>",
  "session": "<<session_id>>",
  "event": "<<event>>",
  "direction": "<<direction>>",
  "from": "<<from>>",
  "to": "<<to>>",
  "agent": <<agent>>,
  "status": "<<status>>",
  "duration": <<duration>>,
  "recording": <<recording_url>>
}"#;

pub fn event() -> CallEvent {
    CallEvent {
        event_id: "01a20f75-9d50-7538-8344-a6a6ad00004b".into(),
        tenant: "acme".into(),
        source: "mobtexting".into(),
        provider: "mobtexting".into(),
        received_at: "2021-04-09T16:28:20+05:30".into(),
        id: Some("1234-1333-XXXXX".into()),
        session_id: Some("703ee423-e5f8-4120-9c17-5216c679afdd".into()),
        event: Some("report".into()),
        direction: Some(Direction::Outbound),
        from: Some("91891952XXXX".into()),
        to: Some("91886713XXXX".into()),
        agent: Some("928xxxxx".into()),
        status: Status::Completed,
        provider_status: Some("ANSWER".into()),
        duration: Some(23),
        recording_url: Some("https://youraudiofilelocation/rec.mp3".into()),
        ..CallEvent::default()
    }
}

fn render(c: &mut Criterion) {
    let url = Template::compile(URL, Kind::Url, &|_| None).unwrap();
    let body = Template::compile(BODY, Kind::JsonBody, &|_| None).unwrap();
    let event = event();
    let payload = Payload::default();
    let data = Data { event: &event, payload: &payload };
    let mut out = String::with_capacity(1024);
    let mut group = c.benchmark_group("template");
    group.throughput(Throughput::Elements(1));
    group.bench_function("render url + 10-field json body", |b| {
        b.iter(|| {
            out.clear();
            url.render(black_box(&data), &mut out);
            body.render(black_box(&data), &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
