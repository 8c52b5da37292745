import { type Command, InvalidArgumentError, Option } from "commander";
import type { Redis } from "ioredis";
import { createIngestQueue } from "../ingest/queue.ts";
import {
  enqueueRequeue,
  type FailedJob,
  ingestWorkerRunning,
  type JobEnd,
  JobWaiter,
  lastAttemptErrors,
  listFailedJobs,
  planRequeue,
  type RequeueItem,
  type RequeueOutcome,
  requeueOutcomes,
  retryFailedJobs,
  selectFailedJobs,
} from "../ingest/requeue.ts";
import type { Ledger } from "../ledger/port.ts";
import type { Logger } from "../lib/logger.ts";
import { createRedis, waitReady } from "../lib/redis.ts";
import { type Granularity, listEventCounts } from "../usage/query.ts";
import { type List, MAX_PAGE } from "../views/json.ts";
import { anomalyList, quarantineList } from "../views/quarantine.ts";
import { unmappedList, usageList } from "../views/usage.ts";
import {
  cliConfig,
  cliLedger,
  positiveInt,
  positiveInts,
  printJsonOrTable,
  printList,
  table,
  timeOption,
} from "./context.ts";

export function registerReadCommands(program: Command): void {
  program
    .command("usage")
    .description("per SIM usage per hour, day, UTC month or in total")
    .option("--sim <sid...>", "only these SIM SIDs (HS…)", simSids)
    .option(
      "--from <time>",
      "from this UTC date/time (inclusive), e.g. 2026-11-01",
      timeOption("--from"),
    )
    .option("--to <time>", "to this UTC date/time (exclusive)", timeOption("--to"))
    .addOption(
      new Option("--by <granularity>", "per hour, day, UTC month or in total")
        .choices(["hour", "day", "month", "total"])
        .default("day"),
    )
    .option("--unmapped", "only SIMs with usage that no customer assignment covers")
    .option("--json", "print JSON")
    .action(
      async (o: {
        sim?: string[];
        from?: number;
        to?: number;
        by: Granularity;
        json?: boolean;
        unmapped?: boolean;
      }) => {
        const { ledger } = (await cliLedger({ db: "read" }, "warn")).opened;
        try {
          if (o.unmapped) {
            printList(
              Boolean(o.json),
              await collectListAsync((page) => unmappedList(ledger, page)),
              "every SIM with usage is mapped to a customer",
            );
            return;
          }
          const list = await collectListAsync((page) =>
            usageList(ledger, {
              granularity: o.by,
              ...(o.sim ? { sim: o.sim.join(",") } : {}),
              ...(o.from !== undefined ? { from: o.from } : {}),
              ...(o.to !== undefined ? { to: o.to } : {}),
              ...page,
            }),
          );
          printList(Boolean(o.json), list, "no usage recorded for this selection");
        } finally {
          await ledger.admin.close();
        }
      },
    );

  registerQuarantineCommands(program);
  registerJobsCommands(program);

  program
    .command("anomalies")
    .description(
      "accounting anomalies: cumulative going down, readings after end, impossible rates",
    )
    .option("--limit <n>", "rows to show, newest first", positiveInt, 100)
    .option("--kind <kind>", "only anomalies of this kind (e.g. cumulative_decreased)")
    .option(
      "--since <time>",
      "only anomalies detected at or after this UTC time",
      timeOption("--since"),
    )
    .option("--json", "print JSON")
    .action(async (o: { limit: number; kind?: string; since?: number; json?: boolean }) => {
      const { ledger } = (await cliLedger({ db: "read" }, "warn")).opened;
      try {
        printList(
          Boolean(o.json),
          await collectListAsync(
            (page) =>
              anomalyList(ledger, {
                ...(o.kind !== undefined ? { kind: o.kind } : {}),
                ...(o.since !== undefined ? { since: o.since } : {}),
                ...page,
              }),
            o.limit,
          ),
          "no anomalies",
        );
      } finally {
        await ledger.admin.close();
      }
    });

  program
    .command("events")
    .description(
      "non-billing events per SIM per day and type over the last 7 days (rejection storms)",
    )
    .option("--json", "print JSON")
    .action(async (o: { json?: boolean }) => {
      const { ledger } = (await cliLedger({ db: "read" }, "warn")).opened;
      try {
        const rows = (await listEventCounts(ledger)).map((r) => ({
          ...r,
          day: new Date(r.day).toISOString().slice(0, 10),
        }));
        printJsonOrTable(Boolean(o.json), rows, "no non-billing events in the last 7 days");
      } finally {
        await ledger.admin.close();
      }
    });
}

