//! The audience tier: listeners are not MLS members. A listener presents a
//! fresh HPKE key signed by its identity key; a stage member's client (the
//! key distributor) verifies it and seals the current audience secret to it
//! (RFC 9180 base mode, X25519 / HKDF-SHA256 / AES-128-GCM). The distributor
//! signs the roster of admitted listeners.
//!
//! HPKE base mode says nothing about *who* sealed, and the server sees every
//! listener's HPKE public key. So once per generation the distributor signs
//! a **key statement** with its identity key: (room, generation, its
//! identity, a commitment to the secret — [`AudienceKey::commitment`]). It
//! is broadcast once, not per listener; a listener installs a key it opened
//! only if the key's commitment matches a statement signed by a stage member
//! for that room and generation ([`Listener::open`]). The distributor's cost
//! per listener stays one HPKE seal.
//!
//! Types carry the checks: a [`JoinRequest`] must become a
//! [`VerifiedJoinRequest`] before [`Distributor::admit`] accepts it, and only
//! `admit` makes an [`AdmittedListener`], the only thing sealed to. A key
//! statement must become a [`VerifiedKeyStatement`] before
//! [`Listener::open`] takes it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use openmls_rust_crypto::RustCrypto;
use openmls_traits::{
    crypto::OpenMlsCrypto,
    types::{HpkeAeadType, HpkeCiphertext, HpkeConfig, HpkeKdfType, HpkeKemType, HpkePrivateKey},
};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroize;

use crate::codec::{Reader, Writer};
use crate::error::{
    AdmitError, FrameError, JoinRequestError, KeyStatementError, OpenError, RosterError, WireError,
};
use crate::frame::{KeyRing, Suite};
use crate::identity::{DeviceIdentity, Fingerprint, IdentityKey, MAX_ID_LEN};
use crate::keys::{AudienceKey, KeyGeneration};
use crate::roster::{RosterLeaves, RosterProofs, RosterTree};
use crate::secret::Secret32;

const HPKE: HpkeConfig = HpkeConfig(
    HpkeKemType::DhKem25519,
    HpkeKdfType::HkdfSha256,
    HpkeAeadType::AesGcm128,
);
const JOIN_DOMAIN: &[u8] = b"sotto listener join request v1\0";
const ROSTER_DOMAIN: &[u8] = b"sotto listener roster v5\0";
const STATEMENT_DOMAIN: &[u8] = b"sotto audience key statement v1\0";
const SEAL_INFO: &[u8] = b"sotto audience key v1";

/// Longest lifetime of a join request, in milliseconds (10 minutes).
pub const MAX_JOIN_REQUEST_TTL_MS: u64 = 10 * 60 * 1000;
/// From this many listeners a rotation seals on several threads.
#[cfg(not(target_arch = "wasm32"))]
const PARALLEL_SEAL_MIN: usize = 256;
/// Length of a sealed delivery on the wire, in bytes.
pub const SEALED_DELIVERY_LEN: usize = 4 + 8 + 4 + 32 + 48;
pub use sotto_delivery::roster::{
    MAX_ROSTER_LEN, MAX_STAGE_MAP_LEN, RosterVersion, SignedRoster, parse_signed_roster,
    roster_header,
};
/// Length of a key statement for a room id of `room_id_len` bytes.
pub const fn key_statement_len(room_id_len: usize) -> usize {
    4 + 2 + room_id_len + 8 + 4 + 32 + 32 + 64
}

/// A listener's HPKE key pair for one join. The private key is zeroized on
/// drop and never printed.
pub struct ListenerKeys {
    private: HpkePrivateKey,
    public: [u8; 32],
}

impl std::fmt::Debug for ListenerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerKeys")
            .field("public", &self.public)
            .field("private", &"<redacted>")
            .finish()
    }
}

impl Drop for ListenerKeys {
    fn drop(&mut self) {
        // HpkePrivateKey wraps a zeroizing buffer; overwrite our copy anyway.
        self.public.zeroize();
    }
}

/// A parsed but **unverified** listener join request. Verify it with
/// [`JoinRequest::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    room_id: Vec<u8>,
    identity: [u8; 32],
    hpke_public: [u8; 32],
    expires_at_ms: u64,
    signature: [u8; 64],
    raw: Vec<u8>,
}

fn join_signed_part(
    room_id: &[u8],
    identity: &[u8; 32],
    hpke: &[u8; 32],
    expires_at_ms: u64,
) -> Vec<u8> {
    let mut w = Writer::default();
    w.raw(b"SJR1")
        .bytes16(room_id)
        .raw(identity)
        .raw(hpke)
        .u64(expires_at_ms);
    w.buf
}

