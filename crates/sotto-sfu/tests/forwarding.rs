//! Forwarding, slots, publishing rights (issue 4 tests 1–4).

mod common;

use std::time::Duration;

use common::World;
use sotto_sfu::{SfuConfig, SfuEvent};

fn world(n: usize, config: SfuConfig, seed: u64) -> World {
    let mut w = World::new(config.clone(), seed);
    for _ in 0..n {
        w.add_client(config.slots);
    }
    w.connect_all();
    w
}

/// Test 1: one speaker, three listeners.
#[test]
fn one_speaker_three_listeners_get_identical_payloads_in_order() {
    one_speaker_three_listeners(true);
}

/// The same through each listener's `Rtc` (the send path before the fast
/// path, kept for side-by-side benchmarks).
#[test]
fn one_speaker_three_listeners_through_the_rtc_send_path() {
    one_speaker_three_listeners(false);
}

fn one_speaker_three_listeners(direct_send: bool) {
    let config = SfuConfig {
        direct_send,
        ..SfuConfig::default()
    };
    let mut w = world(4, config, 1);
    let speaker = w.clients[0].id;
    w.sfu.set_may_publish(speaker, true).expect("known peer");
    w.start_talking(0, -30);
    w.run_for(Duration::from_secs(2));
    w.stop_talking(0);
    w.run_for(Duration::from_millis(500));

    let sent = w.clients[0].sent_payloads();
    assert!(sent.len() >= 95, "speaker sent {}", sent.len());
    let speaker_ssrc = w.clients[0].mic_ssrc();
    let mut slot_ssrcs = Vec::new();
    for l in 1..4 {
        let c = &w.clients[l];
        assert_eq!(
            c.payloads(),
            sent,
            "listener {l} got the payloads byte for byte, in order"
        );
        let ssrcs = c.ssrcs();
        assert_eq!(ssrcs.len(), 1, "one slot in use");
        assert_ne!(ssrcs[0], speaker_ssrc, "the slot SSRC is not the speaker's");
        slot_ssrcs.push(ssrcs[0]);
        let seqs: Vec<u64> = c.received.iter().map(|r| r.seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "contiguous slot seqs"
        );
    }
    assert!(
        w.clients[0].received.is_empty(),
        "a speaker does not hear itself"
    );
    let stats = w.sfu.stats();
    assert_eq!(stats.rtp_forwarded, 3 * sent.len() as u64);
    // With the fast path every copy was sealed by the SFU with the
    // listener's own SRTP keys, and the listeners' str0m decrypted each.
    let direct = if direct_send { stats.rtp_forwarded } else { 0 };
    assert_eq!(stats.rtp_forwarded_direct, direct);
    assert_eq!(stats.renegotiations, 0);
    assert!(w.events.iter().any(|(_, e)| matches!(e,
        SfuEvent::ActiveSpeakersChanged { speakers, .. } if speakers == &vec![speaker])));
}

/// Test 2: a listener that is not allowed to publish.
#[test]
fn listener_publishing_is_dropped_and_counted() {
    let mut w = world(3, SfuConfig::default(), 2);
    w.start_talking(1, -20);
    w.run_for(Duration::from_secs(1));
    w.stop_talking(1);
    w.run_for(Duration::from_millis(200));

    let sent = w.clients[1].sent.len() as u64;
    assert!(sent >= 45);
    for c in &w.clients {
        assert!(c.received.is_empty(), "nothing forwarded");
    }
    let stats = w.sfu.stats();
    assert_eq!(stats.rtp_forwarded, 0);
    assert_eq!(stats.rtp_dropped_not_allowed, sent);
    assert!(w.sfu.active_speakers(common::ROOM).is_empty());
}

/// Checks that, per SSRC, sequence numbers only go up by one and
/// timestamps never go backwards.
fn assert_continuous(c: &common::Client) {
    for ssrc in c.ssrcs() {
        let pkts: Vec<_> = c.received.iter().filter(|r| r.ssrc == ssrc).collect();
        for w in pkts.windows(2) {
            assert_eq!(w[1].seq, w[0].seq + 1, "seq continuous on ssrc {ssrc:x}");
            let dt = w[1].ts.wrapping_sub(w[0].ts) as i32;
            assert!(dt > 0, "timestamp goes forward on ssrc {ssrc:x}: {dt}");
        }
    }
}

