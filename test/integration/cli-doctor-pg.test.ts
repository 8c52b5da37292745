import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { afterAll, describe, expect, inject, it } from "vitest";
import { withDatabase } from "../../scripts/lib/postgres-server.ts";
import { ENDED_ONLY_NEEDS_CUMULATIVE } from "../../src/ingest/admit.ts";
import { cli, tempDirsRemovedAfterAll } from "../helpers/cli.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/pg.ts";

// `simmeter doctor` with DATABASE_URL, as a real child process (bin/simmeter.mjs runs dist/:
// `npm run build` first) against databases of the run's private PostgreSQL cluster and the shared
// test Redis. It checks PostgreSQL instead of a SQLite file, never creates or migrates anything,
// and never prints the URL's password. The cluster runs with synchronous_commit=off (the test
// server's speed settings): a test that wants it on sets it for its database.

/** What a receiver needs, so the webhook check is ok. */
const RECEIVER = {
  TWILIO_AUTH_TOKEN: "0123456789abcdef0123456789abcdef",
  PUBLIC_URL: "https://billing.example.com/webhooks/event-streams",
};

type Check = { name: string; status: "ok" | "warn" | "fail"; detail: string } & Record<
  string,
  unknown
>;
type Report = { ok: boolean; strict: boolean; checks: Check[] };

const PG_CHECKS = [
  "database",
  "postgres version",
  "postgres migrations",
  "postgres read-only",
  "postgres synchronous_commit",
  "postgres timeouts",
  "postgres connections",
];

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
const dirs = tempDirsRemovedAfterAll("simmeter-doctor-pg-");

async function database(opts: { empty?: boolean } = {}): Promise<TestDatabase> {
  const db = await createTestDatabase(opts);
  cleanups.push(db.drop);
  return db;
}

/** one statement on the cluster's postgres database, as superuser */
async function admin(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: inject("pgAdminUrl") });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

/** one query on `url` */
async function query<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<T>(sql)).rows;
  } finally {
    await c.end();
  }
}

/** `url` with a password (the private cluster trusts every local connection: any one works) */
function withPassword(url: string, password: string): string {
  const u = new URL(url);
  u.password = password;
  return u.toString();
}

/** doctor with DATABASE_URL (and no DATABASE_PATH), run in a fresh directory (no ./data there) */
function doctor(url: string) {
  const cwd = dirs();
  const env: Record<string, string | undefined> = {
    DATABASE_URL: url,
    DATABASE_PATH: undefined,
    REDIS_URL: inject("redisUrl"),
    REDIS_PREFIX: `dp${randomUUID().slice(0, 8)}`,
    STRIPE_SECRET_KEY: undefined,
    ALLOW_UNSIGNED: undefined,
    BASIC_AUTH: undefined,
    BILLING_MODE: undefined,
    PG_POOL_MAX: undefined,
    ...RECEIVER,
  };
  const run = (args: string[] = []) => cli(["doctor", ...args], env, cwd);
  const json = async (args: string[] = []) => {
    const r = await run(["--json", ...args]);
    let report: Report;
    try {
      report = JSON.parse(r.stdout) as Report;
    } catch {
      throw new Error(`doctor --json printed no JSON (exit ${r.code}): ${r.stdout}${r.stderr}`);
    }
    return {
      ...r,
      report,
      check: (name: string) => report.checks.find((c) => c.name === name),
    };
  };
  return { cwd, run, json };
}

