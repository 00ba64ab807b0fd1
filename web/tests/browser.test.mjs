// sotto's browser client end to end, in real Chromium against the real
// server (`target/debug/sotto serve`, which embeds web/dist), with real audio:
// each browser's microphone is a WAV file of two steady tones and a glide
// (lib/audio.mjs), and what a page hears is measured with a Web Audio
// analyser on its <audio data-slot> elements.
//
// One story, in order: A registers from the admin invite link and starts a
// room; B registers and joins from the hallway; a native `sotto` client
// listens and speaks; the room-info panel; the stage; the ban; an
// accessibility scan; the request log and what the browsers stored.
// Each test states its own preconditions through `world` steps that run
// once (a failed step fails every test that needs it, with its error).
//
// Artifacts (screenshots, console logs, server log, WAVs): web/tests/artifacts
// or $SOTTO_BROWSER_ARTIFACTS.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, existsSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import AxeBuilder from "@axe-core/playwright";

import { ROOT, SOTTO, Server, NativeUser, operatorDevice, killAll, sotto } from "./lib/server.mjs";
import { CHROMIUM, launchPerson, hear, describeHearing, dominant } from "./lib/browser.mjs";
import { VOICES, voiceSignal, writeWav, readWav, windowedCorrelation, rmsDb, RATE } from "./lib/audio.mjs";

const ART = process.env.SOTTO_BROWSER_ARTIFACTS || join(ROOT, "web/tests/artifacts");
const TMP = mkdtempSync(join(tmpdir(), "sotto-browser-test-"));
const ROOM_TITLE = "Tones";
const NATIVE_ROOM_TITLE = "Native tones";
const A = VOICES.A.tones;
const B = VOICES.B.tones;
const N = VOICES.N.tones;

// ---------------------------------------------------------------- setup

const missing = [];
if (!existsSync(SOTTO)) missing.push(`${SOTTO} (cargo build -p sotto)`);
if (!existsSync(CHROMIUM)) missing.push(`${CHROMIUM} (apt-get install chromium)`);
if (!existsSync(join(ROOT, "web/dist/index.html"))) missing.push("web/dist (npm run build in web/)");
// scripts/browser-test (and so CI) has made all of them: there, something
// missing is a failure, never ten skipped tests.
if (missing.length && process.env.SOTTO_BROWSER_REQUIRE === "1") {
  throw new Error(`the browser tests cannot run, missing: ${missing.join(", ")}`);
}
const SKIP_ALL = missing.length ? `missing: ${missing.join(", ")}` : false;

const world = {
  server: null,
  people: {}, // name -> person (lib/browser.mjs)
  wav: {},
  roomId: null,
  nativeRoomId: null,
  carol: null,
  steps: new Map(),
  /** Runs `fn` once; later callers get the same result (or the same error). */
  once(name, fn) {
    if (!this.steps.has(name)) this.steps.set(name, fn());
    return this.steps.get(name);
  },
};

let serverServesUi = true;

before(async () => {
  if (SKIP_ALL) return;
  rmSync(ART, { recursive: true, force: true });
  mkdirSync(ART, { recursive: true });
  for (const v of ["A", "B", "N"]) {
    world.wav[v] = join(ART, `voice-${v}.wav`);
    writeWav(world.wav[v], voiceSignal(v, 4));
  }
  world.server = await Server.start(join(TMP, "data"), join(ART, "server.log"));
  world.app = world.server.origin;
  const index = await fetch(world.server.url + "/");
  const html = await index.text();
  serverServesUi = index.ok && /<script[^>]+src=/.test(html);
  if (!serverServesUi && process.env.SOTTO_TEST_VITE) {
    // Development only: the UI from `vite preview` (web/dist), the API proxied.
    world.app = await vitePreview(world.server.url);
    serverServesUi = true;
  }
  if (!serverServesUi) return;
  const [a, b] = await Promise.all([
    launchPerson("A", { wav: world.wav.A, artifacts: ART }),
    launchPerson("B", { wav: world.wav.B, artifacts: ART }),
  ]);
  world.people.A = a;
  world.people.B = b;
});

after(async () => {
  for (const p of Object.values(world.people)) await p.close();
  await world.server?.stop();
  killAll();
  rmSync(TMP, { recursive: true, force: true });
});

