import pg from "pg";
import { Registry } from "prom-client";
import { describe, expect, it, onTestFinished, vi } from "vitest";
import { assignCustomer } from "../../src/customers/customers.ts";
import { createPool } from "../../src/db/pg/client.ts";
import { pgUnmappedBytes } from "../../src/ledger/pg/customers.ts";
import { pgGaugeReads } from "../../src/ledger/pg/gauges.ts";
import {
  type LedgerGaugeReads,
  registerLedgerGauges,
  sqliteGaugeReads,
  unmappedBytesInSlices,
} from "../../src/observability/ledger-gauges.ts";
import { registerQueueGauges } from "../../src/observability/queue-gauges.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { type TestIngest, type TestLedger, testBackend, testIngest } from "../helpers/ledger.ts";

// The ledger gauges against a real, migrated ledger on the backend under test (testIngest:
// SQLite :memory: or a PostgreSQL database of its own), read as the worker reads it
// (src/ledger/open.ts: sqliteGaugeReads on SQLite, pgGaugeReads on PostgreSQL): usage counted by
// the real ingest, customers by the real assignments, outbox and quarantine rows as the reporter
// and the worker write them.

const backend = testBackend();
const T = (iso: string) => Date.parse(iso);
const NOW = T("2026-11-23T13:30:00Z");
const HOUR = 3_600_000;
const ACCOUNT = "ACe7ea554f7fc0fad65e689bb5899bb6c3";
const sim = (c: string) => `HS${c.repeat(32)}`;
const fleet = (c: string) => `HF${c.repeat(32)}`;
// The unmapped-bytes pass on PostgreSQL is a few queries over the pool, which on a loaded machine
// may outlast a scrape's default 500 ms wait (then the scrape shows the last total, 0): the
// scrapes that check the total wait for the pass (on SQLite it is done in a few ms either way).
const WAIT = { scrapeWaitMs: 30_000 };

/** what the worker's gauges read on this ledger (src/ledger/open.ts) */
function gaugeReads(t: Pick<TestLedger, "sqlite" | "pool">): LedgerGaugeReads {
  if (t.sqlite) return sqliteGaugeReads(t.sqlite);
  if (t.pool) return pgGaugeReads(t.pool);
  throw new Error("a test ledger has a SQLite connection or a pool");
}

/**
 * The test's clock as the gauges' performance.now too: a reading that takes t ms waits BUSY_FACTOR
 * times t before it runs again, which on a loaded machine (a PostgreSQL read of tens of ms) would
 * space readings out beyond the scrapes these tests make. With the clock standing still during a
 * reading, readings are spaced by minIntervalMs alone, which is what these tests are about.
 */
function durationsByClock(clock: { now: number }): void {
  const spy = vi.spyOn(performance, "now").mockImplementation(() => clock.now);
  onTestFinished(() => spy.mockRestore());
}

/**
 * Records every statement the ledger is asked for from now on: SQLite prepares on the
 * connection; PostgreSQL: queries on the pool, and each client checked out of it (a transaction).
 */
function recordStatements(t: Pick<TestLedger, "sqlite" | "pool">): string[] {
  const statements: string[] = [];
  const textOf = (q: unknown) =>
    typeof q === "string" ? q : String((q as { text?: unknown })?.text ?? q);
  if (t.sqlite) {
    const c = t.sqlite.$client;
    const prepare = c.prepare.bind(c);
    c.prepare = ((source: string) => {
      statements.push(source);
      return prepare(source);
    }) as typeof c.prepare;
  } else if (t.pool) {
    const pool = t.pool;
    const query = pool.query.bind(pool) as (...a: unknown[]) => unknown;
    pool.query = ((...a: unknown[]) => {
      statements.push(textOf(a[0]));
      return query(...a);
    }) as typeof pool.query;
    const connect = pool.connect.bind(pool) as (...a: unknown[]) => unknown;
    pool.connect = ((...a: unknown[]) => {
      statements.push("connect");
      return connect(...a);
    }) as typeof pool.connect;
  }
  return statements;
}

/**
 * Gauge reads the test can break, and how: SQLite: the ledger's connection, closed. PostgreSQL:
 * a pool of the gauges' own on the ledger (the worker's gauges share the ledger's pool, which the
 * test ledger must still close and drop), whose connections the server drops and which is then
 * ended, so every read fails at once: connections refused by a database that accepts none would
 * fail too, but each refusal takes a connection attempt (tens of ms here), and the gauges space a
 * slow read out by BUSY_FACTOR times its duration, so a scrape could legitimately skip one.
 */
