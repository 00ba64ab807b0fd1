//! Writes the seed corpus (`fuzz/corpus/<target>/`) from real messages:
//! join requests, sealed deliveries, MLS messages and SFrame frames made by
//! the real code (with the keys the targets hold, so seeds pass their
//! checks), a real SDP offer, the datagrams of a real ICE/DTLS/SRTP session
//! with the SFU, and real WAV files.
//!
//! `cargo run --example seeds [TARGET...]` from `fuzz/` (`scripts/fuzz
//! --seeds` runs it for all). Replaces each target's seeds; files are named
//! by content. The SDP and datagram seeds differ from run to run (str0m
//! picks ICE credentials and keys at random).

use std::path::Path;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use rand_core::SeedableRng;
use sotto_e2ee::audience::{Distributor, JoinRequest, RoomKind};
use sotto_e2ee::binding::sign_binding;
use sotto_e2ee::frame::{FrameSender, Suite};
use sotto_e2ee::identity::DeviceIdentity;
use sotto_e2ee::invitation::create_invitation;
use sotto_e2ee::keys::{KeyGeneration, test_audience_key};
use sotto_e2ee::stage::{ExternalSenderInfo, StageCandidate, StageConfig, StageMember};
use sotto_fuzz::media::{World, client_offer};
use sotto_fuzz::records::push_record;
use sotto_proto::access::{AccessVerb, sign_access};
use sotto_proto::chain::{DeviceLink, LinkOp, encode_chain};
use sotto_proto::channel::{
    ClientEnvelope, ClientMessage, E2eeUp, SealedFor, ServerEnvelope, ServerMessage, encode_payload,
};
use sotto_proto::error::{ErrorBody, ErrorCode};
use sotto_proto::ids::{DeviceId, RoomId, UserId};
use sotto_proto::keys::DevicePublicKey;

type Rng = rand_chacha::ChaCha20Rng;

struct Corpus {
    target: &'static str,
    seeds: Vec<Vec<u8>>,
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let e2ee = E2ee::make();
    let corpora = [
        Corpus {
            target: "access_statement",
            seeds: access_statement(),
        },
        Corpus {
            target: "device_chain",
            seeds: device_chain(),
        },
        Corpus {
            target: "group_binding",
            seeds: e2ee.bindings.clone(),
        },
        Corpus {
            target: "join_request",
            seeds: vec![e2ee.join_request.clone()],
        },
        Corpus {
            target: "mls_intake",
            seeds: e2ee.mls.clone(),
        },
        Corpus {
            target: "sealed_delivery",
            seeds: e2ee.sealed.clone(),
        },
        Corpus {
            target: "sframe_header",
            seeds: e2ee.frames.clone(),
        },
        Corpus {
            target: "sdp_offer",
            seeds: sdp_offer(),
        },
        Corpus {
            target: "session_channel",
            seeds: session_channel(&e2ee),
        },
        Corpus {
            target: "sfu_datagram",
            seeds: sfu_datagram(),
        },
        Corpus {
            target: "wav_input",
            seeds: wav_input(),
        },
    ];
    let only: Vec<String> = std::env::args().skip(1).collect();
    for c in corpora {
        if !only.is_empty() && !only.iter().any(|t| t == c.target) {
            continue;
        }
        let dir = root.join(c.target);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        for seed in &c.seeds {
            let name = format!("seed-{:016x}", fnv1a(seed));
            std::fs::write(dir.join(name), seed).expect("write seed");
        }
        println!("{:<18} {:>3} seeds", c.target, c.seeds.len());
    }
}

/// A stable file name from content.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// E2EE messages made with the same seeded identities the targets hold.
struct E2ee {
    bindings: Vec<Vec<u8>>,
    join_request: Vec<u8>,
    mls: Vec<Vec<u8>>,
    sealed: Vec<Vec<u8>>,
    frames: Vec<Vec<u8>>,
}

