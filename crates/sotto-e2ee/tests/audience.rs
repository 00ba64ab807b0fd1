//! Audience tier: 1,000 listeners, a ban, rotation without a gap; forged
//! roster, forged request and substituted HPKE key rejected.

mod common;
use common::*;
use sotto_e2ee::{
    audience::{
        Distributor, JoinRequest, Listener, RoomKind, RosterVersion, VerifiedKeyStatement,
        VerifiedRoster, parse_sealed, sign_key_statement,
    },
    error::{AdmitError, FrameError, JoinRequestError, KeyStatementError, OpenError, RosterError},
    frame::{DEFAULT_GRACE_MS, Suite},
    identity::DeviceIdentity,
    keys::{KeyGeneration, split_kid, test_audience_key},
    roster::{RosterStore, RosterTree, encode_proof_request},
};

#[test]
fn thousand_listeners_one_banned_rest_decrypt_without_gap() {
    let mut net = Net::new(10);
    net.add_speaker("bob");
    net.add_speaker("carol");
    net.advance(300);
    net.start_distributor(RoomKind::Open);
    let mut listeners: Vec<(DeviceIdentity, Listener)> =
        (0..1000).map(|n| net.join_listener(n)).collect();
    assert_eq!(net.distributor.as_ref().unwrap().len(), 1000);
    let banned = 7usize;
    let banned_fp = listeners[banned].0.public().fingerprint();

    // Speakers send a 20 ms frame each in turn for 3 s; the ban is at 1 s.
    let start = net.now;
    let ban_at = start + 1000;
    let mut old_gen_frames = 0;
    let mut new_gen_frames = 0;
    let mut gen_before = None;
    let mut sealed_per_listener = 0;
    let mut banned_decrypted_after_ban = 0u64;
    for step in 0..150u64 {
        net.advance(20);
        let now = net.now;
        if now == ban_at {
            assert!(net.distributor.as_mut().unwrap().ban(banned_fp));
            gen_before = net.members[0].stage.sending_generation();
            // seal to the 999, post to mailboxes, announce to the stage
            net.rotate_after_epoch_change();
            sealed_per_listener = net.mailbox.recipients();
        }
        if now == ban_at + 60 {
            // mailboxes are drained 60 ms after the rotation (before the
            // speakers switch at +200 ms)
            let mut relayed = Vec::new();
            let host = net.host_identity();
            for (ident, l) in &mut listeners {
                let stmt = l.verify_statement(&net.statement, &[host]).unwrap();
                for sealed in net.mailbox.drain(&ident.public().fingerprint().0) {
                    l.open(now, &sealed, &stmt).unwrap();
                    relayed.push(sealed);
                }
            }
            assert_eq!(relayed.len(), 999, "one sealed key per remaining listener");
            // The banned listener, even handed every delivery the server
            // relayed (operator collusion), opens none of them.
            let (_, b) = &mut listeners[banned];
            let stmt = b.verify_statement(&net.statement, &[host]).unwrap();
            for sealed in &relayed {
                assert_eq!(b.open(now, sealed, &stmt), Err(OpenError::NotForUs));
            }
        }
        let s = (step % 3) as usize;
        let payload = format!("frame {step}");
        let frame = net.members[s]
            .stage
            .encrypt_frame(now, payload.as_bytes())
            .unwrap();
        let (_, tag) = split_kid(sotto_e2ee::frame::parse_header(&frame).unwrap().0);
        let is_new = gen_before.is_some_and(|g| g.tag() != tag);
        if is_new {
            new_gen_frames += 1
        } else {
            old_gen_frames += 1
        }
        for (i, (_, l)) in listeners.iter_mut().enumerate() {
            let r = l.decrypt(now, &frame);
            if i == banned && now >= ban_at && r.is_ok() {
                banned_decrypted_after_ban += 1;
            }
            if i == banned && is_new {
                assert!(
                    matches!(r, Err(FrameError::UnknownKeyId { .. })),
                    "banned listener decrypted frame {step}: {r:?}"
                );
            } else {
                assert_eq!(r.unwrap(), payload.as_bytes(), "listener {i} frame {step}");
            }
        }
        for r in 0..3 {
            if r != s {
                assert_eq!(
                    net.members[r].stage.decrypt_frame(now, &frame).unwrap(),
                    payload.as_bytes()
                );
            }
        }
    }
    // The exposure window: the banned listener decrypts only the frames
    // sent before the speakers switch (switch delay 200 ms = 10 frames of
    // 20 ms, the ban step included), nothing later.
    let window = net.config.switch_delay_ms / 20;
    assert!(
        banned_decrypted_after_ban <= window,
        "banned listener decrypted {banned_decrypted_after_ban} frames after the ban"
    );
    assert_eq!(
        sealed_per_listener, 999,
        "the banned listener got no new key"
    );
    assert!(
        old_gen_frames >= 50 && new_gen_frames >= 80,
        "{old_gen_frames} / {new_gen_frames}"
    );
    // the banned listener is not on the new roster; the others are
    let host_pk = net.host_identity();
    let upload = net
        .distributor
        .as_mut()
        .unwrap()
        .roster_upload(net.members[0].stage.identity());
    let v = listeners[0]
        .1
        .accept_roster(&upload.roster, &[host_pk])
        .unwrap();
    assert_eq!(v.count(), 999);
    // The server rebuilds the tree from the uploaded chunks and proves
    // membership and absence against the signed root.
    let mut store = RosterStore::default();
    for chunk in &upload.leaves {
        store.stage(b"host", chunk).unwrap();
    }
    store.commit(b"host", &upload.roster).unwrap();
    let kept = listeners[0].0.public().fingerprint();
    let answer = store
        .prove(&encode_proof_request(&[banned_fp, kept]))
        .unwrap()
        .unwrap();
    assert_eq!(
        v.check_proofs(&answer).unwrap(),
        vec![(banned_fp, false), (kept, true)]
    );
    // a banned listener cannot be admitted again
    let (req, _) =
        JoinRequest::create(&listeners[banned].0, ROOM, net.now + 1000, &mut net.rng).unwrap();
    let req = JoinRequest::parse(&req)
        .unwrap()
        .verify(&listeners[banned].0.public(), ROOM, net.now)
        .unwrap();
    assert_eq!(
        net.distributor.as_mut().unwrap().admit(req),
        Err(AdmitError::Banned)
    );
}

