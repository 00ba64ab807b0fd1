// Which encoded-transform API this browser offers, and attaching the core
// worker's SFrame transform to a sender or receiver with it.
//
// Chromium 156 (the version tests run on) has RTCRtpScriptTransform, so it
// takes the standard path: the transform is created here with the core
// worker and runs there on the worker's `rtctransform` event. Chromium
// before 141 only has the older insertable streams (`encodedInsertableStreams`
// in the RTCPeerConnection's configuration, then `createEncodedStreams()` on
// each sender and receiver); their streams are transferred to the same
// worker, which runs the same functions on them. A browser with neither
// gets no media at all: audio is never sent or played unencrypted.

import type { Core } from "./core";
import type { TransformOptions } from "../worker/protocol";

export type TransformPath = "script" | "streams";

interface EncodedStreams {
  readable: ReadableStream;
  writable: WritableStream;
}

type WithEncodedStreams = { createEncodedStreams?: () => EncodedStreams };

/** The transform API to use here, or null when there is none. Feature detection only. */
export function transformPath(): TransformPath | null {
  if (typeof RTCRtpScriptTransform === "function" && typeof RTCRtpSender !== "undefined" && "transform" in RTCRtpSender.prototype) {
    return "script";
  }
  if (typeof RTCRtpSender !== "undefined" && typeof (RTCRtpSender.prototype as WithEncodedStreams).createEncodedStreams === "function") {
    return "streams";
  }
  return null;
}

/** RTCPeerConnection configuration the path needs (the old API must be asked for up front). */
export function peerConfig(path: TransformPath): RTCConfiguration {
  const config: RTCConfiguration & { encodedInsertableStreams?: boolean } = { iceServers: [] };
  if (path === "streams") config.encodedInsertableStreams = true;
  return config;
}

/** Puts the core worker's transform on `target` (before any frame flows: right after addTransceiver). */
export function attachTransform(
  core: Core,
  path: TransformPath,
  target: RTCRtpSender | RTCRtpReceiver,
  opts: TransformOptions,
): void {
  if (path === "script") {
    target.transform = new RTCRtpScriptTransform(core.worker, { ...opts });
  } else {
    const streams = (target as unknown as WithEncodedStreams).createEncodedStreams!();
    core.streams({ ...opts, readable: streams.readable, writable: streams.writable });
  }
}
