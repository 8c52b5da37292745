import { type Config, ConfigError, type ConfigNeeds, loadConfig } from "../config.ts";
import { type Db, openDb } from "../db/client.ts";
import { createLogger, type Logger } from "../lib/logger.ts";

export type CliContext = { config: Config; logger: Logger; db: Db };

/** Loads config (exit 2 with the message on a bad value) and opens the database. */
export function cliContext(needs: ConfigNeeds = {}, logLevel?: string): CliContext {
  let config: Config;
  try {
    config = loadConfig(process.env, needs);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`simmeter: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger(logLevel ?? config.LOG_LEVEL);
  const db = openDb(config.DATABASE_PATH);
  return { config, logger, db };
}

export function printJsonOrTable(
  json: boolean,
  rows: Record<string, unknown>[],
  empty: string,
): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
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
