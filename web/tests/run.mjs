// Runs the browser tests with Node's own test runner (node:test).
// Prerequisites (scripts/browser-test makes them): target/debug/sotto built
// with web/dist embedded, /usr/bin/chromium, npm ci in web/.
// Usage: node web/tests/run.mjs [--test-name-pattern=REGEX]
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const child = spawn(
  process.execPath,
  ["--test", "--test-reporter=spec", "--test-concurrency=1", ...process.argv.slice(2), join(here, "browser.test.mjs")],
  { stdio: "inherit" },
);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => child.kill(sig));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
