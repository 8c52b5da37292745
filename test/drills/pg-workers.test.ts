import { randomUUID } from "node:crypto";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { freePort } from "../../scripts/lib/redis-server.ts";
import { type StripeEmulator, startStripeEmulator } from "../../scripts/stripe-emulator.ts";
import { INGEST_QUEUE } from "../../src/ingest/job.ts";
import { ensureMeter } from "../../src/reporting/stripe-setup.ts";
import { simulateFleet } from "../../src/simulate/fleet.ts";
import { type SendProgress, type SendResult, sendDeliveries } from "../../src/simulate/output.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/pg.ts";
import {
  insertSimAssignments,
  type PgLedgerReader,
  pgLedgerReader,
  startWorker,
  waitDrainedPg,
} from "../helpers/pg-ledger.ts";
import { type SimmeterProcess, startSimmeter, waitFor } from "../helpers/process.ts";
import { EVENT_NAME } from "../helpers/reporting.ts";
import { stripeEnv, stripeFor } from "../helpers/stripe.ts";
import { truthRecord } from "./drill-helpers.ts";

// The acceptance drill of the PostgreSQL ledger: one database, one receiver and three workers
// writing it at once (and reporting to the Stripe emulator while they ingest), chaos traffic
// (duplicates, reordering, lost updates) from two retrying senders, one worker SIGKILLed mid-load
// and restarted. Afterwards the ledger equals the simulator's ground truth per SIM and per
// customer per hour, Stripe holds exactly the ledger's usage (nothing sent twice), every delivery
// was answered 2xx, and no ingest job failed on a serialization failure or deadlock.

const TOKEN = "pg-drill-token-0123456789abcdef0";
const KORE_SECRET = "pg-drill-kore-secret";
const PUBLIC_URL = "https://billing.example.com/webhooks/event-streams";
const HOUR_MS = 3_600_000;
const WORKERS = 3;

/** the last lines of a process's output, for a failure message */
const tail = (name: string, p: SimmeterProcess, lines = 40) =>
  `--- ${name} (pid ${p.child.pid}, exit ${p.child.exitCode ?? p.child.signalCode ?? "running"}) ---\n${p
    .output()
    .trimEnd()
    .split("\n")
    .slice(-lines)
    .join("\n")}`;

/** the receiver's and the workers' log lines that say an ingest job failed */
function failedJobLines(procs: SimmeterProcess[]): { serialization: string[]; other: string[] } {
  const serialization: string[] = [];
  const other: string[] = [];
  for (const p of procs) {
    for (const line of p.output().split("\n")) {
      if (!line.includes("ingest job failed")) continue;
      if (/40001|40P01|55P03|could not serialize|deadlock detected|lock timeout/i.test(line))
        serialization.push(line);
      else other.push(line);
    }
  }
  return { serialization, other };
}

const isoHours = (m: Map<number, number>, unit: number): Record<string, number> => {
  const out: Record<string, number> = {};
  for (const [hour, v] of [...m.entries()].sort(([a], [b]) => a - b))
    if (v !== 0) out[new Date(hour * unit).toISOString()] = v;
  return out;
};

/** Map<customer, Map<hour, value>> as sorted records, empty customers left out */
function byCustomerHour(
  m: Map<string, Map<number, number>>,
  unit: number,
): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const [c, hours] of [...m.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const h = isoHours(hours, unit);
    if (Object.keys(h).length > 0) out[c] = h;
  }
  return out;
}

const totals = (m: Record<string, Record<string, number>>): Record<string, number> =>
  Object.fromEntries(
    Object.entries(m).map(([c, h]) => [c, Object.values(h).reduce((s, v) => s + v, 0)]),
  );

