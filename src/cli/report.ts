// `simmeter report` (a report pass now, --dry-run, --status, --retry-failed) and `simmeter stripe
// setup`; reportPass is also reconcile --repair's.
import type { Command } from "commander";
import type Stripe from "stripe";
import type { CustomerBilling } from "../billing/periods.ts";
import type { Config } from "../config.ts";
import type { Ledger } from "../ledger/port.ts";
import { createLogger } from "../lib/logger.ts";
import { createRedis, waitReady } from "../lib/redis.ts";
import { LEASE_TTL_MS, type ReportSummary, runReport } from "../reporting/reporter.ts";
import { createStripe } from "../reporting/stripe.ts";
import { ensureMeter } from "../reporting/stripe-setup.ts";
import { reporterSettings } from "../runtime/worker.ts";
import { iso, snakeKeys } from "../views/json.ts";
import { lookUpPeriods } from "../views/parity.ts";
import { reportStatusView } from "../views/report.ts";
import { cliConfig, cliLedger, printJsonOrTable, table } from "./context.ts";

/** The planner's stamping settings, as the service uses them (reporterSettings). */
const planSettings = (config: Config) => ({
  graceSeconds: config.INVOICE_GRACE_SECONDS,
  marginSeconds: config.INVOICE_MARGIN_SECONDS,
});

/**
 * Fresh subscription periods when Stripe can be asked (stored nowhere: read-only commands), else
 * undefined (the stored ones).
 */
async function lookUpWithoutStoring(
  config: Config,
  ledger: Ledger,
): Promise<Map<string, CustomerBilling> | undefined> {
  if (!config.STRIPE_SECRET_KEY) return undefined;
  try {
    return await lookUpPeriods(
      ledger,
      { client: createStripe(config), eventName: config.STRIPE_METER_EVENT_NAME },
      Date.now(),
    );
  } catch (err) {
    process.stderr.write(
      `could not look the subscription periods up in Stripe (${(err as Error).message}); using the stored ones\n`,
    );
    return undefined;
  }
}

/**
 * One report pass as the service runs it, over a Redis connection of its own (disconnected after).
 * A reporter that died holds its customers' leases for up to LEASE_TTL_MS: the pass waits them
 * out. `beforePass` runs once Redis answers, before anything is sent.
 */
export async function reportPass(
  config: Config,
  ledger: Ledger,
  stripe: Stripe,
  beforePass?: () => Promise<void>,
): Promise<ReportSummary> {
  const logger = createLogger("warn");
  const redis = createRedis(config.REDIS_URL, "worker", logger);
  try {
    await waitReady(redis, 5000);
    await beforePass?.();
    return await runReport({
      ledger,
      stripe,
      redis,
      logger,
      settings: { ...reporterSettings(config), waitForLeaseMs: 2 * LEASE_TTL_MS },
    });
  } finally {
    redis.disconnect();
  }
}

/** `report --status`: the outbox and what the next pass would hold; exit 1 on stopped or held rows. */
async function reportStatus(config: Config, ledger: Ledger, json: boolean): Promise<void> {
  // Usage no invoice would carry yet: what the next pass would hold, and why (by fresh
  // subscription periods when Stripe can be asked).
  const billing = await lookUpWithoutStoring(config, ledger);
  const status = await reportStatusView(ledger, {
    now: Date.now(),
    settings: planSettings(config),
    ...(billing ? { billing } : {}),
  });
  if (json) {
    process.stdout.write(`${JSON.stringify(status, null, 2)}\n`);
  } else {
    printJsonOrTable(false, status.states, "the outbox is empty");
    if (status.stopped.length > 0)
      process.stdout.write(
        `\nstopped rows (fix the cause, then simmeter report --retry-failed):\n${table(status.stopped)}\n`,
      );
    if (status.pending.rows > 0)
      process.stdout.write(
        `\n${status.pending.rows} row(s) pending (${status.pending.bytes} bytes), oldest from ${status.pending.oldest_created_at}\n`,
      );
    if (status.held.length > 0)
      process.stdout.write(
        `\nheld, not sent (no invoice would carry it; sent once the cause is fixed):\n${table(status.held)}\n`,
      );
  }
  const failed = status.stopped;
  const held = status.held;
  if (failed.length > 0 || held.length > 0) process.exitCode = 1;
}

