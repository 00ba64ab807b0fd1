// The engine (see ./api.ts): everything secret runs in the core worker
// (src/worker/core.ts); this side makes RPC calls to it and drives WebRTC.

import type { Engine, JoinOptions, RoomSession } from "./api";
import { Core } from "./core";
import { Session } from "./session";

export type { Engine, JoinOptions, RoomSession } from "./api";

/** A name for this device in the account's device list ("Chrome on Linux"). */
function deviceName(): string {
  const ua = typeof navigator !== "undefined" ? navigator.userAgent : "";
  const browser = /Firefox\//.test(ua)
    ? "Firefox"
    : /Edg\//.test(ua)
      ? "Edge"
      : /Chrom(e|ium)\//.test(ua)
        ? "Chrome"
        : /Safari\//.test(ua)
          ? "Safari"
          : "Browser";
  const os = /Android/.test(ua)
    ? "Android"
    : /iPhone|iPad/.test(ua)
      ? "iOS"
      : /Mac OS X/.test(ua)
        ? "macOS"
        : /Windows/.test(ua)
          ? "Windows"
          : /Linux/.test(ua)
            ? "Linux"
            : "";
  return os ? `${browser} on ${os}` : browser;
}

export function createEngine(): Engine {
  let core: Core | null = null;
  const c = (): Core => (core ??= new Core());

  return {
    device: () => c().call("device"),
    createDevice: () => c().call("createDevice"),
    setRegistered: (userId, deviceId, username) => c().call("setRegistered", userId, deviceId, username),
    forgetDevice: () => c().call("forgetDevice"),
    registerRequest: (invite, username, displayName) => c().call("registerRequest", invite, username, displayName, deviceName()),
    loginRequest: (challengeId, nonce) => c().call("loginRequest", challengeId, nonce),
    accessStatement: (verb, roomId, targetUserId) => c().call("accessStatement", verb, roomId, targetUserId),
    deleteSignature: () => c().call("deleteSignature"),
    safetyCode: (theirUserId, theirChain) => c().call("safetyCode", theirUserId, theirChain),
    markVerified: (theirUserId, theirChain) => c().call("markVerified", theirUserId, theirChain),

    async joinRoom(opts: JoinOptions): Promise<RoomSession> {
      const core = c();
      const info = await core.call("device");
      if (!info?.userId) throw new Error("This device is not signed in to an account.");
      const session = new Session(core, core.newKey(), info.userId, info.username, opts);
      await session.open();
      return session;
    },
  };
}
