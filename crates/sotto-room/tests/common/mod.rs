//! A hostile-server harness for the client core: several `RoomCrypto`
//! devices in virtual time, connected through an in-memory relay that
//! behaves like the real one (public state only: `sotto-delivery`) — until a
//! test tampers with what it delivers. The relay is the operator: a test can
//! drop, replace, add, replay or reorder any message to any device, and
//! hold its own keys (its external-sender key, any device key).
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};

use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sotto_delivery::roster::{RosterStore, RosterStoreError};
use sotto_delivery::{AcceptedKind, RoomDelivery, ServerProposer};
use sotto_proto::access::{AccessVerb, sign_access};
use sotto_proto::chain::{DeviceLink, LinkOp, encode_chain};
use sotto_proto::channel::{
    ClientMessage, E2eeDown, E2eePeer, E2eeUp, GroupBinding, ServerMessage, SignedAccess,
    decode_payload, encode_payload,
};
use sotto_proto::keys::DevicePublicKey;
use sotto_proto::room::{MemberView, Role, RoomKind, RoomView};
use sotto_proto::{DeviceId, ErrorCode, RoomId, UserId};
use sotto_room::{Alert, RoomCrypto, TrustStore};

pub const START: u64 = 1_800_000_000_000;

/// What the operator does with one message on its way to a device.
pub enum Verdict {
    Deliver,
    Drop,
    Replace(Vec<ServerMessage>),
}

pub type Hook = Box<dyn FnMut(usize, &ServerMessage) -> Verdict>;

pub struct Dev {
    pub name: &'static str,
    pub user: UserId,
    pub device: DeviceId,
    pub seed: [u8; 32],
    pub links: Vec<DeviceLink>,
    pub crypto: RoomCrypto,
    pub alerts: Vec<Alert>,
    pub errors: Vec<String>,
    /// Everything this device sent (tests inspect it).
    pub sent: Vec<ClientMessage>,
}

impl Dev {
    pub fn key(&self) -> DevicePublicKey {
        DevicePublicKey::from_bytes(
            SigningKey::from_bytes(&self.seed)
                .verifying_key()
                .to_bytes(),
        )
    }

    pub fn peer(&self) -> E2eePeer {
        E2eePeer {
            user_id: self.user.clone(),
            device_id: self.device.clone(),
            device_key: self.key(),
            chain: encode_payload(&encode_chain(&self.links)),
        }
    }

    pub fn has_alert(&self, pred: impl Fn(&Alert) -> bool) -> bool {
        self.alerts.iter().any(pred)
    }
}

/// A device key and chain, made up by a test (e.g. the operator's own).
pub fn keypair(seed: [u8; 32]) -> (SigningKey, Vec<DeviceLink>) {
    let sk = SigningKey::from_bytes(&seed);
    let public = DevicePublicKey::from_bytes(sk.verifying_key().to_bytes());
    let link = DeviceLink::sign(None, LinkOp::Add, &public, &sk);
    (sk, vec![link])
}

pub struct Net {
    pub room: RoomId,
    pub view: RoomView,
    pub now: u64,
    pub rng: ChaCha20Rng,
    pub devs: Vec<Dev>,
    pub proposer: ServerProposer,
    pub server_public: [u8; 32],
    pub delivery: Option<RoomDelivery>,
    pub binding: Option<GroupBinding>,
    pub candidates: HashMap<usize, Vec<u8>>,
    pub join_requests: HashMap<usize, Vec<u8>>,
    /// Statements the honest relay hands over with each device's join
    /// requests (as the server does from its `room_access` and `follows`).
    pub grants: HashMap<usize, Vec<SignedAccess>>,
    pub roster: Option<(Vec<u8>, E2eePeer)>,
    pub roster_store: RosterStore,
    pub distributor: Option<usize>,
    pub queue: VecDeque<(usize, ServerMessage)>,
    pub hook: Hook,
    /// Every message delivered, per device (to replay later).
    pub delivered: Vec<(usize, ServerMessage)>,
}

fn rank(r: Role) -> u8 {
    match r {
        Role::Host => 0,
        Role::Moderator => 1,
        Role::Speaker => 2,
        Role::Listener => 3,
    }
}

