//! The stage group: one MLS group (RFC 9420, ciphersuite 0x0001) of hosts,
//! moderators and speakers.
//!
//! - The server is the sole external sender (index 0) of Add/Remove
//!   proposals; members only commit. A member commits an Add only if a
//!   trusted inviter (host/moderator) signed a [`crate::invitation`] for that
//!   device's identity key.
//! - Handshake messages are PublicMessages so the delivery service can
//!   validate and order them; application messages (rotation notices) are
//!   PrivateMessages.
//! - Each epoch `e` yields audience secrets `(e, r)` through the MLS
//!   exporter; `r` advances with signed-in-group rotation notices.
//! - A member never switches its *send* key at the moment it learns a new
//!   generation: it waits until the distributor's rotation notice plus
//!   `switch_delay_ms` (listeners get their sealed key first), or at most
//!   `epoch_switch_timeout_ms` after an epoch change. Receive keys are
//!   installed at once, and the previous generation still decrypts for
//!   `grace_ms`.

use openmls::prelude::{tls_codec::Deserialize as _, tls_codec::Serialize as _, *};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use rand_core::{CryptoRng, RngCore};
use sotto_delivery::STAGE_CIPHERSUITE;

use crate::audience::StageMap;
use crate::codec::{Reader, Writer};
use crate::error::{FrameError, StageError};
use crate::frame::{DEFAULT_GRACE_MS, FrameSender, KeyRing, Suite};
use crate::identity::{
    DeviceIdentity, IdentityKey, decode_credential_identity, room_code, room_code_digest,
};
use crate::invitation::VerifiedInvitation;
use crate::keys::{AUDIENCE_EXPORTER_LABEL, AudienceKey, KeyGeneration};
use crate::secret::Secret32;

/// Tunables of a stage member. All times in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct StageConfig {
    /// SFrame suite for audio.
    pub suite: Suite,
    /// How long a replaced key generation still decrypts.
    pub grace_ms: u64,
    /// Delay between receiving a rotation notice and switching the send key.
    pub switch_delay_ms: u64,
    /// Longest time a member keeps sending with the previous generation after
    /// an epoch change when no rotation notice arrives.
    pub epoch_switch_timeout_ms: u64,
    /// The distributor rotates at least this often (see
    /// [`StageMember::rotation_due`]).
    pub rotation_period_ms: u64,
}

impl Default for StageConfig {
    fn default() -> Self {
        Self {
            suite: Suite::CompactAudio,
            grace_ms: DEFAULT_GRACE_MS,
            switch_delay_ms: 200,
            epoch_switch_timeout_ms: 1_000,
            rotation_period_ms: 60_000,
        }
    }
}

/// The server's external-sender identity, as listed in the group context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalSenderInfo {
    /// Ed25519 public key the server signs proposals with.
    pub public_key: Vec<u8>,
    /// Identity bytes of its BasicCredential.
    pub credential_identity: Vec<u8>,
}

/// Messages a commit produces.
#[derive(Debug, Clone)]
pub struct CommitOut {
    /// The commit (`MlsMessage`, PublicMessage) for the delivery service.
    pub commit: Vec<u8>,
    /// A Welcome for added members, if any (without the ratchet tree).
    pub welcome: Option<Vec<u8>>,
    /// The GroupInfo (`MlsMessage`) of the epoch the commit creates, signed
    /// by the committer: upload it with
    /// `sotto_delivery::RoomDelivery::set_group_info` once the commit is
    /// accepted (the service checks it against the state the commit
    /// produced). The ratchet tree needs no upload: the service computes it
    /// from the commits.
    pub group_info: Vec<u8>,
}

/// What processing a stage message did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StageEvent {
    /// A proposal from the server was queued for the next commit.
    ProposalQueued,
    /// A commit moved the group to a new epoch.
    EpochChanged {
        /// the new epoch
        epoch: u64,
        /// signature (identity) keys of added members
        added: Vec<Vec<u8>>,
        /// leaf indices of removed members
        removed: Vec<u32>,
    },
    /// This member was removed; it holds no key of the new epoch.
    Removed,
    /// A rotation notice: the generation stage members switch to.
    Rotated(KeyGeneration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    CommitPending,
    SelfUpdate,
}

