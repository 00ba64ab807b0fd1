//! The media plane's driver: one UDP socket and a tokio task around the
//! sans-IO SFU core (`sotto-sfu`), plus the map between control-plane
//! identities and the random ids the SFU sees.
//!
//! The SFU never learns who anyone is: each media session gets a random
//! [`PeerId`], each room a random [`RoomKey`], kept only in this process's
//! memory. Whether a peer may publish follows the room's state: on stage and
//! not muted. Every room change re-applies that.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::{Rng as _, SeedableRng as _};
use sotto_proto::room::{MemberChange, RoomDelta, RoomView};
use sotto_proto::{RoomId, UserId};
use sotto_sfu::{PeerId, RoomKey, Sfu, SfuConfig, SfuError, SfuEvent, SfuStats};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::http::random_bytes;

enum Command {
    Add {
        peer: PeerId,
        room: RoomKey,
        offer: String,
        reply: oneshot::Sender<Result<String, SfuError>>,
    },
    /// Who may publish, for the peers whose right changed.
    Publish(Vec<(PeerId, bool)>),
    Remove {
        peer: PeerId,
    },
    /// Stop: the driver returns and closes the UDP socket.
    Stop,
    #[cfg(feature = "tap")]
    TakeTap {
        room: RoomKey,
        reply: oneshot::Sender<Vec<Vec<u8>>>,
    },
}

/// Who a media peer is, on the control plane's side only.
#[derive(Clone, Debug)]
struct Session {
    room: RoomId,
    user: UserId,
    /// What the SFU was last told about publishing (`None`: nothing yet).
    may_publish: Option<bool>,
    /// The room's version when the session started: an older view of the
    /// room (room events are applied asynchronously) predates this member
    /// and cannot say it left.
    since_version: i64,
}

#[derive(Default, Debug)]
struct Registry {
    peers: HashMap<PeerId, Session>,
    rooms: HashMap<RoomId, RoomKey>,
    /// The highest room version applied per room: older views are stale.
    versions: HashMap<RoomId, i64>,
}

/// A handle on the running media plane.
#[derive(Clone, Debug)]
pub struct MediaPlane {
    commands: mpsc::Sender<Command>,
    registry: Arc<Mutex<Registry>>,
    stats: Arc<Mutex<SfuStats>>,
    /// From a datagram's receipt to the end of the send of the packets it
    /// made the SFU forward.
    pub forward_latency: Arc<crate::metrics::LatencyHistogram>,
    /// Datagrams sent by `sendmmsg` batches, and one by one.
    pub sent_batched: Arc<std::sync::atomic::AtomicU64>,
    pub sent_single: Arc<std::sync::atomic::AtomicU64>,
    /// The address the socket is bound to.
    pub bound: SocketAddr,
    /// The address put in SDP answers (the bound one, or `--public-ip`).
    pub advertised: SocketAddr,
    /// Peers the SFU dropped by itself (ICE went silent), for the session
    /// channels that own them to tell their clients.
    gone: tokio::sync::broadcast::Sender<PeerId>,
}

/// Knobs of the driver.
#[derive(Clone, Debug)]
pub struct MediaConfig {
    pub bind: SocketAddr,
    pub public_ip: Option<IpAddr>,
    /// Fraction of incoming datagrams to drop, for loss-resilience tests.
    /// Always 0 outside tests.
    pub inject_loss: f64,
    /// The SFU seals forwarded packets itself (see `SfuConfig::direct_send`;
    /// the default). `false` (`sotto serve --sfu-send-path rtc`, for the
    /// benchmarks) sends each copy through the listener's str0m `Rtc`.
    pub direct_send: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_ip: None,
            inject_loss: 0.0,
            direct_send: true,
        }
    }
}

impl MediaPlane {
    /// Binds the UDP socket and starts the driver task.
    pub async fn start(config: &MediaConfig) -> std::io::Result<MediaPlane> {
        let socket = UdpSocket::bind(config.bind).await?;
        let bound = socket.local_addr()?;
        let advertised = SocketAddr::new(config.public_ip.unwrap_or(bound.ip()), bound.port());
        let sfu_config = SfuConfig {
            seed: u64::from_le_bytes(random_bytes()),
            direct_send: config.direct_send,
            ..SfuConfig::default()
        };
        let sfu = Sfu::new(Instant::now(), sfu_config, advertised)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let (commands, rx) = mpsc::channel(256);
        let plane = MediaPlane {
            commands,
            registry: Arc::default(),
            stats: Arc::default(),
            forward_latency: Arc::default(),
            sent_batched: Arc::default(),
            sent_single: Arc::default(),
            bound,
            advertised,
            gone: tokio::sync::broadcast::channel(256).0,
        };
        tokio::spawn(drive(sfu, socket, rx, plane.clone(), config.inject_loss));
        Ok(plane)
    }

