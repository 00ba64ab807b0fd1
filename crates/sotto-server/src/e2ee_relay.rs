//! The E2EE relay: the server's part in each room's end-to-end encryption,
//! with **public state only** (it links `sotto-delivery`, never
//! `sotto-e2ee`). Per room it keeps:
//!
//! - the stage group's public state ([`RoomDelivery`]), created from the
//!   host's first GroupInfo; it orders handshakes (first valid commit per
//!   epoch wins; the loser gets `stale_epoch` and rebases);
//! - KeyPackages of stage candidates (validated; the leaf signature key must
//!   be the uploading device's registered key);
//! - the server's role as sole external sender: it proposes `Add` for a
//!   candidate a host or moderator signed a stage invitation for, and
//!   `Remove` for a stage-group device whose user left the stage or the room
//!   (reconciled after every room change and every commit);
//! - the key distributor (and committer): among devices in the stage group
//!   with an open channel, the host, else a moderator, else a speaker;
//! - listeners' latest join requests (public: signed, carrying an HPKE
//!   *public* key), handed to each new distributor with the signed
//!   statements that let the listener in (a moderator's allow, the host's
//!   and moderators' follows), and the latest roster with the listener
//!   fingerprints behind it (as a Merkle tree, [`RosterStore`]), from which
//!   it answers anyone's proof requests;
//! - moderators' signed bans, handed to each distributor.
//!
//! Sealed keys are forwarded, never stored. Nothing here decrypts media:
//! the server never holds an MLS epoch secret, HPKE private key or audience
//! secret. State is in memory (one node), except what a restart must not
//! lose: the external-sender key (a file readable only by the server, like
//! the TLS key) and each live room's public group state (the latest
//! GroupInfo and ratchet tree, the host's binding, the tree keys' owners;
//! table `stage_groups`), so that a restarted server resumes the same stage
//! groups. Nothing a client sends panics; every refusal is a typed error for
//! the sender.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sotto_delivery::roster::{RosterStore, RosterStoreError};
use sotto_delivery::{
    AcceptedKind, DeliveryError, KeyPackageStore, MAX_SEALED_DELIVERY_LEN, RoomDelivery,
    ServerProposer,
};
use sotto_proto::channel::{
    E2eeDown, E2eePeer, E2eeUp, GroupBinding, SealedFor, ServerMessage, SignedAccess,
    decode_payload, encode_payload,
};
use sotto_proto::keys::DevicePublicKey;
use sotto_proto::room::{Role, RoomView};
use sotto_proto::{DeviceId, ErrorCode, RoomId, UserId};
use tokio::sync::mpsc;

use crate::store::{StageGroupRow, Store};

/// Messages a channel task sends to its client.
pub type Outbox = mpsc::Sender<ServerMessage>;
/// How many relay messages may wait for one channel before some are dropped.
pub const OUTBOX_CAPACITY: usize = 4096;
/// Largest join request, key statement or invitation relayed, in bytes.
const MAX_SMALL_BLOB: usize = 1024;

type RelayError = (ErrorCode, String);

fn err(code: ErrorCode, message: impl Into<String>) -> RelayError {
    (code, message.into())
}

/// One session channel that said E2EE `hello` in a room.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub id: u64,
    pub user: UserId,
    pub device: DeviceId,
    pub key: DevicePublicKey,
    /// The account's device chain (base64url), relayed with every message
    /// so that receivers can check `key` against it.
    pub chain: Arc<str>,
}

impl ConnInfo {
    fn peer(&self) -> E2eePeer {
        E2eePeer {
            user_id: self.user.clone(),
            device_id: self.device.clone(),
            device_key: self.key,
            chain: self.chain.to_string(),
        }
    }
}

struct Registered {
    info: ConnInfo,
    tx: Outbox,
}

struct Candidate {
    user: UserId,
    key: [u8; 32],
    key_package: Vec<u8>,
    invitation: Option<(Vec<u8>, E2eePeer)>,
}

/// A listener's latest join request, its sender, and the statements that
/// let it in.
struct JoinRequestHeld {
    request: Vec<u8>,
    from: E2eePeer,
    grants: Vec<SignedAccess>,
}

impl JoinRequestHeld {
    fn message(&self) -> E2eeDown {
        E2eeDown::JoinRequest {
            request: encode_payload(&self.request),
            from: self.from.clone(),
            grants: self.grants.clone(),
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Proposed {
    Add(DeviceId),
    Remove(u32),
}

/// What the relay keeps of a room's view besides its role index: never
/// the member list (the bus then updates the room in place, not by copy).
struct ViewHead {
    id: RoomId,
    version: i64,
    kind: sotto_proto::room::RoomKind,
}

#[derive(Default)]
struct RoomRelay {
    view: Option<ViewHead>,
    delivery: Option<RoomDelivery>,
    conns: BTreeMap<u64, Registered>,
    key_owner: HashMap<[u8; 32], UserId>,
    key_packages: KeyPackageStore,
    candidates: HashMap<DeviceId, Candidate>,
    proposed: HashSet<Proposed>,
    proposed_epoch: u64,
    join_requests: HashMap<DeviceId, JoinRequestHeld>,
    /// Moderators' signed bans in this room.
    bans: Vec<SignedAccess>,
    roster: Option<(Vec<u8>, E2eePeer)>,
    /// The listener fingerprints behind `roster`, as a tree, and the
    /// chunks staged for the next one: what proofs are answered from.
    roster_store: RosterStore,
    distributor: Option<u64>,
    /// The host's signed binding of the current stage group to the room.
    binding: Option<GroupBinding>,
    /// Device keys revoked or logged out while the room was live: removed
    /// from the stage group, their channels dropped (until the key uploads
    /// a new KeyPackage from a new session).
    evicted: HashSet<[u8; 32]>,
    /// The group state changed since it was last saved.
    dirty: bool,
    /// Each member's role, from `view`: one lookup per check.
    roles: HashMap<UserId, Role>,
    /// The channels of each device and of each device key: a delivery to a
    /// device, or a fan-out to the stage group, touches only its
    /// recipients.
    by_device: HashMap<DeviceId, Vec<u64>>,
    by_key: HashMap<[u8; 32], Vec<u64>>,
    /// When each device's join request last went to the distributor, and
    /// the devices whose latest request waits for [`JOIN_FORWARD_GAP`].
    join_forwarded: HashMap<DeviceId, std::time::Instant>,
    join_deferred: HashSet<DeviceId>,
    /// Deferred join requests to forward later (the caller arms a timer).
    join_timers: Vec<(DeviceId, std::time::Duration)>,
}

/// At most one join request per device goes to the key distributor in
/// this long: a device that floods the relay with join requests cannot
/// make the distributor seal keys for it over and over. Nothing is lost:
/// the latest request is kept and forwarded when the gap has passed. (An
/// honest client sends one when it joins the audience and one every four
/// minutes.)
pub const JOIN_FORWARD_GAP: std::time::Duration = std::time::Duration::from_secs(2);

/// A write of the relay's saved state, queued in order.
#[derive(Debug)]
enum Persist {
    Save(StageGroupRow),
    Delete(RoomId),
}

/// What a test may inspect of a room's relay state: everything it holds.
#[derive(Debug, Clone)]
pub struct RelaySnapshot {
    /// The stage group's id (random per group; empty without a group).
    pub group_id: Vec<u8>,
    pub epoch: u64,
    pub stage_members: usize,
    pub distributor: Option<DeviceId>,
    pub listeners_waiting: usize,
    /// Every byte string the relay holds for the room (handshake log,
    /// GroupInfo, ratchet tree, KeyPackages, invitations, join requests,
    /// roster). All of it is public group state or signed public data.
    pub held: Vec<Vec<u8>>,
}

/// One room's relay state, behind a lock of its own.
type RoomCell = Arc<Mutex<RoomRelay>>;

/// The relay for every room of this node. Each room has its own lock: the
/// map of rooms is locked only to find or add a room. Work under a room's
/// lock that comes from a channel (MLS validation, fan-out) runs on
/// tokio's blocking threads, so a room that is busy — a slow validation, a
/// large fan-out — holds up its own messages, never another room's or the
/// async workers.
#[derive(Clone)]
pub struct E2eeRelay {
    rooms: Arc<Mutex<HashMap<RoomId, RoomCell>>>,
    proposer: Arc<ServerProposer>,
    next_conn: Arc<AtomicU64>,
    public_key: [u8; 32],
    /// Where saved state goes (none: a relay kept in memory only).
    persist: Option<mpsc::UnboundedSender<Persist>>,
}

impl std::fmt::Debug for E2eeRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2eeRelay").finish_non_exhaustive()
    }
}

/// The credential label the server's external-sender key carries.
const SERVER_CREDENTIAL: &[u8] = b"sotto server";

/// What a message needs of its sender.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Host,
    OnStage,
    Moderates,
    StageMember,
    Listener,
    /// Anyone in the room (with a channel that said hello).
    Participant,
}