describe("simmeter doctor on PostgreSQL (CLI)", { timeout: 120_000 }, () => {
  it("a migrated database: the PostgreSQL checks are ok, the ledger's contents are checked there, no SQLite file is made, and the exit code is the other checks'", async () => {
    const db = await database();
    await admin(`alter database ${db.name} set synchronous_commit = on`);
    const d = doctor(db.url);
    const j = await d.json();
    expect(j.code, j.stdout + j.stderr).toBe(0);
    expect(j.report.ok).toBe(true);
    const where = new URL(db.url);
    expect(j.check("database")).toMatchObject({
      status: "ok",
      dialect: "postgres",
      connect_ms: expect.any(Number),
    });
    expect(j.check("database")?.detail).toBe(
      `PostgreSQL at ${where.hostname}:${where.port}/${db.name} (connected in ${j.check("database")?.connect_ms} ms)`,
    );
    expect(j.check("postgres version")).toMatchObject({
      status: "ok",
      server_version_num: expect.any(Number),
    });
    expect(j.check("postgres version")?.server_version_num as number).toBeGreaterThanOrEqual(
      130_000,
    );
    expect(j.check("postgres version")?.detail).toMatch(/^PostgreSQL \d+\.\d+/);
    const m = j.check("postgres migrations");
    expect(m).toMatchObject({ status: "ok", migrations_pending: [] });
    expect(m?.migrations_applied).toBe(m?.migrations_expected);
    expect(m?.detail).toContain(
      `(${m?.migrations_applied} of ${m?.migrations_expected} migrations)`,
    );
    expect(j.check("postgres read-only")).toMatchObject({
      status: "ok",
      detail: "read-write primary",
      in_recovery: false,
      default_transaction_read_only: false,
    });
    expect(j.check("postgres synchronous_commit")).toMatchObject({
      status: "ok",
      synchronous_commit: "on",
    });
    // The pool's sessions carry the PG_*_MS settings (defaults here).
    expect(j.check("postgres timeouts")).toMatchObject({
      status: "ok",
      statement_timeout_ms: 30_000,
      lock_timeout_ms: 10_000,
      idle_in_transaction_session_timeout_ms: 60_000,
    });
    const conn = j.check("postgres connections");
    expect(conn).toMatchObject({ status: "ok", max_connections: 300, pool_max: null });
    // this doctor's own connection at least (other test files' processes may add theirs)
    expect(conn?.simmeter_connections as number).toBeGreaterThanOrEqual(1);
    expect(conn?.detail).toContain(`${conn?.simmeter_connections} of max_connections 300 (`);
    expect(conn?.detail).toContain("× processes below max_connections");
    // The ledger's contents, read from PostgreSQL: an empty ledger holds nothing unbilled.
    expect(j.check("ledger contents")).toBeUndefined();
    expect(j.check("quarantine")).toMatchObject({ status: "ok", events: 0 });
    expect(j.check("unmapped usage")).toMatchObject({ status: "ok", bytes: 0, sims: 0 });
    expect(j.check("outbox")).toMatchObject({ status: "ok", stopped: 0, pending: 0 });
    for (const c of j.report.checks) {
      for (const k of Object.keys(c)) expect(k).toMatch(/^[a-z]+(_[a-z]+)*$/);
      if (c.name !== "stripe key") expect(c.status, c.name).toBe("ok");
    }
    expect(j.report.checks.map((c) => c.name).slice(0, PG_CHECKS.length)).toEqual(PG_CHECKS);
    expect(existsSync(join(d.cwd, "data"))).toBe(false);

    const text = await d.run();
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/\npostgres migrations +ok +/);
    expect(text.stdout).toMatch(/\nunmapped usage +ok +/);
    expect(text.stdout).toMatch(/\n1 warning\n$/);
    // the warning (no STRIPE_SECRET_KEY) fails under --strict
    expect((await d.json(["--strict"])).code).toBe(1);
  });

  it("the ledger's contents on PostgreSQL: a refused ended-only event fails billing mode, and warns as quarantined", async () => {
    const db = await database();
    const received = Date.UTC(2026, 10, 30, 12, 0, 0);
    const pool = new pg.Pool({ connectionString: db.url, max: 1 });
    try {
      await pool.query(
        `insert into quarantine (received_at, source, delivery_id, position, event_sid, reason, raw)
         values ($1, 'twilio', 'd1', 0, $2, $3, '{}')`,
        [received, `EZ${"e".repeat(32)}`, ENDED_ONLY_NEEDS_CUMULATIVE],
      );
    } finally {
      await pool.end();
    }
    const d = doctor(db.url);
    const r = await cli(
      ["doctor", "--json"],
      {
        DATABASE_URL: db.url,
        DATABASE_PATH: undefined,
        REDIS_URL: inject("redisUrl"),
        REDIS_PREFIX: `dp${randomUUID().slice(0, 8)}`,
        BILLING_MODE: "ended-only",
        ...RECEIVER,
      },
      d.cwd,
    );
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout) as Report;
    const check = (name: string) => report.checks.find((c) => c.name === name);
    expect(check("billing mode")).toMatchObject({ status: "fail", refused: 1 });
    expect(check("quarantine")).toMatchObject({
      status: "warn",
      events: 1,
      newest_received_at: new Date(received).toISOString(),
    });
    expect(check("ledger contents")).toBeUndefined();
  });

  it("an empty database fails the migrations check naming the pending ones, exits 1, and is not migrated", async () => {
    const db = await database({ empty: true });
    const d = doctor(db.url);
    const j = await d.json();
    expect(j.code).toBe(1);
    expect(j.report.ok).toBe(false);
    expect(j.check("database")?.status).toBe("ok");
    const m = j.check("postgres migrations") as Check;
    expect(m).toMatchObject({ status: "fail", migrations_applied: 0 });
    expect(m.migrations_pending).toHaveLength(m.migrations_expected as number);
    expect(m.detail).toContain(
      `lacks migration(s) ${(m.migrations_pending as string[]).join(", ")} (0 of ${m.migrations_expected} applied)`,
    );
    expect(m.detail).toContain("start simmeter work once to apply them");
    // the contents checks cannot run on it, and say so by failing, never by vanishing
    expect(j.check("ledger contents")?.status).toBe("fail");
    expect(j.check("ledger contents")?.detail).toMatch(
      /^cannot open the ledger to check .*lacks migrations/,
    );
    // the checks that need no migrated schema still ran
    expect(j.check("postgres version")?.status).toBe("ok");
    expect(j.check("redis")?.status).toBe("ok");
    expect(
      await query<{ t: string | null }>(
        db.url,
        "select to_regclass('drizzle.__drizzle_migrations')::text as t",
      ),
    ).toEqual([{ t: null }]);
    const text = await d.run();
    expect(text.code).toBe(1);
    expect(text.stdout).toMatch(/\npostgres migrations +fail +/);
  });

  it("a database that does not exist fails with the createdb hint, never shows the password, and is not created", async () => {
    const name = `nope_${process.pid}_${randomUUID().slice(0, 6)}`;
    const secret = "s3cret-pw%2F42";
    const url = withPassword(withDatabase(inject("pgAdminUrl"), name), secret);
    const d = doctor(url);
    const j = await d.json();
    expect(j.code).toBe(1);
    const u = new URL(url);
    expect(j.check("database")).toMatchObject({ status: "fail", dialect: "postgres" });
    expect(j.check("database")?.detail).toBe(
      `PostgreSQL at ${u.hostname}:${u.port}/${name}: database "${name}" does not exist: create it (createdb -h ${u.hostname} -p ${u.port} -U postgres ${name}) or fix DATABASE_URL`,
    );
    expect(j.check("database")?.url).toContain(":***@");
    // nothing else to ask a server that is not there; the other checks still ran
    for (const n of PG_CHECKS.slice(1)) expect(j.check(n), n).toBeUndefined();
    expect(j.check("redis")?.status).toBe("ok");
    expect(j.check("webhook")?.status).toBe("ok");
    const text = await d.run();
    expect(text.code).toBe(1);
    expect(text.stdout).toContain("or fix DATABASE_URL");
    for (const out of [j.stdout, j.stderr, text.stdout, text.stderr]) {
      expect(out).not.toContain("s3cret");
      expect(out).not.toContain(decodeURIComponent(secret));
    }
    expect(
      await query(inject("pgAdminUrl"), `select 1 from pg_database where datname = '${name}'`),
    ).toEqual([]);
  });

  it("a server that cannot be reached fails naming host:port/database, without the password", async () => {
    const d = doctor("postgres://simmeter:hunter2-x@127.0.0.1:1/ledger");
    const j = await d.json();
    expect(j.code).toBe(1);
    expect(j.check("database")?.status).toBe("fail");
    expect(j.check("database")?.detail).toMatch(
      /^cannot connect to PostgreSQL at 127\.0\.0\.1:1\/ledger: .*ECONNREFUSED/,
    );
    expect(j.stdout + j.stderr).not.toContain("hunter2");
  });

  it("default_transaction_read_only on fails: the worker cannot write", async () => {
    const db = await database();
    await admin(`alter database ${db.name} set default_transaction_read_only = on`);
    const j = await doctor(db.url).json();
    expect(j.code).toBe(1);
    expect(j.check("postgres read-only")).toMatchObject({
      status: "fail",
      default_transaction_read_only: true,
      in_recovery: false,
    });
    expect(j.check("postgres read-only")?.detail).toContain(
      "default_transaction_read_only is on (set for this database): every transaction simmeter opens is read-only, so the worker cannot write",
    );
    expect(j.check("postgres read-only")?.detail).toContain(
      `ALTER DATABASE "${db.name}" SET default_transaction_read_only = off`,
    );
    // the other checks read, which a read-only session may
    expect(j.check("postgres migrations")?.status).toBe("ok");
  });

  it("synchronous_commit off warns with what to do; --strict exits 1", async () => {
    const db = await database();
    await admin(`alter database ${db.name} set synchronous_commit = off`);
    const d = doctor(db.url);
    const j = await d.json();
    expect(j.code).toBe(0);
    const s = j.check("postgres synchronous_commit");
    expect(s).toMatchObject({ status: "warn", synchronous_commit: "off", source: "database" });
    expect(s?.detail).toContain("synchronous_commit is off (set for this database)");
    expect(s?.detail).toContain("docs/adr/0002-sqlite-durability.md");
    expect(s?.detail).toContain(`ALTER DATABASE "${db.name}" SET synchronous_commit = on`);
    const strict = await d.json(["--strict"]);
    expect(strict.code).toBe(1);
    expect(strict.report).toMatchObject({ ok: false, strict: true });
    expect(strict.check("postgres synchronous_commit")?.status).toBe("fail");
    expect(strict.check("postgres migrations")?.status).toBe("ok");
  });
});
