import { afterEach, describe, expect, inject, it } from "vitest";
import { assignCustomer } from "../../src/customers/customers.ts";
import { hasDrift, reconcile } from "../../src/reporting/reconcile.ts";
import { ensureMeter, findMeter } from "../../src/reporting/stripe-setup.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { fleet } from "../helpers/fleet.ts";
import {
  countedUsage,
  EVENT_NAME,
  normalise,
  type ReportingRig,
  reportingRig,
} from "../helpers/reporting.ts";

// The reporter end to end (the ledger of the vitest project, a real Redis, the Stripe emulator):
// what reaches Stripe equals the usage counted, through faults, re-assignments and late usage.

const BASE = Date.parse("2026-11-20T00:00:00Z");
const NOW = Date.parse("2026-11-23T10:30:00Z");
const H = (iso: string) => Date.parse(iso);
const ACCOUNT = "ACe7ea554f7fc0fad65e689bb5899bb6c3";
const SIM_A = `HS${"a".repeat(32)}`;

let rig: ReportingRig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

/** the fleet's SIMs, by SIM SID, to `customers` customers in turn */
async function assignFleetCustomers(r: ReportingRig, customers: number) {
  const sims = await r.sql<{ sim_sid: string }>(
    `select sim_sid from sims order by sim_sid${r.backend === "postgres" ? ' collate "C"' : ""}`,
  );
  for (const [i, s] of sims.entries()) {
    await assignCustomer({
      ledger: r.ledger,
      now: BASE - 86_400_000,
      input: {
        targetType: "sim",
        targetId: s.sim_sid,
        customerId: `cus_fleet${i % customers}`,
        effectiveFrom: BASE - 86_400_000,
      },
    });
  }
}

/** One session of SIM_A: readings (time, cumulative); the last one ends it. */
function session(sessionSid: string, start: string, readings: [string, number][]) {
  return readings.map(([t, c], i) =>
    buildCloudEvent({
      eventSid: `EZ${sessionSid.slice(2, 18)}${i.toString(16).padStart(16, "0")}`,
      kind: i === readings.length - 1 ? "data-session.ended" : "data-session.updated",
      accountSid: ACCOUNT,
      simSid: SIM_A,
      iccid: "89883070000005381783",
      timestampMs: H(t),
      sessionSid,
      sessionStartMs: H(start),
      windowStartMs: H(start),
      windowEndMs: H(t),
      windowDown: 0,
      cumulativeDown: c,
      ...(i === readings.length - 1 ? { sessionEndMs: H(t) } : {}),
    }),
  );
}

const emulatorTotals = (r: ReportingRig) => normalise(r.emu.totalsByCustomerHour(EVENT_NAME));
const counted = (r: ReportingRig) => countedUsage(r.ledger);

