//! SFrame (RFC 9605) for audio: a sender per speaker, and a receive key ring
//! with a grace period and a replay window.

use std::collections::HashMap;

use sframe::{
    CipherSuite,
    frame::{EncryptedFrameView, MediaFrameView, MonotonicCounter},
    header::SframeHeader,
    key::{DecryptionKey, EncryptionKey},
};

use crate::error::FrameError;
use crate::keys::{AudienceKey, KeyGeneration, split_kid};

/// The SFrame cipher suites sotto uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Suite {
    /// `AES_128_CTR_HMAC_SHA256_32` (RFC 9605 0x0003): 4-byte tag. The
    /// compact audio suite: ≤ 8 bytes overhead per frame in sotto's KID
    /// layout. For audio only (a forgery succeeds with probability 2^-32 per
    /// try).
    CompactAudio,
    /// `AES_128_GCM_SHA256_128` (RFC 9605 0x0004): 16-byte tag.
    Gcm128,
}

impl Suite {
    pub(crate) fn sframe(self) -> CipherSuite {
        match self {
            Suite::CompactAudio => CipherSuite::AesCtr128HmacSha256_32,
            Suite::Gcm128 => CipherSuite::AesGcm128Sha256,
        }
    }

    /// Authentication tag length in bytes.
    pub fn tag_len(self) -> usize {
        self.sframe().auth_tag_len()
    }
}

/// Default grace period during which the previous key generation still
/// decrypts after a new one is installed, in milliseconds.
pub const DEFAULT_GRACE_MS: u64 = 1_000;

/// Highest frame counter used with one key. The compact suite's 8-byte
/// overhead bound needs a counter below 65,536 (2 header bytes): about 21
/// minutes of 20 ms frames on one key. sotto rotates every 60 s (≈ 3,000
/// frames), so in practice the counter stays far below; if rotations stop,
/// a sender keeps sending with one more header byte rather than going
/// silent, and stops only at this limit ([`FrameError::CounterExhausted`]).
pub const MAX_COUNTER: u64 = (1 << 32) - 1;

/// Encrypts one speaker's frames with the current key generation.
pub struct FrameSender {
    suite: Suite,
    key: EncryptionKey,
    counter: MonotonicCounter,
    generation: KeyGeneration,
}

impl std::fmt::Debug for FrameSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameSender")
            .field("suite", &self.suite)
            .field("kid", &self.key.key_id())
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl FrameSender {
    /// A sender for the stage leaf `leaf` with audience key `key`. The frame
    /// counter starts at 0 for each key.
    pub fn new(suite: Suite, key: &AudienceKey, leaf: u32) -> Result<Self, FrameError> {
        let generation = key.generation();
        let kid = generation.kid(leaf);
        let base = key.sender_base_key(u64::from(leaf));
        let key = EncryptionKey::derive_from(suite.sframe(), kid, base.expose())
            .map_err(|e| FrameError::Internal(e.to_string()))?;
        Ok(Self {
            suite,
            key,
            counter: MonotonicCounter::new(MAX_COUNTER),
            generation,
        })
    }

    /// The generation frames are encrypted with.
    pub fn generation(&self) -> KeyGeneration {
        self.generation
    }

    /// Encrypt one frame (e.g. one Opus packet). Returns header ‖ ciphertext ‖ tag.
    pub fn encrypt(&mut self, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
        let media = MediaFrameView::try_new(&mut self.counter, &payload)
            .map_err(|_| FrameError::CounterExhausted)?;
        let enc = media
            .encrypt(&self.key)
            .map_err(|e| FrameError::Internal(e.to_string()))?;
        Ok(enc.sframe_cipher_text().to_vec())
    }
}

/// Parse only the SFrame header: (KID, CTR, header length). Facing the
/// network; fuzzed.
pub fn parse_header(frame: &[u8]) -> Result<(u64, u64, usize), FrameError> {
    let h = SframeHeader::deserialize(frame).map_err(|_| FrameError::MalformedHeader)?;
    if h.len() > frame.len() {
        return Err(FrameError::MalformedHeader);
    }
    Ok((h.key_id(), h.counter(), h.len()))
}

