import { spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import Stripe from "stripe";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  type StripeEmulator,
  type StripeEmulatorOptions,
  startStripeEmulator,
} from "../../scripts/stripe-emulator.ts";

type StripeError = InstanceType<typeof Stripe.errors.StripeError>;

const EVENT = "sim_data_bytes";
const HOUR = 3600;
const DAY = 86_400;
// Hour-aligned so per-hour expectations read naturally.
const START_MS = Date.UTC(2026, 0, 15, 12, 0, 0);
const T0 = START_MS / 1000;

let clock = START_MS;
const opened: StripeEmulator[] = [];

afterEach(async () => {
  await Promise.all(opened.splice(0).map((e) => e.close()));
  clock = START_MS;
});

async function emulator(opts: StripeEmulatorOptions = {}): Promise<StripeEmulator> {
  const emu = await startStripeEmulator({ now: () => clock, ...opts });
  opened.push(emu);
  return emu;
}

function client(emu: StripeEmulator, extra: Stripe.StripeConfig = {}): Stripe {
  return new Stripe(emu.apiKey, { ...emu.stripeConfig(), maxNetworkRetries: 0, ...extra });
}

/** An emulator with one raw sum meter and customers cus_1, cus_2 already known. */
async function meterSetup(opts: StripeEmulatorOptions = {}, extra: Stripe.StripeConfig = {}) {
  const emu = await emulator(opts);
  emu.addCustomer("cus_1");
  emu.addCustomer("cus_2");
  const stripe = client(emu, extra);
  const meter = await stripe.billing.meters.create({
    display_name: "SIM data",
    event_name: EVENT,
    default_aggregation: { formula: "sum" },
  });
  return { emu, stripe, meter };
}

type SendOpts = { identifier?: string; timestamp?: number; eventName?: string };
function send(
  stripe: Stripe,
  customer: string,
  value: number | string,
  opts: SendOpts = {},
  requestOptions?: Stripe.RequestOptions,
) {
  return stripe.billing.meterEvents.create(
    {
      event_name: opts.eventName ?? EVENT,
      payload: { stripe_customer_id: customer, value: String(value) },
      ...(opts.identifier === undefined ? {} : { identifier: opts.identifier }),
      ...(opts.timestamp === undefined ? {} : { timestamp: opts.timestamp }),
    },
    requestOptions,
  );
}

async function failure(p: Promise<unknown>): Promise<StripeError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof Stripe.errors.StripeError) return e;
    throw e;
  }
  throw new Error("expected the call to fail");
}

describe("stripe emulator: meters", () => {
  it("creates, lists by status, retrieves, deactivates and reactivates a meter", async () => {
    const { emu, stripe, meter } = await meterSetup();
    expect(meter).toMatchObject({
      object: "billing.meter",
      event_name: EVENT,
      status: "active",
      default_aggregation: { formula: "sum" },
      customer_mapping: { type: "by_id", event_payload_key: "stripe_customer_id" },
      value_settings: { event_payload_key: "value" },
      livemode: false,
    });
    expect(meter.id).toMatch(/^mtr_/);
    expect((await stripe.billing.meters.retrieve(meter.id)).id).toBe(meter.id);

    const deactivated = await stripe.billing.meters.deactivate(meter.id);
    expect(deactivated.status).toBe("inactive");
    expect((await stripe.billing.meters.list({ status: "active" })).data).toHaveLength(0);
    const inactive = await stripe.billing.meters.list({ status: "inactive" });
    expect(inactive).toMatchObject({ object: "list", has_more: false, url: "/v1/billing/meters" });
    expect(inactive.data.map((m) => m.id)).toEqual([meter.id]);

    expect((await stripe.billing.meters.reactivate(meter.id)).status).toBe("active");
    expect(emu.stats().requests).toBe(6);
  });

  it("rejects a second meter with an event_name already in use", async () => {
    const { stripe } = await meterSetup();
    const err = await failure(
      stripe.billing.meters.create({
        display_name: "again",
        event_name: EVENT,
        default_aggregation: { formula: "sum" },
      }),
    );
    expect(err).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(err.message).toContain("already exists");
  });

  it("answers 404 resource_missing for an unknown meter id", async () => {
    const { stripe } = await meterSetup();
    const err = await failure(stripe.billing.meters.retrieve("mtr_nope"));
    expect(err).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(err.statusCode).toBe(404);
    expect(err.code).toBe("resource_missing");
  });

  it("honours custom customer and value payload keys from the meter", async () => {
    const emu = await emulator();
    emu.addCustomer("cus_1");
    const stripe = client(emu);
    await stripe.billing.meters.create({
      display_name: "custom keys",
      event_name: "custom",
      default_aggregation: { formula: "sum" },
      customer_mapping: { type: "by_id", event_payload_key: "customer" },
      value_settings: { event_payload_key: "bytes" },
    });
    await stripe.billing.meterEvents.create({
      event_name: "custom",
      payload: { customer: "cus_1", bytes: "77" },
    });
    expect(emu.totalsByCustomer("custom")).toEqual(new Map([["cus_1", 77]]));
  });
});

