//! A small reorder buffer for received Opus packets that plays out one frame
//! per 20 ms tick, with a fixed delay of `depth - 1` ticks.
//!
//! Sans-IO: [`JitterBuffer::push`] each packet as it arrives, and
//! [`JitterBuffer::pop`] once per tick; the buffer counts ticks, so it needs
//! no clock. The key of a packet is its 16-bit frame number: the RTP sequence
//! number when the sender sends every frame (DTX packets included), or
//! `rtp_timestamp / 960` when it skips DTX frames, so that silent gaps show up
//! as missing frames rather than as nothing.
//!
//! Rules, in order of precedence:
//! - A packet at or before the last *played* frame is late and dropped.
//! - The first packet after idling sets the schedule: it plays `depth - 1`
//!   ticks after it arrived, and each later frame one tick after its
//!   predecessor, so up to `depth - 1` ticks of network jitter are absorbed.
//! - While playing, a packet far ahead (≥ [`MAX_JUMP`] frames) means the
//!   stream restarted: the buffer resets and schedules anew.
//! - A packet behind the playout point but after the last played frame (a
//!   sender that paused without counting the pause in its frame numbers, or
//!   a burst of losses that turned out late) schedules anew from that packet:
//!   nothing after it is skipped and the delay is again `depth - 1` ticks.
//! - After [`IDLE_AFTER`] ticks with an empty buffer the buffer goes idle.

use std::collections::BTreeMap;

/// Frames ahead of the playout point beyond which a packet restarts the stream.
pub const MAX_JUMP: u64 = 64;
/// Empty ticks in a row after which the buffer goes idle (500 ms).
pub const IDLE_AFTER: u32 = 25;

/// What to play for one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// The packet for this tick.
    Frame {
        /// Its RTP sequence number.
        seq: u16,
        /// The Opus packet.
        payload: Vec<u8>,
    },
    /// The packet for this tick is missing. `next` is the following packet if
    /// it has arrived: decode its FEC ([`crate::OpusDecoder::decode_fec`]);
    /// otherwise conceal ([`crate::OpusDecoder::decode`] with `None`).
    Lost {
        /// The missing sequence number.
        seq: u16,
        /// The packet after it, if already buffered.
        next: Option<Vec<u8>>,
    },
    /// Not playing (before the first packets, or after a long silence).
    Idle,
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Buffered.
    Accepted,
    /// Buffered after resetting the buffer (the sequence jumped far ahead).
    Reset,
    /// Already buffered; dropped.
    Duplicate,
    /// Its frame's time has passed; dropped.
    Late,
}

/// Counters since creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets buffered.
    pub accepted: u64,
    /// Packets dropped as late.
    pub late: u64,
    /// Packets dropped as duplicates.
    pub duplicate: u64,
    /// Resets for a sequence jump.
    pub resets: u64,
    /// Ticks that played a packet.
    pub played: u64,
    /// Ticks that found their packet missing.
    pub lost: u64,
    /// Lost ticks for which the next packet (and so its FEC) was at hand.
    pub lost_with_next: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing buffered, nothing scheduled.
    Idle,
    /// A packet arrived; playing starts after `ticks_left` more ticks.
    Waiting { ticks_left: usize },
    /// `next` is the extended frame number of the next tick.
    Playing { next: u64 },
}

