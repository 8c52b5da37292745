// Customer assignments on PostgreSQL (src/ledger/pg/assignments.ts) against the SQLite reference
// (src/ledger/sqlite/assignments.ts): one set of step bodies (src/customers/customers.ts), two
// adapters, both with their real migrations. (a) The same ingested usage, then the same list,
// previews, assigns (unmapped usage billed, a refusal, a --rebill), ICCID and fleet targets and
// CSV imports (valid, bad rows, unchanged rows, a refused re-bill, a re-bill) through both
// adapters give the same answers and leave the same tables; planning after each step gives the
// same outbox. (b) Concurrent assigns on one PostgreSQL ledger are serial (one refusal decided
// against the other's commit) and the assignment watermark misses none of them while planners run.
import type pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import type { CustomerBilling } from "../../src/billing/periods.ts";
import {
  type AssignInput,
  assignCustomer,
  customerResolver,
  importCustomersCsv,
  previewMoves,
  RebillRequired,
  unmappedUsage,
} from "../../src/customers/customers.ts";
import { type Db, openDb } from "../../src/db/client.ts";
import { createPool } from "../../src/db/pg/client.ts";
import type { Delivery, IngestJobData } from "../../src/ingest/job.ts";
import type { IngestSettings } from "../../src/ingest/unit-of-work.ts";
import { pgLedger } from "../../src/ledger/pg/index.ts";
import type { Ledger } from "../../src/ledger/port.ts";
import { sqliteLedger } from "../../src/ledger/sqlite/index.ts";
import type { PlanResult } from "../../src/reporting/outbox.ts";
import { ASSIGNMENT_MARK } from "../../src/reporting/plan-steps.ts";
import { Rng, simulateFleet } from "../../src/simulate/fleet.ts";
import { assignmentList } from "../../src/views/customers.ts";
import { createTestDatabase } from "../helpers/pg.ts";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const FROM = Date.UTC(2025, 4, 6, 20, 0, 0);
const TO = FROM + 6 * HOUR;
const NOW = TO + 2 * HOUR;
const SETTINGS = { graceSeconds: 3600 };

const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

async function pgPool(max = 4): Promise<{ pool: pg.Pool; url: string }> {
  const db = await createTestDatabase();
  cleanup.push(db.drop);
  const pool = createPool(db.url, { role: "test", max });
  cleanup.push(() => pool.end());
  return { pool, url: db.url };
}

const ingestSettings: IngestSettings = {
  billingMode: "realtime",
  attribution: "end",
  retentionDays: 100_000,
  maxBytesPerSecond: 250_000_000,
};

/** a fleet's events in jobs of 1 to 12 events (fleets as the simulator lays them out) */
function fleetJobs(seed: number, sims: number): IngestJobData[] {
  const sim = simulateFleet({
    seed,
    customers: 3,
    sims,
    from: FROM,
    to: TO,
    billingMode: "realtime",
  });
  const events = [...sim.events] as unknown[];
  const rng = new Rng(seed, 5);
  const jobs: IngestJobData[] = [];
  for (let i = 0, n = 0; i < events.length; n++) {
    const size = rng.int(1, 12);
    const d: Delivery = {
      id: `a${seed}-d${n}`,
      receivedAt: FROM + n * 1000,
      source: "twilio",
      events: events.slice(i, i + size),
    };
    i += size;
    jobs.push({ v: 1, deliveries: [d] });
  }
  return jobs;
}

const billing = (customerId: string): CustomerBilling => ({
  customerId,
  state: "ok",
  detail: null,
  subscriptionId: `sub_${customerId}`,
  itemId: `si_${customerId}`,
  priceId: "price_1",
  periodStart: FROM - 10 * DAY,
  periodEnd: NOW + 20 * DAY,
  previous: null,
  refreshedAt: NOW,
});

// --- the two ledgers side by side ------------------------------------------------------------

type Pair = { db: Db; sqlite: Ledger; pool: pg.Pool; pg: Ledger };

async function pair(): Promise<Pair> {
  const db = openDb(":memory:");
  const { pool, url } = await pgPool();
  return { db, sqlite: sqliteLedger(db), pool, pg: pgLedger(pool, url) };
}

type Outcome<T> =
  | { ok: true; value: T }
  | { ok: false; name: string; message: string; moves?: unknown };

