import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { type BetterSQLite3Database, drizzle } from "drizzle-orm/better-sqlite3";
import { migrate } from "drizzle-orm/better-sqlite3/migrator";
import * as schema from "./schema.ts";

export type Db = BetterSQLite3Database<typeof schema> & { $client: Database.Database };

const MIGRATIONS = resolve(dirname(fileURLToPath(import.meta.url)), "../../drizzle");

export type OpenOptions = {
  /** open without migrating or writing (CLI reads while the worker owns the database) */
  readonly?: boolean;
};

/**
 * Opens the SQLite database in WAL mode and applies pending migrations. WAL runs at
 * synchronous=NORMAL (better-sqlite3's build default); see docs/adr/0002-sqlite-durability.md.
 */
export function openDb(path: string, opts: OpenOptions = {}): Db {
  if (path !== ":memory:") mkdirSync(dirname(resolve(path)), { recursive: true });
  const sqlite = new Database(path, { timeout: 5000, readonly: opts.readonly ?? false });
  if (!opts.readonly) {
    sqlite.pragma("journal_mode = WAL");
    sqlite.pragma("synchronous = NORMAL");
    sqlite.pragma("foreign_keys = ON");
    // Measured on 2 cores (BENCHMARKS.md): checkpointing every 1,000 pages (the default) fsyncs
    // so often that ingest spends a third of its time there; 10,000 pages (~40 MB of WAL) and a
    // 32 MB page cache took 100-event jobs from 13.8k to 20k events/s.
    sqlite.pragma("wal_autocheckpoint = 10000");
    sqlite.pragma("cache_size = -32768");
  }
  const db = drizzle(sqlite, { schema }) as Db;
  if (!opts.readonly) migrate(db, { migrationsFolder: MIGRATIONS });
  return db;
}