/// A device that wants to join the stage: holds its KeyPackage's private
/// keys until a Welcome arrives.
pub struct StageCandidate {
    provider: OpenMlsRustCrypto,
    identity: DeviceIdentity,
    signer: SignatureKeyPair,
}

impl std::fmt::Debug for StageCandidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageCandidate")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

fn mls_bytes(m: &MlsMessageOut) -> Result<Vec<u8>, StageError> {
    m.tls_serialize_detached()
        .map_err(|e| StageError::Internal(e.to_string()))
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .build()
}

impl StageCandidate {
    /// Make a KeyPackage (`MlsMessage` bytes) to upload to the delivery service.
    pub fn new(identity: DeviceIdentity) -> Result<(Self, Vec<u8>), StageError> {
        let provider = OpenMlsRustCrypto::default();
        let signer = identity.mls_signer();
        let bundle = KeyPackage::builder()
            .build(
                STAGE_CIPHERSUITE,
                &provider,
                &signer,
                identity.credential_with_key(),
            )
            .map_err(|e| StageError::Internal(e.to_string()))?;
        let kp = MlsMessageOut::from(bundle.key_package().clone());
        let bytes = mls_bytes(&kp)?;
        Ok((
            Self {
                provider,
                identity,
                signer,
            },
            bytes,
        ))
    }

    /// Join from a Welcome, with the ratchet tree fetched from the delivery
    /// service (it is not inside the Welcome) — only into `bound_group`, the
    /// group the room's host signed a binding for
    /// ([`crate::binding::VerifiedBinding::group_id`]).
    pub fn join(
        self,
        room_id: &[u8],
        welcome: &[u8],
        ratchet_tree: &[u8],
        bound_group: &[u8],
        config: StageConfig,
        now_ms: u64,
    ) -> Result<StageMember, StageError> {
        let msg = MlsMessageIn::tls_deserialize_exact(welcome)
            .map_err(|e| StageError::Malformed(e.to_string()))?;
        let MlsMessageBodyIn::Welcome(w) = msg.extract() else {
            return Err(StageError::Malformed("not a welcome".into()));
        };
        let tree = RatchetTreeIn::tls_deserialize_exact(ratchet_tree)
            .map_err(|e| StageError::Malformed(e.to_string()))?;
        let staged = StagedWelcome::new_from_welcome(&self.provider, &join_config(), w, Some(tree))
            .map_err(|e| StageError::Rejected(e.to_string()))?;
        if staged.group_context().group_id().as_slice() != bound_group {
            return Err(StageError::UnboundGroup);
        }
        let group = staged
            .into_group(&self.provider)
            .map_err(|e| StageError::Rejected(e.to_string()))?;
        let mut m = StageMember::from_parts(
            self.provider,
            self.identity,
            self.signer,
            group,
            room_id,
            config,
        );
        m.on_epoch_change(now_ms)?;
        Ok(m)
    }
}

/// One stage member's state: MLS group, send key, receive key ring.
pub struct StageMember {
    provider: OpenMlsRustCrypto,
    identity: DeviceIdentity,
    signer: SignatureKeyPair,
    group: MlsGroup,
    room_id: Vec<u8>,
    config: StageConfig,
    ring: KeyRing,
    sender: Option<FrameSender>,
    rotation: u32,
    announced: bool,
    pending_switch: Option<(AudienceKey, u64)>,
    intent: Option<Intent>,
    last_rotation_ms: u64,
}

impl std::fmt::Debug for StageMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageMember")
            .field("epoch", &self.epoch())
            .field("leaf", &self.leaf_index())
            .field("rotation", &self.rotation)
            .field(
                "sending",
                &self.sender.as_ref().map(FrameSender::generation),
            )
            .finish_non_exhaustive()
    }
}

impl StageMember {
    /// Test-only (feature `audit`): the receive secrets this member holds
    /// (every audience secret derived from the MLS exporter, and the SFrame
    /// base keys they yield).
    #[cfg(feature = "audit")]
    pub fn audit_secrets(&self) -> Vec<Vec<u8>> {
        self.ring.audit_secrets()
    }

