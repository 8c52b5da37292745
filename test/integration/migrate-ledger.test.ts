// `simmeter migrate-ledger` (docs/design/postgres-ledger.md §7.2): a SQLite ledger built the way
// the product builds one (the simulator's fleet through the real ingest, customers assigned,
// quarantined junk, an outbox planned and partly "sent") is copied by the BUILT CLI into a
// PostgreSQL database of the run's private cluster; every table's content is compared row by row.
// Nothing mocked; `npm run build` first (the CLI runs dist/).
import { copyFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../scripts/lib/redis-server.ts";
import { openDb } from "../../src/db/client.ts";
import { createPool } from "../../src/db/pg/client.ts";
import { ingestDeliveries, prepareIngest } from "../../src/ingest/ingest.ts";
import {
  markFailed,
  markSent,
  planReports,
  recordAttempt,
  setInDoubt,
} from "../../src/reporting/outbox.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { simulateFleet } from "../../src/simulate/fleet.ts";
import { cli, tempDirsRemovedAfterAll } from "../helpers/cli.ts";
import { defaultSettings, subscribeAll } from "../helpers/db.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/pg.ts";
import { assignNow, ingestFixture } from "../helpers/seed.ts";

const HOUR = 3_600_000;
const dir = tempDirsRemovedAfterAll("simmeter-migrate-ledger-");
const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

async function database(opts: { empty?: boolean } = {}): Promise<TestDatabase> {
  const db = await createTestDatabase(opts);
  cleanup.push(db.drop);
  return db;
}

function pool(url: string): pg.Pool {
  const p = createPool(url, { role: "test", max: 2 });
  cleanup.push(() => p.end());
  return p;
}

/** stderr without the build-staleness warning (others edit src/ while these tests run) */
const errOf = (stderr: string) =>
  stderr
    .split("\n")
    .filter((l) => !l.includes("dist/ is older than src/"))
    .join("\n")
    .trim();

const migrate = (args: string[]) => cli(["migrate-ledger", ...args], {});

/**
 * A ledger as the product leaves one: a simulated fleet (duplicates, reordering, noise) through
 * the real ingest, fleets and some SIMs assigned, junk quarantined, an odd event (an anomaly),
 * the outbox planned with rows sent, failed, attempted and in doubt, and later usage left dirty.
 * Every event was received two hours ago (no "stop the workers" warning).
 */
function buildLedger(path: string): { events: number } {
  const db = openDb(path);
  const received = Date.now() - 2 * HOUR;
  const to = Math.floor(received / HOUR) * HOUR;
  const ctx = { db, stmts: prepareIngest(db), settings: defaultSettings, now: () => received };
  let deliveries = 0;
  const ingest = (d: { events?: unknown[]; body?: string }) => {
    deliveries++;
    ingestDeliveries(ctx, {
      v: 1,
      deliveries: [{ id: `d${deliveries}`, receivedAt: received, source: "replay", ...d }],
    });
  };
  const sim = simulateFleet({
    seed: 11,
    customers: 4,
    sims: 40,
    from: to - 3 * 24 * HOUR,
    to: to - 6 * HOUR,
    perturb: { duplicateRate: 0.05, reorder: true },
  });
  let batch: unknown[] = [];
  let events = 0;
  for (const e of sim.events) {
    batch.push(e);
    events++;
    if (batch.length === 500) {
      ingest({ events: batch });
      batch = [];
    }
  }
  if (batch.length > 0) ingest({ events: batch });
  const truth = sim.truth();

  // Customers: every fleet, and a few SIMs directly (the same customer their fleet has or not).
  const now = received;
  for (const [simSid, customerId] of Object.entries(truth.customers).slice(0, 6))
    assignNow(db, {
      now,
      rebill: true,
      input: { targetType: "sim", targetId: simSid, customerId, effectiveFrom: 0 },
    });
  for (const [fleetSid, customerId] of Object.entries(truth.fleets))
    assignNow(db, {
      now,
      rebill: true,
      input: { targetType: "fleet", targetId: fleetSid, customerId, effectiveFrom: 0 },
    });

  // Junk: a body that is not JSON, an event of no known type, an event without a SIM.
  ingest({ body: "{not json" });
  ingest({ events: [{ specversion: "1.0", type: "com.example.nothing", id: "x1" }, 42] });
  // An odd but billable event: an empty fleet_sid (an anomaly row, counted all the same).
  const odd = buildCloudEvent({
    eventSid: `EZ${"a".repeat(32)}`,
    kind: "data-session.ended",
    accountSid: `AC${"1".repeat(32)}`,
    simSid: `HS${"b".repeat(32)}`,
    iccid: "89883070000005381783",
    timestampMs: to - 5 * HOUR,
    sessionSid: `PI${"c".repeat(32)}`,
    sessionStartMs: to - 5 * HOUR - 600_000,
    sessionEndMs: to - 5 * HOUR,
    windowStartMs: to - 5 * HOUR - 600_000,
    windowEndMs: to - 5 * HOUR,
    cumulativeDown: 12_345,
  });
  (odd.data as Record<string, unknown>).fleet_sid = "";
  ingest({ events: [odd] });

  // The outbox: planned against stored subscriptions, then some rows through the sender's states.
  const customers = [...new Set(Object.values(truth.customers))].sort();
  subscribeAll(db, customers, { now });
  const planned = planReports({ db, now, settings: { graceSeconds: 3600 } });
  const ids = planned.rows.map((r) => r.identifier);
  ids.slice(0, Math.floor(ids.length / 2)).forEach((id, i) => {
    markSent(db, id, now + i);
  });
  if (ids.length > 3) {
    markFailed(db, ids[ids.length - 1] as string, "Stripe said no");
    recordAttempt(db, ids[ids.length - 2] as string, "timeout");
    setInDoubt(db, ids[ids.length - 3] as string, true);
  }

  // More usage after planning: dirty hours stay for the next planner run.
  const late = simulateFleet({ seed: 12, customers: 4, sims: 5, from: to - 6 * HOUR, to });
  const lateEvents = [...late.events];
  ingest({ events: lateEvents });
  db.$client.close();
  return { events: events + lateEvents.length + 3 };
}

// --- reading both sides -------------------------------------------------------------------------

const INTERNAL = new Set(["__drizzle_migrations"]);

function sqliteTables(path: string): string[] {
  const db = new Database(path, { readonly: true });
  try {
    return (
      db
        .prepare("select name from sqlite_master where type = 'table' and name not like 'sqlite_%'")
        .all() as { name: string }[]
    )
      .map((r) => r.name)
      .filter((n) => !INTERNAL.has(n))
      .sort();
  } finally {
    db.close();
  }
}

async function pgTables(p: pg.Pool): Promise<string[]> {
  const r = await p.query<{ t: string }>(
    "select table_name as t from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE'",
  );
  return r.rows.map((x) => x.t).sort();
}

/** booleans as 0/1, bigints as numbers: both sides in one shape, keys sorted */
function normalise(row: Record<string, unknown>): string {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(row).sort()) {
    const v = row[k];
    out[k] = v === true ? 1 : v === false ? 0 : typeof v === "bigint" ? Number(v) : v;
  }
  return JSON.stringify(out);
}