impl Net {
    pub fn new(seed: u64) -> Net {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        let sk = SigningKey::from_bytes(&s);
        let public = sk.verifying_key().to_bytes();
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let room = RoomId::from_bytes(id);
        Net {
            view: RoomView {
                id: room.clone(),
                title: "hostile".into(),
                description: String::new(),
                kind: RoomKind::Open,
                ended: false,
                version: 1,
                members: Vec::new(),
                audience_count: 0,
            },
            room,
            now: START,
            rng,
            devs: Vec::new(),
            proposer: ServerProposer::from_ed25519(s, public, b"sotto server"),
            server_public: public,
            delivery: None,
            binding: None,
            candidates: HashMap::new(),
            join_requests: HashMap::new(),
            grants: HashMap::new(),
            roster: None,
            roster_store: RosterStore::default(),
            distributor: None,
            queue: VecDeque::new(),
            hook: Box::new(|_, _| Verdict::Deliver),
            delivered: Vec::new(),
        }
    }

    /// A device of a new account joins the room with `role` and says E2EE
    /// hello; nothing is delivered yet.
    pub fn join(&mut self, name: &'static str, role: Role) -> usize {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let (_, links) = keypair(seed);
        let mut id = [0u8; 16];
        self.rng.fill_bytes(&mut id);
        let user = UserId::from_bytes(id);
        self.rng.fill_bytes(&mut id);
        let device = DeviceId::from_bytes(id);
        self.view.members.push(MemberView {
            user_id: user.clone(),
            username: name.into(),
            display_name: name.into(),
            role,
            hand_raised: false,
            muted: false,
            invited_to_stage: false,
            hand_order: None,
        });
        self.view.version += 1;
        let i = self.devs.len();
        let view = self.view.clone();
        let (crypto, out) = RoomCrypto::new(
            seed,
            &user,
            &device,
            &view,
            TrustStore::default(),
            self.now,
            &mut self.rng,
        )
        .unwrap();
        self.devs.push(Dev {
            name,
            user,
            device,
            seed,
            links,
            crypto,
            alerts: Vec::new(),
            errors: Vec::new(),
            sent: Vec::new(),
        });
        self.broadcast_view();
        for m in out {
            self.relay(i, m);
        }
        i
    }

    /// Device `i` starts over with the same key and nothing else (a web
    /// page reloaded, a CLI restarted): a new core says hello on its
    /// connection; the server keeps the room.
    pub fn reload(&mut self, i: usize) {
        let view = self.view.clone();
        let d = &self.devs[i];
        let (crypto, out) = RoomCrypto::new(
            d.seed,
            &d.user,
            &d.device,
            &view,
            TrustStore::default(),
            self.now,
            &mut self.rng,
        )
        .unwrap();
        self.devs[i].crypto = crypto;
        for m in out {
            self.relay(i, m);
        }
    }

    pub fn set_role(&mut self, i: usize, role: Role) {
        let user = self.devs[i].user.clone();
        for m in self.view.members.iter_mut().filter(|m| m.user_id == user) {
            m.role = role;
        }
        self.view.version += 1;
        self.broadcast_view();
        self.reconcile();
        self.elect();
    }

    pub fn leave(&mut self, i: usize) {
        let user = self.devs[i].user.clone();
        self.view.members.retain(|m| m.user_id != user);
        self.view.version += 1;
        self.broadcast_view();
        self.reconcile();
        self.elect();
    }

    fn broadcast_view(&mut self) {
        for i in 0..self.devs.len() {
            self.queue.push_back((
                i,
                ServerMessage::RoomState {
                    room: self.view.clone(),
                },
            ));
        }
    }

    pub fn role(&self, i: usize) -> Option<Role> {
        let user = &self.devs[i].user;
        self.view
            .members
            .iter()
            .find(|m| &m.user_id == user)
            .map(|m| m.role)
    }

    fn in_tree(&self, i: usize) -> bool {
        let key = self.devs[i].key();
        self.delivery
            .as_ref()
            .is_some_and(|d| d.leaf_of(key.as_bytes()).is_some())
    }

    pub fn e2ee(&mut self, to: usize, e2ee: E2eeDown) {
        self.queue.push_back((
            to,
            ServerMessage::E2ee {
                room_id: self.room.clone(),
                e2ee,
            },
        ));
    }

