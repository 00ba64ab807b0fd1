//! The client core against a server that acts (issue: "E2EE that holds
//! against a malicious operator"). Each test is one attack from the issue,
//! run through an otherwise honest in-memory relay (`common::Net`) that the
//! test subverts: forged keys and chains, its own stage group, withheld,
//! replaced, replayed and reordered messages. Virtual time throughout.

mod common;

use common::{Net, Verdict, keypair};
use rand_core::RngCore;
use sotto_delivery::{RoomDelivery, ServerProposer};
use sotto_e2ee::audience::{Distributor, JoinRequest, RoomKind as E2eeKind};
use sotto_e2ee::binding::sign_binding;
use sotto_e2ee::frame::{FrameSender, Suite};
use sotto_e2ee::identity::{DeviceIdentity, IdentityKey};
use sotto_e2ee::invitation::{VerifiedInvitation, create_invitation};
use sotto_e2ee::keys::{KeyGeneration, test_audience_key};
use sotto_e2ee::stage::{ExternalSenderInfo, StageConfig, StageMember};
use sotto_proto::access::AccessVerb;
use sotto_proto::chain::{DeviceLink, LinkOp, encode_chain};
use sotto_proto::channel::{
    ClientMessage, E2eeDown, E2eePeer, E2eeUp, GroupBinding, ServerMessage, decode_payload,
    encode_payload,
};
use sotto_proto::keys::DevicePublicKey;
use sotto_proto::room::{Role, RoomKind};
use sotto_proto::{DeviceId, ErrorCode};
use sotto_room::Alert;
use sotto_room::room::{COMMIT_TIMEOUT_MS, CryptoError};

/// Host + one listener, keys delivered.
fn host_and_listener() -> (Net, usize, usize) {
    let mut net = Net::new(1);
    let h = net.join("host", Role::Host);
    net.run();
    let l = net.join("lis", Role::Listener);
    net.run();
    net.advance(1_500, 100);
    assert!(net.devs[l].crypto.can_decrypt(), "{:?}", net.devs[l].errors);
    assert!(net.hears(h, l));
    (net, h, l)
}

/// Host + speaker on the stage group + listener.
fn stage_of_two() -> (Net, usize, usize, usize) {
    let (mut net, h, l) = host_and_listener();
    let s = net.join("spk", Role::Listener);
    net.run();
    net.invite(h, s);
    net.advance(2_000, 100);
    assert!(net.devs[s].crypto.can_encrypt(), "{:?}", net.devs[s].errors);
    assert_eq!(
        net.devs[s].crypto.room_code(),
        net.devs[h].crypto.room_code()
    );
    assert!(net.hears(s, l) && net.hears(h, s) && net.hears(s, h));
    (net, h, s, l)
}

/// The operator's own device key, registered in its `devices` table for a
/// victim's account: the same seed gives its E2EE identity.
fn operator_identity(net: &mut Net, victim: usize) -> ([u8; 32], DeviceIdentity) {
    let mut seed = [0u8; 32];
    net.rng.fill_bytes(&mut seed);
    let id = DeviceIdentity::from_seed(seed, net.devs[victim].user.as_str().as_bytes(), "op");
    (seed, id)
}

fn op_peer(net: &Net, victim: usize, op: &DeviceIdentity, chain: String) -> E2eePeer {
    E2eePeer {
        user_id: net.devs[victim].user.clone(),
        device_id: DeviceId("0".repeat(32)),
        device_key: DevicePublicKey::from_bytes(op.public().to_bytes()),
        chain,
    }
}

fn sealed_to(dev: &common::Dev, device: &DeviceId) -> usize {
    dev.sent
        .iter()
        .filter(|m| {
            matches!(m, ClientMessage::E2ee { e2ee: E2eeUp::Sealed { deliveries, .. }, .. }
                if deliveries.iter().any(|d| &d.to == device))
        })
        .count()
}

#[test]
fn honest_room_works_through_the_harness() {
    let (mut net, h, s, l) = stage_of_two();
    // A minute and more of rotations: everyone keeps hearing everyone.
    for _ in 0..8 {
        net.advance(10_000, 200);
        assert!(net.hears(h, l) && net.hears(s, l) && net.hears(h, s));
    }
    for d in &net.devs {
        assert!(d.alerts.is_empty(), "{}: {:?}", d.name, d.alerts);
    }
    // The host learns the members' chains and checks the roster: the
    // listener is proven on it, nobody is hidden.
    for i in [h, s, l] {
        let (user, chain) = (net.devs[i].user.clone(), encode_chain(&net.devs[i].links));
        net.devs[h].crypto.learn_chain(&user, &chain).unwrap();
    }
    net.devs[h].crypto.check_roster();
    net.advance(100, 100); // the proof requests go out, answers come
    let report = net.devs[h].crypto.roster_report();
    assert_eq!(report.entries.len(), 3, "{report:?}");
    assert_eq!((report.hidden, report.unchecked, report.listed), (0, 0, 1));
}

