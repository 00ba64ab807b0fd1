//! The media plane's driver: one UDP socket and a tokio task around the
//! sans-IO SFU core (`sotto-sfu`), plus the map between control-plane
//! identities and the random ids the SFU sees.
//!
//! The SFU never learns who anyone is: each media session gets a random
//! [`PeerId`], each room a random [`RoomKey`], kept only in this process's
//! memory. Whether a peer may publish follows the room's state: on stage and
//! not muted. Every room change re-applies that.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::{Rng as _, SeedableRng as _};
use sotto_proto::room::RoomView;
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
    Publish {
        peer: PeerId,
        allowed: bool,
    },
    Remove {
        peer: PeerId,
    },
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
}

#[derive(Default, Debug)]
struct Registry {
    peers: HashMap<PeerId, Session>,
    rooms: HashMap<RoomId, RoomKey>,
}

/// A handle on the running media plane.
#[derive(Clone, Debug)]
pub struct MediaPlane {
    commands: mpsc::Sender<Command>,
    registry: Arc<Mutex<Registry>>,
    stats: Arc<Mutex<SfuStats>>,
    /// Datagrams sent by `sendmmsg` batches, and one by one.
    pub sent_batched: Arc<std::sync::atomic::AtomicU64>,
    pub sent_single: Arc<std::sync::atomic::AtomicU64>,
    /// The address the socket is bound to.
    pub bound: SocketAddr,
    /// The address put in SDP answers (the bound one, or `--public-ip`).
    pub advertised: SocketAddr,
}

/// Knobs of the driver.
#[derive(Clone, Debug)]
pub struct MediaConfig {
    pub bind: SocketAddr,
    pub public_ip: Option<IpAddr>,
    /// Fraction of incoming datagrams to drop, for loss-resilience tests.
    /// Always 0 outside tests.
    pub inject_loss: f64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_ip: None,
            inject_loss: 0.0,
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
            ..SfuConfig::default()
        };
        let sfu = Sfu::new(Instant::now(), sfu_config, advertised)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let (commands, rx) = mpsc::channel(256);
        let plane = MediaPlane {
            commands,
            registry: Arc::default(),
            stats: Arc::default(),
            sent_batched: Arc::default(),
            sent_single: Arc::default(),
            bound,
            advertised,
        };
        tokio::spawn(drive(sfu, socket, rx, plane.clone(), config.inject_loss));
        Ok(plane)
    }

    /// Adds `user`'s media session to `room` and answers the offer.
    pub async fn join(
        &self,
        room: &RoomId,
        user: &UserId,
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
    pub async fn leave(&self, peer: PeerId) {
        self.forget(peer);
        let _ = self.commands.send(Command::Remove { peer }).await;
    }

    /// Re-applies who may publish after a change of the room, and ends the
    /// media sessions of people no longer in it.
    pub async fn apply(&self, view: &RoomView) {
        let peers: Vec<(PeerId, UserId)> = {
            let reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            reg.peers
                .iter()
                .filter(|(_, s)| s.room == view.id)
                .map(|(p, s)| (*p, s.user.clone()))
                .collect()
        };
        for (peer, user) in peers {
            match view.members.iter().find(|m| m.user_id == user) {
                Some(m) if !view.ended => {
                    let allowed = m.role.on_stage() && !m.muted;
                    let _ = self.commands.send(Command::Publish { peer, allowed }).await;
                }
                _ => self.leave(peer).await,
            }
        }
        if view.ended {
            let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            reg.rooms.remove(&view.id);
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
    let mut loss = rand::rngs::StdRng::from_entropy();
    let advertised = plane.advertised;
    loop {
        let deadline = tokio::time::Instant::from_std(sfu.poll_timeout());
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                // A failed receive (e.g. ICMP unreachable surfacing) is not fatal.
                if let Ok((n, source)) = received
                    && (inject_loss == 0.0 || loss.r#gen::<f64>() >= inject_loss)
                {
                    sfu.handle_datagram(Instant::now(), source, advertised, &buf[..n]);
                }
            }
            command = commands.recv() => match command {
                None => return,
                Some(Command::Add { peer, room, offer, reply }) => {
                    let _ = reply.send(sfu.add_peer(Instant::now(), peer, room, &offer));
                }
                Some(Command::Publish { peer, allowed }) => {
                    let _ = sfu.set_may_publish(peer, allowed);
                }
                Some(Command::Remove { peer }) => {
                    let _ = sfu.remove_peer(peer);
                }
                #[cfg(feature = "tap")]
                Some(Command::TakeTap { room, reply }) => {
                    let _ = reply.send(sfu.take_tap(room).into_iter().map(|r| r.payload).collect());
                }
            },
            _ = tokio::time::sleep_until(deadline) => sfu.handle_timeout(Instant::now()),
        }
        batch.clear();
        while let Some(t) = sfu.poll_transmit() {
            batch.push(t);
        }
        send_all(&socket, &batch, &plane).await;
        while let Some(event) = sfu.poll_event() {
            if let SfuEvent::PeerGone { peer, .. } = event {
                plane.forget(peer);
            }
        }
        *plane.stats.lock().unwrap_or_else(|p| p.into_inner()) = sfu.stats();
    }
}

/// Sends a step's datagrams: with `sendmmsg` in batches where the platform
/// has it (one system call for a speaker's packet to many listeners), else
/// one by one. UDP is lossy anyway: a failed send is a lost packet.
async fn send_all(socket: &UdpSocket, batch: &[sotto_sfu::Transmit], plane: &MediaPlane) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut rest = batch;
    #[cfg(target_os = "linux")]
    while rest.len() > 1 {
        match sendmmsg_batch(socket, &rest[..rest.len().min(64)]) {
            Ok(0) | Err(_) => break,
            Ok(sent) => {
                plane.sent_batched.fetch_add(sent as u64, Relaxed);
                rest = &rest[sent..];
            }
        }
    }
    for t in rest {
        let _ = socket.send_to(&t.contents, t.destination).await;
    }
    plane.sent_single.fetch_add(rest.len() as u64, Relaxed);
}

#[cfg(target_os = "linux")]
fn sendmmsg_batch(socket: &UdpSocket, batch: &[sotto_sfu::Transmit]) -> std::io::Result<usize> {
    use std::io::IoSlice;
    use std::os::fd::AsRawFd as _;

    use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};

    let addrs: Vec<Option<SockaddrStorage>> = batch
        .iter()
        .map(|t| Some(SockaddrStorage::from(t.destination)))
        .collect();
    let slices: Vec<[IoSlice<'_>; 1]> = batch.iter().map(|t| [IoSlice::new(&t.contents)]).collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(batch.len(), None);
    let no_cmsgs: [ControlMessage<'_>; 0] = [];
    socket.try_io(tokio::io::Interest::WRITABLE, || {
        sendmmsg(
            socket.as_raw_fd(),
            &mut headers,
            &slices,
            &addrs,
            no_cmsgs,
            MsgFlags::empty(),
        )
        .map(|sent| sent.count())
        .map_err(std::io::Error::from)
    })
}
