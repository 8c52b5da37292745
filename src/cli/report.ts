import { type Command, InvalidArgumentError } from "commander";
import type Stripe from "stripe";
import { HOUR_MS, hourStart } from "../accounting/buckets.ts";
import type { PeriodChoice } from "../billing/parity.ts";
import type { CustomerBilling } from "../billing/periods.ts";
import { refreshBilling } from "../billing/subscriptions.ts";
import type { Config } from "../config.ts";
import { assignmentCustomers } from "../customers/customers.ts";
import type { Db } from "../db/client.ts";
import { ENDED_ONLY_NEEDS_CUMULATIVE } from "../ingest/ingest.ts";
import { createLogger } from "../lib/logger.ts";
import { checkEvictionPolicy, createRedis, waitReady } from "../lib/redis.ts";
import { clockSkewCheck, stripeClockSkew } from "../reporting/clock.ts";
import {
  failedReports,
  pendingReports,
  planReports,
  reportStatus,
  retryFailed,
} from "../reporting/outbox.ts";
import { STRIPE_BACKDATE_MS } from "../reporting/plan.ts";
import {
  hasDrift,
  reconcile,
  recordStripeDifferences,
  stripeDifferences,
} from "../reporting/reconcile.ts";
import { LEASE_TTL_MS, runReport } from "../reporting/reporter.ts";
import { createStripe } from "../reporting/stripe.ts";
import { ensureMeter, findMeter, meterProblems } from "../reporting/stripe-setup.ts";
import { reporterSettings } from "../runtime/worker.ts";
import { parseTime } from "../usage/query.ts";
import { type Format, parseFormat, parsePeriod, reconcilePeriod } from "./billing.ts";
import { cliContext, printJsonOrTable, table } from "./context.ts";