/// Who speaks. A stage member reads it from the stage group's credentials;
/// a listener, who is not in the group, from the distributor's signed stage
/// map (leaf → device key) and the chains it verified (key → account). The
/// same map carries the room code, so a listener reads the code the stage
/// reads. An operator that alters the map — here it swaps the host's and
/// the speaker's keys, so the host's words would show as the speaker's —
/// breaks the distributor's signature: the listener refuses it and keeps
/// its names.
#[test]
fn listeners_name_speakers_from_the_signed_stage_map_and_a_forged_map_is_refused() {
    let (mut net, h, s, l) = stage_of_two();
    for i in [h, s, l] {
        let (user, chain) = (net.devs[i].user.clone(), encode_chain(&net.devs[i].links));
        net.devs[l].crypto.learn_chain(&user, &chain).unwrap();
    }
    let (host, speaker) = (net.devs[h].user.clone(), net.devs[s].user.clone());
    // A listener names a frame's sender once the frame's KID decrypted
    // (no name from a header alone): each frame goes through it first.
    let frames = |net: &mut Net| {
        let now = net.now;
        let pair = (
            net.devs[h].crypto.encrypt(now, b"opus").unwrap(),
            net.devs[s].crypto.encrypt(now, b"opus").unwrap(),
        );
        for f in [&pair.0, &pair.1] {
            assert_eq!(net.devs[l].crypto.decrypt(now, f).unwrap(), b"opus");
        }
        pair
    };
    let (from_host, from_speaker) = frames(&mut net);
    // Stage members name each other from the group itself.
    assert_eq!(
        net.devs[s].crypto.frame_sender(&from_host),
        Some(host.clone())
    );
    assert_eq!(
        net.devs[h].crypto.frame_sender(&from_speaker),
        Some(speaker.clone())
    );
    // The listener, from the signed map.
    assert_eq!(
        net.devs[l].crypto.frame_sender(&from_host),
        Some(host.clone())
    );
    assert_eq!(
        net.devs[l].crypto.frame_sender(&from_speaker),
        Some(speaker.clone())
    );
    assert_eq!(
        net.devs[h].crypto.frame_sender(b""),
        None,
        "no header, no name"
    );
    let code = net.devs[h].crypto.room_code();
    assert!(code.is_some());
    assert_eq!(net.devs[l].crypto.room_code(), code);
    let report = net.devs[l].crypto.check_roster();
    let on_stage: Vec<_> = report.entries.iter().filter(|e| e.stage).collect();
    assert_eq!(on_stage.len(), 2, "{report:?}");
    for who in [&host, &speaker] {
        assert!(
            on_stage.iter().any(|e| e.user.as_ref() == Some(who)),
            "{report:?}"
        );
    }
    assert_eq!(report.hidden, 0, "{report:?}");

    // The operator swaps the two keys in the newest roster's stage map and
    // delivers it again, as from its signer.
    let signer = (0..net.devs.len())
        .find(|&i| net.devs[i].crypto.is_distributor())
        .expect("a distributor");
    let roster = net.devs[signer]
        .sent
        .iter()
        .rev()
        .find_map(|m| match m {
            ClientMessage::E2ee {
                e2ee: E2eeUp::Roster { roster },
                ..
            } => Some(decode_payload(roster).unwrap()),
            _ => None,
        })
        .expect("a roster was signed");
    let mut forged = roster.clone();
    let entries = forged.len() - 64 - 32 - 2 * 36;
    let (a, b) = (entries + 4, entries + 36 + 4);
    let key_a: [u8; 32] = forged[a..a + 32].try_into().unwrap();
    let key_b: [u8; 32] = forged[b..b + 32].try_into().unwrap();
    assert_ne!(key_a, key_b);
    forged[a..a + 32].copy_from_slice(&key_b);
    forged[b..b + 32].copy_from_slice(&key_a);
    let errors = net.devs[l].errors.len();
    let from = net.devs[signer].peer();
    net.e2ee(
        l,
        E2eeDown::Roster {
            roster: encode_payload(&forged),
            from,
        },
    );
    net.run();
    assert!(
        net.devs[l].errors[errors..]
            .iter()
            .any(|e| e.contains("signature")),
        "{:?}",
        net.devs[l].errors
    );
    let (from_host, from_speaker) = frames(&mut net);
    assert_eq!(net.devs[l].crypto.frame_sender(&from_host), Some(host));
    assert_eq!(
        net.devs[l].crypto.frame_sender(&from_speaker),
        Some(speaker)
    );
    assert_eq!(net.devs[l].crypto.room_code(), code);
}

/// Attack 1: the server attaches a key it holds to a listener's account
/// (a row in its `devices` table) and asks the distributor to admit it.
#[test]
fn attack_1_forged_device_gets_no_key() {
    let (mut net, h, l) = host_and_listener();
    let (_, op) = operator_identity(&mut net, l);
    let (req, _keys) = JoinRequest::create(
        &op,
        net.room.as_str().as_bytes(),
        net.now + 60_000,
        &mut net.rng,
    )
    .unwrap();
    // With the listener's genuine chain (which does not hold the key)...
    let genuine = net.devs[l].peer().chain;
    let from = op_peer(&net, l, &op, genuine);
    let op_device = from.device_id.clone();
    net.join_request_to(h, &req, from);
    net.run();
    assert_eq!(
        sealed_to(&net.devs[h], &op_device),
        0,
        "key sealed to the operator"
    );
    assert!(net.devs[h].has_alert(|a| matches!(a, Alert::ForgedDevice { .. })));
    // ...and with a chain of its own making for that account: the
    // distributor pinned the listener's root at its first join request.
    let (_, links) = keypair([0x0f; 32]);
    let from = op_peer(&net, l, &op, encode_payload(&encode_chain(&links)));
    net.join_request_to(h, &req, from);
    net.run();
    assert_eq!(sealed_to(&net.devs[h], &op_device), 0);
    assert!(net.devs[h].has_alert(|a| matches!(a, Alert::RootChanged { .. })));
    // The real listener still hears.
    assert!(net.hears(h, l));
}

