// The HTTP API client: same origin, JSON, the session token in memory only.
// Every failure becomes an ApiError whose message is written for people: the
// server's own message when it sent one, else a plain sentence.

import type { AccountExport } from "../wire/AccountExport";
import type { ChallengeResponse } from "../wire/ChallengeResponse";
import type { CreateRoomRequest } from "../wire/CreateRoomRequest";
import type { DeviceView } from "../wire/DeviceView";
import type { InviteCreated } from "../wire/InviteCreated";
import type { LoginRequest } from "../wire/LoginRequest";
import type { Me } from "../wire/Me";
import type { Profile } from "../wire/Profile";
import type { RegisterRequest } from "../wire/RegisterRequest";
import type { RoomSummary } from "../wire/RoomSummary";
import type { RoomView } from "../wire/RoomView";
import type { SessionResponse } from "../wire/SessionResponse";
import type { UserSummary } from "../wire/UserSummary";
import { errorWords } from "./errors";

export class ApiError extends Error {
  /** The server's stable error code, or `network` / `bad_response`. */
  readonly code: string;
  /** HTTP status (0: no answer). */
  readonly status: number;

  constructor(code: string, message: string, status: number) {
    super(message);
    this.name = "ApiError";
    this.code = code;
    this.status = status;
  }
}

/** A message for people from anything thrown. */
export function plainError(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error && e.message) return e.message;
  return "Something went wrong. Please try again.";
}

export type SelfAction = "raise-hand" | "lower-hand" | "accept-stage" | "decline-stage" | "end" | "leave";
export type MemberAction =
  | "invite-to-stage"
  | "move-to-audience"
  | "mute"
  | "unmute"
  | "make-moderator"
  | "remove"
  | "ban";

const seg = encodeURIComponent;

function statusWords(status: number): string {
  if (status >= 500) return `The server had a problem (error ${status}). Please try again in a moment.`;
  if (status === 404) return "That was not found.";
  if (status === 401) return "You are not signed in.";
  if (status === 403) return "You are not allowed to do that.";
  return `The server refused the request (error ${status}).`;
}

export class Api {
  private token: string | null = null;
  private refresh: (() => Promise<unknown>) | null = null;

  /** Signs in again when the server says the session ended (used once per request). */
  setRefresher(fn: (() => Promise<unknown>) | null): void {
    this.refresh = fn;
  }

  setToken(token: string | null): void {
    this.token = token;
  }

  hasToken(): boolean {
    return this.token !== null;
  }

  /** The token, for the session channel's hello. */
  currentToken(): string | null {
    return this.token;
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    try {
      return await this.requestOnce<T>(method, path, body);
    } catch (e) {
      const expired =
        e instanceof ApiError &&
        e.status === 401 &&
        (e.code === "session_expired" || e.code === "unauthenticated") &&
        this.token !== null &&
        this.refresh !== null &&
        !path.startsWith("/api/auth/") &&
        path !== "/api/register";
      if (!expired) throw e;
      await this.refresh!();
      return this.requestOnce<T>(method, path, body);
    }
  }

  private async requestOnce<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (this.token) headers["Authorization"] = `Bearer ${this.token}`;
    let res: Response;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
        cache: "no-store",
        redirect: "error",
      });
    } catch {
      throw new ApiError(
        "network",
        "Could not reach the server. Check your connection and try again.",
        0,
      );
    }
    const text = await res.text().catch(() => "");
    if (!res.ok) {
      let code = "http_" + res.status;
      let message = statusWords(res.status);
      try {
        const parsed = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
        if (parsed && parsed.error && typeof parsed.error.message === "string") {
          if (typeof parsed.error.code === "string") code = parsed.error.code;
          message = errorWords(code, parsed.error.message);
        }
      } catch {
        // not JSON: keep the plain words for the status
      }
      throw new ApiError(code, message, res.status);
    }
    if (res.status === 204 || text === "") return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ApiError("bad_response", "The server sent an answer this page cannot read.", res.status);
    }
  }

  // Accounts
  register(req: RegisterRequest): Promise<SessionResponse> {
    return this.request("POST", "/api/register", req);
  }
  challenge(devicePublicKey: string): Promise<ChallengeResponse> {
    return this.request("POST", "/api/auth/challenge", { device_public_key: devicePublicKey });
  }
  login(req: LoginRequest): Promise<SessionResponse> {
    return this.request("POST", "/api/auth/login", req);
  }
  logout(): Promise<void> {
    return this.request("POST", "/api/auth/logout");
  }
  me(): Promise<Me> {
    return this.request("GET", "/api/me");
  }
  devices(): Promise<DeviceView[]> {
    return this.request("GET", "/api/me/devices");
  }
  exportAccount(): Promise<AccountExport> {
    return this.request("GET", "/api/me/export");
  }
  deleteAccount(signature: string): Promise<void> {
    return this.request("DELETE", "/api/me", { signature });
  }
  createInvite(uses: number, expiresInSecs: number): Promise<InviteCreated> {
    return this.request("POST", "/api/invites", { uses, expires_in_secs: expiresInSecs });
  }

  // Users
  profile(username: string): Promise<Profile> {
    return this.request("GET", `/api/users/${seg(username)}`);
  }
  follow(username: string, statement: string | null): Promise<void> {
    return this.request("PUT", `/api/users/${seg(username)}/follow`, { statement });
  }
  unfollow(username: string): Promise<void> {
    return this.request("DELETE", `/api/users/${seg(username)}/follow`);
  }
  followers(username: string): Promise<UserSummary[]> {
    return this.request("GET", `/api/users/${seg(username)}/followers`);
  }
  following(username: string): Promise<UserSummary[]> {
    return this.request("GET", `/api/users/${seg(username)}/following`);
  }

  // Rooms
  hallway(): Promise<RoomSummary[]> {
    return this.request("GET", "/api/rooms");
  }
  createRoom(req: CreateRoomRequest): Promise<RoomView> {
    return this.request("POST", "/api/rooms", req);
  }
  room(id: string): Promise<RoomView> {
    return this.request("GET", `/api/rooms/${seg(id)}`);
  }
  join(id: string): Promise<RoomView> {
    return this.request("POST", `/api/rooms/${seg(id)}/join`);
  }
  selfAction(id: string, action: SelfAction): Promise<RoomView> {
    return this.request("POST", `/api/rooms/${seg(id)}/${action}`);
  }
  memberAction(id: string, userId: string, action: MemberAction, statement?: string): Promise<RoomView> {
    return this.request(
      "POST",
      `/api/rooms/${seg(id)}/members/${seg(userId)}/${action}`,
      statement === undefined ? undefined : { statement },
    );
  }
  grantAccess(id: string, username: string, statement: string | null): Promise<void> {
    return this.request("POST", `/api/rooms/${seg(id)}/access`, { username, statement });
  }
}
