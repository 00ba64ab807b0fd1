//! Per-datagram work does not grow with the number of peers (issue 10):
//! the SFU core's peer visits per datagram, counted in virtual time, are
//! the same with 10 and with 1,000 other peers in the process.

mod common;

use std::time::Duration;

use common::World;
use sotto_sfu::{PeerId, RoomKey, SfuConfig};
use str0m::Rtc;
use str0m::media::{Direction, MediaKind};

/// Adds `n` peers to another room: offered and answered, never connected
/// (each has str0m timers and a place in every map the SFU keeps).
fn add_idle_peers(w: &mut World, n: usize) {
    let other = RoomKey::from_bytes([0x0e; 16]);
    for i in 0..n {
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .build(w.now);
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, _pending) = api.apply().expect("offer");
        let mut id = [0xa0u8; 16];
        id[..8].copy_from_slice(&(i as u64).to_be_bytes());
        w.sfu
            .add_peer(w.now, PeerId::from_bytes(id), other, &offer.to_sdp_string())
            .expect("idle peer added");
    }
}

/// Peer visits per datagram while one speaker talks to two listeners for a
/// second, with `idle` other peers in the process.
fn visits_per_datagram(idle: usize) -> f64 {
    let config = SfuConfig::default();
    let mut w = World::new(config.clone(), 10);
    for _ in 0..3 {
        w.add_client(config.slots);
    }
    add_idle_peers(&mut w, idle);
    w.connect_all();
    let speaker = w.clients[0].id;
    w.sfu.set_may_publish(speaker, true).expect("known peer");
    w.start_talking(0, -20);
    w.run_for(Duration::from_millis(500));
    let (v0, d0) = (w.sfu.peer_visits(), w.sfu.stats().datagrams_in);
    w.run_for(Duration::from_secs(1));
    let (v1, d1) = (w.sfu.peer_visits(), w.sfu.stats().datagrams_in);
    assert!(d1 - d0 >= 50, "the speaker's packets arrived");
    assert_eq!(w.sfu.stats().peers, 3 + idle as u64);
    (v1 - v0) as f64 / (d1 - d0) as f64
}

#[test]
fn per_datagram_work_does_not_grow_with_peers() {
    let few = visits_per_datagram(10);
    let many = visits_per_datagram(1_000);
    // One visit of the sender, one poll of it, and for a speaker's packet
    // one visit and one poll per listener (the `Rtc` send path, the
    // default; the fast path skips the poll): about 3 on average here.
    assert!(few < 6.0, "{few} visits per datagram with 10 idle peers");
    assert!(
        (many - few).abs() < 0.05 * few,
        "visits per datagram: {few} with 10 idle peers, {many} with 1,000"
    );
}
