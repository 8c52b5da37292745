import { Worker } from "bullmq";
import type { Redis } from "ioredis";
import type { Ledger } from "../ledger/port.ts";
import { logBullmqErrors } from "../lib/bullmq-errors.ts";
import type { Logger } from "../lib/logger.ts";
import type { Metrics } from "../lib/metrics.ts";
import { INGEST_QUEUE, type IngestJobData } from "./job.ts";
import type { IngestSettings } from "./unit-of-work.ts";

export type IngestWorkerOptions = {
  connection: Redis;
  prefix: string;
  ledger: Ledger;
  settings: IngestSettings;
  now: () => number;
  logger: Logger;
  metrics: Metrics;
  lockDurationMs: number;
  stalledIntervalMs: number;
};

/**
 * Thin transport: one job → one ingest transaction, concurrency 1. (Concurrency 2, so that BullMQ
 * fetches the next job while one runs, was measured in 2026-12 and made no measurable difference
 * end to end: BENCHMARKS.md.)
 */
export function createIngestWorker(o: IngestWorkerOptions): Worker<IngestJobData> {
  const worker = new Worker<IngestJobData>(
    INGEST_QUEUE,
    async (job) => {
      const s = await o.ledger.ingestJob(job.data, o.settings, o.now);
      const m = o.metrics;
      for (const [kind, n] of Object.entries(s.byKind))
        m.ingestedEvents.inc({ outcome: "counted", kind }, n);
      if (s.duplicates) m.ingestedEvents.inc({ outcome: "duplicate", kind: "any" }, s.duplicates);
      if (s.quarantined) {
        m.ingestedEvents.inc({ outcome: "quarantined", kind: "any" }, s.quarantined);
        m.quarantined.inc(s.quarantined);
        o.logger.warn(
          { jobId: job.id, quarantined: s.quarantined },
          "events quarantined (simmeter quarantine)",
        );
      }
      for (const lag of s.lagsMs) m.ingestLag.observe(lag / 1000);
      return { counted: s.counted, duplicates: s.duplicates, quarantined: s.quarantined };
    },
    {
      connection: o.connection,
      prefix: o.prefix,
      concurrency: 1,
      lockDuration: o.lockDurationMs,
      stalledInterval: o.stalledIntervalMs,
      // A job whose worker was killed comes back; a few kills in a row must not park it as failed.
      maxStalledCount: 10,
      autorun: true,
    },
  );
  worker.on("failed", (job, err) => {
    o.logger.error(
      { jobId: job?.id, attempts: job?.attemptsMade, err: err.message },
      "ingest job failed; will retry",
    );
  });
  logBullmqErrors(worker, o.logger, "ingest worker");
  return worker;
}
