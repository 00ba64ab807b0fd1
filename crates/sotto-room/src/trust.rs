//! Whom this device trusts: each account's pinned root key and the newest
//! device chain seen for it (trust on first use), and which accounts the
//! user verified by comparing safety codes.
//!
//! A client never trusts a device key because the server says whose it is:
//! [`TrustStore::check`] verifies the account's device chain
//! (`sotto_proto::chain`), pins its root the first time, refuses a chain
//! with another root (the account is then *changed* until the user accepts
//! it) and refuses a chain older than one already seen (a withheld
//! revocation). The store is plain data: the driver loads and saves it
//! (the CLI keeps it in the profile directory as `trust.json`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sotto_e2ee::identity::{IdentityKey, safety_code};
use sotto_proto::UserId;
use sotto_proto::chain::{ChainError, ChainHead, VerifiedChain, parse_chain, verify_chain};

/// How far this device trusts an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// Root pinned on first sight; nobody compared safety codes.
    Unverified,
    /// The user compared safety codes with this account (for this root).
    Verified,
    /// The server presented another root for this account: refused until
    /// the user accepts the change.
    Changed,
}

impl std::fmt::Display for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trust::Unverified => "unverified",
            Trust::Verified => "verified",
            Trust::Changed => "CHANGED",
        })
    }
}

/// One pinned account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// The root key, hex.
    pub root: String,
    /// The newest chain link seen: its position and hash (hex).
    pub head_seq: u32,
    pub head_hash: String,
    pub trust: Trust,
    /// The other root the server presented, when `trust` is `Changed` (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered_root: Option<String>,
}

/// Pins by account id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustStore {
    accounts: BTreeMap<String, Pin>,
    /// Which account each pinned root belongs to (rebuilt from `accounts`
    /// on first use): one key is the root of one account only, so a
    /// server cannot present one person's chain as another account's.
    #[serde(skip)]
    owners: std::collections::HashMap<String, String>,
}

/// `head_seq` of a pin whose chain head is not known yet.
const NO_HEAD: u32 = u32::MAX;

fn head_of(pin: &Pin) -> Option<ChainHead> {
    let hash: [u8; 32] = hex::decode(&pin.head_hash).ok()?.try_into().ok()?;
    Some(ChainHead {
        seq: pin.head_seq,
        hash,
    })
}

impl TrustStore {
    /// Verifies `chain` (the encoded links) for `user` against what is
    /// pinned, pins it on first sight, and moves the pinned head forward.
    pub fn check(&mut self, user: &UserId, chain: &[u8]) -> Result<VerifiedChain, ChainError> {
        let verified = verify_chain(&parse_chain(chain)?)?;
        let root = hex::encode(verified.root());
        let head = verified.head();
        if self.owners.len() != self.accounts.len() {
            self.owners = self
                .accounts
                .iter()
                .map(|(u, p)| (p.root.clone(), u.clone()))
                .collect();
        }
        if self
            .owners
            .get(&root)
            .is_some_and(|owner| owner != user.as_str())
        {
            return Err(ChainError::RootOfAnotherAccount);
        }
        match self.accounts.get_mut(user.as_str()) {
            None => {
                self.owners.insert(root.clone(), user.as_str().to_owned());
                self.accounts.insert(
                    user.as_str().to_owned(),
                    Pin {
                        root,
                        head_seq: head.seq,
                        head_hash: hex::encode(head.hash),
                        trust: Trust::Unverified,
                        offered_root: None,
                    },
                );
            }
            Some(pin) if pin.root != root => {
                pin.trust = Trust::Changed;
                pin.offered_root = Some(root);
                return Err(ChainError::RootChanged);
            }
            Some(pin) if pin.trust == Trust::Changed => return Err(ChainError::RootChanged),
            Some(pin) => {
                if pin.head_seq != NO_HEAD {
                    let seen = head_of(pin).ok_or(ChainError::Forked)?;
                    verified.extends(&seen)?;
                }
                pin.head_seq = head.seq;
                pin.head_hash = hex::encode(head.hash);
            }
        }
        Ok(verified)
    }

    /// How far `user` is trusted (None: never seen).
    pub fn trust(&self, user: &UserId) -> Option<Trust> {
        self.accounts.get(user.as_str()).map(|p| p.trust)
    }

