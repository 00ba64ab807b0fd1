//! In-memory test network: one delivery service, the server's proposer, stage
//! members, a distributor and listeners, all in virtual time.
#![allow(dead_code)]

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sotto_delivery::{DeliveryError, RoomDelivery, SealedMailbox, ServerProposer};
use sotto_e2ee::{
    audience::{Distributor, JoinRequest, Listener, RoomKind, VerifiedKeyStatement},
    frame::{DEFAULT_GRACE_MS, Suite},
    identity::{DeviceIdentity, IdentityKey},
    invitation::{VerifiedInvitation, create_invitation},
    stage::{ExternalSenderInfo, StageCandidate, StageConfig, StageEvent, StageMember},
};

pub const ROOM: &[u8] = b"room-7f3a";

pub struct Member {
    pub stage: StageMember,
    pub cursor: u64,
    pub active: bool,
}

pub struct Net {
    pub now: u64,
    pub rng: ChaCha20Rng,
    pub ds: RoomDelivery,
    pub server: ServerProposer,
    pub authors: Vec<Option<usize>>,
    pub members: Vec<Member>,
    pub config: StageConfig,
    pub distributor: Option<Distributor>,
    pub mailbox: SealedMailbox,
    /// The latest key statement the distributor broadcast to listeners.
    pub statement: Vec<u8>,
    /// The server's Ed25519 seed, so tests can play a malicious server that
    /// signs more than `ServerProposer` offers.
    pub server_seed: [u8; 32],
}

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

