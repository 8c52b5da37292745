import type { Redis } from "ioredis";
import Stripe from "stripe";
import { describe, expect, it } from "vitest";
import { createLogger } from "../../src/lib/logger.ts";
import { type ReporterSettings, runReport } from "../../src/reporting/reporter.ts";
import { meterUnavailable } from "../../src/reporting/stripe.ts";
import { openTestLedger, type TestLedger } from "../helpers/ledger.ts";

// The reporter's retry semantics (p-retry for the attempts of a row, p-limit for the customers)
// against a scripted Stripe: what each answer does to the row, the run and the waits. The outbox
// is the ledger of the vitest project.

const HOUR = Date.parse("2026-11-23T09:00:00Z");
const NOW = HOUR + 30 * 60_000;

type Answer = "ok" | "500" | "429" | "timeout" | "no_customer" | "bad_key" | "no_meter";

const errorFor = (a: Exclude<Answer, "ok">): Error => {
  switch (a) {
    case "500":
      return new Stripe.errors.StripeAPIError({ message: "boom", statusCode: 500 });
    case "429":
      return new Stripe.errors.StripeRateLimitError({ message: "slow down", statusCode: 429 });
    case "timeout":
      return new Stripe.errors.StripeConnectionError({
        message: "Request aborted due to timeout being reached (300ms)",
      });
    case "no_customer":
      return new Stripe.errors.StripeInvalidRequestError({
        message: "No such customer: 'cus_a'",
        statusCode: 400,
      });
    case "bad_key":
      return new Stripe.errors.StripeAuthenticationError({
        message: "Invalid API Key provided",
        statusCode: 401,
      });
    case "no_meter":
      return new Stripe.errors.StripeInvalidRequestError({
        message: "No active meter was found with event_name 'supersim_data_bytes'.",
        code: "no_meter",
        param: "event_name",
        statusCode: 400,
      });
  }
};

/**
 * A reporter over an empty ledger whose outbox holds `rows` (customer, seq), a Stripe that answers
 * each call from `answers` in turn, a lease that is always free, and a sleep that only records.
 */
async function harness(
  rows: [customer: string, seq: number][],
  answers: Answer[],
  settings: Partial<ReporterSettings> = {},
  /** runs when a customer's lease is taken (another reporter's writes before ours) */
  onLease?: (sql: TestLedger["sql"]) => Promise<void>,
  /**
   * the first call is answered only once this many calls are in flight (or after 5 s): whether
   * calls overlap is then the reporter's doing, not how long each customer's ledger writes before
   * its first call take (milliseconds of commits on PostgreSQL, none on SQLite)
   */
  firstCallWaitsFor = 1,
) {
  const t = await openTestLedger();
  for (const [customerId, seq] of rows)
    await t.sql(
      `insert into meter_reports
         (identifier, customer_id, hour, seq, value, timestamp, late, state, created_at)
       values (?, ?, ?, ?, ?, ?, ?, 'pending', ?)`,
      `v1:${customerId}:${HOUR / 1000}:${seq}`,
      customerId,
      HOUR,
      seq,
      100 + seq,
      HOUR / 1000,
      false,
      NOW,
    );
  const log: string[] = [];
  const calls: { identifier: string; key: string; retries: number | undefined; at: number }[] = [];
  const inFlight = new Map<string, number>();
  let maxInFlight = 0;
  let maxPerCustomer = 0;
  const stripe = {
    billing: {
      meterEvents: {
        create: async (
          params: { identifier: string },
          opts: { idempotencyKey: string; maxNetworkRetries?: number },
        ) => {
          calls.push({
            identifier: params.identifier,
            key: opts.idempotencyKey,
            retries: opts.maxNetworkRetries,
            at: performance.now(),
          });
          const a = answers[calls.length - 1] ?? "ok";
          const customer = params.identifier.split(":")[1] ?? "";
          log.push(`call ${customer} ${a}`);
          inFlight.set(customer, (inFlight.get(customer) ?? 0) + 1);
          maxPerCustomer = Math.max(maxPerCustomer, inFlight.get(customer) ?? 0);
          maxInFlight = Math.max(
            maxInFlight,
            [...inFlight.values()].reduce((x, y) => x + y, 0),
          );
          if (calls.length === 1) {
            const until = performance.now() + 5000;
            const inFlightNow = () => [...inFlight.values()].reduce((x, y) => x + y, 0);
            while (inFlightNow() < firstCallWaitsFor && performance.now() < until)
              await new Promise((r) => setTimeout(r, 1));
          }
          await new Promise((r) => setTimeout(r, 5));
          inFlight.set(customer, (inFlight.get(customer) ?? 0) - 1);
          if (a !== "ok") throw errorFor(a);
          return {};
        },
      },
    },
  } as unknown as Stripe;
  const redis = {
    set: async () => {
      await onLease?.(t.sql);
      return "OK";
    },
    eval: async (script: string) => {
      if (script.includes("del")) log.push("release");
      return 1;
    },
  } as unknown as Redis;
  const run = () =>
    runReport({
      ledger: t.ledger,
      stripe,
      redis,
      logger: createLogger("silent"),
      settings: {
        eventName: "supersim_data_bytes",
        graceSeconds: 3600,
        concurrency: 4,
        timeoutMs: 300,
        attemptsPerRun: 6,
        redisPrefix: "t",
        ...settings,
      },
      now: () => NOW,
      sleep: async (ms) => {
        log.push(`sleep ${ms}`);
      },
    });
  const outbox = () =>
    t.sql<{ c: string; seq: number; state: string; attempts: number; d: number; f: number }>(
      `select customer_id as c, seq, state, attempts, in_doubt as d, first_call_at as f
         from meter_reports order by customer_id, seq`,
    );
  const overlap = () => ({ total: maxInFlight, perCustomer: maxPerCustomer });
  return { run, calls, log, outbox, overlap };
}