async function vitePreview(apiUrl) {
  const { createServer } = await import("node:net");
  const port = await new Promise((res) => {
    const srv = createServer().listen(0, "127.0.0.1", () => {
      const p = srv.address().port;
      srv.close(() => res(p));
    });
  });
  const { spawn } = await import("node:child_process");
  const vite = spawn(join(ROOT, "web/node_modules/.bin/vite"), ["preview", "--host", "127.0.0.1", "--port", String(port), "--strictPort"], {
    cwd: join(ROOT, "web"),
    env: { ...process.env, SOTTO_SERVER: apiUrl },
    stdio: "ignore",
  });
  process.on("exit", () => vite.kill("SIGKILL"));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    if (await fetch(url + "/").then((r) => r.ok, () => false)) return url;
    await sleep(200);
  }
  throw new Error("vite preview did not start");
}

/** The invite link, on the origin the pages use. */
function inviteLink(code) {
  return `${world.app}/invite/${code}`;
}

function skipReason() {
  if (SKIP_ALL) return SKIP_ALL;
  if (!serverServesUi) return "sotto serve does not serve the web UI at / (web/dist not embedded)";
  return false;
}

let storyNumber = 0;

/** A test of the story: skipped (with the reason) when a part is missing;
 * on failure, a screenshot of every page (artifacts/failed-N-WHO.png). */
function story(name, fn, timeout = 120_000) {
  const n = ++storyNumber;
  test(name, { timeout }, async (t) => {
    const reason = skipReason();
    if (reason) {
      t.skip(reason);
      return;
    }
    try {
      await fn(t);
    } catch (e) {
      for (const p of Object.values(world.people)) {
        await p.page.screenshot({ path: join(ART, `failed-${n}-${p.name}.png`), fullPage: true }).catch(() => {});
      }
      throw e;
    }
  });
}

// ---------------------------------------------------------------- helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` (async, returns { ok, detail }) until ok or `ms` passed. */
async function until(ms, check, every = 500) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    last = await check();
    if (last.ok || Date.now() > end) return last;
    await sleep(every);
  }
}

/** Whether `locator` is visible now (ms = 0) or becomes visible within ms. */
async function visible(locator, ms = 0) {
  if (ms === 0) return locator.first().isVisible();
  try {
    await locator.first().waitFor({ state: "visible", timeout: ms });
    return true;
  } catch {
    return false;
  }
}

/** Registers from an invite link; ends on the hallway. */
async function register(person, inviteUrl, username, displayName) {
  const page = person.page;
  await page.goto(inviteUrl);
  await page.getByRole("heading", { name: "Join sotto" }).waitFor({ timeout: 20_000 });
  await page.getByRole("textbox", { name: "Username" }).fill(username);
  await page.getByRole("textbox", { name: "Display name" }).fill(displayName);
  await page.getByRole("button", { name: "Create account" }).click();
  const hallway = page.getByRole("heading", { name: "Hallway" });
  if (!(await visible(hallway, 30_000))) {
    const alerts = await page.getByRole("alert").allInnerTexts();
    throw new Error(`registering ${username} failed: no hallway after 30 s; alerts: ${JSON.stringify(alerts)}; page: ${(await page.locator("body").innerText()).slice(0, 500)}`);
  }
  person.displayName = displayName;
  person.username = username;
}

/** From the hallway, opens the room titled `title` (reloading the hallway
 * once if the room is not listed yet). */
async function enterFromHallway(person, title) {
  const page = person.page;
  const link = page.getByRole("link", { name: title, exact: true });
  if (!(await visible(link, 8_000))) {
    await page.reload();
    await link.waitFor({ timeout: 15_000 });
  }
  await link.click();
  await page.getByRole("heading", { name: title, exact: true }).waitFor({ timeout: 20_000 });
}

/** On stage: makes sure the microphone is on ("Mute" is offered). */
async function ensureUnmuted(page) {
  const mute = page.getByRole("button", { name: "Mute", exact: true });
  const unmute = page.getByRole("button", { name: "Unmute", exact: true });
  await mute.or(unmute).first().waitFor({ timeout: 20_000 });
  if (await visible(unmute)) {
    await unmute.click();
    await mute.waitFor({ timeout: 10_000 });
  }
}

/** Hears `page` until `tones` dominate (others 20 dB below) or `ms` pass. */
async function waitToHear(page, tones, others, ms = 30_000) {
  let last;
  const r = await until(
    ms,
    async () => {
      last = await hear(page, 2.5);
      return { ok: dominant(last, tones, others), detail: last };
    },
    100,
  );
  return { ok: r.ok, hearing: last };
}

function roomInfo(page) {
  return page
    .getByRole("dialog", { name: "Room info" })
    .or(page.getByRole("region", { name: "Room info" }))
    .first();
}

