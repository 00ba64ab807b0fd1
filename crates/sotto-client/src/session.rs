//! A speaking or listening session in a room: the whole client path.
//!
//! ```text
//! speak:  WAV → 48 kHz mono → 20 ms frames → Opus → SFrame (E2EE) → RTP → SFU
//! listen: SFU → RTP slots → SFrame decrypt → jitter buffer → Opus (FEC/PLC) → mix → WAV
//! ```
//!
//! One task drives it all: the session channel (room state, media signaling,
//! E2EE relay), the media connection, the room's crypto state, and a 20 ms
//! clock for sending and playout. Nothing leaves this device unencrypted but
//! the RTP headers (with the RFC 6464 audio level, by design).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use sotto_audio::{FRAME_SAMPLES, JitterBuffer, OpusDecoder, OpusEncoder, Playout, rfc6464_level};
use sotto_proto::channel::{ClientMessage, ServerMessage};
use sotto_proto::{ErrorCode, RoomId};

use crate::media::{MediaConnection, OutgoingFrame};
use crate::room_crypto::{InvitePolicy, RoomCrypto};
use crate::{Channel, Client, ClientError, Profile};
use sotto_room::{EarlyFrames, Opened};

/// What to do in the room.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Send these 48 kHz mono samples, 20 ms at a time; again from the start
    /// when `repeat` (until `stop_after`).
    Speak { samples: Vec<f32>, repeat: bool },
    /// Receive and mix what the room says.
    Listen,
}

#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub room: RoomId,
    pub mode: Mode,
    /// Stop after this long (a listener's `--duration`; a speaker without
    /// `repeat` stops at the end of its input anyway).
    pub stop_after: Option<Duration>,
    /// Address to bind the media socket to (this machine's address towards the server).
    pub bind_ip: IpAddr,
    /// Receive slots.
    pub slots: usize,
    /// Jitter buffer depth in 20 ms frames.
    pub jitter_depth: usize,
    /// When this device (a host or moderator) signs stage invitations.
    pub invite_policy: InvitePolicy,
    /// Users this device invites to the stage (signed on their request).
    pub invite: Vec<sotto_proto::UserId>,
    /// How often the session asks which devices the server lists for its
    /// own account (at the start, then this often).
    pub own_devices_every: Duration,
    /// How long the session keeps trying to reach a server that went away
    /// (restart, network outage) before it gives up with an error.
    pub reconnect_for: Duration,
}

impl SessionConfig {
    pub fn new(room: RoomId, mode: Mode) -> Self {
        SessionConfig {
            room,
            mode,
            stop_after: None,
            bind_ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            slots: 3,
            jitter_depth: 3,
            invite_policy: InvitePolicy::Explicit,
            invite: Vec::new(),
            own_devices_every: Duration::from_secs(30),
            reconnect_for: Duration::from_secs(60),
        }
    }
}

/// Counters a session reports (and shows on a terminal).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub frames_sent: u64,
    /// Frames not sent because this device had no send key yet.
    pub frames_without_key: u64,
    pub packets_received: u64,
    pub decrypted: u64,
    /// Frames that did not decrypt (forged, replayed, of a retired key, or
    /// still without their key after waiting; see `held_for_key`).
    pub decrypt_failures: u64,
    /// Frames that arrived before their key and waited for it
    /// (`sotto_room::EarlyFrames`); those it then opened count as
    /// decrypted, the others as decrypt failures.
    pub held_for_key: u64,
    pub lost: u64,
    pub concealed_or_fec: u64,
    /// Speakers heard (receive streams).
    pub streams: usize,
    /// SDP renegotiations after the first answer (the SFU promises none).
    pub renegotiations: u64,
    /// Failed E2EE checks, in plain words, in the order they happened.
    pub alerts: Vec<String>,
    /// Key holders on the room's signed roster that are no device of anyone
    /// in the room (checked after each new roster, once the members' device
    /// chains are fetched; each time also an alert).
    pub hidden_listeners: usize,
    /// Members' device chains that did not verify (each also an alert).
    pub chains_refused: usize,
    /// Devices the server lists for this account that its own chain does
    /// not hold (an alert too).
    pub unknown_own_devices: usize,
    /// Own-devices checks the server did not answer.
    pub own_devices_unchecked: u32,
    /// What the media driver could not do (refused input, full socket or
    /// queues), counted.
    pub media_drops: u64,
    /// Encrypted frames the media driver had no room for (lost).
    pub frames_not_queued: u64,
    /// Milliseconds from the start of the session (before joining the room)
    /// to the first frame decrypted.
    pub first_audio_ms: Option<u64>,
    /// Times the session channel and media were set up again after the
    /// server went away or the connection was lost.
    pub reconnects: u32,
    /// Longest time between two decrypted frames, after the first one
    /// (milliseconds; silences of the speakers count too).
    pub longest_gap_ms: u64,
    /// For each reconnect after audio had started: milliseconds from
    /// noticing the lost connection to the next decrypted frame.
    pub reconnect_gaps_ms: Vec<u64>,
}