impl E2eeRelay {
    /// A relay with a fresh external-sender key (kept in memory only).
    pub fn new() -> Self {
        Self::with_seed(crate::http::random_bytes::<32>(), None)
    }

    fn with_seed(seed: [u8; 32], persist: Option<mpsc::UnboundedSender<Persist>>) -> Self {
        let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public_key = sk.verifying_key().to_bytes();
        E2eeRelay {
            rooms: Arc::default(),
            proposer: Arc::new(ServerProposer::from_ed25519(
                seed,
                public_key,
                SERVER_CREDENTIAL,
            )),
            next_conn: Arc::new(AtomicU64::new(1)),
            public_key,
            persist,
        }
    }

    /// The relay of a server that keeps its state: the external-sender key
    /// from `<data_dir>/relay/external-sender.key` (made on first start,
    /// readable by the server's user only), and the stage groups of live
    /// rooms from the database. Later group changes are saved in order by a
    /// task of its own.
    pub async fn open(store: &Store, data_dir: &std::path::Path) -> anyhow::Result<Self> {
        let seed = load_or_make_key(&data_dir.join("relay"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let relay = Self::with_seed(seed, Some(tx));
        let rows = store
            .live_stage_groups()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read saved stage groups: {}", e.message))?;
        let mut restored = 0usize;
        {
            let mut rooms = relay.lock();
            for row in rows {
                match RoomRelay::restore(&row) {
                    Ok(room) => {
                        rooms.insert(row.room_id.clone(), Arc::new(Mutex::new(room)));
                        restored += 1;
                    }
                    // Saved by an older server or damaged: the host makes a
                    // new group when it reconnects, as before restarts kept state.
                    Err(why) => {
                        tracing::warn!(room = %row.room_id.short(), %why, "e2ee relay: saved stage group not resumed")
                    }
                }
            }
        }
        if restored > 0 {
            tracing::info!(rooms = restored, "e2ee relay: resumed saved stage groups");
        }
        tokio::spawn(save_task(store.clone(), rx));
        Ok(relay)
    }

    /// Queues the room's group state for saving if it changed.
    fn save_if_dirty(&self, room_id: &RoomId, room: &mut RoomRelay) {
        if !std::mem::take(&mut room.dirty) {
            return;
        }
        let Some(tx) = &self.persist else { return };
        match room.saved_state(room_id) {
            Some(row) => {
                if tx.send(Persist::Save(row)).is_err() {
                    tracing::warn!("e2ee relay: the save task has stopped; group state not saved");
                }
            }
            None => tracing::warn!("e2ee relay: group state could not be encoded; not saved"),
        }
    }

    /// A number for a new channel.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, RoomCell>> {
        // A poisoned lock means a bug panicked while holding it; the state is
        // plain data, so keep serving.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The room's cell, if the relay knows the room.
    fn room(&self, room_id: &RoomId) -> Option<RoomCell> {
        self.lock().get(room_id).cloned()
    }

    /// Runs `f` with the room's state locked, on a blocking thread (see
    /// [`E2eeRelay`]). `None` if the relay does not know the room.
    async fn with_room<T: Send + 'static>(
        &self,
        room_id: &RoomId,
        f: impl FnOnce(&E2eeRelay, &RoomId, &mut RoomRelay) -> T + Send + 'static,
    ) -> Option<T> {
        let cell = self.room(room_id)?;
        let (relay, room_id) = (self.clone(), room_id.clone());
        let job = tokio::task::spawn_blocking(move || f(&relay, &room_id, &mut lock_room(&cell)));
        match job.await {
            Ok(v) => Some(v),
            Err(e) => {
                // A panic under the lock (a bug): the room's state is plain
                // data and stays usable; this message is refused.
                tracing::error!(error = %e, "e2ee relay: a room's work failed");
                None
            }
        }
    }

    /// Forwards `device`'s deferred join request once `after` has passed.
    /// Called under the room's lock on a blocking thread of the runtime.
    fn forward_join_later(&self, room_id: RoomId, device: DeviceId, after: std::time::Duration) {
        let relay = self.clone();
        tokio::runtime::Handle::current().spawn(async move {
            tokio::time::sleep(after).await;
            let forwarded = relay
                .with_room(&room_id, move |_, room_id, room| {
                    room.forward_deferred_join(room_id, &device)
                })
                .await;
            if forwarded.is_none() {
                tracing::debug!("e2ee relay: room gone before a deferred join request");
            }
        });
    }

    /// Test hook: holds `room_id`'s state for `hold` on a thread of its
    /// own, as a slow MLS validation would, and returns once it is held.
    #[doc(hidden)]
    pub fn hold_room_for(
        &self,
        room_id: &RoomId,
        hold: std::time::Duration,
    ) -> Option<std::thread::JoinHandle<()>> {
        let cell = self.room(room_id)?;
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let _guard = lock_room(&cell);
            if held_tx.send(()).is_err() {
                return;
            }
            std::thread::sleep(hold);
        });
        held_rx.recv().ok()?;
        Some(thread)
    }

    /// Handles one E2EE message from `conn` (whose channel is subscribed to
    /// `room_id`). Replies and relayed messages go through the outboxes;
    /// a refusal is returned for the channel to send as a typed error.
    pub async fn handle(
        &self,
        store: &Store,
        bus: &crate::bus::Bus,
        conn: &ConnInfo,
        tx: &Outbox,
        room_id: &RoomId,
        msg: E2eeUp,
    ) -> Result<(), RelayError> {
        if let E2eeUp::Hello {} = msg {
            // A member: the room as last published (the relay follows it
            // already; no read of the room). Anyone else: the store says
            // whether they may see it.
            let cached = match store.is_member(room_id, &conn.user).await {
                Ok(true) => bus.view(room_id),
                Ok(false) => None,
                Err(e) => return Err((e.code, e.message)),
            };
            let view = match cached {
                Some(view) => view,
                None => Arc::new(
                    store
                        .room_for(room_id, &conn.user)
                        .await
                        .map_err(|e| (e.code, e.message))?,
                ),
            };
            self.lock().entry(room_id.clone()).or_default();
            let (conn, tx) = (conn.clone(), tx.clone());
            return self
                .with_room(room_id, move |relay, room_id, room| {
                    room.hello(relay, room_id, view, conn, tx);
                })
                .await
                .ok_or_else(room_gone);
        }
        let need = match &msg {
            E2eeUp::Hello {} => unreachable_need(),
            E2eeUp::CreateGroup { .. } => Need::Host,
            E2eeUp::KeyPackage { .. } => Need::OnStage,
            E2eeUp::StageInvitation { .. } => Need::Moderates,
            E2eeUp::JoinRequest { .. } => Need::Listener,
            E2eeUp::Handshake { .. }
            | E2eeUp::GroupInfo { .. }
            | E2eeUp::Welcome { .. }
            | E2eeUp::Sealed { .. }
            | E2eeUp::Roster { .. }
            | E2eeUp::RosterLeaves { .. } => Need::StageMember,
            E2eeUp::RosterProof { .. } => Need::Participant,
        };
        // Whether the sender may send it, and whether the room is open
        // (what lets a listener in is read from the database, between the
        // room's locks: a moderator's allow, the moderators' follows; open
        // rooms need none).
        let c = conn.clone();
        let first = self
            .with_room(room_id, move |_, _, room| {
                room.check(&c, need).map(|()| room.is_open())
            })
            .await
            .unwrap_or_else(|| Err(hello_required()));
        let open = match first {
            Ok(open) => open,
            Err((ErrorCode::NotOnStage | ErrorCode::NotPermitted, _)) => {
                // The room may have changed after our last view: re-read it.
                let view = store
                    .room_for(room_id, &conn.user)
                    .await
                    .map_err(|e| (e.code, e.message))?;
                let c = conn.clone();
                self.with_room(room_id, move |relay, _, room| {
                    room.apply_view(&relay.proposer, Arc::new(view), None);
                    room.check(&c, need).map(|()| room.is_open())
                })
                .await
                .unwrap_or_else(|| Err(hello_required()))?
            }
            Err(e) => return Err(e),
        };
        let grants = match &msg {
            E2eeUp::JoinRequest { .. } if !open => store
                .access_grants(room_id, &conn.user)
                .await
                .map_err(|e| (e.code, e.message))?,
            _ => Vec::new(),
        };
        let c = conn.clone();
        self.with_room(room_id, move |relay, room_id, room| {
            let result = room.apply(&relay.proposer, room_id, &c, msg, grants);
            relay.save_if_dirty(room_id, room);
            for (device, after) in room.join_timers.drain(..) {
                relay.forward_join_later(room_id.clone(), device, after);
            }
            result
        })
        .await
        .unwrap_or_else(|| Err(hello_required()))
    }

    /// A moderator's signed ban (checked by the caller to be signed by the
    /// moderator's session device): kept for every distributor of the room,
    /// sent to the current one now.
    pub async fn ban(&self, room_id: &RoomId, ban: SignedAccess) {
        let kept = self
            .with_room(room_id, move |_, room_id, room| {
                if let Some(d) = room.distributor {
                    room.send(d, E2eeDown::Ban { ban: ban.clone() }, room_id);
                }
                room.bans.push(ban);
            })
            .await;
        if kept.is_none() {
            tracing::debug!("e2ee relay: a ban for a room without E2EE state");
        }
    }

    /// New statements let `user` in: hand the distributor `user`'s waiting
    /// join requests again with them.
    pub async fn regrant(&self, room_id: &RoomId, user: &UserId, grants: Vec<SignedAccess>) {
        let user = user.clone();
        let done = self
            .with_room(room_id, move |_, room_id, room| {
                room.regrant(room_id, &user, &grants);
            })
            .await;
        if done.is_none() {
            tracing::debug!("e2ee relay: new grants for a room without E2EE state");
        }
    }

    /// The channel stopped taking part in `room_id` (unsubscribed, left, or
    /// closed).
    pub async fn unregister(&self, conn: u64, room_id: &RoomId) {
        let done = self
            .with_room(room_id, move |_, room_id, room| {
                if room.remove_conn(conn) {
                    room.elect(room_id);
                }
            })
            .await;
        if done.is_none() {
            tracing::debug!("e2ee relay: a channel left a room without E2EE state");
        }
    }

    /// A room changed (from the bus), with the delta from the previous
    /// view if the bus made one.
    pub fn apply_view(&self, view: &Arc<RoomView>, delta: Option<&sotto_proto::room::RoomDelta>) {
        if view.ended {
            self.lock().remove(&view.id);
            if let Some(tx) = &self.persist
                && tx.send(Persist::Delete(view.id.clone())).is_err()
            {
                tracing::warn!(
                    "e2ee relay: the save task has stopped; ended room's group not deleted"
                );
            }
            return;
        }
        if let Some(cell) = self.room(&view.id) {
            lock_room(&cell).apply_view(&self.proposer, Arc::clone(view), delta);
        }
    }

    /// A device was revoked or its session logged out: in every live room,
    /// drop its channels, propose its removal from the stage group (MLS
    /// work, so each room's part runs on a blocking thread under that
    /// room's lock), and tell the key distributor to drop it from the
    /// audience and rotate. Returns once every room has done so.
    pub async fn evict_device(&self, device: &DeviceId, key: &DevicePublicKey) {
        let rooms: Vec<RoomId> = self.lock().keys().cloned().collect();
        for room_id in rooms {
            let (device, key) = (device.clone(), *key);
            let done = self
                .with_room(&room_id, move |relay, room_id, room| {
                    room.evict(&relay.proposer, room_id, &device, &key);
                })
                .await;
            if done.is_none() {
                tracing::debug!("e2ee relay: room gone before an eviction");
            }
        }
    }

    /// What the relay holds for a room (tests and audits).
    pub fn snapshot(&self, room_id: &RoomId) -> Option<RelaySnapshot> {
        let cell = self.room(room_id)?;
        let room = lock_room(&cell);
        let mut held: Vec<Vec<u8>> = Vec::new();
        if let Some(d) = &room.delivery {
            held.extend(d.messages_since(0).iter().cloned());
            held.push(d.group_info().to_vec());
            held.extend(d.ratchet_tree().ok());
        }
        for c in room.candidates.values() {
            held.push(c.key_package.clone());
            held.extend(c.invitation.as_ref().map(|(i, _)| i.clone()));
        }
        held.extend(room.join_requests.values().map(|h| h.request.clone()));
        held.extend(
            room.bans
                .iter()
                .filter_map(|b| decode_payload(&b.statement).ok()),
        );
        held.extend(room.roster.as_ref().map(|(r, _)| r.clone()));
        if let Some((_, leaves)) = room.roster_store.current() {
            held.extend(leaves.iter().map(|fp| fp.0.to_vec()));
        }
        Some(RelaySnapshot {
            group_id: room
                .delivery
                .as_ref()
                .map_or_else(Vec::new, |d| d.group_id().to_vec()),
            epoch: room.delivery.as_ref().map_or(0, RoomDelivery::epoch),
            stage_members: room.delivery.as_ref().map_or(0, |d| d.members().len()),
            distributor: room
                .distributor
                .and_then(|c| room.conns.get(&c))
                .map(|r| r.info.device.clone()),
            listeners_waiting: room.join_requests.len(),
            held,
        })
    }
}

