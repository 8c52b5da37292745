import { InvalidArgumentError } from "commander";
import pino from "pino";
import { type Config, ConfigError, type ConfigNeeds, loadConfig } from "../config.ts";
import type { OpenMode } from "../db/client.ts";
import { type OpenedLedger, openLedger } from "../ledger/open.ts";
import { createLogger, type Logger } from "../lib/logger.ts";
import { parseUtcTime } from "../lib/time.ts";
import { type List, MAX_PAGE, snakeKeys } from "../views/json.ts";

/**
 * How a command opens the database:
 * - `read`: read-only; refuses a missing or unmigrated file, never creates or migrates anything;
 * - `write`: read-write; refuses a missing file (a mistyped DATABASE_PATH must not start a new,
 *   empty ledger), applies pending migrations;
 * - `create`: creates the file when missing (the service roles, which own the ledger).
 */
export type CliNeeds = ConfigNeeds & {
  db?: OpenMode;
  /** the process's role, for PostgreSQL's application_name (simmeter-<role>) */
  role?: string;
};

/** A mistake in how a command was called: printed, exit 2 (as commander's own usage errors). */
export class UsageError extends Error {
  override name = "UsageError";
}

/** Loads config (exit 2 with the message on a bad value); for commands without a database. */
export function cliConfig(
  needs: ConfigNeeds = {},
  logLevel?: string,
): { config: Config; logger: Logger } {
  let config: Config;
  try {
    config = loadConfig(process.env, needs);
  } catch (err) {
    if (err instanceof ConfigError) {
      // A service role's stderr is its log: JSON there too (a log shipper reads every line).
      if (needs.admin) fatalJson("invalid configuration", err.message);
      else process.stderr.write(`simmeter: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  return { config, logger: createLogger(logLevel ?? config.LOG_LEVEL) };
}

/**
 * Loads config (exit 2 with the message on a bad value) and opens the ledger DATABASE_URL or
 * DATABASE_PATH selects, as `needs.db` says (without it, as the service does: `create`). A ledger
 * that cannot be opened stops the process: a JSON line for the service roles (exit 1), the error
 * (a DatabaseOpenError naming the path or server and the fix) thrown otherwise.
 */
export async function cliLedger(
  needs: CliNeeds = {},
  logLevel?: string,
): Promise<{ config: Config; logger: Logger; opened: OpenedLedger }> {
  const { db: mode = "create", role: _role, ...configNeeds } = needs;
  const { config, logger } = cliConfig(configNeeds, logLevel);
  try {
    const opened = await openLedger(config, { mode, role: needs.role ?? "cli" });
    return { config, logger, opened };
  } catch (err) {
    if (!configNeeds.admin) throw err;
    fatalJson("cannot open the database", (err as Error).message);
    process.exit(1);
  }
}

/** One pino line at fatal level, written synchronously (the process exits next). */
function fatalJson(msg: string, detail: string): void {
  pino({ name: "simmeter" }, pino.destination({ fd: 2, sync: true })).fatal({ err: detail }, msg);
}

// ---------------------------------------------------------------------------------------------
// Option parsers (commander argParser): a bad value is a usage error naming the value.

const WHOLE = /^\d+$/;

/** A whole number >= min (default 1), digits only: "abc", "1.5", "1e3", "-2", "0x10" are refused. */
export function intOption(min = 1, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value: string) => {
    const v = value.trim();
    const n = Number(v);
    if (!WHOLE.test(v) || !Number.isSafeInteger(n) || n < min || n > max)
      throw new InvalidArgumentError(
        min === 1 && max === Number.MAX_SAFE_INTEGER
          ? "must be a positive integer"
          : max === Number.MAX_SAFE_INTEGER
            ? `must be a whole number >= ${min}`
            : `must be a whole number from ${min} to ${max}`,
      );
    return n;
  };
}

export const positiveInt = intOption(1);

/** Repeatable positive integers (`--id 3 4` or `--id 3 --id 4`). */
export function positiveInts(value: string, previous: number[] | undefined): number[] {
  return [...(previous ?? []), positiveInt(value)];
}

/** An ISO 8601 time (UTC without an offset), as epoch ms. */
export function timeOption(name: string): (value: string) => number {
  return (value: string) => {
    try {
      return parseUtcTime(value, name);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };
}

export function printJsonOrTable(
  json: boolean,
  rows: Record<string, unknown>[],
  empty: string,
): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(snakeKeys(rows), null, 2)}\n`);
    return;
  }
  if (rows.length === 0) {
    process.stdout.write(`${empty}\n`);
    return;
  }
  process.stdout.write(`${table(rows)}\n`);
}

export function table(rows: Record<string, unknown>[]): string {
  const cols = Object.keys(rows[0] ?? {});
  const cell = (v: unknown) => (v === null || v === undefined ? "" : String(v));
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const numeric = cols.map((c) => rows.every((r) => typeof r[c] === "number" || r[c] === null));
  const line = (vals: string[]) =>
    vals
      .map((v, i) => (numeric[i] ? v.padStart(widths[i] ?? 0) : v.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [
    line(cols),
    line(widths.map((w) => "-".repeat(w))),
    ...rows.map((r) => line(cols.map((c) => cell(r[c])))),
  ].join("\n");
}

/**
 * Collects a view's pages into one list document (what `--json` prints): every row, or the first
 * `max` with has_more saying whether more exist. The same document /api serves page by page.
 */
export function collectList<T>(
  fetchPage: (page: { limit: number; starting_after?: string }) => List<T>,
  max = Number.POSITIVE_INFINITY,
): List<T> {
  const data: T[] = [];
  let cursor: string | undefined;
  for (;;) {
    const limit = Math.min(MAX_PAGE, max - data.length);
    const page = fetchPage({ limit, ...(cursor !== undefined ? { starting_after: cursor } : {}) });
    data.push(...page.data);
    if (!page.has_more || page.next_starting_after === null) {
      return { object: "list", data, has_more: false, next_starting_after: null };
    }
    cursor = page.next_starting_after;
    if (data.length >= max) {
      return { object: "list", data, has_more: true, next_starting_after: cursor };
    }
  }
}

/** A list document as JSON, or its rows as a table (`empty` when there are none). */
export function printList<T extends Record<string, unknown>>(
  json: boolean,
  list: List<T>,
  empty: string,
  tableRows: (rows: T[]) => Record<string, unknown>[] = (rows) => rows,
): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
    return;
  }
  printJsonOrTable(false, tableRows(list.data), empty);
  if (list.has_more)
    process.stdout.write(
      `… more rows: raise --limit (or page through GET /api with starting_after)\n`,
    );
}
