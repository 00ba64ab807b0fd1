// The core worker: the only place in the page that holds key material.
//
// It owns the device seed (IndexedDB, ./store.ts), sotto-wasm's `Device`
// (signatures) and each joined room's `Room` (MLS stage group, sealed
// audience keys, SFrame), and it runs the encoded transforms that encrypt
// the microphone's Opus frames and decrypt the receive slots' frames. The
// main thread (src/engine) talks to it with the small RPC in ./protocol.ts
// and gets back signed request bodies, channel messages to send, status
// reports — never a key.
//
// Media frames reach the transforms by one of two paths, both ending in
// `sendFrame` / `recvFrame` below:
//  - RTCRtpScriptTransform (the standard; Chromium 141+): the main thread
//    sets `sender.transform = new RTCRtpScriptTransform(thisWorker, opts)`
//    and this worker gets an `rtctransform` event with the streams.
//  - The older `createEncodedStreams()` (Chromium's insertable streams):
//    the main thread makes the streams and transfers them here in a
//    `streams` message.
// src/engine/media.ts chooses by feature detection.

import init, { Device, Room, generateSeed, markVerified, safetyCode } from "../wasm/sotto_wasm.js";
import type { ClientMessage } from "../wire/ClientMessage";
import type { ServerMessage } from "../wire/ServerMessage";
import type { RoomView } from "../wire/RoomView";
import type { DeviceInfo, E2eeStatus, RosterEntry, TrustLevel } from "../engine/api";
import type { CallMessage, CoreMethods, FromCore, ToCore, TransformOptions } from "./protocol";
import * as store from "./store";
import type { DeviceRecord } from "./store";

const scope = self as unknown as DedicatedWorkerGlobalScope;

/** Receive slots per room (the offer's recvonly m-lines). */
const SLOTS = 3;
/** How often each room's status is reported at least. */
const STATUS_EVERY_MS = 1000;

let ready: Promise<unknown> | null = null;
function wasm(): Promise<unknown> {
  if (!ready) {
    ready = init();
    ready.catch(() => {
      ready = null;
    });
  }
  return ready;
}

// ---- the device ----------------------------------------------------------

let record: DeviceRecord | null | undefined; // undefined: not loaded yet
let device: Device | null = null;
/** The first link of the chain from the last registration request (it becomes the own chain once registered). */
let pendingLink: string | null = null;

async function loadRecord(): Promise<DeviceRecord | null> {
  if (record === undefined) record = await store.load();
  return record;
}

async function needDevice(): Promise<{ rec: DeviceRecord; dev: Device }> {
  const rec = await loadRecord();
  if (!rec) throw new Error("This browser has no device key yet: open an invite link first.");
  await wasm();
  if (!device) device = new Device(rec.seed);
  return { rec, dev: device };
}

async function needRegistered(): Promise<{ rec: DeviceRecord; dev: Device; userId: string; deviceId: string }> {
  const { rec, dev } = await needDevice();
  const { userId, deviceId } = rec.info;
  if (!userId || !deviceId) throw new Error("This device is not registered yet.");
  return { rec, dev, userId, deviceId };
}

function saveRecord(): void {
  if (record) store.save(record).catch((e) => console.warn("sotto: saving the device record failed", e));
}

// ---- rooms ---------------------------------------------------------------

interface OpenRoom {
  roomId: string;
  room: Room;
  timer: ReturnType<typeof setTimeout> | undefined;
  micOn: boolean;
  /** Per receive slot: the account the latest frame came from (as the stage group names it). */
  senders: (string | null)[];
  /** Frames dropped because the room had no send key yet, or the mic was off. */
  noKey: number;
  micOff: number;
  /** The pins as this room last saved (or was given) them. */
  trust: string;
}

const rooms = new Map<number, OpenRoom>();
let ticker: ReturnType<typeof setInterval> | undefined;

function post(msg: FromCore, transfer: Transferable[] = []): void {
  scope.postMessage(msg, transfer);
}

function emit(key: number, msgs: ClientMessage[] | undefined): void {
  if (msgs && msgs.length > 0) post({ kind: "out", key, msgs });
}

function trustLevel(t: unknown): TrustLevel | null {
  if (typeof t !== "string") return null;
  const l = t.toLowerCase();
  return l === "verified" || l === "unverified" || l === "changed" ? l : null;
}

