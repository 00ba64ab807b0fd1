// The page: signs in with the stored device (or shows the invite page), then
// routes between the screens.

import type { ComponentChildren } from "preact";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import type { Engine } from "../engine/api";
import { Api, plainError } from "../net/api";
import { Channel, type ChannelState } from "../net/channel";
import type { Me } from "../wire/Me";
import type { SessionResponse } from "../wire/SessionResponse";
import { Account } from "./account";
import { Alert, Link, useTitle } from "./components";
import { SessionContext, type Session } from "./context";
import { getEngine } from "./engine";
import { Hallway } from "./hallway";
import { InvitePage } from "./invite";
import { ProfilePage } from "./profile";
import { RoomPage } from "./room";
import { navigate, parseRoute, paths, usePath, type Route } from "./router";

type Phase =
  | { kind: "starting" }
  | { kind: "no_device" }
  | { kind: "signing_in" }
  | { kind: "signed_in"; me: Me }
  | { kind: "failed"; message: string }
  | { kind: "signed_out"; message: string };

/** Signs in with the stored device and keeps the token fresh (memory only). */
class Auth {
  private expiresAt = 0;
  private pending: Promise<string> | null = null;

  constructor(
    readonly api: Api,
    readonly engine: Engine,
  ) {}

  adopt(session: SessionResponse): void {
    this.api.setToken(session.token);
    this.expiresAt = session.expires_at;
  }

  async signIn(): Promise<SessionResponse> {
    const device = await this.engine.device();
    if (!device) throw new Error("This browser has no sotto account. Open an invite link to join.");
    const challenge = await this.api.challenge(device.publicKey);
    const req = await this.engine.loginRequest(challenge.challenge_id, challenge.nonce);
    const session = await this.api.login(req);
    this.adopt(session);
    return session;
  }

  /** A token for the session channel; signs in again when it is (nearly) expired or refused. */
  token(fresh: boolean): Promise<string> {
    const current = this.api.currentToken();
    if (!fresh && current && Date.now() < this.expiresAt - 60_000) return Promise.resolve(current);
    if (!this.pending) {
      this.pending = this.signIn()
        .then((s) => s.token)
        .finally(() => {
          this.pending = null;
        });
    }
    return this.pending;
  }
}

