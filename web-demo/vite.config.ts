import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// Built into dist/, which `citadel serve` serves at / (same origin as the API).
// `npm run dev` proxies the API to a server on :8000.
const api = ["/api", "/agui", "/threads", "/rag", "/admin", "/health", "/voice", "/app"];

export default defineConfig({
  plugins: [react()],
  build: { outDir: "dist", sourcemap: false, chunkSizeWarningLimit: 4096 },
  server: {
    proxy: Object.fromEntries(
      api.map((path) => [path, { target: "http://127.0.0.1:8000", ws: path === "/voice" }]),
    ),
  },
});
