import Stripe from "stripe";

/** Stripe refuses a meter event stamped more than this past its own clock (timestamp_in_future). */
export const STRIPE_FUTURE_WINDOW_MS = 5 * 60_000;
/** Beyond this a healthy NTP-synchronised host is not plausible; worth a warning already. */
export const CLOCK_SKEW_WARN_MS = 60_000;

export type StripeClockSkew = {
  /** host clock minus Stripe's: positive when the host is ahead */
  skewMs: number;
  /** Stripe's HTTP Date header, as received */
  stripeDate: string;
};

/**
 * Compares the host clock with the Date header of one cheap Stripe GET (the meter list, which the
 * reporting key may read). The header has whole seconds, so the result is good to about half a
 * second plus half the round trip. An error answer (a refused key) still carries Stripe's Date and
 * is measured too. Resolves null when no answer with a usable Date header came back (Stripe
 * unreachable); never throws.
 */
export async function stripeClockSkew(
  stripe: Stripe,
  o: { now?: () => number } = {},
): Promise<StripeClockSkew | null> {
  const now = o.now ?? Date.now;
  const sentAt = now();
  let headers: Record<string, string | undefined> | undefined;
  try {
    headers = (await stripe.billing.meters.list({ limit: 1 })).lastResponse?.headers;
  } catch (err) {
    if (err instanceof Stripe.errors.StripeError) headers = err.headers;
  }
  const receivedAt = now();
  const stripeDate = headers?.date;
  if (!stripeDate) return null;
  const stripeMs = Date.parse(stripeDate);
  if (Number.isNaN(stripeMs)) return null;
  // Date is truncated to the second (its middle is the best guess) and was written about halfway
  // through our round trip.
  const skewMs = Math.round((sentAt + receivedAt) / 2 - (stripeMs + 500));
  return { skewMs, stripeDate };
}

/** The doctor's verdict on a measured skew (host minus Stripe): warn above 1 min, fail above 5. */
export function clockSkewCheck(skewMs: number): { result: "ok" | "warn" | "fail"; detail: string } {
  const size = Math.abs(skewMs);
  const ahead = skewMs > 0;
  const amount = `host clock is ${formatDuration(size)} ${ahead ? "ahead of" : "behind"} Stripe's`;
  if (size <= CLOCK_SKEW_WARN_MS) return { result: "ok", detail: amount };
  if (size <= STRIPE_FUTURE_WINDOW_MS) {
    const risk = ahead ? "; beyond 5 min Stripe refuses the current hour's meter events" : "";
    return {
      result: "warn",
      detail: `${amount}${risk}. Check NTP on this host (timedatectl; chronyc tracking)`,
    };
  }
  const consequence = ahead
    ? "Stripe refuses meter events stamped more than 5 min past its clock, so the current hour's usage (and late usage) waits until Stripe's clock catches up"
    : "the current hour's usage is stamped by this clock and can land in the previous hour or month";
  return {
    result: "fail",
    detail: `${amount}: ${consequence}. Fix NTP on this host (timedatectl set-ntp true; chronyc tracking)`,
  };
}

function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  return s < 120 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}
