import type { CustomerBilling } from "../../src/billing/periods.ts";
import { storeBilling } from "../../src/billing/subscriptions.ts";
import { openDb } from "../../src/db/client.ts";
import { type IngestSettings, ingestDeliveries, prepareIngest } from "../../src/ingest/ingest.ts";
import type { Delivery } from "../../src/ingest/job.ts";

export const defaultSettings: IngestSettings = {
  billingMode: "realtime",
  attribution: "end",
  retentionDays: 100_000,
  maxBytesPerSecond: 250_000_000,
};

/** A real SQLite database in memory, with the real migrations applied. */
export function memoryIngest(settings: Partial<IngestSettings> = {}, now = () => Date.now()) {
  const db = openDb(":memory:");
  const stmts = prepareIngest(db);
  const ctx = { db, stmts, settings: { ...defaultSettings, ...settings }, now };
  let n = 0;
  return {
    db,
    ctx,
    ingest(events: unknown[], source: Delivery["source"] = "unsigned") {
      n++;
      return ingestDeliveries(ctx, {
        v: 1,
        deliveries: [{ id: `d${n}`, receivedAt: now(), source, events }],
      });
    },
    usage(): Record<string, number> {
      const rows = db.$client
        .prepare(
          "select sim_sid, hour, bytes from usage_hourly where bytes != 0 order by sim_sid, hour",
        )
        .all() as { sim_sid: string; hour: number; bytes: number }[];
      return Object.fromEntries(
        rows.map((r) => [`${r.sim_sid}@${new Date(r.hour).toISOString()}`, r.bytes]),
      );
    },
  };
}

/**
 * Stores, for each customer, one active metered subscription item whose current period spans
 * [start, end): what the planner stamps by when a test plans without Stripe.
 */
export function subscribeAll(
  db: ReturnType<typeof openDb>,
  customers: readonly string[],
  { start = 0, end = Date.UTC(2100, 0, 1), now = Date.now() } = {},
): void {
  storeBilling(
    db,
    customers.map((customerId) => ({
      customerId,
      state: "ok" as const,
      detail: null,
      subscriptionId: `sub_${customerId}`,
      itemId: `si_${customerId}`,
      priceId: "price_test",
      periodStart: start,
      periodEnd: end,
      previous: null,
      refreshedAt: now,
    })),
  );
}

/**
 * The billing rows subscribeAll stores: for each customer one active metered subscription item
 * whose current period spans [start, end) (shared with the async subscribeAll of ledger.ts).
 */
export function subscriptionRows(
  customers: readonly string[],
  { start = 0, end = Date.UTC(2100, 0, 1), now = Date.now() } = {},
): CustomerBilling[] {
  return customers.map((customerId) => ({
    customerId,
    state: "ok" as const,
    detail: null,
    subscriptionId: `sub_${customerId}`,
    itemId: `si_${customerId}`,
    priceId: "price_test",
    periodStart: start,
    periodEnd: end,
    previous: null,
    refreshedAt: now,
  }));
}
