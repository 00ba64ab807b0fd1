// The main thread's side of the core worker's RPC (src/worker/protocol.ts).

import type { CoreMethods, FromCore, Method, StreamsMessage, ToCore } from "../worker/protocol";
import type { ClientMessage } from "../wire/ClientMessage";
import type { E2eeStatus } from "./api";

/** What a joined room hears from the worker. */
export interface RoomEvents {
  out(msgs: ClientMessage[]): void;
  status(status: E2eeStatus, senders: (string | null)[]): void;
}

export class Core {
  /** The worker, also handed to RTCRtpScriptTransform. */
  readonly worker: Worker;
  private nextId = 1;
  private pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  private rooms = new Map<number, RoomEvents>();
  private nextKey = 1;

  constructor() {
    this.worker = new Worker(new URL("../worker/core.ts", import.meta.url), { type: "module", name: "sotto-core" });
    this.worker.onmessage = (e: MessageEvent<FromCore>) => this.receive(e.data);
    this.worker.onerror = (e) => {
      // The worker failed to load or crashed: every pending call fails in plain words.
      const why = new Error(`The encryption worker failed${e.message ? `: ${e.message}` : ""}.`);
      for (const p of this.pending.values()) p.reject(why);
      this.pending.clear();
    };
  }

  call<M extends Method>(method: M, ...args: Parameters<CoreMethods[M]>): Promise<ReturnType<CoreMethods[M]>> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      const msg: ToCore = { kind: "call", id, method, args } as ToCore;
      this.worker.postMessage(msg);
    });
  }

  /** Hands encoded streams (the fallback transform path) to the worker. */
  streams(msg: Omit<StreamsMessage, "kind">): void {
    const full: StreamsMessage = { kind: "streams", ...msg };
    this.worker.postMessage(full, [msg.readable as unknown as Transferable, msg.writable as unknown as Transferable]);
  }

  /** A key for a new room session. */
  newKey(): number {
    return this.nextKey++;
  }

  /** Where a room session's events go. */
  addRoom(key: number, events: RoomEvents): void {
    this.rooms.set(key, events);
  }

  removeRoom(key: number): void {
    this.rooms.delete(key);
  }

  private receive(msg: FromCore): void {
    switch (msg.kind) {
      case "reply": {
        const p = this.pending.get(msg.id);
        if (!p) return;
        this.pending.delete(msg.id);
        if (msg.ok) p.resolve(msg.value);
        else p.reject(new Error(msg.error));
        return;
      }
      case "out":
        this.rooms.get(msg.key)?.out(msg.msgs);
        return;
      case "status":
        this.rooms.get(msg.key)?.status(msg.status, msg.senders);
        return;
    }
  }
}
