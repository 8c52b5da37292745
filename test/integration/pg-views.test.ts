// The operator pages' reads on PostgreSQL (src/ledger/pg/views.ts, src/ledger/pg/accounts.ts and
// the outbox's touching/recordObserved) against SQLite (src/ledger/sqlite/views.ts, accounts.ts):
// the same jobs through both adapters' ingest, the same assignments and billing, the same planning
// and outbox changes; then every port read, and every view /api and the console serve from it
// (overview, report status, outbox rows, usage and lag series, customers, SIM), must give the same
// answer on both. Real migrations on both, nothing mocked.
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dayStart } from "../../src/accounting/buckets.ts";
import type { CustomerBilling } from "../../src/billing/periods.ts";
import { openDb } from "../../src/db/client.ts";
import type { Delivery, IngestJobData } from "../../src/ingest/job.ts";
import type { IngestSettings } from "../../src/ingest/unit-of-work.ts";
import { pgLedger } from "../../src/ledger/pg/index.ts";
import type { Ledger } from "../../src/ledger/port.ts";
import { sqliteLedger } from "../../src/ledger/sqlite/index.ts";
import { observedRow, type StripeDifference } from "../../src/reporting/reconcile.ts";
import { Rng, simulateFleet } from "../../src/simulate/fleet.ts";
import { customerDetail, customerSummaryList } from "../../src/views/customer-usage.ts";
import { OutboxRowParams, outboxRowList } from "../../src/views/outbox.ts";
import { currentPeriods, overviewView } from "../../src/views/overview.ts";
import { reportStatusView } from "../../src/views/report.ts";
import {
  IngestLagParams,
  ingestLag,
  UsageSeriesParams,
  usageSeries,
} from "../../src/views/series.ts";
import { SimQuery, simDetail } from "../../src/views/sim.ts";
import { testPgPool } from "../helpers/pg.ts";

const HOUR = 3_600_000;
const FROM = Date.UTC(2026, 10, 20, 0, 0, 0);
const TO = FROM + 8 * HOUR;
const NOW = TO + 3 * HOUR;
const SETTINGS = { graceSeconds: 3600 };
const ingestSettings: IngestSettings = {
  billingMode: "realtime",
  attribution: "end",
  retentionDays: 100_000,
  maxBytesPerSecond: 250_000_000,
};

const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

let lite: Ledger;
let post: Ledger;
let sqliteRun: (sql: string, params?: unknown[]) => void;
let pool: pg.Pool;
let sims: string[];
let customers: string[];

/** the same statement on both ledgers ($n placeholders; ? on SQLite) */
async function both(sql: string, params: unknown[] = []): Promise<void> {
  sqliteRun(sql.replace(/\$\d+/g, "?"), params);
  await pool.query(sql, params);
}

/** the same read through both adapters: equal (after `norm`), and returned */
async function same<T>(
  read: (l: Ledger) => Promise<T>,
  norm: (v: T) => unknown = (v) => v,
): Promise<T> {
  const [a, b] = await Promise.all([read(lite), read(post)]);
  expect(norm(b)).toEqual(norm(a));
  return a;
}

/**
 * sims.last_event_at is exact on PostgreSQL; SQLite's ingest writes a SIM's row once per day and
 * change (a page write saved per event), so there it is an event time of the SIM's last day of
 * events. Compared by UTC day.
 */
const lastEventDay = (v: unknown): unknown =>
  JSON.parse(JSON.stringify(v instanceof Map ? Object.fromEntries(v) : v), (k, x) =>
    k === "lastEventAt" && typeof x === "number"
      ? dayStart(x)
      : k === "last_event_at" && typeof x === "string"
        ? new Date(dayStart(Date.parse(x))).toISOString()
        : x,
  );

const billing = (customerId: string, start: number, end: number): CustomerBilling => ({
  customerId,
  state: "ok",
  detail: null,
  subscriptionId: `sub_${customerId}`,
  itemId: `si_${customerId}`,
  priceId: "price_test",
  periodStart: start,
  periodEnd: end,
  previous: null,
  refreshedAt: NOW,
});

