import { and, gte, lt } from "drizzle-orm";
import type Stripe from "stripe";
import { customerResolver } from "../customers/customers.ts";
import type { Db } from "../db/client.ts";
import { meterReports, usageHourly } from "../db/schema.ts";

export type DriftRow = {
  customer: string;
  counted: number;
  reported: number;
  pending: number;
  stripe: number | null;
  /** counted - reported (sent rows by hour bucket): not yet reported, or over-reported */
  unreported: number;
  /** sent rows by timestamp - Stripe's summary: what Stripe lost or has in addition */
  stripeDrift: number | null;
};

/**
 * Compares, per customer over [from, to): what simmeter counted, what it reported, and what
 * Stripe's meter event summaries hold. Stripe aggregates asynchronously, so run it a little while
 * after reporting. Late rows are stamped in a later hour than their bucket; the Stripe comparison
 * therefore uses each row's timestamp, the counted comparison its bucket.
 */
export async function reconcile({
  db,
  stripe,
  meterId,
  from,
  to,
}: {
  db: Db;
  stripe: Stripe | null;
  meterId: string | null;
  from: number;
  to: number;
}): Promise<DriftRow[]> {
  const resolver = customerResolver(db);
  const rows = new Map<string, DriftRow>();
  const row = (customer: string) => {
    let r = rows.get(customer);
    if (!r) {
      r = {
        customer,
        counted: 0,
        reported: 0,
        pending: 0,
        stripe: null,
        unreported: 0,
        stripeDrift: null,
      };
      rows.set(customer, r);
    }
    return r;
  };
  const usage = db
    .select()
    .from(usageHourly)
    .where(and(gte(usageHourly.hour, from), lt(usageHourly.hour, to)))
    .all();
  for (const u of usage) {
    const c = resolver.resolve(u.simSid, u.hour);
    if (c) row(c).counted += u.bytes;
  }
  const sentByTs = new Map<string, number>();
  for (const m of db.select().from(meterReports).all()) {
    const inHour = m.hour >= from && m.hour < to;
    if (inHour && m.state === "sent") row(m.customerId).reported += m.value;
    if (inHour && m.state === "pending") row(m.customerId).pending += m.value;
    const ts = m.timestamp * 1000;
    if (m.state === "sent" && ts >= from && ts < to) {
      row(m.customerId);
      sentByTs.set(m.customerId, (sentByTs.get(m.customerId) ?? 0) + m.value);
    }
  }
  for (const r of rows.values()) {
    r.unreported = r.counted - r.reported;
    if (stripe && meterId) {
      let total = 0;
      for await (const s of stripe.billing.meters.listEventSummaries(meterId, {
        customer: r.customer,
        start_time: Math.floor(from / 1000),
        end_time: Math.floor(to / 1000),
      })) {
        total += s.aggregated_value;
      }
      r.stripe = total;
      r.stripeDrift = (sentByTs.get(r.customer) ?? 0) - total;
    }
  }
  return [...rows.values()].sort((a, b) => (a.customer < b.customer ? -1 : 1));
}

export function hasDrift(rows: readonly DriftRow[]): boolean {
  return rows.some((r) => r.unreported !== 0 || (r.stripeDrift !== null && r.stripeDrift !== 0));
}
