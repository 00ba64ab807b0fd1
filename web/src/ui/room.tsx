// A room: the stage on top, the audience below, own controls, the moderator
// menus, the stage invitation and the room-info panel. Entering: POST join,
// subscribe on the channel, then the engine's joinRoom (audio and E2EE).
// Leaving (or leaving the screen): close the engine's session, unsubscribe,
// POST leave.

import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import type { E2eeStatus, RoomSession } from "../engine/api";
import { plainError, type MemberAction, type SelfAction } from "../net/api";
import { newer } from "../net/channel";
import type { MemberView } from "../wire/MemberView";
import type { Role } from "../wire/Role";
import type { RoomView } from "../wire/RoomView";
import type { ServerMessage } from "../wire/ServerMessage";
import { Alert, Avatar, Dialog, Field, Link, MenuButton, useTitle, type MenuItem } from "./components";
import { useSession } from "./context";
import { ProfileDialog } from "./profile";
import { RoomInfo } from "./roominfo";
import { navigate, paths } from "./router";

const SPEAKING_LEVEL = 0.05;

type Gone =
  | { kind: "banned" }
  | { kind: "removed" }
  | { kind: "ended" }
  | { kind: "refused"; message: string };

const rank: Record<Role, number> = { listener: 0, speaker: 1, moderator: 2, host: 3 };
const roleWords: Record<Role, string> = { host: "Host", moderator: "Moderator", speaker: "Speaker", listener: "" };

// Each engine session is closed once, whichever path gets there first.
const closedSessions = new WeakSet<RoomSession>();
function closeSession(s: RoomSession | null): void {
  if (!s || closedSessions.has(s)) return;
  closedSessions.add(s);
  try {
    s.close();
  } catch {
    // already gone
  }
}

export function onStage(role: Role): boolean {
  return role !== "listener";
}

// The chosen microphone, for the rest of this page's life (the page stores
// nothing but the device key).
let chosenMicrophone: string | undefined;

function savedMicrophone(): string | undefined {
  return chosenMicrophone;
}

