// The room-info panel: what this device knows about the room's encryption.

import type { E2eeStatus, TrustLevel } from "../engine/api";
import { Dialog } from "./components";

const trustWords: Record<TrustLevel, string> = {
  verified: "verified",
  unverified: "unverified",
  changed: "changed",
};

const trustHelp: Record<TrustLevel, string> = {
  verified: "you compared safety codes",
  unverified: "not compared with you yet",
  changed: "their devices changed since you compared codes",
};

function plural(n: number, one: string, many: string): string {
  return n === 1 ? one.replace("{n}", String(n)) : many.replace("{n}", String(n));
}

export function RoomInfo(props: {
  open: boolean;
  onClose: () => void;
  status: E2eeStatus | null;
  alerts: string[];
  names: Map<string, string>;
  meId: string;
  audioReady: boolean;
}) {
  const s = props.status;
  return (
    <Dialog open={props.open} title="Room info" onClose={props.onClose} class="room-info">
      {!s ? (
        <p role="status">{props.audioReady ? "Waiting for the room's encryption…" : "Connecting audio…"}</p>
      ) : (
        <>
          <p class={s.canDecrypt ? "e2ee-line ok" : "e2ee-line"}>
            {s.canDecrypt ? "End-to-end encrypted" : "Not decrypting yet: waiting for the room key."}
          </p>
          <p class="muted small">
            Audio is encrypted on each speaker's device and decrypted only on the devices listed below. The server
            forwards it without being able to hear it.
          </p>

          {s.hidden > 0 && (
            <div role="alert" class="alert alert-warning">
              {plural(
                s.hidden,
                "{n} key holder is no device of anyone in this room",
                "{n} key holders are no device of anyone in this room",
              )}
            </div>
          )}
          {props.alerts.map((a) => (
            <div role="alert" class="alert alert-warning" key={a}>
              {a}
            </div>
          ))}

          <h3 id="who-can-decrypt">Who can decrypt</h3>
          <p class="muted small roster-count">
            {plural(s.listed, "The signed roster lists {n} listener key", "The signed roster lists {n} listener keys")}
            {s.unchecked > 0 ? `; ${s.unchecked} member device(s) not checked against it yet.` : "."}
          </p>
          <ul class="roster" aria-labelledby="who-can-decrypt">
            {s.roster.map((r, i) => {
              const name = r.userId !== null ? props.names.get(r.userId) : undefined;
              return (
                <li key={`${r.userId ?? "unknown"}-${i}`} class="roster-entry">
                  <span class="roster-name">{name ?? "Unknown device"}</span>
                  {r.userId !== null && r.userId === props.meId && <span class="muted"> (you)</span>}{" "}
                  <span class={`trust trust-${r.trust ?? "none"}`}>
                    {r.trust ? trustWords[r.trust] : "not verifiable"}
                  </span>
                  <span class="muted small">
                    {" "}
                    ({r.stage ? "on stage" : "listener"}
                    {r.trust ? `; ${trustHelp[r.trust]}` : ""})
                  </span>
                </li>
              );
            })}
          </ul>

          <dl class="facts">
            <div>
              <dt>Safety code</dt>
              <dd class="code">{s.roomCode ?? "Not known yet"}</dd>
            </div>
            <div>
              <dt>Exposure window</dt>
              <dd>
                {Math.round(s.exposureWindowMs / 1000)} seconds
                <span class="muted small"> (how long someone who leaves can still decrypt)</span>
              </dd>
            </div>
            <div>
              <dt>Frames decrypted</dt>
              <dd>{s.framesDecrypted}</dd>
            </div>
            <div>
              <dt>Frames that failed to decrypt</dt>
              <dd>{s.decryptFailures}</dd>
            </div>
            <div>
              <dt>Frames encrypted and sent</dt>
              <dd>{s.framesEncrypted}</dd>
            </div>
          </dl>
          <p class="muted small">
            Everyone in the same room sees the same safety code. Compare it out loud or in person to be sure nobody
            else is listening in.
          </p>
        </>
      )}
      <div class="button-row">
        <button type="button" class="button" onClick={props.onClose}>
          Close
        </button>
      </div>
    </Dialog>
  );
}
