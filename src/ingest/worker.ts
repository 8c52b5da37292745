import { Worker } from "bullmq";
import type { Redis } from "ioredis";
import type { Ledger } from "../ledger/port.ts";
import { logBullmqErrors } from "../lib/bullmq-errors.ts";
import type { Logger } from "../lib/logger.ts";
import type { Metrics } from "../lib/metrics.ts";
import { createCommitGroup } from "./commit-group.ts";
import { INGEST_QUEUE, type IngestJobData, REQUEUED_JOB } from "./job.ts";
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
  /** most queue jobs per ledger transaction (WORKER_COMMIT_JOBS) */
  commitJobs: number;
};

/**
 * most delivery text per commit (UTF-16 code units: about 8,000 events, 0.6 s of SQLite on this
 * machine, during which the worker's event loop, and so its /healthz, waits); a larger job commits
 * alone
 */
const COMMIT_MAX_CHARS = 8 * 1024 * 1024;
/**
 * A commit waits for the jobs BullMQ is still fetching while they keep coming (one every few ms
 * under load): until none has joined for COMMIT_GAP_MS, at most COMMIT_MAX_WAIT_MS in all.
 */
const COMMIT_GAP_MS = 10;
const COMMIT_MAX_WAIT_MS = 250;

/**
 * Thin transport: the jobs BullMQ hands over share ledger transactions of up to `commitJobs`
 * jobs (src/ingest/commit-group.ts). BullMQ fetches twice that many, so the next commit fills while
 * one runs; each job is locked, completed or failed (and retried) on its own as before, and a
 * retried job commits alone.
 */
export function createIngestWorker(o: IngestWorkerOptions): Worker<IngestJobData> {
  const m = o.metrics;
  const group = createCommitGroup({
    maxJobs: o.commitJobs,
    maxChars: COMMIT_MAX_CHARS,
    gapMs: COMMIT_GAP_MS,
    maxWaitMs: COMMIT_MAX_WAIT_MS,
    commit: (data) => o.ledger.ingestJob(data, o.settings, o.now),
    onCommit: (jobs, s) => {
      m.commitJobs.observe(jobs);
      for (const [kind, n] of Object.entries(s.byKind))
        m.ingestedEvents.inc({ outcome: "counted", kind }, n);
      if (s.duplicates) m.ingestedEvents.inc({ outcome: "duplicate", kind: "any" }, s.duplicates);
      if (s.quarantined) {
        m.ingestedEvents.inc({ outcome: "quarantined", kind: "any" }, s.quarantined);
        m.quarantined.inc(s.quarantined);
      }
      for (const lag of s.lagsMs) m.ingestLag.observe(lag / 1000);
    },
  });
  const worker = new Worker<IngestJobData>(
    INGEST_QUEUE,
    async (job) => {
      // Alone: a requeued job (its result is read per job), and a job that has failed before, so
      // that a job which fails every time (a bug) cannot take the jobs committed with it down too.
      const alone = job.name === REQUEUED_JOB || job.attemptsMade > 0;
      const r = await group.add(String(job.id), job.data, alone);
      if (r.quarantined)
        o.logger.warn(
          { jobId: job.id, quarantined: r.quarantined },
          "events quarantined (simmeter quarantine)",
        );
      return r;
    },
    {
      connection: o.connection,
      prefix: o.prefix,
      concurrency: 2 * o.commitJobs,
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
