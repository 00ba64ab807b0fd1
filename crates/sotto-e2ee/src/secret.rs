//! Secret values: redacting `Debug`, zeroized on drop, never `Serialize`.

use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 32-byte secret. Its `Debug` prints nothing of the value.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub(crate) struct Secret32(pub(crate) [u8; 32]);

impl std::fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret32(<redacted>)")
    }
}

impl Secret32 {
    pub(crate) fn from_slice(b: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = b.try_into().ok()?;
        Some(Self(arr))
    }
    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

/// HKDF-Expand(SHA-256) of a 32-byte secret into another, with a label.
pub(crate) fn expand(secret: &Secret32, label: &[u8], context: &[u8]) -> Secret32 {
    let hk = hkdf::Hkdf::<sha2::Sha256>::from_prk(secret.expose())
        .unwrap_or_else(|_| hkdf::Hkdf::<sha2::Sha256>::new(None, secret.expose()));
    let mut info = Vec::with_capacity(label.len() + context.len());
    info.extend_from_slice(label);
    info.extend_from_slice(context);
    let mut out = [0u8; 32];
    // 32 bytes is always a valid HKDF-SHA256 output length.
    let _ = hk.expand(&info, &mut out);
    let s = Secret32(out);
    out.zeroize();
    s
}
