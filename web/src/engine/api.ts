// The contract between the UI (src/ui, src/net) and the engine (src/engine,
// src/worker). The engine owns everything secret: the device key (kept in
// IndexedDB, read only by the core worker), the room's E2EE state
// (sotto-wasm's `Room`, in the core worker), and the SFrame transforms on the
// media (in the same worker). The page's main thread never holds key
// material: it gets signed request bodies, status reports and audio levels.

import type { ClientMessage } from "../wire/ClientMessage";
import type { ServerMessage } from "../wire/ServerMessage";
import type { RoomView } from "../wire/RoomView";
import type { RegisterRequest } from "../wire/RegisterRequest";
import type { LoginRequest } from "../wire/LoginRequest";

/** What is stored about this browser's device (besides its secret key). */
export interface DeviceInfo {
  /** The device's public key as the API wants it (`device_public_key`). */
  publicKey: string;
  /** Set once registered. */
  userId?: string;
  deviceId?: string;
  username?: string;
}

export type AccessVerb = "follow" | "allow" | "ban";

/** How far this device trusts an account's device chain. */
export type TrustLevel = "verified" | "unverified" | "changed";

export interface RosterEntry {
  /** The account whose verified chain holds the key; null: nobody in the room. */
  userId: string | null;
  trust: TrustLevel | null;
  /** In the stage group (else an admitted listener). */
  stage: boolean;
}

/** The room's E2EE status, for the room-info panel. */
export interface E2eeStatus {
  canDecrypt: boolean;
  canEncrypt: boolean;
  /** Everyone who holds the room's keys, as this device verified them. */
  roster: RosterEntry[];
  /** Key holders that are no device of anyone in the room. */
  hidden: number;
  /** Listener keys the signed roster lists (its count; listeners are proven one by one). */
  listed: number;
  /** Member devices not (yet) proven on or off the signed roster (a random sample is checked in large rooms). */
  unchecked: number;
  /** The room's safety code (same for everyone in the same group), if known. */
  roomCode: string | null;
  /** Failed checks, in plain words, newest last (hidden listener, stale key, ...). */
  alerts: string[];
  /** How long a removed listener can still decrypt (ms): the rotation period. */
  exposureWindowMs: number;
  /** Frames this device decrypted / failed to decrypt in this room. */
  framesDecrypted: number;
  decryptFailures: number;
  /** Frames this device encrypted and sent. */
  framesEncrypted: number;
}

export interface Engine {
  /** The stored device, or null when this browser has none yet. */
  device(): Promise<DeviceInfo | null>;
  /** Creates a new device key (replacing none: fails if one exists). */
  createDevice(): Promise<DeviceInfo>;
  /** Remembers the ids the server gave on registration. */
  setRegistered(userId: string, deviceId: string, username: string): Promise<void>;
  /** Deletes the device key (after the account is deleted). */
  forgetDevice(): Promise<void>;

  /** A signed `POST /api/register` body. */
  registerRequest(invite: string, username: string, displayName: string): Promise<RegisterRequest>;
  /** A signed `POST /api/auth/login` body for a challenge. */
  loginRequest(challengeId: string, nonce: string): Promise<LoginRequest>;
  /** A signed access statement (follow, allow, ban) for the API's `statement` field. */
  accessStatement(verb: AccessVerb, roomId: string, targetUserId: string): Promise<string>;
  /** The signature for `DELETE /api/me` (DeleteAccountRequest.signature). */
  deleteSignature(): Promise<string>;
  /** The safety code between this device's account and another's chain. */
  safetyCode(theirUserId: string, theirChain: string): Promise<string | null>;
  /**
   * The user compared the safety code with this person (out loud, in
   * person): this device trusts their account as verified from now on, and
   * rosters show them so. False if their chain does not verify (or changed).
   */
  markVerified(theirUserId: string, theirChain: string): Promise<boolean>;

  /** Enters a room's audio and E2EE. */
  joinRoom(opts: JoinOptions): Promise<RoomSession>;
}

export interface JoinOptions {
  room: RoomView;
  /** Sends a message on the session channel (owned by the UI's net layer). */
  send: (msg: ClientMessage) => void;
  /** Microphone chosen by the user (MediaDeviceInfo.deviceId), or default. */
  microphoneId?: string;
  /** Asked for each member whose chain the engine needs (profile.device_chain). */
  fetchChain: (userId: string, username: string) => Promise<string | null>;
  /**
   * The device keys the server lists for this account (`GET /api/me/devices`,
   * each `public_key`), or null if it did not answer. When given, the engine
   * checks them against the account's own chain (at the start, then every
   * 30 s, as the native client does): a device none of the account's devices
   * added (e.g. the operator signing in as this user) is an alert.
   */
  ownDevices?: () => Promise<string[] | null>;
  /** Status changes (E2EE status, alerts). */
  onStatus: (s: E2eeStatus) => void;
  /** Audio levels 0..1 by user id (about 10 times a second), own included. */
  onLevels: (levels: Record<string, number>) => void;
}

export interface RoomSession {
  /** Every server message for this room (and welcome / going_away). */
  handle(msg: ServerMessage): void;
  /** The room state changed (roles, members). */
  update(room: RoomView): void;
  /** Sends own audio or not (muted also by the UI when not on stage). */
  setMicEnabled(on: boolean): void;
  /** This device (host/moderator) invites a user to the stage: sign their stage invitation. */
  inviteToStage(userId: string): void;
  /** The channel was reconnected: resume (new media offer, E2EE hello). */
  reconnected(): void;
  /** Leaves quietly: stops media and the worker's room state. */
  close(): void;
}
