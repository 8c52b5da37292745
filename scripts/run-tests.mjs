// `npm test`: the whole suite (unit, integration through real Redis/SQLite/HTTP, fault drills).
// vitest's global setup starts a private redis-server on a free port and stops it at the end.
import { spawnSync } from "node:child_process";

const probe = spawnSync("redis-server", ["--version"], { encoding: "utf8" });
if (probe.error) {
  console.error(
    "npm test needs redis-server on PATH: apt-get update && apt-get install -y redis-server",
  );
  process.exit(1);
}
const r = spawnSync("npx", ["vitest", "run", ...process.argv.slice(2)], { stdio: "inherit" });
process.exit(r.status ?? 1);
