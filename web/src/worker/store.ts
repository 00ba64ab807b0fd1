// The device key store: IndexedDB database "sotto", object store "device",
// one record (key "device"). Read and written only by the core worker: the
// seed never leaves it. This is all the browser keeps for sotto.

import type { DeviceInfo } from "../engine/api";

export interface DeviceRecord {
  /** The device's secret key (32 bytes). */
  seed: Uint8Array;
  info: DeviceInfo;
  /** The trust pins (sotto-wasm's `Room.trust()`), "" before any. */
  trust: string;
  /**
   * This account's own device chain as last verified (public data; the
   * registration's first link until a newer one is learnt). Safety codes
   * need it.
   */
  chain?: string;
}

const DB = "sotto";
const STORE = "device";
const KEY = "device";

let opened: Promise<IDBDatabase> | null = null;

function db(): Promise<IDBDatabase> {
  if (!opened) {
    opened = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB, 1);
      req.onupgradeneeded = () => {
        if (!req.result.objectStoreNames.contains(STORE)) req.result.createObjectStore(STORE);
      };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(new Error(`Cannot open this browser's key store: ${req.error?.message ?? "unknown error"}`));
      req.onblocked = () => reject(new Error("The key store is in use by another sotto tab being upgraded; close other tabs."));
    });
    opened.catch(() => {
      opened = null;
    });
  }
  return opened;
}

function request<T>(mode: IDBTransactionMode, run: (store: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  return db().then(
    (d) =>
      new Promise<T>((resolve, reject) => {
        const tx = d.transaction(STORE, mode);
        const req = run(tx.objectStore(STORE));
        let value: T;
        req.onsuccess = () => {
          value = req.result;
        };
        tx.oncomplete = () => resolve(value);
        tx.onerror = () => reject(new Error(`The key store failed: ${tx.error?.message ?? "unknown error"}`));
        tx.onabort = () => reject(new Error(`The key store failed: ${tx.error?.message ?? "aborted"}`));
      }),
  );
}

export async function load(): Promise<DeviceRecord | null> {
  const rec = await request<DeviceRecord | undefined>("readonly", (s) => s.get(KEY));
  return rec ?? null;
}

export async function save(rec: DeviceRecord): Promise<void> {
  await request("readwrite", (s) => s.put(rec, KEY));
}

export async function remove(): Promise<void> {
  await request("readwrite", (s) => s.delete(KEY));
}
