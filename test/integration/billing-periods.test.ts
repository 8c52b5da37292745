import { rmSync } from "node:fs";
import { createServer, type IncomingMessage, request } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import pg from "pg";
import type Stripe from "stripe";
import { afterEach, describe, expect, inject, it } from "vitest";
import type { Attribution } from "../../src/accounting/attribute.ts";
import { invoiceParity, parityProblem, statement } from "../../src/billing/parity.ts";
import { refreshBilling } from "../../src/billing/subscriptions.ts";
import { assignCustomer } from "../../src/customers/customers.ts";
import { openDb } from "../../src/db/client.ts";
import { createPool } from "../../src/db/pg/client.ts";
import { pgLedger } from "../../src/ledger/pg/index.ts";
import type { Ledger } from "../../src/ledger/port.ts";
import { sqliteLedger } from "../../src/ledger/sqlite/index.ts";
import { createLogger } from "../../src/lib/logger.ts";
import { runReport } from "../../src/reporting/reporter.ts";
import { createStripe } from "../../src/reporting/stripe.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import type { TestLedger } from "../helpers/ledger.ts";
import { waitFor } from "../helpers/process.ts";
import { countedUsage, EVENT_NAME, type ReportingRig, reportingRig } from "../helpers/reporting.ts";

// Usage billed by each customer's own subscription period, end to end: the reporter, the outbox,
// the Stripe emulator's cycle invoices (drafts that freeze at finalization) and previews, all
// through the real SDK, with one injectable clock (docs/adr/0006-billing-by-the-subscription-period.md).

const ACCOUNT = "ACe7ea554f7fc0fad65e689bb5899bb6c3";
type Sim = { sid: string; iccid: string };
const SIM_A: Sim = { sid: `HS${"a".repeat(32)}`, iccid: "89883070000005381783" };
const SIM_B: Sim = { sid: `HS${"b".repeat(32)}`, iccid: "89883070000005381791" };
const SIMS: Sim[] = Array.from({ length: 6 }, (_, i) => ({
  sid: `HS${(0xc0 + i).toString(16).padStart(32, "0")}`,
  iccid: `898830700000053817${(10 + i).toString()}`,
}));

const T = (iso: string) => Date.parse(iso);
const S = (iso: string) => Date.parse(iso) / 1000;
const iso = (ms: number) => new Date(ms).toISOString();
const hex32 = (n: number) => n.toString(16).padStart(32, "0");

let sessionSeq = 0;
/** One data session: readings (ISO time, cumulative bytes) in time order; the last one ends it. */
function session(sim: Sim, start: string, readings: [string, number][]) {
  const n = ++sessionSeq;
  return readings.map(([t, c], i) =>
    buildCloudEvent({
      eventSid: `EZ${hex32(n * 256 + i)}`,
      kind: i === readings.length - 1 ? "data-session.ended" : "data-session.updated",
      accountSid: ACCOUNT,
      simSid: sim.sid,
      iccid: sim.iccid,
      timestampMs: T(t),
      sessionSid: `PI${hex32(n)}`,
      sessionStartMs: T(start),
      windowStartMs: T(start),
      windowEndMs: T(t),
      windowDown: 0,
      cumulativeDown: c,
      ...(i === readings.length - 1 ? { sessionEndMs: T(t) } : {}),
    }),
  );
}

const cleanups: (() => Promise<void> | void)[] = [];
let rig: ReportingRig | undefined;
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await rig?.close();
  rig = undefined;
});

async function assign(r: ReportingRig, sim: Sim, customerId: string, from: number) {
  await assignCustomer({
    ledger: r.ledger,
    now: r.now.value,
    input: { targetType: "sim", targetId: sim.sid, customerId, effectiveFrom: from },
  });
}

/** Subscribes the customer to a new metered price on the rig's meter. */
function subscribe(
  r: ReportingRig,
  customer: string,
  o: { anchor: string; startDate: string; interval?: "day" | "month" },
) {
  const price = r.emu.addPrice({ eventName: EVENT_NAME, interval: o.interval ?? "month" });
  return r.emu.addSubscription({
    customer,
    price: price.id,
    anchor: T(o.anchor),
    startDate: T(o.startDate),
  });
}

type Row = {
  identifier: string;
  customer_id: string;
  hour: number;
  seq: number;
  value: number;
  timestamp: number;
  late: number;
  state: string;
  attempts: number;
};
/** every outbox row, through raw SQL on either backend (the rig's ledger unless another's `sql`) */
const rowsOf = (from: { sql: TestLedger["sql"] }) =>
  from.sql<Row>("select * from meter_reports order by hour, customer_id, seq");

/** Bytes counted for a customer over all time. */
async function countedTotal(r: ReportingRig, customer: string): Promise<number> {
  const m = (await countedUsage(r.ledger))[customer] ?? {};
  return Object.values(m).reduce((s, v) => s + v, 0);
}

async function subscriptionOf(stripe: Stripe, customer: string): Promise<string> {
  const subs = await stripe.subscriptions.list({ customer, status: "all", limit: 100 });
  const sub = subs.data[0];
  if (!sub || subs.data.length !== 1) throw new Error(`${customer}: not exactly one subscription`);
  return sub.id;
}

async function previewQuantity(stripe: Stripe, customer: string): Promise<number> {
  const preview = await stripe.invoices.createPreview({
    customer,
    subscription: await subscriptionOf(stripe, customer),
  });
  return preview.lines.data.reduce((s, l) => s + (l.quantity ?? 0), 0);
}

/** What the customer is billed in all: every cycle invoice (finalized or draft) plus the preview. */
async function billedTotal(r: ReportingRig, customer: string): Promise<number> {
  const invoiced = r.emu
    .invoices({ customer })
    .flatMap((i) => i.lines.data)
    .reduce((s, l) => s + l.quantity, 0);
  return invoiced + (await previewQuantity(r.stripe, customer));
}

async function billingOf(r: ReportingRig, customer: string) {
  const billing = await refreshBilling({
    ledger: r.ledger,
    stripe: r.stripe,
    eventName: EVENT_NAME,
    now: r.now.value,
  });
  const b = billing.get(customer);
  if (!b) throw new Error(`no billing state for ${customer}`);
  return b;
}