impl E2ee {
    fn make() -> E2ee {
        // group_binding: the host identity of seed 1.
        let mut rng = Rng::seed_from_u64(1);
        let host = DeviceIdentity::generate(&mut rng, b"h", "d");
        let mut bindings: Vec<Vec<u8>> = [RoomKind::Open, RoomKind::Social, RoomKind::Closed]
            .into_iter()
            .map(|kind| sign_binding(&host, b"room", &[7; 32], kind, 1_000))
            .collect();
        let invitee = DeviceIdentity::generate(&mut rng, b"c", "d").public();
        bindings.push(create_invitation(&host, b"room", &invitee, 1_000));

        // join_request: the listener identity of seed 1.
        let mut rng = Rng::seed_from_u64(1);
        let id = DeviceIdentity::generate(&mut rng, b"a", "d");
        let (join_request, _) = JoinRequest::create(&id, b"room", 1000, &mut rng).expect("join");

        // mls_intake: the host's group of seed 7, a KeyPackage, a commit.
        let mut rng = Rng::seed_from_u64(7);
        let host = DeviceIdentity::generate(&mut rng, b"host", "d");
        let info = ExternalSenderInfo {
            public_key: vec![0x11; 32],
            credential_identity: b"server".to_vec(),
        };
        let (mut member, gi, tree) =
            StageMember::create(host, b"room", &info, StageConfig::default(), 0, &mut rng)
                .expect("group");
        let (_, key_package) =
            StageCandidate::new(DeviceIdentity::generate(&mut rng, b"cand", "d")).expect("kp");
        let commit = member.self_update().expect("commit");
        let mut mls = vec![gi, tree, key_package, commit.commit, commit.group_info];
        if let Ok(notice) = member.commit_accepted(0).and_then(|_| {
            let key = member.next_audience_key()?;
            member.announce(0, &key)
        }) {
            mls.push(notice);
        }

        // sealed_delivery: the listener of seed 3, a statement by it, and a
        // delivery sealed to its join request.
        let mut rng = Rng::seed_from_u64(3);
        let id = DeviceIdentity::generate(&mut rng, b"a", "d");
        let (req, _keys) = JoinRequest::create(&id, b"room", 1000, &mut rng).expect("join");
        let generation = KeyGeneration {
            epoch: 0,
            rotation: 0,
        };
        let mut dist = Distributor::new(
            b"room",
            RoomKind::Open,
            test_audience_key(generation, [2; 32]),
            &id,
        );
        let verified = JoinRequest::parse(&req)
            .and_then(|r| r.verify(&id.public(), b"room", 0))
            .expect("own request");
        let delivery = dist.admit(verified).expect("admit");
        let roster = dist.roster(&id);
        let sealed = vec![delivery.bytes, dist.statement().to_vec(), roster];

        // sframe_header: frames under the key the target installs.
        let key = test_audience_key(generation, [1; 32]);
        let mut frames = Vec::new();
        for leaf in [0, 1, 63] {
            let mut tx = FrameSender::new(Suite::CompactAudio, &key, leaf).expect("sender");
            for len in [0, 1, 80] {
                frames.push(tx.encrypt(&vec![0x5a; len]).expect("encrypt"));
            }
        }

        E2ee {
            bindings,
            join_request,
            mls,
            sealed,
            frames,
        }
    }
}

fn access_statement() -> Vec<Vec<u8>> {
    let key = SigningKey::from_bytes(&[9; 32]);
    let target = UserId::from_bytes([3; 16]);
    let room = RoomId::from_bytes([4; 16]);
    let mut seeds = Vec::new();
    for verb in [AccessVerb::Follow, AccessVerb::Allow, AccessVerb::Ban] {
        let mut s = vec![0];
        s.extend(sign_access(
            &key,
            verb,
            room.as_str(),
            &target,
            1_700_000_000_000,
        ));
        seeds.push(s);
    }
    // The script form: verb, created, room length, ids.
    let mut s = vec![1, 1, 0, 0, 1, 0x8b, 0xcf, 0xe5, 0x68, 0, 4];
    s.extend_from_slice(b"roomuser");
    seeds.push(s);
    seeds
}

