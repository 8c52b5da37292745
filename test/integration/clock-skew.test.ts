import { afterEach, describe, expect, inject, it } from "vitest";
import { type StripeEmulator, startStripeEmulator } from "../../scripts/stripe-emulator.ts";
import { assignCustomer } from "../../src/customers/customers.ts";
import { clockSkewCheck, stripeClockSkew } from "../../src/reporting/clock.ts";
import { createStripe } from "../../src/reporting/stripe.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { type ReportingRig, reportingRig } from "../helpers/reporting.ts";

const MIN = 60_000;
const HOUR_START = Date.parse("2026-11-23T10:00:00Z");
/** The host's clock: two minutes into the hour. */
const NOW = HOUR_START + 2 * MIN;
const SIM = `HS${"c".repeat(32)}`;
const noWait = async () => {};

let rig: ReportingRig | undefined;
let emu: StripeEmulator | undefined;
afterEach(async () => {
  await rig?.close();
  await emu?.close();
  rig = undefined;
  emu = undefined;
});

describe("a host clock ahead of Stripe's", () => {
  it("with Stripe's clock 10 minutes behind the host, the current hour's row stays pending instead of stopping, and the next run after the clocks agree sends it", async () => {
    rig = await reportingRig({
      redisUrl: inject("redisUrl"),
      now: NOW,
      emulator: { clockOffsetMs: -10 * MIN },
    });
    await assignCustomer({
      ledger: rig.ledger,
      now: NOW,
      input: {
        targetType: "sim",
        targetId: SIM,
        customerId: "cus_skew",
        effectiveFrom: HOUR_START - 86_400_000,
      },
    });
    await rig.ingest([
      buildCloudEvent({
        eventSid: `EZ${"7".repeat(32)}`,
        kind: "data-session.updated",
        accountSid: `AC${"1".repeat(32)}`,
        simSid: SIM,
        iccid: "89883070000005381783",
        timestampMs: NOW - MIN,
        sessionSid: `PI${"8".repeat(32)}`,
        sessionStartMs: HOUR_START - 30 * MIN,
        windowStartMs: HOUR_START - 30 * MIN,
        windowEndMs: NOW - MIN,
        cumulativeDown: 4096,
      }),
    ]);

    // The row is stamped at 10:00; Stripe's clock says 09:52, so 10:00 is beyond its 5 minutes.
    const skewed = await rig.report({ sleep: noWait });
    expect(skewed).toMatchObject({ sent: 0, failed: 0, stillPending: 1, fatal: null });
    expect(await rig.ledger.outbox.failed()).toEqual([]);
    const [row] = await rig.ledger.outbox.pending();
    expect(row?.timestamp).toBe(HOUR_START / 1000);
    expect(row?.lastError).toMatch(/timestamp_in_future|in the future/);
    expect(row?.lastError).toMatch(/host clock looks ahead of Stripe's/);
    expect(rig.emu.events()).toEqual([]);
    // A second skewed run still leaves it waiting rather than stopped.
    expect(await rig.report({ sleep: noWait })).toMatchObject({ failed: 0, stillPending: 1 });

    rig.emu.setClockOffsetMs(0);
    expect(await rig.report({ sleep: noWait })).toMatchObject({ sent: 1, stillPending: 0 });
    expect(await rig.ledger.outbox.pending()).toEqual([]);
    expect(rig.emu.events().map((e) => [e.customer, e.value, e.timestamp])).toEqual([
      ["cus_skew", 4096, HOUR_START / 1000],
    ]);
  });

  it("stripeClockSkew measures a host clock 10 minutes ahead of Stripe's from its Date header through the stripe SDK, and the doctor check fails it", async () => {
    emu = await startStripeEmulator({ clockOffsetMs: -10 * MIN });
    const stripe = createStripe({
      STRIPE_SECRET_KEY: emu.apiKey,
      STRIPE_API_BASE: emu.url,
      STRIPE_TIMEOUT_MS: 5000,
    });
    const skew = await stripeClockSkew(stripe);
    expect(skew).not.toBeNull();
    expect(Math.abs((skew?.skewMs ?? 0) - 10 * MIN)).toBeLessThan(2000);
    expect(Math.abs(Date.parse(skew?.stripeDate ?? "") - (Date.now() - 10 * MIN))).toBeLessThan(
      3000,
    );
    const check = clockSkewCheck(skew?.skewMs ?? 0);
    expect(check.result).toBe("fail");
    expect(check.detail).toMatch(/ahead of Stripe's/);
    expect(check.detail).toMatch(/NTP/);

    emu.setClockOffsetMs(0);
    const agreed = await stripeClockSkew(stripe);
    expect(Math.abs(agreed?.skewMs ?? Number.POSITIVE_INFINITY)).toBeLessThan(2000);
    expect(clockSkewCheck(agreed?.skewMs ?? 0).result).toBe("ok");
  });

  it("stripeClockSkew still measures when Stripe refuses the key, and returns null when Stripe cannot be reached", async () => {
    emu = await startStripeEmulator({ clockOffsetMs: 7 * MIN });
    const refused = createStripe({
      STRIPE_SECRET_KEY: "sk_test_wrong",
      STRIPE_API_BASE: emu.url,
      STRIPE_TIMEOUT_MS: 5000,
    });
    const skew = await stripeClockSkew(refused);
    expect(Math.abs((skew?.skewMs ?? 0) + 7 * MIN)).toBeLessThan(2000);
    expect(clockSkewCheck(skew?.skewMs ?? 0).detail).toMatch(/behind Stripe's/);
    const url = emu.url;
    await emu.close();
    emu = undefined;
    const gone = createStripe({
      STRIPE_SECRET_KEY: "sk_test_emulator",
      STRIPE_API_BASE: url,
      STRIPE_TIMEOUT_MS: 2000,
    });
    expect(await stripeClockSkew(gone)).toBeNull();
  });

  it("clockSkewCheck is ok up to a minute either way, warns up to five minutes, and fails beyond, telling the operator to fix NTP", () => {
    const cases: [number, "ok" | "warn" | "fail"][] = [
      [0, "ok"],
      [59_000, "ok"],
      [-60_000, "ok"],
      [60_001, "warn"],
      [-90_000, "warn"],
      [5 * MIN, "warn"],
      [5 * MIN + 1, "fail"],
      [-10 * MIN, "fail"],
      [3 * 3_600_000, "fail"],
    ];
    for (const [skewMs, result] of cases) {
      expect({ skewMs, result: clockSkewCheck(skewMs).result }).toEqual({ skewMs, result });
    }
    expect(clockSkewCheck(90_000).detail).toMatch(/Check NTP/);
    expect(clockSkewCheck(10 * MIN).detail).toMatch(
      /10 min 0 s ahead of Stripe's.*refuses meter events.*Fix NTP/,
    );
  });
});
