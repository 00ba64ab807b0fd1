//! `sotto bench storm`: N listeners join one end-to-end encrypted room
//! within a window (an admission storm), each through the real control
//! path — `POST join`, a session channel subscribed to the room, the E2EE
//! hello and a signed join request that the distributor (the host's real
//! client session) verifies and answers with a sealed key. Then, with the
//! room full: what one more join, a raised hand and a stage invitation
//! cost each listener in bytes; a ban: how long until every remaining
//! listener holds the new key and the banned one is cut off; and what the
//! invited listener taking the stage costs each listener.
//!
//! Most listeners open no media (N WebRTC peers on this machine would
//! measure the generator; `bench fanout` measures the media plane); a
//! sample (`--media`, spread over the storm) also connects real WebRTC and
//! checks every frame, for the time to first audio during the storm.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use sotto_client::session::{self, Mode, SessionConfig};
use sotto_client::{Channel, Profile};
use sotto_proto::RoomId;
use sotto_proto::channel::ServerMessage;
use sotto_proto::room::RoomKind;
use tokio::sync::watch;

use super::churn::register_many;
use super::fanout::{Person, register};
use super::probe;
use super::room_keys::RoomKeys;
use super::stable::{self, Phase, Stable};

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Args, Clone, Debug)]
pub struct StormArgs {
    /// The server's base URL (loopback).
    #[arg(long)]
    pub server: String,
    /// An invite code good for listeners + 2 registrations; the server
    /// should run with `--auth-rate-limit 0`.
    #[arg(long)]
    pub invite: String,
    #[arg(long, default_value_t = 1000)]
    pub listeners: usize,
    /// The joins are spread evenly over this many seconds.
    #[arg(long, default_value_t = 120)]
    pub join_seconds: u64,
    /// How many of the listeners also open media (real WebRTC, every frame
    /// decrypted and checked against what the host's encoder made), spread
    /// over the storm: their time to first audio is measured. The rest are
    /// control-plane only.
    #[arg(long, default_value_t = 50)]
    pub media: usize,
    /// How long after the last join to wait for keys, in seconds.
    #[arg(long, default_value_t = 60)]
    pub key_timeout: u64,
    /// The server's process id, for CPU and memory from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Write the figures as a Markdown table to this file.
    #[arg(long)]
    pub markdown: Option<std::path::PathBuf>,
}

/// What one listener saw, read while it runs.
#[derive(Debug, Default)]
struct Seen {
    /// Milliseconds from the storm's start: joined, keyed (0: not yet).
    joined_ms: AtomicU64,
    keyed_ms: AtomicU64,
    /// The newest key generation held (epoch × 2³² + rotation), and when
    /// it was installed (ms from the storm's start).
    generation: AtomicU64,
    generation_ms: AtomicU64,
    /// Bytes received: room state, everything else.
    room_bytes: AtomicU64,
    other_bytes: AtomicU64,
    /// The server told it it left (banned), at this ms.
    left_ms: AtomicU64,
    failed: AtomicBool,
    /// A media listener (`stable`): its channel is its own, so its bytes
    /// and key generations are not read here.
    media: bool,
}

fn ms_since(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// One listener: join, key, stay until `stop`.
async fn listener(
    person: Person,
    profile: Profile,
    room: RoomId,
    t0: Instant,
    seen: Arc<Seen>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    seen.joined_ms.store(ms_since(t0), Relaxed);
    let view = person.client.join(&room).await.context("joining")?;
    let mut channel = Channel::connect(&person.client).await?;
    channel.keep_deltas();
    channel.subscribe(&room).await?;
    let mut keys = RoomKeys::open(&profile, &person.user_id, &view, &mut channel).await?;
    loop {
        let due = keys.due();
        tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep_until(due) => keys.on_timeout(&mut channel).await?,
            msg = channel.next(Duration::from_secs(3600)) => {
                let msg = msg?;
                match msg {
                    ServerMessage::RoomLeft { .. } => {
                        seen.left_ms.store(ms_since(t0), Relaxed);
                        break;
                    }
                    ServerMessage::RoomEnded { .. } => break,
                    _ => keys.on_message(&mut channel, &msg).await?,
                }
            }
        }
        let (room_bytes, other_bytes) = channel.received_bytes();
        seen.room_bytes.store(room_bytes, Relaxed);
        seen.other_bytes.store(other_bytes, Relaxed);
        if let Some(g) = keys.crypto.key_generation() {
            let g = (g.epoch << 32) | u64::from(g.rotation);
            if seen.generation.swap(g, Relaxed) != g {
                seen.generation_ms.store(ms_since(t0), Relaxed);
            }
        }
        if keys.crypto.can_decrypt() && seen.keyed_ms.load(Relaxed) == 0 {
            seen.keyed_ms.store(ms_since(t0), Relaxed);
        }
    }
    // The banned listener's channel is closed by the server already.
    channel.close().await;
    Ok(())
}