    /// The honest relay's handling of one client message.
    pub fn relay(&mut self, i: usize, msg: ClientMessage) {
        self.devs[i].sent.push(msg.clone());
        let ClientMessage::E2ee { e2ee, .. } = msg else {
            return;
        };
        let peer = self.devs[i].peer();
        let b = |t: &str| decode_payload(t).unwrap();
        match e2ee {
            E2eeUp::Hello {} => {
                self.e2ee(
                    i,
                    E2eeDown::Info {
                        external_sender_key: encode_payload(&self.server_public),
                        external_sender_credential: encode_payload(b"sotto server"),
                        has_group: self.delivery.is_some(),
                        group: self.binding.clone(),
                    },
                );
                if let Some((roster, from)) = self.roster.clone() {
                    self.e2ee(
                        i,
                        E2eeDown::Roster {
                            roster: encode_payload(&roster),
                            from,
                        },
                    );
                }
                self.elect();
            }
            E2eeUp::CreateGroup {
                group_info,
                ratchet_tree,
                binding,
            } => {
                self.delivery =
                    Some(RoomDelivery::create(&b(&group_info), &b(&ratchet_tree)).unwrap());
                let group = GroupBinding {
                    binding,
                    from: peer,
                };
                self.binding = Some(group.clone());
                self.distributor = None;
                for j in 0..self.devs.len() {
                    if j != i {
                        self.e2ee(
                            j,
                            E2eeDown::GroupReset {
                                group: group.clone(),
                            },
                        );
                    }
                }
                self.elect();
            }
            E2eeUp::KeyPackage { key_package } => {
                self.candidates.insert(i, b(&key_package));
                for j in 0..self.devs.len() {
                    if j != i && self.role(j).is_some_and(Role::moderates) && self.in_tree(j) {
                        self.e2ee(
                            j,
                            E2eeDown::Candidate {
                                candidate: peer.clone(),
                            },
                        );
                    }
                }
            }
            E2eeUp::StageInvitation {
                device_id,
                invitation,
            } => {
                let Some(c) = self.devs.iter().position(|d| d.device == device_id) else {
                    return;
                };
                for j in 0..self.devs.len() {
                    if j != i && self.in_tree(j) {
                        self.e2ee(
                            j,
                            E2eeDown::StageInvitation {
                                invitation: invitation.clone(),
                                from: peer.clone(),
                            },
                        );
                    }
                }
                if let Some(kp) = self.candidates.get(&c).cloned() {
                    let d = self.delivery.as_ref().unwrap();
                    let p = self.proposer.propose_add(d, &kp).unwrap();
                    self.post(None, p).unwrap();
                }
            }
            E2eeUp::Handshake { message, id } => match self.post(Some(i), b(&message)) {
                Ok((seq, epoch, commit)) => {
                    self.e2ee(
                        i,
                        E2eeDown::Accepted {
                            seq,
                            epoch,
                            commit,
                            id,
                        },
                    );
                    if commit {
                        self.reconcile();
                        self.elect();
                    }
                }
                Err(code) => self.e2ee(
                    i,
                    E2eeDown::Rejected {
                        id,
                        code,
                        message: "refused".into(),
                    },
                ),
            },
            E2eeUp::GroupInfo { group_info } => {
                self.delivery
                    .as_mut()
                    .unwrap()
                    .set_group_info(&b(&group_info))
                    .unwrap();
            }
            E2eeUp::Welcome { welcome } => {
                let tree = self.delivery.as_ref().unwrap().ratchet_tree().unwrap();
                let joined: Vec<usize> = self
                    .candidates
                    .keys()
                    .copied()
                    .filter(|c| self.in_tree(*c))
                    .collect();
                for c in joined {
                    self.candidates.remove(&c);
                    self.e2ee(
                        c,
                        E2eeDown::Welcome {
                            welcome: welcome.clone(),
                            ratchet_tree: encode_payload(&tree),
                        },
                    );
                }
            }
            E2eeUp::JoinRequest { request } => {
                self.join_requests.insert(i, b(&request));
                if let Some(d) = self.distributor {
                    let grants = self.grants.get(&i).cloned().unwrap_or_default();
                    self.e2ee(
                        d,
                        E2eeDown::JoinRequest {
                            request,
                            from: peer,
                            grants,
                        },
                    );
                }
            }
            E2eeUp::Sealed {
                statement,
                deliveries,
            } => {
                for s in deliveries {
                    if let Some(j) = self.devs.iter().position(|d| d.device == s.to) {
                        self.e2ee(
                            j,
                            E2eeDown::Sealed {
                                sealed: s.sealed,
                                statement: statement.clone(),
                                from: peer.clone(),
                            },
                        );
                    }
                }
            }
            E2eeUp::RosterLeaves { leaves } => {
                self.roster_store
                    .stage(&(i as u64).to_be_bytes(), &b(&leaves))
                    .unwrap();
            }
            E2eeUp::RosterProof { fingerprints } => {
                if let Some(proofs) = self.roster_store.prove(&b(&fingerprints)).unwrap() {
                    self.e2ee(
                        i,
                        E2eeDown::RosterProofs {
                            proofs: encode_payload(&proofs),
                        },
                    );
                }
            }
            E2eeUp::Roster { roster } => {
                // As the server: kept only if the chunks add up to it.
                match self
                    .roster_store
                    .commit(&(i as u64).to_be_bytes(), &b(&roster))
                {
                    Ok(_) => {}
                    Err(RosterStoreError::Resync) => {
                        self.e2ee(i, E2eeDown::RosterResync {});
                        return;
                    }
                    Err(e) => panic!("roster refused: {e}"),
                }
                self.roster = Some((b(&roster), peer.clone()));
                for j in 0..self.devs.len() {
                    if j != i {
                        self.e2ee(
                            j,
                            E2eeDown::Roster {
                                roster: roster.clone(),
                                from: peer.clone(),
                            },
                        );
                    }
                }
            }
        }
    }

