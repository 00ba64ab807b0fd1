//! Band-limited resampling with a polyphase windowed-sinc (Kaiser) filter.
//!
//! The ratio `to / from` is reduced to `L / M`; output sample `n` sits at input
//! time `n·M/L` and is the dot product of nearby input samples with the kernel
//! taps for that fractional phase. The bank holds one tap set per phase (up to
//! [`MAX_PHASES`]; beyond that the phase is rounded to the nearest of
//! `MAX_PHASES`, a timing error under 1/8192 of an input sample). The kernel is
//! symmetric, so the output is not delayed: output time 0 is input time 0.

use crate::SAMPLE_RATE;

/// Zero crossings of the sinc on each side of the centre.
const ZERO_CROSSINGS: f64 = 16.0;
/// Cutoff as a fraction of the lower Nyquist frequency (leaves room for the
/// transition band so that nothing above the lower Nyquist aliases).
const ROLLOFF: f64 = 0.92;
/// Kaiser window β: about 80 dB of stop-band attenuation.
const KAISER_BETA: f64 = 8.0;
/// Largest number of precomputed phases.
pub const MAX_PHASES: u64 = 4096;

/// Resamples mono audio at `from_rate` Hz to 48 kHz.
pub fn resample_to_48k(input: &[f32], from_rate: u32) -> Vec<f32> {
    resample(input, from_rate, SAMPLE_RATE)
}

/// Resamples mono audio from `from_rate` to `to_rate` (both in Hz, non-zero).
///
/// Returns `ceil(len · to / from)` samples; an empty vector if either rate is 0.
pub fn resample(input: &[f32], from_rate: u32, to_rate: u32) -> Vec<f32> {
    if from_rate == 0 || to_rate == 0 || input.is_empty() {
        return Vec::new();
    }
    if from_rate == to_rate {
        return input.to_vec();
    }
    let g = gcd(u64::from(from_rate), u64::from(to_rate));
    let up = u64::from(to_rate) / g; // L
    let down = u64::from(from_rate) / g; // M
    let bank = FilterBank::new(up, down);

    let out_len = (input.len() as u64 * up).div_ceil(down);
    let mut out = Vec::with_capacity(out_len as usize);
    for n in 0..out_len {
        let pos = n * down;
        let mut base = pos / up;
        let mut phase = (pos % up) * bank.phases / up;
        // Nearest phase when the bank is coarser than L.
        if bank.phases != up {
            let exact = (pos % up) as f64 * bank.phases as f64 / up as f64;
            phase = exact.round() as u64;
            if phase == bank.phases {
                phase = 0;
                base += 1;
            }
        }
        out.push(bank.apply(input, base as i64, phase as usize));
    }
    out
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

struct FilterBank {
    phases: u64,
    /// Taps per phase: inputs `base - half + 1 ..= base + half`.
    half: usize,
    taps: Vec<f32>,
}

impl FilterBank {
    fn new(up: u64, down: u64) -> Self {
        let phases = up.min(MAX_PHASES);
        // Cutoff in cycles per input sample.
        let cutoff = 0.5 * ROLLOFF * (up as f64 / down as f64).min(1.0);
        let width = ZERO_CROSSINGS / (2.0 * cutoff); // half-width in input samples
        let half = width.ceil() as usize;
        let len = 2 * half;
        let mut taps = Vec::with_capacity(phases as usize * len);
        let i0_beta = bessel_i0(KAISER_BETA);
        for p in 0..phases {
            let frac = p as f64 / phases as f64;
            let start = taps.len();
            for j in 0..len {
                // Input index base - half + 1 + j is at distance `tau` before the output time.
                let offset = j as f64 - (half as f64 - 1.0);
                let tau = frac - offset;
                let h = if tau.abs() >= width {
                    0.0
                } else {
                    let x = tau / width;
                    let window = bessel_i0(KAISER_BETA * (1.0 - x * x).sqrt()) / i0_beta;
                    2.0 * cutoff * sinc(2.0 * cutoff * tau) * window
                };
                taps.push(h);
            }
            // Unity gain at DC for every phase.
            let sum: f64 = taps[start..].iter().sum();
            for t in &mut taps[start..] {
                *t /= sum;
            }
        }
        let taps = taps.into_iter().map(|t| t as f32).collect();
        FilterBank { phases, half, taps }
    }

    fn apply(&self, input: &[f32], base: i64, phase: usize) -> f32 {
        let len = 2 * self.half;
        let taps = &self.taps[phase * len..(phase + 1) * len];
        let first = base - self.half as i64 + 1;
        if first >= 0 && (first as usize) + len <= input.len() {
            let window = &input[first as usize..first as usize + len];
            window.iter().zip(taps).map(|(x, h)| x * h).sum()
        } else {
            let mut acc = 0.0;
            for (j, h) in taps.iter().enumerate() {
                let k = first + j as i64;
                if k >= 0 && (k as usize) < input.len() {
                    acc += input[k as usize] * h;
                }
            }
            acc
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-12 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// Modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..64 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f64, secs: f64) -> Vec<f32> {
        let n = (f64::from(rate) * secs) as usize;
        (0..n)
            .map(|i| (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin() as f32)
            .collect()
    }

    #[test]
    fn upsampled_sine_matches_direct_sine() {
        for rate in [8_000, 11_025, 16_000, 22_050, 44_100, 44_101] {
            let x = sine(rate, 1_000.0, 0.2);
            let y = resample_to_48k(&x, rate);
            let want = sine(SAMPLE_RATE, 1_000.0, 0.2);
            assert!(y.len().abs_diff(want.len()) <= 1, "rate {rate}");
            // Skip the edges, where the input was zero-padded.
            let err: f32 = y[500..8_000]
                .iter()
                .zip(&want[500..8_000])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 2e-3, "rate {rate}: max error {err}");
        }
    }

    #[test]
    fn downsampling_removes_content_above_new_nyquist() {
        // 20 kHz at 48 kHz down to 16 kHz must vanish, not alias to 4 kHz.
        let x = sine(48_000, 20_000.0, 0.1);
        let y = resample(&x, 48_000, 16_000);
        let rms = (y[200..1_400].iter().map(|v| v * v).sum::<f32>() / 1_200.0).sqrt();
        assert!(rms < 1e-3, "rms {rms}");
    }
}
