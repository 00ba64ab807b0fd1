//! The sotto audio pipeline, used by the native client (`sotto speak` /
//! `sotto listen`) and by the end-to-end tests.
//!
//! Everything here works on whole buffers or single 20 ms frames. Nothing
//! reads a clock, opens a socket or spawns a thread; the only IO is reading
//! and writing WAV files, and even that has an in-memory twin
//! ([`read_wav_bytes`]).
//!
//! # The path of a frame
//! ```text
//! speaker: WAV file ─ read_wav ─▶ mono f32 @ 48 kHz ─ OpusEncoder (960 samples)
//!          ─▶ Opus packet ─▶ (SFrame, RTP: other crates) ─▶ network
//! listener: network ─▶ (RTP, SFrame) ─▶ JitterBuffer::push(seq, packet)
//!          every 20 ms: JitterBuffer::pop ─▶ Playout ─▶ OpusDecoder ─▶ 960 samples
//! ```
//! [`Playout::Lost`] carries the next packet when it has already arrived, so
//! the decoder can rebuild the lost frame from that packet's in-band FEC
//! ([`OpusDecoder::decode_fec`]); otherwise it conceals the loss (PLC).
//!
//! # Invariants
//! - Nothing a peer sends can panic this crate: any byte string given to
//!   [`OpusDecoder::decode`] or [`read_wav_bytes`] yields audio or a typed
//!   error. A packet the decoder cannot use is concealed and counted.
//! - The decoder always yields exactly [`FRAME_SAMPLES`] samples per call, so
//!   the output timeline never drifts from the tick count.
//! - All audio is mono `f32` in `[-1, 1]` at [`SAMPLE_RATE`].
//!
//! # Checking that audio survived
//! [`aligned_correlation`] finds the delay between what went in and what came
//! out and returns their normalized cross-correlation there. The end-to-end
//! tests use it both ways: ≥ 0.9 for a listener that decrypted the audio, and
//! ≤ 0.1 for what the SFU forwarded, decoded as if it were Opus (proof that the
//! server carried only ciphertext). [`speech_like`] makes a deterministic test
//! signal that behaves like speech in Opus (a pure tone would not).
//!
//! ```
//! use sotto_audio::*;
//!
//! let input = speech_like(1, 1.0); // 1 s, 48 kHz mono
//! let mut encoder = OpusEncoder::new(EncoderConfig::default())?;
//! let mut decoder = OpusDecoder::new()?;
//! let mut jitter = JitterBuffer::new(3);
//! let mut output = Vec::new();
//! for (seq, packet) in encoder.encode_all(&input)?.iter().enumerate() {
//!     jitter.push(seq as u16, packet); // as packets arrive
//!     output.extend(decoder.play(&jitter.pop())); // every 20 ms
//! }
//! let (lag, ncc) = aligned_correlation(&input, &output, SAMPLE_RATE as usize);
//! assert!(lag > 0 && ncc > 0.8);
//! # Ok::<(), CodecError>(())
//! ```

mod codec;
mod correlation;
mod jitter;
mod level;
mod resample;
mod speech;
mod wav;

pub use codec::{
    CodecError, DecoderStats, EncodedPacket, EncoderConfig, MAX_PACKET_BYTES, OpusDecoder,
    OpusEncoder,
};
pub use correlation::aligned_correlation;
pub use jitter::{IDLE_AFTER, JitterBuffer, JitterStats, MAX_JUMP, Playout, PushOutcome};
pub use level::{LevelMeter, SILENCE_DB, rfc6464_level, rms_dbov};
pub use resample::{resample, resample_to_48k};
pub use speech::{MAX_SPEECH_SECONDS, speech_like, speech_like_at};
pub use wav::{
    MAX_INPUT_CHANNELS, MAX_INPUT_RATE, MAX_INPUT_SECONDS, MIN_INPUT_RATE, WavError, read_wav,
    read_wav_bytes, write_wav, write_wav_bytes,
};

/// The one sample rate of the pipeline, in Hz (Opus's native rate).
pub const SAMPLE_RATE: u32 = 48_000;

/// Samples in one 20 ms frame at [`SAMPLE_RATE`].
pub const FRAME_SAMPLES: usize = 960;

/// Duration of one frame in milliseconds: the jitter buffer's tick.
pub const FRAME_MS: u32 = 20;
