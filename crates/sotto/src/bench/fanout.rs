//! `sotto bench fanout`: N receive-only WebRTC listeners and S speakers
//! against a running sotto server, through the real signaling and media
//! path; reports what the server did per forwarded packet.
//!
//! Phases: accounts and the room; the speakers connect and start sending;
//! the listeners join while audio flows (time to first audio); a pause
//! lets everything in flight land; then exactly T seconds of sending,
//! between two snapshots of the server's `/proc` CPU time and `/metrics`,
//! and another pause. Loss counts every packet the listeners' str0m
//! accepted against every frame the speakers sent times N.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use sotto_client::media::{MediaConnection, negotiate};
use sotto_client::{Channel, Client, Profile};
use sotto_e2ee::frame::{DEFAULT_GRACE_MS, FrameSender, KeyRing, Suite};
use sotto_e2ee::keys::{AudienceKey, KeyGeneration, test_audience_key};
use sotto_proto::RoomId;
use sotto_proto::room::RoomKind;
use tokio::sync::{Semaphore, watch};

use super::listener::{self, Listener, ListenerStats};
use super::probe::{self, Scrape};
use super::raw::{self, RawReport};
use super::speaker::{self, SpeakerControl};

pub(super) const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Receive slots each peer offers, as the real clients do.
pub(super) const SLOTS: usize = 3;

#[derive(Args, Clone, Debug)]
pub struct FanoutArgs {
    /// The server's base URL (loopback).
    #[arg(long)]
    pub server: String,
    /// An invite code good for at least listeners + speakers accounts
    /// (`sotto admin invite --uses N`). The server should run with
    /// `--auth-rate-limit 0` for thousands of registrations from one address.
    #[arg(long)]
    pub invite: String,
    #[arg(long, default_value_t = 100)]
    pub listeners: usize,
    /// 1 to 3 (the receive slots).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub speakers: u8,
    /// Seconds of measured sending.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// The server's process id, for CPU and memory from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Listeners that take every packet through SRTP and SFrame decryption
    /// and check it; the others count RTP datagrams without decrypting.
    #[arg(long, default_value_t = 10)]
    pub sample: usize,
    /// Listeners set up at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Also run `sotto bench raw` with the same N, S and T first, in this
    /// process, and print sotto ÷ raw.
    #[arg(long)]
    pub with_raw: bool,
    /// Append the result as a Markdown table row to this file.
    #[arg(long)]
    pub markdown: Option<std::path::PathBuf>,
}

/// Everything one fan-out run measured.
#[derive(Debug)]
pub struct FanoutReport {
    /// "sotto" or "janus".
    pub server: &'static str,
    pub listeners: usize,
    pub connected: usize,
    pub speakers: u8,
    pub seconds: f64,
    pub expected: u64,
    pub received: u64,
    pub forwarded: f64,
    pub server_cpu: Option<f64>,
    pub rss_per_listener_kib: Option<f64>,
    pub latency_p50: Option<f64>,
    pub latency_p99: Option<f64>,
    pub ttfa_p50: Option<f64>,
    pub ttfa_p95: Option<f64>,
    pub sframe_ok: u64,
    pub sframe_bad: u64,
    /// UDP datagrams the kernel dropped for full receive buffers during
    /// the measured seconds (system-wide: server and generator alike).
    pub rcvbuf_drops: Option<u64>,
    pub raw: Option<RawReport>,
}

impl FanoutReport {
    pub fn loss(&self) -> f64 {
        1.0 - self.received as f64 / self.expected.max(1) as f64
    }
    pub fn cpu_per_packet(&self) -> Option<f64> {
        Some(self.server_cpu? / self.forwarded.max(1.0))
    }