/// Attack 2: the server makes its own stage group with a speaker's
/// KeyPackage and Welcomes it in; and resets the group without the host.
#[test]
fn attack_2_forked_stage_group_is_refused() {
    let (mut net, h, l) = host_and_listener();
    let s = net.join("spk", Role::Listener);
    net.run();
    // The operator withholds the honest Welcome.
    net.hook = Box::new(|_, m| match m {
        ServerMessage::E2ee {
            e2ee: E2eeDown::Welcome { .. },
            ..
        } => Verdict::Drop,
        _ => Verdict::Deliver,
    });
    net.invite(h, s);
    net.advance(500, 100);
    let kp = net.devs[s]
        .sent
        .iter()
        .rev()
        .find_map(|m| match m {
            ClientMessage::E2ee {
                e2ee: E2eeUp::KeyPackage { key_package },
                ..
            } => Some(decode_payload(key_package).unwrap()),
            _ => None,
        })
        .expect("the speaker asked to join the stage");
    // The operator's group: its own member, its own external sender.
    let (_, op) = operator_identity(&mut net, h);
    let op_server = ServerProposer::from_ed25519([7; 32], ed_public([7; 32]), b"sotto server");
    let info = ExternalSenderInfo {
        public_key: op_server.public_key().to_vec(),
        credential_identity: op_server.credential_identity(),
    };
    let room = net.room.as_str().as_bytes().to_vec();
    let op_public = op.public();
    let (mut m, gi, tree) = StageMember::create(
        op,
        &room,
        &info,
        StageConfig::default(),
        net.now,
        &mut net.rng,
    )
    .unwrap();
    let mut ds = RoomDelivery::create(&gi, &tree).unwrap();
    let add = op_server.propose_add(&ds, &kp).unwrap();
    ds.handle_handshake(&add).unwrap();
    m.handle_message(net.now, &add).unwrap();
    let victim = IdentityKey::from_bytes(net.devs[s].key().as_bytes()).unwrap();
    let inv = create_invitation(m.identity(), &room, &victim, net.now + 60_000);
    let inv = VerifiedInvitation::verify(&inv, &room, &[op_public], net.now).unwrap();
    let (out, _) = m.commit_pending(&[inv], &[]).unwrap();
    ds.handle_handshake(&out.commit).unwrap();
    m.commit_accepted(net.now).unwrap();
    net.e2ee(
        s,
        E2eeDown::Welcome {
            welcome: encode_payload(out.welcome.as_deref().unwrap()),
            ratchet_tree: encode_payload(&ds.ratchet_tree().unwrap()),
        },
    );
    net.hook = Box::new(|_, _| Verdict::Deliver);
    net.run();
    net.advance(2_000, 100);
    assert!(
        net.devs[s].crypto.room_code().is_none(),
        "the speaker joined the operator's group"
    );
    assert!(
        net.devs[s].has_alert(|a| matches!(a, Alert::ForeignGroup { .. })),
        "{:?} {:?}",
        net.devs[s].alerts,
        net.devs[s].errors
    );

    // The honest Welcome goes through: the speaker joins the host's group.
    net.set_role(s, Role::Listener);
    net.run();
    net.invite(h, s);
    net.advance(2_000, 100);
    assert_eq!(
        net.devs[s].crypto.room_code(),
        net.devs[h].crypto.room_code()
    );
    let code = net.devs[s].crypto.room_code();

    // A reset the host did not sign (the operator's binding, claimed to be
    // the host's) leaves everyone in the host's group.
    let (_, op2) = operator_identity(&mut net, h);
    let binding = sign_binding(&op2, &room, &[9; 16], E2eeKind::Open, net.now + 10_000);
    let mut from = net.devs[h].peer();
    from.device_key = DevicePublicKey::from_bytes(op2.public().to_bytes());
    net.e2ee(
        s,
        E2eeDown::GroupReset {
            group: GroupBinding {
                binding: encode_payload(&binding),
                from,
            },
        },
    );
    net.run();
    net.advance(1_000, 100);
    assert_eq!(net.devs[s].crypto.room_code(), code);
    assert!(net.hears(s, l) && net.hears(s, h));
}

