import { Queue } from "bullmq";
import type { Redis } from "ioredis";
import type { ApiContext } from "../api/routes.ts";
import type { CustomerBilling } from "../billing/periods.ts";
import type { Config } from "../config.ts";
import type { IngestJobData } from "../ingest/job.ts";
import { createIngestQueue } from "../ingest/queue.ts";
import { logBullmqErrors } from "../lib/bullmq-errors.ts";
import type { Logger } from "../lib/logger.ts";
import { createRedis } from "../lib/redis.ts";
import { REPORT_QUEUE } from "../reporting/schedule.ts";
import { lookUpPeriods } from "../views/parity.ts";

/** The queues the console reads and acts on, on a connection of its own. */
export type ConsoleQueues = {
  ingest: Queue<IngestJobData>;
  /** null when this process has no STRIPE_SECRET_KEY (nothing would run a report job) */
  report: Queue | null;
  /** a new connection for blocking reads (QueueEvents); the caller disconnects it */
  connect: () => Redis;
  prefix: string;
};

export type ConsoleDeps = {
  /** the admin API's context: the same views answer the console's questions */
  api: ApiContext;
  /** ADMIN_TOKEN: login required; unset: loopback only, no login */
  token?: string | undefined;
  logger: Logger;
  /** absent: no Redis (requeue, report runs and the queue board are unavailable) */
  queues?: ConsoleQueues;
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

/** Rejects after ms: a page shows "unavailable" instead of waiting on a Redis that is down. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export type Periods = {
  billing: ReadonlyMap<string, CustomerBilling>;
  /** stripe: looked up now, as the CLI does; stored: as the reporter last stored them */
  source: "stripe" | "stored";
  error: string | null;
};

/**
 * The subscription periods the Stripe-backed questions use: looked up now when Stripe is
 * configured (what `simmeter reconcile --period` and `statement` do), else the stored ones.
 */
export async function periodsNow(deps: ConsoleDeps): Promise<Periods> {
  const stored = deps.api.billing ? deps.api.billing() : new Map<string, CustomerBilling>();
  if (!deps.api.stripe) return { billing: stored, source: "stored", error: null };
  try {
    return {
      billing: await lookUpPeriods(deps.api.db, deps.api.stripe, deps.api.now()),
      source: "stripe",
      error: null,
    };
  } catch (err) {
    deps.logger.warn({ err: (err as Error).message }, "console: subscription look-up failed");
    return { billing: stored, source: "stored", error: (err as Error).message };
  }
}
