//! Rosters that scale: the distributor signs a count and a Merkle root, the
//! server keeps the tree from uploaded chunks and proves membership or
//! absence; a participant checks each proof against the signed root. A
//! server that lies — a hidden listener, a listener it shows but nobody
//! admitted, a proof for another tree — is caught.

mod common;
use common::*;
use sotto_e2ee::{
    audience::{RoomKind, RosterUpload, VerifiedRoster},
    error::RosterError,
    identity::{DeviceIdentity, Fingerprint},
    roster::{
        ROSTER_LEAVES_CHUNK, RosterLeaves, RosterProof, RosterProofs, RosterStore,
        RosterStoreError, RosterTree, encode_proof_request,
    },
};

/// The distributor's next roster upload.
fn upload(net: &mut Net) -> RosterUpload {
    let signer = net.members[0].stage.identity();
    net.distributor.as_mut().unwrap().roster_upload(signer)
}

fn upload_to(store: &mut RosterStore, net: &mut Net) -> Vec<u8> {
    let up = upload(net);
    for c in &up.leaves {
        store.stage(b"dist", c).unwrap();
    }
    store.commit(b"dist", &up.roster).unwrap();
    up.roster
}

fn ask(store: &RosterStore, fps: &[Fingerprint]) -> Vec<u8> {
    store.prove(&encode_proof_request(fps)).unwrap().unwrap()
}

#[test]
fn a_roster_proof_verifies_and_a_forged_one_fails() {
    let mut net = Net::new(40);
    net.start_distributor(RoomKind::Open);
    let joined: Vec<Fingerprint> = (0..20)
        .map(|n| net.join_listener(n).0.public().fingerprint())
        .collect();
    let mut store = RosterStore::default();
    let signed = upload_to(&mut store, &mut net);
    let host = net.host_identity();
    let roster = VerifiedRoster::verify(&signed, ROOM, &[host], Default::default()).unwrap();
    assert_eq!(roster.count(), 20);
    // A few hundred bytes whatever the room's size: no list in it.
    assert!(signed.len() < 300, "{} bytes", signed.len());

    // Genuine answers: every admitted listener is listed, a stranger is not.
    let stranger = DeviceIdentity::generate(&mut net.rng, b"x", "d")
        .public()
        .fingerprint();
    let answer = ask(&store, &[joined[3], stranger, joined[19]]);
    assert_eq!(
        roster.check_proofs(&answer).unwrap(),
        vec![(joined[3], true), (stranger, false), (joined[19], true)]
    );

    // The operator adds a listener of its own to its tree (a listener the
    // distributor never admitted, to show in the room): its proofs are of
    // another root and fail.
    let mut leaves = joined.clone();
    leaves.push(stranger);
    let lying = RosterTree::new(leaves);
    let forged = RosterProofs {
        version: roster.version(),
        proofs: vec![(stranger, lying.prove(&stranger))],
    };
    assert_eq!(
        roster.check_proofs(&forged.encode()),
        Err(RosterError::BadProof)
    );
    // Nor can it prove a listed listener absent (to hide it) with another
    // tree, or by skipping it between two real neighbours.
    let without = RosterTree::new(joined[1..].to_vec());
    let hide = RosterProofs {
        version: roster.version(),
        proofs: vec![(joined[0], without.prove(&joined[0]))],
    };
    assert_eq!(
        roster.check_proofs(&hide.encode()),
        Err(RosterError::BadProof)
    );
    let honest = RosterTree::new(joined.clone());
    let at = honest.leaves().binary_search(&joined[5]).unwrap();
    let neighbours = |i: usize| {
        let RosterProof::Included { index, path } = honest.prove(&honest.leaves()[i]) else {
            unreachable!("listed")
        };
        sotto_e2ee::roster::Neighbour {
            index,
            fp: honest.leaves()[i],
            path,
        }
    };
    if at > 0 && at + 1 < honest.len() {
        let skip = RosterProofs {
            version: roster.version(),
            proofs: vec![(
                joined[5],
                RosterProof::Excluded {
                    left: Some(neighbours(at - 1)),
                    right: Some(neighbours(at + 1)),
                },
            )],
        };
        assert_eq!(
            roster.check_proofs(&skip.encode()),
            Err(RosterError::BadProof)
        );
    }
    // A genuine proof with one hash flipped fails.
    let mut bent = RosterProofs::parse(&ask(&store, &[joined[7]])).unwrap();
    if let RosterProof::Included { path, .. } = &mut bent.proofs[0].1 {
        path[0][0] ^= 1;
    }
    assert_eq!(
        roster.check_proofs(&bent.encode()),
        Err(RosterError::BadProof)
    );
    // Proofs against another version are refused (ask again), never
    // mixed with this roster.
    let mut old = RosterProofs::parse(&answer).unwrap();
    old.version.seq += 1;
    assert_eq!(
        roster.check_proofs(&old.encode()),
        Err(RosterError::OtherVersion)
    );
}

