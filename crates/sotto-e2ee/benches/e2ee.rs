//! `cargo bench -p sotto-e2ee --bench e2ee` — measures the figures asked for in
//! BENCHMARKS.md with plain wall-clock timing (no criterion): distributor
//! CPU per admitted listener, full rotations at 1k/5k/10k listeners, stage
//! commit + processing at 10 and 50 members, SFrame per 80-byte frame.
//! Set `SOTTO_BENCH_QUICK=1` for a fast smoke run.

use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sotto_delivery::{RoomDelivery, ServerProposer};
use sotto_e2ee::{
    audience::{
        Distributor, JoinRequest, Listener, RoomKind, SEALED_DELIVERY_LEN, key_statement_len,
        sign_key_statement,
    },
    frame::{FrameSender, KeyRing, Suite},
    identity::DeviceIdentity,
    invitation::{VerifiedInvitation, create_invitation},
    keys::{KeyGeneration, test_audience_key},
    stage::{ExternalSenderInfo, StageCandidate, StageConfig, StageMember},
};

const ROOM: &[u8] = b"bench-room";

fn us(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn requests(
    rng: &mut ChaCha20Rng,
    n: usize,
) -> Vec<(DeviceIdentity, Vec<u8>, sotto_e2ee::audience::ListenerKeys)> {
    (0..n)
        .map(|i| {
            let id = DeviceIdentity::generate(rng, format!("l{i}").as_bytes(), "d");
            let (req, keys) = JoinRequest::create(&id, ROOM, 60_000, rng).unwrap();
            (id, req, keys)
        })
        .collect()
}

fn bench_admission(rng: &mut ChaCha20Rng, n: usize) {
    let key = test_audience_key(
        KeyGeneration {
            epoch: 1,
            rotation: 0,
        },
        [9; 32],
    );
    let signer = DeviceIdentity::generate(rng, b"host", "d");
    let mut d = Distributor::new(ROOM, RoomKind::Open, key, &signer);
    let reqs = requests(rng, n);
    let t = Instant::now();
    let mut sealed = Vec::with_capacity(n);
    for (id, req, _) in &reqs {
        let v = JoinRequest::parse(req)
            .unwrap()
            .verify(&id.public(), ROOM, 0)
            .unwrap();
        sealed.push(d.admit(v).unwrap());
    }
    let dt = t.elapsed();
    println!(
        "admission: distributor verify+seal per listener: {:.1} µs (n={n})",
        us(dt, n)
    );
    let mut total = Duration::ZERO;
    let mut verify = Duration::ZERO;
    let trusted = [signer.public()];
    for ((id, _, keys), s) in reqs.into_iter().zip(sealed) {
        let mut l = Listener::new(ROOM, &id.public(), keys, Suite::CompactAudio, 1000);
        let t = Instant::now();
        let stmt = l.verify_statement(d.statement(), &trusted).unwrap();
        verify += t.elapsed();
        l.open(0, &s.bytes, &stmt).unwrap();
        total += t.elapsed();
    }
    println!(
        "admission: listener verify key statement + open per delivery: {:.1} µs (of which statement verify {:.1} µs); join request {} bytes, sealed delivery {} bytes, key statement {} bytes (once per generation)",
        us(total, n),
        us(verify, n),
        4 + 2 + ROOM.len() + 32 + 32 + 8 + 64,
        SEALED_DELIVERY_LEN,
        key_statement_len(ROOM.len())
    );
}

fn bench_rotation(rng: &mut ChaCha20Rng, n: usize) {
    let key = test_audience_key(
        KeyGeneration {
            epoch: 1,
            rotation: 0,
        },
        [9; 32],
    );
    let signer = DeviceIdentity::generate(rng, b"host", "d");
    let mut d = Distributor::new(ROOM, RoomKind::Open, key, &signer);
    for (id, req, _) in requests(rng, n) {
        let v = JoinRequest::parse(&req)
            .unwrap()
            .verify(&id.public(), ROOM, 0)
            .unwrap();
        d.admit(v).unwrap();
    }
    let next = test_audience_key(
        KeyGeneration {
            epoch: 1,
            rotation: 1,
        },
        [10; 32],
    );
    let t = Instant::now();
    let out = d.rotate(next.clone(), &signer).unwrap();
    let dt = t.elapsed();
    let bytes: usize = out
        .deliveries
        .iter()
        .map(|s| s.bytes.len() + s.recipient.0.len())
        .sum();
    let t3 = Instant::now();
    for _ in 0..100 {
        std::hint::black_box(sign_key_statement(&signer, ROOM, &next));
    }
    let sign = t3.elapsed();
    let t2 = Instant::now();
    let half: usize = (0..2)
        .map(|i| d.seal_shard(&next, i, 2).unwrap().len())
        .max()
        .unwrap_or(0);
    let _ = half;
    let dt2 = t2.elapsed();
    println!(
        "rotation: {n} listeners: {:.0} ms one distributor (sealing on every core) incl. the one key-statement signature ({:.1} µs/listener), {} bytes/listener incl. 32-byte mailbox id ({} sealed only), total {:.2} MB + one {}-byte statement; on one thread (two shards one after the other) {:.0} ms; key statement alone {:.1} µs",
        dt.as_secs_f64() * 1e3,
        us(dt, n),
        bytes / n.max(1),
        SEALED_DELIVERY_LEN,
        bytes as f64 / 1e6,
        out.statement.len(),
        dt2.as_secs_f64() * 1e3,
        us(sign, 100)
    );
}

struct Stage {
    ds: RoomDelivery,
    server: ServerProposer,
    members: Vec<StageMember>,
    authors: Vec<usize>,
    cursors: Vec<usize>,
}

impl Stage {
    fn post(&mut self, author: usize, m: &[u8]) {
        self.ds.handle_handshake(m).unwrap();
        self.authors.push(author);
    }
    fn sync(&mut self) {
        let log = self.ds.messages_since(0).to_vec();
        for (i, m) in self.members.iter_mut().enumerate() {
            for (seq, msg) in log.iter().enumerate().skip(self.cursors[i]) {
                if self.authors[seq] != i {
                    m.handle_message(0, msg).unwrap();
                }
            }
            self.cursors[i] = log.len();
        }
    }
}

fn build_stage(rng: &mut ChaCha20Rng, n: usize) -> Stage {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
    let server = ServerProposer::from_ed25519(seed, sk.verifying_key().to_bytes(), b"server");
    let info = ExternalSenderInfo {
        public_key: server.public_key().to_vec(),
        credential_identity: server.credential_identity(),
    };
    let host = DeviceIdentity::generate(rng, b"host", "d");
    let (m, gi, tree) =
        StageMember::create(host, ROOM, &info, StageConfig::default(), 0, rng).unwrap();
    let ds = RoomDelivery::create(&gi, &tree).unwrap();
    let mut s = Stage {
        ds,
        server,
        members: vec![m],
        authors: vec![],
        cursors: vec![0],
    };
    // add in batches of up to 10 per commit
    let mut added = 1;
    while added < n {
        let batch = (n - added).min(10);
        let mut invites = Vec::new();
        let mut cands = Vec::new();
        for _ in 0..batch {
            let id = DeviceIdentity::generate(rng, b"spk", "d");
            let inv = create_invitation(s.members[0].identity(), ROOM, &id.public(), 1_000_000);
            invites.push(
                VerifiedInvitation::verify(&inv, ROOM, &[s.members[0].identity().public()], 0)
                    .unwrap(),
            );
            let (c, kp) = StageCandidate::new(id).unwrap();
            let p = s.server.propose_add(&s.ds, &kp).unwrap();
            s.post(usize::MAX, &p);
            cands.push(c);
        }
        s.sync();
        let out = s.members[0].commit_pending(&invites, &[]).unwrap().0;
        s.post(0, &out.commit);
        s.members[0].commit_accepted(0).unwrap();
        let tree = s.ds.ratchet_tree().unwrap();
        let cursor = s.ds.messages_since(0).len();
        for c in cands {
            s.members.push(
                c.join(
                    ROOM,
                    out.welcome.as_deref().unwrap(),
                    &tree,
                    &s.members[0].group_id(),
                    StageConfig::default(),
                    0,
                )
                .unwrap(),
            );
            s.cursors.push(cursor);
        }
        s.sync();
        added += batch;
    }
    s
}

fn bench_stage(rng: &mut ChaCha20Rng, n: usize, rounds: usize) {
    let mut s = build_stage(rng, n);
    let (mut create, mut ds_t, mut gi_t, mut proc_t, mut bytes) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        0,
    );
    for r in 0..rounds {
        let c = (r * 7) % n;
        let t = Instant::now();
        let out = s.members[c].self_update().unwrap();
        create += t.elapsed();
        bytes += out.commit.len();
        let t = Instant::now();
        s.ds.handle_handshake(&out.commit).unwrap();
        ds_t += t.elapsed();
        let t = Instant::now();
        s.ds.set_group_info(&out.group_info).unwrap();
        gi_t += t.elapsed();
        s.authors.push(c);
        s.members[c].commit_accepted(0).unwrap();
        let other = (c + 1) % n;
        let t = Instant::now();
        s.members[other].handle_message(0, &out.commit).unwrap();
        proc_t += t.elapsed();
        s.cursors[other] = s.ds.messages_since(0).len();
        s.sync();
    }
    // removal of one member (server proposal + commit)
    let leaf = s.members[n - 1].leaf_index();
    let p = s.server.propose_remove(&s.ds, leaf).unwrap();
    s.post(usize::MAX, &p);
    s.sync();
    let t = Instant::now();
    let out = s.members[0].commit_pending(&[], &[]).unwrap().0;
    let rm_create = t.elapsed();
    let t = Instant::now();
    s.members[1].handle_message(0, &out.commit).unwrap();
    let rm_proc = t.elapsed();
    println!(
        "stage {n} members: self-update commit {:.2} ms to create (incl. GroupInfo), {} bytes, {:.2} ms DS validate+merge, {:.2} ms DS GroupInfo check, {:.2} ms to process per member; remove-one commit {:.2} ms create, {} bytes, {:.2} ms process",
        create.as_secs_f64() * 1e3 / rounds as f64,
        bytes / rounds,
        ds_t.as_secs_f64() * 1e3 / rounds as f64,
        gi_t.as_secs_f64() * 1e3 / rounds as f64,
        proc_t.as_secs_f64() * 1e3 / rounds as f64,
        rm_create.as_secs_f64() * 1e3,
        out.commit.len(),
        rm_proc.as_secs_f64() * 1e3
    );
}

