//! `cargo bench -p sotto-room --bench admission`: what admitting one
//! listener costs the key distributor's client core, and how much of it is
//! the device-chain check that an acting operator made necessary. One run,
//! side by side (this machine is shared and noisy):
//!
//! - `e2ee only`: parse + verify the join request, seal the audience key
//!   (the work the core did per admission before device chains);
//! - `chain check`: parse + verify the listener's device chain against the
//!   pins (the work added);
//! - `through the core`: the whole `RoomCrypto::handle` of a `join_request`
//!   message (base64, chain, request, seal, the outgoing message);
//! - `closed room`: the same in a closed room, each request carrying the
//!   host's signed allow (the statement and the host's chain are checked
//!   too).
//!
//! Wall-clock, release build; `SOTTO_BENCH_N` listeners (default 1,000).

use std::time::Instant;

use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sotto_e2ee::audience::{Distributor, JoinRequest, RoomKind as E2eeKind};
use sotto_e2ee::identity::DeviceIdentity;
use sotto_e2ee::keys::{KeyGeneration, test_audience_key};
use sotto_proto::access::{AccessVerb, sign_access};
use sotto_proto::chain::{DeviceLink, LinkOp, encode_chain};
use sotto_proto::channel::{E2eeDown, E2eePeer, ServerMessage, SignedAccess, encode_payload};
use sotto_proto::keys::DevicePublicKey;
use sotto_proto::room::{MemberView, Role, RoomKind, RoomView};
use sotto_proto::{DeviceId, RoomId, UserId};
use sotto_room::{RoomCrypto, TrustStore};

const NOW: u64 = 1_800_000_000_000;

struct Listener {
    user: UserId,
    peer: E2eePeer,
    identity: DeviceIdentity,
    chain: Vec<u8>,
    request: Vec<u8>,
}

fn member(user: &UserId, role: Role) -> MemberView {
    MemberView {
        user_id: user.clone(),
        username: user.short().into(),
        display_name: "x".into(),
        role,
        hand_raised: false,
        muted: false,
        invited_to_stage: false,
        hand_order: None,
    }
}

