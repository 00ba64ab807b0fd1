//! The forwarding fast path: a forwarded packet is SRTP-protected for each
//! listener here, with the listener's own SRTP keys, instead of being
//! written into the listener's str0m `Rtc` and polled out again (str0m's
//! per-`Rtc` send path was most of the SFU's cost per forwarded packet;
//! see BENCHMARKS.md).
//!
//! The keys: each `Rtc` the SFU builds gets a DTLS instance wrapped so that
//! the DTLS-SRTP keying material it exports (RFC 5764) is also handed to
//! the SFU. str0m keeps doing everything else for the peer (ICE, DTLS,
//! RTCP, the microphone's incoming SRTP). From the keying material, the
//! SFU's outgoing RTP session key and salt are derived as RFC 3711 §4.3
//! says (AES-CM PRF, key derivation rate 0), and packets are sealed as RFC
//! 7714 says (AEAD-AES-GCM, in place, with aws-lc: the library under the
//! crypto provider str0m uses).
//! A peer whose DTLS picked a profile the fast path does not do (AES-CM
//! with HMAC-SHA1) keeps str0m's path.
//!
//! The SFU is the only sender on each of its slots' SSRCs, so it owns the
//! rollover counter: the slot rewriter's extended sequence number gives
//! both (RFC 3711 §3.3.1).

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::error::Unspecified;
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
    SrtpProfile,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// RFC 3711 §4.3.2 labels.
const LABEL_RTP_ENCRYPTION: u8 = 0x00;
const LABEL_RTP_SALT: u8 = 0x02;
/// RFC 7714: the AEAD salt and tag.
const GCM_SALT_LEN: usize = 12;
const GCM_TAG_LEN: usize = 16;

/// DTLS-SRTP keying material as one `Rtc`'s DTLS exported it.
#[derive(Clone, Debug)]
pub(crate) struct Exported {
    material: Vec<u8>,
    profile: SrtpProfile,
    /// Whether the SFU was the DTLS client.
    active: bool,
}

/// Where a wrapped DTLS instance puts the keying material it exported.
pub(crate) type KeySlot = Arc<Mutex<Option<Exported>>>;

thread_local! {
    /// The slot for the `Rtc` being built on this thread.
    static BUILDING: RefCell<Option<KeySlot>> = const { RefCell::new(None) };
}

/// The crypto provider every SFU `Rtc` uses: str0m's own, with DTLS
/// instances wrapped to hand over their SRTP keying material.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let base = str0m::crypto::from_feature_flags();
            let tap: &'static TapProvider = Box::leak(Box::new(TapProvider {
                inner: base.dtls_provider,
            }));
            Arc::new(CryptoProvider {
                dtls_provider: tap,
                ..base
            })
        })
        .clone()
}

/// Builds an `Rtc` (with `configure` applied to a builder that has the
/// tapping provider) and returns it with the slot its keys will land in.
pub(crate) fn build_rtc(
    now: Instant,
    configure: impl FnOnce(str0m::RtcConfig) -> str0m::RtcConfig,
) -> (str0m::Rtc, KeySlot) {
    let slot = KeySlot::default();
    BUILDING.with(|b| *b.borrow_mut() = Some(slot.clone()));
    let rtc = configure(str0m::Rtc::builder().set_crypto_provider(provider())).build(now);
    // Taken by the DTLS instance the build made; cleared in any case.
    BUILDING.with(|b| b.borrow_mut().take());
    (rtc, slot)
}

#[derive(Debug)]
struct TapProvider {
    inner: &'static dyn DtlsProvider,
}

impl DtlsProvider for TapProvider {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.inner.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let inner = self.inner.new_dtls(cert, now, dtls_version, mtu)?;
        Ok(match BUILDING.with(|b| b.borrow_mut().take()) {
            Some(slot) => Box::new(Tapped { inner, slot }),
            None => inner,
        })
    }

    fn is_test(&self) -> bool {
        self.inner.is_test()
    }
}

/// A DTLS instance that also hands its exported keying material over.
#[derive(Debug)]
struct Tapped {
    inner: Box<dyn DtlsInstance>,
    slot: KeySlot,
}

impl DtlsInstance for Tapped {
    fn set_active(&mut self, active: bool) {
        self.inner.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.inner.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let out = self.inner.poll_output(buf);
        if let DtlsOutput::KeyingMaterial(km, profile) = &out {
            let exported = Exported {
                material: km.to_vec(),
                profile: *profile,
                active: self.inner.is_active(),
            };
            *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(exported);
        }
        out
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.inner.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.inner.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.inner.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.inner.close()
    }
}

