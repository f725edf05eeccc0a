//! Rendering allocates nothing but its output buffer: with the buffer already sized, a
//! typical destination (URL with 3 placeholders, 10-field JSON body) renders with zero
//! allocations. A separate test binary, because it installs a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

#[path = "../benches/render.rs"]
#[allow(dead_code)]
mod bench;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_typical_render_allocates_only_its_output() {
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

    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..100 {
        out.clear();
        url.render(&data, &mut out);
        body.render(&data, &mut out);
    }
    let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;
    assert_eq!(out, expected);
    assert_eq!(allocations, 0, "{allocations} allocations in 100 renders");
}