impl JoinRequest {
    /// Make a fresh HPKE key pair and a join request signed by `identity`.
    /// Returns the request bytes (to send) and the keys (to keep).
    pub fn create(
        identity: &DeviceIdentity,
        room_id: &[u8],
        expires_at_ms: u64,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<(Vec<u8>, ListenerKeys), JoinRequestError> {
        let mut ikm = [0u8; 32];
        rng.fill_bytes(&mut ikm);
        let pair = RustCrypto::default()
            .derive_hpke_keypair(HPKE, &ikm)
            .map_err(|_| JoinRequestError::BadHpkeKey)?;
        ikm.zeroize();
        let public: [u8; 32] = pair
            .public
            .as_slice()
            .try_into()
            .map_err(|_| JoinRequestError::BadHpkeKey)?;
        let room_id = &room_id[..room_id.len().min(MAX_ID_LEN)];
        let mut bytes = join_signed_part(
            room_id,
            &identity.public().to_bytes(),
            &public,
            expires_at_ms,
        );
        let sig = identity.sign(JOIN_DOMAIN, &bytes);
        bytes.extend_from_slice(&sig);
        Ok((
            bytes,
            ListenerKeys {
                private: pair.private,
                public,
            },
        ))
    }

    /// Parse a join request received from the network. Fuzzed.
    pub fn parse(bytes: &[u8]) -> Result<Self, JoinRequestError> {
        let mut r = Reader::new(bytes);
        r.magic(b"SJR1")?;
        let room_id = r.bytes16(MAX_ID_LEN)?.to_vec();
        let identity = r.array::<32>()?;
        let hpke_public = r.array::<32>()?;
        let expires_at_ms = r.u64()?;
        let signature = r.array::<64>()?;
        r.finish()?;
        Ok(Self {
            room_id,
            identity,
            hpke_public,
            expires_at_ms,
            signature,
            raw: bytes.to_vec(),
        })
    }

    /// The identity key the request claims (to look up the registered one).
    pub fn claimed_identity(&self) -> &[u8; 32] {
        &self.identity
    }

    /// Verify against the listener's **registered** identity key (from the
    /// directory), the room, and the time. Only this makes a
    /// [`VerifiedJoinRequest`].
    pub fn verify(
        self,
        registered: &IdentityKey,
        room_id: &[u8],
        now_ms: u64,
    ) -> Result<VerifiedJoinRequest, JoinRequestError> {
        if self.identity != registered.to_bytes() {
            return Err(JoinRequestError::IdentityMismatch);
        }
        let signed = join_signed_part(
            &self.room_id,
            &self.identity,
            &self.hpke_public,
            self.expires_at_ms,
        );
        if !registered.verify(JOIN_DOMAIN, &signed, &self.signature) {
            return Err(JoinRequestError::BadSignature);
        }
        if self.room_id != room_id {
            return Err(JoinRequestError::WrongRoom);
        }
        if now_ms >= self.expires_at_ms {
            return Err(JoinRequestError::Expired);
        }
        if self.expires_at_ms - now_ms > MAX_JOIN_REQUEST_TTL_MS {
            return Err(JoinRequestError::ExpiryTooFar);
        }
        if self.hpke_public == [0u8; 32] {
            return Err(JoinRequestError::BadHpkeKey);
        }
        Ok(VerifiedJoinRequest {
            identity: *registered,
            hpke_public: self.hpke_public,
            raw: self.raw,
        })
    }
}

/// A join request whose signature, identity, room and expiry were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedJoinRequest {
    identity: IdentityKey,
    hpke_public: [u8; 32],
    raw: Vec<u8>,
}

impl VerifiedJoinRequest {
    /// The listener's identity key.
    pub fn identity(&self) -> &IdentityKey {
        &self.identity
    }
}

/// A listener the distributor admitted. Carries the original signed request
/// so that another stage member (a co-distributor) can verify it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedListener {
    fingerprint: Fingerprint,
    hpke_public: [u8; 32],
    request: Vec<u8>,
    /// The account the admitting client verified the key belongs to
    /// ([`Distributor::admit_for`]); `None`: counted as an account of its
    /// own.
    account: Option<Vec<u8>>,
}

impl AdmittedListener {
    /// The listener's identity fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
    /// The signed join request it was admitted with.
    pub fn request(&self) -> &[u8] {
        &self.request
    }
}

/// One sealed audience key for one listener (about 100 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedDelivery {
    /// Whose mailbox it goes to.
    pub recipient: Fingerprint,
    /// The sealed bytes ([`SEALED_DELIVERY_LEN`] long).
    pub bytes: Vec<u8>,
}

fn seal_aad(room_id: &[u8], fp: &Fingerprint, g: KeyGeneration) -> Vec<u8> {
    let mut w = Writer::default();
    w.raw(b"sotto sealed audience key v1")
        .bytes16(room_id)
        .raw(&fp.0)
        .u64(g.epoch)
        .u32(g.rotation);
    w.buf
}

