import { type Job, type Queue, QueueEvents } from "bullmq";
import type { Redis } from "ioredis";
import type { Ledger } from "../ledger/port.ts";
import type { QuarantineRow } from "../ledger/reads-port.ts";
import { logBullmqErrors } from "../lib/bullmq-errors.ts";
import { createLogger } from "../lib/logger.ts";
import type { JobResult } from "./commit-group.ts";
import {
  type Delivery,
  type DeliverySource,
  INGEST_QUEUE,
  type IngestJobData,
  REQUEUED_JOB,
} from "./job.ts";
import { INGEST_JOB_OPTIONS } from "./queue.ts";

// Putting work back on the ingest queue once its cause is fixed: quarantined events (simmeter
// quarantine requeue) and ingest jobs that failed for good (simmeter jobs retry). Both are
// idempotent. A requeued event travels in a delivery whose id is derived from the quarantine row
// (requeue:<id>), so the unique index on (delivery_id, position) keeps a second requeue from adding
// a second quarantine row, and the worker's durable event_sid dedupe keeps it from counting twice.

const REQUEUE_PREFIX = "requeue:";
const REQUEUE_ID = /^requeue:(\d+)$/;
const SOURCES: readonly DeliverySource[] = ["twilio", "kore", "unsigned", "replay"];
const EVENTS_PER_JOB = 500;
const CHARS_PER_JOB = 8_000_000;

// ---------------------------------------------------------------------------------------------
// Selecting and listing quarantine rows

export type QuarantineFilter = {
  ids?: number[];
  /** case-insensitive substring of the reason */
  reason?: string;
  /** received at or after (epoch ms) */
  since?: number;
};

/**
 * The delivery id a requeue of this row travels in: the row's own requeue:<id>, or, for a row that
 * an earlier requeue produced, that requeue's id again (so requeueing the result of a requeue cannot
 * add a row per round).
 */
export function requeueDeliveryId(row: { id: number; deliveryId: string }): string {
  return REQUEUE_ID.test(row.deliveryId) ? row.deliveryId : `${REQUEUE_PREFIX}${row.id}`;
}

/** The quarantine row a requeue-produced row came from, or null. */
export function requeueOf(deliveryId: string): number | null {
  const m = REQUEUE_ID.exec(deliveryId);
  return m ? Number(m[1]) : null;
}

export type QuarantineListing = QuarantineRow & {
  /** its event_sid is in seen_events (counted since, by any delivery); null without an event_sid */
  counted: boolean | null;
  /** the row whose requeue produced this one */
  requeueOf: number | null;
  /** rows a requeue of this event produced (it was quarantined again) */
  quarantinedAgainAs: number[];
};

/** Quarantine rows, newest first, with whether each event has since been counted or requeued. */
export async function listQuarantineRows(
  ledger: Ledger,
  o: QuarantineFilter & { limit: number; beforeId?: number },
): Promise<QuarantineListing[]> {
  const rows = await ledger.reads.quarantine(o);
  // requeue delivery id → the quarantine rows it produced, oldest first
  const again = await ledger.reads.quarantineByDelivery(rows.map((r) => requeueDeliveryId(r)));
  return rows.map((row) => ({
    ...row,
    requeueOf: requeueOf(row.deliveryId),
    quarantinedAgainAs: (again.get(requeueDeliveryId(row)) ?? [])
      .map((r) => r.id)
      .filter((id) => id !== row.id),
  }));
}

// ---------------------------------------------------------------------------------------------
// Requeueing quarantined events

/** One event to put back on the queue (several selected rows can be the same event). */
export type RequeueItem = {
  /** the lowest selected row id of this event: what the operator sees as its id */
  id: number;
  /** every selected row holding this event (its own row and rows its earlier requeues produced) */
  rowIds: number[];
  deliveryId: string;
  /** -1: a body that was not JSON, requeued as a body; otherwise one event, requeued as a line */
  position: number;
  eventSid: string | null;
  source: DeliverySource;
  reason: string;
  /** its event_sid is already in seen_events */
  counted: boolean;
};

export class RequeueSelectionError extends Error {
  override name = "RequeueSelectionError";
}

/**
 * The events the filter selects, one item per event. Refuses an empty filter (requeueing the
 * whole quarantine by accident) and ids that do not exist.
 */