const iso = (ms: number) => new Date(ms).toISOString();

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
  db: Db,
): Promise<Map<string, CustomerBilling> | undefined> {
  if (!config.STRIPE_SECRET_KEY) return undefined;
  try {
    return await refreshBilling({
      db,
      stripe: createStripe(config),
      eventName: config.STRIPE_METER_EVENT_NAME,
      now: Date.now(),
      dryRun: true,
    });
  } catch (err) {
    process.stderr.write(
      `could not look the subscription periods up in Stripe (${(err as Error).message}); using the stored ones\n`,
    );
    return undefined;
  }
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
        if (o.status) {
          const { db, config } = cliContext({}, "warn");
          const failed = failedReports(db).map((r) => ({
            identifier: r.identifier,
            customer: r.customerId,
            hour: iso(r.hour),
            value: r.value,
            reason: r.lastError,
          }));
          const pending = pendingReports(db);
          // Usage no invoice would carry yet: what the next pass would hold, and why.
          const billing = await lookUpWithoutStoring(config, db);
          const plan = planReports({
            ...(billing ? { billing } : {}),
            db,
            now: Date.now(),
            settings: planSettings(config),
            dryRun: true,
          });
          const heldBy = new Map<
            string,
            { customer: string; reason: string; bytes: number; detail: string }
          >();
          for (const h of plan.held) {
            const k = `${h.customerId}|${h.reason}`;
            const e = heldBy.get(k) ?? {
              customer: h.customerId,
              reason: h.reason,
              bytes: 0,
              detail: h.detail,
            };
            e.bytes += h.bytes;
            heldBy.set(k, e);
          }
          const held = [...heldBy.values()];
          if (o.json) {
            process.stdout.write(
              `${JSON.stringify({ states: reportStatus(db), failed, pending: pending.length, held }, null, 2)}\n`,
            );
          } else {
            printJsonOrTable(false, reportStatus(db), "the outbox is empty");
            if (failed.length > 0)
              process.stdout.write(
                `\nstopped rows (fix the cause, then simmeter report --retry-failed):\n${table(failed)}\n`,
              );
            if (pending.length > 0)
              process.stdout.write(
                `\n${pending.length} row(s) pending, oldest from ${iso(pending[0]?.createdAt ?? 0)}\n`,
              );
            if (held.length > 0)
              process.stdout.write(
                `\nheld, not sent (no invoice would carry it; sent once the cause is fixed):\n${table(held)}\n`,
              );
          }
          if (failed.length > 0 || held.length > 0) process.exitCode = 1;
          return;
        }
        if (o.dryRun) {
          const { db, config } = cliContext({}, "warn");
          const billing = await lookUpWithoutStoring(config, db);
          const plan = planReports({
            ...(billing ? { billing } : {}),
            db,
            now: Date.now(),
            settings: planSettings(config),
            dryRun: true,
          });
          const rows = [
            ...pendingReports(db).map((r) => ({ ...r, note: "pending" })),
            ...plan.rows.map((r) => ({ ...r, note: "new" })),
          ].map((r) => ({
            identifier: r.identifier,
            customer: r.customerId,
            hour: iso(r.hour),
            value: r.value,
            timestamp: iso(r.timestamp * 1000),
            late: r.late ? "late" : "",
            note: r.note,
          }));
          printJsonOrTable(Boolean(o.json), rows, "nothing to report");
          if (plan.unmappedBytes > 0)
            process.stderr.write(
              `${plan.unmappedBytes} bytes in these hours belong to unmapped SIMs (simmeter usage --unmapped)\n`,
            );
          const heldBytes = plan.held.reduce((n, h) => n + h.bytes, 0);
          if (heldBytes !== 0)
            process.stderr.write(
              `${heldBytes} bytes would be held: no invoice would carry them (simmeter report --status)\n`,
            );
          return;
        }
        const { config, db } = cliContext({ stripe: true }, "warn");
        const logger = createLogger("warn");
        const redis = createRedis(config.REDIS_URL, "worker", logger);
        try {
          await waitReady(redis, 5000);
          if (o.retryFailed)
            process.stderr.write(`${retryFailed(db)} stopped row(s) put back in line\n`);
          const s = await runReport({
            db,
            stripe: createStripe(config),
            redis,
            logger,
            // A reporter that died holds its customers' leases for up to LEASE_TTL_MS: wait them out.
            settings: { ...reporterSettings(config), waitForLeaseMs: 2 * LEASE_TTL_MS },
          });
          process.stdout.write(
            `${o.json ? JSON.stringify(s) : table([s as unknown as Record<string, unknown>])}\n`,
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
          redis.disconnect();
          db.$client.close();
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
      const { config } = cliContext({ stripe: true }, "warn");
      const r = await ensureMeter(createStripe(config), config.STRIPE_METER_EVENT_NAME, o);
      process.stdout.write(`meter ${r.meter.id} (${r.meter.event_name}): ${r.action}\n`);
      for (const p of r.problems) process.stderr.write(`problem: ${p}\n`);
      if (r.problems.length > 0) process.exitCode = 1;
    });

  program
    .command("doctor")
    .description(
      "check Redis, the database, the Stripe key, the meter, and that mapped customers exist in Stripe",
    )
    .action(async () => {
      const { config, db } = cliContext({}, "warn");
      const logger = createLogger("silent");
      const checks: { check: string; result: string; detail: string }[] = [];
      const add = (check: string, result: "ok" | "warn" | "fail", detail = "") =>
        checks.push({ check, result, detail });
      const redis = createRedis(config.REDIS_URL, "producer", logger);
      try {
        await waitReady(redis, 3000);
        const policy = await checkEvictionPolicy(redis, logger);
        add(
          "redis",
          policy === "noeviction" ? "ok" : "warn",
          policy === "noeviction"
            ? config.REDIS_URL
            : `maxmemory-policy is ${policy}: set noeviction`,
        );
      } catch (err) {
        add("redis", "fail", `${(err as Error).message} (REDIS_URL=${config.REDIS_URL})`);
      } finally {
        redis.disconnect();
      }
      add("database", "ok", config.DATABASE_PATH);
      if (config.BILLING_MODE === "ended-only") {
        const refused = endedOnlyRefusals(db);
        add(
          "billing mode",
          refused ? "fail" : "ok",
          refused
            ? `ended-only: ${refused} data-session.ended event(s) without data_session_data_total refused (schema v1): their sessions are not billed; pin schema version 2 on the Event Streams subscription or use BILLING_MODE=realtime, then simmeter quarantine requeue --reason ended-only`
            : "ended-only: every ended event carried cumulative totals",
        );
      }
      const failed = failedReports(db).length;
      add(
        "outbox",
        failed ? "warn" : "ok",
        failed
          ? `${failed} stopped row(s): simmeter report --status`
          : `${pendingReports(db).length} pending`,
      );
      if (!config.STRIPE_SECRET_KEY) {
        add("stripe key", "fail", "STRIPE_SECRET_KEY is not set");
      } else {
        const stripe = createStripe(config);
        await doctorStripe(stripe, config, db, add);
      }
      db.$client.close();
      process.stdout.write(`${table(checks)}\n`);
      if (checks.some((c) => c.result === "fail")) process.exitCode = 1;
    });

  program
    .command("reconcile")
    .description(
      "per customer: counted vs reported vs Stripe's meter summaries; exits 1 on any drift",
    )
    .option("--from <time>", "UTC start (default: 35 days ago)")
    .option("--to <time>", "UTC end, exclusive (default: the end of the current hour)")
    .option(
      "--repair",
      "record each settled hour where Stripe holds another amount than the rows marked sent, then send the correcting difference under a new identifier",
    )
    .option(
      "--settle-minutes <n>",
      "with --repair: only hours with nothing pending or sent in the last N minutes",
      (v: string) => {
        if (!/^\d+$/.test(v))
          throw new InvalidArgumentError(`${JSON.stringify(v)} is not a whole number of minutes`);
        return Number(v);
      },
      10,
    )
    .option(
      "--period <period>",
      "invoice parity instead: current, previous or an invoice id (in_…), per customer by its own billing period",
      parsePeriod,
    )
    .option("--format <format>", "with --period: text, json or csv", parseFormat)
    .option("--json", "print JSON")
    .action(
      async (o: {
        from?: string;
        to?: string;
        json?: boolean;
        repair?: boolean;
        settleMinutes: number;
        period?: PeriodChoice;
        format?: Format;
      }) => {
        const { config, db } = cliContext({ stripe: true }, "warn");
        if (o.period !== undefined) {
          if (o.repair || o.from || o.to)
            throw new InvalidArgumentError(
              "--period cannot be combined with --from, --to or --repair",
            );
          try {
            await reconcilePeriod(config, db, o.period, o.format ?? (o.json ? "json" : "text"));
          } finally {
            db.$client.close();
          }
          return;
        }
        const now = Date.now();
        const from = hourStart(
          o.from ? parseTime(o.from, "--from") : now - STRIPE_BACKDATE_MS + HOUR_MS,
        );
        const to = hourStart(o.to ? parseTime(o.to, "--to") + HOUR_MS - 1 : now + HOUR_MS);
        const stripe = createStripe(config);
        const meter = await findMeter(stripe, config.STRIPE_METER_EVENT_NAME);
        if (!meter)
          throw new Error(
            `no meter with event_name ${config.STRIPE_METER_EVENT_NAME}: run simmeter stripe setup`,
          );
        if (o.repair) {
          await repair({ config, db, stripe, meterId: meter.id, from, to, now, o });
          return;
        }
        const rows = await reconcile({ db, stripe, meterId: meter.id, from, to });
        db.$client.close();
        printJsonOrTable(
          Boolean(o.json),
          rows,
          `nothing counted or reported between ${iso(from)} and ${iso(to)}`,
        );
        if (hasDrift(rows)) {
          process.stderr.write(
            "drift found: unreported = counted − reported to Stripe; stripeDrift = sent − Stripe's summary (simmeter reconcile --repair corrects settled differences)\n",
          );
          process.exitCode = 1;
        }
      },
    );
}

