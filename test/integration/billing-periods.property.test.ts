import fc from "fast-check";
import type Stripe from "stripe";
import { describe, expect, inject, it } from "vitest";
import { assignCustomer } from "../../src/customers/customers.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { countedUsage, EVENT_NAME, type ReportingRig, reportingRig } from "../helpers/reporting.ts";
import { shuffle } from "../helpers/sessions.ts";

// For any delivery order and any report timing around period boundaries (inside the grace, after
// it), what each customer is invoiced (finalized, draft and preview) is what was counted, and an
// invoice only carries usage of its own period unless the row says it is late.

const ACCOUNT = "ACe7ea554f7fc0fad65e689bb5899bb6c3";
const HOUR_S = 3600;
const T0 = Date.parse("2026-11-30T18:00:00Z");
/** cus_m: monthly on the 1st at 00:00; cus_d: daily at 09:30 */
const BOUNDARIES = [
  Date.parse("2026-12-01T00:00:00Z"),
  Date.parse("2026-12-01T09:30:00Z"),
  Date.parse("2026-12-02T09:30:00Z"),
];
const CUSTOMERS = ["cus_m", "cus_d"] as const;
const SIMS = [0, 1, 2, 3].map((i) => ({
  sid: `HS${(0xd0 + i).toString(16).padStart(32, "0")}`,
  iccid: `898830700000053818${10 + i}`,
  customer: CUSTOMERS[i < 2 ? 0 : 1],
}));
const hex32 = (n: number) => n.toString(16).padStart(32, "0");

/** 0..1 in steps of 1/1000 (fc.double shrinks and biases towards 0, which bunches the times) */
const fraction = fc.integer({ min: 0, max: 1000 }).map((n) => n / 1000);

const scenarioArb = fc.record({
  grace: fc.constantFrom(1800, 3600, 7200),
  /** hours after T0 the clock runs to: 8 h crosses cus_m's boundary, 42 h both of cus_d's */
  spanHours: fc.integer({ min: 8, max: 42 }),
  sessions: fc.array(
    fc.record({
      sim: fc.nat(SIMS.length - 1),
      /** anywhere in the span, or from 3 h before a boundary to 1 h after it */
      startAt: fc.oneof(
        fc.record({ span: fraction }),
        fc.record({
          boundary: fc.nat(BOUNDARIES.length - 1),
          within: fraction,
        }),
      ),
      readings: fc.array(
        fc.record({
          gapMinutes: fc.integer({ min: 1, max: 120 }),
          bytes: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 50_000 })),
          /** seconds between the reading and its delivery */
          delay: fc.oneof(
            fc.integer({ min: 0, max: 600 }),
            fc.integer({ min: 0, max: 4 * HOUR_S }),
          ),
          duplicate: fc.boolean(),
        }),
        { minLength: 1, maxLength: 4 },
      ),
    }),
    { minLength: 2, maxLength: 12 },
  ),
  /** report times anywhere in the span (fractions) */
  reportsAt: fc.array(fraction, { maxLength: 4 }),
  /** report times near a boundary: from 30 min before it to 30 min past the grace */
  nearBoundary: fc.array(
    fc.record({
      boundary: fc.nat(BOUNDARIES.length - 1),
      offset: fraction,
    }),
    { minLength: 2, maxLength: 6 },
  ),
  /** also report every N minutes from each boundary to 30 min past its grace (0: not) */
  tickMinutes: fc.constantFrom(0, 10, 25, 45),
  orderSeed: fc.integer(),
});

type Scenario = typeof scenarioArb extends fc.Arbitrary<infer T> ? T : never;

type Row = {
  identifier: string;
  customer_id: string;
  hour: number;
  value: number;
  timestamp: number;
  late: number;
  state: string;
  sent_at: number;
};