    pub fn print(&self) {
        let us = |s: Option<f64>| s.map_or("n/a".into(), |s| format!("{:.2} µs", s * 1e6));
        let ms = |s: Option<f64>| s.map_or("n/a".into(), |s| format!("{:.0} ms", s * 1e3));
        println!("server                {}", self.server);
        println!(
            "listeners connected   {} of {}",
            self.connected, self.listeners
        );
        println!("speakers              {}", self.speakers);
        println!(
            "forwarded             {:.0} packets/s ({:.0} in {:.1} s)",
            self.forwarded / self.seconds,
            self.forwarded,
            self.seconds
        );
        println!(
            "loss                  {:.3} % ({} of {} expected packets arrived)",
            self.loss() * 100.0,
            self.received,
            self.expected
        );
        println!(
            "server CPU per packet {}{}",
            us(self.cpu_per_packet()),
            self.server_cpu.map_or(String::new(), |c| format!(
                " ({:.2} CPU-s, {:.0} % of one core)",
                c,
                100.0 * c / self.seconds
            ))
        );
        println!(
            "packets per CPU-s     {}",
            self.cpu_per_packet()
                .map_or("n/a".into(), |c| format!("{:.0}", 1.0 / c))
        );
        println!(
            "server RSS/listener   {}",
            self.rss_per_listener_kib
                .map_or("n/a".into(), |k| format!("{k:.0} KiB"))
        );
        println!(
            "forwarding latency    p50 {}  p99 {}  (in the SFU, /metrics)",
            us(self.latency_p50),
            us(self.latency_p99)
        );
        println!(
            "time to first audio   p50 {}  p95 {}",
            ms(self.ttfa_p50),
            ms(self.ttfa_p95)
        );
        println!(
            "SFrame on the sample  {} frames decrypted and checked, {} bad",
            self.sframe_ok, self.sframe_bad
        );
        if let Some(drops) = self.rcvbuf_drops {
            println!("UDP rcvbuf drops      {drops} (system-wide, measured seconds)");
        }
        if let Some(raw) = &self.raw {
            println!(
                "raw (same N, S, T)    {} per packet, {:.0} packets per CPU-s, loss {:.3} %",
                us(Some(raw.cpu_per_packet())),
                1.0 / raw.cpu_per_packet(),
                raw.loss() * 100.0
            );
            if let Some(cpu) = self.cpu_per_packet() {
                println!(
                    "sotto ÷ raw           {:.2} (packets per CPU-s; 1.0 is the limit)",
                    raw.cpu_per_packet() / cpu
                );
            }
        }
    }

    /// One row of the BENCHMARKS.md table.
    pub fn markdown_row(&self) -> String {
        let us = |s: Option<f64>| s.map_or("n/a".into(), |s| format!("{:.1}", s * 1e6));
        let (raw_us, ratio) = match (&self.raw, self.cpu_per_packet()) {
            (Some(raw), Some(cpu)) => (
                format!("{:.2}", raw.cpu_per_packet() * 1e6),
                format!("{:.2}", raw.cpu_per_packet() / cpu),
            ),
            (Some(raw), None) => (format!("{:.2}", raw.cpu_per_packet() * 1e6), "n/a".into()),
            _ => ("n/a".into(), "n/a".into()),
        };
        format!(
            "| {} | {} | {} | {}/{} | {:.0} | {:.2} % | {} | {} | {} | {} / {} | {} / {} | {} |",
            self.server,
            self.listeners,
            self.speakers,
            self.connected,
            self.listeners,
            self.forwarded / self.seconds,
            self.loss() * 100.0,
            us(self.cpu_per_packet()),
            raw_us,
            ratio,
            us(self.latency_p50),
            us(self.latency_p99),
            self.ttfa_p50
                .map_or("n/a".into(), |s| format!("{:.0}", s * 1e3)),
            self.ttfa_p95
                .map_or("n/a".into(), |s| format!("{:.0}", s * 1e3)),
            self.rss_per_listener_kib
                .map_or("n/a".into(), |k| format!("{k:.0}")),
        )
    }
}

/// The header matching [`FanoutReport::markdown_row`].
pub const MARKDOWN_HEADER: &str = "| server | N | S | connected | forwarded pkt/s | loss | server µs/pkt | raw µs/pkt | sotto ÷ raw (pkt per CPU-s) | SFU latency p50 / p99 µs | first audio p50 / p95 ms | server RSS KiB/listener |\n|---|---|---|---|---|---|---|---|---|---|---|---|";