type PeriodExpectation = {
  start: string;
  end: string;
  counted: number;
  lateIn: number;
  carriedOut: number;
  /** bytes per SIM counted in the period's hours */
  sims: Record<string, number>;
};

/**
 * Invoice parity and statements for the previous (finalized) and the current (preview) period:
 * difference 0 and unreported 0, late usage and carried-out usage on their own lines, the
 * finalized quantity = counted − carried out, and statement totals = invoice quantities.
 */
async function expectInvoices(
  r: ReportingRig,
  customer: string,
  exp: { previous: PeriodExpectation; current: PeriodExpectation },
) {
  const b = await billingOf(r, customer);
  for (const which of ["previous", "current"] as const) {
    const e = exp[which];
    const billed = e.counted + e.lateIn - e.carriedOut;
    const p = await invoiceParity(r.ledger, r.stripe, b, which);
    expect(p, `${customer} ${which}`).toMatchObject({
      customer,
      period_start: iso(T(e.start)),
      period_end: iso(T(e.end)),
      invoice_status: which === "previous" ? "open" : "preview",
      counted: e.counted,
      late_in: e.lateIn,
      carried_out: e.carriedOut,
      unreported: 0,
      reported: billed,
      invoice_quantity: billed,
      difference: 0,
      problem: null,
    });
    expect(parityProblem(p)).toBe(false);
    if (which === "previous") {
      const invoice = r.emu.invoices({ customer }).find((i) => i.id === p.invoice);
      expect(invoice?.status).toBe("open");
      expect(invoice?.status_transitions.finalized_at).not.toBeNull();
      expect(invoice?.lines.data.map((l) => [l.period.start, l.period.end, l.quantity])).toEqual([
        [S(e.start), S(e.end), e.counted - e.carriedOut + e.lateIn],
      ]);
    } else {
      expect(await previewQuantity(r.stripe, customer)).toBe(billed);
    }
    const s = await statement(r.ledger, r.stripe, b, which, "period");
    expect(
      Object.fromEntries(s.lines.map((l) => [l.sim_sid, l.bytes])),
      `${customer} ${which} statement lines`,
    ).toEqual(e.sims);
    expect(s.late_in.reduce((sum, l) => sum + l.bytes, 0)).toBe(e.lateIn);
    expect(s.carried_out).toBe(e.carriedOut);
    expect(s.total).toBe(billed);
    expect(s.invoice_quantity).toBe(billed);
  }
}

