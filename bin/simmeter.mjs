#!/usr/bin/env node
// Runs the compiled CLI in dist/. dist/ is built by `npm run build` (also by `npm test`,
// `npm run demo` and `npm pack`), never at install: TypeScript and tsx are devDependencies, so a
// production install (`npm ci --omit=dev`, the Docker image) runs dist/ and nothing else.
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const entry = join(root, "dist", "cli", "main.js");

if (!existsSync(entry)) {
  process.stderr.write(
    [
      "simmeter: dist/ is missing: run npm run build",
      "  In a development checkout: npm ci && npm run build (TypeScript is a devDependency).",
      "  A production install (npm ci --omit=dev) needs dist/ built first and copied in, as the",
      "  package from npm pack and the Docker image have it: see docs/deployment.md.",
      "",
    ].join("\n"),
  );
  process.exit(1);
}

// In a checkout with sources, say so when dist/ is older than them (it still runs: a stale build
// is the operator's call, and a production tree has no src/).
const src = join(root, "src");
const stamp = join(root, "dist", ".build-stamp");
if (existsSync(src) && existsSync(stamp)) {
  const newest = (dir) => {
    let t = 0;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
    }
    return t;
  };
  if (newest(src) > statSync(stamp).mtimeMs) {
    process.stderr.write("simmeter: warning: dist/ is older than src/: run npm run build\n");
  }
}

await import(pathToFileURL(entry).href);
