// A room's audio: one RTCPeerConnection to the SFU with one `sendonly` audio
// m-line (the microphone; present even for listeners) and three `recvonly`
// ones (receive slots), each with the core worker's SFrame transform. Each
// receive slot plays through its own hidden `<audio autoplay data-slot="N">`.
//
// The SFU never renegotiates. When it drops this device's media peer
// (`media_gone`), when ICE fails or stays disconnected, or when the channel
// comes back after a restart, the whole connection is set up again: a fresh
// RTCPeerConnection and a new offer (as the native driver does).

import type { Core } from "./core";
import type { ClientMessage } from "../wire/ClientMessage";
import { attachTransform, peerConfig, transformPath, type TransformPath } from "./transform";
import type { Levels } from "./levels";

export const SLOTS = 3;

/** How long ICE may stay disconnected before the media is set up again. */
const DISCONNECTED_MS = 5000;
/** Waits before offering again after a failure: first, and at most (doubling, jittered). */
const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 5000;
/** Longest wait for ICE candidates before the offer goes out anyway (no trickle on the channel). */
const GATHER_MS = 3000;
/** An offer with no answer after this long is made again. */
const ANSWER_MS = 10000;

const MIC_CONSTRAINTS = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };

/**
 * The ts-rs export of ClientMessage lost serde's `tag = "type"` (it shows
 * externally tagged variants); the wire format is internally tagged, as
 * ServerMessage's is. Built here, in one place.
 */
function clientMessage(msg: { type: "media_offer"; room_id: string; sdp: string } | { type: "media_leave"; room_id: string }): ClientMessage {
  return msg as unknown as ClientMessage;
}

export interface MediaHooks {
  send(msg: ClientMessage): void;
  /** Something the user should know (no microphone, no encrypted media here). */
  alert(text: string): void;
}

export class Media {
  private readonly path: TransformPath | null = transformPath();
  private pc: RTCPeerConnection | null = null;
  /** Bumped with every new peer connection and on close: late callbacks of an older one do nothing. */
  private generation = 0;
  /** Offers sent on the current channel not answered yet. */
  private unanswered = 0;
  /** From the start of a new connection until its answer is applied. */
  private awaitingAnswer = false;
  private answerTimer: ReturnType<typeof setTimeout> | undefined;
  private micStream: MediaStream | null = null;
  private micTrack: MediaStreamTrack | null = null;
  private micWanted = false;
  private micPending: Promise<void> | null = null;
  private sender: RTCRtpSender | null = null;
  private readonly elements: HTMLAudioElement[] = [];
  private disconnectedTimer: ReturnType<typeof setTimeout> | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private retryMs = RETRY_FIRST_MS;
  /** The channel went away: no offers until it is back. */
  private channelDown = false;
  private closed = false;

  constructor(
    private readonly core: Core,
    private readonly key: number,
    private readonly roomId: string,
    private readonly hooks: MediaHooks,
    private readonly levels: Levels,
    private microphoneId: string | undefined,
  ) {
    for (let slot = 0; slot < SLOTS; slot++) {
      const el = document.createElement("audio");
      el.autoplay = true;
      el.hidden = true;
      el.dataset.slot = String(slot);
      document.body.appendChild(el);
      this.elements.push(el);
    }
  }

  /** Takes the microphone (if any) and offers media. */
  async start(): Promise<void> {
    if (!this.path) {
      this.hooks.alert("This browser cannot encrypt audio (no encoded transforms): you can see the room but not hear or speak.");
      return;
    }
    await this.acquireMic();
    await this.offer();
  }

  /** The server's answer to our offer. */
  answer(sdp: string): void {
    if (this.unanswered > 0) this.unanswered--;
    // Still waiting for a later offer's answer: this one is for an older connection.
    if (this.unanswered > 0) return;
    const pc = this.pc;
    if (!pc || pc.signalingState !== "have-local-offer") return;
    const gen = this.generation;
    this.awaitingAnswer = false;
    clearTimeout(this.answerTimer);
    pc.setRemoteDescription({ type: "answer", sdp }).catch((e) => {
      if (gen !== this.generation) return;
      console.warn("sotto: the media answer was refused", e);
      this.retry();
    });
  }

  /** The server dropped our media peer: offer again now. */
  gone(): void {
    // While a new connection is being offered, the server's word is about
    // the one this device just closed (it notices the close before it sees
    // the new offer): nothing to do.
    if (this.awaitingAnswer) return;
    this.retryMs = RETRY_FIRST_MS;
    this.retry();
  }

  /** The channel is going away (server restart): wait for it to come back. */
  channelLost(): void {
    this.channelDown = true;
    this.unanswered = 0;
    clearTimeout(this.retryTimer);
    clearTimeout(this.answerTimer);
  }

  /** The channel is back: offers on it afresh. */
  channelBack(): void {
    this.channelDown = false;
    this.unanswered = 0;
    this.retryMs = RETRY_FIRST_MS;
    void this.offer();
  }

  /** Starts playback the browser held back (autoplay policy): call on a user gesture. */
  resumePlayback(): void {
    for (const el of this.elements) {
      if (el.paused && el.srcObject) el.play().catch(() => {});
    }
  }

  /** Turns the microphone's track on or off (the worker refuses to encrypt when off anyway). */
  setMic(on: boolean): void {
    this.micWanted = on;
    if (this.micTrack) this.micTrack.enabled = on;
    else if (on && this.path) void this.acquireMic();
  }

