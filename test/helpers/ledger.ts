import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { onTestFinished } from "vitest";
import { type Db, openDb } from "../../src/db/client.ts";
import { createPool, parseInt8 } from "../../src/db/pg/client.ts";
import type { Delivery, IngestJobData } from "../../src/ingest/job.ts";
import type { IngestSummary } from "../../src/ingest/summary.ts";
import type { IngestSettings } from "../../src/ingest/unit-of-work.ts";
import { pgLedger } from "../../src/ledger/pg/index.ts";
import type { Dialect, Ledger } from "../../src/ledger/port.ts";
import { sqliteLedger } from "../../src/ledger/sqlite/index.ts";
import { defaultSettings, subscriptionRows } from "./db.ts";
import { createTestDatabase } from "./pg.ts";

// The test side of the storage port (docs/design/postgres-ledger.md §6.1): one switch,
// SIMMETER_TEST_BACKEND, chooses the ledger a converted test runs on. vitest.config.ts sets it
// per project (sqlite: every file; postgres: the converted files), so a file written against
// openTestLedger / testIngest runs the same assertions on both backends.

export type TestBackend = Dialect;

/** SIMMETER_TEST_BACKEND: sqlite (the default) or postgres; anything else is a mistake. */
export function testBackend(): TestBackend {
  const v = process.env.SIMMETER_TEST_BACKEND;
  if (v === undefined || v === "" || v === "sqlite") return "sqlite";
  if (v === "postgres") return "postgres";
  throw new Error(
    `SIMMETER_TEST_BACKEND=${JSON.stringify(v)}: expected "sqlite" (the default) or "postgres"`,
  );
}

/** what a spawned bin/simmeter.mjs needs to find the ledger (spread over process.env) */
export type TestLedgerEnv = { DATABASE_PATH?: string; DATABASE_URL?: string };

export type OpenTestLedgerOptions = {
  /** SQLite: a file in a temp directory instead of :memory: (needed for `env`) */
  file?: boolean;
  /**
   * close the ledger when the current test finishes (default true: call it inside a test; in a
   * beforeAll pass false and close it in afterAll)
   */
  autoClose?: boolean;
  /** PostgreSQL: the pool's size (default 4) */
  poolMax?: number;
};

export type TestLedger = {
  /** the ledger; a getter: reset() replaces the SQLite adapter (its statement caches) */
  readonly ledger: Ledger;
  readonly backend: TestBackend;
  /**
   * `{ DATABASE_PATH }` (SQLite, with `file`) or `{ DATABASE_URL }`, the other one undefined so
   * that spreading it over process.env removes an inherited value. Throws for :memory:.
   */
  readonly env: TestLedgerEnv;
  /**
   * A test's raw SQL on either backend: `?` placeholders (rewritten to $n on PostgreSQL); rows
   * as SQLite returns them (booleans 0/1, int8 and integral numeric as numbers). Statements that
   * return no rows resolve to [].
   */
  sql: <R = Record<string, unknown>>(text: string, ...params: unknown[]) => Promise<R[]>;
  /** usage_hourly as `${sim}@${ISO hour}` → bytes, zeros left out (usageOf's shape) */
  usage: () => Promise<Record<string, number>>;
  /** empties every ledger table (identities restarted): a fresh ledger, for property runs */
  reset: () => Promise<void>;
  /** closes the ledger; PostgreSQL: drops its database. Idempotent. */
  close: () => Promise<void>;
  /** the SQLite connection (SQLite only): for tests about SQLite itself */
  readonly sqlite: Db | null;
  /** the pool behind the ledger (PostgreSQL only): for tests about PostgreSQL itself */
  readonly pool: pg.Pool | null;
};

// --- PostgreSQL result types: what SQLite returns for the same query -----------------------------

const BOOL_OID = 16;
const INT8_OID = 20;
const NUMERIC_OID = 1700;

/** numeric (sum of bigint, …) → Number; an integer beyond 2^53 - 1 throws as parseInt8 does */
function parseNumeric(text: string): number {
  const n = Number(text);
  if (Number.isInteger(n) && !Number.isSafeInteger(n)) return parseInt8(text);
  return n;
}