pub(super) struct Person {
    pub(super) client: Arc<Client>,
    pub(super) user_id: sotto_proto::UserId,
}

/// The server drops room members whose presence was not refreshed for
/// 90 s (its presence TTL); bench peers hold no subscribed channel, so the
/// generator refreshes presence by joining again, during the setup of
/// thousands of listeners and once before the measured seconds, never
/// during them.
const PRESENCE_REFRESH: Duration = Duration::from_secs(30);

/// Re-joins everyone, a few at a time (the server serializes writes).
/// Best effort: a refusal is counted and reported, and that member may
/// later be dropped as absent.
async fn refresh_presence(room: &RoomId, clients: Vec<Arc<Client>>) -> anyhow::Result<()> {
    let gate = Arc::new(Semaphore::new(4));
    let mut joins = tokio::task::JoinSet::new();
    for client in clients {
        let (room, gate) = (room.clone(), gate.clone());
        joins.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            anyhow::Ok(client.join(&room).await.is_ok())
        });
    }
    let mut refused = 0usize;
    while let Some(done) = joins.join_next().await {
        if !done?? {
            refused += 1;
        }
    }
    if refused > 0 {
        eprintln!("presence refresh: {refused} re-join(s) refused by the server");
    }
    Ok(())
}

pub(super) async fn register(
    server: &str,
    dir: &Path,
    invite: &str,
    username: &str,
) -> anyhow::Result<Person> {
    let mut profile = Profile::open_or_create(&dir.join(username))?;
    // Thousands of accounts in one process: no idle connection each.
    let mut client = Client::without_idle_connections(server)?;
    let session = client
        .register(&mut profile, invite, username, username)
        .await
        .context("registering a bench account")?;
    Ok(Person {
        client: Arc::new(client),
        user_id: session.user_id,
    })
}

struct Speaking {
    control: Arc<SpeakerControl>,
    _channel: Channel,
    _media: MediaConnection,
    task: tokio::task::JoinHandle<()>,
}

struct Joined {
    client: Arc<Client>,
    _channel: Channel,
    stats: Arc<ListenerStats>,
    task: tokio::task::JoinHandle<()>,
}

