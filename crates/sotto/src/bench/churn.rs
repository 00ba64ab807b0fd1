//! `sotto bench churn`: listeners join and leave a room at a steady rate
//! while its host speaks and a few stable listeners hear; measures what
//! the churn costs the stable ones (decrypt failures, gaps, lost frames)
//! and the server (CPU, memory), and how fast churners get their key.
//!
//! The host is the real client session (`sotto_client::session`, real
//! Opus of a speech-like test signal, the room's key distributor); the
//! stable listeners are the real client path with every frame decrypted
//! and compared with what the host's encoder made (`stable`); churners
//! join, get keyed and leave (`churner`). Every leave of a keyed churner
//! makes the distributor rotate the audience key.
//!
//! Phases: accounts and the room; the host speaks; the stable listeners
//! join and hear; then T seconds of churn, between two snapshots of the
//! server's `/proc` CPU time and memory, and a settling second; then
//! everything stops and the host ends the room.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use sotto_client::Profile;
use sotto_client::session::{self, Mode, SessionConfig, SessionStats};
use sotto_e2ee::stage::StageConfig;
use sotto_proto::room::RoomKind;
use tokio::sync::{Semaphore, watch};

use super::churner::{self, Account, ChurnStats, Cycle};
use super::fanout::{Person, register};
use super::probe;
use super::stable::{self, Phase, Stable, StableReport};

#[derive(Args, Clone, Debug)]
pub struct ChurnArgs {
    /// The server's base URL (loopback).
    #[arg(long)]
    pub server: String,
    /// An invite code good for 1 + stable + accounts registrations; the
    /// server should run with `--auth-rate-limit 0`.
    #[arg(long)]
    pub invite: String,
    /// Listeners that stay for the whole run, with media, checking every frame.
    #[arg(long, default_value_t = 3)]
    pub stable: usize,
    /// Churner joins per minute; each churner leaves again, so there are
    /// as many leaves (and a key rotation per leave of a keyed churner).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of churn.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// How long a churner stays after its key arrived, in milliseconds.
    /// With the join rate it sets the room's size (rate × (dwell + time
    /// to key)), and every join and leave sends the whole room state to
    /// every member: the control plane's cost grows with its square.
    #[arg(long, default_value_t = 1000)]
    pub dwell_ms: u64,
    /// How long a churner waits for its key before it leaves anyway, in seconds.
    #[arg(long, default_value_t = 10)]
    pub key_timeout: u64,
    /// Churning accounts (each joins again once it has left); by default
    /// enough for the rate and the dwell time, twice over.
    #[arg(long)]
    pub accounts: Option<usize>,
    /// The server's process id, for CPU and memory from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Write the figures as a Markdown table to this file.
    #[arg(long)]
    pub markdown: Option<std::path::PathBuf>,
}

impl ChurnArgs {
    fn accounts(&self) -> usize {
        self.accounts.unwrap_or_else(|| {
            let busy_s = self.dwell_ms as f64 / 1e3 + 2.0;
            (self.rate / 60.0 * busy_s * 2.0).ceil() as usize + 16
        })
    }
}

/// Everything one churn run measured.
#[derive(Debug)]
pub struct ChurnReport {
    pub rate: f64,
    pub asked_seconds: u64,
    /// Wall seconds measured: the churn, its last cycles, a settling second.
    pub seconds: f64,
    /// Seconds from the end of the churn asked for to the last leave.
    pub tail: f64,
    pub accounts: usize,
    pub dwell_ms: u64,
    pub starved: u64,
    pub joins: u64,
    pub keyed: u64,
    pub unkeyed: u64,
    pub leaves: u64,
    pub errors: u64,
    pub first_errors: Vec<String>,
    /// Seconds from `POST join` to an installed key, sorted.
    pub time_to_key: Vec<f64>,
    pub stable: Vec<StableReport>,
    /// The stated switch delay: a key change must not cost a listener more.
    pub switch_delay: Duration,
    pub server_cpu: Option<f64>,
    /// CPU seconds of this process (host, stable listeners, churners).
    pub generator_cpu: Option<f64>,
    /// How late a 10 ms timer fired at worst during the churn, on the
    /// churners', the host's and the stable listeners' runtimes: time the
    /// machine did not give that side (a gap that long is not the room's).
    pub stalls: [Duration; 3],
    /// HTTP requests the server answered during the churn (all clients:
    /// the churners' joins and leaves, and what the host's session asks).
    pub http_requests: f64,
    /// Messages the server received on session channels during the churn.
    pub channel_messages: f64,
    pub rss_start_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
    pub host: SessionStats,
    pub host_ended: Option<String>,
}

