import { spawn } from "node:child_process";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { tempDir } from "../helpers/process.ts";

// `simmeter --version`, and option values refused before anything runs: a usage error exits 2 with
// a message naming the option and the value, and touches nothing (no database, no Redis, no
// Stripe). Real CLI processes.

const BIN = resolve(import.meta.dirname, "../../bin/simmeter.mjs");
const PACKAGE = JSON.parse(
  readFileSync(resolve(import.meta.dirname, "../../package.json"), "utf8"),
) as { version: string };

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function cli(
  args: string[],
  cwd: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      // Nothing reachable: an option that got past validation would fail differently.
      env: {
        ...process.env,
        DATABASE_PATH: undefined,
        REDIS_URL: "redis://127.0.0.1:1",
        STRIPE_SECRET_KEY: "sk_test_not_used",
        STRIPE_API_BASE: "http://127.0.0.1:1",
        LOG_LEVEL: "warn",
      },
      cwd,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.once("error", fail);
    child.once("close", (code) => done({ code, stdout, stderr }));
  });
}

describe("simmeter --version", () => {
  it("prints package.json's version and exits 0", async () => {
    const cwd = tempDir("simmeter-options-");
    dirs.push(cwd);
    for (const flag of ["--version", "-V"]) {
      const r = await cli([flag], cwd);
      expect(r.code).toBe(0);
      expect(r.stdout).toBe(`${PACKAGE.version}\n`);
    }
  });
});

describe("option values are validated before a command runs", () => {
  it.each<[string, string[], string]>([
    // Numbers: digits only, in range.
    ["quarantine --limit abc", ["quarantine", "--limit", "abc"], "must be a positive integer"],
    [
      "quarantine list --limit 0",
      ["quarantine", "list", "--limit", "0"],
      "must be a positive integer",
    ],
    ["quarantine --limit 1.5", ["quarantine", "--limit", "1.5"], "must be a positive integer"],
    ["quarantine --limit 1e3", ["quarantine", "--limit", "1e3"], "must be a positive integer"],
    [
      "quarantine requeue --id 3 --id x",
      ["quarantine", "requeue", "--id", "3", "--id", "x"],
      "must be a positive integer",
    ],
    [
      "quarantine requeue --timeout -5",
      ["quarantine", "requeue", "--id", "1", "--timeout", "-5"],
      "must be a positive integer",
    ],
    ["jobs failed --limit ten", ["jobs", "failed", "--limit", "ten"], "must be a positive integer"],
    [
      "jobs retry --timeout 0",
      ["jobs", "retry", "--all", "--timeout", "0"],
      "must be a positive integer",
    ],
    [
      "replay --events-per-job many",
      ["replay", "events.jsonl", "--events-per-job", "many"],
      "must be a whole number from 1 to 100000",
    ],
    [
      "reconcile --repair --settle-minutes soon",
      ["reconcile", "--repair", "--settle-minutes", "soon"],
      "is not a whole number of minutes",
    ],
    ["simulate --sims 1e3", ["simulate", "--sims", "1e3", "--out", "x.jsonl"], "--sims must be"],
    ["usage --sim HS123", ["usage", "--sim", "HS123"], "is not a Super SIM SID"],
    // Enumerations: one of the listed values.
    ["usage --by week", ["usage", "--by", "week"], "Allowed choices are hour, day, month, total"],
    [
      "statement --by week",
      ["statement", "--customer", "cus_A1", "--by", "week"],
      "Allowed choices are period, day",
    ],
    [
      "reconcile --period current --format xml",
      ["reconcile", "--period", "current", "--format", "xml"],
      '"xml" is not a format',
    ],
    ["reconcile --period bogus", ["reconcile", "--period", "bogus"], '"bogus" is not a period'],
    // Times: ISO 8601.
    ["usage --from 01/12/2026", ["usage", "--from", "01/12/2026"], "is not an ISO 8601 time"],
    [
      "quarantine --since yesterday",
      ["quarantine", "--since", "yesterday"],
      "is not an ISO 8601 time",
    ],
    [
      "customers assign --from 2026-02-30",
      [
        "customers",
        "assign",
        "HS0123456789abcdef0123456789abcdef",
        "--sim",
        "--customer",
        "cus_A1",
        "--from",
        "2026-02-30",
      ],
      "is not an ISO 8601 time",
    ],
    ["reconcile --to 12", ["reconcile", "--to", "12"], "is not an ISO 8601 time"],
    // Combinations that mean nothing.
    [
      "reconcile --period current --repair",
      ["reconcile", "--period", "current", "--repair"],
      "--period cannot be combined with --from, --to or --repair",
    ],
    [
      "customers assign with two kinds of target",
      [
        "customers",
        "assign",
        "HS0123456789abcdef0123456789abcdef",
        "--sim",
        "--fleet",
        "--customer",
        "cus_A1",
      ],
      "give exactly one of --sim, --iccid, --fleet",
    ],
  ])(
    "%s exits 2 with a message naming the problem, and touches nothing",
    async (_name, args, message) => {
      const cwd = tempDir("simmeter-options-");
      dirs.push(cwd);
      const r = await cli(args, cwd);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr).toContain(message);
      // No ./data/simmeter.db (the default DATABASE_PATH), nothing else either.
      expect(readdirSync(cwd)).toEqual([]);
    },
  );

  it("a bad value names the option and the value as given", async () => {
    const cwd = tempDir("simmeter-options-");
    dirs.push(cwd);
    const r = await cli(["quarantine", "--limit", "abc"], cwd);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("option '--limit <n>' argument 'abc' is invalid");
  });
});

describe("exit codes", () => {
  it("an unknown command or option is a usage error (2); a command that runs and fails exits 1", async () => {
    const cwd = tempDir("simmeter-options-");
    dirs.push(cwd);
    expect((await cli(["usgae"], cwd)).code).toBe(2);
    expect((await cli(["usage", "--bogus"], cwd)).code).toBe(2);
    // Runs, and finds no database: 1.
    const r = await cli(["usage"], cwd);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("no database at");
    expect(readdirSync(cwd)).toEqual([]);
  });
});