/// Everything one storm measured.
#[derive(Debug)]
pub struct StormReport {
    pub listeners: usize,
    pub join_seconds: u64,
    pub registration_s: f64,
    pub keyed: usize,
    pub failed: usize,
    /// Seconds from the first join to the last listener keyed.
    pub admission_s: Option<f64>,
    /// Seconds from `POST join` to a key, sorted.
    pub time_to_key: Vec<f64>,
    pub server_cpu: Option<f64>,
    /// CPU seconds of this process (the host's client and every listener's).
    pub generator_cpu: Option<f64>,
    pub storm_wall_s: f64,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    /// Bytes per listener (room state, E2EE and the rest) for one change.
    pub per_change: Vec<(String, f64, f64)>,
    /// Seconds from the ban to every remaining listener on a newer key, and
    /// to the banned listener told it left; listeners not on a newer key
    /// within the wait.
    pub ban_rekeyed_s: Option<f64>,
    pub ban_cut_off_s: Option<f64>,
    pub ban_not_rekeyed: usize,
    /// Seconds from the ban to each remaining listener on a newer key,
    /// sorted: where the time goes (first keys: the distributor's
    /// sealing; the spread after: fan-out and the listeners' opening).
    pub ban_rekey_times: Vec<f64>,
    /// Listeners with media, their seconds from `POST join` to the first
    /// decrypted frame that matched the host's encoder (sorted), and what
    /// they decrypted afterwards.
    pub media: usize,
    pub ttfa: Vec<f64>,
    pub media_decrypted: u64,
    pub media_decrypt_failures: u64,
    pub media_mismatches: u64,
    pub media_failure_kinds: std::collections::BTreeMap<String, u64>,
    /// Of those failures, how many came within
    /// [`super::stable::NEAR_KEY_CHANGE`] of a new key statement.
    pub media_failures_near_key_change: u64,
    /// Key generations the media listeners received (most of any one).
    pub media_generations: usize,
    /// The media listeners' roster checks at the end (signed accounts,
    /// audience count shown, hidden listeners reported), one per listener
    /// that held a roster.
    pub roster_checks: Vec<(u32, u32, usize)>,
}

impl StormReport {
    fn q(&self, q: f64) -> String {
        probe::sample_quantile(&self.time_to_key, q).map_or("n/a".into(), |s| format!("{:.2} s", s))
    }

    fn rss_per_listener(&self) -> Option<f64> {
        let (a, b) = (self.rss_before_kib?, self.rss_after_kib?);
        Some((b as f64 - a as f64) / self.listeners.max(1) as f64)
    }

