import { DAY_MS } from "../accounting/buckets.ts";
import type { Db } from "../db/client.ts";

export type PruneResult = {
  seenEvents: number;
  sessions: number;
  readings: number;
  cutoff: number;
};

/** meta key: every dedupe record of an event before this time (ms) has been deleted. */
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
      const seen = c.prepare("DELETE FROM seen_events WHERE event_ts < ?").run(cutoff).changes;
      const old =
        "SELECT session_sid FROM sessions WHERE last_reading_at < ? AND end_time IS NOT NULL";
      const readings = c
        .prepare(`DELETE FROM readings WHERE session_sid IN (${old})`)
        .run(cutoff).changes;
      const sessions = c
        .prepare("DELETE FROM sessions WHERE last_reading_at < ? AND end_time IS NOT NULL")
        .run(cutoff).changes;
      c.prepare(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
      ).run(PRUNED_BEFORE, cutoff);
      return { seenEvents: seen, sessions, readings, cutoff };
    },
    { behavior: "immediate" },
  );
}
