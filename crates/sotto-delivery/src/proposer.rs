use openmls::prelude::{tls_codec::Deserialize as _, tls_codec::Serialize as _, *};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

use crate::{DeliveryError, RoomDelivery};

/// The server's role as the stage group's sole external sender: it signs
/// Add/Remove *proposals* (never commits). Its key goes into every stage
/// group's `external_senders` extension at index 0.
pub struct ServerProposer {
    signer: SignatureKeyPair,
    credential: Credential,
}

impl std::fmt::Debug for ServerProposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerProposer")
            .field("public", &self.signer.public())
            .finish()
    }
}

impl ServerProposer {
    /// From the server's Ed25519 key (32-byte seed and 32-byte public key)
    /// and a label for its credential (e.g. the server's host name).
    pub fn from_ed25519(seed: [u8; 32], public: [u8; 32], label: &[u8]) -> Self {
        let signer =
            SignatureKeyPair::from_raw(SignatureScheme::ED25519, seed.to_vec(), public.to_vec());
        Self {
            signer,
            credential: BasicCredential::new(label.to_vec()).into(),
        }
    }

    /// The public key stage groups list as their external sender.
    pub fn public_key(&self) -> &[u8] {
        self.signer.public()
    }

    /// The credential stage groups list with it.
    pub fn credential_identity(&self) -> Vec<u8> {
        BasicCredential::try_from(self.credential.clone())
            .map(|c| c.identity().to_vec())
            .unwrap_or_default()
    }

    /// Propose adding the device whose KeyPackage (`MlsMessage` bytes) is
    /// given. Feed the result to [`RoomDelivery::handle_handshake`] and fan it
    /// out to the stage.
    pub fn propose_add(
        &self,
        room: &RoomDelivery,
        key_package: &[u8],
    ) -> Result<Vec<u8>, DeliveryError> {
        let msg = MlsMessageIn::tls_deserialize_exact(key_package)
            .map_err(|e| DeliveryError::Malformed(e.to_string()))?;
        let MlsMessageBodyIn::KeyPackage(kp) = msg.extract() else {
            return Err(DeliveryError::Malformed("not a key package".into()));
        };
        let provider = OpenMlsRustCrypto::default();
        let kp = kp
            .validate(provider.crypto(), ProtocolVersion::Mls10)
            .map_err(|e| DeliveryError::InvalidKeyPackage(e.to_string()))?;
        let g = room.public_group();
        let out = ExternalProposal::new_add::<OpenMlsRustCrypto>(
            kp,
            g.group_id().clone(),
            g.group_context().epoch(),
            &self.signer,
            SenderExtensionIndex::new(0),
        )
        .map_err(|e| DeliveryError::Internal(e.to_string()))?;
        out.tls_serialize_detached()
            .map_err(|e| DeliveryError::Internal(e.to_string()))
    }

    /// Propose removing the member at `leaf_index`.
    pub fn propose_remove(
        &self,
        room: &RoomDelivery,
        leaf_index: u32,
    ) -> Result<Vec<u8>, DeliveryError> {
        let g = room.public_group();
        let out = ExternalProposal::new_remove::<OpenMlsRustCrypto>(
            LeafNodeIndex::new(leaf_index),
            g.group_id().clone(),
            g.group_context().epoch(),
            &self.signer,
            SenderExtensionIndex::new(0),
        )
        .map_err(|e| DeliveryError::Internal(e.to_string()))?;
        out.tls_serialize_detached()
            .map_err(|e| DeliveryError::Internal(e.to_string()))
    }
}