async function openRoomInfo(page) {
  const panel = roomInfo(page);
  if (!(await visible(panel))) {
    await page.getByRole("button", { name: "Room info", exact: true }).click();
    await panel.waitFor({ timeout: 10_000 });
  }
  return panel;
}

async function closeRoomInfo(page) {
  const panel = roomInfo(page);
  if (!(await visible(panel))) return;
  const close = panel.getByRole("button", { name: "Close", exact: true });
  if (await visible(close)) await close.click();
  else await page.keyboard.press("Escape");
  await panel.waitFor({ state: "hidden", timeout: 5_000 });
}

/** "Leave quietly": back on the hallway. */
async function leaveRoom(page) {
  await page.getByRole("button", { name: "Leave quietly", exact: true }).click();
  await page.getByRole("heading", { name: "Hallway" }).waitFor({ timeout: 15_000 });
}

/** Display names of everyone shown on the room screen (Stage + Audience). */
async function peopleShown(page) {
  const names = [];
  for (const region of ["Stage", "Audience"]) {
    const items = page.getByRole("region", { name: region, exact: true }).getByRole("listitem");
    names.push(...(await items.allInnerTexts()).map((t) => t.trim()));
  }
  return names;
}

/** Maps texts to the known display name each contains (exactly one), else the text. */
function whoIs(texts, known) {
  return texts.map((t) => {
    const hits = known.filter((k) => new RegExp(`\\b${k}\\b`).test(t));
    return hits.length === 1 ? hits[0] : `?${t.replace(/\s+/g, " ")}`;
  });
}

async function rosterTexts(panel) {
  const list = panel.getByRole("list", { name: "Who can decrypt" });
  return (await list.getByRole("listitem").allInnerTexts()).map((t) => t.replace(/\s+/g, " ").trim());
}

/** The room's safety code as a Room info panel shows it. */
async function roomCode(panel) {
  const code = panel.locator("dd.code");
  return (await code.count()) ? (await code.first().innerText()).trim() : "(no safety code shown)";
}

async function framesDecrypted(panel) {
  const m = /Frames decrypted\D*?([\d][\d,\u202f ]*)/.exec(await panel.innerText());
  return m ? Number(m[1].replace(/[^\d]/g, "")) : null;
}

/** Screenshots at desktop and phone width. */
async function screenshots(page, name) {
  for (const [tag, size] of [
    ["desktop", { width: 1280, height: 800 }],
    ["phone", { width: 360, height: 780 }],
  ]) {
    await page.setViewportSize(size);
    await sleep(400);
    await page.screenshot({ path: join(ART, `${name}-${tag}.png`), fullPage: true });
  }
  await page.setViewportSize({ width: 1280, height: 800 });
}

async function openActions(pageOf, displayName) {
  const page = pageOf;
  await page.getByRole("button", { name: `Actions for ${displayName}`, exact: true }).click();
  const menu = page.getByRole("menu");
  await menu.waitFor({ timeout: 5_000 });
  return menu;
}

// ---------------------------------------------------------------- steps

/** A registers from the admin invite link, B from an invite made by the operator. */
function registered() {
  return world.once("registered", async () => {
    const { A: a, B: b } = world.people;
    // The admin invite link exactly as `sotto serve` printed it.
    const adminLink = world.app === world.server.origin ? world.server.adminInvite : inviteLink(world.server.adminInvite.split("/").pop());
    await register(a, adminLink, "alice", "Alice");
    const code = await world.server.invite(1);
    await register(b, inviteLink(code), "bob", "Bob");
  });
}

