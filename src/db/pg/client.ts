import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { drizzle } from "drizzle-orm/node-postgres";
import { migrate } from "drizzle-orm/node-postgres/migrator";
import pg from "pg";
import { redactUrl } from "../../lib/redact-url.ts";
import {
  type MigrationStatus,
  migrationStatusOf,
  type Shipped,
  shippedMigrations,
} from "../migrations.ts";

export type { MigrationStatus } from "../migrations.ts";
export { redactUrl };

/** drizzle/pg beside drizzle/: from src/db/pg (tsx, tests) and dist/db/pg (the build) alike */
export const PG_MIGRATIONS = resolve(
  dirname(fileURLToPath(import.meta.url)),
  "../../../drizzle/pg",
);
/** where drizzle's node-postgres migrator records applied migrations */
export const PG_MIGRATIONS_SCHEMA = "drizzle";
export const PG_MIGRATIONS_TABLE = "__drizzle_migrations";
/** pg_advisory_lock(key1, key2) that serialises migrations: "SMLG" (simmeter ledger), 0 */
export const MIGRATION_LOCK: readonly [number, number] = [0x534d4c47, 0];

// --- int8 ----------------------------------------------------------------------------------------

/** OID of int8 (bigint): count(*), every bigint column */
const INT8_OID = 20;

/**
 * int8 → Number, refusing (throwing) a value a Number cannot hold exactly instead of rounding it.
 * node-postgres's default returns a string.
 */
export function parseInt8(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n))
    throw new RangeError(
      `bigint ${text} is beyond Number.MAX_SAFE_INTEGER (2^53 - 1): simmeter refuses to round it`,
    );
  return n;
}

let int8Installed = false;
/** Installs parseInt8 for int8 in node-postgres's global type table; once per process. */
export function installInt8Parser(): void {
  if (int8Installed) return;
  pg.types.setTypeParser(INT8_OID, parseInt8);
  int8Installed = true;
}
installInt8Parser();

// --- URLs ----------------------------------------------------------------------------------------

/** host:port/database of a URL, for messages (never the user's password) */
export function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    const db = decodeURIComponent(u.pathname.replace(/^\//, "")) || "(default database)";
    return `${u.hostname || u.searchParams.get("host") || "localhost"}:${u.port || "5432"}/${db}`;
  } catch {
    return redactUrl(url);
  }
}

function passwordOf(url: string): string | undefined {
  try {
    const u = new URL(url);
    return (
      (u.password ? decodeURIComponent(u.password) : undefined) ??
      u.searchParams.get("password") ??
      undefined
    );
  } catch {
    return undefined;
  }
}

/** `message` with the URL replaced by its redacted form, and its password (raw or URL-encoded) */
export function scrub(message: string, url: string): string {
  let out = message.split(url).join(redactUrl(url));
  const secret = passwordOf(url);
  if (secret)
    for (const s of new Set([secret, encodeURIComponent(secret)])) out = out.split(s).join("***");
  return out;
}

// --- pools ---------------------------------------------------------------------------------------

export type PoolOptions = {
  /** which process uses the pool: application_name is simmeter-<role> (pg_stat_activity) */
  role: string;
  /** most connections the pool opens (default 8 for work/start, 4 otherwise) */
  max?: number;
  /** statement_timeout per session (default 30000 ms; 0 = none) */
  statementTimeoutMs?: number;
  /** lock_timeout per session (default 10000 ms; 0 = none) */
  lockTimeoutMs?: number;
  /** idle_in_transaction_session_timeout per session (default 60000 ms; 0 = none) */
  idleInTransactionTimeoutMs?: number;
  /** how long a new connection may take (default 5000 ms) */
  connectTimeoutMs?: number;
  /**
   * An idle pooled connection that fails (the server restarted, a network cut) emits an error on
   * the pool; without a listener Node would exit. The default ignores it: the pool discards the
   * connection and the next query opens a new one.
   */
  onIdleError?: (err: Error) => void;
};

const described = new WeakMap<pg.Pool, string>();
const urls = new WeakMap<pg.Pool, string>();

