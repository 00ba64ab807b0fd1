//! What a bad link does to one packet: the decision alone, sans IO.
//!
//! The kernel here has no `netem`, so the test link does in userspace what
//! `tc qdisc add … netem loss 10% delay 40ms 10ms reorder 5%` would: each
//! packet is dropped (random loss, or an outage window) or given the time it
//! leaves the link. Time and randomness come in from the caller; the driver
//! ([`super::link`]) holds the queue and the file descriptors.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// The link's behaviour, the same both ways; changeable while it runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Conditions {
    /// Probability that a packet is lost.
    pub loss: f64,
    /// One-way delay.
    pub delay: Duration,
    /// The delay varies uniformly within `delay ± jitter` (packets sent close
    /// together can swap, as with netem's jitter).
    pub jitter: Duration,
    /// Probability that a packet skips the delay and overtakes those queued
    /// before it (netem's `reorder`).
    pub reorder: f64,
    /// Until then every packet is dropped: the link is down.
    pub down_until: Option<Instant>,
}

/// What happens to a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Lost,
    /// Dropped because the link is down.
    Down,
    /// Leaves the link at this time.
    At(Instant),
}

/// Packets one way, by fate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub lost: u64,
    pub down: u64,
    /// Sent ahead of the queue.
    pub reordered: u64,
    /// Written out to the other side.
    pub delivered: u64,
    /// Could not be written out (the other side's device refused it).
    pub write_failed: u64,
}

/// The decisions for one direction of the link, from a seeded generator.
pub struct Impairment {
    rng: StdRng,
    pub counters: Counters,
}

impl Impairment {
    pub fn new(seed: u64) -> Self {
        Impairment {
            rng: StdRng::seed_from_u64(seed),
            counters: Counters::default(),
        }
    }

    /// The fate of a packet that reached the link at `now`.
    pub fn handle_packet(&mut self, now: Instant, c: &Conditions) -> Verdict {
        self.counters.packets += 1;
        if c.down_until.is_some_and(|until| now < until) {
            self.counters.down += 1;
            return Verdict::Down;
        }
        if c.loss > 0.0 && self.rng.gen_bool(c.loss.min(1.0)) {
            self.counters.lost += 1;
            return Verdict::Lost;
        }
        if c.reorder > 0.0 && self.rng.gen_bool(c.reorder.min(1.0)) {
            self.counters.reordered += 1;
            return Verdict::At(now);
        }
        let jitter = c.jitter.min(c.delay).as_secs_f64();
        let offset = if jitter > 0.0 {
            self.rng.gen_range(-jitter..=jitter)
        } else {
            0.0
        };
        let delay = (c.delay.as_secs_f64() + offset).max(0.0);
        Verdict::At(now + Duration::from_secs_f64(delay))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(c: &Conditions, n: usize) -> (Impairment, Vec<Verdict>) {
        let mut core = Impairment::new(7);
        let start = Instant::now();
        let verdicts = (0..n)
            .map(|i| core.handle_packet(start + Duration::from_millis(i as u64), c))
            .collect();
        (core, verdicts)
    }

    #[test]
    fn loses_about_the_share_asked_for() {
        let c = Conditions {
            loss: 0.1,
            ..Conditions::default()
        };
        let (core, _) = run(&c, 10_000);
        let lost = core.counters.lost;
        assert!((900..1_100).contains(&lost), "{lost} of 10000 lost");
    }

    #[test]
    fn delays_within_the_jitter_and_reorders_some() {
        let c = Conditions {
            delay: Duration::from_millis(40),
            jitter: Duration::from_millis(10),
            reorder: 0.05,
            ..Conditions::default()
        };
        let start = Instant::now();
        let mut core = Impairment::new(3);
        let (mut immediate, mut delayed) = (0, 0);
        for i in 0..2_000u64 {
            let now = start + Duration::from_millis(i);
            match core.handle_packet(now, &c) {
                Verdict::At(t) if t == now => immediate += 1,
                Verdict::At(t) => {
                    let d = t - now;
                    assert!(d >= Duration::from_millis(30) && d <= Duration::from_millis(50));
                    delayed += 1;
                }
                other => panic!("{other:?} without loss"),
            }
        }
        assert!((60..140).contains(&immediate), "{immediate} reordered");
        assert_eq!(immediate + delayed, 2_000);
    }

    #[test]
    fn drops_everything_while_down_and_nothing_after() {
        let start = Instant::now();
        let c = Conditions {
            down_until: Some(start + Duration::from_secs(2)),
            ..Conditions::default()
        };
        let mut core = Impairment::new(1);
        assert_eq!(core.handle_packet(start, &c), Verdict::Down);
        let later = start + Duration::from_millis(1_999);
        assert_eq!(core.handle_packet(later, &c), Verdict::Down);
        let after = start + Duration::from_secs(2);
        assert_eq!(core.handle_packet(after, &c), Verdict::At(after));
        assert_eq!(core.counters.down, 2);
    }
}