describe("the reporter's retries", () => {
  it("a 500 on every call: attemptsPerRun calls, each under the next Idempotency-Key and without SDK retries, p-retry's backoff between them; the row stays pending, in doubt", async () => {
    const h = await harness([["cus_a", 0]], ["500", "500", "500"], { attemptsPerRun: 3 });
    const s = await h.run();
    expect(s).toMatchObject({ calls: 3, sent: 0, failed: 0, stillPending: 1, fatal: null });
    const id = `v1:cus_a:${HOUR / 1000}:0`;
    expect(h.calls.map((c) => [c.key, c.retries])).toEqual([
      [`${id}:a0`, 0],
      [`${id}:a1`, 0],
      [`${id}:a2`, 0],
    ]);
    // 125–250 ms, then 250–500 ms (a millisecond of timer slack)
    const gaps = [1, 2].map((i) => (h.calls[i]?.at ?? 0) - (h.calls[i - 1]?.at ?? 0));
    expect(gaps[0]).toBeGreaterThanOrEqual(124);
    expect(gaps[1]).toBeGreaterThanOrEqual(249);
    expect(h.log.filter((l) => l.startsWith("sleep"))).toEqual([]);
    expect(await h.outbox()).toMatchObject([{ state: "pending", attempts: 3, d: 1, f: NOW }]);
  });

  it("reads the row again under the lease: an attempt another reporter counted meanwhile moves the Idempotency-Key on; a row it sent is not called", async () => {
    const id = (seq: number) => `v1:cus_a:${HOUR / 1000}:${seq}`;
    const h = await harness(
      [
        ["cus_a", 0],
        ["cus_a", 1],
      ],
      ["ok"],
      {},
      async (sql) => {
        // between this reporter's read of the pending rows and its lease
        await sql("update meter_reports set attempts = 2 where identifier = ?", id(0));
        await sql("update meter_reports set state = 'sent' where identifier = ?", id(1));
      },
    );
    const s = await h.run();
    expect(h.calls.map((c) => c.key)).toEqual([`${id(0)}:a2`]);
    expect(s).toMatchObject({ calls: 1, sent: 1, stillPending: 0 });
  });

  it("a timed-out call is waited out for 2 × the timeout before the next call, and after the last attempt before the lease is released", async () => {
    const h = await harness([["cus_a", 0]], ["timeout", "timeout"], { attemptsPerRun: 2 });
    const s = await h.run();
    expect(s).toMatchObject({ calls: 2, stillPending: 1 });
    expect(h.log).toEqual([
      "call cus_a timeout",
      "sleep 600",
      "call cus_a timeout",
      "sleep 600",
      "release",
    ]);
    expect(await h.outbox()).toMatchObject([{ state: "pending", d: 1 }]);
  });

  it("a 429 is retried without a wait-out and, refused outright, leaves the row out of doubt", async () => {
    const refused = await harness([["cus_a", 0]], ["429", "429"], { attemptsPerRun: 2 });
    expect(await refused.run()).toMatchObject({ calls: 2, stillPending: 1 });
    expect(refused.log.filter((l) => l.startsWith("sleep"))).toEqual([]);
    expect(await refused.outbox()).toMatchObject([
      { state: "pending", attempts: 2, d: 0, f: null },
    ]);

    const thenOk = await harness([["cus_a", 0]], ["429", "ok"]);
    expect(await thenOk.run()).toMatchObject({ calls: 2, sent: 1, stillPending: 0 });
    expect(await thenOk.outbox()).toMatchObject([{ state: "sent" }]);
  });

  it("a row left unconfirmed keeps the customer's later rows for the next run, in order", async () => {
    const h = await harness(
      [
        ["cus_a", 0],
        ["cus_a", 1],
      ],
      ["500"],
      { attemptsPerRun: 1 },
    );
    expect(await h.run()).toMatchObject({ calls: 1, stillPending: 2 });
    expect((await h.outbox()).map((r) => r.state)).toEqual(["pending", "pending"]);
  });

  it("a permanent refusal stops only its row (no retry); the customer's next row is sent", async () => {
    const h = await harness(
      [
        ["cus_a", 0],
        ["cus_a", 1],
      ],
      ["no_customer", "ok"],
    );
    expect(await h.run()).toMatchObject({ calls: 2, failed: 1, sent: 1, stillPending: 0 });
    expect(await h.outbox()).toMatchObject([
      { seq: 0, state: "failed", d: 0 },
      { seq: 1, state: "sent" },
    ]);
  });

  it.each([
    { answer: "bad_key" as const, message: /check STRIPE_SECRET_KEY/ },
    { answer: "no_meter" as const, message: /STRIPE_METER_EVENT_NAME.*run simmeter stripe setup/ },
  ])(
    "a fatal answer ($answer) stops the run: no call starts after it, every row stays pending and out of doubt",
    async ({ answer, message }) => {
      const h = await harness(
        [
          ["cus_a", 0],
          ["cus_a", 1],
          ["cus_b", 0],
        ],
        [answer],
        { concurrency: 1 },
      );
      const s = await h.run();
      expect(s.fatal).toMatch(message);
      expect(s).toMatchObject({ calls: 1, failed: 0, sent: 0, stillPending: 3 });
      expect(await h.outbox()).toMatchObject([
        { c: "cus_a", state: "pending", attempts: 1, d: 0, f: null },
        { c: "cus_a", state: "pending", attempts: 0, d: 0, f: null },
        { c: "cus_b", state: "pending", attempts: 0, d: 0, f: null },
      ]);
    },
  );

  it("customers run in parallel up to the concurrency, one call at a time each", async () => {
    const h = await harness(
      [
        ["cus_a", 0],
        ["cus_a", 1],
        ["cus_b", 0],
        ["cus_c", 0],
      ],
      [],
      { concurrency: 2 },
      undefined,
      2,
    );
    expect(await h.run()).toMatchObject({ calls: 4, sent: 4 });
    expect(h.overlap()).toEqual({ total: 2, perCustomer: 1 });
    // cus_a and cus_b start together, cus_c when a slot frees; cus_a's rows stay in order.
    const order = h.calls.map((c) => c.identifier.split(":").slice(1, 4).join(":"));
    expect(order.slice(0, 2)).toEqual([`cus_a:${HOUR / 1000}:0`, `cus_b:${HOUR / 1000}:0`]);
    expect(order.indexOf(`cus_a:${HOUR / 1000}:0`)).toBeLessThan(
      order.indexOf(`cus_a:${HOUR / 1000}:1`),
    );
  });
});