describe("reporting usage to Stripe Billing Meters", () => {
  it("stripe setup creates the meter once and is safe to run again", async () => {
    rig = await reportingRig({ redisUrl: inject("redisUrl"), now: NOW });
    const again = await ensureMeter(rig.stripe, EVENT_NAME);
    expect(again.action).toBe("exists");
    expect(again.problems).toEqual([]);
    expect((await findMeter(rig.stripe, EVENT_NAME))?.default_aggregation.formula).toBe("sum");
  });

  it("with 10% 500s, 10% 429s and 5% answers delayed past the client timeout, Stripe's per-customer per-hour totals equal counted usage exactly", async () => {
    rig = await reportingRig({
      redisUrl: inject("redisUrl"),
      now: NOW,
      timeoutMs: 250,
      emulator: {
        faults: {
          error500Rate: 0.1,
          error429Rate: 0.1,
          delayAfterRecordRate: 0.05,
          delayMs: 450,
          seed: 42,
        },
      },
    });
    const { events } = fleet(120, 5);
    for (let i = 0; i < events.length; i += 200) await rig.ingest(events.slice(i, i + 200));
    await assignFleetCustomers(rig, 6);
    const runs = await rig.reportUntilDone(30);
    const stats = rig.emu.stats();
    expect(stats.injected500 + stats.injected429).toBeGreaterThan(0);
    expect(stats.injectedDelays).toBeGreaterThan(0);
    expect(emulatorTotals(rig)).toEqual(await counted(rig));
    expect(stats.concurrencyViolations).toBe(0);
    expect(stats.idempotencyErrors).toBe(0);
    expect(await rig.ledger.outbox.pending()).toEqual([]);
    const [calls] = await rig.sql<{ n: number }>("select count(*) as n from meter_reports");
    console.log(
      `faulty Stripe (${rig.backend}): ${events.length} events → ${calls?.n} meter events, ${stats.meterEventCalls} calls, ${runs} runs, ${stats.injected500} 500s, ${stats.injected429} 429s, ${stats.injectedDelays} delayed`,
    );
    const drift = await reconcile({
      ledger: rig.ledger,
      stripe: rig.stripe,
      meterId: (await findMeter(rig.stripe, EVENT_NAME))?.id ?? null,
      from: BASE - 86_400_000,
      to: NOW + 3_600_000,
    });
    expect(hasDrift(drift)).toBe(false);
  });

  it("more usage later is reported as the difference only", async () => {
    rig = await reportingRig({ redisUrl: inject("redisUrl"), now: NOW });
    const events = session("PI1000000000000000000000000000000a", "2026-11-23T09:00:00Z", [
      ["2026-11-23T09:06:00Z", 100],
      ["2026-11-23T09:12:00Z", 250],
      ["2026-11-23T09:18:00Z", 400],
    ]);
    await assignCustomer({
      ledger: rig.ledger,
      now: NOW,
      input: { targetType: "sim", targetId: SIM_A, customerId: "cus_a", effectiveFrom: BASE },
    });
    await rig.ingest(events.slice(0, 1));
    await rig.reportUntilDone();
    await rig.ingest(events.slice(1));
    await rig.reportUntilDone();
    expect(rig.emu.events().map((e) => e.value)).toEqual([100, 300]);
    expect(rig.emu.events().map((e) => e.identifier)).toEqual([
      `v1:cus_a:${H("2026-11-23T09:00:00Z") / 1000}:0`,
      `v1:cus_a:${H("2026-11-23T09:00:00Z") / 1000}:1`,
    ]);
  });

  it("a late reading that moves bytes from one hour to another produces a negative and a positive event", async () => {
    rig = await reportingRig({ redisUrl: inject("redisUrl"), now: NOW });
    await assignCustomer({
      ledger: rig.ledger,
      now: NOW,
      input: { targetType: "sim", targetId: SIM_A, customerId: "cus_a", effectiveFrom: BASE },
    });
    const [update, ended] = session("PI2000000000000000000000000000000b", "2026-11-23T07:30:00Z", [
      ["2026-11-23T08:50:00Z", 3000],
      ["2026-11-23T09:10:00Z", 4000],
    ]);
    await rig.ingest([ended]);
    await rig.reportUntilDone();
    await rig.ingest([update]);
    await rig.reportUntilDone();
    const values = rig.emu
      .events()
      .map((e) => [new Date(e.timestamp * 1000).toISOString(), e.value]);
    expect(values).toEqual([
      ["2026-11-23T09:00:00.000Z", 4000],
      ["2026-11-23T08:00:00.000Z", 3000],
      ["2026-11-23T09:00:00.000Z", -3000],
    ]);
    expect(emulatorTotals(rig)).toEqual({
      cus_a: { "2026-11-23T08:00:00.000Z": 3000, "2026-11-23T09:00:00.000Z": 1000 },
    });
  });

  it("unmapped usage is kept and reported after customers assign; a re-assignment splits usage at its time", async () => {
    rig = await reportingRig({ redisUrl: inject("redisUrl"), now: NOW });
    const events = session("PI3000000000000000000000000000000c", "2026-11-23T05:00:00Z", [
      ["2026-11-23T05:30:00Z", 100],
      ["2026-11-23T06:30:00Z", 300],
      ["2026-11-23T11:30:00Z", 600],
      ["2026-11-23T12:30:00Z", 1000],
    ]);
    await rig.ingest(events.slice(0, 2));
    const first = await rig.report();
    expect(first).toMatchObject({ planned: 0, calls: 0, unmappedBytes: 300 });
    // Assigned at 10:30: effective from 11:00, and the earlier unmapped usage goes to it too.
    await assignCustomer({
      ledger: rig.ledger,
      now: NOW,
      input: { targetType: "sim", targetId: SIM_A, customerId: "cus_old" },
    });
    await rig.reportUntilDone();
    expect(emulatorTotals(rig)).toEqual({
      cus_old: { "2026-11-23T05:00:00.000Z": 100, "2026-11-23T06:00:00.000Z": 200 },
    });
    rig.now.value = H("2026-11-23T12:40:00Z");
    await rig.ingest(events.slice(2));
    // The SIM moved to another customer at 12:00, recorded a little later (as happens): its 12:00
    // hour is already counted for cus_old, so moving it is a re-bill the operator must ask for.
    const move = {
      ledger: rig.ledger,
      now: rig.now.value,
      input: {
        targetType: "sim",
        targetId: SIM_A,
        customerId: "cus_new",
        effectiveFrom: H("2026-11-23T12:00:00Z"),
      },
    } as const;
    await expect(assignCustomer(move)).rejects.toThrow(
      /would move 400 counted bytes in 1 SIM-hour/,
    );
    await assignCustomer({ ...move, rebill: true });
    await rig.reportUntilDone();
    expect(emulatorTotals(rig)).toEqual({
      cus_old: {
        "2026-11-23T05:00:00.000Z": 100,
        "2026-11-23T06:00:00.000Z": 200,
        "2026-11-23T11:00:00.000Z": 300,
      },
      cus_new: { "2026-11-23T12:00:00.000Z": 400 },
    });
  });

  it("a permanent error stops only its row, is visible, and does not block other customers", async () => {
    rig = await reportingRig({
      redisUrl: inject("redisUrl"),
      now: NOW,
      emulator: { acceptAnyCustomer: false },
    });
    rig.emu.addCustomer("cus_known");
    const { events } = fleet(20, 9);
    await rig.ingest(events);
    await assignFleetCustomers(rig, 2);
    rig.emu.addCustomer("cus_fleet0");
    // cus_fleet1 has a subscription, but Stripe refuses its meter events for good.
    rig.emu.addCustomer("cus_fleet1");
    rig.emu.setFaults({ refuseCustomers: ["cus_fleet1"] });
    const s = await rig.report();
    expect(s.failed).toBeGreaterThan(0);
    expect(s.sent).toBeGreaterThan(0);
    const failed = await rig.ledger.outbox.failed();
    expect(new Set(failed.map((f) => f.customerId))).toEqual(new Set(["cus_fleet1"]));
    expect(failed[0]?.lastError).toMatch(/cus_fleet1/);
    expect(Object.keys(emulatorTotals(rig))).toEqual(["cus_fleet0"]);
    // Nothing is re-sent for the stopped customer until an operator fixes the cause and retries.
    const again = await rig.report();
    expect(again).toMatchObject({ planned: 0, calls: 0 });
    rig.emu.setFaults({});
    expect(await rig.ledger.outbox.retryFailed()).toBe(failed.length);
    await rig.reportUntilDone();
    expect(await rig.ledger.outbox.failed()).toEqual([]);
    expect(emulatorTotals(rig)).toEqual(await counted(rig));
  });

  it("usage of a month whose invoice has closed is reported now and flagged late, not dropped", async () => {
    const now = Date.parse("2026-12-01T02:00:00Z");
    rig = await reportingRig({ redisUrl: inject("redisUrl"), now });
    await assignCustomer({
      ledger: rig.ledger,
      now,
      input: { targetType: "sim", targetId: SIM_A, customerId: "cus_a", effectiveFrom: BASE },
    });
    await rig.ingest(
      session("PI4000000000000000000000000000000d", "2026-11-30T20:00:00Z", [
        ["2026-11-30T20:30:00Z", 500],
      ]),
    );
    await rig.reportUntilDone();
    const rows = await rig.sql("select late, timestamp from meter_reports");
    expect(rows).toEqual([{ late: 1, timestamp: Math.floor(now / 1000) }]);
    expect(rig.emu.events()[0]?.timestamp).toBe(Math.floor(now / 1000));
  });

  it("two reporters running at once never make concurrent calls for one customer and never double-report", async () => {
    rig = await reportingRig({
      redisUrl: inject("redisUrl"),
      now: NOW,
      emulator: { faults: { delayAfterRecordRate: 0 } },
    });
    const { events } = fleet(60, 13);
    await rig.ingest(events);
    await assignFleetCustomers(rig, 3);
    const [a, b] = await Promise.all([rig.report(), rig.report()]);
    await rig.reportUntilDone();
    expect(
      (a?.sent ?? 0) + (b?.sent ?? 0) + (a?.duplicates ?? 0) + (b?.duplicates ?? 0),
    ).toBeGreaterThan(0);
    expect(rig.emu.stats().concurrencyViolations).toBe(0);
    expect(emulatorTotals(rig)).toEqual(await counted(rig));
  });

  it("reconcile reports zero drift after reporting and non-zero drift after a Stripe-side tamper", async () => {
    rig = await reportingRig({ redisUrl: inject("redisUrl"), now: NOW });
    const { events } = fleet(30, 21);
    await rig.ingest(events);
    await assignFleetCustomers(rig, 3);
    await rig.reportUntilDone();
    const meterId = (await findMeter(rig.stripe, EVENT_NAME))?.id ?? null;
    const range = { from: BASE - 86_400_000, to: NOW + 3_600_000 };
    const clean = await reconcile({
      ledger: rig.ledger,
      stripe: rig.stripe,
      meterId,
      ...range,
    });
    expect(clean.length).toBe(3);
    expect(hasDrift(clean)).toBe(false);
    rig.emu.tamper({
      customer: "cus_fleet1",
      value: 12345,
      timestamp: Math.floor(H("2026-11-21T03:00:00Z") / 1000),
    });
    const tampered = await reconcile({
      ledger: rig.ledger,
      stripe: rig.stripe,
      meterId,
      ...range,
    });
    expect(hasDrift(tampered)).toBe(true);
    expect(tampered.find((r) => r.customer === "cus_fleet1")?.stripeDrift).toBe(-12345);
  });
});

describe("values beyond Stripe's 15 significant digits", () => {
  it("a difference larger than 999,999,999,999,999 bytes is sent in parts that Stripe accepts", async () => {
    rig = await reportingRig({ redisUrl: inject("redisUrl"), now: NOW });
    await assignCustomer({
      ledger: rig.ledger,
      now: NOW,
      input: { targetType: "sim", targetId: SIM_A, customerId: "cus_huge", effectiveFrom: BASE },
    });
    const huge = 2_500_000_000_000_000;
    await rig.ingest(
      session("PI5000000000000000000000000000000e", "2026-11-23T08:00:00Z", [
        ["2026-11-23T08:30:00Z", huge],
      ]),
    );
    await rig.reportUntilDone();
    expect(rig.emu.events().map((e) => e.value)).toEqual([
      999_999_999_999_999, 999_999_999_999_999, 500_000_000_000_002,
    ]);
    expect(rig.emu.totalsByCustomer(EVENT_NAME).get("cus_huge")).toBe(huge);
    expect(await rig.ledger.outbox.failed()).toEqual([]);
  });
});