    /// Orders a handshake and sends it to the stage group's devices.
    pub fn post(
        &mut self,
        from: Option<usize>,
        bytes: Vec<u8>,
    ) -> Result<(u64, u64, bool), ErrorCode> {
        let Some(d) = self.delivery.as_mut() else {
            return Err(ErrorCode::E2eeNoGroup);
        };
        let before: Vec<Vec<u8>> = d.members().into_iter().map(|m| m.signature_key).collect();
        let acc = d.handle_handshake(&bytes).map_err(|e| match e {
            sotto_delivery::DeliveryError::StaleEpoch { .. } => ErrorCode::StaleEpoch,
            _ => ErrorCode::E2eeInvalid,
        })?;
        let after: Vec<Vec<u8>> = d.members().into_iter().map(|m| m.signature_key).collect();
        let peer = from.map(|f| self.devs[f].peer());
        for j in 0..self.devs.len() {
            let k = self.devs[j].key().as_bytes().to_vec();
            if Some(j) != from && (before.contains(&k) || after.contains(&k)) {
                self.e2ee(
                    j,
                    E2eeDown::Handshake {
                        seq: acc.seq,
                        message: encode_payload(&bytes),
                        from: peer.clone(),
                    },
                );
            }
        }
        Ok((acc.seq, acc.epoch, acc.kind == AcceptedKind::Commit))
    }

    /// Proposes removing devices whose user is not on stage.
    pub fn reconcile(&mut self) {
        let Some(d) = self.delivery.as_ref() else {
            return;
        };
        let mut props = Vec::new();
        for m in d.members() {
            let owner = self
                .devs
                .iter()
                .position(|x| x.key().as_bytes().as_slice() == m.signature_key);
            let wanted = owner.is_some_and(|o| self.role(o).is_some_and(Role::on_stage));
            if !wanted {
                props.push(self.proposer.propose_remove(d, m.leaf_index).unwrap());
            }
        }
        for p in props {
            // A proposal for a member already being removed may be refused:
            // the relay's word does not matter to the test.
            if self.post(None, p).is_err() {
                continue;
            }
        }
    }

    pub fn elect(&mut self) {
        let best = (0..self.devs.len())
            .filter(|i| self.role(*i).is_some_and(Role::on_stage) && self.in_tree(*i))
            .min_by_key(|i| (rank(self.role(*i).unwrap()), *i));
        if best == self.distributor {
            return;
        }
        if let Some(old) = self.distributor {
            self.e2ee(old, E2eeDown::Distributor { active: false });
        }
        self.distributor = best;
        if let Some(new) = best {
            self.e2ee(new, E2eeDown::Distributor { active: true });
            let reqs: Vec<(usize, Vec<u8>)> = self
                .join_requests
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect();
            for (j, r) in reqs {
                let from = self.devs[j].peer();
                let grants = self.grants.get(&j).cloned().unwrap_or_default();
                self.e2ee(
                    new,
                    E2eeDown::JoinRequest {
                        request: encode_payload(&r),
                        from,
                        grants,
                    },
                );
            }
        }
    }

    /// The server restarts: messages in flight and everything the relay
    /// keeps in memory are lost (join requests, candidates, the roster, the
    /// election); the public group state survives only if `kept` (it is
    /// saved). Every device then reconnects and says hello again.
    pub fn restart(&mut self, kept: bool) {
        self.queue.clear();
        self.join_requests.clear();
        self.candidates.clear();
        self.roster = None;
        self.roster_store = RosterStore::default();
        self.distributor = None;
        if !kept {
            self.delivery = None;
            self.binding = None;
        }
        for i in 0..self.devs.len() {
            let out = self.devs[i].crypto.reconnected(self.now);
            for o in out {
                self.relay(i, o);
            }
        }
    }

