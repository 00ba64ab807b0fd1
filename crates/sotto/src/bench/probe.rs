//! What the generator reads off the server under test: CPU time and memory
//! from `/proc/<pid>` (any server: sotto, or Janus), and sotto's counters
//! and forwarding-latency histogram from `/metrics`.

use anyhow::Context as _;

/// Clock ticks per second of `/proc/<pid>/stat` (`sysconf(_SC_CLK_TCK)`,
/// 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime of a process (all its threads), in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    cpu_from_stat(&stat).context("unexpected /proc stat format")
}

/// utime + stime of the calling thread, in seconds.
pub fn thread_cpu_seconds_self() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat")
        .context("reading /proc/thread-self/stat")?;
    cpu_from_stat(&stat).context("unexpected /proc stat format")
}

fn cpu_from_stat(stat: &str) -> Option<f64> {
    // The command name may hold spaces: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    // After ')': state is field 3; utime is field 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// The largest resident set size a process had so far, in KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc status"))
}

/// `RcvbufErrors` of `/proc/net/snmp`: UDP datagrams dropped because a
/// socket's receive buffer was full (all sockets of the machine).
pub fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names = udp.next()?;
    let values = udp.next()?;
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// The numbers of interest from one `/metrics` scrape.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub forwarded: f64,
    /// HTTP responses of every status class.
    pub http_responses: f64,
    /// Messages received on session channels.
    pub channel_messages: f64,
    /// (upper bound in seconds, cumulative count) per bucket, `+Inf` last.
    pub latency: Vec<(f64, f64)>,
}

impl Scrape {
    pub async fn fetch(http: &reqwest::Client, server: &str) -> anyhow::Result<Scrape> {
        let text = http
            .get(format!("{}/metrics", server.trim_end_matches('/')))
            .send()
            .await
            .context("fetching /metrics")?
            .error_for_status()
            .context("fetching /metrics")?
            .text()
            .await
            .context("reading /metrics")?;
        Ok(Scrape::parse(&text))
    }

    pub fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if name == "sotto_media_rtp_forwarded_total" {
                scrape.forwarded = value;
            } else if name.starts_with("sotto_http_responses_total{") {
                scrape.http_responses += value;
            } else if name == "sotto_channel_messages_total" {
                scrape.channel_messages = value;
            } else if let Some(le) = name
                .strip_prefix("sotto_media_forward_latency_seconds_bucket{le=\"")
                .and_then(|r| r.strip_suffix("\"}"))
            {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                scrape.latency.push((bound, value));
            }
        }
        scrape
    }

    /// The latency histogram of what happened between `earlier` and `self`.
    pub fn latency_since(&self, earlier: &Scrape) -> Vec<(f64, f64)> {
        self.latency
            .iter()
            .map(|(le, n)| {
                let before = earlier
                    .latency
                    .iter()
                    .find(|(l, _)| l == le)
                    .map_or(0.0, |(_, n)| *n);
                (*le, n - before)
            })
            .collect()
    }
}

/// The `q` quantile (0..1) of a cumulative histogram, interpolated
/// linearly inside its bucket; `None` when it is empty. A quantile in the
/// `+Inf` bucket is reported as the last finite bound.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, cumulative) in buckets {
        if cumulative >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = cumulative - lower.1;
            let frac = if in_bucket > 0.0 {
                (rank - lower.1) / in_bucket
            } else {
                1.0
            };
            return Some(lower.0 + frac * (le - lower.0));
        }
        lower = (le, cumulative);
    }
    Some(lower.0)
}

/// The `q` quantile of plain samples (nearest rank).
pub fn sample_quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_the_command_name() {
        let stat = "1234 (sotto serve) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(cpu_from_stat(stat), Some(3.0));
    }

    #[test]
    fn histogram_quantiles_interpolate() {
        let h = [(0.001, 50.0), (0.002, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(&h, 0.5), Some(0.001));
        let p75 = quantile(&h, 0.75).unwrap();
        assert!((p75 - 0.0015).abs() < 1e-9);
        assert_eq!(quantile(&[(f64::INFINITY, 0.0)], 0.5), None);
    }
}
