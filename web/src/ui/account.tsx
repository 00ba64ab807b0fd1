// /account: my data (export as a JSON file), deleting the account, and for
// admins, invite links.

import { useState } from "preact/hooks";
import { plainError } from "../net/api";
import type { InviteCreated } from "../wire/InviteCreated";
import { Alert, Dialog, Field, Link, useTitle } from "./components";
import { useSession } from "./context";
import { paths } from "./router";

export function Account() {
  useTitle("Account");
  const session = useSession();
  const { api, engine, me } = session;
  const [error, setError] = useState<string | null>(null);
  const [exporting, setExporting] = useState(false);
  const [exported, setExported] = useState(false);
  const [confirm, setConfirm] = useState(false);
  const [deleting, setDeleting] = useState(false);

  async function exportData() {
    setError(null);
    setExporting(true);
    setExported(false);
    try {
      const data = await api.exportAccount();
      const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
      const url = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = `sotto-${me.username}.json`;
      a.hidden = true;
      document.body.appendChild(a);
      a.click();
      a.remove();
      window.setTimeout(() => URL.revokeObjectURL(url), 60_000);
      setExported(true);
    } catch (e) {
      setError(plainError(e));
    } finally {
      setExporting(false);
    }
  }

  async function deleteAccount() {
    setError(null);
    setDeleting(true);
    try {
      const signature = await engine.deleteSignature();
      await api.deleteAccount(signature);
      await engine.forgetDevice();
      setConfirm(false);
      session.signedOut("Your account was deleted, and this browser's device key with it.");
    } catch (e) {
      setConfirm(false);
      setError(plainError(e));
      setDeleting(false);
    }
  }

  return (
    <div class="page">
      <h1>Account</h1>
      <section class="card" aria-labelledby="you-heading">
        <h2 id="you-heading">You</h2>
        <dl class="facts">
          <div>
            <dt>Display name</dt>
            <dd>{me.display_name}</dd>
          </div>
          <div>
            <dt>Username</dt>
            <dd>@{me.username}</dd>
          </div>
        </dl>
        <p>
          <Link href={paths.profile(me.username)}>Your public profile</Link>
        </p>
      </section>

      {me.is_admin && <Invites />}

      <section class="card" aria-labelledby="data-heading">
        <h2 id="data-heading">Your data</h2>
        <p>Download everything the server stores about you, as a JSON file.</p>
        <button type="button" class="button" disabled={exporting} onClick={() => void exportData()}>
          Export my data
        </button>
        {exported && <p role="status">Your data was downloaded.</p>}
      </section>

      <section class="card danger-zone" aria-labelledby="delete-heading">
        <h2 id="delete-heading">Leave sotto</h2>
        <p>
          This deletes your account, your follows and your rooms' records from the server, and the device key from
          this browser. It cannot be undone.
        </p>
        <button type="button" class="button danger" onClick={() => setConfirm(true)}>
          Delete account
        </button>
      </section>
      {error && <Alert>{error}</Alert>}

      <Dialog open={confirm} title="Leave sotto for good?" onClose={() => !deleting && setConfirm(false)}>
        <p>
          Your account @{me.username} will be deleted for good, and this browser will forget its device key. You will
          need a new invite to come back.
        </p>
        <div class="button-row">
          <button type="button" class="button danger" disabled={deleting} onClick={() => void deleteAccount()}>
            {deleting ? "Deleting…" : "Delete my account"}
          </button>
          <button type="button" class="button" data-autofocus disabled={deleting} onClick={() => setConfirm(false)}>
            Cancel
          </button>
        </div>
      </Dialog>
    </div>
  );
}

function Invites() {
  const { api } = useSession();
  const [uses, setUses] = useState("1");
  const [days, setDays] = useState("7");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [made, setMade] = useState<InviteCreated | null>(null);

  async function create(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const n = Number.parseInt(uses, 10);
      const d = Number.parseFloat(days);
      setMade(await api.createInvite(Number.isFinite(n) ? n : 1, Math.round((Number.isFinite(d) ? d : 7) * 86_400)));
    } catch (err) {
      setError(plainError(err));
    } finally {
      setBusy(false);
    }
  }

  const link = made ? `${location.origin}/invite/${encodeURIComponent(made.code)}` : null;
  return (
    <section class="card" aria-labelledby="invites-heading">
      <h2 id="invites-heading">Invite people</h2>
      <form onSubmit={create} noValidate class="inline-form">
        <Field label="How many accounts">
          {(a) => (
            <input {...a} type="number" min={1} max={1000} inputMode="numeric" value={uses} onInput={(e) => setUses((e.target as HTMLInputElement).value)} />
          )}
        </Field>
        <Field label="Valid for (days)">
          {(a) => (
            <input {...a} type="number" min={1} max={90} inputMode="numeric" value={days} onInput={(e) => setDays((e.target as HTMLInputElement).value)} />
          )}
        </Field>
        <button type="submit" class="button" disabled={busy}>
          Create invite link
        </button>
      </form>
      {error && <Alert>{error}</Alert>}
      {link && (
        <div role="status">
          <p>Send this link to the people you invite (it is shown once):</p>
          <p>
            <output class="code invite-link">{link}</output>
          </p>
        </div>
      )}
    </section>
  );
}
