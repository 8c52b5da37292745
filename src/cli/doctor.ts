// `simmeter doctor`: every check of src/cli/doctor/, in order, as a table or JSON; exits 1 when a
// check fails (with --strict, when one warns too).
import type { Command } from "commander";
import type { Config } from "../config.ts";
import type { Db } from "../db/client.ts";
import { openLedger } from "../ledger/open.ts";
import type { Ledger } from "../ledger/port.ts";
import { sqliteLedger } from "../ledger/sqlite/index.ts";
import { VERSION } from "../lib/version.ts";
import { createStripe } from "../reporting/stripe.ts";
import { cliConfig, table } from "./context.ts";
import type { Add, Check, CheckStatus } from "./doctor/check.ts";
import { doctorDatabase, doctorLedger } from "./doctor/database.ts";
import { doctorPostgres } from "./doctor/postgres.ts";
import { doctorRedis } from "./doctor/redis.ts";
import { doctorReporting } from "./doctor/reporting.ts";
import { doctorStripe } from "./doctor/stripe.ts";
import { doctorWebhook } from "./doctor/webhook.ts";

export function registerDoctorCommand(program: Command): void {
  program
    .command("doctor")
    .description(
      "check the database (the SQLite file, or PostgreSQL with DATABASE_URL), Redis, the webhook settings, quarantine, unmapped usage, reporting, the Stripe key, clock, meter, customers and subscriptions; exits 1 when a check fails",
    )
    .option("--json", 'print only JSON: { "ok": …, "checks": [{ "name", "status", "detail", … }] }')
    .option("--strict", "count warnings as failures")
    .action(async (o: { json?: boolean; strict?: boolean }) => {
      const { config } = cliConfig({}, "warn");
      const checks = await runDoctor(config);
      const strict = Boolean(o.strict);
      const shown = checks.map((c) =>
        strict && c.status === "warn" ? { ...c, status: "fail" as const } : c,
      );
      const ok = !shown.some((c) => c.status === "fail");
      if (!ok) process.exitCode = 1;
      if (o.json) {
        process.stdout.write(
          `${JSON.stringify(
            {
              ok,
              strict,
              version: VERSION,
              checked_at: new Date().toISOString(),
              checks: shown.map(({ name, status, detail, extra }) => ({
                name,
                status,
                detail,
                ...extra,
              })),
            },
            null,
            2,
          )}\n`,
        );
        return;
      }
      process.stdout.write(
        `${table(shown.map((c) => ({ check: c.name, result: c.status, detail: c.detail })))}\n`,
      );
      process.stdout.write(`\n${summary(checks, strict)}\n`);
    });
}

/** The line under the table: "all N checks ok", or how many failed and warned. */
function summary(checks: Check[], strict: boolean): string {
  const n = (s: CheckStatus) => checks.filter((c) => c.status === s).length;
  const fails = n("fail");
  const warns = n("warn");
  return `${
    fails + warns === 0
      ? `all ${checks.length} checks ok`
      : [
          fails ? `${fails} failed` : "",
          warns ? `${warns} ${warns === 1 ? "warning" : "warnings"}` : "",
        ]
          .filter(Boolean)
          .join(", ")
  }${strict && warns ? " (--strict: warnings fail)" : ""}`;
}

const sqliteOf = (db: Db | null): Ledger | null => (db ? sqliteLedger(db) : null);

/**
 * The server checks, then the ledger opened read-only for the checks of its contents; null when
 * it cannot be opened (the server checks say why).
 */
async function doctorPostgresLedger(config: Config, add: Add): Promise<Ledger | null> {
  await doctorPostgres(config, add);
  try {
    return (await openLedger(config, { mode: "read", role: "doctor" })).ledger;
  } catch (err) {
    // Never silently fewer checks: the contents checks that cannot run fail here, by name.
    add(
      "ledger contents",
      "fail",
      `cannot open the ledger to check quarantine, unmapped usage, the outbox and reporting: ${(err as Error).message}`,
    );
    return null;
  }
}

/**
 * Every doctor check, in the order printed. Each reports for itself (one failure names its own
 * cause and the others still run); the database is opened read-only and never created (nor, on
 * PostgreSQL, migrated).
 */
async function runDoctor(config: Config): Promise<Check[]> {
  const checks: Check[] = [];
  const add: Add = (name, status, detail = "", extra = {}) =>
    checks.push({ name, status, detail, extra });

  const postgres = Boolean(config.DATABASE_URL);
  const ledger = postgres
    ? await doctorPostgresLedger(config, add)
    : sqliteOf(doctorDatabase(config, add));
  let redis: Awaited<ReturnType<typeof doctorRedis>> = null;
  try {
    redis = await doctorRedis(config, add);
    if (ledger) await doctorLedger(config, ledger, add);
    if (ledger && config.STRIPE_SECRET_KEY) await doctorReporting(config, ledger, redis, add);
    doctorWebhook(config, add);
    if (!config.STRIPE_SECRET_KEY) {
      add(
        "stripe key",
        "warn",
        "STRIPE_SECRET_KEY is not set: reporting is disabled (usage is counted, not sent to Stripe)",
      );
    } else {
      await doctorStripe(createStripe(config), config, ledger, add);
    }
  } finally {
    redis?.disconnect();
    await ledger?.admin.close();
  }
  return checks;
}
