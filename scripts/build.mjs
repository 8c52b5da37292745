// `npm run build` (also run by `npm test`, and by `npm pack` through "prepack"; never at install):
// compiles src/ to dist/ with the project's own TypeScript and stamps the build.
//   --if-stale   build only when a file in src/ (or a tsconfig) is newer than the last build
//                (`npm run demo` uses it, so a demo after an edit never runs stale code)
// The new build is written beside dist/ and swapped in, so a CLI started during a build finds
// either the old dist/ or the new one, never a half-written one.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const dist = join(root, "dist");
const stamp = join(dist, ".build-stamp");

function newestMtime(path) {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = 0;
  for (const entry of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, entry)));
  return newest;
}

if (process.argv.includes("--if-stale") && existsSync(stamp)) {
  const inputs = ["src", "tsconfig.json", "tsconfig.build.json"].map((p) => join(root, p));
  const newest = Math.max(...inputs.filter((p) => existsSync(p)).map(newestMtime));
  if (newest <= statSync(stamp).mtimeMs) process.exit(0);
}

// Never `npx tsc`: without TypeScript installed npx would fetch the unrelated npm package "tsc".
let tsc;
try {
  tsc = createRequire(join(root, "package.json")).resolve("typescript/bin/tsc");
} catch {
  console.error(
    "build: TypeScript is not installed. It is a devDependency: run `npm ci` (without --omit=dev) " +
      "in a development checkout, then `npm run build`. A production install gets dist/ from the " +
      "package or image it was built into (docs/deployment.md).",
  );
  process.exit(1);
}

for (const entry of readdirSync(root)) {
  if (entry.startsWith(".dist-build-")) rmSync(join(root, entry), { recursive: true, force: true });
}
const out = join(root, `.dist-build-${process.pid}`);
const r = spawnSync(process.execPath, [tsc, "-p", "tsconfig.build.json", "--outDir", out], {
  cwd: root,
  stdio: "inherit",
});
if (r.status !== 0) {
  rmSync(out, { recursive: true, force: true });
  process.exit(r.status ?? 1);
}
writeFileSync(join(out, ".build-stamp"), `${new Date().toISOString()}\n`);
const old = join(root, `.dist-build-${process.pid}-old`);
if (existsSync(dist)) renameSync(dist, old);
renameSync(out, dist);
rmSync(old, { recursive: true, force: true });