impl ChurnReport {
    pub fn decrypt_failures(&self) -> u64 {
        self.stable.iter().map(|s| s.decrypt_failures).sum()
    }

    pub fn max_gap(&self) -> Duration {
        self.stable
            .iter()
            .map(|s| s.max_gap)
            .max()
            .unwrap_or_default()
    }

    fn lost(&self) -> (u64, u64) {
        let lost = self.stable.iter().map(|s| s.lost).sum();
        let expected = self.stable.iter().map(|s| s.expected).sum();
        (lost, expected)
    }

    /// Per minute of the churn asked for (joins start only in it).
    fn per_minute(&self, n: u64) -> f64 {
        n as f64 * 60.0 / (self.asked_seconds as f64).max(1e-9)
    }

    fn ttk(&self, q: f64) -> String {
        probe::sample_quantile(&self.time_to_key, q)
            .map_or("n/a".into(), |s| format!("{:.0} ms", s * 1e3))
    }

    fn mib(kib: Option<u64>) -> String {
        kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
    }

    pub fn print(&self) {
        let (lost, expected) = self.lost();
        println!(
            "churn asked           {:.0} joins/min for {:.0} s, each churner leaving {} ms after its key ({} accounts)",
            self.rate, self.asked_seconds, self.dwell_ms, self.accounts
        );
        println!(
            "joins                 {} ({:.0}/min)",
            self.joins,
            self.per_minute(self.joins)
        );
        println!(
            "leaves                {} ({:.0}/min; the last {:.1} s after the churn's end)",
            self.leaves,
            self.per_minute(self.leaves),
            self.tail
        );
        println!(
            "keyed churners        {} ({} without a key, {} errors, {} ticks without a free account)",
            self.keyed, self.unkeyed, self.errors, self.starved
        );
        for e in &self.first_errors {
            println!("  error: {e}");
        }
        println!(
            "time to key           p50 {}  p95 {}  max {}  (POST join to an installed key)",
            self.ttk(0.5),
            self.ttk(0.95),
            self.ttk(1.0)
        );
        println!(
            "rotations             {} key generations delivered to a stable listener, {} switches heard in its frames",
            self.stable.iter().map(|s| s.generations).max().unwrap_or(0),
            self.stable
                .iter()
                .map(|s| s.switches_heard)
                .max()
                .unwrap_or(0)
        );
        println!("stable listeners      {}", self.stable.len());
        println!(
            "decrypt failures      {} (stable listeners, during the churn)",
            self.decrypt_failures()
        );
        println!(
            "content mismatches    {} (decrypted, but not a frame the host's encoder made)",
            self.stable.iter().map(|s| s.mismatches).sum::<u64>()
        );
        println!(
            "longest gap           {} ms between decrypted frames (switch delay {} ms)",
            self.max_gap().as_millis(),
            self.switch_delay.as_millis()
        );
        println!(
            "longest audio gap     {} frames missing in a row",
            self.stable
                .iter()
                .map(|s| s.max_missing_run)
                .max()
                .unwrap_or(0)
        );
        println!(
            "frames lost           {lost} of {expected} ({:.3} %)",
            100.0 * lost as f64 / expected.max(1) as f64
        );
        println!(
            "server CPU            {}",
            self.server_cpu.map_or("n/a".into(), |c| format!(
                "{c:.2} CPU-s in {:.1} s ({:.0} % of one core)",
                self.seconds,
                100.0 * c / self.seconds.max(1e-9)
            ))
        );
        println!(
            "generator CPU         {}",
            self.generator_cpu.map_or("n/a".into(), |c| format!(
                "{c:.2} CPU-s ({:.0} % of one core; host, stable listeners and churners)",
                100.0 * c / self.seconds.max(1e-9)
            ))
        );
        println!(
            "runtime stalls        a 10 ms timer late by up to {} ms (churners), {} ms (host), {} ms (stable listeners)",
            self.stalls[0].as_millis(),
            self.stalls[1].as_millis(),
            self.stalls[2].as_millis()
        );
        println!(
            "server load           {:.0} HTTP requests ({:.1} per churner join), {:.0} channel messages in",
            self.http_requests,
            self.http_requests / self.joins.max(1) as f64,
            self.channel_messages
        );
        println!(
            "server RSS            start {}, end {}, peak {}",
            Self::mib(self.rss_start_kib),
            Self::mib(self.rss_end_kib),
            Self::mib(self.rss_peak_kib)
        );
        println!(
            "host                  {} frames sent, {} without a key, {} not queued; ended: {}",
            self.host.frames_sent,
            self.host.frames_without_key,
            self.host.frames_not_queued,
            self.host_ended.as_deref().unwrap_or("?")
        );
        for a in &self.host.alerts {
            println!("  host alert: {a}");
        }
        for (i, s) in self.stable.iter().enumerate() {
            println!(
                "stable {i}              {} decrypted, {} failed {:?}, {} outside the churn, gap {} ms at +{:.1} s, {} missing in a row, {} lost of {}, {} rosters",
                s.decrypted,
                s.decrypt_failures,
                s.failure_kinds,
                s.failures_outside,
                s.max_gap.as_millis(),
                s.max_gap_at.as_secs_f64(),
                s.max_missing_run,
                s.lost,
                s.expected,
                s.rosters
            );
            for a in &s.alerts {
                println!("  stable {i} alert: {a}");
            }
        }
    }

