//! The load generator's speakers: a full client media connection each,
//! sending SFrame-encrypted Opus-sized frames at 50 per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use sotto_client::media::OutgoingFrame;
use sotto_e2ee::frame::FrameSender;
use tokio::sync::{mpsc, watch};

/// Plaintext bytes per frame: what Opus makes of 20 ms at 32 kbit/s.
pub const FRAME_BYTES: usize = 80;
/// Frames per second and speaker (20 ms frames).
pub const FRAMES_PER_SECOND: u64 = 50;
const FILL: u8 = 0x5a;

/// A frame's plaintext: the speaker, the frame number, then a fixed fill
/// that a listener checks after decrypting.
pub fn plaintext(speaker: u8, n: u32) -> Vec<u8> {
    let mut p = vec![FILL; FRAME_BYTES];
    p[0] = speaker;
    p[1..5].copy_from_slice(&n.to_be_bytes());
    p
}

/// Whether a decrypted frame is one [`plaintext`] made.
pub fn check_plaintext(p: &[u8]) -> bool {
    p.len() == FRAME_BYTES && p[5..].iter().all(|b| *b == FILL)
}

/// Counters and the on/off switch shared with one speaker's task.
#[derive(Debug, Default)]
pub struct SpeakerControl {
    pub sending: AtomicBool,
    /// Frames handed to the media connection.
    pub sent: AtomicU64,
    /// Frames that could not be encrypted or handed over.
    pub failed: AtomicU64,
}

/// Sends one frame every 20 ms while `control.sending` is on, until `stop`.
pub async fn run(
    index: u8,
    mut sframe: FrameSender,
    frames: mpsc::Sender<OutgoingFrame>,
    control: Arc<SpeakerControl>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(Duration::from_millis(1000 / FRAMES_PER_SECOND));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u32 = 0;
    let mut timestamp: u32 = 0;
    loop {
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
            _ = ticker.tick() => {}
        }
        timestamp = timestamp.wrapping_add(960);
        if !control.sending.load(Relaxed) {
            continue;
        }
        let Ok(payload) = sframe.encrypt(&plaintext(index, n)) else {
            control.failed.fetch_add(1, Relaxed);
            continue;
        };
        n = n.wrapping_add(1);
        let frame = OutgoingFrame {
            payload,
            timestamp,
            audio_level: -20,
        };
        if frames.send(frame).await.is_err() {
            control.failed.fetch_add(1, Relaxed);
            return;
        }
        control.sent.fetch_add(1, Relaxed);
    }
}
