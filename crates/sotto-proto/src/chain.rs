//! Device chains: an account's devices as a hash chain of links, each signed
//! by a device of the account — never by the server.
//!
//! ```text
//! link 0  add root   signed by root        (the key the account registered with)
//! link 1  add B      signed by root        prev = H(link 0)
//! link 2  revoke A   signed by B           prev = H(link 1)
//! ```
//!
//! The server stores the links and serves them; every client verifies them
//! ([`verify_chain`]) and pins each account's root key on first sight. So an
//! operator who inserts a row in its `devices` table gets a key that is in no
//! chain, and a client that sees a key outside the chain refuses it. An
//! operator can withhold the newest links (a revocation); a client that once
//! saw a longer chain notices the rollback ([`ChainHead`]).
//!
//! The format is binary (base64url on the wire), small and strict:
//! `"SDL1" | seq u32 | prev [32] | op u8 | subject [32] | signer [32] | sig [64]`
//! (169 bytes); the signature covers a [`transcript`] of every field. A
//! chain is named by its root key, not by the server's account id (which
//! does not exist yet when the first link is signed): clients bind an account
//! to its root by pinning it, and safety codes compare roots. Parsing never
//! panics.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::keys::{DevicePublicKey, transcript};

/// Context of a device-chain link signature.
pub const DEVICE_LINK_CONTEXT: &str = "sotto/v1/device-link";
/// Bytes of one encoded link.
pub const LINK_LEN: usize = 4 + 4 + 32 + 1 + 32 + 32 + 64;
/// Most links a chain may have (adds and revocations together).
pub const MAX_LINKS: usize = 256;
const MAGIC: &[u8; 4] = b"SDL1";

/// What a link does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkOp {
    /// The subject key becomes a device of the account.
    Add,
    /// The subject key stops being one, for good.
    Revoke,
}

/// One link of a device chain, parsed but not verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceLink {
    pub seq: u32,
    pub prev: [u8; 32],
    pub op: LinkOp,
    pub subject: [u8; 32],
    pub signer: [u8; 32],
    pub signature: [u8; 64],
}

/// Why a link or a chain was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainError {
    #[error("a link is not {LINK_LEN} bytes of the SDL1 format")]
    Malformed,
    #[error("the chain is empty")]
    Empty,
    #[error("the chain has more than {MAX_LINKS} links")]
    TooLong,
    #[error("link {0} is out of sequence")]
    Sequence(u32),
    #[error("link {0} does not follow the previous link's hash")]
    Broken(u32),
    #[error("link {0} is not signed by a device of the account at that point")]
    UnauthorisedSigner(u32),
    #[error("link {0}'s signature does not verify")]
    BadSignature(u32),
    #[error("link {0} adds a key that is or was already a device")]
    DuplicateAdd(u32),
    #[error("link {0} revokes a key that is not a device, or the last one")]
    BadRevoke(u32),
    #[error("the first link must add the root key, signed by itself")]
    BadGenesis,
    #[error("a key is not a valid Ed25519 key")]
    BadKey,
    #[error("the account's root key changed from the one pinned")]
    RootChanged,
    #[error("the chain is older than one seen before (a withheld revocation?)")]
    Rollback,
    #[error("the chain forks from the one seen before")]
    Forked,
    #[error("the chain's root is already the root of another account")]
    RootOfAnotherAccount,
}

impl DeviceLink {
    fn signed_bytes(&self) -> Vec<u8> {
        transcript(
            DEVICE_LINK_CONTEXT,
            &[
                &self.seq.to_be_bytes(),
                &self.prev,
                &[self.op_byte()],
                &self.subject,
                &self.signer,
            ],
        )
    }

    fn op_byte(&self) -> u8 {
        match self.op {
            LinkOp::Add => 1,
            LinkOp::Revoke => 2,
        }
    }

    /// A new link after `prev` (None for the first link), signed by `signer`.
    pub fn sign(
        prev: Option<&DeviceLink>,
        op: LinkOp,
        subject: &DevicePublicKey,
        signer: &SigningKey,
    ) -> DeviceLink {
        let mut link = DeviceLink {
            seq: prev.map_or(0, |p| p.seq.saturating_add(1)),
            prev: prev.map_or([0; 32], DeviceLink::hash),
            op,
            subject: *subject.as_bytes(),
            signer: signer.verifying_key().to_bytes(),
            signature: [0; 64],
        };
        link.signature = signer.sign(&link.signed_bytes()).to_bytes();
        link
    }

