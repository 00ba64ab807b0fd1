//! A churn bench's stable listener: the real client path (session channel,
//! E2EE admission, ICE/DTLS/SRTP media) that takes every frame through
//! SFrame decryption and checks it against what the host's encoder made,
//! and times the gaps between the frames it could play.

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sotto_audio::{FRAME_SAMPLES, OpusEncoder};
use sotto_client::media::MediaConnection;
use sotto_client::{Channel, Profile};
use sotto_e2ee::frame::parse_header;
use sotto_e2ee::keys::split_kid;
use sotto_proto::RoomId;
use sotto_proto::channel::{E2eeDown, ServerMessage};
use tokio::sync::watch;

use super::fanout::{LOOPBACK, Person, SLOTS};
use super::room_keys::RoomKeys;

/// Where the run is: what a listener counts depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Joining, connecting, waiting for the first key.
    Setup,
    /// The churn: everything counts.
    Measuring,
    /// Churn over: frames still decrypt, nothing more is counted.
    Done,
}

/// The Opus packets the host's session sends, in order, as hashes: the
/// host encodes `signal` 20 ms at a time, looping, with the default
/// encoder, exactly as `sotto_client::session` does; the same encoder fed
/// the same frames makes the same bytes. `frames` should cover the run.
pub fn reference_packets(signal: &[f32], frames: usize) -> anyhow::Result<HashSet<u64>> {
    let mut encoder = OpusEncoder::new(Default::default())?;
    let mut set = HashSet::with_capacity(frames);
    for index in 0..frames {
        let start = index * FRAME_SAMPLES;
        let mut frame = [0f32; FRAME_SAMPLES];
        for (i, s) in frame.iter_mut().enumerate() {
            *s = signal[(start + i) % signal.len()];
        }
        set.insert(digest(encoder.encode(&frame)?.as_bytes()));
    }
    Ok(set)
}