async function outcome<T>(p: Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await p };
  } catch (err) {
    const e = err as Error & { moves?: unknown };
    return {
      ok: false,
      name: e.name,
      message: e.message,
      ...(e instanceof RebillRequired ? { moves: e.moves } : {}),
    };
  }
}

/** the same call through both adapters: the same answer (or the same error) */
async function both<T>(p: Pair, label: string, f: (l: Ledger) => Promise<T>): Promise<Outcome<T>> {
  const want = await outcome(f(p.sqlite));
  const got = await outcome(f(p.pg));
  expect(got, label).toEqual(want);
  return want;
}

type Row = Record<string, unknown>;
const TABLES: Record<string, string> = {
  assignments: "id, target_type, target_id, customer_id, effective_from, created_at",
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

async function expectSameTables(p: Pair, label: string): Promise<Record<string, Row[]>> {
  const sqlite: Record<string, Row[]> = {};
  for (const [t, cols] of Object.entries(TABLES)) {
    sqlite[t] = normalise(p.db.$client.prepare(`select ${cols} from ${t}`).all() as Row[]);
    const pgRows = normalise((await p.pool.query(`select ${cols} from ${t}`)).rows);
    expect(pgRows, `${label}: ${t}`).toEqual(sqlite[t]);
  }
  return sqlite;
}

/** planning on both: the same result, the same tables */
async function planBoth(p: Pair, label: string): Promise<PlanResult> {
  const r = await both(p, `${label}: plan`, (l) =>
    l.plan({ now: NOW, settings: SETTINGS, chunkRows: 25 }),
  );
  if (!r.ok) throw new Error(`${label}: ${r.message}`);
  await expectSameTables(p, `${label}: after planning`);
  return r.value;
}

const pendingSum = (tables: Record<string, Row[]>, customer: string) =>
  (tables.meter_reports ?? [])
    .filter((r) => r.customer_id === customer && r.state === "pending")
    .reduce((s, r) => s + Number(r.value), 0);

// --- (a) differential ------------------------------------------------------------------------

describe("the assignments port on PostgreSQL equals SQLite's", () => {
  it("list, previews, assigns (refused, --rebill), ICCID and fleet targets and imports, with planning after each", async () => {
    const p = await pair();
    for (const job of fleetJobs(17, 10)) {
      const want = await p.sqlite.ingestJob(job, ingestSettings, () => NOW);
      const got = await p.pg.ingestJob(job, ingestSettings, () => NOW);
      expect(got).toEqual(want);
    }
    const customers = ["cus_a", "cus_b", "cus_c", "cus_d", "cus_e"];
    await p.sqlite.billing.store(customers.map(billing));
    await p.pg.billing.store(customers.map(billing));

    const sims = p.db.$client
      .prepare("select sim_sid, iccid, fleet_sid from sims order by sim_sid")
      .all() as { sim_sid: string; iccid: string; fleet_sid: string }[];
    const fleets = [...new Set(sims.map((s) => s.fleet_sid))].sort();
    expect(sims.length).toBeGreaterThanOrEqual(8);
    expect(fleets.length).toBeGreaterThanOrEqual(2);
    const [f0, f1] = fleets as [string, string];
    const inF0 = sims.filter((s) => s.fleet_sid === f0);
    const inF1 = sims.filter((s) => s.fleet_sid === f1);
    expect(inF0.length).toBeGreaterThanOrEqual(2);
    expect(inF1.length).toBeGreaterThanOrEqual(2);
    const simA = inF0[0] as { sim_sid: string; iccid: string };
    const simB = inF1[0] as { sim_sid: string; iccid: string };
    const page = { limit: 100 };

    expect(await both(p, "empty list", (l) => l.assignments.list())).toEqual({
      ok: true,
      value: [],
    });
    await expectSameTables(p, "before any assignment");

    // A preview of the first fleet assignment: nothing moves, its SIMs' usage gets billed.
    const fleetA: AssignInput = {
      targetType: "fleet",
      targetId: f0,
      customerId: "cus_a",
      effectiveFrom: FROM,
    };
    const preview = await both(p, "preview a fleet", (l) => l.assignments.preview([fleetA], NOW));
    expect(preview).toMatchObject({ ok: true, value: { moves: [] } });
    expect(preview.ok && preview.value.unmappedBilled).toBeGreaterThan(0);
    expect(
      await both(p, "previewMoves", (l) =>
        previewMoves(l, [fleetA, { ...fleetA, customerId: "cus_b" }], NOW),
      ),
    ).toEqual({ ok: true, value: [] });
    await expectSameTables(p, "a preview writes nothing");

    // unmappedBilled is what the unmapped total (unmappedUsage, all SIMs) loses by the change.
    const unmappedTotal = () => unmappedUsage(p.db).reduce((n, u) => n + u.bytes, 0);
    const unmappedBefore = unmappedTotal();
    const a1 = await both(p, "assign a fleet", (l) =>
      assignCustomer({ ledger: l, input: fleetA, now: NOW }),
    );
    expect(a1).toMatchObject({
      ok: true,
      value: {
        assignment: { id: 1, targetType: "fleet", targetId: f0, customerId: "cus_a" },
        moves: [],
      },
    });
    expect(a1.ok && a1.value.unmappedBilled).toBe(preview.ok && preview.value.unmappedBilled);
    expect(a1.ok && a1.value.unmappedBilled).toBe(unmappedBefore - unmappedTotal());
    const first = await planBoth(p, "after the fleet assignment");
    expect(first.rows.length).toBeGreaterThan(0);

    // A SIM of that fleet to another customer from an hour with usage: refused without --rebill,
    // naming what would move; nothing written.
    const simToB: AssignInput = {
      targetType: "sim",
      targetId: simA.sim_sid,
      customerId: "cus_b",
      effectiveFrom: FROM + 2 * HOUR + 20 * 60_000,
    };
    const movePreview = await both(p, "preview a move", (l) =>
      l.assignments.preview([simToB], NOW),
    );
    expect(movePreview.ok && movePreview.value.moves.length).toBeGreaterThan(0);
    const refused = await both(p, "refused", (l) =>
      assignCustomer({ ledger: l, input: simToB, now: NOW }),
    );
    expect(refused).toMatchObject({ ok: false, name: "RebillRequired" });
    expect(!refused.ok && refused.message).toMatch(/would move \d+ counted bytes in \d+ SIM-hour/);
    expect(!refused.ok && refused.moves).toEqual(movePreview.ok && movePreview.value.moves);
    await expectSameTables(p, "a refusal writes nothing");
    const invalid = await both(p, "invalid", (l) =>
      assignCustomer({ ledger: l, input: { ...simToB, customerId: "cust_x" }, now: NOW }),
    );
    expect(invalid).toMatchObject({ ok: false, name: "InputError" });

    const rebilled = await both(p, "rebill", (l) =>
      assignCustomer({ ledger: l, input: simToB, now: NOW, rebill: true }),
    );
    expect(rebilled.ok && rebilled.value.moves).toEqual(movePreview.ok && movePreview.value.moves);
    const afterRebill = await planBoth(p, "after the re-bill");
    // The old customer gets negative corrections, the new one the bytes.
    expect(afterRebill.rows.some((r) => r.customerId === "cus_a" && r.value < 0)).toBe(true);
    expect(afterRebill.rows.some((r) => r.customerId === "cus_b" && r.value > 0)).toBe(true);

    // An ICCID (unmapped SIM of the second fleet), then the second fleet itself.
    await both(p, "assign an ICCID", (l) =>
      assignCustomer({
        ledger: l,
        input: {
          targetType: "iccid",
          targetId: simB.iccid,
          customerId: "cus_c",
          effectiveFrom: FROM - DAY,
        },
        now: NOW,
      }),
    );
    await both(p, "assign the second fleet", (l) =>
      assignCustomer({
        ledger: l,
        input: { targetType: "fleet", targetId: f1, customerId: "cus_d", effectiveFrom: FROM },
        now: NOW,
      }),
    );
    await planBoth(p, "after the ICCID and the second fleet");

    // Imports: bad rows (nothing imported), then a valid file holding rows already in effect.
    const bad = `sim_sid,stripe_customer_id,effective_from\nHSnope,cus_e,\n${simA.sim_sid},bad,\n${simB.sim_sid},cus_e,2025-13-01\n`;
    const badImport = await both(p, "import with bad rows", (l) =>
      importCustomersCsv({ ledger: l, csv: bad, now: NOW }),
    );
    expect(badImport.ok && badImport.value.errors.map((e) => e.line)).toEqual([2, 3, 4]);
    await expectSameTables(p, "a refused import writes nothing");

    const simsOfF1 = inF1.map((s) => s.sim_sid);
    const fleetCsv = (customer: string, at: string) =>
      `fleet_sid,stripe_customer_id,effective_from\n${f0},cus_a,${new Date(FROM).toISOString()}\n${f1},${customer},${at}\n`;
    const unchanged = await both(p, "import of rows in effect", (l) =>
      importCustomersCsv({
        ledger: l,
        csv: fleetCsv("cus_d", new Date(FROM).toISOString()),
        now: NOW,
      }),
    );
    expect(unchanged).toMatchObject({ ok: true, value: { imported: 0, unchanged: 2 } });

    // Moving the second fleet to cus_e from an hour with usage: refused in the result, then
    // imported with rebill (the ICCID assignment keeps simB with cus_c).
    const moveAt = new Date(FROM + 3 * HOUR).toISOString();
    const refusedImport = await both(p, "import refused", (l) =>
      importCustomersCsv({ ledger: l, csv: fleetCsv("cus_e", moveAt), now: NOW }),
    );
    expect(refusedImport).toMatchObject({ ok: true, value: { imported: 0, unchanged: 0 } });
    expect(refusedImport.ok && refusedImport.value.errors[0]?.message).toMatch(
      /would move .* --rebill/s,
    );
    expect(refusedImport.ok && refusedImport.value.moves.length).toBeGreaterThan(0);
    expect(
      refusedImport.ok &&
        refusedImport.value.moves.every((m) => simsOfF1.includes(m.simSid) && m.to === "cus_e"),
    ).toBe(true);
    await expectSameTables(p, "a refused re-bill import writes nothing");
    const imported = await both(p, "import with rebill", (l) =>
      importCustomersCsv({ ledger: l, csv: fleetCsv("cus_e", moveAt), now: NOW, rebill: true }),
    );
    expect(imported).toMatchObject({ ok: true, value: { imported: 1, unchanged: 1, errors: [] } });
    const tablesBefore = await expectSameTables(p, "after the import");
    expect(tablesBefore.assignments).toHaveLength(5);
    await planBoth(p, "after the import");

    const lists = await both(p, "list", (l) => l.assignments.list());
    expect(lists.ok && lists.value.map((a) => a.targetType)).toEqual([
      "fleet",
      "fleet",
      "fleet",
      "iccid",
      "sim",
    ]);
    await both(p, "the view", (l) => assignmentList(l, page));

    // The outbox bills every SIM-hour to the customer the resolver names now, on both.
    const tables = await expectSameTables(p, "at the end");
    const resolver = customerResolver(p.db);
    const owed = new Map<string, number>();
    for (const u of p.db.$client.prepare("select hour, sim_sid, bytes from usage_hourly").all() as {
      hour: number;
      sim_sid: string;
      bytes: number;
    }[]) {
      const c = resolver.resolve(u.sim_sid, u.hour);
      if (c !== null) owed.set(c, (owed.get(c) ?? 0) + u.bytes);
    }
    for (const c of customers) expect(pendingSum(tables, c), c).toBe(owed.get(c) ?? 0);
    expect(tables.meta).toContainEqual({ key: ASSIGNMENT_MARK, value: 5 });
    p.db.$client.close();
  });
});

// --- (b) concurrency -------------------------------------------------------------------------

describe("assignment writers on one PostgreSQL ledger", () => {
  async function ledgerWithUsage(sims: number) {
    const { pool, url } = await pgPool(4);
    const ledger = pgLedger(pool, url);
    for (const job of fleetJobs(23, sims)) await ledger.ingestJob(job, ingestSettings, () => NOW);
    const ids = (
      await pool.query<{ sim_sid: string }>(
        `select distinct sim_sid collate "C" as sim_sid from usage_hourly where bytes <> 0 order by 1`,
      )
    ).rows.map((r) => r.sim_sid);
    const ledgers = Array.from({ length: 4 }, (_, i) => {
      const p = createPool(url, { role: `test-assign-${i}`, max: 1 });
      cleanup.push(() => p.end());
      return pgLedger(p, url);
    });
    return { pool, url, ledger, ids, ledgers };
  }

  it("are serial: of four assigns of one SIM to four customers at once, one is made and three are refused against it", async () => {
    const { pool, ids, ledgers } = await ledgerWithUsage(6);
    for (const sim of ids.slice(0, 3)) {
      const results = await Promise.all(
        ledgers.map((l, i) =>
          outcome(
            assignCustomer({
              ledger: l,
              input: {
                targetType: "sim",
                targetId: sim,
                customerId: `cus_${i}`,
                effectiveFrom: FROM - DAY,
              },
              now: NOW,
            }),
          ),
        ),
      );
      const made = results.filter((r) => r.ok);
      const refused = results.filter((r) => !r.ok);
      expect(made, sim).toHaveLength(1);
      expect(refused.map((r) => !r.ok && r.name)).toEqual([
        "RebillRequired",
        "RebillRequired",
        "RebillRequired",
      ]);
      const winner = made[0]?.ok ? made[0].value.assignment.customerId : "";
      // Each refusal names the winner's hours as the ones that would move from it.
      for (const r of refused)
        if (!r.ok)
          expect((r.moves as { from: string }[]).every((m) => m.from === winner)).toBe(true);
    }
    const n = await pool.query("select count(*)::int as n from assignments");
    expect(n.rows[0].n).toBe(3);
  });

  it("keeps the watermark right: assigns from four clients while planners run, and every assignment's usage is planned", async () => {
    const { pool, url, ledger, ids, ledgers } = await ledgerWithUsage(16);
    expect(ids.length).toBeGreaterThanOrEqual(12);
    const customerOf = new Map(ids.map((s, i) => [s, `cus_w${i}`]));
    await ledger.billing.store([...customerOf.values()].map(billing));
    const queue = [...ids];
    let assigning = true;
    const plans: PlanResult[] = [];
    const planners = Array.from({ length: 2 }, (_, i) => {
      const p = createPool(url, { role: `test-planner-${i}`, max: 1 });
      cleanup.push(() => p.end());
      return pgLedger(p, url);
    });
    const planLoop = async (l: Ledger) => {
      while (assigning) plans.push(await l.plan({ now: NOW, settings: SETTINGS, chunkRows: 10 }));
    };
    const assignAll = Promise.all(
      ledgers.map(async (l) => {
        for (let sim = queue.shift(); sim; sim = queue.shift())
          await assignCustomer({
            ledger: l,
            input: {
              targetType: "sim",
              targetId: sim,
              customerId: customerOf.get(sim) as string,
              effectiveFrom: FROM - DAY,
            },
            now: NOW,
          });
      }),
    ).finally(() => {
      assigning = false;
    });
    await Promise.all([assignAll, ...planners.map(planLoop)]);
    expect(plans.length).toBeGreaterThan(0);
    plans.push(await ledger.plan({ now: NOW, settings: SETTINGS, chunkRows: 10 }));

    const maxId = await pool.query<{ id: number }>("select max(id) as id from assignments");
    expect(maxId.rows[0]?.id).toBe(ids.length);
    const mark = await pool.query<{ value: number }>("select value from meta where key = $1", [
      ASSIGNMENT_MARK,
    ]);
    expect(mark.rows[0]?.value).toBe(ids.length);
    // Every SIM's usage is in the outbox for its customer: no assignment was passed over.
    const usage = await pool.query<{ sim_sid: string; bytes: number }>(
      "select sim_sid, sum(bytes)::bigint as bytes from usage_hourly group by sim_sid",
    );
    const pending = await pool.query<{ customer_id: string; value: number }>(
      `select customer_id, sum(value)::bigint as value from meter_reports
        where state = 'pending' group by customer_id`,
    );
    const got = Object.fromEntries(pending.rows.map((r) => [r.customer_id, r.value]));
    const want = Object.fromEntries(
      usage.rows
        .filter((r) => r.bytes !== 0)
        .map((r) => [customerOf.get(r.sim_sid) as string, r.bytes]),
    );
    expect(got).toEqual(want);
    const dirty = await pool.query("select count(*)::int as n from report_dirty_hours");
    expect(dirty.rows[0].n).toBe(0);
  });
});
