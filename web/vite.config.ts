// Vite builds the app into dist/, served by every health node at /app/ (node/web_app.py).
import { defineConfig } from "vite";

export default defineConfig({
  base: "/app/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    // Nothing inlined as a data: URL script or style: the node's Content-Security-Policy
    // allows the app's own files only.
    assetsInlineLimit: 0,
    sourcemap: false,
    // libsodium (WebAssembly inside, about 540 kB) in a chunk of its own: it changes only with its
    // pinned version, so a new build of the app does not make browsers fetch it again.
    chunkSizeWarningLimit: 600,
    rollupOptions: { output: { manualChunks: { sodium: ["libsodium-wrappers-sumo"] } } },
  },
});
