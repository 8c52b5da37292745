import type { Redis } from "ioredis";
import pLimit from "p-limit";
import pRetry, { AbortError } from "p-retry";
import type Stripe from "stripe";
import type { HoldReason } from "../billing/periods.ts";
import { billingRefreshDue, MissingMeterError, refreshBilling } from "../billing/subscriptions.ts";
import type { MeterReport } from "../db/schema.ts";
import type { Ledger } from "../ledger/port.ts";
import { withLease } from "../lib/lock.ts";
import type { Logger } from "../lib/logger.ts";
import type { Metrics } from "../lib/metrics.ts";
import { UNCONFIRMED_AFTER_MS } from "./outbox.ts";
import {
  classifyStripeError,
  meterUnavailableReason,
  type SendOutcome,
  sendMeterEvent,
} from "./stripe.ts";

export type ReporterSettings = {
  eventName: string;
  /** the account's invoice finalization grace (Stripe's default 3600 s) */
  graceSeconds: number;
  /** a previous period's draft is used only if it finalizes at least this long after planning */
  marginSeconds?: number;
  /** how often each customer's subscription is looked up again (also when a period ends) */
  refreshSeconds?: number;
  /** look every subscription up again before this pass (simmeter report) */
  forceRefresh?: boolean;
  concurrency: number;
  timeoutMs: number;
  /** attempts per row within one run before it waits for the next run */
  attemptsPerRun: number;
  redisPrefix: string;
  /** how long to wait for another reporter's lease on a customer (the CLI waits; the scheduler skips) */
  waitForLeaseMs?: number;
};

/**
 * Short and renewed while held: a reporter that died (SIGKILL, power loss) blocks its customers
 * for at most this long.
 */
export const LEASE_TTL_MS = 10_000;

export type ReportSummary = {
  planned: number;
  sent: number;
  duplicates: number;
  failed: number;
  stillPending: number;
  lockedCustomers: number;
  calls: number;
  fatal: string | null;
  heldBack: number;
  /** customer-hours held because no invoice would carry them, and their bytes by reason */
  held: number;
  heldBytes: Partial<Record<HoldReason, number>>;
  superseded: number;
  /** rows left in doubt past Stripe's 24-hour dedupe window: counted as sent, not re-sent */
  unconfirmed: number;
  unmappedBytes: number;
  problems: string[];
};

export type ReporterDeps = {
  /** the storage port: every read and state change of the pass is one awaited call */
  ledger: Ledger;
  stripe: Stripe;
  redis: Redis;
  logger: Logger;
  metrics?: Metrics;
  settings: ReporterSettings;
  now?: () => number;
  /** waits for a lease and waits out a timed-out call (the backoff between attempts is p-retry's) */
  sleep?: (ms: number) => Promise<void>;
};

const realSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * p-retry's backoff between attempts of one row within a run: 125–250 ms before the first retry,
 * doubling each time (p-retry multiplies by a random 1–2: jitter between 50% and 100% of 250 ms ×
 * 2^n), at most 8 s.
 */
export const RETRY_BACKOFF = {
  minTimeout: 125,
  factor: 2,
  maxTimeout: 8000,
  randomize: true,
} as const;

/** An attempt Stripe did not confirm (429, 5xx, timeout): p-retry tries the row again. */
class NotConfirmed extends Error {
  override name = "NotConfirmed";
  constructor(readonly outcome: Extract<SendOutcome, { kind: "retry" }>) {
    super(outcome.reason);
  }
}

/** Ends a row's attempts for this run, the row still pending (thrown inside p-retry's AbortError). */
class LeftPending extends Error {
  override name = "LeftPending";
}

/**
 * One reporting pass: plan the outbox (durable intent), then send every pending row. One
 * customer's rows go out one at a time under a Redis lease (Stripe allows one concurrent call per
 * customer per meter, and the CLI may run beside the service); customers run in parallel up to
 * the configured concurrency (p-limit); each row gets up to attemptsPerRun attempts (p-retry). A
 * permanent error stops only its row; a bad key or a meter Stripe cannot take events on stops the
 * run at its first answer, every row left pending.
 */
