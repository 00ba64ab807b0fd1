//! RFC 9605 Appendix C known-answer tests for the suites sotto uses
//! (0x0003 compact audio, 0x0004 AES-128-GCM; 0x0001/0x0002 as well since the
//! backend is shared), plus header encodings and the overhead target.

use sframe::{
    CipherSuite,
    frame::{EncryptedFrame, MediaFrame, SingleUseCounter},
    key::{DecryptionKey, EncryptionKey},
};
use sotto_e2ee::frame::{FrameSender, KeyRing, Suite, parse_header};

struct Vector {
    suite: CipherSuite,
    ct: &'static str,
}

// RFC 9605 Appendix C.5: kid 0x123, ctr 0x4567, base_key 00..0f,
// metadata "IETF SFrame WG", plaintext "draft-ietf-sframe-enc".
const KID: u64 = 0x123;
const CTR: u64 = 0x4567;
const BASE_KEY: &str = "000102030405060708090a0b0c0d0e0f";
const METADATA: &str = "4945544620534672616d65205747";
const PT: &str = "64726166742d696574662d736672616d652d656e63";

fn vectors() -> Vec<Vector> {
    vec![
        Vector {
            suite: CipherSuite::AesCtr128HmacSha256_80,
            ct: "9901234567449408b6f490086165b9d6f62b24ae1a59a56486b4ae8ed036b88912e24f11",
        },
        Vector {
            suite: CipherSuite::AesCtr128HmacSha256_64,
            ct: "99012345673f31438db4d09434e43afa0f8a2f00867a2be085046a9f5cb4f101d607",
        },
        Vector {
            suite: CipherSuite::AesCtr128HmacSha256_32,
            ct: "990123456717fc8af28a5a695afcfc6c8df6358a17e26b2fcb3bae32e443",
        },
        Vector {
            suite: CipherSuite::AesGcm128Sha256,
            ct: "9901234567b7412c2513a1b66dbb48841bbaf17f598751176ad847681a69c6d0b091c07018ce4adb34eb",
        },
    ]
}

#[test]
fn rfc9605_encrypt_decrypt_vectors() {
    let base = hex::decode(BASE_KEY).unwrap();
    let meta = hex::decode(METADATA).unwrap();
    let pt = hex::decode(PT).unwrap();
    for v in vectors() {
        let ek = EncryptionKey::derive_from(v.suite, KID, &base).unwrap();
        let mut ctr = SingleUseCounter::new(CTR);
        let media = MediaFrame::try_with_meta_data(&mut ctr, &pt, &meta).unwrap();
        let enc = media.encrypt(&ek).unwrap();
        assert_eq!(hex::encode(enc.sframe_cipher_text()), v.ct, "{:?}", v.suite);

        let dk = DecryptionKey::derive_from(v.suite, KID, &base).unwrap();
        let ct = hex::decode(v.ct).unwrap();
        let frame = EncryptedFrame::try_with_meta_data(&ct, &meta).unwrap();
        assert_eq!(frame.decrypt(&dk).unwrap().payload(), pt.as_slice());
        // a flipped bit fails authentication
        let mut bad = ct.clone();
        *bad.last_mut().unwrap() ^= 1;
        let frame = EncryptedFrame::try_with_meta_data(&bad, &meta).unwrap();
        assert!(frame.decrypt(&dk).is_err());
    }
}

#[test]
fn rfc9605_header_vectors() {
    // (kid, ctr, encoding) from RFC 9605 Appendix C.1
    let cases: &[(u64, u64, &str)] = &[
        (0, 0, "00"),
        (0, 1, "01"),
        (0, 255, "08ff"),
        (0, 256, "090100"),
        (0, 65535, "09ffff"),
        (0, 65536, "0a010000"),
        (0, 18446744073709551615, "0fffffffffffffffff"),
        (255, 0, "80ff"),
        (255, 65535, "89ffffff"),
        (256, 0, "900100"),
        (256, 65535, "990100ffff"),
        (65535, 0, "90ffff"),
    ];
    for &(kid, ctr, enc) in cases {
        let bytes = hex::decode(enc).unwrap();
        let (k, c, len) = parse_header(&bytes).unwrap();
        assert_eq!((k, c, len), (kid, ctr, bytes.len()), "{enc}");
        // truncated headers are typed errors
        assert!(parse_header(&bytes[..bytes.len() - 1]).is_err() || bytes.len() == 1);
    }
    assert!(parse_header(&[]).is_err());
}

