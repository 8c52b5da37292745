import { randomUUID } from "node:crypto";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { type RedisHandle, startRedis } from "../../scripts/lib/redis-server.ts";
import { INGEST_JOB, INGEST_QUEUE } from "../../src/ingest/job.ts";
import { INGEST_JOB_OPTIONS } from "../../src/ingest/queue.ts";
import { fleet, sortKeys } from "../helpers/fleet.ts";
import { openTestLedger } from "../helpers/ledger.ts";
import { startSimmeter, waitFor } from "../helpers/process.ts";

// Redis outages and killed workers, with real simmeter processes on a ledger of the vitest
// project (a SQLite file or a PostgreSQL database, its `env` given to the process).

describe("fault drills", () => {
  const redisServers: RedisHandle[] = [];
  afterAll(async () => {
    for (const r of redisServers) await r.stop();
  });

  it("with Redis stopped the receiver answers 503; the sender's retry after Redis is back is counted", async () => {
    const redis = await startRedis();
    redisServers.push(redis);
    const t = await openTestLedger({ file: true });
    const app = await startSimmeter("start", {
      REDIS_URL: redis.url,
      ...t.env,
      ALLOW_UNSIGNED: "true",
      RETENTION_DAYS: "100000",
    });
    try {
      const { events, expected } = fleet(3, 7);
      const post = (body: unknown) =>
        fetch(`${app.url}/webhooks/event-streams`, { method: "POST", body: JSON.stringify(body) });
      const half = Math.floor(events.length / 2);
      for (const e of events.slice(0, half)) expect((await post([e])).status).toBe(200);
      await redis.kill();
      // Down for longer than BullMQ's drainDelay (bullmq#4585: workers must resume afterwards).
      const refused = await post([events[half]]);
      expect(refused.status).toBe(503);
      expect(refused.headers.get("retry-after")).toBe("5");
      expect((await fetch(`${app.adminUrl}/readyz`)).status).toBe(503);
      await new Promise((r) => setTimeout(r, 7000));
      await redis.start();
      // The sender retries every delivery that did not get a 2xx, like Event Streams does.
      for (const e of events.slice(half)) {
        await waitFor(
          async () => (await post([e])).status === 200,
          "delivery accepted after Redis restart",
          20_000,
          200,
        );
      }
      await waitFor(
        async () => JSON.stringify(await t.usage()) === JSON.stringify(sortKeys(expected)),
        "usage equals ground truth",
        30_000,
        200,
      );
      expect(await t.usage()).toEqual(expected);
    } finally {
      await app.stop();
    }
  }, 90_000);

  it("a worker killed with SIGKILL mid-batch loses and double-counts nothing after restart", async () => {
    const redis = await startRedis();
    redisServers.push(redis);
    const t = await openTestLedger({ file: true });
    const env = {
      REDIS_URL: redis.url,
      ...t.env,
      RETENTION_DAYS: "100000",
      // Short locks so the killed worker's job is recovered in seconds, not 30 s.
      WORKER_LOCK_MS: "2000",
      WORKER_STALLED_INTERVAL_MS: "1000",
      // Two jobs per commit: commits that group jobs, and enough of them that the kill lands
      // mid-stream (with 8, the 60 small jobs took 3 commits and could all be done before it).
      WORKER_COMMIT_JOBS: "2",
    };
    const { events, expected } = fleet(400, 11);
    const conn = new Redis(redis.url, { maxRetriesPerRequest: null });
    const queue = new Queue(INGEST_QUEUE, { connection: conn, prefix: "simmeter" });
    // Many jobs, and redeliveries of the same events in later jobs, so a kill lands mid-stream.
    const jobs = 60;
    for (let j = 0; j < jobs; j++) {
      const slice = events.filter((_, i) => i % jobs === j);
      const redelivered = events.filter((_, i) => i % 97 === j % 97);
      await queue.add(
        INGEST_JOB,
        {
          v: 1,
          deliveries: [
            {
              id: randomUUID(),
              receivedAt: Date.now(),
              source: "replay",
              events: [...slice, ...redelivered],
            },
          ],
        },
        INGEST_JOB_OPTIONS,
      );
    }
    let worker = await startSimmeter("work", env);
    await waitFor(
      async () => ((await queue.getJobCounts("waiting")).waiting ?? 0) < jobs - 3,
      "some jobs processed",
      30_000,
      5,
    );
    await worker.kill();
    const left = (await queue.getJobCounts("waiting", "active")) as {
      waiting: number;
      active: number;
    };
    expect(left.waiting + left.active).toBeGreaterThan(0);
    worker = await startSimmeter("work", env);
    try {
      await waitFor(
        async () => {
          const c = await queue.getJobCounts("waiting", "active", "delayed");
          return (c.waiting ?? 0) + (c.active ?? 0) + (c.delayed ?? 0) === 0;
        },
        "queue drained",
        60_000,
        200,
      );
      expect(await t.usage()).toEqual(expected);
    } finally {
      await worker.stop();
      await queue.close();
      conn.disconnect();
    }
  }, 120_000);
});