pub async fn run(args: FanoutArgs) -> anyhow::Result<FanoutReport> {
    let raw = if args.with_raw {
        eprintln!(
            "raw harness: {} listeners, {} speaker(s), {} s",
            args.listeners, args.speakers, args.seconds
        );
        Some(raw::measure(args.listeners, usize::from(args.speakers), args.seconds).await?)
    } else {
        None
    };
    let dir = tempfile::tempdir().context("a directory for the bench profiles")?;
    let tag: String = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let epoch = Instant::now();
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut secret);
    let key = test_audience_key(
        KeyGeneration {
            epoch: 1,
            rotation: 0,
        },
        secret,
    );

    // The host creates the room and speaks; more speakers go on stage.
    let host = register(
        &args.server,
        dir.path(),
        &args.invite,
        &format!("b{tag}_h0"),
    )
    .await?;
    let room = host
        .client
        .create_room("bench", RoomKind::Open, None)
        .await
        .context("creating the bench room")?
        .id;
    host.client.join(&room).await.context("host joins")?;
    let http = reqwest::Client::new();
    let mut stage = vec![host];
    for s in 1..args.speakers {
        let p = register(
            &args.server,
            dir.path(),
            &args.invite,
            &format!("b{tag}_h{s}"),
        )
        .await?;
        p.client.join(&room).await.context("speaker joins")?;
        stage[0]
            .client
            .member_action(&room, &p.user_id, "invite-to-stage")
            .await
            .context("inviting a speaker to the stage")?;
        p.client
            .room_action(&room, "accept-stage")
            .await
            .context("accepting the stage")?;
        stage.push(p);
    }
    let (stop_tx, stop) = watch::channel(false);
    let mut speakers = Vec::new();
    for (i, p) in stage.iter().enumerate() {
        speakers.push(start_speaker(p, &room, i, &key, stop.clone()).await?);
    }
    for s in &speakers {
        s.control.sending.store(true, Relaxed);
    }
    let rss_before = args.server_pid.map(probe::rss_kib).transpose()?;

    // Listeners join while the speakers speak.
    let progress = indicatif::ProgressBar::new(args.listeners as u64).with_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress.set_message("listeners connected");
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut setups = tokio::task::JoinSet::new();
    for i in 0..args.listeners {
        let gate = gate.clone();
        let server = args.server.clone();
        let invite = args.invite.clone();
        let path = dir.path().to_path_buf();
        let username = format!("b{tag}_{i}");
        let room = room.clone();
        let check = (i < args.sample).then(|| {
            let mut ring = KeyRing::new(Suite::CompactAudio, DEFAULT_GRACE_MS);
            ring.install(key.clone(), 0);
            ring
        });
        let stop = stop.clone();
        let progress = progress.clone();
        setups.spawn(async move {
            let _permit = gate.acquire_owned().await.context("setup gate closed")?;
            let joined = start_listener(
                &server, &path, &invite, &username, &room, check, epoch, stop,
            )
            .await?;
            progress.inc(1);
            anyhow::Ok(joined)
        });
    }
    let mut listeners = Vec::with_capacity(args.listeners);
    let mut setup_errors = 0usize;
    let setup_started = Instant::now();
    let mut refreshed = tokio::time::Instant::now();
    let everyone = |stage: &[Person], listeners: &[Joined]| -> Vec<Arc<Client>> {
        let stage = stage.iter().map(|p| p.client.clone());
        stage
            .chain(listeners.iter().map(|l| l.client.clone()))
            .collect()
    };
    loop {
        let done = tokio::select! {
            done = setups.join_next() => done,
            () = tokio::time::sleep_until(refreshed + PRESENCE_REFRESH) => {
                refresh_presence(&room, everyone(&stage, &listeners)).await?;
                refreshed = tokio::time::Instant::now();
                continue;
            }
        };
        let Some(done) = done else { break };
        match done {
            Ok(Ok(l)) => listeners.push(l),
            Ok(Err(e)) => {
                setup_errors += 1;
                if setup_errors <= 3 {
                    progress.println(format!("a listener failed to set up: {e:#}"));
                }
            }
            Err(e) => return Err(e).context("a listener setup task failed"),
        }
    }
    progress.finish_and_clear();
    // Wait for ICE and DTLS to come up everywhere, and for first audio.
    let stats: Vec<Arc<ListenerStats>> = listeners.iter().map(|l| l.stats.clone()).collect();
    listener::wait_first_audio(&stats, Duration::from_secs(30)).await;
    let connected = listener::connected(&stats);
    if setup_started.elapsed() > PRESENCE_REFRESH {
        eprintln!("refreshing presence before measuring");
        refresh_presence(&room, everyone(&stage, &listeners)).await?;
    }
    eprintln!(
        "{connected} of {} listeners connected ({setup_errors} failed to set up)",
        args.listeners
    );
    let rss_after = args.server_pid.map(probe::rss_kib).transpose()?;

    // Pause, snapshot, T seconds of sending, pause, snapshot.
    for s in &speakers {
        s.control.sending.store(false, Relaxed);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = |ss: &[Speaking]| ss.iter().map(|s| s.control.sent.load(Relaxed)).sum::<u64>();
    let (r0, s0) = (listener::packets(&stats), sent(&speakers));
    let m0 = Scrape::fetch(&http, &args.server).await?;
    let c0 = args.server_pid.map(probe::cpu_seconds).transpose()?;
    let d0 = probe::udp_rcvbuf_errors();
    let t0 = Instant::now();
    for s in &speakers {
        s.control.sending.store(true, Relaxed);
    }
    let bar = indicatif::ProgressBar::new(args.seconds);
    bar.set_message("sending");
    for _ in 0..args.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    for s in &speakers {
        s.control.sending.store(false, Relaxed);
    }
    bar.finish_and_clear();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let wall = t0.elapsed().as_secs_f64();
    let c1 = args.server_pid.map(probe::cpu_seconds).transpose()?;
    let d1 = probe::udp_rcvbuf_errors();
    let m1 = Scrape::fetch(&http, &args.server).await?;
    let (r1, s1) = (listener::packets(&stats), sent(&speakers));

    let ttfa = listener::first_audio_seconds(&stats);
    let latency = m1.latency_since(&m0);
    let report = FanoutReport {
        server: "sotto",
        listeners: args.listeners,
        connected,
        speakers: args.speakers,
        seconds: wall,
        expected: (s1 - s0) * args.listeners as u64,
        received: r1 - r0,
        forwarded: m1.forwarded - m0.forwarded,
        server_cpu: c0.zip(c1).map(|(a, b)| b - a),
        rss_per_listener_kib: rss_before
            .zip(rss_after)
            .map(|(a, b)| (b as f64 - a as f64) / args.listeners.max(1) as f64),
        latency_p50: probe::quantile(&latency, 0.5),
        latency_p99: probe::quantile(&latency, 0.99),
        ttfa_p50: probe::sample_quantile(&ttfa, 0.5),
        ttfa_p95: probe::sample_quantile(&ttfa, 0.95),
        sframe_ok: listeners
            .iter()
            .map(|l| l.stats.sframe_ok.load(Relaxed))
            .sum(),
        sframe_bad: listeners
            .iter()
            .map(|l| l.stats.sframe_bad.load(Relaxed))
            .sum(),
        rcvbuf_drops: d0.zip(d1).map(|(a, b)| b.saturating_sub(a)),
        raw,
    };

    // Teardown: stop every task, close the channels, end the room.
    stop_tx.send(true).context("stopping the bench tasks")?;
    for l in listeners {
        l.task.await.context("a listener task failed")?;
    }
    for s in speakers {
        s.task.await.context("a speaker task failed")?;
    }
    stage[0]
        .client
        .room_action(&room, "end")
        .await
        .context("ending the bench room")?;
    Ok(report)
}

