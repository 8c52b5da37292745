// Pure reporting rules: what to send for an hour, and with which identifier (where it is stamped:
// src/billing/periods.ts).

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

export { STRIPE_BACKDATE_MS } from "../billing/periods.ts";

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