    /// Adds `user`'s media session to `room` and answers the offer.
    /// `version` is the room's version the caller saw `user` in.
    pub async fn join(
        &self,
        room: &RoomId,
        user: &UserId,
        version: i64,
        offer: String,
    ) -> Result<(PeerId, String), SfuError> {
        let peer = PeerId::from_bytes(random_bytes());
        let key = {
            let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            let key = *reg
                .rooms
                .entry(room.clone())
                .or_insert_with(|| RoomKey::from_bytes(random_bytes()));
            reg.peers.insert(
                peer,
                Session {
                    room: room.clone(),
                    user: user.clone(),
                    may_publish: None,
                    since_version: version,
                },
            );
            key
        };
        let (reply, answer) = oneshot::channel();
        let sent = self
            .commands
            .send(Command::Add {
                peer,
                room: key,
                offer,
                reply,
            })
            .await;
        let answer = match sent {
            Ok(()) => answer.await.unwrap_or(Err(SfuError::UnknownPeer)),
            Err(_) => Err(SfuError::UnknownPeer),
        };
        if answer.is_err() {
            self.forget(peer);
        }
        answer.map(|sdp| (peer, sdp))
    }

    /// Ends a media session.
    /// Stops the media plane: every peer ends, the UDP socket closes (a
    /// restarted server can bind the same port). Returns once the driver
    /// has stopped.
    pub async fn stop(&self) {
        if self.commands.send(Command::Stop).await.is_err() {
            // The driver has stopped already.
            return;
        }
        // The driver drops its end of the queue when it returns.
        self.commands.closed().await;
    }

    /// Peers the SFU dropped by itself from now on.
    pub fn gone_peers(&self) -> tokio::sync::broadcast::Receiver<PeerId> {
        self.gone.subscribe()
    }

    pub async fn leave(&self, peer: PeerId) {
        self.forget(peer);
        if self.commands.send(Command::Remove { peer }).await.is_err() {
            tracing::debug!("media plane stopped before a peer left");
        }
    }

    /// Re-applies who may publish after a change of the room, and ends the
    /// media sessions of people no longer in it. One command for the whole
    /// room, naming only the peers whose right changed: a listener joining a
    /// room of thousands costs one map lookup per peer here, and nothing in
    /// the SFU.
    ///
    /// With `delta` (the change from the state applied last), only the
    /// members it names are looked at: a join costs no pass over the room.
    pub async fn apply(&self, view: &RoomView, delta: Option<&RoomDelta>) {
        let mut changed = Vec::new();
        let mut gone = Vec::new();
        {
            let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            // A room with no media session (a control-plane-only room, or
            // one whose listeners have not connected yet) has nothing to
            // re-apply: no pass over its members.
            if !view.ended && !reg.peers.values().any(|s| s.room == view.id) {
                return;
            }
            let latest = *reg.versions.entry(view.id.clone()).or_insert(view.version);
            if view.version < latest {
                return; // a newer state of the room was applied already
            }
            // Following on from the state applied last, with every session
            // of the room told its right once: only the members the change
            // names can change a right or end a session.
            let named: Option<HashSet<&UserId>> = delta
                .filter(|d| d.from == latest && d.version == view.version && !view.ended)
                .filter(|_| {
                    !reg.peers
                        .values()
                        .any(|s| s.room == view.id && s.may_publish.is_none())
                })
                .map(|d| d.changes.iter().map(changed_user).collect());
            reg.versions.insert(view.id.clone(), view.version);
            if let Some(n) = &named
                && !reg
                    .peers
                    .values()
                    .any(|s| s.room == view.id && n.contains(&s.user))
            {
                return; // nobody with a media session changed
            }
            let members: HashMap<&UserId, bool> = view
                .members
                .iter()
                .filter(|m| named.as_ref().is_none_or(|n| n.contains(&m.user_id)))
                .map(|m| (&m.user_id, m.role.on_stage() && !m.muted))
                .collect();
            for (peer, session) in reg.peers.iter_mut().filter(|(_, s)| {
                s.room == view.id && named.as_ref().is_none_or(|n| n.contains(&s.user))
            }) {
                match members.get(&session.user) {
                    Some(allowed) if !view.ended => {
                        if session.may_publish != Some(*allowed) {
                            session.may_publish = Some(*allowed);
                            changed.push((*peer, *allowed));
                        }
                    }
                    None if !view.ended && view.version < session.since_version => {}
                    _ => gone.push(*peer),
                }
            }
            if view.ended {
                reg.rooms.remove(&view.id);
                reg.versions.remove(&view.id);
            }
        }
        if !changed.is_empty() && self.commands.send(Command::Publish(changed)).await.is_err() {
            tracing::debug!("media plane stopped before a room change");
        }
        for peer in gone {
            self.leave(peer).await;
        }
    }

