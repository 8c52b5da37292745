// `simmeter migrate-ledger --from sqlite:PATH --to postgres://…` (docs/design/postgres-ledger.md
// §7.2, issue 11): copies an existing SQLite ledger into an empty PostgreSQL database.
//
// - Source: opened read-only (refuses a missing or unmigrated file), every read in one read
//   transaction (one snapshot), integers read as BigInt (`safeIntegers`) so none is rounded; a
//   value the PostgreSQL side could not read back exactly (beyond 2^53 - 1) is refused.
// - Target: migrated (migratePg, under its lock), then ONE transaction: the exclusive ledger
//   barrier and table locks, a refusal unless every table is empty, the copy (5,000 rows per
//   `INSERT … SELECT FROM unnest(…)`, ids and meter_reports' rowid → row_id verbatim, 0/1 →
//   boolean), the identity sequences set to their max, and a verification of counts and totals
//   against the source snapshot before COMMIT: any difference rolls everything back.
import type Database from "better-sqlite3";
import { SingleBar } from "cli-progress";
import type { Command } from "commander";
import { is } from "drizzle-orm";
import { PgTable, getTableConfig as pgTableConfig } from "drizzle-orm/pg-core";
import { SQLiteTable, getTableConfig as sqliteTableConfig } from "drizzle-orm/sqlite-core";
import type pg from "pg";
import { migrationStatus, openDb } from "../db/client.ts";
import {
  createPool,
  describeUrl,
  migratePg,
  pgMigrationStatus,
  redactUrl,
} from "../db/pg/client.ts";
import * as pgSchema from "../db/pg/schema.ts";
import * as sqliteSchema from "../db/schema.ts";
import { LEDGER_BARRIER } from "../ledger/pg/tx.ts";
import { intOption, table, UsageError } from "./context.ts";

export const DEFAULT_BATCH_ROWS = 5000;
/** a newer seen_events.received_at than this suggests a worker is still counting */
export const RECENT_EVENT_MS = 60_000;

/** PostgreSQL columns that SQLite keeps as its implicit rowid */
const ROWID_COLUMNS: Readonly<Record<string, string>> = { meter_reports: "row_id" };

type PgType = "bigint" | "integer" | "boolean" | "text";

export type ColumnPlan = {
  name: string;
  pgType: PgType;
  /** the SQLite expression that reads it */
  source: string;
  /** an identity column: its sequence is set to the column's max after the copy */
  identity: boolean;
};

export type TablePlan = { name: string; columns: ColumnPlan[] };

/** The two drizzle schemas do not describe the same tables: this simmeter cannot copy safely. */
export class SchemaMismatchError extends Error {
  override name = "SchemaMismatchError";
}

const quote = (name: string) => `"${name.replaceAll('"', '""')}"`;

/**
 * The tables to copy, discovered from the two drizzle schemas (src/db/schema.ts and
 * src/db/pg/schema.ts), sorted by name. Throws SchemaMismatchError when they differ: another
 * table set, another column set (beyond the rowid columns), or a column whose types cannot carry
 * each other's values.
 */
