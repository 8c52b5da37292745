// Planning on PostgreSQL (src/ledger/pg/plan.ts) against the SQLite reference (planReports in
// src/reporting/outbox.ts): one step body (src/reporting/plan-steps.ts), two adapters, both with
// their real migrations. (a) the same ingested usage, assignments (SIM, ICCID, fleet, SIMs moving
// between fleets, later re-assignments) and billing states give the same PlanResult and leave the
// same meter_reports, report_dirty_hours, report_dirty_sims and meta, over several chunks, a
// supersede, a held-back row, an hour beyond 2^53 - 1 and a dry run that writes nothing;
// (b) two planners at once beside concurrent ingest plan no customer-hour difference twice.
import type pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import type { CustomerBilling } from "../../src/billing/periods.ts";
import { storeBilling } from "../../src/billing/subscriptions.ts";
import { customerResolver } from "../../src/customers/customers.ts";
import { type Db, openDb } from "../../src/db/client.ts";
import { createPool } from "../../src/db/pg/client.ts";
import { type IngestSettings, ingestDeliveries, prepareIngest } from "../../src/ingest/ingest.ts";
import type { Delivery, IngestJobData } from "../../src/ingest/job.ts";
import { pgBilling } from "../../src/ledger/pg/billing.ts";
import { ingestJobPg } from "../../src/ledger/pg/ingest.ts";
import { planPg } from "../../src/ledger/pg/plan.ts";
import { type PlanResult, planReports } from "../../src/reporting/outbox.ts";
import { Rng, simulateFleet } from "../../src/simulate/fleet.ts";
import { testPgPool } from "../helpers/pg.ts";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const FROM = Date.UTC(2025, 2, 3, 22, 0, 0);
const TO = FROM + 6 * HOUR;
const NOW = TO + 2 * HOUR;
const SETTINGS = { graceSeconds: 3600 };
const hex32 = (p: string, i: number) => `${p}${i.toString(16).padStart(32, "0")}`;

const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

const ingestSettings: IngestSettings = {
  billingMode: "realtime",
  attribution: "end",
  retentionDays: 100_000,
  maxBytesPerSecond: 250_000_000,
};

type Data = Record<string, unknown>;

/** a fleet's events, some SIMs moving to other fleets halfway (and one back), as jobs */
function fleetJobs(seed: number, sims: number): { jobs: IngestJobData[] } {
  const sim = simulateFleet({
    seed,
    customers: 3,
    sims,
    from: FROM,
    to: TO,
    billingMode: "realtime",
    perturb: { duplicateRate: 0.05, reorder: true },
  });
  const all = [...sim.events] as Record<string, unknown>[];
  const ids = [...new Set(all.map((e) => (e.data as Data).sim_sid as string))].sort();
  const role = new Map(ids.map((s, i) => [s, i % 4]));
  const mid = FROM + 3 * HOUR;
  const events = all.map((ev) => {
    const e = structuredClone(ev) as Record<string, unknown>;
    const d = e.data as Data;
    const t = Date.parse(d.timestamp as string);
    if (role.get(d.sim_sid as string) === 1 && t > mid) d.fleet_sid = hex32("HF", 0xf1);
    if (role.get(d.sim_sid as string) === 2) {
      if (t > mid) d.fleet_sid = hex32("HF", 0xf2);
      if (t > mid + HOUR) d.fleet_sid = hex32("HF", 0xf1);
    }
    return e;
  });
  const rng = new Rng(seed, 3);
  const jobs: IngestJobData[] = [];
  for (let i = 0, n = 0; i < events.length; n++) {
    const size = rng.int(1, 12);
    const d: Delivery = {
      id: `p${seed}-d${n}`,
      receivedAt: FROM + n * 1000,
      source: "twilio",
      events: events.slice(i, i + size),
    };
    i += size;
    jobs.push({ v: 1, deliveries: [d] });
  }
  return { jobs };
}

// --- the two ledgers side by side ------------------------------------------------------------

type Pair = { db: Db; pool: pg.Pool; ingest: (job: IngestJobData) => Promise<void> };

async function pair(): Promise<Pair> {
  const db = openDb(":memory:");
  const ctx = { db, stmts: prepareIngest(db), settings: ingestSettings, now: () => NOW };
  const { pool } = await testPgPool(cleanup);
  return {
    db,
    pool,
    ingest: async (job) => {
      ctx.stmts.simsWritten.clear();
      const want = ingestDeliveries(ctx, job);
      const got = await ingestJobPg(pool, job, ingestSettings, NOW);
      expect(got).toEqual(want);
    },
  };
}

/** the same statement on both ledgers ($n placeholders, ? on SQLite) */
async function both(p: Pair, sql: string, params: unknown[] = []): Promise<void> {
  p.db.$client.prepare(sql.replace(/\$\d+/g, "?")).run(...params);
  await p.pool.query(sql, params);
}

