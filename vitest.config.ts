import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    globalSetup: ["test/helpers/global-redis.ts", "test/helpers/global-postgres.ts"],
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    // Two shared cores: more parallel files only add contention to the timing-free
    // integration tests; two keeps the whole suite quick and deterministic.
    maxWorkers: 2,
    reporters: ["default", ["json", { outputFile: ".vitest-results.json" }]],
  },
});