/// What a session produced.
#[derive(Debug, Default)]
pub struct SessionOutcome {
    /// The decoded mix, 48 kHz mono (empty for a speaker).
    pub mix: Vec<f32>,
    pub stats: SessionStats,
    /// Why it ended early, if it did (room ended, removed, banned).
    pub ended_by: Option<String>,
    /// The room's crypto state as the session left it (tests use it to show
    /// what a removed participant can still decrypt).
    pub crypto: Option<RoomCrypto>,
    /// Test-only (feature `audit`): every secret the device held during the
    /// session, sampled each 20 ms tick.
    #[cfg(feature = "audit")]
    pub held_secrets: std::collections::HashSet<Vec<u8>>,
}

/// What a listener plays: a jitter buffer and a decoder per stream heard,
/// and when frames came.
struct Heard {
    streams: HashMap<u32, Stream>,
    jitter_depth: usize,
    session_start: Instant,
    last_decrypt: Option<Instant>,
    /// When the last lost connection was noticed, until audio is back.
    lost_at: Option<Instant>,
}

impl Heard {
    /// A decrypted frame: counted, timed, and queued for playout.
    fn frame(
        &mut self,
        stats: &mut SessionStats,
        ssrc: u32,
        seq: u16,
        opus: &[u8],
    ) -> Result<(), ClientError> {
        stats.decrypted += 1;
        let at = Instant::now();
        if let Some(since) = self.lost_at.take() {
            stats
                .reconnect_gaps_ms
                .push(at.duration_since(since).as_millis() as u64);
        }
        if let Some(last) = self.last_decrypt.replace(at) {
            let gap = at.duration_since(last).as_millis() as u64;
            stats.longest_gap_ms = stats.longest_gap_ms.max(gap);
        }
        stats
            .first_audio_ms
            .get_or_insert(self.session_start.elapsed().as_millis() as u64);
        let stream = match self.streams.entry(ssrc) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Stream {
                jitter: JitterBuffer::new(self.jitter_depth),
                decoder: OpusDecoder::new().map_err(|e| ClientError::Channel(e.to_string()))?,
            }),
        };
        stream.jitter.push(seq, opus);
        Ok(())
    }
}

struct Stream {
    jitter: JitterBuffer,
    decoder: OpusDecoder,
}