/** `report --dry-run`: what the next pass would send; nothing is written. */
async function reportDryRun(config: Config, ledger: Ledger, json: boolean): Promise<void> {
  const billing = await lookUpWithoutStoring(config, ledger);
  const plan = await ledger.plan({
    ...(billing ? { billing } : {}),
    now: Date.now(),
    settings: planSettings(config),
    dryRun: true,
  });
  const rows = [
    ...(await ledger.outbox.pending()).map((r) => ({ ...r, note: "pending" })),
    ...plan.rows.map((r) => ({ ...r, note: "new" })),
  ].map((r) => ({
    identifier: r.identifier,
    customer_id: r.customerId,
    hour: iso(r.hour),
    value: r.value,
    timestamp: iso(r.timestamp * 1000),
    late: r.late ? "late" : "",
    note: r.note,
  }));
  printJsonOrTable(json, rows, "nothing to report");
  if (plan.unmappedBytes > 0)
    process.stderr.write(
      `${plan.unmappedBytes} bytes in these hours belong to unmapped SIMs (simmeter usage --unmapped)\n`,
    );
  const heldBytes = plan.held.reduce((n, h) => n + h.bytes, 0);
  if (heldBytes !== 0)
    process.stderr.write(
      `${heldBytes} bytes would be held: no invoice would carry them (simmeter report --status)\n`,
    );
}

export function registerReportCommands(program: Command): void {
  program
    .command("report")
    .description(
      "report counted usage to Stripe now (what the service does every REPORT_INTERVAL_SECONDS)",
    )
    .option("--dry-run", "print what would be sent; send and write nothing")
    .option("--status", "show the outbox: rows by state, and stopped rows with their reasons")
    .option(
      "--retry-failed",
      "put stopped rows back in line (after fixing their cause), then report",
    )
    .option("--json", "print JSON")
    .action(
      async (o: { dryRun?: boolean; status?: boolean; retryFailed?: boolean; json?: boolean }) => {
        if (o.status || o.dryRun) {
          const { config, opened } = await cliLedger({ db: "read" }, "warn");
          try {
            if (o.status) await reportStatus(config, opened.ledger, Boolean(o.json));
            else await reportDryRun(config, opened.ledger, Boolean(o.json));
          } finally {
            await opened.ledger.admin.close();
          }
          return;
        }
        const { config, opened } = await cliLedger({ stripe: true, db: "write" }, "warn");
        const { ledger } = opened;
        try {
          const s = await reportPass(config, ledger, createStripe(config), async () => {
            if (o.retryFailed)
              process.stderr.write(
                `${await ledger.outbox.retryFailed()} stopped row(s) put back in line\n`,
              );
          });
          process.stdout.write(
            `${o.json ? JSON.stringify(snakeKeys(s)) : table([s as unknown as Record<string, unknown>])}\n`,
          );
          if (s.fatal) process.stderr.write(`stopped: ${s.fatal}\n`);
          if (s.lockedCustomers > 0) {
            process.stderr.write(
              `${s.lockedCustomers} customer(s) are being reported by another process\n`,
            );
          }
          if (s.held > 0)
            process.stderr.write(
              `usage held, not sent: ${Object.entries(s.heldBytes)
                .map(([reason, bytes]) => `${bytes} bytes (${reason})`)
                .join(", ")} (simmeter report --status)\n`,
            );
          if (s.fatal || s.failed > 0 || s.stillPending > 0 || s.lockedCustomers > 0 || s.held > 0)
            process.exitCode = 1;
        } finally {
          await ledger.admin.close();
        }
      },
    );

  const stripeCmd = program.command("stripe").description("Stripe set-up");
  stripeCmd
    .command("setup")
    .description(
      "create the Billing Meter (sum of value, by stripe_customer_id) if missing; safe to run again",
    )
    .option("--reactivate", "reactivate the meter if it was deactivated")
    .action(async (o: { reactivate?: boolean }) => {
      const { config } = cliConfig({ stripe: true }, "warn");
      const r = await ensureMeter(createStripe(config), config.STRIPE_METER_EVENT_NAME, o);
      process.stdout.write(`meter ${r.meter.id} (${r.meter.event_name}): ${r.action}\n`);
      for (const p of r.problems) process.stderr.write(`problem: ${p}\n`);
      if (r.problems.length > 0) process.exitCode = 1;
    });
}
