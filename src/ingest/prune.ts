import { DAY_MS } from "../accounting/buckets.ts";
import type { Db } from "../db/client.ts";

export type PruneResult = {
  seenEvents: number;
  sessions: number;
  readings: number;
  cutoff: number;
};

/**
 * meta key: dedupe records of events before this time (ms) may have been deleted. It only moves
 * when something is deleted, and only as far as the newest record deleted: events past it never
 * had a record (were never counted), so raising RETENTION_DAYS still lets them be counted.
 */
export const PRUNED_BEFORE = "pruned_before";

/**
 * Drops dedupe records and readings past the retention. Usage totals stay. Only sessions that have
 * ended and whose last reading is past the cutoff lose their rows, so an open session is never
 * re-attributed from a partial history or billed again as new. The cutoff is remembered: events
 * before it can never be deduplicated again, whatever RETENTION_DAYS says later (ingest refuses them).
 */
export function pruneExpired(db: Db, retentionDays: number, now: number): PruneResult {
  const cutoff = now - retentionDays * DAY_MS;
  const c = db.$client;
  return db.transaction(
    () => {
      const newest = c
        .prepare(
          `select max(t) as t from (
             select max(event_ts) as t from seen_events where event_ts < @cutoff
             union all
             select max(last_reading_at) from sessions where last_reading_at < @cutoff and end_time is not null)`,
        )
        .get({ cutoff }) as { t: number | null };
      const seen = c.prepare("DELETE FROM seen_events WHERE event_ts < ?").run(cutoff).changes;
      const old =
        "SELECT session_sid FROM sessions WHERE last_reading_at < ? AND end_time IS NOT NULL";
      const readings = c
        .prepare(`DELETE FROM readings WHERE session_sid IN (${old})`)
        .run(cutoff).changes;
      const sessions = c
        .prepare("DELETE FROM sessions WHERE last_reading_at < ? AND end_time IS NOT NULL")
        .run(cutoff).changes;
      if (newest.t !== null)
        c.prepare(
          "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
        ).run(PRUNED_BEFORE, newest.t + 1);
      return { seenEvents: seen, sessions, readings, cutoff };
    },
    { behavior: "immediate" },
  );
}
