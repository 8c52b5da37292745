import { Queue, Worker } from "bullmq";
import type { Redis } from "ioredis";
import type Stripe from "stripe";
import type { Ledger } from "../ledger/port.ts";
import { logBullmqErrors } from "../lib/bullmq-errors.ts";
import type { Logger } from "../lib/logger.ts";
import type { Metrics } from "../lib/metrics.ts";
import type { Closer } from "../lib/shutdown.ts";
import { type ReporterSettings, runReport } from "./reporter.ts";

export const REPORT_QUEUE = "report";
const SCHEDULER_ID = "report-every";

/**
 * Runs the reporter every intervalSeconds through a BullMQ job scheduler: upsert is idempotent, so
 * every worker process may call it, and only one of them runs each tick (a tick's job id is the
 * scheduler id and the tick's time).
 *
 * The scheduler lives only in Redis: a FLUSHALL, or a restart of a Redis without persistence,
 * removes it and reporting would stop silently. So it is re-asserted whenever the connection
 * becomes ready again and once every interval. Re-asserting an intact scheduler keeps its next
 * tick (BullMQ replaces the waiting job with one of the same time), so it adds no runs.
 */
export async function startReportSchedule(o: {
  connection: Redis;
  prefix: string;
  intervalSeconds: number;
  deps: {
    ledger: Ledger;
    stripe: Stripe;
    redis: Redis;
    logger: Logger;
    metrics: Metrics;
    settings: ReporterSettings;
  };
}): Promise<Closer[]> {
  const { logger, metrics } = o.deps;
  const everyMs = o.intervalSeconds * 1000;
  const queue = new Queue(REPORT_QUEUE, { connection: o.connection, prefix: o.prefix });
  // Connection errors, already logged once by the connection's owner; unheard they go to stderr.
  logBullmqErrors(queue, logger, "report queue");

  // Set on every pass and gone after a flush or an empty restart: a pass that finds it absent
  // knows Redis lost its data since the last pass, even when another worker (or this one, in a
  // pass the flush cut in two) has re-created the scheduler already.
  const markerKey = `${o.prefix}:report-schedule-asserted`;
  let established = false;
  const assertSchedule = async () => {
    const dataLost = (await o.connection.set(markerKey, "1", "NX")) === "OK";
    const existing = await queue.getJobScheduler(SCHEDULER_ID);
    // A scheduler whose next job is gone would never tick again either; upsert re-adds it.
    const nextJob =
      existing?.next != null ? await queue.getJob(`repeat:${SCHEDULER_ID}:${existing.next}`) : null;
    await queue.upsertJobScheduler(
      SCHEDULER_ID,
      { every: everyMs },
      { name: "report", opts: { removeOnComplete: { count: 100 }, removeOnFail: { count: 1000 } } },
    );
    if (established && (dataLost || !existing || !nextJob)) {
      logger.warn(
        {
          scheduler: SCHEDULER_ID,
          everySeconds: o.intervalSeconds,
          redisDataLost: dataLost,
          schedulerFound: !!existing,
          nextRunFound: !!nextJob,
        },
        "report schedule was missing from Redis (flushed, or restarted without persistence); re-created it",
      );
    } else if (!established && !existing) {
      logger.info(
        { scheduler: SCHEDULER_ID, everySeconds: o.intervalSeconds },
        "report schedule created",
      );
    }
    established = true;
  };

  // Triggers that arrive while one assertion runs (Redis down: it waits for the reconnect) are
  // folded into one more pass afterwards rather than piling up.
  let closed = false;
  let inFlight: Promise<void> | null = null;
  let again = false;
  const reassert = (): void => {
    if (closed) return;
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = assertSchedule()
      .catch((err: unknown) =>
        logger.warn({ err: (err as Error).message }, "could not re-assert the report schedule"),
      )
      .finally(() => {
        inFlight = null;
        if (again) {
          again = false;
          reassert();
        }
      });
  };

  await assertSchedule();
  const onReady = () => reassert();
  o.connection.on("ready", onReady);
  const timer = setInterval(reassert, everyMs);
  timer.unref();

  const worker = new Worker(
    REPORT_QUEUE,
    async () => {
      const s = await runReport(o.deps);
      const level = s.failed || s.fatal || s.stillPending ? "warn" : "info";
      if (s.calls > 0 || level === "warn") logger[level](s, "report run finished");
      if (s.fatal) throw new Error(s.fatal);
      metrics.reportLastSuccess.set(Date.now() / 1000);
      return s;
    },
    { connection: o.connection, prefix: o.prefix, concurrency: 1, lockDuration: 120_000 },
  );
  logBullmqErrors(worker, logger, "report worker");
  worker.on("failed", (_job, err) => logger.error({ err: err.message }, "report run failed"));
  return [
    {
      name: "report-schedule-check",
      close: () => {
        closed = true;
        clearInterval(timer);
        o.connection.off("ready", onReady);
      },
    },
    { name: "report-worker", close: () => worker.close() },
    { name: "report-queue", close: () => queue.close() },
  ];
}
