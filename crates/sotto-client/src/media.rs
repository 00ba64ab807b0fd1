//! The client's media connection: a str0m peer (RTP mode) on its own UDP
//! socket, negotiated over the session channel with the server's SFU.
//!
//! The offer has one `sendonly` audio m-line (the microphone, present even
//! for a listener so that going on stage needs no renegotiation) and
//! `slots` `recvonly` m-lines. Payloads go out and come in as opaque bytes:
//! the caller puts SFrame ciphertext in them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sotto_proto::RoomId;
use sotto_proto::channel::{ClientMessage, ServerMessage};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::{Channel, ClientError};

/// One packet to send from the microphone m-line.
#[derive(Clone, Debug)]
pub struct OutgoingFrame {
    pub payload: Vec<u8>,
    /// RTP timestamp in 48 kHz units.
    pub timestamp: u32,
    /// RFC 6464 level, −dBov (0 loudest, −127 silence). Sent in clear: the
    /// server sees who speaks, never what.
    pub audio_level: i8,
}

/// One packet received on a receive slot.
#[derive(Clone, Debug)]
pub struct IncomingPacket {
    pub ssrc: u32,
    pub seq: u64,
    pub timestamp: u32,
    pub payload: Vec<u8>,
    pub audio_level: Option<i8>,
}

/// What the driver reports besides packets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaNotice {
    Connected,
    /// The SDP changed after the first answer (the SFU promises never).
    Renegotiated,
    Closed,
}

/// A running media connection; dropping it stops the driver.
pub struct MediaConnection {
    pub frames: mpsc::Sender<OutgoingFrame>,
    pub packets: mpsc::Receiver<IncomingPacket>,
    pub notices: mpsc::Receiver<MediaNotice>,
    pub local_addr: SocketAddr,
    /// What the media driver could not do, counted (nothing is dropped
    /// silently).
    pub drops: std::sync::Arc<MediaDrops>,
    task: tokio::task::JoinHandle<()>,
}

/// The media driver's failures, counted.
#[derive(Debug, Default)]
pub struct MediaDrops {
    /// Datagrams or timers str0m refused (malformed, or for no stream).
    pub input_refused: std::sync::atomic::AtomicU64,
    /// Datagrams the socket would not take (buffer full).
    pub send_failed: std::sync::atomic::AtomicU64,
    /// Received packets the session was too slow to take.
    pub packets_dropped: std::sync::atomic::AtomicU64,
    /// Notices (connected, renegotiated, closed) the session did not take.
    pub notices_dropped: std::sync::atomic::AtomicU64,
}

