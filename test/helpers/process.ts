import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import Database from "better-sqlite3";
import { freePort } from "../../scripts/lib/redis-server.ts";
import { waitFor } from "../../scripts/lib/wait.ts";

export { waitFor };

const BIN = resolve(import.meta.dirname, "../../bin/simmeter.mjs");

export type SimmeterProcess = {
  /** the webhook listener */
  url: string;
  port: number;
  /** the admin listener: /healthz, /readyz, /metrics, /api */
  adminUrl: string;
  adminPort: number;
  env: Record<string, string | undefined>;
  child: ChildProcess;
  output: () => string;
  /** SIGKILL: no shutdown code runs */
  kill: () => Promise<void>;
  /** SIGTERM and wait for a clean exit */
  stop: () => Promise<number | null>;
};

export function tempDir(prefix = "simmeter-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Starts `simmeter <role>` as a real child process and waits until it is up. */
export async function startSimmeter(
  role: "start" | "serve" | "work",
  env: Record<string, string | undefined>,
): Promise<SimmeterProcess> {
  const port = env.PORT ? Number(env.PORT) : await freePort();
  const adminPort = env.ADMIN_PORT ? Number(env.ADMIN_PORT) : await freePort();
  // The worker announces itself at info level; that line is how we know it runs.
  const fullEnv = {
    LOG_LEVEL: role === "work" ? "info" : "warn",
    HOST: "127.0.0.1",
    ...env,
    PORT: String(port),
    ADMIN_PORT: String(adminPort),
  };
  const child = spawn(process.execPath, [BIN, role], {
    env: { ...process.env, ...fullEnv },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout?.on("data", (d) => {
    out += d;
  });
  child.stderr?.on("data", (d) => {
    out += d;
  });
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const url = `http://127.0.0.1:${port}`;
  const bound = (fullEnv as Record<string, string | undefined>).ADMIN_HOST;
  const adminHost = bound && bound !== "0.0.0.0" ? bound : "127.0.0.1";
  const adminUrl = `http://${adminHost}:${adminPort}`;
  // Up: the admin listener answers, and the role has started (the worker announces itself; the
  // receiver's webhook listener answers, a 404 for GET).
  await waitFor(
    async () =>
      child.exitCode !== null ||
      ((await fetch(`${adminUrl}/healthz`)).ok &&
        (role === "work"
          ? out.includes("ingest worker running")
          : (await fetch(`${url}/`)).status === 404)),
    `simmeter ${role} on ${url} (admin ${adminUrl})`,
    30_000,
    100,
  );
  if (child.exitCode !== null)
    throw new Error(`simmeter ${role} exited (${child.exitCode}):\n${out}`);
  return {
    url,
    port,
    adminUrl,
    adminPort,
    env: fullEnv,
    child,
    output: () => out,
    kill: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await exited;
      }
    },
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill("SIGTERM");
      return await exited;
    },
  };
}

/** Reads the service's SQLite file while the service runs (WAL allows a concurrent reader). */
export function readDb<T>(path: string, sql: string, ...params: unknown[]): T[] {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    return db.prepare(sql).all(...params) as T[];
  } finally {
    db.close();
  }
}

export function usageOf(path: string): Record<string, number> {
  const rows = readDb<{ sim_sid: string; hour: number; bytes: number }>(
    path,
    "select sim_sid, hour, bytes from usage_hourly where bytes != 0 order by sim_sid, hour",
  );
  return Object.fromEntries(
    rows.map((r) => [`${r.sim_sid}@${new Date(r.hour).toISOString()}`, r.bytes]),
  );
}

/**
 * Runs `simmeter ARGS` to completion without blocking this process (spawnSync would freeze any
 * server the test itself hosts, such as the Stripe emulator).
 */
export async function runCli(
  args: string[],
  env: Record<string, string | undefined>,
  timeoutMs = 60_000,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (d) => {
    stdout += d;
  });
  child.stderr?.on("data", (d) => {
    stderr += d;
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const status = await new Promise<number | null>((resolve) =>
    child.once("exit", (code) => resolve(code)),
  );
  clearTimeout(timer);
  return { status, stdout, stderr };
}