function breakableReads(t: Pick<TestLedger, "sqlite" | "env">): {
  reads: LedgerGaugeReads;
  breakLedger: () => Promise<void>;
} {
  const db = t.sqlite;
  if (db)
    return {
      reads: sqliteGaugeReads(db),
      breakLedger: async () => {
        db.$client.close();
      },
    };
  const pool = createPool(t.env.DATABASE_URL ?? "", { role: "test-gauges", max: 2 });
  onTestFinished(async () => {
    if (!pool.ending) await pool.end();
  });
  return {
    reads: pgGaugeReads(pool),
    breakLedger: async () => {
      // the server drops the pool's connections (a restart, a failover): the pool survives it
      const admin = new pg.Client({ connectionString: t.env.DATABASE_URL });
      admin.on("error", () => {});
      await admin.connect();
      try {
        const dropped = await admin.query(
          `select pg_terminate_backend(pid) from pg_stat_activity
            where datname = current_database() and application_name = 'simmeter-test-gauges'`,
        );
        expect(dropped.rowCount).toBeGreaterThan(0);
      } finally {
        await admin.end();
      }
      await pool.end();
    },
  };
}

let n = 0;
/** One data session of `simSid` that ends at `at` having used `bytes`. */
function used(simSid: string, fleetSid: string | null, at: string, bytes: number) {
  n++;
  const end = T(at);
  const id = n.toString(16).padStart(32, "0");
  return buildCloudEvent({
    eventSid: `EZ${id}`,
    kind: "data-session.ended",
    accountSid: ACCOUNT,
    simSid,
    iccid: `8988307000000${String(simSid.charCodeAt(2)).padStart(7, "0")}`,
    fleetSid,
    timestampMs: end,
    sessionSid: `PI${id}`,
    sessionStartMs: end - 10 * 60_000,
    sessionEndMs: end,
    windowStartMs: end - 10 * 60_000,
    windowEndMs: end,
    windowDown: bytes,
    cumulativeDown: bytes,
  });
}

type OutboxRow = {
  state: "pending" | "sent" | "failed" | "superseded";
  value: number;
  createdAt: number;
  kind?: "usage" | "observed";
};

let seq = 0;
async function outbox(t: Pick<TestLedger, "sql">, rows: OutboxRow[]) {
  for (const r of rows) {
    seq++;
    const hour = T("2026-11-23T10:00:00Z");
    await t.sql(
      `insert into meter_reports (identifier, customer_id, hour, seq, value, timestamp, late, kind, state, created_at)
       values (?, 'cus_a', ?, ?, ?, ?, ?, ?, ?, ?)`,
      `v1:cus_a:${hour / 1000}:${seq}`,
      hour,
      seq,
      r.value,
      hour / 1000,
      false,
      r.kind ?? "usage",
      r.state,
      r.createdAt,
    );
  }
}

