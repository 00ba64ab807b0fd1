// `sotto serve` on a fresh data directory and free ports, the native CLI
// (register, speak, listen, invites), and the operator's direct database
// writes. Every child process started here is killed at exit.

import { spawn, execFile } from "node:child_process";
import { createInterface } from "node:readline";
import { createWriteStream, mkdirSync, writeFileSync, chmodSync } from "node:fs";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { join, resolve } from "node:path";
import { promisify } from "node:util";

const execFileP = promisify(execFile);

export const ROOT = resolve(new URL("../../..", import.meta.url).pathname);
// Where cargo put it: CARGO_TARGET_DIR when set (relative to the root, as
// cargo reads it from there), else target/.
const TARGET = process.env.CARGO_TARGET_DIR ? resolve(ROOT, process.env.CARGO_TARGET_DIR) : join(ROOT, "target");
export const SOTTO = process.env.SOTTO_BIN || join(TARGET, "debug/sotto");

const children = new Set();
function track(child) {
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}
/** Kills every child still running (SIGKILL: this is the end). */
export function killAll() {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch {}
  }
}
process.on("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

/** Runs `sotto args...`; resolves to stdout, rejects with stdout+stderr. */
export async function sotto(args, { timeoutMs = 60_000 } = {}) {
  try {
    const { stdout } = await execFileP(SOTTO, args, { timeout: timeoutMs, maxBuffer: 16 << 20 });
    return stdout;
  } catch (e) {
    throw new Error(`sotto ${args.join(" ")} failed (${e.code ?? e.signal}):\n${e.stdout}\n${e.stderr}`);
  }
}

export const lastLine = (text) => text.trim().split("\n").pop().trim();

/** Starts a long-running `sotto args...`; returns { child, done: Promise<{code, stderr}> }. */
export function sottoBackground(args, logFile) {
  const child = track(spawn(SOTTO, args, { stdio: ["ignore", "pipe", "pipe"] }));
  let stderr = "";
  let stdout = "";
  const log = logFile ? createWriteStream(logFile) : null;
  child.stdout.on("data", (d) => {
    stdout += d;
    log?.write(d);
  });
  child.stderr.on("data", (d) => {
    stderr += d;
    log?.write(d);
  });
  const done = new Promise((res) =>
    child.on("exit", (code, signal) => {
      log?.end();
      res({ code, signal, stdout, stderr });
    }),
  );
  return { child, done };
}

export class Server {
  /** Starts `sotto serve` on `dataDir` (fresh), HTTP and media on free loopback ports. */
  static async start(dataDir, logFile) {
    mkdirSync(dataDir, { recursive: true });
    const child = track(
      spawn(
        SOTTO,
        ["serve", "--data-dir", dataDir, "--http", "127.0.0.1:0", "--media-udp", "127.0.0.1:0", "--auth-rate-limit", "0"],
        { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, SOTTO_LOG: process.env.SOTTO_LOG ?? "info" } },
      ),
    );
    const log = createWriteStream(logFile);
    child.stderr.pipe(log);
    const lines = [];
    const rl = createInterface({ input: child.stdout });
    const banner = await new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`sotto serve printed no admin invite in 30 s: ${lines.join("\n")}`)), 30_000);
      child.on("exit", (code) => rej(new Error(`sotto serve exited (${code}) early: ${lines.join("\n")} (log: ${logFile})`)));
      rl.on("line", (line) => {
        lines.push(line);
        log.write(`[stdout] ${line}\n`);
        if (line.startsWith("No accounts yet.")) {
          clearTimeout(timer);
          res(lines);
        }
      });
    });
    const url = banner.find((l) => l.startsWith("sotto is serving at ")).slice("sotto is serving at ".length).trim();
    const adminInvite = banner.at(-1).split(" ").at(-1);
    return new Server(child, dataDir, url, adminInvite, banner);
  }

  constructor(child, dataDir, url, adminInvite, banner) {
    this.child = child;
    this.dataDir = dataDir;
    this.url = url;
    this.origin = new URL(url).origin;
    this.adminInvite = adminInvite;
    this.banner = banner;
  }

  /** A new invite code (made against the database, as an operator would). */
  async invite(uses = 1) {
    const out = await sotto(["admin", "invite", "--data-dir", this.dataDir, "--uses", String(uses), "--expires", "1h"]);
    const code = lastLine(out);
    if (!/^[0-9a-f]{32}$/.test(code)) throw new Error(`admin invite printed no code: ${out}`);
    return code;
  }

  inviteUrl(code) {
    return `${this.url}/invite/${code}`;
  }

  get db() {
    return join(this.dataDir, "sotto.db");
  }

  /** Runs SQL on the server's SQLite database (python3's sqlite3 module);
   * `params` as JSON-able values, `{hex}` for blobs. Returns rows. */
  async sql(query, params = []) {
    const script = `
import json, sqlite3, sys
q, p = json.loads(sys.argv[2]), json.loads(sys.argv[3])
p = [bytes.fromhex(x["hex"]) if isinstance(x, dict) else x for x in p]
db = sqlite3.connect(sys.argv[1], timeout=30)
rows = db.execute(q, p).fetchall()
db.commit()
print(json.dumps(rows))
`;
    const { stdout } = await execFileP("python3", ["-c", script, this.db, JSON.stringify(query), JSON.stringify(params)]);
    return JSON.parse(stdout);
  }

  async stop() {
    if (this.child.exitCode !== null) return;
    this.child.kill("SIGTERM");
    await new Promise((res) => {
      const t = setTimeout(() => {
        this.child.kill("SIGKILL");
        res();
      }, 10_000);
      this.child.on("exit", () => {
        clearTimeout(t);
        res();
      });
    });
  }
}