fn seal(
    crypto: &RustCrypto,
    room_id: &[u8],
    to: &AdmittedListener,
    key: &AudienceKey,
) -> Result<SealedDelivery, AdmitError> {
    let g = key.generation();
    let aad = seal_aad(room_id, &to.fingerprint, g);
    let ct = crypto
        .hpke_seal(HPKE, &to.hpke_public, SEAL_INFO, &aad, key.secret.expose())
        .map_err(|e| AdmitError::Seal(format!("{e:?}")))?;
    let mut w = Writer::default();
    w.raw(b"SSD1")
        .u64(g.epoch)
        .u32(g.rotation)
        .raw(ct.kem_output.as_slice())
        .raw(ct.ciphertext.as_slice());
    if w.buf.len() != SEALED_DELIVERY_LEN {
        return Err(AdmitError::Seal("unexpected sealed length".into()));
    }
    Ok(SealedDelivery {
        recipient: to.fingerprint,
        bytes: w.buf,
    })
}

/// Parsed sealed delivery (not opened). Fuzzed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedParts {
    /// key generation it claims
    pub generation: KeyGeneration,
    kem_output: [u8; 32],
    ciphertext: [u8; 48],
}

/// Parse a sealed delivery's framing. Facing the network; fuzzed.
pub fn parse_sealed(bytes: &[u8]) -> Result<SealedParts, WireError> {
    let mut r = Reader::new(bytes);
    r.magic(b"SSD1")?;
    let epoch = r.u64()?;
    let rotation = r.u32()?;
    let kem_output = r.array::<32>()?;
    let ciphertext = r.array::<48>()?;
    r.finish()?;
    Ok(SealedParts {
        generation: KeyGeneration { epoch, rotation },
        kem_output,
        ciphertext,
    })
}

fn statement_signed_part(
    room_id: &[u8],
    g: KeyGeneration,
    signer: &[u8; 32],
    commitment: &[u8; 32],
) -> Vec<u8> {
    let mut w = Writer::default();
    w.raw(b"SKS1")
        .bytes16(room_id)
        .u64(g.epoch)
        .u32(g.rotation)
        .raw(signer)
        .raw(commitment);
    w.buf
}

/// Sign the key statement of `key` for `room_id`: one Ed25519 signature per
/// generation, broadcast to every listener (the sealed deliveries are not
/// signed one by one). [`Distributor::rotate`] does this; co-distributors
/// sealing with [`Distributor::seal_shard`] may sign their own or relay the
/// lead distributor's.
pub fn sign_key_statement(signer: &DeviceIdentity, room_id: &[u8], key: &AudienceKey) -> Vec<u8> {
    let mut bytes = statement_signed_part(
        room_id,
        key.generation(),
        &signer.public().to_bytes(),
        &key.commitment(room_id),
    );
    let sig = signer.sign(STATEMENT_DOMAIN, &bytes);
    bytes.extend_from_slice(&sig);
    bytes
}

/// A key statement whose signature, signer and room were checked: a stage
/// member vouches that the secret of `generation` has this commitment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKeyStatement {
    room_id: Vec<u8>,
    signer: IdentityKey,
    generation: KeyGeneration,
    commitment: [u8; 32],
}

impl VerifiedKeyStatement {
    /// Parse and verify a key statement: signed by one of `trusted` (the
    /// room's stage members, as for rosters), for `room_id`. Fuzzed.
    pub fn verify(
        bytes: &[u8],
        room_id: &[u8],
        trusted: &[IdentityKey],
    ) -> Result<Self, KeyStatementError> {
        let mut r = Reader::new(bytes);
        r.magic(b"SKS1")?;
        let room = r.bytes16(MAX_ID_LEN)?;
        let epoch = r.u64()?;
        let rotation = r.u32()?;
        let signer = r.array::<32>()?;
        let commitment = r.array::<32>()?;
        let signed_len = bytes.len().saturating_sub(64);
        let sig = r.array::<64>()?;
        r.finish()?;
        let signer = IdentityKey::from_bytes(&signer).ok_or(KeyStatementError::BadSignature)?;
        if !trusted.contains(&signer) {
            return Err(KeyStatementError::UntrustedSigner);
        }
        if !signer.verify(STATEMENT_DOMAIN, &bytes[..signed_len], &sig) {
            return Err(KeyStatementError::BadSignature);
        }
        if room != room_id {
            return Err(KeyStatementError::WrongRoom);
        }
        Ok(Self {
            room_id: room.to_vec(),
            signer,
            generation: KeyGeneration { epoch, rotation },
            commitment,
        })
    }

    /// The stage member who signed it.
    pub fn signer(&self) -> &IdentityKey {
        &self.signer
    }

