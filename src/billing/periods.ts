import { DAY_MS } from "../accounting/buckets.ts";

// Pure: billing periods and where a delta for an hour is stamped so that it lands on the invoice
// that should carry it (docs/adr/0006-billing-by-the-subscription-period.md). Times are epoch ms.

export type Interval = "day" | "week" | "month" | "year";

/** What simmeter knows of one customer's metered subscription item on the configured meter. */
export type CustomerBilling = {
  customerId: string;
  /** ok: exactly one active item; none: no item; ambiguous: several (nothing is guessed) */
  state: "ok" | "none" | "ambiguous";
  detail: string | null;
  subscriptionId: string | null;
  itemId: string | null;
  priceId: string | null;
  periodStart: number | null;
  periodEnd: number | null;
  /** the period before the current one, with its invoice once Stripe has created it */
  previous: PreviousPeriod | null;
  refreshedAt: number;
};

export type PreviousPeriod = {
  start: number;
  end: number;
  invoiceId: string | null;
  /** draft | open | paid | uncollectible | void */
  status: string | null;
  /** when Stripe will finalize the draft (null: not scheduled, or not a draft) */
  finalizesAt: number | null;
  finalizedAt: number | null;
};

export type StampPolicy = {
  /** the account's invoice finalization grace (Stripe's default 1 h): how long a draft may take to appear */
  graceMs: number;
  /** a draft is only used when it finalizes at least this long after the call is planned */
  marginMs: number;
};

/** Stripe accepts timestamps up to 35 days old; keep a day of margin for clock skew and retries. */
export const STRIPE_BACKDATE_MS = 35 * DAY_MS;
export const BACKDATE_MARGIN_MS = DAY_MS;

export type HoldReason = "no_subscription" | "ambiguous_subscription" | "stale_period";

export type Stamp =
  | {
      kind: "stamp";
      /** Unix seconds */
      timestamp: number;
      /** billed in a later period than the one its hour belongs to */
      late: boolean;
    }
  | { kind: "hold"; reason: HoldReason; detail: string };

const iso = (ms: number) => new Date(ms).toISOString();

/**
 * Whether usage stamped at `t` reaches an invoice that is still open to it: the current period,
 * or the previous one while its draft will not finalize before `now` + margin (or, just after the
 * rollover, while no draft is visible yet and the grace has not run out).
 */
export function periodOpenAt(t: number, now: number, b: CustomerBilling, p: StampPolicy): boolean {
  if (b.state !== "ok" || b.periodStart === null || b.periodEnd === null) return false;
  if (t < now - (STRIPE_BACKDATE_MS - BACKDATE_MARGIN_MS)) return false;
  if (t >= b.periodStart) {
    if (t >= b.periodEnd) return false;
    // The stored period has ended (no refresh since): like a previous period whose draft is not
    // visible, open only while the grace has not run out.
    return now < b.periodEnd || now + p.marginMs < b.periodEnd + p.graceMs;
  }
  const prev = b.previous;
  if (!prev || t < prev.start || t >= prev.end) return false;
  if (prev.invoiceId === null) return now + p.marginMs < prev.end + p.graceMs;
  if (prev.status !== "draft") return false;
  return prev.finalizesAt === null || prev.finalizesAt > now + p.marginMs;
}

/**
 * Where the delta of the hour bucket starting at `hour` is stamped, decided once when its outbox
 * row is written:
 * - inside its hour when the hour lies in the customer's current period, or in the previous one
 *   while that period's invoice is still a draft that will not finalize before the call lands;
 * - otherwise (the hour's period is invoiced: finalized, or ended longer ago than the grace with
 *   no draft visible; older than Stripe's 35-day window; before the subscription began) at `now`,
 *   inside the current period, flagged late: it appears on the next invoice;
 * - held when the customer has no active subscription item on the meter (or several), or when the
 *   stored period has already ended (refresh first): nothing is sent that no invoice would carry.
 */
export function stampFor(
  hour: number,
  now: number,
  b: CustomerBilling | undefined,
  p: StampPolicy,
): Stamp {
  if (!b || b.state === "none")
    return {
      kind: "hold",
      reason: "no_subscription",
      detail: b?.detail ?? "not looked up in Stripe yet (every report run does)",
    };
  if (b.state === "ambiguous")
    return {
      kind: "hold",
      reason: "ambiguous_subscription",
      detail: b.detail ?? "several subscription items on the meter",
    };
  if (b.periodStart === null || b.periodEnd === null || now >= b.periodEnd)
    return {
      kind: "hold",
      reason: "stale_period",
      detail: `the stored period ended at ${b.periodEnd === null ? "?" : iso(b.periodEnd)}; waiting for a subscription refresh`,
    };
  const inHour = Math.min(hour, now);
  if (periodOpenAt(inHour, now, b, p))
    return { kind: "stamp", timestamp: Math.floor(inHour / 1000), late: false };
  return { kind: "stamp", timestamp: Math.floor(Math.max(now, b.periodStart) / 1000), late: true };
}

const DAYS_IN_MONTH = (y: number, m: number) => new Date(Date.UTC(y, m + 1, 0)).getUTCDate();

/**
 * The period boundary `n` intervals after `anchor` (n may be negative), as Stripe computes it: the
 * anchor's day of month clamped to short months (Jan 31 → Feb 28/29 → Mar 31), its UTC time of
 * day kept.
 */
export function boundary(anchor: number, interval: Interval, count: number, n: number): number {
  const steps = n * count;
  if (interval === "day") return anchor + steps * DAY_MS;
  if (interval === "week") return anchor + steps * 7 * DAY_MS;
  const a = new Date(anchor);
  const months = interval === "month" ? steps : steps * 12;
  const total = a.getUTCFullYear() * 12 + a.getUTCMonth() + months;
  const y = Math.floor(total / 12);
  const m = total - y * 12;
  const d = Math.min(a.getUTCDate(), DAYS_IN_MONTH(y, m));
  return (
    Date.UTC(y, m, d) + (anchor - Date.UTC(a.getUTCFullYear(), a.getUTCMonth(), a.getUTCDate()))
  );
}

/** The start of the period that ends where the period containing `periodStart` begins. */
export function previousPeriodStart(
  anchor: number,
  interval: Interval,
  count: number,
  periodStart: number,
): number {
  // Find n with boundary(n) === periodStart (the anchor may lie before or after it).
  const approx =
    interval === "day"
      ? Math.round((periodStart - anchor) / (count * DAY_MS))
      : interval === "week"
        ? Math.round((periodStart - anchor) / (count * 7 * DAY_MS))
        : Math.round(
            (periodStart - anchor) / (count * (interval === "month" ? 30.44 : 365.25) * DAY_MS),
          );
  for (let n = approx - 2; n <= approx + 2; n++) {
    if (boundary(anchor, interval, count, n) === periodStart)
      return boundary(anchor, interval, count, n - 1);
  }
  // Not on the anchor's grid (a period changed by a plan switch): step back one interval from it.
  return boundary(periodStart, interval, count, -1);
}

/** Which of the customer's periods a time falls in, for statements and invoice parity. */
export function periodBounds(
  b: CustomerBilling,
  which: "current" | "previous",
): { start: number; end: number } | null {
  if (b.state !== "ok" || b.periodStart === null || b.periodEnd === null) return null;
  if (which === "current") return { start: b.periodStart, end: b.periodEnd };
  return b.previous ? { start: b.previous.start, end: b.previous.end } : null;
}
