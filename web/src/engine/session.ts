// A joined room on the main thread: hands server messages to the core
// worker, sends what it answers, keeps the media connection, fetches the
// members' device chains for the roster, and reports status and levels.

import type { ClientMessage } from "../wire/ClientMessage";
import type { ServerMessage } from "../wire/ServerMessage";
import type { RoomView } from "../wire/RoomView";
import type { E2eeStatus, JoinOptions, RoomSession } from "./api";
import type { Core } from "./core";
import { Levels } from "./levels";
import { Media, SLOTS } from "./media";

const LEVELS_EVERY_MS = 100;
/** Most chains fetched per pass, the next members not learnt yet (as the native driver). */
const MAX_CHAIN_FETCHES = 200;
/** Shortest time between two fetches of every member's chain (when the roster names unknown key holders). */
const REFETCH_ALL_MS = 5000;
/** How often the devices the server lists for this account are checked. */
const OWN_DEVICES_EVERY_MS = 30_000;
/** Alerts kept for the room-info panel. */
const MAX_ALERTS = 50;

function emptyStatus(): E2eeStatus {
  return {
    canDecrypt: false,
    canEncrypt: false,
    roster: [],
    hidden: 0,
    listed: 0,
    unchecked: 0,
    roomCode: null,
    alerts: [],
    exposureWindowMs: 0,
    framesDecrypted: 0,
    decryptFailures: 0,
    framesEncrypted: 0,
  };
}

export class Session implements RoomSession {
  private view: RoomView;
  private status: E2eeStatus = emptyStatus();
  private alerts: string[] = [];
  private lastReported = "";
  private senders: (string | null)[] = new Array(SLOTS).fill(null);
  private readonly levels = new Levels();
  private readonly media: Media;
  private levelTimer: ReturnType<typeof setInterval> | undefined;
  private ownTimer: ReturnType<typeof setInterval> | undefined;
  private closed = false;
  private micOn = false;
  /** A user gesture lets held-back audio start (autoplay policy). */
  private readonly unblock = (): void => {
    this.levels.resume();
    this.media.resumePlayback();
  };

