//! WAV files as `sotto` reads them (`--wav` input for speaking and tests):
//! hound's parser, the format checks, mixing down and resampling to 48 kHz.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(samples) = sotto_audio::read_wav_bytes(data) {
        // Inputs are clamped before the (band-limited) resampler.
        assert!(samples.iter().all(|s| s.is_finite()));
    }
});
