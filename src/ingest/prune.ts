import { DAY_MS } from "../accounting/buckets.ts";
import type { Db } from "../db/client.ts";

export type PruneResult = {
  seenEvents: number;
  sessions: number;
  readings: number;
  cutoff: number;
};

/**
 * Drops dedupe records and readings past the retention. Usage totals stay. Only sessions whose
 * last reading is past the cutoff lose their readings, so a live session is never re-attributed
 * from a partial history. Events older than the cutoff are refused at ingest (see ingest.ts).
 */
export function pruneExpired(db: Db, retentionDays: number, now: number): PruneResult {
  const cutoff = now - retentionDays * DAY_MS;
  const c = db.$client;
  return db.transaction(
    () => {
      const seen = c.prepare("DELETE FROM seen_events WHERE event_ts < ?").run(cutoff).changes;
      const old = "SELECT session_sid FROM sessions WHERE last_reading_at < ?";
      const readings = c
        .prepare(`DELETE FROM readings WHERE session_sid IN (${old})`)
        .run(cutoff).changes;
      const sessions = c
        .prepare("DELETE FROM sessions WHERE last_reading_at < ?")
        .run(cutoff).changes;
      return { seenEvents: seen, sessions, readings, cutoff };
    },
    { behavior: "immediate" },
  );
}