/**
 * collectList (src/cli/context.ts) over a view that answers asynchronously (through the ledger
 * port): every row, or the first `max` with has_more saying whether more exist.
 */
async function collectListAsync<T>(
  fetchPage: (page: { limit: number; starting_after?: string }) => Promise<List<T>>,
  max = Number.POSITIVE_INFINITY,
): Promise<List<T>> {
  const data: T[] = [];
  let cursor: string | undefined;
  for (;;) {
    const limit = Math.min(MAX_PAGE, max - data.length);
    const page = await fetchPage({
      limit,
      ...(cursor !== undefined ? { starting_after: cursor } : {}),
    });
    data.push(...page.data);
    if (!page.has_more || page.next_starting_after === null) {
      return { object: "list", data, has_more: false, next_starting_after: null };
    }
    cursor = page.next_starting_after;
    if (data.length >= max) {
      return { object: "list", data, has_more: true, next_starting_after: cursor };
    }
  }
}

/** Repeatable Super SIM SIDs: a mistyped one would only find "no usage". */
function simSids(value: string, previous: string[] | undefined): string[] {
  if (!/^HS[0-9a-fA-F]{32}$/.test(value))
    throw new InvalidArgumentError("is not a Super SIM SID (HS + 32 hex digits)");
  return [...(previous ?? []), value];
}

// ---------------------------------------------------------------------------------------------
// simmeter quarantine [list] | quarantine requeue | jobs failed | jobs retry

const iso = (ms: number | null | undefined) =>
  ms === null || ms === undefined ? "" : new Date(ms).toISOString();
const clip = (s: string, n = 100) => (s.length > n ? `${s.slice(0, n)}…` : s);
const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
const idList = (ids: (number | string)[]) =>
  `${ids.length === 1 ? "id" : "ids"} ${ids.slice(0, 50).join(", ")}${ids.length > 50 ? `, … (${ids.length - 50} more)` : ""}`;

/** One status line on stderr: rewritten in place on a terminal, at most every 2 s otherwise. */
function progressLine(): { update: (text: string) => void; done: () => void } {
  const tty = process.stderr.isTTY;
  let last = "";
  let at = 0;
  let pending = "";
  return {
    update(text) {
      pending = text;
      if (tty) {
        process.stderr.write(`\r${text}\x1b[K`);
        last = text;
      } else if (text !== last && Date.now() - at >= 2000) {
        process.stderr.write(`${text}\n`);
        last = text;
        at = Date.now();
      }
    },
    done() {
      if (tty) {
        if (last) process.stderr.write("\n");
      } else if (pending && pending !== last) process.stderr.write(`${pending}\n`);
    },
  };
}

type Connections = {
  redis: Redis;
  events: Redis;
  queue: ReturnType<typeof createIngestQueue>;
  close: () => Promise<void>;
};

async function connect(
  config: { REDIS_URL: string; REDIS_PREFIX: string },
  logger: Logger,
): Promise<Connections> {
  const redis = createRedis(config.REDIS_URL, "worker", logger);
  const events = createRedis(config.REDIS_URL, "worker", logger);
  const close = async () => {
    await queue.close().catch(() => {});
    redis.disconnect();
    events.disconnect();
  };
  const queue = createIngestQueue(redis, config.REDIS_PREFIX);
  try {
    await waitReady(redis, 5000);
  } catch (err) {
    await close();
    throw new Error(
      `${(err as Error).message}: is redis-server running at REDIS_URL=${config.REDIS_URL}?`,
    );
  }
  return { redis, events, queue, close };
}

const NO_WORKER =
  "no ingest worker is running: they are queued and will be processed when `simmeter work` (or `simmeter start`) runs";