/// Runs a session until its input ends, `stop_after` passes, or the room
/// ends for this user. `on_tick` sees the counters once a second.
pub async fn run(
    client: &Client,
    profile: &Profile,
    config: SessionConfig,
    mut on_tick: impl FnMut(&SessionStats),
) -> Result<SessionOutcome, ClientError> {
    let session_start = Instant::now();
    let room = &config.room;
    let me = client.me().await?;
    let (view, mut channel, mut media, early) = connect_room(client, &config).await?;

    // The E2EE state works in Unix milliseconds: join requests and
    // invitations carry expiry times that other devices check.
    let started = Instant::now();
    let unix_at_start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let now_ms = |t: Instant| unix_at_start + t.duration_since(started).as_millis() as u64;
    let device = profile.info.device_id.clone().ok_or_else(|| {
        ClientError::Profile("the profile has no device id; register first".into())
    })?;
    let (mut crypto, hello) = RoomCrypto::new(
        profile.device_seed(),
        &me.id,
        &device,
        &view,
        profile.load_trust()?,
        now_ms(Instant::now()),
        &mut rand::rngs::OsRng,
    )
    .map_err(|e| ClientError::Channel(format!("E2EE: {e}")))?;
    crypto.set_invite_policy(config.invite_policy);
    for user in &config.invite {
        crypto.invite_to_stage(user);
    }
    for msg in hello {
        channel.send(msg).await?;
    }
    for msg in early {
        for out in crypto_in(&mut crypto, now_ms(Instant::now()), &msg, &channel) {
            channel.send(out).await?;
        }
    }
    media.connected(Duration::from_secs(10)).await?;

    let mut outcome = SessionOutcome::default();
    let mut encoder = match &config.mode {
        Mode::Speak { .. } => Some(
            OpusEncoder::new(Default::default())
                .map_err(|e| ClientError::Channel(e.to_string()))?,
        ),
        Mode::Listen => None,
    };
    let mut heard = Heard {
        streams: HashMap::new(),
        jitter_depth: config.jitter_depth,
        session_start,
        last_decrypt: None,
        lost_at: None,
    };
    // Frames that came before their key wait for it here.
    let mut awaiting: EarlyFrames<(u32, u16)> = EarlyFrames::default();
    let mut frame_index: usize = 0;
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut report = tokio::time::interval(Duration::from_secs(1));
    let deadline = config.stop_after.map(|d| tokio::time::Instant::now() + d);
    let mut roster_checked = None;
    // When every member's chain was last fetched: between full fetches, a
    // new roster fetches only the chains not learnt yet.
    let mut chains_fetched_at: Option<Instant> = None;
    // Whether the roster check started: its proofs come later, so the
    // hidden count is read again at each report and at the end.
    let mut roster_checking = false;
    let (chains_tx, mut chains_rx) =
        tokio::sync::mpsc::channel::<Option<(sotto_proto::UserId, Vec<u8>)>>(256);
    let mut view = view;
    // Does the server list devices of this account that none of its
    // devices added (the operator signing in as this user)? Asked now and
    // every `own_devices_every`, beside the media loop.
    let (own_tx, mut own_rx) = tokio::sync::mpsc::channel(1);
    let mut own_check = tokio::time::interval(config.own_devices_every);
    // Set when the channel or the media connection is lost: how long to
    // wait before connecting again.
    let mut lost: Option<Duration> = None;

    'session: loop {
        if let Some(wait) = lost.take() {
            // Connect again with jittered, growing waits until the server
            // is back; the room's crypto state carries on.
            outcome.stats.reconnects += 1;
            if outcome.stats.decrypted > 0 {
                heard.lost_at.get_or_insert_with(Instant::now);
            }
            let give_up = Instant::now() + config.reconnect_for;
            let mut wait = wait;
            let (v, c, m, early) = loop {
                tokio::time::sleep(jittered(wait)).await;
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    break 'session;
                }
                match connect_room(client, &config).await {
                    Ok(connected) => break connected,
                    Err(ClientError::Api { code, .. })
                        if matches!(
                            code,
                            ErrorCode::RoomEnded
                                | ErrorCode::BannedFromRoom
                                | ErrorCode::RoomNotFound
                        ) =>
                    {
                        outcome.ended_by = Some(code.as_str().replace('_', " "));
                        break 'session;
                    }
                    Err(e) if Instant::now() >= give_up => return Err(e),
                    Err(_) => wait = (wait * 2).clamp(RECONNECT_FIRST, RECONNECT_MAX),
                }
            };
            let old = std::mem::replace(&mut channel, c);
            old.close().await;
            media = m;
            view = v;
            let now = now_ms(Instant::now());
            let mut sent = Ok(());
            for msg in crypto.reconnected(now) {
                sent = sent.and(channel.send(msg).await);
            }
            for msg in early {
                for out in crypto_in(&mut crypto, now_ms(Instant::now()), &msg, &channel) {
                    sent = sent.and(channel.send(out).await);
                }
            }
            if sent.is_err() {
                lost = Some(RECONNECT_FIRST);
            }
            continue 'session;
        }
        outcome
            .stats
            .alerts
            .extend(crypto.take_alerts().iter().map(ToString::to_string));
        let roster = crypto.roster().map(|r| r.version());
        if roster.is_some() && roster != roster_checked {
            // Name the new roster's key holders: their chains are fetched
            // beside the media loop (never blocking playout) and checked as
            // they arrive.
            roster_checked = roster;
            let all = chains_fetched_at.is_none_or(|t| t.elapsed() >= CHAINS_REFRESH);
            let learnt: std::collections::HashSet<sotto_proto::UserId> = if all {
                chains_fetched_at = Some(Instant::now());
                Default::default()
            } else {
                channel
                    .view(room)
                    .unwrap_or(&view)
                    .members
                    .iter()
                    .filter(|m| crypto.knows_chain(&m.user_id))
                    .map(|m| m.user_id.clone())
                    .collect()
            };
            fetch_room_chains(
                client,
                channel.view(room).unwrap_or(&view),
                &learnt,
                chains_tx.clone(),
            );
        }
        let crypto_due = crypto
            .poll_timeout()
            .map(|ms| {
                tokio::time::Instant::from_std(
                    started + Duration::from_millis(ms.saturating_sub(unix_at_start)),
                )
            })
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(far_future)).await }, if deadline.is_some() => break 'session,
            msg = channel.next(Duration::from_secs(3600)) => {
                let Ok(msg) = msg else {
                    // The server went away without a word, or the network
                    // dropped: connect again.
                    lost = Some(RECONNECT_FIRST);
                    continue 'session;
                };
                match &msg {
                    ServerMessage::MediaGone { room_id } if room_id == room => {
                        // The server dropped our media connection: set it up again.
                        lost = Some(RECONNECT_FIRST);
                        continue 'session;
                    }
                    ServerMessage::GoingAway { reconnect_after_ms } => {
                        lost = Some(Duration::from_millis(u64::from(*reconnect_after_ms)));
                        continue 'session;
                    }
                    ServerMessage::RoomLeft { room_id, banned } if room_id == room => {
                        outcome.ended_by = Some(if *banned { "banned".into() } else { "removed".into() });
                        break 'session;
                    }
                    ServerMessage::RoomEnded { room_id } if room_id == room => {
                        outcome.ended_by = Some("room ended".into());
                        break 'session;
                    }
                    _ => {}
                }
                for out in crypto_in(&mut crypto, now_ms(Instant::now()), &msg, &channel) {
                    if channel.send(out).await.is_err() {
                        lost = Some(RECONNECT_FIRST);
                    }
                }
                // Kept after the core read it: no copy of the room.
                if let ServerMessage::RoomState { room: v } = msg
                    && &v.id == room
                {
                    view = v;
                }
            }
            _ = tokio::time::sleep_until(crypto_due) => {
                for out in crypto.handle_timeout(now_ms(Instant::now())) {
                    if channel.send(out).await.is_err() {
                        lost = Some(RECONNECT_FIRST);
                    }
                }
            }
            packet = media.packets.recv() => {
                let Some(packet) = packet else { break 'session };
                outcome.stats.packets_received += 1;
                let tag = (packet.ssrc, packet.seq as u16);
                match awaiting.decrypt(&mut crypto, now_ms(Instant::now()), tag, packet.payload) {
                    Opened::Plain((ssrc, seq), opus) => heard.frame(&mut outcome.stats, ssrc, seq, &opus)?,
                    Opened::Held => outcome.stats.held_for_key += 1,
                    Opened::Failed(_) => outcome.stats.decrypt_failures += 1,
                }
            }
            _ = ticker.tick() => {
                if !awaiting.is_empty() {
                    // Once a tick, before playout: keys may have come (or
                    // frames waited too long). Not per packet: a keyless
                    // listener would try every held frame again each time.
                    for ((ssrc, seq), opus) in awaiting.retry(&mut crypto, now_ms(Instant::now())) {
                        heard.frame(&mut outcome.stats, ssrc, seq, &opus)?;
                    }
                    outcome.stats.decrypt_failures += awaiting.take_expired();
                }
                if let (Some(encoder), Mode::Speak { samples, repeat }) = (encoder.as_mut(), &config.mode) {
                    let start = frame_index * FRAME_SAMPLES;
                    if start >= samples.len() && !repeat {
                        break 'session;
                    }
                    let mut frame = [0f32; FRAME_SAMPLES];
                    for (i, s) in frame.iter_mut().enumerate() {
                        *s = samples.get((start + i) % samples.len().max(1)).copied().unwrap_or(0.0);
                    }
                    let packet = encoder.encode(&frame).map_err(|e| ClientError::Channel(e.to_string()))?;
                    match crypto.encrypt(now_ms(Instant::now()), packet.as_bytes()) {
                        Some(payload) => {
                            let level = rfc6464_level(&frame);
                            let sent = media.frames.try_send(OutgoingFrame {
                                payload,
                                timestamp: (frame_index as u32).wrapping_mul(FRAME_SAMPLES as u32),
                                audio_level: -(level.min(127) as i8),
                            });
                            match sent {
                                Ok(()) => outcome.stats.frames_sent += 1,
                                // The media driver is behind: this frame is lost, counted.
                                Err(_) => outcome.stats.frames_not_queued += 1,
                            }
                        }
                        None => outcome.stats.frames_without_key += 1,
                    }
                    frame_index += 1;
                }
                if matches!(config.mode, Mode::Listen) {
                    let mut mix = [0f32; FRAME_SAMPLES];
                    for stream in heard.streams.values_mut() {
                        let playout = stream.jitter.pop();
                        match &playout {
                            Playout::Idle => continue,
                            Playout::Lost { .. } => {
                                outcome.stats.lost += 1;
                                outcome.stats.concealed_or_fec += 1;
                            }
                            Playout::Frame { .. } => {}
                        }
                        let decoded = stream.decoder.play(&playout);
                        for (m, d) in mix.iter_mut().zip(decoded.iter()) {
                            *m += d;
                        }
                    }
                    outcome.mix.extend(mix.iter().map(|s| s.clamp(-1.0, 1.0)));
                }
                outcome.stats.streams = heard.streams.len();
                #[cfg(feature = "audit")]
                outcome.held_secrets.extend(crypto.audit_secrets());
            }
            notice = media.notices.recv() => match notice {
                Some(crate::media::MediaNotice::Renegotiated) => outcome.stats.renegotiations += 1,
                // The media connection failed (the server went away, or
                // ICE gave up): set it up again with the channel.
                Some(crate::media::MediaNotice::Closed) | None => lost = Some(RECONNECT_FIRST),
                Some(crate::media::MediaNotice::Connected) => {}
            },
            Some(learnt) = chains_rx.recv() => match learnt {
                // A chain that fails is reported as an alert by the crypto
                // state (and its keys stay unnamed).
                Some((user, chain)) => {
                    if crypto.learn_chain(&user, &chain).is_err() {
                        outcome.stats.chains_refused += 1;
                    }
                }
                // Every member's chain is in: name the key holders, and
                // warn about any that belongs to no one in the room.
                None => {
                    roster_checking = true;
                    outcome.stats.hidden_listeners = crypto.check_roster().hidden;
                }
            },
            _ = own_check.tick() => {
                let (client, tx, username) = (client.clone(), own_tx.clone(), me.username.clone());
                tokio::spawn(async move {
                    if tx.send(client.own_devices_as_served(&username).await).await.is_err() {
                        // The session ended first: nobody to tell.
                    }
                });
            }
            Some(own) = own_rx.recv() => match own {
                Ok((chain, listed)) => {
                    // A failed check is an alert of the crypto state.
                    if let Ok(n) = crypto.check_own_devices(&chain, &listed) {
                        outcome.stats.unknown_own_devices = n;
                    }
                }
                // The server did not answer: counted, tried again later.
                Err(_) => outcome.stats.own_devices_unchecked += 1,
            },
            _ = report.tick() => {
                outcome.stats.media_drops = media.drops.total();
                if roster_checking {
                    outcome.stats.hidden_listeners = crypto.roster_report().hidden;
                }
                on_tick(&outcome.stats);
            }
        }
    }
    // Leaving is a courtesy: the server reaps the media peer anyway.
    if channel
        .send(ClientMessage::MediaLeave {
            room_id: room.clone(),
        })
        .await
        .is_err()
    {
        outcome.stats.media_drops += 1;
    }
    channel.close().await;
    drop(media);
    profile.save_trust(crypto.trust())?;
    outcome
        .stats
        .alerts
        .extend(crypto.take_alerts().iter().map(ToString::to_string));
    if roster_checking {
        outcome.stats.hidden_listeners = crypto.roster_report().hidden;
    }
    // Frames still waiting for a key at the end never decrypted.
    outcome.stats.decrypt_failures += awaiting.take_expired() + awaiting.len() as u64;
    outcome.crypto = Some(crypto);
    Ok(outcome)
}

