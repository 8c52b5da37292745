// The two ledger schemas are one schema (docs/design/postgres-ledger.md §5.3): src/db/schema.ts
// (SQLite) and src/db/pg/schema.ts (PostgreSQL) name the same tables, columns, keys and indexes;
// the only difference in names is meter_reports.row_id (SQLite's implicit rowid, made explicit on
// PostgreSQL, with its unique index). And each dialect's newest migration snapshot is its schema,
// so a change made to one schema without generating its migration shows here too.
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { PgTable, getTableConfig as pgTableConfig } from "drizzle-orm/pg-core";
import { SQLiteTable, getTableConfig as sqliteTableConfig } from "drizzle-orm/sqlite-core";
import { describe, expect, it } from "vitest";
import * as pgSchema from "../../src/db/pg/schema.ts";
import * as sqliteSchema from "../../src/db/schema.ts";

const ROOT = resolve(import.meta.dirname, "../..");

/** PostgreSQL-only names: table → columns, and index names */
const PG_ONLY_COLUMNS: Record<string, string[]> = { meter_reports: ["row_id"] };
const PG_ONLY_INDEXES = ["meter_reports_row_id_idx"];

type Shape = {
  columns: string[];
  primaryKey: string[];
  indexes: { name: string; unique: boolean; columns: string[] }[];
};

type Config = ReturnType<typeof sqliteTableConfig> | ReturnType<typeof pgTableConfig>;

function shape(config: Config, dropColumns: string[] = [], dropIndexes: string[] = []): Shape {
  const columns = config.columns.map((c) => c.name).filter((n) => !dropColumns.includes(n));
  const single = config.columns.filter((c) => c.primary).map((c) => c.name);
  const composite = config.primaryKeys.flatMap((k) => k.columns.map((c) => c.name));
  const indexes = config.indexes
    .map((i) => ({
      name: i.config.name ?? "",
      unique: i.config.unique,
      columns: i.config.columns.map((c) => (c as { name: string }).name),
    }))
    .filter((i) => !dropIndexes.includes(i.name))
    .sort((a, b) => a.name.localeCompare(b.name));
  return { columns: columns.sort(), primaryKey: [...single, ...composite], indexes };
}

const sqliteTables = new Map(
  Object.values(sqliteSchema as Record<string, unknown>)
    .filter((v): v is SQLiteTable => v instanceof SQLiteTable)
    .map((t) => {
      const c = sqliteTableConfig(t);
      return [c.name, c] as const;
    }),
);
const pgTables = new Map(
  Object.values(pgSchema as Record<string, unknown>)
    .filter((v): v is PgTable => v instanceof PgTable)
    .map((t) => {
      const c = pgTableConfig(t);
      return [c.name, c] as const;
    }),
);

type Journal = { dialect: string; entries: { idx: number; tag: string; when: number }[] };
const journal = (dir: string) =>
  JSON.parse(readFileSync(join(ROOT, dir, "meta/_journal.json"), "utf8")) as Journal;
const sqlFiles = (dir: string) =>
  readdirSync(join(ROOT, dir))
    .filter((f) => f.endsWith(".sql"))
    .sort();

describe("the SQLite and PostgreSQL schemas", () => {
  it("have the same tables", () => {
    expect(sqliteTables.size).toBe(15);
    expect([...pgTables.keys()].sort()).toEqual([...sqliteTables.keys()].sort());
  });

  it("have, per table, the same columns (but meter_reports.row_id), primary keys and indexes", () => {
    for (const [name, sqlite] of sqliteTables) {
      const pg = pgTables.get(name);
      expect(pg, name).toBeDefined();
      if (!pg) continue;
      expect(shape(pg, PG_ONLY_COLUMNS[name], PG_ONLY_INDEXES), name).toEqual(shape(sqlite));
    }
  });

  it("differ in names only by meter_reports.row_id and its unique index", () => {
    const reports = pgTables.get("meter_reports")!;
    expect(reports.columns.map((c) => c.name)).toContain("row_id");
    const rowIdIndex = shape(reports).indexes.find((i) => i.name === "meter_reports_row_id_idx");
    expect(rowIdIndex).toEqual({
      name: "meter_reports_row_id_idx",
      unique: true,
      columns: ["row_id"],
    });
    expect(sqliteTables.get("meter_reports")!.columns.map((c) => c.name)).not.toContain("row_id");
  });
});

describe("the migrations of both dialects", () => {
  // The PostgreSQL history starts at 0000_init, which creates the schema the six SQLite migrations
  // (0000_init … 0005_outbox_first_call) built up: the counts differ by that baseline. Every later
  // migration comes in a pair, one per dialect with the same name after the number.
  const SQLITE_BASELINE = 6;
  const PG_BASELINE = 1;

  it("list in each journal exactly the .sql files of the folder, in order", () => {
    for (const [dir, dialect] of [
      ["drizzle", "sqlite"],
      ["drizzle/pg", "postgresql"],
    ] as const) {
      const j = journal(dir);
      expect(j.dialect, dir).toBe(dialect);
      expect(
        j.entries.map((e) => `${e.tag}.sql`),
        dir,
      ).toEqual(sqlFiles(dir));
      expect(
        j.entries.map((e) => e.idx),
        dir,
      ).toEqual(j.entries.map((_, i) => i));
    }
  });

  it("come in pairs after the PostgreSQL baseline (today: 6 SQLite, 1 PostgreSQL)", () => {
    const sqlite = journal("drizzle").entries;
    const pg = journal("drizzle/pg").entries;
    expect(sqlite[SQLITE_BASELINE - 1]?.tag).toBe("0005_outbox_first_call");
    expect(pg[PG_BASELINE - 1]?.tag).toBe("0000_init");
    const name = (tag: string) => tag.replace(/^\d+_/, "");
    expect(pg.slice(PG_BASELINE).map((e) => name(e.tag))).toEqual(
      sqlite.slice(SQLITE_BASELINE).map((e) => name(e.tag)),
    );
    expect({ sqlite: sqlite.length, pg: pg.length }).toEqual({ sqlite: 6, pg: 1 });
  });

  it("end in a snapshot that is the dialect's schema (no schema change waits for its migration)", () => {
    const snapshot = (dir: string) => {
      const last = journal(dir).entries.at(-1)!;
      const file = `${last.tag.split("_")[0]}_snapshot.json`;
      const snap = JSON.parse(readFileSync(join(ROOT, dir, "meta", file), "utf8")) as {
        tables: Record<
          string,
          {
            name: string;
            columns: Record<string, unknown>;
            indexes: Record<string, { isUnique: boolean }>;
          }
        >;
      };
      return Object.fromEntries(
        Object.values(snap.tables).map((t) => [
          t.name,
          {
            columns: Object.keys(t.columns).sort(),
            indexes: Object.entries(t.indexes)
              .map(([n, i]) => `${n}${i.isUnique ? " unique" : ""}`)
              .sort(),
          },
        ]),
      );
    };
    const fromSchema = (tables: Map<string, Config>) =>
      Object.fromEntries(
        [...tables].map(([name, c]) => {
          const s = shape(c);
          return [
            name,
            {
              columns: s.columns,
              indexes: s.indexes.map((i) => `${i.name}${i.unique ? " unique" : ""}`),
            },
          ];
        }),
      );
    expect(snapshot("drizzle")).toEqual(fromSchema(sqliteTables));
    expect(snapshot("drizzle/pg")).toEqual(fromSchema(pgTables));
  });
});
