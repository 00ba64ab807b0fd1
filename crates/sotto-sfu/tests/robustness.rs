//! Bad input, vanished peers, loss (issue 4 tests 5–7) and offer checks.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{SFU_ADDR, World};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sotto_sfu::{GoneReason, Sfu, SfuConfig, SfuError, SfuEvent};

fn world(n: usize, config: SfuConfig, seed: u64) -> World {
    let mut w = World::new(config.clone(), seed);
    for _ in 0..n {
        w.add_client(config.slots);
    }
    w.connect_all();
    w
}

/// A STUN binding request header with a USERNAME attribute, truncated at `cut`.
fn stun_like(username: &str, cut: usize) -> Vec<u8> {
    let mut attr = vec![0x00, 0x06];
    attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attr.extend_from_slice(username.as_bytes());
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    m.extend_from_slice(&[7u8; 12]);
    m.extend_from_slice(&attr);
    m.truncate(cut.min(m.len()));
    m
}

/// Test 5: garbage of every kind, from strangers and from a peer's own address.
#[test]
fn garbage_datagrams_are_counted_and_harmless() {
    let mut w = world(3, SfuConfig::default(), 5);
    let mut rng = ChaCha8Rng::seed_from_u64(55);
    let stranger: SocketAddr = "198.51.100.7:40000".parse().expect("addr");
    let before = w.sfu.stats();

    // 64 KiB datagrams.
    for _ in 0..10 {
        w.inject(stranger, &vec![0x80; 65_507]);
    }
    // Random bytes from strangers.
    for _ in 0..500 {
        let mut b = vec![0u8; rng.gen_range(0..1400)];
        rng.fill(&mut b[..]);
        w.inject(stranger, &b);
    }
    // Truncated STUN and STUN naming nobody.
    for cut in 0..60 {
        w.inject(stranger, &stun_like("nobody:x", cut));
    }
    // RTP-looking junk (version 2, PT 111) from strangers.
    for i in 0..200u16 {
        let mut b = vec![0x80, 111];
        b.extend_from_slice(&i.to_be_bytes());
        b.extend_from_slice(&[0xab; 60]);
        w.inject(stranger, &b);
    }
    let s = w.sfu.stats();
    assert_eq!(s.dropped_oversized - before.dropped_oversized, 10);
    assert!(s.dropped_malformed > before.dropped_malformed, "{s:?}");
    assert!(
        s.dropped_unknown_source >= before.dropped_unknown_source + 200,
        "{s:?}"
    );
    assert_eq!(s.rtp_received, 0, "junk never became RTP");

    // Junk from a connected peer's own address reaches its Rtc and is refused.
    let peer_addr = w.clients[1].addr;
    for i in 0..300 {
        let mut b = vec![0u8; rng.gen_range(1..1200)];
        rng.fill(&mut b[..]);
        b[0] = [0x80, 0x16, 0x17, 0x90][i % 4]; // RTP, DTLS handshake/appdata, RTCP-ish
        w.inject(peer_addr, &b);
    }
    assert_eq!(
        w.sfu.stats().rtp_received,
        0,
        "forged SRTP does not authenticate"
    );

    // The room still works.
    let sp = w.clients[0].id;
    w.sfu.set_may_publish(sp, true).expect("sp");
    w.start_talking(0, -30);
    w.run_for(Duration::from_secs(1));
    w.stop_talking(0);
    w.run_for(Duration::from_millis(200));
    let sent = w.clients[0].sent_payloads();
    assert!(sent.len() >= 45);
    assert_eq!(w.clients[1].payloads(), sent);
    assert_eq!(w.clients[2].payloads(), sent);
    assert!(
        !w.events
            .iter()
            .any(|(_, e)| matches!(e, SfuEvent::PeerGone { .. })),
        "nobody was kicked by the junk"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Test 5b: arbitrary datagrams never panic and are always counted.
    #[test]
    fn arbitrary_datagrams_never_panic(
        datagrams in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..1600), any::<u8>(), any::<bool>()),
            1..20,
        )
    ) {
        let now = std::time::Instant::now();
        let mut sfu = Sfu::new(now, SfuConfig::default(), SFU_ADDR).expect("sfu");
        let source: SocketAddr = "203.0.113.9:1234".parse().expect("addr");
        let mut t = now;
        for (mut bytes, first, stun) in datagrams.iter().cloned() {
            if let Some(b) = bytes.first_mut() {
                *b = if stun { first % 4 } else { first };
            }
            if stun && bytes.len() >= 8 {
                bytes[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
            }
            t += Duration::from_millis(3);
            sfu.handle_datagram(t, source, SFU_ADDR, &bytes);
            sfu.handle_timeout(t);
            while sfu.poll_transmit().is_some() {}
            while sfu.poll_event().is_some() {}
        }
        let s = sfu.stats();
        prop_assert_eq!(s.datagrams_in, datagrams.len() as u64);
        prop_assert_eq!(
            s.dropped_oversized + s.dropped_malformed + s.dropped_unknown_source,
            datagrams.len() as u64
        );
        prop_assert_eq!(s.datagrams_out, 0);
    }
}