impl Default for E2eeRelay {
    fn default() -> Self {
        Self::new()
    }
}

fn lock_room(cell: &RoomCell) -> std::sync::MutexGuard<'_, RoomRelay> {
    // As for the map: a poisoned room is plain data; keep serving it.
    cell.lock().unwrap_or_else(|e| e.into_inner())
}

fn hello_required() -> RelayError {
    err(ErrorCode::E2eeHelloRequired, "say e2ee hello first")
}

/// The room ended (or its work failed) while a message for it waited.
fn room_gone() -> RelayError {
    err(
        ErrorCode::E2eeHelloRequired,
        "the room is gone; say e2ee hello again",
    )
}

fn unreachable_need() -> Need {
    // `hello` is handled before needs are computed.
    Need::Listener
}

fn decode(text: &str, max: usize) -> Result<Vec<u8>, RelayError> {
    let bytes = decode_payload(text)?;
    if bytes.len() > max {
        return Err(err(ErrorCode::PayloadTooLarge, "field too large"));
    }
    Ok(bytes)
}

fn delivery_error(e: DeliveryError) -> RelayError {
    match e {
        DeliveryError::StaleEpoch { got, current } => err(
            ErrorCode::StaleEpoch,
            format!(
                "message for epoch {got}, the stage group is at {current}: process the log and rebase"
            ),
        ),
        DeliveryError::TooLarge { .. } => err(ErrorCode::PayloadTooLarge, e.to_string()),
        other => err(ErrorCode::E2eeInvalid, other.to_string()),
    }
}

