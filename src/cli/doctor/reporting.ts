// Whether the reporter runs: the worker's schedule in Redis and what the ledger says was sent.
import { Queue } from "bullmq";
import type { Redis } from "ioredis";
import type { Config } from "../../config.ts";
import type { Ledger } from "../../ledger/port.ts";
import { REPORT_QUEUE } from "../../reporting/schedule.ts";
import { iso } from "../../views/json.ts";
import { lastSentMs } from "../../views/overview.ts";
import type { Add } from "./check.ts";

const ago = (ms: number) => {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172_800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86_400)} days`;
};

/**
 * When the reporter last succeeded: its newest completed scheduled run (Redis keeps the last 100)
 * or the newest row sent to Stripe (a manual `simmeter report` too), whichever is later. Warns
 * beyond 2 × REPORT_INTERVAL_SECONDS, or when there is usage to report and no run on record.
 */
export async function doctorReporting(
  config: Config,
  ledger: Ledger,
  redis: Redis | null,
  add: Add,
): Promise<void> {
  const now = Date.now();
  const limitMs = 2 * config.REPORT_INTERVAL_SECONDS * 1000;
  let lastRun: number | null = null;
  let schedules: number | null = null;
  if (redis) {
    const queue = new Queue(REPORT_QUEUE, { connection: redis, prefix: config.REDIS_PREFIX });
    try {
      lastRun = (await queue.getCompleted(0, 0))[0]?.finishedOn ?? null;
      schedules = await queue.getJobSchedulersCount();
    } catch {
      // Reported by the redis checks.
    } finally {
      await queue.close().catch(() => {});
    }
  }
  const lastSent = await lastSentMs(ledger);
  const last = Math.max(lastRun ?? -1, lastSent ?? -1);
  const work = await ledger.views.reportWork();
  const extra = {
    last_run_at: iso(lastRun),
    last_sent_at: iso(lastSent),
    interval_seconds: config.REPORT_INTERVAL_SECONDS,
    schedule_in_redis: schedules === null ? null : schedules > 0,
  };
  const noSchedule =
    schedules === 0
      ? "; no report schedule in Redis: no worker with STRIPE_SECRET_KEY has run since Redis was emptied (simmeter start or simmeter work creates it)"
      : "";
  if (last < 0) {
    add(
      "reporting",
      work > 0 || noSchedule ? "warn" : "ok",
      work > 0
        ? `no successful report run on record, and usage waits to be reported: is simmeter start (or simmeter work) running with STRIPE_SECRET_KEY?${noSchedule}`
        : `nothing reported yet${noSchedule}`,
      extra,
    );
    return;
  }
  const late = now - last > limitMs;
  add(
    "reporting",
    late || noSchedule ? "warn" : "ok",
    `last successful report ${ago(now - last)} ago (${iso(last)})${
      late
        ? `, longer than 2 × REPORT_INTERVAL_SECONDS (${limitMs / 1000} s): is the worker running? see its log and simmeter report --status`
        : ""
    }${noSchedule}`,
    { ...extra, age_seconds: Math.round((now - last) / 1000) },
  );
}