fn gone_events(w: &World) -> Vec<(std::time::Instant, sotto_sfu::PeerId, GoneReason)> {
    w.events
        .iter()
        .filter_map(|(t, e)| match e {
            SfuEvent::PeerGone { peer, reason } => Some((*t, *peer, *reason)),
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Test 5c: arbitrary datagrams from a connected peer's own address reach
    /// its `Rtc`; the room keeps working afterwards.
    #[test]
    fn arbitrary_datagrams_from_a_peer_address(
        datagrams in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 1..1400), 0u8..4),
            1..40,
        ),
        seed in any::<u64>(),
    ) {
        let mut w = world(2, SfuConfig::default(), seed);
        let addr = w.clients[1].addr;
        for (mut bytes, kind) in datagrams {
            // Steer the first byte into each demultiplexing range (RFC 7983).
            bytes[0] = match kind { 0 => bytes[0] % 4, 1 => 20 + bytes[0] % 44, 2 => 128 + bytes[0] % 64, _ => bytes[0] };
            w.inject(addr, &bytes);
        }
        let sp = w.clients[0].id;
        w.sfu.set_may_publish(sp, true).expect("sp");
        w.start_talking(0, -30);
        w.run_for(Duration::from_millis(500));
        w.stop_talking(0);
        w.run_for(Duration::from_millis(100));
        let sent = w.clients[0].sent_payloads();
        prop_assert!(sent.len() >= 20);
        prop_assert_eq!(w.clients[1].payloads(), sent);
    }
}

/// Test 6a: a speaker whose device vanishes is dropped (ICE consent lapses
/// before the 30 s default idle timeout) and its slot serves the next speaker.
#[test]
fn vanished_peer_is_dropped_and_frees_its_slot() {
    let mut w = world(3, SfuConfig::default(), 6);
    let (a, b) = (w.clients[0].id, w.clients[1].id);
    w.sfu.set_may_publish(a, true).expect("a");
    w.start_talking(0, -30);
    w.run_for(Duration::from_secs(1));
    assert_eq!(
        w.sfu.slot_sources(w.clients[2].id).expect("slots")[0],
        Some(a)
    );

    // The device disappears: no goodbye, no more packets.
    let vanished_at = w.now;
    w.clients[0].alive = false;
    w.run_for(Duration::from_secs(31));
    let gone = gone_events(&w);
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(gone[0].1, a);
    let after = gone[0].0 - vanished_at;
    assert!(
        after >= Duration::from_secs(2),
        "not on a short blip: {after:?}"
    );
    assert!(after <= Duration::from_secs(31), "{after:?}");
    let s = w.sfu.stats();
    assert_eq!(s.peers_timed_out + s.peers_failed, 1);
    assert_eq!(
        w.sfu.slot_sources(w.clients[2].id).expect("slots"),
        vec![None, None, None]
    );
    assert!(w.sfu.active_speakers(common::ROOM).is_empty());

    // The freed slot serves the next speaker.
    w.sfu.set_may_publish(b, true).expect("b");
    w.start_talking(1, -30);
    w.run_for(Duration::from_secs(1));
    let slots = w.sfu.slot_sources(w.clients[2].id).expect("slots");
    assert_eq!(
        slots.iter().filter(|s| **s == Some(b)).count(),
        1,
        "{slots:?}"
    );
    assert!(
        w.clients[2]
            .received
            .iter()
            .filter(|r| r.payload[0] == 1)
            .count()
            >= 45
    );
}