/// First wait before connecting again after a lost connection, and the
/// longest wait between attempts.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// `wait`, plus up to half of it again at random: clients that lost the
/// same server do not all come back at the same instant.
fn jittered(wait: Duration) -> Duration {
    let spread = (wait.as_millis() as u64 / 2).max(1);
    wait + Duration::from_millis(rand::random::<u64>() % spread)
}

/// Joins the room (again: joining keeps the role), opens the session
/// channel, subscribes, and offers media. Returns the room, the channel, the
/// media connection and the messages that arrived before the media answer.
async fn connect_room(
    client: &Client,
    config: &SessionConfig,
) -> Result<
    (
        sotto_proto::room::RoomView,
        Channel,
        MediaConnection,
        Vec<ServerMessage>,
    ),
    ClientError,
> {
    let view = client.join(&config.room).await?;
    let mut channel = Channel::connect(client).await?;
    // Deltas reach the crypto state as deltas: no copy of the room each.
    channel.keep_deltas();
    channel.subscribe(&config.room).await?;
    let (media, early) =
        MediaConnection::connect(&mut channel, &config.room, config.bind_ip, config.slots).await?;
    Ok((view, channel, media, early))
}

/// Most device chains a session fetches per roster to name the roster's
/// key holders: the next members not learnt yet, so that in a room of
/// thousands every member's chain is learnt within minutes (and the
/// sampled roster check reaches every member, not only the first ones).
const MAX_CHAIN_FETCHES: usize = 200;
/// How often a new roster fetches every member's chain again (a member may
/// have added a device); in between only chains not learnt yet are
/// fetched, so a busy room's rosters (one a second while people join) do
/// not cost a profile request per member each.
const CHAINS_REFRESH: Duration = Duration::from_secs(60);