beforeAll(async () => {
  const db = openDb(":memory:");
  cleanup.push(async () => {
    db.$client.close();
  });
  lite = sqliteLedger(db);
  sqliteRun = (sql, params = []) => {
    db.$client.prepare(sql).run(...params);
  };
  const pg = await testPgPool(cleanup);
  pool = pg.pool;
  post = pgLedger(pg.pool, pg.url);

  // A fleet with duplicates and reordering, in jobs of 1–12 events, plus junk and an odd event.
  const sim = simulateFleet({
    seed: 31,
    customers: 3,
    sims: 24,
    from: FROM,
    to: TO,
    billingMode: "realtime",
    perturb: { duplicateRate: 0.05, reorder: true },
  });
  const events = [...sim.events] as Record<string, unknown>[];
  const truth = sim.truth();
  const rng = new Rng(31, 5);
  const jobs: IngestJobData[] = [];
  for (let i = 0, n = 0; i < events.length; n++) {
    const size = rng.int(1, 12);
    const d: Delivery = {
      id: `v-d${n}`,
      receivedAt: FROM + n * 7_000,
      source: "twilio",
      events: events.slice(i, i + size),
    };
    i += size;
    jobs.push({ v: 1, deliveries: [d] });
  }
  jobs.push({
    v: 1,
    deliveries: [
      { id: "junk-1", receivedAt: TO, source: "twilio", body: "{not json" },
      {
        id: "junk-2",
        receivedAt: TO,
        source: "twilio",
        events: [{ specversion: "1.0", type: "com.example.nothing", id: "x1" }, 42],
      },
    ],
  });
  for (const job of jobs) {
    const a = await lite.ingestJob(job, ingestSettings, () => NOW);
    const b = await post.ingestJob(job, ingestSettings, () => NOW);
    expect(b).toEqual(a);
  }

  // Fleets assigned from the start; two SIMs directly, one of them to another customer later.
  sims = Object.keys(truth.customers).sort();
  customers = [...new Set(Object.values(truth.customers))].sort();
  let id = 0;
  for (const [fleetSid, customerId] of Object.entries(truth.fleets).sort())
    await both(
      "insert into assignments (id, target_type, target_id, customer_id, effective_from, created_at) values ($1, 'fleet', $2, $3, 0, $4)",
      [++id, fleetSid, customerId, NOW],
    );
  const [s0, s1] = sims as [string, string];
  await both(
    "insert into assignments (id, target_type, target_id, customer_id, effective_from, created_at) values ($1, 'sim', $2, $3, 0, $4)",
    [++id, s0, truth.customers[s0], NOW],
  );
  await both(
    "insert into assignments (id, target_type, target_id, customer_id, effective_from, created_at) values ($1, 'sim', $2, 'cus_other', $3, $4)",
    [++id, s1, FROM + 4 * HOUR, NOW],
  );
  // Billing: the current period began halfway, so earlier hours go in late.
  const rows = [...customers, "cus_other"].map((c) =>
    billing(c, FROM + 2 * HOUR, NOW + 30 * 24 * HOUR),
  );
  await lite.billing.store(rows);
  await post.billing.store(rows);
  const planned = await same((l) => l.plan({ now: NOW, settings: SETTINGS }));
  expect(planned.rows.length).toBeGreaterThan(10);

  // The sender's states on both: some sent, one stopped, one attempt, one late row.
  const ids = planned.rows.map((r) => r.identifier);
  for (const l of [lite, post]) {
    for (const [i, identifier] of ids.slice(0, Math.floor(ids.length / 2)).entries())
      await l.outbox.markSent(identifier, NOW + i);
    await l.outbox.markFailed(ids[ids.length - 1] as string, "Stripe said no");
    await l.outbox.recordAttempt(ids[ids.length - 2] as string, "timeout");
  }
  await both("update meter_reports set late = true where identifier = $1", [ids[1]]);
}, 120_000);