fn ed_public(seed: [u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes()
}

/// Attack 3: a listener gets a key statement and a sealed key that the
/// server signed itself and attributed to the host.
#[test]
fn attack_3_injected_listener_key_is_refused() {
    let (mut net, h, l) = host_and_listener();
    let (_, op) = operator_identity(&mut net, h);
    let room = net.room.as_str().as_bytes().to_vec();
    let g = KeyGeneration {
        epoch: 50,
        rotation: 0,
    };
    let key = test_audience_key(g, [0x33; 32]);
    let mut dist = Distributor::new(&room, E2eeKind::Open, key.clone(), &op);
    let req = net.devs[l]
        .sent
        .iter()
        .rev()
        .find_map(|m| match m {
            ClientMessage::E2ee {
                e2ee: E2eeUp::JoinRequest { request },
                ..
            } => Some(decode_payload(request).unwrap()),
            _ => None,
        })
        .unwrap();
    let lk = IdentityKey::from_bytes(net.devs[l].key().as_bytes()).unwrap();
    let verified = JoinRequest::parse(&req)
        .unwrap()
        .verify(&lk, &room, net.now)
        .unwrap();
    let sealed = dist.admit(verified).unwrap();
    let mut from = net.devs[h].peer();
    from.device_key = DevicePublicKey::from_bytes(op.public().to_bytes());
    net.e2ee(
        l,
        E2eeDown::Sealed {
            sealed: encode_payload(&sealed.bytes),
            statement: encode_payload(dist.statement()),
            from: from.clone(),
        },
    );
    // A roster of its own, too.
    net.e2ee(
        l,
        E2eeDown::Roster {
            roster: encode_payload(&dist.roster(&op)),
            from,
        },
    );
    net.run();
    let mut sender = FrameSender::new(Suite::CompactAudio, &key, 0).unwrap();
    let frame = sender.encrypt(b"operator speaking").unwrap();
    assert!(
        net.devs[l].crypto.decrypt(net.now, &frame).is_err(),
        "the listener installed the operator's key"
    );
    assert!(net.devs[l].has_alert(|a| matches!(a, Alert::ForgedDevice { .. })));
    assert!(net.hears(h, l));
}

/// Attack 4: a roster "from the future" would make every genuine roster
/// after it look like a rollback.
#[test]
fn attack_4_frozen_roster_is_refused() {
    let (mut net, h, l) = host_and_listener();
    let room = net.room.as_str().as_bytes().to_vec();
    // Even signed by the host's own device (a server replaying a roster of
    // a buggy or compromised client, or the host's key in a future epoch).
    let host = DeviceIdentity::from_seed(
        net.devs[h].seed,
        net.devs[h].user.as_str().as_bytes(),
        net.devs[h].device.as_str(),
    );
    let future = test_audience_key(
        KeyGeneration {
            epoch: u64::MAX,
            rotation: u32::MAX,
        },
        [1; 32],
    );
    let mut dist = Distributor::new(&room, E2eeKind::Open, future, &host);
    let from = net.devs[h].peer();
    net.e2ee(
        l,
        E2eeDown::Roster {
            roster: encode_payload(&dist.roster(&host)),
            from,
        },
    );
    net.run();
    assert!(
        net.devs[l].errors.iter().any(|e| e.contains("roster")),
        "{:?}",
        net.devs[l].errors
    );
    // Genuine rosters keep coming through (one per rotation).
    let before = net.devs[l].crypto.roster().map(|r| r.version());
    net.advance(65_000, 500);
    let after = net.devs[l].crypto.roster().map(|r| r.version());
    assert!(after > before, "{before:?} → {after:?}");
    assert!(after.unwrap().epoch < u64::MAX);

    // A roster the server withholds is noticed.
    net.hook = Box::new(|_, m| match m {
        ServerMessage::E2ee {
            e2ee: E2eeDown::Roster { .. },
            ..
        } => Verdict::Drop,
        _ => Verdict::Deliver,
    });
    net.advance(100_000, 1_000);
    assert!(net.devs[l].has_alert(|a| matches!(a, Alert::StaleRoster { .. })));
}

/// Attack 5: the server never proposes removing a speaker who left; and an
/// Add nobody invited must not block the Removes committed with it.
#[test]
fn attack_5_removed_speaker_is_removed_by_the_stage() {
    let (mut net, h, s, l) = stage_of_two();
    // The operator withholds every Remove it should propose.
    net.hook = Box::new(|_, m| match m {
        ServerMessage::E2ee {
            e2ee: E2eeDown::Handshake { from: None, .. },
            ..
        } => Verdict::Drop,
        _ => Verdict::Deliver,
    });
    net.leave(s);
    net.run();
    net.advance(3_000, 100);
    let members = net.delivery.as_ref().unwrap().members().len();
    assert_eq!(
        members, 1,
        "the speaker who left is still in the stage group"
    );
    net.advance(2_000, 100);
    // Its state is at an old epoch: the host's new frames do not decrypt.
    assert!(net.hears(h, l));
    assert!(!net.hears(h, s), "the speaker who left still decrypts");
}

#[test]
fn attack_5b_uninvited_add_does_not_block_removals() {
    let (mut net, h, s, l) = stage_of_two();
    // The operator proposes an Add nobody invited, then (honestly) the
    // Remove of the speaker who leaves.
    let mut other = Net::new(99);
    other.join("x", Role::Host);
    other.run();
    let stray = other.join("y", Role::Speaker);
    other.run();
    let kp = other.devs[stray].sent.iter().find_map(|m| match m {
        ClientMessage::E2ee {
            e2ee: E2eeUp::KeyPackage { key_package },
            ..
        } => Some(decode_payload(key_package).unwrap()),
        _ => None,
    });
    let kp = kp.expect("a KeyPackage to propose");
    let add = net
        .proposer
        .propose_add(net.delivery.as_ref().unwrap(), &kp)
        .unwrap();
    net.post(None, add).unwrap();
    net.leave(s);
    net.run();
    net.advance(3_000, 100);
    assert_eq!(net.delivery.as_ref().unwrap().members().len(), 1);
    for d in [h, s, l] {
        println!(
            "{}: {:?} {:?}",
            net.devs[d].name, net.devs[d].errors, net.devs[d].alerts
        );
    }
    assert!(net.hears(h, l));
    assert!(!net.hears(h, s));
}

/// Attack 6: the server withholds the answer to a commit, so rotations
/// stop; a speaker must not go on sending under an ever older key.
#[test]
fn attack_6_suppressed_rotation_times_out_and_stops_sending() {
    let (mut net, h, s, l) = stage_of_two();
    net.hook = Box::new(|_, m| match m {
        ServerMessage::E2ee {
            e2ee: E2eeDown::Accepted { commit: true, .. },
            ..
        } => Verdict::Drop,
        _ => Verdict::Deliver,
    });
    net.leave(s);
    net.run();
    net.advance(COMMIT_TIMEOUT_MS + 1_000, 200);
    assert!(net.devs[h].has_alert(|a| matches!(a, Alert::CommitTimedOut)));
    // Every retry is withheld too: after the rotation period and the
    // grace, the host stops sending and says why.
    let mut sent_late = false;
    for _ in 0..100 {
        net.advance(1_000, 500);
        sent_late = net.devs[h].crypto.encrypt(net.now, b"x").is_some();
    }
    assert!(!sent_late, "still sending under a key the server froze");
    assert!(net.devs[h].has_alert(|a| matches!(a, Alert::StaleKey { .. })));
    assert!(net.devs[l].has_alert(|a| matches!(a, Alert::StaleKey { .. })));
}

/// Attack 7: an unrelated error must not be taken for the refusal of the
/// commit in flight.
#[test]
fn attack_7_unrelated_error_does_not_drop_the_commit() {
    let (mut net, h, s, l) = stage_of_two();
    let held = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let stash = held.clone();
    net.hook = Box::new(move |_, m| match m {
        ServerMessage::E2ee {
            e2ee: E2eeDown::Accepted { commit: true, .. },
            ..
        } => {
            stash.borrow_mut().push(m.clone());
            Verdict::Drop
        }
        _ => Verdict::Deliver,
    });
    let t = net.join("third", Role::Listener);
    net.run();
    net.invite(h, t);
    net.advance(300, 100);
    assert_eq!(held.borrow().len(), 1, "the host's commit is in flight");
    // An error about something else (e.g. a roster too large).
    net.queue.push_back((
        h,
        ServerMessage::Error {
            error: sotto_proto::ErrorBody {
                code: ErrorCode::StaleEpoch,
                message: "not about your commit".into(),
            },
        },
    ));
    net.run();
    net.hook = Box::new(|_, _| Verdict::Deliver);
    let answer = held.borrow_mut().pop().unwrap();
    net.queue.push_back((h, answer));
    net.run();
    net.advance(2_000, 100);
    assert_eq!(
        net.devs[h].crypto.room_code(),
        net.devs[s].crypto.room_code(),
        "the host forked from the group"
    );
    for d in [h, s, l] {
        println!(
            "{}: {:?} {:?}",
            net.devs[d].name, net.devs[d].errors, net.devs[d].alerts
        );
    }
    assert!(net.hears(h, l) && net.hears(h, s) && net.hears(s, h));
}

/// Attack 8: one intended invitation must not let the server put any key
/// it presents for that user on the stage.
#[test]
fn attack_8_invitation_only_for_the_invited_users_own_key() {
    let (mut net, h, l) = host_and_listener();
    let s = net.join("spk", Role::Listener);
    net.run();
    let (_, op) = operator_identity(&mut net, s);
    let user = net.devs[s].user.clone();
    net.devs[h].crypto.invite_to_stage(&user);
    // The operator's key first, as a candidate of the invited user.
    let chain = net.devs[s].peer().chain;
    let fake = op_peer(&net, s, &op, chain);
    net.e2ee(h, E2eeDown::Candidate { candidate: fake });
    net.run();
    let invitations = |d: &common::Dev| {
        d.sent
            .iter()
            .filter(|m| {
                matches!(
                    m,
                    ClientMessage::E2ee {
                        e2ee: E2eeUp::StageInvitation { .. },
                        ..
                    }
                )
            })
            .count()
    };
    assert_eq!(invitations(&net.devs[h]), 0, "invited the operator's key");
    // The real device is invited, once.
    net.set_role(s, Role::Speaker);
    net.run();
    net.advance(2_000, 100);
    assert_eq!(invitations(&net.devs[h]), 1);
    assert!(net.devs[s].crypto.can_encrypt());
    // Another candidate for the same user later: the intent was used up,
    // even for a key the user's own chain holds (a second device).
    let chain = net.devs[s].peer().chain;
    let fake = op_peer(&net, s, &op, chain);
    net.e2ee(h, E2eeDown::Candidate { candidate: fake });
    net.run();
    assert_eq!(invitations(&net.devs[h]), 1);
    let (second, _) = keypair([0x2d; 32]);
    let second_key = DevicePublicKey::from_bytes(second.verifying_key().to_bytes());
    let signer = ed25519_dalek::SigningKey::from_bytes(&net.devs[s].seed);
    let link = DeviceLink::sign(net.devs[s].links.last(), LinkOp::Add, &second_key, &signer);
    net.devs[s].links.push(link);
    let mut other_device = net.devs[s].peer();
    other_device.device_key = second_key;
    other_device.device_id = DeviceId("1".repeat(32));
    net.e2ee(
        h,
        E2eeDown::Candidate {
            candidate: other_device,
        },
    );
    net.run();
    assert_eq!(invitations(&net.devs[h]), 1, "one intent, two invitations");
    assert!(net.hears(h, l));
}

/// Attack 9 (client side): a revoked or logged-out listener device is
/// dropped and the key rotated at once.
#[test]
fn attack_9_revoked_listener_is_cut_off() {
    let (mut net, h, l) = host_and_listener();
    let l2 = net.join("lis2", Role::Listener);
    net.run();
    net.advance(1_000, 100);
    assert!(net.hears(h, l2));
    let device = net.devs[l].device.clone();
    net.e2ee(h, E2eeDown::DeviceGone { device_id: device });
    net.run();
    net.advance(1_500, 100);
    assert!(net.hears(h, l2));
    assert!(!net.hears(h, l), "a revoked device still decrypts");
}

/// Attack 10: the relay plays a frame twice, also after the listener's
/// periodic join refresh.
#[test]
fn attack_10_replayed_frames_are_refused() {
    let (mut net, h, l) = host_and_listener();
    let f = net.devs[h].crypto.encrypt(net.now, b"once").unwrap();
    assert!(net.devs[l].crypto.decrypt(net.now, &f).is_ok());
    assert!(matches!(
        net.devs[l].crypto.decrypt(net.now, &f),
        Err(CryptoError::Frame(
            sotto_e2ee::error::FrameError::Replayed { .. }
        ))
    ));
    // Across the listener's join refresh (a fresh key ring).
    net.advance(4 * 60_000 + 1_000, 1_000);
    let f = net.devs[h].crypto.encrypt(net.now, b"twice?").unwrap();
    let r = net.devs[l].crypto.decrypt(net.now, &f);
    assert!(
        r.is_ok(),
        "{r:?} {:?} {:?}",
        net.devs[l].errors,
        net.devs[l].alerts
    );
    net.advance(100, 100);
    assert!(net.devs[l].crypto.decrypt(net.now, &f).is_err());
}

/// A room of `kind` with its host on the stage group and a moderator
/// invited into it; keys delivered.
fn moderated_room(kind: RoomKind) -> (Net, usize, usize) {
    let mut net = Net::new(11);
    net.view.kind = kind;
    let h = net.join("host", Role::Host);
    net.run();
    let m = net.join("mod", Role::Listener);
    // A listener of a closed room needs the host's allow to get a key
    // before it goes on stage; as a moderator it needs none.
    net.run();
    net.invite(h, m);
    net.set_role(m, Role::Moderator);
    net.advance(2_000, 100);
    assert!(net.devs[m].crypto.can_encrypt(), "{:?}", net.devs[m].errors);
    (net, h, m)
}

/// An open moderated room with two listeners holding the key: (net, host,
/// moderator, listener, listener).
fn open_room_with_two_listeners() -> (Net, usize, usize, usize, usize) {
    let (mut net, h, m) = moderated_room(RoomKind::Open);
    let l = net.join("lis", Role::Listener);
    let l2 = net.join("lis2", Role::Listener);
    net.run();
    net.advance(1_500, 100);
    assert!(net.hears(h, l) && net.hears(h, l2));
    (net, h, m, l, l2)
}

fn refused(net: &Net, d: usize, user: &sotto_proto::UserId) -> bool {
    net.devs[d].has_alert(|a| matches!(a, Alert::AccessRefused { user: u, .. } if u == user))
}

/// Attack 11 (closed rooms): the server lets in a listener no moderator
/// allowed, also after turning the room "open" in its view; an allow
/// signed by the operator's own account (shown as a moderator, but with no
/// device on the stage) or by a plain listener does not count. A
/// moderator's allow does.
#[test]
fn attack_11_closed_room_admits_only_with_a_moderators_allow() {
    let (mut net, h, m) = moderated_room(RoomKind::Closed);
    let l = net.join("lis", Role::Listener);
    net.run();
    net.advance(1_500, 100);
    let user = net.devs[l].user.clone();
    assert!(
        !net.devs[l].crypto.can_decrypt(),
        "admitted without an allow"
    );
    assert!(refused(&net, h, &user), "{:?}", net.devs[h].alerts);

    // The server shows the room as open: the host bound it as closed.
    net.view.kind = RoomKind::Open;
    net.view.version += 1;
    let view = net.view.clone();
    for i in 0..net.devs.len() {
        net.queue
            .push_back((i, ServerMessage::RoomState { room: view.clone() }));
    }
    net.run();
    net.resend_join_request(l);
    assert!(
        !net.devs[l].crypto.can_decrypt(),
        "the server's view let it in"
    );
    assert!(net.devs[h].has_alert(|a| matches!(a, Alert::RoomKindChanged { .. })));

    // The operator's own account, shown as a moderator, signs an allow;
    // so does another listener.
    let op = net.join("mallory", Role::Listener);
    let other = net.join("lis2", Role::Listener);
    net.run();
    net.set_role(op, Role::Moderator);
    net.run();
    let forged = vec![
        net.statement(op, AccessVerb::Allow, &user),
        net.statement(other, AccessVerb::Allow, &user),
        // A follow is no allow in a closed room, even the host's.
        net.statement(h, AccessVerb::Follow, &user),
    ];
    net.grants.insert(l, forged);
    net.resend_join_request(l);
    assert!(
        !net.devs[l].crypto.can_decrypt(),
        "a forged allow let it in"
    );

    // The moderator's allow lets it in.
    let allow = net.statement(m, AccessVerb::Allow, &user);
    net.grants.get_mut(&l).unwrap().push(allow);
    net.resend_join_request(l);
    net.advance(1_500, 100);
    assert!(net.hears(h, l), "{:?}", net.devs[h].errors);
}

/// Attack 11 (social rooms): a social room is for people the host and
/// moderators follow. Following someone on stage (one-sided) or being
/// followed by a plain speaker does not let anyone in; the host's signed
/// follow does.
#[test]
fn attack_11_social_room_needs_a_moderators_follow() {
    let (mut net, h, _m) = moderated_room(RoomKind::Social);
    let s = net.join("spk", Role::Listener);
    net.run();
    net.invite(h, s);
    net.advance(2_000, 100);
    assert!(net.devs[s].crypto.can_encrypt());
    let l = net.join("fan", Role::Listener);
    let user = net.devs[l].user.clone();
    let host_user = net.devs[h].user.clone();
    net.grants.insert(
        l,
        vec![
            // The fan follows the host: one-sided, anyone can.
            net.statement(l, AccessVerb::Follow, &host_user),
            // A speaker follows the fan: not a moderator.
            net.statement(s, AccessVerb::Follow, &user),
        ],
    );
    net.run();
    net.advance(1_500, 100);
    assert!(
        !net.devs[l].crypto.can_decrypt(),
        "admitted on a speaker's follow"
    );
    assert!(refused(&net, h, &user));

    let follow = net.statement(h, AccessVerb::Follow, &user);
    net.grants.get_mut(&l).unwrap().push(follow);
    net.resend_join_request(l);
    net.advance(1_500, 100);
    assert!(net.hears(h, l) && net.hears(s, l));
}

/// Attack 11 (bans): a moderator's signed ban takes the key at once even
/// when the server keeps the banned account in the room and keeps relaying
/// its join requests; a ban signed by anyone else is ignored.
#[test]
fn attack_11_signed_ban_holds_when_the_server_keeps_the_user() {
    let (mut net, h, m, l, l2) = open_room_with_two_listeners();
    let user = net.devs[l].user.clone();
    let user2 = net.devs[l2].user.clone();

    // A listener "bans" another: nothing happens.
    let fake = net.statement(l, AccessVerb::Ban, &user2);
    net.e2ee(h, E2eeDown::Ban { ban: fake });
    net.run();
    net.advance(1_500, 100);
    assert!(net.hears(h, l2));

    // The moderator bans `l`; the server delivers the ban to the
    // distributor but leaves `l` in the room.
    let ban = net.statement(m, AccessVerb::Ban, &user);
    net.e2ee(h, E2eeDown::Ban { ban });
    net.run();
    net.advance(1_500, 100);
    assert!(!net.hears(h, l), "a banned listener still decrypts");
    assert!(net.hears(h, l2));
    net.resend_join_request(l);
    net.advance(1_500, 100);
    assert!(!net.hears(h, l), "a banned listener was admitted again");
    assert!(refused(&net, h, &user));
}

/// Bounded exposure, or the client shows that it is not: a server that
/// "bans" a listener in the moderator's view of the room but keeps it in
/// the distributor's (which goes on sealing keys to it) is caught by the
/// moderator's roster check — the signed roster lists a key holder that
/// belongs to no one in the room the moderator sees.
#[test]
fn a_ban_the_server_shows_but_does_not_do_is_a_hidden_listener() {
    let (mut net, h, m, l, l2) = open_room_with_two_listeners();
    let learn = |net: &mut Net, who: usize, members: &[usize]| {
        // What the driver does: fetch the chains of the room's members.
        for &i in members {
            let (user, chain) = (
                net.devs[i].user.clone(),
                sotto_proto::chain::encode_chain(&net.devs[i].links),
            );
            net.devs[who].crypto.learn_chain(&user, &chain).unwrap();
        }
        let report = net.devs[who].crypto.check_roster();
        let alerts = net.devs[who].crypto.take_alerts();
        net.devs[who].alerts.extend(alerts);
        report
    };
    let honest = learn(&mut net, m, &[h, m, l, l2]);
    assert_eq!(honest.hidden, 0, "{honest:?}");

    // The moderator's view loses `l`; the distributor's keeps it.
    let banned = net.devs[l].user.clone();
    let mut shown = net.view.clone();
    shown.members.retain(|x| x.user_id != banned);
    shown.version += 1;
    net.view.version += 1;
    net.queue
        .push_back((m, ServerMessage::RoomState { room: shown }));
    net.run();
    net.advance(61_000, 1_000); // a rotation and a new signed roster
    assert!(net.hears(h, l), "the distributor still keys `l`");
    let report = learn(&mut net, m, &[h, m, l2]);
    assert_eq!(report.hidden, 1, "{report:?}");
    assert!(
        net.devs[m].has_alert(|a| matches!(a, Alert::HiddenListener { count: 1 })),
        "{:?}",
        net.devs[m].alerts
    );
}

/// A listener in a large room sees the stage, some listeners and a count:
/// its check compares the signed roster's *accounts* with that count. A
/// server that shows listeners a count lower than the key holders (one
/// key holder left out of the room it shows them) is caught; a count
/// higher than the keyed accounts (joins not keyed yet look the same) is
/// not an alarm.
#[test]
fn a_listener_catches_an_audience_count_lower_than_the_signed_accounts() {
    let (mut net, h, l) = host_and_listener();
    let l2 = net.join("lis2", Role::Listener);
    let l3 = net.join("lis3", Role::Listener);
    net.run();
    net.advance(2_500, 100); // admitted, and a roster of all three signed
    assert!(net.hears(h, l2) && net.hears(h, l3));
    let roster = net.devs[l].crypto.roster().expect("a verified roster");
    assert_eq!((roster.count(), roster.accounts()), (3, 3));
    // What the listener is shown: the host and itself, and a count.
    let shown_to = |net: &Net, count: u32, version: i64| {
        let mut v = net.view.clone();
        v.members
            .retain(|m| m.role.on_stage() || m.user_id == net.devs[l].user);
        v.audience_count = count;
        v.version = version;
        v
    };
    let mut version = net.view.version + 1;
    let mut check = |net: &mut Net, count: u32| {
        let view = shown_to(net, count, version);
        version += 1;
        net.deliver(l, ServerMessage::RoomState { room: view });
        let report = net.devs[l].crypto.check_roster();
        let alerts = net.devs[l].crypto.take_alerts();
        net.devs[l].alerts.extend(alerts);
        report
    };
    let honest = check(&mut net, 3);
    assert_eq!(honest.hidden, 0, "{honest:?}");
    let inflated = check(&mut net, 5);
    assert_eq!(inflated.hidden, 0, "{inflated:?}");
    assert!(net.devs[l].alerts.is_empty(), "{:?}", net.devs[l].alerts);
    let lowered = check(&mut net, 2);
    assert_eq!(lowered.hidden, 1, "{lowered:?}");
    assert!(
        net.devs[l].has_alert(|a| matches!(a, Alert::HiddenListener { count: 1 })),
        "{:?}",
        net.devs[l].alerts
    );
}

/// A roster of more listeners than one channel message could list (the
/// old limit was ~1,500) is published — a count and a root, the
/// fingerprints in chunks to the server — and a listener checks it with
/// proofs: a random sample of the member devices it knows, no alert.
#[test]
fn a_roster_of_1600_listeners_is_published_and_checked_with_proofs() {
    use sotto_proto::channel::MAX_MESSAGE_BYTES;
    let (mut net, h, l) = host_and_listener();
    let room = net.room.as_str().as_bytes().to_vec();
    let mut requests = Vec::new();
    let mut chains = Vec::new();
    for i in 0..1_600u32 {
        let mut seed = [0u8; 32];
        net.rng.fill_bytes(&mut seed);
        let (_, links) = keypair(seed);
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_be_bytes());
        id[4] = 0xee;
        let user = sotto_proto::UserId::from_bytes(id);
        let device = DeviceId::from_bytes(id);
        let identity = DeviceIdentity::from_seed(seed, user.as_str().as_bytes(), device.as_str());
        let (req, _) =
            JoinRequest::create(&identity, &room, net.now + 600_000, &mut net.rng).unwrap();
        net.view.members.push(sotto_proto::room::MemberView {
            user_id: user.clone(),
            username: format!("l{i}"),
            display_name: String::new(),
            role: Role::Listener,
            hand_raised: false,
            muted: false,
            invited_to_stage: false,
            hand_order: None,
        });
        chains.push((user.clone(), encode_chain(&links)));
        requests.push((
            req,
            E2eePeer {
                user_id: user,
                device_id: device,
                device_key: DevicePublicKey::from_bytes(ed_public(seed)),
                chain: encode_payload(&encode_chain(&links)),
            },
        ));
    }
    net.view.version += 1;
    let view = net.view.clone();
    net.deliver(h, ServerMessage::RoomState { room: view.clone() });
    net.deliver(l, ServerMessage::RoomState { room: view });
    for (req, from) in requests {
        net.join_request_to(h, &req, from);
    }
    net.run();
    net.advance(2_000, 100);
    // Every E2EE message the distributor sent fits in a channel message.
    let sizes: Vec<usize> = net.devs[h]
        .sent
        .iter()
        .filter_map(|m| match m {
            ClientMessage::E2ee {
                e2ee: E2eeUp::Roster { roster: x } | E2eeUp::RosterLeaves { leaves: x },
                ..
            } => Some(x.len()),
            _ => None,
        })
        .collect();
    assert!(sizes.len() >= 3, "{sizes:?}");
    assert!(
        sizes.iter().all(|len| len + 256 <= MAX_MESSAGE_BYTES),
        "a message over the channel's limit was sent: {sizes:?}"
    );
    let roster = net.devs[l].crypto.roster().expect("a verified roster");
    assert_eq!(roster.count(), 1_601);
    // The listener learns the members' chains (as its driver would) and
    // checks: 32 proofs (a random sample), all good, nothing hidden.
    for i in [h, l] {
        chains.push((net.devs[i].user.clone(), encode_chain(&net.devs[i].links)));
    }
    for (user, chain) in &chains {
        net.devs[l].crypto.learn_chain(user, chain).unwrap();
    }
    let first = net.devs[l].crypto.check_roster();
    assert!(first.unchecked > 1_000, "{first:?}");
    net.advance(100, 100); // the proof requests go out, answers come
    let report = net.devs[l].crypto.roster_report();
    assert_eq!(report.hidden, 0, "{:?}", net.devs[l].alerts);
    let proven = report.entries.iter().filter(|e| !e.stage).count();
    // 32 of the 1,602 member devices were asked about; the host's is not
    // a listener key (proven absent), the rest are listed.
    assert!(
        (31..=32).contains(&proven),
        "{proven} listeners proven on the roster"
    );
    assert_eq!(report.unchecked + proven, first.unchecked);
    assert!(net.devs[l].errors.is_empty(), "{:?}", net.devs[l].errors);
    let sealed: usize = net.devs[h]
        .sent
        .iter()
        .map(|m| match m {
            ClientMessage::E2ee {
                e2ee: E2eeUp::Sealed { deliveries, .. },
                ..
            } => deliveries.len(),
            _ => 0,
        })
        .sum();
    assert!(sealed >= 1_600, "{sealed} sealed deliveries");
    assert!(net.hears(h, l));
}

/// Attack 1 as its victim sees it: the server lists a device of the
/// listener's own account that none of its devices added (the operator's
/// row); the listener's client says so. A chain served for the account
/// without this device is refused.
#[test]
fn attack_1_the_victim_sees_a_device_it_never_added() {
    let (mut net, _h, l) = host_and_listener();
    let own = *net.devs[l].key().as_bytes();
    let chain = encode_chain(&net.devs[l].links);
    let (_, op) = operator_identity(&mut net, l);
    let dev = &mut net.devs[l];
    assert_eq!(dev.crypto.check_own_devices(&chain, &[own]).unwrap(), 0);
    assert!(dev.crypto.take_alerts().is_empty());
    let listed = [own, op.public().to_bytes()];
    assert_eq!(dev.crypto.check_own_devices(&chain, &listed).unwrap(), 1);
    assert!(
        dev.crypto
            .take_alerts()
            .iter()
            .any(|a| matches!(a, Alert::UnknownOwnDevice { count: 1 }))
    );
    // The operator's own chain for the account, holding its key only.
    let (_, links) = keypair([0x0e; 32]);
    assert!(
        dev.crypto
            .check_own_devices(&encode_chain(&links), &listed)
            .is_err()
    );
}