describe("stripe emulator: meter events", () => {
  it("records an accepted event and answers with a billing.meter_event", async () => {
    const { emu, stripe } = await meterSetup();
    const ev = await send(stripe, "cus_1", 1234567, { identifier: "sim-1-h0", timestamp: T0 - 10 });
    expect(ev).toMatchObject({
      object: "billing.meter_event",
      event_name: EVENT,
      identifier: "sim-1-h0",
      payload: { stripe_customer_id: "cus_1", value: "1234567" },
      timestamp: T0 - 10,
      created: T0,
      livemode: false,
    });
    expect(emu.events()).toEqual([
      {
        identifier: "sim-1-h0",
        eventName: EVENT,
        customer: "cus_1",
        value: 1234567,
        timestamp: T0 - 10,
        receivedAt: START_MS,
      },
    ]);
    expect(emu.stats().meterEventCalls).toBe(1);
  });

  it("generates a distinct identifier when none is given", async () => {
    const { stripe } = await meterSetup();
    const a = await send(stripe, "cus_1", 1);
    const b = await send(stripe, "cus_1", 1);
    expect(a.identifier).not.toBe("");
    expect(a.identifier).not.toBe(b.identifier);
  });

  it("a duplicate identifier is rejected with already exists and Stripe-Should-Retry false", async () => {
    // SDK retries on: the header alone must stop it from retrying.
    const { emu, stripe } = await meterSetup({}, { maxNetworkRetries: 2 });
    await send(stripe, "cus_1", 10, { identifier: "dup-1" });
    const err = await failure(send(stripe, "cus_1", 10, { identifier: "dup-1" }));
    expect(err).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(err.statusCode).toBe(400);
    expect(err.rawType).toBe("invalid_request_error");
    expect(err.message).toBe("An event already exists with identifier dup-1.");
    expect(err.headers?.["stripe-should-retry"]).toBe("false");
    expect(emu.stats()).toMatchObject({ meterEventCalls: 2, duplicateIdentifiers: 1 });
    expect(emu.totalsByCustomer()).toEqual(new Map([["cus_1", 10]]));
  });

  it("an event for an inactive meter is rejected as archived", async () => {
    const { emu, stripe, meter } = await meterSetup();
    await stripe.billing.meters.deactivate(meter.id);
    const err = await failure(send(stripe, "cus_1", 5));
    expect(err).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(err.message).toMatch(/inactive \(archived\)/);
    expect(err.code).toBe("archived_meter");
    await stripe.billing.meters.reactivate(meter.id);
    await send(stripe, "cus_1", 5);
    expect(emu.events()).toHaveLength(1);
  });

  it("an event whose event_name matches no meter is rejected", async () => {
    const { stripe } = await meterSetup();
    const err = await failure(send(stripe, "cus_1", 5, { eventName: "nope" }));
    expect(err.statusCode).toBe(400);
    expect(err.code).toBe("no_meter");
  });

  it("an event missing the customer key or the value key is rejected", async () => {
    const { emu, stripe } = await meterSetup();
    const noCustomer = await failure(
      stripe.billing.meterEvents.create({ event_name: EVENT, payload: { value: "1" } }),
    );
    expect(noCustomer.code).toBe("meter_event_no_customer_defined");
    expect(noCustomer.message).toBe(
      "Customer mapping key stripe_customer_id not found in payload.",
    );
    const noValue = await failure(
      stripe.billing.meterEvents.create({
        event_name: EVENT,
        payload: { stripe_customer_id: "cus_1" },
      }),
    );
    expect(noValue.statusCode).toBe(400);
    expect(noValue.param).toBe("payload[value]");
    expect(emu.events()).toHaveLength(0);
  });

  it("an event for an unknown customer is rejected with resource_missing naming the customer", async () => {
    const { emu, stripe } = await meterSetup();
    const err = await failure(send(stripe, "cus_ghost", 5));
    expect(err).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(err.statusCode).toBe(400);
    expect(err.code).toBe("resource_missing");
    expect(err.message).toContain("cus_ghost");
    expect(emu.events()).toHaveLength(0);
  });

  it("acceptAnyCustomer accepts events for customers it never heard of", async () => {
    const { emu, stripe } = await meterSetup({ acceptAnyCustomer: true });
    await send(stripe, "cus_anyone", 5);
    expect((await stripe.customers.retrieve("cus_anyone")).id).toBe("cus_anyone");
    expect(emu.totalsByCustomer()).toEqual(new Map([["cus_anyone", 5]]));
  });

  it("negative whole-number values are accepted as corrections", async () => {
    const { emu, stripe } = await meterSetup();
    await send(stripe, "cus_1", 100);
    await send(stripe, "cus_1", -42);
    expect(emu.totalsByCustomer()).toEqual(new Map([["cus_1", 58]]));
  });

  it("values allow 15 significant digits and reject 16 or fractions", async () => {
    const { emu, stripe } = await meterSetup();
    await send(stripe, "cus_1", "999999999999999");
    await send(stripe, "cus_1", "-000000000000000000001");
    const tooLong = await failure(send(stripe, "cus_1", "1000000000000000"));
    expect(tooLong.statusCode).toBe(400);
    expect(tooLong.code).toBe("meter_event_value_too_many_digits");
    for (const bad of ["1.5", "12abc", "", "1e3"]) {
      const err = await failure(send(stripe, "cus_1", bad));
      expect(err.code, bad).toBe("meter_event_invalid_value");
    }
    expect(emu.totalsByCustomer()).toEqual(new Map([["cus_1", 999999999999998]]));
  });

  it("timestamps must lie between now minus 35 days and now plus 5 minutes of the injected clock", async () => {
    const { emu, stripe } = await meterSetup();
    const oldest = T0 - 35 * DAY;
    await send(stripe, "cus_1", 1, { timestamp: oldest });
    await send(stripe, "cus_1", 1, { timestamp: T0 + 300 });
    const past = await failure(send(stripe, "cus_1", 1, { timestamp: oldest - 1 }));
    expect(past.code).toBe("timestamp_too_far_in_past");
    const future = await failure(send(stripe, "cus_1", 1, { timestamp: T0 + 301 }));
    expect(future.code).toBe("timestamp_in_future");

    clock += DAY * 1000;
    const nowTooOld = await failure(send(stripe, "cus_1", 1, { timestamp: oldest }));
    expect(nowTooOld.code).toBe("timestamp_too_far_in_past");
    expect((await send(stripe, "cus_1", 1)).timestamp).toBe(T0 + DAY);
    expect(emu.events()).toHaveLength(3);
  });

  it("unknown parameters are rejected like Stripe does", async () => {
    const { stripe } = await meterSetup();
    const params = {
      event_name: EVENT,
      payload: { stripe_customer_id: "cus_1", value: "1" },
      iccid: "8901",
    } as Stripe.Billing.MeterEventCreateParams;
    const err = await failure(stripe.billing.meterEvents.create(params));
    expect(err.message).toBe("Received unknown parameter: iccid");
  });
});

