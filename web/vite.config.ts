import { defineConfig } from "vite";

// Everything the page loads comes from its own origin: no CDN, no fonts, no
// analytics. The wasm module is emitted as a file next to the scripts.
//
// Development: `SOTTO_SERVER=http://127.0.0.1:PORT npx vite` proxies the API
// and the session channel (WebSocket) to a running `sotto serve`.
const server = process.env.SOTTO_SERVER ?? "http://127.0.0.1:8080";

export default defineConfig({
  // Vite 8 transforms TypeScript and JSX with Oxc: JSX for Preact.
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    assetsInlineLimit: 0,
    sourcemap: false,
  },
  worker: { format: "es" },
  server: {
    proxy: {
      "/api": { target: server, ws: true, changeOrigin: false },
    },
  },
  preview: {
    proxy: {
      "/api": { target: server, ws: true, changeOrigin: false },
    },
  },
});