    fn from_parts(
        provider: OpenMlsRustCrypto,
        identity: DeviceIdentity,
        signer: SignatureKeyPair,
        group: MlsGroup,
        room_id: &[u8],
        config: StageConfig,
    ) -> Self {
        Self {
            provider,
            identity,
            signer,
            group,
            room_id: room_id.to_vec(),
            ring: KeyRing::new(config.suite, config.grace_ms),
            config,
            sender: None,
            rotation: 0,
            announced: false,
            pending_switch: None,
            intent: None,
            last_rotation_ms: 0,
        }
    }

    /// The host creates the stage group when the room starts. Returns the
    /// member, the GroupInfo and the ratchet tree to upload to the delivery
    /// service. The group id is random (it is not the room id).
    pub fn create(
        identity: DeviceIdentity,
        room_id: &[u8],
        server: &ExternalSenderInfo,
        config: StageConfig,
        now_ms: u64,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<(Self, Vec<u8>, Vec<u8>), StageError> {
        let provider = OpenMlsRustCrypto::default();
        let signer = identity.mls_signer();
        let external = ExternalSender::new(
            server.public_key.clone().into(),
            BasicCredential::new(server.credential_identity.clone()).into(),
        );
        let extensions = Extensions::single(Extension::ExternalSenders(vec![external]))
            .map_err(|e| StageError::Internal(e.to_string()))?;
        let create = MlsGroupCreateConfig::builder()
            .ciphersuite(STAGE_CIPHERSUITE)
            .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(false)
            .with_group_context_extensions(extensions)
            .build();
        let mut gid = [0u8; 16];
        rng.fill_bytes(&mut gid);
        let group = MlsGroup::new_with_group_id(
            &provider,
            &signer,
            &create,
            GroupId::from_slice(&gid),
            identity.credential_with_key(),
        )
        .map_err(|e| StageError::Internal(e.to_string()))?;
        let mut m = Self::from_parts(provider, identity, signer, group, room_id, config);
        let gi = m.group_info()?;
        let tree = m.ratchet_tree()?;
        // Alone on the stage: the first generation is usable at once.
        let key = m.derive(0)?;
        m.ring.install(key.clone(), now_ms);
        m.sender = Some(
            FrameSender::new(m.config.suite, &key, m.leaf_index())
                .map_err(|e| StageError::Internal(e.to_string()))?,
        );
        m.announced = true;
        m.last_rotation_ms = now_ms;
        Ok((m, gi, tree))
    }

    /// Current MLS epoch.
    pub fn epoch(&self) -> u64 {
        self.group.epoch().as_u64()
    }

    /// This member's leaf index (the sender part of its KIDs).
    pub fn leaf_index(&self) -> u32 {
        self.group.own_leaf_index().u32()
    }

    /// The MLS group id (what the host's binding names).
    pub fn group_id(&self) -> Vec<u8> {
        self.group.group_id().as_slice().to_vec()
    }

    /// Every member's leaf, identity key and account id (from its
    /// credential), to check the group against the room's stage.
    pub fn member_accounts(&self) -> Vec<(u32, IdentityKey, Option<Vec<u8>>)> {
        self.group
            .members()
            .filter_map(|m| {
                let key = IdentityKey::from_bytes(&m.signature_key)?;
                Some((m.index.u32(), key, credential_account(&m.credential)))
            })
            .collect()
    }

    /// The account id in the credential of the member at `leaf`, if any:
    /// one leaf looked up, for naming a frame's sender (per frame).
    pub fn account_at(&self, leaf: u32) -> Option<Vec<u8>> {
        credential_account(self.group.member(LeafNodeIndex::new(leaf))?)
    }

    /// Whether a member's credential names `account` (no key parsing:
    /// cheap enough to ask per admission).
    pub fn has_account(&self, account: &[u8]) -> bool {
        self.group
            .members()
            .any(|m| credential_account(&m.credential).is_some_and(|a| a == account))
    }

    /// Number of stage members.
    pub fn member_count(&self) -> usize {
        self.group.members().count()
    }

    /// Every stage member's leaf index and identity key, as the group's
    /// ratchet tree (which all members agree on) shows them: the trusted set
    /// for invitations, key statements and rosters.
    pub fn member_keys(&self) -> Vec<(u32, IdentityKey)> {
        self.group
            .members()
            .filter_map(|m| Some((m.index.u32(), IdentityKey::from_bytes(&m.signature_key)?)))
            .collect()
    }

    /// The device identity of this member.
    pub fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    /// A short code all members of this epoch can compare out loud.
    pub fn room_code(&self) -> String {
        room_code(self.group.epoch_authenticator().as_slice())
    }

    /// This epoch's members (leaf, device key) and room code digest, for
    /// the rosters a distributor signs to listeners.
    pub fn stage_map(&self) -> StageMap {
        StageMap {
            epoch: self.epoch(),
            members: self
                .member_keys()
                .into_iter()
                .map(|(leaf, key)| (leaf, key.to_bytes()))
                .collect(),
            code_digest: room_code_digest(self.group.epoch_authenticator().as_slice()),
        }
    }

    /// The GroupInfo (`MlsMessage` bytes) of the current epoch, for the
    /// delivery service.
    pub fn group_info(&self) -> Result<Vec<u8>, StageError> {
        let gi = self
            .group
            .export_group_info(self.provider.crypto(), &self.signer, false)
            .map_err(|e| StageError::Internal(e.to_string()))?;
        mls_bytes(&gi)
    }

    /// The ratchet tree (TLS-encoded).
    pub fn ratchet_tree(&self) -> Result<Vec<u8>, StageError> {
        self.group
            .export_ratchet_tree()
            .tls_serialize_detached()
            .map_err(|e| StageError::Internal(e.to_string()))
    }

    fn derive(&self, rotation: u32) -> Result<AudienceKey, StageError> {
        let bytes = self
            .group
            .export_secret(
                self.provider.crypto(),
                AUDIENCE_EXPORTER_LABEL,
                &rotation.to_be_bytes(),
                32,
            )
            .map_err(|e| StageError::Internal(e.to_string()))?;
        let secret = Secret32::from_slice(&bytes)
            .ok_or_else(|| StageError::Internal("exporter length".into()))?;
        Ok(AudienceKey::new(
            KeyGeneration {
                epoch: self.epoch(),
                rotation,
            },
            secret,
        ))
    }

    /// The audience key the distributor should seal next: the new epoch's
    /// first generation if it was not announced yet, else the next rotation.
    pub fn next_audience_key(&self) -> Result<AudienceKey, StageError> {
        if self.announced {
            self.derive(self.rotation.saturating_add(1))
        } else {
            self.derive(self.rotation)
        }
    }

    /// The audience key of the latest announced generation of this epoch
    /// (what a distributor created now should hold).
    pub fn current_audience_key(&self) -> Result<AudienceKey, StageError> {
        self.derive(self.rotation)
    }

    /// For the key distributor: whether a rotation is due at `now_ms` — the
    /// new epoch's generation is not announced yet, or the rotation period
    /// has passed since the last notice. (Bans and removals of listeners
    /// rotate at once, whatever this says.)
    pub fn rotation_due(&self, now_ms: u64) -> bool {
        !self.announced
            || now_ms
                >= self
                    .last_rotation_ms
                    .saturating_add(self.config.rotation_period_ms)
    }

    /// The generation this member currently sends with, if any.
    pub fn sending_generation(&self) -> Option<KeyGeneration> {
        self.sender.as_ref().map(FrameSender::generation)
    }

    /// Process one message from the delivery service's log (not one's own).
    pub fn handle_message(&mut self, now_ms: u64, bytes: &[u8]) -> Result<StageEvent, StageError> {
        if bytes.len() > sotto_delivery::MAX_HANDSHAKE_LEN {
            return Err(StageError::Malformed("too large".into()));
        }
        let msg = MlsMessageIn::tls_deserialize_exact(bytes)
            .map_err(|e| StageError::Malformed(e.to_string()))?;
        let protocol = msg
            .try_into_protocol_message()
            .map_err(|e| StageError::Malformed(e.to_string()))?;
        if protocol.group_id() != self.group.group_id() {
            return Err(StageError::WrongGroup);
        }
        let (got, current) = (protocol.epoch().as_u64(), self.epoch());
        if got != current {
            return Err(StageError::WrongEpoch { got, current });
        }
        let processed = self
            .group
            .process_message(&self.provider, protocol)
            .map_err(|e| StageError::Rejected(e.to_string()))?;
        let sender = processed.sender().clone();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => {
                let (epoch, rotation) = parse_notice(&app.into_bytes())?;
                self.on_notice(now_ms, epoch, rotation)
            }
            ProcessedMessageContent::ProposalMessage(q) => {
                // The server (external sender 0) may propose Add/Remove and
                // nothing else (no GroupContextExtensions, PSK or ReInit);
                // members may propose only Updates of their own leaf.
                let is_membership = matches!(q.proposal(), Proposal::Add(_) | Proposal::Remove(_));
                let allowed = match sender {
                    Sender::External(i) => i == SenderExtensionIndex::new(0) && is_membership,
                    Sender::Member(_) => matches!(q.proposal(), Proposal::Update(_)),
                    _ => false,
                };
                if !allowed {
                    return Err(StageError::UnauthorisedProposal);
                }
                self.group
                    .store_pending_proposal(self.provider.storage(), *q)
                    .map_err(|e| StageError::Internal(e.to_string()))?;
                Ok(StageEvent::ProposalQueued)
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                // Only members commit. An external commit (RFC 9420 §12.4.3.2)
                // would let anyone holding the GroupInfo — the delivery
                // service, i.e. the server — join the stage and derive every
                // audience key.
                if !matches!(sender, Sender::Member(_)) {
                    return Err(StageError::UnauthorisedCommit);
                }
                if staged.self_removed() {
                    self.group
                        .merge_staged_commit(&self.provider, *staged)
                        .map_err(|e| StageError::Internal(e.to_string()))?;
                    self.sender = None;
                    self.pending_switch = None;
                    return Ok(StageEvent::Removed);
                }
                let added = staged
                    .add_proposals()
                    .map(|p| {
                        p.add_proposal()
                            .key_package()
                            .leaf_node()
                            .signature_key()
                            .as_slice()
                            .to_vec()
                    })
                    .collect();
                let removed = staged
                    .remove_proposals()
                    .map(|p| p.remove_proposal().removed().u32())
                    .collect();
                self.group
                    .merge_staged_commit(&self.provider, *staged)
                    .map_err(|e| StageError::Internal(e.to_string()))?;
                self.on_epoch_change(now_ms)?;
                Ok(StageEvent::EpochChanged {
                    epoch: self.epoch(),
                    added,
                    removed,
                })
            }
            _ => Err(StageError::Rejected("unsupported message content".into())),
        }
    }

