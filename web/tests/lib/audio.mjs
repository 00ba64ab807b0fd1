// Test signals, WAV files and the signal analysis the browser tests use:
// an FFT, spectral peaks, and normalized cross-correlation with an
// alignment search (the same measure as sotto-audio's aligned_correlation).

import { readFileSync, writeFileSync } from "node:fs";

export const RATE = 48_000;

/** Each voice: two steady tones (what the spectrum tests look for, all
 * below 850 Hz) plus a louder tone gliding along a voice-specific path in
 * 900-1600 Hz. The glide spreads its energy over hundreds of FFT bins, so
 * the two tones dominate the spectrum; and it holds two thirds of the
 * energy, so the waveform only correlates with itself at the right
 * alignment (two steady tones alone correlate at any multiple of their
 * common period: 0.58 here, below the 0.8 the tests require). */
export const VOICES = {
  A: { tones: [440, 660], glide: [0.3, 2.1, 4.0] },
  B: { tones: [523, 784], glide: [1.7, 0.4, 5.2] },
  N: { tones: [330, 587], glide: [3.9, 5.5, 1.1] },
};
const TONE_AMP = 0.2;
const GLIDE_AMP = 0.4;

/** `seconds` (a multiple of 4) of a voice's signal at 48 kHz. It loops
 * seamlessly every 4 s: tones with whole cycles per second, a glide whose
 * frequency path has a 4 s period and whole cycles per period. */
export function voiceSignal(voice, seconds = 4) {
  const { tones, glide } = VOICES[voice];
  const n = Math.round(seconds * RATE);
  const out = new Float32Array(n);
  const w = (2 * Math.PI) / 4;
  for (let i = 0; i < n; i++) {
    const t = i / RATE;
    // Phase of f(t) = 1250 + 150 sin(w t + a) + 120 sin(5 w t + b) + 80 sin(11 w t + c)
    // (900-1600 Hz, quick enough that no frequency holds much energy),
    // integrated exactly so the waveform is the same at any sample rate.
    const cycles =
      1250 * t -
      (150 / w) * (Math.cos(w * t + glide[0]) - Math.cos(glide[0])) -
      (120 / (5 * w)) * (Math.cos(5 * w * t + glide[1]) - Math.cos(glide[1])) -
      (80 / (11 * w)) * (Math.cos(11 * w * t + glide[2]) - Math.cos(glide[2]));
    let x = GLIDE_AMP * Math.sin(2 * Math.PI * (cycles % 1));
    for (const f of tones) x += TONE_AMP * Math.sin(2 * Math.PI * ((f * t) % 1));
    out[i] = x;
  }
  return out;
}

/** 16-bit PCM mono WAV. */
export function writeWav(path, samples, rate = RATE) {
  const data = Buffer.alloc(samples.length * 2);
  for (let i = 0; i < samples.length; i++) {
    const v = Math.max(-1, Math.min(1, samples[i]));
    data.writeInt16LE(Math.round(v * 32767), i * 2);
  }
  const h = Buffer.alloc(44);
  h.write("RIFF", 0);
  h.writeUInt32LE(36 + data.length, 4);
  h.write("WAVE", 8);
  h.write("fmt ", 12);
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20); // PCM
  h.writeUInt16LE(1, 22); // mono
  h.writeUInt32LE(rate, 24);
  h.writeUInt32LE(rate * 2, 28);
  h.writeUInt16LE(2, 32);
  h.writeUInt16LE(16, 34);
  h.write("data", 36);
  h.writeUInt32LE(data.length, 40);
  writeFileSync(path, Buffer.concat([h, data]));
}

/** Reads a PCM WAV (16-bit int or 32-bit float, any channel count: the
 * first channel). Returns { rate, samples }. */
