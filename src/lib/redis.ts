import { Redis, type RedisOptions } from "ioredis";
import type { Logger } from "./logger.ts";

export type RedisRole = "producer" | "worker";

/**
 * Producers fail fast so the webhook can answer 503 while Redis is down (the sender retries);
 * workers block on Redis and must retry forever (BullMQ requires maxRetriesPerRequest: null).
 */
export function createRedis(url: string, role: RedisRole, logger: Logger): Redis {
  const common: RedisOptions = {
    lazyConnect: false,
    retryStrategy: (times) => Math.min(times * 200, 2000),
  };
  const opts: RedisOptions =
    role === "producer"
      ? { ...common, enableOfflineQueue: false, maxRetriesPerRequest: 1, connectTimeout: 2000 }
      : { ...common, maxRetriesPerRequest: null, enableReadyCheck: false };
  const redis = new Redis(url, opts);
  let down = false;
  redis.on("error", (err) => {
    if (!down) logger.warn({ err: err.message, role }, "redis connection error");
    down = true;
  });
  redis.on("ready", () => {
    if (down) logger.info({ role }, "redis connection restored");
    down = false;
  });
  return redis;
}

/** Waits until the connection is ready or the deadline passes. */
export async function waitReady(redis: Redis, timeoutMs: number): Promise<void> {
  if (redis.status === "ready") return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`Redis not reachable within ${timeoutMs} ms (status ${redis.status})`));
    }, timeoutMs);
    const onReady = () => {
      cleanup();
      resolve();
    };
    const cleanup = () => {
      clearTimeout(timer);
      redis.off("ready", onReady);
    };
    redis.on("ready", onReady);
  });
}

/** BullMQ silently loses jobs under any eviction policy other than noeviction. */
export async function checkEvictionPolicy(redis: Redis, logger: Logger): Promise<string | null> {
  try {
    const res = (await redis.config("GET", "maxmemory-policy")) as string[];
    const policy = res[1] ?? null;
    if (policy && policy !== "noeviction") {
      logger.warn(
        { policy },
        `Redis maxmemory-policy is ${policy}: BullMQ loses queued deliveries when Redis evicts keys. Set maxmemory-policy noeviction.`,
      );
    }
    return policy;
  } catch (err) {
    logger.warn(
      { err: (err as Error).message },
      "could not read Redis maxmemory-policy (CONFIG GET refused?)",
    );
    return null;
  }
}

/** PING with a deadline: a worker connection (maxRetriesPerRequest: null) would wait forever. */
export async function pingWithin(redis: Redis, timeoutMs = 1000): Promise<string> {
  if (redis.status !== "ready") return `not connected (${redis.status})`;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      redis.ping(),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no PING answer within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
    return "ok";
  } catch (err) {
    return (err as Error).message;
  } finally {
    clearTimeout(timer);
  }
}
