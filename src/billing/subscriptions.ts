import type Stripe from "stripe";
import type { Db } from "../db/client.ts";
import { type BillingCustomer, billingCustomers } from "../db/schema.ts";
import type { Ledger } from "../ledger/port.ts";
import { findMeter } from "../reporting/stripe-setup.ts";
import {
  type CustomerBilling,
  type Interval,
  type PreviousPeriod,
  previousPeriodStart,
} from "./periods.ts";

// Each customer's metered subscription item on the configured meter, found by polling the Stripe
// API alone (prices → subscriptions → invoices), stored in the ledger for the planner.

/** Subscription states whose metered items Stripe invoices. */
const BILLED_STATUSES = new Set(["active", "trialing", "past_due", "unpaid"]);

type Found = { sub: Stripe.Subscription; item: Stripe.SubscriptionItem };

const ms = (s: number | null | undefined) => (s === null || s === undefined ? null : s * 1000);

/** The customer id of a subscription (expanded or not). */
const customerOf = (s: Stripe.Subscription) =>
  typeof s.customer === "string" ? s.customer : s.customer.id;

/** Every item of a subscription, paging past the embedded first page. */
async function itemsOf(
  stripe: Stripe,
  sub: Stripe.Subscription,
): Promise<Stripe.SubscriptionItem[]> {
  if (!sub.items.has_more) return sub.items.data;
  const out: Stripe.SubscriptionItem[] = [];
  for await (const item of stripe.subscriptionItems.list({ subscription: sub.id, limit: 100 }))
    out.push(item);
  return out;
}

/**
 * The invoice of the period that ended where `item`'s current period began: the newest invoice of
 * the subscription with a line for this item whose period ends there.
 */
async function previousInvoice(
  stripe: Stripe,
  customer: string,
  sub: Stripe.Subscription,
  item: Stripe.SubscriptionItem,
): Promise<{ invoice: Stripe.Invoice; line: Stripe.InvoiceLineItem } | null> {
  let seen = 0;
  for await (const invoice of stripe.invoices.list({ customer, subscription: sub.id, limit: 10 })) {
    if (++seen > 10) break;
    if (invoice.status === "void" || !invoice.id) continue;
    const lines = invoice.lines.has_more
      ? await stripe.invoices
          .listLineItems(invoice.id, { limit: 100 })
          .autoPagingToArray({ limit: 1000 })
      : invoice.lines.data;
    const line = lines.find(
      (l) =>
        l.parent?.subscription_item_details?.subscription_item === item.id &&
        l.period.end === item.current_period_start,
    );
    if (line) return { invoice, line };
  }
  return null;
}

async function previousPeriod(
  stripe: Stripe,
  customer: string,
  { sub, item }: Found,
): Promise<PreviousPeriod | null> {
  const start = item.current_period_start * 1000;
  const found = await previousInvoice(stripe, customer, sub, item);
  if (found) {
    const { invoice, line } = found;
    return {
      start: line.period.start * 1000,
      end: line.period.end * 1000,
      invoiceId: invoice.id ?? null,
      status: invoice.status ?? null,
      finalizesAt: ms(invoice.automatically_finalizes_at),
      finalizedAt: ms(invoice.status_transitions?.finalized_at),
    };
  }
  // No invoice yet (just after the rollover) or none to find: the period before, from the anchor.
  const subStart = (sub.start_date ?? 0) * 1000;
  if (subStart >= start) return null;
  const recurring = item.price.recurring;
  if (!recurring) return null;
  const prevStart = previousPeriodStart(
    sub.billing_cycle_anchor * 1000,
    recurring.interval as Interval,
    recurring.interval_count,
    start,
  );
  return {
    start: Math.max(prevStart, subStart),
    end: start,
    invoiceId: null,
    status: null,
    finalizesAt: null,
    finalizedAt: null,
  };
}

