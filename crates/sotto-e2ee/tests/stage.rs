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
        // Dave holds no key of the earlier epoch: the KID names a generation
        // he never had (or, if the 3-bit tag collides, the key is wrong).
        let err = net.members[dave]
            .stage
            .decrypt_frame(net.now, f)
            .unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::UnknownKeyId { .. } | FrameError::AuthenticationFailed
            ),
            "{err:?}"
        );
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
        net.members[0].stage.commit_pending(&[], &[]),
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

    let a = net.members[0]
        .stage
        .commit_pending(&[invite], &[])
        .unwrap()
        .0;
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
            &net.members[0].stage.group_id(),
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
        .rebase(&[])
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

/// The server holds the GroupInfo (with its `external_pub`) and the ratchet
/// tree, so it can build a valid external commit and try to join the stage:
/// it would then derive every audience key. Members refuse commits from
/// anyone but a member, although the delivery service (the server itself)
/// accepted it.
#[test]
fn server_external_commit_is_rejected() {
    use openmls::prelude::{tls_codec::Deserialize as _, tls_codec::Serialize as _, *};
    use openmls_basic_credential::SignatureKeyPair;
    use openmls_rust_crypto::OpenMlsRustCrypto;

    let mut net = three_speakers();
    let epoch = net.members[0].stage.epoch();
    let code = net.members[0].stage.room_code();
    let provider = OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
    let cred = CredentialWithKey {
        credential: BasicCredential::new(b"eavesdropper".to_vec()).into(),
        signature_key: signer.public().into(),
    };
    // As the delivery service's API intends, the last committer uploaded
    // the GroupInfo of the current epoch (it carries `external_pub`).
    let current_gi = net.members[0].stage.group_info().unwrap();
    net.ds.set_group_info(&current_gi).unwrap();
    let MlsMessageBodyIn::GroupInfo(gi) = MlsMessageIn::tls_deserialize_exact(net.ds.group_info())
        .unwrap()
        .extract()
    else {
        panic!("group info");
    };
    let tree = RatchetTreeIn::tls_deserialize_exact(net.ds.ratchet_tree().unwrap()).unwrap();
    let (mut spy, bundle) = MlsGroup::external_commit_builder()
        .with_ratchet_tree(tree)
        .with_config(
            MlsGroupJoinConfig::builder()
                .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
                .build(),
        )
        .build_group(&provider, gi, cred)
        .unwrap()
        .load_psks(provider.storage())
        .unwrap()
        .build(provider.rand(), provider.crypto(), &signer, |_| true)
        .unwrap()
        .finalize(&provider)
        .unwrap();
    spy.merge_pending_commit(&provider).unwrap();
    let commit = bundle.into_commit().tls_serialize_detached().unwrap();
    // The server's own delivery service validates and orders it: it is a
    // well-formed commit, so only the members' check stands in the way.
    net.post(None, &commit).unwrap();
    for i in 0..3 {
        let m = &mut net.members[i].stage;
        assert!(matches!(
            m.handle_message(net.now, &commit),
            Err(StageError::UnauthorisedCommit)
        ));
        assert_eq!(
            m.epoch(),
            epoch,
            "member {i} did not move to the spy's epoch"
        );
        assert_eq!(m.room_code(), code);
    }
}

/// The server may propose Add/Remove and nothing else: an external
/// GroupContextExtensions proposal (e.g. adding a second external sender) is
/// refused, so no committer ever commits it.
#[test]
fn server_may_not_propose_group_context_changes() {
    use openmls::prelude::{tls_codec::Serialize as _, *};
    use openmls_basic_credential::SignatureKeyPair;
    use openmls_rust_crypto::OpenMlsRustCrypto;

    let mut net = three_speakers();
    let sk = ed25519_dalek::SigningKey::from_bytes(&net.server_seed);
    let signer = SignatureKeyPair::from_raw(
        SignatureScheme::ED25519,
        net.server_seed.to_vec(),
        sk.verifying_key().to_bytes().to_vec(),
    );
    let extra = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
    let senders = vec![
        ExternalSender::new(
            signer.public().to_vec().into(),
            BasicCredential::new(b"server.example".to_vec()).into(),
        ),
        ExternalSender::new(
            extra.public().to_vec().into(),
            BasicCredential::new(b"another".to_vec()).into(),
        ),
    ];
    let gid = GroupId::from_slice(net.ds.group_id());
    let msg = ExternalProposal::new_group_context_extensions::<OpenMlsRustCrypto>(
        Extensions::single(Extension::ExternalSenders(senders)).unwrap(),
        gid,
        GroupEpoch::from(net.ds.epoch()),
        &signer,
        SenderExtensionIndex::new(0),
    )
    .unwrap()
    .tls_serialize_detached()
    .unwrap();
    for i in 0..3 {
        assert!(matches!(
            net.members[i].stage.handle_message(net.now, &msg),
            Err(StageError::UnauthorisedProposal)
        ));
    }
    assert!(matches!(
        net.members[0].stage.commit_pending(&[], &[]),
        Err(StageError::NothingPending)
    ));
}