function registerQuarantineCommands(program: Command): void {
  const q = program
    .command("quarantine")
    .description(
      "events that were authenticated but could not be counted (list, the default; requeue)",
    );

  q.command("list", { isDefault: true })
    .description(
      "quarantined events, newest first, with whether each has since been counted or requeued",
    )
    .option("--limit <n>", "rows to show", positiveInt, 50)
    .option("--reason <text>", "only rows whose reason contains TEXT (case-insensitive)")
    .option("--since <time>", "only rows received at or after this UTC time", timeOption("--since"))
    .option("--json", "print JSON (includes the raw event)")
    .action(async (o: { limit: number; reason?: string; since?: number; json?: boolean }) => {
      const since = o.since;
      const { ledger } = (await cliLedger({ db: "read" }, "warn")).opened;
      try {
        const list = await collectListAsync(
          (page) =>
            quarantineList(ledger, {
              ...(o.reason !== undefined ? { reason: o.reason } : {}),
              ...(since !== undefined ? { since } : {}),
              ...page,
            }),
          o.limit,
        );
        const filtered = o.reason !== undefined || since !== undefined;
        printList(
          Boolean(o.json),
          list,
          filtered ? "no quarantined events match" : "quarantine is empty",
          (rows) =>
            rows.map((r) => ({
              id: r.id,
              received: r.received_at,
              source: r.source,
              event_sid: r.event_sid,
              counted: r.counted === null ? "" : r.counted ? "yes" : "no",
              requeued: r.requeues > 0 ? `${r.requeues}× ${r.requeued_at ?? ""}` : "",
              note: [
                r.requeue_of !== null ? `requeue of #${r.requeue_of}` : "",
                r.quarantined_again_as.length > 0
                  ? `quarantined again as #${r.quarantined_again_as.join(", #")}`
                  : "",
              ]
                .filter(Boolean)
                .join("; "),
              reason: clip(r.reason),
            })),
        );
      } finally {
        await ledger.admin.close();
      }
    });

  q.command("requeue")
    .description(
      "put quarantined events back on the ingest queue once the cause is fixed (idempotent); waits for a running worker and reports each event",
    )
    .option("--id <n...>", "these quarantine row ids", positiveInts)
    .option("--reason <text>", "rows whose reason contains TEXT (case-insensitive)")
    .option("--since <time>", "rows received at or after this UTC time", timeOption("--since"))
    .option("--dry-run", "show what would be requeued; change nothing")
    .option("--no-wait", "do not wait for the worker to process them")
    .option("--timeout <seconds>", "how long to wait for the worker", positiveInt, 120)
    .option("--json", "print a JSON summary")
    .action(
      async (o: {
        id?: number[];
        reason?: string;
        since?: number;
        dryRun?: boolean;
        wait: boolean;
        timeout: number;
        json?: boolean;
      }) => {
        const since = o.since;
        const { config, logger, opened } = await cliLedger(
          { db: o.dryRun ? "read" : "write" },
          "warn",
        );
        try {
          await requeueCommand(opened.ledger, config, logger, {
            ...o,
            ...(since !== undefined ? { sinceMs: since } : {}),
          });
        } finally {
          await opened.ledger.admin.close();
        }
      },
    );
}

type RequeueCliOptions = {
  id?: number[];
  reason?: string;
  sinceMs?: number;
  dryRun?: boolean;
  wait: boolean;
  timeout: number;
  json?: boolean;
};

