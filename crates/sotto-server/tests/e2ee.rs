//! End-to-end encryption through the real server: real WebSocket channels,
//! the E2EE relay (public state only) and each client's `RoomCrypto`.
//! Frames travel through the test itself (no audio, no UDP).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Db, TestServer};
use sotto_client::room_crypto::{CryptoError, FrameErrorKind as FrameError, RoomCrypto};
use sotto_client::{Channel, Client, ClientError};
use sotto_proto::channel::{
    ClientEnvelope, ClientMessage, E2eeDown, E2eeUp, SealedFor, ServerMessage, encode_payload,
};
use sotto_proto::room::RoomKind;
use sotto_proto::{DeviceId, ErrorCode, RoomId, UserId};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

struct Dev {
    name: String,
    client: Client,
    channel: Channel,
    crypto: RoomCrypto,
    user: UserId,
    device: DeviceId,
    /// Typed errors the server sent this channel.
    refused: Vec<ErrorCode>,
}

async fn enter(srv: &TestServer, name: &str, room: Option<&RoomId>) -> (Dev, RoomId) {
    let (client, profile) = srv.user(name).await;
    let room = match room {
        Some(r) => {
            client.join(r).await.unwrap();
            r.clone()
        }
        None => {
            client
                .create_room("Encrypted", RoomKind::Open, None)
                .await
                .unwrap()
                .id
        }
    };
    let mut channel = Channel::connect(&client).await.unwrap();
    channel.subscribe(&room).await.unwrap();
    let view = match channel
        .wait_for(Duration::from_secs(5), |m| {
            matches!(m, ServerMessage::RoomState { .. })
        })
        .await
        .unwrap()
    {
        ServerMessage::RoomState { room } => room,
        _ => unreachable!(),
    };
    let user = channel.user_id.clone();
    let device = profile.info.device_id.clone().unwrap();
    let (crypto, out) = RoomCrypto::new(
        profile.device_seed(),
        &user,
        &device,
        &view,
        Default::default(),
        now(),
        &mut rand::rngs::OsRng,
    )
    .unwrap();
    for m in out {
        channel.send(m).await.unwrap();
    }
    (
        Dev {
            name: name.into(),
            client,
            channel,
            crypto,
            user,
            device,
            refused: Vec::new(),
        },
        room,
    )
}

impl Dev {
    /// Feeds everything the channel has (until it is quiet for `quiet`) and
    /// every due timer to `RoomCrypto`; sends what it returns.
    async fn pump(&mut self, quiet: Duration) {
        loop {
            let mut out = Vec::new();
            if self.crypto.poll_timeout().is_some_and(|t| t <= now()) {
                out.extend(self.crypto.handle_timeout(now()));
            }
            let got = self.channel.next(quiet).await;
            let Ok(msg) = got else {
                for m in out {
                    self.channel.send(m).await.unwrap();
                }
                return;
            };
            if let ServerMessage::Error { error } = &msg {
                self.refused.push(error.code);
            }
            match self.crypto.handle(now(), &msg) {
                Ok(more) => out.extend(more),
                Err(CryptoError::Refused { .. }) => {}
                Err(e) => panic!("{}: {e} {:?}", self.name, self.crypto.take_alerts()),
            }
            for m in out {
                self.channel.send(m).await.unwrap();
            }
        }
    }
}

async fn pump_all(devs: &mut [&mut Dev]) {
    for d in devs.iter_mut() {
        d.pump(Duration::from_millis(3)).await;
    }
}

async fn pump_until(devs: &mut [&mut Dev], limit: Duration, done: impl Fn(&[&mut Dev]) -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done(devs) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {:?}",
            devs.iter()
                .map(|d| (&d.name, d.crypto.can_decrypt(), d.crypto.can_encrypt()))
                .collect::<Vec<_>>()
        );
        pump_all(devs).await;
    }
}