describe("stripe emulator: idempotency", () => {
  it("the same Idempotency-Key replays the stored answer", async () => {
    const { emu, stripe } = await meterSetup();
    const first = await send(stripe, "cus_1", 10, {}, { idempotencyKey: "key-1" });
    clock += 60_000;
    const again = await send(stripe, "cus_1", 10, {}, { idempotencyKey: "key-1" });
    expect(again.identifier).toBe(first.identifier);
    expect(again.created).toBe(first.created);
    expect(again.lastResponse.headers["idempotent-replayed"]).toBe("true");
    expect(emu.events()).toHaveLength(1);
    expect(emu.stats().idempotentReplays).toBe(1);
  });

  it("the same Idempotency-Key with different parameters is an idempotency error", async () => {
    const { stripe } = await meterSetup();
    await send(stripe, "cus_1", 10, {}, { idempotencyKey: "key-2" });
    const err = await failure(send(stripe, "cus_1", 11, {}, { idempotencyKey: "key-2" }));
    expect(err).toBeInstanceOf(Stripe.errors.StripeIdempotencyError);
    expect(err.rawType).toBe("idempotency_error");
    expect(err.statusCode).toBe(400);
  });

  it("a stored 500 is replayed for the same key while a new key succeeds", async () => {
    const { emu, stripe } = await meterSetup({ faults: { error500Rate: 1, seed: 1 } });
    const first = await failure(send(stripe, "cus_1", 10, {}, { idempotencyKey: "key-500" }));
    expect(first).toBeInstanceOf(Stripe.errors.StripeAPIError);
    expect(first.statusCode).toBe(500);
    emu.setFaults({});
    const replay = await failure(send(stripe, "cus_1", 10, {}, { idempotencyKey: "key-500" }));
    expect(replay).toBeInstanceOf(Stripe.errors.StripeAPIError);
    expect(replay.headers?.["idempotent-replayed"]).toBe("true");
    expect(emu.events()).toHaveLength(0);
    await send(stripe, "cus_1", 10, {}, { idempotencyKey: "key-500-b" });
    expect(emu.events()).toHaveLength(1);
    expect(emu.stats()).toMatchObject({ injected500: 1, idempotentReplays: 1 });
  });

  it("a request that failed validation leaves its key unused", async () => {
    const { emu, stripe } = await meterSetup();
    const err = await failure(send(stripe, "cus_new", 10, {}, { idempotencyKey: "key-v" }));
    expect(err.code).toBe("resource_missing");
    emu.addCustomer("cus_new");
    await send(stripe, "cus_new", 10, {}, { idempotencyKey: "key-v" });
    expect(emu.stats().idempotentReplays).toBe(0);
    expect(emu.events()).toHaveLength(1);
  });

  it("keys are forgotten after 24 hours of the emulator clock", async () => {
    const { emu, stripe } = await meterSetup();
    await send(stripe, "cus_1", 10, { identifier: "a" }, { idempotencyKey: "key-24" });
    clock += DAY * 1000 - 1000;
    const early = await failure(
      send(stripe, "cus_1", 10, { identifier: "b" }, { idempotencyKey: "key-24" }),
    );
    expect(early).toBeInstanceOf(Stripe.errors.StripeIdempotencyError);
    clock += 1000;
    await send(stripe, "cus_1", 10, { identifier: "b" }, { idempotencyKey: "key-24" });
    expect(emu.events().map((e) => e.identifier)).toEqual(["a", "b"]);
  });
});

