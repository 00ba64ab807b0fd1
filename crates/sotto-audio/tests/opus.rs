//! Speech through Opus: clean, lossy (jitter buffer + FEC/PLC), and ciphertext.

mod common;

use common::{Rng, decode_all, encode};
use proptest::prelude::*;
use sotto_audio::{
    EncoderConfig, FRAME_SAMPLES, JitterBuffer, OpusDecoder, OpusEncoder, Playout,
    aligned_correlation, speech_like,
};
use std::time::Instant;

const SECONDS: f32 = 10.0;
const MAX_LAG: usize = 48_000;

#[test]
fn opus_round_trip_of_speech_correlates() {
    let started = Instant::now();
    let input = speech_like(42, SECONDS);
    let generated = started.elapsed();
    let packets = encode(&input);
    let encoded = started.elapsed();
    let output = decode_all(&packets);
    let decoded = started.elapsed();
    let (lag, ncc) = aligned_correlation(&input, &output, MAX_LAG);
    let bytes: usize = packets.iter().map(Vec::len).sum();
    println!(
        "opus 32 kbps, {SECONDS} s: lag {lag} samples, ncc {ncc:.4}, {:.1} kbps actual; \
         generate {generated:?}, +encode {encoded:?}, +decode {decoded:?}, +correlate {:?}",
        bytes as f64 * 8.0 / f64::from(SECONDS) / 1000.0,
        started.elapsed()
    );
    assert_eq!(packets.len(), 500);
    assert_eq!(output.len(), input.len());
    assert!((0..1_000).contains(&lag), "lag {lag}");
    assert!(ncc >= 0.9, "ncc {ncc}");
}

/// Runs packets through a lossy, jittery network into the jitter buffer and
/// the decoder, one pop per tick.
fn through_lossy_network(packets: &[Vec<u8>], loss: f64, seed: u64) -> (Vec<f32>, usize) {
    let mut rng = Rng(seed);
    let mut jitter = JitterBuffer::new(3);
    let mut decoder = OpusDecoder::new().unwrap();
    // Arrival tick for each packet: sent at tick i, 0–1 ticks of delay.
    let mut in_flight: Vec<(usize, u16, &[u8])> = Vec::new();
    let mut dropped = 0;
    for (i, p) in packets.iter().enumerate() {
        if rng.chance(loss) {
            dropped += 1;
            continue;
        }
        let delay = usize::from(rng.chance(0.2));
        in_flight.push((i + delay, i as u16, p));
    }
    in_flight.sort_by_key(|&(at, seq, _)| (at, std::cmp::Reverse(seq)));
    let mut output = Vec::new();
    let mut arrivals = in_flight.into_iter().peekable();
    for tick in 0..packets.len() + 8 {
        while let Some(&(at, seq, payload)) = arrivals.peek() {
            if at > tick {
                break;
            }
            jitter.push(seq, payload);
            arrivals.next();
        }
        let playout = jitter.pop();
        if playout != Playout::Idle || !output.is_empty() {
            output.extend_from_slice(&decoder.play(&playout));
        }
    }
    println!("jitter {:?}\ndecoder {:?}", jitter.stats(), decoder.stats());
    (output, dropped)
}

#[test]
fn five_percent_loss_with_fec_and_plc_still_correlates() {
    let input = speech_like(42, SECONDS);
    let packets = encode(&input);
    let (output, dropped) = through_lossy_network(&packets, 0.05, 2024);
    let (lag, ncc) = aligned_correlation(&input, &output, MAX_LAG);
    println!(
        "5% loss ({dropped} of {} frames dropped): lag {lag}, ncc {ncc:.4}",
        packets.len()
    );
    assert!(dropped >= 10, "the seed should drop frames");
    assert!(ncc >= 0.8, "ncc {ncc}");
}

#[test]
fn fec_recovers_more_than_concealment_alone() {
    let input = speech_like(7, 4.0);
    let packets = encode(&input);
    let mut rng = Rng(99);
    let lost: Vec<bool> = (0..packets.len()).map(|_| rng.chance(0.1)).collect();
    let run = |use_fec: bool| {
        let mut dec = OpusDecoder::new().unwrap();
        let mut out = Vec::new();
        for i in 0..packets.len() {
            let frame = if !lost[i] {
                dec.decode(Some(&packets[i]))
            } else if use_fec && i + 1 < packets.len() && !lost[i + 1] {
                dec.decode_fec(&packets[i + 1])
            } else {
                dec.decode(None)
            };
            out.extend_from_slice(&frame);
        }
        aligned_correlation(&input, &out, MAX_LAG).1
    };
    let (with_fec, plc_only) = (run(true), run(false));
    println!("10% loss: ncc with FEC {with_fec:.4}, PLC only {plc_only:.4}");
    assert!(with_fec > plc_only, "FEC {with_fec} vs PLC {plc_only}");
}

