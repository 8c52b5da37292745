import { parse } from "csv-parse/sync";
import type Stripe from "stripe";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DAY_MS, dayStart, HOUR_MS, hourStart } from "../../src/accounting/buckets.ts";
import { stripeCliWorkspace } from "../helpers/cli.ts";
import { defaultSettings } from "../helpers/db.ts";
import { openTestLedger } from "../helpers/ledger.ts";
import { EVENT_NAME } from "../helpers/reporting.ts";
import { assignSimVia, sessionInHour } from "../helpers/seed.ts";

// `simmeter statement` and `simmeter reconcile --period` as real child processes, on a ledger of
// the test's backend (SIMMETER_TEST_BACKEND), against an in-process Stripe emulator on the real clock, each customer subscribed so that its current
// period (monthly, anchored 10 days ago) contains now.

const SIM_A = { sid: `HS${"a".repeat(32)}`, iccid: "89883070000005381783" };
const SIM_B = { sid: `HS${"b".repeat(32)}`, iccid: "89883070000005381791" };
const SIM_C = { sid: `HS${"c".repeat(32)}`, iccid: "89883070000005381809" };

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** stripeCliWorkspace with a ledger of the test's backend, whose env every `cli` call runs with */
async function workspace() {
  const w = await stripeCliWorkspace({
    dirPrefix: "simmeter-billing-cli-",
    redisPrefix: "bcli",
    emulator: { acceptAnyCustomer: true, autoSubscribe: false },
    cleanup: (close) => cleanups.push(close),
  });
  const t = await openTestLedger({ file: true, autoClose: false });
  cleanups.push(() => t.close());
  const cli: typeof w.cli = (args, extraEnv = {}) => w.cli(args, { ...t.env, ...extraEnv });
  const json = async <T>(args: string[]) => JSON.parse((await cli(args)).stdout) as T;
  return { ...w, t, env: { ...w.env, ...t.env }, cli, json };
}

/**
 * Two customers on monthly metered subscriptions anchored 10 days ago, with counted usage on two
 * UTC days: cus_alpha on SIM_A (both days) and SIM_B, cus_beta on SIM_C. Then `stripe setup`.
 */
async function billedWorkspace() {
  const w = await workspace();
  expect((await w.cli(["stripe", "setup"])).status).toBe(0);
  const now = Date.now();
  const anchor = hourStart(now) - 10 * DAY_MS;
  const price = w.emu.addPrice({ eventName: EVENT_NAME });
  for (const customer of ["cus_alpha", "cus_beta"])
    w.emu.addSubscription({ customer, price: price.id, anchor, startDate: anchor });
  const yesterday = dayStart(now) - 2 * HOUR_MS; // 22:00 yesterday
  const dayBefore = yesterday - DAY_MS;
  const usage = [
    { sim: SIM_A, hour: dayBefore, bytes: 4200 },
    { sim: SIM_A, hour: yesterday, bytes: 1000 },
    { sim: SIM_B, hour: yesterday, bytes: 777 },
    { sim: SIM_C, hour: yesterday, bytes: 5000 },
  ];
  for (const [sim, customer] of [
    [SIM_A, "cus_alpha"],
    [SIM_B, "cus_alpha"],
    [SIM_C, "cus_beta"],
  ] as const)
    await assignSimVia(w.t.ledger, { sim: sim.sid, customer, effectiveFrom: anchor, now });
  const events = usage.flatMap((u, n) =>
    sessionInHour(u.sim.sid, u.sim.iccid, n + 1, u.hour, u.bytes),
  );
  const s = await w.t.ledger.ingestJob(
    { v: 1, deliveries: [{ id: "seed", receivedAt: Date.now(), source: "replay", events }] },
    defaultSettings,
    Date.now,
  );
  expect(s.counted).toBe(events.length);
  const report = await w.cli(["report", "--json"]);
  expect(report.stderr).toBe("");
  expect(report.status).toBe(0);
  expect(JSON.parse(report.stdout)).toMatchObject({ planned: 3, sent: 3, failed: 0, held: 0 });
  return { ...w, anchor, yesterday, dayBefore };
}

async function previewQuantity(stripe: Stripe, customer: string): Promise<number> {
  const sub = (await stripe.subscriptions.list({ customer, limit: 10 })).data[0];
  if (!sub) throw new Error(`${customer} has no subscription`);
  const preview = await stripe.invoices.createPreview({ customer, subscription: sub.id });
  return preview.lines.data.reduce((s, l) => s + (l.quantity ?? 0), 0);
}

const csv = (text: string) => parse(text, { columns: true }) as Record<string, string>[];
const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);

type Billed = Awaited<ReturnType<typeof billedWorkspace>>;
type StatementJson = {
  customer: string;
  period_start: string;
  lines: { sim_sid: string; day: string | null; bytes: number }[];
  total: number;
  invoice_quantity: number;
  late_in: unknown[];
  carried_out: number;
  unreported: number;
};

// One workspace for the file: every command below only reads what `simmeter report` sent.
let w: Billed;
beforeAll(async () => {
  w = await billedWorkspace();
}, 60_000);

const COUNTED = { cus_alpha: 4200 + 1000 + 777, cus_beta: 5000 } as const;

