import type { Db } from "../db/client.ts";
import { type IngestStatements, ingestJobSqlite } from "../ledger/sqlite/ingest.ts";
import type { IngestJobData } from "./job.ts";
import type { IngestSummary } from "./summary.ts";
import type { IngestSettings } from "./unit-of-work.ts";

// The SQLite entry point of ingest: the unit of work (unit-of-work.ts, pure) driven by the SQLite
// statements (src/ledger/sqlite/ingest.ts) in one synchronous transaction per job.

export { type IngestStatements, prepareIngest } from "../ledger/sqlite/ingest.ts";
export { ENDED_ONLY_NEEDS_CUMULATIVE } from "./admit.ts";
export type { IngestSummary } from "./summary.ts";
export type { IngestSettings } from "./unit-of-work.ts";

export type IngestContext = {
  db: Db;
  stmts: IngestStatements;
  settings: IngestSettings;
  now: () => number;
};

/**
 * Counts one job's deliveries exactly once, in one SQLite transaction: dedupe rows, readings and
 * the usage they change commit together or not at all, so a crash or a re-run job cannot lose or
 * double-count bytes. Never throws for bad input: unusable events are quarantined.
 */
export function ingestDeliveries(ctx: IngestContext, job: IngestJobData): IngestSummary {
  return ingestJobSqlite(ctx.db, ctx.stmts, job, ctx.settings, ctx.now);
}