export function RoomPage(props: { roomId: string }) {
  const { api, engine, channel, me } = useSession();
  const roomId = props.roomId;
  const [view, setView] = useState<RoomView | null>(null);
  // Our own entry as the server tells a listener (`room_you`): a
  // listener's room state shows no hands or stage invitations.
  const [you, setYou] = useState<MemberView | null>(null);
  const [gone, setGone] = useState<Gone | null>(null);
  const [status, setStatus] = useState<E2eeStatus | null>(null);
  const [alerts, setAlerts] = useState<string[]>([]);
  const [levels, setLevels] = useState<Record<string, number>>({});
  const [audioError, setAudioError] = useState<string | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [infoOpen, setInfoOpen] = useState(false);
  const [profileOf, setProfileOf] = useState<MemberView | null>(null);
  const [mics, setMics] = useState<MediaDeviceInfo[]>([]);
  const [micId, setMicId] = useState<string | undefined>(savedMicrophone);
  const [audioReady, setAudioReady] = useState(false);
  const [busy, setBusy] = useState(false);

  const sessionRef = useRef<RoomSession | null>(null);
  const viewRef = useRef<RoomView | null>(null);
  // Bumped to restart the engine's session (another microphone).
  const [audioEpoch, setAudioEpoch] = useState(0);
  const goneRef = useRef<Gone | null>(null);
  const leavingRef = useRef(false);
  const bufferRef = useRef<ServerMessage[]>([]);
  const joinedRef = useRef(false);

  useTitle(view?.title ?? "Room");

  function end(g: Gone) {
    if (goneRef.current) return;
    goneRef.current = g;
    closeSession(sessionRef.current);
    sessionRef.current = null;
    channel.unsubscribe(roomId);
    setGone(g);
    setLevels({});
  }

  function applyView(room: RoomView) {
    if (!newer(viewRef.current, room)) return;
    viewRef.current = room;
    setView(room);
    if (room.ended) end({ kind: "ended" });
  }

  // Join over HTTP, subscribe, and keep the room's messages flowing.
  useEffect(() => {
    let cancelled = false;
    leavingRef.current = false;
    (async () => {
      let room: RoomView;
      try {
        room = await api.join(roomId);
      } catch (e) {
        if (!cancelled) {
          goneRef.current = { kind: "refused", message: plainError(e) };
          setGone(goneRef.current);
        }
        return;
      }
      joinedRef.current = true;
      if (cancelled) {
        void api.selfAction(roomId, "leave").catch(() => {});
        return;
      }
      applyView(room);
      channel.subscribe(roomId, {
        message: (msg) => {
          if (cancelled) return;
          switch (msg.type) {
            case "room_state":
              applyView(msg.room);
              break;
            case "room_you":
              setYou(msg.you);
              return;
            case "room_left":
              if (!leavingRef.current) end({ kind: msg.banned ? "banned" : "removed" });
              return;
            case "room_ended":
              end({ kind: "ended" });
              return;
          }
          const s = sessionRef.current;
          if (s) {
            s.handle(msg);
            if (msg.type === "room_state" && viewRef.current) s.update(viewRef.current);
          } else if (bufferRef.current.length < 1000) {
            bufferRef.current.push(msg);
          }
        },
        reconnected: () => {
          sessionRef.current?.reconnected();
        },
      });
    })();
    return () => {
      cancelled = true;
      leavingRef.current = true;
      closeSession(sessionRef.current);
      sessionRef.current = null;
      channel.unsubscribe(roomId);
      if (joinedRef.current && !goneRef.current) {
        void api.selfAction(roomId, "leave").catch(() => {});
      }
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [roomId]);

  // The engine's session: audio and E2EE. Starts once the room is joined.
  const joined = view !== null;
  useEffect(() => {
    if (!joined || goneRef.current) return;
    let cancelled = false;
    let session: RoomSession | null = null;
    setAudioReady(false);
    (async () => {
      try {
        await channel.ready();
        if (cancelled || goneRef.current || !viewRef.current) return;
        session = await engine.joinRoom({
          room: viewRef.current,
          send: (msg) => channel.send(msg),
          microphoneId: micId,
          fetchChain: async (_userId, username) => {
            try {
              return (await api.profile(username)).device_chain;
            } catch {
              return null;
            }
          },
          ownDevices: async () => {
            try {
              return (await api.devices()).map((d) => d.public_key);
            } catch {
              return null;
            }
          },
          onStatus: (s) => {
            if (cancelled) return;
            setStatus(s);
            if (s.alerts.length > 0) {
              setAlerts((old) => {
                const all = [...old];
                for (const a of s.alerts) if (!all.includes(a)) all.push(a);
                return all.slice(-10);
              });
            }
          },
          onLevels: (l) => {
            if (!cancelled) setLevels(l);
          },
        });
      } catch (e) {
        if (!cancelled) setAudioError(`Audio could not start: ${plainError(e)}`);
        return;
      }
      if (cancelled || goneRef.current) {
        closeSession(session);
        return;
      }
      sessionRef.current = session;
      setAudioError(null);
      setAudioReady(true);
      // What arrived while the session was starting.
      const queued = bufferRef.current;
      bufferRef.current = [];
      for (const msg of queued) session.handle(msg);
      if (viewRef.current) session.update(viewRef.current);
      // Labels appear once the microphone is allowed (the engine asks in the background).
      void listMicrophones();
      for (const ms of [1500, 5000]) {
        window.setTimeout(() => {
          if (!cancelled) void listMicrophones();
        }, ms);
      }
    })();
    return () => {
      cancelled = true;
      if (session) {
        closeSession(session);
        if (sessionRef.current === session) sessionRef.current = null;
      }
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [joined, audioEpoch]);

  async function listMicrophones() {
    try {
      const all = await navigator.mediaDevices.enumerateDevices();
      setMics(all.filter((d) => d.kind === "audioinput" && d.deviceId !== ""));
    } catch {
      setMics([]);
    }
  }

  useEffect(() => {
    const md = navigator.mediaDevices;
    if (!md) return;
    const fn = () => void listMicrophones();
    md.addEventListener("devicechange", fn);
    return () => md.removeEventListener("devicechange", fn);
  }, []);

  // Confirmations fade after a while.
  useEffect(() => {
    if (!notice) return;
    const t = window.setTimeout(() => setNotice(null), 6000);
    return () => window.clearTimeout(t);
  }, [notice]);

  // On stage the room state shows our entry in full; in the audience the
  // server tells us our own (hand, invitation), which the room state hides.
  const shown = view?.members.find((m) => m.user_id === me.id) ?? null;
  const mine = shown && shown.role !== "listener" ? shown : (you ?? shown);
  const myRole: Role = mine?.role ?? "listener";
  const meOnStage = onStage(myRole);
  const micOn = audioReady && meOnStage && mine !== null && !mine.muted;

  useEffect(() => {
    sessionRef.current?.setMicEnabled(micOn);
  }, [micOn, audioReady]);

  const names = useMemo(() => {
    const m = new Map<string, string>();
    for (const p of view?.members ?? []) m.set(p.user_id, p.display_name);
    return m;
  }, [view]);

  async function run(work: () => Promise<unknown>, done?: string) {
    setActionError(null);
    setBusy(true);
    try {
      const out = await work();
      if (out && typeof out === "object" && "members" in out) applyView(out as RoomView);
      if (done) setNotice(done);
    } catch (e) {
      setActionError(plainError(e));
    } finally {
      setBusy(false);
    }
  }

  const self = (action: SelfAction) => run(() => api.selfAction(roomId, action));

  function memberAction(target: MemberView, action: MemberAction) {
    const name = target.display_name;
    return run(
      async () => {
        if (action === "invite-to-stage") {
          // This device signs the stage invitation for the target's devices.
          sessionRef.current?.inviteToStage(target.user_id);
        }
        if (action === "ban") {
          const statement = await engine.accessStatement("ban", roomId, target.user_id);
          return api.memberAction(roomId, target.user_id, "ban", statement);
        }
        return api.memberAction(roomId, target.user_id, action);
      },
      {
        "invite-to-stage": `${name} was invited to the stage.`,
        "move-to-audience": `${name} was moved to the audience.`,
        mute: `${name} was muted.`,
        unmute: undefined,
        "make-moderator": `${name} is now a moderator.`,
        remove: `${name} was removed from the room.`,
        ban: `${name} was banned from the room.`,
      }[action],
    );
  }

  function menuFor(target: MemberView): MenuItem[] {
    if (target.user_id === me.id || !mine) return [];
    if (!["host", "moderator"].includes(myRole) || rank[myRole] <= rank[target.role]) return [];
    const items: MenuItem[] = [];
    if (target.role === "listener") {
      items.push({ label: "Invite to stage", onSelect: () => void memberAction(target, "invite-to-stage") });
    } else {
      items.push({ label: "Move to audience", onSelect: () => void memberAction(target, "move-to-audience") });
      if (!target.muted) items.push({ label: "Mute", onSelect: () => void memberAction(target, "mute") });
      if (target.role === "speaker") {
        items.push({ label: "Make moderator", onSelect: () => void memberAction(target, "make-moderator") });
      }
    }
    items.push({ label: "Remove", onSelect: () => void memberAction(target, "remove"), danger: true });
    items.push({ label: "Ban", onSelect: () => void memberAction(target, "ban"), danger: true });
    return items;
  }

  async function chooseMic(id: string) {
    const next = id === "" ? undefined : id;
    setMicId(next);
    chosenMicrophone = next;
    const s = sessionRef.current;
    if (!s) return;
    // The engine can switch the sending track in place (not in api.ts yet);
    // otherwise the audio starts again with the new microphone.
    const switcher = s as RoomSession & { setMicrophone?: (deviceId: string) => void };
    if (typeof switcher.setMicrophone === "function" && next) switcher.setMicrophone(next);
    else setAudioEpoch((n) => n + 1);
  }

  if (gone) return <RoomGone gone={gone} title={view?.title ?? null} />;
  if (!view) {
    return (
      <section class="centered">
        <h1 class="visually-hidden">Room</h1>
        <p role="status">Joining the room…</p>
      </section>
    );
  }

  const stage = view.members.filter((m) => onStage(m.role));
  const audience = view.members.filter((m) => !onStage(m.role));
  const moderating = myRole === "host" || myRole === "moderator";
  // The stage sees every listener; a listener sees a large audience in
  // part (the first listeners to join, without hands), the rest as a count.
  const unshown = Math.max(0, view.audience_count - audience.filter((m) => m.role === "listener").length);
  // The hand queue: who raised first comes first.
  const hands = audience
    .filter((m) => m.hand_raised)
    .sort((a, b) => (a.hand_order ?? Number.MAX_SAFE_INTEGER) - (b.hand_order ?? Number.MAX_SAFE_INTEGER));

  return (
    <div class="page room-page">
      <div class="room-head">
        <div>
          <h1>{view.title}</h1>
          {view.description && <p class="room-description">{view.description}</p>}
          <p class="room-meta">
            <span class="kind-badge">{view.kind}</span>{" "}
            <span class={status?.canDecrypt ? "e2ee-badge ok" : "e2ee-badge"}>
              {status?.canDecrypt ? "End-to-end encrypted" : audioReady ? "Waiting for the room key…" : "Connecting audio…"}
            </span>
          </p>
        </div>
        <button
          type="button"
          class="button"
          aria-haspopup="dialog"
          onClick={() => setInfoOpen(true)}
        >
          Room info
        </button>
      </div>

      {audioError && <Alert>{audioError}</Alert>}
      {actionError && <Alert>{actionError}</Alert>}
      {notice && (
        <p class="notice" role="status">
          {notice}
        </p>
      )}

      <section class="people-section stage" aria-labelledby="stage-heading">
        <h2 id="stage-heading">Stage</h2>
        <ul class="people-grid stage-grid">
          {stage.map((m) => (
            <Person
              key={m.user_id}
              member={m}
              isMe={m.user_id === me.id}
              speaking={(levels[m.user_id] ?? 0) > SPEAKING_LEVEL}
              items={menuFor(m)}
              onOpen={setProfileOf}
              big
            />
          ))}
        </ul>
      </section>

      <section class="controls" aria-label="Your controls">
        <div class="button-row">
        {meOnStage ? (
          mine?.muted ? (
            <button type="button" class="button primary" disabled={busy} onClick={() => void run(() => api.memberAction(roomId, me.id, "unmute"))}>
              Unmute
            </button>
          ) : (
            <button
              type="button"
              class="button"
              disabled={busy}
              onClick={() => {
                sessionRef.current?.setMicEnabled(false);
                void run(() => api.memberAction(roomId, me.id, "mute"));
              }}
            >
              Mute
            </button>
          )
        ) : mine?.hand_raised ? (
          <button type="button" class="button" disabled={busy} onClick={() => void self("lower-hand")}>
            Lower hand
          </button>
        ) : (
          <button type="button" class="button primary" disabled={busy} onClick={() => void self("raise-hand")}>
            Raise hand
          </button>
        )}
        {meOnStage && myRole !== "host" && (
          <button type="button" class="button" disabled={busy} onClick={() => void run(() => api.memberAction(roomId, me.id, "move-to-audience"))}>
            Leave the stage
          </button>
        )}
        <button type="button" class="button" onClick={() => navigate(paths.hallway())}>
          Leave quietly
        </button>
        {moderating && (
          <EndRoom onEnd={() => void self("end")} busy={busy} />
        )}
        </div>
        <Field label="Microphone">
          {(a) => (
            <select {...a} class="mic-select" value={micId ?? ""} onChange={(e) => void chooseMic((e.target as HTMLSelectElement).value)}>
              <option value="">Default microphone</option>
              {mics.map((d, i) => (
                <option key={d.deviceId} value={d.deviceId}>
                  {d.label || `Microphone ${i + 1}`}
                </option>
              ))}
            </select>
          )}
        </Field>
      </section>

      {moderating && hands.length > 0 && (
        <p class="hands" role="status">
          {hands.length === 1 ? "1 hand raised" : `${hands.length} hands raised, first raised first`}:{" "}
          {hands.map((h) => h.display_name).join(", ")}
        </p>
      )}

      <section class="people-section audience" aria-labelledby="audience-heading">
        <h2 id="audience-heading">Audience</h2>
        {audience.length === 0 ? (
          <p class="muted">Nobody in the audience yet.</p>
        ) : (
          <ul class="people-grid audience-grid">
            {audience.map((m) => (
              <Person
                key={m.user_id}
                member={m}
                isMe={m.user_id === me.id}
                speaking={(levels[m.user_id] ?? 0) > SPEAKING_LEVEL}
                items={menuFor(m)}
                onOpen={setProfileOf}
              />
            ))}
          </ul>
        )}
        {unshown > 0 && (
          <p class="muted audience-more">
            and {unshown} more {unshown === 1 ? "listener" : "listeners"}
          </p>
        )}
      </section>

      {moderating && view.kind === "closed" && <AllowIn roomId={roomId} />}

      <StageInvitation
        open={mine?.invited_to_stage === true}
        busy={busy}
        onAccept={() => void self("accept-stage")}
        onDecline={() => void self("decline-stage")}
      />

      <ProfileDialog person={profileOf} onClose={() => setProfileOf(null)} />

      <RoomInfo open={infoOpen} onClose={() => setInfoOpen(false)} status={status} alerts={alerts} names={names} meId={me.id} audioReady={audioReady} />
    </div>
  );
}

function Person(props: {
  member: MemberView;
  isMe: boolean;
  speaking: boolean;
  items: MenuItem[];
  big?: boolean;
  onOpen: (m: MemberView) => void;
}) {
  const m = props.member;
  const id = `person-${m.user_id}`;
  const role = roleWords[m.role];
  const states: string[] = [];
  if (props.isMe) states.push("you");
  if (role) states.push(role);
  if (onStage(m.role) && m.muted) states.push("muted");
  if (m.hand_raised) states.push("hand raised");
  if (m.invited_to_stage) states.push("invited to the stage");
  if (props.speaking) states.push("speaking");
  return (
    <li
      class={`person${props.speaking ? " is-speaking" : ""}`}
      data-speaking={props.speaking ? "true" : "false"}
      aria-labelledby={`${id}-name ${id}-state`}
    >
      <button type="button" class="person-button" aria-haspopup="dialog" onClick={() => props.onOpen(m)}>
        <Avatar name={m.display_name} seed={m.user_id} speaking={props.speaking} size={props.big ? "big" : "small"} />
        <span class="person-name" id={`${id}-name`}>
          {m.display_name}
        </span>
      </button>
      <span class="person-state" id={`${id}-state`}>
        {states.join(", ")}
      </span>
      {props.items.length > 0 && <MenuButton label={`Actions for ${m.display_name}`} items={props.items} />}
    </li>
  );
}

function EndRoom(props: { onEnd: () => void; busy: boolean }) {
  const [confirming, setConfirming] = useState(false);
  return (
    <>
      <button type="button" class="button danger" disabled={props.busy} onClick={() => setConfirming(true)}>
        End room
      </button>
      <Dialog open={confirming} title="End this room for everyone?" onClose={() => setConfirming(false)}>
        <p>Everyone in the room is sent back to the hallway. This cannot be undone.</p>
        <div class="button-row">
          <button
            type="button"
            class="button danger"
            onClick={() => {
              setConfirming(false);
              props.onEnd();
            }}
          >
            End the room
          </button>
          <button type="button" class="button" data-autofocus onClick={() => setConfirming(false)}>
            Keep it going
          </button>
        </div>
      </Dialog>
    </>
  );
}

function StageInvitation(props: { open: boolean; busy: boolean; onAccept: () => void; onDecline: () => void }) {
  return (
    <Dialog open={props.open} title="You're invited to the stage" onClose={props.onDecline}>
      <p>A moderator asked you to speak. Your microphone goes on when you join the stage.</p>
      <div class="button-row">
        <button type="button" class="button primary" disabled={props.busy} onClick={props.onAccept}>
          Join the stage
        </button>
        <button type="button" class="button" disabled={props.busy} onClick={props.onDecline}>
          Not now
        </button>
      </div>
    </Dialog>
  );
}

function AllowIn(props: { roomId: string }) {
  const { api, engine } = useSession();
  const [username, setUsername] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);

  async function submit(e: Event) {
    e.preventDefault();
    const name = username.trim().replace(/^@/u, "").toLowerCase();
    if (!name || busy) return;
    setBusy(true);
    setError(null);
    setDone(null);
    try {
      const profile = await api.profile(name);
      const statement = await engine.accessStatement("allow", props.roomId, profile.id);
      await api.grantAccess(props.roomId, name, statement);
      setDone(`${profile.display_name} can now come in.`);
      setUsername("");
    } catch (err) {
      setError(plainError(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <section class="card allow-in" aria-labelledby="allow-in-heading">
      <h2 id="allow-in-heading">Let someone in</h2>
      <p class="muted">This room is closed: only people a moderator lets in can join and get its key.</p>
      <form onSubmit={submit} noValidate class="inline-form">
        <Field label="Username to let in">
          {(a) => (
            <input
              {...a}
              type="text"
              autocapitalize="none"
              spellcheck={false}
              value={username}
              onInput={(e) => setUsername((e.target as HTMLInputElement).value)}
            />
          )}
        </Field>
        <button type="submit" class="button" disabled={busy}>
          Allow in
        </button>
      </form>
      {error && <Alert>{error}</Alert>}
      {done && <p role="status">{done}</p>}
    </section>
  );
}

function RoomGone(props: { gone: Gone; title: string | null }) {
  useTitle(props.title ?? "Room");
  const text =
    props.gone.kind === "banned"
      ? "You were banned from this room."
      : props.gone.kind === "removed"
        ? "You were removed from this room."
        : props.gone.kind === "ended"
          ? "This room has ended."
          : props.gone.message;
  return (
    <section class="card narrow">
      <h1>{props.title ?? (props.gone.kind === "refused" ? "Could not join the room" : "Room")}</h1>
      <Alert kind={props.gone.kind === "ended" ? "info" : "error"}>{text}</Alert>
      <p>
        <Link href={paths.hallway()}>Back to the hallway</Link>
      </p>
    </section>
  );
}