fn device_chain() -> Vec<Vec<u8>> {
    let key = |n: u8| SigningKey::from_bytes(&[n; 32]);
    let public = |n: u8| DevicePublicKey::from_bytes(key(n).verifying_key().to_bytes());
    let root = DeviceLink::sign(None, LinkOp::Add, &public(1), &key(1));
    let add = DeviceLink::sign(Some(&root), LinkOp::Add, &public(2), &key(1));
    let revoke = DeviceLink::sign(Some(&add), LinkOp::Revoke, &public(1), &key(2));
    let mut seeds = Vec::new();
    for links in [
        &[root.clone()][..],
        &[root.clone(), add.clone()],
        &[root, add, revoke],
    ] {
        let mut s = vec![0];
        s.extend(encode_chain(links));
        seeds.push(s);
    }
    // Scripts over the four keys: n, then n (op, subject, signer) with op 0
    // adding and 1 revoking, then (position, bit) to flip.
    seeds.push(vec![1, 3, 0, 0, 0, 0, 1, 0, 1, 0, 1]);
    seeds.push(vec![1, 4, 0, 0, 0, 0, 1, 0, 0, 2, 1, 1, 0, 2]);
    seeds.push(vec![1, 2, 0, 0, 0, 0, 1, 0, 0x01, 0x20, 3]);
    seeds
}

fn sdp_offer() -> Vec<Vec<u8>> {
    let addr = "203.0.113.5:5000".parse().expect("addr");
    (0..=3)
        .map(|slots| client_offer(Instant::now(), addr, slots).2.into_bytes())
        .collect()
}

fn session_channel(e2ee: &E2ee) -> Vec<Vec<u8>> {
    let room_id = RoomId::from_bytes([4; 16]);
    let device_id = DeviceId::from_bytes([5; 16]);
    let addr = "203.0.113.5:5000".parse().expect("addr");
    let offer = client_offer(Instant::now(), addr, 3).2;
    let b = |bytes: &[u8]| encode_payload(bytes);
    let e2ee_up = [
        E2eeUp::Hello {},
        E2eeUp::CreateGroup {
            group_info: b(&e2ee.mls[0]),
            ratchet_tree: b(&e2ee.mls[1]),
            binding: b(&e2ee.bindings[0]),
        },
        E2eeUp::KeyPackage {
            key_package: b(&e2ee.mls[2]),
        },
        E2eeUp::StageInvitation {
            device_id: device_id.clone(),
            invitation: b(&e2ee.bindings[3]),
        },
        E2eeUp::Handshake {
            message: b(&e2ee.mls[3]),
            id: 7,
        },
        E2eeUp::GroupInfo {
            group_info: b(&e2ee.mls[4]),
        },
        E2eeUp::Welcome {
            welcome: b(&[2; 64]),
        },
        E2eeUp::JoinRequest {
            request: b(&e2ee.join_request),
        },
        E2eeUp::Sealed {
            statement: b(&e2ee.sealed[1]),
            deliveries: vec![SealedFor {
                to: device_id,
                sealed: b(&e2ee.sealed[0]),
            }],
        },
        E2eeUp::Roster {
            roster: b(&e2ee.sealed[2]),
        },
    ];
    let mut msgs = vec![
        ClientMessage::Hello {
            token: "sotto_session_token".into(),
        },
        ClientMessage::Subscribe {
            room_id: room_id.clone(),
        },
        ClientMessage::Unsubscribe {
            room_id: room_id.clone(),
        },
        ClientMessage::Ping { nonce: 42 },
        ClientMessage::MediaOffer {
            room_id: room_id.clone(),
            sdp: offer.clone(),
        },
        ClientMessage::MediaLeave {
            room_id: room_id.clone(),
        },
    ];
    msgs.extend(e2ee_up.into_iter().map(|e2ee| ClientMessage::E2ee {
        room_id: room_id.clone(),
        e2ee,
    }));
    let mut seeds: Vec<Vec<u8>> = msgs
        .into_iter()
        .map(|m| ClientEnvelope::new(m).to_json().into_bytes())
        .collect();
    let server = [
        ServerMessage::Welcome {
            user_id: UserId::from_bytes([3; 16]),
        },
        ServerMessage::RoomLeft {
            room_id: room_id.clone(),
            banned: true,
        },
        ServerMessage::Pong { nonce: 42 },
        ServerMessage::MediaAnswer {
            room_id,
            sdp: offer,
        },
        ServerMessage::Error {
            error: ErrorBody {
                code: ErrorCode::NotInRoom,
                message: "join first".into(),
            },
        },
    ];
    seeds.extend(
        server
            .into_iter()
            .map(|m| ServerEnvelope::new(m).to_json().into_bytes()),
    );
    seeds
}

