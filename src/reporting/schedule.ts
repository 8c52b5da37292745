import { Queue, Worker } from "bullmq";
import type { Redis } from "ioredis";
import type Stripe from "stripe";
import type { Db } from "../db/client.ts";
import type { Logger } from "../lib/logger.ts";
import type { Metrics } from "../lib/metrics.ts";
import type { Closer } from "../lib/shutdown.ts";
import { type ReporterSettings, runReport } from "./reporter.ts";

export const REPORT_QUEUE = "report";
const SCHEDULER_ID = "report-every";

/**
 * Runs the reporter every intervalSeconds through a BullMQ job scheduler: upsert is idempotent, so
 * every worker process may call it at boot, and only one of them runs each tick.
 */
export async function startReportSchedule(o: {
  connection: Redis;
  prefix: string;
  intervalSeconds: number;
  deps: {
    db: Db;
    stripe: Stripe;
    redis: Redis;
    logger: Logger;
    metrics: Metrics;
    settings: ReporterSettings;
  };
}): Promise<Closer[]> {
  const queue = new Queue(REPORT_QUEUE, { connection: o.connection, prefix: o.prefix });
  await queue.upsertJobScheduler(
    SCHEDULER_ID,
    { every: o.intervalSeconds * 1000 },
    { name: "report", opts: { removeOnComplete: { count: 100 }, removeOnFail: { count: 1000 } } },
  );
  const worker = new Worker(
    REPORT_QUEUE,
    async () => {
      const s = await runReport(o.deps);
      const level = s.failed || s.fatal || s.stillPending ? "warn" : "info";
      if (s.calls > 0 || level === "warn") o.deps.logger[level](s, "report run finished");
      if (s.fatal) throw new Error(s.fatal);
      return s;
    },
    { connection: o.connection, prefix: o.prefix, concurrency: 1, lockDuration: 120_000 },
  );
  worker.on("error", (err) => o.deps.logger.warn({ err: err.message }, "report worker error"));
  worker.on("failed", (_job, err) =>
    o.deps.logger.error({ err: err.message }, "report run failed"),
  );
  return [
    { name: "report-worker", close: () => worker.close() },
    { name: "report-queue", close: () => queue.close() },
  ];
}
