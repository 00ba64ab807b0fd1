//! Stage group: encryption among speakers, removal, late join, concurrent
//! commits — through the in-memory delivery service, in virtual time.

mod common;
use common::*;
use sotto_delivery::DeliveryError;
use sotto_e2ee::{error::FrameError, error::StageError, stage::StageEvent};

fn three_speakers() -> Net {
    let mut net = Net::new(1);
    net.add_speaker("bob");
    net.add_speaker("carol");
    net.advance(300); // past the switch delay
    net
}

#[test]
fn three_speakers_encrypt_and_all_decrypt() {
    let mut net = three_speakers();
    let epoch = net.members[0].stage.epoch();
    for m in &net.members {
        assert_eq!(m.stage.epoch(), epoch);
        assert_eq!(m.stage.sending_generation().map(|g| g.epoch), Some(epoch));
    }
    let now = net.now;
    for s in 0..3 {
        let payload = format!("opus frame from speaker {s}");
        let frame = net.members[s]
            .stage
            .encrypt_frame(now, payload.as_bytes())
            .unwrap();
        assert!(frame.len() <= payload.len() + 8, "compact suite overhead");
        for r in 0..3 {
            if r != s {
                let got = net.members[r].stage.decrypt_frame(now, &frame).unwrap();
                assert_eq!(got, payload.as_bytes());
            }
        }
        // the same frame again is a replay
        let r = (s + 1) % 3;
        assert!(matches!(
            net.members[r].stage.decrypt_frame(now, &frame),
            Err(FrameError::Replayed { .. })
        ));
    }
    let code = net.members[0].stage.room_code();
    assert!(net.members.iter().all(|m| m.stage.room_code() == code));
}

#[test]
fn removed_speaker_cannot_decrypt_next_epoch() {
    let mut net = three_speakers();
    let before = net.members[0]
        .stage
        .encrypt_frame(net.now, b"before removal")
        .unwrap();
    assert_eq!(
        net.members[2]
            .stage
            .decrypt_frame(net.now, &before)
            .unwrap(),
        b"before removal"
    );

    net.remove_speaker(2);
    assert!(!net.members[2].active, "carol saw her removal");
    assert_eq!(net.members[0].stage.member_count(), 2);
    net.advance(300);
    let now = net.now;
    for s in 0..2 {
        let frame = net.members[s]
            .stage
            .encrypt_frame(now, b"after removal")
            .unwrap();
        assert_eq!(
            net.members[1 - s].stage.decrypt_frame(now, &frame).unwrap(),
            b"after removal"
        );
        let err = net.members[2].stage.decrypt_frame(now, &frame).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::UnknownKeyId { .. } | FrameError::AuthenticationFailed
            ),
            "{err:?}"
        );
    }
    // and the removed member cannot send with a current key either
    assert!(net.members[2].stage.encrypt_frame(now, b"x").is_err());
}

#[test]
fn new_speaker_cannot_decrypt_earlier_frames() {
    let mut net = Net::new(2);
    net.add_speaker("bob");
    net.advance(300);
    let old: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            net.members[i % 2]
                .stage
                .encrypt_frame(net.now, b"earlier")
                .unwrap()
        })
        .collect();
    let dave = net.add_speaker("dave");
    net.advance(300);
    for f in &old {
        assert!(net.members[dave].stage.decrypt_frame(net.now, f).is_err());
    }
    let f = net.members[0].stage.encrypt_frame(net.now, b"now").unwrap();
    assert_eq!(
        net.members[dave].stage.decrypt_frame(net.now, &f).unwrap(),
        b"now"
    );
}

#[test]
fn uninvited_add_is_not_committed() {
    let mut net = Net::new(3);
    let ident = sotto_e2ee::identity::DeviceIdentity::generate(&mut net.rng, b"mallory", "m");
    let (_cand, kp) = sotto_e2ee::stage::StageCandidate::new(ident).unwrap();
    let prop = net.server.propose_add(&net.ds, &kp).unwrap();
    net.post(None, &prop).unwrap();
    net.sync_all();
    assert!(matches!(
        net.members[0].stage.commit_pending(&[]),
        Err(StageError::UninvitedAdd)
    ));
}