/** sotto-wasm's status as the contract's E2eeStatus (no undefineds, trust in the contract's words). */
function normalizeStatus(s: any): E2eeStatus {
  const roster: RosterEntry[] = Array.isArray(s?.roster)
    ? s.roster.map((e: any) => ({
        userId: typeof e?.userId === "string" ? e.userId : null,
        trust: trustLevel(e?.trust),
        stage: !!e?.stage,
      }))
    : [];
  const n = (v: unknown) => (typeof v === "number" ? v : typeof v === "bigint" ? Number(v) : 0);
  return {
    canDecrypt: !!s?.canDecrypt,
    canEncrypt: !!s?.canEncrypt,
    roster,
    hidden: n(s?.hidden),
    listed: n(s?.listed),
    unchecked: n(s?.unchecked),
    roomCode: typeof s?.roomCode === "string" ? s.roomCode : null,
    alerts: Array.isArray(s?.alerts) ? s.alerts.map(String) : [],
    exposureWindowMs: n(s?.exposureWindowMs),
    framesDecrypted: n(s?.framesDecrypted),
    decryptFailures: n(s?.decryptFailures),
    framesEncrypted: n(s?.framesEncrypted),
  };
}

/** Reports the room's status to the main thread and saves the trust pins when they moved. */
function report(key: number): void {
  const r = rooms.get(key);
  if (!r) return;
  let status: E2eeStatus;
  try {
    status = normalizeStatus(r.room.status());
  } catch (e) {
    console.warn("sotto: room status failed", e);
    return;
  }
  post({ kind: "status", key, status, senders: [...r.senders] });
  saveTrust(r);
}

/**
 * Saves the room's pins when they moved since the room last saved them
 * (not merely when they differ from the record: another room, or a later
 * change to the record, may have moved the record on).
 */
function saveTrust(r: OpenRoom): void {
  if (!record) return;
  try {
    const t = r.room.trust();
    if (t !== r.trust) {
      r.trust = t;
      record.trust = t;
      saveRecord();
    }
  } catch (e) {
    console.warn("sotto: reading the trust pins failed", e);
  }
}

/** Arms the room's timer for its next `handleTimeout`. */
function schedule(key: number): void {
  const r = rooms.get(key);
  if (!r) return;
  if (r.timer !== undefined) clearTimeout(r.timer);
  r.timer = undefined;
  const due = r.room.pollTimeout();
  if (due === undefined || due === null) return;
  const wait = Math.min(Math.max(0, Number(due) - Date.now()), 0x7fffffff);
  r.timer = setTimeout(() => {
    r.timer = undefined;
    enqueue(async () => {
      if (rooms.get(key) !== r) return;
      try {
        emit(key, r.room.handleTimeout(Date.now()));
      } catch (e) {
        console.warn("sotto: room timeout failed", e);
      }
      schedule(key);
      report(key);
    });
  }, wait);
}

function tick(): void {
  for (const key of rooms.keys()) {
    schedule(key);
    report(key);
  }
}

function needRoom(key: number): OpenRoom {
  const r = rooms.get(key);
  if (!r) throw new Error("This room's encryption is not running (it was left or never joined).");
  return r;
}

function errorText(e: unknown): string {
  if (e instanceof Error) return e.message;
  if (typeof e === "string") return e;
  try {
    return JSON.stringify(e);
  } catch {
    return String(e);
  }
}

/** Messages the native driver does not hand to the room's core either: the engine deals with them. */
function forRoomCore(msg: ServerMessage, roomId: string): boolean {
  switch (msg.type) {
    case "media_answer":
    case "media_gone":
    case "going_away":
    case "room_left":
    case "room_ended":
    case "room_you":
      return false;
    case "room_state":
      return msg.room.id === roomId;
    case "e2ee":
      return msg.room_id === roomId;
    default:
      return true;
  }
}

// ---- the methods ---------------------------------------------------------