/** sample name{labels} → value, from the registry's exposition (what a scrape reads). */
async function scrape(registry: Registry): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const line of (await registry.metrics()).split("\n")) {
    if (line.startsWith("#") || line.trim() === "") continue;
    const i = line.lastIndexOf(" ");
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

/** A ledger with one of everything each gauge reads. */
async function ledger(clock: { now: number }): Promise<TestIngest> {
  const m = await testIngest({}, () => clock.now);
  // A: own assignment from 12:00; its 10:00 usage predates its first coverage, so it goes to
  //    that first customer (resolve.ts rule 3): mapped.
  // B: no assignment, no fleet: all unmapped.
  // C: in fleet F1, which is assigned: mapped.
  // D: in F1 at 11:40, then its events name F2 (not assigned): its 11:00 hour is mapped, its
  //    12:00 and 13:00 hours unmapped (a SIM that left every assigned fleet).
  await m.ingest([
    used(sim("a"), null, "2026-11-23T10:20:00Z", 1_000),
    used(sim("b"), null, "2026-11-23T10:30:00Z", 20_000),
    used(sim("b"), null, "2026-11-23T11:30:00Z", 300_000),
    used(sim("c"), fleet("1"), "2026-11-23T11:10:00Z", 4_000_000),
    used(sim("d"), fleet("1"), "2026-11-23T11:40:00Z", 50_000_000),
    used(sim("d"), fleet("2"), "2026-11-23T12:40:00Z", 600_000_000),
    used(sim("d"), fleet("2"), "2026-11-23T13:20:00Z", 7_000_000_000),
  ]);
  const at = (iso: string) => T(iso);
  for (const [targetType, targetId, customerId, from] of [
    ["sim", sim("a"), "cus_a", at("2026-11-23T12:00:00Z")],
    ["fleet", fleet("1"), "cus_f", at("2026-11-01T00:00:00Z")],
  ] as const)
    await assignCustomer({
      ledger: m.ledger,
      now: clock.now,
      input: { targetType, targetId, customerId, effectiveFrom: from },
    });
  // Two authenticated events that cannot be counted (no usable fields): quarantined.
  const q = await m.ingest([{ specversion: "1.0", id: "x1" }, { nonsense: true }]);
  expect(q.quarantined).toBe(2);
  await outbox(m, [
    { state: "pending", value: 1_000, createdAt: clock.now - 2 * HOUR },
    { state: "pending", value: -300, createdAt: clock.now - 600_000 },
    { state: "failed", value: 50, createdAt: clock.now - 3 * HOUR },
    { state: "failed", value: 7, createdAt: clock.now - 3 * HOUR },
    { state: "sent", value: 999_999, createdAt: clock.now - 5 * HOUR },
    { state: "superseded", value: 77_777, createdAt: clock.now - 6 * HOUR },
    { state: "sent", value: 12, createdAt: clock.now - 7 * HOUR, kind: "observed" },
  ]);
  return m;
}

const UNMAPPED = 20_000 + 300_000 + 7_000_000_000 + 600_000_000;

/** what `simmeter usage --unmapped` lists, summed: what the gauge must show */
async function unmappedTotal(t: Pick<TestLedger, "ledger">): Promise<number> {
  return (await t.ledger.reads.unmapped()).reduce((s, u) => s + u.bytes, 0);
}

/**
 * A larger ledger: 60 SIMs in five fleets, 6 sessions each in varied hours; fleets 0 and 2
 * assigned from 05:00.
 */
async function largerLedger(clock: { now: number }): Promise<TestIngest> {
  const m = await testIngest({}, () => clock.now);
  const events: unknown[] = [];
  let k = 0;
  for (let i = 0; i < 60; i++) {
    const simSid = `HS${i.toString(16).padStart(32, "0")}`;
    for (let h = 0; h < 6; h++) {
      k++;
      // Every 7th SIM moves to fleet 9 (never assigned) for its later sessions.
      const f = i % 7 === 0 && h >= 3 ? fleet("9") : fleet(String(i % 4));
      const at = new Date(T("2026-11-23T00:20:00Z") + ((k * 5) % 13) * HOUR).toISOString();
      events.push(used(simSid, f, at, 1000 + k));
    }
  }
  await m.ingest(events);
  for (const [f, c] of [
    ["0", "cus_0"],
    ["2", "cus_2"],
  ] as const)
    await assignCustomer({
      ledger: m.ledger,
      now: clock.now,
      input: {
        targetType: "fleet",
        targetId: fleet(f),
        customerId: c,
        effectiveFrom: T("2026-11-23T05:00:00Z"),
      },
    });
  return m;
}

describe("ledger gauges (simmeter_unreported_bytes, _outbox_oldest_pending_age_seconds, _quarantine_rows, _unmapped_bytes)", () => {
  it("shows each figure of the ledger exactly", async () => {
    const clock = { now: NOW };
    const t = await ledger(clock);
    // The hours D's usage fell into, as the gauge must resolve them (guards the fixture itself).
    expect((await t.ledger.reads.unmapped()).map((u) => [u.simSid, u.bytes]).sort()).toEqual([
      [sim("b"), 320_000],
      [sim("d"), 7_600_000_000],
    ]);
    const registry = new Registry();
    registerLedgerGauges(registry, gaugeReads(t), { now: () => clock.now, ...WAIT });
    const s = await scrape(registry);
    expect(s.get('simmeter_unreported_bytes{state="pending"}')).toBe(700);
    expect(s.get('simmeter_unreported_bytes{state="failed"}')).toBe(57);
    expect(s.get("simmeter_outbox_oldest_pending_age_seconds")).toBe(7200);
    expect(s.get("simmeter_quarantine_rows")).toBe(2);
    expect(s.get("simmeter_unmapped_bytes")).toBe(UNMAPPED);
    expect(s.get('simmeter_ledger_read_errors_total{metric="simmeter_unmapped_bytes"}')).toBe(0);
    // No other families: the role's registry carries these alone.
    const families = (await registry.getMetricsAsJSON()).map((f) => f.name).sort();
    expect(families).toEqual([
      "simmeter_ledger_read_errors_total",
      "simmeter_outbox_oldest_pending_age_seconds",
      "simmeter_quarantine_rows",
      "simmeter_unmapped_bytes",
      "simmeter_unreported_bytes",
    ]);
  });

  it("shows 0 for an empty ledger (no pending row: age 0)", async () => {
    const t = await testIngest({}, () => NOW);
    const registry = new Registry();
    registerLedgerGauges(registry, gaugeReads(t), { now: () => NOW, ...WAIT });
    const s = await scrape(registry);
    expect(s.get('simmeter_unreported_bytes{state="pending"}')).toBe(0);
    expect(s.get('simmeter_unreported_bytes{state="failed"}')).toBe(0);
    expect(s.get("simmeter_outbox_oldest_pending_age_seconds")).toBe(0);
    expect(s.get("simmeter_quarantine_rows")).toBe(0);
    expect(s.get("simmeter_unmapped_bytes")).toBe(0);
  });

  it("reads the ledger at most every minIntervalMs; the age still moves with the clock", async () => {
    const clock = { now: NOW };
    const t = await ledger(clock);
    durationsByClock(clock);
    const registry = new Registry();
    registerLedgerGauges(registry, gaugeReads(t), {
      now: () => clock.now,
      minIntervalMs: 15_000,
      ...WAIT,
    });
    await scrape(registry);
    // The ledger changes: a new quarantined event, a newly unmapped SIM, the old pending row sent.
    await t.ingest([{ broken: 1 }]);
    await t.ingest([used(sim("e"), null, "2026-11-23T13:10:00Z", 5)]);
    await t.sql("update meter_reports set state = 'sent' where state = 'pending' and value = 1000");
    const statements = recordStatements(t);
    clock.now += 14_000;
    let s = await scrape(registry);
    expect(statements).toEqual([]);
    expect(s.get("simmeter_quarantine_rows")).toBe(2);
    expect(s.get("simmeter_unmapped_bytes")).toBe(UNMAPPED);
    expect(s.get('simmeter_unreported_bytes{state="pending"}')).toBe(700);
    expect(s.get("simmeter_outbox_oldest_pending_age_seconds")).toBe(7200 + 14);
    clock.now += 1_000;
    s = await scrape(registry);
    expect(statements.length).toBeGreaterThan(0);
    expect(s.get("simmeter_quarantine_rows")).toBe(3);
    expect(s.get("simmeter_unmapped_bytes")).toBe(UNMAPPED + 5);
    expect(s.get('simmeter_unreported_bytes{state="pending"}')).toBe(-300);
    expect(s.get("simmeter_outbox_oldest_pending_age_seconds")).toBe(600 + 15);
  });

  it("keeps the last values through ledger errors (SQLite: a closed connection; PostgreSQL: dropped connections, a closed pool), counts them, logs at most once a minute", async () => {
    const clock = { now: NOW };
    const t = await ledger(clock);
    durationsByClock(clock);
    const registry = new Registry();
    const warnings: unknown[] = [];
    const { reads, breakLedger } = breakableReads(t);
    registerLedgerGauges(registry, reads, {
      now: () => clock.now,
      minIntervalMs: 1_000,
      logger: { warn: (...args: unknown[]) => warnings.push(args) },
      ...WAIT,
    });
    const before = await scrape(registry);
    expect(before.get("simmeter_unmapped_bytes")).toBe(UNMAPPED);
    await breakLedger();
    for (let i = 0; i < 10; i++) {
      clock.now += 5_000;
      const s = await scrape(registry);
      for (const name of [
        'simmeter_unreported_bytes{state="pending"}',
        'simmeter_unreported_bytes{state="failed"}',
        "simmeter_quarantine_rows",
        "simmeter_unmapped_bytes",
      ])
        expect(s.get(name)).toBe(before.get(name));
      // The age is of the last pending row read: it grows with the clock.
      expect(s.get("simmeter_outbox_oldest_pending_age_seconds")).toBe(7200 + (i + 1) * 5);
    }
    const s = await scrape(registry);
    for (const gauge of [
      "simmeter_unreported_bytes",
      "simmeter_outbox_oldest_pending_age_seconds",
      "simmeter_quarantine_rows",
      "simmeter_unmapped_bytes",
    ])
      expect(s.get(`simmeter_ledger_read_errors_total{metric="${gauge}"}`), gauge).toBe(10);
    // 50 s of failing scrapes: one line.
    expect(warnings).toHaveLength(1);
    clock.now += 60_000;
    await scrape(registry);
    expect(warnings).toHaveLength(2);
  });

  // unmappedBytesInSlices is the SQLite pass (synchronous statements, so it must slice itself);
  // PostgreSQL's pass (pgUnmappedBytes) pages SIMs through the pool: tested below on its own.
  it.runIf(backend === "sqlite")(
    "computes unmapped bytes in slices that yield, equal to the unmapped list on a larger ledger (SQLite)",
    async () => {
      const clock = { now: NOW };
      const t = await largerLedger(clock);
      const db = t.sqlite;
      if (!db) throw new Error("a SQLite ledger");
      const expected = await unmappedTotal(t);
      expect(expected).toBeGreaterThan(0);
      let yields = 0;
      const spin = setInterval(() => yields++, 0);
      const r = await unmappedBytesInSlices(db, {
        sliceMs: 0,
        hoursPerStep: 2,
        simsPerResolver: 7,
      });
      clearInterval(spin);
      expect(r.bytes).toBe(expected);
      // sliceMs 0: one step (2 hours of a SIM) per slice, the event loop ran between them.
      expect(yields).toBeGreaterThan(0);
      // The defaults (whole SIMs per step, one resolver) give the same total.
      expect((await unmappedBytesInSlices(db)).bytes).toBe(expected);
    },
  );

  it.runIf(backend === "postgres")(
    "computes unmapped bytes a page of SIMs at a time, giving the event loop back, equal to the unmapped list on a larger ledger (PostgreSQL)",
    async () => {
      const clock = { now: NOW };
      const t = await largerLedger(clock);
      const pool = t.pool;
      if (!pool) throw new Error("a PostgreSQL ledger");
      const expected = await unmappedTotal(t);
      expect(expected).toBeGreaterThan(0);
      let yields = 0;
      const spin = setInterval(() => yields++, 0);
      // 7 SIMs per page: SIMs resolved by one resolver, pages after pages.
      const r = await pgUnmappedBytes(pool, { pageSims: 7 });
      clearInterval(spin);
      expect(r.bytes).toBe(expected);
      // the pass waited for the server between its queries: the event loop ran meanwhile
      expect(yields).toBeGreaterThan(0);
      // one SIM per page, and the default page, give the same total
      expect((await pgUnmappedBytes(pool, { pageSims: 1 })).bytes).toBe(expected);
      expect((await pgUnmappedBytes(pool)).bytes).toBe(expected);
    },
  );
});

describe("simmeter_queue_depth", () => {
  it("reads BullMQ's job counts at scrape time and keeps the last ones while Redis does not answer", async () => {
    const registry = new Registry();
    let answer: () => Promise<Record<string, number>> = async () => ({
      waiting: 3,
      active: 1,
      delayed: 0,
      failed: 2,
    });
    registerQueueGauges(registry, { getJobCounts: () => answer() }, { timeoutMs: 50 });
    let s = await scrape(registry);
    expect(s.get('simmeter_queue_depth{state="waiting"}')).toBe(3);
    expect(s.get('simmeter_queue_depth{state="active"}')).toBe(1);
    expect(s.get('simmeter_queue_depth{state="delayed"}')).toBe(0);
    expect(s.get('simmeter_queue_depth{state="failed"}')).toBe(2);
    answer = () => Promise.reject(new Error("Connection is closed."));
    s = await scrape(registry);
    expect(s.get('simmeter_queue_depth{state="failed"}')).toBe(2);
    // A Redis that never answers (a worker connection retries forever): the scrape still ends.
    let calls = 0;
    answer = () => {
      calls++;
      return new Promise(() => {});
    };
    const t0 = Date.now();
    s = await scrape(registry);
    await scrape(registry);
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(s.get('simmeter_queue_depth{state="waiting"}')).toBe(3);
    // One count in flight at a time, however many scrapes wait for it.
    expect(calls).toBe(1);
  });
});