async function assign(
  p: Pair,
  id: number,
  targetType: "sim" | "iccid" | "fleet",
  targetId: string,
  customerId: string,
  effectiveFrom: number,
) {
  await both(
    p,
    "insert into assignments (id, target_type, target_id, customer_id, effective_from, created_at) values ($1, $2, $3, $4, $5, $6)",
    [id, targetType, targetId, customerId, effectiveFrom, NOW],
  );
}

async function storeBoth(p: Pair, rows: CustomerBilling[]) {
  storeBilling(p.db, rows);
  await pgBilling(p.pool).store(rows);
}

const billing = (
  customerId: string,
  o: Partial<CustomerBilling> & Pick<CustomerBilling, "state">,
): CustomerBilling => ({
  customerId,
  detail: null,
  subscriptionId: o.state === "ok" ? `sub_${customerId}` : null,
  itemId: o.state === "ok" ? `si_${customerId}` : null,
  priceId: o.state === "ok" ? "price_1" : null,
  periodStart: o.state === "ok" ? FROM - 10 * DAY : null,
  periodEnd: o.state === "ok" ? NOW + 20 * DAY : null,
  previous: null,
  refreshedAt: NOW,
  ...o,
});

type Row = Record<string, unknown>;
const TABLES: Record<string, string> = {
  meter_reports: `identifier, customer_id, hour, seq, value, timestamp, late, kind, state, attempts,
    in_doubt, first_call_at, last_error, created_at, sent_at`,
  report_dirty_hours: "hour",
  report_dirty_sims: "sim_sid",
  meta: "key, value",
};

