import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { rmSync } from "node:fs";
import { join, resolve } from "node:path";
import type Stripe from "stripe";
import { afterAll, inject } from "vitest";
import {
  type StripeEmulator,
  type StripeEmulatorOptions,
  startStripeEmulator,
} from "../../scripts/stripe-emulator.ts";
import { runCli, tempDir } from "./process.ts";
import { stripeEnv, stripeFor } from "./stripe.ts";

// Workspaces for tests of the built CLI (bin/simmeter.mjs runs dist/: `npm run build` first).

/** the CLI entry point */
export const BIN = resolve(import.meta.dirname, "../../bin/simmeter.mjs");

export type CliRun = { code: number | null; stdout: string; stderr: string };

/**
 * Runs a command until the process and its output streams have closed (so stdout and stderr are
 * complete), without blocking this process (a server the test hosts keeps answering). With
 * `input` it is written to stdin, else stdin is closed. Rejects when the command cannot start.
 */
export function runToEnd(
  cmd: string,
  args: string[],
  o: {
    env?: Record<string, string | undefined>;
    cwd?: string;
    input?: string;
    as?: { uid: number; gid: number };
  } = {},
): Promise<CliRun> {
  return new Promise((done, fail) => {
    const child = spawn(cmd, args, {
      ...(o.env ? { env: o.env } : {}),
      stdio: [o.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      ...(o.cwd ? { cwd: o.cwd } : {}),
      ...(o.as ?? {}),
    });
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (d) => {
      stdout += d;
    });
    child.stderr?.on("data", (d) => {
      stderr += d;
    });
    child.once("error", fail);
    child.once("close", (code) => done({ code, stdout, stderr }));
    if (o.input !== undefined) child.stdin?.end(o.input);
  });
}

/**
 * `simmeter ARGS` with runToEnd, LOG_LEVEL=warn unless `env` says otherwise (an undefined value
 * unsets a variable); `cwd` is where it runs, `as` the user it runs as.
 */
export function cli(
  args: string[],
  env: Record<string, string | undefined>,
  cwd?: string,
  as?: { uid: number; gid: number },
): Promise<CliRun> {
  return runToEnd(process.execPath, [BIN, ...args], {
    env: { ...process.env, LOG_LEVEL: "warn", ...env },
    ...(cwd ? { cwd } : {}),
    ...(as ? { as } : {}),
  });
}

/**
 * A maker of fresh temporary directories (named `prefix…`), all removed after the file's (or the
 * enclosing describe's) tests. Call it where `afterAll` may be called.
 */
export function tempDirsRemovedAfterAll(prefix: string): () => string {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  return () => {
    const d = tempDir(prefix);
    dirs.push(d);
    return d;
  };
}

export type StripeCliWorkspace = {
  dir: string;
  dbPath: string;
  emu: StripeEmulator;
  /** the real SDK against the same emulator, for what the test checks or changes in "Stripe" */
  stripe: Stripe;
  /** what every `cli` call runs with */
  env: Record<string, string | undefined>;
  /** `simmeter ARGS` with `env`, and `extraEnv` over it (undefined unsets) */
  cli: (args: string[], extraEnv?: Record<string, string | undefined>) => ReturnType<typeof runCli>;
  /** `simmeter ARGS` with `env`, its stdout parsed as JSON (whatever it exits with) */
  json: <T>(args: string[]) => Promise<T>;
};

/**
 * A temporary directory with a SQLite path (no file yet), its own Stripe emulator (no meter:
 * that is `simmeter stripe setup`'s job) and the shared test Redis under a fresh REDIS_PREFIX,
 * for the CLI as a child process. `cleanup` receives what closes the emulator and removes the
 * directory, for the test file to run when it cleans up.
 */
export async function stripeCliWorkspace(o: {
  dirPrefix: string;
  redisPrefix: string;
  emulator: StripeEmulatorOptions;
  cleanup: (close: () => Promise<void>) => void;
}): Promise<StripeCliWorkspace> {
  const dir = tempDir(o.dirPrefix);
  const emu = await startStripeEmulator(o.emulator);
  o.cleanup(async () => {
    await emu.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const dbPath = join(dir, "simmeter.db");
  const env = {
    DATABASE_PATH: dbPath,
    ...stripeEnv(emu),
    REDIS_URL: inject("redisUrl"),
    REDIS_PREFIX: `${o.redisPrefix}${randomUUID().slice(0, 8)}`,
    LOG_LEVEL: "warn",
    STRIPE_TIMEOUT_MS: "5000",
  };
  const run = (args: string[], extraEnv: Record<string, string | undefined> = {}) =>
    runCli(args, { ...env, ...extraEnv });
  return {
    dir,
    dbPath,
    emu,
    stripe: stripeFor(emu),
    env,
    cli: run,
    json: async <T>(args: string[]) => JSON.parse((await run(args)).stdout) as T,
  };
}
