// npm run build (also run by npm install/ci through "prepare"): compiles src/ to dist/ and stamps
// the build so bin/simmeter.mjs can tell a current build from a stale one.
import { spawnSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";

rmSync("dist", { recursive: true, force: true });
const r = spawnSync("npx", ["tsc", "-p", "tsconfig.build.json"], { stdio: "inherit" });
if (r.status !== 0) process.exit(r.status ?? 1);
writeFileSync("dist/.build-stamp", `${new Date().toISOString()}\n`);
