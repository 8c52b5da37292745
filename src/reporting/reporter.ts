import type { Redis } from "ioredis";
import type Stripe from "stripe";
import type { HoldReason } from "../billing/periods.ts";
import {
  billingRefreshDue,
  loadBilling,
  MissingMeterError,
  refreshBilling,
} from "../billing/subscriptions.ts";
import { assignmentCustomers } from "../customers/customers.ts";
import type { Db } from "../db/client.ts";
import type { MeterReport } from "../db/schema.ts";
import { withLease } from "../lib/lock.ts";
import type { Logger } from "../lib/logger.ts";
import type { Metrics } from "../lib/metrics.ts";
import {
  claimForCall,
  failedReports,
  isPending,
  markFailed,
  markSent,
  markUnconfirmed,
  pendingReports,
  planReportsYielding,
  recordAttempt,
  setInDoubt,
  UNCONFIRMED_AFTER_MS,
} from "./outbox.ts";
import { classifyStripeError, sendMeterEvent } from "./stripe.ts";

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
  db: Db;
  stripe: Stripe;
  redis: Redis;
  logger: Logger;
  metrics?: Metrics;
  settings: ReporterSettings;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
};

const realSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Exponential backoff with full jitter between 50% and 100%, capped. */
export function backoffMs(attempt: number, baseMs = 250, capMs = 8000): number {
  const exp = Math.min(capMs, baseMs * 2 ** attempt);
  return Math.round(exp / 2 + Math.random() * (exp / 2));
}

/**
 * One reporting pass: plan the outbox (durable intent), then send every pending row. One
 * customer's rows go out one at a time under a Redis lease (Stripe allows one concurrent call per
 * customer per meter, and the CLI may run beside the service); customers run in parallel up to
 * the configured concurrency. A permanent error stops only its row; a bad key stops the run.
 */
export async function runReport(deps: ReporterDeps): Promise<ReportSummary> {
  const now = deps.now ?? Date.now;
  const sleep = deps.sleep ?? realSleep;
  const { db, settings, logger } = deps;
  const empty = (fatal: string): ReportSummary => ({
    planned: 0,
    sent: 0,
    duplicates: 0,
    failed: 0,
    stillPending: pendingReports(db).length,
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
    const customers = assignmentCustomers(db);
    const refreshMs = (settings.refreshSeconds ?? 300) * 1000;
    const graceMs = settings.graceSeconds * 1000;
    if (
      settings.forceRefresh ||
      billingRefreshDue(loadBilling(db), customers, now(), refreshMs, graceMs)
    )
      await refreshBilling({ db, stripe: deps.stripe, eventName: settings.eventName, now: now() });
  } catch (err) {
    if (err instanceof MissingMeterError) {
      logger.error({ err: err.message }, "report run stopped; rows stay pending");
      return empty(err.message);
    }
    const outcome = classifyStripeError(err);
    if (outcome.kind === "fatal") return empty(outcome.reason);
    logger.warn(
      { err: (err as Error).message },
      "could not look up subscriptions; planning with the stored periods",
    );
  }
  const plan = await planReportsYielding({
    db,
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
  for (const row of pendingReports(db)) {
    const list = byCustomer.get(row.customerId) ?? [];
    list.push(row);
    byCustomer.set(row.customerId, list);
  }
  const queue = [...byCustomer.entries()];
  const sendCustomer = async (customerId: string, rows: MeterReport[]) => {
    const key = `${settings.redisPrefix}:report-lease:${customerId}`;
    const deadline = Date.now() + (settings.waitForLeaseMs ?? 0);
    const attempt = () =>
      withLease(deps.redis, key, LEASE_TTL_MS, async () => {
        for (let i = 0; i < rows.length; i++) {
          if (summary.fatal) return;
          const row = rows[i] as MeterReport;
          // Another reporter may have sent it between our read and our lease.
          if (!isPending(db, row.identifier)) continue;
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
  const sendRow = async (row: MeterReport): Promise<boolean> => {
    for (let attempt = 0; attempt < settings.attemptsPerRun; attempt++) {
      // One row, one request: every attempt sends the parameters fixed when the row was written
      // (a row whose invoice closed before any call is superseded by the planner instead).
      // Durable before the call: a kill during it leaves the row in doubt, never superseded. The
      // same statement checks the row is still pending (another process may have superseded it).
      const wasInDoubt = row.inDoubt;
      if (
        wasInDoubt &&
        row.firstCallAt !== null &&
        now() - row.firstCallAt > UNCONFIRMED_AFTER_MS
      ) {
        markUnconfirmed(db, row.identifier, now());
        summary.unconfirmed++;
        logger.warn(
          { identifier: row.identifier, customerId: row.customerId, value: row.value },
          "meter event unconfirmed for 23 h: counted as sent, not re-sent (simmeter reconcile --repair)",
        );
        return true;
      }
      if (!claimForCall(db, row.identifier, now())) return true;
      summary.calls++;
      row.inDoubt = true;
      const outcome = await sendMeterEvent(deps.stripe, settings.eventName, row);
      const refusedOutright =
        (outcome.kind === "retry" && outcome.notRecorded) || outcome.kind === "permanent";
      if (refusedOutright && !wasInDoubt) {
        setInDoubt(db, row.identifier, false);
        row.inDoubt = false;
      }
      deps.metrics?.reportCalls.inc({ outcome: outcome.kind });
      switch (outcome.kind) {
        case "sent":
          markSent(db, row.identifier, now());
          summary.sent++;
          return true;
        case "duplicate":
          // Our identifier is deterministic: Stripe already holds this exact event.
          markSent(db, row.identifier, now());
          summary.duplicates++;
          return true;
        case "permanent":
          markFailed(db, row.identifier, outcome.reason);
          summary.failed++;
          logger.error(
            { identifier: row.identifier, customerId: row.customerId, reason: outcome.reason },
            "meter event refused; row stopped (simmeter report --status)",
          );
          return true;
        case "fatal":
          recordAttempt(db, row.identifier, outcome.reason);
          summary.fatal = outcome.reason;
          return false;
        case "retry": {
          recordAttempt(db, row.identifier, outcome.reason);
          row.attempts++;
          if (outcome.untilNextRun) {
            logger.warn(
              { identifier: row.identifier, reason: outcome.reason },
              "meter event not accepted yet; retried next run",
            );
            return false;
          }
          // After a timeout the first call may still be running at Stripe; wait it out so the
          // retry is not a second concurrent call for this customer.
          const wait = outcome.timedOut
            ? Math.max(backoffMs(attempt), 2 * settings.timeoutMs)
            : backoffMs(attempt);
          logger.warn(
            { identifier: row.identifier, reason: outcome.reason, waitMs: wait },
            "meter event not confirmed; retrying",
          );
          await sleep(wait);
          break;
        }
        default: {
          const never: never = outcome;
          throw new Error(`unhandled ${JSON.stringify(never)}`);
        }
      }
    }
    return false;
  };
  const workers = Array.from({ length: Math.min(settings.concurrency, queue.length) }, async () => {
    for (let next = queue.shift(); next; next = queue.shift()) await sendCustomer(next[0], next[1]);
  });
  await Promise.all(workers);
  deps.metrics?.reportFailedRows.set(failedReports(db).length);
  return summary;
}