#[test]
fn the_server_keeps_its_tree_from_changes_and_asks_for_the_whole_list_when_lost() {
    let mut net = Net::new(41);
    net.start_distributor(RoomKind::Open);
    let ids: Vec<Fingerprint> = (0..6)
        .map(|n| net.join_listener(n).0.public().fingerprint())
        .collect();
    let mut store = RosterStore::default();
    upload_to(&mut store, &mut net);
    // A ban: the next upload carries one removal, not the list.
    net.distributor.as_mut().unwrap().ban(ids[2]);
    let up = upload(&mut net);
    assert_eq!(up.leaves.len(), 1);
    let chunk = RosterLeaves::parse(&up.leaves[0]).unwrap();
    assert!(chunk.base.is_some());
    assert_eq!((chunk.added.len(), chunk.removed), (0, vec![ids[2]]));
    store.stage(b"dist", &up.leaves[0]).unwrap();
    let header = store.commit(b"dist", &up.roster).unwrap();
    assert_eq!(header.count, 5);
    let host = net.host_identity();
    let roster = VerifiedRoster::verify(&up.roster, ROOM, &[host], Default::default()).unwrap();
    assert_eq!(
        roster.check_proofs(&ask(&store, &[ids[2]])).unwrap(),
        vec![(ids[2], false)]
    );

    // A restarted server holds nothing: changes do not apply, it asks for
    // the whole list; a roster sent again without its chunks is not taken
    // either.
    let mut fresh = RosterStore::default();
    let up = upload(&mut net);
    fresh.stage(b"dist", &up.leaves[0]).unwrap();
    assert_eq!(
        fresh.commit(b"dist", &up.roster),
        Err(RosterStoreError::Resync)
    );
    net.distributor.as_mut().unwrap().forget_upload();
    let whole = upload_to(&mut fresh, &mut net);
    assert_eq!(fresh.current().unwrap().1.len(), 5);
    assert_eq!(fresh.commit(b"dist", &whole), Err(RosterStoreError::Resync));
    // Chunks from one sender do not count for a roster another commits.
    let up = upload(&mut net);
    fresh.stage(b"other", &up.leaves[0]).unwrap();
    assert_eq!(
        fresh.commit(b"dist", &up.roster),
        Err(RosterStoreError::Resync)
    );
}

/// More listeners than one chunk holds: the whole list goes up in several
/// channel-sized chunks and the server's tree matches the signed root.
#[test]
fn a_large_roster_goes_up_in_chunks() {
    let mut net = Net::new(42);
    net.start_distributor(RoomKind::Open);
    let n = ROSTER_LEAVES_CHUNK + 100;
    let last = (0..n)
        .map(|i| net.join_listener(i).0.public().fingerprint())
        .last()
        .unwrap();
    let up = upload(&mut net);
    assert_eq!(up.leaves.len(), 2);
    // Each chunk fits one channel message once base64'd into JSON.
    assert!(up.leaves.iter().all(|c| c.len() * 4 / 3 + 256 < 64 * 1024));
    let mut store = RosterStore::default();
    for c in &up.leaves {
        store.stage(b"dist", c).unwrap();
    }
    assert_eq!(store.commit(b"dist", &up.roster).unwrap().count as usize, n);
    let host = net.host_identity();
    let roster = VerifiedRoster::verify(&up.roster, ROOM, &[host], Default::default()).unwrap();
    assert_eq!(
        roster.check_proofs(&ask(&store, &[last])).unwrap(),
        vec![(last, true)]
    );
}
