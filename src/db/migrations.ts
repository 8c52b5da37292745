import { readFileSync } from "node:fs";
import { join } from "node:path";
import { readMigrationFiles } from "drizzle-orm/migrator";

// What both ledgers (SQLite and PostgreSQL) answer about their migrations, by drizzle's own rule.

export type MigrationStatus = {
  /** migrations of this version that the database has */
  applied: number;
  /** migrations this version ships (meta/_journal.json of the dialect's folder) */
  expected: number;
  /** tags of the migrations still to apply */
  pending: string[];
  /** tags of applied migrations whose file changed since (the stored hash differs) */
  changed: string[];
  /** applied migrations this version does not know: a newer simmeter migrated the database */
  unknown: number;
};

export type Shipped = { tag: string; when: number; hash: string };

const shipped = new Map<string, Shipped[]>();

/** The migrations a folder ships (its meta/_journal.json) with their hashes; read once per folder. */
export function shippedMigrations(folder: string): Shipped[] {
  let list = shipped.get(folder);
  if (!list) {
    const journal = JSON.parse(readFileSync(join(folder, "meta/_journal.json"), "utf8")) as {
      entries: { tag: string; when: number }[];
    };
    const files = readMigrationFiles({ migrationsFolder: folder });
    list = journal.entries.map((e, i) => ({
      tag: e.tag,
      when: e.when,
      hash: files[i]?.hash ?? "",
    }));
    shipped.set(folder, list);
  }
  return list;
}

/**
 * drizzle's rule: a migration is applied when the newest recorded migration is at least as recent
 * as its journal entry. `rows` are the database's migrations table (none: never migrated).
 */
export function migrationStatusOf(
  all: readonly Shipped[],
  rows: readonly { hash: string; created_at: number | string | null }[],
): MigrationStatus {
  const times = rows.map((r) => Number(r.created_at));
  const last = times.length > 0 ? Math.max(...times) : null;
  const pending = all.filter((m) => last === null || last < m.when);
  const changed = all
    .filter((m) => !pending.includes(m))
    .filter((m) => rows.some((r) => Number(r.created_at) === m.when && r.hash !== m.hash))
    .map((m) => m.tag);
  const unknown = times.filter((t) => !all.some((m) => m.when === t)).length;
  return {
    applied: all.length - pending.length,
    expected: all.length,
    pending: pending.map((m) => m.tag),
    changed,
    unknown,
  };
}