#[test]
fn previous_key_expires_after_grace() {
    let mut net = Net::new(11);
    net.advance(300);
    net.start_distributor(RoomKind::Open);
    let (ident, mut l) = net.join_listener(0);
    let old = net.members[0].stage.encrypt_frame(net.now, b"old").unwrap();
    net.rotate_after_epoch_change();
    let stmt = net.verified_statement(&l);
    for s in net.mailbox.drain(&ident.public().fingerprint().0) {
        l.open(net.now, &s, &stmt).unwrap();
    }
    assert!(!net.members[0].stage.rotation_due(net.now));
    assert!(
        net.members[0].stage.rotation_due(net.now + 60_000),
        "periodic rotation"
    );
    let t = net.now;
    let old2 = net.members[0].stage.encrypt_frame(t, b"old2").unwrap();
    assert_eq!(l.decrypt(t + 500, &old2).unwrap(), b"old2", "within grace");
    assert!(matches!(
        l.decrypt(t + DEFAULT_GRACE_MS + 1, &old),
        Err(FrameError::StaleKeyId { .. })
    ));
    // still stale (not "unknown") on later tries, after the ring dropped it
    assert!(matches!(
        l.decrypt(t + DEFAULT_GRACE_MS + 5_000, &old2),
        Err(FrameError::StaleKeyId { .. })
    ));
}

