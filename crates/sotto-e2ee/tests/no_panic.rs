//! "Nothing a peer sends may panic": arbitrary bytes into every parser that
//! faces the network (the same entry points as the fuzz targets).

mod common;
use common::*;
use proptest::prelude::*;
use sotto_e2ee::{
    audience::{
        JoinRequest, Listener, RosterVersion, VerifiedKeyStatement, VerifiedRoster, parse_sealed,
        sign_key_statement,
    },
    frame::{KeyRing, Suite, parse_header},
    identity::{DeviceIdentity, decode_credential_identity},
    invitation::VerifiedInvitation,
    keys::{KeyGeneration, test_audience_key},
    stage::parse_notice,
};

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn sframe_header_and_frames(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_header(&bytes);
        let mut ring = KeyRing::new(Suite::CompactAudio, 1000);
        ring.install(test_audience_key(KeyGeneration { epoch: 0, rotation: 0 }, [1; 32]), 0);
        let _ = ring.decrypt(0, &bytes);
    }

    #[test]
    fn join_request(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(r) = JoinRequest::parse(&bytes) {
            let mut rng = rng(1);
            let id = DeviceIdentity::generate(&mut rng, b"a", "d");
            let _ = r.verify(&id.public(), ROOM, 0);
        }
    }

    #[test]
    fn sealed_delivery(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let generation = parse_sealed(&bytes)
            .map(|p| p.generation)
            .unwrap_or(KeyGeneration { epoch: 0, rotation: 0 });
        let mut rng = rng(2);
        let id = DeviceIdentity::generate(&mut rng, b"a", "d");
        let (_, keys) = JoinRequest::create(&id, ROOM, 1000, &mut rng).unwrap();
        let mut l = Listener::new(ROOM, &id.public(), keys, Suite::CompactAudio, 1000);
        // a genuine statement for whatever generation the bytes claim, so
        // that arbitrary bytes reach the HPKE open
        let stmt = sign_key_statement(&id, ROOM, &test_audience_key(generation, [2; 32]));
        let stmt = l.verify_statement(&stmt, &[id.public()]).unwrap();
        let _ = l.open(0, &bytes, &stmt);
    }

    #[test]
    fn key_statement_mutated(pos in any::<usize>(), x in 1u8.., cut in any::<usize>()) {
        let mut rng = rng(3);
        let id = DeviceIdentity::generate(&mut rng, b"a", "d");
        let good = sign_key_statement(&id, ROOM, &test_audience_key(KeyGeneration { epoch: 1, rotation: 2 }, [4; 32]));
        let mut bad = good.clone();
        let n = bad.len();
        bad[pos % n] ^= x;
        prop_assert!(VerifiedKeyStatement::verify(&bad, ROOM, &[id.public()]).is_err());
        prop_assert!(VerifiedKeyStatement::verify(&good[..cut % n], ROOM, &[id.public()]).is_err());
        prop_assert!(VerifiedKeyStatement::verify(&good, ROOM, &[id.public()]).is_ok());
    }

    #[test]
    fn roster_invitation_notice_credential(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = VerifiedRoster::verify(&bytes, ROOM, &[], RosterVersion::default());
        let _ = VerifiedKeyStatement::verify(&bytes, ROOM, &[]);
        let _ = VerifiedInvitation::verify(&bytes, ROOM, &[], 0);
        let _ = parse_notice(&bytes);
        let _ = decode_credential_identity(&bytes);
        let _ = sotto_e2ee::binding::VerifiedBinding::verify(&bytes, ROOM, &[]);
    }

    /// What the server takes from a distributor (chunks, rosters, proof
    /// requests) and what a participant takes from the server (proofs).
    #[test]
    fn roster_chunks_proofs_and_requests(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        use sotto_e2ee::roster::{RosterLeaves, RosterProofs, RosterStore, parse_proof_request};
        let _ = RosterProofs::parse(&bytes);
        let _ = RosterLeaves::parse(&bytes);
        let _ = parse_proof_request(&bytes);
        let _ = sotto_e2ee::audience::roster_header(&bytes);
        let mut store = RosterStore::default();
        let _ = store.stage(b"s", &bytes);
        let _ = store.commit(b"s", &bytes);
        let _ = store.prove(&bytes);
    }
}

#[test]
fn mls_intake_arbitrary_and_mutated() {
    let net = std::cell::RefCell::new(Net::new(40));
    let mut guard = net.borrow_mut();
    guard.add_speaker("bob");
    let log: Vec<Vec<u8>> = guard.ds.messages_since(0).to_vec();
    drop(guard);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    });
    let strat = (
        0..log.len(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        proptest::collection::vec(any::<u8>(), 0..128),
    );
    runner
        .run(&strat, |(pick, flips, junk)| {
            let mut m = log[pick].clone();
            for (pos, x) in flips {
                let n = m.len();
                m[pos % n] ^= x;
            }
            let mut net = net.borrow_mut();
            let _ = net.members[1].stage.handle_message(0, &m);
            let _ = net.members[1].stage.handle_message(0, &junk);
            let _ = net.ds.handle_handshake(&m);
            let _ = net.ds.handle_handshake(&junk);
            Ok(())
        })
        .unwrap();
}
