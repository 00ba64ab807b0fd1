// The one engine of this page (its core worker holds the keys).

import type { Engine } from "../engine/api";
import { createEngine } from "../engine/index";

let engine: Promise<Engine> | null = null;

export function getEngine(): Promise<Engine> {
  if (!engine) {
    engine = Promise.resolve().then(() => createEngine());
    engine.catch(() => {
      engine = null;
    });
  }
  return engine;
}