    /// Test builds only (feature `tap`): every payload the SFU forwarded in
    /// the room so far. Release builds do not contain this.
    #[cfg(feature = "tap")]
    pub async fn take_tap(&self, room: &RoomId) -> Vec<Vec<u8>> {
        let key = {
            let reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            reg.rooms.get(room).copied()
        };
        let Some(key) = key else { return Vec::new() };
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::TakeTap { room: key, reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The SFU's counters as of its last step.
    pub fn stats(&self) -> SfuStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn forget(&self, peer: PeerId) {
        let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        reg.peers.remove(&peer);
    }
}

/// How often the SFU's counters are copied out for `/metrics`.
const STATS_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Most datagrams handed to one `sendmmsg` call.
const SEND_BATCH: usize = 256;

/// The driver: datagrams, commands and timers in; datagrams out. Thin on purpose.
async fn drive(
    mut sfu: Sfu,
    socket: UdpSocket,
    mut commands: mpsc::Receiver<Command>,
    plane: MediaPlane,
    inject_loss: f64,
) {
    let mut buf = vec![0u8; 2048];
    let mut batch = Vec::new();
    let mut sender = Sender::default();
    let mut loss = rand::rngs::StdRng::from_entropy();
    let advertised = plane.advertised;
    let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(sfu.poll_timeout()));
    tokio::pin!(timer);
    let mut stats_at = Instant::now();
    loop {
        let mut received_at = None;
        let forwarded_before = sfu.rtp_forwarded();
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                // A failed receive (e.g. ICMP unreachable surfacing) is not fatal.
                if let Ok((n, source)) = received
                    && (inject_loss == 0.0 || loss.r#gen::<f64>() >= inject_loss)
                {
                    let now = Instant::now();
                    received_at = Some(now);
                    sfu.handle_datagram(now, source, advertised, &buf[..n]);
                }
            }
            command = commands.recv() => match command {
                None | Some(Command::Stop) => {
                    // The socket closes before the queue does: whoever waits
                    // for the queue to close can bind the port again.
                    drop(socket);
                    drop(commands);
                    return;
                }
                Some(command) => handle_command(&mut sfu, command),
            },
            () = &mut timer => sfu.handle_timeout(Instant::now()),
        }
        batch.clear();
        while let Some(t) = sfu.poll_transmit() {
            batch.push(t);
        }
        // The copies a received datagram caused, timed as they leave.
        let timed = received_at.map(|at| Copies {
            since: at,
            left: sfu.rtp_forwarded().saturating_sub(forwarded_before),
        });
        sender.send_all(&socket, &batch, &plane, timed).await;
        for t in batch.drain(..) {
            sfu.recycle(t.contents);
        }
        while let Some(event) = sfu.poll_event() {
            if let SfuEvent::PeerGone { peer, .. } = event {
                plane.forget(peer);
                if plane.gone.send(peer).is_err() {
                    // No session channel is open: nobody to tell.
                }
            }
        }
        // Counters are copied out at most every STATS_EVERY, not per step:
        // the timer below makes sure the last change is published too.
        let now = Instant::now();
        let mut stats_dirty = true;
        if now.saturating_duration_since(stats_at) >= STATS_EVERY {
            stats_at = now;
            stats_dirty = false;
            *plane.stats.lock().unwrap_or_else(|p| p.into_inner()) = sfu.stats();
        }
        let mut next = sfu.poll_timeout();
        if stats_dirty {
            next = next.min(stats_at + STATS_EVERY);
        }
        let deadline = tokio::time::Instant::from_std(next);
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
    }
}