    /// The figures as a Markdown table.
    pub fn markdown(&self) -> String {
        let (lost, expected) = self.lost();
        let rows = [
            (
                "churn asked / done".to_owned(),
                format!(
                    "{:.0} joins/min for {} s / {} joins + {} leaves ({:.0} + {:.0} per min; the last leave {:.1} s after the end)",
                    self.rate,
                    self.asked_seconds,
                    self.joins,
                    self.leaves,
                    self.per_minute(self.joins),
                    self.per_minute(self.leaves),
                    self.tail
                ),
            ),
            (
                "churners keyed / without a key / errors / starved ticks".to_owned(),
                format!(
                    "{} / {} / {} / {}",
                    self.keyed, self.unkeyed, self.errors, self.starved
                ),
            ),
            (
                "churner time to key p50 / p95 / max".to_owned(),
                format!("{} / {} / {}", self.ttk(0.5), self.ttk(0.95), self.ttk(1.0)),
            ),
            (
                "key generations delivered to a stable listener".to_owned(),
                self.stable
                    .iter()
                    .map(|s| s.generations)
                    .max()
                    .unwrap_or(0)
                    .to_string(),
            ),
            (
                format!("stable listeners ({}): decrypt failures", self.stable.len()),
                self.decrypt_failures().to_string(),
            ),
            (
                "stable: longest gap between decrypted frames".to_owned(),
                format!(
                    "{} ms (limit: switch delay {} ms)",
                    self.max_gap().as_millis(),
                    self.switch_delay.as_millis()
                ),
            ),
            (
                "stable: frames lost".to_owned(),
                format!(
                    "{lost} of {expected} ({:.3} %)",
                    100.0 * lost as f64 / expected.max(1) as f64
                ),
            ),
            (
                "server CPU during the churn".to_owned(),
                self.server_cpu.map_or("n/a".into(), |c| {
                    format!("{:.0} % of one core", 100.0 * c / self.seconds.max(1e-9))
                }),
            ),
            (
                "generator CPU (host, stable listeners, churners; same machine)".to_owned(),
                self.generator_cpu.map_or("n/a".into(), |c| {
                    format!("{:.0} % of one core", 100.0 * c / self.seconds.max(1e-9))
                }),
            ),
            (
                "generator: longest late 10 ms timer, churners / host / stable listeners"
                    .to_owned(),
                format!(
                    "{} / {} / {} ms",
                    self.stalls[0].as_millis(),
                    self.stalls[1].as_millis(),
                    self.stalls[2].as_millis()
                ),
            ),
            (
                "server: HTTP requests per churner join (all clients)".to_owned(),
                format!("{:.1}", self.http_requests / self.joins.max(1) as f64),
            ),
            (
                "server RSS start / end / peak".to_owned(),
                format!(
                    "{} / {} / {}",
                    Self::mib(self.rss_start_kib),
                    Self::mib(self.rss_end_kib),
                    Self::mib(self.rss_peak_kib)
                ),
            ),
        ];
        let mut out = String::from("| What | Measured |\n|---|---|\n");
        for (what, measured) in rows {
            out.push_str(&format!("| {what} | {measured} |\n"));
        }
        out
    }
}

