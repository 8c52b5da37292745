import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";

// A single-instance Redis lease: enough to keep two reporters (service and CLI, or two workers)
// from calling Stripe for the same customer at once. The lease is renewed while held, and only
// its owner can release it, so a stalled holder's expired lease is never deleted by it later.
const RELEASE = `if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`;
const RENEW = `if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("pexpire", KEYS[1], ARGV[2]) else return 0 end`;

export async function withLease<T>(
  redis: Redis,
  key: string,
  ttlMs: number,
  fn: () => Promise<T>,
): Promise<{ ok: true; value: T } | { ok: false }> {
  const token = randomUUID();
  const got = await redis.set(key, token, "PX", ttlMs, "NX");
  if (got !== "OK") return { ok: false };
  const timer = setInterval(
    () => {
      redis.eval(RENEW, 1, key, token, String(ttlMs)).catch(() => {});
    },
    Math.max(100, Math.floor(ttlMs / 3)),
  );
  try {
    return { ok: true, value: await fn() };
  } finally {
    clearInterval(timer);
    await redis.eval(RELEASE, 1, key, token).catch(() => {});
  }
}
