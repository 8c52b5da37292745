import { DAY_MS, nextMonthStart } from "../accounting/buckets.ts";

// Pure reporting rules: what to send for an hour, with which identifier and timestamp.

/**
 * WARNING: the identifier recipe is part of the billing contract. Stripe refuses a second event
 * with the same identifier, which is what makes every retry safe; changing the recipe (or the
 * version) makes already-sent events look new and double-bills them. Add a new version, never
 * edit this one.
 */
export const IDENTIFIER_VERSION = "v1";

export function meterEventIdentifier(customerId: string, hourMs: number, seq: number): string {
  return `${IDENTIFIER_VERSION}:${customerId}:${Math.floor(hourMs / 1000)}:${seq}`;
}

/** Stripe accepts timestamps up to 35 days old; keep a day of margin for clock skew and retries. */
export const STRIPE_BACKDATE_MS = 35 * DAY_MS;
export const BACKDATE_MARGIN_MS = DAY_MS;

/**
 * Where a delta for an hour bucket is stamped. Normally inside the bucket (its start). Usage that
 * Stripe would refuse (older than 35 days minus the margin) or that belongs to a UTC calendar
 * month whose invoice has most likely been finalised (the month ended more than graceSeconds ago)
 * is stamped now and flagged late, so it is billed in the current period instead of being lost.
 */
export function stampFor(
  hourMs: number,
  nowMs: number,
  graceSeconds: number,
): { timestamp: number; late: boolean } {
  const tooOld = hourMs < nowMs - (STRIPE_BACKDATE_MS - BACKDATE_MARGIN_MS);
  const monthClosed = nextMonthStart(hourMs) + graceSeconds * 1000 < nowMs;
  if (tooOld || monthClosed) return { timestamp: Math.floor(nowMs / 1000), late: true };
  return { timestamp: Math.floor(Math.min(hourMs, nowMs) / 1000), late: false };
}

/**
 * The deltas for one hour: counted minus what is already reported (sent or pending), per customer.
 * Customers with a stopped (failed) row for the hour are held back until an operator retries it.
 */
export function planHour(
  counted: ReadonlyMap<string, number>,
  reported: ReadonlyMap<string, number>,
  held: ReadonlySet<string>,
): { deltas: { customerId: string; value: number }[]; heldBack: string[] } {
  const deltas: { customerId: string; value: number }[] = [];
  const heldBack: string[] = [];
  const customers = new Set([...counted.keys(), ...reported.keys()]);
  for (const customerId of [...customers].sort()) {
    const value = (counted.get(customerId) ?? 0) - (reported.get(customerId) ?? 0);
    if (value === 0) continue;
    if (held.has(customerId)) heldBack.push(customerId);
    else deltas.push({ customerId, value });
  }
  return { deltas, heldBack };
}

/** Stripe allows at most 15 significant digits per value. */
export const MAX_METER_VALUE = 999_999_999_999_999;
