import { resolve } from "node:path";
import { Queue } from "bullmq";
import { type Command, InvalidArgumentError } from "commander";
import type { Redis } from "ioredis";
import type Stripe from "stripe";
import { HOUR_MS, hourStart } from "../accounting/buckets.ts";
import type { PeriodChoice } from "../billing/parity.ts";
import type { CustomerBilling } from "../billing/periods.ts";
import { refreshBilling } from "../billing/subscriptions.ts";
import { type Config, isLoopback } from "../config.ts";
import { assignmentCustomers, unmappedUsage } from "../customers/customers.ts";
import { type Db, migrationStatus, openDb } from "../db/client.ts";
import { ENDED_ONLY_NEEDS_CUMULATIVE } from "../ingest/ingest.ts";
import { createLogger } from "../lib/logger.ts";
import { createRedis, waitReady } from "../lib/redis.ts";
import { VERSION } from "../lib/version.ts";
import { WEBHOOK_PATH } from "../receive/app.ts";
import { clockSkewCheck, stripeClockSkew } from "../reporting/clock.ts";
import { failedReports, pendingReports, planReports, retryFailed } from "../reporting/outbox.ts";
import { STRIPE_BACKDATE_MS } from "../reporting/plan.ts";
import {
  hasDrift,
  reconcile,
  recordStripeDifferences,
  stripeDifferences,
} from "../reporting/reconcile.ts";
import { LEASE_TTL_MS, runReport } from "../reporting/reporter.ts";
import { REPORT_QUEUE } from "../reporting/schedule.ts";
import { createStripe } from "../reporting/stripe.ts";
import { ensureMeter, findMeter, meterProblems } from "../reporting/stripe-setup.ts";
import { reporterSettings } from "../runtime/worker.ts";
import { snakeKeys } from "../views/json.ts";
import { lastSentMs } from "../views/overview.ts";
import { reportStatusView } from "../views/report.ts";
import { type Format, parseFormat, parsePeriod, reconcilePeriod } from "./billing.ts";
import {
  cliConfig,
  cliContext,
  printJsonOrTable,
  table,
  timeOption,
  UsageError,
} from "./context.ts";

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
          const { db, config } = cliContext({ db: "read" }, "warn");
          // Usage no invoice would carry yet: what the next pass would hold, and why (by fresh
          // subscription periods when Stripe can be asked).
          const billing = await lookUpWithoutStoring(config, db);
          const status = reportStatusView(db, {
            now: Date.now(),
            settings: planSettings(config),
            ...(billing ? { billing } : {}),
          });
          if (o.json) {
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
          db.$client.close();
          return;
        }
        if (o.dryRun) {
          const { db, config } = cliContext({ db: "read" }, "warn");
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
            customer_id: r.customerId,
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
          db.$client.close();
          return;
        }
        const { config, db } = cliContext({ stripe: true, db: "write" }, "warn");
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
      const { config } = cliConfig({ stripe: true }, "warn");
      const r = await ensureMeter(createStripe(config), config.STRIPE_METER_EVENT_NAME, o);
      process.stdout.write(`meter ${r.meter.id} (${r.meter.event_name}): ${r.action}\n`);
      for (const p of r.problems) process.stderr.write(`problem: ${p}\n`);
      if (r.problems.length > 0) process.exitCode = 1;
    });

  program
    .command("doctor")
    .description(
      "check the database, Redis, the webhook settings, quarantine, unmapped usage, reporting, the Stripe key, clock, meter, customers and subscriptions; exits 1 when a check fails",
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
      const n = (s: CheckStatus) => checks.filter((c) => c.status === s).length;
      const fails = n("fail");
      const warns = n("warn");
      process.stdout.write(
        `\n${
          fails + warns === 0
            ? `all ${checks.length} checks ok`
            : [
                fails ? `${fails} failed` : "",
                warns ? `${warns} ${warns === 1 ? "warning" : "warnings"}` : "",
              ]
                .filter(Boolean)
                .join(", ")
        }${strict && warns ? " (--strict: warnings fail)" : ""}\n`,
      );
    });

  program
    .command("reconcile")
    .description(
      "per customer: counted vs reported vs Stripe's meter summaries; exits 1 on any drift",
    )
    .option("--from <time>", "UTC start (default: 35 days ago)", timeOption("--from"))
    .option(
      "--to <time>",
      "UTC end, exclusive (default: the end of the current hour)",
      timeOption("--to"),
    )
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
        from?: number;
        to?: number;
        json?: boolean;
        repair?: boolean;
        settleMinutes: number;
        period?: PeriodChoice;
        format?: Format;
      }) => {
        if (o.period !== undefined && (o.repair || o.from !== undefined || o.to !== undefined))
          throw new UsageError("--period cannot be combined with --from, --to or --repair");
        if (o.format !== undefined && o.period === undefined)
          throw new UsageError("--format goes with --period (use --json otherwise)");
        const { config, db } = cliContext(
          { stripe: true, db: o.repair ? "write" : "read" },
          "warn",
        );
        if (o.period !== undefined) {
          try {
            await reconcilePeriod(config, db, o.period, o.format ?? (o.json ? "json" : "text"));
          } finally {
            db.$client.close();
          }
          return;
        }
        const now = Date.now();
        const from = hourStart(o.from ?? now - STRIPE_BACKDATE_MS + HOUR_MS);
        const to = hourStart(o.to !== undefined ? o.to + HOUR_MS - 1 : now + HOUR_MS);
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
      process.stdout.write(
        `${JSON.stringify(snakeKeys({ differences: shown, report: s }), null, 2)}\n`,
      );
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

type CheckStatus = "ok" | "warn" | "fail";
type Check = { name: string; status: CheckStatus; detail: string; extra: Record<string, unknown> };
type Add = (
  check: string,
  result: CheckStatus,
  detail?: string,
  extra?: Record<string, unknown>,
) => void;

/** REDIS_URL without its password, for output. */
function shownUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return url;
  }
}

