//! How much of a signal survived a path: the delay and the normalized
//! cross-correlation at that delay.

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

/// Largest FFT used for the lag search. Longer inputs are searched coarsely on
/// a decimated copy first and then refined at full rate, which keeps debug
/// builds (where rustfft's generics run unoptimized) fast.
const MAX_FFT: usize = 1 << 19;

/// Finds the delay of `received` against `reference` within `±max_lag`
/// samples and returns `(lag, ncc)` there.
///
/// `lag > 0` means `received` is late: `received[n + lag] ≈ reference[n]`.
/// The lag is the one maximizing the raw cross-correlation: computed for all
/// lags at once with an FFT, on a decimated copy when the signals are long
/// (then refined sample by sample around the coarse peak). `ncc` is
/// `Σ r·x / √(Σ r² · Σ x²)` over the samples where both signals overlap at
/// that lag, in `[-1, 1]`. Signals are not mean-removed (audio has no DC).
/// Returns `(0, 0.0)` when either signal is empty or silent.
///
/// Cost in a debug build: about 0.5 s for 10 s against 10 s, 1.5 s for 30 s
/// against 30 s, with ±1 s of lag.
pub fn aligned_correlation(reference: &[f32], received: &[f32], max_lag: usize) -> (isize, f64) {
    if reference.is_empty() || received.is_empty() {
        return (0, 0.0);
    }
    let max_pos = max_lag.min(received.len() - 1) as isize;
    let max_neg = -(max_lag.min(reference.len() - 1) as isize);
    let mut factor = 1;
    while (reference.len() + received.len()).div_ceil(factor) > MAX_FFT {
        factor *= 2;
    }
    let lag = if factor == 1 {
        fft_best_lag(reference, received, max_pos, max_neg)
    } else {
        let r = decimate(reference, factor);
        let x = decimate(received, factor);
        let f = factor as isize;
        let coarse = if r.is_empty() || x.is_empty() {
            0
        } else {
            let pos = (max_pos / f + 1).min(x.len() as isize - 1);
            let neg = (max_neg / f - 1).max(1 - r.len() as isize);
            fft_best_lag(&r, &x, pos, neg) * f
        };
        let lo = (coarse - 2 * f).max(max_neg);
        let hi = (coarse + 2 * f).min(max_pos);
        (lo..=hi)
            .map(|lag| (lag, overlap(reference, received, lag).0))
            .fold(
                (coarse.clamp(max_neg, max_pos), f64::NEG_INFINITY),
                |best, (lag, c)| {
                    if c > best.1 { (lag, c) } else { best }
                },
            )
            .0
    };
    (lag, ncc_at(reference, received, lag))
}

/// Box-filtered and decimated by `factor`: enough for a coarse lag.
fn decimate(x: &[f32], factor: usize) -> Vec<f32> {
    x.chunks_exact(factor)
        .map(|c| c.iter().sum::<f32>() / factor as f32)
        .collect()
}

/// The lag in `max_neg..=max_pos` with the largest raw cross-correlation.
fn fft_best_lag(reference: &[f32], received: &[f32], max_pos: isize, max_neg: isize) -> isize {
    let n = (reference.len() + received.len()).next_power_of_two();
    let mut planner = FftPlanner::<f32>::new();
    let forward = planner.plan_fft_forward(n);
    let inverse = planner.plan_fft_inverse(n);

    // One complex FFT carries both real signals: a = ref + i·rec.
    let mut spec: Vec<Complex<f32>> = vec![Complex::new(0.0, 0.0); n];
    for (s, &r) in spec.iter_mut().zip(reference) {
        s.re = r;
    }
    for (s, &x) in spec.iter_mut().zip(received) {
        s.im = x;
    }
    forward.process(&mut spec);

    // Split: R[k] = (A[k] + conj A[n-k]) / 2, X[k] = (A[k] - conj A[n-k]) / 2i.
    // The cross-spectrum conj(R)·X gives c[lag] = Σ ref[m]·rec[m + lag].
    let mut cross = vec![Complex::new(0.0f32, 0.0); n];
    for (k, c) in cross.iter_mut().enumerate() {
        let a = spec[k];
        let b = spec[(n - k) % n].conj();
        let r = (a + b) * 0.5;
        let x = (a - b) * Complex::new(0.0, -0.5);
        *c = r.conj() * x;
    }
    inverse.process(&mut cross);

    let mut best = (0isize, f32::NEG_INFINITY);
    for lag in max_neg..=max_pos {
        let index = if lag >= 0 {
            lag as usize
        } else {
            n - lag.unsigned_abs()
        };
        let c = cross[index].re;
        if c > best.1 {
            best = (lag, c);
        }
    }
    best.0
}

/// `(Σ r·x, Σ r², Σ x²)` of `reference[m]` against `received[m + lag]`.
fn overlap(reference: &[f32], received: &[f32], lag: isize) -> (f64, f64, f64) {
    let (r, x) = if lag >= 0 {
        (reference, received.get(lag as usize..).unwrap_or(&[]))
    } else {
        (reference.get(lag.unsigned_abs()..).unwrap_or(&[]), received)
    };
    let (mut rx, mut rr, mut xx) = (0.0f64, 0.0f64, 0.0f64);
    for (&a, &b) in r.iter().zip(x) {
        let (a, b) = (f64::from(a), f64::from(b));
        rx += a * b;
        rr += a * a;
        xx += b * b;
    }
    (rx, rr, xx)
}

/// Normalized cross-correlation of `reference[m]` with `received[m + lag]`
/// over their overlap.
fn ncc_at(reference: &[f32], received: &[f32], lag: isize) -> f64 {
    let (rx, rr, xx) = overlap(reference, received, lag);
    if rr <= 0.0 || xx <= 0.0 {
        0.0
    } else {
        rx / (rr * xx).sqrt()
    }
}