#[test]
fn forged_roster_rejected() {
    let mut net = Net::new(12);
    net.start_distributor(RoomKind::Open);
    let (_i, mut l) = net.join_listener(0);
    let host = net.host_identity();
    let good = net
        .distributor
        .as_mut()
        .unwrap()
        .roster(net.members[0].stage.identity());
    // altered: a fingerprint byte flipped
    let mut altered = good.clone();
    let n = altered.len();
    altered[n - 70] ^= 1;
    assert_eq!(
        l.accept_roster(&altered, &[host]),
        Err(RosterError::BadSignature)
    );
    // signed by someone who is not a distributor of the room (the server)
    let mallory = DeviceIdentity::generate(&mut net.rng, b"server", "s");
    let mut d2 = sotto_e2ee::audience::Distributor::new(
        ROOM,
        RoomKind::Open,
        net.members[0].stage.current_audience_key().unwrap(),
        &mallory,
    );
    let forged = d2.roster(&mallory);
    assert_eq!(
        l.accept_roster(&forged, &[host]),
        Err(RosterError::UntrustedSigner)
    );
    // the genuine one verifies; replaying it is a rollback
    assert!(l.accept_roster(&good, &[host]).is_ok());
    assert!(matches!(
        l.accept_roster(&good, &[host]),
        Err(RosterError::Rollback { .. })
    ));
    assert_eq!(
        VerifiedRoster::verify(&good, b"other-room", &[host], RosterVersion::default()),
        Err(RosterError::WrongRoom)
    );
    assert!(matches!(
        VerifiedRoster::verify(
            &good[..good.len() - 1],
            ROOM,
            &[host],
            RosterVersion::default()
        ),
        Err(RosterError::Malformed(_))
    ));
}

/// The roster signs how many accounts its keys belong to, as the admitting
/// client verified them: an account listening from two devices is one;
/// a key admitted without an account counts as one of its own; a departed
/// key no longer counts; and the count is under the signature.
#[test]
fn a_roster_signs_its_accounts() {
    let mut net = Net::new(14);
    net.start_distributor(RoomKind::Open);
    let host = net.host_identity();
    let admit = |net: &mut Net, n: usize, account: Option<&[u8]>| {
        let ident = DeviceIdentity::generate(&mut net.rng, format!("a{n}").as_bytes(), "d");
        let (req, _) = JoinRequest::create(&ident, ROOM, net.now + 60_000, &mut net.rng).unwrap();
        let verified = JoinRequest::parse(&req)
            .unwrap()
            .verify(&ident.public(), ROOM, net.now)
            .unwrap();
        let d = net.distributor.as_mut().unwrap();
        match account {
            Some(a) => d.admit_for(verified, a).unwrap(),
            None => d.admit(verified).unwrap(),
        };
        ident.public().fingerprint()
    };
    admit(&mut net, 0, Some(b"ann"));
    let second = admit(&mut net, 1, Some(b"ann"));
    admit(&mut net, 2, Some(b"bob"));
    admit(&mut net, 3, None);
    let signer = net.members[0].stage.identity();
    let roster = net.distributor.as_mut().unwrap().roster(signer);
    let v = VerifiedRoster::verify(&roster, ROOM, &[host], RosterVersion::default()).unwrap();
    assert_eq!((v.count(), v.accounts()), (4, 3));
    // Ann's second device leaves: still 3 accounts, 3 keys.
    assert!(net.distributor.as_mut().unwrap().remove(second));
    let roster = net.distributor.as_mut().unwrap().roster(signer);
    let v = VerifiedRoster::verify(&roster, ROOM, &[host], v.version()).unwrap();
    assert_eq!((v.count(), v.accounts()), (3, 3));
    // The server turns the account count down (to hide a key holder from
    // listeners): the signature fails. The count sits right after the
    // key count: magic, room (2 + 16 B here), signer, version (8+4+8), count.
    let at = 4 + 2 + ROOM.len() + 32 + 20 + 4 + 3;
    assert_eq!(roster[at], 3, "the account count's low byte");
    let mut lowered = roster.clone();
    lowered[at] = 2;
    assert_eq!(
        VerifiedRoster::verify(&lowered, ROOM, &[host], v.version()),
        Err(RosterError::BadSignature)
    );
    // More accounts than keys does not parse.
    let mut raised = roster.clone();
    raised[at] = 9;
    assert!(matches!(
        VerifiedRoster::verify(&raised, ROOM, &[host], v.version()),
        Err(RosterError::Malformed(_))
    ));
}

