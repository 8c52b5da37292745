// Issue 11's acceptance: a ledger built the way the product builds one (the simulator's fleet
// through the real ingest, customers assigned, `simmeter report` sending to the Stripe emulator)
// is copied by `simmeter migrate-ledger` into PostgreSQL, and `simmeter reconcile` on the copy
// shows 0 difference, with the same documents as on the SQLite original: reconcile, reconcile
// --period, statement, report --status and --dry-run. Then reconcile --repair on PostgreSQL
// corrects a tampered outbox. The BUILT CLI runs (`npm run build` first), nothing mocked.
import { randomUUID } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DAY_MS, HOUR_MS, hourStart } from "../../src/accounting/buckets.ts";
import { openDb } from "../../src/db/client.ts";
import { ingestDeliveries, prepareIngest } from "../../src/ingest/ingest.ts";
import { simulateFleet } from "../../src/simulate/fleet.ts";
import { type StripeCliWorkspace, stripeCliWorkspace } from "../helpers/cli.ts";
import { defaultSettings } from "../helpers/db.ts";
import { createTestDatabase } from "../helpers/pg.ts";
import { EVENT_NAME } from "../helpers/reporting.ts";

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

type DriftJson = {
  customer: string;
  counted: number;
  reported: number;
  pending: number;
  stripe: number | null;
  unreported: number;
  stripe_drift: number | null;
};

let w: StripeCliWorkspace;
let pgEnv: Record<string, string | undefined>;
let pgUrl: string;
let customers: string[];
let truthBytes: Record<string, number>;

/** the same command on the SQLite original and on the PostgreSQL copy */
const both = (args: string[]) => Promise.all([w.cli(args), w.cli(args, pgEnv)]);

/** an invoice preview gets a new id on every call: compared by its form, the rest exactly */
function withoutPreviewId(doc: Record<string, unknown>): Record<string, unknown> {
  expect(doc.invoice).toMatch(/^upcoming_in_/);
  return { ...doc, invoice: "upcoming_in_…" };
}

/** stderr without the build-staleness warning (others may edit src/ while this runs) */
const errOf = (stderr: string) =>
  stderr
    .split("\n")
    .filter((l) => !l.includes("dist/ is older than src/"))
    .join("\n")
    .trim();

beforeAll(async () => {
  w = await stripeCliWorkspace({
    dirPrefix: "simmeter-pg-reconcile-",
    redisPrefix: "pgrec",
    emulator: { acceptAnyCustomer: true, autoSubscribe: false },
    cleanup: (close) => cleanups.push(close),
  });
  expect((await w.cli(["stripe", "setup"])).status).toBe(0);
  const now = Date.now();
  const to = hourStart(now) - 2 * HOUR_MS;
  const sim = simulateFleet({
    seed: 23,
    customers: 3,
    sims: 30,
    from: to - 2 * DAY_MS,
    to,
    perturb: { duplicateRate: 0.05, reorder: true },
  });
  const events = [...sim.events];
  const truth = sim.truth();
  customers = [...new Set(Object.values(truth.customers))].sort();
  truthBytes = Object.fromEntries(
    [...truth.customerHour].map(([c, hours]) => [
      c,
      [...hours.values()].reduce((a, b) => a + b, 0),
    ]),
  );
  const anchor = hourStart(now) - 10 * DAY_MS;
  const price = w.emu.addPrice({ eventName: EVENT_NAME });
  for (const customer of customers)
    w.emu.addSubscription({ customer, price: price.id, anchor, startDate: anchor });

  const db = openDb(w.dbPath);
  try {
    // Every fleet, and every SIM (some have no fleet), assigned from the beginning: the rows
    // `simmeter customers assign` writes.
    const assign = db.$client.prepare(
      "insert into assignments (target_type, target_id, customer_id, effective_from, created_at) values (?, ?, ?, 0, ?)",
    );
    for (const [fleetSid, customerId] of Object.entries(truth.fleets))
      assign.run("fleet", fleetSid, customerId, now);
    for (const [simSid, customerId] of Object.entries(truth.customers))
      assign.run("sim", simSid, customerId, now);
    const ctx = { db, stmts: prepareIngest(db), settings: defaultSettings, now: () => now };
    for (let i = 0; i < events.length; i += 500)
      ingestDeliveries(ctx, {
        v: 1,
        deliveries: [
          { id: `d${i}`, receivedAt: now, source: "replay", events: events.slice(i, i + 500) },
        ],
      });
  } finally {
    db.$client.close();
  }
  const report = await w.cli(["report", "--json"]);
  expect(errOf(report.stderr)).toBe("");
  expect(report.status).toBe(0);
  expect(JSON.parse(report.stdout)).toMatchObject({ failed: 0, held: 0, still_pending: 0 });

  const target = await createTestDatabase({ empty: true });
  cleanups.push(target.drop);
  pgUrl = target.url;
  const copy = await w.cli(["migrate-ledger", "--from", `sqlite:${w.dbPath}`, "--to", pgUrl]);
  expect(errOf(copy.stderr)).not.toMatch(/error|refus/i);
  expect(copy.status).toBe(0);
  pgEnv = { DATABASE_PATH: undefined, DATABASE_URL: pgUrl };
}, 180_000);