fn digest(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// A decrypt failure this close to a new key statement's arrival is put
/// down to that rotation.
pub const NEAR_KEY_CHANGE: Duration = Duration::from_secs(3);

/// What one stable listener saw during the measured phase (and, apart,
/// decrypt failures outside it).
#[derive(Debug, Default)]
pub struct StableReport {
    /// Frames that decrypted and were one the host's encoder made.
    pub decrypted: u64,
    pub decrypt_failures: u64,
    /// Failures by kind (the error's variant), for the report.
    pub failure_kinds: BTreeMap<String, u64>,
    /// Failures outside the measured phase (e.g. before the first key).
    pub failures_outside: u64,
    /// Failures of the measured phase within [`NEAR_KEY_CHANGE`] of a new
    /// key statement reaching this listener (a rotation it got late, or a
    /// frame of the old key that came after): the rest had no rotation to
    /// blame.
    pub failures_near_key_change: u64,
    /// Frames that decrypted to something the host never sent.
    pub mismatches: u64,
    /// Longest wall-clock time between two decrypted frames (or from the
    /// start of the phase to the first), and when it ended, from the start.
    pub max_gap: Duration,
    pub max_gap_at: Duration,
    /// Most consecutive frames (by RTP sequence) missing between two
    /// decrypted ones: the longest stretch of audio the listener lacked.
    pub max_missing_run: u64,
    /// RTP sequence numbers of the phase that never decrypted here.
    pub lost: u64,
    /// Frames the phase's sequence numbers span.
    pub expected: u64,
    /// Distinct key statements delivered (each is one generation: the
    /// first key and every rotation).
    pub generations: usize,
    /// Signed rosters accepted.
    pub rosters: u64,
    /// Times the frames' key (their KID tag) changed: the speaker switched.
    pub switches_heard: u64,
    pub alerts: Vec<String>,
    /// The roster check at the end (`RoomCrypto::check_roster`): the
    /// signed roster's accounts, the audience count this listener was
    /// shown, and the hidden listeners the check reported.
    pub roster_check: Option<(u32, u32, usize)>,
}

/// A connected listener that has heard its first frame.
pub struct Stable {
    pub task: tokio::task::JoinHandle<anyhow::Result<StableReport>>,
}

impl Stable {
    /// Joins `room` as `person` (whose profile is `profile`), connects
    /// media, waits for the first decrypted frame (up to `timeout`), then
    /// listens in a task of its own until `phase` turns [`Phase::Done`]
    /// and `stop` fires.
    pub async fn start(
        person: &Person,
        profile: Profile,
        room: &RoomId,
        reference: Arc<HashSet<u64>>,
        phase: watch::Receiver<Phase>,
        stop: watch::Receiver<bool>,
        timeout: Duration,
    ) -> anyhow::Result<Stable> {
        let view = person.client.join(room).await.context("joining the room")?;
        let mut channel = Channel::connect(&person.client).await?;
        channel.keep_deltas();
        channel.subscribe(room).await?;
        let mut keys = RoomKeys::open(&profile, &person.user_id, &view, &mut channel).await?;
        let (mut media, early) =
            MediaConnection::connect(&mut channel, room, LOOPBACK, SLOTS).await?;
        for msg in &early {
            keys.on_message(&mut channel, msg).await?;
        }
        media.connected(Duration::from_secs(10)).await?;
        let mut ear = Ear {
            room: room.clone(),
            keys,
            channel,
            media,
            reference,
            phase,
            report: StableReport::default(),
            statements: HashSet::new(),
            key_changes: Vec::new(),
            failure_times: Vec::new(),
            last_ok: None,
            last_tag: None,
            seq_span: None,
            seq_ok: 0,
            phase_start: None,
        };
        ear.until_first_frame(timeout).await?;
        Ok(Stable {
            task: tokio::spawn(ear.run(stop)),
        })
    }
}

struct Ear {
    room: RoomId,
    keys: RoomKeys,
    channel: Channel,
    media: MediaConnection,
    reference: Arc<HashSet<u64>>,
    phase: watch::Receiver<Phase>,
    report: StableReport,
    statements: HashSet<String>,
    /// When each new key statement came (measured phase), and when each
    /// measured failure happened: compared at the end.
    key_changes: Vec<Instant>,
    failure_times: Vec<Instant>,
    /// When the last frame decrypted, and its RTP sequence number.
    last_ok: Option<(Instant, u64)>,
    last_tag: Option<u64>,
    /// First and last sequence number decrypted in the phase, and how many.
    seq_span: Option<(u64, u64)>,
    seq_ok: u64,
    phase_start: Option<Instant>,
}

enum Step {
    Go,
    Ended(String),
}

impl Ear {
    async fn until_first_frame(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.last_ok.is_none() {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    anyhow::bail!("no frame decrypted within {timeout:?}")
                }
                step = self.step() => {
                    if let Step::Ended(why) = step? {
                        anyhow::bail!("the listener's session ended: {why}");
                    }
                }
            }
        }
        Ok(())
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) -> anyhow::Result<StableReport> {
        loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
                step = self.step() => {
                    if let Step::Ended(why) = step? {
                        self.report.alerts.push(format!("session ended early: {why}"));
                        break;
                    }
                }
            }
        }
        let hidden = self.keys.crypto.check_roster().hidden;
        let shown = self.channel.view(&self.room).map(|v| v.audience_count);
        self.report.roster_check = (self.keys.crypto.roster())
            .zip(shown)
            .map(|(r, shown)| (r.accounts(), shown, hidden));
        self.report.alerts.extend(
            self.keys
                .crypto
                .take_alerts()
                .iter()
                .map(ToString::to_string),
        );
        if let Some((first, last)) = self.seq_span {
            self.report.expected = last - first + 1;
            self.report.lost = self.report.expected - self.seq_ok;
        }
        self.report.generations = self.statements.len();
        let changes = &self.key_changes;
        self.report.failures_near_key_change = self
            .failure_times
            .iter()
            .filter(|&&f| {
                changes.iter().any(|&c| {
                    let apart = if f > c { f - c } else { c - f };
                    apart <= NEAR_KEY_CHANGE
                })
            })
            .count() as u64;
        self.channel.close().await;
        Ok(self.report)
    }

    /// One channel message, timer or packet.
    async fn step(&mut self) -> anyhow::Result<Step> {
        let due = self.keys.due();
        tokio::select! {
            msg = self.channel.next(Duration::from_secs(3600)) => {
                let msg = msg?;
                match &msg {
                    ServerMessage::RoomLeft { room_id, .. } if *room_id == self.room => {
                        return Ok(Step::Ended("left the room".into()));
                    }
                    ServerMessage::RoomEnded { room_id } if *room_id == self.room => {
                        return Ok(Step::Ended("room ended".into()));
                    }
                    ServerMessage::E2ee { e2ee, .. } => self.count_e2ee(e2ee),
                    _ => {}
                }
                self.keys.on_message(&mut self.channel, &msg).await?;
            }
            () = tokio::time::sleep_until(due) => {
                self.keys.on_timeout(&mut self.channel).await?;
            }
            packet = self.media.packets.recv() => {
                let Some(packet) = packet else {
                    return Ok(Step::Ended("media closed".into()));
                };
                self.frame(packet.seq, &packet.payload);
            }
        }
        Ok(Step::Go)
    }

    fn measuring(&mut self) -> bool {
        let now = *self.phase.borrow();
        if now == Phase::Measuring && self.phase_start.is_none() {
            // The phase starts now: a gap counts from here.
            let at = Instant::now();
            self.phase_start = Some(at);
            if let Some((_, seq)) = self.last_ok {
                self.last_ok = Some((at, seq));
            }
        }
        now == Phase::Measuring
    }

    fn count_e2ee(&mut self, e2ee: &E2eeDown) {
        if !self.measuring() {
            return;
        }
        match e2ee {
            E2eeDown::Sealed { statement, .. } if self.statements.insert(statement.clone()) => {
                self.key_changes.push(Instant::now());
            }
            E2eeDown::Roster { .. } => self.report.rosters += 1,
            _ => {}
        }
    }

    fn frame(&mut self, seq: u64, payload: &[u8]) {
        let measuring = self.measuring();
        let now_ms = self.keys.now_ms();
        let plain = match self.keys.crypto.decrypt(now_ms, payload) {
            Ok(plain) => plain,
            Err(e) => {
                if measuring {
                    self.report.decrypt_failures += 1;
                    self.failure_times.push(Instant::now());
                    let kind = format!("{e:?}");
                    let kind = kind.split([' ', '{']).next().unwrap_or("?").to_owned();
                    *self.report.failure_kinds.entry(kind).or_default() += 1;
                } else {
                    self.report.failures_outside += 1;
                }
                return;
            }
        };
        if !self.reference.contains(&digest(&plain)) {
            if measuring {
                self.report.mismatches += 1;
            }
            return;
        }
        let now = Instant::now();
        if measuring {
            self.report.decrypted += 1;
            if let Some((at, last_seq)) = self.last_ok {
                let gap = now.duration_since(at);
                if gap > self.report.max_gap {
                    self.report.max_gap = gap;
                    self.report.max_gap_at = self
                        .phase_start
                        .map_or(Duration::ZERO, |s| now.duration_since(s));
                }
                let missing = seq.saturating_sub(last_seq).saturating_sub(1);
                self.report.max_missing_run = self.report.max_missing_run.max(missing);
            }
            let (first, last) = self.seq_span.unwrap_or((seq, seq));
            self.seq_span = Some((first.min(seq), last.max(seq)));
            self.seq_ok += 1;
            if let Ok((kid, _, _)) = parse_header(payload) {
                let tag = split_kid(kid).1;
                if self.last_tag.is_some_and(|t| t != tag) {
                    self.report.switches_heard += 1;
                }
                self.last_tag = Some(tag);
            }
        }
        self.last_ok = Some((now, seq));
    }
}