/// Sliding replay window over the frame counters of one sender stream
/// (the last 128 counters below the highest seen).
#[derive(Debug, Default, Clone)]
pub struct ReplayWindow {
    highest: Option<u64>,
    /// bit i set = counter `highest - i` was seen
    seen: u128,
}

const REPLAY_WINDOW: u64 = 128;

impl ReplayWindow {
    /// Whether `ctr` is fresh: not seen, and not older than the window.
    pub fn check(&self, ctr: u64) -> bool {
        match self.highest {
            None => true,
            Some(h) if ctr > h => true,
            Some(h) => {
                let d = h - ctr;
                d < REPLAY_WINDOW && self.seen & (1u128 << d) == 0
            }
        }
    }

    /// Marks `ctr` seen (call only once its frame authenticated).
    pub fn record(&mut self, ctr: u64) {
        match self.highest {
            None => {
                self.highest = Some(ctr);
                self.seen = 1;
            }
            Some(h) if ctr > h => {
                let shift = ctr - h;
                self.seen = if shift >= REPLAY_WINDOW {
                    0
                } else {
                    self.seen << shift
                };
                self.seen |= 1;
                self.highest = Some(ctr);
            }
            Some(h) => {
                let d = h - ctr;
                if d < REPLAY_WINDOW {
                    self.seen |= 1u128 << d;
                }
            }
        }
    }
}

struct Held {
    key: AudienceKey,
    /// `None` while current; the end of its grace once replaced.
    expires_at_ms: Option<u64>,
}

/// Receive keys of a room: the current audience key generation and the
/// previous ones during their grace period. Used by listeners and stage
/// members alike. Time is passed in (milliseconds, any monotonic origin).
pub struct KeyRing {
    suite: Suite,
    grace_ms: u64,
    held: Vec<Held>,
    derived: HashMap<u64, (KeyGeneration, DecryptionKey)>,
    replay: HashMap<u64, ReplayWindow>,
    /// KID tags of generations whose grace ended (at most 4, one per tag),
    /// so that their frames get [`FrameError::StaleKeyId`] rather than
    /// [`FrameError::UnknownKeyId`] whenever they arrive.
    retired: Vec<u64>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("suite", &self.suite)
            .field("grace_ms", &self.grace_ms)
            .field(
                "generations",
                &self
                    .held
                    .iter()
                    .map(|h| h.key.generation)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Test-only (feature `audit`): every secret this ring holds — each
    /// audience secret and the SFrame base keys it yields for stage leaves
    /// 0–63 — for the operator audit to search the server's storage with.
    #[cfg(feature = "audit")]
    pub fn audit_secrets(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for held in &self.held {
            out.push(held.key.secret.expose().to_vec());
            for leaf in 0..64 {
                out.push(held.key.sender_base_key(leaf).expose().to_vec());
            }
        }
        out
    }

    /// An empty ring. `grace_ms` is how long a replaced generation still
    /// decrypts (default [`DEFAULT_GRACE_MS`]).
    pub fn new(suite: Suite, grace_ms: u64) -> Self {
        Self {
            suite,
            grace_ms,
            held: Vec::new(),
            derived: HashMap::new(),
            replay: HashMap::new(),
            retired: Vec::new(),
        }
    }

    /// The newest generation held.
    pub fn current(&self) -> Option<KeyGeneration> {
        self.held
            .iter()
            .filter(|h| h.expires_at_ms.is_none())
            .map(|h| h.key.generation)
            .max()
    }

    /// Whether `generation` is held (current or in grace).
    pub fn holds(&self, generation: KeyGeneration) -> bool {
        self.held.iter().any(|h| h.key.generation == generation)
    }

    /// Install a new generation at `now_ms`. Older generations enter their
    /// grace period; a generation with the same KID tag is dropped at once.
    /// Installing a generation older than the current one only adds it in
    /// grace (late delivery), never replaces the current one.
    pub fn install(&mut self, key: AudienceKey, now_ms: u64) {
        self.expire(now_ms);
        let g = key.generation;
        if self.holds(g) {
            return;
        }
        let newest = self.current().is_none_or(|c| g > c);
        if newest {
            let until = now_ms.saturating_add(self.grace_ms);
            for h in &mut self.held {
                if h.expires_at_ms.is_none() {
                    h.expires_at_ms = Some(until);
                }
            }
        }
        let tag = g.tag();
        self.retired.retain(|t| *t != tag);
        self.held.retain(|h| h.key.generation.tag() != tag);
        self.derived.retain(|kid, _| split_kid(*kid).1 != tag);
        self.replay.retain(|kid, _| split_kid(*kid).1 != tag);
        let expires_at_ms = if newest {
            None
        } else {
            Some(now_ms.saturating_add(self.grace_ms))
        };
        self.held.push(Held { key, expires_at_ms });
    }

    /// Drop generations whose grace ended. Call on a timer, or rely on
    /// `decrypt` doing it.
    pub fn expire(&mut self, now_ms: u64) {
        let before = self.held.len();
        let retired = &mut self.retired;
        self.held.retain(|h| {
            let keep = h.expires_at_ms.is_none_or(|t| now_ms < t);
            let tag = h.key.generation.tag();
            if !keep && !retired.contains(&tag) {
                retired.push(tag);
            }
            keep
        });
        if self.held.len() != before {
            let live: Vec<u64> = self.held.iter().map(|h| h.key.generation.tag()).collect();
            self.derived
                .retain(|kid, _| live.contains(&split_kid(*kid).1));
            self.replay
                .retain(|kid, _| live.contains(&split_kid(*kid).1));
        }
    }

    /// When the next grace period ends, if any (for the caller's timer).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.held.iter().filter_map(|h| h.expires_at_ms).min()
    }