const methods: { [M in keyof CoreMethods]: (...args: Parameters<CoreMethods[M]>) => Promise<ReturnType<CoreMethods[M]>> } = {
  async device(): Promise<DeviceInfo | null> {
    const rec = await loadRecord();
    return rec ? { ...rec.info } : null;
  },

  async createDevice(): Promise<DeviceInfo> {
    if (await loadRecord()) throw new Error("This browser already has a device key.");
    await wasm();
    const seed = generateSeed();
    const dev = new Device(seed);
    const rec: DeviceRecord = { seed, info: { publicKey: dev.publicKey() }, trust: "" };
    await store.save(rec);
    record = rec;
    device?.free();
    device = dev;
    return { ...rec.info };
  },

  async setRegistered(userId, deviceId, username) {
    const { rec } = await needDevice();
    rec.info = { ...rec.info, userId, deviceId, username };
    if (pendingLink) rec.chain = pendingLink;
    pendingLink = null;
    await store.save(rec);
  },

  async forgetDevice() {
    for (const key of [...rooms.keys()]) await methods.closeRoom(key);
    await store.remove();
    record = null;
    device?.free();
    device = null;
    pendingLink = null;
  },

  async registerRequest(invite, username, displayName, deviceName) {
    const { dev } = await needDevice();
    const req = dev.registerRequest(invite, username, displayName, deviceName);
    // A new account's chain is its first link: kept for safety codes.
    pendingLink = typeof req?.device_link === "string" ? req.device_link : null;
    return req;
  },

  async loginRequest(challengeId, nonce) {
    const { dev } = await needDevice();
    return dev.loginRequest(challengeId, nonce);
  },

  async accessStatement(verb, roomId, targetUserId) {
    const { dev } = await needDevice();
    return dev.accessStatement(verb, roomId, targetUserId, Date.now());
  },

  async deleteSignature() {
    const { dev, userId } = await needRegistered();
    return dev.deleteSignature(userId);
  },

  async safetyCode(theirUserId, theirChain) {
    const { rec, userId } = await needRegistered();
    if (!rec.chain) return null;
    const code = safetyCode(rec.trust || undefined, userId, rec.chain, theirUserId, theirChain);
    return code ?? null;
  },

  async markVerified(theirUserId, theirChain) {
    const { rec, userId } = await needRegistered();
    if (!rec.chain) return false;
    const saved = markVerified(rec.trust || undefined, userId, rec.chain, theirUserId, theirChain);
    if (saved === undefined) return false;
    rec.trust = saved;
    // Open rooms keep trust of their own (and save it when it moves): they
    // learn the mark too, so their next save keeps it.
    for (const r of rooms.values()) {
      if (r.room.markVerified(theirUserId)) {
        rec.trust = r.room.trust();
        r.trust = rec.trust;
      }
    }
    saveRecord();
    return true;
  },

  async openRoom(key, view: RoomView) {
    const { rec, userId, deviceId } = await needRegistered();
    if (rooms.has(key)) throw new Error("This room session is open already.");
    const room = new Room(rec.seed, userId, deviceId, view, rec.trust || undefined, Date.now());
    const r: OpenRoom = {
      roomId: view.id,
      room,
      timer: undefined,
      micOn: false,
      senders: new Array(SLOTS).fill(null),
      noKey: 0,
      micOff: 0,
      trust: rec.trust,
    };
    rooms.set(key, r);
    emit(key, room.takeOutgoing());
    schedule(key);
    report(key);
    if (ticker === undefined) ticker = setInterval(tick, STATUS_EVERY_MS);
  },

  async handle(key, msg) {
    const r = rooms.get(key);
    if (!r || !forRoomCore(msg, r.roomId)) return;
    // A message the core refuses is dropped, as the native driver does: a
    // peer's bad message must not end the session (the core counts it and
    // raises an alert where it matters).
    try {
      emit(key, r.room.handle(Date.now(), msg));
    } catch (e) {
      console.debug("sotto: the room's core refused a message:", errorText(e));
    }
    schedule(key);
    report(key);
  },

  async reconnected(key) {
    const r = needRoom(key);
    r.senders.fill(null);
    emit(key, r.room.reconnected(Date.now()));
    schedule(key);
    report(key);
  },

  async inviteToStage(key, userId) {
    const r = needRoom(key);
    r.room.inviteToStage(userId);
    schedule(key);
    report(key);
  },

  async learnChain(key, userId, chain) {
    const r = needRoom(key);
    let refused: string | null = null;
    try {
      r.room.learnChain(userId, chain);
      if (record && userId === record.info.userId && record.chain !== chain) {
        record.chain = chain;
        saveRecord();
      }
    } catch (e) {
      refused = errorText(e);
    }
    report(key);
    return refused;
  },

  async checkRoster(key) {
    const r = rooms.get(key);
    if (!r) return;
    r.room.checkRoster();
    // Its proof requests go out with the next timeout (due now).
    schedule(key);
    report(key);
  },

  async checkOwnDevices(key, chain, listed) {
    const r = rooms.get(key);
    if (!r) return;
    try {
      r.room.checkOwnDevices(chain, listed);
    } catch (e) {
      // A chain that does not verify, or that lacks this device, is an alert of the core's own.
      console.warn("sotto: own devices not checked:", errorText(e));
    }
    report(key);
  },

  async setMicEnabled(key, on) {
    needRoom(key).micOn = on;
  },

  async closeRoom(key) {
    const r = rooms.get(key);
    if (!r) return;
    rooms.delete(key);
    if (r.timer !== undefined) clearTimeout(r.timer);
    saveTrust(r);
    r.room.free();
    if (rooms.size === 0 && ticker !== undefined) {
      clearInterval(ticker);
      ticker = undefined;
    }
  },
};