    /// The encoded link.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(LINK_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.prev);
        out.push(self.op_byte());
        out.extend_from_slice(&self.subject);
        out.extend_from_slice(&self.signer);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses one encoded link. Never panics.
    pub fn parse(bytes: &[u8]) -> Result<DeviceLink, ChainError> {
        if bytes.len() != LINK_LEN || &bytes[..4] != MAGIC {
            return Err(ChainError::Malformed);
        }
        let take32 = |at: usize| -> [u8; 32] {
            let mut a = [0u8; 32];
            a.copy_from_slice(&bytes[at..at + 32]);
            a
        };
        let op = match bytes[40] {
            1 => LinkOp::Add,
            2 => LinkOp::Revoke,
            _ => return Err(ChainError::Malformed),
        };
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[105..169]);
        Ok(DeviceLink {
            seq: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            prev: take32(8),
            op,
            subject: take32(41),
            signer: take32(73),
            signature,
        })
    }

    /// SHA-256 of the encoded link: what the next link's `prev` holds.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"sotto device link v1");
        h.update(self.to_bytes());
        h.finalize().into()
    }

    /// Checks this link's signature by its own signer (not whether that
    /// signer may sign: [`verify_chain`] decides that).
    pub fn verify_signature(&self) -> Result<(), ChainError> {
        let key = verifying_key(&self.signer).ok_or(ChainError::BadKey)?;
        key.verify_strict(
            &self.signed_bytes(),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| ChainError::BadSignature(self.seq))
    }
}

fn verifying_key(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    let k = VerifyingKey::from_bytes(bytes).ok()?;
    (!k.is_weak()).then_some(k)
}

/// The newest link of a chain a client has seen: later chains must extend it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u32,
    pub hash: [u8; 32],
}

/// A chain that verified: the account's root and its current devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedChain {
    root: [u8; 32],
    active: Vec<[u8; 32]>,
    revoked: Vec<[u8; 32]>,
    head: ChainHead,
    hashes: Vec<[u8; 32]>,
}

impl VerifiedChain {
    /// The key the account registered with.
    pub fn root(&self) -> &[u8; 32] {
        &self.root
    }

    /// Whether `key` is a current (added, not revoked) device of the account.
    pub fn is_active(&self, key: &[u8; 32]) -> bool {
        self.active.contains(key)
    }

    /// Whether `key` was a device of the account and was revoked.
    pub fn is_revoked(&self, key: &[u8; 32]) -> bool {
        self.revoked.contains(key)
    }

    /// The current device keys.
    pub fn active(&self) -> &[[u8; 32]] {
        &self.active
    }

    /// The newest link.
    pub fn head(&self) -> ChainHead {
        self.head
    }

    /// Whether this chain contains (or equals) the chain ending at `head`.
    pub fn extends(&self, head: &ChainHead) -> Result<(), ChainError> {
        match self.hashes.get(head.seq as usize) {
            None => Err(ChainError::Rollback),
            Some(h) if *h == head.hash => Ok(()),
            Some(_) => Err(ChainError::Forked),
        }
    }
}

/// Encodes links for the wire: their bytes, one after another.
pub fn encode_chain(links: &[DeviceLink]) -> Vec<u8> {
    links.iter().flat_map(DeviceLink::to_bytes).collect()
}

/// Splits and parses an encoded chain. Never panics.
pub fn parse_chain(bytes: &[u8]) -> Result<Vec<DeviceLink>, ChainError> {
    if bytes.is_empty() {
        return Err(ChainError::Empty);
    }
    if !bytes.len().is_multiple_of(LINK_LEN) {
        return Err(ChainError::Malformed);
    }
    if bytes.len() / LINK_LEN > MAX_LINKS {
        return Err(ChainError::TooLong);
    }
    bytes
        .chunks_exact(LINK_LEN)
        .map(DeviceLink::parse)
        .collect()
}