export function readWav(path) {
  const b = readFileSync(path);
  if (b.toString("ascii", 0, 4) !== "RIFF" || b.toString("ascii", 8, 12) !== "WAVE") {
    throw new Error(`${path} is not a WAV file`);
  }
  let off = 12;
  let fmt = null;
  while (off + 8 <= b.length) {
    const id = b.toString("ascii", off, off + 4);
    const size = b.readUInt32LE(off + 4);
    const body = off + 8;
    if (id === "fmt ") {
      fmt = {
        format: b.readUInt16LE(body),
        channels: b.readUInt16LE(body + 2),
        rate: b.readUInt32LE(body + 4),
        bits: b.readUInt16LE(body + 14),
      };
    } else if (id === "data") {
      if (!fmt) throw new Error(`${path}: data before fmt`);
      const width = fmt.bits / 8;
      const frame = width * fmt.channels;
      const end = Math.min(b.length, body + size);
      const n = Math.floor((end - body) / frame);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const p = body + i * frame;
        if (fmt.format === 3 && fmt.bits === 32) out[i] = b.readFloatLE(p);
        else if (fmt.bits === 16) out[i] = b.readInt16LE(p) / 32768;
        else if (fmt.bits === 32) out[i] = b.readInt32LE(p) / 2 ** 31;
        else throw new Error(`${path}: unsupported WAV (${JSON.stringify(fmt)})`);
      }
      return { rate: fmt.rate, samples: out };
    }
    off = body + size + (size & 1);
  }
  throw new Error(`${path}: no data chunk`);
}

/** In-place iterative radix-2 FFT (re, im: Float64Array of a power-of-two length). */
export function fft(re, im, inverse = false) {
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      [re[i], re[j]] = [re[j], re[i]];
      [im[i], im[j]] = [im[j], im[i]];
    }
  }
  for (let len = 2; len <= n; len <<= 1) {
    const ang = ((inverse ? 2 : -2) * Math.PI) / len;
    const wr = Math.cos(ang);
    const wi = Math.sin(ang);
    const half = len >> 1;
    for (let i = 0; i < n; i += len) {
      let cr = 1;
      let ci = 0;
      for (let k = 0; k < half; k++) {
        const a = i + k;
        const b = a + half;
        const xr = re[b] * cr - im[b] * ci;
        const xi = re[b] * ci + im[b] * cr;
        re[b] = re[a] - xr;
        im[b] = im[a] - xi;
        re[a] += xr;
        im[a] += xi;
        const t = cr * wr - ci * wi;
        ci = cr * wi + ci * wr;
        cr = t;
      }
    }
  }
  if (inverse) {
    for (let i = 0; i < n; i++) {
      re[i] /= n;
      im[i] /= n;
    }
  }
}

/** A reference signal prepared for repeated alignment searches of pieces
 * up to `maxPiece` samples long (its FFT is computed once). */
export function prepareReference(reference, maxPiece) {
  let n = 1;
  while (n < reference.length + maxPiece) n <<= 1;
  const re = new Float64Array(n);
  const im = new Float64Array(n);
  re.set(reference);
  fft(re, im);
  // Prefix sums of reference² for the window energies.
  const sq = new Float64Array(reference.length + 1);
  for (let i = 0; i < reference.length; i++) sq[i + 1] = sq[i] + reference[i] * reference[i];
  return { reference, n, re, im, sq, maxPiece };
}

/** Where `received` best matches inside `reference`, and how well:
 * the offset k maximizing the normalized cross-correlation
 * Σ ref[n+k]·rec[n] / √(Σ ref[n+k]² · Σ rec[n]²) over k in
 * [0, reference.length − received.length]. `reference` may be a
 * prepareReference() result. Returns { offset, ncc }. */
export function bestAlignment(reference, received) {
  const prep = reference.re ? reference : prepareReference(reference, received.length);
  const ref = prep.reference;
  const m = received.length;
  const span = ref.length - m;
  if (m === 0 || span < 0 || m > prep.maxPiece) throw new Error("received must be shorter than reference");
  const n = prep.n;
  const xr = new Float64Array(n);
  const xi = new Float64Array(n);
  xr.set(received);
  fft(xr, xi);
  // R · conj(X): its inverse is c[k] = Σ_n ref[n+k]·rec[n].
  for (let i = 0; i < n; i++) {
    const a = prep.re[i] * xr[i] + prep.im[i] * xi[i];
    const b = prep.im[i] * xr[i] - prep.re[i] * xi[i];
    xr[i] = a;
    xi[i] = b;
  }
  fft(xr, xi, true);
  let ex = 0;
  for (let i = 0; i < m; i++) ex += received[i] * received[i];
  let best = { offset: 0, ncc: 0 };
  for (let k = 0; k <= span; k++) {
    const win = prep.sq[k + m] - prep.sq[k];
    const den = Math.sqrt(Math.max(win, 0) * ex);
    const ncc = den > 0 ? xr[k] / den : 0;
    if (ncc > best.ncc) best = { offset: k, ncc };
  }
  // Exact value at the best offset.
  let num = 0;
  let e = 0;
  for (let i = 0; i < m; i++) {
    num += ref[best.offset + i] * received[i];
    e += ref[best.offset + i] ** 2;
  }
  best.ncc = e > 0 && ex > 0 ? num / Math.sqrt(e * ex) : 0;
  return best;
}