    /// Commit the pending (server-proposed) Add/Remove proposals, plus this
    /// member's own removal of `strays` (leaves that do not belong on the
    /// stage, whatever the server proposes). Every Add needs a verified stage
    /// invitation for the added device's identity key: an Add without one is
    /// dropped (it never blocks the Removes of the same batch) and counted in
    /// the returned number. Send `commit` to the delivery service; then call
    /// [`Self::commit_accepted`] or [`Self::commit_rejected`].
    pub fn commit_pending(
        &mut self,
        invitations: &[VerifiedInvitation],
        strays: &[u32],
    ) -> Result<(CommitOut, usize), StageError> {
        let uninvited: Vec<openmls::ciphersuite::hash_ref::ProposalRef> = self
            .group
            .pending_proposals()
            .filter(|p| match p.proposal() {
                Proposal::Add(add) => {
                    let key = add.key_package().leaf_node().signature_key().as_slice();
                    !invitations
                        .iter()
                        .any(|i| i.invitee().to_bytes().as_slice() == key)
                }
                _ => false,
            })
            .map(|p| p.proposal_reference_ref().clone())
            .collect();
        for r in &uninvited {
            self.group
                .remove_pending_proposal(self.provider.storage(), r)
                .map_err(|e| StageError::Internal(e.to_string()))?;
        }
        let pending_removed: Vec<u32> = self
            .group
            .pending_proposals()
            .filter_map(|p| match p.proposal() {
                Proposal::Remove(r) => Some(r.removed().u32()),
                _ => None,
            })
            .collect();
        let own = self.leaf_index();
        let strays: Vec<u32> = strays
            .iter()
            .copied()
            .filter(|l| *l != own && !pending_removed.contains(l))
            .filter(|l| self.group.members().any(|m| m.index.u32() == *l))
            .collect();
        if self.group.pending_proposals().next().is_none() && strays.is_empty() {
            return Err(if uninvited.is_empty() {
                StageError::NothingPending
            } else {
                StageError::UninvitedAdd
            });
        }
        let out = self.build_commit(None, &strays)?;
        self.intent = Some(Intent::CommitPending);
        Ok((out, uninvited.len()))
    }