export async function planRequeue(ledger: Ledger, f: QuarantineFilter): Promise<RequeueItem[]> {
  if ((!f.ids || f.ids.length === 0) && f.reason === undefined && f.since === undefined) {
    throw new RequeueSelectionError(
      "choose the quarantined events to requeue with at least one of --id N…, --reason TEXT, --since TIME (see simmeter quarantine)",
    );
  }
  if (f.reason !== undefined && f.reason.trim() === "")
    throw new RequeueSelectionError("--reason must not be empty");
  const rows = await ledger.reads.requeueCandidates(f);
  if (f.ids && f.ids.length > 0) {
    const found = new Set(rows.map((r) => r.id));
    const missing = [...new Set(f.ids)].filter((id) => !found.has(id));
    if (missing.length > 0) {
      const all = await ledger.reads.quarantineIds(missing);
      const absent = missing.filter((id) => !all.includes(id));
      if (absent.length > 0)
        throw new RequeueSelectionError(
          `no quarantine row with id ${absent.join(", ")} (see simmeter quarantine)`,
        );
    }
  }
  const byDelivery = new Map<string, RequeueItem>();
  for (const r of rows) {
    const deliveryId = requeueDeliveryId(r);
    const item = byDelivery.get(deliveryId);
    if (item) {
      item.rowIds.push(r.id);
      continue;
    }
    byDelivery.set(deliveryId, {
      id: r.id,
      rowIds: [r.id],
      deliveryId,
      position: r.position === -1 ? -1 : 0,
      eventSid: r.eventSid,
      source: SOURCES.includes(r.source as DeliverySource)
        ? (r.source as DeliverySource)
        : "replay",
      reason: r.reason,
      counted: r.counted,
    });
  }
  return [...byDelivery.values()];
}

export type RequeuedJob = {
  jobId: string;
  items: RequeueItem[];
  /** event_sids of these items already in seen_events when the job was added */
  seenBefore: Set<string>;
};

/**
 * Adds the items to the ingest queue as new deliveries (one per event, the receiver's job shape),
 * then records requeued_at/requeues on their rows. Events with an event_sid share jobs (their
 * outcome is read from the database); an event without one gets a job of its own, so the job's
 * result says what became of it.
 */
export async function enqueueRequeue(o: {
  ledger: Ledger;
  queue: Queue<IngestJobData>;
  items: RequeueItem[];
  now: () => number;
  /** called with each job id as soon as it is added */
  onJob?: (jobId: string) => void;
}): Promise<RequeuedJob[]> {
  const { ledger, queue } = o;
  const jobs: RequeuedJob[] = [];
  const flush = async (batch: { item: RequeueItem; raw: string }[]) => {
    if (batch.length === 0) return;
    const now = o.now();
    const items = batch.map((b) => b.item);
    const deliveries: Delivery[] = batch.map(({ item, raw }) =>
      item.position === -1
        ? { id: item.deliveryId, receivedAt: now, source: item.source, body: raw }
        : { id: item.deliveryId, receivedAt: now, source: item.source, lines: [raw] },
    );
    const seenBefore = await ledger.reads.countedSids(
      items.flatMap((it) => (it.eventSid === null ? [] : [it.eventSid])),
    );
    const job = await queue.add(REQUEUED_JOB, { v: 1, deliveries }, INGEST_JOB_OPTIONS);
    const jobId = job.id as string;
    o.onJob?.(jobId);
    await ledger.reads.markRequeued(
      items.flatMap((it) => it.rowIds),
      now,
    );
    jobs.push({ jobId, items, seenBefore });
  };
  let batch: { item: RequeueItem; raw: string }[] = [];
  let chars = 0;
  // the raw events are read a job's worth of items at a time
  let raws = new Map<number, string>();
  for (const [i, item] of o.items.entries()) {
    if (i % EVENTS_PER_JOB === 0)
      raws = await ledger.reads.quarantineRaw(
        o.items.slice(i, i + EVENTS_PER_JOB).map((it) => it.id),
      );
    const raw = raws.get(item.id);
    if (raw === undefined)
      throw new Error(
        `quarantine row ${item.id} is gone (removed since it was selected): nothing more requeued`,
      );
    if (item.eventSid === null) {
      await flush([{ item, raw }]);
      continue;
    }
    batch.push({ item, raw });
    chars += raw.length;
    if (batch.length >= EVENTS_PER_JOB || chars >= CHARS_PER_JOB) {
      await flush(batch);
      batch = [];
      chars = 0;
    }
  }
  await flush(batch);
  return jobs;
}

export type RequeueOutcomeKind =
  /** counted now */
  | "counted"
  /** its event_sid was already counted */
  | "duplicate"
  /** the worker quarantined it again (see reason) */
  | "quarantined"
  /** processed, neither counted nor quarantined (an Event Streams test event) */
  | "ignored"
  /** not processed yet: no worker, --no-wait, or the wait timed out */
  | "queued"
  /** its job failed for good (simmeter jobs failed / jobs retry) */
  | "failed";