/** every row of `table` in the SQLite file, SQLite's rowid as meter_reports.row_id */
function sqliteRows(path: string, table: string): string[] {
  const db = new Database(path, { readonly: true });
  try {
    const rows = db.prepare(`select rowid as __rowid, * from "${table}"`).all() as Record<
      string,
      unknown
    >[];
    return rows
      .map(({ __rowid, ...rest }) =>
        normalise(table === "meter_reports" ? { ...rest, row_id: __rowid } : rest),
      )
      .sort();
  } finally {
    db.close();
  }
}

async function pgRows(p: pg.Pool, table: string): Promise<string[]> {
  return (await p.query(`select * from "${table}"`)).rows.map(normalise).sort();
}

async function pgCounts(p: pg.Pool): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of await pgTables(p))
    out[t] = (await p.query<{ n: number }>(`select count(*) as n from "${t}"`)).rows[0]?.n ?? -1;
  return out;
}

function sqliteCount(path: string, table: string): number {
  const db = new Database(path, { readonly: true });
  try {
    return (db.prepare(`select count(*) as n from "${table}"`).get() as { n: number }).n;
  } finally {
    db.close();
  }
}

const allZero = (counts: Record<string, number>) =>
  Object.fromEntries(Object.keys(counts).map((k) => [k, 0]));

type MigrateJson = {
  ok: boolean;
  error: string | null;
  source: string;
  target: string;
  tables: { name: string; rows: number; totals: Record<string, unknown> }[];
  differences: { table: string; check: string; source: string | null; target: string | null }[];
  seconds: number;
  rows_per_second: number;
};