async function requeueCommand(
  ledger: Ledger,
  config: { REDIS_URL: string; REDIS_PREFIX: string },
  logger: Logger,
  o: RequeueCliOptions,
): Promise<void> {
  const items = await planRequeue(ledger, {
    ...(o.id ? { ids: o.id } : {}),
    ...(o.reason !== undefined ? { reason: o.reason } : {}),
    ...(o.sinceMs !== undefined ? { since: o.sinceMs } : {}),
  });
  const out = (text: string) => {
    if (!o.json) process.stdout.write(`${text}\n`);
  };
  const merged = items.flatMap((it) => it.rowIds.slice(1));
  const summary = (extra: Record<string, unknown>, outcomes: RequeueOutcome[] | null) => {
    const count = (k: RequeueOutcome["outcome"]) =>
      outcomes ? outcomes.filter((x) => x.outcome === k).length : 0;
    return {
      dry_run: Boolean(o.dryRun),
      requeued: o.dryRun ? 0 : items.length,
      ids: items.map((it) => it.id),
      rows: items.flatMap((it) => it.rowIds).sort((a, b) => a - b),
      ...extra,
      counted: count("counted"),
      duplicates: count("duplicate"),
      quarantined_again: count("quarantined"),
      ignored: count("ignored"),
      queued: count("queued"),
      failed: count("failed"),
      events: outcomes
        ? outcomes.map(snakeOutcome)
        : items.map((it) => ({
            id: it.id,
            rows: it.rowIds,
            event_sid: it.eventSid,
            delivery_id: it.deliveryId,
            already_counted: it.counted,
            reason: it.reason,
          })),
    };
  };
  if (items.length === 0) {
    if (o.json) process.stdout.write(`${JSON.stringify(summary({}, []), null, 2)}\n`);
    else out("no quarantined events match: nothing requeued (see simmeter quarantine)");
    return;
  }
  const mergedNote =
    merged.length > 0
      ? `(${plural(merged.length, "row")} #${merged.join(", #")} ${merged.length === 1 ? "is an earlier requeue" : "are earlier requeues"} of the same ${merged.length === 1 ? "event" : "events"}: each event is queued once)`
      : "";
  if (o.dryRun) {
    if (o.json) {
      process.stdout.write(`${JSON.stringify(summary({}, null), null, 2)}\n`);
      return;
    }
    out(
      `dry run: ${plural(items.length, "event")} would be requeued: ${idList(items.map((it) => it.id))}`,
    );
    if (mergedNote) out(mergedNote);
    out(table(items.map(dryRunRow)));
    return;
  }
  const c = await connect(config, logger);
  let waiter: JobWaiter | null = null;
  try {
    const running = await ingestWorkerRunning(c.queue);
    const waiting = o.wait && running;
    if (waiting) waiter = await JobWaiter.open(c.events, config.REDIS_PREFIX);
    const jobs = await enqueueRequeue({ ledger, queue: c.queue, items, now: Date.now });
    out(`${plural(items.length, "event")} requeued: ${idList(items.map((it) => it.id))}`);
    if (mergedNote) out(mergedNote);
    const ends = new Map<string, JobEnd>();
    let timedOut = false;
    if (waiter) {
      const bar = progressLine();
      const tally = { done: 0, counted: 0, duplicate: 0, quarantined: 0 };
      const total = items.length;
      const show = () =>
        bar.update(
          `requeue: ${tally.done}/${total} processed (${tally.counted} counted, ${tally.duplicate} duplicate, ${tally.quarantined} quarantined again)`,
        );
      show();
      const byId = new Map(jobs.map((j) => [j.jobId, j]));
      // each ended job's outcomes are read as it ends, for the progress line; awaited below
      const tallied: Promise<void>[] = [];
      const seen = await waiter.wait(
        jobs.map((j) => j.jobId),
        o.timeout * 1000,
        (jobId, end) => {
          const job = byId.get(jobId);
          if (!job) return;
          const read = requeueOutcomes(ledger, job, end).then((outcomes) => {
            for (const x of outcomes) {
              tally.done++;
              if (x.outcome === "counted") tally.counted++;
              if (x.outcome === "duplicate") tally.duplicate++;
              if (x.outcome === "quarantined") tally.quarantined++;
            }
            show();
          });
          // Handled now (a failed read during the wait must not end the process unhandled);
          // the Promise.all below still throws it, after the wait.
          read.catch(() => {});
          tallied.push(read);
        },
      );
      await Promise.all(tallied);
      bar.done();
      for (const [k, v] of seen) ends.set(k, v);
      timedOut = ends.size < jobs.length;
    }
    const outcomes: RequeueOutcome[] = [];
    for (const j of jobs) outcomes.push(...(await requeueOutcomes(ledger, j, ends.get(j.jobId))));
    const pendingJobs = jobs.filter((j) => !ends.has(j.jobId)).map((j) => j.jobId);
    const attempts = timedOut ? await lastAttemptErrors(c.queue, pendingJobs) : [];
    if (timedOut || outcomes.some((x) => x.outcome === "failed")) process.exitCode = 1;
    if (o.json) {
      process.stdout.write(
        `${JSON.stringify(
          summary(
            {
              worker_running: running,
              waited: waiting,
              timed_out: timedOut,
              ...(attempts.length > 0
                ? {
                    last_attempt_errors: attempts.map((a) => ({
                      job_id: a.id,
                      attempts_made: a.attemptsMade,
                      reason: a.reason,
                    })),
                  }
                : {}),
            },
            outcomes,
          ),
          null,
          2,
        )}\n`,
      );
      return;
    }
    if (!running) {
      out(NO_WORKER);
      return;
    }
    if (!o.wait) {
      out("not waiting (--no-wait): see simmeter quarantine for what became of them");
      return;
    }
    const shown = outcomes.filter((x) => x.outcome !== "queued").slice(0, 50);
    for (const x of shown) out(outcomeLine(x));
    const finished = outcomes.filter((x) => x.outcome !== "queued");
    if (finished.length > shown.length)
      out(`… ${finished.length - shown.length} more (use --json for all)`);
    const n = (k: RequeueOutcome["outcome"]) => outcomes.filter((x) => x.outcome === k).length;
    const parts = [
      `${n("counted")} counted`,
      `${n("duplicate")} already counted (duplicate)`,
      `${n("quarantined")} quarantined again`,
      ...(n("ignored") ? [`${n("ignored")} ignored (test events)`] : []),
      ...(n("failed") ? [`${n("failed")} in failed jobs (see simmeter jobs failed)`] : []),
    ];
    out(parts.join(", "));
    if (timedOut) {
      process.stderr.write(
        `timed out after ${o.timeout} s: ${plural(n("queued"), "event")} still queued or retrying; the worker will process them (see simmeter quarantine, simmeter jobs failed)\n`,
      );
      for (const a of attempts)
        process.stderr.write(
          `  job ${a.id}: attempt ${a.attemptsMade} failed: ${clip(a.reason, 200)}\n`,
        );
    }
  } finally {
    await waiter?.close().catch(() => {});
    await c.close();
  }
}