impl MediaDrops {
    fn count(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// All of them together.
    pub fn total(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        self.input_refused.load(Relaxed)
            + self.send_failed.load(Relaxed)
            + self.packets_dropped.load(Relaxed)
            + self.notices_dropped.load(Relaxed)
    }
}

impl Drop for MediaConnection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A negotiated media peer that nothing drives yet: for drivers other than
/// [`MediaConnection`]'s own (the load generator runs thousands of lean ones).
pub struct Negotiated {
    pub rtc: Rtc,
    pub socket: UdpSocket,
    pub local_addr: SocketAddr,
    /// The microphone m-line.
    pub mic: Mid,
    /// Opus's payload type.
    pub pt: Pt,
    /// Channel messages that arrived while waiting for the answer.
    pub early: Vec<ServerMessage>,
}

/// Sends an offer over `channel` (which must already be in `room`) and
/// applies the SFU's answer. `bind_ip` is this machine's address towards
/// the server.
pub async fn negotiate(
    channel: &mut Channel,
    room: &RoomId,
    bind_ip: std::net::IpAddr,
    slots: usize,
) -> Result<Negotiated, ClientError> {
    let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0)).await?;
    let local_addr = socket.local_addr()?;
    let now = Instant::now();
    let mut rtc = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .build(now);
    let candidate =
        Candidate::host(local_addr, "udp").map_err(|e| ClientError::Channel(e.to_string()))?;
    rtc.add_local_candidate(candidate);
    let mut api = rtc.sdp_api();
    let mic = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    for _ in 0..slots {
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    }
    let (offer, pending) = api
        .apply()
        .ok_or_else(|| ClientError::Channel("nothing to offer".into()))?;
    channel
        .send(ClientMessage::MediaOffer {
            room_id: room.clone(),
            sdp: offer.to_sdp_string(),
        })
        .await?;
    // Other messages that arrive meanwhile (room state, E2EE relay) are
    // handed back, not lost.
    let mut early = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let reply = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match channel.next(left).await? {
            m @ (ServerMessage::MediaAnswer { .. } | ServerMessage::Error { .. }) => break m,
            other => early.push(other),
        }
    };
    let answer = match reply {
        ServerMessage::MediaAnswer { sdp, .. } => sdp,
        ServerMessage::Error { error } => {
            return Err(ClientError::Api {
                status: 0,
                code: error.code,
                message: error.message,
            });
        }
        _ => return Err(ClientError::Channel("unexpected reply to the offer".into())),
    };
    let answer =
        SdpAnswer::from_sdp_string(&answer).map_err(|e| ClientError::Channel(e.to_string()))?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| ClientError::Channel(e.to_string()))?;
    let pt = rtc
        .codec_config()
        .iter()
        .find(|p| p.spec().codec == Codec::Opus)
        .map(|p| p.pt())
        .ok_or_else(|| ClientError::Channel("the answer has no Opus".into()))?;
    Ok(Negotiated {
        rtc,
        socket,
        local_addr,
        mic,
        pt,
        early,
    })
}

impl MediaConnection {
    /// Negotiates over `channel` (which must already be in `room`) and starts
    /// the UDP driver. `bind_ip` is this machine's address towards the server.
    pub async fn connect(
        channel: &mut Channel,
        room: &RoomId,
        bind_ip: std::net::IpAddr,
        slots: usize,
    ) -> Result<(MediaConnection, Vec<ServerMessage>), ClientError> {
        let n = negotiate(channel, room, bind_ip, slots).await?;
        let (frames, frames_rx) = mpsc::channel(256);
        let (packets_tx, packets) = mpsc::channel(4096);
        let (notices_tx, notices) = mpsc::channel(16);
        let local_addr = n.local_addr;
        let drops = std::sync::Arc::new(MediaDrops::default());
        let driver = Driver {
            rtc: n.rtc,
            socket: n.socket,
            local_addr,
            mic: n.mic,
            pt: n.pt,
            seq: u64::from(rand::random::<u16>()),
            packets: packets_tx,
            notices: notices_tx,
            negotiated: false,
            disconnected_since: None,
            drops: drops.clone(),
        };
        let task = tokio::spawn(driver.run(frames_rx));
        Ok((
            MediaConnection {
                frames,
                packets,
                notices,
                local_addr,
                drops,
                task,
            },
            n.early,
        ))
    }

    /// Waits until ICE and DTLS are up.
    pub async fn connected(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.notices.recv()).await {
                Ok(Some(MediaNotice::Connected)) => return Ok(()),
                Ok(Some(MediaNotice::Closed)) | Ok(None) => {
                    return Err(ClientError::Channel("media connection closed".into()));
                }
                Ok(Some(MediaNotice::Renegotiated)) => continue,
                Err(_) => return Err(ClientError::Channel("media did not connect in time".into())),
            }
        }
    }
}

struct Driver {
    rtc: Rtc,
    socket: UdpSocket,
    local_addr: SocketAddr,
    mic: Mid,
    pt: Pt,
    seq: u64,
    packets: mpsc::Sender<IncomingPacket>,
    notices: mpsc::Sender<MediaNotice>,
    negotiated: bool,
    drops: std::sync::Arc<MediaDrops>,
    /// Since when ICE has said the path to the server is broken.
    disconnected_since: Option<Instant>,
}