    fn rows(&self) -> Vec<(String, String)> {
        let opt_s = |v: Option<f64>| v.map_or("n/a".into(), |s| format!("{s:.2} s"));
        let mut rows = vec![
            (
                "registering the accounts (not part of the storm)".into(),
                format!("{:.0} s", self.registration_s),
            ),
            (
                "listeners joined / keyed / failed".into(),
                format!("{} / {} / {}", self.listeners, self.keyed, self.failed),
            ),
            (
                format!(
                    "admission: first join to last key (joins spread over {} s)",
                    self.join_seconds
                ),
                opt_s(self.admission_s),
            ),
            (
                "time to key (POST join → key installed) p50 / p95 / max".into(),
                format!("{} / {} / {}", self.q(0.5), self.q(0.95), self.q(1.0)),
            ),
            (
                "server CPU during the storm".into(),
                self.server_cpu.map_or("n/a".into(), |c| {
                    format!(
                        "{c:.1} CPU-s in {:.1} s ({:.0} % of one core)",
                        self.storm_wall_s,
                        100.0 * c / self.storm_wall_s.max(1e-9)
                    )
                }),
            ),
            (
                "generator CPU (the host's client and all listeners' clients, same 2 cores)".into(),
                self.generator_cpu.map_or("n/a".into(), |c| {
                    format!(
                        "{c:.1} CPU-s ({:.0} % of one core)",
                        100.0 * c / self.storm_wall_s.max(1e-9)
                    )
                }),
            ),
            (
                "server RSS before / after; per listener (no media: outside the SFU)".into(),
                format!(
                    "{} / {} KiB; {}",
                    self.rss_before_kib.map_or("n/a".into(), |k| k.to_string()),
                    self.rss_after_kib.map_or("n/a".into(), |k| k.to_string()),
                    self.rss_per_listener()
                        .map_or("n/a".into(), |k| format!("{k:.1} KiB"))
                ),
            ),
        ];
        for (what, room, other) in &self.per_change {
            rows.push((
                format!("bytes per listener: {what}"),
                format!("{room:.0} B room state + {other:.0} B E2EE"),
            ));
        }
        let ttfa = |q: f64| {
            probe::sample_quantile(&self.ttfa, q).map_or("n/a".into(), |s| format!("{s:.2} s"))
        };
        rows.push((
            format!(
                "media listeners ({} of them, real WebRTC): time to first audio p50 / p95 / max",
                self.media
            ),
            format!("{} / {} / {}", ttfa(0.5), ttfa(0.95), ttfa(1.0)),
        ));
        rows.push((
            "media listeners: frames decrypted / failed / not the host's".into(),
            format!(
                "{} / {} {:?} / {}",
                self.media_decrypted,
                self.media_decrypt_failures,
                self.media_failure_kinds,
                self.media_mismatches
            ),
        ));
        rows.push((
            format!(
                "media listeners: failures within {} s of a new key reaching them / key generations received",
                super::stable::NEAR_KEY_CHANGE.as_secs()
            ),
            format!(
                "{} of {} / {}",
                self.media_failures_near_key_change,
                self.media_decrypt_failures,
                self.media_generations
            ),
        ));
        let alarmed = self.roster_checks.iter().filter(|c| c.2 > 0).count();
        rows.push((
            "media listeners' roster check at the end: checked / reporting hidden listeners; signed accounts vs audience count shown (first)".into(),
            format!(
                "{} / {alarmed}; {}",
                self.roster_checks.len(),
                self.roster_checks
                    .first()
                    .map_or("n/a".into(), |(a, shown, _)| format!("{a} vs {shown}"))
            ),
        ));
        rows.push((
            "ban: every remaining listener on a newer key / the banned one told".into(),
            format!(
                "{} / {} ({} not on a newer key within 30 s)",
                opt_s(self.ban_rekeyed_s),
                opt_s(self.ban_cut_off_s),
                self.ban_not_rekeyed
            ),
        ));
        let ban = |q: f64| {
            probe::sample_quantile(&self.ban_rekey_times, q)
                .map_or("n/a".into(), |s| format!("{s:.2} s"))
        };
        rows.push((
            "ban: remaining listeners on a newer key, first / p50 / p95".into(),
            format!("{} / {} / {}", ban(0.0), ban(0.5), ban(0.95)),
        ));
        rows
    }

