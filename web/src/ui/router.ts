// Path-based routes: /invite/<code>, / (hallway), /room/<id>, /u/<username>,
// /account. History API only; the server answers every such path with the page.

import { useEffect, useState } from "preact/hooks";

export type Route =
  | { name: "invite"; code: string }
  | { name: "hallway" }
  | { name: "room"; id: string }
  | { name: "profile"; username: string }
  | { name: "account" }
  | { name: "not_found" };

function decode(part: string): string | null {
  try {
    return decodeURIComponent(part);
  } catch {
    return null;
  }
}

export function parseRoute(path: string): Route {
  const parts = path.split("/").filter((p) => p !== "");
  if (parts.length === 0) return { name: "hallway" };
  const [head, arg] = parts;
  const value = arg === undefined ? null : decode(arg);
  if (parts.length === 2 && value !== null && value !== "") {
    if (head === "invite") return { name: "invite", code: value };
    if (head === "room") return { name: "room", id: value };
    if (head === "u") return { name: "profile", username: value };
  }
  if (parts.length === 1 && head === "account") return { name: "account" };
  return { name: "not_found" };
}

const listeners = new Set<() => void>();

export function navigate(path: string, replace = false): void {
  if (path === location.pathname) return;
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  for (const fn of listeners) fn();
}

window.addEventListener("popstate", () => {
  for (const fn of listeners) fn();
});

export function usePath(): string {
  const [path, setPath] = useState(location.pathname);
  useEffect(() => {
    const fn = () => setPath(location.pathname);
    listeners.add(fn);
    return () => {
      listeners.delete(fn);
    };
  }, []);
  return path;
}

export const paths = {
  hallway: () => "/",
  room: (id: string) => `/room/${encodeURIComponent(id)}`,
  profile: (username: string) => `/u/${encodeURIComponent(username)}`,
  account: () => "/account",
};