/// A roster carries the distributor's stage map: each member's leaf and
/// device key, and the epoch's room code, which a listener reads as the
/// stage does. Without a map set it lists no stage.
#[test]
fn roster_carries_the_stage_map_and_room_code() {
    let mut net = Net::new(13);
    let bob = net.add_speaker("bob");
    net.advance(300);
    net.start_distributor(RoomKind::Open);
    let (_i, mut l) = net.join_listener(0);
    let host = net.host_identity();
    let stage = &net.members[0].stage;
    let d = net.distributor.as_mut().unwrap();
    let bare = d.roster(stage.identity());
    assert_eq!(l.accept_roster(&bare, &[host]).unwrap().stage(), None);

    let mut map = stage.stage_map();
    assert_eq!(map.members.len(), 2);
    map.members.reverse(); // any order in, by leaf out
    d.set_stage(map);
    let r = l
        .accept_roster(&d.roster(stage.identity()), &[host])
        .unwrap();
    let got = r.stage().expect("a stage map");
    assert_eq!(got.epoch, stage.epoch());
    assert_eq!(got.room_code(), stage.room_code());
    assert_eq!(got.room_code(), net.members[bob].stage.room_code());
    for m in [&net.members[0], &net.members[bob]] {
        let leaf = m.stage.leaf_index();
        assert_eq!(
            got.key_at(leaf),
            Some(&m.stage.identity().public().to_bytes())
        );
    }
    assert_eq!(got.key_at(99), None);
}

#[test]
fn forged_listener_request_rejected() {
    let mut rng = rng(13);
    let alice = DeviceIdentity::generate(&mut rng, b"alice", "a");
    let mallory = DeviceIdentity::generate(&mut rng, b"mallory", "m");
    // Mallory signs a request claiming to be Alice: the registered key is Alice's.
    let (req, _) = JoinRequest::create(&mallory, ROOM, 60_000, &mut rng).unwrap();
    assert_eq!(
        JoinRequest::parse(&req)
            .unwrap()
            .verify(&alice.public(), ROOM, 0),
        Err(JoinRequestError::IdentityMismatch)
    );
    // Mallory puts Alice's key in her own request: the signature fails.
    let mut forged = req.clone();
    let off = 4 + 2 + ROOM.len();
    forged[off..off + 32].copy_from_slice(&alice.public().to_bytes());
    assert_eq!(
        JoinRequest::parse(&forged)
            .unwrap()
            .verify(&alice.public(), ROOM, 0),
        Err(JoinRequestError::BadSignature)
    );
    // Alice's genuine request: wrong room, expired, too far are refused.
    let (good, _) = JoinRequest::create(&alice, ROOM, 60_000, &mut rng).unwrap();
    let p = || JoinRequest::parse(&good).unwrap();
    assert!(p().verify(&alice.public(), ROOM, 0).is_ok());
    assert_eq!(
        p().verify(&alice.public(), b"another", 0),
        Err(JoinRequestError::WrongRoom)
    );
    assert_eq!(
        p().verify(&alice.public(), ROOM, 60_000),
        Err(JoinRequestError::Expired)
    );
    let (far, _) = JoinRequest::create(&alice, ROOM, 10_000_000, &mut rng).unwrap();
    assert_eq!(
        JoinRequest::parse(&far)
            .unwrap()
            .verify(&alice.public(), ROOM, 0),
        Err(JoinRequestError::ExpiryTooFar)
    );
    assert!(JoinRequest::parse(&good[..good.len() - 1]).is_err());
}

