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

    pub fn render(&self, live_rooms: i64) -> String {
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
        out
    }
}
