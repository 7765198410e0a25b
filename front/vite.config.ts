// Vite build of the search page: relative asset paths so `clip-retrieval back` can serve dist/ at any prefix.
import { defineConfig } from "vitest/config";

export default defineConfig({
  base: "./",
  build: { outDir: "dist", emptyOutDir: true },
  test: { include: ["src/**/*.test.ts"] },
});