export type RequeueOutcome = {
  id: number;
  rowIds: number[];
  deliveryId: string;
  eventSid: string | null;
  jobId: string;
  outcome: RequeueOutcomeKind;
  /** the row holding it when quarantined again */
  quarantineId: number | null;
  /** why it is quarantined again, or why its job failed */
  reason: string | null;
};

/** What became of a requeued job's events, from its end (undefined: not finished) and the database. */
export async function requeueOutcomes(
  ledger: Ledger,
  job: RequeuedJob,
  end: JobEnd | undefined,
): Promise<RequeueOutcome[]> {
  const base = (it: RequeueItem) => ({
    id: it.id,
    rowIds: it.rowIds,
    deliveryId: it.deliveryId,
    eventSid: it.eventSid,
    jobId: job.jobId,
    quarantineId: null,
    reason: null,
  });
  if (!end) return job.items.map((it) => ({ ...base(it), outcome: "queued" }));
  if (end.state === "failed")
    return job.items.map((it) => ({ ...base(it), outcome: "failed", reason: end.reason }));
  const seen = await ledger.reads.countedSids(
    job.items.flatMap((it) => (it.eventSid === null ? [] : [it.eventSid])),
  );
  const again = await ledger.reads.quarantineByDelivery(job.items.map((it) => it.deliveryId));
  const single = job.items.length === 1;
  return job.items.map((it): RequeueOutcome => {
    if (it.eventSid !== null && job.seenBefore.has(it.eventSid))
      return { ...base(it), outcome: "duplicate" };
    if (it.eventSid !== null && seen.has(it.eventSid)) return { ...base(it), outcome: "counted" };
    if (single && end.result.counted > 0) return { ...base(it), outcome: "counted" };
    if (single && end.result.duplicates > 0) return { ...base(it), outcome: "duplicate" };
    const rows = again.get(it.deliveryId);
    const last = rows?.[rows.length - 1];
    if (last)
      return { ...base(it), outcome: "quarantined", quarantineId: last.id, reason: last.reason };
    return { ...base(it), outcome: "ignored" };
  });
}

// ---------------------------------------------------------------------------------------------
// Ingest jobs that failed for good

export type FailedJob = {
  id: string;
  failedReason: string;
  attemptsMade: number;
  finishedOn: number | null;
  deliveries: number;
  events: number;
};

function eventsIn(d: Delivery): number {
  if (d.lines) return d.lines.length;
  if (d.events) return d.events.length;
  if (d.body === undefined) return 0;
  try {
    const v = JSON.parse(d.body) as unknown;
    return Array.isArray(v) ? v.length : 1;
  } catch {
    return 1;
  }
}

export function failedJobOf(job: Job<IngestJobData>): FailedJob {
  const deliveries = Array.isArray(job.data?.deliveries) ? job.data.deliveries : [];
  return {
    id: job.id as string,
    failedReason: job.failedReason ?? "",
    attemptsMade: job.attemptsMade,
    finishedOn: job.finishedOn ?? null,
    deliveries: deliveries.length,
    events: deliveries.reduce((n, d) => n + eventsIn(d), 0),
  };
}

/** The ingest queue's failed set (jobs that used up their attempts), newest first. */
export async function listFailedJobs(
  queue: Queue<IngestJobData>,
  limit: number,
): Promise<{ total: number; jobs: FailedJob[] }> {
  const total = await queue.getFailedCount();
  const jobs = (await queue.getFailed(0, limit - 1)) as Job<IngestJobData>[];
  return { total, jobs: jobs.filter(Boolean).map(failedJobOf) };
}

export class JobSelectionError extends Error {
  override name = "JobSelectionError";
}

/** The failed jobs to retry: the given ids (each must be in the failed set) or all of them. */
export async function selectFailedJobs(
  queue: Queue<IngestJobData>,
  sel: { ids?: string[]; all?: boolean },
): Promise<FailedJob[]> {
  const hasIds = Boolean(sel.ids && sel.ids.length > 0);
  if (hasIds === Boolean(sel.all))
    throw new JobSelectionError(
      "give either --id ID… or --all to choose the failed ingest jobs to retry (see simmeter jobs failed)",
    );
  const ids = hasIds ? [...new Set(sel.ids)] : await queue.getRanges(["failed"], 0, -1, true);
  const out: FailedJob[] = [];
  const bad: string[] = [];
  for (const id of ids) {
    const job = (await queue.getJob(id)) as Job<IngestJobData> | undefined;
    const state = job ? await job.getState() : "missing";
    if (!job || state !== "failed") {
      if (hasIds)
        bad.push(
          state === "missing"
            ? `${id} (no such job: a retried job that completed is removed)`
            : `${id} (it is ${state})`,
        );
      continue;
    }
    out.push(failedJobOf(job));
  }
  if (bad.length > 0)
    throw new JobSelectionError(
      `not a failed ingest job: ${bad.join(", ")}; nothing retried (see simmeter jobs failed)`,
    );
  return out;
}

