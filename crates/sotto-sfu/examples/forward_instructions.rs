//! The SFU core's cost per forwarded copy in instructions, which hold on a
//! noisy machine where CPU seconds do not (issue 10): N listeners and one
//! speaker in virtual time over the in-memory network of the SFU's tests;
//! after three seconds of warm-up, T seconds of speech. Run it under callgrind,
//! counting only inside `Sfu::handle_datagram` (the core's whole work for
//! a datagram: the speaker's SRTP, the fan-out, each copy's seal):
//!
//! ```text
//! cargo build --release -p sotto-sfu --example forward_instructions
//! valgrind --tool=callgrind --collect-atstart=no \
//!   --toggle-collect='*Sfu::handle_datagram*' --callgrind-out-file=cg.out \
//!   target/release/examples/forward_instructions 100 2
//! ```
//!
//! Instructions per copy = the `Ir` total ÷ the copies it prints. The
//! listeners' own work (str0m test clients) is outside the count.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::World;
use sotto_sfu::SfuConfig;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(100)
        .clamp(2, 240);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let config = SfuConfig::default();
    let slots = config.slots;
    let mut w = World::new(config, 1);
    for _ in 0..n {
        w.add_client(slots);
    }
    w.connect_all();
    w.sfu
        .set_may_publish(common::peer_id(0), true)
        .expect("the speaker is a peer");
    w.start_talking(0, -20);
    // Every handshake done and the slots settled before counting.
    w.run_for(Duration::from_secs(3));
    let before = w.sfu.stats();
    w.run_for(Duration::from_secs(seconds));
    let after = w.sfu.stats();
    let copies = after.rtp_forwarded - before.rtp_forwarded;
    let direct = after.rtp_forwarded_direct - before.rtp_forwarded_direct;
    println!(
        "{n} peers, {seconds} s: {} speaker packets in, {copies} copies out ({direct} sealed by the SFU)",
        after.rtp_received - before.rtp_received
    );
}