describe("usage is billed by the customer's own subscription period", () => {
  it("usage before a period boundary lands on the draft invoice while it is a draft; usage that arrives after finalization lands on the next invoice, flagged late", async () => {
    rig = await reportingRig({
      redisUrl: inject("redisUrl"),
      now: T("2026-11-30T10:30:00Z"),
      emulator: { autoSubscribe: false },
    });
    expect(rig.emu.invoiceGraceSeconds()).toBe(rig.settings.graceSeconds);
    subscribe(rig, "cus_a", { anchor: "2026-11-01T00:00:00Z", startDate: "2026-10-01T00:00:00Z" });
    await assign(rig, SIM_A, "cus_a", T("2026-10-01T00:00:00Z"));
    await assign(rig, SIM_B, "cus_a", T("2026-10-01T00:00:00Z"));

    // The 30th, before the boundary: stamped inside its hour, on the November period.
    await rig.ingest([
      ...session(SIM_A, "2026-11-30T09:05:00Z", [
        ["2026-11-30T09:20:00Z", 1000],
        ["2026-11-30T09:40:00Z", 2500],
      ]),
      ...session(SIM_B, "2026-11-30T08:10:00Z", [["2026-11-30T08:50:00Z", 700]]),
    ]);
    await rig.reportUntilDone();

    // 00:20 on the 1st: November's draft exists (finalizes at 01:00, 40 min away, more than the
    // 10 min margin). A late reading for 23:00 on the 30th is stamped inside its hour, on the draft.
    rig.now.value = T("2026-12-01T00:20:00Z");
    await rig.ingest(
      session(SIM_B, "2026-11-30T23:10:00Z", [
        ["2026-11-30T23:30:00Z", 400],
        ["2026-11-30T23:50:00Z", 1200],
      ]),
    );
    await rig.reportUntilDone();
    const [draft] = rig.emu.invoices({ customer: "cus_a", status: "draft" });
    expect(draft?.period_end).toBe(S("2026-12-01T00:00:00Z"));
    expect(draft?.automatically_finalizes_at).toBe(S("2026-12-01T01:00:00Z"));
    expect(draft?.lines.data[0]?.quantity).toBe(2500 + 700 + 1200);

    // 00:45: a session across the boundary ends; only its end reading arrives (all in 00:00).
    rig.now.value = T("2026-12-01T00:45:00Z");
    const across = session(SIM_A, "2026-11-30T23:45:00Z", [
      ["2026-11-30T23:55:00Z", 2000],
      ["2026-12-01T00:40:00Z", 5000],
    ]);
    await rig.ingest(across.slice(1));
    await rig.reportUntilDone();

    // 02:00: the draft finalized at 01:00. Its missing update (2000 bytes of 23:00) and a session
    // of 22:00 arrive only now: stamped now, in December, flagged late. Plus new-period usage.
    rig.now.value = T("2026-12-01T02:00:00Z");
    await rig.ingest([
      ...across.slice(0, 1),
      ...session(SIM_B, "2026-11-30T22:10:00Z", [["2026-11-30T22:40:00Z", 800]]),
      ...session(SIM_B, "2026-12-01T01:10:00Z", [["2026-12-01T01:50:00Z", 900]]),
    ]);
    await rig.reportUntilDone();

    const rows = (await rowsOf(rig)).map((r) => ({
      hour: iso(r.hour),
      value: r.value,
      timestamp: iso(r.timestamp * 1000),
      late: r.late,
      state: r.state,
    }));
    expect(rows).toEqual([
      {
        hour: "2026-11-30T08:00:00.000Z",
        value: 700,
        timestamp: "2026-11-30T08:00:00.000Z",
        late: 0,
        state: "sent",
      },
      {
        hour: "2026-11-30T09:00:00.000Z",
        value: 2500,
        timestamp: "2026-11-30T09:00:00.000Z",
        late: 0,
        state: "sent",
      },
      {
        hour: "2026-11-30T22:00:00.000Z",
        value: 800,
        timestamp: "2026-12-01T02:00:00.000Z",
        late: 1,
        state: "sent",
      },
      {
        hour: "2026-11-30T23:00:00.000Z",
        value: 1200,
        timestamp: "2026-11-30T23:00:00.000Z",
        late: 0,
        state: "sent",
      },
      {
        hour: "2026-11-30T23:00:00.000Z",
        value: 2000,
        timestamp: "2026-12-01T02:00:00.000Z",
        late: 1,
        state: "sent",
      },
      {
        hour: "2026-12-01T00:00:00.000Z",
        value: 5000,
        timestamp: "2026-12-01T00:00:00.000Z",
        late: 0,
        state: "sent",
      },
      {
        hour: "2026-12-01T00:00:00.000Z",
        value: -2000,
        timestamp: "2026-12-01T00:00:00.000Z",
        late: 0,
        state: "sent",
      },
      {
        hour: "2026-12-01T01:00:00.000Z",
        value: 900,
        timestamp: "2026-12-01T01:00:00.000Z",
        late: 0,
        state: "sent",
      },
    ]);

    await expectInvoices(rig, "cus_a", {
      previous: {
        start: "2026-11-01T00:00:00Z",
        end: "2026-12-01T00:00:00Z",
        counted: 2500 + 700 + 1200 + 2000 + 800,
        lateIn: 0,
        carriedOut: 2000 + 800,
        sims: { [SIM_A.sid]: 2500 + 2000, [SIM_B.sid]: 700 + 1200 + 800 },
      },
      current: {
        start: "2026-12-01T00:00:00Z",
        end: "2027-01-01T00:00:00Z",
        counted: 5000 - 2000 + 900,
        lateIn: 2000 + 800,
        carriedOut: 0,
        sims: { [SIM_A.sid]: 3000, [SIM_B.sid]: 900 },
      },
    });
    const b = await billingOf(rig, "cus_a");
    const late = await statement(rig.ledger, rig.stripe, b, "current", "period");
    expect(late.late_in).toEqual([
      { hour: "2026-11-30T22:00:00.000Z", bytes: 800 },
      { hour: "2026-11-30T23:00:00.000Z", bytes: 2000 },
    ]);
    expect(await billedTotal(rig, "cus_a")).toBe(await countedTotal(rig, "cus_a"));
  });

  it("a customer billed on the 15th at 09:30: the boundary hour goes to the period its start lies in, on the draft; later late usage goes to the next invoice", async () => {
    rig = await reportingRig({
      redisUrl: inject("redisUrl"),
      now: T("2026-11-15T08:40:00Z"),
      emulator: { autoSubscribe: false },
    });
    subscribe(rig, "cus_15", { anchor: "2026-10-15T09:30:00Z", startDate: "2026-10-15T09:30:00Z" });
    await assign(rig, SIM_A, "cus_15", T("2026-10-01T00:00:00Z"));
    await assign(rig, SIM_B, "cus_15", T("2026-10-01T00:00:00Z"));

    await rig.ingest(session(SIM_A, "2026-11-15T08:05:00Z", [["2026-11-15T08:30:00Z", 1500]]));
    await rig.reportUntilDone();

    // 09:50, after the 09:30 boundary: the 09:00 hour starts in the old period, so all of it
    // (09:45 included) is stamped at 09:00, on the draft that finalizes at 10:30.
    rig.now.value = T("2026-11-15T09:50:00Z");
    await rig.ingest(
      session(SIM_B, "2026-11-15T09:10:00Z", [
        ["2026-11-15T09:20:00Z", 400],
        ["2026-11-15T09:45:00Z", 1000],
      ]),
    );
    await rig.reportUntilDone();
    expect(rig.emu.invoices({ customer: "cus_15", status: "draft" })[0]).toMatchObject({
      period_end: S("2026-11-15T09:30:00Z"),
      automatically_finalizes_at: S("2026-11-15T10:30:00Z"),
    });

    // 11:00: finalized. A reading of 07:00 arrives: late, stamped now; and new-period usage.
    rig.now.value = T("2026-11-15T11:00:00Z");
    await rig.ingest([
      ...session(SIM_A, "2026-11-15T07:10:00Z", [["2026-11-15T07:40:00Z", 600]]),
      ...session(SIM_B, "2026-11-15T10:05:00Z", [["2026-11-15T10:50:00Z", 2000]]),
    ]);
    await rig.reportUntilDone();
    expect(
      (await rowsOf(rig)).map((r) => [iso(r.hour), r.value, iso(r.timestamp * 1000), r.late]),
    ).toEqual([
      ["2026-11-15T07:00:00.000Z", 600, "2026-11-15T11:00:00.000Z", 1],
      ["2026-11-15T08:00:00.000Z", 1500, "2026-11-15T08:00:00.000Z", 0],
      ["2026-11-15T09:00:00.000Z", 1000, "2026-11-15T09:00:00.000Z", 0],
      ["2026-11-15T10:00:00.000Z", 2000, "2026-11-15T10:00:00.000Z", 0],
    ]);

    await expectInvoices(rig, "cus_15", {
      previous: {
        start: "2026-10-15T09:30:00Z",
        end: "2026-11-15T09:30:00Z",
        counted: 1500 + 1000 + 600,
        lateIn: 0,
        carriedOut: 600,
        sims: { [SIM_A.sid]: 2100, [SIM_B.sid]: 1000 },
      },
      current: {
        start: "2026-11-15T09:30:00Z",
        end: "2026-12-15T09:30:00Z",
        counted: 2000,
        lateIn: 600,
        carriedOut: 0,
        sims: { [SIM_B.sid]: 2000 },
      },
    });
    expect(await billedTotal(rig, "cus_15")).toBe(await countedTotal(rig, "cus_15"));
  });

  it("a customer billed on the 31st: the period ends on Feb 28, so Feb 27 and Feb 28 land on different invoices", async () => {
    rig = await reportingRig({
      redisUrl: inject("redisUrl"),
      now: T("2027-02-27T12:30:00Z"),
      emulator: { autoSubscribe: false },
    });
    subscribe(rig, "cus_31", { anchor: "2026-12-31T00:00:00Z", startDate: "2026-12-31T00:00:00Z" });
    await assign(rig, SIM_A, "cus_31", T("2026-12-01T00:00:00Z"));
    await assign(rig, SIM_B, "cus_31", T("2026-12-01T00:00:00Z"));

    await rig.ingest([
      ...session(SIM_A, "2027-02-27T11:00:00Z", [["2027-02-27T11:30:00Z", 3000]]),
      ...session(SIM_B, "2027-02-27T11:10:00Z", [["2027-02-27T12:10:00Z", 500]]),
    ]);
    await rig.reportUntilDone();

    // Feb 28 00:30: Jan 31 – Feb 28 has ended (not the calendar month); its draft is open.
    rig.now.value = T("2027-02-28T00:30:00Z");
    await rig.ingest([
      ...session(SIM_B, "2027-02-27T23:05:00Z", [["2027-02-27T23:35:00Z", 250]]),
      ...session(SIM_A, "2027-02-28T00:05:00Z", [["2027-02-28T00:25:00Z", 4000]]),
    ]);
    await rig.reportUntilDone();

    // Feb 28 03:00: finalized; a reading of Feb 27 20:00 is late.
    rig.now.value = T("2027-02-28T03:00:00Z");
    await rig.ingest(session(SIM_A, "2027-02-27T20:00:00Z", [["2027-02-27T20:15:00Z", 111]]));
    await rig.reportUntilDone();
    expect(
      (await rowsOf(rig)).map((r) => [iso(r.hour), r.value, iso(r.timestamp * 1000), r.late]),
    ).toEqual([
      ["2027-02-27T11:00:00.000Z", 3000, "2027-02-27T11:00:00.000Z", 0],
      ["2027-02-27T12:00:00.000Z", 500, "2027-02-27T12:00:00.000Z", 0],
      ["2027-02-27T20:00:00.000Z", 111, "2027-02-28T03:00:00.000Z", 1],
      ["2027-02-27T23:00:00.000Z", 250, "2027-02-27T23:00:00.000Z", 0],
      ["2027-02-28T00:00:00.000Z", 4000, "2027-02-28T00:00:00.000Z", 0],
    ]);

    await expectInvoices(rig, "cus_31", {
      previous: {
        start: "2027-01-31T00:00:00Z",
        end: "2027-02-28T00:00:00Z",
        counted: 3000 + 500 + 250 + 111,
        lateIn: 0,
        carriedOut: 111,
        sims: { [SIM_A.sid]: 3111, [SIM_B.sid]: 750 },
      },
      current: {
        start: "2027-02-28T00:00:00Z",
        end: "2027-03-31T00:00:00Z",
        counted: 4000,
        lateIn: 111,
        carriedOut: 0,
        sims: { [SIM_A.sid]: 4000 },
      },
    });
    expect(await billedTotal(rig, "cus_31")).toBe(await countedTotal(rig, "cus_31"));
  });

  it.each<{ attribution: Attribution }>([{ attribution: "end" }, { attribution: "prorate" }])(
    "ended-only mode bills sessions that span a period boundary on the right invoices, with $attribution attribution",
    async ({ attribution }) => {
      rig = await reportingRig({
        redisUrl: inject("redisUrl"),
        now: T("2026-11-30T10:50:00Z"),
        emulator: { autoSubscribe: false },
        ingest: { billingMode: "ended-only", attribution },
      });
      for (const c of ["cus_e1", "cus_e2"])
        subscribe(rig, c, { anchor: "2026-11-01T00:00:00Z", startDate: "2026-10-01T00:00:00Z" });
      await assign(rig, SIM_A, "cus_e1", T("2026-10-01T00:00:00Z"));
      await assign(rig, SIM_B, "cus_e2", T("2026-10-01T00:00:00Z"));

      // Wholly in November, ended and reported before the boundary.
      await rig.ingest(
        session(SIM_A, "2026-11-30T10:00:00Z", [
          ["2026-11-30T10:20:00Z", 1000],
          ["2026-11-30T10:45:00Z", 3000],
        ]),
      );
      await rig.reportUntilDone();

      // Sessions running across the boundary: updates arrive, but ended-only bills only the end.
      rig.now.value = T("2026-11-30T23:59:00Z");
      const s1 = session(SIM_A, "2026-11-30T21:30:00Z", [
        ["2026-11-30T23:30:00Z", 6000],
        ["2026-12-01T00:30:00Z", 9000],
      ]);
      const s2 = session(SIM_B, "2026-11-30T23:00:00Z", [
        ["2026-12-01T00:30:00Z", 2500],
        ["2026-12-01T01:30:00Z", 5000],
      ]);
      await rig.ingest(s1.slice(0, 1));
      expect((await rig.report()).planned).toBe(0);

      // 00:35: s1 ends while November's draft is open (finalizes at 01:00).
      rig.now.value = T("2026-12-01T00:35:00Z");
      await rig.ingest([...s1.slice(1), ...s2.slice(0, 1)]);
      await rig.reportUntilDone();

      // 01:40: s2 ends after the draft finalized: its November share (prorate) is late.
      rig.now.value = T("2026-12-01T01:40:00Z");
      await rig.ingest([
        ...s2.slice(1),
        ...session(SIM_B, "2026-12-01T01:05:00Z", [["2026-12-01T01:35:00Z", 700]]),
      ]);
      await rig.reportUntilDone();
      expect(await rig.ledger.outbox.pending()).toEqual([]);

      const rows = await rowsOf(rig);
      for (const c of ["cus_e1", "cus_e2"]) {
        expect(await billedTotal(rig, c), c).toBe(await countedTotal(rig, c));
        const b = await billingOf(rig, c);
        for (const which of ["previous", "current"] as const) {
          const p = await invoiceParity(rig.ledger, rig.stripe, b, which);
          expect(p, `${c} ${which}`).toMatchObject({ difference: 0, unreported: 0, problem: null });
          const s = await statement(rig.ledger, rig.stripe, b, which, "period");
          expect(s.total).toBe(p.invoice_quantity);
        }
      }
      expect(await countedTotal(rig, "cus_e1")).toBe(3000 + 9000);
      expect(await countedTotal(rig, "cus_e2")).toBe(5000 + 700);
      const e1 = await invoiceParity(
        rig.ledger,
        rig.stripe,
        await billingOf(rig, "cus_e1"),
        "previous",
      );
      const e2 = await invoiceParity(
        rig.ledger,
        rig.stripe,
        await billingOf(rig, "cus_e2"),
        "previous",
      );
      if (attribution === "end") {
        // All of a session in its end hour: s1 and s2 are December's.
        expect(e1).toMatchObject({ counted: 3000, invoice_quantity: 3000, carried_out: 0 });
        expect(e2).toMatchObject({ counted: 0, invoice_quantity: 0, carried_out: 0 });
        expect(rows.filter((r) => r.late)).toEqual([]);
      } else {
        // Spread over the session: s1's November share is on the draft (stamped in its hours),
        // s2's November share (23:00, 1/2.5 of it) arrived after finalization: late.
        expect(e1).toMatchObject({ counted: 3000 + 7500, carried_out: 0, invoice_quantity: 10500 });
        expect(e2).toMatchObject({ counted: 2000, carried_out: 2000, invoice_quantity: 0 });
        expect(
          rows.filter((r) => r.late).map((r) => [r.customer_id, iso(r.hour), r.value]),
        ).toEqual([["cus_e2", "2026-11-30T23:00:00.000Z", 2000]]);
      }
    },
  );
});