fn bench_sframe(n: usize) {
    let key = test_audience_key(
        KeyGeneration {
            epoch: 1,
            rotation: 1,
        },
        [5; 32],
    );
    let payload = [0xa5u8; 80];
    for suite in [Suite::CompactAudio, Suite::Gcm128] {
        // leaf 49: the 50th stage member
        let mut s = FrameSender::new(suite, &key, 49).unwrap();
        let mut ring = KeyRing::new(suite, 1000);
        ring.install(key.clone(), 0);
        let mut frames = Vec::with_capacity(n);
        let t = Instant::now();
        for _ in 0..n {
            frames.push(s.encrypt(&payload).unwrap());
        }
        let enc = t.elapsed();
        let t = Instant::now();
        for f in &frames {
            std::hint::black_box(ring.decrypt(0, f).unwrap());
        }
        let dec = t.elapsed();
        let max_over = frames
            .iter()
            .map(|f| f.len() - payload.len())
            .max()
            .unwrap_or(0);
        let min_over = frames
            .iter()
            .map(|f| f.len() - payload.len())
            .min()
            .unwrap_or(0);
        println!(
            "sframe {suite:?}: 80-byte frame encrypt {:.0} ns, decrypt {:.0} ns (incl. replay window), overhead {min_over}-{max_over} bytes over {n} frames of stage leaf 49",
            enc.as_secs_f64() * 1e9 / n as f64,
            dec.as_secs_f64() * 1e9 / n as f64
        );
    }
}

