import { existsSync, mkdirSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { type BetterSQLite3Database, drizzle } from "drizzle-orm/better-sqlite3";
import { migrate } from "drizzle-orm/better-sqlite3/migrator";
import { type MigrationStatus, migrationStatusOf, shippedMigrations } from "./migrations.ts";
import * as schema from "./schema.ts";

export type Db = BetterSQLite3Database<typeof schema> & { $client: Database.Database };

const MIGRATIONS = resolve(dirname(fileURLToPath(import.meta.url)), "../../drizzle");
const MIGRATIONS_TABLE = "__drizzle_migrations";

/**
 * - `create` (the default: the service roles, tests): creates the file and its directory when
 *   missing, and applies pending migrations;
 * - `write` (CLI commands that change the ledger): the file must exist; pending migrations are
 *   applied;
 * - `read` (CLI commands that only read): the file must exist and be migrated at least as far as
 *   this version expects; opened read-only, never migrated, nothing created.
 */
export type OpenMode = "create" | "write" | "read";

export type OpenOptions = {
  mode?: OpenMode;
  /** the same as mode "read" */
  readonly?: boolean;
};

/** Why a database could not be opened as asked; the message names the path and the fix. */
export class DatabaseOpenError extends Error {
  override name = "DatabaseOpenError";
}

export function missingDatabaseMessage(path: string): string {
  return `no database at ${resolve(path)}: check DATABASE_PATH (the worker creates it on first start)`;
}

/**
 * Opens the SQLite database. Read-write opens use WAL and apply pending migrations; WAL runs at
 * synchronous=NORMAL (better-sqlite3's build default); see docs/adr/0002-sqlite-durability.md.
 * A read-only open beside a running worker reads through its -wal and -shm files.
 */
export function openDb(path: string, opts: OpenOptions = {}): Db {
  const mode: OpenMode = opts.mode ?? (opts.readonly ? "read" : "create");
  const memory = path === ":memory:";
  const abs = memory ? path : resolve(path);
  if (mode !== "create" && !memory && !existsSync(path))
    throw new DatabaseOpenError(missingDatabaseMessage(path));
  if (mode === "create" && !memory) mkdirSync(dirname(abs), { recursive: true });
  let sqlite: Database.Database;
  try {
    sqlite = new Database(path, {
      timeout: 5000,
      readonly: mode === "read",
      fileMustExist: mode !== "create",
    });
  } catch (err) {
    throw new DatabaseOpenError(openFailure(abs, mode, err));
  }
  try {
    if (mode === "read") {
      const status = migrationStatus(sqlite);
      if (status.applied < status.expected) {
        throw new DatabaseOpenError(
          `database at ${abs} is older than this simmeter (${status.applied} of ${status.expected} migrations); start the worker once to migrate`,
        );
      }
      return drizzle(sqlite, { schema }) as Db;
    }
    sqlite.pragma("journal_mode = WAL");
    sqlite.pragma("synchronous = NORMAL");
    sqlite.pragma("foreign_keys = ON");
    // Measured on 2 cores (BENCHMARKS.md): checkpointing every 1,000 pages (the default) fsyncs
    // so often that ingest spends a third of its time there; 10,000 pages (~40 MB of WAL) and a
    // 32 MB page cache took 100-event jobs from 13.8k to 20k events/s.
    sqlite.pragma("wal_autocheckpoint = 10000");
    sqlite.pragma("cache_size = -32768");
    const db = drizzle(sqlite, { schema }) as Db;
    migrate(db, { migrationsFolder: MIGRATIONS });
    return db;
  } catch (err) {
    sqlite.close();
    if (err instanceof DatabaseOpenError) throw err;
    throw new DatabaseOpenError(openFailure(abs, mode, err));
  }
}

function openFailure(abs: string, mode: OpenMode, err: unknown): string {
  const code = (err as { code?: string }).code ?? "";
  const message = (err as Error).message;
  if (code === "SQLITE_NOTADB") return `${abs} is not a SQLite database: check DATABASE_PATH`;
  if (existsSync(abs) && statSync(abs).isDirectory())
    return `${abs} is a directory, not a SQLite database: check DATABASE_PATH`;
  if (mode === "read" && (code.startsWith("SQLITE_CANTOPEN") || code.startsWith("SQLITE_READONLY")))
    return `cannot read the database at ${abs} (${message}): a read-only reader of a WAL database needs its -wal and -shm files, or write access to ${dirname(abs)} to create them; run as the service's user, or check DATABASE_PATH`;
  return `cannot open the database at ${abs}: ${message}`;
}

export type { MigrationStatus } from "./migrations.ts";

/**
 * How far the database is migrated, by drizzle's own rule: a migration is applied when the newest
 * recorded migration is at least as recent as its journal entry. Reads only.
 */
export function migrationStatus(sqlite: Database.Database): MigrationStatus {
  const hasTable = sqlite
    .prepare("select 1 from sqlite_master where type = 'table' and name = ?")
    .get(MIGRATIONS_TABLE);
  const rows = hasTable
    ? (sqlite.prepare(`select hash, created_at from "${MIGRATIONS_TABLE}"`).all() as {
        hash: string;
        created_at: number | string | null;
      }[])
    : [];
  return migrationStatusOf(shippedMigrations(MIGRATIONS), rows);
}
