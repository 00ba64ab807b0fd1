//! Test-only tap (cargo feature `tap`, off by default): records every payload
//! the SFU forwards, so an end-to-end test can show it only ever held ciphertext.

use std::collections::HashMap;

use crate::{PeerId, RoomKey};

/// One forwarded RTP payload, as received from its speaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapRecord {
    /// The speaker.
    pub source: PeerId,
    /// The speaker's extended RTP sequence number.
    pub seq: u64,
    /// The payload, byte for byte.
    pub payload: Vec<u8>,
}

#[derive(Debug, Default)]
pub(crate) struct Tap {
    rooms: HashMap<RoomKey, Vec<TapRecord>>,
}

impl Tap {
    pub(crate) fn record(&mut self, room: RoomKey, source: PeerId, seq: u64, payload: &[u8]) {
        self.rooms.entry(room).or_default().push(TapRecord {
            source,
            seq,
            payload: payload.to_vec(),
        });
    }

    pub(crate) fn take(&mut self, room: RoomKey) -> Vec<TapRecord> {
        self.rooms.remove(&room).unwrap_or_default()
    }
}