export async function runReport(deps: ReporterDeps): Promise<ReportSummary> {
  const now = deps.now ?? Date.now;
  const sleep = deps.sleep ?? realSleep;
  const { ledger, settings, logger } = deps;
  const { outbox } = ledger;
  const empty = async (fatal: string): Promise<ReportSummary> => ({
    planned: 0,
    sent: 0,
    duplicates: 0,
    failed: 0,
    stillPending: (await outbox.pending()).length,
    lockedCustomers: 0,
    calls: 0,
    fatal,
    heldBack: 0,
    held: 0,
    heldBytes: {},
    superseded: 0,
    unconfirmed: 0,
    unmappedBytes: 0,
    problems: [],
  });
  // Where a delta is stamped depends on each customer's subscription period: look them up when due.
  try {
    const customers = await ledger.customers.billed();
    const refreshMs = (settings.refreshSeconds ?? 300) * 1000;
    const graceMs = settings.graceSeconds * 1000;
    if (
      settings.forceRefresh ||
      billingRefreshDue(await ledger.billing.load(), customers, now(), refreshMs, graceMs)
    )
      await refreshBilling({
        ledger,
        stripe: deps.stripe,
        eventName: settings.eventName,
        now: now(),
      });
  } catch (err) {
    if (err instanceof MissingMeterError) {
      const stopped = await empty(meterUnavailableReason(settings.eventName));
      logger.error(
        { reason: stopped.fatal, stillPending: stopped.stillPending },
        "report run stopped; rows stay pending",
      );
      return stopped;
    }
    const outcome = classifyStripeError(err);
    if (outcome.kind === "fatal") return await empty(outcome.reason);
    logger.warn(
      { err: (err as Error).message },
      "could not look up subscriptions; planning with the stored periods",
    );
  }
  const plan = await ledger.plan({
    now: now(),
    settings: {
      graceSeconds: settings.graceSeconds,
      ...(settings.marginSeconds !== undefined ? { marginSeconds: settings.marginSeconds } : {}),
    },
  });
  for (const p of plan.problems) logger.error({ problem: p }, "usage held from reporting");
  const heldBytes: Partial<Record<HoldReason, number>> = {};
  for (const h of plan.held) heldBytes[h.reason] = (heldBytes[h.reason] ?? 0) + h.bytes;
  if (plan.held.length > 0)
    logger.warn(
      { heldBytes, customers: [...new Set(plan.held.map((h) => h.customerId))] },
      "usage held: no invoice would carry it (simmeter report --status)",
    );
  for (const reason of ["no_subscription", "ambiguous_subscription", "stale_period"] as const)
    deps.metrics?.unbilledBytes.set({ reason }, heldBytes[reason] ?? 0);
  const summary: ReportSummary = {
    planned: plan.rows.length,
    sent: 0,
    duplicates: 0,
    failed: 0,
    stillPending: 0,
    lockedCustomers: 0,
    calls: 0,
    fatal: null,
    heldBack: plan.heldBack.length,
    held: plan.held.length,
    heldBytes,
    superseded: plan.superseded,
    unconfirmed: 0,
    unmappedBytes: plan.unmappedBytes,
    problems: plan.problems,
  };
  const byCustomer = new Map<string, MeterReport[]>();
  for (const row of await outbox.pending()) {
    const list = byCustomer.get(row.customerId) ?? [];
    list.push(row);
    byCustomer.set(row.customerId, list);
  }
  const sendCustomer = async (customerId: string, rows: MeterReport[]) => {
    const key = `${settings.redisPrefix}:report-lease:${customerId}`;
    const deadline = Date.now() + (settings.waitForLeaseMs ?? 0);
    const attempt = () =>
      withLease(deps.redis, key, LEASE_TTL_MS, async () => {
        for (let i = 0; i < rows.length; i++) {
          if (summary.fatal) return;
          // Read again under the lease: another reporter may have sent it between our read and
          // our lease (claimForCall checks that again, atomically, right before the call), or
          // counted an attempt, which changes the next call's Idempotency-Key.
          const row = await outbox.pendingRow((rows[i] as MeterReport).identifier);
          if (!row) continue;
          const done = await sendRow(row);
          if (!done) {
            // Keep this customer's order; the rest waits for the next run.
            summary.stillPending += rows.length - i;
            return;
          }
        }
      });
    let lease = await attempt();
    while (!lease.ok && Date.now() < deadline) {
      await sleep(500);
      lease = await attempt();
    }
    if (!lease.ok) {
      summary.lockedCustomers++;
      logger.info({ customerId }, "another reporter is sending for this customer; skipped");
    }
  };
  /**
   * Up to attemptsPerRun attempts of one row (p-retry), all under the customer's lease. True when
   * the row needs nothing more this run (sent, a duplicate, stopped, or no longer pending); false
   * when it stays pending for the next run, and with it the customer's later rows.
   */
  const sendRow = async (row: MeterReport): Promise<boolean> => {
    if (settings.attemptsPerRun < 1) return false;
    try {
      return await pRetry(() => attemptRow(row), {
        ...RETRY_BACKOFF,
        retries: settings.attemptsPerRun - 1,
        // Only an unconfirmed call is tried again; other errors (the ledger, a bug) are thrown on.
        shouldRetry: ({ error }) => error instanceof NotConfirmed,
        onFailedAttempt: async ({ error, retriesLeft }) => {
          if (!(error instanceof NotConfirmed)) return;
          // After a timeout the call may still be running at Stripe: wait it out (before p-retry's
          // backoff, and before giving up, which releases the lease) so the next call for this
          // customer is never a second concurrent one.
          const waitOutMs = error.outcome.timedOut ? 2 * settings.timeoutMs : 0;
          logger.warn(
            { identifier: row.identifier, reason: error.outcome.reason, waitOutMs },
            retriesLeft > 0
              ? "meter event not confirmed; retrying"
              : "meter event not confirmed; retried next run",
          );
          if (waitOutMs > 0) await sleep(waitOutMs);
        },
      });
    } catch (err) {
      if (err instanceof NotConfirmed || err instanceof LeftPending) return false;
      throw err;
    }
  };
  /** One call for one row; throws NotConfirmed to be retried, AbortError to leave it pending. */
  const attemptRow = async (row: MeterReport): Promise<boolean> => {
    // The run has stopped (a bad key, no meter): no more calls; the row stays pending as it is.
    if (summary.fatal) throw new AbortError(new LeftPending(summary.fatal));
    // One row, one request: every attempt sends the parameters fixed when the row was written
    // (a row whose invoice closed before any call is superseded by the planner instead).
    // Durable before the call: a kill during it leaves the row in doubt, never superseded. The
    // same statement checks the row is still pending (another process may have superseded it).
    const wasInDoubt = row.inDoubt;
    if (wasInDoubt && row.firstCallAt !== null && now() - row.firstCallAt > UNCONFIRMED_AFTER_MS) {
      await outbox.markUnconfirmed(row.identifier, now());
      summary.unconfirmed++;
      logger.warn(
        { identifier: row.identifier, customerId: row.customerId, value: row.value },
        "meter event unconfirmed for 23 h: counted as sent, not re-sent (simmeter reconcile --repair)",
      );
      return true;
    }
    if (!(await outbox.claimForCall(row.identifier, now()))) return true;
    // Another customer's call may have stopped the run while the claim was being committed: no
    // call starts after a stop. Nothing was sent, so the claim is undone as a refusal would be.
    if (summary.fatal) {
      if (!wasInDoubt) await outbox.setInDoubt(row.identifier, false);
      throw new AbortError(new LeftPending(summary.fatal));
    }
    summary.calls++;
    row.inDoubt = true;
    const outcome = await sendMeterEvent(deps.stripe, settings.eventName, row);
    // The first fatal answer stops the run at once: the writes below give other customers' rows a
    // turn, and none of them may start a call after it.
    if (outcome.kind === "fatal") summary.fatal ??= outcome.reason;
    // A fatal answer (bad key, no active meter) is a refusal too: nothing was recorded, so the row
    // must not stay in doubt (it would be counted as sent, unsent, 23 h later).
    const refusedOutright =
      (outcome.kind === "retry" && outcome.notRecorded) ||
      outcome.kind === "permanent" ||
      outcome.kind === "fatal";
    if (refusedOutright && !wasInDoubt) {
      await outbox.setInDoubt(row.identifier, false);
      row.inDoubt = false;
    }
    deps.metrics?.reportCalls.inc({ outcome: outcome.kind });
    switch (outcome.kind) {
      case "sent":
        await outbox.markSent(row.identifier, now());
        summary.sent++;
        return true;
      case "duplicate":
        // Our identifier is deterministic: Stripe already holds this exact event.
        await outbox.markSent(row.identifier, now());
        summary.duplicates++;
        return true;
      case "permanent":
        await outbox.markFailed(row.identifier, outcome.reason);
        summary.failed++;
        logger.error(
          { identifier: row.identifier, customerId: row.customerId, reason: outcome.reason },
          "meter event refused; row stopped (simmeter report --status)",
        );
        return true;
      case "fatal":
        await outbox.recordAttempt(row.identifier, outcome.reason);
        row.attempts++;
        // The first answer stopped the run (summary.fatal, set above; calls already in flight
        // for other customers may add the same answer); every row stays pending.
        throw new AbortError(new LeftPending(outcome.reason));
      case "retry":
        await outbox.recordAttempt(row.identifier, outcome.reason);
        row.attempts++;
        if (outcome.untilNextRun) {
          logger.warn(
            { identifier: row.identifier, reason: outcome.reason },
            "meter event not accepted yet; retried next run",
          );
          throw new AbortError(new LeftPending(outcome.reason));
        }
        throw new NotConfirmed(outcome);
      default: {
        const never: never = outcome;
        throw new Error(`unhandled ${JSON.stringify(never)}`);
      }
    }
  };
  // Customers in parallel up to the configured concurrency, in order; none starts after a stop.
  const limit = pLimit(Math.max(1, settings.concurrency));
  await Promise.all(
    [...byCustomer].map(([customerId, rows]) =>
      limit(async () => {
        if (!summary.fatal) await sendCustomer(customerId, rows);
      }),
    ),
  );
  if (summary.fatal) {
    summary.stillPending = (await outbox.pending()).length;
    logger.error(
      { reason: summary.fatal, stillPending: summary.stillPending },
      "report run stopped; rows stay pending",
    );
  }
  deps.metrics?.reportFailedRows.set((await outbox.failed()).length);
  return summary;
}