/// Frame-numbered reorder buffer; see the module docs.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    depth: usize,
    phase: Phase,
    /// Extended sequence number of the last packet pushed: the unwrap anchor.
    anchor: Option<u64>,
    /// Extended sequence number of the last frame actually played.
    last_played: Option<u64>,
    slots: BTreeMap<u64, Vec<u8>>,
    empty_ticks: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer that plays each frame `depth - 1` ticks after the first packet
    /// of a talk spurt arrived (`depth` at least 1).
    pub fn new(depth: usize) -> Self {
        JitterBuffer {
            depth: depth.max(1),
            phase: Phase::Idle,
            anchor: None,
            last_played: None,
            slots: BTreeMap::new(),
            empty_ticks: 0,
            stats: JitterStats::default(),
        }
    }

    /// The configured depth in frames.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Packets currently buffered.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no packet is buffered.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether the buffer is not playing (idle, or waiting out its delay).
    pub fn is_idle(&self) -> bool {
        !matches!(self.phase, Phase::Playing { .. })
    }

    /// Counters since creation.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Maps a 16-bit sequence number to the extended one nearest the anchor.
    fn extend(&mut self, seq: u16) -> u64 {
        let ext = match self.anchor {
            // Start well away from zero so that backward steps stay positive.
            None => (1u64 << 32) + u64::from(seq),
            Some(anchor) => {
                let delta = i64::from(seq.wrapping_sub(anchor as u16) as i16);
                anchor.saturating_add_signed(delta)
            }
        };
        self.anchor = Some(ext);
        ext
    }

    fn is_played(&self, ext: u64) -> bool {
        self.last_played
            .is_some_and(|last| ext <= last && last - ext < MAX_JUMP)
    }

    /// Takes in a received packet with its 16-bit frame number.
    pub fn push(&mut self, seq: u16, payload: &[u8]) -> PushOutcome {
        let ext = self.extend(seq);
        if self.is_played(ext) {
            self.stats.late += 1;
            return PushOutcome::Late;
        }
        let mut outcome = PushOutcome::Accepted;
        match self.phase {
            Phase::Playing { next }
                if ext >= next + MAX_JUMP || next - ext.min(next) >= MAX_JUMP =>
            {
                self.reset();
                outcome = PushOutcome::Reset;
            }
            Phase::Playing { next } if ext < next => {
                // Behind the playout point, after anything played: reschedule.
                self.phase = Phase::Waiting {
                    ticks_left: self.depth - 1,
                };
            }
            Phase::Playing { .. } => {}
            Phase::Waiting { .. } => {
                // A packet far from what is waiting belongs to a new stream.
                let far = |k: &u64| k.abs_diff(ext) >= MAX_JUMP;
                if self.slots.keys().next().is_some_and(far)
                    || self.slots.keys().next_back().is_some_and(far)
                {
                    self.reset();
                    outcome = PushOutcome::Reset;
                }
            }
            Phase::Idle => {}
        }
        if self.phase == Phase::Idle {
            self.phase = Phase::Waiting {
                ticks_left: self.depth - 1,
            };
        }
        if self.slots.contains_key(&ext) {
            self.stats.duplicate += 1;
            return PushOutcome::Duplicate;
        }
        self.slots.insert(ext, payload.to_vec());
        self.stats.accepted += 1;
        outcome
    }

    fn reset(&mut self) {
        self.slots.clear();
        self.phase = Phase::Idle;
        self.last_played = None;
        self.empty_ticks = 0;
        self.stats.resets += 1;
    }

    /// What to play for this tick; call exactly once per 20 ms.
    pub fn pop(&mut self) -> Playout {
        let next = match self.phase {
            Phase::Idle => return Playout::Idle,
            Phase::Waiting { ticks_left } if ticks_left > 0 => {
                self.phase = Phase::Waiting {
                    ticks_left: ticks_left - 1,
                };
                return Playout::Idle;
            }
            Phase::Waiting { .. } => match self.slots.keys().next() {
                Some(&first) => first,
                None => {
                    self.phase = Phase::Idle;
                    return Playout::Idle;
                }
            },
            Phase::Playing { next } => next,
        };
        self.phase = Phase::Playing { next: next + 1 };
        if let Some(payload) = self.slots.remove(&next) {
            self.stats.played += 1;
            self.last_played = Some(next);
            self.empty_ticks = 0;
            return Playout::Frame {
                seq: next as u16,
                payload,
            };
        }
        self.stats.lost += 1;
        let following = self.slots.get(&(next + 1)).cloned();
        if following.is_some() {
            self.stats.lost_with_next += 1;
        }
        if self.slots.is_empty() {
            self.empty_ticks += 1;
            if self.empty_ticks >= IDLE_AFTER {
                self.phase = Phase::Idle;
                self.empty_ticks = 0;
            }
        }
        Playout::Lost {
            seq: next as u16,
            next: following,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_seq(p: &Playout) -> Option<u16> {
        match p {
            Playout::Frame { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    #[test]
    fn waits_for_depth_then_plays_in_order() {
        let mut jb = JitterBuffer::new(3);
        assert_eq!(jb.push(10, b"a"), PushOutcome::Accepted);
        assert_eq!(jb.pop(), Playout::Idle);
        jb.push(12, b"c");
        assert_eq!(jb.pop(), Playout::Idle);
        jb.push(11, b"b");
        assert_eq!(frame_seq(&jb.pop()), Some(10));
        assert_eq!(frame_seq(&jb.pop()), Some(11));
        assert_eq!(frame_seq(&jb.pop()), Some(12));
    }

    #[test]
    fn loss_carries_the_next_packet_for_fec() {
        let mut jb = JitterBuffer::new(2);
        jb.push(1, b"1");
        jb.push(3, b"3");
        assert_eq!(jb.pop(), Playout::Idle);
        assert_eq!(frame_seq(&jb.pop()), Some(1));
        assert_eq!(
            jb.pop(),
            Playout::Lost {
                seq: 2,
                next: Some(b"3".to_vec())
            }
        );
        assert_eq!(frame_seq(&jb.pop()), Some(3));
        assert_eq!(jb.push(2, b"2"), PushOutcome::Late);
        assert_eq!(jb.stats().lost_with_next, 1);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut jb = JitterBuffer::new(2);
        jb.push(65_535, b"x");
        jb.push(0, b"y");
        jb.push(1, b"z");
        assert_eq!(jb.pop(), Playout::Idle);
        assert_eq!(frame_seq(&jb.pop()), Some(65_535));
        assert_eq!(frame_seq(&jb.pop()), Some(0));
        assert_eq!(frame_seq(&jb.pop()), Some(1));
    }

    #[test]
    fn duplicates_and_far_jumps() {
        let mut jb = JitterBuffer::new(1);
        jb.push(5, b"5");
        assert_eq!(jb.push(5, b"5"), PushOutcome::Duplicate);
        assert_eq!(frame_seq(&jb.pop()), Some(5));
        assert_eq!(jb.push(5_000, b"new"), PushOutcome::Reset);
        assert_eq!(frame_seq(&jb.pop()), Some(5_000));
    }

    #[test]
    fn resumes_after_a_pause_without_skipping() {
        // The sender stops for 5 ticks (DTX not sent) and resumes at seq 3.
        let mut jb = JitterBuffer::new(1);
        jb.push(1, b"1");
        jb.push(2, b"2");
        assert_eq!(frame_seq(&jb.pop()), Some(1));
        assert_eq!(frame_seq(&jb.pop()), Some(2));
        for _ in 0..5 {
            assert!(matches!(jb.pop(), Playout::Lost { .. }));
        }
        assert_eq!(jb.push(3, b"3"), PushOutcome::Accepted);
        assert_eq!(frame_seq(&jb.pop()), Some(3));
    }

    #[test]
    fn goes_idle_after_long_silence() {
        let mut jb = JitterBuffer::new(2);
        jb.push(1, b"1");
        jb.push(2, b"2");
        assert_eq!(jb.pop(), Playout::Idle);
        assert_eq!(frame_seq(&jb.pop()), Some(1));
        assert_eq!(frame_seq(&jb.pop()), Some(2));
        for _ in 0..IDLE_AFTER {
            assert!(matches!(jb.pop(), Playout::Lost { .. }));
        }
        assert!(jb.is_idle());
        assert_eq!(jb.pop(), Playout::Idle);
        assert_eq!(jb.push(1, b"old"), PushOutcome::Late);
    }

    #[test]
    fn sparse_frames_keep_their_schedule() {
        // Frame numbers from RTP timestamps: a talk spurt, a DTX gap with a
        // comfort-noise update every 20 frames, another spurt. Frame i arrives
        // at tick i; with depth 3 every frame must play at tick i + 2.
        let arrivals: Vec<u16> = (0..10).chain([30, 50]).chain(70..80).collect();
        let mut jb = JitterBuffer::new(3);
        let mut played = Vec::new();
        for tick in 0u16..90 {
            if arrivals.contains(&tick) {
                assert_eq!(jb.push(tick, &tick.to_be_bytes()), PushOutcome::Accepted);
            }
            if let Some(seq) = frame_seq(&jb.pop()) {
                played.push((seq, tick));
            }
        }
        assert_eq!(played.len(), arrivals.len());
        assert!(
            played.iter().all(|&(seq, tick)| tick == seq + 2),
            "{played:?}"
        );
    }
}
