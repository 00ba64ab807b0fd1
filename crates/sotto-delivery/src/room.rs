use openmls::prelude::{tls_codec::Deserialize as _, tls_codec::Serialize as _, *};
use openmls_rust_crypto::OpenMlsRustCrypto;

use crate::{DeliveryError, MAX_HANDSHAKE_LEN};

/// What the delivery service accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Position of the message in the room's handshake log.
    pub seq: u64,
    /// What kind of message it was.
    pub kind: AcceptedKind,
    /// The group's epoch after the message.
    pub epoch: u64,
}

/// Kind of an accepted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcceptedKind {
    /// A commit; the epoch advanced.
    Commit,
    /// A proposal (from the server as external sender, or from a member).
    Proposal,
    /// An application message (a PrivateMessage the service cannot read),
    /// relayed in order.
    Application,
}

/// Public information about one stage member, as the tree shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageMemberInfo {
    /// Leaf index in the ratchet tree.
    pub leaf_index: u32,
    /// The identity bytes of the member's BasicCredential.
    pub credential_identity: Vec<u8>,
    /// The member's signature (device identity) public key.
    pub signature_key: Vec<u8>,
}

/// The delivery service's view of one room's stage group: public state only.
pub struct RoomDelivery {
    provider: OpenMlsRustCrypto,
    group: PublicGroup,
    group_info: Vec<u8>,
    log: Vec<Vec<u8>>,
}

impl std::fmt::Debug for RoomDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomDelivery")
            .field("epoch", &self.epoch())
            .field("members", &self.group.members().count())
            .field("log_len", &self.log.len())
            .finish()
    }
}

fn encode(v: &impl tls_codec::Serialize) -> Result<Vec<u8>, DeliveryError> {
    v.tls_serialize_detached()
        .map_err(|e| DeliveryError::Internal(e.to_string()))
}

fn parse(bytes: &[u8]) -> Result<MlsMessageBodyIn, DeliveryError> {
    if bytes.len() > MAX_HANDSHAKE_LEN {
        return Err(DeliveryError::TooLarge {
            len: bytes.len(),
            max: MAX_HANDSHAKE_LEN,
        });
    }
    MlsMessageIn::tls_deserialize_exact(bytes)
        .map(MlsMessageIn::extract)
        .map_err(|e| DeliveryError::Malformed(e.to_string()))
}

impl RoomDelivery {
    /// Start tracking a stage group from the GroupInfo (an `MlsMessage`) and
    /// the ratchet tree (TLS-encoded) its creator uploaded. Both are verified.
    pub fn create(group_info: &[u8], ratchet_tree: &[u8]) -> Result<Self, DeliveryError> {
        let MlsMessageBodyIn::GroupInfo(vgi) = parse(group_info)? else {
            return Err(DeliveryError::Malformed("not a group info".into()));
        };
        if ratchet_tree.len() > MAX_HANDSHAKE_LEN {
            return Err(DeliveryError::TooLarge {
                len: ratchet_tree.len(),
                max: MAX_HANDSHAKE_LEN,
            });
        }
        let tree = RatchetTreeIn::tls_deserialize_exact(ratchet_tree)
            .map_err(|e| DeliveryError::Malformed(e.to_string()))?;
        if vgi.ciphersuite() != crate::STAGE_CIPHERSUITE {
            return Err(DeliveryError::Invalid("wrong ciphersuite".into()));
        }
        let provider = OpenMlsRustCrypto::default();
        let (group, _info) = PublicGroup::from_external(
            provider.crypto(),
            provider.storage(),
            tree,
            vgi,
            ProposalStore::new(),
        )
        .map_err(|e| DeliveryError::Invalid(e.to_string()))?;
        Ok(Self {
            provider,
            group,
            group_info: group_info.to_vec(),
            log: Vec::new(),
        })
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.group.group_context().epoch().as_u64()
    }

    /// The group id (opaque, random per room; not the room id).
    pub fn group_id(&self) -> &[u8] {
        self.group.group_id().as_slice()
    }

    /// Members as the public tree shows them.
    pub fn members(&self) -> Vec<StageMemberInfo> {
        self.group
            .members()
            .map(|m| StageMemberInfo {
                leaf_index: m.index.u32(),
                credential_identity: BasicCredential::try_from(m.credential.clone())
                    .map(|c| c.identity().to_vec())
                    .unwrap_or_default(),
                signature_key: m.signature_key.clone(),
            })
            .collect()
    }

