import { Queue } from "bullmq";
import { Redis } from "ioredis";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { startRedis } from "../../scripts/lib/redis-server.ts";
import { assignCustomer } from "../../src/customers/customers.ts";
import type { Logger } from "../../src/lib/logger.ts";
import { createMetrics } from "../../src/lib/metrics.ts";
import { createRedis } from "../../src/lib/redis.ts";
import { closeAll } from "../../src/lib/shutdown.ts";
import { REPORT_QUEUE, startReportSchedule } from "../../src/reporting/schedule.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { waitFor } from "../helpers/process.ts";
import { EVENT_NAME, type ReportingRig, reportingRig } from "../helpers/reporting.ts";

// The scheduler against Redis losing its state, on the ledger of the vitest project. Each test
// runs its own redis-server: FLUSHALL and restarts must not touch the shared one that
// parallel test files use.

const SIM = `HS${"5".repeat(32)}`;
const CUSTOMER = "cus_schedule";
const INTERVAL_SECONDS = 1;

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function capturingLogger(): { logger: Logger; messages: () => string[] } {
  const lines: { msg?: string }[] = [];
  const logger = pino({ level: "info" }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { logger, messages: () => lines.map((l) => l.msg ?? "") };
}

/** One worker process's reporting half: its own connection and metrics, as startWorker wires it. */
async function startScheduleWorker(redisUrl: string, rig: ReportingRig, logger: Logger) {
  const connection = createRedis(redisUrl, "worker", logger);
  const metrics = createMetrics();
  const closers = await startReportSchedule({
    connection,
    prefix: rig.prefix,
    intervalSeconds: INTERVAL_SECONDS,
    deps: {
      ledger: rig.ledger,
      stripe: rig.stripe,
      redis: rig.redis,
      logger,
      metrics,
      settings: rig.settings,
    },
  });
  cleanups.push(async () => {
    await closeAll(closers, 10_000, logger);
    connection.disconnect();
  });
  return {
    lastSuccess: async () => (await metrics.reportLastSuccess.get()).values[0]?.value ?? 0,
  };
}

/** A data session of SIM whose readings are taken now (cumulative bytes so far). */
function sessionReadings(rig: ReportingRig) {
  const start = Date.now() - 120_000;
  let n = 0;
  return async (cumulative: number) => {
    rig.now.value = Date.now();
    const t = rig.now.value - 1000;
    n++;
    await rig.ingest([
      buildCloudEvent({
        eventSid: `EZ${n.toString(16).padStart(32, "e")}`,
        kind: "data-session.updated",
        accountSid: `AC${"1".repeat(32)}`,
        simSid: SIM,
        iccid: "89883070000005381783",
        timestampMs: t,
        sessionSid: `PI${"f".repeat(32)}`,
        sessionStartMs: start,
        windowStartMs: start,
        windowEndMs: t,
        cumulativeDown: cumulative,
      }),
    ]);
  };
}

async function schedulingRig(redisUrl: string): Promise<ReportingRig> {
  const rig = await reportingRig({ redisUrl, now: Date.now() });
  cleanups.push(() => rig.close());
  // The lease client reconnects by itself; its refused connects while Redis is down are expected.
  rig.redis.on("error", () => {});
  await assignCustomer({
    ledger: rig.ledger,
    now: rig.now.value,
    input: {
      targetType: "sim",
      targetId: SIM,
      customerId: CUSTOMER,
      effectiveFrom: rig.now.value - 86_400_000,
    },
  });
  return rig;
}

const inStripe = (rig: ReportingRig) => rig.emu.totalsByCustomer(EVENT_NAME).get(CUSTOMER) ?? 0;

/**
 * The scheduler's runs that completed, by tick time. A flush removes the record of earlier runs,
 * and a run that was active during the flush cannot complete (its job is gone), so after a flush
 * this lists only runs the re-created scheduler started.
 */
async function completedTicks(redisUrl: string, prefix: string): Promise<number[]> {
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const queue = new Queue(REPORT_QUEUE, { connection, prefix });
  try {
    return (await queue.getCompleted(0, -1))
      .map((j) => Number(/^repeat:report-every:(\d+)$/.exec(j.id ?? "")?.[1]))
      .sort((a, b) => a - b);
  } finally {
    await queue.close();
    connection.disconnect();
  }
}

const RECREATED = /report schedule was missing from Redis.*re-created it/;

describe("the report schedule", () => {
  it("after FLUSHALL it is re-created without a restart: usage keeps reaching Stripe, two workers still make one run per tick, and the last-success gauge keeps moving", async () => {
    const redis = await startRedis();
    cleanups.push(() => redis.stop());
    const rig = await schedulingRig(redis.url);
    const { logger, messages } = capturingLogger();
    const workers = [
      await startScheduleWorker(redis.url, rig, logger),
      await startScheduleWorker(redis.url, rig, logger),
    ];
    const lastSuccess = async () =>
      Math.max(...(await Promise.all(workers.map((w) => w.lastSuccess()))));
    const reading = sessionReadings(rig);

    await reading(1000);
    await waitFor(() => inStripe(rig) === 1000, "the first reading in Stripe", 15_000);
    await waitFor(async () => (await lastSuccess()) > 0, "the last-success gauge to be set");

    const admin = new Redis(redis.url, { maxRetriesPerRequest: null });
    cleanups.push(async () => void admin.disconnect());
    await admin.flushall();
    const flushedAt = Date.now();

    const ticks = await waitFor(
      async () => {
        const t = await completedTicks(redis.url, rig.prefix);
        return t.length >= 3 ? t : null;
      },
      "three scheduled runs after FLUSHALL",
      15_000,
    );
    // Both workers re-assert the scheduler every interval, yet no tick ran twice.
    for (let i = 1; i < ticks.length; i++) {
      expect((ticks[i] ?? 0) - (ticks[i - 1] ?? 0)).toBeGreaterThanOrEqual(INTERVAL_SECONDS * 1000);
    }
    expect(await lastSuccess()).toBeGreaterThan(flushedAt / 1000);
    await waitFor(() => messages().some((m) => RECREATED.test(m)), "the re-creation warning");
    expect(messages().filter((m) => RECREATED.test(m)).length).toBeLessThanOrEqual(2);

    await reading(3000);
    await waitFor(() => inStripe(rig) === 3000, "usage counted after FLUSHALL in Stripe", 15_000);
    expect(rig.emu.stats().duplicateIdentifiers).toBe(0);
  });

  it("after a restart of a Redis without persistence it is re-created on reconnect and usage keeps reaching Stripe", async () => {
    // Without AOF or RDB: a restart comes back empty, as it does in production.
    const redis = await startRedis({ persistence: false });
    cleanups.push(() => redis.stop());
    const rig = await schedulingRig(redis.url);
    const { logger, messages } = capturingLogger();
    const worker = await startScheduleWorker(redis.url, rig, logger);
    const reading = sessionReadings(rig);

    await reading(700);
    await waitFor(() => inStripe(rig) === 700, "the first reading in Stripe", 15_000);
    await waitFor(async () => (await worker.lastSuccess()) > 0, "the last-success gauge to be set");

    await redis.kill();
    await new Promise((r) => setTimeout(r, 500));
    await redis.start();
    const restartedAt = Date.now();

    await waitFor(
      async () => (await completedTicks(redis.url, rig.prefix)).length >= 2,
      "two scheduled runs after the restart",
      15_000,
    );
    expect(await worker.lastSuccess()).toBeGreaterThan(restartedAt / 1000);
    await waitFor(() => messages().some((m) => RECREATED.test(m)), "the re-creation warning");

    await reading(2000);
    await waitFor(
      () => inStripe(rig) === 2000,
      "usage counted after the restart in Stripe",
      15_000,
    );
  });
});