/// How long ICE may stay disconnected before the connection counts as
/// closed (the session then sets media up again). The server drops a peer
/// it has not heard from for longer than this, so waiting longer only
/// prolongs the silence.
const GIVE_UP_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

impl Driver {
    async fn run(mut self, mut frames: mpsc::Receiver<OutgoingFrame>) {
        let mut buf = vec![0u8; 2048];
        loop {
            let timeout = match self.drain() {
                Some(t) => t,
                None => {
                    self.notice(MediaNotice::Closed);
                    return;
                }
            };
            if self
                .disconnected_since
                .is_some_and(|since| since.elapsed() >= GIVE_UP_AFTER)
            {
                self.notice(MediaNotice::Closed);
                return;
            }
            // Wake up to give up in time, even without traffic.
            let timeout = match self.disconnected_since {
                Some(since) => timeout.min(since + GIVE_UP_AFTER),
                None => timeout,
            };
            let deadline = tokio::time::Instant::from_std(timeout);
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let Ok((n, source)) = received else { continue };
                    let Ok(contents) = buf[..n].try_into() else { continue };
                    let input = Input::Receive(Instant::now(), Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: self.local_addr,
                        contents,
                    });
                    if self.rtc.accepts(&input) && self.rtc.handle_input(input).is_err() {
                        MediaDrops::count(&self.drops.input_refused);
                    }
                }
                frame = frames.recv() => match frame {
                    Some(frame) => self.write(frame),
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    if self.rtc.handle_input(Input::Timeout(Instant::now())).is_err() {
                        MediaDrops::count(&self.drops.input_refused);
                    }
                }
            }
        }
    }

    fn notice(&self, notice: MediaNotice) {
        if self.notices.try_send(notice).is_err() {
            MediaDrops::count(&self.drops.notices_dropped);
        }
    }

    fn write(&mut self, frame: OutgoingFrame) {
        let ext = ExtensionValues {
            audio_level: Some(frame.audio_level),
            voice_activity: Some(frame.audio_level > -127),
            ..Default::default()
        };
        let write = RtpWrite::new(
            self.pt,
            self.seq.into(),
            frame.timestamp,
            Instant::now(),
            frame.payload,
        )
        .ext_vals(ext);
        self.seq += 1;
        if let Some(tx) = self.rtc.direct_api().stream_tx_by_mid(self.mic, None) {
            tx.write_rtp(write);
        }
    }

    /// Sends what str0m has to send; returns its next timeout, or `None`
    /// when the peer is dead.
    fn drain(&mut self) -> Option<Instant> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Some(t),
                Ok(Output::Transmit(t)) => {
                    if self.socket.try_send_to(&t.contents, t.destination).is_err() {
                        MediaDrops::count(&self.drops.send_failed);
                    }
                }
                Ok(Output::Event(event)) => match event {
                    Event::Connected => {
                        self.negotiated = true;
                        self.notice(MediaNotice::Connected);
                    }
                    Event::RtpPacket(p) => {
                        let packet = IncomingPacket {
                            ssrc: *p.header.ssrc,
                            seq: *p.seq_no,
                            timestamp: p.header.timestamp,
                            audio_level: p.header.ext_vals.audio_level,
                            payload: p.payload.to_vec(),
                        };
                        if self.packets.try_send(packet).is_err() {
                            MediaDrops::count(&self.drops.packets_dropped);
                        }
                    }
                    Event::MediaAdded(_) | Event::MediaChanged(_) if self.negotiated => {
                        self.notice(MediaNotice::Renegotiated);
                    }
                    Event::IceConnectionStateChange(state) => {
                        if state == IceConnectionState::Disconnected {
                            self.disconnected_since.get_or_insert_with(Instant::now);
                        } else {
                            self.disconnected_since = None;
                        }
                    }
                    _ => {}
                },
                Err(_) => return None,
            }
        }
    }
}