    /// The generation whose key decrypted frames with `kid` (known once a
    /// frame with it authenticated): KIDs repeat across generations, so a
    /// replay filter outside the ring keys on this too.
    pub fn generation_of(&self, kid: u64) -> Option<KeyGeneration> {
        self.derived.get(&kid).map(|(g, _)| *g)
    }

    /// Decrypt one SFrame frame. Rejects unknown and stale KIDs, replays and
    /// forgeries with typed errors.
    pub fn decrypt(&mut self, now_ms: u64, frame: &[u8]) -> Result<Vec<u8>, FrameError> {
        let (kid, ctr, _) = parse_header(frame)?;
        let (leaf, tag) = split_kid(kid);
        self.expire(now_ms);
        if self.replay.get(&kid).is_some_and(|w| !w.check(ctr)) {
            return Err(FrameError::Replayed { kid, ctr });
        }
        let view = EncryptedFrameView::try_new(&frame).map_err(|_| FrameError::MalformedHeader)?;
        let media = if let Some((_, dk)) = self.derived.get(&kid) {
            view.decrypt(dk)
                .map_err(|_| FrameError::AuthenticationFailed)?
        } else {
            // A KID is unauthenticated until its frame decrypts: derive the
            // key, but cache it only once a frame authenticated with it, so
            // forged KIDs cannot grow the cache.
            let Some(held) = self.held.iter().find(|h| h.key.generation.tag() == tag) else {
                return Err(if self.retired.contains(&tag) {
                    FrameError::StaleKeyId { kid }
                } else {
                    FrameError::UnknownKeyId { kid }
                });
            };
            let generation = held.key.generation;
            let base = held.key.sender_base_key(leaf);
            let dk = DecryptionKey::derive_from(self.suite.sframe(), kid, base.expose())
                .map_err(|e| FrameError::Internal(e.to_string()))?;
            let media = view
                .decrypt(&dk)
                .map_err(|_| FrameError::AuthenticationFailed)?;
            self.derived.insert(kid, (generation, dk));
            media
        };
        self.replay.entry(kid).or_default().record(ctr);
        Ok(media.payload().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_window() {
        let mut w = ReplayWindow::default();
        for c in [5u64, 3, 7, 6] {
            assert!(w.check(c));
            w.record(c);
        }
        assert!(!w.check(5));
        assert!(!w.check(7));
        assert!(w.check(4));
        w.record(500);
        assert!(!w.check(7), "far too old");
        assert!(w.check(499));
    }
}
