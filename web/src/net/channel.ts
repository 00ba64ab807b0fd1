// The session channel: one WebSocket to /api/ws on the page's own origin.
// `hello` with the token first, then the subscriptions; a ping every 20 s;
// on a close (or the server's `going_away`) it reconnects with jittered
// backoff, subscribes again and tells each room it was reconnected.

import type { ClientMessage } from "../wire/ClientMessage";
import type { ServerMessage } from "../wire/ServerMessage";
import type { RoomView } from "../wire/RoomView";
import { applyDelta } from "./roomDelta";

/** The protocol version both sides speak. */
const PROTOCOL_VERSION = 1;
const PING_EVERY_MS = 20_000;
const BACKOFF_FIRST_MS = 100;
const BACKOFF_MAX_MS = 5_000;

/**
 * A client message as it travels (`{"type": "hello", ...}`, serde's internal
 * tag). The channel's own messages are written here; the engine's messages
 * (E2EE, media) pass through as the engine made them.
 */
type OwnMessage =
  | { type: "hello"; token: string }
  | { type: "subscribe"; room_id: string }
  | { type: "unsubscribe"; room_id: string }
  | { type: "ping"; nonce: number };

export interface RoomHandlers {
  /** Every server message for this room, plus welcome, going_away and error. */
  message(msg: ServerMessage): void;
  /** The channel came back after a disconnection and the room is subscribed again. */
  reconnected(): void;
}

export type ChannelState = "connecting" | "open" | "down" | "closed";

/** The room a server message is about, if any. */
export function roomOf(msg: ServerMessage): string | null {
  switch (msg.type) {
    case "room_state":
      return msg.room.id;
    case "room_delta":
      return msg.room_id;
    case "room_left":
    case "room_ended":
    case "room_you":
    case "media_answer":
    case "e2ee":
    case "media_gone":
      return msg.room_id;
    default:
      return null;
  }
}

export class Channel {
  private ws: WebSocket | null = null;
  private state: ChannelState = "down";
  private attempt = 0;
  private everOpen = false;
  private nonce = 0;
  private pingTimer: number | undefined;
  private retryTimer: number | undefined;
  private goingAwayMs: number | null = null;
  private queue: string[] = [];
  private readonly rooms = new Map<string, RoomHandlers>();
  /** Each subscribed room's state, kept current by the server's deltas. */
  private readonly views = new Map<string, RoomView>();
  private readonly stateListeners = new Set<(s: ChannelState) => void>();
  private readyWaiters: Array<() => void> = [];

  private helloRefused = false;

  /**
   * `token(fresh)` is asked on every (re)connection; `fresh`: the server
   * refused the last one (expired, revoked), so sign in again.
   */
  constructor(private readonly token: (fresh: boolean) => Promise<string>) {}

  start(): void {
    if (this.state === "closed") return;
    if (this.ws) return;
    this.connect();
  }

