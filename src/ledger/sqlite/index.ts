import { and, eq } from "drizzle-orm";
import { loadBilling, storeBilling } from "../../billing/subscriptions.ts";
import { assignmentCustomers } from "../../customers/customers.ts";
import type { Db } from "../../db/client.ts";
import { meterReports } from "../../db/schema.ts";
import { pruneExpired } from "../../ingest/prune.ts";
import {
  claimForCall,
  compactOutbox,
  failedReports,
  markFailed,
  markSent,
  markUnconfirmed,
  pendingReports,
  planReportsYielding,
  recordAttempt,
  reportStatus,
  retryFailed,
  setInDoubt,
} from "../../reporting/outbox.ts";
import type { Ledger } from "../port.ts";
import {
  accountsSqlite,
  coveredSqlite,
  recordObservedSqlite,
  simsSqlite,
  touchingSqlite,
  usageOwnedSqlite,
} from "./accounts.ts";
import { sqliteAssignments } from "./assignments.ts";
import { ingestJobSqlite, prepareIngest } from "./ingest.ts";
import { sqliteReads } from "./reads.ts";
import {
  ingestLagSqlite,
  lastSentMsSqlite,
  lateRowsSqlite,
  openQuarantineSqlite,
  outboxRowsSqlite,
  quarantineBacklogSqlite,
  quarantinedForSqlite,
  reportWorkSqlite,
  simRecordSqlite,
  usageRowsSqlite,
} from "./views.ts";

/** SELECT 1 on the connection: "ok" or the driver's message (readiness). */
export function sqlitePing(db: Db): string {
  try {
    db.$client.prepare("SELECT 1").get();
    return "ok";
  } catch (err) {
    return (err as Error).message;
  }
}

/**
 * The SQLite adapter of the port: each method is one synchronous better-sqlite3 call (one
 * transaction at most) wrapped in a resolved Promise, so nothing else can run a statement inside
 * a transaction it holds. The connection stays the caller's: `admin.close` closes it.
 */
export function sqliteLedger(db: Db): Ledger {
  let stmts: ReturnType<typeof prepareIngest> | undefined;
  const sync =
    <A extends unknown[], R>(fn: (db: Db, ...a: A) => R) =>
    (...a: A): Promise<R> => {
      try {
        return Promise.resolve(fn(db, ...a));
      } catch (err) {
        return Promise.reject(err);
      }
    };
  return {
    dialect: "sqlite",
    location: db.$client.name,
    ingestJob: (job, settings, now) => {
      try {
        stmts ??= prepareIngest(db);
        return Promise.resolve(ingestJobSqlite(db, stmts, job, settings, now));
      } catch (err) {
        return Promise.reject(err);
      }
    },
    plan: (o) => planReportsYielding({ db, ...o }),
    outbox: {
      pending: sync(pendingReports),
      failed: sync(failedReports),
      pendingRow: sync(
        (d: Db, identifier: string) =>
          d
            .select()
            .from(meterReports)
            .where(and(eq(meterReports.identifier, identifier), eq(meterReports.state, "pending")))
            .get() ?? null,
      ),
      claimForCall: sync(claimForCall),
      markSent: sync(markSent),
      setInDoubt: sync(setInDoubt),
      markUnconfirmed: sync(markUnconfirmed),
      markFailed: sync(markFailed),
      recordAttempt: sync(recordAttempt),
      retryFailed: sync(retryFailed),
      compact: sync(compactOutbox),
      status: sync((d: Db) =>
        reportStatus(d).map((r) => ({
          state: r.state,
          rows: r.rows,
          value: r.value ?? 0,
          late: r.late ?? 0,
        })),
      ),
      touching: sync(touchingSqlite),
      recordObserved: sync(recordObservedSqlite),
    },
    customers: {
      billed: sync(assignmentCustomers),
      usageOwned: sync(usageOwnedSqlite),
      accounts: sync(accountsSqlite),
      sims: sync(simsSqlite),
      covered: sync(coveredSqlite),
    },
    assignments: sqliteAssignments(db),
    reads: sqliteReads(db),
    views: {
      simRecord: sync(simRecordSqlite),
      outboxRows: sync(outboxRowsSqlite),
      usageRows: sync(usageRowsSqlite),
      ingestLag: sync(ingestLagSqlite),
      lastSentMs: sync(lastSentMsSqlite),
      openQuarantine: sync(openQuarantineSqlite),
      lateRows: sync(lateRowsSqlite),
      quarantineBacklog: sync(quarantineBacklogSqlite),
      quarantinedFor: sync(quarantinedForSqlite),
      reportWork: sync(reportWorkSqlite),
    },
    billing: { load: sync(loadBilling), store: sync(storeBilling) },
    retention: { prune: sync(pruneExpired) },
    admin: {
      ping: async () => sqlitePing(db),
      close: async () => {
        if (db.$client.open) db.$client.close();
      },
    },
  };
}