async function previewLine(stripe: Stripe, customer: string) {
  const sub = (await stripe.subscriptions.list({ customer, limit: 10 })).data[0];
  if (!sub) throw new Error(`${customer} has no subscription`);
  const preview = await stripe.invoices.createPreview({ customer, subscription: sub.id });
  const line = preview.lines.data[0];
  if (!line) throw new Error(`${customer}: the preview has no line`);
  return { start: line.period.start, end: line.period.end, quantity: line.quantity ?? 0 };
}

/** What the scenarios exercised, summed over the runs. */
const seen = { rows: 0, late: 0, onDraft: 0, reports: 0 };

async function runScenario(s: Scenario): Promise<void> {
  const end = T0 + s.spanHours * HOUR_S * 1000;
  const final = end + 12 * HOUR_S * 1000;
  const rig: ReportingRig = await reportingRig({
    redisUrl: inject("redisUrl"),
    now: T0,
    emulator: { autoSubscribe: false, invoiceGraceSeconds: s.grace },
  });
  try {
    rig.settings.graceSeconds = s.grace;
    const monthly = rig.emu.addPrice({ eventName: EVENT_NAME });
    const daily = rig.emu.addPrice({ eventName: EVENT_NAME, interval: "day" });
    rig.emu.addSubscription({
      customer: "cus_m",
      price: monthly.id,
      anchor: Date.parse("2026-11-01T00:00:00Z"),
      startDate: Date.parse("2026-10-01T00:00:00Z"),
    });
    rig.emu.addSubscription({
      customer: "cus_d",
      price: daily.id,
      anchor: Date.parse("2026-11-28T09:30:00Z"),
      startDate: Date.parse("2026-11-28T09:30:00Z"),
    });
    for (const sim of SIMS)
      await assignCustomer({
        ledger: rig.ledger,
        now: T0,
        input: {
          targetType: "sim",
          targetId: sim.sid,
          customerId: sim.customer,
          effectiveFrom: Date.parse("2026-10-01T00:00:00Z"),
        },
      });

    // Every reading (and some duplicates), with the time it reaches simmeter.
    const deliveries: { arrival: number; event: unknown }[] = [];
    s.sessions.forEach((g, n) => {
      const sim = SIMS[g.sim] ?? SIMS[0];
      if (!sim) return;
      const start =
        "span" in g.startAt
          ? T0 + Math.floor(g.startAt.span * (end - T0 - 30 * 60_000))
          : (BOUNDARIES[g.startAt.boundary] ?? T0) -
            3 * HOUR_S * 1000 +
            Math.floor(g.startAt.within * 4 * HOUR_S * 1000);
      if (start < T0 || start > end) return;
      let t = start;
      let total = 0;
      g.readings.forEach((r, i) => {
        t += r.gapMinutes * 60_000;
        total += r.bytes;
        const ended = i === g.readings.length - 1;
        const event = buildCloudEvent({
          eventSid: `EZ${hex32(n * 256 + i)}`,
          kind: ended ? "data-session.ended" : "data-session.updated",
          accountSid: ACCOUNT,
          simSid: sim.sid,
          iccid: sim.iccid,
          timestampMs: t,
          sessionSid: `PI${hex32(n + 1)}`,
          sessionStartMs: start,
          windowStartMs: start,
          windowEndMs: t,
          windowDown: 0,
          cumulativeDown: total,
          ...(ended ? { sessionEndMs: t } : {}),
        });
        const arrival = Math.min(final, t + r.delay * 1000);
        deliveries.push({ arrival, event });
        if (r.duplicate)
          deliveries.push({ arrival: Math.min(final, arrival + HOUR_S * 1000), event });
      });
    });

    const times = new Set<number>();
    for (const f of s.reportsAt) times.add(T0 + Math.floor(f * (end - T0)));
    for (const b of s.nearBoundary) {
      const at = (BOUNDARIES[b.boundary] ?? 0) - 1800_000;
      times.add(at + Math.floor(b.offset * (s.grace + 3600) * 1000));
    }
    if (s.tickMinutes > 0)
      for (const b of BOUNDARIES)
        for (let t = b; t <= b + (s.grace + 1800) * 1000; t += s.tickMinutes * 60_000) times.add(t);
    const schedule = [...times].filter((t) => t >= T0 && t <= end).sort((a, b) => a - b);
    schedule.push(final);

    let batch = 0;
    for (const at of schedule) {
      rig.now.value = at;
      const due = deliveries.filter((d) => d.arrival <= at);
      const rest = deliveries.filter((d) => d.arrival > at);
      deliveries.splice(0, deliveries.length, ...rest);
      if (due.length > 0)
        await rig.ingest(shuffle(due, s.orderSeed + batch++).map((d) => d.event) as unknown[]);
      seen.reports += await rig.reportUntilDone();
    }
    expect(deliveries).toEqual([]);

    const counted = await countedUsage(rig.ledger);
    const rows = await rig.sql<Row>("select * from meter_reports");
    expect(rows.filter((r) => r.state !== "sent")).toEqual([]);
    seen.rows += rows.length;
    seen.late += rows.filter((r) => r.late).length;
    for (const customer of CUSTOMERS) {
      const periods = rig.emu.invoices({ customer }).flatMap((i) =>
        i.lines.data.map((l) => ({
          start: l.period.start,
          end: l.period.end,
          quantity: l.quantity,
          what: `${i.id} (${i.status})`,
        })),
      );
      periods.push({ ...(await previewLine(rig.stripe, customer)), what: "preview" });
      const mine = rows.filter((r) => r.customer_id === customer);
      // Every row is stamped inside one invoice's period: its own hour's period, or flagged late
      // (then its hour lies before that period).
      for (const r of mine) {
        const p = periods.find((x) => r.timestamp >= x.start && r.timestamp < x.end);
        expect(p, `${r.identifier} stamped ${r.timestamp}: no invoice covers it`).toBeDefined();
        if (!p) continue;
        const hour = r.hour / 1000;
        // sent after its period ended, on the period's draft
        if (!r.late && r.sent_at >= p.end * 1000) seen.onDraft++;
        if (r.late) expect(hour, `${r.identifier} is late`).toBeLessThan(p.start);
        else
          expect(
            hour >= p.start && hour < p.end,
            `${r.identifier} (hour ${hour}) is not late but stamped on ${p.what} [${p.start}, ${p.end})`,
          ).toBe(true);
      }
      // Each invoice carries exactly the rows stamped in its period (none landed after it froze).
      for (const p of periods) {
        const stamped = mine
          .filter((r) => r.timestamp >= p.start && r.timestamp < p.end)
          .reduce((sum, r) => sum + r.value, 0);
        expect(p.quantity, `${customer} ${p.what} [${p.start}, ${p.end})`).toBe(stamped);
      }
      const billed = periods.reduce((sum, p) => sum + p.quantity, 0);
      const countedBytes = Object.values(counted[customer] ?? {}).reduce((a, b) => a + b, 0);
      expect(billed, `${customer}: billed across all invoices`).toBe(countedBytes);
    }
  } finally {
    await rig.close();
  }
}

describe("billing by subscription period (property)", () => {
  it("for any delivery order and report timing across 1–2 period boundaries, each customer's invoices carry exactly the bytes counted, and only late rows carry usage of another period", async () => {
    const started = Date.now();
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(scenarioArb, async (s) => {
        runs++;
        await runScenario(s);
      }),
      { numRuns: 20 },
    );
    console.log(
      `${runs} scenarios in ${Date.now() - started} ms: ${seen.reports} report runs, ${seen.rows} rows, ${seen.late} late, ${seen.onDraft} sent onto a draft after its period ended`,
    );
    expect(seen.late).toBeGreaterThan(0);
    expect(seen.onDraft).toBeGreaterThan(0);
  }, 120_000);
});
