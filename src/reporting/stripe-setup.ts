import type Stripe from "stripe";

export type MeterCheck = { meter: Stripe.Billing.Meter | null; problems: string[] };

export async function findMeter(
  stripe: Stripe,
  eventName: string,
): Promise<Stripe.Billing.Meter | null> {
  for await (const m of stripe.billing.meters.list({ limit: 100 })) {
    if (m.event_name === eventName) return m;
  }
  return null;
}

/** What simmeter needs of the meter: raw sum of `value`, mapped by stripe_customer_id. */
export function meterProblems(m: Stripe.Billing.Meter, eventName: string): string[] {
  const p: string[] = [];
  if (m.event_name !== eventName) p.push(`event_name is ${m.event_name}, expected ${eventName}`);
  if (m.status !== "active")
    p.push(
      `meter ${m.id} is ${m.status}: it accepts no events (simmeter stripe setup --reactivate)`,
    );
  if (m.default_aggregation?.formula !== "sum")
    p.push(`aggregation is ${m.default_aggregation?.formula}, must be sum`);
  if (m.customer_mapping?.event_payload_key !== "stripe_customer_id") {
    p.push(
      `customer mapping key is ${m.customer_mapping?.event_payload_key}, must be stripe_customer_id`,
    );
  }
  if (m.value_settings?.event_payload_key !== "value")
    p.push(`value key is ${m.value_settings?.event_payload_key}, must be value`);
  const window = (m as unknown as { event_time_window?: string | null }).event_time_window;
  if (window) {
    p.push(
      `meter is pre-aggregated (event_time_window=${window}): Stripe keeps only the last event per window, which loses usage when several SIMs share a customer`,
    );
  }
  return p;
}

/** Creates the meter if it is missing; safe to run any number of times. */
export async function ensureMeter(
  stripe: Stripe,
  eventName: string,
  opts: { reactivate?: boolean } = {},
): Promise<{
  action: "created" | "exists" | "reactivated" | "inactive";
  meter: Stripe.Billing.Meter;
  problems: string[];
}> {
  const existing = await findMeter(stripe, eventName);
  if (existing) {
    if (existing.status !== "active" && opts.reactivate) {
      const meter = await stripe.billing.meters.reactivate(existing.id);
      return { action: "reactivated", meter, problems: meterProblems(meter, eventName) };
    }
    return {
      action: existing.status === "active" ? "exists" : "inactive",
      meter: existing,
      problems: meterProblems(existing, eventName),
    };
  }
  const meter = await stripe.billing.meters.create(
    {
      display_name: "Super SIM data (bytes)",
      event_name: eventName,
      default_aggregation: { formula: "sum" },
      customer_mapping: { type: "by_id", event_payload_key: "stripe_customer_id" },
      value_settings: { event_payload_key: "value" },
    },
    // A second setup racing this one must not create a second meter for the same name.
    { idempotencyKey: `simmeter-meter-setup:${eventName}` },
  );
  return { action: "created", meter, problems: meterProblems(meter, eventName) };
}
