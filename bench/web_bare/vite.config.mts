import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The bare page, built as web-demo/vite.config.ts builds the app: the same plugin and build
// settings. bench/web.py copies this folder to bench/out/web-bare-src/, next to a link to
// web-demo's node_modules (the same packages), and runs web-demo's vite there; the page is
// built into bench/out/web-bare/.
export default defineConfig({
  plugins: [react()],
  build: { outDir: "../web-bare", emptyOutDir: true, sourcemap: false, chunkSizeWarningLimit: 4096 },
});