/// A runtime with a thread of its own, as another device would have.
fn runtime(name: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("starting the {name} runtime"))
}

/// The longest a 10 ms timer on the calling runtime fired late while the
/// churn was measured; returns once it is over.
async fn stall_probe(mut phase: watch::Receiver<Phase>) -> Duration {
    let tick = Duration::from_millis(10);
    let mut worst = Duration::ZERO;
    loop {
        let now = *phase.borrow_and_update();
        if now == Phase::Done {
            return worst;
        }
        let before = Instant::now();
        tokio::time::sleep(tick).await;
        if now == Phase::Measuring {
            worst = worst.max(before.elapsed().saturating_sub(tick));
        }
    }
}

/// Registers `n` accounts named `{prefix}{i}`, a few at a time.
pub(super) async fn register_many(
    server: &str,
    invite: &str,
    dir: &std::path::Path,
    prefix: &str,
    n: usize,
) -> anyhow::Result<Vec<(Person, Profile)>> {
    let gate = Arc::new(Semaphore::new(8));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (server, invite, gate) = (server.to_owned(), invite.to_owned(), gate.clone());
        let (dir, name) = (dir.to_path_buf(), format!("{prefix}{i}"));
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let person = register(&server, &dir, &invite, &name).await?;
            let profile = Profile::open(&dir.join(&name))?;
            anyhow::Ok((i, person, profile))
        });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        out.push(done??);
    }
    out.sort_by_key(|(i, _, _)| *i);
    Ok(out.into_iter().map(|(_, p, pr)| (p, pr)).collect())
}