    /// Validate and order one message from a stage member or from the
    /// server's [`crate::ServerProposer`].
    ///
    /// - Commits and proposals must be PublicMessages for the current epoch
    ///   and must validate against the public group (signatures, membership
    ///   tags, proposal rules, tree). The first valid commit of an epoch is
    ///   merged; every later one fails with [`DeliveryError::StaleEpoch`].
    /// - Application messages (PrivateMessages) cannot be validated by the
    ///   service; they are relayed in order if they name the current epoch.
    pub fn handle_handshake(&mut self, bytes: &[u8]) -> Result<Accepted, DeliveryError> {
        let body = parse(bytes)?;
        let protocol: ProtocolMessage = match body {
            MlsMessageBodyIn::PublicMessage(m) => m.into(),
            MlsMessageBodyIn::PrivateMessage(m) => m.into(),
            _ => return Err(DeliveryError::Malformed("not a protocol message".into())),
        };
        if protocol.group_id() != self.group.group_id() {
            return Err(DeliveryError::WrongGroup);
        }
        let current = self.epoch();
        let got = protocol.epoch().as_u64();
        if got != current {
            return Err(DeliveryError::StaleEpoch { got, current });
        }
        let kind = match protocol {
            ProtocolMessage::PrivateMessage(m) => {
                if m.content_type() != ContentType::Application {
                    return Err(DeliveryError::NotPublic);
                }
                AcceptedKind::Application
            }
            ProtocolMessage::PublicMessage(m) => {
                if m.content_type() == ContentType::Application {
                    return Err(DeliveryError::Invalid(
                        "application data in a PublicMessage".into(),
                    ));
                }
                let processed = self
                    .group
                    .process_message(self.provider.crypto(), *m)
                    .map_err(|e| DeliveryError::Invalid(e.to_string()))?;
                match processed.into_content() {
                    ProcessedMessageContent::StagedCommitMessage(staged) => {
                        self.group
                            .merge_commit(self.provider.storage(), *staged)
                            .map_err(|e| DeliveryError::Internal(e.to_string()))?;
                        AcceptedKind::Commit
                    }
                    ProcessedMessageContent::ProposalMessage(p) => {
                        self.group
                            .add_proposal(self.provider.storage(), *p)
                            .map_err(|e| DeliveryError::Internal(e.to_string()))?;
                        AcceptedKind::Proposal
                    }
                    _ => {
                        return Err(DeliveryError::Invalid(
                            "unsupported handshake content".into(),
                        ));
                    }
                }
            }
        };
        self.log.push(bytes.to_vec());
        Ok(Accepted {
            seq: self.log.len() as u64 - 1,
            kind,
            epoch: self.epoch(),
        })
    }

    /// Store the GroupInfo a committer uploaded after its commit was
    /// accepted (`CommitOut::group_info` in `sotto-e2ee`). It must match the
    /// state the accepted commits produced, exactly:
    ///
    /// - its signer is a current member and the signature verifies (checked
    ///   by importing it against the service's own ratchet tree, which also
    ///   checks the tree hash);
    /// - its whole group context equals the service's: group id, epoch,
    ///   tree hash, **confirmed transcript hash** and extensions (the
    ///   external senders);
    /// - its confirmation tag is the one of the accepted commit.
    ///
    /// So a GroupInfo of a losing commit of the same epoch, of another
    /// epoch, or altered in any signed field, is refused with
    /// [`DeliveryError::GroupInfoMismatch`]. What the service cannot check:
    /// the `external_pub` extension and the confirmation tag's derivation,
    /// which come from epoch secrets it does not hold (joiners check the tag
    /// against the key schedule themselves).
    pub fn set_group_info(&mut self, bytes: &[u8]) -> Result<(), DeliveryError> {
        let MlsMessageBodyIn::GroupInfo(vgi) = parse(bytes)? else {
            return Err(DeliveryError::Malformed("not a group info".into()));
        };
        if vgi.group_id() != self.group.group_id() || vgi.epoch().as_u64() != self.epoch() {
            return Err(DeliveryError::GroupInfoMismatch);
        }
        // Import it into a scratch public group built from our own tree: this
        // verifies the signature by the signer's leaf and the tree hash, and
        // never touches the service's storage.
        let tree = RatchetTreeIn::tls_deserialize_exact(self.ratchet_tree()?)
            .map_err(|e| DeliveryError::Internal(e.to_string()))?;
        let scratch = OpenMlsRustCrypto::default();
        let (theirs, _) = PublicGroup::from_external(
            scratch.crypto(),
            scratch.storage(),
            tree,
            vgi,
            ProposalStore::new(),
        )
        .map_err(|_| DeliveryError::GroupInfoMismatch)?;
        if encode(theirs.group_context())? != encode(self.group.group_context())?
            || encode(theirs.confirmation_tag())? != encode(self.group.confirmation_tag())?
        {
            return Err(DeliveryError::GroupInfoMismatch);
        }
        self.group_info = bytes.to_vec();
        Ok(())
    }

    /// The latest GroupInfo (`MlsMessage` bytes).
    pub fn group_info(&self) -> &[u8] {
        &self.group_info
    }

    /// The current ratchet tree, TLS-encoded, for members joining by Welcome.
    pub fn ratchet_tree(&self) -> Result<Vec<u8>, DeliveryError> {
        self.group
            .export_ratchet_tree()
            .tls_serialize_detached()
            .map_err(|e| DeliveryError::Internal(e.to_string()))
    }

    /// Accepted messages from position `seq` on, in order, for fan-out.
    pub fn messages_since(&self, seq: u64) -> &[Vec<u8>] {
        let start = usize::try_from(seq)
            .unwrap_or(usize::MAX)
            .min(self.log.len());
        &self.log[start..]
    }

    /// Leaf index of the member whose signature key is `key`, if any.
    pub fn leaf_of(&self, signature_key: &[u8]) -> Option<u32> {
        self.group
            .members()
            .find(|m| m.signature_key == signature_key)
            .map(|m| m.index.u32())
    }

    pub(crate) fn public_group(&self) -> &PublicGroup {
        &self.group
    }
}