/// A committer that lost the race and rebases re-checks invitations: an Add
/// the server proposed in the new epoch for a device nobody invited is not
/// committed by the rebase.
#[test]
fn rebase_rechecks_invitations() {
    use sotto_e2ee::{
        identity::DeviceIdentity,
        invitation::{VerifiedInvitation, create_invitation},
        stage::StageCandidate,
    };
    let mut net = three_speakers();
    let erin = DeviceIdentity::generate(&mut net.rng, b"erin", "e");
    let invite = create_invitation(
        net.members[0].stage.identity(),
        ROOM,
        &erin.public(),
        60_000,
    );
    let invite =
        VerifiedInvitation::verify(&invite, ROOM, &[net.host_identity()], net.now).unwrap();
    let (_erin, kp) = StageCandidate::new(erin).unwrap();
    let prop = net.server.propose_add(&net.ds, &kp).unwrap();
    net.post(None, &prop).unwrap();
    net.sync_all();
    // host and bob both commit the invited Add; the host wins
    let a = net.members[0]
        .stage
        .commit_pending(std::slice::from_ref(&invite), &[])
        .unwrap()
        .0;
    let b = net.members[1]
        .stage
        .commit_pending(std::slice::from_ref(&invite), &[])
        .unwrap()
        .0;
    net.post(Some(0), &a.commit).unwrap();
    net.members[0].stage.commit_accepted(net.now).unwrap();
    assert!(matches!(
        net.post(Some(1), &b.commit),
        Err(DeliveryError::StaleEpoch { .. })
    ));
    net.members[1].stage.commit_rejected().unwrap();
    net.sync(1);
    // the server now proposes mallory, whom nobody invited
    let mallory = DeviceIdentity::generate(&mut net.rng, b"mallory", "m");
    let (_m, kp) = StageCandidate::new(mallory).unwrap();
    let prop = net.server.propose_add(&net.ds, &kp).unwrap();
    net.post(None, &prop).unwrap();
    net.sync(1);
    assert!(matches!(
        net.members[1].stage.rebase(&[invite]),
        Err(StageError::UninvitedAdd)
    ));
}

/// Every commit yields the new epoch's GroupInfo for the delivery service,
/// and the service stores it only if it matches the state the accepted
/// commit produced: not a losing commit's GroupInfo for the same epoch, not
/// an older epoch's, not an altered one.
#[test]
fn group_info_follows_commits_and_is_checked() {
    use openmls::prelude::{tls_codec::Deserialize as _, *};
    let epoch_of = |gi: &[u8]| match MlsMessageIn::tls_deserialize_exact(gi).unwrap().extract() {
        MlsMessageBodyIn::GroupInfo(g) => g.epoch().as_u64(),
        _ => panic!("not a group info"),
    };
    let mut net = three_speakers();
    // the harness uploaded `CommitOut::group_info` after each commit
    assert_eq!(epoch_of(net.ds.group_info()), net.ds.epoch());
    let old = net.ds.group_info().to_vec();

    // host and bob commit at once; the host wins
    let a = net.members[0].stage.self_update().unwrap();
    let b = net.members[1].stage.self_update().unwrap();
    assert_eq!(epoch_of(&a.group_info), net.ds.epoch() + 1);
    assert_eq!(epoch_of(&b.group_info), net.ds.epoch() + 1);
    net.post(Some(0), &a.commit).unwrap();
    net.members[0].stage.commit_accepted(net.now).unwrap();
    assert!(net.post(Some(1), &b.commit).is_err());

    // the loser's GroupInfo names the same group and epoch, but another
    // state (tree, transcript, confirmation tag)
    assert!(matches!(
        net.ds.set_group_info(&b.group_info),
        Err(DeliveryError::GroupInfoMismatch)
    ));
    // the previous epoch's
    assert!(matches!(
        net.ds.set_group_info(&old),
        Err(DeliveryError::GroupInfoMismatch)
    ));
    // the winner's, altered (last byte: its signature; a byte in the middle)
    for pos in [a.group_info.len() - 1, a.group_info.len() / 2] {
        let mut bad = a.group_info.clone();
        bad[pos] ^= 1;
        assert!(net.ds.set_group_info(&bad).is_err(), "altered at {pos}");
    }
    assert_eq!(net.ds.group_info(), old.as_slice(), "nothing was stored");
    // the winner's is stored
    net.ds.set_group_info(&a.group_info).unwrap();
    assert_eq!(net.ds.group_info(), a.group_info.as_slice());
    // and so is one exported later by any member of that epoch
    net.members[1].stage.commit_rejected().unwrap();
    net.sync_all();
    let exported = net.members[2].stage.group_info().unwrap();
    net.ds.set_group_info(&exported).unwrap();
    assert_eq!(epoch_of(net.ds.group_info()), net.ds.epoch());
}