describe("PostgreSQL ledger: 1 receiver + 3 workers on one database, a worker SIGKILLed mid-load", () => {
  let emu: StripeEmulator;
  let database: TestDatabase;
  let reader: PgLedgerReader;
  beforeAll(async () => {
    emu = await startStripeEmulator({ acceptAnyCustomer: true, autoSubscribe: true });
    await ensureMeter(stripeFor(emu), EVENT_NAME);
    database = await createTestDatabase();
    reader = pgLedgerReader(database.url);
  });
  afterAll(async () => {
    await reader?.close();
    await database?.drop();
    await emu?.close();
  });

  it("usage equals the ground truth, Stripe equals the ledger, no delivery and no job failed", async () => {
    // Recent hours: the emulator's auto-subscription's current period holds them, so the
    // reporter stamps every delta inside its own hour (nothing late, nothing held).
    const to = Math.floor(Date.now() / 60_000) * 60_000 - 60_000;
    const from = to - 6 * HOUR_MS;
    const sim = simulateFleet({
      seed: 23,
      customers: 5,
      sims: 160,
      from,
      to,
      perturb: { duplicateRate: 0.1, reorder: true, lostUpdateRate: 0.05 },
    });
    const events = [...sim.events];
    const groundTruth = sim.truth();
    const truth = truthRecord(groundTruth);
    const truthByCustomer = byCustomerHour(groundTruth.customerHour, 1);
    const distinctSids = new Set(events.map((e) => (e.data as { event_sid: string }).event_sid));

    // Who pays for each SIM, from before the simulated window (the CLI's assign reads SQLite only).
    const effectiveFrom = Math.floor(from / HOUR_MS) * HOUR_MS - 24 * HOUR_MS;
    await insertSimAssignments(reader, groundTruth.customers, effectiveFrom, Date.now());

    const prefix = `pgw${randomUUID().slice(0, 8)}`;
    const common = {
      REDIS_URL: inject("redisUrl"),
      REDIS_PREFIX: prefix,
      DATABASE_URL: database.url,
      DATABASE_PATH: "",
      PUBLIC_URL,
      TWILIO_AUTH_TOKEN: TOKEN,
      KORE_WEBHOOK_SECRET: KORE_SECRET,
      RETENTION_DAYS: "100000",
      // Short locks so the killed worker's active jobs are recovered in seconds, not 30 s.
      WORKER_LOCK_MS: "2000",
      WORKER_STALLED_INTERVAL_MS: "1000",
    };
    const workEnv = {
      ...common,
      ...stripeEnv(emu),
      STRIPE_TIMEOUT_MS: "5000",
      REPORT_INTERVAL_SECONDS: "2",
    };
    const serve = await startSimmeter("serve", { ...common, PORT: String(await freePort()) });
    const workers: SimmeterProcess[] = [];
    for (let i = 0; i < WORKERS; i++) workers.push(await startWorker(workEnv));
    /** every worker process ever started, the killed one included, for the log checks */
    const everyWorker = [...workers];
    const stderrTails = () =>
      [tail("serve", serve), ...everyWorker.map((w, i) => tail(`work #${i}`, w))].join("\n");

    const connection = new Redis(common.REDIS_URL, { maxRetriesPerRequest: null });
    const queue = new Queue(INGEST_QUEUE, { connection, prefix });
    const url = `${serve.url}/webhooks/event-streams`;

    const progress = { twilio: 0, kore: 0 };
    const killAt = Math.ceil(events.length * 0.4);
    const kill: {
      acceptedEvents?: number;
      killedPid?: number;
      jobsAtKill?: Record<string, number>;
      downMs?: number;
      restartedPid?: number;
    } = {};
    let restarted: Promise<void> | undefined;
    const onProgress = (which: "twilio" | "kore") => (p: SendProgress) => {
      progress[which] = p.events;
      const accepted = progress.twilio + progress.kore;
      if (restarted || accepted < killAt) return;
      restarted = (async () => {
        const victim = workers[1] as SimmeterProcess;
        kill.acceptedEvents = accepted;
        kill.killedPid = victim.child.pid;
        const t0 = performance.now();
        await victim.kill(); // SIGKILL: no shutdown code runs, its transactions die with it
        kill.jobsAtKill = (await queue.getJobCounts("waiting", "active", "delayed")) as Record<
          string,
          number
        >;
        await new Promise((r) => setTimeout(r, 1500));
        const again = await startWorker(workEnv);
        workers[1] = again;
        everyWorker.push(again);
        kill.restartedPid = again.child.pid;
        kill.downMs = Math.round(performance.now() - t0);
      })();
      // awaited after the senders finish; until then a failed restart must not go unhandled
      restarted.catch(() => {});
    };
    const senders = { batchMin: 1, batchMax: 5, concurrency: 8, maxRetries: 30, retryBaseMs: 100 };
    try {
      const t0 = performance.now();
      const results: SendResult[] = await Promise.all([
        sendDeliveries({
          ...senders,
          url,
          events: events.filter((_, i) => i % 2 === 0),
          signing: { kind: "twilio", authToken: TOKEN, publicUrl: PUBLIC_URL },
          seed: 1,
          onProgress: onProgress("twilio"),
        }),
        sendDeliveries({
          ...senders,
          url,
          events: events.filter((_, i) => i % 2 === 1),
          signing: { kind: "kore", secret: KORE_SECRET, publicUrl: PUBLIC_URL },
          seed: 2,
          onProgress: onProgress("kore"),
        }),
      ]);
      const sendMs = performance.now() - t0;
      expect(restarted, "a worker was killed during the run").toBeDefined();
      await restarted;
      await waitDrainedPg(queue, reader, 90_000);
      const drainMs = performance.now() - t0;

      const usage = await reader.usage();
      const ledgerByCustomer = await reader.usageByCustomerHour();
      const seen = await reader.scalar("select count(*) from seen_events");
      const quarantined = await reader.scalar("select count(*) from quarantine");
      const failedJobs = (await queue.getJobCounts("failed")).failed ?? 0;

      // A final report: the scheduler runs every 2 s in one of the workers; wait until nothing is
      // pending and everything counted has been sent.
      const counted = totals(ledgerByCustomer);
      let outbox: { state: string; rows: number; value: number }[] = [];
      try {
        await waitFor(
          async () => {
            outbox = (
              await reader.query<{ state: string; rows: string; value: string }>(
                "select state, count(*) as rows, coalesce(sum(value), 0) as value from meter_reports group by state order by state",
              )
            ).map((r) => ({ state: r.state, rows: Number(r.rows), value: Number(r.value) }));
            const pending = outbox.find((r) => r.state === "pending")?.rows ?? 0;
            const sent = await reader.sentByCustomer();
            return pending === 0 && JSON.stringify(sent) === JSON.stringify(counted);
          },
          "a final report run: nothing pending, every counted byte sent",
          60_000,
          500,
        );
      } catch (err) {
        throw new Error(
          `${(err as Error).message}\noutbox ${JSON.stringify(outbox)}\ncounted ${JSON.stringify(counted)}\nsent ${JSON.stringify(await reader.sentByCustomer())}\nStripe ${JSON.stringify(Object.fromEntries(emu.totalsByCustomer(EVENT_NAME)))}\n${stderrTails()}`,
        );
      }
      const totalMs = performance.now() - t0;
      const sent = await reader.sentByCustomer();
      const stripeTotals = Object.fromEntries(
        [...emu.totalsByCustomer(EVENT_NAME).entries()].sort(([a], [b]) => (a < b ? -1 : 1)),
      );
      const stripeByCustomer = byCustomerHour(emu.totalsByCustomerHour(EVENT_NAME), 1000);
      const logs = failedJobLines([serve, ...everyWorker]);
      const stats = emu.stats();

      const summary = {
        events: events.length,
        distinctEvents: distinctSids.size,
        duplicates: groundTruth.duplicates,
        lostUpdates: groundTruth.lostUpdates,
        sims: Object.keys(groundTruth.customers).length,
        customers: Object.keys(truthByCustomer).length,
        killAtEvents: killAt,
        kill,
        sendSeconds: Math.round(sendMs / 100) / 10,
        drainedSeconds: Math.round(drainMs / 100) / 10,
        reportedSeconds: Math.round(totalMs / 100) / 10,
        senders: results.map((r) => ({
          deliveries: r.deliveries,
          events: r.events,
          retries: r.retries,
          failed: r.failed,
          rejected4xx: r.rejected4xx,
          statusCounts: r.statusCounts,
          latencyMs: r.latenciesMs,
        })),
        ingestJobs: Number(await connection.get(`${prefix}:ingest:id`)),
        failedJobs,
        failedJobLogLines: { serialization: logs.serialization.length, other: logs.other.length },
        outbox,
        stripe: {
          meterEvents: emu.events().length,
          meterEventCalls: stats.meterEventCalls,
          duplicateIdentifiers: stats.duplicateIdentifiers,
          idempotentReplays: stats.idempotentReplays,
          idempotencyErrors: stats.idempotencyErrors,
        },
        totalBytes: groundTruth.totalBytes,
      };
      console.log(`pg workers drill summary: ${JSON.stringify(summary, null, 2)}`);

      const why = (what: string) => `${what}\n${stderrTails()}`;
      for (const r of results) {
        expect(r.failed, why("deliveries given up after all retries")).toBe(0);
        expect(r.rejected4xx, why("deliveries answered 4xx (lost: never retried)")).toBe(0);
      }
      expect(results.reduce((n, r) => n + r.events, 0)).toBe(events.length);
      expect(logs.serialization, why("ingest jobs failed on a serialization failure")).toEqual([]);
      expect(logs.other, why("ingest jobs failed for another reason")).toEqual([]);
      expect(failedJobs, why("jobs parked as failed")).toBe(0);
      expect(quarantined, why("real events quarantined")).toBe(0);
      expect(seen, why("distinct events counted")).toBe(distinctSids.size);
      expect(usage, why("usage per SIM per hour vs the ground truth")).toEqual(truth);
      expect(ledgerByCustomer, why("usage per customer per hour vs the ground truth")).toEqual(
        truthByCustomer,
      );
      // Stripe holds what the ledger counted and says it sent, nothing twice.
      expect(stripeTotals, why("Stripe's per-customer totals vs the ledger")).toEqual(counted);
      expect(sent, why("sent outbox rows vs Stripe")).toEqual(stripeTotals);
      expect(stripeByCustomer, why("Stripe per customer per hour vs the ledger")).toEqual(
        ledgerByCustomer,
      );
      expect(new Set(emu.events().map((e) => e.identifier)).size).toBe(emu.events().length);
      expect(stats.idempotencyErrors, "idempotency keys reused with other parameters").toBe(0);
    } finally {
      await Promise.all([serve.stop(), ...workers.map((w) => w.stop())]);
      await queue.close();
      connection.disconnect();
    }
  }, 360_000);
});