describe("the views' reads on PostgreSQL equal SQLite's", () => {
  it("outbox rows: every filter, and paging by row id", async () => {
    const all = await same((l) => l.views.outboxRows({ limit: 1000 }));
    expect(all.length).toBeGreaterThan(10);
    for (const f of [
      { state: "sent" as const, limit: 1000 },
      { state: "failed" as const, limit: 1000 },
      { late: true, limit: 1000 },
      { customer: customers[0] as string, limit: 5 },
      { beforeRowId: (all[3] as { rowId: number }).rowId, limit: 4 },
    ])
      await same((l) => l.views.outboxRows(f));
    // The list view over it, page by page to the end.
    let cursor: string | undefined;
    for (let n = 0; n < 100; n++) {
      const p = OutboxRowParams.parse({ limit: 7, ...(cursor ? { starting_after: cursor } : {}) });
      const page = await same((l) => outboxRowList(l, p));
      if (!page.has_more) break;
      cursor = page.next_starting_after ?? undefined;
    }
  });

  it("usage rows, the lag per hour, the counters", async () => {
    const rows = await same((l) => l.views.usageRows(FROM, TO + HOUR));
    expect(rows.length).toBeGreaterThan(20);
    await same((l) => l.views.usageRows(FROM, TO + HOUR, sims[3]));
    const lag = await same((l) => l.views.ingestLag(FROM - HOUR, NOW));
    expect(lag.reduce((n, h) => n + h.events, 0)).toBeGreaterThan(100);
    expect(await same((l) => l.views.lastSentMs())).not.toBeNull();
    expect(await same((l) => l.views.openQuarantine())).toBeGreaterThan(0);
    const outbox = (await lite.views.outboxRows({ limit: 1000 })).map((r) => r.row);
    const late = outbox.filter((r) => r.late && (r.state === "sent" || r.state === "pending"));
    expect(late.length).toBeGreaterThan(1);
    expect(await same((l) => l.views.lateRows())).toBe(late.length);
  });

  it("usage with its customers, SIM rows, assignment coverage", async () => {
    const owned = await same((l) => l.customers.usageOwned(FROM, TO + HOUR));
    // In the table's order on both: compare as sets of rows too.
    expect(new Set(owned.map((u) => u.customer))).toEqual(
      new Set([
        ...customers,
        "cus_other",
        ...(owned.some((u) => u.customer === null) ? [null] : []),
      ]),
    );
    await same((l) => l.customers.sims(sims.slice(0, 5)), lastEventDay);
    const targets = [
      { targetType: "sim" as const, targetId: sims[0] as string },
      { targetType: "iccid" as const, targetId: "89000000000000000000" },
      ...(await lite.assignments.list()).map((a) => ({
        targetType: a.targetType,
        targetId: a.targetId,
      })),
    ];
    const covered = await same((l) => l.customers.covered(targets));
    expect(covered.flat().length).toBeGreaterThan(sims.length / 2);
  });

  it("one SIM's record: sessions with readings, anomalies, fleet hours, assignments", async () => {
    for (const s of [sims[0], sims[1], sims[7], "HS00000000000000000000000000000000"] as string[])
      await same((l) => l.views.simRecord(s, 5), lastEventDay);
    const doc = await same(
      (l) => simDetail(l, sims[1] as string, SimQuery.parse({})),
      lastEventDay,
    );
    expect(doc.customers.map((c) => c.customer_id)).toContain("cus_other");
  });

  it("the documents /api serves: overview, report status, series, customers", async () => {
    const stored = await lite.billing.load();
    await same((l) => currentPeriods(l, stored));
    await same((l) => overviewView(l, { now: NOW, settings: SETTINGS, billing: stored }));
    await same((l) => reportStatusView(l, { now: NOW, settings: SETTINGS, billing: stored }));
    for (const p of [
      { granularity: "hour", from: new Date(FROM).toISOString(), to: new Date(NOW).toISOString() },
      { granularity: "day", customer: customers[1] },
      { granularity: "hour", sim: sims[2], from: new Date(FROM).toISOString() },
    ])
      await same((l) => usageSeries(l, UsageSeriesParams.parse(p), NOW));
    await same((l) => ingestLag(l, IngestLagParams.parse({}), NOW));
    await same((l) => customerSummaryList(l, { limit: 100 }, stored));
    for (const c of [...customers, "cus_other"]) await same((l) => customerDetail(l, c, stored));
  });

  it("reconcile's reads: the outbox rows touching a range", async () => {
    const touching = await same((l) => l.outbox.touching(FROM, FROM + 4 * HOUR));
    expect(touching.length).toBeGreaterThan(0);
    // reconcile's and parity's one-snapshot read: the same usage and rows as the two reads
    const accounts = await same((l) => l.customers.accounts(FROM, FROM + 4 * HOUR));
    expect(accounts.reports).toEqual(touching);
    expect(accounts.usage).toEqual(await lite.customers.usageOwned(FROM, FROM + 4 * HOUR));
  });

  it("reconcile --repair's observed rows: the same rows, and a touched hour skipped", async () => {
    const rows = (await lite.views.outboxRows({ limit: 1000 })).map((r) => r.row);
    const stampHour = (r: (typeof rows)[number]) =>
      r.timestamp * 1000 - ((r.timestamp * 1000) % HOUR);
    // a sent row whose customer has nothing pending or stopped stamped in the same hour
    const a = rows.find(
      (r) =>
        r.state === "sent" &&
        r.kind === "usage" &&
        !rows.some(
          (o) =>
            o.customerId === r.customerId &&
            stampHour(o) === stampHour(r) &&
            (o.state === "pending" || o.state === "failed"),
        ),
    );
    if (!a) throw new Error("no settled sent row to repair");
    const diffs: StripeDifference[] = [
      {
        customer: a.customerId,
        hour: stampHour(a),
        bucket: a.hour,
        stripe: a.value - 10,
        sent: a.value,
        difference: -10,
      },
    ];
    // compared before the row was sent: the hour was touched since, nothing recorded
    expect(await same((l) => l.outbox.recordObserved(diffs, NOW + 10_000, NOW - 1))).toEqual([]);
    const written = await same((l) => l.outbox.recordObserved(diffs, NOW + 10_000, NOW + 10_000));
    expect(written).toEqual([
      expect.objectContaining(
        observedRow(diffs[0] as StripeDifference, written[0]?.seq ?? -1, NOW + 10_000),
      ),
    ]);
    await same((l) => l.views.outboxRows({ limit: 3 }));
  });
});
