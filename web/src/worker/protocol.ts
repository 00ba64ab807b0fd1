// The messages between the page's main thread (src/engine) and the core
// worker (src/worker/core.ts). Plain structured-clone data only: requests
// carry ids, errors come back as plain messages (never thrown objects), and
// nothing secret ever travels this way — the device seed and the room keys
// stay in the worker.

import type { ClientMessage } from "../wire/ClientMessage";
import type { ServerMessage } from "../wire/ServerMessage";
import type { RoomView } from "../wire/RoomView";
import type { RegisterRequest } from "../wire/RegisterRequest";
import type { LoginRequest } from "../wire/LoginRequest";
import type { AccessVerb, DeviceInfo, E2eeStatus } from "../engine/api";

/** What the worker does on request. `key` names one joined room (a session). */
export interface CoreMethods {
  device(): DeviceInfo | null;
  createDevice(): DeviceInfo;
  setRegistered(userId: string, deviceId: string, username: string): void;
  forgetDevice(): void;
  registerRequest(invite: string, username: string, displayName: string, deviceName: string): RegisterRequest;
  loginRequest(challengeId: string, nonce: string): LoginRequest;
  accessStatement(verb: AccessVerb, roomId: string, targetUserId: string): string;
  deleteSignature(): string;
  safetyCode(theirUserId: string, theirChain: string): string | null;
  /** The user compared safety codes with them: saved as verified. False if their chain does not verify. */
  markVerified(theirUserId: string, theirChain: string): boolean;

  /** Creates the room's E2EE state; its hello comes back as an `out` event. */
  openRoom(key: number, room: RoomView): void;
  /** A server message for the room; replies come back as `out` events. */
  handle(key: number, msg: ServerMessage): void;
  /** The channel was reconnected. */
  reconnected(key: number): void;
  inviteToStage(key: number, userId: string): void;
  /** A member's device chain (Profile.device_chain). Returns the refusal in plain words, or null. */
  learnChain(key: number, userId: string, chain: string): string | null;
  /** Once the members' chains are learnt: names the roster's key holders, counts (and alerts on) hidden ones. */
  checkRoster(key: number): void;
  /** The account's own chain and the device keys the server lists for it: unknown ones are an alert. */
  checkOwnDevices(key: number, chain: string, listed: string[]): void;
  /** Whether outgoing frames may be encrypted (and so sent) at all. */
  setMicEnabled(key: number, on: boolean): void;
  /** Frees the room's state (saving the trust pins first). */
  closeRoom(key: number): void;
}

export type Method = keyof CoreMethods;

export interface CallMessage<M extends Method = Method> {
  kind: "call";
  id: number;
  method: M;
  args: Parameters<CoreMethods[M]>;
}

export type TransformRole = "send" | "recv";

/** The options of an RTCRtpScriptTransform (event.transformer.options in the worker). */
export interface TransformOptions {
  key: number;
  role: TransformRole;
  slot: number;
}

/** The fallback path: encoded streams made on the main thread, transferred here. */
export interface StreamsMessage extends TransformOptions {
  kind: "streams";
  readable: ReadableStream;
  writable: WritableStream;
}

export type ToCore = CallMessage | StreamsMessage;

export type FromCore =
  | { kind: "reply"; id: number; ok: true; value: unknown }
  | { kind: "reply"; id: number; ok: false; error: string }
  /** Messages the room wants sent on the session channel. */
  | { kind: "out"; key: number; msgs: ClientMessage[] }
  /** The room's status; `alerts` are the new ones only. `senders[slot]`: who the latest frame in that slot came from. */
  | { kind: "status"; key: number; status: E2eeStatus; senders: (string | null)[] };