/// Fetches the device chains of the room's members (but those in
/// `learnt`) in a task of its own and hands them to `tx`, so that the roster report can name every key holder
/// (and count hidden ones).
pub fn fetch_room_chains(
    client: &Client,
    view: &sotto_proto::room::RoomView,
    learnt: &std::collections::HashSet<sotto_proto::UserId>,
    tx: tokio::sync::mpsc::Sender<Option<(sotto_proto::UserId, Vec<u8>)>>,
) {
    let client = client.clone();
    let members = chains_to_fetch(view, learnt);
    tokio::spawn(async move {
        for (user, username) in members {
            // A profile that cannot be fetched leaves its keys unnamed:
            // the report then counts them as hidden, which is the safe side.
            let Ok(p) = client.profile(&username).await else {
                continue;
            };
            let chain = sotto_proto::channel::decode_payload(&p.device_chain).unwrap_or_default();
            if tx.send(Some((user, chain))).await.is_err() {
                return;
            }
        }
        if tx.send(None).await.is_err() {
            // The session ended first: nobody to tell that all are in.
        }
    });
}

/// The members whose chains [`fetch_room_chains`] fetches: the first
/// [`MAX_CHAIN_FETCHES`] in the room's order not in `learnt`.
fn chains_to_fetch(
    view: &sotto_proto::room::RoomView,
    learnt: &std::collections::HashSet<sotto_proto::UserId>,
) -> Vec<(sotto_proto::UserId, String)> {
    view.members
        .iter()
        .filter(|m| !learnt.contains(&m.user_id))
        .take(MAX_CHAIN_FETCHES)
        .map(|m| (m.user_id.clone(), m.username.clone()))
        .collect()
}

