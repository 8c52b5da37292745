import type pg from "pg";
import { pingPg, redactUrl } from "../../db/pg/client.ts";
import type { Ledger } from "../port.ts";
import { accountsPg, coveredPg, simsPg, usageOwnedPg } from "./accounts.ts";
import { pgAssignments } from "./assignments.ts";
import { pgBilledCustomers, pgBilling } from "./billing.ts";
import { ingestJobPg } from "./ingest.ts";
import { pgOutbox } from "./outbox.ts";
import { planPg } from "./plan.ts";
import { pgReads } from "./reads.ts";
import { prunePg } from "./retention.ts";
import { pgViews } from "./views.ts";

/**
 * The PostgreSQL adapter of the port over one pool: every method takes a pooled client for its
 * own transaction (src/ledger/pg/tx.ts), so any number of processes share the ledger.
 * `onRetry` hears each re-run of an ingest job after a lock conflict (its SQLSTATE).
 */
export function pgLedger(
  pool: pg.Pool,
  url: string,
  o: { onRetry?: (code: string) => void } = {},
): Ledger {
  const billing = pgBilling(pool);
  return {
    dialect: "postgres",
    location: redactUrl(url),
    ingestJob: (job, settings, now) =>
      ingestJobPg(pool, job, settings, now, { onRetry: o.onRetry }),
    plan: (run) => planPg(pool, run),
    outbox: pgOutbox(pool),
    customers: {
      billed: () => pgBilledCustomers(pool),
      usageOwned: (from, to) => usageOwnedPg(pool, from, to),
      accounts: (from, to) => accountsPg(pool, from, to),
      sims: (simSids) => simsPg(pool, simSids),
      covered: (targets) => coveredPg(pool, targets),
    },
    assignments: pgAssignments(pool),
    reads: pgReads(pool),
    views: pgViews(pool),
    billing,
    retention: { prune: (days, now) => prunePg(pool, days, now) },
    admin: {
      ping: (timeoutMs) => pingPg(pool, timeoutMs),
      close: () => pool.end(),
    },
  };
}