#[test]
fn concurrent_commits_one_wins_other_rebases_all_converge() {
    let mut net = three_speakers();
    // The server proposes adding erin; the host commits it while bob, at the
    // same time, commits a self-update.
    let ident = sotto_e2ee::identity::DeviceIdentity::generate(&mut net.rng, b"erin", "e");
    let invite = sotto_e2ee::invitation::create_invitation(
        net.members[0].stage.identity(),
        ROOM,
        &ident.public(),
        60_000,
    );
    let invite = sotto_e2ee::invitation::VerifiedInvitation::verify(
        &invite,
        ROOM,
        &[net.host_identity()],
        net.now,
    )
    .unwrap();
    let (cand, kp) = sotto_e2ee::stage::StageCandidate::new(ident).unwrap();
    let prop = net.server.propose_add(&net.ds, &kp).unwrap();
    net.post(None, &prop).unwrap();
    net.sync_all();

    let a = net.members[0].stage.commit_pending(&[invite]).unwrap();
    let b = net.members[1].stage.self_update().unwrap();
    let epoch = net.ds.epoch();

    // The host's commit reaches the service first and wins.
    net.post(Some(0), &a.commit).unwrap();
    net.members[0].stage.commit_accepted(net.now).unwrap();
    let tree = net.ds.ratchet_tree().unwrap();
    let erin = cand
        .join(
            ROOM,
            a.welcome.as_deref().unwrap(),
            &tree,
            net.config,
            net.now,
        )
        .unwrap();
    let cursor = net.ds.messages_since(0).len() as u64;
    net.members.push(Member {
        stage: erin,
        cursor,
        active: true,
    });

    // Bob's commit for the same epoch is refused.
    let err = net.post(Some(1), &b.commit).unwrap_err();
    assert!(
        matches!(err, DeliveryError::StaleEpoch { got, current } if got == epoch && current == epoch + 1)
    );
    net.members[1].stage.commit_rejected().unwrap();
    let evs = net.sync(1);
    assert!(matches!(evs.last(), Some(StageEvent::EpochChanged { .. })));
    // Bob rebases: his self-update, redone in the new epoch, is accepted.
    let rebased = net.members[1]
        .stage
        .rebase()
        .unwrap()
        .expect("self-update still wanted");
    net.post(Some(1), &rebased.commit).unwrap();
    net.members[1].stage.commit_accepted(net.now).unwrap();
    net.sync_all();
    net.rotate_after_epoch_change();
    net.advance(300);

    let e = net.members[0].stage.epoch();
    assert_eq!(e, epoch + 2);
    assert_eq!(net.ds.epoch(), e);
    let code = net.members[0].stage.room_code();
    for m in &net.members {
        assert_eq!(m.stage.epoch(), e);
        assert_eq!(
            m.stage.room_code(),
            code,
            "all members converge on one group state"
        );
        assert_eq!(m.stage.member_count(), 4);
    }
    // and they can all talk
    let f = net.members[3]
        .stage
        .encrypt_frame(net.now, b"erin speaks")
        .unwrap();
    for r in 0..3 {
        assert_eq!(
            net.members[r].stage.decrypt_frame(net.now, &f).unwrap(),
            b"erin speaks"
        );
    }
}

#[test]
fn malformed_and_replayed_handshakes_are_typed_errors() {
    let mut net = three_speakers();
    let m = &mut net.members[1].stage;
    assert!(matches!(
        m.handle_message(0, b""),
        Err(StageError::Malformed(_))
    ));
    assert!(matches!(
        m.handle_message(0, &[0u8; 64]),
        Err(StageError::Malformed(_))
    ));
    // a message of an old epoch: the first handshake in the log
    let first = net.ds.messages_since(0)[0].clone();
    assert!(matches!(
        net.members[1].stage.handle_message(0, &first),
        Err(StageError::WrongEpoch { .. })
    ));
    // the delivery service refuses it too
    assert!(matches!(
        net.ds.handle_handshake(&first),
        Err(DeliveryError::StaleEpoch { .. })
    ));
    assert!(net.ds.handle_handshake(b"garbage").is_err());
}