describe("customers without exactly one subscription item on the meter", () => {
  it("a customer without a subscription is held, then billed once one is created, stamped inside its current period (late)", async () => {
    rig = await reportingRig({
      redisUrl: inject("redisUrl"),
      now: T("2026-11-20T10:30:00Z"),
      emulator: { autoSubscribe: false },
    });
    await assign(rig, SIM_A, "cus_new", T("2026-11-01T00:00:00Z"));
    await rig.ingest(session(SIM_A, "2026-11-20T09:05:00Z", [["2026-11-20T09:40:00Z", 2500]]));

    const first = await rig.report();
    expect(first).toMatchObject({
      planned: 0,
      calls: 0,
      held: 1,
      heldBytes: { no_subscription: 2500 },
      fatal: null,
    });
    expect((await rig.ledger.billing.load()).get("cus_new")?.state).toBe("none");

    // A subscription appears a minute later; the stored lookup is not refreshed yet (300 s).
    rig.now.value = T("2026-11-20T10:31:00Z");
    const sub = subscribe(rig, "cus_new", {
      anchor: "2026-11-01T00:00:00Z",
      startDate: "2026-11-20T10:31:00Z",
    });
    rig.now.value = T("2026-11-20T10:34:59Z");
    const early = await rig.report();
    expect(early).toMatchObject({ planned: 0, calls: 0, held: 1 });
    expect(rig.emu.stats().meterEventCalls).toBe(0);
    expect(rig.emu.events()).toEqual([]);

    rig.now.value = T("2026-11-20T10:35:00Z");
    await rig.reportUntilDone();
    const [row] = await rowsOf(rig);
    expect(row).toMatchObject({
      customer_id: "cus_new",
      value: 2500,
      late: 1,
      state: "sent",
      timestamp: S("2026-11-20T10:35:00Z"),
    });
    const item = sub.items.data[0];
    expect(row?.timestamp).toBeGreaterThanOrEqual(item?.current_period_start ?? Infinity);
    expect(row?.timestamp).toBeLessThan(item?.current_period_end ?? 0);
    expect(rig.emu.events().map((e) => [e.value, e.timestamp])).toEqual([
      [2500, S("2026-11-20T10:35:00Z")],
    ]);
    expect(await previewQuantity(rig.stripe, "cus_new")).toBe(2500);
    const p = await invoiceParity(
      rig.ledger,
      rig.stripe,
      await billingOf(rig, "cus_new"),
      "current",
    );
    expect(p).toMatchObject({
      period_start: "2026-11-20T10:31:00.000Z",
      period_end: "2026-12-01T00:00:00.000Z",
      counted: 0,
      late_in: 2500,
      reported: 2500,
      invoice_quantity: 2500,
      difference: 0,
    });
  });

  it("a customer with two subscription items on the meter is held and named, nothing guessed", async () => {
    rig = await reportingRig({
      redisUrl: inject("redisUrl"),
      now: T("2026-11-20T10:30:00Z"),
      emulator: { autoSubscribe: false },
    });
    const p1 = rig.emu.addPrice({ eventName: EVENT_NAME });
    const p2 = rig.emu.addPrice({ eventName: EVENT_NAME });
    const anchor = T("2026-11-01T00:00:00Z");
    const startDate = T("2026-10-01T00:00:00Z");
    const two = rig.emu.addSubscription({
      customer: "cus_two",
      prices: [p1.id, p2.id],
      anchor,
      startDate,
    });
    const subA = rig.emu.addSubscription({
      customer: "cus_twosubs",
      price: p1.id,
      anchor,
      startDate,
    });
    const subB = rig.emu.addSubscription({
      customer: "cus_twosubs",
      price: p2.id,
      anchor,
      startDate,
    });
    rig.emu.addSubscription({ customer: "cus_one", price: p1.id, anchor, startDate });
    await assign(rig, SIM_A, "cus_two", startDate);
    await assign(rig, SIM_B, "cus_twosubs", startDate);
    await assign(rig, SIMS[0] as Sim, "cus_one", startDate);
    await rig.ingest([
      ...session(SIM_A, "2026-11-20T09:05:00Z", [["2026-11-20T09:40:00Z", 2500]]),
      ...session(SIM_B, "2026-11-20T09:05:00Z", [["2026-11-20T09:40:00Z", 1100]]),
      ...session(SIMS[0] as Sim, "2026-11-20T09:05:00Z", [["2026-11-20T09:40:00Z", 42]]),
    ]);

    const s = await rig.report();
    expect(s).toMatchObject({
      planned: 1,
      sent: 1,
      held: 2,
      heldBytes: { ambiguous_subscription: 2500 + 1100 },
    });
    expect(rig.emu.events().map((e) => [e.customer, e.value])).toEqual([["cus_one", 42]]);

    const held = (
      await rig.ledger.plan({
        now: rig.now.value,
        settings: { graceSeconds: rig.settings.graceSeconds },
        dryRun: true,
      })
    ).held;
    expect(held.map((h) => [h.customerId, h.reason, h.bytes])).toEqual([
      ["cus_two", "ambiguous_subscription", 2500],
      ["cus_twosubs", "ambiguous_subscription", 1100],
    ]);
    const [twoItems, twoSubs] = held;
    for (const i of two.items.data) expect(twoItems?.detail).toContain(`${two.id}/${i.id}`);
    expect(twoItems?.detail).toMatch(/^2 active subscription items on the meter/);
    for (const sub of [subA, subB])
      expect(twoSubs?.detail).toContain(`${sub.id}/${sub.items.data[0]?.id}`);

    const ambiguous = (await rig.ledger.billing.load()).get("cus_two");
    if (!ambiguous) throw new Error("no billing state for cus_two");
    expect(ambiguous).toMatchObject({ state: "ambiguous", itemId: null });
    const parity = await invoiceParity(rig.ledger, rig.stripe, ambiguous, "current");
    expect(parity.problem).toContain(two.id);
    expect(parityProblem(parity)).toBe(true);

    // Still held later, however often it is asked.
    rig.now.value += 600_000;
    expect(await rig.report()).toMatchObject({ planned: 0, calls: 0, held: 2 });
    expect(rig.emu.events()).toHaveLength(1);
  });
});