#[test]
fn compact_suite_overhead_is_at_most_8_bytes() {
    use sotto_e2ee::keys::KeyGeneration;
    let key = sotto_e2ee::keys::test_audience_key(
        KeyGeneration {
            epoch: 3,
            rotation: 1,
        },
        [7u8; 32],
    );
    for (suite, max) in [(Suite::CompactAudio, 8usize), (Suite::Gcm128, 20)] {
        // Leaf 63 is the last leaf whose KID fits in one byte: a stage of 50
        // (leaves 0-49) and up to 14 more leaves of churn.
        let mut s = FrameSender::new(suite, &key, 63).unwrap();
        let mut ring = KeyRing::new(suite, 1000);
        ring.install(key.clone(), 0);
        let payload = [0x55u8; 80];
        // every counter value that fits in 2 bytes: the bound must hold for
        // all of them, not just the first minute
        for i in 0..65_536u32 {
            let f = s.encrypt(&payload).unwrap();
            assert!(
                f.len() - payload.len() <= max,
                "{suite:?} frame {i}: {} bytes overhead",
                f.len() - 80
            );
            if i % 500 == 0 || i == 65_535 {
                assert_eq!(ring.decrypt(0, &f).unwrap(), payload);
            }
        }
        // the bound is exact: frame 65,536 (3-byte counter) costs one more
        // byte, and so does a 65th stage leaf (2-byte KID)
        let f = s.encrypt(&payload).unwrap();
        assert_eq!(f.len() - payload.len(), max + 1, "{suite:?} counter 65,536");
        let mut s64 = FrameSender::new(suite, &key, 64).unwrap();
        let f = s64.encrypt(&payload).unwrap();
        assert_eq!(
            f.len() - payload.len(),
            max - 2 + 1,
            "{suite:?} leaf 64, counter 0"
        );
        // Leaves 31, 32 and 49 (the 50th member) through the 0/1/2-byte
        // counter sizes: exactly what leaf 2 (the first with a one-byte KID)
        // costs, never more than `max`.
        for leaf in [31u32, 32, 49] {
            let mut a = FrameSender::new(suite, &key, leaf).unwrap();
            let mut b = FrameSender::new(suite, &key, 2).unwrap();
            for i in 0..300u32 {
                let (fa, fb) = (a.encrypt(&payload).unwrap(), b.encrypt(&payload).unwrap());
                assert_eq!(fa.len(), fb.len(), "{suite:?} leaf {leaf} frame {i}");
                assert!(fa.len() - payload.len() <= max);
                assert_eq!(ring.decrypt(0, &fa).unwrap(), payload);
            }
        }
    }
}

#[test]
fn compact_suite_overhead_measured_exactly() {
    use sotto_e2ee::keys::KeyGeneration;
    let key = sotto_e2ee::keys::test_audience_key(
        KeyGeneration {
            epoch: 1,
            rotation: 0,
        },
        [3u8; 32],
    );
    let mut s = FrameSender::new(Suite::CompactAudio, &key, 5).unwrap();
    let payload = [0u8; 80];
    // header: config byte + 1 KID byte (+ 0, 1 or 2 counter bytes) + 4-byte tag
    let over = |f: Vec<u8>| f.len() - payload.len();
    assert_eq!(
        over(s.encrypt(&payload).unwrap()),
        6,
        "ctr 0 fits in the config byte"
    );
    for _ in 1..8 {
        s.encrypt(&payload).unwrap();
    }
    assert_eq!(
        over(s.encrypt(&payload).unwrap()),
        7,
        "ctr 8: one counter byte"
    );
    for _ in 9..256 {
        s.encrypt(&payload).unwrap();
    }
    assert_eq!(
        over(s.encrypt(&payload).unwrap()),
        8,
        "ctr 256: two counter bytes"
    );
    assert_eq!(Suite::CompactAudio.tag_len(), 4);
    assert_eq!(Suite::Gcm128.tag_len(), 16);
}