/** How well `received` carries `reference` when the path may slip (a
 * stalled capture or a jitter buffer shifts the timing by tens of ms now and
 * then): each `windowS` window of `received` is aligned on its own within
 * `reference` (which must hold at least one full loop more than a window).
 * Returns { median, windows: [{ at, ncc, offset }] }. */
export function windowedCorrelation(reference, received, windowS = 1, rate = RATE) {
  const w = Math.round(windowS * rate);
  const windows = [];
  const prep = prepareReference(reference, w);
  for (let start = 0; start + w <= received.length; start += w) {
    const { offset, ncc } = bestAlignment(prep, received.subarray(start, start + w));
    windows.push({ at: start / rate, ncc, offset: offset / rate });
  }
  const sorted = windows.map((x) => x.ncc).sort((a, b) => a - b);
  const median = sorted.length ? sorted[Math.floor((sorted.length - 1) / 2)] : 0;
  return { median, windows };
}

export function rmsDb(samples) {
  let s = 0;
  for (const v of samples) s += v * v;
  return 10 * Math.log10(s / Math.max(1, samples.length) + 1e-20);
}

/** Local maxima of a power spectrum (linear power per bin), strongest first:
 * [{ hz, db }]. */
export function peaks(power, binHz, { count = 6, minHz = 80, maxHz = 4000, radius = 4 } = {}) {
  const out = [];
  const lo = Math.max(radius, Math.ceil(minHz / binHz));
  const hi = Math.min(power.length - radius - 1, Math.floor(maxHz / binHz));
  for (let i = lo; i <= hi; i++) {
    const p = power[i];
    if (!(p > 0)) continue;
    let isMax = true;
    for (let d = -radius; d <= radius && isMax; d++) {
      if (d !== 0 && (power[i + d] > p || (power[i + d] === p && d < 0))) isMax = false;
    }
    if (isMax) out.push({ hz: i * binHz, db: 10 * Math.log10(p) });
  }
  out.sort((a, b) => b.db - a.db);
  return out.slice(0, count);
}

/** The strongest power within ±tol Hz of hz, in dB. */
export function levelAt(power, binHz, hz, tol = 6) {
  let best = 0;
  const lo = Math.max(0, Math.floor((hz - tol) / binHz));
  const hi = Math.min(power.length - 1, Math.ceil((hz + tol) / binHz));
  for (let i = lo; i <= hi; i++) best = Math.max(best, power[i]);
  return 10 * Math.log10(best + 1e-30);
}

/** Power spectrum (linear) of a stretch of samples, Hann-windowed frames of
 * `size`, averaged. */
export function powerSpectrum(samples, size = 16384) {
  const acc = new Float64Array(size / 2);
  const re = new Float64Array(size);
  const im = new Float64Array(size);
  let frames = 0;
  for (let start = 0; start + size <= samples.length; start += size / 2) {
    for (let i = 0; i < size; i++) {
      re[i] = samples[start + i] * (0.5 - 0.5 * Math.cos((2 * Math.PI * i) / size));
      im[i] = 0;
    }
    fft(re, im);
    for (let i = 0; i < size / 2; i++) acc[i] += (re[i] ** 2 + im[i] ** 2) / (size * size);
    frames++;
  }
  for (let i = 0; i < acc.length; i++) acc[i] /= Math.max(1, frames);
  return acc;
}