export function ledgerTables(): TablePlan[] {
  const lite = new Map<string, ReturnType<typeof sqliteTableConfig>>();
  for (const v of Object.values(sqliteSchema))
    if (is(v, SQLiteTable)) {
      const c = sqliteTableConfig(v);
      lite.set(c.name, c);
    }
  const pgs = new Map<string, ReturnType<typeof pgTableConfig>>();
  for (const v of Object.values(pgSchema))
    if (is(v, PgTable)) {
      const c = pgTableConfig(v);
      pgs.set(c.name, c);
    }
  const problems: string[] = [];
  const onlyLite = [...lite.keys()].filter((n) => !pgs.has(n));
  const onlyPg = [...pgs.keys()].filter((n) => !lite.has(n));
  if (onlyLite.length > 0) problems.push(`only in the SQLite schema: ${onlyLite.join(", ")}`);
  if (onlyPg.length > 0) problems.push(`only in the PostgreSQL schema: ${onlyPg.join(", ")}`);
  const plans: TablePlan[] = [];
  for (const name of [...pgs.keys()].sort()) {
    const p = pgs.get(name);
    const l = lite.get(name);
    if (!p || !l) continue;
    const liteCols = new Map(l.columns.map((c) => [c.name, c]));
    const columns: ColumnPlan[] = [];
    for (const c of p.columns) {
      const pgType = c.getSQLType() as PgType;
      if (!["bigint", "integer", "boolean", "text"].includes(pgType)) {
        problems.push(`${name}.${c.name}: PostgreSQL type ${pgType} is not one this copy knows`);
        continue;
      }
      const identity = c.generatedIdentity !== undefined;
      const lc = liteCols.get(c.name);
      if (!lc) {
        if (ROWID_COLUMNS[name] === c.name) {
          columns.push({ name: c.name, pgType, source: "rowid", identity });
        } else problems.push(`${name}.${c.name}: only in the PostgreSQL schema`);
        continue;
      }
      liteCols.delete(c.name);
      const liteType = lc.getSQLType();
      const fits = pgType === "text" ? liteType === "text" : liteType === "integer";
      if (!fits) {
        problems.push(`${name}.${c.name}: SQLite ${liteType} cannot be copied into ${pgType}`);
        continue;
      }
      columns.push({ name: c.name, pgType, source: quote(c.name), identity });
    }
    for (const rest of liteCols.keys()) problems.push(`${name}.${rest}: only in the SQLite schema`);
    plans.push({ name, columns });
  }
  if (problems.length > 0)
    throw new SchemaMismatchError(
      `the SQLite and PostgreSQL schemas of this simmeter differ, nothing was copied:\n  ${problems.join("\n  ")}`,
    );
  return plans;
}

// --- arguments -----------------------------------------------------------------------------------

/** `sqlite:PATH` (also `sqlite://PATH`, `sqlite:///abs/path`) → PATH */
export function parseSource(from: string): string {
  const m = /^sqlite:(?:\/\/(?=\/))?(.*)$/i.exec(from.trim());
  const path = m?.[1]?.replace(/^\/\/(?!\/)/, "") ?? "";
  if (!m || path === "" || path === ":memory:")
    throw new UsageError(
      `--from must be sqlite:PATH (the SQLite ledger file, e.g. sqlite:/var/lib/simmeter/simmeter.db), not ${JSON.stringify(from)}`,
    );
  return path;
}

