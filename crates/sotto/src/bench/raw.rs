//! `sotto bench raw`: the limit harness. One thread does only what an SFU
//! must do per forwarded packet: receive a speaker's SRTP packet and open
//! it once, then for each listener rewrite the RTP header, seal it with
//! that listener's key (SRTP AEAD-AES-256-GCM, RFC 7714, with aws-lc as
//! str0m does: str0m peers negotiate that profile) and send it, in
//! `sendmmsg` batches, to N ordinary UDP sockets. No ICE, DTLS, RTCP,
//! timers or bookkeeping: the floor under any SFU on this machine.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use clap::Args;

use super::speaker::{FRAME_BYTES, FRAMES_PER_SECOND};

#[derive(Args, Clone, Debug)]
pub struct RawArgs {
    /// Receiving UDP sockets.
    #[arg(long, default_value_t = 100)]
    pub listeners: usize,
    /// Speakers, 50 packets/s each.
    #[arg(long, default_value_t = 1)]
    pub speakers: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

/// What one raw run measured.
#[derive(Clone, Debug)]
pub struct RawReport {
    pub forwarded: u64,
    pub expected: u64,
    pub received: u64,
    pub wall_seconds: f64,
    /// CPU time of the forwarding thread (utime + stime).
    pub cpu_seconds: f64,
}

impl RawReport {
    pub fn cpu_per_packet(&self) -> f64 {
        self.cpu_seconds / self.forwarded.max(1) as f64
    }
    pub fn loss(&self) -> f64 {
        1.0 - self.received as f64 / self.expected.max(1) as f64
    }
}

/// SRTP payload: SFrame ciphertext of an 80-byte frame (compact suite: ≤ 8 bytes more).
const PAYLOAD_BYTES: usize = FRAME_BYTES + 7;
/// RTP header with the one-byte RFC 6464 audio-level extension, as str0m writes it.
const HEADER_BYTES: usize = 12 + 8;
const TAG_BYTES: usize = 16;
/// `UIO_MAXIOV`: the most messages one `sendmmsg` takes.
const MAX_BATCH: usize = 1024;

struct Egress {
    key: LessSafeKey,
    salt: [u8; 12],
    ssrc: u32,
    seq: u16,
    addr: nix::sys::socket::SockaddrStorage,
    packet: Vec<u8>,
}

/// A random SRTP AEAD key and salt.
fn random_key(rng: &mut impl rand::RngCore) -> ([u8; 32], [u8; 12]) {
    let mut key = [0u8; 32];
    let mut salt = [0u8; 12];
    rng.fill_bytes(&mut key);
    rng.fill_bytes(&mut salt);
    (key, salt)
}

fn aead(key: &[u8; 32]) -> anyhow::Result<LessSafeKey> {
    let key = UnboundKey::new(&AES_256_GCM, key).map_err(|_| anyhow::anyhow!("bad AES key"))?;
    Ok(LessSafeKey::new(key))
}

/// RFC 7714 §8.1: IV = (0x0000 ‖ SSRC ‖ ROC ‖ SEQ) XOR salt (ROC 0 here).
fn nonce(salt: &[u8; 12], ssrc: u32, seq: u16) -> Nonce {
    let mut iv = *salt;
    for (i, b) in ssrc.to_be_bytes().iter().enumerate() {
        iv[2 + i] ^= b;
    }
    for (i, b) in seq.to_be_bytes().iter().enumerate() {
        iv[10 + i] ^= b;
    }
    Nonce::assume_unique_for_key(iv)
}

fn rtp_header(ssrc: u32, seq: u16, timestamp: u32) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[0] = 0x90; // V=2, X=1
    h[1] = 111;
    h[2..4].copy_from_slice(&seq.to_be_bytes());
    h[4..8].copy_from_slice(&timestamp.to_be_bytes());
    h[8..12].copy_from_slice(&ssrc.to_be_bytes());
    h[12..16].copy_from_slice(&[0xbe, 0xde, 0, 1]);
    h[16] = 0x10; // id 1, one byte: audio level
    h[17] = 0x80 | 20;
    h
}

