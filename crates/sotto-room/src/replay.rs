//! One replay filter per device for every frame it decrypts, whichever key
//! ring (stage, listener, the listener's previous join) decrypted it: a
//! relay that plays a frame twice gets it refused the second time, also
//! after a listener refreshes its join request and gets a fresh ring.
//! Windows are per (generation, KID): a KID's counter restarts with each
//! new generation.

use std::collections::{HashMap, VecDeque};

use sotto_e2ee::frame::ReplayWindow;

/// Most (generation, key id) pairs tracked at once (oldest dropped; their
/// frames are refused by the key rings anyway once the generation expires).
const MAX_KIDS: usize = 1024;

/// Sliding windows of SFrame counters, per sender stream.
#[derive(Default)]
pub struct ReplayFilter {
    windows: HashMap<Stream, ReplayWindow>,
    order: VecDeque<Stream>,
}

/// (epoch, rotation, KID): one sender's stream of one generation.
pub type Stream = (u64, u32, u64);

impl ReplayFilter {
    /// Records `ctr` of `kid`; false if it was seen before or is too old.
    pub fn accept(&mut self, kid: Stream, ctr: u64) -> bool {
        let w = match self.windows.get_mut(&kid) {
            Some(w) => w,
            None => {
                if self.order.len() >= MAX_KIDS
                    && let Some(old) = self.order.pop_front()
                {
                    self.windows.remove(&old);
                }
                self.order.push_back(kid);
                self.windows.entry(kid).or_default()
            }
        };
        if !w.check(ctr) {
            return false;
        }
        w.record(ctr);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_and_old_frames_are_refused() {
        let mut f = ReplayFilter::default();
        let (a, b, next) = ((1, 0, 1), (1, 0, 2), (1, 1, 1));
        assert!(f.accept(a, 10));
        assert!(!f.accept(a, 10));
        assert!(f.accept(a, 12));
        assert!(f.accept(a, 11), "late but fresh");
        assert!(!f.accept(a, 11));
        assert!(f.accept(b, 10), "another kid");
        assert!(f.accept(next, 10), "the same kid in the next generation");
        assert!(f.accept(a, 500));
        assert!(!f.accept(a, 300), "outside the window");
        assert!(!f.accept(a, 0));
    }
}
