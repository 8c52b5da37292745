// `npm test`: builds dist/ (the tests spawn bin/simmeter.mjs, which runs only dist/), then runs the
// whole suite (unit, integration through real Redis/SQLite/HTTP, fault drills). vitest's global
// setup starts a private redis-server and a private PostgreSQL cluster on free ports and stops them
// at the end. The run has two vitest projects (vitest.config.ts): sqlite, every file, and postgres,
// the files converted to test/helpers/ledger.ts on the private PostgreSQL; extra arguments go to
// vitest (`npm test -- --project postgres`, `npm test -- test/integration/ingest.test.ts`).
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const probe = spawnSync("redis-server", ["--version"], { encoding: "utf8" });
if (probe.error) {
  console.error(
    "npm test needs redis-server on PATH: apt-get update && apt-get install -y redis-server",
  );
  process.exit(1);
}
// The global setup also initdb's a private PostgreSQL cluster (scripts/lib/postgres-server.ts).
const pgRoot = "/usr/lib/postgresql";
const pgBin = process.env.PG_BIN
  ? [process.env.PG_BIN]
  : existsSync(pgRoot)
    ? readdirSync(pgRoot).map((v) => join(pgRoot, v, "bin"))
    : [];
if (!pgBin.some((dir) => existsSync(join(dir, "initdb")))) {
  console.error(
    `npm test needs the PostgreSQL server binaries (no ${process.env.PG_BIN ? "initdb in PG_BIN" : `${pgRoot}/*/bin/initdb`}): apt-get update && apt-get install -y postgresql`,
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