/// Test 3: a second speaker mid-room, then a speaker change inside a slot.
#[test]
fn second_speaker_and_slot_switch_without_renegotiation() {
    let config = SfuConfig {
        slots: 2,
        ..SfuConfig::default()
    };
    let mut w = world(5, config, 3);
    let (a, b, c) = (w.clients[0].id, w.clients[1].id, w.clients[2].id);
    w.sfu.set_may_publish(a, true).expect("a");
    w.start_talking(0, -30);
    w.run_for(Duration::from_secs(1));

    // B is invited to the stage mid-room.
    w.sfu.set_may_publish(b, true).expect("b");
    w.start_talking(1, -25);
    w.run_for(Duration::from_secs(1));
    for l in 3..5 {
        assert_eq!(
            w.clients[l].ssrcs().len(),
            2,
            "listener {l} hears both on two slots"
        );
    }
    // Speakers hear each other, not themselves.
    assert_eq!(w.clients[0].ssrcs().len(), 1);
    assert_eq!(w.clients[1].ssrcs().len(), 1);

    // A stops; after the hold time C takes A's slot.
    w.stop_talking(0);
    w.run_for(Duration::from_millis(2500));
    assert_eq!(w.sfu.active_speakers(common::ROOM), vec![b]);
    let a_slot = w.sfu.slot_sources(w.clients[3].id).expect("slots");
    assert_eq!(
        a_slot[0],
        Some(a),
        "slot stays sticky while nobody needs it"
    );
    w.sfu.set_may_publish(c, true).expect("c");
    w.start_talking(2, -20);
    w.run_for(Duration::from_secs(1));
    let slots = w.sfu.slot_sources(w.clients[3].id).expect("slots");
    assert_eq!(slots, vec![Some(c), Some(b)], "C took A's slot");

    for l in 3..5 {
        let cl = &w.clients[l];
        assert_eq!(cl.ssrcs().len(), 2, "still two SSRCs: no new stream for C");
        assert_continuous(cl);
        // A's and C's payloads both arrived on the same SSRC.
        let first = cl
            .received
            .iter()
            .find(|r| r.payload[0] == 0)
            .expect("a's packet");
        let from_c: Vec<_> = cl.received.iter().filter(|r| r.payload[0] == 2).collect();
        assert!(from_c.len() >= 40);
        assert!(from_c.iter().all(|r| r.ssrc == first.ssrc));
        assert_eq!(
            cl.media_changes_after_answer, 0,
            "no renegotiation seen by the client"
        );
    }
    assert_eq!(w.sfu.stats().renegotiations, 0);
    for cl in &w.clients {
        assert_eq!(cl.media_changes_after_answer, 0);
    }
}

/// Test 4: muting stops forwarding at once.
#[test]
fn mute_stops_forwarding_immediately() {
    let mut w = world(3, SfuConfig::default(), 4);
    let s = w.clients[0].id;
    w.sfu.set_may_publish(s, true).expect("s");
    w.start_talking(0, -30);
    w.run_for(Duration::from_secs(1));
    let muted_at = w.now;
    let forwarded_before = w.sfu.stats().rtp_forwarded;
    w.sfu.set_may_publish(s, false).expect("s");
    w.drain_sfu();
    assert!(w.sfu.active_speakers(common::ROOM).is_empty());
    w.run_for(Duration::from_secs(1));
    w.stop_talking(0);
    w.run_for(Duration::from_millis(200));

    let late: Vec<Vec<u8>> = w.clients[0]
        .sent
        .iter()
        .filter(|(t, _)| *t >= muted_at)
        .map(|(_, p)| p.clone())
        .collect();
    assert!(late.len() >= 45);
    for l in 1..3 {
        let got = w.clients[l].payloads();
        assert!(got.len() >= 45, "heard before the mute");
        assert!(
            got.iter().all(|p| !late.contains(p)),
            "nothing sent after the mute arrives"
        );
    }
    let stats = w.sfu.stats();
    assert_eq!(
        stats.rtp_forwarded, forwarded_before,
        "not one packet after the mute"
    );
    assert!(stats.rtp_dropped_not_allowed >= late.len() as u64);
}
