// The hallway: live rooms (the server puts rooms with people I follow on
// stage first) and "Start a room".

import { useEffect, useRef, useState } from "preact/hooks";
import { plainError } from "../net/api";
import type { RoomKind } from "../wire/RoomKind";
import type { RoomSummary } from "../wire/RoomSummary";
import { Alert, Avatar, Field, Link, useTitle } from "./components";
import { useSession } from "./context";
import { navigate, paths } from "./router";

const REFRESH_MS = 10_000;

export const kindWords: Record<RoomKind, string> = {
  open: "Open: anyone can come in",
  social: "Social: people the hosts follow",
  closed: "Closed: only people let in",
};

export function Hallway() {
  useTitle("Hallway");
  const { api } = useSession();
  const [rooms, setRooms] = useState<RoomSummary[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [creating, setCreating] = useState(false);

  useEffect(() => {
    let stop = false;
    let timer: number | undefined;
    const load = async () => {
      try {
        const list = await api.hallway();
        if (stop) return;
        setRooms(list);
        setError(null);
      } catch (e) {
        if (!stop) setError(plainError(e));
      }
      if (!stop) timer = window.setTimeout(load, REFRESH_MS);
    };
    void load();
    const onVisible = () => {
      if (document.visibilityState === "visible") {
        window.clearTimeout(timer);
        void load();
      }
    };
    document.addEventListener("visibilitychange", onVisible);
    return () => {
      stop = true;
      window.clearTimeout(timer);
      document.removeEventListener("visibilitychange", onVisible);
    };
  }, [api]);

  return (
    <div class="page">
      <div class="page-head">
        <h1>Hallway</h1>
        <button
          type="button"
          class="button primary"
          aria-expanded={creating}
          aria-controls={creating ? "start-room" : undefined}
          onClick={() => setCreating(!creating)}
        >
          Start a room
        </button>
      </div>
      {creating && <StartRoom onCancel={() => setCreating(false)} />}
      {error && <Alert>{error}</Alert>}
      <section aria-labelledby="live-rooms">
        <h2 id="live-rooms">Live rooms</h2>
        {rooms === null && !error && <p role="status">Loading rooms…</p>}
        {rooms !== null && rooms.length === 0 && (
          <p class="muted">No rooms are live right now. Start one!</p>
        )}
        {rooms !== null && rooms.length > 0 && (
          <ul class="room-list">
            {rooms.map((r) => (
              <RoomCard key={r.id} room={r} />
            ))}
          </ul>
        )}
      </section>
    </div>
  );
}

function RoomCard(props: { room: RoomSummary }) {
  const r = props.room;
  const names = r.stage.map((u) => u.display_name);
  const shown = r.stage.slice(0, 4);
  return (
    <li class="room-card">
      <h3 class="room-card-title">
        <Link href={paths.room(r.id)}>{r.title}</Link>
      </h3>
      <div class="room-card-people">
        <span class="avatar-stack" aria-hidden="true">
          {shown.map((u) => (
            <Avatar key={u.id} name={u.display_name} seed={u.id} size="small" />
          ))}
        </span>
        <p class="room-card-meta">
          {names.length > 0 ? <span>On stage: {names.join(", ")}</span> : <span>Nobody on stage</span>}
          <span>
            {r.listener_count} {r.listener_count === 1 ? "listener" : "listeners"}
          </span>
          {r.followed_on_stage > 0 && (
            <span>
              {r.followed_on_stage} you follow
            </span>
          )}
          <span class="kind-badge">{r.kind}</span>
        </p>
      </div>
    </li>
  );
}

function StartRoom(props: { onCancel: () => void }) {
  const { api } = useSession();
  const [title, setTitle] = useState("");
  const [kind, setKind] = useState<RoomKind>("open");
  const [description, setDescription] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const titleRef = useRef<HTMLInputElement>(null);

  useEffect(() => {
    titleRef.current?.focus();
  }, []);

  async function submit(e: Event) {
    e.preventDefault();
    if (busy) return;
    setError(null);
    setBusy(true);
    try {
      const room = await api.createRoom({
        title: title.trim(),
        kind,
        description: description.trim() === "" ? null : description.trim(),
      });
      navigate(paths.room(room.id));
    } catch (err) {
      setError(plainError(err));
      setBusy(false);
    }
  }

  return (
    <form id="start-room" class="card start-room" onSubmit={submit} noValidate aria-labelledby="start-room-heading">
      <h2 id="start-room-heading">Start a room</h2>
      <Field label="Title">
        {(a) => (
          <input
            {...a}
            ref={titleRef}
            type="text"
            name="title"
            maxLength={100}
            required
            value={title}
            onInput={(e) => setTitle((e.target as HTMLInputElement).value)}
          />
        )}
      </Field>
      <Field label="Kind" hint={kindWords[kind]}>
        {(a) => (
          <select {...a} name="kind" value={kind} onChange={(e) => setKind((e.target as HTMLSelectElement).value as RoomKind)}>
            <option value="open">Open</option>
            <option value="social">Social</option>
            <option value="closed">Closed</option>
          </select>
        )}
      </Field>
      <Field label="Description (optional)">
        {(a) => (
          <input
            {...a}
            type="text"
            name="description"
            maxLength={500}
            value={description}
            onInput={(e) => setDescription((e.target as HTMLInputElement).value)}
          />
        )}
      </Field>
      {error && <Alert>{error}</Alert>}
      <div class="button-row">
        <button type="submit" class="button primary" disabled={busy}>
          Start room
        </button>
        <button type="button" class="button" onClick={props.onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}