export function createPool(url: string, opts: PoolOptions): pg.Pool {
  installInt8Parser();
  const pool = new pg.Pool({
    connectionString: url,
    application_name: `simmeter-${opts.role}`,
    max: opts.max ?? (opts.role === "work" || opts.role === "start" ? 8 : 4),
    statement_timeout: opts.statementTimeoutMs ?? 30_000,
    lock_timeout: opts.lockTimeoutMs ?? 10_000,
    idle_in_transaction_session_timeout: opts.idleInTransactionTimeoutMs ?? 60_000,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 5_000,
  });
  pool.on("error", opts.onIdleError ?? (() => {}));
  described.set(pool, describeUrl(url));
  urls.set(pool, url);
  return pool;
}

// --- migrations ----------------------------------------------------------------------------------

/**
 * Applies the pending migrations of drizzle/pg. Several processes may start at once: each takes
 * one dedicated connection (the session lock and drizzle's reads must share it), waits for
 * pg_advisory_lock(MIGRATION_LOCK), migrates, unlocks; a later one finds nothing to apply.
 */
export async function migratePg(
  url: string,
  opts: { applicationName?: string; connectTimeoutMs?: number } = {},
): Promise<void> {
  installInt8Parser();
  const client = new pg.Client({
    connectionString: url,
    application_name: opts.applicationName ?? "simmeter-migrate",
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 5_000,
  });
  // a server that goes away mid-migration fails the pending query; this keeps Node alive for it
  client.on("error", () => {});
  try {
    await client.connect();
  } catch (err) {
    throw new Error(
      `cannot connect to PostgreSQL at ${describeUrl(url)} to migrate: ${scrub((err as Error).message, url)}`,
    );
  }
  try {
    await client.query("select pg_advisory_lock($1, $2)", [...MIGRATION_LOCK]);
    let failed = false;
    try {
      await migrate(drizzle(client), {
        migrationsFolder: PG_MIGRATIONS,
        migrationsSchema: PG_MIGRATIONS_SCHEMA,
        migrationsTable: PG_MIGRATIONS_TABLE,
      });
    } catch (err) {
      failed = true;
      throw err;
    } finally {
      // ending the session releases the lock too: an unlock error must not hide the migration's
      await client.query("select pg_advisory_unlock($1, $2)", [...MIGRATION_LOCK]).catch((err) => {
        if (!failed) throw err;
      });
    }
  } finally {
    await client.end().catch(() => {});
  }
}

/** the migrations this version ships (drizzle/pg/meta/_journal.json) with their hashes */
export function shippedPgMigrations(): Shipped[] {
  return shippedMigrations(PG_MIGRATIONS);
}

/**
 * How far the database is migrated, by drizzle's rule (as migrationStatus in src/db/client.ts): a
 * migration is applied when the newest recorded one is at least as recent as its journal entry.
 * Reads only; a database never migrated has applied 0.
 */
export async function pgMigrationStatus(pool: pg.Pool | pg.Client): Promise<MigrationStatus> {
  const all = shippedPgMigrations();
  const table = `"${PG_MIGRATIONS_SCHEMA}"."${PG_MIGRATIONS_TABLE}"`;
  const exists = await pool.query<{ t: string | null }>("select to_regclass($1)::text as t", [
    table,
  ]);
  const rows = exists.rows[0]?.t
    ? (
        await pool.query<{ hash: string; created_at: number | null }>(
          `select hash, created_at from ${table}`,
        )
      ).rows
    : [];
  return migrationStatusOf(all, rows);
}

// --- health --------------------------------------------------------------------------------------

/**
 * "ok" when the pool answers `select 1` within timeoutMs; otherwise why not, naming the server
 * (host:port/database) and never the password.
 */
export async function pingPg(pool: pg.Pool, timeoutMs: number): Promise<string> {
  const where =
    described.get(pool) ?? `${pool.options.host ?? "localhost"}:${pool.options.port ?? 5432}`;
  const url = urls.get(pool);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((res) => {
    timer = setTimeout(
      () => res(`PostgreSQL at ${where} did not answer within ${timeoutMs} ms`),
      timeoutMs,
    );
  });
  const ping = pool.query("select 1").then(
    () => "ok",
    (err: Error & { code?: string }) => {
      const message = err.message || String(err);
      const detail = err.code && !message.includes(err.code) ? `${err.code} ${message}` : message;
      const reason = `PostgreSQL at ${where}: ${detail}`;
      return url ? scrub(reason, url) : reason;
    },
  );
  try {
    return await Promise.race([ping, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
