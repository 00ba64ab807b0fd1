// /invite/<code>: create an account. The device key is made in the core
// worker; the page only sees the signed request.

import { useState } from "preact/hooks";
import type { Engine } from "../engine/api";
import { plainError, type Api } from "../net/api";
import type { SessionResponse } from "../wire/SessionResponse";
import { Alert, Field, useTitle } from "./components";

export function InvitePage(props: {
  code: string;
  api: Api;
  engine: Engine;
  onRegistered: (s: SessionResponse) => void;
}) {
  useTitle("Join sotto");
  const [username, setUsername] = useState("");
  const [displayName, setDisplayName] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  async function submit(e: Event) {
    e.preventDefault();
    if (busy) return;
    setError(null);
    const name = username.trim().toLowerCase();
    const display = displayName.trim();
    if (!name) return setError("Choose a username.");
    if (!display) return setError("Enter the name people will see.");
    setBusy(true);
    try {
      const device = (await props.engine.device()) ?? (await props.engine.createDevice());
      if (device.userId) {
        throw new Error(`This browser already has an account (${device.username ?? "signed in"}).`);
      }
      const req = await props.engine.registerRequest(props.code, name, display);
      const session = await props.api.register(req);
      await props.engine.setRegistered(session.user_id, session.device_id, name);
      props.onRegistered(session);
    } catch (err) {
      setError(plainError(err));
      setBusy(false);
    }
  }

  return (
    <section class="card narrow">
      <h1>Join sotto</h1>
      <p>You were invited. Pick a username and the name people will see in rooms.</p>
      <form onSubmit={submit} noValidate>
        <Field label="Username" hint="3 to 20 characters: lowercase letters, digits and _.">
          {(a) => (
            <input
              {...a}
              type="text"
              name="username"
              autocomplete="username"
              autocapitalize="none"
              spellcheck={false}
              maxLength={20}
              required
              value={username}
              onInput={(e) => setUsername((e.target as HTMLInputElement).value)}
            />
          )}
        </Field>
        <Field label="Display name" hint="Up to 50 characters.">
          {(a) => (
            <input
              {...a}
              type="text"
              name="display_name"
              autocomplete="nickname"
              maxLength={50}
              required
              value={displayName}
              onInput={(e) => setDisplayName((e.target as HTMLInputElement).value)}
            />
          )}
        </Field>
        {error && <Alert>{error}</Alert>}
        <button type="submit" class="button primary" disabled={busy} aria-disabled={busy}>
          {busy ? "Creating account…" : "Create account"}
        </button>
      </form>
      <p class="muted small">
        No password: this browser keeps a device key that signs you in. It never leaves this browser, and the
        server cannot hear your rooms.
      </p>
    </section>
  );
}
