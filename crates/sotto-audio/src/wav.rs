//! WAV files in and out: any PCM or float WAV in, mono 48 kHz `f32` out;
//! mono 48 kHz 16-bit PCM written.

use std::io::{Cursor, Read, Seek};
use std::path::Path;

use crate::SAMPLE_RATE;
use crate::resample::resample_to_48k;

/// Lowest input sample rate accepted, in Hz.
pub const MIN_INPUT_RATE: u32 = 8_000;
/// Highest input sample rate accepted, in Hz.
pub const MAX_INPUT_RATE: u32 = 48_000;
/// Most channels accepted in an input file (all are mixed down to mono).
pub const MAX_INPUT_CHANNELS: u16 = 8;
/// Longest input accepted, in seconds; bounds memory for hostile headers.
pub const MAX_INPUT_SECONDS: u64 = 3_600;

/// Why a WAV file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WavError {
    /// The file could not be opened, read or written.
    #[error("WAV i/o failed: {0}")]
    Io(#[source] std::io::Error),
    /// The file ends before its header or its data chunk does.
    #[error("WAV file is truncated")]
    Truncated,
    /// The bytes are not a well-formed RIFF/WAVE file.
    #[error("malformed WAV file: {0}")]
    Malformed(&'static str),
    /// The format tag is neither PCM nor IEEE float (e.g. A-law, ADPCM).
    #[error("WAV encoding is not PCM or IEEE float")]
    UnsupportedEncoding,
    /// PCM or float, but with a sample width this crate does not read.
    #[error("unsupported WAV sample format: {bits}-bit {}", if *.float { "float" } else { "integer" })]
    UnsupportedSampleFormat {
        /// Bits per sample in the header.
        bits: u16,
        /// Whether the header says IEEE float.
        float: bool,
    },
    /// The sample rate is outside 8–48 kHz.
    #[error("unsupported sample rate {0} Hz (accepted: {MIN_INPUT_RATE}..={MAX_INPUT_RATE})")]
    UnsupportedSampleRate(u32),
    /// Zero channels, or more than [`MAX_INPUT_CHANNELS`].
    #[error("unsupported channel count {0} (accepted: 1..={MAX_INPUT_CHANNELS})")]
    UnsupportedChannels(u16),
    /// Longer than [`MAX_INPUT_SECONDS`].
    #[error("WAV file is longer than {MAX_INPUT_SECONDS} s")]
    TooLong,
}

impl From<hound::Error> for WavError {
    fn from(err: hound::Error) -> Self {
        match err {
            hound::Error::IoError(io) if is_short_read(&io) => WavError::Truncated,
            hound::Error::IoError(io) => WavError::Io(io),
            hound::Error::FormatError(reason) => WavError::Malformed(reason),
            hound::Error::Unsupported => WavError::UnsupportedEncoding,
            hound::Error::TooWide => WavError::Malformed("sample wider than its container"),
            hound::Error::UnfinishedSample => WavError::Malformed("partial sample frame"),
            hound::Error::InvalidSampleFormat => WavError::Malformed("sample format mismatch"),
        }
    }
}

/// hound reports a short read as `Other` with this message, std as `UnexpectedEof`.
fn is_short_read(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::UnexpectedEof
        || (err.kind() == std::io::ErrorKind::Other
            && err.to_string() == "Failed to read enough bytes.")
}

/// Reads a WAV file into mono `f32` at 48 kHz (channels averaged, resampled).
pub fn read_wav(path: impl AsRef<Path>) -> Result<Vec<f32>, WavError> {
    let file = std::fs::File::open(path).map_err(WavError::Io)?;
    read_from(std::io::BufReader::new(file))
}

/// [`read_wav`] from bytes in memory.
pub fn read_wav_bytes(bytes: &[u8]) -> Result<Vec<f32>, WavError> {
    read_from(Cursor::new(bytes))
}

fn read_from<R: Read + Seek>(reader: R) -> Result<Vec<f32>, WavError> {
    let mut wav = hound::WavReader::new(reader)?;
    let spec = wav.spec();
    if !(MIN_INPUT_RATE..=MAX_INPUT_RATE).contains(&spec.sample_rate) {
        return Err(WavError::UnsupportedSampleRate(spec.sample_rate));
    }
    if spec.channels == 0 || spec.channels > MAX_INPUT_CHANNELS {
        return Err(WavError::UnsupportedChannels(spec.channels));
    }
    let channels = usize::from(spec.channels);
    let frames = u64::from(wav.duration());
    if frames > MAX_INPUT_SECONDS * u64::from(spec.sample_rate) {
        return Err(WavError::TooLong);
    }

    // Do not trust the header's length for the allocation beyond a minute.
    let cap = (frames.min(60 * u64::from(spec.sample_rate))) as usize;
    let mut mono = Vec::with_capacity(cap);
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            mix_down(wav.samples::<i32>(), channels, &mut mono, |s| {
                (f64::from(s) * scale) as f32
            })?;
        }
        (hound::SampleFormat::Float, 32) => {
            mix_down(wav.samples::<f32>(), channels, &mut mono, |s| s)?;
        }
        (format, bits) => {
            return Err(WavError::UnsupportedSampleFormat {
                bits,
                float: format == hound::SampleFormat::Float,
            });
        }
    }
    Ok(resample_to_48k(&mono, spec.sample_rate))
}

/// Averages interleaved channels into `out`; non-finite samples become 0.
fn mix_down<S>(
    samples: impl Iterator<Item = Result<S, hound::Error>>,
    channels: usize,
    out: &mut Vec<f32>,
    to_f32: impl Fn(S) -> f32,
) -> Result<(), WavError> {
    let mut acc = 0.0f32;
    let mut in_frame = 0usize;
    for sample in samples {
        let x = to_f32(sample?);
        acc += if x.is_finite() {
            x.clamp(-1.0, 1.0)
        } else {
            0.0
        };
        in_frame += 1;
        if in_frame == channels {
            out.push(acc / channels as f32);
            acc = 0.0;
            in_frame = 0;
        }
    }
    if in_frame != 0 {
        return Err(WavError::Truncated);
    }
    Ok(())
}

fn mono_48k_spec() -> hound::WavSpec {
    hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}

fn to_i16(x: f32) -> i16 {
    let x = if x.is_finite() {
        x.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    (x * f32::from(i16::MAX)).round() as i16
}

/// Writes mono 48 kHz samples as a 16-bit PCM WAV file (clipping at ±1).
pub fn write_wav(path: impl AsRef<Path>, samples: &[f32]) -> Result<(), WavError> {
    let mut writer = hound::WavWriter::create(path, mono_48k_spec())?;
    for &x in samples {
        writer.write_sample(to_i16(x))?;
    }
    writer.finalize()?;
    Ok(())
}

/// [`write_wav`] into bytes in memory.
pub fn write_wav_bytes(samples: &[f32]) -> Result<Vec<u8>, WavError> {
    let mut buf = Cursor::new(Vec::with_capacity(44 + 2 * samples.len()));
    {
        let mut writer = hound::WavWriter::new(&mut buf, mono_48k_spec())?;
        for &x in samples {
            writer.write_sample(to_i16(x))?;
        }
        writer.finalize()?;
    }
    Ok(buf.into_inner())
}