    /// The generation it vouches for.
    pub fn generation(&self) -> KeyGeneration {
        self.generation
    }
}

/// What a rotation produces: one key statement for everyone, one sealed
/// delivery per remaining listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The signed key statement of the new generation: broadcast it to every
    /// listener (once, not per listener).
    pub statement: Vec<u8>,
    /// One sealed delivery per remaining listener.
    pub deliveries: Vec<SealedDelivery>,
}

/// The stage group as the distributor saw it when it signed a roster: each
/// member's leaf (the sender part of its frames' KIDs) and device key, and
/// the epoch's room code digest ([`crate::identity::room_code_digest`]).
/// Listeners are not in the group: this is how they learn who sends which
/// frames, and the room code stage members read — vouched for by a stage
/// member's signature, never by the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageMap {
    /// The stage epoch it describes.
    pub epoch: u64,
    /// (leaf index, device identity key), by leaf.
    pub members: Vec<(u32, [u8; 32])>,
    /// The epoch's room code digest.
    pub code_digest: [u8; 32],
}

impl StageMap {
    /// The device key at `leaf`.
    pub fn key_at(&self, leaf: u32) -> Option<&[u8; 32]> {
        self.members
            .binary_search_by_key(&leaf, |(l, _)| *l)
            .ok()
            .map(|i| &self.members[i].1)
    }

    /// The room code stage members read in this epoch.
    pub fn room_code(&self) -> String {
        crate::identity::room_code_from_digest(&self.code_digest)
    }
}

/// Who may listen to a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoomKind {
    /// Anyone not banned.
    Open,
    /// Only listeners on the allow list (e.g. followers of the speakers).
    Social,
    /// Only invited listeners (on the allow list).
    Closed,
}

/// The key distributor: a stage member's client that admits listeners,
/// seals audience keys to them, and signs the roster.
pub struct Distributor {
    room_id: Vec<u8>,
    kind: RoomKind,
    crypto: RustCrypto,
    allowed: HashSet<Fingerprint>,
    banned: HashSet<Fingerprint>,
    listeners: BTreeMap<Fingerprint, AdmittedListener>,
    key: Option<AudienceKey>,
    statement: Vec<u8>,
    roster_seq: u64,
    stage: StageMap,
    /// The listeners behind the last roster uploaded, and its version: the
    /// next upload sends only the changes (None: the whole list).
    uploaded: Option<(RosterVersion, BTreeSet<Fingerprint>)>,
    /// The next generation sealed ahead of its rotation ([`Self::preseal`]).
    presealed: Option<Presealed>,
}

/// Deliveries of the next generation's key, sealed while nothing is due so
/// that its rotation (a ban's above all) sends at once instead of sealing
/// to everyone first. Never sent before that rotation, and then only to
/// listeners still admitted.
struct Presealed {
    key: AudienceKey,
    /// Admitted listeners not sealed to yet (may repeat, or have left).
    todo: Vec<Fingerprint>,
    done: HashMap<Fingerprint, SealedDelivery>,
}

/// A signed roster and the chunks of listener fingerprints the server
/// needs to answer proofs against it: send the chunks first, in order.
#[derive(Debug, Clone)]
pub struct RosterUpload {
    /// [`RosterLeaves`] chunks (`E2eeUp::RosterLeaves`), at least one.
    pub leaves: Vec<Vec<u8>>,
    /// The signed roster (`E2eeUp::Roster`).
    pub roster: Vec<u8>,
}

impl std::fmt::Debug for Distributor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distributor")
            .field("kind", &self.kind)
            .field("listeners", &self.listeners.len())
            .field("banned", &self.banned.len())
            .field(
                "generation",
                &self.key.as_ref().map(AudienceKey::generation),
            )
            .finish_non_exhaustive()
    }
}

impl Distributor {
    /// A distributor for `room_id` holding `key` (from the stage group),
    /// signing key statements as `signer` (its stage identity).
    pub fn new(room_id: &[u8], kind: RoomKind, key: AudienceKey, signer: &DeviceIdentity) -> Self {
        let statement = sign_key_statement(signer, room_id, &key);
        Self {
            room_id: room_id.to_vec(),
            kind,
            crypto: RustCrypto::default(),
            allowed: HashSet::new(),
            banned: HashSet::new(),
            listeners: BTreeMap::new(),
            key: Some(key),
            statement,
            roster_seq: 0,
            stage: StageMap::default(),
            uploaded: None,
            presealed: None,
        }
    }

    /// The signed key statement of the current generation: send it with
    /// every sealed delivery [`Self::admit`] returns.
    pub fn statement(&self) -> &[u8] {
        &self.statement
    }

    /// Allow a listener in a social or closed room.
    pub fn allow(&mut self, fp: Fingerprint) {
        self.allowed.insert(fp);
    }

