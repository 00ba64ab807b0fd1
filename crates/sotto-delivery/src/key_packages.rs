use std::collections::{HashMap, VecDeque};

use openmls::prelude::{tls_codec::Deserialize as _, *};
use openmls_rust_crypto::OpenMlsRustCrypto;

use crate::{DeliveryError, STAGE_CIPHERSUITE};

/// KeyPackages uploaded by devices, validated on upload and handed out once.
#[derive(Default)]
pub struct KeyPackageStore {
    crypto: OpenMlsRustCrypto,
    by_device: HashMap<String, VecDeque<Vec<u8>>>,
}

impl std::fmt::Debug for KeyPackageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPackageStore")
            .field("devices", &self.by_device.len())
            .finish()
    }
}

impl KeyPackageStore {
    /// Validate (signature, lifetime, ciphersuite) and store a KeyPackage
    /// (an `MlsMessage` of type key_package) for `device_id`. Returns the
    /// signature key in its leaf node, so the server can check it is the
    /// device's registered identity key.
    pub fn upload(&mut self, device_id: &str, bytes: &[u8]) -> Result<Vec<u8>, DeliveryError> {
        if bytes.len() > crate::MAX_HANDSHAKE_LEN {
            return Err(DeliveryError::TooLarge {
                len: bytes.len(),
                max: crate::MAX_HANDSHAKE_LEN,
            });
        }
        let msg = MlsMessageIn::tls_deserialize_exact(bytes)
            .map_err(|e| DeliveryError::Malformed(e.to_string()))?;
        let MlsMessageBodyIn::KeyPackage(kp) = msg.extract() else {
            return Err(DeliveryError::Malformed("not a key package".into()));
        };
        let kp = kp
            .validate(self.crypto.crypto(), ProtocolVersion::Mls10)
            .map_err(|e| DeliveryError::InvalidKeyPackage(e.to_string()))?;
        if kp.ciphersuite() != STAGE_CIPHERSUITE {
            return Err(DeliveryError::InvalidKeyPackage("wrong ciphersuite".into()));
        }
        let sig_key = kp.leaf_node().signature_key().as_slice().to_vec();
        self.by_device
            .entry(device_id.to_owned())
            .or_default()
            .push_back(bytes.to_vec());
        Ok(sig_key)
    }

    /// Hand out (and forget) one KeyPackage of `device_id`.
    pub fn take(&mut self, device_id: &str) -> Option<Vec<u8>> {
        let queue = self.by_device.get_mut(device_id)?;
        let kp = queue.pop_front();
        if queue.is_empty() {
            self.by_device.remove(device_id);
        }
        kp
    }
}