/** reconcile --repair: record what Stripe really holds, then send the difference. */
async function repair(a: {
  config: Parameters<typeof reporterSettings>[0] & { REDIS_URL: string };
  db: Db;
  stripe: Stripe;
  meterId: string;
  from: number;
  to: number;
  now: number;
  o: { json?: boolean; settleMinutes: number };
}): Promise<void> {
  const { db, config } = a;
  const diffs = await stripeDifferences({
    db,
    stripe: a.stripe,
    meterId: a.meterId,
    from: a.from,
    to: a.to,
    now: a.now,
    settleMs: a.o.settleMinutes * 60_000,
  });
  const shown = diffs.map((d) => ({
    customer: d.customer,
    hour: iso(d.hour),
    bucket: iso(d.bucket),
    stripe: d.stripe,
    sent: d.sent,
    difference: d.difference,
  }));
  if (diffs.length === 0) {
    if (a.o.json) process.stdout.write(`${JSON.stringify({ differences: [], report: null })}\n`);
    else process.stdout.write("no settled difference between Stripe and the outbox\n");
    db.$client.close();
    return;
  }
  recordStripeDifferences(db, diffs, a.now);
  const logger = createLogger("warn");
  const redis = createRedis(config.REDIS_URL, "worker", logger);
  try {
    await waitReady(redis, 5000);
    const s = await runReport({
      db,
      stripe: a.stripe,
      redis,
      logger,
      settings: { ...reporterSettings(config), waitForLeaseMs: 2 * LEASE_TTL_MS },
    });
    if (a.o.json) {
      process.stdout.write(`${JSON.stringify({ differences: shown, report: s }, null, 2)}\n`);
    } else {
      process.stdout.write(
        `Stripe differs from the outbox in ${diffs.length} hour(s):\n${table(shown)}\n`,
      );
      process.stdout.write(
        `recorded what Stripe holds; sent ${s.sent} correcting event(s) under new identifiers${s.stillPending ? `, ${s.stillPending} still pending` : ""}\n`,
      );
    }
    if (s.fatal || s.failed > 0 || s.stillPending > 0) process.exitCode = 1;
  } finally {
    redis.disconnect();
    db.$client.close();
  }
}