function dryRunRow(it: RequeueItem): Record<string, unknown> {
  return {
    id: it.id,
    rows: it.rowIds.join(","),
    event_sid: it.eventSid,
    already_counted: it.eventSid === null ? "" : it.counted ? "yes" : "no",
    as: it.position === -1 ? "body" : "event",
    reason: clip(it.reason),
  };
}

function snakeOutcome(x: RequeueOutcome): Record<string, unknown> {
  return {
    id: x.id,
    rows: x.rowIds,
    event_sid: x.eventSid,
    delivery_id: x.deliveryId,
    job_id: x.jobId,
    outcome: x.outcome,
    quarantine_id: x.quarantineId,
    reason: x.reason,
  };
}

function outcomeLine(x: RequeueOutcome): string {
  const who = `#${x.id} ${x.eventSid ?? "(no event_sid)"}`;
  switch (x.outcome) {
    case "counted":
      return `${who}: counted`;
    case "duplicate":
      return `${who}: duplicate (already counted)`;
    case "quarantined":
      return `${who}: quarantined again as #${x.quarantineId}: ${clip(x.reason ?? "")}`;
    case "ignored":
      return `${who}: ignored (an Event Streams test event)`;
    case "failed":
      return `${who}: its job ${x.jobId} failed: ${clip(x.reason ?? "")}`;
    case "queued":
      return `${who}: still queued`;
  }
}