#[test]
fn substituted_hpke_key_rejected() {
    let mut net = Net::new(14);
    net.start_distributor(RoomKind::Open);
    let alice = DeviceIdentity::generate(&mut net.rng, b"alice", "a");
    let mallory = DeviceIdentity::generate(&mut net.rng, b"mallory", "m");
    let (req, alice_keys) = JoinRequest::create(&alice, ROOM, 60_000, &mut net.rng).unwrap();
    let (mreq, mallory_keys) = JoinRequest::create(&mallory, ROOM, 60_000, &mut net.rng).unwrap();
    // The server swaps Alice's HPKE key for its own: the signature breaks.
    let off = 4 + 2 + ROOM.len() + 32;
    let mut swapped = req.clone();
    swapped[off..off + 32].copy_from_slice(&mreq[off..off + 32]);
    assert_eq!(
        JoinRequest::parse(&swapped)
            .unwrap()
            .verify(&alice.public(), ROOM, 0),
        Err(JoinRequestError::BadSignature)
    );
    // A delivery sealed to Alice does not open with another key, and one
    // sealed to Mallory does not open for Alice.
    let v = JoinRequest::parse(&req)
        .unwrap()
        .verify(&alice.public(), ROOM, 0)
        .unwrap();
    let sealed = net.distributor.as_mut().unwrap().admit(v).unwrap();
    let host = net.host_identity();
    let mut as_mallory = Listener::new(
        ROOM,
        &mallory.public(),
        mallory_keys,
        Suite::CompactAudio,
        DEFAULT_GRACE_MS,
    );
    let stmt = as_mallory
        .verify_statement(&net.statement, &[host])
        .unwrap();
    assert_eq!(
        as_mallory.open(0, &sealed.bytes, &stmt),
        Err(OpenError::NotForUs)
    );
    let mut alice_l = Listener::new(
        ROOM,
        &alice.public(),
        alice_keys,
        Suite::CompactAudio,
        DEFAULT_GRACE_MS,
    );
    let mut tampered = sealed.bytes.clone();
    tampered[20] ^= 1;
    assert_eq!(alice_l.open(0, &tampered, &stmt), Err(OpenError::NotForUs));
    let mut wrong_gen = sealed.bytes.clone();
    wrong_gen[11] ^= 1; // claims another generation: AAD mismatch
    let claimed = parse_sealed(&wrong_gen).unwrap().generation;
    let wrong_gen_stmt = alice_l
        .verify_statement(
            &sign_key_statement(
                net.members[0].stage.identity(),
                ROOM,
                &test_audience_key(claimed, [0; 32]),
            ),
            &[host],
        )
        .unwrap();
    assert_eq!(
        alice_l.open(0, &wrong_gen, &wrong_gen_stmt),
        Err(OpenError::NotForUs)
    );
    assert!(alice_l.open(0, &sealed.bytes, &stmt).is_ok());
    assert!(matches!(
        alice_l.open(0, &sealed.bytes[..50], &stmt),
        Err(OpenError::Malformed(_))
    ));
}

#[test]
fn closed_room_admits_only_allowed() {
    let mut net = Net::new(15);
    net.start_distributor(RoomKind::Closed);
    let alice = DeviceIdentity::generate(&mut net.rng, b"alice", "a");
    let (req, _) = JoinRequest::create(&alice, ROOM, 60_000, &mut net.rng).unwrap();
    let v = || {
        JoinRequest::parse(&req)
            .unwrap()
            .verify(&alice.public(), ROOM, 0)
            .unwrap()
    };
    assert_eq!(
        net.distributor.as_mut().unwrap().admit(v()),
        Err(AdmitError::NotAllowed)
    );
    net.distributor
        .as_mut()
        .unwrap()
        .allow(alice.public().fingerprint());
    assert!(net.distributor.as_mut().unwrap().admit(v()).is_ok());
}

#[test]
fn rotation_split_among_stage_members_covers_everyone_once() {
    let mut net = Net::new(16);
    net.start_distributor(RoomKind::Open);
    for n in 0..40 {
        net.join_listener(n);
    }
    let key = net.members[0].stage.next_audience_key().unwrap();
    let d = net.distributor.as_ref().unwrap();
    let mut all: Vec<_> = (0..3)
        .flat_map(|i| d.seal_shard(&key, i, 3).unwrap())
        .map(|s| s.recipient)
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 40);
}