fn main() {
    let n: usize = std::env::var("SOTTO_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    let room = RoomId::from_bytes(id);
    let room_bytes = room.as_str().as_bytes().to_vec();
    rng.fill_bytes(&mut id);
    let host = UserId::from_bytes(id);
    let mut view = RoomView {
        id: room.clone(),
        title: "bench".into(),
        description: String::new(),
        kind: RoomKind::Open,
        ended: false,
        version: 1,
        members: vec![member(&host, Role::Host)],
        audience_count: 0,
    };
    let listeners: Vec<Listener> = (0..n)
        .map(|_| {
            let mut seed = [0u8; 32];
            rng.fill_bytes(&mut seed);
            rng.fill_bytes(&mut id);
            let user = UserId::from_bytes(id);
            rng.fill_bytes(&mut id);
            let device = DeviceId::from_bytes(id);
            let sk = SigningKey::from_bytes(&seed);
            let key = DevicePublicKey::from_bytes(sk.verifying_key().to_bytes());
            let chain = encode_chain(&[DeviceLink::sign(None, LinkOp::Add, &key, &sk)]);
            let identity =
                DeviceIdentity::from_seed(seed, user.as_str().as_bytes(), device.as_str());
            let (request, _) =
                JoinRequest::create(&identity, &room_bytes, NOW + 600_000, &mut rng).unwrap();
            view.members.push(member(&user, Role::Listener));
            Listener {
                peer: E2eePeer {
                    user_id: user.clone(),
                    device_id: device,
                    device_key: key,
                    chain: encode_payload(&chain),
                },
                user,
                identity,
                chain,
                request,
            }
        })
        .collect();

    // 1. e2ee only.
    let signer = DeviceIdentity::generate(&mut rng, b"host", "d");
    let key = test_audience_key(
        KeyGeneration {
            epoch: 1,
            rotation: 0,
        },
        [9; 32],
    );
    let mut dist = Distributor::new(&room_bytes, E2eeKind::Open, key, &signer);
    let t = Instant::now();
    for l in &listeners {
        let v = JoinRequest::parse(&l.request)
            .unwrap()
            .verify(&l.identity.public(), &room_bytes, NOW)
            .unwrap();
        std::hint::black_box(dist.admit(v).unwrap());
    }
    let e2ee_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;

    // 2. the chain check alone.
    let mut trust = TrustStore::default();
    let t = Instant::now();
    for l in &listeners {
        let v = trust.check(&l.user, &l.chain).unwrap();
        assert!(v.is_active(l.peer.device_key.as_bytes()));
    }
    let chain_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;

    // 3. through the client core: a host that created the stage group and
    // was made distributor, then one join_request message per listener.
    let mut host_seed = [0u8; 32];
    rng.fill_bytes(&mut host_seed);
    let core_us = through_the_core(
        &view,
        &host,
        host_seed,
        &listeners,
        |_| Vec::new(),
        &mut rng,
    );

    // 4. the same in a closed room: each request with the host's allow.
    view.kind = RoomKind::Closed;
    let host_key = SigningKey::from_bytes(&host_seed);
    let host_public = DevicePublicKey::from_bytes(host_key.verifying_key().to_bytes());
    let host_chain = encode_payload(&encode_chain(&[DeviceLink::sign(
        None,
        LinkOp::Add,
        &host_public,
        &host_key,
    )]));
    let allow = |l: &Listener| {
        vec![SignedAccess {
            statement: encode_payload(&sign_access(
                &host_key,
                AccessVerb::Allow,
                room.as_str(),
                &l.user,
                NOW,
            )),
            signer: host.clone(),
            chain: host_chain.clone(),
        }]
    };
    let closed_us = through_the_core(&view, &host, host_seed, &listeners, allow, &mut rng);

    println!("admission per listener, n = {n} (release, one run):");
    println!("  e2ee only (verify request + seal)      {e2ee_us:8.1} µs");
    println!("  chain check (parse + verify + pin)     {chain_us:8.1} µs");
    println!("  through the core (RoomCrypto::handle)  {core_us:8.1} µs");
    println!("  closed room, with the host's allow     {closed_us:8.1} µs");
    println!(
        "  chain check / e2ee only                {:8.1} %",
        100.0 * chain_us / e2ee_us
    );
}

/// Microseconds per admission through `RoomCrypto::handle`: the host's
/// core (seed `host_seed`) creates the stage group, is made distributor,
/// then gets one `join_request` per listener with `grants(listener)`.
fn through_the_core(
    view: &RoomView,
    host: &UserId,
    host_seed: [u8; 32],
    listeners: &[Listener],
    grants: impl Fn(&Listener) -> Vec<SignedAccess>,
    rng: &mut ChaCha20Rng,
) -> f64 {
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    let (mut core, _) = RoomCrypto::new(
        host_seed,
        host,
        &DeviceId::from_bytes(id),
        view,
        TrustStore::default(),
        NOW,
        rng,
    )
    .unwrap();
    let server = SigningKey::from_bytes(&[3; 32]).verifying_key().to_bytes();
    let e2ee = |e2ee| ServerMessage::E2ee {
        room_id: view.id.clone(),
        e2ee,
    };
    core.handle(
        NOW,
        &e2ee(E2eeDown::Info {
            external_sender_key: encode_payload(&server),
            external_sender_credential: encode_payload(b"sotto server"),
            has_group: false,
            group: None,
        }),
    )
    .unwrap();
    core.handle(NOW, &e2ee(E2eeDown::Distributor { active: true }))
        .unwrap();
    assert!(core.is_distributor());
    let msgs: Vec<ServerMessage> = listeners
        .iter()
        .map(|l| {
            e2ee(E2eeDown::JoinRequest {
                request: encode_payload(&l.request),
                from: l.peer.clone(),
                grants: grants(l),
            })
        })
        .collect();
    let t = Instant::now();
    let mut sealed = 0;
    for m in &msgs {
        sealed += core.handle(NOW, m).unwrap().len();
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / listeners.len() as f64;
    assert_eq!(sealed, listeners.len(), "every listener admitted");
    us
}
