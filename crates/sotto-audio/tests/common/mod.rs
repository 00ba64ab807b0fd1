//! Helpers shared by the integration tests.
#![allow(dead_code)]

use sotto_audio::{EncoderConfig, FRAME_SAMPLES, OpusDecoder, OpusEncoder};

/// SplitMix64: a seeded generator for losses, jitter and keystreams.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    pub fn fill(&mut self, bytes: &mut [u8]) {
        for b in bytes {
            *b = self.next_u64() as u8;
        }
    }
}

/// Encodes `signal` with the default voice settings.
pub fn encode(signal: &[f32]) -> Vec<Vec<u8>> {
    let mut enc = OpusEncoder::new(EncoderConfig::default()).expect("encoder");
    enc.encode_all(signal)
        .expect("encode")
        .into_iter()
        .map(|p| p.into_bytes())
        .collect()
}

/// Decodes every packet in order (no loss).
pub fn decode_all(packets: &[Vec<u8>]) -> Vec<f32> {
    let mut dec = OpusDecoder::new().expect("decoder");
    let mut out = Vec::with_capacity(packets.len() * FRAME_SAMPLES);
    for p in packets {
        out.extend_from_slice(&dec.decode(Some(p)));
    }
    out
}