/**
 * The types `sql` reads PostgreSQL rows with, per query (node-postgres's global type table is the
 * product's and stays untouched): booleans as SQLite's 0/1, int8 through the product's parseInt8,
 * numeric (sum of a bigint) as a Number; everything else as the global table has it.
 */
export const sqliteLikeTypes: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: string) => {
    if (format === "binary") return pg.types.getTypeParser(oid, "binary");
    if (oid === BOOL_OID) return (v: string) => (v === "t" ? 1 : 0);
    if (oid === INT8_OID) return parseInt8;
    if (oid === NUMERIC_OID) return parseNumeric;
    return pg.types.getTypeParser(oid, "text");
  }) as pg.CustomTypesConfig["getTypeParser"],
};

/** `?` → `$1, $2, …`, outside string literals, quoted identifiers and comments */
export function numberPlaceholders(text: string): string {
  let out = "";
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string;
    if (ch === "'" || ch === '"') {
      const end = text.indexOf(ch, i + 1);
      const stop = end < 0 ? text.length : end + 1;
      out += text.slice(i, stop);
      i = stop - 1;
    } else if (ch === "-" && text[i + 1] === "-") {
      const end = text.indexOf("\n", i);
      const stop = end < 0 ? text.length : end;
      out += text.slice(i, stop);
      i = stop - 1;
    } else if (ch === "?") {
      n++;
      out += `$${n}`;
    } else out += ch;
  }
  return out;
}

// --- opening ----------------------------------------------------------------------------------

/** usage_hourly through `sql`, as usageOf (test/helpers/process.ts) reads a SQLite file */
async function usageVia(sql: TestLedger["sql"]): Promise<Record<string, number>> {
  const rows = await sql<{ sim_sid: string; hour: number; bytes: number }>(
    "select sim_sid, hour, bytes from usage_hourly where bytes != 0 order by sim_sid, hour",
  );
  return Object.fromEntries(
    rows.map((r) => [`${r.sim_sid}@${new Date(r.hour).toISOString()}`, r.bytes]),
  );
}

