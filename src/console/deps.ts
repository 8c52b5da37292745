import type { ApiContext } from "../api/routes.ts";
import type { ConsoleQueues } from "./connection.ts";

export { type ConsoleQueues, consoleQueues } from "./connection.ts";

import type { CustomerBilling } from "../billing/periods.ts";
import type { Logger } from "../lib/logger.ts";
import { lookUpPeriods } from "../views/parity.ts";

export type ConsoleDeps = {
  /** the admin API's context: the same views answer the console's questions */
  api: ApiContext;
  /** ADMIN_TOKEN: login required; unset: loopback only, no login */
  token?: string | undefined;
  logger: Logger;
  /** absent: no Redis (requeue, report runs and the queue board are unavailable) */
  queues?: ConsoleQueues;
};

/** Rejects after ms: a page shows "unavailable" instead of waiting on a Redis that is down. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export type Periods = {
  billing: ReadonlyMap<string, CustomerBilling>;
  /** stripe: looked up now, as the CLI does; stored: as the reporter last stored them */
  source: "stripe" | "stored";
  error: string | null;
};

/**
 * The subscription periods the Stripe-backed questions use: looked up now when Stripe is
 * configured (what `simmeter reconcile --period` and `statement` do), else the stored ones.
 */
export async function periodsNow(deps: ConsoleDeps): Promise<Periods> {
  const stored = await deps.api.ledger.billing.load();
  if (!deps.api.stripe) return { billing: stored, source: "stored", error: null };
  try {
    return {
      billing: await lookUpPeriods(deps.api.ledger, deps.api.stripe, deps.api.now()),
      source: "stripe",
      error: null,
    };
  } catch (err) {
    deps.logger.warn({ err: (err as Error).message }, "console: subscription look-up failed");
    return { billing: stored, source: "stored", error: (err as Error).message };
  }
}