/// One server message into the room's crypto state; what it answers goes
/// back to the server. A room delta goes in with the room as `channel` now
/// holds it (the delta applied; see [`Channel::keep_deltas`]). A message
/// the state refuses is dropped, as in the session (counted there).
pub fn crypto_in(
    crypto: &mut RoomCrypto,
    now_ms: u64,
    msg: &ServerMessage,
    channel: &Channel,
) -> Vec<ClientMessage> {
    match msg {
        ServerMessage::RoomDelta(delta) => match channel.view(&delta.room_id) {
            // Refused like any message: counted in the crypto state.
            Some(room) => crypto
                .handle_room_delta(now_ms, delta, room)
                .unwrap_or_default(),
            None => Vec::new(),
        },
        _ => handle_crypto(crypto, now_ms, msg),
    }
}

fn handle_crypto(crypto: &mut RoomCrypto, now_ms: u64, msg: &ServerMessage) -> Vec<ClientMessage> {
    // A message the crypto state refuses is dropped: a peer's bad message
    // must not end the session. It stays counted in the crypto state.
    crypto.handle(now_ms, msg).unwrap_or_default()
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use sotto_proto::room::{MemberView, Role, RoomKind, RoomView};
    use sotto_proto::{RoomId, UserId};

    use super::{MAX_CHAIN_FETCHES, chains_to_fetch};

    /// In a room of more than [`MAX_CHAIN_FETCHES`] members, each pass
    /// fetches the next members not learnt yet, so every member's chain is
    /// learnt in the end (a pass over the first ones again would leave the
    /// rest out of the roster check for good).
    #[test]
    fn chains_are_fetched_through_the_whole_room() {
        let members: Vec<MemberView> = (0..450u32)
            .map(|n| {
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&n.to_be_bytes());
                MemberView {
                    user_id: UserId::from_bytes(id),
                    username: format!("u{n}"),
                    display_name: format!("U{n}"),
                    role: if n == 0 { Role::Host } else { Role::Listener },
                    hand_raised: false,
                    muted: false,
                    invited_to_stage: false,
                    hand_order: None,
                }
            })
            .collect();
        let view = RoomView {
            id: RoomId::from_bytes([1; 16]),
            title: "t".into(),
            description: String::new(),
            kind: RoomKind::Open,
            ended: false,
            version: 1,
            audience_count: 449,
            members,
        };
        let mut learnt = HashSet::new();
        let mut passes = 0;
        loop {
            let todo = chains_to_fetch(&view, &learnt);
            if todo.is_empty() {
                break;
            }
            assert!(todo.len() <= MAX_CHAIN_FETCHES);
            assert!(todo.iter().all(|(u, _)| !learnt.contains(u)));
            learnt.extend(todo.into_iter().map(|(u, _)| u));
            passes += 1;
        }
        assert_eq!(learnt.len(), 450, "every member's chain");
        assert_eq!(passes, 3);
    }
}
