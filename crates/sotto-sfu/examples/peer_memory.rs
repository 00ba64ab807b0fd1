//! Heap bytes the SFU core holds per listener (issue 10: "≤ 50 KB of server
//! memory per listener"), counted by a global allocator rather than read
//! off RSS: offered and answered (before ICE), then connected (ICE, DTLS,
//! SRTP), then after each listener received a second of audio. The test
//! clients (str0m peers in the same process) are dropped before each count
//! that is attributed to the SFU. Virtual time, the in-memory network of
//! the SFU's tests.
//!
//! `cargo run --release -p sotto-sfu --example peer_memory [N]` (N ≤ 240).

#[path = "../tests/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use common::World;
use sotto_sfu::SfuConfig;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn kib(bytes: isize, n: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / n as f64 / 1024.0)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100)
        .clamp(1, 240);
    let config = SfuConfig::default();
    let slots = config.slots;
    let mut w = World::new(config, 1);
    let base = live();
    for _ in 0..n {
        w.add_client(slots);
    }
    let offered = live() - base;
    w.connect_all();
    let connected = live() - base;
    w.start_talking(0, -20);
    w.run_for(Duration::from_secs(1));
    let talked = live() - base;
    // The clients' share: drop them, count what the SFU alone still holds.
    w.clients.clear();
    w.net = common::Net::new(2);
    let sfu = live() - base;
    println!("{n} peers, {slots} receive slots each (heap bytes, live, per peer)");
    println!("  offered+answered, SFU and clients: {}", kib(offered, n));
    println!("  connected, SFU and clients:        {}", kib(connected, n));
    println!("  after 1 s of audio, both:          {}", kib(talked, n));
    println!("  after 1 s of audio, SFU only:      {}", kib(sfu, n));
}