/// Test 6a': the configurable idle timeout itself.
#[test]
fn idle_timeout_is_configurable() {
    let config = SfuConfig {
        peer_timeout: Duration::from_secs(2),
        ..SfuConfig::default()
    };
    let mut w = world(2, config, 16);
    let l = w.clients[1].id;
    let vanished_at = w.now;
    w.clients[1].alive = false;
    w.run_for(Duration::from_millis(1900));
    assert!(gone_events(&w).is_empty(), "not before the timeout");
    w.run_for(Duration::from_millis(300));
    let gone = gone_events(&w);
    assert_eq!(gone.len(), 1);
    assert_eq!((gone[0].1, gone[0].2), (l, GoneReason::Timeout));
    assert!(gone[0].0 - vanished_at <= Duration::from_millis(2100));
    assert_eq!(w.sfu.stats().peers_timed_out, 1);
    assert_eq!(w.sfu.stats().peers, 1);
}

/// Test 6b: a removed peer's address gets nothing more; its peers stay.
#[test]
fn removed_peer_gets_nothing() {
    let config = SfuConfig {
        peer_timeout: Duration::from_secs(5),
        ..SfuConfig::default()
    };
    let mut w = world(3, config, 7);
    let s = w.clients[0].id;
    w.sfu.set_may_publish(s, true).expect("s");
    w.start_talking(0, -30);
    w.run_for(Duration::from_secs(1));
    let listener = w.clients[1].id;
    let addr = w.clients[1].addr;
    let heard = w.clients[1].received.len();
    assert!(heard >= 45);

    w.sfu.remove_peer(listener).expect("remove");
    assert!(matches!(
        w.sfu.remove_peer(listener),
        Err(SfuError::UnknownPeer)
    ));
    let removed_at = w.now;
    // The client keeps sending STUN/RTCP as a real one would until it notices.
    w.run_for(Duration::from_secs(8));
    let after = w
        .net
        .delivered
        .iter()
        .filter(|(t, d, _)| *d == addr && *t > removed_at + Duration::from_millis(50))
        .count();
    assert_eq!(after, 0, "no datagram went to the removed peer");
    assert!(
        w.sfu.stats().dropped_unknown_source > 0,
        "its traffic is dropped"
    );
    assert!(
        w.clients[2].received.len() >= 400,
        "the others still hear the speaker"
    );
    assert!(
        !w.events
            .iter()
            .any(|(_, e)| matches!(e, SfuEvent::PeerGone { .. })),
        "explicit removal emits no PeerGone"
    );
}