#[test]
fn sender_skipping_dtx_frames_keeps_the_timeline() {
    // The sender drops DTX packets; the receiver keys the jitter buffer on
    // the frame number from the RTP timestamp, so pauses become lost frames.
    let input = speech_like(42, SECONDS);
    let packets = encode(&input);
    let mut jitter = JitterBuffer::new(3);
    let mut decoder = OpusDecoder::new().unwrap();
    let mut output = Vec::new();
    let mut skipped = 0;
    for (frame, p) in packets.iter().enumerate() {
        if p.len() <= 2 {
            skipped += 1;
        } else {
            jitter.push(frame as u16, p);
        }
        output.extend_from_slice(&decoder.play(&jitter.pop()));
    }
    let (lag, ncc) = aligned_correlation(&input, &output, MAX_LAG);
    println!(
        "DTX frames skipped: {skipped}; lag {lag}, ncc {ncc:.4}; {:?}",
        jitter.stats()
    );
    assert!(ncc >= 0.9, "ncc {ncc}");
}

#[test]
fn ciphertext_decoded_as_opus_does_not_correlate() {
    let input = speech_like(42, SECONDS);
    let packets = encode(&input);
    let mut rng = Rng(0xC1FE);
    // An XOR keystream (what a stream cipher does) and plain random bytes.
    let xored: Vec<Vec<u8>> = packets
        .iter()
        .map(|p| {
            let mut ks = vec![0u8; p.len()];
            rng.fill(&mut ks);
            p.iter().zip(&ks).map(|(a, b)| a ^ b).collect()
        })
        .collect();
    let random: Vec<Vec<u8>> = packets
        .iter()
        .map(|p| {
            let mut r = vec![0u8; p.len() + 8];
            rng.fill(&mut r);
            r
        })
        .collect();
    for (name, garbage) in [("xor keystream", &xored), ("random bytes", &random)] {
        let mut dec = OpusDecoder::new().unwrap();
        let mut out = Vec::new();
        for p in garbage {
            out.extend_from_slice(&dec.decode(Some(p)));
        }
        assert_eq!(out.len(), input.len());
        assert!(out.iter().all(|x| x.is_finite()));
        let (lag, ncc) = aligned_correlation(&input, &out, MAX_LAG);
        println!("{name}: lag {lag}, ncc {ncc:.4}, decoder {:?}", dec.stats());
        assert!(ncc.abs() <= 0.1, "{name}: ncc {ncc}");
    }
}

#[test]
fn silence_turns_into_dtx_packets() {
    let mut enc = OpusEncoder::new(EncoderConfig::default()).unwrap();
    let silent = [0.0f32; FRAME_SAMPLES];
    let packets: Vec<_> = (0..50).map(|_| enc.encode(&silent).unwrap()).collect();
    let dtx = packets.iter().filter(|p| p.is_dtx()).count();
    println!("DTX packets in 1 s of silence: {dtx} of 50");
    assert!(dtx >= 30, "dtx {dtx}");
    let mut dec = OpusDecoder::new().unwrap();
    for p in &packets {
        assert!(dec.decode(Some(p)).iter().all(|x| x.abs() < 1e-3));
    }
}

#[test]
fn bad_settings_are_rejected() {
    let bad = EncoderConfig {
        bitrate_bps: 100,
        ..EncoderConfig::default()
    };
    assert!(OpusEncoder::new(bad).is_err());
    let bad = EncoderConfig {
        expected_loss_percent: 101,
        ..EncoderConfig::default()
    };
    assert!(OpusEncoder::new(bad).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decoder_takes_any_bytes(packets in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..1_500), 1..6))
    {
        let mut dec = OpusDecoder::new().unwrap();
        for p in &packets {
            let frame = dec.decode(Some(p));
            prop_assert!(frame.iter().all(|x| x.is_finite() && x.abs() <= 1.0));
            let frame = dec.decode_fec(p);
            prop_assert!(frame.iter().all(|x| x.is_finite() && x.abs() <= 1.0));
        }
    }
}