/// The SFU's outgoing SRTP context towards one peer.
pub(crate) struct SrtpOut {
    key: LessSafeKey,
    salt: [u8; GCM_SALT_LEN],
}

impl std::fmt::Debug for SrtpOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpOut").finish_non_exhaustive()
    }
}

impl SrtpOut {
    /// The context for what the SFU sends, from the keying material; `None`
    /// for a profile the fast path does not do (or material of the wrong
    /// size).
    pub(crate) fn new(e: &Exported) -> Option<SrtpOut> {
        let (key_len, algorithm) = match e.profile {
            SrtpProfile::AEAD_AES_128_GCM => (16, &AES_128_GCM),
            SrtpProfile::AEAD_AES_256_GCM => (32, &AES_256_GCM),
            _ => return None,
        };
        if e.material.len() != 2 * (key_len + GCM_SALT_LEN) {
            return None;
        }
        // RFC 5764 §4.2: client key, server key, client salt, server salt.
        // What the SFU sends uses its own side's.
        let (key_at, salt_at) = if e.active {
            (0, 2 * key_len)
        } else {
            (key_len, 2 * key_len + GCM_SALT_LEN)
        };
        let master_key = &e.material[key_at..key_at + key_len];
        let master_salt = &e.material[salt_at..salt_at + GCM_SALT_LEN];
        let mut session_key = [0u8; 32];
        derive(
            master_key,
            master_salt,
            LABEL_RTP_ENCRYPTION,
            &mut session_key[..key_len],
        );
        let mut salt = [0u8; GCM_SALT_LEN];
        derive(master_key, master_salt, LABEL_RTP_SALT, &mut salt);
        let key = UnboundKey::new(algorithm, &session_key[..key_len]).ok()?;
        Some(SrtpOut {
            key: LessSafeKey::new(key),
            salt,
        })
    }

    /// Seals one RTP packet: `header` (authenticated), then `payload`
    /// (encrypted in place) and the tag, into `out`. `ext_seq`: the
    /// extended sequence number (rollover counter above the 16 bits in the
    /// header).
    pub(crate) fn seal(
        &self,
        header: &[u8],
        payload: &[u8],
        ssrc: u32,
        ext_seq: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), Unspecified> {
        // RFC 7714 §8.1: IV = (0x0000 || SSRC || ROC || SEQ) XOR salt.
        let roc = (ext_seq >> 16) as u32;
        let seq = ext_seq as u16;
        let mut iv = [0u8; GCM_SALT_LEN];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..10].copy_from_slice(&roc.to_be_bytes());
        iv[10..12].copy_from_slice(&seq.to_be_bytes());
        for (b, s) in iv.iter_mut().zip(self.salt) {
            *b ^= s;
        }
        out.clear();
        out.reserve(header.len() + payload.len() + GCM_TAG_LEN);
        out.extend_from_slice(header);
        out.extend_from_slice(payload);
        let (aad, body) = out.split_at_mut(header.len());
        let tag = self.key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(&*aad),
            body,
        )?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }
}

/// RFC 3711 §4.3.1 with the AES-CM PRF (§4.3.3) and key derivation rate 0:
/// `x` is the master salt (left-aligned in 112 bits) XOR the label in the
/// key id; the output is the AES keystream from IV = x · 2^16.
fn derive(master_key: &[u8], master_salt: &[u8], label: u8, out: &mut [u8]) {
    let srtp = provider().srtp_provider;
    let mut input = [0u8; 16];
    input[..master_salt.len()].copy_from_slice(master_salt);
    input[7] ^= label;
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        input[14..16].copy_from_slice(&(i as u16).to_be_bytes());
        let mut block = [0u8; 16];
        if master_key.len() == 16 {
            srtp.srtp_aes_128_ecb_round(master_key, &input, &mut block);
        } else {
            srtp.srtp_aes_256_ecb_round(master_key, &input, &mut block);
        }
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

/// The longest header [`rtp_header`] writes: 12 fixed bytes, the 4-byte
/// extension header, the level (2) and a MID of up to 16 bytes (17), padded
/// to a word.
const MAX_HEADER: usize = 12 + 4 + 20;

/// An RTP header built on the stack (one per forwarded copy: no vector
/// pushes, one copy into the datagram).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RtpHeader {
    bytes: [u8; MAX_HEADER],
    len: usize,
}