/** ended events refused in ended-only mode for want of cumulative totals (see ingest.ts). */
function endedOnlyRefusals(db: Db): number {
  return (
    db.$client
      .prepare("select count(*) as n from quarantine where reason = ?")
      .get(ENDED_ONLY_NEEDS_CUMULATIVE) as { n: number }
  ).n;
}

type Add = (check: string, result: "ok" | "warn" | "fail", detail?: string) => void;

/** The Stripe half of doctor: each check reports for itself, so one failure names its own cause. */
async function doctorStripe(
  stripe: Stripe,
  config: Pick<
    Config,
    | "STRIPE_SECRET_KEY"
    | "STRIPE_METER_EVENT_NAME"
    | "INVOICE_GRACE_SECONDS"
    | "INVOICE_MARGIN_SECONDS"
    | "REPORT_INTERVAL_SECONDS"
    | "STRIPE_TIMEOUT_MS"
  >,
  db: Db,
  add: Add,
): Promise<void> {
  try {
    await stripe.balance.retrieve();
    add(
      "stripe key",
      "ok",
      config.STRIPE_SECRET_KEY?.startsWith("sk_live_") ? "live mode" : "test mode",
    );
  } catch (err) {
    add("stripe key", "fail", (err as Error).message);
    return;
  }
  const skew = await stripeClockSkew(stripe);
  if (skew) {
    const c = clockSkewCheck(skew.skewMs);
    add("stripe clock", c.result, c.detail);
  } else add("stripe clock", "warn", "Stripe's answer carried no Date header to compare with");
  try {
    const meter = await findMeter(stripe, config.STRIPE_METER_EVENT_NAME);
    if (!meter) {
      add(
        "meter",
        "fail",
        `no meter with event_name ${config.STRIPE_METER_EVENT_NAME}: run simmeter stripe setup`,
      );
    } else {
      const problems = meterProblems(meter, config.STRIPE_METER_EVENT_NAME);
      add(
        "meter",
        problems.length ? "fail" : "ok",
        problems.join("; ") || `${meter.id} active, sum of value by stripe_customer_id`,
      );
    }
  } catch (err) {
    add("meter", "fail", `could not list meters: ${(err as Error).message}`);
  }
  const unknown: string[] = [];
  const unchecked: string[] = [];
  for (const id of assignmentCustomers(db)) {
    try {
      const c = await stripe.customers.retrieve(id);
      if ((c as { deleted?: boolean }).deleted) unknown.push(`${id} (deleted)`);
    } catch (err) {
      // Only "no such customer" means unknown; a 429 or a network error says nothing about it.
      if ((err as { code?: string }).code === "resource_missing") unknown.push(id);
      else unchecked.push(`${id} (${(err as Error).message})`);
    }
  }
  if (unknown.length > 0)
    add("customers", "warn", `mapped but unknown to Stripe: ${unknown.join(", ")}`);
  if (unchecked.length > 0) add("customers", "warn", `could not check: ${unchecked.join(", ")}`);
  if (unknown.length === 0 && unchecked.length === 0)
    add("customers", "ok", "every mapped customer exists");
  await doctorSubscriptions(stripe, config, db, add);
}

