import type { Config } from "../config.ts";
import { DatabaseOpenError, type OpenMode, openDb } from "../db/client.ts";
import { createPool, describeUrl, migratePg, pgMigrationStatus, scrub } from "../db/pg/client.ts";
import { redactUrl } from "../lib/redact-url.ts";
import { type LedgerGaugeReads, sqliteGaugeReads } from "../observability/ledger-gauges.ts";
import { pgGaugeReads } from "./pg/gauges.ts";
import { pgLedger } from "./pg/index.ts";
import type { Ledger } from "./port.ts";
import { sqliteLedger } from "./sqlite/index.ts";

// Which ledger a process uses: DATABASE_URL=postgres://… selects PostgreSQL, otherwise the SQLite
// file at DATABASE_PATH (the embedded default).

export type OpenedLedger = {
  ledger: Ledger;
  /** what the ledger gauges read (src/observability/ledger-gauges.ts) */
  gaugeReads: LedgerGaugeReads;
};

export type LedgerOpenOptions = {
  /** as openDb: create (and migrate), write (exists; migrate), read (exists, migrated; nothing written) */
  mode?: OpenMode;
  /** the process's role, for PostgreSQL's application_name (simmeter-<role>) and the pool size */
  role: string;
};

/** The backend the configuration selects, and where it is (the URL without its password). */
export function ledgerLocation(config: Config): { dialect: Ledger["dialect"]; location: string } {
  return config.DATABASE_URL
    ? { dialect: "postgres", location: redactUrl(config.DATABASE_URL) }
    : { dialect: "sqlite", location: config.DATABASE_PATH };
}

/**
 * Opens the configured ledger. PostgreSQL: `create` and `write` apply pending migrations under
 * the migration lock (several processes may start at once); `read` refuses a database that is not
 * migrated as far as this version expects, and migrates nothing. A database that does not exist
 * is never created: the error names the server and the fix.
 */
export async function openLedger(config: Config, o: LedgerOpenOptions): Promise<OpenedLedger> {
  const mode = o.mode ?? "create";
  const url = config.DATABASE_URL;
  if (!url) {
    const db = openDb(config.DATABASE_PATH, { mode });
    return { ledger: sqliteLedger(db), gaugeReads: sqliteGaugeReads(db) };
  }
  if (mode !== "read") await migratePg(url, { applicationName: `simmeter-${o.role}-migrate` });
  const pool = createPool(url, {
    role: o.role,
    max: config.PG_POOL_MAX,
    statementTimeoutMs: config.PG_STATEMENT_TIMEOUT_MS,
    lockTimeoutMs: config.PG_LOCK_TIMEOUT_MS,
    idleInTransactionTimeoutMs: config.PG_IDLE_IN_TRANSACTION_TIMEOUT_MS,
    connectTimeoutMs: config.PG_CONNECT_TIMEOUT_MS,
  });
  try {
    const status = await pgMigrationStatus(pool);
    if (status.pending.length > 0)
      throw new DatabaseOpenError(
        `the PostgreSQL ledger at ${describeUrl(url)} lacks migrations ${status.pending.join(", ")} ` +
          `(${status.applied} of ${status.expected} applied): start simmeter work (or start) once to apply them`,
      );
    if (status.unknown > 0)
      throw new DatabaseOpenError(
        `the PostgreSQL ledger at ${describeUrl(url)} was migrated by a newer simmeter ` +
          `(${status.unknown} migrations this version does not know): run that version`,
      );
  } catch (err) {
    await pool.end().catch(() => {});
    if (err instanceof DatabaseOpenError) throw err;
    // a server or database that is not there (read mode has not connected before): name it
    throw new DatabaseOpenError(
      `cannot open the PostgreSQL ledger at ${describeUrl(url)}: ${scrub((err as Error).message, url)}`,
    );
  }
  return { ledger: pgLedger(pool, url), gaugeReads: pgGaugeReads(pool) };
}