/**
 * Looks up, for each customer (plus any customer found with an item on the meter), its metered
 * subscription item on `meterId`: exactly one is "ok"; none or several are reported, never guessed.
 * Uses GET /v1/prices, /v1/subscriptions, /v1/subscription_items, /v1/invoices (and lines) only.
 */
export async function lookUpBilling(
  stripe: Stripe,
  meterId: string,
  customers: readonly string[],
  now: number,
): Promise<CustomerBilling[]> {
  const byCustomer = new Map<string, Found[]>();
  /** Keeps the subscription's billed items on the meter, each item once. */
  const collect = async (sub: Stripe.Subscription) => {
    if (!BILLED_STATUSES.has(sub.status)) return;
    for (const item of await itemsOf(stripe, sub)) {
      if (item.price.recurring?.meter !== meterId) continue;
      const c = customerOf(sub);
      const list = byCustomer.get(c) ?? [];
      // One subscription listed under two of its prices: count each item once.
      if (!list.some((f) => f.item.id === item.id)) list.push({ sub, item });
      byCustomer.set(c, list);
    }
  };
  // An archived price stops taking new subscriptions but keeps billing existing ones, and the
  // price list holds only active prices unless asked for the others.
  const prices: Stripe.Price[] = [];
  for (const active of [true, false])
    for await (const price of stripe.prices.list({
      recurring: { meter: meterId, usage_type: "metered" },
      active,
      limit: 100,
    }))
      prices.push(price);
  for (const price of prices) {
    for await (const sub of stripe.subscriptions.list({
      price: price.id,
      status: "all",
      limit: 100,
    }))
      await collect(sub);
  }
  const unknown = new Set<string>();
  // A mapped customer none of those prices named: ask about it directly (one call per such
  // customer), so a subscription on a price the listing missed is not taken for none.
  for (const customerId of customers) {
    if (byCustomer.has(customerId)) continue;
    let subs: Stripe.Subscription[];
    try {
      subs = await stripe.subscriptions
        .list({ customer: customerId, status: "all", limit: 100 })
        .autoPagingToArray({ limit: 1000 });
    } catch (err) {
      // An unknown customer has no subscription; anything else fails the lookup.
      if ((err as { code?: string }).code === "resource_missing") {
        unknown.add(customerId);
        continue;
      }
      throw err;
    }
    for (const sub of subs) await collect(sub);
  }
  const out: CustomerBilling[] = [];
  for (const customerId of [...new Set([...customers, ...byCustomer.keys()])].sort()) {
    const found = byCustomer.get(customerId) ?? [];
    const base = {
      customerId,
      subscriptionId: null,
      itemId: null,
      priceId: null,
      periodStart: null,
      periodEnd: null,
      previous: null,
      refreshedAt: now,
    };
    if (found.length === 0) {
      out.push({
        ...base,
        state: "none",
        detail: unknown.has(customerId)
          ? "unknown to Stripe (no such customer): usage is held; check the mapping (simmeter customers list)"
          : "no active subscription item with a price on the meter: usage is held until one exists",
      });
      continue;
    }
    if (found.length > 1) {
      out.push({
        ...base,
        state: "ambiguous",
        detail: `${found.length} active subscription items on the meter (${found.map((f) => `${f.sub.id}/${f.item.id}`).join(", ")}): usage is held until exactly one remains`,
      });
      continue;
    }
    const f = found[0] as Found;
    out.push({
      ...base,
      state: "ok",
      detail: null,
      subscriptionId: f.sub.id,
      itemId: f.item.id,
      priceId: f.item.price.id,
      periodStart: f.item.current_period_start * 1000,
      periodEnd: f.item.current_period_end * 1000,
      previous: await previousPeriod(stripe, customerId, f),
    });
  }
  return out;
}