    /// Delivers queued messages (through the hook) until the network is
    /// quiet, feeding each device's answers back to the relay.
    pub fn run(&mut self) {
        let mut steps = 0;
        while let Some((i, msg)) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 100_000, "the network never went quiet");
            let msgs = match (self.hook)(i, &msg) {
                Verdict::Deliver => vec![msg],
                Verdict::Drop => Vec::new(),
                Verdict::Replace(v) => v,
            };
            for m in msgs {
                self.deliver(i, m);
            }
        }
    }

    /// Hands one message to device `i` now, past the hook.
    pub fn deliver(&mut self, i: usize, m: ServerMessage) {
        self.delivered.push((i, m.clone()));
        let now = self.now;
        let out = match self.devs[i].crypto.handle(now, &m) {
            Ok(out) => out,
            Err(e) => {
                self.devs[i].errors.push(e.to_string());
                self.devs[i].crypto.handle_timeout(now)
            }
        };
        let alerts = self.devs[i].crypto.take_alerts();
        self.devs[i].alerts.extend(alerts);
        for o in out {
            self.relay(i, o);
        }
    }

    /// Moves virtual time on by `ms` in steps of `step` ms, firing every
    /// device's timers and delivering what they cause.
    pub fn advance(&mut self, ms: u64, step: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now = (self.now + step).min(end);
            for i in 0..self.devs.len() {
                if self.devs[i]
                    .crypto
                    .poll_timeout()
                    .is_some_and(|t| t <= self.now)
                {
                    let out = self.devs[i].crypto.handle_timeout(self.now);
                    let alerts = self.devs[i].crypto.take_alerts();
                    self.devs[i].alerts.extend(alerts);
                    for o in out {
                        self.relay(i, o);
                    }
                }
            }
            self.run();
        }
    }

    /// A frame from speaker `s` decrypts at listener `l`.
    pub fn hears(&mut self, s: usize, l: usize) -> bool {
        match self.hears_why(s, l) {
            Ok(()) => true,
            Err(why) => {
                println!(
                    "{} does not hear {}: {why}",
                    self.devs[l].name, self.devs[s].name
                );
                false
            }
        }
    }

    pub fn hears_why(&mut self, s: usize, l: usize) -> Result<(), String> {
        let now = self.now;
        let f = self.devs[s]
            .crypto
            .encrypt(now, b"hello room")
            .ok_or_else(|| format!("{} has no send key", self.devs[s].name))?;
        match self.devs[l].crypto.decrypt(now, &f) {
            Ok(p) if p == b"hello room" => Ok(()),
            Ok(_) => Err("wrong plaintext".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// An access statement signed by device `signer` about `target`, as
    /// the server stores it (with the signer's chain).
    pub fn statement(&self, signer: usize, verb: AccessVerb, target: &UserId) -> SignedAccess {
        let d = &self.devs[signer];
        let key = SigningKey::from_bytes(&d.seed);
        SignedAccess {
            statement: encode_payload(&sign_access(
                &key,
                verb,
                self.room.as_str(),
                target,
                self.now,
            )),
            signer: d.user.clone(),
            chain: encode_payload(&encode_chain(&d.links)),
        }
    }

    /// Queues a join request for device `to` (the distributor), as if
    /// from `from`, with no grants.
    pub fn join_request_to(&mut self, to: usize, request: &[u8], from: E2eePeer) {
        self.e2ee(
            to,
            E2eeDown::JoinRequest {
                request: encode_payload(request),
                from,
                grants: Vec::new(),
            },
        );
    }

    /// The relay hands device `l`'s stored join request to the
    /// distributor again, with the grants it holds now.
    pub fn resend_join_request(&mut self, l: usize) {
        let (Some(d), Some(r)) = (self.distributor, self.join_requests.get(&l).cloned()) else {
            return;
        };
        let from = self.devs[l].peer();
        let grants = self.grants.get(&l).cloned().unwrap_or_default();
        self.e2ee(
            d,
            E2eeDown::JoinRequest {
                request: encode_payload(&r),
                from,
                grants,
            },
        );
        self.run();
    }

    /// Host `h` invites device `c` (on stage in the room) to the stage group.
    pub fn invite(&mut self, h: usize, c: usize) {
        let user = self.devs[c].user.clone();
        self.devs[h].crypto.invite_to_stage(&user);
        self.set_role(c, Role::Speaker);
        self.run();
    }
}