/** A starts the room "Tones" (open) and speaks; B joins it from the hallway. */
function roomWithAandB() {
  return world.once("room", async () => {
    await registered();
    const { A: a, B: b } = world.people;
    const page = a.page;
    await page.getByRole("button", { name: "Start a room" }).click();
    await page.getByRole("textbox", { name: "Title" }).fill(ROOM_TITLE);
    await page.getByRole("combobox", { name: "Kind" }).selectOption("open");
    await page.getByRole("button", { name: "Start room" }).click();
    await page.getByRole("heading", { name: ROOM_TITLE, exact: true }).waitFor({ timeout: 20_000 });
    const m = /\/room\/([^/?#]+)/.exec(page.url());
    assert.ok(m, `the room screen's URL has no room id: ${page.url()}`);
    world.roomId = decodeURIComponent(m[1]);
    await ensureUnmuted(page);
    await enterFromHallway(b, ROOM_TITLE);
  });
}

/** Puts `person` back in A's room if an earlier test left them elsewhere. */
async function backInRoom(person) {
  const page = person.page;
  if (await visible(page.getByRole("heading", { name: ROOM_TITLE, exact: true }))) return;
  console.error(`(${person.name} was not in ${ROOM_TITLE}: ${page.url()}; going back through the hallway)`);
  await page.goto(world.app + "/");
  await page.getByRole("heading", { name: "Hallway" }).waitFor({ timeout: 20_000 });
  await enterFromHallway(person, ROOM_TITLE);
}

function carol() {
  return world.once("carol", async () => {
    const code = await world.server.invite(1);
    world.carol = await NativeUser.register(world.server, join(TMP, "carol"), "carol", code);
    return world.carol;
  });
}

// ---------------------------------------------------------------- tests

story("A registers from the admin invite, starts a room and speaks; B registers, joins from the hallway and hears A", async () => {
  await roomWithAandB();
  const t0 = Date.now();
  const { ok, hearing } = await waitToHear(world.people.B.page, A, B, 40_000);
  if (ok) console.log(`B heard A ${((Date.now() - t0) / 1000).toFixed(1)} s after entering the room (2.5 s of it measuring)`);
  assert.ok(ok, `B should hear A's tones ${A} dominant and its own ${B} absent; heard: ${describeHearing(hearing, [...A, ...B])}`);
});

story("B's page rings A as speaking (data-speaking on A's stage listitem)", async () => {
  await roomWithAandB();
  const page = world.people.B.page;
  const item = page.getByRole("region", { name: "Stage", exact: true }).getByRole("listitem").filter({ hasText: "Alice" });
  const r = await until(15_000, async () => {
    const v = (await item.count()) ? await item.first().getAttribute("data-speaking") : "(no Alice listitem on stage)";
    return { ok: v === "true", detail: v };
  });
  assert.ok(r.ok, `Alice's stage listitem on B's page: data-speaking=${r.detail}`);
  // And not everyone rings: B, a listener whose microphone is off, does not.
  const bob = page.getByRole("region", { name: "Audience", exact: true }).getByRole("listitem").filter({ hasText: "Bob" });
  assert.equal(await bob.first().getAttribute("data-speaking"), "false", "Bob (listening, not sending) is shown speaking");
});

story("the microphone is captured raw: echo cancellation, noise suppression and auto gain off (the track's settings)", async () => {
  await roomWithAandB();
  for (const p of [world.people.A, world.people.B]) {
    const calls = await p.page.evaluate(() => window.__testGetUserMediaCalls ?? []);
    assert.ok(calls.length > 0, `${p.name}'s page never called getUserMedia`);
    for (const c of calls) {
      for (const s of c.settings) {
        assert.deepEqual(
          { echoCancellation: s.echoCancellation, noiseSuppression: s.noiseSuppression, autoGainControl: s.autoGainControl },
          { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
          `${p.name}'s microphone track: ${JSON.stringify(c)}`,
        );
      }
    }
  }
});

story("browser -> native: `sotto listen` in A's room records what A says (correlation >= 0.8)", async () => {
  await roomWithAandB();
  const c = await carol();
  const out = join(ART, "native-heard-A.wav");
  const { done } = c.listen(world.roomId, out, "10s", join(ART, "native-listen.log"));
  const res = await done;
  // Leave, so that the room holds only A and B again.
  await c.run(["room", "leave", "--room", world.roomId]).catch((e) => console.error(`carol leave: ${e.message}`));
  assert.equal(res.code, 0, `sotto listen failed:\n${res.stderr}`);
  const heard = readWav(out);
  assert.equal(heard.rate, RATE, "listen writes 48 kHz");
  const s = heard.samples;
  assert.ok(s.length >= 6 * RATE, `only ${(s.length / RATE).toFixed(1)} s recorded`);
  // The last 6 s (before the final 0.5 s), half a second at a time, each
  // aligned on its own within the looped source (the path slips by a
  // few ms now and then under load): the median correlation.
  const piece = s.subarray(s.length - 6.5 * RATE, s.length - 0.5 * RATE);
  // One loop and a window: every alignment of a window within the loop.
  const reference = voiceSignal("A", 8).subarray(0, 4.5 * RATE);
  const { median, windows } = windowedCorrelation(reference, piece, 0.5);
  const per = windows.map((w) => `${w.ncc.toFixed(3)}@${w.offset.toFixed(3)}s`).join(" ");
  console.log(`browser -> native: median correlation ${median.toFixed(3)} (per 0.5 s: ${per}), level ${rmsDb(piece).toFixed(1)} dBFS`);
  assert.ok(median >= 0.8, `the native listener's recording correlates ${median.toFixed(3)} (median of 0.5 s windows, < 0.8) with A's voice: ${per}; level ${rmsDb(piece).toFixed(1)} dBFS; listen said:\n${res.stderr.slice(-2000)}`);
});

story("native -> browser: `sotto speak` in a room of its own is heard by B (from the hallway)", async () => {
  await roomWithAandB();
  const c = await carol();
  const b = world.people.B;
  world.nativeRoomId = await c.createRoom(NATIVE_ROOM_TITLE, "open");
  const speaker = c.speak(world.nativeRoomId, world.wav.N, "90s", join(ART, "native-speak.log"));
  let heard;
  try {
    await leaveRoom(b.page);
    await enterFromHallway(b, NATIVE_ROOM_TITLE);
    const t0 = Date.now();
    heard = await waitToHear(b.page, N, [...A, ...B], 40_000);
    if (heard.ok) console.log(`B heard the native speaker ${((Date.now() - t0) / 1000).toFixed(1)} s after entering its room (2.5 s of it measuring)`);
  } finally {
    speaker.child.kill("SIGINT");
    await Promise.race([speaker.done, sleep(5_000)]);
  }
  // Back to A's room (the hallway lists both rooms now: screenshot it).
  await leaveRoom(b.page);
  await screenshots(b.page, "hallway");
  await enterFromHallway(b, ROOM_TITLE);
  const { stderr } = await speaker.done;
  assert.ok(heard.ok, `B should hear the native speaker's tones ${N} dominant (and not A's ${A}); heard: ${describeHearing(heard.hearing, [...N, ...A])}\nspeak said: ${stderr.slice(-1500)}`);
});

story("the Room info panel lists exactly the people in the room; an operator-inserted device for B is a warning, not B", async () => {
  await roomWithAandB();
  const { A: a, B: b } = world.people;
  await backInRoom(b);
  const known = ["Alice", "Bob", "carol"];
  const panel = await openRoomInfo(a.page);
  await panel.getByText("End-to-end encrypted").first().waitFor({ timeout: 20_000 });
  // Who can decrypt = who is in the room (A on stage, B in the audience).
  const r = await until(30_000, async () => {
    const shown = whoIs(await peopleShown(a.page), known).sort();
    const roster = await rosterTexts(panel);
    const names = whoIs(roster, known).sort();
    const trustOk = roster.every((t) => /\b(verified|unverified|changed)\b/i.test(t));
    return {
      ok: JSON.stringify(names) === JSON.stringify(["Alice", "Bob"]) && JSON.stringify(shown) === JSON.stringify(["Alice", "Bob"]) && trustOk,
      detail: { shown, roster },
    };
  });
  assert.ok(r.ok, `A's Room info: "Who can decrypt" should be exactly Alice and Bob (each with verified/unverified/changed), as on the room screen; got ${JSON.stringify(r.detail)}`);
  const text = await panel.innerText();
  for (const words of ["Safety code", "Exposure window", "Frames decrypted"]) {
    assert.ok(text.includes(words), `the Room info panel shows no "${words}": ${text}`);
  }
  const alertsBefore = await panel.getByRole("alert").allInnerTexts();
  assert.deepEqual(alertsBefore, [], "an honest room shows no warning");

  // A compares safety codes with B (B's card, opened from the room) and
  // marks B verified: A's roster then says so.
  await closeRoomInfo(a.page);
  await a.page.getByRole("region", { name: "Audience" }).getByRole("button", { name: "Bob", exact: true }).click();
  const card = a.page.getByRole("dialog", { name: "Bob" });
  await card.getByText("Safety code").waitFor({ timeout: 10_000 });
  await card.getByRole("button", { name: "The codes match: mark as verified" }).click({ timeout: 15_000 });
  await card.getByText("You marked Bob as verified on this device.").waitFor({ timeout: 10_000 });
  await card.getByRole("button", { name: "Close", exact: true }).first().click();
  await openRoomInfo(a.page);
  const marked = await until(15_000, async () => {
    const bob = (await rosterTexts(panel)).filter((t) => /\bBob\b/.test(t));
    return { ok: bob.length === 1 && /\bverified\b/i.test(bob[0]) && !/unverified/i.test(bob[0]), detail: bob };
  });
  assert.ok(marked.ok, `after A marked Bob verified, A's "Who can decrypt" should show Bob verified: ${JSON.stringify(marked.detail)}`);

  // B's panel agrees, and B decrypts A's frames.
  const bPanel = await openRoomInfo(b.page);
  const bRoster = await until(20_000, async () => {
    const names = whoIs(await rosterTexts(bPanel), known).sort();
    return { ok: JSON.stringify(names) === JSON.stringify(["Alice", "Bob"]), detail: names };
  });
  assert.ok(bRoster.ok, `B's "Who can decrypt": ${JSON.stringify(bRoster.detail)}`);
  // B listens, outside the stage group: it reads the room's safety code
  // from the distributor's signed stage map, the same code A reads.
  const codes = await until(20_000, async () => {
    const [ca, cb] = [await roomCode(panel), await roomCode(bPanel)];
    return { ok: /^\d{5}( \d{5}){3}$/.test(ca) && ca === cb, detail: { A: ca, B: cb } };
  });
  assert.ok(codes.ok, `the room's safety code on A's (stage) and B's (audience) Room info: ${JSON.stringify(codes.detail)}`);
  const f1 = await framesDecrypted(bPanel);
  await sleep(1500);
  const f2 = await framesDecrypted(bPanel);
  assert.ok(f1 !== null && f2 > f1 && f1 > 0, `B's "Frames decrypted" should grow while A speaks: ${f1} then ${f2}`);

  // The operator's device row for bob, signed in and listening.
  const op = await operatorDevice(world.server, join(TMP, "operator"), "bob");
  const opWav = join(ART, "operator-heard.wav");
  const opListen = op.user.listen(world.roomId, opWav, "12s", join(ART, "operator-listen.log"));
  const warned = await until(40_000, async () => {
    const alerts = await panel.getByRole("alert").allInnerTexts();
    const roster = await rosterTexts(panel);
    return { ok: alerts.length > 0, detail: { alerts, roster } };
  });
  const rosterAfter = whoIs(await rosterTexts(panel), known).sort();
  const bAlerts = await bPanel.getByRole("alert").allInnerTexts();
  console.log(`operator device: A's alerts ${JSON.stringify(warned.detail.alerts)}; B's alerts ${JSON.stringify(bAlerts)}`);
  const opRes = await opListen.done;
  assert.ok(warned.ok, `A's Room info shows no warning (role=alert) for the operator's device: ${JSON.stringify(warned.detail)}\noperator's listen: ${opRes.stderr.slice(-1500)}`);
  assert.deepEqual(rosterAfter, ["Alice", "Bob"], `the operator's device must not appear as a key holder (as Bob or anyone)`);
  // It got the room's ciphertext and decrypted none of it.
  const counts = /(\d+) packets, (\d+) decrypted/.exec(opRes.stderr + opRes.stdout);
  assert.ok(counts, `the operator's listen printed no packet counts: ${opRes.stderr.slice(-1000)}`);
  const [packets, decrypted] = [Number(counts[1]), Number(counts[2])];
  assert.ok(packets >= 100, `the operator's device got only ${packets} packets: too few to show anything`);
  assert.equal(decrypted, 0, `the operator's device decrypted ${decrypted} of ${packets} packets`);
  const lvl = rmsDb(readWav(opWav).samples);
  assert.ok(lvl < -60, `the operator's device recorded audio at ${lvl.toFixed(1)} dBFS`);
  await closeRoomInfo(a.page);
  await closeRoomInfo(b.page);
});

story("B raises a hand, A invites B to the stage, B joins and speaks, A hears B; A bans B: B's page says so and stops decrypting", async () => {
  await roomWithAandB();
  const { A: a, B: b } = world.people;
  await backInRoom(b);
  await b.page.getByRole("button", { name: "Raise hand", exact: true }).click();
  await b.page.getByRole("button", { name: "Lower hand", exact: true }).waitFor({ timeout: 10_000 });

  const menu = await openActions(a.page, "Bob");
  await menu.getByRole("menuitem", { name: "Invite to stage" }).click();
  const dialog = b.page.getByRole("dialog", { name: "You're invited to the stage" });
  await dialog.waitFor({ timeout: 15_000 });
  await dialog.getByRole("button", { name: "Join the stage" }).click();
  await b.page
    .getByRole("region", { name: "Stage", exact: true })
    .getByRole("listitem")
    .filter({ hasText: "Bob" })
    .waitFor({ timeout: 15_000 });
  await ensureUnmuted(b.page);
  const { ok, hearing } = await waitToHear(a.page, B, A, 40_000);
  assert.ok(ok, `A should hear B's tones ${B} (and not its own ${A}); heard: ${describeHearing(hearing, [...B, ...A])}`);
  // B on stage hears A still.
  const back = await waitToHear(b.page, A, B, 15_000);
  assert.ok(back.ok, `B on stage should hear A: ${describeHearing(back.hearing, [...A, ...B])}`);

  // Two speakers and a listener (a native one) for the screenshots.
  const c = await carol();
  const listener = c.listen(world.roomId, join(ART, "native-listener.wav"), "12s", join(ART, "native-listener.log"));
  await a.page
    .getByRole("region", { name: "Audience", exact: true })
    .getByRole("listitem")
    .filter({ hasText: "carol" })
    .waitFor({ timeout: 10_000 })
    .catch(() => console.error("carol did not show in the audience for the screenshot"));
  await screenshots(a.page, "room-host");
  await screenshots(b.page, "room-speaker");
  await listener.done;
  await c.run(["room", "leave", "--room", world.roomId]).catch(() => {});

  // The ban.
  const bPanel = await openRoomInfo(b.page);
  const before = await framesDecrypted(bPanel);
  await closeRoomInfo(b.page);
  assert.ok(before > 0, `B on stage decrypted no frame before the ban (${before})`);
  const menu2 = await openActions(a.page, "Bob");
  await menu2.getByRole("menuitem", { name: "Ban" }).click();
  const banned = b.page.getByRole("alert").filter({ hasText: "You were banned from this room." });
  await banned.waitFor({ timeout: 15_000 });
  const aShows = await until(10_000, async () => {
    const shown = whoIs(await peopleShown(a.page), ["Alice", "Bob"]);
    return { ok: !shown.includes("Bob"), detail: shown };
  });
  assert.ok(aShows.ok, `A's room screen still shows Bob after the ban: ${JSON.stringify(aShows.detail)}`);
  // B stops decrypting: A still speaks, B hears nothing of it.
  await sleep(1500);
  const h = await hear(b.page, 2.5);
  const sorted = Array.from(h.mix).filter((v) => v > 0).sort((x, y) => x - y);
  const median = sorted.length ? 10 * Math.log10(sorted[Math.floor(sorted.length / 2)]) : -Infinity;
  const loudest = Math.max(...A.map((f) => h.level(f)));
  assert.ok(
    h.audibleSlots === 0 || loudest < Math.max(-90, median + 15),
    `B still hears A after the ban: ${describeHearing(h, A)} (frames decrypted before the ban: ${before})`,
  );
  const info = b.page.getByRole("button", { name: "Room info", exact: true });
  if (await visible(info)) {
    const p = await openRoomInfo(b.page);
    const f1 = await framesDecrypted(p);
    await sleep(2000);
    const f2 = await framesDecrypted(p);
    assert.equal(f2, f1, `B's "Frames decrypted" still grows after the ban (${f1} -> ${f2})`);
    await closeRoomInfo(b.page);
  }
});

story("accessibility: the invite page, hallway and room screens have no serious or critical axe violations", async () => {
  await roomWithAandB();
  const d = await launchPerson("D", { wav: world.wav.N, artifacts: ART });
  world.people.D = d;
  const results = [];
  const scan = async (page, where) => {
    const r = await new AxeBuilder({ page }).analyze();
    assert.ok(r.passes.length > 0, `axe checked nothing on the ${where}`);
    const bad = r.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
    results.push({ where, all: r.violations.length, bad, passes: r.passes.length });
    return bad;
  };
  const code = await world.server.invite(1);
  await d.page.goto(inviteLink(code));
  await d.page.getByRole("heading", { name: "Join sotto" }).waitFor({ timeout: 20_000 });
  await scan(d.page, "invite page");
  await register(d, inviteLink(code), "dana", "Dana");
  await scan(d.page, "hallway");
  await d.page.getByRole("button", { name: "Start a room" }).click();
  await d.page.getByRole("textbox", { name: "Title" }).waitFor();
  await scan(d.page, "hallway, start-a-room form");
  await d.page.goto(world.app + "/");
  await d.page.getByRole("heading", { name: "Hallway" }).waitFor({ timeout: 20_000 });
  await enterFromHallway(d, ROOM_TITLE);
  await scan(d.page, "room screen (listener)");
  await openRoomInfo(d.page);
  await scan(d.page, "room screen with Room info open (listener)");
  await closeRoomInfo(d.page);
  await scan(world.people.A.page, "room screen (host)");
  await leaveRoom(d.page);
  const fmt = results
    .map((r) => `${r.where}: ${r.bad.length} serious/critical of ${r.all} violations (${r.passes} rules passed)` + r.bad.map((v) => `\n  [${v.impact}] ${v.id}: ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).slice(0, 5).join(", ")}`).join(""))
    .join("\n");
  console.log(fmt);
  assert.ok(results.every((r) => r.bad.length === 0), `axe found serious or critical violations:\n${fmt}`);
});

story("the server sends a Content-Security-Policy of default-src 'self', and no page reported a CSP violation", async () => {
  await roomWithAandB();
  const res = await fetch(world.server.url + "/");
  const csp = res.headers.get("content-security-policy") || "";
  assert.match(csp, /default-src 'self'/, `CSP on /: ${JSON.stringify(csp)}`);
  const { readFileSync } = await import("node:fs");
  for (const p of Object.values(world.people)) {
    const log = existsSync(p.logFile) ? readFileSync(p.logFile, "utf8") : "";
    const lines = log.split("\n").filter((l) => /Content Security Policy|Refused to (load|connect|execute|apply|compile)/i.test(l));
    assert.deepEqual(lines, [], `${p.name}'s console reported CSP violations`);
  }
});

story("every request of every page went to the server's origin; after the session the browsers store nothing but the device key store", async () => {
  await roomWithAandB();
  const origin = world.app;
  const host = new URL(origin).host;
  const foreign = [];
  for (const p of Object.values(world.people)) {
    assert.ok(p.requests.length > 0, `no request recorded for ${p.name}`);
    for (const r of p.requests) {
      const u = new URL(r.url);
      const o = u.protocol === "blob:" ? new URL(u.pathname).origin : u.protocol === "data:" ? origin : u.origin;
      if (o !== origin) foreign.push(`${p.name}: ${r.method} ${r.url} (${r.type})`);
    }
    for (const ws of p.websockets) {
      if (new URL(ws).host !== host) foreign.push(`${p.name}: websocket ${ws}`);
    }
  }
  assert.deepEqual(foreign, [], `requests to other origins than ${origin}`);
  // The log is complete enough to mean something: it holds the core
  // worker's script and the wasm it loads, and the session channel.
  for (const p of Object.values(world.people)) {
    const paths = [...new Set(p.requests.map((r) => `${r.type} ${new URL(r.url).pathname.replace(/\/[0-9a-f]{16,}/g, "/ID")}`))];
    console.log(`${p.name}: ${p.requests.length} requests, ${p.websockets.length} websockets: ${paths.join(", ")}`);
    assert.ok(p.requests.some((r) => /\.wasm(\?|$)/.test(r.url)), `${p.name}: no .wasm request in the log: ${paths.join(", ")}`);
    assert.ok(p.websockets.length > 0, `${p.name}: no websocket in the log`);
  }

  // End the session: A ends the room (B was banned; D left).
  const a = world.people.A;
  const end = a.page.getByRole("button", { name: "End room", exact: true });
  if (await visible(end)) {
    await end.click();
    // "End this room for everyone?" -> "End the room".
    const confirm = a.page.getByRole("dialog").getByRole("button", { name: /^end (the )?room$/i });
    if (await visible(confirm, 3_000)) await confirm.click();
    await a.page.getByRole("alert").filter({ hasText: "This room has ended." }).or(a.page.getByRole("heading", { name: "Hallway" })).first().waitFor({ timeout: 10_000 });
  }
  await sleep(1000);

  for (const p of Object.values(world.people)) {
    // Reloading the hallway signs in again from the stored device alone.
    await p.page.goto(origin + "/");
    await p.page.getByRole("heading", { name: "Hallway" }).waitFor({ timeout: 20_000 });
    const stored = await p.page.evaluate(async () => {
      const out = {
        indexedDB: [],
        localStorage: localStorage.length,
        sessionStorage: sessionStorage.length,
        caches: await caches.keys(),
        cookie: document.cookie,
        serviceWorkers: (await navigator.serviceWorker?.getRegistrations?.())?.length ?? 0,
        opfs: [],
      };
      for (const info of await indexedDB.databases()) {
        const db = await new Promise((res, rej) => {
          const r = indexedDB.open(info.name);
          r.onsuccess = () => res(r.result);
          r.onerror = () => rej(r.error);
        });
        const stores = [...db.objectStoreNames];
        db.close();
        out.indexedDB.push({ name: info.name, stores });
      }
      try {
        const root = await navigator.storage.getDirectory();
        for await (const k of root.keys()) out.opfs.push(k);
      } catch (e) {
        out.opfs = [`(error: ${e})`];
      }
      return out;
    });
    const cookies = await p.context.cookies();
    const got = { ...stored, cookies: cookies.map((c) => c.name) };
    assert.deepEqual(
      got,
      {
        indexedDB: [{ name: "sotto", stores: ["device"] }],
        localStorage: 0,
        sessionStorage: 0,
        caches: [],
        cookie: "",
        serviceWorkers: 0,
        opfs: [],
        cookies: [],
      },
      `${p.name}'s browser stores more than the device key store`,
    );
  }
});
