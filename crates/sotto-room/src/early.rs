//! Frames that came before their key.
//!
//! Media and keys travel separately: the SFU forwards audio as soon as a
//! listener's media session is up, and the sealed key comes through the
//! relay from the distributor. A listener's first frames, and the first
//! frames a speaker sends after a rotation, can therefore arrive before
//! the key that opens them. Those frames are not forgeries. Instead of
//! losing them, a client holds them for a short while and tries again
//! whenever its keys change.
//!
//! The hold is bounded in frames and in time, so a sender can make it
//! neither grow nor keep frames: a frame that is still closed after
//! [`HOLD_MS`] (or pushed out by newer ones) is given back as expired and
//! counts as a frame that did not decrypt.

use std::collections::VecDeque;

use sotto_e2ee::error::FrameError;

use crate::room::{CryptoError, RoomCrypto};

/// How long a frame waits for its key: a sealed key reaches a listener in
/// well under this on a working server.
pub const HOLD_MS: u64 = 2_000;
/// At most this many frames wait (2 s of one speaker at 50 frames/s; the
/// oldest makes room for a newer one).
pub const HOLD_FRAMES: usize = 100;

/// What became of a frame given to [`EarlyFrames::decrypt`].
#[derive(Debug)]
pub enum Opened<T> {
    /// It decrypted.
    Plain(T, Vec<u8>),
    /// Its key is not here yet: it waits.
    Held,
    /// It does not decrypt, and waiting would not help (forged, replayed,
    /// of a retired key), or it waited too long.
    Failed(CryptoError),
}

/// Frames waiting for their key, each with what the caller needs to play it
/// (`T`: the stream and sequence number, say).
#[derive(Debug)]
pub struct EarlyFrames<T> {
    held: VecDeque<(u64, T, Vec<u8>)>,
    expired: u64,
}

impl<T> Default for EarlyFrames<T> {
    fn default() -> Self {
        Self {
            held: VecDeque::new(),
            expired: 0,
        }
    }
}

/// Whether waiting for keys can open a frame that failed with `e`.
fn key_may_come(e: &CryptoError) -> bool {
    matches!(
        e,
        CryptoError::NoKey | CryptoError::Frame(FrameError::UnknownKeyId { .. })
    )
}

impl<T> EarlyFrames<T> {
    /// Decrypts `frame`, or holds it if its key may still come.
    pub fn decrypt(
        &mut self,
        crypto: &mut RoomCrypto,
        now_ms: u64,
        tag: T,
        frame: Vec<u8>,
    ) -> Opened<T> {
        match crypto.decrypt(now_ms, &frame) {
            Ok(plain) => Opened::Plain(tag, plain),
            Err(e) if key_may_come(&e) => {
                if self.held.len() == HOLD_FRAMES {
                    self.held.pop_front();
                    self.expired += 1;
                }
                self.held.push_back((now_ms, tag, frame));
                Opened::Held
            }
            Err(e) => Opened::Failed(e),
        }
    }

    /// Tries the held frames again (call it when the keys may have
    /// changed, and now and then to expire old frames). Returns the frames
    /// that opened, oldest first.
    pub fn retry(&mut self, crypto: &mut RoomCrypto, now_ms: u64) -> Vec<(T, Vec<u8>)> {
        let mut opened = Vec::new();
        let mut still = VecDeque::with_capacity(self.held.len());
        for (at, tag, frame) in self.held.drain(..) {
            match crypto.decrypt(now_ms, &frame) {
                Ok(plain) => opened.push((tag, plain)),
                Err(e) if key_may_come(&e) && now_ms.saturating_sub(at) < HOLD_MS => {
                    still.push_back((at, tag, frame));
                }
                Err(_) => self.expired += 1,
            }
        }
        self.held = still;
        opened
    }

    /// Frames waiting now.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Frames given up on so far (waited too long, pushed out, or failed
    /// for another reason once their key came). Reading resets the count.
    pub fn take_expired(&mut self) -> u64 {
        std::mem::take(&mut self.expired)
    }
}
