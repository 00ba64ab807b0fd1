// What every screen needs: the API client, the engine, the session channel
// and who is signed in.

import { createContext } from "preact";
import { useContext } from "preact/hooks";
import type { Engine } from "../engine/api";
import type { Api } from "../net/api";
import type { Channel } from "../net/channel";
import type { Me } from "../wire/Me";

export interface Session {
  api: Api;
  engine: Engine;
  channel: Channel;
  me: Me;
  /** The account was deleted (or the device forgotten): back to the start. */
  signedOut(message: string): void;
  /** Me changed (e.g. display name). */
  setMe(me: Me): void;
}

export const SessionContext = createContext<Session | null>(null);

export function useSession(): Session {
  const s = useContext(SessionContext);
  if (!s) throw new Error("not signed in");
  return s;
}