function registerJobsCommands(program: Command): void {
  const jobs = program
    .command("jobs")
    .description("ingest jobs that failed for good (Redis or SQLite trouble), and retrying them");

  jobs
    .command("failed")
    .description("ingest jobs that used up their attempts (the failed set), newest first")
    .option("--limit <n>", "jobs to show", positiveInt, 100)
    .option("--json", "print JSON")
    .action(async (o: { limit: number; json?: boolean }) => {
      const { config, logger } = cliConfig({}, "warn");
      const c = await connect(config, logger);
      try {
        const { total, jobs: list } = await listFailedJobs(c.queue, o.limit);
        if (o.json) {
          process.stdout.write(`${JSON.stringify(list.map(snakeJob), null, 2)}\n`);
        } else {
          printJsonOrTable(
            false,
            list.map((j) => ({
              id: j.id,
              failed_at: iso(j.finishedOn),
              attempts: j.attemptsMade,
              deliveries: j.deliveries,
              events: j.events,
              reason: clip(j.failedReason),
            })),
            "no failed ingest jobs",
          );
        }
        if (total > list.length)
          process.stderr.write(`showing ${list.length} of ${total} failed ingest jobs (--limit)\n`);
      } finally {
        await c.close();
      }
    });

  jobs
    .command("retry")
    .description(
      "retry failed ingest jobs once the cause is fixed (idempotent: the worker dedupes by event_sid)",
    )
    .option("--id <id...>", "these job ids (see simmeter jobs failed)")
    .option("--all", "every job in the failed set")
    .option("--dry-run", "show what would be retried; change nothing")
    .option("--no-wait", "do not wait for the worker to process them")
    .option("--timeout <seconds>", "how long to wait for the worker", positiveInt, 120)
    .option("--json", "print a JSON summary")
    .action(
      async (o: {
        id?: string[];
        all?: boolean;
        dryRun?: boolean;
        wait: boolean;
        timeout: number;
        json?: boolean;
      }) => {
        const { config, logger } = cliConfig({}, "warn");
        const c = await connect(config, logger);
        let waiter: JobWaiter | null = null;
        const out = (text: string) => {
          if (!o.json) process.stdout.write(`${text}\n`);
        };
        try {
          const selected = await selectFailedJobs(c.queue, {
            ...(o.id ? { ids: o.id } : {}),
            ...(o.all ? { all: true } : {}),
          });
          if (o.dryRun || selected.length === 0) {
            if (o.json) {
              process.stdout.write(
                `${JSON.stringify({ dry_run: Boolean(o.dryRun), retried: 0, ids: selected.map((j) => j.id), jobs: selected.map(snakeJob) }, null, 2)}\n`,
              );
              return;
            }
            if (selected.length === 0) {
              out("no failed ingest jobs: nothing retried");
              return;
            }
            out(
              `dry run: ${plural(selected.length, "failed ingest job")} would be retried: ${idList(selected.map((j) => j.id))}`,
            );
            out(
              table(
                selected.map((j) => ({ id: j.id, events: j.events, reason: clip(j.failedReason) })),
              ),
            );
            return;
          }
          const running = await ingestWorkerRunning(c.queue);
          const waiting = o.wait && running;
          if (waiting) waiter = await JobWaiter.open(c.events, config.REDIS_PREFIX);
          const { retried, skipped } = await retryFailedJobs(
            c.queue,
            selected.map((j) => j.id),
          );
          out(`${plural(retried.length, "failed ingest job")} retried: ${idList(retried)}`);
          for (const s of skipped) process.stderr.write(`job ${s.id} not retried: ${s.reason}\n`);
          let ends = new Map<string, JobEnd>();
          if (waiter && retried.length > 0) {
            const bar = progressLine();
            let done = 0;
            bar.update(`retry: 0/${retried.length} jobs processed`);
            ends = await waiter.wait(retried, o.timeout * 1000, () => {
              done++;
              bar.update(`retry: ${done}/${retried.length} jobs processed`);
            });
            bar.done();
          }
          const byId = new Map(selected.map((j) => [j.id, j]));
          const results = retried.map((id) => {
            const end = ends.get(id);
            return {
              id,
              events: byId.get(id)?.events ?? 0,
              outcome: end ? end.state : "queued",
              counted: end?.state === "completed" ? end.result.counted : 0,
              duplicates: end?.state === "completed" ? end.result.duplicates : 0,
              quarantined: end?.state === "completed" ? end.result.quarantined : 0,
              failed_reason: end?.state === "failed" ? end.reason : null,
            };
          });
          const timedOut = waiting && ends.size < retried.length;
          if (timedOut || results.some((r) => r.outcome === "failed") || skipped.length > 0)
            process.exitCode = 1;
          if (o.json) {
            process.stdout.write(
              `${JSON.stringify(
                {
                  dry_run: false,
                  retried: retried.length,
                  ids: retried,
                  skipped: skipped.map((s) => ({ id: s.id, reason: s.reason })),
                  worker_running: running,
                  waited: waiting,
                  timed_out: timedOut,
                  counted: results.reduce((n, r) => n + r.counted, 0),
                  duplicates: results.reduce((n, r) => n + r.duplicates, 0),
                  quarantined: results.reduce((n, r) => n + r.quarantined, 0),
                  jobs: results,
                },
                null,
                2,
              )}\n`,
            );
            return;
          }
          if (!running) {
            out(NO_WORKER);
            return;
          }
          if (!o.wait) return;
          for (const r of results) {
            if (r.outcome === "completed")
              out(
                `job ${r.id}: ${plural(r.events, "event")}: ${r.counted} counted, ${r.duplicates} already counted (duplicate), ${r.quarantined} quarantined`,
              );
            else if (r.outcome === "failed")
              out(`job ${r.id}: failed again: ${clip(r.failed_reason ?? "")}`);
          }
          if (timedOut) {
            const pending = results.filter((r) => r.outcome === "queued").map((r) => r.id);
            process.stderr.write(
              `timed out after ${o.timeout} s: ${plural(pending.length, "job")} still queued or retrying; the worker will process them (see simmeter jobs failed)\n`,
            );
            for (const a of await lastAttemptErrors(c.queue, pending))
              process.stderr.write(
                `  job ${a.id}: attempt ${a.attemptsMade} failed: ${clip(a.reason, 200)}\n`,
              );
          }
        } finally {
          await waiter?.close().catch(() => {});
          await c.close();
        }
      },
    );
}

function snakeJob(j: FailedJob): Record<string, unknown> {
  return {
    id: j.id,
    failed_reason: j.failedReason,
    attempts_made: j.attemptsMade,
    finished_on: j.finishedOn === null ? null : iso(j.finishedOn),
    deliveries: j.deliveries,
    events: j.events,
  };
}
