// The console's state-changing operations: each is the CLI command's own shared functions, called
// the same way (src/ingest/requeue.ts for `quarantine requeue`, retryFailed for `report
// --retry-failed`, assignCustomer for `customers assign`), plus what the page reports after.
import { randomBytes } from "node:crypto";
import { QueueEvents } from "bullmq";
import {
  type Assigned,
  type AssignInput,
  type AssignmentsLedger,
  assignCustomer,
  type Move,
} from "../customers/customers.ts";
import {
  enqueueRequeue,
  ingestWorkerRunning,
  type JobEnd,
  JobWaiter,
  planRequeue,
  type QuarantineFilter,
  type RequeueItem,
  type RequeueOutcome,
  requeueOutcomes,
} from "../ingest/requeue.ts";
import type { Ledger } from "../ledger/port.ts";
import { logBullmqErrors } from "../lib/bullmq-errors.ts";
import type { ReportSummary } from "../reporting/reporter.ts";
import { REPORT_QUEUE } from "../reporting/schedule.ts";
import { type ConsoleDeps, type ConsoleQueues, within } from "./deps.ts";
import type { Flash } from "./layout.tsx";

// ---------------------------------------------------------------------------------------------
// Flash messages: what an action did, shown once on the page it redirects to (POST → 303 → GET).

const FLASH_TTL_MS = 10 * 60_000;
const flashes = new Map<string, { flash: Flash; expires: number }>();

export function putFlash(flash: Flash): string {
  const now = Date.now();
  for (const [k, v] of flashes) if (v.expires < now) flashes.delete(k);
  if (flashes.size > 1000) flashes.delete(flashes.keys().next().value as string);
  const id = randomBytes(12).toString("base64url");
  flashes.set(id, { flash, expires: now + FLASH_TTL_MS });
  return id;
}