/** A native `sotto` client profile (a directory holding the device key). */
export class NativeUser {
  constructor(server, dir, username) {
    this.server = server;
    this.dir = dir;
    this.username = username;
  }

  static async register(server, dir, username, invite) {
    await sotto(["register", "--server", server.url, "--invite", invite, "--username", username, "--profile", dir]);
    return new NativeUser(server, dir, username);
  }

  conn() {
    return ["--server", this.server.url, "--profile", this.dir];
  }

  run(args, opts) {
    return sotto([...args, ...this.conn()], opts);
  }

  /** `sotto room create`; the new room's id. */
  async createRoom(title, kind = "open") {
    const out = await this.run(["room", "create", "--title", title, "--kind", kind]);
    const id = lastLine(out);
    if (!/^[0-9a-f]{32}$/.test(id)) throw new Error(`room create printed no id: ${out}`);
    return id;
  }

  listen(room, output, duration, logFile) {
    return sottoBackground(["listen", ...this.conn(), "--room", room, "--duration", duration, "--output", output], logFile);
  }

  speak(room, input, duration, logFile) {
    return sottoBackground(["speak", ...this.conn(), "--room", room, "--input", input, "--loop", "--duration", duration], logFile);
  }
}

/** The operator's move (attack 1 of the malicious-operator issue): a device
 * row of its own in the `devices` table for `username`'s account, with a key
 * it holds, written as a native profile so `sotto` can sign in with it. */
export async function operatorDevice(server, dir, username) {
  const rows = await server.sql("SELECT id FROM users WHERE username = ?", [username]);
  if (rows.length !== 1) throw new Error(`no user ${username} in the database`);
  const userId = rows[0][0];
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const seed = privateKey.export({ format: "der", type: "pkcs8" }).subarray(-32);
  const pub = publicKey.export({ format: "der", type: "spki" }).subarray(-32);
  const deviceId = randomBytes(16).toString("hex");
  await server.sql("INSERT INTO devices (id, user_id, public_key, name, created_at) VALUES (?, ?, ?, ?, ?)", [
    deviceId,
    userId,
    { hex: pub.toString("hex") },
    "laptop",
    Date.now(),
  ]);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "device.key"), seed.toString("hex"));
  chmodSync(join(dir, "device.key"), 0o600);
  writeFileSync(
    join(dir, "profile.json"),
    JSON.stringify({ server: server.url, username, user_id: userId, device_id: deviceId }, null, 2),
  );
  return { user: new NativeUser(server, dir, username), userId, deviceId };
}