export function App() {
  const path = usePath();
  const route = parseRoute(path);
  const [phase, setPhase] = useState<Phase>({ kind: "starting" });
  const [engine, setEngine] = useState<Engine | null>(null);
  const api = useMemo(() => new Api(), []);
  const authRef = useRef<Auth | null>(null);
  const channelRef = useRef<Channel | null>(null);
  const [channelState, setChannelState] = useState<ChannelState>("down");
  const [attempt, setAttempt] = useState(0);
  // "Reconnecting" shows only when the channel stays down a moment.
  const [showDown, setShowDown] = useState(false);
  useEffect(() => {
    if (channelState !== "down") {
      setShowDown(false);
      return;
    }
    const t = window.setTimeout(() => setShowDown(true), 1000);
    return () => window.clearTimeout(t);
  }, [channelState]);

  // Start: find the device, sign in with it.
  useEffect(() => {
    let cancelled = false;
    (async () => {
      let eng: Engine;
      try {
        eng = await getEngine();
      } catch (e) {
        if (!cancelled) setPhase({ kind: "failed", message: `This browser cannot run sotto: ${plainError(e)}` });
        return;
      }
      if (cancelled) return;
      setEngine(eng);
      const auth = new Auth(api, eng);
      authRef.current = auth;
      api.setRefresher(() => auth.token(true));
      let device;
      try {
        device = await eng.device();
      } catch (e) {
        if (!cancelled) setPhase({ kind: "failed", message: plainError(e) });
        return;
      }
      if (cancelled) return;
      if (!device || !device.userId) {
        setPhase({ kind: "no_device" });
        return;
      }
      setPhase({ kind: "signing_in" });
      try {
        await auth.signIn();
        const me = await api.me();
        if (!cancelled) startSession(me);
      } catch (e) {
        if (!cancelled) setPhase({ kind: "failed", message: plainError(e) });
      }
    })();
    return () => {
      cancelled = true;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [attempt]);

  function startSession(me: Me) {
    const auth = authRef.current!;
    channelRef.current?.close();
    const channel = new Channel((fresh) => auth.token(fresh));
    channelRef.current = channel;
    channel.onState(setChannelState);
    channel.start();
    setPhase({ kind: "signed_in", me });
  }

  // Registered from the invite page.
  async function registered(session: SessionResponse) {
    authRef.current!.adopt(session);
    try {
      const me = await api.me();
      startSession(me);
      navigate(paths.hallway(), true);
    } catch (e) {
      setPhase({ kind: "failed", message: plainError(e) });
    }
  }

  useEffect(() => () => channelRef.current?.close(), []);

  // Move focus to the new screen's heading on navigation, for screen readers.
  const firstPath = useRef(true);
  useEffect(() => {
    if (firstPath.current) {
      firstPath.current = false;
      return;
    }
    const t = window.setTimeout(() => {
      const h = document.querySelector<HTMLElement>("main h1");
      if (h) {
        if (!h.hasAttribute("tabindex")) h.setAttribute("tabindex", "-1");
        h.focus();
      }
    }, 0);
    return () => window.clearTimeout(t);
  }, [path]);

  const session: Session | null =
    phase.kind === "signed_in" && engine && channelRef.current
      ? {
          api,
          engine,
          channel: channelRef.current,
          me: phase.me,
          signedOut: (message) => {
            channelRef.current?.close();
            channelRef.current = null;
            api.setToken(null);
            setPhase({ kind: "signed_out", message });
            navigate(paths.hallway(), true);
          },
          setMe: (me) => setPhase({ kind: "signed_in", me }),
        }
      : null;

  // Signed in, an invite link: this browser already has an account.
  useEffect(() => {
    if (phase.kind === "signed_in" && route.name === "invite") navigate(paths.hallway(), true);
  }, [phase.kind, route.name]);

  let body: ComponentChildren;
  switch (phase.kind) {
    case "starting":
    case "signing_in":
      body = <Loading text={phase.kind === "starting" ? "Starting…" : "Signing in…"} />;
      break;
    case "no_device":
    case "signed_out":
      if (route.name === "invite" && engine) {
        body = <InvitePage code={route.code} api={api} engine={engine} onRegistered={registered} />;
      } else {
        body = <Welcome message={phase.kind === "signed_out" ? phase.message : null} />;
      }
      break;
    case "failed":
      body = (
        <Failed
          message={phase.message}
          retry={() => {
            setPhase({ kind: "starting" });
            setAttempt((a) => a + 1);
          }}
          inviteRoute={route.name === "invite" && engine ? route : null}
          invitePage={
            route.name === "invite" && engine ? (
              <InvitePage code={route.code} api={api} engine={engine} onRegistered={registered} />
            ) : null
          }
        />
      );
      break;
    case "signed_in":
      body = <Screen route={route} />;
      break;
  }

  return (
    <SessionContext.Provider value={session}>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="site-header">
        <div class="header-inner">
          <span class="brand">sotto</span>
          {session && (
            <nav aria-label="Main">
              <ul class="nav-list">
                <li>
                  <Link href={paths.hallway()} current={route.name === "hallway"}>
                    Hallway
                  </Link>
                </li>
                <li>
                  <Link href={paths.account()} current={route.name === "account"}>
                    Account
                  </Link>
                </li>
              </ul>
            </nav>
          )}
        </div>
      </header>
      {session && showDown && (
        <p class="connection-banner" role="status">
          Connection lost. Reconnecting…
        </p>
      )}
      <main id="main" class="main">
        {body}
      </main>
    </SessionContext.Provider>
  );
}

function Screen(props: { route: Route }) {
  const r = props.route;
  switch (r.name) {
    case "hallway":
      return <Hallway />;
    case "room":
      return <RoomPage key={r.id} roomId={r.id} />;
    case "profile":
      return <ProfilePage key={r.username} username={r.username} />;
    case "account":
      return <Account />;
    case "invite":
      return <Loading text="Opening the hallway…" />;
    case "not_found":
      return <NotFound />;
  }
}

function Loading(props: { text: string }) {
  useTitle("");
  return (
    <section class="centered" aria-busy="true">
      <h1 class="visually-hidden">sotto</h1>
      <p role="status">{props.text}</p>
    </section>
  );
}

function Welcome(props: { message: string | null }) {
  useTitle("Welcome");
  return (
    <section class="card narrow">
      <h1>Welcome to sotto</h1>
      {props.message && <p role="status">{props.message}</p>}
      <p>sotto is invite-only. To join, open the invite link someone sent you.</p>
      <p class="muted">
        Your account lives on this browser: it holds a device key that never leaves it. There is no password.
      </p>
    </section>
  );
}

function Failed(props: {
  message: string;
  retry: () => void;
  inviteRoute: Route | null;
  invitePage: ComponentChildren;
}) {
  useTitle("Could not sign in");
  if (props.invitePage) return <>{props.invitePage}</>;
  return (
    <section class="card narrow">
      <h1>Could not sign in</h1>
      <Alert>{props.message}</Alert>
      <button type="button" class="button primary" onClick={props.retry}>
        Try again
      </button>
    </section>
  );
}

function NotFound() {
  useTitle("Not found");
  return (
    <section class="card narrow">
      <h1>Page not found</h1>
      <p>
        <Link href={paths.hallway()}>Go to the hallway</Link>
      </p>
    </section>
  );
}