    /// The generation currently sealed to listeners.
    pub fn generation(&self) -> Option<KeyGeneration> {
        self.key.as_ref().map(AudienceKey::generation)
    }

    /// Admitted listeners.
    pub fn listeners(&self) -> impl Iterator<Item = &AdmittedListener> {
        self.listeners.values()
    }

    /// Number of admitted listeners.
    pub fn len(&self) -> usize {
        self.listeners.len()
    }

    /// Whether no listener is admitted.
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    /// Admit a verified listener: check bans and the room kind, then seal the
    /// current audience key to it. O(1): one HPKE seal. The listener counts
    /// as an account of its own in the roster ([`Self::admit_for`] names
    /// the account).
    pub fn admit(&mut self, req: VerifiedJoinRequest) -> Result<SealedDelivery, AdmitError> {
        self.admit_as(req, None)
    }

    /// [`Self::admit`] a listener whose key the caller verified to be a
    /// device of `account` (its account id, as the caller knows it): the
    /// roster counts an account listening from several devices once.
    pub fn admit_for(
        &mut self,
        req: VerifiedJoinRequest,
        account: &[u8],
    ) -> Result<SealedDelivery, AdmitError> {
        self.admit_as(req, Some(account.to_vec()))
    }

    fn admit_as(
        &mut self,
        req: VerifiedJoinRequest,
        account: Option<Vec<u8>>,
    ) -> Result<SealedDelivery, AdmitError> {
        let fingerprint = req.identity.fingerprint();
        if self.banned.contains(&fingerprint) {
            return Err(AdmitError::Banned);
        }
        if self.kind != RoomKind::Open && !self.allowed.contains(&fingerprint) {
            return Err(AdmitError::NotAllowed);
        }
        let listener = AdmittedListener {
            fingerprint,
            hpke_public: req.hpke_public,
            request: req.raw,
            account,
        };
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| AdmitError::Seal("no audience key".into()))?;
        let sealed = seal(&self.crypto, &self.room_id, &listener, key)?;
        self.listeners.insert(fingerprint, listener);
        if let Some(p) = &mut self.presealed {
            // Sealed again ahead: a refreshed request may bring a new key.
            p.done.remove(&fingerprint);
            p.todo.push(fingerprint);
        }
        Ok(sealed)
    }

    /// Seal `next` (the stage's next audience key) ahead of its rotation to
    /// up to `budget` admitted listeners not sealed to yet; a key of
    /// another generation starts over. Returns how many are left. Call it
    /// while nothing is due: [`Self::rotate`] with that key then seals only
    /// to listeners admitted since.
    pub fn preseal(&mut self, next: &AudienceKey, budget: usize) -> Result<usize, AdmitError> {
        if self
            .presealed
            .as_ref()
            .is_none_or(|p| p.key.generation() != next.generation())
        {
            self.presealed = Some(Presealed {
                key: next.clone(),
                todo: self.listeners.keys().copied().collect(),
                done: HashMap::new(),
            });
        }
        let Some(p) = &mut self.presealed else {
            return Ok(0);
        };
        let mut sealed = 0;
        while sealed < budget {
            let Some(fp) = p.todo.pop() else { break };
            if p.done.contains_key(&fp) {
                continue;
            }
            let Some(l) = self.listeners.get(&fp) else {
                continue;
            };
            p.done
                .insert(fp, seal(&self.crypto, &self.room_id, l, &p.key)?);
            sealed += 1;
        }
        Ok(p.todo.len())
    }

    /// Listeners [`Self::preseal`] has yet to seal to (an upper bound).
    pub fn preseal_left(&self) -> usize {
        self.presealed.as_ref().map_or(0, |p| p.todo.len())
    }

    /// Ban a listener. Returns true if it was admitted: then the caller must
    /// rotate at once ([`Self::rotate`] with the stage's next key).
    pub fn ban(&mut self, fp: Fingerprint) -> bool {
        self.banned.insert(fp);
        self.listeners.remove(&fp).is_some()
    }

    /// Remove a listener who left (same consequence as a ban for keys).
    pub fn remove(&mut self, fp: Fingerprint) -> bool {
        self.listeners.remove(&fp).is_some()
    }

    /// Install `key`, seal it to every remaining listener, and sign its key
    /// statement once as `signer`. Rosters signed afterwards carry the new
    /// generation (their sequence restarts at 1).
    pub fn rotate(
        &mut self,
        key: AudienceKey,
        signer: &DeviceIdentity,
    ) -> Result<Rotation, AdmitError> {
        // Sealed ahead to this generation: only listeners still admitted
        // get theirs (a banned or departed one is no longer listed).
        let mut ahead = self
            .presealed
            .take()
            .filter(|p| p.key.generation() == key.generation())
            .map(|p| p.done)
            .unwrap_or_default();
        ahead.retain(|fp, _| self.listeners.contains_key(fp));
        let mut deliveries = self.seal_all(&key, &ahead)?;
        deliveries.extend(ahead.into_values());
        let statement = sign_key_statement(signer, &self.room_id, &key);
        if self.generation() != Some(key.generation()) {
            self.roster_seq = 0;
        }
        self.key = Some(key);
        self.statement = statement.clone();
        Ok(Rotation {
            statement,
            deliveries,
        })
    }

    /// Continue the roster sequence after `last`, the newest roster this
    /// room's listeners may have seen (e.g. the predecessor's, when a stage
    /// member takes over distribution without a rotation). Rosters of a
    /// later generation need nothing: they are newer anyway.
    pub fn resume_after(&mut self, last: RosterVersion) {
        if self.generation() == Some(KeyGeneration::from(last)) {
            self.roster_seq = self.roster_seq.max(last.seq);
        }
    }

    /// Seal `key` to every admitted listener: on as many threads as the
    /// machine has cores (up to 8) when there are enough listeners for it
    /// to pay (native builds; the browser seals on one).
    fn seal_all(
        &self,
        key: &AudienceKey,
        ahead: &HashMap<Fingerprint, SealedDelivery>,
    ) -> Result<Vec<SealedDelivery>, AdmitError> {
        let all: Vec<&AdmittedListener> = self
            .listeners
            .values()
            .filter(|l| !ahead.contains_key(&l.fingerprint))
            .collect();
        #[cfg(not(target_arch = "wasm32"))]
        {
            let threads = std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .min(8);
            if threads > 1 && all.len() >= PARALLEL_SEAL_MIN {
                let per = all.len().div_ceil(threads);
                return std::thread::scope(|s| {
                    let parts: Vec<_> = all
                        .chunks(per)
                        .map(|part| {
                            s.spawn(move || {
                                part.iter()
                                    .map(|l| seal(&self.crypto, &self.room_id, l, key))
                                    .collect::<Result<Vec<_>, _>>()
                            })
                        })
                        .collect();
                    let mut out = Vec::with_capacity(all.len());
                    for p in parts {
                        let sealed = p
                            .join()
                            .map_err(|_| AdmitError::Seal("a sealing thread panicked".into()))?;
                        out.extend(sealed?);
                    }
                    Ok(out)
                });
            }
        }
        all.into_iter()
            .map(|l| seal(&self.crypto, &self.room_id, l, key))
            .collect()
    }

    /// Seal `key` to the listeners of shard `index` of `count`, so that the
    /// work of a rotation can be split among stage members.
    pub fn seal_shard(
        &self,
        key: &AudienceKey,
        index: u32,
        count: u32,
    ) -> Result<Vec<SealedDelivery>, AdmitError> {
        let count = count.max(1);
        self.listeners
            .values()
            .filter(|l| {
                u32::from_be_bytes([
                    l.fingerprint.0[0],
                    l.fingerprint.0[1],
                    l.fingerprint.0[2],
                    l.fingerprint.0[3],
                ]) % count
                    == index
            })
            .map(|l| seal(&self.crypto, &self.room_id, l, key))
            .collect()
    }

    /// The stage map the next rosters carry (empty until set). Members
    /// beyond [`MAX_STAGE_MAP_LEN`] are left out; they are kept by leaf.
    pub fn set_stage(&mut self, mut stage: StageMap) {
        stage.members.sort_unstable_by_key(|(leaf, _)| *leaf);
        stage.members.dedup_by_key(|(leaf, _)| *leaf);
        stage.members.truncate(MAX_STAGE_MAP_LEN);
        self.stage = stage;
    }

    /// Sign the roster of admitted listeners — their count and the root of
    /// the tree over their fingerprints ([`crate::roster`]) — and the stage
    /// map with the distributor's identity. Its version is (current
    /// generation, next sequence number). Send it with
    /// [`Self::roster_upload`]; this alone is the signed header.
    pub fn roster(&mut self, signer: &DeviceIdentity) -> Vec<u8> {
        self.roster_seq = self.roster_seq.saturating_add(1);
        let v = self.roster_version();
        let tree = RosterTree::new(self.listeners.keys().copied().collect());
        // The accounts behind the keys: one per named account, and each
        // key admitted without one as an account of its own.
        let mut named: HashSet<&[u8]> = HashSet::new();
        let mut unnamed = 0usize;
        for l in self.listeners.values() {
            match &l.account {
                Some(a) => {
                    named.insert(a);
                }
                None => unnamed += 1,
            }
        }
        let accounts = named.len() + unnamed;
        let mut w = Writer::default();
        w.raw(b"SRS5")
            .bytes16(&self.room_id)
            .raw(&signer.public().to_bytes())
            .u64(v.epoch)
            .u32(v.rotation)
            .u64(v.seq)
            .u32(u32::try_from(tree.len()).unwrap_or(u32::MAX))
            .u32(u32::try_from(accounts).unwrap_or(u32::MAX))
            .raw(&tree.root())
            .u64(self.stage.epoch)
            .u16(u16::try_from(self.stage.members.len()).unwrap_or(u16::MAX));
        for (leaf, key) in &self.stage.members {
            w.u32(*leaf).raw(key);
        }
        w.raw(&self.stage.code_digest);
        let sig = signer.sign(ROSTER_DOMAIN, &w.buf);
        w.raw(&sig);
        w.buf
    }

    /// A new signed roster, and the listener fingerprints the server needs
    /// for it: the changes since the last upload, or the whole list after
    /// [`Self::forget_upload`] (or the first time).
    pub fn roster_upload(&mut self, signer: &DeviceIdentity) -> RosterUpload {
        let roster = self.roster(signer);
        let now: BTreeSet<Fingerprint> = self.listeners.keys().copied().collect();
        let base = self.uploaded.as_ref().map(|(v, set)| (*v, set));
        let leaves = RosterLeaves::chunks(base, &now);
        self.uploaded = Some((self.roster_version(), now));
        RosterUpload { leaves, roster }
    }

    /// The version of the roster signed last: (current generation, its
    /// sequence number).
    fn roster_version(&self) -> RosterVersion {
        let g = self.generation().unwrap_or(KeyGeneration {
            epoch: 0,
            rotation: 0,
        });
        RosterVersion {
            epoch: g.epoch,
            rotation: g.rotation,
            seq: self.roster_seq,
        }
    }

    /// The server lost (or never had) the list behind the last upload: the
    /// next [`Self::roster_upload`] sends all of it.
    pub fn forget_upload(&mut self) {
        self.uploaded = None;
    }
}

