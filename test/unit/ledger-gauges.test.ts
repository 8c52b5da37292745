import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { migrateLedger } from "../../src/cli/migrate-ledger.ts";
import { assignCustomer, unmappedUsage } from "../../src/customers/customers.ts";
import type { Db } from "../../src/db/client.ts";
import { createPool } from "../../src/db/pg/client.ts";
import { pgUnmappedBytes } from "../../src/ledger/pg/customers.ts";
import { pgGaugeReads } from "../../src/ledger/pg/gauges.ts";
import { sqliteLedger } from "../../src/ledger/sqlite/index.ts";
import {
  registerLedgerGauges,
  unmappedBytesInSlices,
} from "../../src/observability/ledger-gauges.ts";
import { registerQueueGauges } from "../../src/observability/queue-gauges.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { memoryIngest } from "../helpers/db.ts";
import { createTestDatabase } from "../helpers/pg.ts";
import { assignNow } from "../helpers/seed.ts";

// The ledger gauges against a real, migrated SQLite database (openDb(":memory:") through
// memoryIngest): usage counted by the real ingest, customers by the real assignments, outbox and
// quarantine rows as the reporter and the worker write them.

const T = (iso: string) => Date.parse(iso);
const NOW = T("2026-11-23T13:30:00Z");
const HOUR = 3_600_000;
const ACCOUNT = "ACe7ea554f7fc0fad65e689bb5899bb6c3";
const sim = (c: string) => `HS${c.repeat(32)}`;
const fleet = (c: string) => `HF${c.repeat(32)}`;

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
function outbox(db: Db, rows: OutboxRow[]) {
  const insert = db.$client.prepare(
    `insert into meter_reports (identifier, customer_id, hour, seq, value, timestamp, late, kind, state, created_at)
     values (?, 'cus_a', ?, ?, ?, ?, 0, ?, ?, ?)`,
  );
  for (const r of rows) {
    seq++;
    const hour = T("2026-11-23T10:00:00Z");
    insert.run(
      `v1:cus_a:${hour / 1000}:${seq}`,
      hour,
      seq,
      r.value,
      hour / 1000,
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
function ledger(clock: { now: number }) {
  const m = memoryIngest({}, () => clock.now);
  const { db } = m;
  // A: own assignment from 12:00; its 10:00 usage predates its first coverage, so it goes to
  //    that first customer (resolve.ts rule 3): mapped.
  // B: no assignment, no fleet: all unmapped.
  // C: in fleet F1, which is assigned: mapped.
  // D: in F1 at 11:40, then its events name F2 (not assigned): its 11:00 hour is mapped, its
  //    12:00 and 13:00 hours unmapped (a SIM that left every assigned fleet).
  m.ingest([
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
    assignNow(db, {
      now: clock.now,
      input: { targetType, targetId, customerId, effectiveFrom: from },
    });
  // Two authenticated events that cannot be counted (no usable fields): quarantined.
  const q = m.ingest([{ specversion: "1.0", id: "x1" }, { nonsense: true }]);
  expect(q.quarantined).toBe(2);
  outbox(db, [
    { state: "pending", value: 1_000, createdAt: clock.now - 2 * HOUR },
    { state: "pending", value: -300, createdAt: clock.now - 600_000 },
    { state: "failed", value: 50, createdAt: clock.now - 3 * HOUR },
    { state: "failed", value: 7, createdAt: clock.now - 3 * HOUR },
    { state: "sent", value: 999_999, createdAt: clock.now - 5 * HOUR },
    { state: "superseded", value: 77_777, createdAt: clock.now - 6 * HOUR },
    { state: "sent", value: 12, createdAt: clock.now - 7 * HOUR, kind: "observed" },
  ]);
  return { ...m, db };
}

const UNMAPPED = 20_000 + 300_000 + 7_000_000_000 + 600_000_000;

describe("ledger gauges (simmeter_unreported_bytes, _outbox_oldest_pending_age_seconds, _quarantine_rows, _unmapped_bytes)", () => {
  it("shows each figure of the ledger exactly", async () => {
    const clock = { now: NOW };
    const { db } = ledger(clock);
    // The hours D's usage fell into, as the gauge must resolve them (guards the fixture itself).
    expect(
      unmappedUsage(db)
        .map((u) => [u.simSid, u.bytes])
        .sort(),
    ).toEqual([
      [sim("b"), 320_000],
      [sim("d"), 7_600_000_000],
    ]);
    const registry = new Registry();
    registerLedgerGauges(registry, db, { now: () => clock.now });
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
    const { db } = memoryIngest({}, () => NOW);
    const registry = new Registry();
    registerLedgerGauges(registry, db, { now: () => NOW });
    const s = await scrape(registry);
    expect(s.get('simmeter_unreported_bytes{state="pending"}')).toBe(0);
    expect(s.get('simmeter_unreported_bytes{state="failed"}')).toBe(0);
    expect(s.get("simmeter_outbox_oldest_pending_age_seconds")).toBe(0);
    expect(s.get("simmeter_quarantine_rows")).toBe(0);
    expect(s.get("simmeter_unmapped_bytes")).toBe(0);
  });

  it("reads the ledger at most every minIntervalMs; the age still moves with the clock", async () => {
    const clock = { now: NOW };
    const { db, ingest } = ledger(clock);
    const registry = new Registry();
    registerLedgerGauges(registry, db, { now: () => clock.now, minIntervalMs: 15_000 });
    await scrape(registry);
    // The ledger changes: a new quarantined event, a newly unmapped SIM, the old pending row sent.
    ingest([{ broken: 1 }]);
    ingest([used(sim("e"), null, "2026-11-23T13:10:00Z", 5)]);
    db.$client
      .prepare("update meter_reports set state = 'sent' where state = 'pending' and value = 1000")
      .run();
    const statements: string[] = [];
    const prepare = db.$client.prepare.bind(db.$client);
    db.$client.prepare = ((source: string) => {
      statements.push(source);
      return prepare(source);
    }) as typeof db.$client.prepare;
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

  it("keeps the last values through SQLite errors, counts them, logs at most once a minute", async () => {
    const clock = { now: NOW };
    const { db } = ledger(clock);
    const registry = new Registry();
    const warnings: unknown[] = [];
    registerLedgerGauges(registry, db, {
      now: () => clock.now,
      minIntervalMs: 1_000,
      logger: { warn: (...args: unknown[]) => warnings.push(args) },
    });
    const before = await scrape(registry);
    db.$client.close();
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

  it("computes unmapped bytes in slices that yield, equal to unmappedUsage on a larger ledger", async () => {
    const clock = { now: NOW };
    const m = memoryIngest({}, () => clock.now);
    // 60 SIMs in five fleets, 6 sessions each in varied hours; fleets 0 and 2 assigned from 05:00.
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
    m.ingest(events);
    for (const [f, c] of [
      ["0", "cus_0"],
      ["2", "cus_2"],
    ] as const)
      await assignCustomer({
        ledger: sqliteLedger(m.db),
        now: clock.now,
        input: {
          targetType: "fleet",
          targetId: fleet(f),
          customerId: c,
          effectiveFrom: T("2026-11-23T05:00:00Z"),
        },
      });
    const expected = unmappedUsage(m.db).reduce((s, u) => s + u.bytes, 0);
    expect(expected).toBeGreaterThan(0);
    let yields = 0;
    const spin = setInterval(() => yields++, 0);
    const r = await unmappedBytesInSlices(m.db, {
      sliceMs: 0,
      hoursPerStep: 2,
      simsPerResolver: 7,
    });
    clearInterval(spin);
    expect(r.bytes).toBe(expected);
    // sliceMs 0: one step (2 hours of a SIM) per slice, the event loop ran between them.
    expect(yields).toBeGreaterThan(0);
    // The defaults (whole SIMs per step, one resolver) give the same total.
    expect((await unmappedBytesInSlices(m.db)).bytes).toBe(expected);
  });
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

describe("the same gauges on a PostgreSQL ledger", () => {
  it("shows the figures the SQLite ledger shows, once the ledger is copied there", async () => {
    const clock = { now: NOW };
    const { db } = ledger(clock);
    const file = join(mkdtempSync(join(tmpdir(), "gauges-")), "ledger.db");
    writeFileSync(file, db.$client.serialize());
    const target = await createTestDatabase({ empty: true });
    const pool = createPool(target.url, { role: "test", max: 2 });
    try {
      const copied = await migrateLedger({
        path: file,
        url: target.url,
        batchRows: 1000,
        quiet: true,
      });
      expect(copied.ok, copied.error ?? "").toBe(true);
      const lite = new Registry();
      registerLedgerGauges(lite, db, { now: () => clock.now });
      const pg = new Registry();
      // a pass over the server may outlast a scrape's 500 ms wait: this scrape waits for it
      registerLedgerGauges(pg, pgGaugeReads(pool), { now: () => clock.now, scrapeWaitMs: 30_000 });
      const want = await scrape(lite);
      expect(want.get("simmeter_unmapped_bytes")).toBe(UNMAPPED);
      expect(await scrape(pg)).toEqual(want);
      // paging SIMs one at a time gives the same total
      expect((await pgUnmappedBytes(pool, { pageSims: 1 })).bytes).toBe(UNMAPPED);
    } finally {
      await pool.end();
      await target.drop();
    }
  });
});
