//! Counters for `/metrics` (Prometheus text format). Counts only: no
//! labels that could carry an identifier.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub responses_2xx: AtomicU64,
    pub responses_4xx: AtomicU64,
    pub responses_5xx: AtomicU64,
    pub rate_limited: AtomicU64,
    pub registrations: AtomicU64,
    pub logins: AtomicU64,
    pub channel_open: AtomicI64,
    pub channel_messages_in: AtomicU64,
    pub channel_errors: AtomicU64,
}

impl Metrics {
    pub fn count_status(&self, status: u16) {
        let counter = match status {
            500.. => &self.responses_5xx,
            400..=499 => &self.responses_4xx,
            _ => &self.responses_2xx,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, live_rooms: i64, media: Option<&crate::media::MediaPlane>) -> String {
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut line = |name: &str, kind: &str, help: &str, labels: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{labels} {value}"
            );
        };
        line(
            "sotto_http_responses_total",
            "counter",
            "HTTP responses by status class.",
            "{class=\"2xx\"}",
            get(&self.responses_2xx).to_string(),
        );
        let _ = writeln!(
            out,
            "sotto_http_responses_total{{class=\"4xx\"}} {}",
            get(&self.responses_4xx)
        );
        let _ = writeln!(
            out,
            "sotto_http_responses_total{{class=\"5xx\"}} {}",
            get(&self.responses_5xx)
        );
        let mut line = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        line(
            "sotto_rate_limited_total",
            "counter",
            "Requests refused by the rate limit.",
            get(&self.rate_limited).to_string(),
        );
        line(
            "sotto_registrations_total",
            "counter",
            "Accounts created.",
            get(&self.registrations).to_string(),
        );
        line(
            "sotto_logins_total",
            "counter",
            "Successful logins.",
            get(&self.logins).to_string(),
        );
        line(
            "sotto_channels_open",
            "gauge",
            "Open session channels.",
            self.channel_open.load(Ordering::Relaxed).to_string(),
        );
        line(
            "sotto_channel_messages_total",
            "counter",
            "Messages received on session channels.",
            get(&self.channel_messages_in).to_string(),
        );
        line(
            "sotto_channel_errors_total",
            "counter",
            "Session channel messages refused.",
            get(&self.channel_errors).to_string(),
        );
        line(
            "sotto_rooms_live",
            "gauge",
            "Rooms that have not ended.",
            live_rooms.to_string(),
        );
        if let Some(media) = media {
            let s = &media.stats();
            let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            line(
                "sotto_media_sent_batched_total",
                "counter",
                "Datagrams sent in sendmmsg batches.",
                load(&media.sent_batched).to_string(),
            );
            line(
                "sotto_media_sent_single_total",
                "counter",
                "Datagrams sent one system call each.",
                load(&media.sent_single).to_string(),
            );
            for (name, kind, help, value) in [
                (
                    "sotto_media_datagrams_in_total",
                    "counter",
                    "UDP datagrams received by the media plane.",
                    s.datagrams_in,
                ),
                (
                    "sotto_media_datagrams_out_total",
                    "counter",
                    "UDP datagrams sent by the media plane.",
                    s.datagrams_out,
                ),
                (
                    "sotto_media_dropped_oversized_total",
                    "counter",
                    "Datagrams dropped: too large.",
                    s.dropped_oversized,
                ),
                (
                    "sotto_media_dropped_malformed_total",
                    "counter",
                    "Datagrams dropped: not STUN, DTLS, RTP or RTCP.",
                    s.dropped_malformed,
                ),
                (
                    "sotto_media_dropped_unknown_source_total",
                    "counter",
                    "Datagrams dropped: from an unknown address.",
                    s.dropped_unknown_source,
                ),
                (
                    "sotto_media_dropped_rejected_total",
                    "counter",
                    "Datagrams the WebRTC stack refused.",
                    s.dropped_rejected,
                ),
                (
                    "sotto_media_rtp_received_total",
                    "counter",
                    "RTP packets received.",
                    s.rtp_received,
                ),
                (
                    "sotto_media_rtp_forwarded_total",
                    "counter",
                    "RTP packets forwarded (one per receiver slot).",
                    s.rtp_forwarded,
                ),
                (
                    "sotto_media_rtp_forwarded_direct_total",
                    "counter",
                    "Of those, SRTP-sealed by the SFU itself (the fast path).",
                    s.rtp_forwarded_direct,
                ),
                (
                    "sotto_media_rtp_dropped_not_allowed_total",
                    "counter",
                    "RTP packets dropped: sender may not publish.",
                    s.rtp_dropped_not_allowed,
                ),
                (
                    "sotto_media_renegotiations_total",
                    "counter",
                    "SDP renegotiations after the first answer (always 0).",
                    s.renegotiations,
                ),
                (
                    "sotto_media_peers_timed_out_total",
                    "counter",
                    "Media peers dropped after silence.",
                    s.peers_timed_out,
                ),
                ("sotto_media_peers", "gauge", "Media peers now.", s.peers),
            ] {
                line(name, kind, help, value.to_string());
            }
            media.forward_latency.render(
                &mut out,
                "sotto_media_forward_latency_seconds",
                "Inside the SFU: from a datagram's receipt to the send of each copy it made forwarded (one observation per copy, timed with the sendmmsg batch it left in).",
            );
        }
        out
    }
}

/// Upper bounds (µs) of [`LatencyHistogram`]'s buckets; the last bucket is `+Inf`.
pub const LATENCY_BOUNDS_US: [u64; 14] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];

/// A Prometheus histogram of durations, lock-free: one counter per bucket.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl LatencyHistogram {
    /// Records `n` observations of `elapsed`.
    pub fn observe(&self, elapsed: std::time::Duration, n: u64) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_US.partition_point(|b| *b < us);
        self.buckets[i].fetch_add(n, Ordering::Relaxed);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns
            .fetch_add(ns.saturating_mul(n), Ordering::Relaxed);
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    /// Appends the histogram in the Prometheus text format (`le` in seconds).
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = match LATENCY_BOUNDS_US.get(i) {
                Some(us) => (*us as f64 / 1e6).to_string(),
                None => "+Inf".to_owned(),
            };
            out.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {cumulative}\n"));
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let count = self.count.load(Ordering::Relaxed);
        out.push_str(&format!("{name}_sum {sum}\n{name}_count {count}\n"));
    }
}