/// Runs the harness for `seconds` and reports.
pub async fn measure(listeners: usize, speakers: usize, seconds: u64) -> anyhow::Result<RawReport> {
    let received = Arc::new(AtomicU64::new(0));
    let (stop_rx, stop) = tokio::sync::watch::channel(false);
    let mut addrs = Vec::with_capacity(listeners);
    let mut tasks = Vec::with_capacity(listeners);
    for _ in 0..listeners {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .context("binding a raw listener socket")?;
        addrs.push(socket.local_addr()?);
        let received = received.clone();
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            loop {
                tokio::select! {
                    biased;
                    _ = stop.changed() => return,
                    r = socket.recv(&mut buf) => if r.is_ok() {
                        received.fetch_add(1, Relaxed);
                    },
                }
            }
        }));
    }
    let forwarder = UdpSocket::bind("127.0.0.1:0").context("binding the raw forwarder")?;
    forwarder.set_read_timeout(Some(Duration::from_millis(50)))?;
    let forwarder_addr = forwarder.local_addr()?;
    let mut rng = rand::thread_rng();
    // The speakers and the forwarder share one ingress key (one SRTP
    // context per speaker in real life; the cost per packet is the same).
    let (ingress_key, ingress_salt) = random_key(&mut rng);
    let mut egress = Vec::with_capacity(listeners);
    for addr in &addrs {
        let (key, salt) = random_key(&mut rng);
        egress.push(Egress {
            key: aead(&key)?,
            salt,
            ssrc: rand::random(),
            seq: rand::random(),
            addr: nix::sys::socket::SockaddrStorage::from(*addr),
            packet: Vec::with_capacity(HEADER_BYTES + PAYLOAD_BYTES + TAG_BYTES),
        });
    }
    let running = Arc::new(AtomicBool::new(true));
    let forwarding = {
        let running = running.clone();
        let ingress = (aead(&ingress_key)?, ingress_salt);
        std::thread::spawn(move || forward(forwarder, ingress, egress, running))
    };
    let sent = Arc::new(AtomicU64::new(0));
    let speaking = Arc::new(AtomicBool::new(true));
    let speaker_thread = {
        let sent = sent.clone();
        let speaking = speaking.clone();
        let ingress = (aead(&ingress_key)?, ingress_salt);
        std::thread::spawn(move || speak(forwarder_addr, speakers, ingress, sent, speaking))
    };
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    speaking.store(false, Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.store(false, Relaxed);
    let forwarded = forwarding
        .join()
        .map_err(|_| anyhow::anyhow!("the raw forwarder panicked"))??;
    speaker_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the raw speaker panicked"))??;
    stop_rx.send(true).context("stopping raw listeners")?;
    for t in tasks {
        t.await.context("a raw listener failed")?;
    }
    let sent = sent.load(Relaxed);
    Ok(RawReport {
        forwarded: forwarded.packets,
        expected: sent * listeners as u64,
        received: received.load(Relaxed),
        wall_seconds: forwarded.wall_seconds,
        cpu_seconds: forwarded.cpu_seconds,
    })
}

struct Forwarded {
    packets: u64,
    wall_seconds: f64,
    cpu_seconds: f64,
}

