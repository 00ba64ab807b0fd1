// /u/<username>: someone's profile, follow / unfollow, and the safety code
// between their account and mine. The same card opens as a dialog from a
// room (so following someone does not mean leaving the room).

import { useEffect, useState } from "preact/hooks";
import { plainError } from "../net/api";
import type { Profile } from "../wire/Profile";
import { Alert, Avatar, Dialog, Link, useTitle } from "./components";
import { useSession } from "./context";
import { paths } from "./router";

interface ProfileState {
  profile: Profile | null;
  error: string | null;
  actionError: string | null;
  /** undefined: still working it out; null: not available. */
  code: string | null | undefined;
  busy: boolean;
  /** The user marked this person verified in this view. */
  verified: boolean;
  toggleFollow: () => Promise<void>;
  verify: () => Promise<void>;
}

function useProfile(username: string | null): ProfileState {
  const { api, engine, me } = useSession();
  const [profile, setProfile] = useState<Profile | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const [code, setCode] = useState<string | null | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const [verified, setVerified] = useState(false);

  useEffect(() => {
    setProfile(null);
    setError(null);
    setActionError(null);
    setCode(undefined);
    setVerified(false);
    if (username === null) return;
    let stop = false;
    (async () => {
      try {
        const p = await api.profile(username);
        if (stop) return;
        setProfile(p);
        if (p.id !== me.id) {
          try {
            const c = await engine.safetyCode(p.id, p.device_chain);
            if (!stop) setCode(c);
          } catch {
            if (!stop) setCode(null);
          }
        }
      } catch (e) {
        if (!stop) setError(plainError(e));
      }
    })();
    return () => {
      stop = true;
    };
  }, [api, engine, username, me.id]);

  async function toggleFollow() {
    if (!profile || busy) return;
    setBusy(true);
    setActionError(null);
    try {
      if (profile.followed_by_you) {
        await api.unfollow(profile.username);
        setProfile({ ...profile, followed_by_you: false, followers: Math.max(0, profile.followers - 1) });
      } else {
        const statement = await engine.accessStatement("follow", "", profile.id);
        await api.follow(profile.username, statement);
        setProfile({ ...profile, followed_by_you: true, followers: profile.followers + 1 });
      }
    } catch (e) {
      setActionError(plainError(e));
    } finally {
      setBusy(false);
    }
  }

  async function verify() {
    if (!profile || busy) return;
    setBusy(true);
    setActionError(null);
    try {
      if (await engine.markVerified(profile.id, profile.device_chain)) {
        setVerified(true);
      } else {
        setActionError(`${profile.display_name}'s keys could not be checked, so they cannot be marked verified.`);
      }
    } catch (e) {
      setActionError(plainError(e));
    } finally {
      setBusy(false);
    }
  }

  return { profile, error, actionError, code, busy, verified, toggleFollow, verify };
}

/** Everything below the name: bio, counts, follow, safety code. */
function ProfileDetails(props: { state: ProfileState }) {
  const { me } = useSession();
  const { profile, actionError, code, busy, verified, toggleFollow, verify } = props.state;
  if (!profile) return null;
  const isMe = profile.id === me.id;
  return (
    <>
      {profile.bio && <p class="bio">{profile.bio}</p>}
      <p class="counts">
        <span>
          <strong>{profile.followers}</strong> {profile.followers === 1 ? "follower" : "followers"}
        </span>{" "}
        <span>
          <strong>{profile.following}</strong> following
        </span>
      </p>
      {!isMe && (
        <button
          type="button"
          class={profile.followed_by_you ? "button" : "button primary"}
          disabled={busy}
          onClick={() => void toggleFollow()}
        >
          {profile.followed_by_you ? "Unfollow" : "Follow"}
        </button>
      )}
      {actionError && <Alert>{actionError}</Alert>}
      {!isMe && (
        <dl class="facts">
          <div>
            <dt>Safety code</dt>
            <dd class="code">{code === undefined ? "Working it out…" : code === null ? "Not available yet" : code}</dd>
          </div>
        </dl>
      )}
      {!isMe && (
        <p class="muted small">
          Compare this code with {profile.display_name} in person or on a call: if it matches on both sides, nobody
          can pose as either of you to hear your rooms.
        </p>
      )}
      {!isMe && typeof code === "string" && !verified && (
        <button type="button" class="button" disabled={busy} onClick={() => void verify()}>
          The codes match: mark as verified
        </button>
      )}
      {!isMe && verified && (
        <p role="status">You marked {profile.display_name} as verified on this device.</p>
      )}
      {isMe && <p class="muted">This is you.</p>}
    </>
  );
}

export function ProfilePage(props: { username: string }) {
  const state = useProfile(props.username);
  const { profile, error } = state;
  useTitle(profile?.display_name ?? props.username);

  if (error) {
    return (
      <section class="card narrow">
        <h1>{props.username}</h1>
        <Alert>{error}</Alert>
      </section>
    );
  }
  if (!profile) {
    return (
      <section class="centered">
        <h1 class="visually-hidden">{props.username}</h1>
        <p role="status">Loading profile…</p>
      </section>
    );
  }
  return (
    <section class="card profile">
      <div class="profile-head">
        <Avatar name={profile.display_name} seed={profile.id} size="big" />
        <div>
          <h1>{profile.display_name}</h1>
          <p class="muted">@{profile.username}</p>
        </div>
      </div>
      <ProfileDetails state={state} />
    </section>
  );
}

/** A person's profile over the room screen. */
export function ProfileDialog(props: { person: { username: string; display_name: string } | null; onClose: () => void }) {
  const state = useProfile(props.person?.username ?? null);
  const p = props.person;
  return (
    <Dialog open={p !== null} title={p?.display_name ?? ""} onClose={props.onClose} class="profile-dialog">
      {p && <p class="muted">@{p.username}</p>}
      {state.error && <Alert>{state.error}</Alert>}
      {!state.profile && !state.error && <p role="status">Loading profile…</p>}
      <ProfileDetails state={state} />
      <div class="button-row">
        <button type="button" class="button" onClick={props.onClose}>
          Close
        </button>
      </div>
      {p && (
        <p class="small">
          <Link href={paths.profile(p.username)}>Open the profile page</Link> (leaves the room)
        </p>
      )}
    </Dialog>
  );
}