/** Replaces the stored billing state of the given customers. */
export function storeBilling(db: Db, rows: readonly CustomerBilling[]): void {
  db.transaction(
    () => {
      for (const b of rows) {
        const values = {
          customerId: b.customerId,
          state: b.state,
          detail: b.detail,
          subscriptionId: b.subscriptionId,
          itemId: b.itemId,
          priceId: b.priceId,
          periodStart: b.periodStart,
          periodEnd: b.periodEnd,
          prevStart: b.previous?.start ?? null,
          prevEnd: b.previous?.end ?? null,
          prevInvoiceId: b.previous?.invoiceId ?? null,
          prevInvoiceStatus: b.previous?.status ?? null,
          prevFinalizesAt: b.previous?.finalizesAt ?? null,
          prevFinalizedAt: b.previous?.finalizedAt ?? null,
          refreshedAt: b.refreshedAt,
        };
        db.insert(billingCustomers)
          .values(values)
          .onConflictDoUpdate({ target: billingCustomers.customerId, set: values })
          .run();
      }
    },
    { behavior: "immediate" },
  );
}

/** A stored billing_customers row as the planner stamps by it (both ledgers read it so). */
export function billingFromRow(r: BillingCustomer): CustomerBilling {
  return {
    customerId: r.customerId,
    state: r.state,
    detail: r.detail,
    subscriptionId: r.subscriptionId,
    itemId: r.itemId,
    priceId: r.priceId,
    periodStart: r.periodStart,
    periodEnd: r.periodEnd,
    previous:
      r.prevStart === null || r.prevEnd === null
        ? null
        : {
            start: r.prevStart,
            end: r.prevEnd,
            invoiceId: r.prevInvoiceId,
            status: r.prevInvoiceStatus,
            finalizesAt: r.prevFinalizesAt,
            finalizedAt: r.prevFinalizedAt,
          },
    refreshedAt: r.refreshedAt,
  };
}

/** What the planner stamps by: every customer's stored billing state. */
export function loadBilling(db: Db): Map<string, CustomerBilling> {
  const out = new Map<string, CustomerBilling>();
  for (const r of db.select().from(billingCustomers).all())
    out.set(r.customerId, billingFromRow(r));
  return out;
}

/**
 * Whether the stored state must be refreshed before planning: never fetched, older than the
 * refresh interval, a period that has ended, a draft that has reached its finalization time, or a
 * rollover whose draft is not visible yet (within the grace).
 */
export function billingRefreshDue(
  billing: ReadonlyMap<string, CustomerBilling>,
  customers: readonly string[],
  now: number,
  refreshMs: number,
  graceMs = 3_600_000,
): boolean {
  for (const c of customers) {
    const b = billing.get(c);
    if (!b || now - b.refreshedAt >= refreshMs) return true;
    if (b.periodEnd !== null && now >= b.periodEnd) return true;
    const f = b.previous?.finalizesAt;
    if (b.previous?.status === "draft" && f !== null && f !== undefined && now >= f) return true;
    // Just after a rollover, until the draft shows up (or the grace runs out: some periods never
    // get an invoice line, and must not force a lookup on every pass).
    if (b.previous && b.previous.invoiceId === null && now < b.previous.end + graceMs) return true;
  }
  return false;
}

/**
 * Looks up and stores the billing state of every mapped customer (what `simmeter report` does at
 * the start of every pass, and the service on its schedule). Throws when the meter is missing.
 */
export async function refreshBilling(o: {
  ledger: Pick<Ledger, "customers" | "billing">;
  stripe: Stripe;
  eventName: string;
  now: number;
  /** look up only, store nothing (a dry run) */
  dryRun?: boolean;
}): Promise<Map<string, CustomerBilling>> {
  const meter = await findMeter(o.stripe, o.eventName);
  if (!meter) throw new MissingMeterError(o.eventName);
  const customers = await o.ledger.customers.billed();
  const rows = await lookUpBilling(o.stripe, meter.id, customers, o.now);
  if (o.dryRun) return new Map(rows.map((b) => [b.customerId, b]));
  await o.ledger.billing.store(rows);
  return await o.ledger.billing.load();
}

export class MissingMeterError extends Error {
  override name = "MissingMeterError";
  constructor(eventName: string) {
    super(`no meter with event_name ${eventName}: run simmeter stripe setup`);
  }
}
