import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { Redis } from "ioredis";
import { afterAll, describe, expect, inject, it } from "vitest";
import { startRedis } from "../../scripts/lib/redis-server.ts";
import { startStripeEmulator } from "../../scripts/stripe-emulator.ts";
import { createStripe } from "../../src/reporting/stripe.ts";
import { ensureMeter } from "../../src/reporting/stripe-setup.ts";
import { defaultSettings } from "../helpers/db.ts";
import { openTestLedger, type TestLedger, testBackend } from "../helpers/ledger.ts";
import { startSimmeter, tempDir, waitFor } from "../helpers/process.ts";

// `simmeter doctor` as a real child process against the vitest project's ledger (a SQLite file or
// a PostgreSQL database: its checks of PostgreSQL itself are cli-doctor-pg.test.ts's), the private
// Redis (or one started for the test), and the Stripe emulator. It exits 1 when a check fails,
// --strict counts warnings as failures, and --json prints only { ok, checks: [{ name, status,
// detail, … }] }.

const backend = testBackend();

const BIN = resolve(import.meta.dirname, "../../bin/simmeter.mjs");
const ROOT = resolve(import.meta.dirname, "../..");

/** What a receiver needs, so the webhook check is ok unless a test says otherwise. */
const RECEIVER = {
  TWILIO_AUTH_TOKEN: "0123456789abcdef0123456789abcdef",
  PUBLIC_URL: "https://billing.example.com/webhooks/event-streams",
};

type Check = { name: string; status: "ok" | "warn" | "fail"; detail: string } & Record<
  string,
  unknown
>;
type Report = { ok: boolean; strict: boolean; checks: Check[] };

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/**
 * A migrated, empty ledger (closed when the test finishes), and doctor's env on it. PostgreSQL:
 * its database with synchronous_commit on (the test cluster runs with it off, which doctor rightly
 * warns about: cli-doctor-pg.test.ts), so that only what a test sets up warns.
 */