fn handle_command(sfu: &mut Sfu, command: Command) {
    match command {
        Command::Add {
            peer,
            room,
            offer,
            reply,
        } => {
            if reply
                .send(sfu.add_peer(Instant::now(), peer, room, &offer))
                .is_err()
            {
                // The signaling side gave up; the peer times out unused.
                tracing::debug!("media offer answered after its requester left");
            }
        }
        Command::Publish(changes) => {
            for (peer, allowed) in changes {
                // A peer that is already gone has nothing left to allow.
                if let Err(e) = sfu.set_may_publish(peer, allowed) {
                    tracing::debug!(error = %e, "publish right not applied");
                }
            }
        }
        Command::Remove { peer } => {
            // Removing a peer that timed out meanwhile is not an error.
            if let Err(e) = sfu.remove_peer(peer) {
                tracing::debug!(error = %e, "media peer already gone");
            }
        }
        // Handled by the driver loop.
        Command::Stop => {}
        #[cfg(feature = "tap")]
        Command::TakeTap { room, reply } => {
            if reply
                .send(sfu.take_tap(room).into_iter().map(|r| r.payload).collect())
                .is_err()
            {
                tracing::debug!("tap requester left");
            }
        }
    }
}

/// The forwarded copies of one received datagram, for the latency
/// histogram: each batch that leaves is timed from the datagram's receipt
/// (so the first listeners' copies count the time they really took, and
/// the last ones the whole fan-out).
struct Copies {
    since: Instant,
    /// Copies not timed yet (a batch can also hold STUN and RTCP: at most
    /// this many of its datagrams count).
    left: u64,
}

impl Copies {
    /// `sent` datagrams just left.
    fn left_now(&mut self, plane: &MediaPlane, sent: u64) {
        let n = sent.min(self.left);
        if n > 0 {
            plane.forward_latency.observe(self.since.elapsed(), n);
            self.left -= n;
        }
    }
}

/// Sends a step's datagrams: with `sendmmsg` in batches where the platform
/// has it (one system call for a speaker's packet to many listeners), else
/// one by one. UDP is lossy anyway: a failed send is a lost packet. Keeps
/// its address list between steps; a batch of up to [`SEND_BATCH`]
/// datagrams allocates its message headers and slice list (nix's headers
/// hold raw pointers, so they cannot live across the driver's awaits).
#[derive(Default)]
struct Sender {
    #[cfg(target_os = "linux")]
    addrs: Vec<Option<nix::sys::socket::SockaddrStorage>>,
}

impl Sender {
    async fn send_all(
        &mut self,
        socket: &UdpSocket,
        batch: &[sotto_sfu::Transmit],
        plane: &MediaPlane,
        mut timed: Option<Copies>,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut rest = batch;
        #[cfg(target_os = "linux")]
        while rest.len() > 1 {
            let chunk = &rest[..rest.len().min(SEND_BATCH)];
            match self.sendmmsg(socket, chunk) {
                Ok(0) | Err(_) => break,
                Ok(sent) => {
                    plane.sent_batched.fetch_add(sent as u64, Relaxed);
                    if let Some(copies) = &mut timed {
                        copies.left_now(plane, sent as u64);
                    }
                    rest = &rest[sent..];
                }
            }
        }
        let mut failed = 0u64;
        for t in rest {
            if socket.send_to(&t.contents, t.destination).await.is_err() {
                failed += 1;
            }
        }
        if let Some(copies) = &mut timed {
            copies.left_now(plane, u64::MAX);
        }
        plane.sent_single.fetch_add(rest.len() as u64, Relaxed);
        if failed > 0 {
            tracing::debug!(failed, "datagrams not sent");
        }
    }

    #[cfg(target_os = "linux")]
    fn sendmmsg(
        &mut self,
        socket: &UdpSocket,
        batch: &[sotto_sfu::Transmit],
    ) -> std::io::Result<usize> {
        use std::io::IoSlice;
        use std::os::fd::AsRawFd as _;

        use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};

        self.addrs.clear();
        self.addrs.extend(
            batch
                .iter()
                .map(|t| Some(SockaddrStorage::from(t.destination))),
        );
        let slices: Vec<[IoSlice<'_>; 1]> =
            batch.iter().map(|t| [IoSlice::new(&t.contents)]).collect();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(batch.len(), None);
        let no_cmsgs: [ControlMessage<'_>; 0] = [];
        let addrs = &self.addrs;
        socket.try_io(tokio::io::Interest::WRITABLE, || {
            sendmmsg(
                socket.as_raw_fd(),
                &mut headers,
                &slices,
                addrs,
                no_cmsgs,
                MsgFlags::empty(),
            )
            .map(|sent| sent.count())
            .map_err(std::io::Error::from)
        })
    }
}

/// The member a room change is about.
fn changed_user(change: &MemberChange) -> &UserId {
    match change {
        MemberChange::Left { user_id } | MemberChange::Set { user_id, .. } => user_id,
        MemberChange::Put { member, .. } => &member.user_id,
    }
}