fn rank(role: Role) -> u8 {
    match role {
        Role::Host => 0,
        Role::Moderator => 1,
        Role::Speaker => 2,
        Role::Listener => 3,
    }
}

impl RoomRelay {
    /// Whether `conn` may send a message that needs `need`.
    fn check(&self, conn: &ConnInfo, need: Need) -> Result<(), RelayError> {
        if !self.conns.contains_key(&conn.id) {
            return Err(hello_required());
        }
        let role = self.role_of(&conn.user);
        let ok = match need {
            Need::Host => role == Some(Role::Host),
            Need::OnStage | Need::StageMember => role.is_some_and(Role::on_stage),
            Need::Moderates => role.is_some_and(Role::moderates),
            Need::Listener => role == Some(Role::Listener),
            Need::Participant => role.is_some(),
        };
        if !ok {
            let code = match need {
                Need::Host | Need::Moderates => ErrorCode::NotPermitted,
                Need::Listener => ErrorCode::AlreadyOnStage,
                Need::Participant => ErrorCode::NotPermitted,
                Need::OnStage | Need::StageMember => ErrorCode::NotOnStage,
            };
            return Err(err(code, "your role does not allow this E2EE message"));
        }
        if need == Need::StageMember {
            let d = self
                .delivery
                .as_ref()
                .ok_or_else(|| err(ErrorCode::E2eeNoGroup, "the room has no stage group yet"))?;
            if d.leaf_of(conn.key.as_bytes()).is_none() {
                return Err(err(
                    ErrorCode::NotOnStage,
                    "this device is not a member of the stage group",
                ));
            }
        }
        Ok(())
    }

    /// Whether the room (as last seen) is open to anyone.
    fn is_open(&self) -> bool {
        self.view
            .as_ref()
            .is_some_and(|v| v.kind == sotto_proto::room::RoomKind::Open)
    }

    /// A channel said E2EE `hello`: register it, tell it what the relay
    /// has (the external sender, the bound group, the latest roster) and
    /// elect a distributor if the room needs one.
    fn hello(
        &mut self,
        relay: &E2eeRelay,
        room_id: &RoomId,
        view: Arc<RoomView>,
        conn: ConnInfo,
        tx: Outbox,
    ) {
        let behind = self
            .view
            .as_ref()
            .is_none_or(|v| v.id != view.id || v.version < view.version);
        if behind {
            self.apply_view(&relay.proposer, view, None);
        }
        let id = conn.id;
        self.add_conn(Registered { info: conn, tx });
        self.send(
            id,
            E2eeDown::Info {
                external_sender_key: encode_payload(&relay.public_key),
                external_sender_credential: encode_payload(SERVER_CREDENTIAL),
                has_group: self.delivery.is_some(),
                group: self.binding.clone().filter(|_| self.delivery.is_some()),
            },
            room_id,
        );
        if let Some((roster, from)) = self.roster.clone() {
            self.send(
                id,
                E2eeDown::Roster {
                    roster: encode_payload(&roster),
                    from,
                },
                room_id,
            );
        }
        self.elect(room_id);
    }

