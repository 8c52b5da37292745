// Redis: reachable, and set up so that BullMQ keeps what it was given.
import type { Redis } from "ioredis";
import type { Config } from "../../config.ts";
import { createLogger } from "../../lib/logger.ts";
import { createRedis, waitReady } from "../../lib/redis.ts";
import type { Add } from "./check.ts";

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

/**
 * Reachable; maxmemory-policy noeviction (BullMQ loses jobs otherwise); AOF on. Returns the
 * connection, for the checks that read Redis (the caller disconnects it); null when unreachable.
 */
export async function doctorRedis(config: Config, add: Add): Promise<Redis | null> {
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
  // A setting CONFIG GET does not give (refused, as on some managed Redis) only warns.
  const unread = (check: string, key: string, want: string) =>
    add(check, "warn", `could not read ${key} (CONFIG GET refused?): ${want}`);
  const policy = await get("maxmemory-policy");
  if (policy === null) unread("redis eviction", "maxmemory-policy", "it must be noeviction");
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
    unread(
      "redis persistence",
      "appendonly",
      "run Redis with appendonly yes, appendfsync everysec",
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
