// Audio levels for the speaking rings: one AnalyserNode per receive slot and
// one for the microphone, read about ten times a second as 0..1.

const FFT = 1024;
/** Levels map -60 dBFS (and below) to 0 and 0 dBFS to 1. */
const FLOOR_DB = -60;

interface Tap {
  track: MediaStreamTrack;
  source: MediaStreamAudioSourceNode;
  analyser: AnalyserNode;
}

export class Levels {
  private ctx: AudioContext | null;
  private taps = new Map<string, Tap>();
  private buf = new Float32Array(FFT);

  constructor() {
    try {
      this.ctx = new AudioContext();
    } catch {
      this.ctx = null; // No Web Audio: no levels, audio still plays.
    }
    this.resume();
  }

  /** Starts the context if the browser held it back (autoplay policy); call from user actions too. */
  resume(): void {
    if (this.ctx && this.ctx.state === "suspended") this.ctx.resume().catch(() => {});
  }

  /** Measures `track` under `name` ("mic", "slot0", ...), replacing what was there. */
  set(name: string, track: MediaStreamTrack | null): void {
    const old = this.taps.get(name);
    if (old && old.track === track) return;
    if (old) {
      old.source.disconnect();
      this.taps.delete(name);
    }
    if (!track || !this.ctx) return;
    try {
      const source = this.ctx.createMediaStreamSource(new MediaStream([track]));
      const analyser = this.ctx.createAnalyser();
      analyser.fftSize = FFT;
      source.connect(analyser);
      this.taps.set(name, { track, source, analyser });
    } catch (e) {
      console.warn("sotto: cannot measure audio level", e);
    }
  }

  /** The level (0..1) of the audio under `name` now. */
  level(name: string): number {
    const tap = this.taps.get(name);
    if (!tap || tap.track.readyState === "ended") return 0;
    tap.analyser.getFloatTimeDomainData(this.buf);
    let sum = 0;
    for (let i = 0; i < this.buf.length; i++) sum += this.buf[i] * this.buf[i];
    const rms = Math.sqrt(sum / this.buf.length);
    if (rms <= 0) return 0;
    const db = 20 * Math.log10(rms);
    return Math.min(1, Math.max(0, (db - FLOOR_DB) / -FLOOR_DB));
  }

  close(): void {
    for (const tap of this.taps.values()) tap.source.disconnect();
    this.taps.clear();
    this.ctx?.close().catch(() => {});
    this.ctx = null;
  }
}