/**
 * Per mapped customer: exactly one active subscription item whose price uses the meter, and its
 * period; and whether the draft window leaves a report run time to land late usage on a draft.
 */
async function doctorSubscriptions(
  stripe: Stripe,
  config: Parameters<typeof doctorStripe>[1],
  db: Db,
  add: Add,
): Promise<void> {
  let billing: Map<string, CustomerBilling>;
  try {
    billing = await refreshBilling({
      db,
      stripe,
      eventName: config.STRIPE_METER_EVENT_NAME,
      now: Date.now(),
    });
  } catch (err) {
    add("subscriptions", "fail", `could not look them up: ${(err as Error).message}`);
    return;
  }
  const mapped = new Set(assignmentCustomers(db));
  const rows = [...billing.values()].filter((b) => mapped.has(b.customerId));
  const ambiguous = rows.filter((b) => b.state === "ambiguous");
  const none = rows.filter((b) => b.state === "none");
  const ok = rows.filter((b) => b.state === "ok");
  if (ambiguous.length)
    add("subscriptions", "fail", ambiguous.map((b) => `${b.customerId}: ${b.detail}`).join("; "));
  if (none.length)
    add(
      "subscriptions",
      "warn",
      `${none.length} mapped customer(s) without an active item on the meter, their usage held: ${none.map((b) => `${b.customerId} (${b.detail})`).join("; ")}`,
    );
  if (ok.length)
    add(
      "subscriptions",
      ambiguous.length || none.length ? "warn" : "ok",
      ok
        .slice(0, 20)
        .map(
          (b) =>
            `${b.customerId}: ${b.subscriptionId}/${b.itemId}, period ${iso(b.periodStart as number)} → ${iso(b.periodEnd as number)}`,
        )
        .join("; ") + (ok.length > 20 ? `; and ${ok.length - 20} more` : ""),
    );
  if (rows.length === 0) add("subscriptions", "ok", "no mapped customers yet");
  // The previous period's draft takes late usage for (grace − margin); a report run must fit in it.
  const window = config.INVOICE_GRACE_SECONDS - config.INVOICE_MARGIN_SECONDS;
  const needed = config.REPORT_INTERVAL_SECONDS + Math.ceil(config.STRIPE_TIMEOUT_MS / 1000);
  const seen = ok
    .map((b) =>
      b.previous?.finalizesAt && b.previous.end
        ? (b.previous.finalizesAt - b.previous.end) / 1000
        : null,
    )
    .find((g) => g !== null);
  const observed =
    seen !== undefined && seen !== null && Math.abs(seen - config.INVOICE_GRACE_SECONDS) > 60
      ? `; a draft seen in Stripe finalizes ${Math.round(seen)} s after its period ended, so set INVOICE_GRACE_SECONDS=${Math.round(seen)}`
      : "";
  add(
    "invoice grace",
    window < needed || observed ? "warn" : "ok",
    window < needed
      ? `the draft window (INVOICE_GRACE_SECONDS ${config.INVOICE_GRACE_SECONDS} − INVOICE_MARGIN_SECONDS ${config.INVOICE_MARGIN_SECONDS} = ${window} s) is shorter than a report run (REPORT_INTERVAL_SECONDS + STRIPE_TIMEOUT_MS = ${needed} s): usage that arrives just after a period ends goes to the next invoice as late usage; lengthen the grace in Stripe's Dashboard or report more often${observed}`
      : `late usage reaches the previous period's draft for ${window} s after it ends${observed}`,
  );
}