/// A roster whose signature, signer and room were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRoster {
    signer: IdentityKey,
    version: RosterVersion,
    count: u32,
    accounts: u32,
    root: [u8; 32],
    stage: StageMap,
}

impl VerifiedRoster {
    /// Verify a roster: signed by one of `trusted` (the room's stage members
    /// allowed to distribute), for `room_id`, newer than `last_seen`
    /// (`RosterVersion::default()` if none was seen). Versions are ordered
    /// the same way whichever stage member signed them.
    pub fn verify(
        bytes: &[u8],
        room_id: &[u8],
        trusted: &[IdentityKey],
        last_seen: RosterVersion,
    ) -> Result<Self, RosterError> {
        let p = parse_signed_roster(bytes)?;
        let signer = IdentityKey::from_bytes(&p.signer).ok_or(RosterError::BadSignature)?;
        if !trusted.contains(&signer) {
            return Err(RosterError::UntrustedSigner);
        }
        if !signer.verify(ROSTER_DOMAIN, p.signed, &p.sig) {
            return Err(RosterError::BadSignature);
        }
        if p.room != room_id {
            return Err(RosterError::WrongRoom);
        }
        let version = p.header.version;
        if version <= last_seen {
            return Err(RosterError::Rollback {
                got: version,
                seen: last_seen,
            });
        }
        Ok(Self {
            signer,
            version,
            count: p.header.count,
            accounts: p.accounts,
            root: p.header.root,
            stage: StageMap {
                epoch: p.stage_epoch,
                members: p.stage_members,
                code_digest: p.code_digest,
            },
        })
    }