describe("simmeter reconcile on a ledger migrated to PostgreSQL", () => {
  it("shows 0 difference for every customer, the same rows as on the SQLite original", async () => {
    const [lite, post] = await both(["reconcile", "--json"]);
    expect(errOf(post.stderr)).toBe("");
    expect(post.status).toBe(0);
    expect(lite.status).toBe(0);
    const rows = JSON.parse(post.stdout) as DriftJson[];
    expect(rows.map((r) => r.customer)).toEqual(customers);
    for (const r of rows) {
      expect(r.counted).toBeGreaterThan(0);
      expect(r.counted).toBe(truthBytes[r.customer]);
      expect(r).toMatchObject({ unreported: 0, stripe_drift: 0, pending: 0 });
      expect(r.reported).toBe(r.counted);
      expect(r.stripe).toBe(r.counted);
      expect(w.emu.totalsByCustomer(EVENT_NAME).get(r.customer)).toBe(r.counted);
    }
    expect(rows).toEqual(JSON.parse(lite.stdout));
  });

  it("reconcile --period current: invoice parity with difference 0, as on SQLite", async () => {
    const [lite, post] = await both(["reconcile", "--period", "current", "--json"]);
    expect(errOf(post.stderr)).toBe("");
    expect(post.status).toBe(0);
    const rows = JSON.parse(post.stdout) as Record<string, unknown>[];
    expect(rows.map((r) => r.customer)).toEqual(customers);
    for (const r of rows) expect(r).toMatchObject({ difference: 0, unreported: 0, problem: null });
    expect(rows.map(withoutPreviewId)).toEqual(
      (JSON.parse(lite.stdout) as Record<string, unknown>[]).map(withoutPreviewId),
    );
  });

  it("statement --by day: the same per-SIM lines and total, equal to the invoice quantity", async () => {
    for (const customer of customers) {
      const args = ["statement", "--customer", customer, "--by", "day", "--format", "json"];
      const [lite, post] = await both(args);
      expect(errOf(post.stderr)).toBe("");
      expect(post.status).toBe(0);
      const s = JSON.parse(post.stdout) as {
        lines: unknown[];
        total: number;
        invoice_quantity: number;
      };
      expect(s.lines.length).toBeGreaterThan(0);
      expect(s.total).toBe(s.invoice_quantity);
      expect(withoutPreviewId(s)).toEqual(withoutPreviewId(JSON.parse(lite.stdout)));
    }
  });

  it("report --status and report --dry-run print the same documents", async () => {
    const [liteStatus, pgStatus] = await both(["report", "--status", "--json"]);
    expect(pgStatus.status).toBe(0);
    expect(JSON.parse(pgStatus.stdout)).toEqual(JSON.parse(liteStatus.stdout));
    const [liteDry, pgDry] = await both(["report", "--dry-run", "--json"]);
    expect(pgDry.status).toBe(0);
    expect(JSON.parse(pgDry.stdout)).toEqual([]);
    expect(pgDry.stdout).toBe(liteDry.stdout);
  });

  it("reconcile --repair on PostgreSQL records what Stripe holds after an outbox lost a correction", async () => {
    // A restored backup's kind of damage: one sent row says 1,000 bytes more than Stripe holds.
    const pool = new pg.Pool({ connectionString: pgUrl, max: 1 });
    cleanups.push(() => pool.end());
    const victim = customers[0] as string;
    const tampered = await pool.query<{ identifier: string }>(
      `update meter_reports set value = value + 1000
        where identifier = (select identifier from meter_reports
                             where customer_id = $1 and state = 'sent' and kind = 'usage'
                             order by hour limit 1)
        returning identifier`,
      [victim],
    );
    expect(tampered.rowCount).toBe(1);
    const drift = await w.cli(["reconcile", "--json"], pgEnv);
    expect(drift.status).toBe(1);
    const row = (JSON.parse(drift.stdout) as DriftJson[]).find((r) => r.customer === victim);
    expect(row).toMatchObject({ unreported: -1000, stripe_drift: 1000 });

    const repair = await w.cli(["reconcile", "--repair", "--settle-minutes", "0", "--json"], {
      ...pgEnv,
      REDIS_PREFIX: `pgrec-repair-${randomUUID().slice(0, 8)}`,
    });
    expect(errOf(repair.stderr)).toBe("");
    expect(repair.status).toBe(0);
    const out = JSON.parse(repair.stdout) as {
      differences: { customer: string; difference: number }[];
      report: { sent: number };
    };
    expect(out.differences).toEqual([
      expect.objectContaining({ customer: victim, difference: -1000 }),
    ]);
    // counted − held is 0 again: nothing more to send
    expect(out.report.sent).toBe(0);
    const observed = await pool.query<{ value: number; state: string }>(
      "select value, state from meter_reports where kind = 'observed'",
    );
    expect(observed.rows).toEqual([{ value: -1000, state: "sent" }]);
    const after = await w.cli(["reconcile", "--json"], pgEnv);
    expect(errOf(after.stderr)).toBe("");
    expect(after.status).toBe(0);
    for (const r of JSON.parse(after.stdout) as DriftJson[])
      expect(r).toMatchObject({ unreported: 0, stripe_drift: 0 });
  });
});
