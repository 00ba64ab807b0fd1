//! A device's end-to-end encryption in one room, sans-IO: feed it the
//! session channel's messages ([`RoomCrypto::handle`]) and its timers
//! ([`RoomCrypto::handle_timeout`]); send what they return; encrypt and
//! decrypt Opus frames with it. No sockets, no clock, no global RNG.
//!
//! The device's role comes from `RoomState`:
//! - **host**: creates the stage group (MLS, `sotto-e2ee::stage`) when the
//!   server's `info` arrives;
//! - **on stage**: uploads a KeyPackage, waits for a Welcome (after a host or
//!   moderator signed a stage invitation and the distributor committed the
//!   server's Add), then sends with the stage's keys;
//! - **listener**: sends a signed join request (fresh HPKE key) and installs
//!   the sealed audience key a stage member vouched for.
//!
//! The server elects one stage device as **key distributor and committer**
//! (`distributor` message): it commits the server's proposals, admits
//! listeners, rotates (every stage epoch change, at once when an admitted
//! listener leaves or is banned — but never sooner than
//! [`MIN_ROTATION_GAP_SWITCHES`] switch delays after the previous rotation
//! — and every 60 s) and signs the roster.
//!
//! Each role is one state type (`Part`): `Listener` (audience keys),
//! `Candidate` (waiting for a Welcome, still hearing as a listener),
//! `Member` (stage keys; the listener keys for a moment after joining) and
//! `Distributor` (a member plus what it takes to admit, rotate and sign).
//! A role change is a move from one to the other; nothing else says which
//! role this device plays.
//!
//! ## Against a server that acts
//! Every key the server relays comes with the account's device chain
//! (`sotto_proto::chain`), checked against this device's [`TrustStore`]:
//! a key the chain does not hold is refused (admission, invitations, key
//! statements, rosters). A candidate joins only the group the room's host
//! bound with a signature ([`sotto_e2ee::binding`]); a reset needs a newer
//! binding. The distributor removes stage-group members that do not belong
//! on the stage itself (it does not wait for the server's Removes), drops an
//! uninvited Add instead of blocking the batch, times out a commit the
//! server never answers, and matches answers to requests by id. A speaker
//! stops sending on a key older than the rotation period plus a grace. One
//! replay filter covers every frame this device decrypts. What failed is
//! reported as an [`Alert`] ([`RoomCrypto::take_alerts`]).
//!
//! Invariants: `now_ms` is Unix time in milliseconds (join requests and
//! invitations carry expiries other devices check). Nothing the server or a
//! peer sends panics; errors are typed and leave the state usable. After an
//! `Err`, messages produced before the error stay queued: `poll_timeout`
//! then returns `Some(0)` and `handle_timeout` hands them out.

use std::collections::{HashMap, HashSet};

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng as _};
use sotto_e2ee::audience::{
    Distributor, JoinRequest, Listener, RoomKind as E2eeRoomKind, RosterVersion, StageMap,
    VerifiedRoster,
};
use sotto_e2ee::binding::{VerifiedBinding, sign_binding};
use sotto_e2ee::error::{
    AdmitError, BindingError, FrameError, InvitationError, JoinRequestError, KeyStatementError,
    OpenError, RosterError, StageError,
};
use sotto_e2ee::frame::parse_header;
use sotto_e2ee::identity::{DeviceIdentity, Fingerprint, IdentityKey};
use sotto_e2ee::invitation::{VerifiedInvitation, create_invitation};
use sotto_e2ee::keys::KeyGeneration;
use sotto_e2ee::roster::{ROSTER_PROOF_BATCH, encode_proof_request};
use sotto_e2ee::stage::{
    CommitOut, ExternalSenderInfo, StageCandidate, StageConfig, StageEvent, StageMember,
};
use sotto_proto::access::{AccessError, AccessStatement, AccessVerb};
use sotto_proto::chain::{ChainError, VerifiedChain};
use sotto_proto::channel::{
    ClientMessage, E2eeDown, E2eePeer, E2eeUp, GroupBinding, SealedFor, ServerMessage,
    SignedAccess, decode_payload, encode_payload,
};
use sotto_proto::room::{MemberChange, Role, RoomDelta, RoomKind, RoomView};
use sotto_proto::{DeviceId, ErrorCode, RoomId, UserId};

use crate::alert::Alert;
use crate::replay::ReplayFilter;
use crate::trust::{Trust, TrustStore};

pub use sotto_e2ee::audience::VerifiedRoster as Roster;
pub use sotto_e2ee::error::FrameError as FrameErrorKind;

/// How long a join request is valid (the distributor re-verifies stored
/// requests when it takes over, so listeners refresh well before).
const JOIN_REQUEST_TTL_MS: u64 = 9 * 60 * 1000;
/// A listener sends a fresh join request this often.
const JOIN_REFRESH_MS: u64 = 4 * 60 * 1000;
/// How long a stage invitation this device signs is valid.
const INVITATION_TTL_MS: u64 = 10 * 60 * 1000;
/// How long the listener keys still decrypt after joining the stage.
const LISTENER_FALLBACK_MS: u64 = 5_000;
/// Rosters are re-signed at most this often after admissions...
const ROSTER_DELAY_MS: u64 = 1_000;
/// ... and this often once the audience is larger than
/// [`ROSTER_LARGE_AUDIENCE`]: every listener receives and verifies each
/// roster (~870 B), so during an admission storm of 10,000 one a second
/// would be 8.7 MB a second of server egress and a signature check a
/// second on every listener's device. A new listener is listed (and
/// counted) up to this much later; departures still re-sign at once.
const ROSTER_DELAY_LARGE_MS: u64 = 5_000;
const ROSTER_LARGE_AUDIENCE: usize = 1_000;
/// Sealed deliveries per `sealed` message (stays under 64 KiB of JSON).
const SEALED_BATCH: usize = 200;
/// The distributor seals the next key ahead to this many listeners at a
/// time, this often (~6 ms of one core per 100 ms): 10,000 listeners are
/// sealed ahead within ~16 s of a rotation, well inside its period.
const PRESEAL_BATCH: usize = 64;
const PRESEAL_EVERY_MS: u64 = 100;
/// Stage maps a listener keeps (epochs whose frames may still arrive).
const STAGE_MAPS_KEPT: usize = 3;
/// A commit the server has not answered after this long is dropped and
/// redone: withholding an answer must not stop rotations.
pub const COMMIT_TIMEOUT_MS: u64 = 5_000;
/// A key may be this much older than the rotation period before a speaker
/// stops sending on it (and a listener is told rotations stalled).
pub const STALE_KEY_GRACE_MS: u64 = 15_000;
/// A roster is expected at least every rotation period; after the period
/// plus this much without one, the participant is told.
pub const STALE_ROSTER_GRACE_MS: u64 = 30_000;
/// Rotations for departures (leave, removal, ban, revoked device) are at
/// least this many stage switch delays apart; departures in between share
/// the next one. A speaker switches its send key a switch delay after a
/// rotation notice, and a newer notice before that pushes the switch back:
/// rotating faster than that would keep the speakers on the *old* key for
/// as long as listeners keep leaving (the leavers never cut off), and the
/// 2-bit KID tag would make listeners drop that key while it is still in
/// use (every stable listener loses audio). Two switch delays leave one for
/// the notice to reach the other speakers and the frames in flight to land.
pub const MIN_ROTATION_GAP_SWITCHES: u64 = 2;
/// A join request from an account the distributor's room state does not
/// show yet is kept this long for the state to catch up (the server's room
/// state and its E2EE relay are separate streams: under load a request can
/// come first) ...
const EARLY_JOIN_TTL_MS: u64 = 30_000;
/// ... and at most this many are kept (the oldest goes).
const MAX_EARLY_JOINS: usize = 256;