    /// Checks the server's answers to a proof request against this roster:
    /// each fingerprint with whether it is listed. Answers for another
    /// version are [`RosterError::OtherVersion`] (ask again); any proof
    /// that does not verify makes the whole answer
    /// [`RosterError::BadProof`] — the server lied.
    pub fn check_proofs(&self, bytes: &[u8]) -> Result<Vec<(Fingerprint, bool)>, RosterError> {
        let answer = RosterProofs::parse(bytes)?;
        if answer.version != self.version {
            return Err(RosterError::OtherVersion);
        }
        answer
            .proofs
            .iter()
            .map(|(fp, proof)| {
                sotto_delivery::roster::check_proof(&self.root, self.count, fp, proof)
                    .map(|listed| (*fp, listed))
                    .ok_or(RosterError::BadProof)
            })
            .collect()
    }

    /// The stage map it carries (None if it lists no stage member).
    pub fn stage(&self) -> Option<&StageMap> {
        (!self.stage.members.is_empty()).then_some(&self.stage)
    }

    /// Who signed it.
    pub fn signer(&self) -> &IdentityKey {
        &self.signer
    }
    /// Its version (monotonic across the room's distributors).
    pub fn version(&self) -> RosterVersion {
        self.version
    }
    /// The key generation it describes.
    pub fn generation(&self) -> KeyGeneration {
        KeyGeneration::from(self.version)
    }
    /// How many listeners it lists.
    pub fn count(&self) -> u32 {
        self.count
    }
    /// How many accounts those listeners are, as the distributor verified
    /// them (≤ [`Self::count`]).
    pub fn accounts(&self) -> u32 {
        self.accounts
    }
    /// The root of the tree over the listed fingerprints.
    pub fn root(&self) -> &[u8; 32] {
        &self.root
    }
}

