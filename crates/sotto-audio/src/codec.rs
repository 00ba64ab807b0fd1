//! Opus at 48 kHz mono in 20 ms frames: an encoder with in-band FEC and DTX,
//! and a decoder that turns every tick into exactly one frame (decoded,
//! rebuilt from the next packet's FEC, or concealed).
//!
//! The codec is `ropus`, a Rust port of libopus's fixed-point build (its
//! authors test it bit-exact against the C reference). It needs no C
//! toolchain or cmake and keeps libopus's in-band FEC, DTX and concealment.
//! Its packets are standard Opus: C libopus decodes them as well as its own
//! packets, and it decodes C libopus's, so a browser's Opus interoperates.

use crate::FRAME_SAMPLES;
use crate::SAMPLE_RATE;
use crate::jitter::Playout;

/// Largest Opus packet for one frame (RFC 6716 §3.4: 1275 bytes).
pub const MAX_PACKET_BYTES: usize = 1275;

/// Longest duration one Opus packet may carry: 120 ms at 48 kHz.
const MAX_PACKET_SAMPLES: usize = 5_760;

/// Why an Opus encoder or decoder could not be made or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A setting is out of range (API misuse).
    #[error("invalid encoder setting: {0}")]
    InvalidConfig(&'static str),
    /// The codec refused to create the encoder or decoder
    /// ([`ropus::EncoderBuildError`] or [`ropus::DecoderInitError`]).
    #[error("creating the Opus codec failed: {0}")]
    Init(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The codec refused a setting it should accept (a bug here or in it).
    #[error("setting {setting} on the Opus encoder failed: {source}")]
    Setting {
        /// Which setting.
        setting: &'static str,
        /// What the codec said.
        #[source]
        source: ropus::EncodeError,
    },
    /// Encoding a frame failed (a bug: a frame is always 960 samples).
    #[error("Opus encoding failed: {0}")]
    Encode(#[source] ropus::EncodeError),
}

/// Settings for [`OpusEncoder`]; [`Default`] is the sotto voice profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Target bitrate in bits per second (6,000–510,000). Default 32,000.
    pub bitrate_bps: i32,
    /// In-band forward error correction (LBRR). Default on.
    pub inband_fec: bool,
    /// Expected packet loss in percent (0–100); tunes how much FEC is sent.
    /// Default 10.
    pub expected_loss_percent: u8,
    /// Discontinuous transmission: in silence, only a 1–2 byte packet every
    /// 400 ms is worth sending (see [`EncodedPacket::is_dtx`]). Default on.
    pub dtx: bool,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            bitrate_bps: 32_000,
            inband_fec: true,
            expected_loss_percent: 10,
            dtx: true,
        }
    }
}

/// One encoded 20 ms frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPacket(Vec<u8>);

impl EncodedPacket {
    /// A DTX packet (1–2 bytes): the encoder judged the frame silent. A sender
    /// may skip it; the receiver conceals the gap.
    pub fn is_dtx(&self) -> bool {
        self.0.len() <= 2
    }

    /// The packet bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The packet bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl std::ops::Deref for EncodedPacket {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Opus encoder: 48 kHz, mono, 20 ms frames, VOIP application.
pub struct OpusEncoder {
    inner: ropus::Encoder,
    config: EncoderConfig,
    out: Box<[u8; MAX_PACKET_BYTES]>,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// Creates an encoder with the given settings.
    pub fn new(config: EncoderConfig) -> Result<Self, CodecError> {
        if !(6_000..=510_000).contains(&config.bitrate_bps) {
            return Err(CodecError::InvalidConfig(
                "bitrate_bps outside 6000..=510000",
            ));
        }
        if config.expected_loss_percent > 100 {
            return Err(CodecError::InvalidConfig("expected_loss_percent above 100"));
        }
        let mut inner =
            ropus::Encoder::builder(SAMPLE_RATE, ropus::Channels::Mono, ropus::Application::Voip)
                .build()
                .map_err(|e| CodecError::Init(Box::new(e)))?;
        let set = |setting: &'static str| move |source| CodecError::Setting { setting, source };
        // Checked above: 6,000..=510,000 fits a u32.
        let bitrate = config.bitrate_bps.unsigned_abs();
        inner
            .set_bitrate(ropus::Bitrate::Bits(bitrate))
            .map_err(set("bitrate"))?;
        inner
            .set_inband_fec(if config.inband_fec {
                ropus::InbandFec::Enabled
            } else {
                ropus::InbandFec::Disabled
            })
            .map_err(set("inband_fec"))?;
        inner
            .set_packet_loss_perc(config.expected_loss_percent)
            .map_err(set("packet_loss_perc"))?;
        inner.set_dtx(config.dtx).map_err(set("dtx"))?;
        inner
            .set_signal(ropus::Signal::Voice)
            .map_err(set("signal"))?;
        Ok(OpusEncoder {
            inner,
            config,
            out: Box::new([0; MAX_PACKET_BYTES]),
        })
    }

    /// The settings this encoder was made with.
    pub fn config(&self) -> EncoderConfig {
        self.config
    }