describe("stripe emulator: concurrency, rate limits and faults", () => {
  it("overlapping calls for one customer and meter get 429 StripeRateLimitError, other customers proceed", async () => {
    const { emu, stripe } = await meterSetup({
      faults: { delayAfterRecordRate: 1, delayMs: 400, seed: 7 },
    });
    const slow = send(stripe, "cus_1", 1, { identifier: "slow" });
    await vi.waitFor(() => expect(emu.events()).toHaveLength(1));

    const err = await failure(send(stripe, "cus_1", 2, { identifier: "overlap" }));
    expect(err).toBeInstanceOf(Stripe.errors.StripeRateLimitError);
    expect(err.statusCode).toBe(429);
    expect(err.code).toBe("rate_limit");
    expect(err.rawType).toBe("invalid_request_error");
    expect(err.headers?.["stripe-should-retry"]).toBeUndefined();
    expect(err.message).toContain("one concurrent call per customer per meter");

    const other = await send(stripe, "cus_2", 3, { identifier: "other" });
    expect(other.identifier).toBe("other");
    expect((await slow).identifier).toBe("slow");

    emu.setFaults({});
    await send(stripe, "cus_1", 2, { identifier: "after" });
    expect(emu.stats().concurrencyViolations).toBe(1);
    expect(emu.totalsByCustomer()).toEqual(
      new Map([
        ["cus_1", 3],
        ["cus_2", 3],
      ]),
    );
  });

  it("delayed answers record the event, time the client out, and hold the customer until written", async () => {
    const { emu, stripe } = await meterSetup(
      { faults: { delayAfterRecordRate: 1, delayMs: 600, seed: 3 } },
      { timeout: 200 },
    );
    const opts = { identifier: "sim-1-h5" };
    const timedOut = await failure(send(stripe, "cus_1", 9, opts, { idempotencyKey: "k-delay" }));
    expect(timedOut).toBeInstanceOf(Stripe.errors.StripeConnectionError);
    expect(timedOut.message).toContain("timeout");
    expect(emu.events().map((e) => e.identifier)).toEqual(["sim-1-h5"]);

    // An immediate retry collides with the answer still being held.
    const retry = await failure(send(stripe, "cus_1", 9, opts, { idempotencyKey: "k-delay" }));
    expect(retry).toBeInstanceOf(Stripe.errors.StripeRateLimitError);

    emu.setFaults({});
    await vi.waitFor(
      () => expect(emu.stats().byRoute["POST /v1/billing/meter_events 200"]).toBe(1),
      { timeout: 2000 },
    );
    const replay = await send(stripe, "cus_1", 9, opts, { idempotencyKey: "k-delay" });
    expect(replay.identifier).toBe("sim-1-h5");
    expect(replay.lastResponse.headers["idempotent-replayed"]).toBe("true");
    expect(emu.events()).toHaveLength(1);
    expect(emu.stats()).toMatchObject({ injectedDelays: 1, concurrencyViolations: 1 });
  });

  it("injects 500s and 429s at the configured rates, deterministically for a seed", async () => {
    async function run() {
      const { emu, stripe } = await meterSetup({
        faults: { error500Rate: 0.2, error429Rate: 0.1, seed: 42 },
      });
      const outcomes: string[] = [];
      for (let i = 0; i < 200; i++) {
        try {
          await send(stripe, "cus_1", 1, { identifier: `e${i}` });
          outcomes.push("ok");
        } catch (e) {
          if (e instanceof Stripe.errors.StripeRateLimitError) {
            expect(e.headers?.["stripe-should-retry"]).toBeUndefined();
            outcomes.push("429");
          } else if (e instanceof Stripe.errors.StripeAPIError) outcomes.push("500");
          else throw e;
        }
      }
      return { emu, outcomes };
    }
    const a = await run();
    const b = await run();
    expect(b.outcomes).toEqual(a.outcomes);
    const count = (k: string) => a.outcomes.filter((o) => o === k).length;
    const stats = a.emu.stats();
    expect(stats.injected500).toBe(count("500"));
    expect(stats.injected429).toBe(count("429"));
    expect(count("500")).toBeGreaterThan(20);
    expect(count("500")).toBeLessThan(60);
    expect(count("429")).toBeGreaterThan(5);
    expect(count("429")).toBeLessThan(40);
    // Injected errors record nothing.
    expect(a.emu.events()).toHaveLength(count("ok"));
  });

  it("calls over rateLimitPerSecond get 429 StripeRateLimitError", async () => {
    const emu = await emulator({ rateLimitPerSecond: 3 });
    const stripe = client(emu);
    const results = await Promise.allSettled(
      Array.from({ length: 6 }, () => stripe.balance.retrieve()),
    );
    const rejected = results.flatMap((r) => (r.status === "rejected" ? [r.reason] : []));
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(3);
    expect(rejected).toHaveLength(3);
    for (const e of rejected) expect(e).toBeInstanceOf(Stripe.errors.StripeRateLimitError);
    expect(emu.stats().rateLimited).toBe(3);
  });
});

