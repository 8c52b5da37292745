import type Stripe from "stripe";
import { afterAll, beforeAll } from "vitest";
import { type StripeEmulator, startStripeEmulator } from "../../scripts/stripe-emulator.ts";
import { createStripe } from "../../src/reporting/stripe.ts";
import { ensureMeter } from "../../src/reporting/stripe-setup.ts";
import { EVENT_NAME } from "./reporting.ts";

// The in-process Stripe emulator as the tests that run simmeter against it set it up.

/** The real Stripe SDK, pointed at the emulator. */
export function stripeFor(emu: StripeEmulator, timeoutMs = 5000): Stripe {
  return createStripe({
    STRIPE_SECRET_KEY: emu.apiKey,
    STRIPE_API_BASE: emu.url,
    STRIPE_TIMEOUT_MS: timeoutMs,
  });
}

/** The settings that point a simmeter process at the emulator. */
export function stripeEnv(emu: StripeEmulator): {
  STRIPE_SECRET_KEY: string;
  STRIPE_API_BASE: string;
} {
  return { STRIPE_SECRET_KEY: emu.apiKey, STRIPE_API_BASE: emu.url };
}

/**
 * One emulator for the enclosing describe (or file), started before its tests with the meter for
 * EVENT_NAME created (what `simmeter stripe setup` does), any customer accepted and subscribed;
 * closed after them. Call it where `beforeAll` may be called; the getter works inside tests.
 */
export function emulatorWithMeter(): () => StripeEmulator {
  let emu: StripeEmulator | undefined;
  beforeAll(async () => {
    emu = await startStripeEmulator({ acceptAnyCustomer: true, autoSubscribe: true });
    await ensureMeter(stripeFor(emu), EVENT_NAME);
  });
  afterAll(async () => {
    await emu?.close();
  });
  return () => {
    if (!emu) throw new Error("the Stripe emulator is not running (use it inside a test)");
    return emu;
  };
}