export function takeFlash(id: unknown): Flash | null {
  if (typeof id !== "string") return null;
  const e = flashes.get(id);
  if (!e) return null;
  flashes.delete(id);
  return e.expires >= Date.now() ? e.flash : null;
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

// ---------------------------------------------------------------------------------------------
// Requeue quarantined events (simmeter quarantine requeue)

export type RequeueResult = {
  requeued: number;
  ids: number[];
  worker_running: boolean;
  timed_out: boolean;
  counted: number;
  duplicates: number;
  quarantined_again: number;
  ignored: number;
  queued: number;
  failed: number;
  events: RequeueOutcome[];
};

/** What a requeue would put back on the queue (the CLI's --dry-run). */
export function previewRequeue(ledger: Ledger, filter: QuarantineFilter): Promise<RequeueItem[]> {
  return planRequeue(ledger, filter);
}

/**
 * Puts the selected quarantined events back on the ingest queue, waits up to timeoutMs for a
 * running worker to process them, and says what became of each: the CLI's requeue, waiting.
 */
export async function requeue(
  ledger: Ledger,
  queues: ConsoleQueues,
  filter: QuarantineFilter,
  timeoutMs: number,
  now: () => number,
): Promise<RequeueResult> {
  const items = await planRequeue(ledger, filter);
  const running = items.length > 0 && (await ingestWorkerRunning(queues.ingest));
  let waiter: JobWaiter | null = null;
  const events = running ? queues.connect() : null;
  try {
    if (events) waiter = await JobWaiter.open(events, queues.prefix);
    const jobs =
      items.length > 0 ? await enqueueRequeue({ ledger, queue: queues.ingest, items, now }) : [];
    let ends = new Map<string, JobEnd>();
    if (waiter && jobs.length > 0)
      ends = await waiter.wait(
        jobs.map((j) => j.jobId),
        timeoutMs,
      );
    const outcomes = (
      await Promise.all(jobs.map((j) => requeueOutcomes(ledger, j, ends.get(j.jobId))))
    ).flat();
    const n = (k: RequeueOutcome["outcome"]) => outcomes.filter((x) => x.outcome === k).length;
    return {
      requeued: items.length,
      ids: items.map((it) => it.id),
      worker_running: running,
      timed_out: running && ends.size < jobs.length,
      counted: n("counted"),
      duplicates: n("duplicate"),
      quarantined_again: n("quarantined"),
      ignored: n("ignored"),
      queued: n("queued"),
      failed: n("failed"),
      events: outcomes,
    };
  } finally {
    await waiter?.close().catch(() => {});
    events?.disconnect();
  }
}

export function requeueFlash(r: RequeueResult): Flash {
  if (r.requeued === 0)
    return { kind: "error", message: "No quarantined event matched: nothing requeued." };
  const parts = [
    `${r.counted} counted`,
    `${r.duplicates} already counted (duplicate)`,
    `${r.quarantined_again} quarantined again`,
    ...(r.ignored ? [`${r.ignored} ignored (test events)`] : []),
    ...(r.queued ? [`${r.queued} still queued`] : []),
    ...(r.failed ? [`${r.failed} in failed jobs (see Queues)`] : []),
  ];
  const details = r.events.slice(0, 50).map((x) => {
    const who = `#${x.id} ${x.eventSid ?? "(no event_sid)"}`;
    switch (x.outcome) {
      case "quarantined":
        return `${who}: quarantined again as #${x.quarantineId}: ${x.reason ?? ""}`;
      case "failed":
        return `${who}: its job ${x.jobId} failed: ${x.reason ?? ""}`;
      case "duplicate":
        return `${who}: duplicate (already counted)`;
      default:
        return `${who}: ${x.outcome}`;
    }
  });
  if (!r.worker_running)
    details.unshift(
      "No ingest worker is running: the events wait in the queue until simmeter work (or start) runs.",
    );
  if (r.timed_out) details.unshift("Timed out waiting for the worker: refresh to see the rest.");
  return {
    kind: r.failed || r.queued ? "error" : "ok",
    message: `Requeued ${plural(r.requeued, "event")}: ${parts.join(", ")}.`,
    details,
  };
}

// ---------------------------------------------------------------------------------------------
// Retry stopped outbox rows (simmeter report --retry-failed)

export type RetryResult = {
  retried: number;
  /** the report run started at once, and what it did; null without a reporter in this process */
  run: { jobId: string | null; summary: ReportSummary | null; error: string | null } | null;
};

/**
 * Puts stopped rows back in line (retryFailed, as `report --retry-failed`), then asks the
 * reporter for a run now (a job on its queue, which the scheduled worker runs) and waits for it.
 */
export async function retryStopped(deps: ConsoleDeps, waitMs: number): Promise<RetryResult> {
  const retried = await deps.api.ledger.outbox.retryFailed();
  const q = deps.queues;
  if (!q?.report) return { retried, run: null };
  const connection = q.connect();
  const events = new QueueEvents(REPORT_QUEUE, { connection, prefix: q.prefix });
  logBullmqErrors(events, deps.logger, "report queue events (console)");
  try {
    // Redis down: the rows are back in line (the scheduled run sends them); say so, never hang.
    let job: Awaited<ReturnType<NonNullable<typeof q.report>["add"]>>;
    try {
      await within(events.waitUntilReady(), 2000, "Redis");
      job = await within(
        q.report.add(
          "report",
          { requestedBy: "console" },
          { removeOnComplete: { count: 100 }, removeOnFail: { count: 1000 } },
        ),
        2000,
        "Redis",
      );
    } catch (err) {
      return { retried, run: { jobId: null, summary: null, error: (err as Error).message } };
    }
    try {
      const summary = (await job.waitUntilFinished(events, waitMs)) as ReportSummary;
      return { retried, run: { jobId: job.id as string, summary, error: null } };
    } catch (err) {
      return {
        retried,
        run: { jobId: job.id as string, summary: null, error: (err as Error).message },
      };
    }
  } finally {
    await events.close().catch(() => {});
    connection.disconnect();
  }
}

export function retryFlash(r: RetryResult): Flash {
  const message = `${plural(r.retried, "stopped row")} put back in line.`;
  if (!r.run)
    return {
      kind: "ok",
      message,
      details: [
        "This process does not report (no STRIPE_SECRET_KEY): the reporter sends them on its next run.",
      ],
    };
  const s = r.run.summary;
  if (!s)
    return {
      kind: "error",
      message,
      details: [
        `Report run ${r.run.jobId} did not finish in time (${r.run.error}); it goes on in the background.`,
      ],
    };
  return {
    kind: s.failed || s.fatal ? "error" : "ok",
    message: `${message} Report run ${r.run.jobId}: ${s.sent} sent, ${s.duplicates} already in Stripe, ${s.failed} stopped, ${s.stillPending} still pending.`,
    details: [
      ...(s.fatal ? [`The run stopped: ${s.fatal}`] : []),
      ...(s.held
        ? [
            `${plural(s.held, "customer-hour")} held: no invoice would carry them (see Billing sync).`,
          ]
        : []),
      ...s.problems,
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// Assign (simmeter customers assign)

export type AssignPreview = { input: AssignInput; moves: Move[]; unmappedBytes: number };

/**
 * What assigning would do, written nowhere: the usage it would move to another customer, and the
 * unmapped bytes it would bill (never negative: what the confirm page offers to bill).
 */
export async function previewAssign(
  ledger: AssignmentsLedger,
  input: AssignInput,
  now: number,
): Promise<AssignPreview> {
  const p = await ledger.assignments.preview([input], now);
  return { input, moves: p.moves, unmappedBytes: Math.max(0, p.unmappedBilled) };
}

/** assignCustomer with the CLI's validation and re-bill rule (RebillRequired unless rebill). */
export function assign(
  ledger: AssignmentsLedger,
  input: AssignInput,
  now: number,
  rebill: boolean,
): Promise<Assigned> {
  return assignCustomer({ ledger, input, now, rebill });
}