pub async fn run(args: ChurnArgs) -> anyhow::Result<ChurnReport> {
    let dir = tempfile::tempdir().context("a directory for the bench profiles")?;
    let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let switch_delay = Duration::from_millis(StageConfig::default().switch_delay_ms);

    // What the host says, and every packet its encoder will make of it
    // (the run's length, and ten minutes of set-up and teardown).
    let signal = sotto_audio::speech_like(7, 5.0);
    let frames = usize::try_from((args.seconds + 600) * 50)?;
    let reference = {
        let signal = signal.clone();
        tokio::task::spawn_blocking(move || stable::reference_packets(&signal, frames))
    };

    let host_name = format!("c{tag}_h");
    let host = register(&args.server, dir.path(), &args.invite, &host_name).await?;
    let host_profile = Profile::open(&dir.path().join(&host_name))?;
    let room = host
        .client
        .create_room("churn", RoomKind::Open, None)
        .await
        .context("creating the churn room")?
        .id;
    let stable_people = register_many(
        &args.server,
        &args.invite,
        dir.path(),
        &format!("c{tag}_s"),
        args.stable,
    )
    .await?;
    let accounts = args.accounts();
    eprintln!("registering {accounts} churning accounts");
    let pool: Vec<Account> = register_many(
        &args.server,
        &args.invite,
        dir.path(),
        &format!("c{tag}_"),
        accounts,
    )
    .await?
    .into_iter()
    .map(|(person, profile)| Account { person, profile })
    .collect();
    let reference = Arc::new(reference.await.context("encoding the reference")??);

    // The host and the stable listeners are other devices: each side runs
    // on a runtime (and thread) of its own, so that the churners' work in
    // this process does not hold up their frames.
    let host_rt = runtime("churn-host")?;
    let stable_rt = runtime("churn-stable")?;
    let (phase_tx, phase) = watch::channel(Phase::Setup);
    let stalls = [
        tokio::spawn(stall_probe(phase.clone())),
        host_rt.spawn(stall_probe(phase.clone())),
        stable_rt.spawn(stall_probe(phase.clone())),
    ];

    // The host speaks (and distributes keys) until the room ends.
    let host_stats = Arc::new(Mutex::new(SessionStats::default()));
    let speak_for = Duration::from_secs(args.seconds + 600);
    let host_task = {
        let (client, room, stats) = (host.client.clone(), room.clone(), host_stats.clone());
        host_rt.spawn(async move {
            let mut config = SessionConfig::new(
                room,
                Mode::Speak {
                    samples: signal,
                    repeat: true,
                },
            );
            config.stop_after = Some(speak_for);
            session::run(&client, &host_profile, config, |s| {
                *stats.lock().unwrap_or_else(|p| p.into_inner()) = s.clone();
            })
            .await
        })
    };

    let (stop_tx, stop) = watch::channel(false);
    let mut stables = Vec::new();
    for (i, (person, profile)) in stable_people.into_iter().enumerate() {
        let (room, reference) = (room.clone(), reference.clone());
        let (phase, stop) = (phase.clone(), stop.clone());
        let s = stable_rt
            .spawn(async move {
                let timeout = Duration::from_secs(30);
                Stable::start(&person, profile, &room, reference, phase, stop, timeout).await
            })
            .await
            .context("a stable listener's set-up panicked")?
            .with_context(|| format!("stable listener {i}"))?;
        stables.push(s);
    }
    eprintln!(
        "{} stable listeners hear the host; churning at {:.0} joins/min for {} s",
        stables.len(),
        args.rate,
        args.seconds
    );

    let http = reqwest::Client::new();
    let m0 = probe::Scrape::fetch(&http, &args.server).await?;
    let rss_start = args.server_pid.map(probe::rss_kib).transpose()?;
    let cpu0 = args.server_pid.map(probe::cpu_seconds).transpose()?;
    let own0 = probe::cpu_seconds(std::process::id()).ok();
    let t0 = Instant::now();
    phase_tx
        .send(Phase::Measuring)
        .context("starting the phase")?;
    let stats = Arc::new(ChurnStats::default());
    let cycle = Cycle {
        dwell: Duration::from_millis(args.dwell_ms),
        key_timeout: Duration::from_secs(args.key_timeout),
    };
    let pool = churner::churn(
        &room,
        pool,
        args.rate,
        Duration::from_secs(args.seconds),
        cycle,
        stats.clone(),
    )
    .await?;
    let tail = t0.elapsed().as_secs_f64() - args.seconds as f64;
    // The last leaves' rotations land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seconds = t0.elapsed().as_secs_f64();
    let cpu1 = args.server_pid.map(probe::cpu_seconds).transpose()?;
    let own1 = probe::cpu_seconds(std::process::id()).ok();
    let rss_end = args.server_pid.map(probe::rss_kib).transpose()?;
    let rss_peak = args.server_pid.map(probe::peak_rss_kib).transpose()?;
    let m1 = probe::Scrape::fetch(&http, &args.server).await?;
    phase_tx.send(Phase::Done).context("ending the phase")?;

    // Teardown: the listeners stop, the host ends the room.
    stop_tx.send(true).context("stopping the listeners")?;
    let mut stable_reports = Vec::new();
    for s in stables {
        stable_reports.push(s.task.await.context("a stable listener panicked")??);
    }
    host.client
        .room_action(&room, "end")
        .await
        .context("ending the churn room")?;
    let (host, host_ended) = match tokio::time::timeout(Duration::from_secs(10), host_task).await {
        Ok(done) => {
            let outcome = done.context("the host's session panicked")??;
            (outcome.stats, outcome.ended_by)
        }
        Err(_) => (
            host_stats.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            Some("did not end within 10 s of the room's end".into()),
        ),
    };
    drop(pool);
    let mut stall = [Duration::ZERO; 3];
    for (s, probe) in stall.iter_mut().zip(stalls) {
        *s = probe.await.context("a stall probe panicked")?;
    }
    host_rt.shutdown_background();
    stable_rt.shutdown_background();

    let report = ChurnReport {
        rate: args.rate,
        asked_seconds: args.seconds,
        seconds,
        tail,
        accounts,
        dwell_ms: args.dwell_ms,
        starved: stats.starved.load(Relaxed),
        joins: stats.joins.load(Relaxed),
        keyed: stats.keyed.load(Relaxed),
        unkeyed: stats.unkeyed.load(Relaxed),
        leaves: stats.leaves.load(Relaxed),
        errors: stats.errors.load(Relaxed),
        first_errors: stats
            .first_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        time_to_key: stats.time_to_key(),
        stable: stable_reports,
        switch_delay,
        server_cpu: cpu0.zip(cpu1).map(|(a, b)| b - a),
        generator_cpu: own0.zip(own1).map(|(a, b)| b - a),
        stalls: stall,
        http_requests: m1.http_responses - m0.http_responses,
        channel_messages: m1.channel_messages - m0.channel_messages,
        rss_start_kib: rss_start,
        rss_end_kib: rss_end,
        rss_peak_kib: rss_peak,
        host,
        host_ended,
    };
    if let Some(path) = &args.markdown {
        std::fs::write(path, report.markdown())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}
