//! WAV in and out: formats, resampling, and hostile files.

use proptest::prelude::*;
use sotto_audio::{
    WavError, aligned_correlation, read_wav, read_wav_bytes, speech_like, speech_like_at,
    write_wav, write_wav_bytes,
};

fn wav_bytes(
    spec: hound::WavSpec,
    frames: &[f32],
    to_channels: impl Fn(f32) -> Vec<f32>,
) -> Vec<u8> {
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
        for &x in frames {
            for c in to_channels(x) {
                match (spec.sample_format, spec.bits_per_sample) {
                    (hound::SampleFormat::Float, _) => w.write_sample(c).unwrap(),
                    (_, 8) => w.write_sample((c * 127.0).round() as i8).unwrap(),
                    (_, 16) => w.write_sample((c * 32767.0).round() as i16).unwrap(),
                    (_, bits) => {
                        let full = ((1i64 << (bits - 1)) - 1) as f64;
                        w.write_sample((f64::from(c) * full).round() as i32)
                            .unwrap()
                    }
                }
            }
        }
        w.finalize().unwrap();
    }
    cursor.into_inner()
}

fn spec(channels: u16, rate: u32, bits: u16, float: bool) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    }
}

fn valid_wav() -> Vec<u8> {
    write_wav_bytes(&speech_like(3, 0.05)).unwrap()
}

#[test]
fn wav_round_trip_is_exact_to_16_bits() {
    let x = speech_like(11, 1.0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("speech.wav");
    write_wav(&path, &x).unwrap();
    let from_file = read_wav(&path).unwrap();
    let from_bytes = read_wav_bytes(&write_wav_bytes(&x).unwrap()).unwrap();
    assert_eq!(from_file, from_bytes);
    assert_eq!(from_file.len(), x.len());
    let max_err = x
        .iter()
        .zip(&from_file)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(max_err <= 1.0 / 32_767.0, "max error {max_err}");
    let header = hound::WavReader::new(std::fs::File::open(&path).unwrap())
        .unwrap()
        .spec();
    assert_eq!(header, spec(1, 48_000, 16, false));
}

#[test]
fn stereo_44k1_becomes_mono_48k_matching_a_direct_rendering() {
    let seconds = 3.0;
    let at_44k1 = speech_like_at(5, seconds, 44_100);
    // Left full, right at 60%: the mix is 0.8 × the signal.
    let bytes = wav_bytes(spec(2, 44_100, 16, false), &at_44k1, |x| vec![x, 0.6 * x]);
    let got = read_wav_bytes(&bytes).unwrap();
    let want = speech_like(5, seconds);
    assert!(
        got.len().abs_diff(want.len()) <= 1,
        "{} vs {}",
        got.len(),
        want.len()
    );
    let (lag, ncc) = aligned_correlation(&want, &got, 4_800);
    println!("44.1 kHz stereo -> 48 kHz mono: lag {lag}, ncc {ncc:.5}");
    assert_eq!(lag, 0);
    assert!(ncc >= 0.99, "ncc {ncc}");
    let gain = got.iter().map(|v| v.abs()).sum::<f32>() / want.iter().map(|v| v.abs()).sum::<f32>();
    assert!((gain - 0.8).abs() < 0.01, "mix-down gain {gain}");
}

#[test]
fn every_supported_format_reads_back() {
    let seconds = 0.5;
    for (rate, bits, float, channels) in [
        (8_000, 16, false, 1),
        (16_000, 8, false, 1),
        (22_050, 24, false, 2),
        (32_000, 32, false, 1),
        (48_000, 32, true, 2),
        (11_025, 16, false, 1),
    ] {
        let x = speech_like_at(9, seconds, rate);
        let bytes = wav_bytes(spec(channels, rate, bits, float), &x, |v| {
            vec![v; usize::from(channels)]
        });
        let got = read_wav_bytes(&bytes).unwrap();
        let want = speech_like(9, seconds);
        let (lag, ncc) = aligned_correlation(&want, &got, 480);
        println!("{rate} Hz {bits}-bit float={float} x{channels}: lag {lag}, ncc {ncc:.4}");
        assert_eq!(lag, 0);
        let floor = if bits == 8 { 0.95 } else { 0.99 };
        assert!(ncc >= floor, "{rate} Hz {bits}-bit: ncc {ncc}");
    }
}

#[test]
fn truncated_header_is_an_error() {
    let good = valid_wav();
    for cut in [0, 4, 11, 20, 30, 43] {
        let err = read_wav_bytes(&good[..cut]).unwrap_err();
        assert!(
            matches!(err, WavError::Truncated | WavError::Malformed(_)),
            "cut {cut}: {err:?}"
        );
    }
}

#[test]
fn truncated_data_is_an_error() {
    let good = valid_wav();
    let err = read_wav_bytes(&good[..good.len() - 101]).unwrap_err();
    assert!(matches!(err, WavError::Truncated), "{err:?}");
}

#[test]
fn zero_channels_is_an_error() {
    let mut bad = valid_wav();
    bad[22..24].copy_from_slice(&0u16.to_le_bytes());
    let err = read_wav_bytes(&bad).unwrap_err();
    assert!(
        matches!(
            err,
            WavError::Malformed(_) | WavError::UnsupportedChannels(0)
        ),
        "{err:?}"
    );
}

#[test]
fn absurd_sample_rates_are_errors() {
    for rate in [0u32, 1, 7_999, 96_000, u32::MAX] {
        let mut bad = valid_wav();
        bad[24..28].copy_from_slice(&rate.to_le_bytes());
        bad[28..32].copy_from_slice(&rate.wrapping_mul(2).to_le_bytes());
        let err = read_wav_bytes(&bad).unwrap_err();
        assert!(
            matches!(err, WavError::UnsupportedSampleRate(r) if r == rate)
                || matches!(err, WavError::Malformed(_)),
            "rate {rate}: {err:?}"
        );
    }
}

#[test]
fn unsupported_encodings_are_errors() {
    let mut alaw = valid_wav();
    alaw[20..22].copy_from_slice(&6u16.to_le_bytes()); // WAVE_FORMAT_ALAW
    assert!(read_wav_bytes(&alaw).is_err());
    let not_wav = b"RIFF\x10\x00\x00\x00AVI LIST\x00\x00\x00\x00";
    assert!(matches!(
        read_wav_bytes(not_wav).unwrap_err(),
        WavError::Malformed(_)
    ));
    assert!(matches!(
        read_wav("/nonexistent/x.wav").unwrap_err(),
        WavError::Io(_)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = read_wav_bytes(&bytes);
    }

    #[test]
    fn mutated_wav_never_panics(
        edits in proptest::collection::vec((0usize..200, any::<u8>()), 1..8),
        cut in 0usize..5_000,
    ) {
        let mut bytes = valid_wav();
        for (at, value) in edits {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        bytes.truncate(bytes.len().saturating_sub(cut));
        let _ = read_wav_bytes(&bytes);
    }
}