async fn pump_for(devs: &mut [&mut Dev], d: Duration) {
    let end = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < end {
        pump_all(devs).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_decrypt_second_speaker_joins_banned_listener_is_cut_off() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (mut alice, room) = enter(&srv, "alice", None).await;
    let (mut bob, _) = enter(&srv, "bob", Some(&room)).await;
    let (mut l1, _) = enter(&srv, "lis_one", Some(&room)).await;
    let (mut l2, _) = enter(&srv, "lis_two", Some(&room)).await;
    let (mut l3, _) = enter(&srv, "lis_three", Some(&room)).await;

    // Host + listeners (bob is a listener for now): everyone gets a key.
    {
        let mut devs = [&mut alice, &mut bob, &mut l1, &mut l2, &mut l3];
        pump_until(&mut devs, Duration::from_secs(15), |d| {
            d.iter().all(|d| d.crypto.can_decrypt()) && d[0].crypto.can_encrypt()
        })
        .await;
    }
    assert!(alice.crypto.is_distributor());
    for i in 0..5u8 {
        let f = alice.crypto.encrypt(now(), &[i; 60]).unwrap();
        assert!(f.len() <= 60 + 8, "compact overhead");
        for l in [&mut bob, &mut l1, &mut l2, &mut l3] {
            assert_eq!(
                l.crypto.decrypt(now(), &f).unwrap(),
                vec![i; 60],
                "{}",
                l.name
            );
        }
    }
    assert!(
        bob.crypto.encrypt(now(), b"x").is_none(),
        "a listener has no send key"
    );

    // Bob is invited to the stage (the host's client signs the invitation),
    // accepts, joins the MLS group by Welcome, and speaks.
    alice.crypto.invite_to_stage(&bob.user);
    alice
        .client
        .member_action(&room, &bob.user, "invite-to-stage")
        .await
        .unwrap();
    bob.client.room_action(&room, "accept-stage").await.unwrap();
    {
        let mut devs = [&mut alice, &mut bob, &mut l1, &mut l2, &mut l3];
        pump_until(&mut devs, Duration::from_secs(15), |d| {
            d[1].crypto.can_encrypt() && d[1].crypto.room_code() == d[0].crypto.room_code()
        })
        .await;
        // Past the switch delay and the epoch switch timeout.
        pump_for(&mut devs, Duration::from_millis(1300)).await;
    }
    let snap = srv.server.as_ref().unwrap().e2ee.snapshot(&room).unwrap();
    assert_eq!(snap.stage_members, 2);
    assert_eq!(snap.distributor.as_ref(), Some(&alice.device));
    for i in 0..5u8 {
        let f = bob.crypto.encrypt(now(), &[0xb0 | i; 40]).unwrap();
        for l in [&mut alice, &mut l1, &mut l2, &mut l3] {
            assert_eq!(
                l.crypto.decrypt(now(), &f).unwrap(),
                vec![0xb0 | i; 40],
                "{} decrypts bob",
                l.name
            );
        }
        let f = alice.crypto.encrypt(now(), &[0xa0 | i; 40]).unwrap();
        for l in [&mut bob, &mut l1, &mut l2, &mut l3] {
            assert_eq!(l.crypto.decrypt(now(), &f).unwrap(), vec![0xa0 | i; 40]);
        }
    }
    let roster = l1.crypto.roster().expect("a verified roster");
    assert!(roster.count() >= 3, "{}", roster.count());

    // l3 is banned while the host speaks: a frame every 20 ms for 2.5 s.
    // The others decrypt every frame; l3 decrypts none after the switch.
    let banned_at = now();
    alice
        .client
        .member_action(&room, &l3.user, "ban")
        .await
        .unwrap();
    let mut sent = 0;
    let mut cut_off_from = None;
    let mut banned_ok_after_ban = 0;
    let end = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < end {
        {
            let mut devs = [&mut alice, &mut bob, &mut l1, &mut l2];
            pump_all(&mut devs).await;
        }
        l3.pump(Duration::from_millis(1)).await;
        let payload = format!("frame {sent}").into_bytes();
        let f = alice.crypto.encrypt(now(), &payload).unwrap();
        sent += 1;
        for l in [&mut bob, &mut l1, &mut l2] {
            assert_eq!(
                l.crypto.decrypt(now(), &f).unwrap(),
                payload,
                "{} missed frame {sent}",
                l.name
            );
        }
        match l3.crypto.decrypt(now(), &f) {
            Ok(p) => {
                assert_eq!(p, payload);
                assert!(
                    cut_off_from.is_none(),
                    "decrypted again after being cut off"
                );
                banned_ok_after_ban += 1;
            }
            Err(CryptoError::Frame(FrameError::UnknownKeyId { .. })) => {
                cut_off_from.get_or_insert(now() - banned_at);
            }
            Err(e) => panic!("banned listener: unexpected {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cut = cut_off_from.expect("the banned listener was never cut off");
    assert!(cut < 1500, "cut off only {cut} ms after the ban");
    assert!(
        sent > 50 && banned_ok_after_ban < sent,
        "{banned_ok_after_ban}/{sent}"
    );
    let roster = l1.crypto.roster().unwrap();
    assert_eq!(roster.count(), 2, "the banned listener left the roster");
    // l1 checks the signed roster with proofs from this server's relay:
    // both remaining listeners are on it, nobody is hidden.
    for name in ["alice", "bob", "lis_one", "lis_two"] {
        let p = l1.client.profile(name).await.unwrap();
        let chain = sotto_proto::channel::decode_payload(&p.device_chain).unwrap();
        l1.crypto.learn_chain(&p.id, &chain).unwrap();
    }
    l1.crypto.check_roster();
    // One pump sends the requests, the next reads the answers.
    l1.pump(Duration::from_millis(100)).await;
    l1.pump(Duration::from_millis(300)).await;
    let report = l1.crypto.roster_report();
    assert_eq!(
        (report.hidden, report.unchecked, report.listed),
        (0, 0, 2),
        "{report:?}"
    );
    assert_eq!(report.entries.iter().filter(|e| !e.stage).count(), 2);

    // The server never held anything that decrypts: its relay state is
    // public group state and signed public data, and none of it (nor the
    // database) holds a frame's plaintext. Of it, only the public group
    // state a restart needs (GroupInfo, ratchet tree) is written to disk.
    let snap = srv.server.as_ref().unwrap().e2ee.snapshot(&room).unwrap();
    assert!(!snap.held.is_empty());
    let plain = b"frame 10";
    for blob in &snap.held {
        assert!(!blob.windows(plain.len()).any(|w| w == plain));
    }
    let mut db = Vec::new();
    for e in std::fs::read_dir(srv.dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            db.extend(std::fs::read(&p).unwrap());
        }
    }
    let saved = srv
        .server
        .as_ref()
        .unwrap()
        .store
        .live_stage_groups()
        .await
        .unwrap();
    let saved = saved
        .iter()
        .find(|g| g.room_id == room)
        .expect("saved group");
    assert!(snap.held.contains(&saved.group_info));
    assert!(snap.held.contains(&saved.ratchet_tree));
    for blob in snap
        .held
        .iter()
        .filter(|b| b.len() >= 64 && **b != saved.group_info && **b != saved.ratchet_tree)
    {
        assert!(
            !db.windows(64).any(|w| w == &blob[..64]),
            "E2EE state other than the public group state was written to disk"
        );
    }
    srv.stop().await;
}

async fn expect_error(dev: &mut Dev, msg: ClientMessage, code: ErrorCode) {
    dev.channel.send(msg).await.unwrap();
    // A refused handshake is answered as `rejected` with its id (so that
    // it is never taken for the refusal of another request); the rest as
    // a channel error.
    let got = dev
        .channel
        .wait_for(Duration::from_secs(5), |m| {
            matches!(
                m,
                ServerMessage::Error { .. }
                    | ServerMessage::E2ee {
                        e2ee: E2eeDown::Rejected { .. },
                        ..
                    }
            )
        })
        .await
        .unwrap();
    let (got_code, message) = match got {
        ServerMessage::Error { error } => (error.code, error.message),
        ServerMessage::E2ee {
            e2ee: E2eeDown::Rejected { code, message, .. },
            ..
        } => (code, message),
        _ => unreachable!(),
    };
    assert_eq!(got_code, code, "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_unauthorised_e2ee_messages_get_typed_errors() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (mut host, room) = enter(&srv, "host", None).await;
    let (mut lis, _) = enter(&srv, "lis", Some(&room)).await;
    {
        let mut devs = [&mut host, &mut lis];
        pump_until(&mut devs, Duration::from_secs(10), |d| {
            d[1].crypto.can_decrypt()
        })
        .await;
    }
    let e2ee = |e2ee: E2eeUp| ClientMessage::E2ee {
        room_id: room.clone(),
        e2ee,
    };
    let junk = encode_payload(&[0x42; 200]);
    // A listener may not send handshakes, rosters, sealed keys, groups.
    for (msg, code) in [
        (
            E2eeUp::Handshake {
                message: junk.clone(),
                id: 7,
            },
            ErrorCode::NotOnStage,
        ),
        (
            E2eeUp::Roster {
                roster: junk.clone(),
            },
            ErrorCode::NotOnStage,
        ),
        (
            E2eeUp::Sealed {
                statement: junk.clone(),
                deliveries: vec![SealedFor {
                    to: host.device.clone(),
                    sealed: junk.clone(),
                }],
            },
            ErrorCode::NotOnStage,
        ),
        (
            E2eeUp::CreateGroup {
                group_info: junk.clone(),
                ratchet_tree: junk.clone(),
                binding: junk.clone(),
            },
            ErrorCode::NotPermitted,
        ),
        (
            E2eeUp::KeyPackage {
                key_package: junk.clone(),
            },
            ErrorCode::NotOnStage,
        ),
        (
            E2eeUp::RosterLeaves {
                leaves: junk.clone(),
            },
            ErrorCode::NotOnStage,
        ),
        // Anyone may ask for roster proofs, but not with junk.
        (
            E2eeUp::RosterProof {
                fingerprints: junk.clone(),
            },
            ErrorCode::E2eeInvalid,
        ),
    ] {
        expect_error(&mut lis, e2ee(msg), code).await;
    }
    // Garbage from a stage member: typed errors, the group is untouched.
    let epoch = srv
        .server
        .as_ref()
        .unwrap()
        .e2ee
        .snapshot(&room)
        .unwrap()
        .epoch;
    for (msg, code) in [
        (
            E2eeUp::Handshake {
                message: "not base64!".into(),
                id: 7,
            },
            ErrorCode::MalformedRequest,
        ),
        (
            E2eeUp::Handshake {
                message: junk.clone(),
                id: 7,
            },
            ErrorCode::E2eeInvalid,
        ),
        (
            E2eeUp::GroupInfo {
                group_info: junk.clone(),
            },
            ErrorCode::E2eeInvalid,
        ),
        (
            E2eeUp::CreateGroup {
                group_info: junk.clone(),
                ratchet_tree: junk.clone(),
                binding: junk.clone(),
            },
            ErrorCode::E2eeInvalid,
        ),
        (
            E2eeUp::StageInvitation {
                device_id: DeviceId("0".repeat(32)),
                invitation: junk.clone(),
            },
            ErrorCode::TargetNotInRoom,
        ),
        (
            E2eeUp::Sealed {
                statement: junk.clone(),
                deliveries: vec![SealedFor {
                    to: lis.device.clone(),
                    sealed: encode_payload(&[0; 5000]),
                }],
            },
            ErrorCode::PayloadTooLarge,
        ),
        (
            E2eeUp::RosterLeaves {
                leaves: junk.clone(),
            },
            ErrorCode::E2eeInvalid,
        ),
        (
            E2eeUp::Roster {
                roster: junk.clone(),
            },
            ErrorCode::E2eeInvalid,
        ),
    ] {
        expect_error(&mut host, e2ee(msg), code).await;
    }
    // Unknown kinds and extra fields are malformed requests.
    for text in [
        format!(r#"{{"v":1,"msg":{{"type":"e2ee","room_id":"{room}","e2ee":{{"kind":"nope"}}}}}}"#),
        format!(
            r#"{{"v":1,"msg":{{"type":"e2ee","room_id":"{room}","e2ee":{{"kind":"hello","x":1}}}}}}"#
        ),
    ] {
        host.channel.send_raw(text).await.unwrap();
        let got = host
            .channel
            .wait_for(Duration::from_secs(5), |m| {
                matches!(m, ServerMessage::Error { .. })
            })
            .await
            .unwrap();
        assert!(
            matches!(got, ServerMessage::Error { error } if error.code == ErrorCode::MalformedRequest)
        );
    }
    // A channel that did not say e2ee hello, and one not subscribed.
    let mut fresh = Channel::connect(&lis.client).await.unwrap();
    fresh
        .send(e2ee(E2eeUp::JoinRequest {
            request: junk.clone(),
        }))
        .await
        .unwrap();
    let got = fresh
        .wait_for(Duration::from_secs(5), |m| {
            matches!(m, ServerMessage::Error { .. })
        })
        .await
        .unwrap();
    assert!(matches!(got, ServerMessage::Error { error } if error.code == ErrorCode::NotInRoom));
    fresh.subscribe(&room).await.unwrap();
    fresh
        .send(e2ee(E2eeUp::JoinRequest { request: junk }))
        .await
        .unwrap();
    let got = fresh
        .wait_for(Duration::from_secs(5), |m| {
            matches!(m, ServerMessage::Error { .. })
        })
        .await
        .unwrap();
    assert!(
        matches!(got, ServerMessage::Error { error } if error.code == ErrorCode::E2eeHelloRequired)
    );
    // The channels are still up and the group did not move.
    for ch in [&mut host.channel, &mut lis.channel, &mut fresh] {
        ch.send_raw(ClientEnvelope::new(ClientMessage::Ping { nonce: 7 }).to_json())
            .await
            .unwrap();
        ch.wait_for(Duration::from_secs(5), |m| {
            matches!(m, ServerMessage::Pong { nonce: 7 })
        })
        .await
        .unwrap();
    }
    let snap = srv.server.as_ref().unwrap().e2ee.snapshot(&room).unwrap();
    assert_eq!(snap.epoch, epoch);
    assert_eq!(snap.stage_members, 1);
    // The host still encrypts and the listener still decrypts.
    {
        let mut devs = [&mut host, &mut lis];
        pump_all(&mut devs).await;
    }
    let f = host.crypto.encrypt(now(), b"still fine").unwrap();
    assert_eq!(lis.crypto.decrypt(now(), &f).unwrap(), b"still fine");
    srv.stop().await;
}

/// Attack 9 through the real server: a device that logs out (or is
/// revoked) loses its open channel at once, and the key distributor drops
/// it and rotates: frames sent after that do not decrypt with what it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_closes_the_channel_and_rotates_the_key_away() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (mut host, room) = enter(&srv, "host", None).await;
    let (mut gone, _) = enter(&srv, "leaver", Some(&room)).await;
    let (mut stays, _) = enter(&srv, "stayer", Some(&room)).await;
    {
        let mut devs = [&mut host, &mut gone, &mut stays];
        pump_until(&mut devs, Duration::from_secs(15), |d| {
            d.iter().all(|d| d.crypto.can_decrypt()) && d[0].crypto.can_encrypt()
        })
        .await;
    }
    let f = host.crypto.encrypt(now(), b"before").unwrap();
    assert!(gone.crypto.decrypt(now(), &f).is_ok());

    gone.client.logout().await.unwrap();
    // Its channel is told and closed, without any further request.
    let mut closed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        match gone.channel.next(Duration::from_millis(200)).await {
            Ok(ServerMessage::Error { error }) if error.code == ErrorCode::SessionRevoked => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(ClientError::Channel(m)) if m.contains("timed out") => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "the logged-out session's channel stayed open");
    {
        let mut devs = [&mut host, &mut stays];
        pump_for(&mut devs, Duration::from_millis(1500)).await;
    }
    let f = host.crypto.encrypt(now(), b"after").unwrap();
    assert_eq!(stays.crypto.decrypt(now(), &f).unwrap(), b"after");
    assert!(
        gone.crypto.decrypt(now(), &f).is_err(),
        "the logged-out device still decrypts new frames"
    );
    srv.stop().await;
}

/// Issue 11: the relay has no global lock. A room whose relay state is busy
/// — held here for 3 s on a thread of its own, as a slow MLS validation
/// would hold it — delays its own E2EE messages, not another room's: a
/// newcomer's `hello` in the other room is answered at once, while the busy
/// room's host waits for the answer to its own `hello` until the room is
/// free. With one lock for every room, the newcomer would wait too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_room_does_not_hold_up_another_room() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (mut host_a, room_a) = enter(&srv, "host_a", None).await;
    let (mut host_b, room_b) = enter(&srv, "host_b", None).await;
    for d in [&mut host_a, &mut host_b] {
        pump_until(&mut [d], Duration::from_secs(15), |d| {
            d[0].crypto.can_encrypt()
        })
        .await;
    }
    let relay = srv.server.as_ref().unwrap().e2ee.clone();
    let hold = Duration::from_secs(3);
    let held_at = std::time::Instant::now();
    let holder = relay.hold_room_for(&room_a, hold).expect("room A is known");

    // Room A's host says hello again: answered only when A is free.
    host_a
        .channel
        .send(ClientMessage::E2ee {
            room_id: room_a.clone(),
            e2ee: E2eeUp::Hello {},
        })
        .await
        .unwrap();
    // A newcomer in room B (its `hello` is the last thing `enter` sends).
    let (mut newcomer, _) = enter(&srv, "newcomer_b", Some(&room_b)).await;
    let asked = std::time::Instant::now();
    let is_info = |m: &ServerMessage| {
        matches!(
            m,
            ServerMessage::E2ee {
                e2ee: E2eeDown::Info { .. },
                ..
            }
        )
    };
    newcomer
        .channel
        .wait_for(Duration::from_secs(10), is_info)
        .await
        .expect("room B answers its newcomer");
    let b_waited = asked.elapsed();
    let b_answered_at = held_at.elapsed();
    host_a
        .channel
        .wait_for(Duration::from_secs(10), is_info)
        .await
        .expect("room A answers once it is free");
    let a_answered_at = held_at.elapsed();
    holder.join().unwrap();
    assert!(
        b_answered_at < hold && b_waited < Duration::from_millis(1500),
        "room B's newcomer waited {b_waited:?} (answered {b_answered_at:?} into room A's {hold:?} hold)"
    );
    assert!(
        a_answered_at >= hold,
        "room A answered {a_answered_at:?} into its own {hold:?} hold: the hold held nothing"
    );
}

/// A listener device that floods the relay with join requests reaches the
/// key distributor once per `JOIN_FORWARD_GAP`, with its latest request:
/// the distributor is not made to seal over and over, and nothing the
/// honest client needs is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_join_requests_reaches_the_distributor_once_per_gap() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (mut host, room) = enter(&srv, "host", None).await;
    pump_until(&mut [&mut host], Duration::from_secs(15), |d| {
        d[0].crypto.can_encrypt()
    })
    .await;
    // The host is the distributor; the flooder's own join request (sent
    // by `enter`) goes to it at once.
    let (mut flooder, _) = enter(&srv, "flooder", Some(&room)).await;
    let flood_at = std::time::Instant::now();
    let payloads: Vec<String> = (0u8..20).map(|i| encode_payload(&[i; 64])).collect();
    for p in &payloads {
        flooder
            .channel
            .send(ClientMessage::E2ee {
                room_id: room.clone(),
                e2ee: E2eeUp::JoinRequest { request: p.clone() },
            })
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    let end = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < end {
        let Ok(msg) = host.channel.next(Duration::from_millis(200)).await else {
            continue;
        };
        if let ServerMessage::E2ee {
            e2ee: E2eeDown::JoinRequest { request, from, .. },
            ..
        } = msg
            && from.device_id == flooder.device
        {
            got.push((request, flood_at.elapsed()));
        }
    }
    assert_eq!(
        got.len(),
        2,
        "the first request, then only the latest of the flood: {:?}",
        got.iter().map(|(_, t)| t).collect::<Vec<_>>()
    );
    let (latest, at) = &got[1];
    assert_eq!(latest, &payloads[19], "the latest request is the one kept");
    assert!(
        *at >= Duration::from_millis(1000),
        "the latest went out {at:?} after the flood began, inside the gap"
    );
    srv.stop().await;
}
