// Stripe: the key, its clock, the meter, and the customers and subscriptions the ledger maps.
import type Stripe from "stripe";
import type { CustomerBilling } from "../../billing/periods.ts";
import { MissingMeterError } from "../../billing/subscriptions.ts";
import type { Config } from "../../config.ts";
import type { Ledger } from "../../ledger/port.ts";
import { clockSkewCheck, stripeClockSkew } from "../../reporting/clock.ts";
import { findMeter, meterProblems } from "../../reporting/stripe-setup.ts";
import { iso } from "../../views/json.ts";
import { lookUpPeriods } from "../../views/parity.ts";
import type { Add } from "./check.ts";

/** The settings the Stripe checks read. */
export type StripeCheckConfig = Pick<
  Config,
  | "STRIPE_SECRET_KEY"
  | "STRIPE_METER_EVENT_NAME"
  | "INVOICE_GRACE_SECONDS"
  | "INVOICE_MARGIN_SECONDS"
  | "REPORT_INTERVAL_SECONDS"
  | "STRIPE_TIMEOUT_MS"
>;

/** The Stripe half of doctor: each check reports for itself, so one failure names its own cause. */
export async function doctorStripe(
  stripe: Stripe,
  config: StripeCheckConfig,
  ledger: Ledger | null,
  add: Add,
): Promise<void> {
  try {
    await stripe.balance.retrieve();
    add(
      "stripe key",
      "ok",
      config.STRIPE_SECRET_KEY?.startsWith("sk_live_") ? "live mode" : "test mode",
    );
  } catch (err) {
    add("stripe key", "fail", (err as Error).message);
    return;
  }
  const skew = await stripeClockSkew(stripe);
  if (skew) {
    const c = clockSkewCheck(skew.skewMs);
    add("stripe clock", c.result, c.detail);
  } else add("stripe clock", "warn", "Stripe's answer carried no Date header to compare with");
  try {
    const meter = await findMeter(stripe, config.STRIPE_METER_EVENT_NAME);
    if (!meter) {
      add("meter", "fail", new MissingMeterError(config.STRIPE_METER_EVENT_NAME).message);
    } else {
      const problems = meterProblems(meter, config.STRIPE_METER_EVENT_NAME);
      add(
        "meter",
        problems.length ? "fail" : "ok",
        problems.join("; ") || `${meter.id} active, sum of value by stripe_customer_id`,
      );
    }
  } catch (err) {
    add("meter", "fail", `could not list meters: ${(err as Error).message}`);
  }
  // Customers and subscriptions are those the ledger maps: nothing to check without it.
  if (!ledger) return;
  const unknown: string[] = [];
  const unchecked: string[] = [];
  for (const id of await ledger.customers.billed()) {
    try {
      const c = await stripe.customers.retrieve(id);
      if ((c as { deleted?: boolean }).deleted) unknown.push(`${id} (deleted)`);
    } catch (err) {
      // Only "no such customer" means unknown; a 429 or a network error says nothing about it.
      if ((err as { code?: string }).code === "resource_missing") unknown.push(id);
      else unchecked.push(`${id} (${(err as Error).message})`);
    }
  }
  if (unknown.length > 0)
    add("customers", "warn", `mapped but unknown to Stripe: ${unknown.join(", ")}`);
  if (unchecked.length > 0) add("customers", "warn", `could not check: ${unchecked.join(", ")}`);
  if (unknown.length === 0 && unchecked.length === 0)
    add("customers", "ok", "every mapped customer exists");
  await doctorSubscriptions(stripe, config, ledger, add);
}

/**
 * Per mapped customer: exactly one active subscription item whose price uses the meter, and its
 * period; and whether the draft window leaves a report run time to land late usage on a draft.
 */
async function doctorSubscriptions(
  stripe: Stripe,
  config: StripeCheckConfig,
  ledger: Ledger,
  add: Add,
): Promise<void> {
  let billing: Map<string, CustomerBilling>;
  try {
    // Looked up, not stored: doctor opens the database read-only.
    billing = await lookUpPeriods(
      ledger,
      { client: stripe, eventName: config.STRIPE_METER_EVENT_NAME },
      Date.now(),
    );
  } catch (err) {
    add("subscriptions", "fail", `could not look them up: ${(err as Error).message}`);
    return;
  }
  const mapped = new Set(await ledger.customers.billed());
  const rows = [...billing.values()].filter((b) => mapped.has(b.customerId));
  const ambiguous = rows.filter((b) => b.state === "ambiguous");
  const none = rows.filter((b) => b.state === "none");
  const ok = rows.filter((b) => b.state === "ok");
  if (ambiguous.length)
    add("subscriptions", "fail", ambiguous.map((b) => `${b.customerId}: ${b.detail}`).join("; "));
  if (none.length)
    add(
      "subscriptions",
      "warn",
      `${none.length} mapped customer(s) without an active item on the meter, their usage held: ${none.map((b) => `${b.customerId} (${b.detail})`).join("; ")}`,
    );
  if (ok.length)
    add(
      "subscriptions",
      ambiguous.length || none.length ? "warn" : "ok",
      ok
        .slice(0, 20)
        .map(
          (b) =>
            `${b.customerId}: ${b.subscriptionId}/${b.itemId}, period ${iso(b.periodStart as number)} → ${iso(b.periodEnd as number)}`,
        )
        .join("; ") + (ok.length > 20 ? `; and ${ok.length - 20} more` : ""),
    );
  if (rows.length === 0) add("subscriptions", "ok", "no mapped customers yet");
  // The previous period's draft takes late usage for (grace − margin); a report run must fit in it.
  const window = config.INVOICE_GRACE_SECONDS - config.INVOICE_MARGIN_SECONDS;
  const needed = config.REPORT_INTERVAL_SECONDS + Math.ceil(config.STRIPE_TIMEOUT_MS / 1000);
  const seen = ok
    .map((b) =>
      b.previous?.finalizesAt && b.previous.end
        ? (b.previous.finalizesAt - b.previous.end) / 1000
        : null,
    )
    .find((g) => g !== null);
  const observed =
    seen !== undefined && seen !== null && Math.abs(seen - config.INVOICE_GRACE_SECONDS) > 60
      ? `; a draft seen in Stripe finalizes ${Math.round(seen)} s after its period ended, so set INVOICE_GRACE_SECONDS=${Math.round(seen)}`
      : "";
  add(
    "invoice grace",
    window < needed || observed ? "warn" : "ok",
    window < needed
      ? `the draft window (INVOICE_GRACE_SECONDS ${config.INVOICE_GRACE_SECONDS} − INVOICE_MARGIN_SECONDS ${config.INVOICE_MARGIN_SECONDS} = ${window} s) is shorter than a report run (REPORT_INTERVAL_SECONDS + STRIPE_TIMEOUT_MS = ${needed} s): usage that arrives just after a period ends goes to the next invoice as late usage; lengthen the grace in Stripe's Dashboard or report more often${observed}`
      : `late usage reaches the previous period's draft for ${window} s after it ends${observed}`,
  );
}
