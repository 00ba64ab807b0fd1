//! Levels: RMS in dB relative to full scale, the RFC 6464 audio level an RTP
//! sender puts in its header extension, and a meter for a levels display.
//!
//! Levels are relative to the overload point as in ITU-T G.100.1 (dBov): a
//! full-scale square wave is 0 dB, a full-scale sine −3.01 dB.

/// Floor of every level here: silence reads −127 dB (RFC 6464's quietest).
pub const SILENCE_DB: f32 = -127.0;

/// RMS level of `samples` in dBov (≡ dBFS with a square-wave reference),
/// clamped to [`SILENCE_DB`]..=0.
pub fn rms_dbov(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return SILENCE_DB;
    }
    let energy: f64 = samples
        .iter()
        .map(|&x| if x.is_finite() { f64::from(x) } else { 0.0 })
        .map(|x| x * x)
        .sum();
    let rms = (energy / samples.len() as f64).sqrt();
    if rms <= 0.0 {
        return SILENCE_DB;
    }
    (20.0 * rms.log10()).clamp(f64::from(SILENCE_DB), 0.0) as f32
}

/// The RFC 6464 audio level of a frame: 0 (loudest, 0 dBov) to 127
/// (−127 dBov or quieter), the 7-bit value of the client-to-mixer header
/// extension.
pub fn rfc6464_level(samples: &[f32]) -> u8 {
    (-rms_dbov(samples)).round().clamp(0.0, 127.0) as u8
}

/// A meter for a "who is speaking" display: rises at once, falls at a fixed
/// rate per frame so that the bar does not flicker between syllables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LevelMeter {
    level_db: f32,
    fall_db_per_frame: f32,
}

impl Default for LevelMeter {
    /// Falls 1.5 dB per 20 ms frame (75 dB/s).
    fn default() -> Self {
        LevelMeter::new(1.5)
    }
}

impl LevelMeter {
    /// A meter that falls `fall_db_per_frame` per [`LevelMeter::push`].
    pub fn new(fall_db_per_frame: f32) -> Self {
        LevelMeter {
            level_db: SILENCE_DB,
            fall_db_per_frame: fall_db_per_frame.max(0.0),
        }
    }

    /// Takes one frame and returns the displayed level in dBov.
    pub fn push(&mut self, frame: &[f32]) -> f32 {
        let now = rms_dbov(frame);
        self.level_db = now
            .max(self.level_db - self.fall_db_per_frame)
            .max(SILENCE_DB);
        self.level_db
    }

    /// The displayed level in dBov.
    pub fn level_db(&self) -> f32 {
        self.level_db
    }

    /// Whether the displayed level is at or above `threshold_db`.
    pub fn is_active(&self, threshold_db: f32) -> bool {
        self.level_db >= threshold_db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_levels() {
        assert_eq!(rms_dbov(&[]), SILENCE_DB);
        assert_eq!(rms_dbov(&[0.0; 960]), SILENCE_DB);
        assert!((rms_dbov(&[1.0, -1.0, 1.0, -1.0]) - 0.0).abs() < 1e-6);
        let sine: Vec<f32> = (0..960)
            .map(|i| (2.0 * std::f32::consts::PI * i as f32 / 48.0).sin())
            .collect();
        assert!((rms_dbov(&sine) + 3.01).abs() < 0.01);
        let quiet: Vec<f32> = sine.iter().map(|x| x * 0.01).collect(); // −43 dBov
        assert_eq!(rfc6464_level(&quiet), 43);
        assert_eq!(rfc6464_level(&[0.0; 960]), 127);
        assert_eq!(rfc6464_level(&[1.0; 960]), 0);
    }

    #[test]
    fn meter_rises_fast_and_falls_slowly() {
        let mut meter = LevelMeter::default();
        assert_eq!(meter.push(&[0.5; 960]).round(), -6.0);
        assert!((meter.push(&[0.0; 960]) - (-6.02 - 1.5)).abs() < 0.01);
        assert!(meter.is_active(-10.0));
    }
}
