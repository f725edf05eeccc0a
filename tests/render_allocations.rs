//! Allocation budgets of the hot path, counted by a global allocator (a separate test
//! binary for that reason; its tests take turns, as the counters are global):
//! - rendering allocates nothing but its output buffer: with the buffer already sized, a
//!   typical destination (URL with 3 placeholders, 10-field JSON body) renders with zero
//!   allocations;
//! - a parsed payload costs a bounded multiple of its body, even for the body built to
//!   cost the most (256 KiB of ~29,000 one-digit fields): the figure behind ingest's
//!   memory budget (docs/reliability.md).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

#[path = "../benches/render.rs"]
#[allow(dead_code)]
mod bench;

struct Counting;

thread_local! {
    /// Allocations made by this thread: the test harness allocates on its own threads meanwhile.
    static ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn allocated() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn allocations() -> usize {
    ALLOCATIONS.with(|n| n.get())
}
/// Bytes allocated and not yet freed, and the most there have been since the last reset.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::SeqCst) + bytes;
    PEAK.fetch_max(live, Ordering::SeqCst);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        allocated();
        grew(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        allocated();
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        grew(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_typical_render_allocates_only_its_output() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    use switchboard::normalize::Payload;
    use switchboard::template::{Data, Kind, Template};
    let url = Template::compile(bench::URL, Kind::Url, &|_| None).unwrap();
    let body = Template::compile(bench::BODY, Kind::JsonBody, &|_| None).unwrap();
    let event = bench::event();
    let payload = Payload::default();
    let data = Data { event: &event, payload: &payload };
    let mut out = String::with_capacity(4096);
    url.render(&data, &mut out);
    body.render(&data, &mut out);
    let expected = out.clone();

    let before = allocations();
    for _ in 0..100 {
        out.clear();
        url.render(&data, &mut out);
        body.render(&data, &mut out);
    }
    let allocations = allocations() - before;
    assert_eq!(out, expected);
    assert_eq!(allocations, 0, "{allocations} allocations in 100 renders");
}

/// The measured factor is printed (`cargo test --test render_allocations -- --nocapture`)
/// and bounded here, so a change that makes parsing costlier per byte fails.
#[test]
fn a_parsed_payload_costs_a_bounded_multiple_of_its_body() {
    use switchboard::ingest::payload::{Kind, fields};
    const LIMIT: usize = 256 * 1024;
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut body = b"{".to_vec();
    let mut i = 0usize;
    while body.len() + 16 < LIMIT {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(format!("\"{i:x}\":1").as_bytes());
        i += 1;
    }
    body.push(b'}');
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let payload = fields(Some(Kind::Json), &body, None).unwrap();
    let held = LIVE.load(Ordering::SeqCst) - before;
    let peak = PEAK.load(Ordering::SeqCst) - before;
    drop(payload);
    let factor = peak as f64 / body.len() as f64;
    eprintln!(
        "{} bytes, {i} fields: parsed form holds {held} bytes ({:.1}x), peak while parsing {peak} bytes ({factor:.1}x)",
        body.len(),
        held as f64 / body.len() as f64
    );
    // Measured 25.6x (6.7 MB for 256 KiB: a map entry, a key and a number per 9 bytes).
    assert!(factor < 32.0, "a parsed payload peaked at {factor:.1}x its body");
}