/// Rosters at `n` listeners: the signed roster's size, the distributor's
/// upload, the server's tree rebuild and one proof's size and check.
fn bench_roster(rng: &mut ChaCha20Rng, n: usize) {
    use sotto_e2ee::audience::VerifiedRoster;
    use sotto_e2ee::identity::Fingerprint;
    use sotto_e2ee::roster::{RosterProofs, RosterStore, RosterTree, encode_proof_request};
    let fps: Vec<Fingerprint> = (0..n)
        .map(|_| {
            let mut f = [0u8; 32];
            rng.fill_bytes(&mut f);
            Fingerprint(f)
        })
        .collect();
    let t = Instant::now();
    let reps = 5;
    for _ in 0..reps {
        std::hint::black_box(RosterTree::new(fps.clone()).root());
    }
    let build = t.elapsed() / reps;
    // A signed roster over the same listeners, through the store.
    let signer = DeviceIdentity::generate(rng, b"host", "d");
    let key = test_audience_key(
        KeyGeneration {
            epoch: 1,
            rotation: 1,
        },
        [7; 32],
    );
    let mut dist = Distributor::new(ROOM, RoomKind::Open, key, &signer);
    let admit = requests(rng, 3);
    for (id, req, _) in &admit {
        let v = JoinRequest::parse(req)
            .unwrap()
            .verify(&id.public(), ROOM, 0)
            .unwrap();
        dist.admit(v).unwrap();
    }
    let up = dist.roster_upload(&signer);
    let mut store = RosterStore::default();
    for c in &up.leaves {
        store.stage(b"d", c).unwrap();
    }
    store.commit(b"d", &up.roster).unwrap();
    let roster =
        VerifiedRoster::verify(&up.roster, ROOM, &[signer.public()], Default::default()).unwrap();
    let tree = RosterTree::new(fps.clone());
    let one = RosterProofs {
        version: roster.version(),
        proofs: vec![(fps[n / 2], tree.prove(&fps[n / 2]))],
    }
    .encode();
    let mut absent = [0u8; 32];
    rng.fill_bytes(&mut absent);
    let gap = RosterProofs {
        version: roster.version(),
        proofs: vec![(Fingerprint(absent), tree.prove(&Fingerprint(absent)))],
    }
    .encode();
    let batch: Vec<Fingerprint> = fps.iter().step_by(n / 32).take(32).copied().collect();
    let answer = RosterProofs {
        version: roster.version(),
        proofs: batch.iter().map(|f| (*f, tree.prove(f))).collect(),
    }
    .encode();
    let t = Instant::now();
    let k = 2_000;
    for i in 0..k {
        let f = &fps[(i * 7919) % n];
        std::hint::black_box(tree.prove(f));
    }
    let prove = t.elapsed();
    // A participant's check of one inclusion proof (what check_proofs does
    // per answer).
    let proofs: Vec<_> = batch.iter().map(|f| (*f, tree.prove(f))).collect();
    let count = u32::try_from(n).unwrap();
    let t = Instant::now();
    for _ in 0..(k / 32) {
        for (f, p) in &proofs {
            assert_eq!(
                sotto_delivery::roster::check_proof(&tree.root(), count, f, p),
                Some(true)
            );
        }
    }
    let check = t.elapsed();
    println!(
        "roster n={n}: signed roster {} B (3 listeners, no stage map; the same at any n), tree rebuild {:.2} ms, \
         prove {:.2} µs, check {:.2} µs, proof in {} B / absent {} B, 32 answers {} B (request {} B)",
        up.roster.len(),
        build.as_secs_f64() * 1e3,
        us(prove, k),
        us(check, (k / 32) * 32),
        one.len(),
        gap.len(),
        answer.len(),
        encode_proof_request(&batch).len(),
    );
    assert_eq!(store.current().map(|(h, _)| h.count), Some(3));
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::var_os("SOTTO_BENCH_QUICK").is_some();
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    bench_sframe(if quick { 3_000 } else { 50_000 });
    bench_admission(&mut rng, if quick { 100 } else { 1_000 });
    for n in if quick {
        vec![1_000]
    } else {
        vec![1_000, 5_000, 10_000]
    } {
        bench_rotation(&mut rng, n);
    }
    for n in if quick { vec![10] } else { vec![10, 50] } {
        bench_stage(&mut rng, n, if quick { 3 } else { 10 });
    }
    for n in if quick {
        vec![1_000]
    } else {
        vec![1_000, 10_000, 100_000]
    } {
        bench_roster(&mut rng, n);
    }
}