    /// A room's relay state from what was saved: the group resumes at the
    /// saved epoch; channels, candidates and join requests come again as
    /// clients reconnect.
    fn restore(row: &StageGroupRow) -> Result<RoomRelay, String> {
        let delivery =
            RoomDelivery::create(&row.group_info, &row.ratchet_tree).map_err(|e| e.to_string())?;
        let binding: GroupBinding =
            serde_json::from_str(&row.binding).map_err(|_| "binding is not JSON".to_string())?;
        let owners: BTreeMap<String, String> = serde_json::from_str(&row.key_owners)
            .map_err(|_| "key owners are not JSON".to_string())?;
        let mut key_owner = HashMap::new();
        for (key, user) in owners {
            let key = decode_payload(&key)
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
                .ok_or_else(|| "a key owner's key is not 32 bytes".to_string())?;
            key_owner.insert(key, UserId(user));
        }
        Ok(RoomRelay {
            delivery: Some(delivery),
            binding: Some(binding),
            key_owner,
            ..RoomRelay::default()
        })
    }

    /// What is saved of the room: its public group state, if it has a group.
    fn saved_state(&self, room_id: &RoomId) -> Option<StageGroupRow> {
        let d = self.delivery.as_ref()?;
        let binding = serde_json::to_string(self.binding.as_ref()?).ok()?;
        let owners: BTreeMap<String, String> = d
            .members()
            .into_iter()
            .filter_map(|m| {
                let key = <[u8; 32]>::try_from(m.signature_key.as_slice()).ok()?;
                let user = self.key_owner.get(&key)?;
                Some((encode_payload(&key), user.0.clone()))
            })
            .collect();
        Some(StageGroupRow {
            room_id: room_id.clone(),
            group_info: d.group_info().to_vec(),
            ratchet_tree: d.ratchet_tree().ok()?,
            binding,
            key_owners: serde_json::to_string(&owners).ok()?,
        })
    }

    /// [`E2eeRelay::regrant`] for this room.
    fn regrant(&mut self, room_id: &RoomId, user: &UserId, grants: &[SignedAccess]) {
        let Some(d) = self.distributor else {
            self.join_requests
                .values_mut()
                .filter(|h| &h.from.user_id == user)
                .for_each(|h| h.grants = grants.to_vec());
            return;
        };
        let mut again = Vec::new();
        for held in self
            .join_requests
            .values_mut()
            .filter(|h| &h.from.user_id == user)
        {
            held.grants = grants.to_vec();
            again.push(held.message());
        }
        for m in again {
            self.send(d, m, room_id);
        }
    }

    /// [`E2eeRelay::evict_device`] for this room.
    fn evict(
        &mut self,
        proposer: &ServerProposer,
        room_id: &RoomId,
        device: &DeviceId,
        key: &DevicePublicKey,
    ) {
        let conns = self.conns_of_keys([key.as_bytes().as_slice()]);
        let known = !conns.is_empty() || self.in_tree(key);
        if !known && !self.join_requests.contains_key(device) {
            return;
        }
        self.evicted.insert(*key.as_bytes());
        for c in conns {
            self.remove_conn(c);
        }
        self.forget_join_request(device);
        self.candidates.remove(device);
        if let Some(d) = self.distributor {
            self.send(
                d,
                E2eeDown::DeviceGone {
                    device_id: device.clone(),
                },
                room_id,
            );
        }
        self.reconcile(proposer, room_id);
        self.elect(room_id);
    }

    fn role_of(&self, user: &UserId) -> Option<Role> {
        self.roles.get(user).copied()
    }

    fn add_conn(&mut self, r: Registered) {
        let id = r.info.id;
        self.remove_conn(id);
        self.by_device
            .entry(r.info.device.clone())
            .or_default()
            .push(id);
        self.by_key
            .entry(*r.info.key.as_bytes())
            .or_default()
            .push(id);
        self.conns.insert(id, r);
    }

    fn remove_conn(&mut self, id: u64) -> bool {
        match self.conns.remove(&id) {
            Some(r) => {
                self.unindex(&r);
                true
            }
            None => false,
        }
    }

    fn unindex(&mut self, r: &Registered) {
        let id = r.info.id;
        if let Some(v) = self.by_device.get_mut(&r.info.device) {
            v.retain(|c| *c != id);
            if v.is_empty() {
                self.by_device.remove(&r.info.device);
            }
        }
        let key = r.info.key.as_bytes();
        if let Some(v) = self.by_key.get_mut(key) {
            v.retain(|c| *c != id);
            if v.is_empty() {
                self.by_key.remove(key);
            }
        }
    }

    /// The channels of a device.
    fn conns_of_device(&self, device: &DeviceId) -> Vec<u64> {
        self.by_device.get(device).cloned().unwrap_or_default()
    }

