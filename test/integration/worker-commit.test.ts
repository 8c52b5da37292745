// The worker's group commit through the real BullMQ worker, Redis and ledger
// (src/ingest/worker.ts, src/ingest/commit-group.ts): jobs queued before the worker starts are
// counted in fewer transactions than jobs, every job completes, a duplicate carried by two jobs of
// one commit is counted once, and the usage is exactly the sum of the sessions' bytes; a job that
// fails every time fails alone.
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, describe, expect, inject, it } from "vitest";
import { INGEST_JOB, type IngestJobData, REQUEUED_JOB } from "../../src/ingest/job.ts";
import { createIngestQueue, INGEST_JOB_OPTIONS } from "../../src/ingest/queue.ts";
import { createIngestWorker } from "../../src/ingest/worker.ts";
import { createLogger } from "../../src/lib/logger.ts";
import { createMetrics } from "../../src/lib/metrics.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { defaultSettings } from "../helpers/db.ts";
import { openTestLedger } from "../helpers/ledger.ts";
import { waitFor } from "../helpers/process.ts";

const ACCOUNT = "ACe7ea554f7fc0fad65e689bb5899bb6c3";
const hex = () => randomUUID().replaceAll("-", "");

/** one session of two readings: updated with `a` bytes, then ended with a + b */
function session(t0: number, a: number, b: number) {
  const spec = {
    accountSid: ACCOUNT,
    simSid: `HS${hex()}`,
    iccid: "89883070000005381783",
    sessionSid: `PI${hex()}`,
    sessionStartMs: t0 - 60_000,
  };
  return [
    buildCloudEvent({
      ...spec,
      eventSid: `EZ${hex()}`,
      kind: "data-session.updated",
      timestampMs: t0,
      windowStartMs: t0 - 60_000,
      windowEndMs: t0,
      windowDown: a,
      cumulativeDown: a,
    }),
    buildCloudEvent({
      ...spec,
      eventSid: `EZ${hex()}`,
      kind: "data-session.ended",
      timestampMs: t0 + 1000,
      sessionEndMs: t0 + 1000,
      windowStartMs: t0,
      windowEndMs: t0 + 1000,
      windowDown: b,
      cumulativeDown: a + b,
    }),
  ];
}

const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

