import type Stripe from "stripe";
import { HOUR_MS, hourStart } from "../accounting/buckets.ts";
import type { MeterReport, meterReports } from "../db/schema.ts";
import type { Ledger } from "../ledger/port.ts";

type MeterReportInsert = typeof meterReports.$inferInsert;

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
  ledger,
  stripe,
  meterId,
  from,
  to,
}: {
  ledger: Pick<Ledger, "customers" | "outbox">;
  stripe: Stripe | null;
  meterId: string | null;
  from: number;
  to: number;
}): Promise<DriftRow[]> {
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
  // usage and outbox from one snapshot: a planning pass between two reads would show drift
  const { usage, reports } = await ledger.customers.accounts(from, to);
  for (const u of usage) if (u.customer) row(u.customer).counted += u.bytes;
  const sentByTs = new Map<string, number>();
  for (const m of reports) {
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

/** A settled difference between what Stripe holds and what simmeter believes it sent, per hour. */
export type StripeDifference = {
  customer: string;
  /** the hour the events are stamped in (Stripe's summaries are by timestamp) */
  hour: number;
  /** the usage bucket the difference is recorded against */
  bucket: number;
  stripe: number;
  sent: number;
  /** stripe − sent: what Stripe holds beyond (or, negative, short of) the sent rows */
  difference: number;
};

/**
 * Per customer and hour over [from, to): Stripe's meter summary minus the rows simmeter marked
 * sent. Only settled hours count: no pending row stamped in the hour and nothing sent there in
 * the last `settleMs` (Stripe aggregates asynchronously). Such a difference means the local
 * outbox is wrong about Stripe: a lost commit (power loss, a restored backup) let a re-planned
 * row reuse an identifier Stripe already held with another value, or Stripe dropped an event.
 */
export async function stripeDifferences({
  ledger,
  stripe,
  meterId,
  from,
  to,
  now,
  settleMs,
}: {
  ledger: Pick<Ledger, "customers" | "outbox">;
  stripe: Stripe;
  meterId: string;
  from: number;
  to: number;
  now: number;
  settleMs: number;
}): Promise<StripeDifference[]> {
  type Local = { sent: number; unsettled: boolean; buckets: Map<number, boolean> };
  const local = new Map<string, Map<number, Local>>();
  for (const m of await ledger.outbox.touching(from, to)) {
    const ts = m.timestamp * 1000;
    if (ts < from || ts >= to) continue;
    const hour = hourStart(ts);
    const byHour = local.get(m.customerId) ?? new Map<number, Local>();
    local.set(m.customerId, byHour);
    const l = byHour.get(hour) ?? { sent: 0, unsettled: false, buckets: new Map() };
    byHour.set(hour, l);
    if (m.state === "sent") l.sent += m.value;
    // A pending row, or a stopped one (its failed call may have been recorded), or one sent
    // recently (Stripe aggregates asynchronously): not settled.
    if (m.state === "pending" || m.state === "failed" || (m.sentAt ?? 0) > now - settleMs)
      l.unsettled = true;
    l.buckets.set(m.hour, (l.buckets.get(m.hour) ?? false) || (!m.late && m.hour === hour));
  }
  const customers = new Set([...local.keys(), ...(await ledger.customers.billed())]);
  const out: StripeDifference[] = [];
  for (const customer of [...customers].sort()) {
    const stripeByHour = new Map<number, number>();
    for await (const s of stripe.billing.meters.listEventSummaries(meterId, {
      customer,
      start_time: Math.floor(from / 1000),
      end_time: Math.floor(to / 1000),
      value_grouping_window: "hour",
    })) {
      const h = s.start_time * 1000;
      stripeByHour.set(h, (stripeByHour.get(h) ?? 0) + s.aggregated_value);
    }
    const mine = local.get(customer) ?? new Map<number, Local>();
    const hours = new Set([...stripeByHour.keys(), ...mine.keys()]);
    for (const hour of [...hours].sort((a, b) => a - b)) {
      const l = mine.get(hour);
      if (l?.unsettled || hour + HOUR_MS > now - settleMs) continue;
      const s = stripeByHour.get(hour) ?? 0;
      const sent = l?.sent ?? 0;
      if (s === sent) continue;
      // Record it against the bucket whose rows are stamped in this hour: its own bucket when
      // one of its rows is there, else the (late) bucket stamped there, else the hour itself.
      const buckets = l ? [...l.buckets.entries()] : [];
      const bucket =
        buckets.find(([, own]) => own)?.[0] ??
        buckets.map(([b]) => b).sort((a, b) => a - b)[0] ??
        hour;
      out.push({ customer, hour, bucket, stripe: s, sent, difference: s - sent });
    }
  }
  return out;
}

/**
 * The `observed` outbox row that records one difference (never sent: it says what Stripe holds,
 * and the next planning pass sends counted − held under a new identifier). `seq` is one past the
 * highest seq of the customer's bucket.
 */
export function observedRow(d: StripeDifference, seq: number, now: number): MeterReportInsert {
  return {
    identifier: `observed:${d.customer}:${Math.floor(d.bucket / 1000)}:${seq}`,
    customerId: d.customer,
    hour: d.bucket,
    seq,
    value: d.difference,
    timestamp: Math.floor(d.hour / 1000),
    late: false,
    kind: "observed",
    state: "sent",
    createdAt: now,
    sentAt: now,
    lastError: `reconcile --repair: Stripe held ${d.stripe}, sent rows ${d.sent}`,
  };
}

/**
 * Records each difference as an `observed` outbox row (never sent) and its hour dirty: the
 * outbox then says what Stripe really holds, and the next planning pass sends counted − held
 * under a new identifier. Returns the rows written.
 */
export function recordStripeDifferences(
  ledger: Pick<Ledger, "outbox">,
  diffs: readonly StripeDifference[],
  now: number,
  /** when stripeDifferences read the outbox (default: now) */
  comparedAt: number = now,
): Promise<MeterReport[]> {
  return ledger.outbox.recordObserved(diffs, now, comparedAt);
}