describe("which refusals mean the meter cannot take events", () => {
  const invalid = (raw: { message: string; code?: string; param?: string }) =>
    new Stripe.errors.StripeInvalidRequestError({ statusCode: 400, ...raw });

  it("recognises Stripe's codes, or a refusal of the event_name naming a meter", () => {
    expect(meterUnavailable(invalid({ message: "x", code: "no_meter" }))).toEqual({
      inactive: false,
    });
    expect(meterUnavailable(invalid({ message: "x", code: "archived_meter" }))).toEqual({
      inactive: true,
    });
    expect(
      meterUnavailable(
        invalid({ message: "No active meter found for event_name 'x'", param: "event_name" }),
      ),
    ).toEqual({ inactive: false });
    expect(
      meterUnavailable(
        invalid({ message: "The meter mtr_1 is inactive (archived).", param: "event_name" }),
      ),
    ).toEqual({ inactive: true });
  });

  it("leaves every other refusal to the usual classification", () => {
    expect(meterUnavailable(invalid({ message: "No such customer: 'cus_a'" }))).toBeNull();
    expect(
      meterUnavailable(
        invalid({ message: "Missing required param: event_name.", param: "event_name" }),
      ),
    ).toBeNull();
    expect(
      meterUnavailable(new Stripe.errors.StripeAPIError({ message: "meter", statusCode: 500 })),
    ).toBeNull();
    expect(meterUnavailable(new Error("no_meter"))).toBeNull();
  });
});