function normalise(rows: Row[]): Row[] {
  const out = rows.map((r) => {
    const o: Row = {};
    for (const [k, v] of Object.entries(r)) o[k] = typeof v === "boolean" ? Number(v) : v;
    return o;
  });
  const key = (r: Row) => JSON.stringify(r);
  return out.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

async function dumps(
  p: Pair,
): Promise<{ sqlite: Record<string, Row[]>; pg: Record<string, Row[]> }> {
  const sqlite: Record<string, Row[]> = {};
  const pgd: Record<string, Row[]> = {};
  for (const [t, cols] of Object.entries(TABLES)) {
    sqlite[t] = normalise(p.db.$client.prepare(`select ${cols} from ${t}`).all() as Row[]);
    pgd[t] = normalise((await p.pool.query(`select ${cols} from ${t}`)).rows);
  }
  return { sqlite, pg: pgd };
}

async function expectSameTables(p: Pair, label: string) {
  const d = await dumps(p);
  for (const t of Object.keys(TABLES)) expect(d.pg[t], `${label}: ${t}`).toEqual(d.sqlite[t]);
  return d.sqlite;
}

/** planReports on SQLite, planPg on PostgreSQL: the same result */
async function planBoth(
  p: Pair,
  label: string,
  o: { chunkRows: number; dryRun?: boolean; now?: number },
): Promise<PlanResult> {
  const run = { now: o.now ?? NOW, settings: SETTINGS, chunkRows: o.chunkRows, dryRun: o.dryRun };
  const want = planReports({ db: p.db, ...run });
  const got = await planPg(p.pool, run);
  expect(got, label).toEqual(want);
  return want;
}

// --- (a) differential ------------------------------------------------------------------------

describe("planPg equals planReports", () => {
  it("over chunks, fleets, moves, re-assignments, holds, a supersede, a held-back row and a dry run", async () => {
    const p = await pair();
    const { jobs } = fleetJobs(31, 16);
    const late = jobs.splice(Math.floor(jobs.length * 0.8));
    for (const job of jobs) await p.ingest(job);

    const sims = p.db.$client.prepare("select sim_sid, iccid from sims order by sim_sid").all() as {
      sim_sid: string;
      iccid: string;
    }[];
    const fleets = (
      p.db.$client
        .prepare("select distinct fleet_sid from sim_fleet_hours order by fleet_sid")
        .all() as { fleet_sid: string }[]
    ).map((r) => r.fleet_sid);
    expect(fleets.length).toBeGreaterThanOrEqual(3);
    expect(sims.length).toBeGreaterThanOrEqual(8);
    const simAt = (i: number) => sims[i] as { sim_sid: string; iccid: string };

    // Two large hours: one split into parts at MAX_METER_VALUE, one beyond 2^53 - 1 (held).
    const big = simAt(0).sim_sid;
    const big2 = simAt(4).sim_sid;
    await both(p, "insert into usage_hourly (hour, sim_sid, bytes) values ($1, $2, $3)", [
      FROM - 2 * HOUR,
      big,
      2_500_000_000_000_000,
    ]);
    for (const s of [big, big2])
      await both(p, "insert into usage_hourly (hour, sim_sid, bytes) values ($1, $2, $3)", [
        FROM - 3 * HOUR,
        s,
        5_000_000_000_000_000,
      ]);
    await both(p, "insert into report_dirty_hours (hour) values ($1), ($2)", [
      FROM - 3 * HOUR,
      FROM - 2 * HOUR,
    ]);

    let id = 1;
    for (const [i, f] of fleets.entries())
      await assign(
        p,
        id++,
        "fleet",
        f,
        ["cus_a", "cus_b", "cus_c", "cus_d"][i % 4] as string,
        FROM,
      );
    await assign(p, id++, "sim", simAt(1).sim_sid, "cus_e", FROM + 2 * HOUR);
    await assign(p, id++, "iccid", simAt(2).iccid, "cus_b", FROM - DAY);
    await assign(p, id++, "sim", big, "cus_a", FROM - DAY);
    await assign(p, id++, "sim", big2, "cus_a", FROM - DAY);
    // cus_b's previous period has a draft that finalizes later: its early hours are stamped there
    const rollover = FROM + 3 * HOUR;
    const draft = {
      start: FROM - 30 * DAY,
      end: rollover,
      invoiceId: "in_b",
      status: "draft",
      finalizesAt: NOW + DAY,
      finalizedAt: null,
    };
    await storeBoth(p, [
      billing("cus_a", { state: "ok" }),
      billing("cus_b", { state: "ok", periodStart: rollover, previous: draft }),
      billing("cus_c", { state: "none", detail: "no item" }),
      billing("cus_d", { state: "ambiguous", detail: "two items" }),
      billing("cus_e", { state: "ok", periodStart: FROM + 5 * HOUR }),
    ]);

    // A dry run first: the same answer, nothing written on either side.
    const before = await expectSameTables(p, "before");
    const dry = await planBoth(p, "dry run", { chunkRows: 40, dryRun: true });
    expect(dry.rows.length).toBeGreaterThan(0);
    expect(await expectSameTables(p, "after the dry run")).toEqual(before);

    const first = await planBoth(p, "first plan", { chunkRows: 40 });
    expect(first.rows).toEqual(dry.rows);
    expect(first.hours).toBeGreaterThan(5);
    expect(first.held.some((h) => h.reason === "no_subscription")).toBe(true);
    expect(first.held.some((h) => h.reason === "ambiguous_subscription")).toBe(true);
    expect(first.problems.length).toBe(1);
    expect(first.rows.some((r) => r.value === 999_999_999_999_999)).toBe(true);
    expect(first.rows.some((r) => r.late)).toBe(true);
    await expectSameTables(p, "first plan");

    // Later: the rest of the events, a re-assignment of a fleet and of a SIM, cus_b's draft
    // finalized (its pending rows stamped there are superseded), a stopped row (held back).
    for (const job of late) await p.ingest(job);
    await assign(p, id++, "fleet", fleets[0] as string, "cus_e", FROM + 4 * HOUR);
    await assign(p, id++, "sim", simAt(3).sim_sid, "cus_a", FROM + HOUR);
    await storeBoth(p, [
      billing("cus_b", {
        state: "ok",
        periodStart: rollover,
        previous: { ...draft, status: "open", finalizesAt: null, finalizedAt: NOW },
      }),
    ]);
    const failed = p.db.$client
      .prepare(
        "select identifier, hour from meter_reports where customer_id = 'cus_a' and state = 'pending' order by identifier limit 1",
      )
      .get() as { identifier: string; hour: number };
    await both(
      p,
      "update meter_reports set state = 'failed', last_error = 'x' where identifier = $1",
      [failed.identifier],
    );
    await both(p, "insert into report_dirty_hours (hour) values ($1) on conflict do nothing", [
      failed.hour,
    ]);
    await expectSameTables(p, "before the second plan");

    const dry2 = await planBoth(p, "second dry run", { chunkRows: 5, dryRun: true });
    expect(dry2.superseded).toBe(0);
    const second = await planBoth(p, "second plan", { chunkRows: 5, now: NOW + HOUR });
    expect(second.superseded).toBeGreaterThan(0);
    expect(second.heldBack).toContainEqual({ customerId: "cus_a", hour: failed.hour });
    expect(second.rows.some((r) => r.customerId === "cus_e")).toBe(true);
    const after = await expectSameTables(p, "second plan");
    expect(after.meter_reports?.some((r) => r.state === "superseded")).toBe(true);

    // Nothing left to plan but what is held: a third run changes nothing.
    const third = await planBoth(p, "third plan", { chunkRows: 1000, now: NOW + HOUR });
    expect(third.rows).toEqual([]);
    expect(await expectSameTables(p, "third plan")).toEqual(after);
    console.log(
      `pg-plan: ${first.hours}/${second.hours} hours, ${first.rows.length}/${second.rows.length} rows, ${second.superseded} superseded, tables`,
      Object.fromEntries(Object.entries(after).map(([t, r]) => [t, r.length])),
    );
    p.db.$client.close();
  });
});

// --- (b) concurrency -------------------------------------------------------------------------

describe("planners beside ingest on one PostgreSQL ledger", () => {
  it("two planPg at once, ingest in between: no customer-hour difference planned twice", async () => {
    const { url, pool } = await testPgPool(cleanup, 4);
    const db = openDb(":memory:");
    const ctx = { db, stmts: prepareIngest(db), settings: ingestSettings, now: () => NOW };
    const { jobs } = fleetJobs(41, 60);
    const firstPart = jobs.splice(0, Math.floor(jobs.length / 3));
    for (const job of firstPart) {
      ingestDeliveries(ctx, job);
      await ingestJobPg(pool, job, ingestSettings, NOW);
    }
    const fleets = (
      db.$client.prepare("select distinct fleet_sid from sim_fleet_hours order by 1").all() as {
        fleet_sid: string;
      }[]
    ).map((r) => r.fleet_sid);
    const customers = ["cus_a", "cus_b", "cus_c"];
    for (const [i, f] of fleets.entries()) {
      const args = [i + 1, "fleet", f, customers[i % 3], FROM - DAY, NOW];
      db.$client
        .prepare(
          "insert into assignments (id, target_type, target_id, customer_id, effective_from, created_at) values (?, ?, ?, ?, ?, ?)",
        )
        .run(...args);
      await pool.query(
        "insert into assignments (id, target_type, target_id, customer_id, effective_from, created_at) values ($1, $2, $3, $4, $5, $6)",
        args,
      );
    }
    await pgBilling(pool).store(customers.map((c) => billing(c, { state: "ok" })));

    const workers = Array.from({ length: 3 }, () => {
      const p = createPool(url, { role: "test-worker", max: 1 });
      cleanup.push(() => p.end());
      return p;
    });
    const planners = Array.from({ length: 2 }, () => {
      const p = createPool(url, { role: "test-planner", max: 1 });
      cleanup.push(() => p.end());
      return p;
    });
    const queue = [...jobs];
    let ingesting = true;
    const results: PlanResult[] = [];
    const planLoop = async (p: pg.Pool) => {
      while (ingesting)
        results.push(await planPg(p, { now: NOW, settings: SETTINGS, chunkRows: 20 }));
    };
    const ingestAll = Promise.all(
      workers.map(async (w) => {
        for (let job = queue.shift(); job; job = queue.shift()) {
          await ingestJobPg(w, job, ingestSettings, NOW);
          ingestDeliveries(ctx, job);
        }
      }),
    ).finally(() => {
      ingesting = false;
    });
    await Promise.all([ingestAll, ...planners.map(planLoop)]);
    results.push(await planPg(pool, { now: NOW, settings: SETTINGS, chunkRows: 20 }));
    expect(results.length).toBeGreaterThanOrEqual(3);
    // the planners ran while usage grew: some customer-hours were planned in several rows
    expect(results.filter((r) => r.rows.length > 0).length).toBeGreaterThan(2);

    // What is counted per customer-hour (SQLite reference and its resolver) equals the outbox.
    const resolver = customerResolver(db);
    const counted: Record<string, number> = {};
    for (const u of db.$client.prepare("select hour, sim_sid, bytes from usage_hourly").all() as {
      hour: number;
      sim_sid: string;
      bytes: number;
    }[]) {
      const c = resolver.resolve(u.sim_sid, u.hour);
      if (c === null || u.bytes === 0) continue;
      const k = `${c}@${new Date(u.hour).toISOString()}`;
      counted[k] = (counted[k] ?? 0) + u.bytes;
    }
    const outbox: Record<string, number> = {};
    for (const r of (
      await pool.query<{ customer_id: string; hour: number; value: number }>(
        `select customer_id, hour, sum(value)::bigint as value from meter_reports
          where state <> 'superseded' group by customer_id, hour`,
      )
    ).rows) {
      if (r.value !== 0) outbox[`${r.customer_id}@${new Date(r.hour).toISOString()}`] = r.value;
    }
    for (const k of Object.keys(counted)) if (counted[k] === 0) delete counted[k];
    expect(outbox).toEqual(counted);
    const dirty = await pool.query("select count(*) as n from report_dirty_hours");
    expect(dirty.rows[0].n).toBe(0);
    const rows = await pool.query("select count(*) as n from meter_reports");
    expect(rows.rows[0].n).toBeGreaterThan(Object.keys(counted).length);
    console.log(
      `concurrent planning: ${results.length} runs, ${rows.rows[0].n} outbox rows, ${Object.keys(counted).length} customer-hours`,
    );
    db.$client.close();
  });
});
