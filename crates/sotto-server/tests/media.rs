//! The media plane end to end over real UDP on loopback: signaling over the
//! session channel, ICE/DTLS-SRTP to the server's SFU, forwarding of opaque
//! payloads (SFrame ciphertext in real use) into receive slots, publish
//! rights following the room's roles, and no renegotiation on stage changes.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{Db, TestServer, raw_http};
use sotto_client::media::{IncomingPacket, MediaConnection, MediaNotice, OutgoingFrame};
use sotto_client::{Channel, Client};
use sotto_proto::RoomId;
use sotto_proto::channel::ServerMessage;
use sotto_proto::room::RoomKind;

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

struct Participant {
    client: Client,
    channel: Channel,
    media: MediaConnection,
}

async fn enter(client: Client, room: &RoomId) -> Participant {
    client.join(room).await.unwrap();
    let mut channel = Channel::connect(&client).await.unwrap();
    channel.subscribe(room).await.unwrap();
    let (mut media, _) = MediaConnection::connect(&mut channel, room, LOOPBACK, 3)
        .await
        .unwrap();
    media.connected(Duration::from_secs(10)).await.unwrap();
    Participant {
        client,
        channel,
        media,
    }
}

/// Sends `n` frames 20 ms apart; returns their payloads.
async fn talk(p: &Participant, tag: u8, n: usize) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    for i in 0..n {
        ticker.tick().await;
        let mut payload: Vec<u8> = (0..60).map(|_| rand::random::<u8>()).collect();
        payload[0] = tag;
        payload[1] = i as u8;
        p.media
            .frames
            .send(OutgoingFrame {
                payload: payload.clone(),
                timestamp: (i as u32) * 960,
                audio_level: -20,
            })
            .await
            .unwrap();
        sent.push(payload);
    }
    sent
}

/// Everything received within `quiet` of the last packet.
async fn collect(p: &mut Participant, quiet: Duration) -> Vec<IncomingPacket> {
    let mut out = Vec::new();
    while let Ok(Some(packet)) = tokio::time::timeout(quiet, p.media.packets.recv()).await {
        out.push(packet);
    }
    out
}

fn payloads_with_tag(packets: &[IncomingPacket], tag: u8) -> Vec<Vec<u8>> {
    packets
        .iter()
        .filter(|p| p.payload.first() == Some(&tag))
        .map(|p| p.payload.clone())
        .collect()
}

fn no_renegotiation(p: &mut Participant) {
    while let Ok(notice) = p.media.notices.try_recv() {
        assert_ne!(
            notice,
            MediaNotice::Renegotiated,
            "a listener was renegotiated"
        );
    }
}