/// The forwarding loop; its thread's CPU time is the figure.
fn forward(
    socket: UdpSocket,
    (ingress, ingress_salt): (LessSafeKey, [u8; 12]),
    mut egress: Vec<Egress>,
    running: Arc<AtomicBool>,
) -> anyhow::Result<Forwarded> {
    use std::io::IoSlice;
    use std::os::fd::AsRawFd as _;

    use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};

    let cpu_start = super::probe::thread_cpu_seconds_self()?;
    let started = Instant::now();
    let mut headers =
        MultiHeaders::<SockaddrStorage>::preallocate(MAX_BATCH.min(egress.len().max(1)), None);
    let addrs: Vec<Option<SockaddrStorage>> = egress.iter().map(|e| Some(e.addr)).collect();
    let no_cmsgs: [ControlMessage<'_>; 0] = [];
    let mut buf = [0u8; 2048];
    let mut packets = 0u64;
    while running.load(Relaxed) {
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e).context("raw forwarder receive"),
        };
        if n < HEADER_BYTES + TAG_BYTES {
            continue;
        }
        // SRTP-open the speaker's packet once.
        let (header, body) = buf[..n].split_at_mut(HEADER_BYTES);
        let ssrc = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        let seq = u16::from_be_bytes([header[2], header[3]]);
        let timestamp = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let Ok(plain) = ingress.open_in_place(
            nonce(&ingress_salt, ssrc, seq),
            Aad::from(&header[..]),
            body,
        ) else {
            continue;
        };
        let plain: &[u8] = plain;
        // Per listener: new header, seal, queue.
        for e in egress.iter_mut() {
            e.seq = e.seq.wrapping_add(1);
            let h = rtp_header(e.ssrc, e.seq, timestamp);
            e.packet.clear();
            e.packet.extend_from_slice(&h);
            e.packet.extend_from_slice(plain);
            let (aad, payload) = e.packet.split_at_mut(HEADER_BYTES);
            let tag = e
                .key
                .seal_in_place_separate_tag(
                    nonce(&e.salt, e.ssrc, e.seq),
                    Aad::from(&aad[..]),
                    payload,
                )
                .map_err(|_| anyhow::anyhow!("seal failed"))?;
            e.packet.extend_from_slice(tag.as_ref());
        }
        let mut start = 0;
        while start < egress.len() {
            let end = (start + MAX_BATCH).min(egress.len());
            let slices: Vec<[IoSlice<'_>; 1]> = egress[start..end]
                .iter()
                .map(|e| [IoSlice::new(&e.packet)])
                .collect();
            match sendmmsg(
                socket.as_raw_fd(),
                &mut headers,
                &slices,
                &addrs[start..end],
                no_cmsgs,
                MsgFlags::empty(),
            ) {
                Ok(sent) => {
                    let sent = sent.count();
                    packets += sent as u64;
                    start += sent.max(1);
                }
                Err(_) => start = end,
            }
        }
    }
    Ok(Forwarded {
        packets,
        wall_seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: super::probe::thread_cpu_seconds_self()? - cpu_start,
    })
}

/// `speakers` streams of 50 SRTP packets/s to the forwarder, until `speaking` turns off.
fn speak(
    to: SocketAddr,
    speakers: usize,
    (key, salt): (LessSafeKey, [u8; 12]),
    sent: Arc<AtomicU64>,
    speaking: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0").context("binding a raw speaker")?;
    let period = Duration::from_millis(1000 / FRAMES_PER_SECOND);
    let mut next = Instant::now();
    let mut seq: u16 = 0;
    let mut timestamp: u32 = 0;
    let mut packet = Vec::with_capacity(HEADER_BYTES + PAYLOAD_BYTES + TAG_BYTES);
    while speaking.load(Relaxed) {
        for s in 0..speakers {
            let ssrc = 1000 + s as u32;
            packet.clear();
            packet.extend_from_slice(&rtp_header(ssrc, seq, timestamp));
            packet.extend_from_slice(&[0x5a; PAYLOAD_BYTES]);
            let (aad, payload) = packet.split_at_mut(HEADER_BYTES);
            let tag = key
                .seal_in_place_separate_tag(nonce(&salt, ssrc, seq), Aad::from(&aad[..]), payload)
                .map_err(|_| anyhow::anyhow!("seal failed"))?;
            packet.extend_from_slice(tag.as_ref());
            if socket.send_to(&packet, to).is_ok() {
                sent.fetch_add(1, Relaxed);
            }
        }
        seq = seq.wrapping_add(1);
        timestamp = timestamp.wrapping_add(960);
        next += period;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(())
}