function openSqlite(o: OpenTestLedgerOptions): TestLedger {
  const dir = o.file ? mkdtempSync(join(tmpdir(), "simmeter-ledger-")) : null;
  const path = dir ? join(dir, "ledger.db") : ":memory:";
  const db = openDb(path);
  let ledger = sqliteLedger(db);
  let closed = false;
  const run = <R>(text: string, params: unknown[]): R[] => {
    const stmt = db.$client.prepare(text);
    const values = params.map((p) => (typeof p === "boolean" ? Number(p) : p));
    if (stmt.reader) return stmt.all(...values) as R[];
    stmt.run(...values);
    return [];
  };
  return {
    get ledger() {
      return ledger;
    },
    backend: "sqlite",
    get env(): TestLedgerEnv {
      if (!dir)
        throw new Error(
          "openTestLedger: env needs a database file: openTestLedger({ file: true })",
        );
      return { DATABASE_PATH: path, DATABASE_URL: undefined };
    },
    sql: async (text, ...params) => run(text, params),
    usage: () => usageVia(async (text, ...params) => run(text, params)),
    reset: async () => {
      const tables = run<{ name: string }>(
        "select name from sqlite_master where type = 'table' and name not like 'sqlite_%' and name not like '__drizzle%'",
        [],
      );
      db.$client.transaction(() => {
        for (const { name } of tables) db.$client.prepare(`delete from "${name}"`).run();
        const seq = db.$client
          .prepare("select 1 from sqlite_master where type = 'table' and name = 'sqlite_sequence'")
          .get();
        if (seq) db.$client.prepare("delete from sqlite_sequence").run();
      })();
      // a new adapter: its statement caches (sims and fleets written) describe the old rows
      ledger = sqliteLedger(db);
    },
    close: async () => {
      if (closed) return;
      closed = true;
      await ledger.admin.close();
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
    sqlite: db,
    pool: null,
  };
}

async function openPostgres(o: OpenTestLedgerOptions): Promise<TestLedger> {
  const database = await createTestDatabase();
  const pool = createPool(database.url, { role: "test", max: o.poolMax ?? 4 });
  const ledger = pgLedger(pool, database.url);
  let resetText: string | undefined;
  let closed = false;
  const sql = async <R>(text: string, ...params: unknown[]): Promise<R[]> => {
    const r = await pool.query({
      text: numberPlaceholders(text),
      values: params,
      types: sqliteLikeTypes,
    });
    return (r.rows ?? []) as R[];
  };
  return {
    ledger,
    backend: "postgres",
    env: { DATABASE_URL: database.url, DATABASE_PATH: undefined },
    sql,
    usage: () => usageVia(sql),
    reset: async () => {
      if (resetText === undefined) {
        const tables = await sql<{ t: string }>(
          "select tablename as t from pg_tables where schemaname = 'public' order by tablename",
        );
        const ids = await sql<{ t: string; c: string }>(
          `select table_name as t, column_name as c from information_schema.columns
            where table_schema = 'public' and is_identity = 'YES' order by table_name`,
        );
        resetText = [
          ...tables.map(({ t }) => `delete from "${t}";`),
          ...ids.map(
            ({ t, c }) => `select setval(pg_get_serial_sequence('"${t}"', '${c}'), 1, false);`,
          ),
        ].join("\n");
      }
      await pool.query(resetText);
    },
    close: async () => {
      if (closed) return;
      closed = true;
      await ledger.admin.close();
      await database.drop();
    },
    sqlite: null,
    pool,
  };
}

/**
 * A real, migrated, empty ledger on the backend SIMMETER_TEST_BACKEND names. SQLite: `:memory:`
 * (or a temp file with `file`); PostgreSQL: a new database cloned from the run's migrated
 * template (test/helpers/pg.ts), its pool built by the product's createPool, dropped on close.
 */
export async function openTestLedger(o: OpenTestLedgerOptions = {}): Promise<TestLedger> {
  const t = testBackend() === "postgres" ? await openPostgres(o) : openSqlite(o);
  if (o.autoClose ?? true) onTestFinished(() => t.close());
  return t;
}

// --- ingest -----------------------------------------------------------------------------------

export type TestIngest = TestLedger & {
  readonly settings: IngestSettings;
  /** one job of one delivery d<n> (receivedAt now()), as memoryIngest's ingest */
  ingest: (events: unknown[], source?: Delivery["source"]) => Promise<IngestSummary>;
  /** any job, with this ledger's settings and clock unless overridden */
  ingestJob: (
    job: IngestJobData,
    o?: { settings?: Partial<IngestSettings>; now?: () => number },
  ) => Promise<IngestSummary>;
};

/**
 * The async counterpart of memoryIngest (test/helpers/db.ts) over `ledger.ingestJob`: the same
 * settings defaults, delivery ids d1, d2, … and receivedAt now(); reset() starts the ids again.
 */
export async function testIngest(
  settings: Partial<IngestSettings> = {},
  now: () => number = () => Date.now(),
  o: OpenTestLedgerOptions = {},
): Promise<TestIngest> {
  const t = await openTestLedger(o);
  const full: IngestSettings = { ...defaultSettings, ...settings };
  let n = 0;
  return {
    get ledger() {
      return t.ledger;
    },
    backend: t.backend,
    get env() {
      return t.env;
    },
    sql: t.sql,
    reset: async () => {
      await t.reset();
      n = 0;
    },
    close: t.close,
    sqlite: t.sqlite,
    pool: t.pool,
    settings: full,
    ingest: (events, source = "unsigned") => {
      n++;
      return t.ledger.ingestJob(
        { v: 1, deliveries: [{ id: `d${n}`, receivedAt: now(), source, events }] },
        full,
        now,
      );
    },
    ingestJob: (job, over = {}) =>
      t.ledger.ingestJob(job, { ...full, ...over.settings }, over.now ?? now),
    usage: t.usage,
  };
}

/**
 * subscribeAll (test/helpers/db.ts) through the port: for each customer one active metered
 * subscription item whose current period spans [start, end).
 */
export async function subscribeAll(
  ledger: Ledger,
  customers: readonly string[],
  o: { start?: number; end?: number; now?: number } = {},
): Promise<void> {
  await ledger.billing.store(subscriptionRows(customers, o));
}