/** every key of a JSON value (recursively) */
function keysOf(v: unknown): string[] {
  if (Array.isArray(v)) return v.flatMap(keysOf);
  if (v === null || typeof v !== "object") return [];
  return Object.entries(v).flatMap(([k, x]) => [k, ...keysOf(x)]);
}

// ------------------------------------------------------------------------------------------------

describe("simmeter migrate-ledger", () => {
  let source: string;
  let target: TestDatabase;
  let first: Awaited<ReturnType<typeof migrate>>;

  beforeAll(async () => {
    source = join(dir(), "simmeter.db");
    buildLedger(source);
    target = await database();
    first = await migrate(["--from", `sqlite:${source}`, "--to", target.url]);
  }, 120_000);

  it("copies every table of a realistic ledger, row for row", async () => {
    expect(errOf(first.stderr)).not.toContain("simmeter:");
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain("counts and totals verified");
    expect(errOf(first.stderr)).toMatch(/seen_events: \d+\/\d+ rows in [\d.]+ s, \d+ rows\/s/);

    const p = pool(target.url);
    const tables = sqliteTables(source);
    expect(await pgTables(p)).toEqual(tables);
    // the ledger is realistic: every table the product fills has rows
    for (const t of [
      "seen_events",
      "sims",
      "sessions",
      "readings",
      "usage_hourly",
      "event_counts",
      "quarantine",
      "anomalies",
      "meta",
      "assignments",
      "meter_reports",
      "report_dirty_hours",
      "sim_fleet_hours",
      "billing_customers",
    ])
      expect(sqliteCount(source, t), t).toBeGreaterThan(0);
    for (const t of tables) {
      const want = sqliteRows(source, t);
      const got = await pgRows(p, t);
      expect(got.length, t).toBe(want.length);
      expect(got, t).toEqual(want);
    }
    // the outbox's states and flags survived as they were
    const states = await p.query<{ state: string; in_doubt: boolean; n: number }>(
      "select state, in_doubt, count(*) as n from meter_reports group by 1, 2 order by 1, 2",
    );
    expect(states.rows.map((r) => r.state)).toEqual(
      expect.arrayContaining(["failed", "pending", "sent"]),
    );
    expect(states.rows.some((r) => r.in_doubt === true)).toBe(true);
  });

  it("advances every identity sequence past the copied ids", async () => {
    const p = pool(target.url);
    const c = await p.connect();
    try {
      await c.query("begin");
      const next = async (table: string, col: string, insert: string) => {
        const max = (await c.query<{ m: number | null }>(`select max(${col}) as m from ${table}`))
          .rows[0]?.m;
        const got = (await c.query<{ id: number }>(`${insert} returning ${col} as id`)).rows[0]?.id;
        expect(got, table).toBe((max ?? 0) + 1);
      };
      await next(
        "quarantine",
        "id",
        "insert into quarantine (received_at, source, delivery_id, position, reason, raw) values (1, 'replay', 'new', 0, 'r', '{}')",
      );
      await next(
        "anomalies",
        "id",
        "insert into anomalies (session_sid, event_sid, kind, detail, detected_at) values ('PIx', 'EZx', 'k', 'd', 1)",
      );
      await next(
        "assignments",
        "id",
        "insert into assignments (target_type, target_id, customer_id, effective_from, created_at) values ('sim', 'HSx', 'cus_x', 0, 1)",
      );
      await next(
        "meter_reports",
        "row_id",
        "insert into meter_reports (identifier, customer_id, hour, seq, value, timestamp, late, state, created_at) values ('new', 'cus_x', 0, 1, 1, 1, false, 'pending', 1)",
      );
    } finally {
      await c.query("rollback");
      c.release();
    }
  });

  it("refuses a second run into the now non-empty database, naming the tables", async () => {
    const before = await pgCounts(pool(target.url));
    const r = await migrate(["--from", `sqlite:${source}`, "--to", target.url]);
    expect(r.code).toBe(1);
    const err = errOf(r.stderr);
    expect(err).toContain("is not empty");
    expect(err).toContain(`seen_events (${sqliteCount(source, "seen_events")} rows)`);
    expect(err).toContain(`meter_reports (${sqliteCount(source, "meter_reports")} rows)`);
    expect(await pgCounts(pool(target.url))).toEqual(before);
  });

  it("--json: { ok, tables: [{ name, rows, totals }] } in snake_case, into an unmigrated database", async () => {
    const empty = await database({ empty: true });
    const r = await migrate(["--from", `sqlite:${source}`, "--to", empty.url, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    // quiet: no progress lines
    expect(errOf(r.stderr)).toBe("");
    const doc = JSON.parse(r.stdout) as MigrateJson;
    expect(doc.ok).toBe(true);
    expect(doc.error).toBeNull();
    expect(doc.differences).toEqual([]);
    expect(doc.target).not.toContain("postgres://");
    expect(doc.tables.map((t) => t.name)).toEqual(sqliteTables(source));
    for (const t of doc.tables) {
      expect(Object.keys(t).sort()).toEqual(["name", "rows", "totals"]);
      expect(t.rows, t.name).toBe(sqliteCount(source, t.name));
    }
    for (const k of keysOf(doc)) expect(k).toMatch(/^[a-z][a-z0-9_]*$/);
    const totals = Object.fromEntries(doc.tables.map((t) => [t.name, t.totals]));
    const db = new Database(source, { readonly: true });
    try {
      const one = (sql: string) => (db.prepare(sql).get() as { n: number }).n;
      expect(totals.usage_hourly).toEqual({
        sum_bytes: one("select sum(bytes) as n from usage_hourly"),
      });
      expect(totals.sessions).toEqual({
        sum_total_bytes: one("select sum(total_bytes) as n from sessions"),
      });
      expect(totals.readings).toEqual({
        sum_cumulative: one("select sum(cumulative) as n from readings"),
      });
      expect(totals.meter_reports?.by_state_kind).toEqual(
        db
          .prepare(
            "select state, kind, count(*) as rows, sum(value) as sum_value from meter_reports group by 1, 2 order by 1, 2",
          )
          .all(),
      );
      expect(totals.quarantine?.by_reason).toEqual(
        (
          db.prepare("select reason, count(*) as rows from quarantine group by 1").all() as {
            reason: string;
            rows: number;
          }[]
        ).sort((a, b) => (a.reason < b.reason ? -1 : 1)),
      );
      expect(totals.meta?.values).toEqual(
        (db.prepare("select key, value from meta").all() as { key: string }[]).sort((a, b) =>
          a.key < b.key ? -1 : 1,
        ),
      );
      expect(totals.seen_events).toEqual({});
    } finally {
      db.close();
    }
    expect(await pgRows(pool(empty.url), "usage_hourly")).toEqual(
      sqliteRows(source, "usage_hourly"),
    );
    console.log(
      `migrate-ledger: ${doc.tables.reduce((s, t) => s + t.rows, 0)} rows in ${doc.seconds} s, ${doc.rows_per_second} rows/s`,
    );
  });

  it("rolls back and leaves the target empty when verification finds a difference", async () => {
    const t = await database();
    const p = pool(t.url);
    // a trigger that silently drops one usage row: the copy "succeeds", the count does not match
    const lite = new Database(source, { readonly: true });
    const victim = lite
      .prepare("select hour, sim_sid from usage_hourly where bytes > 0 order by rowid limit 1")
      .get() as { hour: number; sim_sid: string };
    lite.close();
    await p.query(`create function drop_one() returns trigger language plpgsql as $$
      begin
        if new.hour = ${victim.hour} and new.sim_sid = '${victim.sim_sid}' then return null; end if;
        return new;
      end $$`);
    await p.query(
      "create trigger drop_one before insert on usage_hourly for each row execute function drop_one()",
    );
    const r = await migrate(["--from", `sqlite:${source}`, "--to", t.url]);
    expect(r.code).toBe(1);
    const err = errOf(r.stderr);
    expect(err).toContain("differs from the source");
    expect(err).toContain("rolled back");
    expect(err).toMatch(/usage_hourly\s+rows\s+\d+\s+\d+/);
    expect(err).toMatch(/usage_hourly\s+sum\(bytes\)/);
    const counts = await pgCounts(p);
    expect(counts).toEqual(allZero(counts));

    // the same with --json: the differences in the document
    const j = await migrate(["--from", `sqlite:${source}`, "--to", t.url, "--json"]);
    expect(j.code).toBe(1);
    const doc = JSON.parse(j.stdout) as MigrateJson;
    expect(doc.ok).toBe(false);
    const rows = doc.differences.find((d) => d.table === "usage_hourly" && d.check === "rows");
    const n = sqliteCount(source, "usage_hourly");
    expect(rows).toEqual({
      table: "usage_hourly",
      check: "rows",
      source: String(n),
      target: String(n - 1),
    });
    expect(await pgCounts(p)).toEqual(allZero(counts));
  });

  it("refuses an integer beyond 2^53 - 1 instead of rounding it, copying nothing", async () => {
    const big = join(dir(), "big.db");
    copyFileSync(source, big);
    const db = new Database(big);
    db.prepare(
      "update usage_hourly set bytes = ? where rowid = (select max(rowid) from usage_hourly)",
    ).run(2n ** 53n + 1n);
    db.close();
    const t = await database();
    const r = await migrate(["--from", `sqlite:${big}`, "--to", t.url]);
    expect(r.code).toBe(1);
    const err = errOf(r.stderr);
    expect(err).toContain("usage_hourly.bytes");
    expect(err).toContain("9007199254740993");
    expect(err).toContain("2^53 - 1");
    const counts = await pgCounts(pool(t.url));
    expect(counts).toEqual(allZero(counts));
  });

  it("warns when the newest event is less than a minute old", async () => {
    const recent = join(dir(), "recent.db");
    ingestFixture(recent, "fresh");
    const t = await database();
    const r = await migrate(["--from", `sqlite:${recent}`, "--to", t.url]);
    expect(r.code, r.stderr).toBe(0);
    expect(errOf(r.stderr)).toContain(
      "stop the workers first: events counted after the snapshot are not copied",
    );
    expect(await pgRows(pool(t.url), "seen_events")).toEqual(sqliteRows(recent, "seen_events"));
  });
});

describe("simmeter migrate-ledger: bad arguments and sources", () => {
  let target: TestDatabase;
  let ledger: string;
  beforeAll(async () => {
    target = await database();
    ledger = join(dir(), "ok.db");
    ingestFixture(ledger, "one");
  });

  it("refuses a --from that is not sqlite:PATH (exit 2)", async () => {
    for (const from of [ledger, "sqlite:", "postgres://x/y", "sqlite::memory:"]) {
      const r = await migrate(["--from", from, "--to", target.url]);
      expect(r.code, from).toBe(2);
      expect(errOf(r.stderr), from).toContain("--from must be sqlite:PATH");
    }
  });

  it("refuses a --to that is not a postgres:// URL, never showing its password (exit 2)", async () => {
    for (const to of ["mysql://root:hunter2@db/x", "/var/run/postgresql", "sqlite:x.db"]) {
      const r = await migrate(["--from", `sqlite:${ledger}`, "--to", to]);
      expect(r.code, to).toBe(2);
      expect(errOf(r.stderr), to).toContain("postgres:// or postgresql://");
      expect(r.stderr + r.stdout).not.toContain("hunter2");
    }
  });

  it("names an unreachable server without its password (exit 1)", async () => {
    const port = await freePort();
    for (const scheme of ["postgres", "postgresql"]) {
      const r = await migrate([
        "--from",
        `sqlite:${ledger}`,
        "--to",
        `${scheme}://simmeter:hunter2@127.0.0.1:${port}/ledger`,
        "--json",
      ]);
      expect(r.code).toBe(1);
      expect(errOf(r.stderr)).toContain(`cannot connect to PostgreSQL at 127.0.0.1:${port}/ledger`);
      expect(r.stderr + r.stdout).not.toContain("hunter2");
      expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, tables: [] });
    }
  });

  it("refuses a missing or unmigrated SQLite file, touching nothing", async () => {
    const missing = join(dir(), "nope.db");
    const r1 = await migrate(["--from", `sqlite:${missing}`, "--to", target.url]);
    expect(r1.code).toBe(1);
    expect(errOf(r1.stderr)).toContain(`no database at ${missing}`);

    const bare = join(dir(), "bare.db");
    const db = new Database(bare);
    db.exec("create table seen_events (event_sid text primary key)");
    db.close();
    const r2 = await migrate(["--from", `sqlite:${bare}`, "--to", target.url]);
    expect(r2.code).toBe(1);
    expect(errOf(r2.stderr)).toContain("older than this simmeter");

    const counts = await pgCounts(pool(target.url));
    expect(counts).toEqual(allZero(counts));
  });

  it("has help with an example", async () => {
    const r = await cli(["migrate-ledger", "--help"], {});
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("--from <source>");
    expect(r.stdout).toContain("simmeter migrate-ledger --from sqlite:");
    expect(r.stdout).toContain("--to postgres://");
  });
});