/// Verifies a whole chain: sequence, hashes, and every link signed by a
/// device that was active just before it.
pub fn verify_chain(links: &[DeviceLink]) -> Result<VerifiedChain, ChainError> {
    let first = links.first().ok_or(ChainError::Empty)?;
    if links.len() > MAX_LINKS {
        return Err(ChainError::TooLong);
    }
    if first.seq != 0
        || first.prev != [0; 32]
        || first.op != LinkOp::Add
        || first.subject != first.signer
    {
        return Err(ChainError::BadGenesis);
    }
    let mut active: Vec<[u8; 32]> = Vec::new();
    let mut revoked: Vec<[u8; 32]> = Vec::new();
    let mut hashes = Vec::with_capacity(links.len());
    let mut prev_hash = [0u8; 32];
    for (i, link) in links.iter().enumerate() {
        let seq = link.seq;
        if seq as usize != i {
            return Err(ChainError::Sequence(seq));
        }
        if link.prev != prev_hash {
            return Err(ChainError::Broken(seq));
        }
        if i > 0 {
            if !active.contains(&link.signer) {
                return Err(ChainError::UnauthorisedSigner(seq));
            }
            link.verify_signature()?;
        }
        // The first link's self-signature is not checked: it would prove
        // only that whoever made the chain held the root key, which every
        // message that key signs (join requests, MLS leaves) proves anyway,
        // and it binds no account (the chain is named by its root). Every
        // later link's signature is what makes the chain the account's own.
        verifying_key(&link.subject).ok_or(ChainError::BadKey)?;
        match link.op {
            LinkOp::Add => {
                if active.contains(&link.subject) || revoked.contains(&link.subject) {
                    return Err(ChainError::DuplicateAdd(seq));
                }
                active.push(link.subject);
            }
            LinkOp::Revoke => {
                let at = active
                    .iter()
                    .position(|k| *k == link.subject)
                    .filter(|_| active.len() > 1)
                    .ok_or(ChainError::BadRevoke(seq))?;
                revoked.push(active.remove(at));
            }
        }
        prev_hash = link.hash();
        hashes.push(prev_hash);
    }
    Ok(VerifiedChain {
        root: first.subject,
        active,
        revoked,
        head: ChainHead {
            seq: (links.len() - 1) as u32,
            hash: prev_hash,
        },
        hashes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn public(k: &SigningKey) -> DevicePublicKey {
        DevicePublicKey::from_bytes(k.verifying_key().to_bytes())
    }

    #[test]
    fn add_and_revoke() {
        let (a, b) = (key(1), key(2));
        let l0 = DeviceLink::sign(None, LinkOp::Add, &public(&a), &a);
        let l1 = DeviceLink::sign(Some(&l0), LinkOp::Add, &public(&b), &a);
        let l2 = DeviceLink::sign(Some(&l1), LinkOp::Revoke, &public(&a), &b);
        let chain = parse_chain(&encode_chain(&[l0.clone(), l1.clone(), l2])).unwrap();
        let v = verify_chain(&chain).unwrap();
        assert_eq!(v.root(), public(&a).as_bytes());
        assert!(v.is_active(public(&b).as_bytes()));
        assert!(!v.is_active(public(&a).as_bytes()));
        assert!(v.is_revoked(public(&a).as_bytes()));
        // The shorter chain is a rollback of the longer one's head.
        let short = verify_chain(&[l0, l1]).unwrap();
        assert_eq!(short.extends(&v.head()), Err(ChainError::Rollback));
        assert_eq!(v.extends(&short.head()), Ok(()));
    }

    #[test]
    fn forgeries_are_refused() {
        let (a, b, evil) = (key(1), key(2), key(9));
        let l0 = DeviceLink::sign(None, LinkOp::Add, &public(&a), &a);
        // A link signed by a key that is not a device.
        let bad = DeviceLink::sign(Some(&l0), LinkOp::Add, &public(&evil), &evil);
        assert_eq!(
            verify_chain(&[l0.clone(), bad]),
            Err(ChainError::UnauthorisedSigner(1))
        );
        // A link whose fields were changed after signing.
        let mut other = DeviceLink::sign(Some(&l0), LinkOp::Add, &public(&b), &a);
        other.subject = public(&evil).as_bytes().to_owned();
        assert_eq!(
            verify_chain(&[l0.clone(), other]),
            Err(ChainError::BadSignature(1))
        );
        // Revoking the last device.
        let last = DeviceLink::sign(Some(&l0), LinkOp::Revoke, &public(&a), &a);
        assert_eq!(
            verify_chain(&[l0.clone(), last]),
            Err(ChainError::BadRevoke(1))
        );
        // Garbage never panics.
        for n in 0..LINK_LEN * 2 {
            let _ = parse_chain(&vec![7u8; n]);
        }
    }
}