/** a postgres:// or postgresql:// URL; the message of a bad one never shows its password */
export function parseTarget(to: string): string {
  const url = to.trim();
  const shown = JSON.stringify(redactUrl(url));
  if (!/^postgres(ql)?:\/\//i.test(url))
    throw new UsageError(
      `--to must be a PostgreSQL URL starting postgres:// or postgresql:// (e.g. postgres://simmeter@db.internal:5432/simmeter), not ${shown}`,
    );
  try {
    new URL(url);
  } catch {
    throw new UsageError(`--to ${shown} is not a valid URL`);
  }
  return url;
}

/** `message` with the URL's password (raw or encoded) and the URL itself replaced */
function scrub(message: string, url: string): string {
  let out = message;
  try {
    const u = new URL(url);
    const secrets = [u.password, u.searchParams.get("password") ?? ""].filter((s) => s !== "");
    for (const s of secrets)
      for (const form of new Set([s, decodeURIComponent(s), encodeURIComponent(s)]))
        out = out.split(form).join("***");
  } catch {
    // not a URL: parseTarget refused it already
  }
  return out.split(url).join(redactUrl(url));
}

// --- figures: counts and totals, the same SQL on both sides ---------------------------------------

type Query = (sql: string) => Promise<Record<string, string>[]>;

export type Figures = {
  name: string;
  rows: bigint;
  /** check label → value, compared between source and target */
  checks: Map<string, bigint>;
  /** the same, as the JSON answer shows them (snake_case keys) */
  totals: Record<string, unknown>;
};

/** a bigint as a JSON number when exact, else as a string of digits */
const num = (v: bigint): number | string =>
  v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
    ? Number(v)
    : v.toString();

const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** the sums the spec names per table (§7.2 step 4) */
const SUMMED: Readonly<Record<string, string>> = {
  usage_hourly: "bytes",
  sessions: "total_bytes",
  readings: "cumulative",
};

async function figuresOf(name: string, q: Query): Promise<Figures> {
  const t = quote(name);
  const first = async (sql: string) => BigInt((await q(sql))[0]?.n ?? "0");
  const rows = await first(`select cast(count(*) as text) as n from ${t}`);
  const checks = new Map<string, bigint>([["rows", rows]]);
  const totals: Record<string, unknown> = {};
  const summed = SUMMED[name];
  if (summed) {
    const v = await first(`select cast(coalesce(sum(${quote(summed)}), 0) as text) as n from ${t}`);
    checks.set(`sum(${summed})`, v);
    totals[`sum_${summed}`] = num(v);
  }
  if (name === "meter_reports") {
    const r = (
      await q(
        `select state, kind, cast(count(*) as text) as n, cast(coalesce(sum(value), 0) as text) as v from ${t} group by state, kind`,
      )
    ).sort((a, b) => byText(`${a.state}/${a.kind}`, `${b.state}/${b.kind}`));
    for (const x of r) {
      checks.set(`rows state=${x.state} kind=${x.kind}`, BigInt(x.n ?? "0"));
      checks.set(`sum(value) state=${x.state} kind=${x.kind}`, BigInt(x.v ?? "0"));
    }
    totals.by_state_kind = r.map((x) => ({
      state: x.state,
      kind: x.kind,
      rows: num(BigInt(x.n ?? "0")),
      sum_value: num(BigInt(x.v ?? "0")),
    }));
  }
  if (name === "quarantine") {
    const r = (
      await q(`select reason, cast(count(*) as text) as n from ${t} group by reason`)
    ).sort((a, b) => byText(a.reason ?? "", b.reason ?? ""));
    for (const x of r) checks.set(`rows reason=${JSON.stringify(x.reason)}`, BigInt(x.n ?? "0"));
    totals.by_reason = r.map((x) => ({ reason: x.reason, rows: num(BigInt(x.n ?? "0")) }));
  }
  if (name === "meta") {
    const r = (await q(`select key, cast(value as text) as v from ${t}`)).sort((a, b) =>
      byText(a.key ?? "", b.key ?? ""),
    );
    for (const x of r) checks.set(`value key=${JSON.stringify(x.key)}`, BigInt(x.v ?? "0"));
    totals.values = r.map((x) => ({ key: x.key, value: num(BigInt(x.v ?? "0")) }));
  }
  return { name, rows, checks, totals };
}

export type Difference = {
  table: string;
  check: string;
  source: string | null;
  target: string | null;
};

export function compareFigures(source: Figures[], target: Figures[]): Difference[] {
  const out: Difference[] = [];
  const byName = new Map(target.map((f) => [f.name, f]));
  for (const s of source) {
    const t = byName.get(s.name);
    const labels = new Set([...s.checks.keys(), ...(t?.checks.keys() ?? [])]);
    for (const label of labels) {
      const a = s.checks.get(label);
      const b = t?.checks.get(label);
      if (a !== b)
        out.push({
          table: s.name,
          check: label,
          source: a === undefined ? null : a.toString(),
          target: b === undefined ? null : b.toString(),
        });
    }
  }
  return out;
}

// --- the copy ------------------------------------------------------------------------------------

const INT4_MIN = -(2n ** 31n);
const INT4_MAX = 2n ** 31n - 1n;
const SAFE_MIN = BigInt(Number.MIN_SAFE_INTEGER);
const SAFE_MAX = BigInt(Number.MAX_SAFE_INTEGER);

/** A source value the target cannot hold exactly: nothing is copied. */
export class ValueError extends Error {
  override name = "ValueError";
}

function converter(tableName: string, c: ColumnPlan): (v: unknown, rowid: bigint) => unknown {
  const where = (rowid: bigint) => `${tableName}.${c.name} (rowid ${rowid})`;
  const refuse = (v: unknown, rowid: bigint, why: string): never => {
    throw new ValueError(
      `${where(rowid)} holds ${typeof v === "bigint" ? v.toString() : JSON.stringify(v)}: ${why}; nothing was copied`,
    );
  };
  const integer = (v: unknown, rowid: bigint): bigint => {
    if (typeof v === "bigint") return v;
    if (typeof v === "number" && Number.isInteger(v)) return BigInt(v);
    return refuse(v, rowid, "not an integer");
  };
  switch (c.pgType) {
    case "text":
      return (v, rowid) => {
        if (v === null || typeof v === "string") return v;
        if (typeof v === "bigint" || typeof v === "number") return String(v);
        return refuse("(a blob)", rowid, "not text");
      };
    case "boolean":
      return (v, rowid) => {
        if (v === null) return null;
        const n = integer(v, rowid);
        if (n === 0n) return false;
        if (n === 1n) return true;
        return refuse(v, rowid, "a flag must be 0 or 1");
      };
    case "integer":
      return (v, rowid) => {
        if (v === null) return null;
        const n = integer(v, rowid);
        if (n < INT4_MIN || n > INT4_MAX)
          refuse(v, rowid, "beyond the 32-bit integer the PostgreSQL column holds");
        return Number(n);
      };
    case "bigint":
      return (v, rowid) => {
        if (v === null) return null;
        const n = integer(v, rowid);
        if (n < SAFE_MIN || n > SAFE_MAX)
          refuse(
            v,
            rowid,
            "beyond 2^53 - 1 (Number.MAX_SAFE_INTEGER), which simmeter on PostgreSQL refuses to read rather than round",
          );
        return Number(n);
      };
  }
}

type Progress = {
  start(name: string, total: number): void;
  update(done: number): void;
  stop(): void;
};

/** Copies one table in batches; returns the rows copied. */
async function copyTable(
  sqlite: Database.Database,
  client: pg.PoolClient,
  plan: TablePlan,
  batchRows: number,
  progress: Progress,
): Promise<number> {
  const cols = plan.columns.map((c) => c.source).join(", ");
  const t = quote(plan.name);
  const firstPage = sqlite
    .prepare(`select rowid, ${cols} from ${t} order by rowid limit ?`)
    .raw(true)
    .safeIntegers(true);
  const nextPage = sqlite
    .prepare(`select rowid, ${cols} from ${t} where rowid > ? order by rowid limit ?`)
    .raw(true)
    .safeIntegers(true);
  const insert = `insert into ${t} (${plan.columns.map((c) => quote(c.name)).join(", ")}) select * from unnest(${plan.columns
    .map((c, i) => `$${i + 1}::${c.pgType}[]`)
    .join(", ")})`;
  const convert = plan.columns.map((c) => converter(plan.name, c));
  let after: bigint | null = null;
  let done = 0;
  for (;;) {
    const rows = (
      after === null ? firstPage.all(batchRows) : nextPage.all(after, batchRows)
    ) as unknown[][];
    if (rows.length === 0) return done;
    const arrays: unknown[][] = plan.columns.map(() => new Array(rows.length));
    for (let r = 0; r < rows.length; r++) {
      const row = rows[r] as unknown[];
      const rowid = row[0] as bigint;
      for (let c = 0; c < convert.length; c++)
        (arrays[c] as unknown[])[r] = (convert[c] as (v: unknown, id: bigint) => unknown)(
          row[c + 1],
          rowid,
        );
    }
    await client.query(insert, arrays);
    after = (rows[rows.length - 1] as unknown[])[0] as bigint;
    done += rows.length;
    progress.update(done);
    if (rows.length < batchRows) return done;
  }
}

function progressOn(enabled: boolean): Progress & { line(text: string): void } {
  const tty = Boolean(process.stderr.isTTY);
  let bar: SingleBar | null = null;
  let name = "";
  let total = 0;
  let started = 0;
  let lastLine = 0;
  const rate = (done: number) =>
    Math.round(done / Math.max(0.001, (performance.now() - started) / 1000));
  return {
    line(text) {
      if (enabled) process.stderr.write(`${text}\n`);
    },
    start(n, t) {
      if (!enabled) return;
      name = n;
      total = t;
      started = performance.now();
      lastLine = started;
      if (tty) {
        bar = new SingleBar({
          format: "{table} [{bar}] {value}/{total} rows | {rate} rows/s",
          hideCursor: true,
          clearOnComplete: true,
          stream: process.stderr,
        });
        bar.start(Math.max(1, t), 0, { table: n.padEnd(18), rate: 0 });
      }
    },
    update(done) {
      if (!enabled) return;
      if (bar) bar.update(done, { rate: rate(done) });
      else if (performance.now() - lastLine > 5000) {
        lastLine = performance.now();
        process.stderr.write(`  ${name}: ${done}/${total} rows, ${rate(done)} rows/s\n`);
      }
    },
    stop() {
      if (!enabled) return;
      bar?.stop();
      bar = null;
      const secs = (performance.now() - started) / 1000;
      process.stderr.write(
        `  ${name}: ${total}/${total} rows in ${secs.toFixed(2)} s, ${rate(total)} rows/s\n`,
      );
    },
  };
}

// --- the command ---------------------------------------------------------------------------------

export type MigrateResult = {
  ok: boolean;
  /** why nothing was copied (a non-empty target, a failed verification), or null */
  error: string | null;
  source: string;
  target: string;
  tables: { name: string; rows: number | string; totals: Record<string, unknown> }[];
  differences: Difference[];
  seconds: number;
  rows_per_second: number;
};

export type MigrateOptions = {
  path: string;
  url: string;
  batchRows: number;
  quiet: boolean;
  now?: () => number;
};

/** Runs the migration; throws on a failure that is not a refusal or a failed verification. */
export async function migrateLedger(o: MigrateOptions): Promise<MigrateResult> {
  const plans = ledgerTables();
  const now = o.now ?? Date.now;
  const progress = progressOn(!o.quiet);
  const target = describeUrl(o.url);
  const result = (r: Partial<MigrateResult>): MigrateResult => ({
    ok: false,
    error: null,
    source: o.path,
    target,
    tables: [],
    differences: [],
    seconds: 0,
    rows_per_second: 0,
    ...r,
  });

  const db = openDb(o.path, { mode: "read" });
  const sqlite = db.$client;
  let pool: pg.Pool | null = null;
  let client: pg.PoolClient | null = null;
  try {
    const status = migrationStatus(sqlite);
    if (status.unknown > 0)
      throw new Error(
        `the SQLite ledger at ${o.path} has ${status.unknown} migration(s) this simmeter does not know (a newer simmeter migrated it): migrate with that version`,
      );
    // One read transaction: every read below sees the same snapshot.
    sqlite.exec("begin");
    const sourceQuery: Query = async (sql) => sqlite.prepare(sql).all() as Record<string, string>[];
    const newest = sqlite
      .prepare("select max(received_at) as t from seen_events")
      .safeIntegers(true)
      .get() as { t: bigint | null };
    if (newest.t !== null && BigInt(now()) - newest.t < BigInt(RECENT_EVENT_MS))
      process.stderr.write(
        `simmeter: warning: the newest event in ${o.path} was counted ${Math.max(0, Math.round((now() - Number(newest.t)) / 1000))} s ago: stop the workers first: events counted after the snapshot are not copied\n`,
      );
    const sourceFigures: Figures[] = [];
    for (const p of plans) sourceFigures.push(await figuresOf(p.name, sourceQuery));

    await migratePg(o.url, { applicationName: "simmeter-migrate-ledger" });
    pool = createPool(o.url, { role: "migrate-ledger", max: 1, statementTimeoutMs: 0 });
    try {
      client = await pool.connect();
    } catch (err) {
      throw new Error(`cannot connect to PostgreSQL at ${target}: ${(err as Error).message}`);
    }
    const pgStatus = await pgMigrationStatus(client);
    if (pgStatus.unknown > 0 || pgStatus.applied < pgStatus.expected)
      throw new Error(
        `the PostgreSQL database at ${target} is at another schema version than this simmeter (${pgStatus.applied} of ${pgStatus.expected} migrations, ${pgStatus.unknown} unknown)`,
      );
    const c = client;
    const targetQuery: Query = async (sql) => (await c.query<Record<string, string>>(sql)).rows;

    const started = performance.now();
    await c.query("begin isolation level read committed");
    let committed = false;
    try {
      await c.query("select pg_advisory_xact_lock($1, $2)", [...LEDGER_BARRIER]);
      await c.query(`lock table ${plans.map((p) => quote(p.name)).join(", ")} in exclusive mode`);
      const counts = (
        await targetQuery(
          plans
            .map(
              (p) =>
                `select '${p.name}' as name, cast(count(*) as text) as n from ${quote(p.name)}`,
            )
            .join(" union all "),
        )
      ).filter((r) => r.n !== "0");
      if (counts.length > 0) {
        const list = counts.map((r) => `${r.name} (${r.n} rows)`).join(", ");
        return result({
          error: `the target ${target} is not empty: ${list}; use an empty database (nothing was copied)`,
          tables: counts.map((r) => ({
            name: r.name ?? "",
            rows: num(BigInt(r.n ?? "0")),
            totals: {},
          })),
        });
      }

      let copied = 0;
      for (const p of plans) {
        const expected = Number(sourceFigures.find((f) => f.name === p.name)?.rows ?? 0n);
        progress.start(p.name, expected);
        copied += await copyTable(sqlite, c, p, o.batchRows, progress);
        progress.stop();
        for (const col of p.columns.filter((x) => x.identity)) {
          await c.query(
            `select setval(pg_get_serial_sequence($1, $2), m) from (select max(${quote(col.name)}) as m from ${quote(p.name)}) x where m is not null`,
            [quote(p.name), col.name],
          );
        }
      }
      const targetFigures: Figures[] = [];
      for (const p of plans) targetFigures.push(await figuresOf(p.name, targetQuery));
      const seconds = (performance.now() - started) / 1000;
      const differences = compareFigures(sourceFigures, targetFigures);
      const tables = sourceFigures.map((f) => ({
        name: f.name,
        rows: num(f.rows),
        totals: f.totals,
      }));
      const timing = {
        seconds: Math.round(seconds * 1000) / 1000,
        rows_per_second: Math.round(copied / Math.max(seconds, 0.001)),
      };
      if (differences.length > 0)
        return result({
          error: `the copy in ${target} differs from the source in ${differences.length} check(s); rolled back, nothing was copied`,
          tables,
          differences,
          ...timing,
        });
      await c.query("commit");
      committed = true;
      return result({ ok: true, tables, ...timing });
    } finally {
      if (!committed) await c.query("rollback").catch(() => {});
    }
  } catch (err) {
    if (err instanceof Error) err.message = scrub(err.message, o.url);
    throw err;
  } finally {
    if (sqlite.inTransaction) sqlite.exec("rollback");
    sqlite.close();
    client?.release();
    await pool?.end().catch(() => {});
  }
}

function totalsText(totals: Record<string, unknown>): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(totals)) {
    if (!Array.isArray(v)) parts.push(`${k}=${String(v)}`);
    else
      for (const x of v as Record<string, unknown>[])
        parts.push(
          "state" in x
            ? `${x.state}/${x.kind}: ${x.rows} rows, sum_value=${x.sum_value}`
            : "reason" in x
              ? `${x.reason}: ${x.rows}`
              : `${x.key}=${x.value}`,
        );
  }
  return parts.join("; ");
}