    pub fn print(&self) {
        for (what, v) in self.rows() {
            println!("{what:<72} {v}");
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from("| What | Measured |\n|---|---|\n");
        for (what, v) in self.rows() {
            out.push_str(&format!("| {what} | {v} |\n"));
        }
        out
    }
}

/// What each listener received since `before`, on average.
fn per_listener(what: &str, before: (u64, u64), seen: &[Arc<Seen>]) -> (String, f64, f64) {
    let after = bytes(seen);
    let count = seen.iter().filter(|s| !s.media).count().max(1) as f64;
    (
        what.to_owned(),
        after.0.saturating_sub(before.0) as f64 / count,
        after.1.saturating_sub(before.1) as f64 / count,
    )
}

/// Sum over listeners of (room, other) bytes.
fn bytes(seen: &[Arc<Seen>]) -> (u64, u64) {
    seen.iter().fold((0, 0), |(r, o), s| {
        (
            r + s.room_bytes.load(Relaxed),
            o + s.other_bytes.load(Relaxed),
        )
    })
}

pub async fn run(args: StormArgs) -> anyhow::Result<StormReport> {
    let dir = tempfile::tempdir().context("a directory for the bench profiles")?;
    let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let n = args.listeners;

    let t_reg = Instant::now();
    let host_name = format!("s{tag}_h");
    let host = register(&args.server, dir.path(), &args.invite, &host_name).await?;
    let host_profile = Profile::open(&dir.path().join(&host_name))?;
    eprintln!("registering {} accounts", n + 1);
    let mut people = register_many(
        &args.server,
        &args.invite,
        dir.path(),
        &format!("s{tag}_"),
        n + 1,
    )
    .await?;
    let extra = people.pop().context("the extra account")?;
    let registration_s = t_reg.elapsed().as_secs_f64();
    eprintln!("registered in {registration_s:.0} s");

    let room = host
        .client
        .create_room("storm", RoomKind::Open, None)
        .await
        .context("creating the storm room")?
        .id;
    // The host: the real client session, on a thread of its own (another
    // device), distributing the audience key.
    let host_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("storm-host")
        .enable_all()
        .build()
        .context("the host's runtime")?;
    let host_signal = sotto_audio::speech_like(7, 5.0);
    let host_signal_copy = host_signal.clone();
    let host_task = {
        let (client, room) = (host.client.clone(), room.clone());
        host_rt.spawn(async move {
            let mut config = SessionConfig::new(
                room,
                Mode::Speak {
                    samples: host_signal,
                    repeat: true,
                },
            );
            config.stop_after = Some(Duration::from_secs(3600));
            session::run(&client, &host_profile, config, |_| {}).await
        })
    };
    // Until the host's device holds the key and distributes.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Every packet the host's encoder will make (before the storm's clock
    // starts: encoding them takes seconds).
    let reference = if args.media > 0 {
        let frames = usize::try_from((args.join_seconds + args.key_timeout + 600) * 50)?;
        Arc::new(stable::reference_packets(&host_signal_copy, frames)?)
    } else {
        Arc::default()
    };
    let rss_before = args.server_pid.map(probe::rss_kib).transpose()?;
    let cpu0 = args.server_pid.map(probe::cpu_seconds).transpose()?;
    // This process's own CPU time: a failed read shows as "n/a".
    let own0 = probe::cpu_seconds(std::process::id()).ok();
    let t0 = Instant::now();
    let (stop_tx, stop) = watch::channel(false);
    let mut seen = Vec::with_capacity(n + 1);
    let mut tasks = tokio::task::JoinSet::new();
    let gap = Duration::from_secs_f64(args.join_seconds as f64 / n.max(1) as f64);
    let mut ticker = tokio::time::interval(gap);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut progress = Instant::now();
    // Media listeners: every `stride`-th, never the first two or the last
    // (they are banned, invited, raise a hand below).
    let stride = n.checked_div(args.media).map_or(usize::MAX, |s| s.max(1));
    let is_media = |i: usize| i >= 2 && i + 1 < n && i.is_multiple_of(stride);
    let (phase_tx, phase) = watch::channel(Phase::Measuring);
    let ttfa = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let stables = Arc::new(std::sync::Mutex::new(Vec::<Stable>::new()));
    let users: Vec<sotto_proto::UserId> = people.iter().map(|(p, _)| p.user_id.clone()).collect();
    let clients: Vec<Arc<sotto_client::Client>> =
        people.iter().map(|(p, _)| p.client.clone()).collect();
    anyhow::ensure!(n >= 2, "a storm needs at least 2 listeners");
    for (i, (person, profile)) in people.into_iter().enumerate() {
        ticker.tick().await;
        let media = is_media(i);
        let s = Arc::new(Seen {
            media,
            ..Seen::default()
        });
        seen.push(s.clone());
        let (room, stop) = (room.clone(), stop.clone());
        if media {
            let (reference, phase) = (reference.clone(), phase.clone());
            let (ttfa, stables) = (ttfa.clone(), stables.clone());
            tasks.spawn(async move {
                s.joined_ms.store(ms_since(t0), Relaxed);
                let started = Instant::now();
                let timeout = Duration::from_secs(60);
                match Stable::start(&person, profile, &room, reference, phase, stop, timeout).await
                {
                    Ok(stable) => {
                        s.keyed_ms.store(ms_since(t0), Relaxed);
                        lock(&ttfa).push(started.elapsed().as_secs_f64());
                        lock(&stables).push(stable);
                    }
                    Err(e) => {
                        s.failed.store(true, Relaxed);
                        eprintln!("a media listener failed: {e:#}");
                    }
                }
            });
        } else {
            tasks.spawn(async move {
                if let Err(e) = listener(person, profile, room, t0, s.clone(), stop).await {
                    s.failed.store(true, Relaxed);
                    eprintln!("a listener failed: {e:#}");
                }
            });
        }
        if progress.elapsed() > Duration::from_secs(10) {
            progress = Instant::now();
            let keyed = seen.iter().filter(|s| s.keyed_ms.load(Relaxed) > 0).count();
            eprintln!(
                "+{:.0} s: {} joined, {keyed} keyed",
                t0.elapsed().as_secs_f64(),
                seen.len()
            );
        }
    }
    // Every key, or the timeout.
    let deadline = Instant::now() + Duration::from_secs(args.key_timeout);
    loop {
        let keyed = seen.iter().filter(|s| s.keyed_ms.load(Relaxed) > 0).count();
        let failed = seen.iter().filter(|s| s.failed.load(Relaxed)).count();
        if keyed + failed >= n || Instant::now() > deadline {
            break;
        }
        if progress.elapsed() > Duration::from_secs(10) {
            progress = Instant::now();
            eprintln!(
                "+{:.0} s: all joined, {keyed} keyed, {failed} failed",
                t0.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let storm_wall_s = t0.elapsed().as_secs_f64();
    let cpu1 = args.server_pid.map(probe::cpu_seconds).transpose()?;
    let own1 = probe::cpu_seconds(std::process::id()).ok(); // as `own0`
    // Let the last rosters land before memory is read.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = args.server_pid.map(probe::rss_kib).transpose()?;
    let keyed_ms: Vec<u64> = seen
        .iter()
        .map(|s| s.keyed_ms.load(Relaxed))
        .filter(|&k| k > 0)
        .collect();
    let mut time_to_key: Vec<f64> = seen
        .iter()
        .filter(|s| s.keyed_ms.load(Relaxed) > 0)
        .map(|s| (s.keyed_ms.load(Relaxed) - s.joined_ms.load(Relaxed)) as f64 / 1e3)
        .collect();
    time_to_key.sort_by(f64::total_cmp);
    let admission_s = (keyed_ms.len() == n).then(|| {
        let first = seen
            .iter()
            .map(|s| s.joined_ms.load(Relaxed))
            .min()
            .unwrap_or(0);
        (keyed_ms.iter().max().copied().unwrap_or(0) - first) as f64 / 1e3
    });
    eprintln!(
        "storm over: {} of {n} keyed in {storm_wall_s:.1} s",
        keyed_ms.len()
    );

    // One change at a time in the full room: what each listener receives.
    let mut per_change = Vec::new();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = bytes(&seen);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    per_change.push(per_listener("nothing happens (2.5 s)", before, &seen));
    // One more listener, through the whole path (its key is a roster change).
    {
        let s = Arc::new(Seen::default());
        let (room, stop) = (room.clone(), stop.clone());
        let (person, profile) = extra;
        let before = bytes(&seen);
        tasks.spawn(async move {
            if let Err(e) = listener(person, profile, room, t0, s.clone(), stop).await {
                s.failed.store(true, Relaxed);
                eprintln!("the extra listener failed: {e:#}");
            }
        });
        tokio::time::sleep(Duration::from_millis(4_000)).await;
        per_change.push(per_listener(
            "one more listener joins and is keyed (4 s)",
            before,
            &seen,
        ));
    }
    // A hand from the last listener to join (beyond the audience shown).
    let before = bytes(&seen);
    clients[n - 1]
        .room_action(&room, "raise-hand")
        .await
        .context("raising a hand")?;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    per_change.push(per_listener("a raised hand (2.5 s)", before, &seen));
    // A stage invitation for the second listener to join.
    let before = bytes(&seen);
    host.client
        .member_action(&room, &users[1.min(n - 1)], "invite-to-stage")
        .await
        .context("inviting to the stage")?;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    per_change.push(per_listener("a stage invitation (2.5 s)", before, &seen));

    // A ban of the first listener to join.
    let victim = 0usize;
    let gens: Vec<u64> = seen.iter().map(|s| s.generation.load(Relaxed)).collect();
    let t_ban = ms_since(t0);
    let before = bytes(&seen);
    host.client
        .member_action(&room, &users[victim], "ban")
        .await
        .context("banning")?;
    let wait_until = Instant::now() + Duration::from_secs(30);
    let pending = loop {
        let pending = seen
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                *i != victim
                    && !s.media
                    && !s.failed.load(Relaxed)
                    && s.generation.load(Relaxed) <= gens[*i]
            })
            .count();
        if (pending == 0 && seen[victim].left_ms.load(Relaxed) > 0) || Instant::now() > wait_until {
            break pending;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    per_change.push(per_listener(
        "a ban (until every listener holds the new key)",
        before,
        &seen,
    ));
    let ban_rekeyed_s = (pending == 0).then(|| {
        let last = seen
            .iter()
            .enumerate()
            .filter(|(i, s)| *i != victim && !s.media)
            .map(|(_, s)| s.generation_ms.load(Relaxed))
            .max()
            .unwrap_or(t_ban);
        last.saturating_sub(t_ban) as f64 / 1e3
    });
    let mut ban_rekey_times: Vec<f64> = seen
        .iter()
        .enumerate()
        .filter(|(i, s)| *i != victim && !s.media && s.generation.load(Relaxed) > gens[*i])
        .map(|(_, s)| s.generation_ms.load(Relaxed).saturating_sub(t_ban) as f64 / 1e3)
        .collect();
    ban_rekey_times.sort_by(f64::total_cmp);
    let left = seen[victim].left_ms.load(Relaxed);
    let ban_cut_off_s = (left > 0).then(|| left.saturating_sub(t_ban) as f64 / 1e3);
    let ban_not_rekeyed = pending;
    // Failures so far: the listener promoted next is a listener client,
    // not a speaker's, and what it does on stage is not what this measures.
    let failed = seen.iter().filter(|s| s.failed.load(Relaxed)).count();

    // The invited listener (shown to listeners) takes the stage. What the
    // others receive: the new speaker itself is sent the whole room (the
    // stage sees every listener) and the stage group's state.
    let promoted = 1.min(n - 1);
    let others: Vec<Arc<Seen>> = (seen.iter().enumerate())
        .filter(|(i, _)| *i != promoted)
        .map(|(_, s)| s.clone())
        .collect();
    let before = bytes(&others);
    clients[promoted]
        .room_action(&room, "accept-stage")
        .await
        .context("taking the stage")?;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    per_change.push(per_listener(
        "a listener shown to listeners takes the stage, to each other listener (2.5 s)",
        before,
        &others,
    ));

    stop_tx.send(true).context("stopping the listeners")?;
    phase_tx.send(Phase::Done).context("ending the phase")?;
    let mut media_reports = Vec::new();
    let started_stables = std::mem::take(&mut *lock(&stables));
    for stable in started_stables {
        media_reports.push(stable.task.await.context("a media listener panicked")??);
    }
    let mut ttfa = std::mem::take(&mut *lock(&ttfa));
    ttfa.sort_by(f64::total_cmp);
    host.client
        .room_action(&room, "end")
        .await
        .context("ending the storm room")?;
    while tasks.join_next().await.is_some() {}
    if tokio::time::timeout(Duration::from_secs(10), host_task)
        .await
        .is_err()
    {
        eprintln!("the host's session did not end within 10 s of the room's end");
    }
    host_rt.shutdown_background();

    let report = StormReport {
        listeners: n,
        join_seconds: args.join_seconds,
        registration_s,
        keyed: keyed_ms.len(),
        failed,
        admission_s,
        time_to_key,
        server_cpu: cpu0.zip(cpu1).map(|(a, b)| b - a),
        generator_cpu: own0.zip(own1).map(|(a, b)| b - a),
        storm_wall_s,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        per_change,
        ban_rekeyed_s,
        ban_cut_off_s,
        ban_not_rekeyed,
        ban_rekey_times,
        media: seen.iter().filter(|s| s.media).count(),
        ttfa,
        media_decrypted: media_reports.iter().map(|r| r.decrypted).sum(),
        media_decrypt_failures: media_reports.iter().map(|r| r.decrypt_failures).sum(),
        media_mismatches: media_reports.iter().map(|r| r.mismatches).sum(),
        media_failure_kinds: media_reports.iter().fold(
            std::collections::BTreeMap::new(),
            |mut all, r| {
                for (kind, n) in &r.failure_kinds {
                    *all.entry(kind.clone()).or_insert(0) += n;
                }
                all
            },
        ),
        media_failures_near_key_change: media_reports
            .iter()
            .map(|r| r.failures_near_key_change)
            .sum(),
        media_generations: media_reports
            .iter()
            .map(|r| r.generations)
            .max()
            .unwrap_or(0),
        roster_checks: media_reports
            .iter()
            .filter_map(|r| r.roster_check)
            .collect(),
    };
    if let Some(path) = &args.markdown {
        std::fs::write(path, report.markdown())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}