/// The datagrams clients sent during a real session (ICE, DTLS, SRTP and
/// SRTCP), framed as the target's records from each client's address.
fn sfu_datagram() -> Vec<Vec<u8>> {
    let mut w = World::connected(true);
    for n in 0..50u8 {
        w.speak(0, &[n; 60], -20);
        w.run_for(Duration::from_millis(20));
    }
    w.run_for(Duration::from_secs(3));
    let log = w.log.take().unwrap_or_default();
    let mut seeds = Vec::new();
    // One seed per kind of first datagram byte (RFC 7983 ranges), as sent.
    let mut kinds = std::collections::BTreeSet::new();
    for (i, bytes) in &log {
        let kind = match bytes.first() {
            Some(0..=3) => 0,
            Some(20..=63) => 1,
            Some(128..=191) if bytes.get(1).is_some_and(|b| (200..=207).contains(b)) => 2,
            Some(128..=191) => 3,
            _ => 4,
        };
        if kinds.insert((*i, kind)) {
            let mut s = Vec::new();
            push_record(&mut s, *i as u8, bytes);
            seeds.push(s);
        }
    }
    // A session: a genuine packet, time, replays from both addresses and a stranger.
    let mut s = Vec::new();
    push_record(&mut s, 6, &[1; 40]);
    push_record(&mut s, 5, &[3]);
    for (i, bytes) in log.iter().rev().take(4) {
        push_record(&mut s, *i as u8, bytes);
        push_record(&mut s, 2, bytes);
    }
    push_record(&mut s, 7, &[0]);
    push_record(&mut s, 6, &[2; 40]);
    push_record(&mut s, 5, &[200]);
    seeds.push(s);
    seeds
}

fn wav_input() -> Vec<Vec<u8>> {
    let tone: Vec<f32> = (0..480).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
    let mut seeds = vec![sotto_audio::write_wav_bytes(&tone).expect("wav")];
    let formats = [
        (2, 44_100, 16, hound::SampleFormat::Int),
        (1, 8_000, 8, hound::SampleFormat::Int),
        (2, 16_000, 24, hound::SampleFormat::Int),
        (1, 22_050, 32, hound::SampleFormat::Float),
    ];
    for (channels, sample_rate, bits_per_sample, sample_format) in formats {
        let spec = hound::WavSpec {
            channels,
            sample_rate,
            bits_per_sample,
            sample_format,
        };
        let mut out = std::io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut out, spec).expect("wav writer");
        for (i, x) in tone.iter().take(64).enumerate() {
            for _ in 0..channels {
                match sample_format {
                    hound::SampleFormat::Float => w.write_sample(*x).expect("sample"),
                    hound::SampleFormat::Int => {
                        let max = (1i64 << (bits_per_sample - 1)) - 1;
                        w.write_sample((f64::from(*x) * max as f64) as i32 + i as i32 % 2)
                            .expect("sample");
                    }
                }
            }
        }
        w.finalize().expect("finalize");
        seeds.push(out.into_inner());
    }
    seeds
}