export function registerMigrateLedgerCommand(program: Command): void {
  program
    .command("migrate-ledger")
    .description(
      "copy a SQLite ledger into an empty PostgreSQL database in one transaction, verified before it commits; exits 1 when the target is not empty or the copy differs",
    )
    .requiredOption("--from <source>", "the SQLite ledger: sqlite:PATH")
    .requiredOption("--to <url>", "the PostgreSQL database: postgres://USER@HOST:PORT/DATABASE")
    .option("--batch-rows <n>", "rows per INSERT", intOption(1, 1_000_000), DEFAULT_BATCH_ROWS)
    .option("--json", "print the result as JSON (no progress on stderr)")
    .addHelpText(
      "after",
      `
Example:
  simmeter migrate-ledger --from sqlite:/var/lib/simmeter/simmeter.db \\
    --to postgres://simmeter@db.internal:5432/simmeter

Stop every simmeter process that writes the SQLite ledger first: the copy is one snapshot, and
events counted after it are not copied. The target's migrations are applied first; every table
must then be empty. A password can come from PGPASSWORD instead of the URL; messages never show it.
Progress goes to stderr; --json prints { ok, tables: [{ name, rows, totals }], ... } on stdout.`,
    )
    .action(async (o: { from: string; to: string; batchRows: number; json?: boolean }) => {
      const path = parseSource(o.from);
      const url = parseTarget(o.to);
      let r: MigrateResult;
      try {
        r = await migrateLedger({ path, url, batchRows: o.batchRows, quiet: Boolean(o.json) });
      } catch (err) {
        if (o.json)
          process.stdout.write(
            `${JSON.stringify({ ok: false, error: (err as Error).message, source: path, target: describeUrl(url), tables: [], differences: [] }, null, 2)}\n`,
          );
        throw err;
      }
      if (o.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      if (!r.ok) {
        if (r.differences.length > 0 && !o.json) process.stderr.write(`${table(r.differences)}\n`);
        process.stderr.write(`simmeter: ${r.error}\n`);
        process.exitCode = 1;
        return;
      }
      if (!o.json) {
        const rows = r.tables.reduce((s, t) => s + Number(t.rows), 0);
        process.stdout.write(
          `${table(r.tables.map((t) => ({ table: t.name, rows: t.rows, totals: totalsText(t.totals) })))}\n` +
            `copied ${rows} rows from ${path} to ${r.target} in ${r.seconds} s (${r.rows_per_second} rows/s); counts and totals verified\n`,
        );
      }
    });
}
