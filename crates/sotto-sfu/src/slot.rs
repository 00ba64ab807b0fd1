//! Receive slots: a fixed outgoing stream per receiver whose source changes
//! with the active speakers, without any SDP renegotiation.
//!
//! Each slot has its own SSRC (chosen by str0m when answering). Sequence
//! numbers and RTP timestamps are rewritten so the slot looks like one
//! continuous stream: when the source changes (or resumes after a gap), the
//! new source's first packet continues from the slot's last sequence number,
//! and its timestamp advances by the wall-clock time since the slot's last
//! packet (at least one 20 ms frame). Within one source, the source's own
//! gaps (loss) and order are preserved.

use std::time::{Duration, Instant};

use crate::PeerId;

/// Opus RTP clock.
const CLOCK_HZ: u64 = 48_000;
/// One 20 ms Opus frame at 48 kHz.
const MIN_TS_STEP: u32 = 960;

#[derive(Debug, Clone, Copy)]
struct Mapping {
    in_seq: u64,
    out_seq: u64,
    in_ts: u32,
    out_ts: u32,
}

/// Sequence-number and timestamp rewriting of one slot.
#[derive(Debug)]
pub(crate) struct SlotRewriter {
    source: Option<PeerId>,
    mapping: Option<Mapping>,
    /// Next unused outgoing sequence number.
    next_seq: u64,
    /// Timestamp of the highest sequence number sent.
    last_ts: u32,
    last_sent_at: Option<Instant>,
    rebase_gap: Duration,
}

impl SlotRewriter {
    /// `initial_seq` is kept below 2^15 so the SRTP rollover counter starts at 0.
    pub(crate) fn new(initial_seq: u16, initial_ts: u32, rebase_gap: Duration) -> Self {
        Self {
            source: None,
            mapping: None,
            next_seq: u64::from(initial_seq & 0x7fff),
            last_ts: initial_ts,
            last_sent_at: None,
            rebase_gap,
        }
    }

    pub(crate) fn source(&self) -> Option<PeerId> {
        self.source
    }

    pub(crate) fn last_sent_at(&self) -> Option<Instant> {
        self.last_sent_at
    }

    /// Points the slot at a new source (or none). The next packet re-bases.
    pub(crate) fn set_source(&mut self, source: Option<PeerId>) {
        if self.source != source {
            self.source = source;
            self.mapping = None;
        }
    }

    /// Maps an incoming (extended seq, timestamp) to the slot's. `None` means
    /// the packet predates the current mapping and must be dropped.
    pub(crate) fn rewrite(&mut self, in_seq: u64, in_ts: u32, now: Instant) -> Option<(u64, u32)> {
        let stale = self
            .last_sent_at
            .is_some_and(|t| now.saturating_duration_since(t) >= self.rebase_gap);
        if stale {
            self.mapping = None;
        }
        let m = match self.mapping {
            Some(m) => m,
            None => {
                let step = self.last_sent_at.map_or(0, |t| {
                    let elapsed = now.saturating_duration_since(t);
                    let ticks = elapsed.as_micros() as u64 * CLOCK_HZ / 1_000_000;
                    (ticks.min(u64::from(u32::MAX / 2)) as u32).max(MIN_TS_STEP)
                });
                let m = Mapping {
                    in_seq,
                    out_seq: self.next_seq,
                    in_ts,
                    out_ts: self.last_ts.wrapping_add(step),
                };
                self.mapping = Some(m);
                m
            }
        };
        let delta = in_seq.checked_sub(m.in_seq)?;
        let out_seq = m.out_seq + delta;
        let out_ts = m.out_ts.wrapping_add(in_ts.wrapping_sub(m.in_ts));
        if out_seq >= self.next_seq {
            self.next_seq = out_seq + 1;
            self.last_ts = out_ts;
            self.last_sent_at = Some(now);
        }
        Some((out_seq, out_ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: Duration = Duration::from_secs(1);

    fn p(n: u8) -> PeerId {
        PeerId::from_bytes([n; 16])
    }

    #[test]
    fn continuous_across_source_change() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = SlotRewriter::new(100, 5000, GAP);
        s.set_source(Some(p(1)));
        assert_eq!(s.rewrite(7000, 1_000_000, t0), Some((100, 5000)));
        assert_eq!(s.rewrite(7001, 1_000_960, t0 + ms(20)), Some((101, 5960)));
        // Loss inside one source keeps the gap.
        assert_eq!(s.rewrite(7003, 1_002_880, t0 + ms(60)), Some((103, 7880)));
        // Reordered packet of the same source keeps its place.
        assert_eq!(s.rewrite(7002, 1_001_920, t0 + ms(61)), Some((102, 6920)));
        // New source 100 ms later: seq continues, ts advances by 100 ms.
        s.set_source(Some(p(2)));
        assert_eq!(s.rewrite(3, 77, t0 + ms(160)), Some((104, 7880 + 4800)));
        assert_eq!(
            s.rewrite(4, 77 + 960, t0 + ms(180)),
            Some((105, 7880 + 5760))
        );
        // Older than the mapping: dropped.
        assert_eq!(s.rewrite(2, 0, t0 + ms(181)), None);
    }

    #[test]
    fn rebases_after_gap_and_wraps_timestamps() {
        let t0 = Instant::now();
        let mut s = SlotRewriter::new(0xffff, u32::MAX - 100, GAP);
        s.set_source(Some(p(1)));
        let (q0, ts0) = s.rewrite(10, 0, t0).unwrap_or_default();
        assert_eq!(q0, 0x7fff, "initial seq kept below 2^15");
        assert_eq!(ts0, u32::MAX - 100);
        let (q1, ts1) = s
            .rewrite(11, 960, t0 + Duration::from_millis(20))
            .unwrap_or_default();
        assert_eq!(q1, q0 + 1);
        assert_eq!(ts1, 859, "timestamp wraps");
        // The source skipped 500 packets while muted: the slot does not.
        let (q2, ts2) = s
            .rewrite(511, 480_960, t0 + Duration::from_secs(3))
            .unwrap_or_default();
        assert_eq!(q2, q1 + 1);
        assert_eq!(ts2, ts1.wrapping_add(48_000 * 3 - 960));
    }
}
