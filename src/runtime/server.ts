import type { Server } from "node:http";
import type { Readiness } from "../admin/app.ts";
import type { Config } from "../config.ts";
import { addDeliveries, createIngestQueue } from "../ingest/queue.ts";
import type { Ledger } from "../ledger/port.ts";
import type { Logger } from "../lib/logger.ts";
import type { Metrics } from "../lib/metrics.ts";
import { checkEvictionPolicy, createRedis, pingWithin } from "../lib/redis.ts";
import type { Closer } from "../lib/shutdown.ts";
import { registerQueueGauges } from "../observability/queue-gauges.ts";
import { createApp } from "../receive/app.ts";
import { createGroupEnqueuer } from "../receive/enqueue.ts";

export type ServerHandle = {
  port: number;
  closers: Closer[];
  /** what /readyz reports for this role: Redis, the database, and whether deliveries are refused */
  ready: () => Promise<Readiness>;
};

/** What `simmeter start` adds when the worker role runs in another thread of this process. */
export type ServerOptions = {
  /**
   * Non-null (a reason) when deliveries must not be acknowledged, because nothing would count
   * them: they are answered 503 (the sender retries) and /readyz fails.
   */
  refuseReason?: () => string | null;
};

/** Composition root of the receiver role: HTTP → group enqueuer → BullMQ. */
export async function startServer(
  config: Config,
  ledger: Ledger,
  logger: Logger,
  metrics: Metrics,
  opts: ServerOptions = {},
): Promise<ServerHandle> {
  const redis = createRedis(config.REDIS_URL, "producer", logger);
  const queue = createIngestQueue(redis, config.REDIS_PREFIX, logger);
  const enqueuer = createGroupEnqueuer((data) => addDeliveries(queue, data), {
    maxEvents: config.BATCH_MAX_EVENTS,
    onBatch: (n) => metrics.enqueueBatch.observe(n),
  });
  redis.once("ready", () => {
    void checkEvictionPolicy(redis, logger).then((policy) => {
      if (policy)
        metrics.redisNoeviction.set({ connection: "producer" }, policy === "noeviction" ? 1 : 0);
    });
  });

  // Queue depth is read at scrape time so it is right whichever process runs the worker.
  registerQueueGauges(metrics.registry, queue);

  const refuseReason = opts.refuseReason ?? (() => null);
  const ready = async (): Promise<Readiness> => {
    const checks: Record<string, string> = {};
    const refused = refuseReason();
    if (refused) checks.worker = refused;
    checks.redis = await pingWithin(redis);
    checks.database = await ledger.admin.ping(2000);
    return { ok: !refused && checks.redis === "ok" && checks.database === "ok", checks };
  };
  const app = createApp({
    config,
    logger,
    metrics,
    enqueue: (d, n) => {
      const refused = refuseReason();
      return refused ? Promise.reject(new Error(refused)) : enqueuer.enqueue(d, n);
    },
    now: Date.now,
  });
  const server: Server = await new Promise((resolve, reject) => {
    const s = app.listen(config.PORT, config.HOST, (err?: Error) =>
      err ? reject(err) : resolve(s),
    );
  });
  // Event Streams waits 5 s; keep-alive sockets from the sender should outlive that.
  server.keepAliveTimeout = 65_000;
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : config.PORT;
  logger.info({ port, path: "/webhooks/event-streams" }, "receiver listening");
  return {
    port,
    ready,
    closers: [
      {
        name: "http",
        close: () =>
          new Promise<void>((resolve) => {
            server.close(() => resolve());
            server.closeIdleConnections();
            // A busy sender keeps keep-alive sockets open forever; after a short grace, close them
            // (it retries whatever got no answer) so the workers still get their share of the deadline.
            setTimeout(() => server.closeAllConnections(), 2000).unref();
          }),
      },
      { name: "enqueuer", close: () => enqueuer.drain() },
      { name: "queue", close: () => queue.close() },
      { name: "redis-producer", close: () => void redis.disconnect() },
    ],
  };
}
