//! A deterministic, seeded speech-like test signal.
//!
//! Voiced speech is a pulse train at the pitch (90–250 Hz) shaped by vocal
//! tract resonances (formants) that move from vowel to vowel, in syllables of
//! 120–300 ms grouped into phrases separated by pauses. This generator builds
//! exactly that, additively: every harmonic of the pitch gets the amplitude
//! of a −6 dB/octave source seen through three formant resonators, below
//! 4 kHz. Opus treats it like speech (unlike a pure tone), so it is a fair
//! input for end-to-end quality checks.
//!
//! The signal is defined in continuous time (control values every 5 ms,
//! linearly interpolated; pitch phase integrated exactly), so sampling it at
//! 44.1 kHz and at 48 kHz gives the same waveform: that is what lets a test
//! compare a resampled file against a direct 48 kHz rendering.
//!
//! To make a WAV: `write_wav(path, &speech_like(seed, 10.0))`.

use crate::SAMPLE_RATE;

/// Control rate: one set of pitch, loudness and formants every 5 ms.
const CONTROL_DT: f64 = 0.005;
/// No harmonic above this frequency (below the 8 kHz input's Nyquist).
const MAX_HARMONIC_HZ: f64 = 4_000.0;
/// Harmonics at and above this frequency fade out toward `MAX_HARMONIC_HZ`.
const TAPER_FROM_HZ: f64 = 3_200.0;
const MIN_F0: f64 = 90.0;
const MAX_F0: f64 = 250.0;
const MAX_HARMONICS: usize = (MAX_HARMONIC_HZ / MIN_F0) as usize + 1;
/// RMS of a syllable at its loudest (about −20 dBov); peaks stay below ±1.
const PEAK_RMS: f64 = 0.1;

/// (F1, F2, F3) in Hz for a handful of vowels.
const VOWELS: [[f64; 3]; 7] = [
    [730.0, 1_090.0, 2_440.0], // a
    [530.0, 1_840.0, 2_480.0], // e
    [270.0, 2_290.0, 3_010.0], // i
    [570.0, 840.0, 2_410.0],   // o
    [300.0, 870.0, 2_240.0],   // u
    [660.0, 1_720.0, 2_410.0], // æ
    [490.0, 1_350.0, 1_690.0], // ɜ
];
const BANDWIDTHS: [f64; 3] = [80.0, 100.0, 140.0];

/// Longest signal generated, in seconds; longer requests are cut to this.
pub const MAX_SPEECH_SECONDS: f32 = 3_600.0;

/// `seconds` of the speech-like signal for `seed`, at 48 kHz.
pub fn speech_like(seed: u64, seconds: f32) -> Vec<f32> {
    speech_like_at(seed, seconds, SAMPLE_RATE)
}

/// The same signal as [`speech_like`], sampled at `sample_rate` Hz.
pub fn speech_like_at(seed: u64, seconds: f32, sample_rate: u32) -> Vec<f32> {
    if sample_rate == 0 || seconds.is_nan() || seconds <= 0.0 {
        return Vec::new();
    }
    let seconds = seconds.min(MAX_SPEECH_SECONDS);
    let seconds = f64::from(seconds);
    let controls = Controls::plan(seed, seconds);
    let n = (seconds * f64::from(sample_rate)).round() as usize;
    let mut out = Vec::with_capacity(n);
    let mut amps = [0.0f64; MAX_HARMONICS];
    for i in 0..n {
        let t = i as f64 / f64::from(sample_rate);
        let k = ((t / CONTROL_DT) as usize).min(controls.f0.len() - 2);
        let tau = t - k as f64 * CONTROL_DT;
        let w = tau / CONTROL_DT;
        let (f0a, f0b) = (controls.f0[k], controls.f0[k + 1]);
        let cycles = controls.phase[k] + f0a * tau + (f0b - f0a) * tau * tau / (2.0 * CONTROL_DT);
        let theta = std::f64::consts::TAU * cycles.fract();

        let (a, b) = (&controls.harmonics[k], &controls.harmonics[k + 1]);
        let count = a.len().max(b.len());
        for (h, amp) in amps.iter_mut().enumerate().take(count) {
            let ah = a.get(h).copied().unwrap_or(0.0);
            let bh = b.get(h).copied().unwrap_or(0.0);
            *amp = ah + w * (bh - ah);
        }
        // sin(hθ) by the Chebyshev recurrence: one sin and one cos per sample.
        let (s1, c) = theta.sin_cos();
        let (mut prev, mut cur) = (0.0f64, s1);
        let mut acc = 0.0;
        for amp in &amps[..count] {
            acc += amp * cur;
            (prev, cur) = (cur, 2.0 * c * cur - prev);
        }
        out.push(acc.clamp(-1.0, 1.0) as f32);
    }
    out
}

/// Control values on the 5 ms grid.
struct Controls {
    f0: Vec<f64>,
    /// Pitch cycles elapsed at each grid point.
    phase: Vec<f64>,
    /// Harmonic amplitudes (loudness included) at each grid point.
    harmonics: Vec<Vec<f64>>,
}

