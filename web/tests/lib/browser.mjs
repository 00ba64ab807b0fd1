// Chromium (Debian's package) driven by playwright-core: one browser process
// per person (the fake microphone file is a browser-wide flag), a fresh
// user-data-dir each, every request and console line recorded.

import { chromium } from "playwright-core";
import { mkdtempSync, appendFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { peaks, levelAt } from "./audio.mjs";

export const CHROMIUM = process.env.SOTTO_CHROMIUM || "/usr/bin/chromium";

const FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--use-fake-ui-for-media-stream",
  "--use-fake-device-for-media-stream",
  "--autoplay-policy=no-user-gesture-required",
];

/** A person's browser: { name, context, page, requests, websockets, logFile, close() }. */
export async function launchPerson(name, { wav, artifacts, viewport = { width: 1280, height: 800 } }) {
  const userDataDir = mkdtempSync(join(tmpdir(), `sotto-chromium-${name}-`));
  const logFile = join(artifacts, `console-${name}.log`);
  const args = [...FLAGS];
  if (wav) args.push(`--use-file-for-fake-audio-capture=${wav}`);
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args,
    viewport,
    acceptDownloads: true,
  });
  const person = {
    name,
    context,
    userDataDir,
    logFile,
    requests: [],
    websockets: [],
    page: null,
    async close() {
      await context.close().catch(() => {});
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
  // Test-side instrumentation (the page has no test hooks): remember what
  // each getUserMedia call asked for and the settings of the track it got.
  await context.addInitScript(() => {
    const md = navigator.mediaDevices;
    if (!md?.getUserMedia) return;
    const original = md.getUserMedia.bind(md);
    const calls = [];
    Object.defineProperty(window, "__testGetUserMediaCalls", { value: calls });
    md.getUserMedia = async (constraints) => {
      const stream = await original(constraints);
      calls.push({
        constraints: JSON.parse(JSON.stringify(constraints ?? null)),
        settings: stream.getAudioTracks().map((t) => t.getSettings()),
      });
      return stream;
    };
  });
  const log = (line) => appendFileSync(logFile, `${new Date().toISOString()} ${line}\n`);
  context.on("request", (r) => person.requests.push({ url: r.url(), method: r.method(), type: r.resourceType() }));
  const watch = (page) => {
    page.on("console", (m) => {
      const where = m.location()?.url ? ` (${m.location().url})` : "";
      log(`[${m.type()}] ${m.text()}${where}`);
    });
    page.on("pageerror", (e) => log(`[pageerror] ${e.stack || e}`));
    page.on("websocket", (ws) => {
      person.websockets.push(ws.url());
      log(`[websocket] ${ws.url()}`);
      ws.on("close", () => log(`[websocket closed] ${ws.url()}`));
    });
    page.on("worker", (w) => {
      log(`[worker] ${w.url()}`);
    });
    page.on("requestfailed", (r) => log(`[requestfailed] ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
    page.on("response", (r) => {
      if (r.status() >= 400) log(`[http ${r.status()}] ${r.request().method()} ${r.url()}`);
    });
  };
  context.on("page", watch);
  for (const p of context.pages()) watch(p);
  person.page = context.pages()[0] || (await context.newPage());
  return person;
}

/** Runs in the page: for `seconds`, the average power spectrum of each
 * `<audio data-slot>` element's stream (Web Audio AnalyserNode), and its
 * RMS level. Returns { sampleRate, binHz, slots: [{ slot, tracks, power, rmsDb }] }. */
async function pageSpectrum({ seconds, fftSize }) {
  const els = [...document.querySelectorAll("audio[data-slot]")];
  const ctx = new AudioContext();
  await ctx.resume();
  const sink = ctx.createGain();
  sink.gain.value = 0;
  sink.connect(ctx.destination);
  const nodes = els.map((el) => {
    const stream = el.srcObject;
    const tracks = stream instanceof MediaStream ? stream.getAudioTracks() : [];
    const info = {
      slot: el.dataset.slot,
      tracks: tracks.map((t) => ({ state: t.readyState, muted: t.muted, enabled: t.enabled })),
    };
    if (tracks.length === 0) return { info };
    const source = ctx.createMediaStreamSource(stream);
    const an = ctx.createAnalyser();
    an.fftSize = fftSize;
    an.smoothingTimeConstant = 0;
    source.connect(an);
    an.connect(sink);
    return {
      info,
      an,
      acc: new Float64Array(an.frequencyBinCount),
      db: new Float32Array(an.frequencyBinCount),
      time: new Float32Array(fftSize),
      energy: 0,
      n: 0,
    };
  });
  const end = performance.now() + seconds * 1000;
  // Let the analysers fill once before the first reading.
  await new Promise((r) => setTimeout(r, (fftSize / ctx.sampleRate) * 1000 + 50));
  let reads = 0;
  while (performance.now() < end) {
    for (const n of nodes) {
      if (!n.an) continue;
      n.an.getFloatFrequencyData(n.db);
      for (let i = 0; i < n.db.length; i++) n.acc[i] += Number.isFinite(n.db[i]) ? 10 ** (n.db[i] / 10) : 0;
      n.an.getFloatTimeDomainData(n.time);
      let e = 0;
      for (const v of n.time) e += v * v;
      n.energy += e / n.time.length;
      n.n++;
    }
    reads++;
    await new Promise((r) => setTimeout(r, 100));
  }
  await ctx.close();
  return {
    sampleRate: ctx.sampleRate,
    binHz: ctx.sampleRate / fftSize,
    reads,
    slots: nodes.map((n) => ({
      ...n.info,
      power: n.an ? Array.from(n.acc, (v) => v / Math.max(1, n.n)) : null,
      rmsDb: n.an ? 10 * Math.log10(n.energy / Math.max(1, n.n) + 1e-20) : null,
    })),
  };
}

/** What a page hears over `seconds`: each slot's and the mix's spectrum
 * peaks, and the level at given frequencies. */
export async function hear(page, seconds = 2.5, fftSize = 32768) {
  const r = await page.evaluate(pageSpectrum, { seconds, fftSize });
  const bins = fftSize / 2;
  const mix = new Float64Array(bins);
  for (const s of r.slots) if (s.power) s.power.forEach((v, i) => (mix[i] += v));
  const audible = r.slots.filter((s) => s.power);
  return {
    binHz: r.binHz,
    slotCount: r.slots.length,
    audibleSlots: audible.length,
    mix,
    slots: r.slots.map((s) => ({
      slot: s.slot,
      tracks: s.tracks,
      rmsDb: s.rmsDb,
      peaks: s.power ? peaks(s.power, r.binHz) : [],
    })),
    peaks: peaks(mix, r.binHz),
    level(hz) {
      return levelAt(mix, r.binHz, hz);
    },
  };
}

/** Human-readable summary of a hear() result, for assertion messages. */
export function describeHearing(h, extraHz = []) {
  const f = (p) => `${p.hz.toFixed(0)} Hz ${p.db.toFixed(1)} dB`;
  const lv = extraHz.map((hz) => `${hz} Hz: ${h.level(hz).toFixed(1)} dB`).join(", ");
  return (
    `${h.slotCount} audio[data-slot] element(s), ${h.audibleSlots} with a stream; mix peaks: [${h.peaks.map(f).join("; ")}]` +
    (lv ? `; levels ${lv}` : "") +
    `; per slot: ${h.slots.map((s) => `#${s.slot} ${JSON.stringify(s.tracks)} rms ${s.rmsDb?.toFixed(1)} dB [${s.peaks.slice(0, 3).map(f).join("; ")}]`).join(" | ")}`
  );
}

/** Whether `tones` are the two strongest peaks of the mix, and every
 * `others` frequency is at least 20 dB below the weaker of them. */
export function dominant(h, tones, others = [], tolHz = 6) {
  const top = h.peaks.slice(0, 2).map((p) => p.hz);
  const topOk = tones.every((f) => top.some((hz) => Math.abs(hz - f) <= tolHz));
  const weakest = Math.min(...tones.map((f) => h.level(f)));
  const othersOk = others.every((f) => h.level(f) <= weakest - 20);
  // Not just noise: the tones stand 30 dB above the median of the spectrum.
  const sorted = Array.from(h.mix).filter((v) => v > 0).sort((a, b) => a - b);
  const median = sorted.length ? 10 * Math.log10(sorted[Math.floor(sorted.length / 2)]) : -Infinity;
  return topOk && othersOk && weakest >= median + 30 && weakest > -80;
}
