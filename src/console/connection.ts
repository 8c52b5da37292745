import { Queue } from "bullmq";
import type { Redis } from "ioredis";
import type { Config } from "../config.ts";
import type { IngestJobData } from "../ingest/job.ts";
import { createIngestQueue } from "../ingest/queue.ts";
import { logBullmqErrors } from "../lib/bullmq-errors.ts";
import type { Logger } from "../lib/logger.ts";
import { createRedis } from "../lib/redis.ts";
import { REPORT_QUEUE } from "../reporting/schedule.ts";

/** The queues the console reads and acts on, on a connection of its own. */
export type ConsoleQueues = {
  ingest: Queue<IngestJobData>;
  /** null when this process has no STRIPE_SECRET_KEY (nothing would run a report job) */
  report: Queue | null;
  /** a new connection for blocking reads (QueueEvents); the caller disconnects it */
  connect: () => Redis;
  prefix: string;
};

/**
 * The Redis connection and queues the console needs, created by the composition root
 * (src/cli/run.ts) and closed after the admin listener. Fails fast while Redis is down (the page
 * says so) rather than hanging a request.
 */
export function consoleQueues(
  config: Pick<Config, "REDIS_URL" | "REDIS_PREFIX" | "STRIPE_SECRET_KEY">,
  logger: Logger,
): { queues: ConsoleQueues; close: () => Promise<void> } {
  const redis = createRedis(config.REDIS_URL, "producer", logger);
  const ingest = createIngestQueue(redis, config.REDIS_PREFIX, logger);
  let report: Queue | null = null;
  if (config.STRIPE_SECRET_KEY) {
    report = new Queue(REPORT_QUEUE, { connection: redis, prefix: config.REDIS_PREFIX });
    logBullmqErrors(report, logger, "report queue (console)");
  }
  return {
    queues: {
      ingest,
      report,
      connect: () => createRedis(config.REDIS_URL, "worker", logger),
      prefix: config.REDIS_PREFIX,
    },
    close: async () => {
      await ingest.close().catch(() => {});
      await report?.close().catch(() => {});
      redis.disconnect();
    },
  };
}