async function workspace() {
  const dir = tempDir("simmeter-doctor-");
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const t = await openTestLedger({ file: true });
  if (t.env.DATABASE_URL)
    await t.sql(
      `alter database "${new URL(t.env.DATABASE_URL).pathname.slice(1)}" set synchronous_commit = on`,
    );
  const env: Record<string, string | undefined> = {
    ...t.env,
    REDIS_URL: inject("redisUrl"),
    REDIS_PREFIX: `dr${randomUUID().slice(0, 8)}`,
    LOG_LEVEL: "warn",
    STRIPE_SECRET_KEY: undefined,
    ALLOW_UNSIGNED: undefined,
    BASIC_AUTH: undefined,
    ...RECEIVER,
  };
  const run = (args: string[], extra: Record<string, string | undefined> = {}) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((done, fail) => {
      const child = spawn(process.execPath, [BIN, "doctor", ...args], {
        env: { ...process.env, ...env, ...extra },
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
  /** doctor --json: the exit code and the parsed report (stdout must be JSON and nothing else). */
  const json = async (args: string[] = [], extra: Record<string, string | undefined> = {}) => {
    const r = await run(["--json", ...args], extra);
    const report = JSON.parse(r.stdout) as Report;
    const byName = (name: string) => report.checks.find((c) => c.name === name);
    return { code: r.code, report, check: byName };
  };
  return { dir, t, env, run, json };
}

const fixture = () =>
  JSON.parse(
    readFileSync(join(ROOT, "test/fixtures/constructed-data-session-ended.json"), "utf8"),
  )[0] as Record<string, unknown>;

/** A counted session of the fixture's SIM, unmapped (1536 bytes), and `broken` quarantined events. */
async function seed(t: TestLedger, broken: number): Promise<void> {
  const events: unknown[] = [fixture()];
  for (let i = 0; i < broken; i++) {
    const e = JSON.parse(
      JSON.stringify(fixture()).replaceAll(
        "EZe7d61405c00f984884d2006f117ad10b",
        `EZ${(i + 1).toString(16).padStart(32, "0")}`,
      ),
    ) as { data: Record<string, unknown> };
    e.data.data_total = -5;
    events.push(e);
  }
  const s = await t.ledger.ingestJob(
    { v: 1, deliveries: [{ id: "seed", receivedAt: Date.now(), source: "replay", events }] },
    { ...defaultSettings, retentionDays: 100_000 },
    Date.now,
  );
  expect(s).toMatchObject({ counted: 1, quarantined: broken });
}

describe("simmeter doctor (CLI)", { timeout: 120_000 }, () => {
  // A missing SQLite file; PostgreSQL's counterpart, a DATABASE_URL naming a database that does
  // not exist, is cli-doctor-pg.test.ts's ("a database that does not exist …").
  it.runIf(backend === "sqlite")(
    "a missing database fails the database check and exits 1, and no database or directory is created",
    async () => {
      const w = await workspace();
      const dbPath = join(w.dir, "mistyped", "simmeter.db");
      const r = await w.run([], { DATABASE_PATH: dbPath });
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(
        new RegExp(`\\ndatabase +fail +no database at ${dbPath}: check DATABASE_PATH`),
      );
      const j = await w.json([], { DATABASE_PATH: dbPath });
      expect(j.code).toBe(1);
      expect(j.report.ok).toBe(false);
      expect(j.check("database")).toMatchObject({ status: "fail", path: dbPath });
      // The checks that need no database still ran.
      expect(j.check("redis")?.status).toBe("ok");
      expect(j.check("webhook")?.status).toBe("ok");
      expect(existsSync(join(w.dir, "mistyped"))).toBe(false);
    },
  );

  it("--json prints only JSON: ok, and each check's name, status and detail in snake_case", async () => {
    const w = await workspace();
    const r = await w.run(["--json"]);
    const report = JSON.parse(r.stdout) as Report & Record<string, unknown>;
    expect(Object.keys(report)).toEqual(["ok", "strict", "version", "checked_at", "checks"]);
    expect(Date.parse(report.checked_at as string)).toBeGreaterThan(Date.now() - 60_000);
    for (const c of report.checks) {
      expect(typeof c.name).toBe("string");
      expect(["ok", "warn", "fail"]).toContain(c.status);
      expect(typeof c.detail).toBe("string");
      for (const k of Object.keys(c)) expect(k).toMatch(/^[a-z]+(_[a-z]+)*$/);
    }
    expect(report.checks.find((c) => c.name === "database")?.status).toBe("ok");
    // SQLite counts the migrations in the database check, PostgreSQL in its own one.
    const migrations = backend === "sqlite" ? "database" : "postgres migrations";
    expect(report.checks.find((c) => c.name === migrations)).toMatchObject({
      status: "ok",
      migrations_applied: expect.any(Number),
    });
  });

  it("without STRIPE_SECRET_KEY, warns that reporting is disabled instead of failing or crashing; events in quarantine and unmapped usage are warnings naming the count and the command; exits 0, and 1 with --strict", async () => {
    const w = await workspace();
    await seed(w.t, 2);
    const r = await w.run([]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/\n\d+ warnings\n$/);
    const j = await w.json();
    expect(j.code).toBe(0);
    expect(j.report.ok).toBe(true);
    expect(j.check("stripe key")).toMatchObject({ status: "warn" });
    expect(j.check("stripe key")?.detail).toContain("reporting is disabled");
    expect(j.check("meter")).toBeUndefined();
    expect(j.check("quarantine")).toMatchObject({ status: "warn", events: 2 });
    expect(j.check("quarantine")?.detail).toContain("2 quarantined event(s)");
    expect(j.check("quarantine")?.detail).toContain("run simmeter quarantine");
    expect(j.check("unmapped usage")).toMatchObject({ status: "warn", bytes: 1536, sims: 1 });
    expect(j.check("unmapped usage")?.detail).toContain(
      "1536 bytes of 1 SIM(s) no customer assignment covers",
    );
    expect(j.check("unmapped usage")?.detail).toContain("simmeter usage --unmapped");
    for (const c of j.report.checks)
      if (!["stripe key", "quarantine", "unmapped usage"].includes(c.name))
        expect(c.status, c.name).toBe("ok");

    const strict = await w.json(["--strict"]);
    expect(strict.code).toBe(1);
    expect(strict.report).toMatchObject({ ok: false, strict: true });
    expect(strict.check("quarantine")?.status).toBe("fail");
    expect(strict.check("database")?.status).toBe("ok");
  });

  it("fails a Redis that may evict keys and warns about one without AOF", async () => {
    const redis = await startRedis({ evictionPolicy: "allkeys-lru", persistence: false });
    cleanups.push(() => redis.stop());
    const w = await workspace();
    const j = await w.json([], { REDIS_URL: redis.url });
    expect(j.code).toBe(1);
    expect(j.check("redis")?.status).toBe("ok");
    expect(j.check("redis eviction")).toMatchObject({ status: "fail", policy: "allkeys-lru" });
    expect(j.check("redis eviction")?.detail).toContain("set maxmemory-policy noeviction");
    expect(j.check("redis persistence")).toMatchObject({ status: "warn", appendonly: false });
    expect(j.check("redis persistence")?.detail).toContain("appendonly no");
  });

  it("fails when Redis cannot be reached, hiding its password, and still runs the other checks", async () => {
    const w = await workspace();
    const j = await w.json([], { REDIS_URL: "redis://:s3cret@127.0.0.1:1" });
    expect(j.code).toBe(1);
    expect(j.check("redis")?.status).toBe("fail");
    expect(j.check("redis")?.detail).toContain("redis://:***@127.0.0.1:1");
    expect(JSON.stringify(j.report)).not.toContain("s3cret");
    expect(j.check("redis eviction")).toBeUndefined();
    expect(j.check("database")?.status).toBe("ok");
  });

  it.each<[string, Record<string, string | undefined>, "warn" | "fail", string]>([
    [
      "a Twilio token without PUBLIC_URL",
      { PUBLIC_URL: undefined },
      "fail",
      "TWILIO_AUTH_TOKEN set without PUBLIC_URL",
    ],
    [
      "ALLOW_UNSIGNED",
      { TWILIO_AUTH_TOKEN: undefined, PUBLIC_URL: undefined, ALLOW_UNSIGNED: "true" },
      "warn",
      "ALLOW_UNSIGNED=true",
    ],
    [
      "no way to authenticate deliveries",
      { TWILIO_AUTH_TOKEN: undefined, PUBLIC_URL: undefined },
      "warn",
      "simmeter start/serve refuse to start",
    ],
    [
      "BASIC_AUTH other than the credentials in PUBLIC_URL",
      {
        BASIC_AUTH: "meter:right",
        PUBLIC_URL: "https://meter:wrong@billing.example.com/webhooks/event-streams",
      },
      "fail",
      "differs from BASIC_AUTH",
    ],
  ])("the webhook check reports %s", async (_what, extra, status, detail) => {
    const w = await workspace();
    const j = await w.json([], extra);
    expect(j.check("webhook")?.status).toBe(status);
    expect(j.check("webhook")?.detail).toContain(detail);
    expect(j.code).toBe(status === "fail" ? 1 : 0);
  });

  it("the reporting check is ok after the worker's reporter ran, and warns once its last run is older than 2 × REPORT_INTERVAL_SECONDS", async () => {
    const emu = await startStripeEmulator({ acceptAnyCustomer: true, autoSubscribe: true });
    cleanups.push(() => emu.close());
    await ensureMeter(
      createStripe({
        STRIPE_SECRET_KEY: emu.apiKey,
        STRIPE_API_BASE: emu.url,
        STRIPE_TIMEOUT_MS: 5000,
      }),
      "supersim_data_bytes",
    );
    const w = await workspace();
    const stripeEnv = {
      STRIPE_SECRET_KEY: emu.apiKey,
      STRIPE_API_BASE: emu.url,
      STRIPE_TIMEOUT_MS: "5000",
    };
    // Before any worker ran: no schedule in Redis.
    const before = await w.json([], stripeEnv);
    expect(before.check("reporting")?.status).toBe("warn");
    expect(before.check("reporting")?.detail).toContain("no report schedule in Redis");

    const worker = await startSimmeter("work", {
      ...(w.env as Record<string, string>),
      ...stripeEnv,
      REPORT_INTERVAL_SECONDS: "1",
      LOG_LEVEL: "info", // startSimmeter knows the worker runs by its info line
    });
    const redis = new Redis(w.env.REDIS_URL as string);
    cleanups.push(() => void redis.disconnect());
    try {
      await waitFor(
        async () => (await redis.zcard(`${w.env.REDIS_PREFIX}:report:completed`)) > 0,
        "a completed report run",
        30_000,
      );
      const running = await w.json([], { ...stripeEnv, REPORT_INTERVAL_SECONDS: "60" });
      expect(running.check("reporting")).toMatchObject({
        status: "ok",
        schedule_in_redis: true,
        last_run_at: expect.any(String),
      });
      expect(running.check("reporting")?.detail).toMatch(/^last successful report \d+ s ago/);
    } finally {
      await worker.stop();
    }
    await new Promise((r) => setTimeout(r, 2500));
    const stale = await w.json([], { ...stripeEnv, REPORT_INTERVAL_SECONDS: "1" });
    expect(stale.check("reporting")?.status).toBe("warn");
    expect(stale.check("reporting")?.detail).toContain(
      "longer than 2 × REPORT_INTERVAL_SECONDS (2 s): is the worker running?",
    );
    expect(stale.code).toBe(0);
    expect((await w.json(["--strict"], { ...stripeEnv, REPORT_INTERVAL_SECONDS: "1" })).code).toBe(
      1,
    );
  });
});