/**
 * Moves failed jobs back to the wait list with fresh attempts. Safe to repeat: their events are
 * deduplicated by event_sid, so an event a retry (or another delivery) already counted is a
 * duplicate. A job another operator retried meanwhile is skipped.
 */
export async function retryFailedJobs(
  queue: Queue<IngestJobData>,
  ids: string[],
  onRetried?: (jobId: string) => void,
): Promise<{ retried: string[]; skipped: { id: string; reason: string }[] }> {
  const retried: string[] = [];
  const skipped: { id: string; reason: string }[] = [];
  for (const id of ids) {
    const job = await queue.getJob(id);
    if (!job) {
      skipped.push({ id, reason: "no such job any more" });
      continue;
    }
    try {
      await job.retry("failed", { resetAttemptsMade: true, resetAttemptsStarted: true });
      retried.push(id);
      onRetried?.(id);
    } catch (err) {
      skipped.push({ id, reason: (err as Error).message });
    }
  }
  return { retried, skipped };
}

// ---------------------------------------------------------------------------------------------
// Waiting for jobs

export type JobEnd =
  | { state: "completed"; result: JobResult }
  | { state: "failed"; reason: string };

/**
 * Collects completed/failed events of the ingest queue from the moment it opens. It reads the
 * event stream from its current end (not from "$" once connected), so a job that finishes before
 * anyone waits for it is still seen, although completed jobs are removed at once.
 */
export class JobWaiter {
  private readonly ended = new Map<string, JobEnd>();
  private expected: Set<string> | null = null;
  private wake: (() => void) | null = null;

  private constructor(private readonly events: QueueEvents) {
    events.on("completed", ({ jobId, returnvalue }) => {
      const v = (typeof returnvalue === "string" ? JSON.parse(returnvalue) : returnvalue) as
        | Partial<JobResult>
        | null
        | undefined;
      this.record(jobId, {
        state: "completed",
        result: {
          counted: v?.counted ?? 0,
          duplicates: v?.duplicates ?? 0,
          quarantined: v?.quarantined ?? 0,
        },
      });
    });
    events.on("failed", ({ jobId, failedReason }) => {
      this.record(jobId, { state: "failed", reason: failedReason });
    });
  }

  static async open(connection: Redis, prefix: string): Promise<JobWaiter> {
    const key = `${prefix}:${INGEST_QUEUE}:events`;
    const last = (await connection.xrevrange(key, "+", "-", "COUNT", 1)) as [string, string[]][];
    const events = new QueueEvents(INGEST_QUEUE, {
      connection,
      prefix,
      lastEventId: last[0]?.[0] ?? "0-0",
    });
    logBullmqErrors(events, createLogger("warn"), "ingest queue events");
    await events.waitUntilReady();
    return new JobWaiter(events);
  }

  private record(jobId: string, end: JobEnd) {
    if (this.expected && !this.expected.has(jobId)) return;
    this.ended.set(jobId, end);
    this.wake?.();
  }

  /**
   * Waits until every job has ended or the timeout passes; returns the ends seen (a job missing
   * from the map has not finished). onEnd is called once per job as it ends.
   */
  async wait(
    jobIds: string[],
    timeoutMs: number,
    onEnd?: (jobId: string, end: JobEnd) => void,
  ): Promise<Map<string, JobEnd>> {
    this.expected = new Set(jobIds);
    for (const id of [...this.ended.keys()]) if (!this.expected.has(id)) this.ended.delete(id);
    const reported = new Set<string>();
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (const [id, end] of this.ended) {
        if (reported.has(id)) continue;
        reported.add(id);
        onEnd?.(id, end);
      }
      if (reported.size >= this.expected.size) break;
      const left = deadline - Date.now();
      if (left <= 0) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 1000));
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
    return new Map(this.ended);
  }

  async close(): Promise<void> {
    await this.events.close();
  }
}

/** Whether any ingest worker is connected to this queue. */
export async function ingestWorkerRunning(queue: Queue<IngestJobData>): Promise<boolean> {
  return (await queue.getWorkers()).length > 0;
}

/** The last attempt's error of jobs that have not finished (they are retrying), for a timeout. */
export async function lastAttemptErrors(
  queue: Queue<IngestJobData>,
  jobIds: string[],
): Promise<{ id: string; attemptsMade: number; reason: string }[]> {
  const out: { id: string; attemptsMade: number; reason: string }[] = [];
  for (const id of jobIds.slice(0, 20)) {
    const job = await queue.getJob(id);
    if (job?.failedReason)
      out.push({ id, attemptsMade: job.attemptsMade, reason: job.failedReason });
  }
  return out;
}