describe("stripe emulator: summaries, adjustments and drift", () => {
  // The clock sits two hours after T0 so every seeded hour lies in the past.
  const SEEDED_NOW_MS = START_MS + 2 * HOUR * 1000;
  async function seeded() {
    const ctx = await meterSetup();
    clock = SEEDED_NOW_MS;
    await send(ctx.stripe, "cus_1", 1, { timestamp: T0 - HOUR, identifier: "h-1" });
    await send(ctx.stripe, "cus_1", 5, { timestamp: T0 + 10, identifier: "h0-a" });
    await send(ctx.stripe, "cus_1", 7, { timestamp: T0 + 100, identifier: "h0-b" });
    await send(ctx.stripe, "cus_1", 11, { timestamp: T0 + HOUR + 5, identifier: "h1" });
    await send(ctx.stripe, "cus_2", 1000, { timestamp: T0, identifier: "other" });
    return ctx;
  }

  it("event summaries aggregate one customer per hour or over the whole range", async () => {
    const { stripe, meter } = await seeded();
    const range = { customer: "cus_1", start_time: T0 - HOUR, end_time: T0 + 2 * HOUR };
    const hourly = await stripe.billing.meters.listEventSummaries(meter.id, {
      ...range,
      value_grouping_window: "hour",
    });
    expect(hourly.has_more).toBe(false);
    expect(hourly.data.map((s) => [s.start_time, s.end_time, s.aggregated_value])).toEqual([
      [T0 - HOUR, T0, 1],
      [T0, T0 + HOUR, 12],
      [T0 + HOUR, T0 + 2 * HOUR, 11],
    ]);
    expect(hourly.data[0]).toMatchObject({
      object: "billing.meter_event_summary",
      meter: meter.id,
      livemode: false,
    });
    const whole = await stripe.billing.meters.listEventSummaries(meter.id, range);
    expect(whole.data.map((s) => s.aggregated_value)).toEqual([24]);
  });

  it("event summaries require a customer and minute- or window-aligned times", async () => {
    const { stripe, meter } = await seeded();
    const list = (p: Record<string, unknown>) =>
      failure(
        stripe.billing.meters.listEventSummaries(
          meter.id,
          p as unknown as Stripe.Billing.MeterListEventSummariesParams,
        ),
      );
    expect((await list({ start_time: T0, end_time: T0 + HOUR })).param).toBe("customer");
    expect((await list({ customer: "cus_1", end_time: T0 + HOUR })).param).toBe("start_time");
    const misaligned = await list({ customer: "cus_1", start_time: T0 + 30, end_time: T0 + HOUR });
    expect(misaligned.statusCode).toBe(400);
    expect(misaligned.message).toContain("minute");
    const notHour = await list({
      customer: "cus_1",
      start_time: T0 + 60,
      end_time: T0 + HOUR,
      value_grouping_window: "hour",
    });
    expect(notHour.param).toBe("value_grouping_window");
  });

  it("event summaries paginate like Stripe lists and auto-pagination sees every window", async () => {
    const { stripe, meter } = await seeded();
    const params = {
      customer: "cus_1",
      start_time: T0 - 12 * HOUR,
      end_time: T0 + 12 * HOUR,
      value_grouping_window: "hour" as const,
    };
    const first = await stripe.billing.meters.listEventSummaries(meter.id, params);
    expect(first.data).toHaveLength(10);
    expect(first.has_more).toBe(true);
    const all = [];
    for await (const s of stripe.billing.meters.listEventSummaries(meter.id, params)) all.push(s);
    expect(all).toHaveLength(24);
    expect(new Set(all.map((s) => s.id)).size).toBe(24);
    expect(all.reduce((sum, s) => sum + s.aggregated_value, 0)).toBe(24);
  });

  it("a cancel adjustment within 24 hours removes the event from totals and summaries", async () => {
    const { emu, stripe, meter } = await seeded();
    const adj = await stripe.billing.meterEventAdjustments.create({
      event_name: EVENT,
      type: "cancel",
      cancel: { identifier: "h0-a" },
    });
    expect(adj).toMatchObject({
      object: "billing.meter_event_adjustment",
      cancel: { identifier: "h0-a" },
      status: "complete",
      type: "cancel",
    });
    expect(emu.totalsByCustomer().get("cus_1")).toBe(19);
    expect(emu.events().find((e) => e.identifier === "h0-a")?.cancelledAt).toBe(SEEDED_NOW_MS);
    const s = await stripe.billing.meters.listEventSummaries(meter.id, {
      customer: "cus_1",
      start_time: T0,
      end_time: T0 + HOUR,
    });
    expect(s.data[0]?.aggregated_value).toBe(7);

    const unknown = await failure(
      stripe.billing.meterEventAdjustments.create({
        event_name: EVENT,
        type: "cancel",
        cancel: { identifier: "nope" },
      }),
    );
    expect(unknown.code).toBe("resource_missing");

    clock += DAY * 1000 + 1000;
    const late = await failure(
      stripe.billing.meterEventAdjustments.create({
        event_name: EVENT,
        type: "cancel",
        cancel: { identifier: "h0-b" },
      }),
    );
    expect(late.statusCode).toBe(400);
    expect(late.message).toContain("24 hours");
    expect(emu.totalsByCustomer().get("cus_1")).toBe(19);
  });

  it("tampered events count in totals, hourly totals and summaries", async () => {
    const { emu, stripe, meter } = await seeded();
    emu.tamper({ customer: "cus_1", value: 100, timestamp: T0 + HOUR + 50 });
    expect(emu.totalsByCustomer(EVENT).get("cus_1")).toBe(124);
    expect(emu.totalsByCustomer("other_meter").size).toBe(0);
    expect(emu.totalsByCustomerHour().get("cus_1")).toEqual(
      new Map([
        [T0 - HOUR, 1],
        [T0, 12],
        [T0 + HOUR, 111],
      ]),
    );
    const s = await stripe.billing.meters.listEventSummaries(meter.id, {
      customer: "cus_1",
      start_time: T0 + HOUR,
      end_time: T0 + 2 * HOUR,
    });
    expect(s.data[0]?.aggregated_value).toBe(111);
  });
});