  // Device chains: learnt (verified by the core), asked (fetched once this round).
  private learned = new Set<string>();
  private asked = new Set<string>();
  private fetching = false;
  private fetchAgain = false;
  private rosterSeen = "";
  /** Chains or roster changed since the core last checked the roster. */
  private rosterDirty = false;
  private refetchAllAt = 0;
  private refetchTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly core: Core,
    private readonly key: number,
    private readonly me: string,
    private readonly myUsername: string | undefined,
    private readonly opts: JoinOptions,
  ) {
    this.view = opts.room;
    this.media = new Media(core, key, opts.room.id, { send: (m) => this.send(m), alert: (t) => this.alert(t) }, this.levels, opts.microphoneId);
  }

  /** Opens the room's E2EE state in the worker, then the media (in the background). */
  async open(): Promise<void> {
    this.core.addRoom(this.key, {
      out: (msgs) => msgs.forEach((m) => this.send(m)),
      status: (s, senders) => this.onCoreStatus(s, senders),
    });
    try {
      await this.core.call("openRoom", this.key, this.view);
    } catch (e) {
      this.shutdown();
      throw e;
    }
    this.levelTimer = setInterval(() => this.reportLevels(), LEVELS_EVERY_MS);
    document.addEventListener("pointerdown", this.unblock, true);
    document.addEventListener("keydown", this.unblock, true);
    void this.fetchChains();
    if (this.opts.ownDevices) {
      void this.checkOwnDevices();
      this.ownTimer = setInterval(() => void this.checkOwnDevices(), OWN_DEVICES_EVERY_MS);
    }
    void this.media.start();
  }

  handle(msg: ServerMessage): void {
    if (this.closed) return;
    const id = this.view.id;
    switch (msg.type) {
      case "media_answer":
        if (msg.room_id === id) this.media.answer(msg.sdp);
        return;
      case "media_gone":
        if (msg.room_id === id) this.media.gone();
        return;
      case "going_away":
        this.media.channelLost();
        return;
      case "room_left":
      case "room_ended":
        // Removed, banned or ended: stop decrypting now (the UI says why).
        if (msg.room_id === id) this.close();
        return;
      case "room_state":
        if (msg.room.id !== id) return;
        this.update(msg.room);
        break;
      case "e2ee":
        if (msg.room_id !== id) return;
        break;
    }
    this.core.call("handle", this.key, msg).catch((e) => console.warn("sotto: core handle failed", e));
  }

  update(room: RoomView): void {
    if (this.closed || room.id !== this.view.id || room.version < this.view.version) return;
    this.view = room;
    // New members' chains (the fetch skips those learnt already).
    void this.fetchChains();
  }

  setMicEnabled(on: boolean): void {
    if (this.closed) return;
    this.micOn = on;
    this.levels.resume();
    this.media.setMic(on);
    this.core.call("setMicEnabled", this.key, on).catch((e) => console.warn("sotto: mic switch failed", e));
  }

  /** Another microphone for this room (replaces the sending track). Not in api.ts yet. */
  setMicrophone(deviceId: string): void {
    if (this.closed) return;
    void this.media.setMicrophone(deviceId);
  }

  inviteToStage(userId: string): void {
    if (this.closed) return;
    this.core.call("inviteToStage", this.key, userId).catch((e) => this.alert(`Could not invite to the stage: ${e.message}`));
  }

  reconnected(): void {
    if (this.closed) return;
    this.senders.fill(null);
    this.core
      .call("reconnected", this.key)
      .catch((e) => console.warn("sotto: core reconnect failed", e))
      .finally(() => this.media.channelBack());
  }

  close(): void {
    if (this.closed) return;
    this.media.close(); // sends media_leave: before `closed` stops sending
    this.shutdown();
    this.core.call("closeRoom", this.key).catch((e) => console.warn("sotto: closing the room failed", e));
  }

  private shutdown(): void {
    this.media.close(); // (a no-op when close() did it first)
    this.closed = true;
    clearInterval(this.levelTimer);
    clearInterval(this.ownTimer);
    document.removeEventListener("pointerdown", this.unblock, true);
    document.removeEventListener("keydown", this.unblock, true);
    try {
      this.opts.onLevels({}); // Nobody speaks here any more.
    } catch {
      // the UI's problem
    }
    clearTimeout(this.refetchTimer);
    this.levels.close();
    this.core.removeRoom(this.key);
  }

  private send(msg: ClientMessage): void {
    if (this.closed) return;
    try {
      this.opts.send(msg);
    } catch (e) {
      console.warn("sotto: sending on the channel failed", e);
    }
  }

  private alert(text: string): void {
    if (this.alerts.includes(text)) return;
    this.alerts.push(text);
    if (this.alerts.length > MAX_ALERTS) this.alerts.splice(0, this.alerts.length - MAX_ALERTS);
    this.deliverStatus();
  }

  private onCoreStatus(s: E2eeStatus, senders: (string | null)[]): void {
    if (this.closed) return;
    for (let i = 0; i < SLOTS; i++) this.senders[i] = senders[i] ?? null;
    for (const a of s.alerts) {
      if (!this.alerts.includes(a)) this.alerts.push(a);
    }
    if (this.alerts.length > MAX_ALERTS) this.alerts.splice(0, this.alerts.length - MAX_ALERTS);
    this.status = s;
    this.deliverStatus();
    this.checkRoster(s);
  }

  private deliverStatus(): void {
    const full: E2eeStatus = { ...this.status, alerts: [...this.alerts] };
    const text = JSON.stringify(full);
    if (text === this.lastReported) return;
    this.lastReported = text;
    try {
      this.opts.onStatus(full);
    } catch (e) {
      console.warn("sotto: onStatus failed", e);
    }
  }

  /**
   * Each new roster: fetch the chains not learnt yet, then have the core
   * name the key holders (and count hidden ones), as the native driver does
   * for each roster version. A roster that names unknown key holders (or
   * counts hidden ones) may be due to chains that changed since they were
   * learnt (a member added a device): then every member's chain is fetched
   * again, at most every REFETCH_ALL_MS.
   */
  private checkRoster(s: E2eeStatus): void {
    const seen = JSON.stringify([s.roster.map((e) => [e.userId, e.stage]), s.hidden]);
    if (seen === this.rosterSeen) return;
    this.rosterSeen = seen;
    const unnamed = s.hidden > 0 || s.roster.some((e) => e.userId === null);
    if (!unnamed) {
      this.rosterDirty = true;
      void this.fetchChains();
      return;
    }
    const wait = this.refetchAllAt - Date.now();
    clearTimeout(this.refetchTimer);
    this.refetchTimer = setTimeout(() => {
      this.refetchAllAt = Date.now() + REFETCH_ALL_MS;
      this.learned.clear();
      this.asked.clear();
      this.rosterDirty = true;
      void this.fetchChains();
    }, Math.max(0, wait));
  }

  /**
   * Fetches (one at a time) the chains of members not learnt or asked yet
   * and has the core verify them; then, if anything changed, has it check
   * the roster.
   */
  private async fetchChains(): Promise<void> {
    if (this.fetching) {
      this.fetchAgain = true;
      return;
    }
    this.fetching = true;
    try {
      do {
        this.fetchAgain = false;
        // The next members not learnt yet (not the first ones again): in a
        // large room every member's chain is learnt over a few passes, so
        // the sampled roster check reaches all of them.
        const todo = this.view.members
          .filter((m) => !this.learned.has(m.user_id) && !this.asked.has(m.user_id))
          .slice(0, MAX_CHAIN_FETCHES);
        for (const m of todo) {
          if (this.closed) return;
          this.asked.add(m.user_id);
          let chain: string | null = null;
          try {
            chain = await this.opts.fetchChain(m.user_id, m.username);
          } catch {
            chain = null; // Its keys stay unnamed: counted as hidden, the safe side.
          }
          if (chain === null || this.closed) continue;
          this.rosterDirty = true;
          try {
            const refused = await this.core.call("learnChain", this.key, m.user_id, chain);
            // A refused chain is an alert of the core's own (in its status).
            if (refused === null) this.learned.add(m.user_id);
            else console.warn(`sotto: the device chain of @${m.username} was refused: ${refused}`);
          } catch (e) {
            console.warn("sotto: learning a chain failed", e);
          }
        }
      } while (this.fetchAgain && !this.closed);
      if (this.rosterDirty && !this.closed) {
        this.rosterDirty = false;
        await this.core.call("checkRoster", this.key).catch((e) => console.warn("sotto: roster check failed", e));
      }
    } finally {
      this.fetching = false;
    }
  }

  /** Has the core check the devices the server lists for this account against its own chain. */
  private async checkOwnDevices(): Promise<void> {
    const ask = this.opts.ownDevices;
    if (!ask || !this.myUsername || this.closed) return;
    try {
      const [listed, chain] = await Promise.all([ask(), this.opts.fetchChain(this.me, this.myUsername)]);
      // The server did not answer: tried again later.
      if (!listed || !chain || this.closed) return;
      await this.core.call("checkOwnDevices", this.key, chain, listed);
    } catch (e) {
      console.warn("sotto: own devices not checked", e);
    }
  }

  /**
   * Who a receive slot is playing: the core's name for the sender of its
   * latest frame — from the stage group's credentials on stage, from the
   * distributor's signed stage map and the verified chains in the
   * audience. Never the server's word: no name, no ring.
   */
  private slotUser(slot: number): string | null {
    return this.senders[slot];
  }

  private reportLevels(): void {
    if (this.closed) return;
    const levels: Record<string, number> = {};
    const put = (user: string | null, level: number) => {
      if (user) levels[user] = Math.max(levels[user] ?? 0, level);
    };
    put(this.me, this.micOn ? this.levels.level("mic") : 0);
    for (let slot = 0; slot < SLOTS; slot++) {
      const level = this.levels.level(`slot${slot}`);
      put(level > 0 ? this.slotUser(slot) : null, level);
    }
    try {
      this.opts.onLevels(levels);
    } catch (e) {
      console.warn("sotto: onLevels failed", e);
    }
  }
}
