//! Forwarding a packet allocates nothing per listener (issue 10): the
//! heap allocations the SFU core makes per incoming datagram, counted by a
//! global allocator, are the same with 2 and with 30 listeners (each copy
//! is sealed into a datagram buffer the driver gave back).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::World;
use sotto_sfu::SfuConfig;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call goes straight to the system allocator; the wrapper
// only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's layout contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Heap allocations inside `Sfu::handle_datagram`, per datagram from the
/// speaker, while it talks to `listeners` listeners for a second (after a
/// warm-up).
fn allocations_per_datagram(listeners: usize) -> f64 {
    let config = SfuConfig {
        direct_send: true,
        ..SfuConfig::default()
    };
    let mut w = World::new(config.clone(), 11);
    for _ in 0..=listeners {
        w.add_client(config.slots);
    }
    w.connect_all();
    let speaker = w.clients[0].id;
    w.sfu.set_may_publish(speaker, true).expect("known peer");
    w.start_talking(0, -20);
    w.run_for(Duration::from_secs(1));
    w.alloc_probe = Some(allocations);
    w.alloc_probe_source = Some(w.clients[0].addr);
    let forwarded = w.sfu.stats().rtp_forwarded;
    w.run_for(Duration::from_secs(1));
    let copies = w.sfu.stats().rtp_forwarded - forwarded;
    assert!(
        copies >= 45 * listeners as u64,
        "{copies} copies to {listeners} listeners in a second"
    );
    assert_eq!(
        w.sfu.stats().rtp_forwarded_direct,
        w.sfu.stats().rtp_forwarded,
        "every copy on the fast path"
    );
    w.sfu_allocations as f64 / w.sfu_datagrams as f64
}

#[test]
fn forwarding_allocates_nothing_per_listener() {
    let few = allocations_per_datagram(2);
    let many = allocations_per_datagram(30);
    // One allocation per copy would add 28 per speaker datagram here.
    assert!(
        many < few + 1.0,
        "allocations per datagram: {few:.1} with 2 listeners, {many:.1} with 30"
    );
    eprintln!("allocations per datagram: {few:.1} with 2 listeners, {many:.1} with 30");
}