describe("the ingest worker's group commit", () => {
  it("counts 42 queued jobs in fewer commits, each job completed, a duplicate across jobs once", async () => {
    const t = await openTestLedger();
    const prefix = `wc${hex().slice(0, 8)}`;
    const redis = new Redis(inject("redisUrl"), { maxRetriesPerRequest: null });
    cleanup.push(async () => {
      redis.disconnect();
    });
    const queue = createIngestQueue(redis, prefix, createLogger("silent"));
    cleanup.push(() => queue.close());

    const t0 = Date.now() - 2 * 3_600_000;
    let expected = 0;
    const jobs: { name: string; data: IngestJobData }[] = [];
    for (let i = 0; i < 40; i++) {
      const events = session(t0 + i * 1000, 100 + i, 1000 + i);
      expected += 1100 + 2 * i;
      jobs.push({
        name: INGEST_JOB,
        data: {
          v: 1,
          deliveries: [
            { id: `d${i}`, receivedAt: Date.now(), source: "twilio", body: JSON.stringify(events) },
          ],
        },
      });
    }
    // the first job's deliveries again, in a job of their own (a redelivery), and one requeued job
    jobs.push({ name: INGEST_JOB, data: jobs[0]?.data as IngestJobData });
    const requeued = session(t0, 7, 70);
    expected += 77;
    jobs.push({
      name: REQUEUED_JOB,
      data: {
        v: 1,
        deliveries: [
          { id: "r0", receivedAt: Date.now(), source: "replay", body: JSON.stringify(requeued) },
        ],
      },
    });
    await queue.addBulk(jobs.map((j) => ({ ...j, opts: INGEST_JOB_OPTIONS })));

    const metrics = createMetrics();
    const connection = new Redis(inject("redisUrl"), { maxRetriesPerRequest: null });
    const worker = createIngestWorker({
      connection,
      prefix,
      ledger: t.ledger,
      settings: defaultSettings,
      now: Date.now,
      logger: createLogger("silent"),
      metrics,
      lockDurationMs: 30_000,
      stalledIntervalMs: 30_000,
      commitJobs: 8,
    });
    cleanup.push(async () => {
      await worker.close();
      connection.disconnect();
    });

    const histogram = async () => {
      const m = (await metrics.commitJobs.get()).values;
      const sum = m.find((v) => v.metricName === "simmeter_ingest_commit_jobs_sum")?.value ?? 0;
      const count = m.find((v) => v.metricName === "simmeter_ingest_commit_jobs_count")?.value ?? 0;
      return { sum, count };
    };
    await waitFor(
      async () => (await histogram()).sum === jobs.length,
      "every job committed",
      60_000,
    );
    const { count } = await histogram();
    // 42 jobs, at most 8 per commit: at least 6 commits; grouped, so far fewer than 42
    expect(count).toBeGreaterThanOrEqual(6);
    expect(count).toBeLessThan(jobs.length / 2);
    await waitFor(
      async () => {
        const c = await queue.getJobCounts("active", "wait", "failed", "completed");
        return c.active === 0 && c.wait === 0 && c.failed === 0;
      },
      "the queue drained",
      30_000,
    );
    const [u] = await t.sql<{ n: number }>("select coalesce(sum(bytes), 0) as n from usage_hourly");
    expect(Number(u?.n)).toBe(expected);
    const [s] = await t.sql<{ n: number }>("select count(*) as n from seen_events");
    expect(Number(s?.n)).toBe(41 * 2);
    const counted = (await metrics.ingestedEvents.get()).values
      .filter((v) => v.labels.outcome === "counted")
      .reduce((n, v) => n + v.value, 0);
    const duplicates = (await metrics.ingestedEvents.get()).values
      .filter((v) => v.labels.outcome === "duplicate")
      .reduce((n, v) => n + v.value, 0);
    expect({ counted, duplicates }).toEqual({ counted: 82, duplicates: 2 });
  });

  it("a job that fails every time fails alone: the jobs committed with it are retried alone and counted", async () => {
    const t = await openTestLedger();
    const prefix = `wp${hex().slice(0, 8)}`;
    const redis = new Redis(inject("redisUrl"), { maxRetriesPerRequest: null });
    cleanup.push(async () => {
      redis.disconnect();
    });
    const queue = createIngestQueue(redis, prefix, createLogger("silent"));
    cleanup.push(() => queue.close());
    const t0 = Date.now() - 2 * 3_600_000;
    const ids = Array.from({ length: 10 }, (_, i) => (i === 3 ? "poison" : `d${i}`));
    await queue.addBulk(
      ids.map((id, i) => ({
        name: INGEST_JOB,
        data: {
          v: 1 as const,
          deliveries: [
            {
              id,
              receivedAt: Date.now(),
              source: "twilio" as const,
              body: JSON.stringify(session(t0 + i * 1000, 10, 90)),
            },
          ],
        },
        opts: { ...INGEST_JOB_OPTIONS, attempts: 3, backoff: { type: "fixed", delay: 50 } },
      })),
    );
    // The ledger, but a commit holding the "poison" delivery throws (as a bug would, every time).
    const ledger = new Proxy(t.ledger, {
      get(target, prop, receiver) {
        if (prop === "ingestJob")
          return (data: IngestJobData, ...rest: unknown[]) =>
            data.deliveries.some((d) => d.id === "poison")
              ? Promise.reject(new Error("a bug in ingest"))
              : (target.ingestJob as (...a: unknown[]) => Promise<unknown>)(data, ...rest);
        return Reflect.get(target, prop, receiver);
      },
    });
    const connection = new Redis(inject("redisUrl"), { maxRetriesPerRequest: null });
    const worker = createIngestWorker({
      connection,
      prefix,
      ledger,
      settings: defaultSettings,
      now: Date.now,
      logger: createLogger("silent"),
      metrics: createMetrics(),
      lockDurationMs: 30_000,
      stalledIntervalMs: 30_000,
      commitJobs: 8,
    });
    cleanup.push(async () => {
      await worker.close();
      connection.disconnect();
    });
    await waitFor(
      async () => {
        const c = await queue.getJobCounts("active", "wait", "delayed", "failed");
        return c.active === 0 && c.wait === 0 && c.delayed === 0 && c.failed === 1;
      },
      "every job done, one failed for good",
      60_000,
    );
    const failed = await queue.getFailed();
    expect(failed.map((j) => j.data.deliveries[0]?.id)).toEqual(["poison"]);
    expect(failed[0]?.attemptsMade).toBe(3);
    const [s] = await t.sql<{ n: number }>("select count(*) as n from seen_events");
    expect(Number(s?.n)).toBe(9 * 2);
    const [u] = await t.sql<{ n: number }>("select coalesce(sum(bytes), 0) as n from usage_hourly");
    expect(Number(u?.n)).toBe(9 * 100);
  });
});