impl std::ops::Deref for RtpHeader {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// An RTP header (RFC 3550 §5.1) with one-byte header extensions (RFC
/// 8285): the RFC 6464 audio level when `level` is `(extension id, level
/// byte)`, and the m-line's MID (RFC 8843) when `mid` is `(extension id,
/// mid)`: a receiver that has not tied the slot's SSRC to its m-line yet
/// does so from it (str0m's own send path writes it too).
#[allow(clippy::too_many_arguments)]
pub(crate) fn rtp_header(
    pt: u8,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
    level: Option<(u8, u8)>,
    mid: Option<(u8, &[u8])>,
) -> RtpHeader {
    let mid = mid.filter(|(id, m)| (1..=14).contains(id) && (1..=16).contains(&m.len()));
    let level = level.filter(|(id, _)| (1..=14).contains(id));
    let ext = level.is_some() || mid.is_some();
    let mut b = [0u8; MAX_HEADER];
    b[0] = 0x80 | if ext { 0x10 } else { 0 };
    b[1] = u8::from(marker) << 7 | (pt & 0x7f);
    b[2..4].copy_from_slice(&seq.to_be_bytes());
    b[4..8].copy_from_slice(&ts.to_be_bytes());
    b[8..12].copy_from_slice(&ssrc.to_be_bytes());
    if !ext {
        return RtpHeader { bytes: b, len: 12 };
    }
    // 0xBEDE, the length in 32-bit words (filled in below), then each
    // element as id and length-1, its bytes; zero padding to a word (the
    // array is zeroed).
    b[12] = 0xbe;
    b[13] = 0xde;
    let mut at = 16;
    if let Some((id, byte)) = level {
        b[at] = id << 4;
        b[at + 1] = byte;
        at += 2;
    }
    if let Some((id, m)) = mid {
        b[at] = id << 4 | (m.len() as u8 - 1);
        b[at + 1..at + 1 + m.len()].copy_from_slice(m);
        at += 1 + m.len();
    }
    let words = (at - 16).div_ceil(4);
    b[14..16].copy_from_slice(&(words as u16).to_be_bytes());
    RtpHeader {
        bytes: b,
        len: 16 + 4 * words,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3711 Appendix B.3: the AES-CM key derivation test vectors.
    #[test]
    fn key_derivation_matches_rfc_3711_b3() {
        let key = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let mut cipher_key = [0u8; 16];
        derive(&key, &salt, LABEL_RTP_ENCRYPTION, &mut cipher_key);
        assert_eq!(cipher_key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut cipher_salt = [0u8; 14];
        derive(&key, &salt, LABEL_RTP_SALT, &mut cipher_salt);
        assert_eq!(cipher_salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
    }

    #[test]
    fn header_with_and_without_the_audio_level() {
        let h = rtp_header(111, true, 0x1234, 0xdead_beef, 7, None, None);
        assert_eq!(
            &h[..],
            [0x80, 0xef, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 7]
        );
        let h = rtp_header(111, false, 1, 2, 3, Some((1, 0x80 | 30)), None);
        assert_eq!(h.len(), 20);
        assert_eq!(h[0], 0x90);
        assert_eq!(&h[12..], &[0xbe, 0xde, 0, 1, 0x10, 0x9e, 0, 0]);
        // Level and a two-byte MID: 2 + 3 bytes, padded to two words.
        let h = rtp_header(111, false, 1, 2, 3, Some((1, 0x9e)), Some((4, b"1a")));
        assert_eq!(
            &h[12..],
            &[0xbe, 0xde, 0, 2, 0x10, 0x9e, 0x41, b'1', b'a', 0, 0, 0]
        );
        // The longest: level and a 16-byte MID, 19 bytes in 5 words.
        let h = rtp_header(111, false, 1, 2, 3, Some((1, 0x9e)), Some((4, &[b'm'; 16])));
        assert_eq!(h.len(), MAX_HEADER);
        assert_eq!(&h[12..16], &[0xbe, 0xde, 0, 5]);
        assert_eq!(h[18], 0x4f);
        assert_eq!(&h[35..], &[0]);
        // A MID longer than 16 bytes or an id out of 1..=14 is left out.
        let h = rtp_header(
            111,
            false,
            1,
            2,
            3,
            Some((15, 0x9e)),
            Some((4, &[b'm'; 17])),
        );
        assert_eq!(h.len(), 12);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