describe("stripe emulator: customers, account, auth and routing", () => {
  it("creates customers that meter events may then name, and 404s unknown ones", async () => {
    const { emu, stripe } = await meterSetup();
    const c = await stripe.customers.create({ email: "ops@example.com" });
    expect(c.id).toMatch(/^cus_/);
    expect(c).toMatchObject({ object: "customer", email: "ops@example.com" });
    expect((await stripe.customers.retrieve(c.id)).id).toBe(c.id);
    await send(stripe, c.id, 3);
    expect(emu.totalsByCustomer().get(c.id)).toBe(3);
    const err = await failure(stripe.customers.retrieve("cus_missing"));
    expect(err).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(err.statusCode).toBe(404);
    expect(err.code).toBe("resource_missing");
  });

  it("answers balance and account look-ups for key checks", async () => {
    const emu = await emulator();
    const stripe = client(emu);
    expect((await stripe.balance.retrieve()).object).toBe("balance");
    expect((await stripe.accounts.retrieveCurrent()).object).toBe("account");
  });

  it("a wrong or missing API key gets 401 StripeAuthenticationError", async () => {
    const emu = await emulator();
    const wrong = new Stripe("sk_test_wrong_key_123", {
      ...emu.stripeConfig(),
      maxNetworkRetries: 0,
    });
    const err = await failure(wrong.balance.retrieve());
    expect(err).toBeInstanceOf(Stripe.errors.StripeAuthenticationError);
    expect(err.statusCode).toBe(401);

    const res = await fetch(`${emu.url}/v1/balance`);
    expect(res.status).toBe(401);
    const body = (await res.json()) as { error: { type: string; message: string } };
    expect(body.error.type).toBe("authentication_error");
    expect(body.error.message).toContain("API key");
  });

  it("an unknown route gets a Stripe-style 404", async () => {
    const emu = await emulator();
    const res = await fetch(`${emu.url}/v1/nope`, {
      headers: { Authorization: `Bearer ${emu.apiKey}` },
    });
    expect(res.status).toBe(404);
    const body = (await res.json()) as { error: { type: string; message: string } };
    expect(body.error.type).toBe("invalid_request_error");
    expect(body.error.message).toContain("Unrecognized request URL (GET: /v1/nope)");
    const err = await failure(client(emu).rawRequest("GET", "/v1/nope"));
    expect(err).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(err.statusCode).toBe(404);
  });

  it("runs from the command line and prints its URL and key", async () => {
    const script = fileURLToPath(new URL("../../scripts/stripe-emulator.ts", import.meta.url));
    const child = spawn(
      process.execPath,
      ["--import", "tsx", script, "--port", "0", "--accept-any-customer"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    try {
      let out = "";
      child.stdout.setEncoding("utf8");
      await new Promise<void>((resolve, reject) => {
        child.stdout.on("data", (chunk: string) => {
          out += chunk;
          if (out.includes("API key:")) resolve();
        });
        child.once("exit", (code) => reject(new Error(`emulator exited early (${code})`)));
      });
      const url = /listening on (http:\/\/\S+)/.exec(out)?.[1];
      const key = /API key: (\S+)/.exec(out)?.[1];
      expect(key).toBe("sk_test_emulator");
      const { hostname, port } = new URL(url ?? "");
      const stripe = new Stripe(key ?? "", {
        host: hostname,
        port: Number(port),
        protocol: "http",
        maxNetworkRetries: 0,
      });
      await stripe.billing.meters.create({
        display_name: "cli",
        event_name: EVENT,
        default_aggregation: { formula: "sum" },
      });
      expect((await send(stripe, "cus_from_anywhere", 4)).identifier).not.toBe("");
    } finally {
      child.kill("SIGTERM");
      if (child.exitCode === null) await once(child, "exit");
    }
  });
});