/// Why an E2EE step failed. The state machine stays usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("stage group: {0}")]
    Stage(#[from] StageError),
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    #[error("join request: {0}")]
    JoinRequest(#[from] JoinRequestError),
    #[error("admission: {0}")]
    Admit(#[from] AdmitError),
    #[error("sealed key: {0}")]
    Open(#[from] OpenError),
    #[error("key statement: {0}")]
    Statement(#[from] KeyStatementError),
    #[error("roster: {0}")]
    Roster(#[from] RosterError),
    #[error("stage invitation: {0}")]
    Invitation(#[from] InvitationError),
    /// A relayed field is not base64url or a key is not a valid key.
    #[error("malformed relay message: {0}")]
    Malformed(&'static str),
    /// The relay message names a sender the room does not show on stage.
    #[error("sender is not on the stage")]
    NotOnStage,
    /// No key to decrypt with yet.
    #[error("no receive key yet")]
    NoKey,
    /// The server refused something this device sent.
    #[error("server refused: {code}: {message}")]
    Refused { code: ErrorCode, message: String },
    /// A device chain did not verify, or changed root, or rolled back.
    #[error("device chain: {0}")]
    Chain(#[from] ChainError),
    /// The server presented a device key the account's chain does not hold.
    #[error("device key not in the account's device chain")]
    ForgedDevice,
    /// A stage group binding did not verify or is older than the current.
    #[error("group binding: {0}")]
    Binding(#[from] BindingError),
    /// A group message before any verified binding of the room's group.
    #[error("no verified binding for the room's stage group")]
    Unbound,
    /// A roster for a key generation this device does not hold yet.
    #[error("roster for a key generation not received yet")]
    RosterAhead,
    /// An access statement (follow, allow, ban) did not verify.
    #[error("access statement: {0}")]
    Access(#[from] AccessError),
    /// An access statement verified but does not count: its signer is not
    /// a host or moderator of the room, or it is about another room, user
    /// or verb.
    #[error("access statement does not apply: {0}")]
    AccessDoesNotApply(&'static str),
}

/// When this device signs a stage invitation for a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvitePolicy {
    /// Only for users passed to [`RoomCrypto::invite_to_stage`] on this
    /// device: the server alone cannot put anyone on the stage.
    Explicit,
    /// For any user the room state shows on stage or invited to it: for a
    /// moderator whose invitations are sent by another process (e.g. the
    /// CLI). This trusts the server's word that a moderator invited them.
    FollowRoomState,
}

/// One key holder of the room, as [`RoomCrypto::roster_report`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterEntry {
    /// The account whose verified device chain holds the key (None: no
    /// chain this device verified holds it).
    pub user: Option<UserId>,
    /// How far this device trusts that account.
    pub trust: Option<Trust>,
    /// In the stage group (else an admitted listener).
    pub stage: bool,
}

/// Who can decrypt the room.
///
/// The signed roster is a count and a Merkle root; listeners are known one
/// proof at a time ([`RoomCrypto::check_roster`] asks the server for
/// proofs about the devices of the room's members). `entries` holds the
/// stage and the listeners proven on the roster. `hidden` is what the
/// proofs so far *show*: signed key holders that cannot be devices of
/// anyone in the room. Exact once every member device is checked
/// (`unchecked` 0: always so up to [`ROSTER_PROOF_SAMPLE`] devices); in
/// larger rooms each check proves a random sample of
/// [`ROSTER_PROOF_SAMPLE_LARGE`], so a server that swaps
/// a hidden listener for a shown one is caught with a probability that
/// grows with every check and every participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterReport {
    pub entries: Vec<RosterEntry>,
    /// Key holders that are no device of anyone in the room.
    pub hidden: usize,
    /// The version of the signed roster the listeners come from.
    pub roster_version: Option<RosterVersion>,
    /// How many listener keys the signed roster lists.
    pub listed: u32,
    /// Devices of the room's members not (yet) checked against it (a
    /// member whose chain is not learnt counts as one).
    pub unchecked: usize,
}

/// Rooms of up to this many member devices are checked in full against
/// each roster version.
pub const ROSTER_PROOF_SAMPLE: usize = 256;
/// Above that, each check proves a fresh random sample of this many (one
/// proof request, ~16 KB of answers at 10,000 listeners)...
pub const ROSTER_PROOF_SAMPLE_LARGE: usize = 32;
/// ... and a new roster starts a check at most this often, so that 10,000
/// participants checking cost the server a few MB/s, not a burst per
/// admission.
pub const ROSTER_RECHECK_MS: u64 = 60_000;

/// A listener's keys: the ring of its current join request, and the one
/// before it (its refresh is still in flight).
struct ListenerState {
    current: Listener,
    previous: Option<Listener>,
    refresh_at: u64,
}

/// This device's part in the room: one state type per role. What a role
/// holds is in its own type; there are no flags that say which fields mean
/// something now.
enum Part {
    /// No role yet: before the server's `info`, or not in the room.
    Waiting,
    /// In the audience: holds sealed audience keys.
    Listener(Box<ListenerState>),
    /// On stage, waiting for a Welcome into the bound stage group.
    Candidate(Box<CandidateState>),
    /// In the stage group: sends and receives with the stage's keys.
    Member(Box<MemberState>),
    /// The stage member the server elected to admit listeners, rotate the
    /// audience key, commit and sign the roster.
    Distributor(Box<MemberState>, Box<DistributorState>),
}

struct CandidateState {
    candidate: StageCandidate,
    /// Stage messages that arrived before the Welcome.
    buffered: Vec<Vec<u8>>,
    /// The listener keys it still hears with until it joins.
    listener: Option<Box<ListenerState>>,
    /// The server elected this device distributor: it becomes one on
    /// joining (the election is for the bound group: a reset clears it).
    elected: bool,
}

struct MemberState {
    stage: StageMember,
    pending_proposals: bool,
    in_flight: Option<InFlight>,
    buffered: Vec<Vec<u8>>,
    rebase: bool,
    /// The listener keys, kept for a moment after joining the stage group
    /// (frames in flight under the audience key), and until when.
    fallback: Option<(Box<ListenerState>, u64)>,
}

/// A commit sent and not answered yet.
struct InFlight {
    out: CommitOut,
    id: u32,
    sent_at: u64,
}

impl MemberState {
    fn new(
        stage: StageMember,
        buffered: Vec<Vec<u8>>,
        fallback: Option<(Box<ListenerState>, u64)>,
    ) -> Box<Self> {
        Box::new(MemberState {
            stage,
            pending_proposals: false,
            in_flight: None,
            buffered,
            rebase: false,
            fallback,
        })
    }
}

/// A join request that came before the room state showing its sender.
struct EarlyJoin {
    request: Vec<u8>,
    from: E2eePeer,
    grants: Vec<SignedAccess>,
    at: u64,
}

struct DistributorState {
    dist: Distributor,
    admitted: HashMap<Fingerprint, (UserId, DeviceId)>,
    next_rotation_at: u64,
    roster_at: Option<u64>,
    /// When this device last rotated.
    rotated_at: Option<u64>,
    /// A departure waits for this rotation (see [`MIN_ROTATION_GAP_SWITCHES`]).
    departure_rotation_at: Option<u64>,
    /// Join requests waiting for the room state to show their sender.
    early: Vec<EarlyJoin>,
    /// Whether listeners are left to seal the next key to ahead of its
    /// rotation ([`Distributor::preseal`]), and when to seal the next few.
    preseal_more: bool,
    preseal_at: u64,
}

impl Part {
    /// The stage-group state, as member or distributor.
    fn member(&self) -> Option<&MemberState> {
        match self {
            Part::Member(m) | Part::Distributor(m, _) => Some(m),
            _ => None,
        }
    }

    fn member_mut(&mut self) -> Option<&mut MemberState> {
        match self {
            Part::Member(m) | Part::Distributor(m, _) => Some(m),
            _ => None,
        }
    }

    fn distributor(&self) -> Option<&DistributorState> {
        match self {
            Part::Distributor(_, d) => Some(d),
            _ => None,
        }
    }

    /// The listener keys this part holds (a listener's, a candidate's
    /// still, a new member's for a moment).
    fn listener(&self) -> Option<&ListenerState> {
        match self {
            Part::Listener(l) => Some(l),
            Part::Candidate(c) => c.listener.as_deref(),
            Part::Member(m) | Part::Distributor(m, _) => m.fallback.as_ref().map(|(l, _)| &**l),
            Part::Waiting => None,
        }
    }

    fn listener_mut(&mut self) -> Option<&mut ListenerState> {
        match self {
            Part::Listener(l) => Some(l),
            Part::Candidate(c) => c.listener.as_deref_mut(),
            Part::Member(m) | Part::Distributor(m, _) => m.fallback.as_mut().map(|(l, _)| &mut **l),
            Part::Waiting => None,
        }
    }

    /// Leaves the stage part (if any), keeping the listener keys.
    fn take_listener(&mut self) -> Option<Box<ListenerState>> {
        match std::mem::replace(self, Part::Waiting) {
            Part::Listener(l) => Some(l),
            Part::Candidate(c) => c.listener,
            Part::Member(m) | Part::Distributor(m, _) => m.fallback.map(|(l, _)| l),
            Part::Waiting => None,
        }
    }

    /// Stops distributing (stays a member).
    fn demote(&mut self) {
        if let Part::Distributor(..) = self
            && let Part::Distributor(m, _) = std::mem::replace(self, Part::Waiting)
        {
            *self = Part::Member(m);
        }
    }
}

/// One device's E2EE in one room.
pub struct RoomCrypto {
    room_id: RoomId,
    trust: TrustStore,
    /// Chains verified in this session, by account, and their wire text.
    chains: HashMap<UserId, VerifiedChain>,
    chain_text: HashMap<UserId, String>,
    binding: Option<VerifiedBinding>,
    replay: ReplayFilter,
    alerts: Vec<Alert>,
    reported: HashSet<String>,
    next_id: u32,
    /// The generation this device last sent or received with, and since when.
    key_seen: Option<(KeyGeneration, u64)>,
    last_roster_at: u64,
    room: Vec<u8>,
    me: UserId,
    device: DeviceId,
    seed: zeroize::Zeroizing<[u8; 32]>,
    identity: DeviceIdentity,
    /// The room as last shown, but for its members: only those on stage
    /// or invited to it (a distributor's view holds every listener; see
    /// [`lean_view`]). Everyone shown is in `roles`.
    view: RoomView,
    /// Each member of the room as last shown, and their role: lookups
    /// that do not scan the room, kept up to date without rebuilding.
    roles: HashMap<UserId, Role>,
    /// How many of `roles` are listeners: with the room's audience count,
    /// how many listeners it counts but did not list
    /// ([`Self::audience_unshown`]).
    listeners_shown: u32,
    config: StageConfig,
    rng: ChaCha20Rng,
    server: Option<ExternalSenderInfo>,
    part: Part,
    policy: InvitePolicy,
    intents: HashSet<UserId>,
    /// Stage invitations received, with the inviter's chain-verified key.
    invitations: Vec<(Vec<u8>, E2eePeer, IdentityKey)>,
    roster: Option<VerifiedRoster>,
    roster_seen: RosterVersion,
    /// Proofs about member devices against `roster`: listed or not, and
    /// those asked and not yet answered. Both cleared with each roster.
    proven: HashMap<Fingerprint, bool>,
    asked: HashSet<Fingerprint>,
    /// A driver asked for roster checks: new rosters and proofs re-run
    /// them.
    checking_roster: bool,
    /// When a new roster last started a check (large rooms).
    roster_checked_at: Option<u64>,
    /// The stage maps of the last few epochs, from verified rosters (for a
    /// listener: who holds which leaf), and the accounts they name, by
    /// (epoch, leaf): rebuilt when a map or a chain comes, looked up per frame.
    stage_maps: Vec<StageMap>,
    senders: HashMap<(u64, u32), UserId>,
    /// Accounts a host or moderator banned (verified statements).
    bans: HashSet<UserId>,
    left: bool,
    /// A new channel said hello: the next `info` resumes this device's part
    /// rather than starting one.
    resuming: bool,
    last_now: u64,
    out: Vec<ClientMessage>,
}

impl std::fmt::Debug for RoomCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomCrypto")
            .field("room", &self.room_id.short())
            .field("role", &self.my_role())
            .field("distributor", &self.is_distributor())
            .finish_non_exhaustive()
    }
}

fn b64(text: &str) -> Result<Vec<u8>, CryptoError> {
    decode_payload(text).map_err(|_| CryptoError::Malformed("not base64url"))
}

impl RoomCrypto {
    /// E2EE for `me`'s device `device` (whose Ed25519 seed is `seed`) in
    /// `room`, trusting what `trust` pins. Returns the `hello` to send; the
    /// rest follows the server's answers.
    pub fn new(
        seed: [u8; 32],
        me: &UserId,
        device: &DeviceId,
        room: &RoomView,
        trust: TrustStore,
        now_ms: u64,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<(RoomCrypto, Vec<ClientMessage>), CryptoError> {
        let seed = zeroize::Zeroizing::new(seed);
        let identity = DeviceIdentity::from_seed(*seed, me.as_str().as_bytes(), device.as_str());
        let rng = ChaCha20Rng::from_rng(rng).map_err(|_| CryptoError::Malformed("rng"))?;
        let mut rc = RoomCrypto {
            room_id: room.id.clone(),
            trust,
            chains: HashMap::new(),
            chain_text: HashMap::new(),
            binding: None,
            replay: ReplayFilter::default(),
            alerts: Vec::new(),
            reported: HashSet::new(),
            next_id: 1,
            key_seen: None,
            last_roster_at: now_ms,
            room: room.id.as_str().as_bytes().to_vec(),
            me: me.clone(),
            device: device.clone(),
            seed,
            identity,
            view: lean_view(room),
            roles: role_index(room),
            listeners_shown: room.listeners_shown(),
            config: StageConfig::default(),
            rng,
            server: None,
            part: Part::Waiting,
            policy: InvitePolicy::Explicit,
            intents: HashSet::new(),
            invitations: Vec::new(),
            roster: None,
            roster_seen: RosterVersion::default(),
            proven: HashMap::new(),
            asked: HashSet::new(),
            checking_roster: false,
            roster_checked_at: None,
            stage_maps: Vec::new(),
            senders: HashMap::new(),
            bans: HashSet::new(),
            left: false,
            resuming: false,
            last_now: now_ms,
            out: Vec::new(),
        };
        rc.up(E2eeUp::Hello {});
        let out = rc_take(&mut rc);
        Ok((rc, out))
    }

    /// Test-only (feature `audit`): every secret this device holds for the
    /// room right now.
    #[cfg(feature = "audit")]
    pub fn audit_secrets(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if let Some(l) = self.part.listener() {
            out.extend(l.current.audit_secrets());
            if let Some(p) = &l.previous {
                out.extend(p.audit_secrets());
            }
        }
        if let Some(m) = self.part.member() {
            out.extend(m.stage.audit_secrets());
        }
        out
    }

    /// The session channel was lost and a new one is open (the server
    /// restarted, or the network dropped): say hello again. The server's
    /// answer resumes what this device was doing, keeping its keys: a
    /// listener asks for the audience key again (the old one keeps
    /// decrypting meanwhile), a candidate uploads its KeyPackage again, a
    /// stage member stays in its group if the server still has it (a host
    /// whose server lost the group makes a new one), and the distributor
    /// publishes its roster again.
    pub fn reconnected(&mut self, now_ms: u64) -> Vec<ClientMessage> {
        self.last_now = self.last_now.max(now_ms);
        self.resuming = true;
        self.up(E2eeUp::Hello {});
        rc_take(self)
    }

    /// Choose when this device signs stage invitations (default
    /// [`InvitePolicy::Explicit`]).
    pub fn set_invite_policy(&mut self, policy: InvitePolicy) {
        self.policy = policy;
    }

    /// This device (a host or moderator) invited `user` to the stage: sign a
    /// stage invitation when their device asks to join the stage group.
    pub fn invite_to_stage(&mut self, user: &UserId) {
        self.intents.insert(user.clone());
    }

    /// A server message on the channel.
    pub fn handle(
        &mut self,
        now_ms: u64,
        msg: &ServerMessage,
    ) -> Result<Vec<ClientMessage>, CryptoError> {
        let result = self.handle_inner(now_ms, msg);
        self.flush(now_ms);
        result.map(|()| rc_take(self))
    }

    /// When [`Self::handle_timeout`] is next due (Unix ms).
    pub fn poll_timeout(&self) -> Option<u64> {
        if !self.out.is_empty() {
            return Some(0);
        }
        let mut t: Vec<u64> = Vec::new();
        if let Some(m) = self.part.member() {
            t.extend(m.stage.poll_timeout());
            t.extend(m.in_flight.as_ref().map(|f| f.sent_at + COMMIT_TIMEOUT_MS));
            t.extend(m.fallback.as_ref().map(|(_, until)| *until));
        }
        if let Some(d) = self.part.distributor() {
            t.push(d.next_rotation_at);
            t.extend(d.roster_at);
            // Due once no commit is in flight (its epoch change rotates).
            if self.part.member().is_some_and(|m| m.in_flight.is_none()) {
                t.extend(d.departure_rotation_at);
                if d.preseal_more {
                    t.push(d.preseal_at);
                }
            }
        }
        if let Part::Listener(l) = &self.part
            && !self.left
        {
            t.push(l.refresh_at);
        }
        if !self.left {
            // Freshness checks (stale keys, withheld rosters) once a second.
            t.push(self.last_now + 1_000);
        }
        t.into_iter().min()
    }

    /// Timers: send-key switches, key expiry, rotations, rosters, join
    /// request refreshes.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Vec<ClientMessage> {
        if let Some(m) = self.part.member_mut()
            && let Err(e) = m.stage.handle_timeout(now_ms)
        {
            // A send key that cannot be built: keep the old one; say so once.
            self.alert(Alert::ForeignGroup {
                why: format!("send key: {e}"),
            });
        }
        if let Err(e) = self.commit_timeout(now_ms) {
            self.alert(Alert::ForeignGroup {
                why: format!("after a commit timed out: {e}"),
            });
        }
        self.check_freshness(now_ms);
        if let Some(m) = self.part.member_mut()
            && m.fallback
                .as_ref()
                .is_some_and(|(_, until)| *until <= now_ms)
        {
            m.fallback = None;
        }
        if !self.left {
            let refresh = matches!(&self.part, Part::Listener(l) if l.refresh_at <= now_ms)
                && self.my_role() == Some(Role::Listener);
            if refresh && let Err(e) = self.join_as_listener(now_ms) {
                self.alert(Alert::ForeignGroup {
                    why: format!("join request: {e}"),
                });
            }
        }
        self.flush(now_ms);
        rc_take(self)
    }

    /// Encrypt one Opus frame (None until this device has a send key, and
    /// None again when its key is older than the rotation period plus
    /// [`STALE_KEY_GRACE_MS`]: a server that stalls rotations does not get
    /// audio under an old key).
    pub fn encrypt(&mut self, now_ms: u64, opus: &[u8]) -> Option<Vec<u8>> {
        let m = self.part.member_mut()?;
        if self.left {
            return None;
        }
        let frame = m.stage.encrypt_frame(now_ms, opus).ok()?;
        let generation = m.stage.sending_generation()?;
        let since = match self.key_seen {
            Some((g, t)) if g == generation => t,
            _ => {
                self.key_seen = Some((generation, now_ms));
                now_ms
            }
        };
        let age = now_ms.saturating_sub(since);
        if age > self.config.rotation_period_ms + STALE_KEY_GRACE_MS {
            self.alert(Alert::StaleKey { age_ms: age });
            return None;
        }
        Some(frame)
    }

    /// Decrypt a frame from any speaker. Each (key id, counter) decrypts
    /// once, whichever of this device's key rings holds the key.
    pub fn decrypt(&mut self, now_ms: u64, frame: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (kid, ctr, _) = parse_header(frame)?;
        let (plain, generation) = self.decrypt_any(now_ms, kid, frame)?;
        // KIDs repeat across generations (a 2-bit tag): the filter keys on
        // the generation that authenticated the frame.
        if !self
            .replay
            .accept((generation.epoch, generation.rotation, kid), ctr)
        {
            return Err(FrameError::Replayed { kid, ctr }.into());
        }
        Ok(plain)
    }

    fn decrypt_any(
        &mut self,
        now_ms: u64,
        kid: u64,
        frame: &[u8],
    ) -> Result<(Vec<u8>, KeyGeneration), CryptoError> {
        let mut first: Option<FrameError> = None;
        let unknown = CryptoError::Malformed("no generation for a decrypted frame");
        if let Some(m) = self.part.member_mut() {
            match m.stage.decrypt_frame(now_ms, frame) {
                Ok(p) => return Ok((p, m.stage.frame_generation(kid).ok_or(unknown)?)),
                Err(e) => first = Some(e),
            }
        }
        if let Some(l) = self.part.listener_mut() {
            match l.current.decrypt(now_ms, frame) {
                Ok(p) => return Ok((p, l.current.frame_generation(kid).ok_or(unknown)?)),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
            if let Some(prev) = l.previous.as_mut()
                && let Ok(p) = prev.decrypt(now_ms, frame)
            {
                return Ok((p, prev.frame_generation(kid).ok_or(unknown)?));
            }
        }
        Err(first.map_or(CryptoError::NoKey, CryptoError::Frame))
    }

    /// The account this device belongs to.
    pub fn me(&self) -> &UserId {
        &self.me
    }

    /// The room this state is for.
    pub fn room_id(&self) -> &RoomId {
        &self.room_id
    }

    /// The failed checks since the last call (each reported once).
    pub fn take_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.alerts)
    }

    /// What this device trusts (pins moved forward this session): the
    /// driver saves it.
    pub fn trust(&self) -> &TrustStore {
        &self.trust
    }

    /// The user compared safety codes with `user`: mark the account
    /// verified in this room's trust (as [`TrustStore::mark_verified`]).
    pub fn mark_verified(&mut self, user: &UserId) -> bool {
        self.trust.mark_verified(user)
    }

    /// Whether a verified chain of `user` is held (from [`Self::learn_chain`]).
    pub fn knows_chain(&self, user: &UserId) -> bool {
        self.chains.contains_key(user)
    }

    /// Check and remember `user`'s device chain (fetched by the driver,
    /// e.g. from the user's profile), for naming roster entries.
    pub fn learn_chain(&mut self, user: &UserId, chain: &[u8]) -> Result<(), CryptoError> {
        match self.trust.check(user, chain) {
            Ok(v) => {
                self.chains.insert(user.clone(), v);
                self.name_senders();
                Ok(())
            }
            Err(e) => {
                self.chain_alert(user, &e);
                Err(e.into())
            }
        }
    }

    /// Who can decrypt the room, as far as this device can tell: the stage
    /// group's members (if this device is in it, else the signed stage
    /// map's), and the listeners proven on the latest verified roster, each
    /// named by the chains this device verified; and how many key holders
    /// cannot be anyone in the room (hidden listeners). See
    /// [`RosterReport`].
    pub fn roster_report(&self) -> RosterReport {
        let owners = self.key_owners();
        let name = |fp: &Fingerprint| owners.get(fp).map(|u| (*u).clone());
        let in_room = |u: &UserId| self.roles.contains_key(u);
        let mut entries = Vec::new();
        if let Some(m) = self.part.member() {
            for (_, key, _) in m.stage.member_accounts() {
                entries.push(self.roster_entry(name(&key.fingerprint()), true));
            }
        } else if let Some(map) = self.roster.as_ref().and_then(VerifiedRoster::stage) {
            // Not in the stage group: its members as the distributor's
            // signed stage map lists them, each named by a verified chain.
            for (_, key) in &map.members {
                let named = IdentityKey::from_bytes(key).and_then(|k| name(&k.fingerprint()));
                entries.push(self.roster_entry(named, true));
            }
        } else {
            // No stage map yet: the stage as the room shows it (its
            // members' keys are checked when they vouch for a key or roster).
            for m in self.view.members.iter().filter(|m| m.role.on_stage()) {
                entries.push(self.roster_entry(Some(m.user_id.clone()), true));
            }
        }
        let stage_hidden = entries
            .iter()
            .filter(|e| e.user.as_ref().is_none_or(|u| !in_room(u)))
            .count();
        let (mut listed, mut unchecked, mut listeners_hidden) = (0, 0, 0);
        if let Some(r) = &self.roster {
            listed = r.count();
            let candidates = self.member_devices(&owners);
            // A member whose chain is not learnt may hold a listed key too:
            // counted as one unchecked device (a full check learns every
            // chain; the native session learns the first 200).
            let known: HashSet<&UserId> = owners.values().copied().collect();
            unchecked += self.roles.keys().filter(|u| !known.contains(u)).count();
            // Listeners the light view does not show count as one
            // unchecked device each, as the server counts them.
            unchecked += self.audience_unshown() as usize;
            let mut proven_listed = 0usize;
            for fp in &candidates {
                match self.proven.get(fp) {
                    Some(true) => {
                        proven_listed += 1;
                        entries.push(self.roster_entry(name(fp), false));
                    }
                    Some(false) => {}
                    None => unchecked += 1,
                }
            }
            listeners_hidden = if self.audience_unshown() > 0 {
                // A view that shows part of the audience (a listener's in a
                // large room): the signed roster's accounts against the
                // audience count the room shows. A key holder the count
                // leaves out is hidden; an account listening from two
                // devices is one, as in the count. (The stage sees every
                // listener and is checked device by device, below.)
                (r.accounts() as usize).saturating_sub(self.view.audience_count as usize)
            } else {
                // At most `proven_listed + unchecked` signed keys can be
                // devices of members; the rest are someone else's.
                (listed as usize).saturating_sub(proven_listed + unchecked)
            };
        }
        RosterReport {
            entries,
            hidden: stage_hidden + listeners_hidden,
            roster_version: self.roster.as_ref().map(|r| r.version()),
            listed,
            unchecked,
        }
    }

    /// The key fingerprints of the room's members' devices, from the
    /// chains this device verified (`owners`: fingerprint → account).
    fn member_devices(&self, owners: &HashMap<Fingerprint, &UserId>) -> Vec<Fingerprint> {
        let mut fps: Vec<Fingerprint> = owners
            .iter()
            .filter(|(_, u)| self.roles.contains_key(**u))
            .map(|(fp, _)| *fp)
            .collect();
        fps.sort_unstable();
        fps
    }

    /// Checks the devices the server lists for this device's own account
    /// (`listed`, e.g. from `GET /api/me/devices`) against the account's
    /// own chain (`chain`, checked against the pins; it must hold this
    /// device): every listed key the chain does not hold is a device none
    /// of the account's devices added. Returns how many (each time > 0 an
    /// alert).
    pub fn check_own_devices(
        &mut self,
        chain: &[u8],
        listed: &[[u8; 32]],
    ) -> Result<usize, CryptoError> {
        let me = self.me.clone();
        let verified = match self.trust.check(&me, chain) {
            Ok(v) => v,
            Err(e) => {
                self.chain_alert(&me, &e);
                return Err(e.into());
            }
        };
        if !verified.is_active(&self.identity.public().to_bytes()) {
            self.alert(Alert::ForgedDevice {
                user: me,
                why: "the chain served for this account does not hold this device".into(),
            });
            return Err(CryptoError::ForgedDevice);
        }
        let unknown = listed.iter().filter(|k| !verified.is_active(k)).count();
        if unknown > 0 {
            self.alert(Alert::UnknownOwnDevice { count: unknown });
        }
        Ok(unknown)
    }

    /// [`Self::roster_report`], and an alert if it shows hidden listeners;
    /// asks the server for proofs about member devices not checked yet
    /// against the latest roster (all of them up to
    /// [`ROSTER_PROOF_SAMPLE`], a random sample of
    /// [`ROSTER_PROOF_SAMPLE_LARGE`] above), and checks again as the proofs
    /// and later rosters come (in large rooms at most every
    /// [`ROSTER_RECHECK_MS`]). Drivers call it
    /// once the chains of the room's members are learnt
    /// ([`Self::learn_chain`]): a key holder no chain of anyone in the room
    /// holds is then someone the server keeps out of sight (e.g. a banned
    /// listener it still shows to the distributor only).
    pub fn check_roster(&mut self) -> RosterReport {
        self.checking_roster = true;
        if self.roster.is_some() {
            let owners = self.key_owners();
            let mut todo = self.member_devices(&owners);
            let sample = if todo.len() <= ROSTER_PROOF_SAMPLE {
                todo.len()
            } else {
                ROSTER_PROOF_SAMPLE_LARGE
            };
            let budget = sample.saturating_sub(self.asked.len() + self.proven.len());
            todo.retain(|fp| !self.proven.contains_key(fp) && !self.asked.contains(fp));
            if todo.len() > budget {
                // A fresh random sample (partial Fisher–Yates): the server
                // cannot know which devices this check will ask about.
                for i in 0..budget {
                    let left = (todo.len() - i) as u64;
                    let j = i + usize::try_from(self.rng.next_u64() % left).unwrap_or(0);
                    todo.swap(i, j);
                }
                todo.truncate(budget);
            }
            for batch in todo.chunks(ROSTER_PROOF_BATCH) {
                self.asked.extend(batch.iter().copied());
                self.up(E2eeUp::RosterProof {
                    fingerprints: encode_payload(&encode_proof_request(batch)),
                });
            }
        }
        let report = self.roster_report();
        if report.hidden > 0 {
            self.alert(Alert::HiddenListener {
                count: report.hidden,
            });
        }
        report
    }

    /// The server's answer to a proof request: checked against the latest
    /// roster. A proof that does not verify is the server lying.
    fn accept_proofs(&mut self, proofs: &[u8]) -> Result<(), CryptoError> {
        let Some(r) = &self.roster else {
            return Ok(());
        };
        match r.check_proofs(proofs) {
            Ok(answers) => {
                for (fp, listed) in answers {
                    if self.asked.remove(&fp) {
                        self.proven.insert(fp, listed);
                    }
                }
                if self.checking_roster {
                    self.check_roster();
                }
                Ok(())
            }
            // Against another roster (one came meanwhile): asked again
            // with the next check.
            Err(RosterError::OtherVersion) => Ok(()),
            Err(RosterError::BadProof) => {
                self.alert(Alert::ForgedRosterProof);
                Err(RosterError::BadProof.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn roster_entry(&self, user: Option<UserId>, stage: bool) -> RosterEntry {
        let trust = user.as_ref().and_then(|u| self.trust.trust(u));
        RosterEntry { user, trust, stage }
    }

    fn alert(&mut self, alert: Alert) {
        let key = alert.to_string();
        if self.reported.insert(key) {
            self.alerts.push(alert);
        }
    }

    fn chain_alert(&mut self, user: &UserId, e: &ChainError) {
        match e {
            ChainError::RootChanged => self.alert(Alert::RootChanged { user: user.clone() }),
            other => self.alert(Alert::ForgedDevice {
                user: user.clone(),
                why: other.to_string(),
            }),
        }
    }

    /// The identity key of a relayed peer — only if the account's device
    /// chain (checked against the pins) holds it. Never the server's word.
    fn verified_peer(&mut self, peer: &E2eePeer) -> Result<IdentityKey, CryptoError> {
        self.verified_key(&peer.user_id, &peer.chain, peer.device_key.as_bytes())
    }

    /// `key`, if `user`'s device chain (`chain`, checked against the pins)
    /// holds it as a current device.
    fn verified_key(
        &mut self,
        user: &UserId,
        chain: &str,
        key: &[u8; 32],
    ) -> Result<IdentityKey, CryptoError> {
        // The same chain as last time for this account: already checked
        // against the pins (a join request refresh, every relayed message).
        let cached = self.chain_text.get(user).is_some_and(|t| t == chain);
        let active = if cached && let Some(v) = self.chains.get(user) {
            v.is_active(key)
        } else {
            let bytes = b64(chain)?;
            let verified = match self.trust.check(user, &bytes) {
                Ok(v) => v,
                Err(e) => {
                    self.chain_alert(user, &e);
                    return Err(e.into());
                }
            };
            let active = verified.is_active(key);
            self.chains.insert(user.clone(), verified);
            self.chain_text.insert(user.clone(), chain.to_owned());
            self.name_senders();
            active
        };
        if !active {
            self.alert(Alert::ForgedDevice {
                user: user.clone(),
                why: "the key is not a current device in the account's own device chain".into(),
            });
            return Err(CryptoError::ForgedDevice);
        }
        IdentityKey::from_bytes(key).ok_or(CryptoError::Malformed("device key"))
    }

    /// An access statement that counts in this room: signed by a current
    /// device (per its own chain) of an account the room shows as host or
    /// moderator and that has a device in the stage group (which the server
    /// cannot join on its own); a ban or allow must name this room.
    fn verified_access(&mut self, sa: &SignedAccess) -> Result<AccessStatement, CryptoError> {
        let on_stage_group = self
            .part
            .member()
            .is_some_and(|m| m.stage.has_account(sa.signer.as_str().as_bytes()));
        if !on_stage_group || !self.role_of(&sa.signer).is_some_and(Role::moderates) {
            return Err(CryptoError::AccessDoesNotApply(
                "signed by no host or moderator on the stage",
            ));
        }
        let st = AccessStatement::parse(&b64(&sa.statement)?)?;
        self.verified_key(&sa.signer, &sa.chain, &st.signer)?;
        if st.verb != AccessVerb::Follow && st.room != self.room_id.as_str() {
            return Err(CryptoError::AccessDoesNotApply("about another room"));
        }
        Ok(st)
    }

    /// The room's kind as its host bound it (closed if unknown: nobody is
    /// let in on the server's word alone).
    fn bound_kind(&self) -> E2eeRoomKind {
        self.binding
            .as_ref()
            .map_or(E2eeRoomKind::Closed, VerifiedBinding::kind)
    }

    /// Stale keys and withheld rosters, checked once a second.
    fn check_freshness(&mut self, now: u64) {
        if self.left {
            return;
        }
        let limit = self.config.rotation_period_ms;
        if let Some((_, since)) = self.key_seen {
            let age = now.saturating_sub(since);
            if self.listener_key_current() && age > limit + STALE_KEY_GRACE_MS {
                self.alert(Alert::StaleKey { age_ms: age });
            }
        }
        let roster_age = now.saturating_sub(self.last_roster_at);
        if self.can_decrypt() && roster_age > limit + STALE_ROSTER_GRACE_MS {
            self.alert(Alert::StaleRoster { age_ms: roster_age });
        }
    }

    /// Whether this device receives as a listener only (no stage group).
    fn listener_key_current(&self) -> bool {
        matches!(self.part, Part::Listener(_) | Part::Candidate(_))
            && self.part.listener().is_some()
    }

    /// Drop a commit the server did not answer in time, then catch up and
    /// redo what is still needed.
    fn commit_timeout(&mut self, now: u64) -> Result<(), CryptoError> {
        let Some(m) = self.part.member_mut() else {
            return Ok(());
        };
        if m.in_flight
            .as_ref()
            .is_none_or(|f| f.sent_at + COMMIT_TIMEOUT_MS > now)
        {
            return Ok(());
        }
        m.in_flight = None;
        m.stage.commit_rejected()?;
        m.rebase = false;
        m.pending_proposals = true;
        self.alert(Alert::CommitTimedOut);
        self.drain_buffered(now)?;
        self.try_commit()
    }

    /// Whether this device holds a receive key.
    pub fn can_decrypt(&self) -> bool {
        self.part.member().is_some()
            || self.part.listener().is_some_and(|l| {
                l.current.current_generation().is_some()
                    || l.previous
                        .as_ref()
                        .is_some_and(|p| p.current_generation().is_some())
            })
    }

    /// The newest audience key generation this device holds.
    pub fn key_generation(&self) -> Option<KeyGeneration> {
        self.newest_generation()
    }

    /// Whether this device can send (holds a stage send key).
    pub fn can_encrypt(&self) -> bool {
        self.part
            .member()
            .is_some_and(|m| m.stage.sending_generation().is_some())
    }

    /// The latest verified roster of admitted listeners.
    pub fn roster(&self) -> Option<&VerifiedRoster> {
        self.roster.as_ref()
    }

    /// How long a listener who is removed or banned can still decrypt, at
    /// most (milliseconds): the audience key's rotation period.
    pub fn exposure_window_ms(&self) -> u64 {
        self.config.rotation_period_ms
    }

    /// The account of the stage member who sent `frame` (an SFrame frame,
    /// still encrypted): as the stage group's own credentials name it on
    /// stage; for a listener, as the distributor's signed stage map for the
    /// frame's key generation lists the leaf's device key and a verified
    /// chain names it — once a frame with the same KID decrypted here (so
    /// the generation is the one that authenticated). None if unknown or
    /// the frame is malformed. For showing who speaks; it says nothing
    /// about whether this frame decrypts.
    pub fn frame_sender(&self, frame: &[u8]) -> Option<UserId> {
        let (kid, _, _) = parse_header(frame).ok()?;
        let (leaf, _) = sotto_e2ee::keys::split_kid(kid);
        let leaf = u32::try_from(leaf).ok()?;
        if let Some(m) = self.part.member() {
            let account = m.stage.account_at(leaf)?;
            return String::from_utf8(account).ok().map(UserId);
        }
        let l = self.part.listener()?;
        let g = l
            .current
            .frame_generation(kid)
            .or_else(|| l.previous.as_ref().and_then(|p| p.frame_generation(kid)))?;
        self.senders.get(&(g.epoch, leaf)).cloned()
    }

    /// Rebuild the (epoch, leaf) → account names from the stage maps and
    /// the chains verified so far.
    fn name_senders(&mut self) {
        if self.stage_maps.is_empty() {
            return;
        }
        let owners = self.key_owners();
        self.senders = self
            .stage_maps
            .iter()
            .flat_map(|m| {
                let owners = &owners;
                m.members.iter().filter_map(move |(leaf, key)| {
                    let owner = owners.get(&IdentityKey::from_bytes(key)?.fingerprint())?;
                    Some(((m.epoch, *leaf), (*owner).clone()))
                })
            })
            .collect();
    }

    /// Each verified chain's current keys, by fingerprint: who holds a key.
    fn key_owners(&self) -> HashMap<Fingerprint, &UserId> {
        self.chains
            .iter()
            .flat_map(|(user, chain)| {
                chain
                    .active()
                    .iter()
                    .filter_map(|k| IdentityKey::from_bytes(k))
                    .map(move |k| (k.fingerprint(), user))
            })
            .collect()
    }

    /// Whether the server made this device the room's key distributor.
    pub fn is_distributor(&self) -> bool {
        matches!(self.part, Part::Distributor(..))
    }

    /// A code all stage members of the current epoch share (compare it out
    /// loud): this device's own if it is in the stage group, else the one
    /// the latest verified roster's stage map carries.
    pub fn room_code(&self) -> Option<String> {
        match self.part.member() {
            Some(m) => Some(m.stage.room_code()),
            None => self
                .roster
                .as_ref()
                .and_then(VerifiedRoster::stage)
                .map(StageMap::room_code),
        }
    }

    /// This device's account's role. A listener the room's light view
    /// does not show (one of its unshown audience, see
    /// [`RoomView::light`]) is a listener: the server says so by keeping
    /// this account's channel subscribed (a departure ends it).
    fn my_role(&self) -> Option<Role> {
        self.role_of(&self.me)
            .or_else(|| (self.audience_unshown() > 0).then_some(Role::Listener))
    }

    /// Listeners the room as last shown counts but did not list
    /// ([`RoomView::audience_unshown`]).
    fn audience_unshown(&self) -> u32 {
        self.view
            .audience_count
            .saturating_sub(self.listeners_shown)
    }

    fn role_of(&self, user: &UserId) -> Option<Role> {
        self.roles.get(user).copied()
    }

    fn up(&mut self, e2ee: E2eeUp) {
        self.out.push(ClientMessage::E2ee {
            room_id: self.room_id.clone(),
            e2ee,
        });
    }

    fn handle_inner(&mut self, now: u64, msg: &ServerMessage) -> Result<(), CryptoError> {
        match msg {
            ServerMessage::RoomState { room } if room.id == self.room_id => self.on_view(now, room),
            ServerMessage::RoomLeft { room_id, .. } | ServerMessage::RoomEnded { room_id }
                if room_id == &self.room_id =>
            {
                // Keys stay (what a removed device can still decrypt is for
                // the caller to inspect); nothing is sent any more.
                self.left = true;
                self.part.demote();
                Ok(())
            }
            // A generic error is about some request of this session: never
            // taken for the refusal of a commit (those come as `rejected`
            // with the commit's id).
            ServerMessage::Error { error } => Err(CryptoError::Refused {
                code: error.code,
                message: error.message.clone(),
            }),
            ServerMessage::E2ee { room_id, e2ee } if room_id == &self.room_id && !self.left => {
                self.on_e2ee(now, e2ee)
            }
            _ => Ok(()),
        }
    }

    /// The server refused handshake `id`. If it is our in-flight commit, it
    /// lost (or was refused): drop it, catch up with the log, then redo it
    /// in the new epoch.
    fn on_rejected(
        &mut self,
        now: u64,
        id: u32,
        code: ErrorCode,
        message: &str,
    ) -> Result<(), CryptoError> {
        if let Some(m) = self.part.member_mut()
            && m.in_flight.as_ref().is_some_and(|f| f.id == id)
        {
            m.in_flight = None;
            m.stage.commit_rejected()?;
            m.rebase = code == ErrorCode::StaleEpoch;
            self.drain_buffered(now)?;
        }
        Err(CryptoError::Refused {
            code,
            message: message.to_owned(),
        })
    }

    fn on_view(&mut self, now: u64, view: &RoomView) -> Result<(), CryptoError> {
        if view.version < self.view.version {
            return Ok(());
        }
        update_roles(&mut self.roles, view);
        self.listeners_shown = view.listeners_shown();
        let was_on_stage = self.was_on_stage();
        self.view = lean_view(view);
        self.after_view(now, was_on_stage, None)
    }

    /// A room change as a delta, with the room as it stands after it
    /// (`room`, which the driver keeps): the core's index and lean view are
    /// brought up to date from the delta's changes alone, so a join in a
    /// room of 10,000 costs the distributor a few lookups, not a pass over
    /// the room. A delta that does not follow the core's view (or changes
    /// the room's description) is taken as the whole `room`.
    pub fn handle_room_delta(
        &mut self,
        now_ms: u64,
        delta: &RoomDelta,
        room: &RoomView,
    ) -> Result<Vec<ClientMessage>, CryptoError> {
        let result = self.on_delta(now_ms, delta, room);
        self.flush(now_ms);
        result.map(|()| rc_take(self))
    }

    fn on_delta(
        &mut self,
        now: u64,
        delta: &RoomDelta,
        room: &RoomView,
    ) -> Result<(), CryptoError> {
        if delta.room_id != self.room_id || room.id != self.room_id {
            return Ok(());
        }
        if delta.from != self.view.version || delta.version != room.version || delta.about.is_some()
        {
            return self.on_view(now, room);
        }
        let was_on_stage = self.was_on_stage();
        // Whether the lean view (stage and invitees) changes, and who left
        // or went on stage (the distributor drops their audience keys).
        let mut lean_changed = false;
        let mut departed: HashSet<&UserId> = HashSet::new();
        for change in &delta.changes {
            let in_lean = |user: &UserId| self.view.members.iter().any(|m| &m.user_id == user);
            let (user, role, flagged) = match change {
                MemberChange::Left { user_id } => (user_id, None, false),
                MemberChange::Put { member, .. } => {
                    (&member.user_id, Some(member.role), member.invited_to_stage)
                }
                MemberChange::Set {
                    user_id,
                    role: Some(role),
                    invited_to_stage,
                    ..
                } => (user_id, Some(*role), invited_to_stage.is_some()),
                // Flags only: no role moves; the lean view changes if it
                // shows this member or the invitation changed.
                MemberChange::Set {
                    user_id,
                    role: None,
                    invited_to_stage,
                    ..
                } => {
                    lean_changed |= invited_to_stage.is_some() || in_lean(user_id);
                    continue;
                }
            };
            let in_lean = in_lean(user);
            let old = match role {
                Some(r) => self.roles.insert(user.clone(), r),
                None => self.roles.remove(user),
            };
            let was_listener = old == Some(Role::Listener);
            let is_listener = role == Some(Role::Listener);
            if was_listener && !is_listener {
                self.listeners_shown = self.listeners_shown.saturating_sub(1);
            } else if is_listener && !was_listener {
                self.listeners_shown = self.listeners_shown.saturating_add(1);
            }
            lean_changed |= in_lean || flagged || role.is_some_and(Role::on_stage);
            if role.is_none_or(Role::on_stage) {
                departed.insert(user);
            }
        }
        if lean_changed {
            self.view = lean_view(room);
        } else {
            self.view.version = room.version;
            self.view.audience_count = room.audience_count;
        }
        self.after_view(now, was_on_stage, Some(&departed))
    }

    /// Whether the room as last shown had this account on stage.
    fn was_on_stage(&self) -> bool {
        self.view
            .members
            .iter()
            .any(|m| m.user_id == self.me && m.role.on_stage())
    }

    /// What follows a new view of the room: a kind that differs from the
    /// bound one is reported, this device follows its own role, and the
    /// distributor drops the audience keys of whoever left or went on
    /// stage (`departed`: those the change named; `None`: check everyone).
    fn after_view(
        &mut self,
        now: u64,
        was_on_stage: bool,
        departed: Option<&HashSet<&UserId>>,
    ) -> Result<(), CryptoError> {
        if let Some(b) = &self.binding
            && b.kind() != e2ee_kind(self.view.kind)
        {
            self.alert(Alert::RoomKindChanged {
                bound: kind_name(b.kind()).to_owned(),
                shown: self.view.kind.as_str().to_owned(),
            });
        }
        if self.left || self.server.is_none() {
            return Ok(());
        }
        let role = self.my_role();
        let in_stage_part = !matches!(self.part, Part::Waiting | Part::Listener(_));
        match role {
            Some(Role::Listener) if in_stage_part || was_on_stage => {
                // Moved to the audience: the server proposes our removal.
                self.join_as_listener(now)?;
            }
            Some(r) if r.on_stage() && !in_stage_part => {
                self.become_candidate()?;
            }
            _ => {}
        }
        self.distributor_follow_view(now, departed)?;
        self.admit_early(now);
        // The distributor removes what no longer belongs on the stage
        // itself, whether or not the server proposes it.
        self.try_commit()
    }

    fn on_e2ee(&mut self, now: u64, msg: &E2eeDown) -> Result<(), CryptoError> {
        match msg {
            E2eeDown::Info {
                external_sender_key,
                external_sender_credential,
                has_group,
                group,
            } => {
                self.server = Some(ExternalSenderInfo {
                    public_key: b64(external_sender_key)?,
                    credential_identity: b64(external_sender_credential)?,
                });
                let bound = match group {
                    Some(g) if *has_group => self.accept_binding(g).is_ok(),
                    _ => false,
                };
                if std::mem::take(&mut self.resuming) {
                    self.resume(now, *has_group, bound)
                } else {
                    self.start(now, bound)
                }
            }
            E2eeDown::GroupReset { group } => {
                // Leave the group only for a newer one the host bound.
                self.accept_binding(group)?;
                let in_bound = match (self.part.member(), &self.binding) {
                    (Some(m), Some(b)) => b.group_id() == m.stage.group_id(),
                    _ => false,
                };
                if self.my_role().is_some_and(Role::on_stage) && !in_bound {
                    // A new group: distributing in it is the server's new
                    // election, not the old one.
                    self.become_candidate()?;
                } else if matches!(self.part, Part::Listener(_))
                    && self.my_role() == Some(Role::Listener)
                    && !self.left
                {
                    // The new group's distributor has no request of ours
                    // (e.g. the host's page reloaded and made a new group):
                    // ask it for the audience key; the old keys go on
                    // decrypting frames still in flight.
                    self.join_as_listener(now)?;
                }
                Ok(())
            }
            E2eeDown::Handshake { message, .. } => {
                let bytes = b64(message)?;
                match &mut self.part {
                    Part::Candidate(c) => {
                        c.buffered.push(bytes);
                        Ok(())
                    }
                    Part::Member(m) | Part::Distributor(m, _) if m.in_flight.is_some() => {
                        m.buffered.push(bytes);
                        Ok(())
                    }
                    Part::Member(_) | Part::Distributor(..) => self.process_handshake(now, &bytes),
                    Part::Waiting | Part::Listener(_) => Ok(()),
                }
            }
            E2eeDown::Rejected { id, code, message } => self.on_rejected(now, *id, *code, message),
            E2eeDown::Accepted { commit, id, .. } => {
                if !commit {
                    return Ok(());
                }
                let Some(m) = self.part.member_mut() else {
                    return Ok(());
                };
                if m.in_flight.as_ref().is_none_or(|f| f.id != *id) {
                    return Ok(());
                }
                let Some(InFlight { out, .. }) = m.in_flight.take() else {
                    return Ok(());
                };
                m.stage.commit_accepted(now)?;
                m.pending_proposals = false;
                self.up(E2eeUp::GroupInfo {
                    group_info: encode_payload(&out.group_info),
                });
                if let Some(w) = &out.welcome {
                    self.up(E2eeUp::Welcome {
                        welcome: encode_payload(w),
                    });
                }
                self.on_epoch_change(now)?;
                self.drain_buffered(now)
            }
            E2eeDown::Welcome {
                welcome,
                ratchet_tree,
            } => {
                let (w, tree) = (b64(welcome)?, b64(ratchet_tree)?);
                let Part::Candidate(_) = self.part else {
                    return Ok(());
                };
                let Some(bound) = self.binding.as_ref().map(|b| b.group_id().to_vec()) else {
                    self.alert(Alert::ForeignGroup {
                        why: "a Welcome before any group binding from the host".into(),
                    });
                    return Err(CryptoError::Unbound);
                };
                let Part::Candidate(c) = std::mem::replace(&mut self.part, Part::Waiting) else {
                    return Ok(());
                };
                let CandidateState {
                    candidate,
                    buffered,
                    listener,
                    elected,
                } = *c;
                let stage = match candidate.join(&self.room, &w, &tree, &bound, self.config, now) {
                    Ok(stage) => stage,
                    Err(e) => {
                        // The candidate's KeyPackage keys are spent: ask again.
                        self.alert(Alert::ForeignGroup {
                            why: format!("Welcome refused: {e}"),
                        });
                        self.part = listener.map_or(Part::Waiting, Part::Listener);
                        self.become_candidate()?;
                        return Err(e.into());
                    }
                };
                let fallback = listener.map(|l| (l, now + LISTENER_FALLBACK_MS));
                self.part = Part::Member(MemberState::new(stage, buffered, fallback));
                self.check_stage_members();
                self.drain_buffered(now)?;
                if elected {
                    self.start_distributor(now)?;
                }
                Ok(())
            }
            E2eeDown::Candidate { candidate } => self.maybe_invite(now, candidate),
            E2eeDown::StageInvitation { invitation, from } => {
                let key = self.verified_peer(from)?;
                self.invitations.push((b64(invitation)?, from.clone(), key));
                self.try_commit()
            }
            E2eeDown::JoinRequest {
                request,
                from,
                grants,
            } => self.admit(now, &b64(request)?, from, grants),
            E2eeDown::Ban { ban } => self.on_ban(now, ban),
            E2eeDown::Sealed {
                sealed,
                statement,
                from,
            } => self.open_sealed(now, &b64(sealed)?, &b64(statement)?, from),
            E2eeDown::Roster { roster, from } => self.accept_roster(&b64(roster)?, from),
            E2eeDown::RosterProofs { proofs } => self.accept_proofs(&b64(proofs)?),
            E2eeDown::RosterResync {} => {
                // The server lost the list behind our rosters: send all of
                // it with a roster now.
                if let Part::Distributor(_, d) = &mut self.part {
                    d.dist.forget_upload();
                    d.roster_at = Some(now);
                }
                Ok(())
            }
            E2eeDown::DeviceGone { device_id } => self.device_gone(now, device_id),
            E2eeDown::Distributor { active } => match &mut self.part {
                // Elected before its Welcome arrived: distributes on joining.
                Part::Candidate(c) => {
                    c.elected = *active;
                    Ok(())
                }
                _ if *active => self.start_distributor(now),
                _ => {
                    self.part.demote();
                    Ok(())
                }
            },
        }
    }

    /// After the server's `info`: the host creates the stage group, others
    /// on stage ask to join it, listeners ask for the audience key.
    fn start(&mut self, now: u64, has_group: bool) -> Result<(), CryptoError> {
        if !matches!(self.part, Part::Waiting) {
            return Ok(());
        }
        match self.my_role() {
            Some(Role::Host) => {
                let server = self
                    .server
                    .clone()
                    .ok_or(CryptoError::Malformed("no server info"))?;
                let identity = DeviceIdentity::from_seed(
                    *self.seed,
                    self.me.as_str().as_bytes(),
                    self.device.as_str(),
                );
                let (stage, gi, tree) = StageMember::create(
                    identity,
                    &self.room,
                    &server,
                    self.config,
                    now,
                    &mut self.rng,
                )?;
                let kind = e2ee_kind(self.view.kind);
                let binding =
                    sign_binding(&self.identity, &self.room, &stage.group_id(), kind, now);
                self.binding = Some(VerifiedBinding::verify(
                    &binding,
                    &self.room,
                    &[self.identity.public()],
                )?);
                self.part = Part::Member(MemberState::new(stage, Vec::new(), None));
                self.up(E2eeUp::CreateGroup {
                    group_info: encode_payload(&gi),
                    ratchet_tree: encode_payload(&tree),
                    binding: encode_payload(&binding),
                });
                Ok(())
            }
            Some(r) if r.on_stage() => {
                if has_group {
                    self.become_candidate()?;
                }
                Ok(())
            }
            Some(_) => self.join_as_listener(now),
            None => Ok(()),
        }
    }

    /// After the `info` that answers a new channel's hello (see
    /// [`Self::reconnected`]).
    fn resume(&mut self, now: u64, has_group: bool, bound: bool) -> Result<(), CryptoError> {
        if self.left {
            return Ok(());
        }
        let role = self.my_role();
        match &mut self.part {
            Part::Waiting => self.start(now, bound),
            Part::Listener(_) if role == Some(Role::Listener) => self.join_as_listener(now),
            Part::Listener(_) => Ok(()),
            // The server may have lost the KeyPackage: upload a new one.
            Part::Candidate(_) if bound => self.become_candidate(),
            Part::Candidate(_) => Ok(()),
            Part::Member(m) | Part::Distributor(m, _) => {
                let same = bound
                    && self
                        .binding
                        .as_ref()
                        .is_some_and(|b| b.group_id() == m.stage.group_id());
                if same {
                    if let Part::Distributor(_, d) = &mut self.part {
                        // The server may have lost the roster: publish it again.
                        d.roster_at = Some(now);
                    }
                    return Ok(());
                }
                if !has_group && role == Some(Role::Host) {
                    // The server lost the group: make a new one (others join
                    // it on the new binding, as after any group reset).
                    self.part = Part::Waiting;
                    return self.start(now, false);
                }
                if bound && role.is_some_and(Role::on_stage) {
                    // A newer group the host bound: join it.
                    return self.become_candidate();
                }
                Ok(())
            }
        }
    }

    /// Accepts the host's binding of the room's stage group: signed by a
    /// chain-verified device of the user the room shows as host, and not
    /// older than the binding already held.
    fn accept_binding(&mut self, group: &GroupBinding) -> Result<(), CryptoError> {
        let result = self.check_binding(group);
        if let Err(e) = &result {
            self.alert(Alert::ForeignGroup {
                why: format!("group binding refused: {e}"),
            });
        }
        result
    }

    fn check_binding(&mut self, group: &GroupBinding) -> Result<(), CryptoError> {
        if self.role_of(&group.from.user_id) != Some(Role::Host) {
            return Err(CryptoError::NotOnStage);
        }
        let key = self.verified_peer(&group.from)?;
        let new = VerifiedBinding::verify(&b64(&group.binding)?, &self.room, &[key])?;
        if let Some(old) = &self.binding
            && old.group_id() != new.group_id()
            && new.created_ms() <= old.created_ms()
        {
            return Err(CryptoError::Unbound);
        }
        if self
            .binding
            .as_ref()
            .is_some_and(|old| old.group_id() != new.group_id())
        {
            // A new group counts its epochs, rotations and frames from the
            // start again: the old group's windows would refuse them as
            // replays. (Only the host makes a new group: a newer binding.)
            self.replay = ReplayFilter::default();
        }
        self.binding = Some(new);
        Ok(())
    }

    fn become_candidate(&mut self) -> Result<(), CryptoError> {
        let identity = DeviceIdentity::from_seed(
            *self.seed,
            self.me.as_str().as_bytes(),
            self.device.as_str(),
        );
        let (candidate, kp) = StageCandidate::new(identity)?;
        let listener = self.part.take_listener();
        self.part = Part::Candidate(Box::new(CandidateState {
            candidate,
            buffered: Vec::new(),
            listener,
            elected: false,
        }));
        self.up(E2eeUp::KeyPackage {
            key_package: encode_payload(&kp),
        });
        Ok(())
    }

    fn join_as_listener(&mut self, now: u64) -> Result<(), CryptoError> {
        let (req, keys) = JoinRequest::create(
            &self.identity,
            &self.room,
            now + JOIN_REQUEST_TTL_MS,
            &mut self.rng,
        )?;
        let current = Listener::new(
            &self.room,
            &self.identity.public(),
            keys,
            self.config.suite,
            self.config.grace_ms,
        );
        // Whatever stage part this device had ends here (moved to the
        // audience); the ring before this one keeps decrypting meanwhile.
        let previous = self.part.take_listener().map(|l| l.current);
        self.part = Part::Listener(Box::new(ListenerState {
            current,
            previous,
            refresh_at: now + JOIN_REFRESH_MS,
        }));
        self.up(E2eeUp::JoinRequest {
            request: encode_payload(&req),
        });
        Ok(())
    }

    fn process_handshake(&mut self, now: u64, bytes: &[u8]) -> Result<(), CryptoError> {
        let Some(m) = self.part.member_mut() else {
            return Ok(());
        };
        match m.stage.handle_message(now, bytes) {
            Ok(StageEvent::ProposalQueued) => {
                m.pending_proposals = true;
                self.try_commit()
            }
            Ok(StageEvent::EpochChanged { .. }) => {
                m.pending_proposals = false;
                if std::mem::take(&mut m.rebase) {
                    let invitations = self.verified_invitations(now);
                    if let Some(m) = self.part.member_mut()
                        && let Some(out) = m.stage.rebase(&invitations)?
                    {
                        self.send_commit(out);
                    }
                }
                self.on_epoch_change(now)
            }
            Ok(StageEvent::Removed) => {
                let listener = self.part.take_listener();
                let had_keys = listener.is_some();
                self.part = listener.map_or(Part::Waiting, Part::Listener);
                if self.my_role() == Some(Role::Listener) && !had_keys {
                    self.join_as_listener(now)?;
                }
                Ok(())
            }
            Ok(_) => Ok(()),
            // Messages of an epoch we are past (or before our Welcome).
            Err(StageError::WrongEpoch { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn drain_buffered(&mut self, now: u64) -> Result<(), CryptoError> {
        let mut first_err = None;
        loop {
            let next = match self.part.member_mut() {
                Some(m) if m.in_flight.is_none() && !m.buffered.is_empty() => m.buffered.remove(0),
                _ => break,
            };
            if let Err(e) = self.process_handshake(now, &next) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn send_commit(&mut self, out: CommitOut) {
        let message = encode_payload(&out.commit);
        let id = self.handshake_id();
        if let Some(m) = self.part.member_mut() {
            m.in_flight = Some(InFlight {
                out,
                id,
                sent_at: self.last_now,
            });
        }
        self.up(E2eeUp::Handshake { message, id });
    }

    fn handshake_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    /// The trusted inviters: stage-group members whose user is a host or
    /// moderator in the room state.
    fn verified_invitations(&self, now: u64) -> Vec<VerifiedInvitation> {
        let Some(m) = self.part.member() else {
            return Vec::new();
        };
        let tree: HashSet<[u8; 32]> = m
            .stage
            .member_keys()
            .into_iter()
            .map(|(_, k)| k.to_bytes())
            .collect();
        let trusted: Vec<IdentityKey> = self
            .invitations
            .iter()
            .filter(|(_, from, key)| {
                tree.contains(&key.to_bytes())
                    && self.role_of(&from.user_id).is_some_and(Role::moderates)
            })
            .map(|(_, _, key)| *key)
            .collect();
        self.invitations
            .iter()
            .filter_map(|(raw, _, _)| {
                VerifiedInvitation::verify(raw, &self.room, &trusted, now).ok()
            })
            .collect()
    }

    /// The distributor commits pending proposals once every Add has a
    /// verified invitation.
    fn try_commit(&mut self) -> Result<(), CryptoError> {
        let now = self.now_hint();
        let idle = matches!(&self.part, Part::Distributor(m, _) if m.in_flight.is_none());
        if !idle {
            return Ok(());
        }
        let strays = self.check_stage_members();
        let pending = self.part.member().is_some_and(|m| m.pending_proposals);
        if !pending && strays.is_empty() {
            return Ok(());
        }
        let invitations = self.verified_invitations(now);
        let Some(m) = self.part.member_mut() else {
            return Ok(());
        };
        match m.stage.commit_pending(&invitations, &strays) {
            Ok((out, _dropped)) => {
                self.send_commit(out);
                Ok(())
            }
            // Only uninvited Adds pending: dropped, nothing to commit.
            Err(StageError::UninvitedAdd | StageError::NothingPending) => {
                m.pending_proposals = false;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The stage group's leaves that do not belong on the stage: no
    /// account, an account the room does not show on stage, or a key that
    /// the account's verified chain does not hold (revoked). Alerts once
    /// per stray; the distributor removes them.
    fn check_stage_members(&mut self) -> Vec<u32> {
        let Some(m) = self.part.member() else {
            return Vec::new();
        };
        let mut strays = Vec::new();
        let mut found = Vec::new();
        for (leaf, key, account) in m.stage.member_accounts() {
            let user = account.and_then(|a| String::from_utf8(a).ok()).map(UserId);
            let on_stage = user
                .as_ref()
                .is_some_and(|u| self.role_of(u).is_some_and(Role::on_stage));
            let chain_ok = user.as_ref().is_none_or(|u| {
                self.chains
                    .get(u)
                    .is_none_or(|c| c.is_active(&key.to_bytes()))
            });
            if !on_stage || !chain_ok {
                strays.push(leaf);
            }
            // A demotion is routine (the server proposes the Remove too); a
            // leaf no chain vouches for is an attack to report.
            if !chain_ok || user.is_none() {
                found.push(user);
            }
        }
        for user in found {
            self.alert(Alert::StrayStageMember { user });
        }
        strays
    }

    fn now_hint(&self) -> u64 {
        // Invitation expiry checks need a time; the latest known one is the
        // send-key timer base. Use the wall time the driver last passed.
        self.last_now
    }

    fn maybe_invite(&mut self, now: u64, candidate: &E2eePeer) -> Result<(), CryptoError> {
        if !self.my_role().is_some_and(Role::moderates) {
            return Ok(());
        }
        if self.part.member().is_none() {
            return Ok(());
        }
        let follows = self.policy == InvitePolicy::FollowRoomState
            && self.view.members.iter().any(|m| {
                m.user_id == candidate.user_id && (m.role.on_stage() || m.invited_to_stage)
            });
        if !follows && !self.intents.contains(&candidate.user_id) {
            return Ok(());
        }
        // Only a key the candidate's own device chain holds, and one
        // invitation per intent: the server cannot get a second key of the
        // same user on stage on the strength of one invite.
        let invitee = self.verified_peer(candidate)?;
        self.intents.remove(&candidate.user_id);
        let inv = create_invitation(
            &self.identity,
            &self.room,
            &invitee,
            now + INVITATION_TTL_MS,
        );
        self.invitations.push((
            inv.clone(),
            E2eePeer {
                user_id: self.me.clone(),
                device_id: self.device.clone(),
                device_key: sotto_proto::keys::DevicePublicKey::from_bytes(
                    self.identity.public().to_bytes(),
                ),
                chain: String::new(),
            },
            self.identity.public(),
        ));
        self.up(E2eeUp::StageInvitation {
            device_id: candidate.device_id.clone(),
            invitation: encode_payload(&inv),
        });
        self.try_commit()
    }

    fn on_epoch_change(&mut self, now: u64) -> Result<(), CryptoError> {
        if self.part.distributor().is_some() {
            self.rotate(now)?;
        }
        self.try_commit()
    }

    /// The server elected this device: a stage member becomes the
    /// distributor (a candidate does on joining).
    fn start_distributor(&mut self, now: u64) -> Result<(), CryptoError> {
        let Part::Member(m) = &self.part else {
            return Ok(());
        };
        let key = m.stage.current_audience_key()?;
        // The kind the host bound, not the server's view: a closed or
        // social room admits only listeners a moderator's statement lets in.
        let kind = self.bound_kind();
        let mut dist = Distributor::new(&self.room, kind, key, m.stage.identity());
        dist.resume_after(self.roster_seen);
        let d = Box::new(DistributorState {
            dist,
            admitted: HashMap::new(),
            next_rotation_at: now + self.config.rotation_period_ms,
            roster_at: None,
            rotated_at: None,
            departure_rotation_at: None,
            early: Vec::new(),
            preseal_more: true,
            preseal_at: now,
        });
        let due = m.stage.rotation_due(now);
        if let Part::Member(m) = std::mem::replace(&mut self.part, Part::Waiting) {
            self.part = Part::Distributor(m, d);
        }
        if due {
            self.rotate(now)?;
        }
        self.try_commit()
    }

    /// Seal the next generation to every admitted listener (with its key
    /// statement), then announce it to the stage.
    fn rotate(&mut self, now: u64) -> Result<(), CryptoError> {
        let Part::Distributor(m, d) = &mut self.part else {
            return Ok(());
        };
        if m.in_flight.is_some() {
            return Ok(());
        }
        let key = m.stage.next_audience_key()?;
        let rotation = d.dist.rotate(key.clone(), m.stage.identity())?;
        let notice = m.stage.announce(now, &key)?;
        d.next_rotation_at = now + self.config.rotation_period_ms;
        d.roster_at = Some(now);
        d.rotated_at = Some(now);
        d.departure_rotation_at = None;
        d.preseal_more = true;
        let statement = encode_payload(&rotation.statement);
        let deliveries: Vec<SealedFor> = rotation
            .deliveries
            .iter()
            .filter_map(|s| {
                let (_, device) = d.admitted.get(&s.recipient)?;
                Some(SealedFor {
                    to: device.clone(),
                    sealed: encode_payload(&s.bytes),
                })
            })
            .collect();
        for batch in deliveries.chunks(SEALED_BATCH) {
            self.up(E2eeUp::Sealed {
                statement: statement.clone(),
                deliveries: batch.to_vec(),
            });
        }
        let id = self.handshake_id();
        self.up(E2eeUp::Handshake {
            message: encode_payload(&notice),
            id,
        });
        Ok(())
    }

    fn admit(
        &mut self,
        now: u64,
        request: &[u8],
        from: &E2eePeer,
        grants: &[SignedAccess],
    ) -> Result<(), CryptoError> {
        if self.part.distributor().is_none() {
            return Ok(());
        }
        if !self.roles.contains_key(&from.user_id) {
            // The room state that shows this account may still be on its
            // way: try again when it comes (`admit_early`).
            if let Part::Distributor(_, d) = &mut self.part {
                d.early.retain(|e| e.from.device_id != from.device_id);
                if d.early.len() >= MAX_EARLY_JOINS {
                    d.early.remove(0);
                }
                d.early.push(EarlyJoin {
                    request: request.to_vec(),
                    from: from.clone(),
                    grants: grants.to_vec(),
                    at: now,
                });
            }
            return Ok(());
        }
        // The key the listener's own device chain holds, never the key the
        // server attaches.
        let registered = self.verified_peer(from)?;
        let verified = JoinRequest::parse(request)?.verify(&registered, &self.room, now)?;
        let fp = verified.identity().fingerprint();
        // Who may listen is the moderators' word, each statement checked
        // against its signer's chain and role — not the server's.
        let kind = self.bound_kind();
        let allowed = kind != E2eeRoomKind::Open
            && grants.iter().any(|g| {
                self.verified_access(g).is_ok_and(|st| {
                    st.target == from.user_id
                        && match st.verb {
                            AccessVerb::Allow => true,
                            AccessVerb::Follow => kind == E2eeRoomKind::Social,
                            AccessVerb::Ban => false,
                        }
                })
            });
        let banned = self.bans.contains(&from.user_id);
        let Part::Distributor(_, d) = &mut self.part else {
            return Ok(());
        };
        if banned {
            d.dist.ban(fp);
        } else if allowed {
            d.dist.allow(fp);
        }
        // The roster counts this key under the account whose chain holds it.
        let sealed = match d.dist.admit_for(verified, from.user_id.as_str().as_bytes()) {
            Ok(s) => s,
            Err(e) => {
                let why = match (&e, kind) {
                    (AdmitError::Banned, _) => "a moderator banned this account".to_owned(),
                    (_, E2eeRoomKind::Social) => {
                        "no host or moderator of this social room follows this account".to_owned()
                    }
                    _ => "no moderator let this account into this closed room".to_owned(),
                };
                self.alert(Alert::AccessRefused {
                    user: from.user_id.clone(),
                    why,
                });
                return Err(e.into());
            }
        };
        d.admitted.insert(
            sealed.recipient,
            (from.user_id.clone(), from.device_id.clone()),
        );
        d.preseal_more = true;
        let delay = if d.admitted.len() > ROSTER_LARGE_AUDIENCE {
            ROSTER_DELAY_LARGE_MS
        } else {
            ROSTER_DELAY_MS
        };
        d.roster_at.get_or_insert(now + delay);
        let statement = encode_payload(d.dist.statement());
        self.up(E2eeUp::Sealed {
            statement,
            deliveries: vec![SealedFor {
                to: from.device_id.clone(),
                sealed: encode_payload(&sealed.bytes),
            }],
        });
        Ok(())
    }

    /// A listener departed: rotate at once, or as soon as the previous
    /// rotation is [`MIN_ROTATION_GAP_SWITCHES`] switch delays old.
    fn rotate_for_departure(&mut self, now: u64) -> Result<(), CryptoError> {
        let gap = MIN_ROTATION_GAP_SWITCHES * self.config.switch_delay_ms;
        let Part::Distributor(_, d) = &mut self.part else {
            return Ok(());
        };
        match d.rotated_at.map(|t| t.saturating_add(gap)) {
            Some(earliest) if earliest > now => {
                d.departure_rotation_at.get_or_insert(earliest);
                Ok(())
            }
            _ => self.rotate(now),
        }
    }

    /// Join requests that came before the room state showing their sender:
    /// admitted now that it does; dropped after [`EARLY_JOIN_TTL_MS`].
    fn admit_early(&mut self, now: u64) {
        let Part::Distributor(_, d) = &mut self.part else {
            return;
        };
        if d.early.is_empty() {
            return;
        }
        let roles = &self.roles;
        let (ready, waiting): (Vec<EarlyJoin>, Vec<EarlyJoin>) = std::mem::take(&mut d.early)
            .into_iter()
            .filter(|e| e.at.saturating_add(EARLY_JOIN_TTL_MS) >= now)
            .partition(|e| roles.contains_key(&e.from.user_id));
        d.early = waiting;
        for e in ready {
            if self.admit(now, &e.request, &e.from, &e.grants).is_err() {
                // Refused as it would have been on arrival: with an alert
                // where a person must know (access refused).
            }
        }
    }

    /// As distributor: drop admitted listeners who left the room (rotate at
    /// once: a ban or removal must not keep the key) or went on stage.
    fn distributor_follow_view(
        &mut self,
        now: u64,
        only: Option<&HashSet<&UserId>>,
    ) -> Result<(), CryptoError> {
        let Part::Distributor(_, d) = &mut self.part else {
            return Ok(());
        };
        if only.is_some_and(HashSet::is_empty) {
            return Ok(());
        }
        let mut departed = false;
        let gone: Vec<(Fingerprint, bool)> = d
            .admitted
            .iter()
            .filter(|(_, (user, _))| only.is_none_or(|o| o.contains(user)))
            .filter_map(|(fp, (user, _))| match self.roles.get(user) {
                None => Some((*fp, true)),
                Some(role) if role.on_stage() => Some((*fp, false)),
                Some(_) => None,
            })
            .collect();
        for (fp, left) in gone {
            d.admitted.remove(&fp);
            d.dist.remove(fp);
            departed |= left;
            d.roster_at.get_or_insert(now);
        }
        if departed {
            self.rotate_for_departure(now)?;
        }
        Ok(())
    }

    /// The keys a listener trusts for key statements and rosters: those of
    /// the stage group if it is in it, else the sender's — if the room
    /// shows the sender on stage and the sender's own chain holds the key.
    fn stage_keys_for(&mut self, from: &E2eePeer) -> Result<Vec<IdentityKey>, CryptoError> {
        if let Some(m) = self.part.member() {
            return Ok(m.stage.member_keys().into_iter().map(|(_, k)| k).collect());
        }
        if !self.role_of(&from.user_id).is_some_and(Role::on_stage) {
            return Err(CryptoError::NotOnStage);
        }
        Ok(vec![self.verified_peer(from)?])
    }

    fn open_sealed(
        &mut self,
        now: u64,
        sealed: &[u8],
        statement: &[u8],
        from: &E2eePeer,
    ) -> Result<(), CryptoError> {
        let trusted = self.stage_keys_for(from)?;
        let Some(l) = self.part.listener_mut() else {
            return Ok(());
        };
        let st = l.current.verify_statement(statement, &trusted)?;
        let opened = match l.current.open(now, sealed, &st) {
            Ok(g) => g,
            Err(OpenError::NotForUs) if l.previous.is_some() => {
                let prev = l.previous.as_mut().ok_or(CryptoError::NoKey)?;
                prev.open(now, sealed, &st)?
            }
            Err(e) => return Err(e.into()),
        };
        if self.key_seen.is_none_or(|(g, _)| g < opened) {
            self.key_seen = Some((opened, now));
        }
        Ok(())
    }

    /// The newest key generation this device can decrypt.
    fn newest_generation(&self) -> Option<KeyGeneration> {
        let stage = self
            .part
            .member()
            .and_then(|m| m.stage.current_audience_key().ok().map(|k| k.generation()));
        let listener = self.part.listener().and_then(|l| {
            let prev = l.previous.as_ref().and_then(Listener::current_generation);
            l.current.current_generation().max(prev)
        });
        stage.max(listener)
    }

    /// (The distributor) a listener device was revoked or logged out.
    fn device_gone(&mut self, now: u64, device: &DeviceId) -> Result<(), CryptoError> {
        self.cut_off(now, |_, dev| dev == device, false)
    }

    /// (The distributor) takes the key from the admitted listeners `which`
    /// names, at once: drops (or bans) them and rotates.
    fn cut_off(
        &mut self,
        now: u64,
        which: impl Fn(&UserId, &DeviceId) -> bool,
        ban: bool,
    ) -> Result<(), CryptoError> {
        let Part::Distributor(_, d) = &mut self.part else {
            return Ok(());
        };
        let gone: Vec<Fingerprint> = d
            .admitted
            .iter()
            .filter(|(_, (user, dev))| which(user, dev))
            .map(|(fp, _)| *fp)
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        for fp in gone {
            d.admitted.remove(&fp);
            if ban {
                d.dist.ban(fp);
            } else {
                d.dist.remove(fp);
            }
        }
        d.roster_at.get_or_insert(now);
        self.rotate_for_departure(now)
    }

    /// A moderator's signed ban: refuse the account's join requests from
    /// now on, and take the key from its admitted devices at once (whether
    /// or not the server removes it from the room).
    fn on_ban(&mut self, now: u64, ban: &SignedAccess) -> Result<(), CryptoError> {
        let st = self.verified_access(ban)?;
        if st.verb != AccessVerb::Ban {
            return Err(CryptoError::AccessDoesNotApply("not a ban"));
        }
        self.bans.insert(st.target.clone());
        self.cut_off(now, |user, _| *user == st.target, true)
    }

    fn accept_roster(&mut self, roster: &[u8], from: &E2eePeer) -> Result<(), CryptoError> {
        let trusted = self.stage_keys_for(from)?;
        let r = VerifiedRoster::verify(roster, &self.room, &trusted, self.roster_seen)?;
        // A roster is signed after its generation is sealed: one for a
        // generation this device does not hold is from the future, and
        // accepting it would make every genuine roster look like a rollback.
        if self.newest_generation().is_none_or(|g| r.generation() > g) {
            return Err(CryptoError::RosterAhead);
        }
        if let Some(map) = r.stage() {
            self.stage_maps.retain(|m| m.epoch != map.epoch);
            self.stage_maps.push(map.clone());
            self.stage_maps.sort_unstable_by_key(|m| m.epoch);
            let old = self.stage_maps.len().saturating_sub(STAGE_MAPS_KEPT);
            self.stage_maps.drain(..old);
            self.name_senders();
        }
        self.set_roster(r, self.last_now);
        Ok(())
    }

    /// A newer verified roster: proofs about the last one no longer count.
    fn set_roster(&mut self, r: VerifiedRoster, now: u64) {
        self.roster_seen = r.version();
        self.roster = Some(r);
        self.last_roster_at = now;
        self.proven.clear();
        self.asked.clear();
        let small = self.roles.len() <= ROSTER_PROOF_SAMPLE;
        let due = self
            .roster_checked_at
            .is_none_or(|t| now.saturating_sub(t) >= ROSTER_RECHECK_MS);
        if self.checking_roster && (small || due) {
            self.roster_checked_at = Some(now);
            self.check_roster();
        }
    }

    /// Work that waits on time or state: due rotations, rosters.
    fn flush(&mut self, now: u64) {
        self.last_now = now;
        let rotation_due = matches!(&self.part, Part::Distributor(m, d)
            if m.in_flight.is_none() && (d.next_rotation_at <= now
                || m.stage.rotation_due(now)
                || d.departure_rotation_at.is_some_and(|t| t <= now)));
        if rotation_due && let Err(e) = self.rotate(now) {
            self.alert(Alert::ForeignGroup {
                why: format!("rotation failed: {e}"),
            });
        }
        let Part::Distributor(m, d) = &mut self.part else {
            return;
        };
        if d.roster_at.is_some_and(|t| t <= now) {
            d.roster_at = None;
            d.dist.set_stage(m.stage.stage_map());
            let upload = d.dist.roster_upload(m.stage.identity());
            let own = VerifiedRoster::verify(
                &upload.roster,
                &self.room,
                &[m.stage.identity().public()],
                self.roster_seen,
            );
            // The fingerprints first (the server rebuilds its tree from
            // them), then the signed count and root, for everyone.
            for leaves in &upload.leaves {
                self.up(E2eeUp::RosterLeaves {
                    leaves: encode_payload(leaves),
                });
            }
            self.up(E2eeUp::Roster {
                roster: encode_payload(&upload.roster),
            });
            if let Ok(v) = own {
                self.set_roster(v, now);
            }
        }
        // A few listeners at a time, the next generation is sealed ahead,
        // so that its rotation (a ban's) sends at once.
        let Part::Distributor(m, d) = &mut self.part else {
            return;
        };
        if d.preseal_more && d.preseal_at <= now && m.in_flight.is_none() {
            d.preseal_at = now + PRESEAL_EVERY_MS;
            let left = m
                .stage
                .next_audience_key()
                .map_err(CryptoError::from)
                .and_then(|next| Ok(d.dist.preseal(&next, PRESEAL_BATCH)?));
            d.preseal_more = left.as_ref().is_ok_and(|&left| left > 0);
            if let Err(e) = left {
                // The rotation seals to everyone then, as without this.
                self.alert(Alert::ForeignGroup {
                    why: format!("sealing the next key ahead failed: {e}"),
                });
            }
        }
    }
}

fn e2ee_kind(kind: RoomKind) -> E2eeRoomKind {
    match kind {
        RoomKind::Open => E2eeRoomKind::Open,
        RoomKind::Social => E2eeRoomKind::Social,
        RoomKind::Closed => E2eeRoomKind::Closed,
    }
}

fn kind_name(kind: E2eeRoomKind) -> &'static str {
    match kind {
        E2eeRoomKind::Open => RoomKind::Open.as_str(),
        E2eeRoomKind::Social => RoomKind::Social.as_str(),
        // Closed, and any kind a newer binding format may add: the
        // strictest.
        _ => RoomKind::Closed.as_str(),
    }
}

fn rc_take(rc: &mut RoomCrypto) -> Vec<ClientMessage> {
    std::mem::take(&mut rc.out)
}

/// Each member of `view` and their role.
fn role_index(view: &RoomView) -> HashMap<UserId, Role> {
    view.members
        .iter()
        .map(|m| (m.user_id.clone(), m.role))
        .collect()
}

/// Brings `roles` to `view`'s members: one lookup per member, an
/// allocation only for a member not seen before, and a pass to drop
/// leavers only when someone left.
fn update_roles(roles: &mut HashMap<UserId, Role>, view: &RoomView) {
    for m in &view.members {
        match roles.get_mut(&m.user_id) {
            Some(role) => *role = m.role,
            None => {
                roles.insert(m.user_id.clone(), m.role);
            }
        }
    }
    if roles.len() != view.members.len() {
        let present: HashSet<&UserId> = view.members.iter().map(|m| &m.user_id).collect();
        roles.retain(|u, _| present.contains(u));
    }
}

/// The room without its plain listeners (what the core reads of members
/// beyond `roles`: the stage, and who is invited to it).
fn lean_view(view: &RoomView) -> RoomView {
    view.keeping(|m| m.role.on_stage() || m.invited_to_stage)
}

#[cfg(test)]
mod tests {
    use sotto_proto::room::{MemberView, RoomKind};

    use super::*;

    fn view(members: &[(u8, Role)]) -> RoomView {
        RoomView {
            id: RoomId::from_bytes([1; 16]),
            title: "t".into(),
            description: String::new(),
            kind: RoomKind::Open,
            ended: false,
            version: 1,
            members: members
                .iter()
                .map(|&(n, role)| MemberView {
                    user_id: UserId::from_bytes([n; 16]),
                    username: format!("u{n}"),
                    display_name: format!("U{n}"),
                    role,
                    hand_raised: false,
                    muted: false,
                    invited_to_stage: false,
                    hand_order: None,
                })
                .collect(),
            audience_count: 0,
        }
    }

    /// The role index kept up to date equals one built afresh, through
    /// joins, role changes and departures.
    #[test]
    fn the_role_index_follows_the_room() {
        let steps = [
            view(&[(0, Role::Host), (1, Role::Listener)]),
            view(&[(0, Role::Host), (1, Role::Listener), (2, Role::Listener)]),
            view(&[(0, Role::Host), (2, Role::Speaker), (1, Role::Listener)]),
            view(&[(2, Role::Host), (3, Role::Listener)]),
            view(&[]),
        ];
        let mut roles = HashMap::new();
        for v in &steps {
            update_roles(&mut roles, v);
            assert_eq!(roles, role_index(v));
        }
    }

    fn core(room: &RoomView) -> RoomCrypto {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        RoomCrypto::new(
            [7; 32],
            &UserId::from_bytes([3; 16]),
            &DeviceId("d".into()),
            room,
            TrustStore::default(),
            1,
            &mut rng,
        )
        .unwrap()
        .0
    }

    /// A core fed deltas (`handle_room_delta`) keeps the same index, lean
    /// view and unshown count as one fed each whole room, through random
    /// joins, departures, role changes, invitations and hands, in rooms
    /// shown whole (a distributor's) and light (a listener's, where most
    /// of the audience is a count).
    #[test]
    fn deltas_keep_the_core_where_whole_rooms_do() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        for light in [false, true] {
            let mut full = view(&[(0, Role::Host), (3, Role::Listener)]);
            let shown = |v: &RoomView| {
                let mut v = v.clone();
                v.audience_count = v.listeners_shown();
                if light { v.light() } else { v }
            };
            let (mut by_view, mut by_delta) = (core(&shown(&full)), core(&shown(&full)));
            let (mut deltas, mut hid) = (0, false);
            for step in 0..400u32 {
                let old = shown(&full);
                let mut next = full.clone();
                next.version += 1;
                let who = u8::try_from(rng.next_u32() % 200).unwrap() + 1;
                let at = next
                    .members
                    .iter()
                    .position(|m| m.user_id == UserId::from_bytes([who; 16]));
                match (rng.next_u32() % 6, at) {
                    (0 | 1, None) => next.members.push(MemberView {
                        user_id: UserId::from_bytes([who; 16]),
                        username: format!("u{who}"),
                        display_name: format!("U{who}"),
                        role: Role::Listener,
                        hand_raised: false,
                        muted: false,
                        invited_to_stage: false,
                        hand_order: None,
                    }),
                    (2, Some(i)) => {
                        next.members.remove(i);
                    }
                    (3, Some(i)) => {
                        let m = next.members.remove(i);
                        let role = Role::ALL[usize::try_from(rng.next_u32() % 4).unwrap()];
                        let pos = if role.on_stage() {
                            1
                        } else {
                            next.members.len()
                        };
                        next.members.insert(pos, MemberView { role, ..m });
                    }
                    (4, Some(i)) => {
                        let m = &mut next.members[i];
                        m.invited_to_stage = !m.invited_to_stage && m.role == Role::Listener;
                    }
                    (5, Some(i)) => {
                        let m = &mut next.members[i];
                        m.hand_raised = !m.hand_raised;
                        m.hand_order = m.hand_raised.then_some(next.version);
                    }
                    _ => continue,
                }
                let new = shown(&next);
                by_view
                    .handle(1, &ServerMessage::RoomState { room: new.clone() })
                    .unwrap();
                match new.diff_from(&old) {
                    Some(d) if step % 50 != 49 => {
                        deltas += 1;
                        by_delta.handle_room_delta(1, &d, &new).unwrap();
                    }
                    // Now and then (and when no delta fits) the whole room.
                    _ => {
                        by_delta
                            .handle(1, &ServerMessage::RoomState { room: new.clone() })
                            .unwrap();
                    }
                }
                full = next;
                assert_eq!(by_delta.roles, by_view.roles, "step {step}");
                assert_eq!(by_delta.view, by_view.view, "step {step}");
                assert_eq!(
                    by_delta.listeners_shown, by_view.listeners_shown,
                    "step {step}"
                );
                assert_eq!(
                    by_delta.audience_unshown(),
                    new.audience_unshown(),
                    "step {step}"
                );
                assert_eq!(by_delta.my_role(), by_view.my_role(), "step {step}");
                hid |= new.audience_unshown() > 0;
            }
            assert!(deltas > 150, "most changes went in as deltas ({deltas})");
            assert_eq!(hid, light, "the light rooms (only) hid some listeners");
        }
    }
}
