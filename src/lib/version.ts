import { readFileSync } from "node:fs";

/**
 * simmeter's version, read from package.json at run time. The path is resolved from this module's
 * own file, which sits two levels below the package root both as src/lib/version.ts (tsx, tests)
 * and as dist/lib/version.js (the build), so it works in either.
 */
function readVersion(): string {
  try {
    const pkg = JSON.parse(
      readFileSync(new URL("../../package.json", import.meta.url), "utf8"),
    ) as {
      version?: unknown;
    };
    return typeof pkg.version === "string" ? pkg.version : "unknown";
  } catch {
    return "unknown";
  }
}

export const VERSION: string = readVersion();