async fn start_speaker(
    p: &Person,
    room: &RoomId,
    index: usize,
    key: &AudienceKey,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Speaking> {
    let mut channel = Channel::connect(&p.client).await?;
    let (mut media, _) = MediaConnection::connect(&mut channel, room, LOOPBACK, SLOTS).await?;
    media.connected(Duration::from_secs(10)).await?;
    let leaf = u32::try_from(index)?;
    let sframe = FrameSender::new(Suite::CompactAudio, key, leaf)?;
    let control = Arc::new(SpeakerControl::default());
    let task = tokio::spawn(speaker::run(
        u8::try_from(index)?,
        sframe,
        media.frames.clone(),
        control.clone(),
        stop,
    ));
    Ok(Speaking {
        control,
        _channel: channel,
        _media: media,
        task,
    })
}

#[allow(clippy::too_many_arguments)]
async fn start_listener(
    server: &str,
    dir: &Path,
    invite: &str,
    username: &str,
    room: &RoomId,
    check: Option<KeyRing>,
    epoch: Instant,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Joined> {
    let person = register(server, dir, invite, username).await?;
    let joined = Instant::now();
    person.client.join(room).await.context("joining the room")?;
    let mut channel = Channel::connect(&person.client).await?;
    // Not subscribed: a bench listener needs no room state, and thousands
    // of subscribers would each get every join (the control plane's cost,
    // measured elsewhere).
    let negotiated = negotiate(&mut channel, room, LOOPBACK, SLOTS).await?;
    let stats = Arc::new(ListenerStats::default());
    let parts = (negotiated.rtc, negotiated.socket, negotiated.local_addr);
    let listener = Listener::new(parts, stats.clone(), check, joined, epoch);
    let task = tokio::spawn(listener.run(stop));
    Ok(Joined {
        client: person.client,
        _channel: channel,
        stats,
        task,
    })
}
