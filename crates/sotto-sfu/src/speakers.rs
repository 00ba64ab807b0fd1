//! Active-speaker selection from the RFC 6464 audio level (never the payload).

use std::time::{Duration, Instant};

use crate::PeerId;

#[derive(Debug, Clone, Copy)]
struct Speaker {
    peer: PeerId,
    last_voiced: Instant,
}

/// The speakers a room forwards: at most `capacity`, in order of entry.
///
/// A voiced packet admits its sender if there is room; a speaker leaves after
/// `hold` without voiced packets. Nobody is pre-empted while still talking, so
/// slots do not flap.
#[derive(Debug)]
pub(crate) struct ActiveSpeakers {
    capacity: usize,
    hold: Duration,
    active: Vec<Speaker>,
}

impl ActiveSpeakers {
    pub(crate) fn new(capacity: usize, hold: Duration) -> Self {
        Self {
            capacity,
            hold,
            active: Vec::new(),
        }
    }

    /// Records a packet. Returns true if the set changed.
    pub(crate) fn observe(&mut self, peer: PeerId, voiced: bool, now: Instant) -> bool {
        if let Some(s) = self.active.iter_mut().find(|s| s.peer == peer) {
            if voiced {
                s.last_voiced = now;
            }
            return false;
        }
        if voiced && self.active.len() < self.capacity {
            self.active.push(Speaker {
                peer,
                last_voiced: now,
            });
            return true;
        }
        false
    }

    /// Drops speakers silent for `hold`. Returns true if the set changed.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        let before = self.active.len();
        let hold = self.hold;
        self.active
            .retain(|s| now.saturating_duration_since(s.last_voiced) < hold);
        before != self.active.len()
    }

    /// Removes a peer (muted, left). Returns true if it was active.
    pub(crate) fn remove(&mut self, peer: PeerId) -> bool {
        let before = self.active.len();
        self.active.retain(|s| s.peer != peer);
        before != self.active.len()
    }

    pub(crate) fn is_active(&self, peer: PeerId) -> bool {
        self.active.iter().any(|s| s.peer == peer)
    }

    pub(crate) fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.active.iter().map(|s| s.peer)
    }

    /// When the next speaker would expire.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.active.iter().map(|s| s.last_voiced + self.hold).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u8) -> PeerId {
        PeerId::from_bytes([n; 16])
    }

    #[test]
    fn admits_up_to_capacity_and_expires_after_hold() {
        let t0 = Instant::now();
        let mut s = ActiveSpeakers::new(2, Duration::from_secs(2));
        assert!(!s.observe(p(1), false, t0), "unvoiced does not admit");
        assert!(s.observe(p(1), true, t0));
        assert!(s.observe(p(2), true, t0));
        assert!(!s.observe(p(3), true, t0), "full");
        assert!(!s.is_active(p(3)));
        assert!(!s.observe(p(1), true, t0 + Duration::from_millis(1500)));
        assert!(s.expire(t0 + Duration::from_millis(2100)));
        assert_eq!(s.peers().collect::<Vec<_>>(), vec![p(1)]);
        assert!(s.observe(p(3), true, t0 + Duration::from_millis(2200)));
        assert!(s.remove(p(1)));
        assert_eq!(s.peers().collect::<Vec<_>>(), vec![p(3)]);
    }
}