/// HPKE base mode does not say who sealed, and the server sees every
/// listener's HPKE key (in its join request). A key the server seals itself
/// is refused: it is not the key a stage member signed the commitment of.
#[test]
fn key_sealed_by_the_server_is_rejected() {
    let mut net = Net::new(17);
    net.advance(300);
    net.start_distributor(RoomKind::Open);
    let host = net.host_identity();
    let alice = DeviceIdentity::generate(&mut net.rng, b"alice", "a");
    let (req, keys) = JoinRequest::create(&alice, ROOM, net.now + 60_000, &mut net.rng).unwrap();
    let now = net.now;
    let verify = || {
        JoinRequest::parse(&req)
            .unwrap()
            .verify(&alice.public(), ROOM, now)
            .unwrap()
    };
    let sealed = net.distributor.as_mut().unwrap().admit(verify()).unwrap();
    let mut l = Listener::new(
        ROOM,
        &alice.public(),
        keys,
        Suite::CompactAudio,
        DEFAULT_GRACE_MS,
    );
    let genuine = net.verified_statement(&l);
    let g = l.open(net.now, &sealed.bytes, &genuine).unwrap();

    // The server holds Alice's signed join request, so it can seal a key of
    // its own choosing to her, with exactly the sealed-delivery format, for
    // the current generation or the next one.
    let server = DeviceIdentity::generate(&mut net.rng, b"server", "s");
    let next = KeyGeneration {
        epoch: g.epoch,
        rotation: g.rotation + 1,
    };
    let seal_as_server = |generation| {
        let key = test_audience_key(generation, [0x66; 32]);
        let mut d = Distributor::new(ROOM, RoomKind::Open, key, &server);
        let sealed = d.admit(verify()).unwrap();
        (sealed.bytes, d.statement().to_vec())
    };
    let (fake_same, server_stmt) = seal_as_server(g);
    let (fake_next, server_next_stmt) = seal_as_server(next);

    // 1. Its own statement: the server is not a stage member.
    assert_eq!(
        l.verify_statement(&server_stmt, &[host]),
        Err(KeyStatementError::UntrustedSigner)
    );
    // ... nor can it put the host's key on its own signature.
    let mut claims_host = server_next_stmt.clone();
    let off = 4 + 2 + ROOM.len() + 8 + 4;
    claims_host[off..off + 32].copy_from_slice(&host.to_bytes());
    assert_eq!(
        l.verify_statement(&claims_host, &[host]),
        Err(KeyStatementError::BadSignature)
    );
    // 2. The genuine statement of this generation: the commitment differs.
    assert_eq!(
        l.open(net.now, &fake_same, &genuine),
        Err(OpenError::UnauthenticatedKey)
    );
    // 3. The genuine statement replayed for a generation it does not name.
    assert_eq!(
        l.open(net.now, &fake_next, &genuine),
        Err(OpenError::StatementMismatch)
    );
    // 4. After the real rotation to `next`, with its genuine statement.
    net.rotate_after_epoch_change();
    let genuine_next = net.verified_statement(&l);
    assert_eq!(genuine_next.generation(), next);
    assert_eq!(
        l.open(net.now, &fake_next, &genuine_next),
        Err(OpenError::UnauthenticatedKey)
    );
    // None of it was installed: Alice still decrypts the real audio, and
    // the real delivery of `next` still opens.
    assert_eq!(l.current_generation(), Some(g));
    for s in net.mailbox.drain(&alice.public().fingerprint().0) {
        assert_eq!(l.open(net.now, &s, &genuine_next), Ok(next));
    }
    net.advance(300);
    let f = net.members[0]
        .stage
        .encrypt_frame(net.now, b"real")
        .unwrap();
    assert_eq!(l.decrypt(net.now, &f).unwrap(), b"real");
}

/// A key statement binds its room and generation: it cannot vouch for the
/// key of another rotation, epoch or room.
#[test]
fn key_statement_cannot_be_replayed_for_another_rotation_or_room() {
    let mut net = Net::new(18);
    net.advance(300);
    net.start_distributor(RoomKind::Open);
    let host = net.host_identity();
    let (ident, mut l) = net.join_listener(0);
    let old = net.verified_statement(&l);
    let old_bytes = net.statement.clone();
    net.rotate_after_epoch_change();
    let sealed: Vec<Vec<u8>> = net.mailbox.drain(&ident.public().fingerprint().0);
    assert_eq!(sealed.len(), 1);
    // The previous rotation's statement does not open this rotation's key.
    assert_eq!(
        l.open(net.now, &sealed[0], &old),
        Err(OpenError::StatementMismatch)
    );
    // Rewriting the generation under the old signature breaks it.
    let new_gen = parse_sealed(&sealed[0]).unwrap().generation;
    let mut moved = old_bytes.clone();
    let off = 4 + 2 + ROOM.len();
    moved[off..off + 8].copy_from_slice(&new_gen.epoch.to_be_bytes());
    moved[off + 8..off + 12].copy_from_slice(&new_gen.rotation.to_be_bytes());
    assert_eq!(
        l.verify_statement(&moved, &[host]),
        Err(KeyStatementError::BadSignature)
    );
    // A genuine statement of the same key for another room.
    let key = net.members[0].stage.current_audience_key().unwrap();
    assert_eq!(key.generation(), new_gen);
    let other_room = sign_key_statement(net.members[0].stage.identity(), b"other-room", &key);
    assert_eq!(
        l.verify_statement(&other_room, &[host]),
        Err(KeyStatementError::WrongRoom)
    );
    let verified_elsewhere =
        VerifiedKeyStatement::verify(&other_room, b"other-room", &[host]).unwrap();
    assert_eq!(
        l.open(net.now, &sealed[0], &verified_elsewhere),
        Err(OpenError::StatementMismatch)
    );
    assert!(matches!(
        l.verify_statement(&net.statement[..10], &[host]),
        Err(KeyStatementError::Malformed(_))
    ));
    // The right one opens.
    let current = net.verified_statement(&l);
    assert_eq!(l.open(net.now, &sealed[0], &current), Ok(new_gen));
}