  /** Closes for good (sign-out, account deleted). */
  close(): void {
    this.setState("closed");
    window.clearTimeout(this.retryTimer);
    window.clearInterval(this.pingTimer);
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000);
    this.rooms.clear();
    this.views.clear();
  }

  getState(): ChannelState {
    return this.state;
  }

  onState(fn: (s: ChannelState) => void): () => void {
    this.stateListeners.add(fn);
    return () => this.stateListeners.delete(fn);
  }

  /** Resolves once the channel is open and authenticated. */
  ready(): Promise<void> {
    if (this.state === "open") return Promise.resolve();
    return new Promise((resolve) => this.readyWaiters.push(resolve));
  }

  /** Starts receiving a room's messages (after `POST join`). */
  subscribe(roomId: string, handlers: RoomHandlers): void {
    this.rooms.set(roomId, handlers);
    this.sendOwn({ type: "subscribe", room_id: roomId });
  }

  unsubscribe(roomId: string): void {
    this.views.delete(roomId);
    if (!this.rooms.delete(roomId)) return;
    if (this.state === "open") this.sendOwn({ type: "unsubscribe", room_id: roomId });
  }

  /** Sends a message made by the engine (E2EE, media offer, media leave). */
  send(msg: ClientMessage): void {
    this.sendText(JSON.stringify({ v: PROTOCOL_VERSION, msg }));
  }

  private sendOwn(msg: OwnMessage): void {
    this.sendText(JSON.stringify({ v: PROTOCOL_VERSION, msg }));
  }

  private sendText(text: string): void {
    if (this.state === "open" && this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(text);
    } else if (this.state === "connecting") {
      // Sent once the server said welcome (subscriptions are sent again anyway).
      if (this.queue.length < 256) this.queue.push(text);
    }
    // Down: dropped. Each room resumes through `reconnected()`.
  }

  private setState(s: ChannelState): void {
    if (this.state === s) return;
    if (this.state === "closed") return;
    this.state = s;
    for (const fn of this.stateListeners) fn(s);
  }

  private url(): string {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/api/ws`;
  }

  private async connect(): Promise<void> {
    if (this.state === "closed") return;
    this.setState("connecting");
    this.queue = [];
    let token: string;
    try {
      token = await this.token(this.helloRefused);
      this.helloRefused = false;
    } catch {
      this.scheduleRetry();
      return;
    }
    if (this.state !== "connecting") return;
    let ws: WebSocket;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      ws.send(JSON.stringify({ v: PROTOCOL_VERSION, msg: { type: "hello", token } satisfies OwnMessage }));
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (this.ws !== ws || typeof ev.data !== "string") return;
      let msg: ServerMessage;
      try {
        const env = JSON.parse(ev.data) as { v?: number; msg?: ServerMessage };
        if (!env || typeof env !== "object" || !env.msg) return;
        msg = env.msg;
      } catch {
        return;
      }
      this.dispatch(msg);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      window.clearInterval(this.pingTimer);
      this.scheduleRetry();
    };
    ws.onerror = () => {
      // A close event follows.
    };
  }

  private dispatch(msg: ServerMessage): void {
    switch (msg.type) {
      case "welcome":
        this.opened();
        break;
      case "pong":
        return;
      case "error":
        if (this.state === "connecting") this.helloRefused = true;
        break;
      case "going_away":
        this.goingAwayMs = Math.max(0, msg.reconnect_after_ms);
        break;
      case "room_state": {
        const have = this.views.get(msg.room.id);
        if (!have || have.version <= msg.room.version) this.views.set(msg.room.id, msg.room);
        break;
      }
      case "room_delta": {
        // Handlers get the whole room, as from `room_state`.
        const have = this.views.get(msg.room_id);
        const room = have ? applyDelta(have, msg) : null;
        if (!room) {
          // A change was missed: ask for the whole room again.
          this.views.delete(msg.room_id);
          if (this.rooms.has(msg.room_id)) this.sendOwn({ type: "subscribe", room_id: msg.room_id });
          return;
        }
        this.views.set(room.id, room);
        this.rooms.get(room.id)?.message({ type: "room_state", room });
        return;
      }
      case "room_left":
      case "room_ended":
        this.views.delete(msg.room_id);
        break;
    }
    const room = roomOf(msg);
    if (room !== null) {
      this.rooms.get(room)?.message(msg);
    } else {
      for (const h of this.rooms.values()) h.message(msg);
    }
  }

  private opened(): void {
    const again = this.everOpen;
    this.everOpen = true;
    this.attempt = 0;
    this.goingAwayMs = null;
    const ws = this.ws;
    if (!ws) return;
    for (const id of this.rooms.keys()) {
      ws.send(JSON.stringify({ v: PROTOCOL_VERSION, msg: { type: "subscribe", room_id: id } }));
    }
    const queued = this.queue;
    this.queue = [];
    this.setState("open");
    for (const text of queued) {
      // Subscriptions were just sent for every room.
      if (text.includes('"type":"subscribe"')) continue;
      ws.send(text);
    }
    window.clearInterval(this.pingTimer);
    this.pingTimer = window.setInterval(() => {
      this.nonce = (this.nonce + 1) >>> 0;
      this.sendOwn({ type: "ping", nonce: this.nonce });
    }, PING_EVERY_MS);
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const w of waiters) w();
    if (again) for (const h of [...this.rooms.values()]) h.reconnected();
  }

  private scheduleRetry(): void {
    if (this.state === "closed") return;
    this.setState("down");
    window.clearTimeout(this.retryTimer);
    let delay: number;
    if (this.goingAwayMs !== null) {
      // The server is restarting: come back after the time it asked for,
      // spread over half as much again so not everyone arrives at once.
      delay = this.goingAwayMs + Math.random() * Math.max(this.goingAwayMs / 2, BACKOFF_FIRST_MS);
      this.goingAwayMs = null;
    } else {
      const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
      delay = base / 2 + Math.random() * (base / 2);
    }
    this.attempt += 1;
    this.retryTimer = window.setTimeout(() => void this.connect(), delay);
  }
}

/** The room view with the highest version wins. */
export function newer(current: RoomView | null, next: RoomView): boolean {
  return current === null || current.id !== next.id || next.version >= current.version;
}