    /// The channels of devices holding one of these keys.
    fn conns_of_keys<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) -> Vec<u64> {
        keys.into_iter()
            .filter_map(|k| <[u8; 32]>::try_from(k).ok())
            .filter_map(|k| self.by_key.get(&k))
            .flatten()
            .copied()
            .collect()
    }

    /// The channels of the stage group's devices.
    fn stage_conns(&self) -> Vec<u64> {
        let Some(d) = self.delivery.as_ref() else {
            return Vec::new();
        };
        let keys: Vec<Vec<u8>> = d.members().into_iter().map(|m| m.signature_key).collect();
        self.conns_of_keys(keys.iter().map(Vec::as_slice))
    }

    fn send(&self, conn: u64, msg: E2eeDown, room_id: &RoomId) {
        if let Some(r) = self.conns.get(&conn) {
            let out = ServerMessage::E2ee {
                room_id: room_id.clone(),
                e2ee: msg,
            };
            if r.tx.try_send(out).is_err() {
                tracing::warn!("e2ee relay: a channel's outbox is full; message dropped");
            }
        }
    }

    fn conns_where(&self, pred: impl Fn(&ConnInfo) -> bool) -> Vec<u64> {
        self.conns
            .values()
            .filter(|r| pred(&r.info))
            .map(|r| r.info.id)
            .collect()
    }

    fn in_tree(&self, key: &DevicePublicKey) -> bool {
        self.delivery
            .as_ref()
            .is_some_and(|d| d.leaf_of(key.as_bytes()).is_some())
    }

    /// Takes a newer view of the room. With the delta from the view held,
    /// only the members it names are looked at; the scans for departures
    /// run only when someone left or changed role (not for a join or a
    /// hand).
    fn apply_view(
        &mut self,
        proposer: &ServerProposer,
        view: Arc<RoomView>,
        delta: Option<&sotto_proto::room::RoomDelta>,
    ) {
        if self
            .view
            .as_ref()
            .is_some_and(|v| v.id == view.id && v.version >= view.version)
        {
            return;
        }
        let from_held = delta.filter(|d| {
            self.view
                .as_ref()
                .is_some_and(|v| v.id == d.room_id && v.version == d.from)
                && d.version == view.version
        });
        let departures = match from_held {
            Some(d) => self.apply_role_changes(d),
            None => {
                self.roles = view
                    .members
                    .iter()
                    .map(|m| (m.user_id.clone(), m.role))
                    .collect();
                true
            }
        };
        let room_id = view.id.clone();
        self.view = Some(ViewHead {
            id: view.id.clone(),
            version: view.version,
            kind: view.kind,
        });
        if departures {
            self.drop_departed();
        }
        self.reconcile(proposer, &room_id);
        self.elect(&room_id);
    }

    /// Updates `roles` from a delta; whether anyone left or changed role.
    fn apply_role_changes(&mut self, delta: &sotto_proto::room::RoomDelta) -> bool {
        use sotto_proto::room::MemberChange;
        let mut departures = false;
        for change in &delta.changes {
            let (user, role) = match change {
                MemberChange::Left { user_id } => {
                    self.roles.remove(user_id);
                    departures = true;
                    continue;
                }
                MemberChange::Put { member, .. } => (&member.user_id, member.role),
                MemberChange::Set {
                    user_id,
                    role: Some(role),
                    ..
                } => (user_id, *role),
                MemberChange::Set { .. } => continue,
            };
            if self
                .roles
                .insert(user.clone(), role)
                .is_some_and(|old| old != role)
            {
                departures = true;
            }
        }
        departures
    }

    /// Sends `device`'s held join request to the distributor (if any).
    fn forward_join(&mut self, room_id: &RoomId, device: &DeviceId, now: std::time::Instant) {
        self.join_forwarded.insert(device.clone(), now);
        if let (Some(d), Some(held)) = (self.distributor, self.join_requests.get(device)) {
            self.send(d, held.message(), room_id);
        }
    }

    fn forward_deferred_join(&mut self, room_id: &RoomId, device: &DeviceId) {
        if self.join_deferred.remove(device) {
            self.forward_join(room_id, device, std::time::Instant::now());
        }
    }

    fn forget_join_request(&mut self, device: &DeviceId) {
        self.join_requests.remove(device);
        self.join_forwarded.remove(device);
        self.join_deferred.remove(device);
    }

    /// Drops the channels, join requests and stage candidates of users no
    /// longer in the room (or, for join requests, on stage now).
    fn drop_departed(&mut self) {
        let gone: Vec<u64> = self.conns_where(|c| self.role_of(&c.user).is_none());
        for c in gone {
            self.remove_conn(c);
        }
        let members: HashMap<DeviceId, Option<Role>> = self
            .join_requests
            .iter()
            .map(|(d, h)| (d.clone(), self.role_of(&h.from.user_id)))
            .collect();
        for (device, role) in members {
            if role != Some(Role::Listener) {
                self.forget_join_request(&device);
            }
        }
        let stale: Vec<DeviceId> = self
            .candidates
            .iter()
            .filter(|(_, c)| !self.role_of(&c.user).is_some_and(Role::on_stage))
            .map(|(d, _)| d.clone())
            .collect();
        for d in stale {
            self.candidates.remove(&d);
        }
    }

    /// Propose what the stage group needs to match the room: `Remove` for a
    /// device whose user is no longer on stage, `Add` for an invited
    /// candidate. Each at most once per epoch.
    fn reconcile(&mut self, proposer: &ServerProposer, room_id: &RoomId) {
        let Some(d) = self.delivery.as_ref() else {
            return;
        };
        if d.epoch() != self.proposed_epoch {
            self.proposed.clear();
            self.proposed_epoch = d.epoch();
        }
        let mut proposals = Vec::new();
        for m in d.members() {
            let key = <[u8; 32]>::try_from(m.signature_key.as_slice()).ok();
            let wanted = key
                .filter(|k| !self.evicted.contains(k))
                .and_then(|k| self.key_owner.get(&k))
                .is_some_and(|u| self.role_of(u).is_some_and(Role::on_stage));
            if !wanted && self.proposed.insert(Proposed::Remove(m.leaf_index)) {
                match proposer.propose_remove(d, m.leaf_index) {
                    Ok(p) => proposals.push(p),
                    Err(e) => tracing::warn!(error = %e, "e2ee relay: cannot propose a removal"),
                }
            }
        }
        let adds: Vec<(DeviceId, Vec<u8>)> = self
            .candidates
            .iter()
            .filter(|(_, c)| c.invitation.is_some() && d.leaf_of(&c.key).is_none())
            .map(|(dev, c)| (dev.clone(), c.key_package.clone()))
            .collect();
        for (device, kp) in adds {
            if self.proposed.insert(Proposed::Add(device)) {
                match proposer.propose_add(d, &kp) {
                    Ok(p) => proposals.push(p),
                    Err(e) => tracing::warn!(error = %e, "e2ee relay: cannot propose an add"),
                }
            }
        }
        for p in proposals {
            self.post(room_id, None, p);
        }
    }

    /// Orders one handshake and fans it out to the stage group's devices
    /// (before and after it: a removed member sees its removal, an added one
    /// the messages after its Add). Returns what was accepted.
    fn post(
        &mut self,
        room_id: &RoomId,
        from: Option<&ConnInfo>,
        bytes: Vec<u8>,
    ) -> Option<Result<sotto_delivery::Accepted, RelayError>> {
        let d = self.delivery.as_mut()?;
        let before: HashSet<Vec<u8>> = d.members().into_iter().map(|m| m.signature_key).collect();
        let accepted = match d.handle_handshake(&bytes) {
            Ok(a) => a,
            Err(e) => {
                if from.is_none() {
                    tracing::warn!(error = %e, "e2ee relay: own proposal refused");
                }
                return Some(Err(delivery_error(e)));
            }
        };
        let after: HashSet<Vec<u8>> = d.members().into_iter().map(|m| m.signature_key).collect();
        let message = encode_payload(&bytes);
        let peer = from.map(ConnInfo::peer);
        let sender = from.map(|c| c.id);
        let mut to = self.conns_of_keys(before.union(&after).map(Vec::as_slice));
        to.retain(|c| Some(*c) != sender);
        for c in to {
            self.send(
                c,
                E2eeDown::Handshake {
                    seq: accepted.seq,
                    message: message.clone(),
                    from: peer.clone(),
                },
                room_id,
            );
        }
        Some(Ok(accepted))
    }

    /// Picks the key distributor (and committer): a device in the stage
    /// group with an open channel, the host first, then moderators, then
    /// speakers, each in order of arrival. Tells the old and the new one; the
    /// new one gets the listeners' join requests and pending invitations.
    fn elect(&mut self, room_id: &RoomId) {
        let best = self
            .stage_conns()
            .into_iter()
            .filter_map(|id| {
                let role = self.role_of(&self.conns.get(&id)?.info.user)?;
                role.on_stage().then_some((rank(role), id))
            })
            .min()
            .map(|(_, id)| id);
        if best == self.distributor {
            return;
        }
        if let Some(old) = self.distributor {
            self.send(old, E2eeDown::Distributor { active: false }, room_id);
        }
        self.distributor = best;
        let Some(new) = best else { return };
        self.send(new, E2eeDown::Distributor { active: true }, room_id);
        for (_, (inv, from)) in self
            .candidates
            .values()
            .filter_map(|c| c.invitation.as_ref().map(|i| (c, i)))
        {
            self.send(
                new,
                E2eeDown::StageInvitation {
                    invitation: encode_payload(inv),
                    from: from.clone(),
                },
                room_id,
            );
        }
        for ban in &self.bans {
            self.send(new, E2eeDown::Ban { ban: ban.clone() }, room_id);
        }
        for held in self.join_requests.values() {
            self.send(new, held.message(), room_id);
        }
    }

    fn apply(
        &mut self,
        proposer: &ServerProposer,
        room_id: &RoomId,
        conn: &ConnInfo,
        msg: E2eeUp,
        grants: Vec<SignedAccess>,
    ) -> Result<(), RelayError> {
        let max = sotto_proto::channel::MAX_MESSAGE_BYTES;
        match msg {
            E2eeUp::Hello {} => Ok(()),
            E2eeUp::CreateGroup {
                group_info,
                ratchet_tree,
                binding,
            } => {
                let gi = decode(&group_info, max)?;
                let tree = decode(&ratchet_tree, max)?;
                let binding = GroupBinding {
                    binding: encode_payload(&decode(&binding, MAX_SMALL_BLOB)?),
                    from: conn.peer(),
                };
                let d = RoomDelivery::create(&gi, &tree).map_err(delivery_error)?;
                let members = d.members();
                if members.len() != 1 || members[0].signature_key != conn.key.as_bytes() {
                    return Err(err(
                        ErrorCode::E2eeInvalid,
                        "a new stage group must hold exactly the host's device",
                    ));
                }
                self.delivery = Some(d);
                self.binding = Some(binding.clone());
                self.dirty = true;
                self.key_owner
                    .insert(*conn.key.as_bytes(), conn.user.clone());
                self.proposed.clear();
                self.proposed_epoch = 0;
                self.distributor = None;
                // Everyone learns the new binding (listeners keep it for when
                // they are invited); stage members already here join the new
                // group, first or replacement, if the binding verifies.
                {
                    let others = self.conns_where(|c| c.id != conn.id);
                    for c in others {
                        self.send(
                            c,
                            E2eeDown::GroupReset {
                                group: binding.clone(),
                            },
                            room_id,
                        );
                    }
                }
                self.reconcile(proposer, room_id);
                self.elect(room_id);
                Ok(())
            }
            E2eeUp::KeyPackage { key_package } => {
                let kp = decode(&key_package, max)?;
                if self.delivery.is_none() {
                    return Err(err(
                        ErrorCode::E2eeNoGroup,
                        "the room has no stage group yet",
                    ));
                }
                let key = self
                    .key_packages
                    .upload(conn.device.as_str(), &kp)
                    .map_err(delivery_error)?;
                self.evicted.remove(conn.key.as_bytes());
                // Kept per candidate below (proposals may need it again).
                let _ = self.key_packages.take(conn.device.as_str());
                if key != conn.key.as_bytes() {
                    return Err(err(
                        ErrorCode::E2eeInvalid,
                        "the KeyPackage's signature key is not this device's registered key",
                    ));
                }
                self.key_owner
                    .insert(*conn.key.as_bytes(), conn.user.clone());
                let invitation = self
                    .candidates
                    .remove(&conn.device)
                    .and_then(|c| c.invitation);
                let invited = invitation.is_some();
                self.candidates.insert(
                    conn.device.clone(),
                    Candidate {
                        user: conn.user.clone(),
                        key: *conn.key.as_bytes(),
                        key_package: kp,
                        invitation,
                    },
                );
                self.proposed.remove(&Proposed::Add(conn.device.clone()));
                let mut inviters = self.stage_conns();
                inviters.retain(|id| {
                    *id != conn.id
                        && self
                            .conns
                            .get(id)
                            .and_then(|r| self.role_of(&r.info.user))
                            .is_some_and(Role::moderates)
                });
                for c in inviters {
                    self.send(
                        c,
                        E2eeDown::Candidate {
                            candidate: conn.peer(),
                        },
                        room_id,
                    );
                }
                if invited {
                    self.reconcile(proposer, room_id);
                }
                Ok(())
            }
            E2eeUp::StageInvitation {
                device_id,
                invitation,
            } => {
                let inv = decode(&invitation, MAX_SMALL_BLOB)?;
                let cand = self.candidates.get_mut(&device_id).ok_or_else(|| {
                    err(
                        ErrorCode::TargetNotInRoom,
                        "no stage candidate with that device",
                    )
                })?;
                cand.invitation = Some((inv.clone(), conn.peer()));
                let mut to = self.stage_conns();
                to.retain(|id| *id != conn.id);
                for c in to {
                    self.send(
                        c,
                        E2eeDown::StageInvitation {
                            invitation: encode_payload(&inv),
                            from: conn.peer(),
                        },
                        room_id,
                    );
                }
                self.reconcile(proposer, room_id);
                Ok(())
            }
            E2eeUp::Handshake { message, id } => {
                // The answer to a handshake, refusal included, echoes its id
                // so the sender matches it to its request (a generic error
                // is never taken for the refusal of a commit).
                let accepted = decode(&message, max).and_then(|bytes| {
                    self.post(room_id, Some(conn), bytes)
                        .unwrap_or_else(|| Err(err(ErrorCode::E2eeNoGroup, "no stage group")))
                });
                let accepted = match accepted {
                    Ok(a) => a,
                    Err((code, message)) => {
                        self.send(conn.id, E2eeDown::Rejected { id, code, message }, room_id);
                        return Ok(());
                    }
                };
                let commit = accepted.kind == AcceptedKind::Commit;
                self.send(
                    conn.id,
                    E2eeDown::Accepted {
                        seq: accepted.seq,
                        epoch: accepted.epoch,
                        commit,
                        id,
                    },
                    room_id,
                );
                if commit {
                    self.reconcile(proposer, room_id);
                    self.elect(room_id);
                }
                Ok(())
            }
            E2eeUp::GroupInfo { group_info } => {
                let gi = decode(&group_info, max)?;
                let d = self
                    .delivery
                    .as_mut()
                    .ok_or_else(|| err(ErrorCode::E2eeNoGroup, "no stage group"))?;
                d.set_group_info(&gi).map_err(delivery_error)?;
                self.dirty = true;
                Ok(())
            }
            E2eeUp::Welcome { welcome } => {
                let w = decode(&welcome, max)?;
                let d = self
                    .delivery
                    .as_ref()
                    .ok_or_else(|| err(ErrorCode::E2eeNoGroup, "no stage group"))?;
                let tree = d.ratchet_tree().map_err(delivery_error)?;
                let joined: Vec<DeviceId> = self
                    .candidates
                    .iter()
                    .filter(|(_, c)| d.leaf_of(&c.key).is_some())
                    .map(|(dev, _)| dev.clone())
                    .collect();
                for device in joined {
                    self.candidates.remove(&device);
                    let to = self.conns_of_device(&device);
                    for c in to {
                        self.send(
                            c,
                            E2eeDown::Welcome {
                                welcome: encode_payload(&w),
                                ratchet_tree: encode_payload(&tree),
                            },
                            room_id,
                        );
                    }
                }
                Ok(())
            }
            E2eeUp::JoinRequest { request } => {
                let held = JoinRequestHeld {
                    request: decode(&request, MAX_SMALL_BLOB)?,
                    from: conn.peer(),
                    grants,
                };
                let device = conn.device.clone();
                self.join_requests.insert(device.clone(), held);
                let now = std::time::Instant::now();
                match self.join_forwarded.get(&device) {
                    Some(at) if now.duration_since(*at) < JOIN_FORWARD_GAP => {
                        // Too soon after the last one: the latest request
                        // goes out when the gap has passed (one timer).
                        let after = JOIN_FORWARD_GAP - now.duration_since(*at);
                        if self.join_deferred.insert(device.clone()) {
                            self.join_timers.push((device, after));
                        }
                    }
                    _ => self.forward_join(room_id, &device, now),
                }
                Ok(())
            }
            E2eeUp::Sealed {
                statement,
                deliveries,
            } => {
                let st = decode(&statement, MAX_SMALL_BLOB)?;
                let mut checked = Vec::with_capacity(deliveries.len());
                for SealedFor { to, sealed } in deliveries {
                    checked.push((to, decode(&sealed, MAX_SEALED_DELIVERY_LEN)?));
                }
                let statement = encode_payload(&st);
                for (to, sealed) in checked {
                    for c in self.conns_of_device(&to) {
                        self.send(
                            c,
                            E2eeDown::Sealed {
                                sealed: encode_payload(&sealed),
                                statement: statement.clone(),
                                from: conn.peer(),
                            },
                            room_id,
                        );
                    }
                }
                Ok(())
            }
            E2eeUp::Roster { roster } => {
                let r = decode(&roster, max)?;
                match self.roster_store.commit(&conn.id.to_be_bytes(), &r) {
                    Ok(_) => {}
                    Err(RosterStoreError::Resync) => {
                        // Changes on a base this relay does not hold (it
                        // restarted, or chunks were lost): ask for all.
                        self.send(conn.id, E2eeDown::RosterResync {}, room_id);
                        return Ok(());
                    }
                    Err(RosterStoreError::Malformed(e)) => {
                        return Err(err(ErrorCode::E2eeInvalid, format!("roster: {e}")));
                    }
                }
                // Encoded once for the whole room, not once per recipient.
                let (text, from) = (encode_payload(&r), conn.peer());
                for c in self.conns_where(|c| c.id != conn.id) {
                    self.send(
                        c,
                        E2eeDown::Roster {
                            roster: text.clone(),
                            from: from.clone(),
                        },
                        room_id,
                    );
                }
                self.roster = Some((r, from));
                Ok(())
            }
            E2eeUp::RosterLeaves { leaves } => {
                let chunk = decode(&leaves, max)?;
                self.roster_store
                    .stage(&conn.id.to_be_bytes(), &chunk)
                    .map_err(|e| err(ErrorCode::E2eeInvalid, format!("roster leaves: {e}")))
            }
            E2eeUp::RosterProof { fingerprints } => {
                let request = decode(&fingerprints, MAX_SMALL_BLOB)?;
                let proofs = self
                    .roster_store
                    .prove(&request)
                    .map_err(|e| err(ErrorCode::E2eeInvalid, format!("roster proof: {e}")))?
                    .ok_or_else(|| err(ErrorCode::E2eeNoGroup, "no roster yet"))?;
                self.send(
                    conn.id,
                    E2eeDown::RosterProofs {
                        proofs: encode_payload(&proofs),
                    },
                    room_id,
                );
                Ok(())
            }
        }
    }
}