// ---- one row, one request ----

type Call = {
  key: string | undefined;
  body: string;
  identifier: string | null;
  status: number;
  errorType: string | null;
};

/**
 * A pass-through HTTP proxy in front of the emulator that records every meter-event POST: its
 * Idempotency-Key, its exact body and Stripe's answer (recorded when the emulator answers, also
 * for calls the client gave up on).
 */
async function recordingProxy(target: { host: string; port: number }) {
  const calls: Call[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const up = request(
        {
          host: target.host,
          port: target.port,
          method: req.method,
          path: req.url,
          headers: req.headers,
        },
        (upRes) => {
          const out: Buffer[] = [];
          upRes.on("data", (c: Buffer) => out.push(c));
          upRes.on("end", () => {
            const text = Buffer.concat(out).toString();
            if (req.method === "POST" && req.url?.startsWith("/v1/billing/meter_events")) {
              let errorType: string | null = null;
              try {
                errorType = (JSON.parse(text) as { error?: { type?: string } }).error?.type ?? null;
              } catch {}
              const key = req.headers["idempotency-key"];
              calls.push({
                key: typeof key === "string" ? key : undefined,
                body: body.toString(),
                identifier: new URLSearchParams(body.toString()).get("identifier"),
                status: upRes.statusCode ?? 0,
                errorType,
              });
            }
            if (!res.destroyed && !res.headersSent) {
              res.writeHead(upRes.statusCode ?? 502, upRes.headers);
              res.end(Buffer.concat(out));
            }
          });
        },
      );
      up.on("error", () => res.destroy());
      up.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    calls,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

/** Every Idempotency-Key and every identifier was only ever sent with one body. */
function expectOneBodyPer(calls: readonly Call[]) {
  const byKey = new Map<string, Set<string>>();
  const byIdentifier = new Map<string, Set<string>>();
  for (const c of calls) {
    if (c.key) byKey.set(c.key, (byKey.get(c.key) ?? new Set()).add(c.body));
    if (c.identifier)
      byIdentifier.set(c.identifier, (byIdentifier.get(c.identifier) ?? new Set()).add(c.body));
  }
  for (const [k, bodies] of byKey) expect(bodies.size, `Idempotency-Key ${k}`).toBe(1);
  for (const [id, bodies] of byIdentifier) expect(bodies.size, `identifier ${id}`).toBe(1);
}

const idempotencyErrors = (calls: readonly Call[]) =>
  calls.filter((c) => c.status === 400 && c.errorType === "idempotency_error").length;

/**
 * The emulator's own counts agree: no idempotency_error answer, and every 400 it gave a
 * meter-event POST was the duplicate-identifier answer.
 */
function expectOnly400sForDuplicates(r: ReportingRig) {
  const stats = r.emu.stats();
  expect(stats.idempotencyErrors).toBe(0);
  expect(stats.byRoute["POST /v1/billing/meter_events 400"] ?? 0).toBe(stats.duplicateIdentifiers);
}

/** Stripe holds each identifier at most once. */
function expectEachIdentifierOnce(r: ReportingRig) {
  const ids = r.emu.events().map((e) => e.identifier);
  expect(ids.length).toBe(new Set(ids).size);
}

function proxiedReporter(r: ReportingRig, proxyUrl: string) {
  const stripe = createStripe({
    STRIPE_SECRET_KEY: r.emu.apiKey,
    STRIPE_API_BASE: proxyUrl,
    STRIPE_TIMEOUT_MS: r.settings.timeoutMs,
  });
  const logger = createLogger("silent");
  const report = (ledger: Ledger = r.ledger) =>
    runReport({
      ledger,
      stripe,
      redis: r.redis,
      logger,
      settings: r.settings,
      now: () => r.now.value,
    });
  const untilDone = async (maxRuns = 30, ledger: Ledger = r.ledger) => {
    for (let run = 1; run <= maxRuns; run++) {
      const s = await report(ledger);
      if (s.fatal) throw new Error(s.fatal);
      if (s.stillPending === 0 && s.lockedCustomers === 0) return run;
    }
    throw new Error(`still pending after ${maxRuns} runs`);
  };
  return { stripe, report, untilDone };
}

type Restarted = { ledger: Ledger; sql: TestLedger["sql"] };

/**
 * The ledger as a SIGKILL would leave it, taken while the reporter awaits Stripe's answer (it
 * writes again only after the answer or its timeout), and a restart from it: a new ledger over
 * that state. SQLite: VACUUM INTO a copy of the file, opened anew. PostgreSQL: every table copied
 * in one repeatable-read transaction, written back over the tables once the killed reporter's
 * run has ended (its writes after the snapshot are what the kill loses), then a new pool on it.
 */
async function killSnapshot(r: ReportingRig) {
  let restarted: Ledger | null = null;
  const closeRestarted = async () => {
    await restarted?.admin.close();
    restarted = null;
  };
  if (r.backend === "sqlite") {
    const file = join(r.dir, "killed.db");
    return {
      take: async () => {
        r.db.$client.exec(`VACUUM INTO '${file}'`);
      },
      restart: async (): Promise<Restarted> => {
        const db = openDb(file);
        restarted = sqliteLedger(db);
        const sql = async <R>(text: string, ...params: unknown[]) =>
          db.$client.prepare(text).all(...params) as R[];
        return { ledger: restarted, sql: sql as TestLedger["sql"] };
      },
      close: async () => {
        await closeRestarted();
        rmSync(file, { force: true });
      },
    };
  }
  const url = r.env.DATABASE_URL as string;
  const tables = (
    await r.sql<{ t: string }>(
      "select tablename as t from pg_tables where schemaname = 'public' order by tablename",
    )
  ).map(({ t }) => t);
  // connected before the reporter starts: the snapshot is one round trip
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  return {
    take: async () => {
      await client.query(
        [
          "begin isolation level repeatable read",
          "create schema killed",
          ...tables.map((t) => `create table killed."${t}" as table public."${t}"`),
          "commit",
        ].join(";\n"),
      );
    },
    restart: async (): Promise<Restarted> => {
      await client.query(
        [
          "begin",
          ...tables.flatMap((t) => [
            `delete from public."${t}"`,
            `insert into public."${t}" select * from killed."${t}"`,
          ]),
          "drop schema killed cascade",
          "commit",
        ].join(";\n"),
      );
      restarted = pgLedger(createPool(url, { role: "test", max: 4 }), url);
      return { ledger: restarted, sql: r.sql };
    },
    close: async () => {
      await closeRestarted();
      await client.end();
    },
  };
}

describe("one row, one request: retries across a period boundary", () => {
  const BEFORE = "2026-11-30T23:40:00Z";
  const AFTER = "2026-12-01T02:00:00Z"; // November's draft finalized at 01:00
  const HOUR = T("2026-11-30T23:00:00Z");

  async function delayedCallRig() {
    const r = await reportingRig({
      redisUrl: inject("redisUrl"),
      now: T(BEFORE),
      timeoutMs: 300,
      emulator: { autoSubscribe: false, faults: { delayAfterRecordRate: 1, delayMs: 1200 } },
    });
    subscribe(r, "cus_k", { anchor: "2026-11-01T00:00:00Z", startDate: "2026-10-01T00:00:00Z" });
    await assign(r, SIM_A, "cus_k", T("2026-10-01T00:00:00Z"));
    await r.ingest(session(SIM_A, "2026-11-30T23:05:00Z", [["2026-11-30T23:35:00Z", 4000]]));
    const proxy = await recordingProxy(r.emu);
    cleanups.push(() => proxy.close());
    r.settings.attemptsPerRun = 1;
    return { r, proxy, reporter: proxiedReporter(r, proxy.url) };
  }

  it("a retried call never changes its parameters: after a timeout the retry sends the same parameters under the next Idempotency-Key, though the boundary has passed", async () => {
    const { r, proxy, reporter } = await delayedCallRig();
    rig = r;
    const first = await reporter.report();
    expect(first).toMatchObject({ planned: 1, sent: 0, stillPending: 1 });
    await waitFor(() => proxy.calls.length === 1, "the delayed answer");
    expect(await rowsOf(r)).toMatchObject([{ attempts: 1, state: "pending", late: 0 }]);

    // Under the old rule the row would now be stamped late; its parameters are fixed instead.
    r.now.value = T(AFTER);
    r.emu.setFaults({});
    r.settings.attemptsPerRun = 6;
    await reporter.untilDone();

    const id = `v1:cus_k:${HOUR / 1000}:0`;
    expect(await rowsOf(r)).toMatchObject([
      { identifier: id, state: "sent", late: 0, timestamp: HOUR / 1000, value: 4000 },
    ]);
    expect(proxy.calls.map((c) => [c.identifier, c.key, c.status])).toEqual([
      [id, `${id}:a0`, 200],
      [id, `${id}:a1`, 400],
    ]);
    expectOneBodyPer(proxy.calls);
    expect(idempotencyErrors(proxy.calls)).toBe(0);
    expect(r.emu.stats().duplicateIdentifiers).toBe(1);
    expectOnly400sForDuplicates(r);
    expectEachIdentifierOnce(r);
    // Recorded before finalization: on November's invoice, once.
    expect(
      r.emu.invoices({ customer: "cus_k", status: "open" }).at(-1)?.lines.data[0]?.quantity,
    ).toBe(4000);
    expect(await billedTotal(r, "cus_k")).toBe(4000);
  });

  it("a retried call never changes its parameters: after a kill during a call the retry reuses the Idempotency-Key with identical parameters", async () => {
    const { r, proxy, reporter } = await delayedCallRig();
    rig = r;
    // The reporter is killed while its call is at Stripe: what is on disk at that instant is the
    // row written before the call, nothing after it. Snapshot the ledger then (as SIGKILL would).
    const killed = await killSnapshot(r);
    cleanups.push(() => killed.close());
    const running = reporter.report();
    await waitFor(() => r.emu.events().length === 1, "the call to reach Stripe", 30_000, 10);
    await killed.take();
    await running;
    await waitFor(() => proxy.calls.length === 1, "the delayed answer");

    // Restarted from that snapshot after the boundary, once November's draft has finalized.
    const restarted = await killed.restart();
    expect(await rowsOf(restarted)).toMatchObject([{ attempts: 0, state: "pending", late: 0 }]);
    r.now.value = T(AFTER);
    r.emu.setFaults({});
    r.settings.attemptsPerRun = 6;
    await reporter.untilDone(30, restarted.ledger);

    const id = `v1:cus_k:${HOUR / 1000}:0`;
    expect(idempotencyErrors(proxy.calls)).toBe(0);
    expectOnly400sForDuplicates(r);
    expectOneBodyPer(proxy.calls);
    expectEachIdentifierOnce(r);
    // Stripe holds the first call's event (on November's invoice): billed once, not twice.
    expect.soft(await billedTotal(r, "cus_k"), "billed in all (counted: 4000)").toBe(4000);
    expect
      .soft(
        (await rowsOf(restarted)).map((x) => [x.identifier, x.state, x.late]),
        "the interrupted row is retried, not superseded by a new identifier",
      )
      .toEqual([[id, "sent", 0]]);
    expect
      .soft(
        proxy.calls.map((c) => [c.identifier, c.key]),
        "the retry reuses the interrupted call's Idempotency-Key and parameters",
      )
      .toEqual([
        [id, `${id}:a0`],
        [id, `${id}:a0`],
      ]);
  });
});

describe("the Stripe-fault drill across a period boundary", () => {
  it("the Stripe-fault drill shows 0 idempotency_error answers: 10% 500s, 10% 429s, 5% delayed answers over several report runs that cross a period boundary, and totals per invoice equal counted", async () => {
    const r = await reportingRig({
      redisUrl: inject("redisUrl"),
      now: T("2026-11-30T19:00:00Z"),
      timeoutMs: 250,
      emulator: {
        autoSubscribe: false,
        faults: {
          error500Rate: 0.1,
          error429Rate: 0.1,
          delayAfterRecordRate: 0.05,
          delayMs: 450,
          seed: 5,
        },
      },
    });
    rig = r;
    const customers = ["cus_d0", "cus_d1", "cus_d2"];
    subscribe(r, "cus_d0", { anchor: "2026-11-01T00:00:00Z", startDate: "2026-10-01T00:00:00Z" });
    subscribe(r, "cus_d1", { anchor: "2026-11-01T00:00:00Z", startDate: "2026-10-01T00:00:00Z" });
    // Daily at 00:30: its boundary falls half an hour after the others'.
    subscribe(r, "cus_d2", {
      anchor: "2026-11-25T00:30:00Z",
      startDate: "2026-11-25T00:30:00Z",
      interval: "day",
    });
    for (const [i, sim] of SIMS.entries())
      await assign(r, sim, customers[i % 3] as string, T("2026-10-01T00:00:00Z"));

    // Seeded sessions from 18:00 to 02:30; each reading arrives soon, or up to 3 h late.
    let seed = 0x5eed;
    const rand = () => {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      return seed / 2 ** 32;
    };
    const pending: { arrival: number; event: unknown }[] = [];
    for (let n = 0; n < 80; n++) {
      const sim = SIMS[Math.floor(rand() * SIMS.length)] as Sim;
      const start = T("2026-11-30T18:00:00Z") + Math.floor(rand() * 8.5 * 3600) * 1000;
      let t = start;
      let total = 0;
      const readings: [string, number][] = [];
      for (let k = 0, steps = 1 + Math.floor(rand() * 3); k < steps; k++) {
        t += (5 + Math.floor(rand() * 45)) * 60_000;
        total += 100 + Math.floor(rand() * 100_000);
        readings.push([iso(t), total]);
      }
      const events = session(sim, iso(start), readings);
      events.forEach((event, k) => {
        const at = T(readings[k]?.[0] ?? "");
        const delay = rand() < 0.7 ? rand() * 5 * 60_000 : rand() * 3 * 3600_000;
        pending.push({ arrival: at + delay, event });
      });
    }
    const proxy = await recordingProxy(r.emu);
    cleanups.push(() => proxy.close());
    const reporter = proxiedReporter(r, proxy.url);
    // Two attempts per run: rows left pending are retried by later runs, as the scheduler does.
    r.settings.attemptsPerRun = 2;
    const steps = [
      "2026-11-30T20:00:00Z",
      "2026-11-30T22:30:00Z",
      "2026-11-30T23:50:00Z",
      "2026-12-01T00:10:00Z", // d0, d1: November's drafts are open
      "2026-12-01T00:40:00Z", // d2's period just ended
      "2026-12-01T01:10:00Z", // d0, d1 finalized; d2's draft is open until 01:30
      "2026-12-01T01:45:00Z", // all finalized
      "2026-12-01T03:00:00Z",
      "2026-12-01T06:00:00Z",
    ];
    let runs = 0;
    for (const step of steps) {
      r.now.value = T(step);
      const due = pending.filter((p) => p.arrival <= r.now.value || step === steps.at(-1));
      for (const p of due) pending.splice(pending.indexOf(p), 1);
      if (due.length > 0) await r.ingest(due.map((p) => p.event));
      runs += await reporter.untilDone(40);
    }
    expect(pending).toEqual([]);

    const stats = r.emu.stats();
    console.log(
      `period-boundary drill: ${(await rowsOf(r)).length} rows, ${proxy.calls.length} calls in ${runs} runs, ${stats.injected500} 500s, ${stats.injected429} 429s, ${stats.injectedDelays} delayed, ${stats.duplicateIdentifiers} duplicates, ${(await rowsOf(r)).filter((x) => x.late).length} late rows`,
    );
    expect(stats.injected500).toBeGreaterThan(0);
    expect(stats.injected429).toBeGreaterThan(0);
    expect(stats.injectedDelays).toBeGreaterThan(0);
    expect(idempotencyErrors(proxy.calls)).toBe(0);
    expectOnly400sForDuplicates(r);
    expectOneBodyPer(proxy.calls);
    expectEachIdentifierOnce(r);
    expect(stats.concurrencyViolations).toBe(0);
    expect((await rowsOf(r)).filter((x) => x.state !== "sent")).toEqual([]);
    for (const c of customers) {
      expect(await billedTotal(r, c), `${c} billed in all`).toBe(await countedTotal(r, c));
      const b = await billingOf(r, c);
      for (const which of ["previous", "current"] as const) {
        const p = await invoiceParity(r.ledger, r.stripe, b, which);
        expect(p, `${c} ${which}`).toMatchObject({ difference: 0, unreported: 0, problem: null });
      }
    }
  });
});