    /// The pinned root of `user`.
    pub fn root(&self, user: &UserId) -> Option<[u8; 32]> {
        let pin = self.accounts.get(user.as_str())?;
        hex::decode(&pin.root).ok()?.try_into().ok()
    }

    /// The safety code of `me` and `them` (roots), the same on both sides:
    /// compare it out loud, then [`Self::mark_verified`].
    pub fn safety_code(&self, me: &UserId, them: &UserId) -> Option<String> {
        let a = IdentityKey::from_bytes(&self.root(me)?)?;
        let b = IdentityKey::from_bytes(&self.root(them)?)?;
        Some(safety_code(&a, &b))
    }

    /// The user compared safety codes: `user` is verified (for its pinned
    /// root). Returns false if `user` was never seen or is `Changed`.
    pub fn mark_verified(&mut self, user: &UserId) -> bool {
        match self.accounts.get_mut(user.as_str()) {
            Some(pin) if pin.trust != Trust::Changed => {
                pin.trust = Trust::Verified;
                true
            }
            _ => false,
        }
    }

    /// The user accepts the root the server now presents for `user`
    /// (after checking it some other way): it becomes the pinned,
    /// unverified root. Returns false if nothing changed.
    pub fn accept_change(&mut self, user: &UserId) -> bool {
        let Some(pin) = self.accounts.get_mut(user.as_str()) else {
            return false;
        };
        let Some(root) = pin.offered_root.take() else {
            return false;
        };
        self.owners.remove(&pin.root);
        self.owners.insert(root.clone(), user.as_str().to_owned());
        pin.root = root;
        pin.trust = Trust::Unverified;
        // The next check pins the new chain's head.
        pin.head_seq = NO_HEAD;
        pin.head_hash = String::new();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use sotto_proto::chain::{DeviceLink, LinkOp, encode_chain};
    use sotto_proto::keys::DevicePublicKey;

    fn chain(seed: u8, extra: Option<u8>) -> Vec<u8> {
        let sk = SigningKey::from_bytes(&[seed; 32]);
        let k = DevicePublicKey::from_bytes(sk.verifying_key().to_bytes());
        let mut links = vec![DeviceLink::sign(None, LinkOp::Add, &k, &sk)];
        if let Some(e) = extra {
            let k2 = SigningKey::from_bytes(&[e; 32]).verifying_key().to_bytes();
            let l = DeviceLink::sign(
                links.last(),
                LinkOp::Add,
                &DevicePublicKey::from_bytes(k2),
                &sk,
            );
            links.push(l);
        }
        encode_chain(&links)
    }

    #[test]
    fn pins_roots_refuses_changes_rollbacks_and_shared_roots() {
        let (alice, bob) = (UserId("a".repeat(32)), UserId("b".repeat(32)));
        let mut t = TrustStore::default();
        t.check(&alice, &chain(1, Some(2))).unwrap();
        assert_eq!(t.trust(&alice), Some(Trust::Unverified));
        // The same chain again, or longer: fine. Shorter: a rollback.
        t.check(&alice, &chain(1, Some(2))).unwrap();
        assert_eq!(t.check(&alice, &chain(1, None)), Err(ChainError::Rollback));
        // Alice's chain presented as Bob's.
        assert_eq!(
            t.check(&bob, &chain(1, Some(2))),
            Err(ChainError::RootOfAnotherAccount)
        );
        t.check(&bob, &chain(3, None)).unwrap();
        // Another root for Alice: changed until accepted.
        assert_eq!(
            t.check(&alice, &chain(4, None)),
            Err(ChainError::RootChanged)
        );
        assert_eq!(t.trust(&alice), Some(Trust::Changed));
        assert!(!t.mark_verified(&alice));
        assert!(t.accept_change(&alice));
        t.check(&alice, &chain(4, None)).unwrap();
        assert!(t.mark_verified(&alice));
        assert_eq!(t.trust(&alice), Some(Trust::Verified));
        // Saved and loaded, the shared-root check still holds.
        let mut loaded: TrustStore =
            serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(
            loaded.check(&bob, &chain(4, None)),
            Err(ChainError::RootOfAnotherAccount)
        );
        assert!(t.safety_code(&alice, &bob).is_some());
    }
}