// ---- the encoded transforms ---------------------------------------------

function asBuffer(bytes: Uint8Array): ArrayBuffer {
  if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer) {
    return bytes.buffer;
  }
  return bytes.slice().buffer as ArrayBuffer;
}

type Frame = RTCEncodedAudioFrame;

/** The microphone's Opus frame → SFrame; dropped without a send key or with the mic off. */
function sendFrame(key: number, frame: Frame, out: TransformStreamDefaultController<Frame>): void {
  const r = rooms.get(key);
  if (!r) return;
  if (!r.micOn) {
    r.micOff++;
    return;
  }
  let sealed: Uint8Array | undefined;
  try {
    sealed = r.room.encrypt(Date.now(), new Uint8Array(frame.data)) ?? undefined;
  } catch {
    sealed = undefined;
  }
  if (!sealed) {
    r.noKey++;
    return;
  }
  frame.data = asBuffer(sealed);
  out.enqueue(frame);
}

/** A receive slot's SFrame frame → Opus; dropped when it does not decrypt (the core counts it). */
function recvFrame(key: number, slot: number, frame: Frame, out: TransformStreamDefaultController<Frame>): void {
  const r = rooms.get(key);
  if (!r) return;
  const data = new Uint8Array(frame.data);
  // Empty payloads (padding-only RTP packets, seen here every few seconds
  // with the previous packet's timestamp) carry no audio: dropped, not
  // counted as decrypt failures.
  if (data.length === 0) return;
  let opus: Uint8Array | undefined;
  try {
    opus = r.room.decrypt(Date.now(), data) ?? undefined;
  } catch {
    opus = undefined;
  }
  if (!opus) return;
  // Named after it decrypted: a listener's core names a KID's sender only
  // once a frame with it authenticated.
  const who = r.room.sender(data);
  if (who) r.senders[slot] = who;
  frame.data = asBuffer(opus);
  out.enqueue(frame);
}

function runTransform(opts: TransformOptions, readable: ReadableStream, writable: WritableStream): void {
  const { key, role, slot } = opts;
  const transform = new TransformStream<Frame, Frame>({
    transform:
      role === "send"
        ? (frame, out) => sendFrame(key, frame, out)
        : (frame, out) => recvFrame(key, slot, frame, out),
  });
  readable
    .pipeThrough(transform)
    .pipeTo(writable)
    .catch(() => {
      // The peer connection closed (left, or media set up again).
    });
}

// The standard path (see the top of this file).
scope.onrtctransform = (event: RTCTransformEvent) => {
  const t = event.transformer;
  runTransform(t.options as TransformOptions, t.readable, t.writable);
};

// ---- the RPC ---------------------------------------------------------------

// Calls run one after another, in the order they were posted: a server
// message handed over while the room is still being opened waits for it.
let queue: Promise<void> = Promise.resolve();
function enqueue(job: () => Promise<void>): void {
  queue = queue.then(job).catch((e) => console.warn("sotto: core worker job failed", e));
}

async function call(msg: CallMessage): Promise<void> {
  const fn = methods[msg.method] as (...a: unknown[]) => Promise<unknown>;
  try {
    if (!fn) throw new Error(`unknown method ${String(msg.method)}`);
    const value = await fn(...(msg.args as unknown[]));
    post({ kind: "reply", id: msg.id, ok: true, value: value ?? null });
  } catch (e) {
    post({ kind: "reply", id: msg.id, ok: false, error: errorText(e) });
  }
}

scope.onmessage = (event: MessageEvent<ToCore>) => {
  const msg = event.data;
  if (msg.kind === "streams") {
    runTransform(msg, msg.readable, msg.writable);
  } else if (msg.kind === "call") {
    enqueue(() => call(msg));
  }
};
