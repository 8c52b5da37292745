import Stripe from "stripe";
import type { Config } from "../config.ts";
import type { MeterReport } from "../db/schema.ts";

/** stripe-node pointed at STRIPE_API_BASE (a local emulator in tests), retries done by us. */
export function createStripe(
  config: Pick<Config, "STRIPE_SECRET_KEY" | "STRIPE_API_BASE" | "STRIPE_TIMEOUT_MS">,
): Stripe {
  if (!config.STRIPE_SECRET_KEY) throw new Error("STRIPE_SECRET_KEY is not set");
  const base = config.STRIPE_API_BASE ? new URL(config.STRIPE_API_BASE) : null;
  return new Stripe(config.STRIPE_SECRET_KEY, {
    // Our own retries use a fresh Idempotency-Key per attempt: Stripe replays a stored 500 for a
    // reused key, and the SDK's retries reuse it. The identifier is what dedupes the event. The
    // SDK would also retry a timed-out call within seconds, while the first may still run at
    // Stripe: a second concurrent call for the customer (docs/adr/0009-retries-and-pools.md).
    maxNetworkRetries: 0,
    timeout: config.STRIPE_TIMEOUT_MS,
    telemetry: false,
    appInfo: { name: "simmeter", url: "https://github.com/simmeter/simmeter" },
    ...(base
      ? {
          host: base.hostname,
          port: Number(base.port || (base.protocol === "https:" ? 443 : 80)),
          protocol: base.protocol === "https:" ? "https" : "http",
        }
      : {}),
  });
}

export type SendOutcome =
  | { kind: "sent" }
  /** Stripe already has an event with our identifier: an earlier attempt got through */
  | { kind: "duplicate" }
  /**
   * 429, 5xx, timeout or connection error: try again later, with backoff. untilNextRun: backing
   * off within this run cannot help (host clock ahead of Stripe's); wait for the next run.
   */
  | {
      kind: "retry";
      reason: string;
      timedOut: boolean;
      untilNextRun?: boolean;
      /** Stripe refused it outright (429, timestamp in the future): nothing was recorded */
      notRecorded?: boolean;
    }
  /** the row can never succeed as it is (unknown customer, inactive meter, timestamp too old) */
  | { kind: "permanent"; reason: string }
  /**
   * nothing can succeed (bad key, no active meter for the event name): stop the whole run. Always
   * an outright refusal: Stripe recorded nothing.
   */
  | { kind: "fatal"; reason: string };

/**
 * The one message for a meter Stripe cannot take events on: none has the configured event name
 * (never set up, another account, a renamed STRIPE_METER_EVENT_NAME) or it was deactivated.
 */
export function meterUnavailableReason(eventName: string, inactive = false): string {
  return inactive
    ? `the meter for event_name "${eventName}" (STRIPE_METER_EVENT_NAME) is inactive in Stripe: run simmeter stripe setup --reactivate; rows stay pending until then`
    : `Stripe has no active meter with event_name "${eventName}" (STRIPE_METER_EVENT_NAME): run simmeter stripe setup; rows stay pending until then`;
}

/**
 * Stripe's refusal of a meter event because no active meter has its event_name: `no_meter` or
 * `archived_meter` (the codes of Stripe's meter error reports), or any refusal naming the
 * event_name parameter (the only parameter that selects the meter).
 */
export function meterUnavailable(err: unknown): { inactive: boolean } | null {
  if (!(err instanceof Stripe.errors.StripeInvalidRequestError)) return null;
  if (err.code === "archived_meter") return { inactive: true };
  if (err.code === "no_meter") return { inactive: false };
  if (err.param === "event_name" && /\bmeter\b/i.test(err.message))
    return { inactive: /inactive|archived|deactivated/i.test(err.message) };
  return null;
}

export function classifyStripeError(err: unknown): SendOutcome {
  if (!(err instanceof Stripe.errors.StripeError)) {
    return { kind: "retry", reason: (err as Error)?.message ?? String(err), timedOut: false };
  }
  const msg = `${err.type}${err.statusCode ? ` ${err.statusCode}` : ""}: ${err.message}`;
  if (
    err instanceof Stripe.errors.StripeInvalidRequestError &&
    /already exists/i.test(err.message)
  ) {
    return { kind: "duplicate" };
  }
  // Our stamps are never later than our own clock, so Stripe calling one "in the future" means
  // the host clock is more than 5 minutes ahead of Stripe's. The stamp is fixed in the row, so it
  // is accepted once Stripe's clock passes it: waiting, not stopping the row, is the cure.
  if (isTimestampInFuture(err)) {
    return {
      kind: "retry",
      reason: `${msg} (the host clock looks ahead of Stripe's by more than 5 minutes: retried until Stripe's clock passes the timestamp; fix NTP on this host)`,
      timedOut: false,
      untilNextRun: true,
      notRecorded: true,
    };
  }
  if (err instanceof Stripe.errors.StripeConnectionError) {
    return { kind: "retry", reason: msg, timedOut: /timeout/i.test(err.message) };
  }
  if (err instanceof Stripe.errors.StripeRateLimitError) {
    return { kind: "retry", reason: msg, timedOut: false, notRecorded: true };
  }
  if (err instanceof Stripe.errors.StripeAPIError) {
    return { kind: "retry", reason: msg, timedOut: false };
  }
  if (
    (err.statusCode ?? 0) >= 500 ||
    err.statusCode === 409 ||
    err instanceof Stripe.errors.StripeIdempotencyError
  ) {
    return { kind: "retry", reason: msg, timedOut: false };
  }
  if (
    err instanceof Stripe.errors.StripeAuthenticationError ||
    err instanceof Stripe.errors.StripePermissionError
  ) {
    return {
      kind: "fatal",
      reason: `${msg} (check STRIPE_SECRET_KEY: it needs write access to Billing Meters)`,
    };
  }
  return { kind: "permanent", reason: msg };
}

/** Stripe's answer to a meter event stamped more than 5 minutes past its clock. */
function isTimestampInFuture(err: InstanceType<typeof Stripe.errors.StripeError>): boolean {
  return (
    err.code === "timestamp_in_future" ||
    (err.param === "timestamp" && /in the future/i.test(err.message))
  );
}

export async function sendMeterEvent(
  stripe: Stripe,
  eventName: string,
  row: Pick<MeterReport, "identifier" | "customerId" | "value" | "timestamp" | "attempts">,
): Promise<SendOutcome> {
  try {
    await stripe.billing.meterEvents.create(
      {
        event_name: eventName,
        identifier: row.identifier,
        timestamp: row.timestamp,
        payload: { stripe_customer_id: row.customerId, value: String(row.value) },
      },
      // One key per attempt (attempts is persisted): a reused key would replay a stored 500. The
      // outbox owns every retry of a meter event (ADR 0009), whatever the client's default says.
      { idempotencyKey: `${row.identifier}:a${row.attempts}`, maxNetworkRetries: 0 },
    );
    return { kind: "sent" };
  } catch (err) {
    const meter = meterUnavailable(err);
    if (meter) return { kind: "fatal", reason: meterUnavailableReason(eventName, meter.inactive) };
    return classifyStripeError(err);
  }
}
