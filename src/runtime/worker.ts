import { isMainThread } from "node:worker_threads";
import type { Readiness } from "../admin/app.ts";
import type { Config } from "../config.ts";
import { createIngestQueue } from "../ingest/queue.ts";
import { createIngestWorker } from "../ingest/worker.ts";
import type { OpenedLedger } from "../ledger/open.ts";
import type { Logger } from "../lib/logger.ts";
import type { Metrics } from "../lib/metrics.ts";
import { checkEvictionPolicy, createRedis, pingWithin } from "../lib/redis.ts";
import type { Closer } from "../lib/shutdown.ts";
import { registerLedgerGauges } from "../observability/ledger-gauges.ts";
import { registerQueueGauges } from "../observability/queue-gauges.ts";
import type { ReporterSettings } from "../reporting/reporter.ts";
import { startReportSchedule } from "../reporting/schedule.ts";
import { createStripe } from "../reporting/stripe.ts";

export type WorkerHandle = {
  closers: Closer[];
  /** what /readyz reports for this role: Redis, the database, and the ingest worker running */
  ready: () => Promise<Readiness>;
};

const PRUNE_EVERY_MS = 3_600_000;

/**
 * Composition root of the worker role: BullMQ → ingest → the ledger (on SQLite the only writer of
 * usage; on PostgreSQL one of any number of workers) → the reporter.
 */
export async function startWorker(
  config: Config,
  opened: OpenedLedger,
  logger: Logger,
  metrics: Metrics,
): Promise<WorkerHandle> {
  const { ledger } = opened;
  const redis = createRedis(config.REDIS_URL, "worker", logger);
  redis.once("ready", () => {
    void checkEvictionPolicy(redis, logger).then((policy) => {
      if (policy)
        metrics.redisNoeviction.set({ connection: "worker" }, policy === "noeviction" ? 1 : 0);
    });
  });
  // The ledger gauges: once per database, here (in `start`, the worker thread).
  registerLedgerGauges(metrics.registry, opened.gaugeReads, { logger });
  metrics.reportInterval.set(config.STRIPE_SECRET_KEY ? config.REPORT_INTERVAL_SECONDS : 0);
  // In `simmeter start` the main thread (startServer) reads the queue for /metrics already; a
  // second copy would be summed by mergeMetrics.
  const depthQueue = isMainThread ? createIngestQueue(redis, config.REDIS_PREFIX, logger) : null;
  if (depthQueue) registerQueueGauges(metrics.registry, depthQueue);
  const worker = createIngestWorker({
    connection: redis,
    prefix: config.REDIS_PREFIX,
    ledger,
    settings: {
      billingMode: config.BILLING_MODE,
      attribution: config.ATTRIBUTION,
      retentionDays: config.RETENTION_DAYS,
      maxBytesPerSecond: config.MAX_BYTES_PER_SECOND,
    },
    now: Date.now,
    logger,
    metrics,
    lockDurationMs: config.WORKER_LOCK_MS,
    commitJobs: config.WORKER_COMMIT_JOBS,
    stalledIntervalMs: config.WORKER_STALLED_INTERVAL_MS,
  });
  let pruning: Promise<void> | null = null;
  const prune = () => {
    pruning ??= (async () => {
      try {
        const r = await ledger.retention.prune(config.RETENTION_DAYS, Date.now());
        if (r === null) logger.info("another process is pruning the ledger; skipped");
        else if (r.seenEvents || r.sessions) logger.info(r, "pruned records past retention");
        const folded = await ledger.outbox.compact(Date.now());
        if (folded)
          logger.info({ outboxRows: folded }, "folded outbox rows older than Stripe's window");
      } catch (err) {
        logger.error({ err: (err as Error).message }, "prune failed");
      } finally {
        pruning = null;
      }
    })();
    return pruning;
  };
  await prune();
  const pruneTimer = setInterval(prune, PRUNE_EVERY_MS);
  pruneTimer.unref();
  const reportClosers: Closer[] = [];
  if (config.STRIPE_SECRET_KEY) {
    reportClosers.push(
      ...(await startReportSchedule({
        connection: redis,
        prefix: config.REDIS_PREFIX,
        intervalSeconds: config.REPORT_INTERVAL_SECONDS,
        deps: {
          ledger,
          stripe: createStripe(config),
          redis,
          logger,
          metrics,
          settings: reporterSettings(config),
        },
      })),
    );
    logger.info(
      { everySeconds: config.REPORT_INTERVAL_SECONDS, meter: config.STRIPE_METER_EVENT_NAME },
      "reporting to Stripe",
    );
  } else {
    logger.warn("STRIPE_SECRET_KEY is not set: usage is counted but not reported to Stripe");
  }
  logger.info(
    { mode: config.BILLING_MODE, attribution: config.ATTRIBUTION, ledger: ledger.dialect },
    "ingest worker running",
  );
  const ready = async (): Promise<Readiness> => {
    const checks: Record<string, string> = {};
    checks.redis = await pingWithin(redis);
    checks.database = await ledger.admin.ping(2000);
    checks.ingest_worker = worker.isRunning() ? "ok" : "not running";
    return { ok: Object.values(checks).every((c) => c === "ok"), checks };
  };
  return {
    ready,
    closers: [
      ...reportClosers,
      {
        name: "prune-timer",
        close: async () => {
          clearInterval(pruneTimer);
          await pruning;
        },
      },
      { name: "ingest-worker", close: () => worker.close() },
      ...(depthQueue ? [{ name: "queue-depth", close: () => depthQueue.close() }] : []),
      { name: "redis-worker", close: () => void redis.disconnect() },
    ],
  };
}

export function reporterSettings(config: Config): ReporterSettings {
  return {
    eventName: config.STRIPE_METER_EVENT_NAME,
    graceSeconds: config.INVOICE_GRACE_SECONDS,
    marginSeconds: config.INVOICE_MARGIN_SECONDS,
    refreshSeconds: config.SUBSCRIPTION_REFRESH_SECONDS,
    concurrency: config.REPORT_CONCURRENCY,
    timeoutMs: config.STRIPE_TIMEOUT_MS,
    attemptsPerRun: 6,
    redisPrefix: config.REDIS_PREFIX,
  };
}