/// A listener's E2EE state: its HPKE keys and receive key ring.
pub struct Listener {
    room_id: Vec<u8>,
    fingerprint: Fingerprint,
    keys: ListenerKeys,
    ring: KeyRing,
    crypto: RustCrypto,
    roster_seen: RosterVersion,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("fingerprint", &self.fingerprint)
            .field("ring", &self.ring)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Test-only (feature `audit`): the receive secrets and the HPKE private
    /// key this listener holds.
    #[cfg(feature = "audit")]
    pub fn audit_secrets(&self) -> Vec<Vec<u8>> {
        let mut out = self.ring.audit_secrets();
        out.push(self.keys.private.to_vec());
        out
    }

    /// A listener of `room_id` with identity `identity` and the keys made by
    /// [`JoinRequest::create`].
    pub fn new(
        room_id: &[u8],
        identity: &IdentityKey,
        keys: ListenerKeys,
        suite: Suite,
        grace_ms: u64,
    ) -> Self {
        Self {
            room_id: room_id.to_vec(),
            fingerprint: identity.fingerprint(),
            keys,
            ring: KeyRing::new(suite, grace_ms),
            crypto: RustCrypto::default(),
            roster_seen: RosterVersion::default(),
        }
    }

    /// Verify a key statement for this listener's room against `trusted`
    /// (the room's stage members, from the signed directory, as for
    /// rosters).
    pub fn verify_statement(
        &self,
        bytes: &[u8],
        trusted: &[IdentityKey],
    ) -> Result<VerifiedKeyStatement, KeyStatementError> {
        VerifiedKeyStatement::verify(bytes, &self.room_id, trusted)
    }

    /// Open a sealed delivery and install its key at `now_ms` — only if the
    /// key is the one a stage member vouched for in `statement` (same room
    /// and generation, matching commitment). A key sealed by anyone else
    /// (HPKE base mode does not say who sealed) is refused with
    /// [`OpenError::UnauthenticatedKey`] and never installed.
    pub fn open(
        &mut self,
        now_ms: u64,
        sealed: &[u8],
        statement: &VerifiedKeyStatement,
    ) -> Result<KeyGeneration, OpenError> {
        let parts = parse_sealed(sealed)?;
        let g = parts.generation;
        if statement.generation != g || statement.room_id != self.room_id {
            return Err(OpenError::StatementMismatch);
        }
        if self.ring.current().is_some_and(|c| g < c) && !self.ring.holds(g) {
            // Older than what we have: useless (and never a downgrade).
            return Err(OpenError::Old);
        }
        let aad = seal_aad(&self.room_id, &self.fingerprint, g);
        let input = HpkeCiphertext {
            kem_output: parts.kem_output.to_vec().into(),
            ciphertext: parts.ciphertext.to_vec().into(),
        };
        let mut plain = self
            .crypto
            .hpke_open(HPKE, &input, &self.keys.private, SEAL_INFO, &aad)
            .map_err(|_| OpenError::NotForUs)?;
        let secret = Secret32::from_slice(&plain).ok_or(OpenError::NotForUs);
        plain.zeroize();
        let key = AudienceKey::new(g, secret?);
        if key.commitment(&self.room_id) != statement.commitment {
            return Err(OpenError::UnauthenticatedKey);
        }
        self.ring.install(key, now_ms);
        Ok(g)
    }

    /// The generation of the key that decrypted frames with `kid`.
    pub fn frame_generation(&self, kid: u64) -> Option<KeyGeneration> {
        self.ring.generation_of(kid)
    }

    /// Decrypt a speaker's frame.
    pub fn decrypt(&mut self, now_ms: u64, frame: &[u8]) -> Result<Vec<u8>, FrameError> {
        self.ring.decrypt(now_ms, frame)
    }

    /// Verify a roster (newer than the last one accepted) and remember its
    /// version.
    pub fn accept_roster(
        &mut self,
        bytes: &[u8],
        trusted: &[IdentityKey],
    ) -> Result<VerifiedRoster, RosterError> {
        let r = VerifiedRoster::verify(bytes, &self.room_id, trusted, self.roster_seen)?;
        self.roster_seen = r.version;
        Ok(r)
    }

    /// The key generation held as current.
    pub fn current_generation(&self) -> Option<KeyGeneration> {
        self.ring.current()
    }
}