    /// Commit a self-update (fresh leaf key: post-compromise security).
    pub fn self_update(&mut self) -> Result<CommitOut, StageError> {
        let out = self.build_commit(Some(LeafNodeParameters::default()), &[])?;
        self.intent = Some(Intent::SelfUpdate);
        Ok(out)
    }

    /// Stage a commit of the pending proposals (and a self-update if
    /// `update` is given), with the new epoch's GroupInfo for the delivery
    /// service.
    fn build_commit(
        &mut self,
        update: Option<LeafNodeParameters>,
        removals: &[u32],
    ) -> Result<CommitOut, StageError> {
        let internal = |e: &dyn std::fmt::Display| StageError::Internal(e.to_string());
        let mut builder = self
            .group
            .commit_builder()
            .consume_proposal_store(true)
            .propose_removals(removals.iter().map(|l| LeafNodeIndex::new(*l)));
        if let Some(params) = update {
            builder = builder.leaf_node_parameters(params);
        }
        let bundle = builder
            .load_psks(self.provider.storage())
            .map_err(|e| internal(&e))?
            .create_group_info(true)
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.signer,
                |_| true,
            )
            .map_err(|e| internal(&e))?
            .stage_commit(&self.provider)
            .map_err(|e| internal(&e))?;
        let (commit, welcome, group_info) = bundle.into_messages();
        let group_info = group_info.ok_or_else(|| StageError::Internal("no group info".into()))?;
        Ok(CommitOut {
            commit: mls_bytes(&commit)?,
            welcome: welcome.as_ref().map(mls_bytes).transpose()?,
            group_info: mls_bytes(&group_info)?,
        })
    }

    /// The delivery service accepted our commit: merge it.
    pub fn commit_accepted(&mut self, now_ms: u64) -> Result<StageEvent, StageError> {
        if self.group.pending_commit().is_none() {
            return Err(StageError::NothingPending);
        }
        self.group
            .merge_pending_commit(&self.provider)
            .map_err(|e| StageError::Internal(e.to_string()))?;
        self.intent = None;
        self.on_epoch_change(now_ms)?;
        Ok(StageEvent::EpochChanged {
            epoch: self.epoch(),
            added: Vec::new(),
            removed: Vec::new(),
        })
    }

    /// Another commit won the epoch: drop ours. Then process the winning
    /// commit from the log and call [`Self::rebase`].
    pub fn commit_rejected(&mut self) -> Result<(), StageError> {
        self.group
            .clear_pending_commit(self.provider.storage())
            .map_err(|e| StageError::Internal(e.to_string()))
    }

    /// Redo what the rejected commit intended, in the new epoch, if it still
    /// applies (a self-update always does; pending proposals only if the
    /// server re-proposed them).
    ///
    /// Re-proposed Adds are checked against `invitations` exactly as in
    /// [`Self::commit_pending`]: proposals issued in the new epoch are new
    /// server input, and an Add nobody invited is refused
    /// ([`StageError::UninvitedAdd`]).
    pub fn rebase(
        &mut self,
        invitations: &[VerifiedInvitation],
    ) -> Result<Option<CommitOut>, StageError> {
        match self.intent.take() {
            Some(Intent::SelfUpdate) => self.self_update().map(Some),
            Some(Intent::CommitPending) if self.group.pending_proposals().next().is_some() => self
                .commit_pending(invitations, &[])
                .map(|(out, _)| Some(out)),
            _ => Ok(None),
        }
    }

    fn on_epoch_change(&mut self, now_ms: u64) -> Result<(), StageError> {
        self.rotation = 0;
        self.announced = false;
        let key = self.derive(0)?;
        self.ring.install(key.clone(), now_ms);
        self.pending_switch = Some((
            key,
            now_ms.saturating_add(self.config.epoch_switch_timeout_ms),
        ));
        Ok(())
    }

    fn on_notice(
        &mut self,
        now_ms: u64,
        epoch: u64,
        rotation: u32,
    ) -> Result<StageEvent, StageError> {
        if epoch != self.epoch() {
            return Err(StageError::BadRotationNotice("wrong epoch"));
        }
        if self.announced && rotation <= self.rotation {
            return Err(StageError::BadRotationNotice("not newer"));
        }
        let key = self.derive(rotation)?;
        self.ring.install(key.clone(), now_ms);
        self.rotation = rotation;
        self.announced = true;
        self.last_rotation_ms = now_ms;
        let at = now_ms.saturating_add(self.config.switch_delay_ms);
        let at = match &self.pending_switch {
            Some((_, t)) if *t < at && self.sender.is_none() => *t,
            _ => at,
        };
        let generation = key.generation();
        self.pending_switch = Some((key, at));
        Ok(StageEvent::Rotated(generation))
    }

    /// As key distributor: announce to the stage that `key` (from
    /// [`Self::next_audience_key`], already sealed to the listeners) is now
    /// in use. Returns the MLS application message for the delivery service.
    pub fn announce(&mut self, now_ms: u64, key: &AudienceKey) -> Result<Vec<u8>, StageError> {
        let g = key.generation();
        let mut w = Writer::default();
        w.raw(b"SRN1").u64(g.epoch).u32(g.rotation);
        let msg = self
            .group
            .create_message(&self.provider, &self.signer, &w.buf)
            .map_err(|e| StageError::Internal(e.to_string()))?;
        self.on_notice(now_ms, g.epoch, g.rotation)?;
        mls_bytes(&msg)
    }

    /// Apply timers: switch the send key when due, expire old receive keys.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Result<(), FrameError> {
        let due = self
            .pending_switch
            .as_ref()
            .is_some_and(|(_, at)| *at <= now_ms);
        if let Some((key, _)) = self.pending_switch.take_if(|_| due) {
            self.sender = Some(FrameSender::new(
                self.config.suite,
                &key,
                self.leaf_index(),
            )?);
        }
        self.ring.expire(now_ms);
        Ok(())
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        let a = self.pending_switch.as_ref().map(|(_, t)| *t);
        match (a, self.ring.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Encrypt one audio frame with this member's current send key.
    pub fn encrypt_frame(&mut self, now_ms: u64, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
        self.handle_timeout(now_ms)?;
        self.sender
            .as_mut()
            .ok_or(FrameError::NoSendKey)?
            .encrypt(payload)
    }

    /// Decrypt another speaker's frame.
    pub fn decrypt_frame(&mut self, now_ms: u64, frame: &[u8]) -> Result<Vec<u8>, FrameError> {
        self.ring.decrypt(now_ms, frame)
    }

    /// The generation of the key that decrypted frames with `kid`.
    pub fn frame_generation(&self, kid: u64) -> Option<KeyGeneration> {
        self.ring.generation_of(kid)
    }

    /// Room id this stage belongs to.
    pub fn room_id(&self) -> &[u8] {
        &self.room_id
    }
}

/// Parse a rotation notice (inside an MLS application message). Fuzzed.
pub fn parse_notice(bytes: &[u8]) -> Result<(u64, u32), StageError> {
    let mut r = Reader::new(bytes);
    r.magic(b"SRN1")
        .map_err(|_| StageError::BadRotationNotice("magic"))?;
    let epoch = r
        .u64()
        .map_err(|_| StageError::BadRotationNotice("truncated"))?;
    let rotation = r
        .u32()
        .map_err(|_| StageError::BadRotationNotice("truncated"))?;
    r.finish()
        .map_err(|_| StageError::BadRotationNotice("trailing bytes"))?;
    Ok((epoch, rotation))
}

/// The account id a member's basic credential names.
fn credential_account(credential: &Credential) -> Option<Vec<u8>> {
    BasicCredential::try_from(credential.clone())
        .ok()
        .and_then(|c| decode_credential_identity(c.identity()).ok())
        .map(|(account, _)| account)
}