/// Roster versions are (generation, sequence): a successor distributor's
/// rosters are newer than its predecessor's, after host succession (an
/// epoch change) and after a hand-over within one generation.
#[test]
fn roster_versions_continue_across_distributors() {
    let mut net = Net::new(19);
    let bob = net.add_speaker("bob");
    net.advance(300);
    net.start_distributor(RoomKind::Open);
    let host = net.host_identity();
    let bob_id = net.members[bob].stage.identity().public();
    let alice = DeviceIdentity::generate(&mut net.rng, b"alice", "a");
    let (req, keys) = JoinRequest::create(&alice, ROOM, net.now + 60_000, &mut net.rng).unwrap();
    let verified = |now| {
        JoinRequest::parse(&req)
            .unwrap()
            .verify(&alice.public(), ROOM, now)
            .unwrap()
    };
    let mut l = Listener::new(
        ROOM,
        &alice.public(),
        keys,
        Suite::CompactAudio,
        DEFAULT_GRACE_MS,
    );
    let sealed = net
        .distributor
        .as_mut()
        .unwrap()
        .admit(verified(net.now))
        .unwrap();
    let stmt = net.verified_statement(&l);
    l.open(net.now, &sealed.bytes, &stmt).unwrap();
    // The host publishes three rosters; Alice accepts each.
    let mut last = RosterVersion::default();
    for _ in 0..3 {
        let r = net
            .distributor
            .as_mut()
            .unwrap()
            .roster(net.members[0].stage.identity());
        last = l.accept_roster(&r, &[host, bob_id]).unwrap().version();
    }
    assert_eq!(last.seq, 3);

    // Hand-over within one generation: Bob takes over with the same key.
    let key = net.members[bob].stage.current_audience_key().unwrap();
    let mut d2 = Distributor::new(ROOM, RoomKind::Open, key, net.members[bob].stage.identity());
    let resealed = d2.admit(verified(net.now)).unwrap();
    let stmt = l.verify_statement(d2.statement(), &[bob_id]).unwrap();
    l.open(net.now, &resealed.bytes, &stmt).unwrap();
    // Without the predecessor's position its first roster is a rollback...
    let early = d2.roster(net.members[bob].stage.identity());
    assert!(matches!(
        l.accept_roster(&early, &[host, bob_id]),
        Err(RosterError::Rollback { .. })
    ));
    // ... with it, it continues.
    d2.resume_after(last);
    let r = d2.roster(net.members[bob].stage.identity());
    last = l.accept_roster(&r, &[host, bob_id]).unwrap().version();
    assert_eq!(last.seq, 4);

    // Host succession: the host leaves the stage (the server proposes its
    // removal, Bob commits). The new epoch's generation is newer than
    // anything the old distributor signed, whatever its sequence number.
    let prop = net.server.propose_remove(&net.ds, 0).unwrap();
    net.post(None, &prop).unwrap();
    net.sync_all();
    let out = net.members[bob].stage.commit_pending(&[], &[]).unwrap().0;
    net.post(Some(bob), &out.commit).unwrap();
    net.members[bob].stage.commit_accepted(net.now).unwrap();
    net.ds.set_group_info(&out.group_info).unwrap();
    net.sync_all();
    assert!(!net.members[0].active, "the host saw its removal");
    let key = net.members[bob].stage.next_audience_key().unwrap();
    let rotation = d2
        .rotate(key.clone(), net.members[bob].stage.identity())
        .unwrap();
    let stmt = l.verify_statement(&rotation.statement, &[bob_id]).unwrap();
    for s in rotation.deliveries {
        l.open(net.now, &s.bytes, &stmt).unwrap();
    }
    let r = d2.roster(net.members[bob].stage.identity());
    let v = l.accept_roster(&r, &[bob_id]).unwrap();
    assert_eq!(v.generation(), key.generation());
    assert_eq!(v.version().seq, 1);
    assert!(v.version() > last);
    // It commits to the listeners the successor holds, Alice among them.
    let held: Vec<_> = d2.listeners().map(|l| l.fingerprint()).collect();
    assert!(held.contains(&alice.public().fingerprint()));
    assert_eq!(v.root(), &RosterTree::new(held).root());
    // and the old host's rosters are now rollbacks for Alice
    let stale = net
        .distributor
        .as_mut()
        .unwrap()
        .roster(net.members[0].stage.identity());
    assert!(matches!(
        l.accept_roster(&stale, &[host, bob_id]),
        Err(RosterError::Rollback { .. })
    ));
}

