// `npm test`: builds dist/ (the tests spawn bin/simmeter.mjs, which runs only dist/), then runs the
// whole suite (unit, integration through real Redis/SQLite/HTTP, fault drills). vitest's global
// setup starts a private redis-server on a free port and stops it at the end.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const probe = spawnSync("redis-server", ["--version"], { encoding: "utf8" });
if (probe.error) {
  console.error(
    "npm test needs redis-server on PATH: apt-get update && apt-get install -y redis-server",
  );
  process.exit(1);
}
const build = spawnSync(process.execPath, [fileURLToPath(new URL("build.mjs", import.meta.url))], {
  stdio: "inherit",
});
if (build.status !== 0) {
  console.error("npm test: the build failed (npm run build); no test was run");
  process.exit(build.status ?? 1);
}
// --no: never download a "vitest" that the install lacks.
const r = spawnSync("npx", ["--no", "vitest", "run", ...process.argv.slice(2)], {
  stdio: "inherit",
});
process.exit(r.status ?? 1);