impl Controls {
    fn plan(seed: u64, seconds: f64) -> Controls {
        let points = (seconds / CONTROL_DT).ceil() as usize + 2;
        let mut rng = SplitMix64(seed ^ 0x0050_770A_0D10);
        let mut f0 = Vec::with_capacity(points);
        let mut loudness = Vec::with_capacity(points);
        let mut formants = Vec::with_capacity(points);

        let register = rng.range(110.0, 190.0); // this "speaker"'s pitch
        let mut vowel = VOWELS[rng.below(VOWELS.len())];
        // Start with a short pause, as a recording would.
        let mut t_end_pause = rng.range(0.05, 0.2);
        push_pause(
            &mut f0,
            &mut loudness,
            &mut formants,
            points,
            t_end_pause,
            register,
            vowel,
        );
        while f0.len() < points {
            // A phrase: 2–6 syllables on a falling pitch line.
            let syllables = 2 + rng.below(5);
            let start = (register * rng.range(1.0, 1.3)).min(MAX_F0);
            let end = (start * rng.range(0.65, 0.85)).max(MIN_F0);
            for s in 0..syllables {
                let dur = rng.range(0.12, 0.30);
                let gain = rng.range(0.55, 1.0);
                let accent = rng.range(0.95, 1.12);
                let target = VOWELS[rng.below(VOWELS.len())];
                let steps = (dur / CONTROL_DT).round().max(2.0) as usize;
                for j in 0..steps {
                    let u = j as f64 / steps as f64;
                    let progress = (s as f64 + u) / syllables as f64;
                    let pitch = (start + (end - start) * progress)
                        * (1.0 + (accent - 1.0) * (std::f64::consts::PI * u).sin());
                    f0.push(pitch.clamp(MIN_F0, MAX_F0));
                    loudness.push(gain * (std::f64::consts::PI * u).sin().powf(0.6));
                    let m = smoothstep((u / 0.4).min(1.0));
                    formants.push([0, 1, 2].map(|i| vowel[i] + (target[i] - vowel[i]) * m));
                }
                vowel = target;
            }
            t_end_pause = rng.range(0.10, 0.40);
            push_pause(
                &mut f0,
                &mut loudness,
                &mut formants,
                points,
                t_end_pause,
                end,
                vowel,
            );
        }
        f0.truncate(points);
        loudness.truncate(points);
        formants.truncate(points);

        let mut phase = Vec::with_capacity(points);
        let mut cycles = 0.0f64;
        for k in 0..points {
            phase.push(cycles);
            if k + 1 < points {
                cycles = (cycles + CONTROL_DT * (f0[k] + f0[k + 1]) / 2.0).fract();
            }
        }
        let harmonics = (0..points)
            .map(|k| harmonic_amplitudes(f0[k], &formants[k], loudness[k]))
            .collect();
        Controls {
            f0,
            phase,
            harmonics,
        }
    }
}

fn push_pause(
    f0: &mut Vec<f64>,
    loudness: &mut Vec<f64>,
    formants: &mut Vec<[f64; 3]>,
    limit: usize,
    seconds: f64,
    pitch: f64,
    vowel: [f64; 3],
) {
    let steps = (seconds / CONTROL_DT).round() as usize;
    for _ in 0..steps.min(limit.saturating_sub(f0.len())) {
        f0.push(pitch.clamp(MIN_F0, MAX_F0));
        loudness.push(0.0);
        formants.push(vowel);
    }
}

/// Amplitudes of harmonics 1..: source × formant gain × taper, scaled so the
/// frame's RMS is `loudness × PEAK_RMS`.
fn harmonic_amplitudes(f0: f64, formants: &[f64; 3], loudness: f64) -> Vec<f64> {
    if loudness <= 0.0 {
        return Vec::new();
    }
    let count = (MAX_HARMONIC_HZ / f0) as usize;
    let mut amps: Vec<f64> = (1..=count)
        .map(|h| {
            let f = h as f64 * f0;
            let source = 1.0 / h as f64;
            let tract: f64 = formants
                .iter()
                .zip(BANDWIDTHS)
                .map(|(&fc, bw)| fc * fc / ((fc * fc - f * f).powi(2) + (bw * f).powi(2)).sqrt())
                .product();
            let taper = if f <= TAPER_FROM_HZ {
                1.0
            } else {
                let x = (f - TAPER_FROM_HZ) / (MAX_HARMONIC_HZ - TAPER_FROM_HZ);
                0.5 * (1.0 + (std::f64::consts::PI * x.min(1.0)).cos())
            };
            source * tract * taper
        })
        .collect();
    let rms = (amps.iter().map(|a| a * a / 2.0).sum::<f64>()).sqrt();
    if rms > 0.0 {
        let scale = loudness * PEAK_RMS / rms;
        for a in &mut amps {
            *a *= scale;
        }
    }
    amps
}

fn smoothstep(x: f64) -> f64 {
    x * x * (3.0 - 2.0 * x)
}

/// SplitMix64: tiny, seedable, good enough for test signals.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_per_seed() {
        assert_eq!(speech_like(7, 0.5), speech_like(7, 0.5));
        assert_ne!(speech_like(7, 0.5), speech_like(8, 0.5));
    }

    #[test]
    fn has_pauses_and_stays_in_range() {
        let x = speech_like(1, 3.0);
        assert_eq!(x.len(), 144_000);
        let frames: Vec<f32> = x.chunks(960).map(crate::rms_dbov).collect();
        let loud = frames.iter().filter(|&&db| db > -35.0).count();
        let quiet = frames.iter().filter(|&&db| db < -60.0).count();
        assert!(loud > frames.len() / 3, "loud frames {loud}");
        assert!(quiet > 0, "no pause");
        assert!(x.iter().all(|v| v.abs() < 1.0));
    }
}