async fn metric(url: &str, name: &str) -> f64 {
    let text = raw_http()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speakers_reach_listeners_and_roles_gate_publishing() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (alice, _) = srv.user("alice").await;
    let (bob, _) = srv.user("bob").await;
    let (carol, _) = srv.user("carol").await;
    let (dave, _) = srv.user("dave").await;
    let bob_id = bob.me().await.unwrap().id;
    let room = alice
        .create_room("Live", RoomKind::Open, None)
        .await
        .unwrap()
        .id;
    let mut a = enter(alice, &room).await;
    let mut b = enter(bob, &room).await;
    let mut c = enter(carol, &room).await;
    let mut d = enter(dave, &room).await;

    // The host speaks: every listener gets exactly her payloads, in order.
    let sent = talk(&a, 0xA1, 50).await;
    for p in [&mut b, &mut c, &mut d] {
        let got = collect(p, Duration::from_millis(500)).await;
        assert_eq!(
            payloads_with_tag(&got, 0xA1),
            sent,
            "listener got the host's frames byte for byte"
        );
    }
    assert!(
        collect(&mut a, Duration::from_millis(100)).await.is_empty(),
        "no echo to the speaker"
    );

    // A listener publishing is dropped and counted.
    let before = metric(&srv.url, "sotto_media_rtp_dropped_not_allowed_total").await;
    talk(&b, 0xB0, 20).await;
    for p in [&mut a, &mut c, &mut d] {
        assert!(payloads_with_tag(&collect(p, Duration::from_millis(300)).await, 0xB0).is_empty());
    }
    assert!(metric(&srv.url, "sotto_media_rtp_dropped_not_allowed_total").await >= before + 15.0);

    // Bob is invited to the stage and accepts: now he is heard, with no
    // renegotiation for anyone.
    a.client
        .member_action(&room, &bob_id, "invite-to-stage")
        .await
        .unwrap();
    b.client.room_action(&room, "accept-stage").await.unwrap();
    b.channel
        .wait_for(Duration::from_secs(5), |m| matches!(m, ServerMessage::RoomState { room } if room.members.iter().any(|x| x.user_id == bob_id && x.role.on_stage())))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent_b = talk(&b, 0xB1, 50).await;
    for p in [&mut c, &mut d, &mut a] {
        let got = collect(p, Duration::from_millis(500)).await;
        assert_eq!(
            payloads_with_tag(&got, 0xB1),
            sent_b,
            "the new speaker is heard"
        );
    }
    // Both speakers at once land in two different slots.
    let (sa, sb) = tokio::join!(talk(&a, 0xA2, 30), talk(&b, 0xB2, 30));
    let got = collect(&mut d, Duration::from_millis(500)).await;
    assert_eq!(payloads_with_tag(&got, 0xA2), sa);
    assert_eq!(payloads_with_tag(&got, 0xB2), sb);
    let ssrc_of = |tag: u8| {
        let mut s: Vec<u32> = got
            .iter()
            .filter(|p| p.payload[0] == tag)
            .map(|p| p.ssrc)
            .collect();
        s.dedup();
        s
    };
    assert_eq!(ssrc_of(0xA2).len(), 1);
    assert_eq!(ssrc_of(0xB2).len(), 1);
    assert_ne!(ssrc_of(0xA2), ssrc_of(0xB2));
    for p in [&mut b, &mut c, &mut d] {
        no_renegotiation(p);
    }
    assert_eq!(
        metric(&srv.url, "sotto_media_renegotiations_total").await,
        0.0
    );
    // A speaker's packet to several listeners goes out in sendmmsg batches.
    assert!(metric(&srv.url, "sotto_media_sent_batched_total").await > 100.0);

    // Muted by the host: his frames stop at once.
    a.client
        .member_action(&room, &bob_id, "mute")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    talk(&b, 0xB3, 20).await;
    assert!(payloads_with_tag(&collect(&mut c, Duration::from_millis(300)).await, 0xB3).is_empty());

    // Banned listener: no more audio.
    let carol_id = c.client.me().await.unwrap().id;
    a.client
        .member_action(&room, &carol_id, "ban")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    talk(&a, 0xA4, 20).await;
    assert!(
        collect(&mut c, Duration::from_millis(300)).await.is_empty(),
        "a banned listener gets nothing"
    );
    assert_eq!(
        payloads_with_tag(&collect(&mut d, Duration::from_millis(300)).await, 0xA4).len(),
        20
    );

    for p in [a, b, c, d] {
        p.channel.close().await;
    }
    srv.stop().await;
}

#[tokio::test]
async fn offers_are_checked() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (alice, _) = srv.user("alice").await;
    let (bob, _) = srv.user("bob").await;
    let room = alice
        .create_room("Checked", RoomKind::Open, None)
        .await
        .unwrap()
        .id;
    // Not in the room.
    let mut ch = Channel::connect(&bob).await.unwrap();
    let r = MediaConnection::connect(&mut ch, &room, LOOPBACK, 3).await;
    assert!(
        matches!(&r, Err(e) if e.code() == Some(sotto_proto::ErrorCode::NotInRoom)),
        "{:?}",
        r.err()
    );
    // Garbage SDP.
    alice.join(&room).await.unwrap();
    let mut ch = Channel::connect(&alice).await.unwrap();
    ch.send(sotto_proto::channel::ClientMessage::MediaOffer {
        room_id: room.clone(),
        sdp: "v=0\r\nnonsense".into(),
    })
    .await
    .unwrap();
    match ch.next(Duration::from_secs(5)).await.unwrap() {
        ServerMessage::Error { error } => assert_eq!(error.code, sotto_proto::ErrorCode::BadOffer),
        other => panic!("{other:?}"),
    }
    // Too many slots.
    let r = MediaConnection::connect(&mut ch, &room, LOOPBACK, 4).await;
    assert!(
        matches!(&r, Err(e) if e.code() == Some(sotto_proto::ErrorCode::BadOffer)),
        "{:?}",
        r.err()
    );
    // Garbage on the UDP port is counted, and the server stays healthy.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let media_addr = srv.server.as_ref().unwrap().media_addr.unwrap();
    for n in [1usize, 20, 200, 1400, 4000] {
        udp.send_to(&vec![0x80; n], media_addr).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let dropped = metric(&srv.url, "sotto_media_dropped_unknown_source_total").await
        + metric(&srv.url, "sotto_media_dropped_malformed_total").await
        + metric(&srv.url, "sotto_media_dropped_oversized_total").await;
    assert!(dropped >= 5.0, "{dropped}");
    assert_eq!(
        raw_http()
            .get(format!("{}/healthz", srv.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    srv.stop().await;
}
