//! The alignment search finds known delays, fast enough for debug builds.

mod common;

use common::Rng;
use sotto_audio::{aligned_correlation, speech_like};
use std::time::Instant;

fn noise(rng: &mut Rng, n: usize, amplitude: f32) -> Vec<f32> {
    (0..n)
        .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * amplitude)
        .collect()
}

fn delayed(x: &[f32], lag: isize) -> Vec<f32> {
    if lag >= 0 {
        let mut y = vec![0.0; lag as usize];
        y.extend_from_slice(x);
        y
    } else {
        x[lag.unsigned_abs()..].to_vec()
    }
}

#[test]
fn finds_known_shifts() {
    let x = speech_like(3, 2.0);
    let mut rng = Rng(1);
    for lag in [0isize, 1, 313, 4_321, -1, -2_000, 47_999] {
        let mut y = delayed(&x, lag);
        for (v, n) in y.iter_mut().zip(noise(&mut rng, x.len(), 0.01)) {
            *v += n;
        }
        let (found, ncc) = aligned_correlation(&x, &y, 48_000);
        assert_eq!(found, lag);
        assert!(ncc > 0.98, "lag {lag}: ncc {ncc}");
    }
}

#[test]
fn a_lag_beyond_the_window_is_not_found() {
    let x = speech_like(4, 1.0);
    let y = delayed(&x, 5_000);
    let (found, ncc) = aligned_correlation(&x, &y, 1_000);
    assert!(found.abs() <= 1_000);
    assert!(ncc < 0.5, "ncc {ncc}");
}

#[test]
fn unrelated_and_degenerate_inputs() {
    let x = speech_like(5, 2.0);
    let y = speech_like(6, 2.0);
    let (_, ncc) = aligned_correlation(&x, &y, 48_000);
    assert!(ncc.abs() < 0.3, "different speech ncc {ncc}");
    let z = noise(&mut Rng(2), x.len(), 0.3);
    let (_, ncc) = aligned_correlation(&x, &z, 48_000);
    assert!(ncc.abs() < 0.05, "noise ncc {ncc}");
    assert_eq!(aligned_correlation(&[], &x, 10), (0, 0.0));
    assert_eq!(aligned_correlation(&x, &[0.0; 100], 10).1, 0.0);
    let inverted: Vec<f32> = x.iter().map(|v| -v).collect();
    assert!(aligned_correlation(&x, &inverted, 0).1 < -0.99);
}

#[test]
fn thirty_seconds_with_one_second_of_lag_is_fast() {
    let mut rng = Rng(3);
    let x = noise(&mut rng, 30 * 48_000, 0.3);
    let y = delayed(&x, 31_234);
    let started = Instant::now();
    let (lag, ncc) = aligned_correlation(&x, &y, 48_000);
    let took = started.elapsed();
    println!("30 s at 48 kHz, ±1 s: {took:?}");
    assert_eq!(lag, 31_234);
    assert!(ncc > 0.999);
}