const ago = (ms: number) => {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172_800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86_400)} days`;
};

/**
 * Every doctor check, in the order printed. Each reports for itself (one failure names its own
 * cause and the others still run); the database is opened read-only and never created.
 */
async function runDoctor(config: Config): Promise<Check[]> {
  const checks: Check[] = [];
  const add: Add = (name, status, detail = "", extra = {}) =>
    checks.push({ name, status, detail, extra });

  const db = doctorDatabase(config, add);
  const redis = await doctorRedis(config, add);
  try {
    if (db) doctorLedger(config, db, add);
    if (db && config.STRIPE_SECRET_KEY) await doctorReporting(config, db, redis, add);
    doctorWebhook(config, add);
    if (!config.STRIPE_SECRET_KEY) {
      add(
        "stripe key",
        "warn",
        "STRIPE_SECRET_KEY is not set: reporting is disabled (usage is counted, not sent to Stripe)",
      );
    } else {
      await doctorStripe(createStripe(config), config, db, add);
    }
  } finally {
    redis?.disconnect();
    db?.$client.close();
  }
  return checks;
}

/** Present (never created) and migrated at least as far as this version expects. */
function doctorDatabase(config: Config, add: Add): Db | null {
  const path = resolve(config.DATABASE_PATH);
  let db: Db;
  try {
    db = openDb(config.DATABASE_PATH, { mode: "read" });
  } catch (err) {
    add("database", "fail", (err as Error).message, { path });
    return null;
  }
  const m = migrationStatus(db.$client);
  const extra = {
    path,
    migrations_applied: m.applied,
    migrations_expected: m.expected,
  };
  if (m.unknown > 0)
    add(
      "database",
      "warn",
      `${path}: migrated by a newer simmeter (${m.unknown} migration(s) this version does not know): upgrade this one`,
      extra,
    );
  else if (m.changed.length > 0)
    add(
      "database",
      "warn",
      `${path}: migration file(s) ${m.changed.join(", ")} changed after they were applied`,
      extra,
    );
  else add("database", "ok", `${path} (${m.applied} of ${m.expected} migrations)`, extra);
  return db;
}

/** Reachable; maxmemory-policy noeviction (BullMQ loses jobs otherwise); AOF on. */
async function doctorRedis(config: Config, add: Add): Promise<Redis | null> {
  const logger = createLogger("silent");
  const url = shownUrl(config.REDIS_URL);
  const redis = createRedis(config.REDIS_URL, "producer", logger);
  try {
    await waitReady(redis, 3000);
  } catch (err) {
    redis.disconnect();
    add("redis", "fail", `${(err as Error).message} (REDIS_URL=${url})`, { url });
    return null;
  }
  add("redis", "ok", url, { url });
  const get = async (key: string): Promise<string | null> => {
    try {
      return ((await redis.config("GET", key)) as string[])[1] ?? null;
    } catch {
      return null;
    }
  };
  const policy = await get("maxmemory-policy");
  if (policy === null)
    add(
      "redis eviction",
      "warn",
      "could not read maxmemory-policy (CONFIG GET refused?): it must be noeviction",
    );
  else
    add(
      "redis eviction",
      policy === "noeviction" ? "ok" : "fail",
      policy === "noeviction"
        ? "maxmemory-policy noeviction"
        : `maxmemory-policy is ${policy}: Redis may evict queued deliveries before they are counted; set maxmemory-policy noeviction`,
      { policy },
    );
  const aof = await get("appendonly");
  const fsync = await get("appendfsync");
  if (aof === null)
    add(
      "redis persistence",
      "warn",
      "could not read appendonly (CONFIG GET refused?): run Redis with appendonly yes, appendfsync everysec",
    );
  else
    add(
      "redis persistence",
      aof === "yes" ? "ok" : "warn",
      aof === "yes"
        ? `appendonly yes, appendfsync ${fsync ?? "?"}`
        : "appendonly no: a Redis restart loses deliveries acknowledged but not yet counted; set appendonly yes, appendfsync everysec",
      { appendonly: aof === "yes", appendfsync: fsync },
    );
  return redis;
}

/** What the ledger holds that nobody bills: quarantined events, unmapped usage, stopped rows. */
function doctorLedger(config: Config, db: Db, add: Add): void {
  if (config.BILLING_MODE === "ended-only") {
    const refused = endedOnlyRefusals(db);
    add(
      "billing mode",
      refused ? "fail" : "ok",
      refused
        ? `ended-only: ${refused} data-session.ended event(s) without data_session_data_total refused (schema v1): their sessions are not billed; pin schema version 2 on the Event Streams subscription or use BILLING_MODE=realtime, then simmeter quarantine requeue --reason ended-only`
        : "ended-only: every ended event carried cumulative totals",
      { refused },
    );
  }
  const q = openQuarantine(db);
  add(
    "quarantine",
    q.events > 0 ? "warn" : "ok",
    q.events > 0
      ? `${q.events} quarantined event(s) not counted since, the newest received ${iso(q.newest as number)}: run simmeter quarantine (then simmeter quarantine requeue once the cause is fixed)`
      : "no event waits in quarantine",
    {
      events: q.events,
      newest_received_at: q.newest === null ? null : iso(q.newest),
    },
  );
  const unmapped = unmappedUsage(db);
  const bytes = unmapped.reduce((n, u) => n + u.bytes, 0);
  add(
    "unmapped usage",
    unmapped.length > 0 ? "warn" : "ok",
    unmapped.length > 0
      ? `${bytes} bytes of ${unmapped.length} SIM(s) no customer assignment covers, not billed: simmeter usage --unmapped`
      : "every SIM with usage is mapped to a customer",
    { bytes, sims: unmapped.length },
  );
  const failed = failedReports(db).length;
  const pending = pendingReports(db).length;
  add(
    "outbox",
    failed ? "warn" : "ok",
    failed ? `${failed} stopped row(s): simmeter report --status` : `${pending} pending`,
    { stopped: failed, pending },
  );
}

/**
 * Quarantined events not counted since (by any delivery, a requeue for one). An event quarantined
 * again after a requeue is one event; a body that was not JSON counts once, by its latest row.
 */
function openQuarantine(db: Db): { events: number; newest: number | null } {
  const r = db.$client
    .prepare(
      `select count(distinct q.event_sid) as sids,
              max(q.received_at) as newest
         from quarantine q
        where q.event_sid is not null
          and not exists (select 1 from seen_events s where s.event_sid = q.event_sid)`,
    )
    .get() as { sids: number; newest: number | null };
  const bodies = db.$client
    .prepare(
      `select count(*) as n, max(received_at) as newest from quarantine
        where event_sid is null and requeues = 0`,
    )
    .get() as { n: number; newest: number | null };
  const newest = Math.max(r.newest ?? -1, bodies.newest ?? -1);
  return { events: r.sids + bodies.n, newest: newest < 0 ? null : newest };
}

/**
 * When the reporter last succeeded: its newest completed scheduled run (Redis keeps the last 100)
 * or the newest row sent to Stripe (a manual `simmeter report` too), whichever is later. Warns
 * beyond 2 × REPORT_INTERVAL_SECONDS, or when there is usage to report and no run on record.
 */
async function doctorReporting(
  config: Config,
  db: Db,
  redis: Redis | null,
  add: Add,
): Promise<void> {
  const now = Date.now();
  const limitMs = 2 * config.REPORT_INTERVAL_SECONDS * 1000;
  let lastRun: number | null = null;
  let schedules: number | null = null;
  if (redis) {
    const queue = new Queue(REPORT_QUEUE, { connection: redis, prefix: config.REDIS_PREFIX });
    try {
      lastRun = (await queue.getCompleted(0, 0))[0]?.finishedOn ?? null;
      schedules = await queue.getJobSchedulersCount();
    } catch {
      // Reported by the redis checks.
    } finally {
      await queue.close().catch(() => {});
    }
  }
  const lastSent = lastSentMs(db);
  const last = Math.max(lastRun ?? -1, lastSent ?? -1);
  const work = db.$client
    .prepare(
      "select (select count(*) from meter_reports where state = 'pending') + (select count(*) from report_dirty_hours) as n",
    )
    .get() as { n: number };
  const extra = {
    last_run_at: lastRun === null ? null : iso(lastRun),
    last_sent_at: lastSent === null ? null : iso(lastSent),
    interval_seconds: config.REPORT_INTERVAL_SECONDS,
    schedule_in_redis: schedules === null ? null : schedules > 0,
  };
  const noSchedule =
    schedules === 0
      ? "; no report schedule in Redis: no worker with STRIPE_SECRET_KEY has run since Redis was emptied (simmeter start or simmeter work creates it)"
      : "";
  if (last < 0) {
    add(
      "reporting",
      work.n > 0 || noSchedule ? "warn" : "ok",
      work.n > 0
        ? `no successful report run on record, and usage waits to be reported: is simmeter start (or simmeter work) running with STRIPE_SECRET_KEY?${noSchedule}`
        : `nothing reported yet${noSchedule}`,
      extra,
    );
    return;
  }
  const late = now - last > limitMs;
  add(
    "reporting",
    late || noSchedule ? "warn" : "ok",
    `last successful report ${ago(now - last)} ago (${iso(last)})${
      late
        ? `, longer than 2 × REPORT_INTERVAL_SECONDS (${limitMs / 1000} s): is the worker running? see its log and simmeter report --status`
        : ""
    }${noSchedule}`,
    { ...extra, age_seconds: Math.round((now - last) / 1000) },
  );
}

/** How deliveries will be authenticated, as the receiver (simmeter start / serve) will see it. */
function doctorWebhook(config: Config, add: Add): void {
  const secrets = [
    ...(config.TWILIO_AUTH_TOKEN ? ["TWILIO_AUTH_TOKEN"] : []),
    ...(config.KORE_WEBHOOK_SECRET ? ["KORE_WEBHOOK_SECRET"] : []),
  ];
  const extra = {
    twilio: Boolean(config.TWILIO_AUTH_TOKEN),
    kore: Boolean(config.KORE_WEBHOOK_SECRET),
    basic_auth: Boolean(config.BASIC_AUTH),
    allow_unsigned: config.ALLOW_UNSIGNED,
    public_url: config.PUBLIC_URL ?? null,
  };
  const fails: string[] = [];
  const warns: string[] = [];
  const notes: string[] = [];
  if (secrets.length > 0 && !config.PUBLIC_URL)
    fails.push(
      `${secrets.join(" and ")} set without PUBLIC_URL: signatures cover the URL, so simmeter start/serve refuse to start; set PUBLIC_URL to the sink URL exactly as configured`,
    );
  if (secrets.length === 0 && !config.ALLOW_UNSIGNED)
    warns.push(
      "no TWILIO_AUTH_TOKEN or KORE_WEBHOOK_SECRET: simmeter start/serve refuse to start (fine on a host that only runs simmeter work)",
    );
  if (config.ALLOW_UNSIGNED)
    warns.push(
      "ALLOW_UNSIGNED=true: unsigned deliveries are accepted and billed; for development only",
    );
  let url: URL | null = null;
  try {
    url = config.PUBLIC_URL ? new URL(config.PUBLIC_URL) : null;
  } catch {
    url = null;
  }
  if (url && secrets.length > 0) {
    if (url.protocol === "http:" && !isLoopback(url.hostname))
      warns.push(
        `PUBLIC_URL is http://: deliveries${config.BASIC_AUTH ? " and their Basic credentials" : ""} cross the network unencrypted`,
      );
    if (url.pathname !== WEBHOOK_PATH)
      notes.push(
        `the receiver listens on ${WEBHOOK_PATH}: a proxy must forward ${url.pathname} there`,
      );
  }
  if (url?.username && !config.BASIC_AUTH)
    warns.push(
      "PUBLIC_URL holds user:password@ but BASIC_AUTH is not set: the credentials are not checked",
    );
  if (
    url?.username &&
    config.BASIC_AUTH &&
    (decodeURIComponent(url.username) !== config.BASIC_AUTH.user ||
      decodeURIComponent(url.password) !== config.BASIC_AUTH.password)
  )
    fails.push(
      "PUBLIC_URL's user:password@ differs from BASIC_AUTH: every delivery sent to that URL would be refused with 401",
    );
  const summary = [
    secrets.length > 0
      ? `signed by ${secrets.join(" and ")} for ${url ? `${url.origin}${url.pathname}` : "(no PUBLIC_URL)"}`
      : config.ALLOW_UNSIGNED
        ? "unsigned deliveries accepted"
        : "",
    config.BASIC_AUTH ? "Basic auth required" : "",
  ]
    .filter(Boolean)
    .join("; ");
  const status: CheckStatus = fails.length ? "fail" : warns.length ? "warn" : "ok";
  add(
    "webhook",
    status,
    [...fails, ...warns, ...(status === "ok" ? [summary] : []), ...notes]
      .filter(Boolean)
      .join("; "),
    extra,
  );
}

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
  db: Db | null,
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
  // Customers and subscriptions are those the ledger maps: nothing to check without it.
  if (!db) return;
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
    // Looked up, not stored: doctor opens the database read-only.
    billing = await refreshBilling({
      db,
      stripe,
      eventName: config.STRIPE_METER_EVENT_NAME,
      now: Date.now(),
      dryRun: true,
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