/// The next key sealed ahead (`Distributor::preseal`): its rotation sends
/// every remaining listener exactly one delivery that opens to the new
/// key — those sealed ahead, those admitted since, those re-admitted —
/// and none to a listener banned after being sealed to; a key of another
/// generation is not taken for it.
#[test]
fn a_rotation_sealed_ahead_reaches_everyone_left_and_not_the_banned() {
    let mut net = Net::new(21);
    net.add_speaker("bob");
    net.advance(300);
    net.start_distributor(RoomKind::Open);
    let mut listeners: Vec<(DeviceIdentity, Listener)> =
        (0..40).map(|n| net.join_listener(n)).collect();
    let next = net.members[0].stage.next_audience_key().unwrap();
    let d = net.distributor.as_mut().unwrap();
    assert_eq!(d.preseal(&next, 25).unwrap(), 15);
    assert_eq!(d.preseal(&next, 100).unwrap(), 0);
    assert_eq!(d.preseal_left(), 0);
    // Sealed ahead to all 40; then one is banned and 5 more join.
    let banned_fp = listeners[3].0.public().fingerprint();
    assert!(net.distributor.as_mut().unwrap().ban(banned_fp));
    listeners.extend((40..45).map(|n| net.join_listener(n)));
    assert_eq!(net.distributor.as_ref().unwrap().preseal_left(), 5);

    let rotation = net
        .distributor
        .as_mut()
        .unwrap()
        .rotate(next.clone(), net.members[0].stage.identity())
        .unwrap();
    let mut to: Vec<_> = rotation.deliveries.iter().map(|s| s.recipient).collect();
    to.sort_unstable();
    to.dedup();
    assert_eq!(to.len(), 44, "one delivery per remaining listener");
    assert_eq!(rotation.deliveries.len(), 44);
    assert!(!to.contains(&banned_fp), "none for the banned listener");
    let host = net.host_identity();
    for (ident, l) in &mut listeners {
        let fp = ident.public().fingerprint();
        let stmt = l.verify_statement(&rotation.statement, &[host]).unwrap();
        let mine: Vec<_> = rotation
            .deliveries
            .iter()
            .filter(|s| s.recipient == fp)
            .collect();
        if fp == banned_fp {
            assert!(mine.is_empty());
            for s in &rotation.deliveries {
                assert_eq!(l.open(net.now, &s.bytes, &stmt), Err(OpenError::NotForUs));
            }
            continue;
        }
        assert_eq!(mine.len(), 1);
        assert_eq!(
            l.open(net.now, &mine[0].bytes, &stmt).unwrap(),
            next.generation()
        );
    }

    // Sealed ahead to one generation, rotated to another: sealed afresh.
    let d = net.distributor.as_mut().unwrap();
    d.preseal(&next, 100).unwrap();
    let other = test_audience_key(
        KeyGeneration {
            epoch: next.generation().epoch + 1,
            rotation: 0,
        },
        [9; 32],
    );
    let rotation = d
        .rotate(other.clone(), net.members[0].stage.identity())
        .unwrap();
    let (ident, l) = &mut listeners[0];
    let stmt = l.verify_statement(&rotation.statement, &[host]).unwrap();
    let fp = ident.public().fingerprint();
    let mine = rotation
        .deliveries
        .iter()
        .find(|s| s.recipient == fp)
        .unwrap();
    assert_eq!(
        l.open(net.now, &mine.bytes, &stmt).unwrap(),
        other.generation()
    );
}