  /** Another microphone: replaces the sending track (no renegotiation). */
  async setMicrophone(deviceId: string | undefined): Promise<void> {
    if (deviceId === this.microphoneId && this.micTrack) return;
    this.microphoneId = deviceId;
    await this.micPending?.catch(() => {});
    if (!this.path || this.closed) return;
    // On failure the current microphone stays (and the alert says why).
    await this.getMic();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.generation++;
    clearTimeout(this.retryTimer);
    clearTimeout(this.disconnectedTimer);
    clearTimeout(this.answerTimer);
    if (this.pc) {
      try {
        this.hooks.send(clientMessage({ type: "media_leave", room_id: this.roomId }));
      } catch {
        // The channel is gone: the server reaps the media peer anyway.
      }
    }
    this.pc?.close();
    this.pc = null;
    this.micStream?.getTracks().forEach((t) => t.stop());
    this.micStream = null;
    this.micTrack = null;
    for (const el of this.elements) {
      el.srcObject = null;
      el.remove();
    }
    this.elements.length = 0;
  }

  private acquireMic(): Promise<void> {
    if (this.micTrack) return Promise.resolve();
    if (!this.micPending) {
      this.micPending = this.getMic().finally(() => {
        this.micPending = null;
      });
    }
    return this.micPending;
  }

  private async getMic(): Promise<void> {
    const ask = (deviceId?: string) =>
      navigator.mediaDevices.getUserMedia({
        audio: deviceId ? { ...MIC_CONSTRAINTS, deviceId: { exact: deviceId } } : { ...MIC_CONSTRAINTS },
        video: false,
      });
    let stream: MediaStream;
    try {
      try {
        stream = await ask(this.microphoneId);
      } catch (e) {
        // The chosen microphone is gone: take the default one.
        if (!this.microphoneId || (e as DOMException)?.name !== "OverconstrainedError") throw e;
        stream = await ask(undefined);
      }
    } catch (e) {
      const name = (e as DOMException)?.name;
      this.hooks.alert(
        name === "NotAllowedError"
          ? "Microphone access was denied: you can listen, but not speak."
          : name === "NotFoundError"
            ? "No microphone found: you can listen, but not speak."
            : `The microphone could not be opened (${(e as Error)?.message ?? String(e)}): you can listen, but not speak.`,
      );
      return;
    }
    if (this.closed) {
      stream.getTracks().forEach((t) => t.stop());
      return;
    }
    const track = stream.getAudioTracks()[0] ?? null;
    if (track) track.enabled = this.micWanted;
    const old = this.micStream;
    this.micStream = stream;
    this.micTrack = track;
    this.levels.set("mic", track);
    if (this.sender) await this.sender.replaceTrack(track).catch((e) => console.warn("sotto: replacing the microphone failed", e));
    old?.getTracks().forEach((t) => t.stop());
  }

  private retry(): void {
    if (this.closed || this.channelDown) return;
    clearTimeout(this.retryTimer);
    const wait = this.retryMs + Math.random() * (this.retryMs / 2);
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    this.retryTimer = setTimeout(() => void this.offer(), wait);
  }

  /** A fresh peer connection and its offer. */
  private async offer(): Promise<void> {
    if (this.closed || this.channelDown || !this.path) return;
    const path = this.path;
    const gen = ++this.generation;
    this.awaitingAnswer = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.disconnectedTimer);
    clearTimeout(this.answerTimer);
    this.pc?.close();
    const pc = new RTCPeerConnection(peerConfig(path));
    this.pc = pc;
    try {
      const send = pc.addTransceiver(this.micTrack ?? "audio", {
        direction: "sendonly",
        streams: this.micStream ? [this.micStream] : [],
      });
      this.sender = send.sender;
      attachTransform(this.core, path, send.sender, { key: this.key, role: "send", slot: 0 });
      for (let slot = 0; slot < SLOTS; slot++) {
        const t = pc.addTransceiver("audio", { direction: "recvonly" });
        attachTransform(this.core, path, t.receiver, { key: this.key, role: "recv", slot });
        const el = this.elements[slot];
        el.srcObject = new MediaStream([t.receiver.track]);
        el.play().catch(() => {
          // Autoplay held back until a user gesture; the element plays then.
        });
        this.levels.set(`slot${slot}`, t.receiver.track);
      }
      pc.onconnectionstatechange = () => this.watch(pc, gen);
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      if (gen !== this.generation || this.closed || this.channelDown) return;
      const sdp = pc.localDescription?.sdp;
      if (!sdp) throw new Error("no local description");
      this.unanswered++;
      this.hooks.send(clientMessage({ type: "media_offer", room_id: this.roomId, sdp }));
      // No answer (a refused offer, a lost message): offer again.
      this.answerTimer = setTimeout(() => {
        if (gen === this.generation && this.awaitingAnswer) this.retry();
      }, ANSWER_MS);
    } catch (e) {
      if (gen !== this.generation) return;
      console.warn("sotto: setting up media failed", e);
      this.retry();
    }
  }

  private watch(pc: RTCPeerConnection, gen: number): void {
    if (gen !== this.generation) return;
    switch (pc.connectionState) {
      case "connected":
        clearTimeout(this.disconnectedTimer);
        this.retryMs = RETRY_FIRST_MS;
        break;
      case "disconnected":
        clearTimeout(this.disconnectedTimer);
        this.disconnectedTimer = setTimeout(() => {
          if (gen === this.generation && pc.connectionState === "disconnected") this.retry();
        }, DISCONNECTED_MS);
        break;
      case "failed":
        clearTimeout(this.disconnectedTimer);
        this.retry();
        break;
    }
  }
}

/** Resolves when ICE gathering is complete (or after GATHER_MS: the host candidates come first). */
function gathered(pc: RTCPeerConnection): Promise<void> {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const timer = setTimeout(done, GATHER_MS);
    pc.addEventListener("icegatheringstatechange", check);
  });
}
