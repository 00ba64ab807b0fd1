//! The audience tier: listeners are not MLS members. A listener presents a
//! fresh HPKE key signed by its identity key; a stage member's client (the
//! key distributor) verifies it and seals the current audience secret to it
//! (RFC 9180 base mode, X25519 / HKDF-SHA256 / AES-128-GCM). The distributor
//! signs the roster of admitted listeners.
//!
//! Types carry the checks: a [`JoinRequest`] must become a
//! [`VerifiedJoinRequest`] before [`Distributor::admit`] accepts it, and only
//! `admit` makes an [`AdmittedListener`], the only thing sealed to.

use std::collections::{BTreeMap, HashSet};

use openmls_rust_crypto::RustCrypto;
use openmls_traits::{
    crypto::OpenMlsCrypto,
    types::{HpkeAeadType, HpkeCiphertext, HpkeConfig, HpkeKdfType, HpkeKemType, HpkePrivateKey},
};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroize;

use crate::codec::{Reader, Writer};
use crate::error::{AdmitError, FrameError, JoinRequestError, OpenError, RosterError, WireError};
use crate::frame::{KeyRing, Suite};
use crate::identity::{DeviceIdentity, Fingerprint, IdentityKey, MAX_ID_LEN};
use crate::keys::{AudienceKey, KeyGeneration};
use crate::secret::Secret32;

const HPKE: HpkeConfig = HpkeConfig(
    HpkeKemType::DhKem25519,
    HpkeKdfType::HkdfSha256,
    HpkeAeadType::AesGcm128,
);
const JOIN_DOMAIN: &[u8] = b"sotto listener join request v1\0";
const ROSTER_DOMAIN: &[u8] = b"sotto listener roster v1\0";
const SEAL_INFO: &[u8] = b"sotto audience key v1";

/// Longest lifetime of a join request, in milliseconds (10 minutes).
pub const MAX_JOIN_REQUEST_TTL_MS: u64 = 10 * 60 * 1000;
/// Length of a sealed delivery on the wire, in bytes.
pub const SEALED_DELIVERY_LEN: usize = 4 + 8 + 4 + 32 + 48;
/// Most listeners a roster may list.
pub const MAX_ROSTER_LEN: usize = 100_000;

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
    roster_version: u64,
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
    /// A distributor for `room_id` holding `key` (from the stage group).
    pub fn new(room_id: &[u8], kind: RoomKind, key: AudienceKey) -> Self {
        Self {
            room_id: room_id.to_vec(),
            kind,
            crypto: RustCrypto::default(),
            allowed: HashSet::new(),
            banned: HashSet::new(),
            listeners: BTreeMap::new(),
            key: Some(key),
            roster_version: 0,
        }
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
    /// current audience key to it. O(1): one HPKE seal.
    pub fn admit(&mut self, req: VerifiedJoinRequest) -> Result<SealedDelivery, AdmitError> {
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
        };
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| AdmitError::Seal("no audience key".into()))?;
        let sealed = seal(&self.crypto, &self.room_id, &listener, key)?;
        self.listeners.insert(fingerprint, listener);
        Ok(sealed)
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

    /// Install `key` and seal it to every remaining listener.
    pub fn rotate(&mut self, key: AudienceKey) -> Result<Vec<SealedDelivery>, AdmitError> {
        let out = self.seal_shard(&key, 0, 1)?;
        self.key = Some(key);
        Ok(out)
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

    /// Sign the roster of admitted listeners with the distributor's identity.
    pub fn roster(&mut self, signer: &DeviceIdentity) -> Vec<u8> {
        self.roster_version += 1;
        let g = self.generation().unwrap_or(KeyGeneration {
            epoch: 0,
            rotation: 0,
        });
        let mut w = Writer::default();
        w.raw(b"SRS1")
            .bytes16(&self.room_id)
            .raw(&signer.public().to_bytes())
            .u64(self.roster_version)
            .u64(g.epoch)
            .u32(g.rotation)
            .u32(u32::try_from(self.listeners.len()).unwrap_or(u32::MAX));
        for fp in self.listeners.keys() {
            w.raw(&fp.0);
        }
        let sig = signer.sign(ROSTER_DOMAIN, &w.buf);
        w.raw(&sig);
        w.buf
    }
}

/// A roster whose signature, signer and room were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRoster {
    signer: IdentityKey,
    version: u64,
    generation: KeyGeneration,
    listeners: Vec<Fingerprint>,
}

impl VerifiedRoster {
    /// Verify a roster: signed by one of `trusted` (the room's stage members
    /// allowed to distribute), for `room_id`, newer than `last_seen_version`.
    pub fn verify(
        bytes: &[u8],
        room_id: &[u8],
        trusted: &[IdentityKey],
        last_seen_version: u64,
    ) -> Result<Self, RosterError> {
        let mut r = Reader::new(bytes);
        r.magic(b"SRS1")?;
        let room = r.bytes16(MAX_ID_LEN)?;
        let signer = r.array::<32>()?;
        let version = r.u64()?;
        let epoch = r.u64()?;
        let rotation = r.u32()?;
        let count = r.u32()? as usize;
        if count > MAX_ROSTER_LEN {
            return Err(RosterError::Malformed(WireError::TooLong));
        }
        let fps = r.take(count.checked_mul(32).ok_or(WireError::TooLong)?)?;
        let signed_len = bytes.len().saturating_sub(64);
        let sig = r.array::<64>()?;
        r.finish()?;
        let signer = IdentityKey::from_bytes(&signer).ok_or(RosterError::BadSignature)?;
        if !trusted.contains(&signer) {
            return Err(RosterError::UntrustedSigner);
        }
        if !signer.verify(ROSTER_DOMAIN, &bytes[..signed_len], &sig) {
            return Err(RosterError::BadSignature);
        }
        if room != room_id {
            return Err(RosterError::WrongRoom);
        }
        if version <= last_seen_version {
            return Err(RosterError::Rollback {
                got: version,
                seen: last_seen_version,
            });
        }
        let listeners = fps
            .chunks_exact(32)
            .map(|c| {
                let mut a = [0u8; 32];
                a.copy_from_slice(c);
                Fingerprint(a)
            })
            .collect();
        Ok(Self {
            signer,
            version,
            generation: KeyGeneration { epoch, rotation },
            listeners,
        })
    }

    /// Who signed it.
    pub fn signer(&self) -> &IdentityKey {
        &self.signer
    }
    /// Its version (monotonic per distributor).
    pub fn version(&self) -> u64 {
        self.version
    }
    /// The key generation it describes.
    pub fn generation(&self) -> KeyGeneration {
        self.generation
    }
    /// The listed listener fingerprints.
    pub fn listeners(&self) -> &[Fingerprint] {
        &self.listeners
    }
    /// Whether `fp` is listed.
    pub fn contains(&self, fp: &Fingerprint) -> bool {
        self.listeners.binary_search(fp).is_ok() || self.listeners.contains(fp)
    }
}

/// A listener's E2EE state: its HPKE keys and receive key ring.
pub struct Listener {
    room_id: Vec<u8>,
    fingerprint: Fingerprint,
    keys: ListenerKeys,
    ring: KeyRing,
    crypto: RustCrypto,
    roster_seen: u64,
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
            roster_seen: 0,
        }
    }

    /// Open a sealed delivery and install its key at `now_ms`.
    pub fn open(&mut self, now_ms: u64, sealed: &[u8]) -> Result<KeyGeneration, OpenError> {
        let parts = parse_sealed(sealed)?;
        let g = parts.generation;
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
        self.ring.install(AudienceKey::new(g, secret?), now_ms);
        Ok(g)
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