/// Makes (first start) or reads the external-sender signing key seed in
/// `dir`: 32 random bytes, in a file only the server's user can read.
fn load_or_make_key(dir: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    use anyhow::Context as _;
    let path = dir.join("external-sender.key");
    if let Ok(bytes) = std::fs::read(&path) {
        return <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| anyhow::anyhow!("{} is not a 32-byte key", path.display()));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let seed = crate::http::random_bytes::<32>();
    let tmp = dir.join("external-sender.key.tmp");
    {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut f = options
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(&seed)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(seed)
}

/// Writes the relay's saved state in the order the relay queued it.
async fn save_task(store: Store, mut rx: mpsc::UnboundedReceiver<Persist>) {
    while let Some(op) = rx.recv().await {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let result = match &op {
            Persist::Save(row) => store.save_stage_group(row, now).await,
            Persist::Delete(room) => store.delete_stage_group(room).await,
        };
        if let Err(e) = result {
            // A restart before the next change resumes an older state; the
            // members then rebase or the host makes a new group.
            tracing::warn!(
                code = e.code.as_str(),
                "e2ee relay: saving group state failed"
            );
        }
    }
}

/// Keeps the relay's view of every room in step with the bus (roles decide
/// who may send what, who is proposed for removal, who distributes keys).
pub async fn follow_rooms(
    mut events: tokio::sync::broadcast::Receiver<Arc<crate::bus::RoomEvent>>,
    relay: E2eeRelay,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(event) => {
                let relay = relay.clone();
                let job = tokio::task::spawn_blocking(move || {
                    relay.apply_view(&event.view, event.delta.as_ref())
                });
                if let Err(e) = job.await {
                    tracing::error!(error = %e, "e2ee relay: applying a room change failed");
                }
            }
            // Missed events: permission checks re-read the room on refusal,
            // and the next change of each room re-applies its state.
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        }
    }
}