impl Net {
    /// A room whose host created the stage group.
    pub fn new(seed: u64) -> Self {
        let mut rng = rng(seed);
        let mut server_seed = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rng, &mut server_seed);
        let server = ServerProposer::from_seed(server_seed);
        let info = ExternalSenderInfo {
            public_key: server.public_key().to_vec(),
            credential_identity: server.credential_identity(),
        };
        let host = DeviceIdentity::generate(&mut rng, b"acct-host", "dev-host");
        let config = StageConfig::default();
        let (stage, gi, tree) =
            StageMember::create(host, ROOM, &info, config, 0, &mut rng).unwrap();
        let ds = RoomDelivery::create(&gi, &tree).unwrap();
        Net {
            now: 0,
            rng,
            ds,
            server,
            authors: Vec::new(),
            members: vec![Member {
                stage,
                cursor: 0,
                active: true,
            }],
            config,
            distributor: None,
            mailbox: SealedMailbox::new(16),
            statement: Vec::new(),
            server_seed,
        }
    }

    pub fn post(&mut self, author: Option<usize>, bytes: &[u8]) -> Result<(), DeliveryError> {
        self.ds.handle_handshake(bytes)?;
        self.authors.push(author);
        Ok(())
    }

    /// Member `i` processes everything in the log it has not seen (skipping
    /// its own messages). Returns the events.
    pub fn sync(&mut self, i: usize) -> Vec<StageEvent> {
        let now = self.now;
        let mut events = Vec::new();
        let m = &mut self.members[i];
        if !m.active {
            return events;
        }
        let log = self.ds.messages_since(m.cursor).to_vec();
        for (k, msg) in log.iter().enumerate() {
            let seq = m.cursor as usize + k;
            if self.authors[seq] == Some(i) {
                continue;
            }
            let ev = m.stage.handle_message(now, msg).unwrap();
            if ev == StageEvent::Removed {
                m.active = false;
                events.push(ev);
                break;
            }
            events.push(ev);
        }
        m.cursor = self.ds.messages_since(0).len() as u64;
        events
    }

    pub fn sync_all(&mut self) {
        for i in 0..self.members.len() {
            self.sync(i);
        }
    }

    pub fn host_identity(&self) -> IdentityKey {
        self.members[0].stage.identity().public()
    }

    /// Add a speaker: server proposes, host (with an invitation) commits,
    /// the candidate joins by Welcome with the tree from the service.
    pub fn add_speaker(&mut self, name: &str) -> usize {
        let ident = DeviceIdentity::generate(&mut self.rng, name.as_bytes(), name);
        let invite = create_invitation(
            self.members[0].stage.identity(),
            ROOM,
            &ident.public(),
            self.now + 60_000,
        );
        let invite =
            VerifiedInvitation::verify(&invite, ROOM, &[self.host_identity()], self.now).unwrap();
        let (cand, kp) = StageCandidate::new(ident).unwrap();
        let prop = self.server.propose_add(&self.ds, &kp).unwrap();
        self.post(None, &prop).unwrap();
        self.sync_all();
        let out = self.members[0]
            .stage
            .commit_pending(&[invite], &[])
            .unwrap()
            .0;
        self.post(Some(0), &out.commit).unwrap();
        self.members[0].stage.commit_accepted(self.now).unwrap();
        self.ds.set_group_info(&out.group_info).unwrap();
        let tree = self.ds.ratchet_tree().unwrap();
        let stage = cand
            .join(
                ROOM,
                out.welcome.as_deref().unwrap(),
                &tree,
                &self.members[0].stage.group_id(),
                self.config,
                self.now,
            )
            .unwrap();
        let cursor = self.ds.messages_since(0).len() as u64;
        self.members.push(Member {
            stage,
            cursor,
            active: true,
        });
        self.sync_all();
        self.rotate_after_epoch_change();
        self.members.len() - 1
    }

    /// Remove member `i` through a server proposal committed by the host.
    pub fn remove_speaker(&mut self, i: usize) {
        let leaf = self.members[i].stage.leaf_index();
        let prop = self.server.propose_remove(&self.ds, leaf).unwrap();
        self.post(None, &prop).unwrap();
        self.sync_all();
        let out = self.members[0].stage.commit_pending(&[], &[]).unwrap().0;
        self.post(Some(0), &out.commit).unwrap();
        self.members[0].stage.commit_accepted(self.now).unwrap();
        self.ds.set_group_info(&out.group_info).unwrap();
        self.sync_all();
        self.rotate_after_epoch_change();
    }

    /// The host, as distributor, seals the next generation to listeners and
    /// announces it to the stage.
    pub fn rotate_after_epoch_change(&mut self) {
        let key = self.members[0].stage.next_audience_key().unwrap();
        if let Some(d) = self.distributor.as_mut() {
            let rotation = d
                .rotate(key.clone(), self.members[0].stage.identity())
                .unwrap();
            for s in rotation.deliveries {
                self.mailbox.post(&s.recipient.0, s.bytes).unwrap();
            }
            self.statement = rotation.statement;
        }
        let msg = self.members[0].stage.announce(self.now, &key).unwrap();
        self.post(Some(0), &msg).unwrap();
        self.sync_all();
    }

    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
        for m in &mut self.members {
            if m.active {
                m.stage.handle_timeout(self.now).unwrap();
            }
        }
    }

    pub fn start_distributor(&mut self, kind: RoomKind) {
        let key = self.members[0].stage.current_audience_key().unwrap();
        let d = Distributor::new(ROOM, kind, key, self.members[0].stage.identity());
        self.statement = d.statement().to_vec();
        self.distributor = Some(d);
    }

    /// What a listener does with the broadcast key statement: verify it
    /// against the room's stage members (here: the host).
    pub fn verified_statement(&self, l: &Listener) -> VerifiedKeyStatement {
        l.verify_statement(&self.statement, &[self.host_identity()])
            .unwrap()
    }

    /// A listener joins: signed request, verified against its registered
    /// identity, admitted, sealed key delivered through the mailbox.
    pub fn join_listener(&mut self, n: usize) -> (DeviceIdentity, Listener) {
        let ident = DeviceIdentity::generate(&mut self.rng, format!("l{n}").as_bytes(), "d");
        let (req, keys) =
            JoinRequest::create(&ident, ROOM, self.now + 60_000, &mut self.rng).unwrap();
        let verified = JoinRequest::parse(&req)
            .unwrap()
            .verify(&ident.public(), ROOM, self.now)
            .unwrap();
        let sealed = self.distributor.as_mut().unwrap().admit(verified).unwrap();
        let mut l = Listener::new(
            ROOM,
            &ident.public(),
            keys,
            Suite::CompactAudio,
            DEFAULT_GRACE_MS,
        );
        let stmt = self.verified_statement(&l);
        l.open(self.now, &sealed.bytes, &stmt).unwrap();
        (ident, l)
    }
}

pub trait SeededProposer {
    fn from_seed(seed: [u8; 32]) -> Self;
}

impl SeededProposer for ServerProposer {
    fn from_seed(seed: [u8; 32]) -> Self {
        let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
        ServerProposer::from_ed25519(seed, sk.verifying_key().to_bytes(), b"server.example")
    }
}