    /// Encodes one 20 ms frame.
    pub fn encode(&mut self, frame: &[f32; FRAME_SAMPLES]) -> Result<EncodedPacket, CodecError> {
        let len = self
            .inner
            .encode_float(frame, &mut self.out[..])
            .map_err(CodecError::Encode)?;
        Ok(EncodedPacket(self.out[..len].to_vec()))
    }

    /// Encodes a whole signal frame by frame, zero-padding the last frame.
    pub fn encode_all(&mut self, samples: &[f32]) -> Result<Vec<EncodedPacket>, CodecError> {
        let mut packets = Vec::with_capacity(samples.len().div_ceil(FRAME_SAMPLES));
        for chunk in samples.chunks(FRAME_SAMPLES) {
            let mut frame = [0.0f32; FRAME_SAMPLES];
            frame[..chunk.len()].copy_from_slice(chunk);
            packets.push(self.encode(&frame)?);
        }
        Ok(packets)
    }
}

/// What the decoder has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecoderStats {
    /// Packets decoded normally.
    pub decoded: u64,
    /// Lost frames concealed (PLC), including those after invalid packets.
    pub concealed: u64,
    /// Lost frames rebuilt from the next packet's in-band FEC. The decoder
    /// falls back to concealment when that packet carries no FEC data.
    pub fec: u64,
    /// Packets that were not one valid 20 ms Opus frame (garbage, ciphertext,
    /// another frame size); each was concealed instead.
    pub invalid: u64,
}

/// Opus decoder: 48 kHz mono, one 960-sample frame per call, never fails.
pub struct OpusDecoder {
    inner: ropus::Decoder,
    scratch: Vec<f32>,
    stats: DecoderStats,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// Creates a decoder.
    pub fn new() -> Result<Self, CodecError> {
        let inner = ropus::Decoder::new(SAMPLE_RATE, ropus::Channels::Mono)
            .map_err(|e| CodecError::Init(Box::new(e)))?;
        Ok(OpusDecoder {
            inner,
            scratch: vec![0.0; MAX_PACKET_SAMPLES],
            stats: DecoderStats::default(),
        })
    }

    /// Counters since creation.
    pub fn stats(&self) -> DecoderStats {
        self.stats
    }

    /// Decodes one packet, or conceals a lost one (`None` or an empty slice).
    ///
    /// A packet that is not a valid 20 ms Opus frame is counted in
    /// [`DecoderStats::invalid`] and concealed: any bytes are safe here.
    pub fn decode(&mut self, packet: Option<&[u8]>) -> [f32; FRAME_SAMPLES] {
        let packet = match packet {
            Some(p) if !p.is_empty() => p,
            _ => return self.conceal(),
        };
        match self
            .inner
            .decode_float(packet, &mut self.scratch, ropus::DecodeMode::Normal)
        {
            Ok(FRAME_SAMPLES) => {
                self.stats.decoded += 1;
                self.take_frame()
            }
            _ => {
                self.stats.invalid += 1;
                self.conceal()
            }
        }
    }

    /// Rebuilds the frame before `next_packet` from its in-band FEC data.
    ///
    /// Call it for a lost frame when the following packet has arrived, then
    /// decode `next_packet` itself on the next tick as usual.
    pub fn decode_fec(&mut self, next_packet: &[u8]) -> [f32; FRAME_SAMPLES] {
        if next_packet.is_empty() {
            return self.conceal();
        }
        match self.inner.decode_float(
            next_packet,
            &mut self.scratch[..FRAME_SAMPLES],
            ropus::DecodeMode::Fec,
        ) {
            Ok(FRAME_SAMPLES) => {
                self.stats.fec += 1;
                self.take_frame()
            }
            _ => {
                self.stats.invalid += 1;
                self.conceal()
            }
        }
    }

    /// Turns one jitter-buffer tick into audio: decode, FEC, concealment, or
    /// silence while the buffer is idle.
    pub fn play(&mut self, playout: &Playout) -> [f32; FRAME_SAMPLES] {
        match playout {
            Playout::Frame { payload, .. } => self.decode(Some(payload)),
            Playout::Lost {
                next: Some(next), ..
            } => self.decode_fec(next),
            Playout::Lost { next: None, .. } => self.decode(None),
            Playout::Idle => [0.0; FRAME_SAMPLES],
        }
    }

    fn conceal(&mut self) -> [f32; FRAME_SAMPLES] {
        self.stats.concealed += 1;
        match self.inner.decode_float(
            &[],
            &mut self.scratch[..FRAME_SAMPLES],
            ropus::DecodeMode::Normal,
        ) {
            Ok(FRAME_SAMPLES) => self.take_frame(),
            _ => [0.0; FRAME_SAMPLES],
        }
    }

    fn take_frame(&self) -> [f32; FRAME_SAMPLES] {
        let mut frame = [0.0; FRAME_SAMPLES];
        for (out, &x) in frame.iter_mut().zip(&self.scratch) {
            *out = if x.is_finite() {
                x.clamp(-1.0, 1.0)
            } else {
                0.0
            };
        }
        frame
    }
}