/// Test 7: 5% random loss (and reordering) in every direction.
#[test]
fn five_percent_loss_still_delivers_ninety_percent() {
    let mut w = World::new(SfuConfig::default(), 8);
    w.net.loss = 0.05;
    w.net.jitter = Duration::from_millis(15);
    for _ in 0..4 {
        w.add_client(3);
    }
    w.connect_all();
    let s = w.clients[0].id;
    w.sfu.set_may_publish(s, true).expect("s");
    w.start_talking(0, -30);
    w.run_for(Duration::from_secs(10));
    w.stop_talking(0);
    w.run_for(Duration::from_millis(500));

    let sent = w.clients[0].sent_payloads();
    assert!(sent.len() >= 495);
    let stats = w.sfu.stats();
    // Every packet that reached the SFU went to all three listeners.
    assert_eq!(stats.rtp_forwarded, 3 * stats.rtp_received);
    assert!(
        stats.rtp_received < sent.len() as u64,
        "uplink loss was real"
    );
    for l in 1..4 {
        let got = w.clients[l].payloads();
        assert!(got.iter().all(|p| sent.contains(p)), "only real payloads");
        // Two lossy hops compound to ~9.75% loss end to end (no NACK/RED for audio).
        let end_to_end = got.len() as f64 / sent.len() as f64;
        let downlink = got.len() as f64 / stats.rtp_received as f64;
        assert!(
            end_to_end >= 0.85,
            "listener {l}: end to end {end_to_end:.3}"
        );
        assert!(
            downlink >= 0.90,
            "listener {l}: of what the SFU got {downlink:.3}"
        );
        assert!(
            downlink < 0.995,
            "the downlink loss was real ({downlink:.3})"
        );
    }
    assert!(gone_events(&w).is_empty(), "loss does not kick anyone");
}

#[test]
fn offers_are_checked_and_ids_stay_out_of_sdp() {
    let now = std::time::Instant::now();
    let mut sfu = Sfu::new(now, SfuConfig::default(), SFU_ADDR).expect("sfu");
    let mut w = World::new(SfuConfig::default(), 9);
    w.add_client(3);
    let id = w.clients[0].id;
    // Same id twice.
    let mut rtc = str0m::Rtc::builder().set_rtp_mode(true).build(now);
    let mut api = rtc.sdp_api();
    api.add_media(
        str0m::media::MediaKind::Audio,
        str0m::media::Direction::SendOnly,
        None,
        None,
        None,
    );
    for _ in 0..4 {
        api.add_media(
            str0m::media::MediaKind::Audio,
            str0m::media::Direction::RecvOnly,
            None,
            None,
            None,
        );
    }
    let (offer, _) = api.apply().expect("offer");
    let offer = offer.to_sdp_string();
    assert!(matches!(
        sfu.add_peer(now, id, common::ROOM, &offer),
        Err(SfuError::TooManySlots { found: 4, max: 3 })
    ));
    let video = offer.replacen("m=audio", "m=video", 1);
    assert!(matches!(
        sfu.add_peer(now, id, common::ROOM, &video),
        Err(SfuError::NotAudioOnly)
    ));
    assert!(matches!(
        sfu.add_peer(now, id, common::ROOM, "v=0 garbage"),
        Err(SfuError::OfferSyntax(_)) | Err(SfuError::OfferRejected(_))
    ));
    // A good offer; the answer carries no trace of the caller's ids.
    let mut rtc = str0m::Rtc::builder().set_rtp_mode(true).build(now);
    let mut api = rtc.sdp_api();
    api.add_media(
        str0m::media::MediaKind::Audio,
        str0m::media::Direction::SendOnly,
        None,
        None,
        None,
    );
    api.add_media(
        str0m::media::MediaKind::Audio,
        str0m::media::Direction::RecvOnly,
        None,
        None,
        None,
    );
    let (offer, _) = api.apply().expect("offer");
    let answer = sfu
        .add_peer(now, id, common::ROOM, &offer.to_sdp_string())
        .expect("answer");
    assert!(matches!(
        sfu.add_peer(now, id, common::ROOM, &offer.to_sdp_string()),
        Err(SfuError::PeerExists)
    ));
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let lower = answer.to_lowercase();
    for needle in [
        hex(&id.as_bytes()[..4]),
        hex(&common::ROOM.as_bytes()[..4]),
        id.to_string(),
    ] {
        assert!(!lower.contains(&needle), "answer leaks {needle}");
    }
    assert!(lower.contains("opus/48000"));
    assert!(!lower.contains("m=video") && !lower.contains("m=application"));
}