describe("simmeter reconcile --period (CLI)", () => {
  it("reconcile --period current --json exits 0 after simmeter report, with difference 0 for every customer", async () => {
    const json = await w.cli(["reconcile", "--period", "current", "--json"]);
    expect(json.stderr).toBe("");
    expect(json.status).toBe(0);
    const rows = JSON.parse(json.stdout) as Record<string, unknown>[];
    expect(rows.map((r) => r.customer)).toEqual(["cus_alpha", "cus_beta"]);
    for (const [customer, counted] of Object.entries(COUNTED)) {
      expect(rows.find((r) => r.customer === customer)).toMatchObject({
        period_start: new Date(w.anchor).toISOString(),
        invoice_status: "preview",
        counted,
        late_in: 0,
        carried_out: 0,
        unreported: 0,
        reported: counted,
        invoice_quantity: counted,
        difference: 0,
        problem: null,
      });
      expect(await previewQuantity(w.stripe, customer)).toBe(counted);
    }
  });

  it("reconcile --period current --format csv prints a header and one row per customer", async () => {
    const r = await w.cli(["reconcile", "--period", "current", "--format", "csv"]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const [header, ...rest] = r.stdout.trimEnd().split("\n");
    expect(header?.split(",")).toEqual([
      "customer",
      "period_start",
      "period_end",
      "invoice",
      "invoice_status",
      "counted",
      "late_in",
      "carried_out",
      "unreported",
      "reported",
      "invoice_quantity",
      "difference",
      "problem",
    ]);
    expect(rest).toHaveLength(2);
    expect(
      csv(r.stdout).map((x) => [x.customer, x.counted, x.invoice_quantity, x.difference]),
    ).toEqual([
      ["cus_alpha", String(COUNTED.cus_alpha), String(COUNTED.cus_alpha), "0"],
      ["cus_beta", String(COUNTED.cus_beta), String(COUNTED.cus_beta), "0"],
    ]);
  });

  it("reconcile --period bogus exits non-zero and names the value", async () => {
    const r = await w.cli(["reconcile", "--period", "bogus"]);
    expect(r.status).not.toBe(0);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain('"bogus" is not a period');
  });
});

describe("simmeter statement (CLI)", () => {
  it("statement --period current --format csv prints one sim row per SIM and a total row equal to the preview quantity", async () => {
    const quantity = await previewQuantity(w.stripe, "cus_alpha");
    expect(quantity).toBe(COUNTED.cus_alpha);
    const r = await w.cli([
      "statement",
      "--customer",
      "cus_alpha",
      "--period",
      "current",
      "--format",
      "csv",
    ]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout.split("\n")[0]).toBe(
      "section,sim_sid,iccid,unique_name,fleet_sid,day,hour,bytes",
    );
    const lines = csv(r.stdout);
    expect(lines.map((l) => [l.section, l.sim_sid, l.iccid, l.bytes])).toEqual([
      ["sim", SIM_A.sid, SIM_A.iccid, "5200"],
      ["sim", SIM_B.sid, SIM_B.iccid, "777"],
      ["total", "", "", String(quantity)],
    ]);
  });

  it("statement --format json parses, with the SIM lines and a total equal to the invoice quantity", async () => {
    const r = await w.cli(["statement", "--customer", "cus_alpha", "--format", "json"]);
    expect(r.status).toBe(0);
    const s = JSON.parse(r.stdout) as StatementJson;
    expect(s).toMatchObject({
      customer: "cus_alpha",
      period_start: new Date(w.anchor).toISOString(),
      total: COUNTED.cus_alpha,
      invoice_quantity: COUNTED.cus_alpha,
      late_in: [],
      carried_out: 0,
      unreported: 0,
    });
    expect(s.lines.map((l) => [l.sim_sid, l.day, l.bytes])).toEqual([
      [SIM_A.sid, null, 5200],
      [SIM_B.sid, null, 777],
    ]);
  });

  it("statement --by day gives one row per SIM and UTC day", async () => {
    const json = await w.cli([
      "statement",
      "--customer",
      "cus_alpha",
      "--by",
      "day",
      "--format",
      "json",
    ]);
    expect(json.status).toBe(0);
    const daily = JSON.parse(json.stdout) as StatementJson;
    const expected = [
      [SIM_A.sid, day(w.dayBefore), 4200],
      [SIM_A.sid, day(w.yesterday), 1000],
      [SIM_B.sid, day(w.yesterday), 777],
    ];
    expect(daily.lines.map((l) => [l.sim_sid, l.day, l.bytes])).toEqual(expected);
    expect(daily.total).toBe(COUNTED.cus_alpha);
    const asCsv = await w.cli([
      "statement",
      "--customer",
      "cus_alpha",
      "--by",
      "day",
      "--format",
      "csv",
    ]);
    expect(asCsv.status).toBe(0);
    expect(
      csv(asCsv.stdout)
        .filter((l) => l.section === "sim")
        .map((l) => [l.sim_sid, l.day, Number(l.bytes)]),
    ).toEqual(expected);
  });

  it("statement for an unknown customer is refused, naming it", async () => {
    const r = await w.cli(["statement", "--customer", "cus_nobody", "--format", "csv"]);
    expect(r.status).not.toBe(0);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("cus_nobody is not a mapped customer");
  });
});
