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

/** rows deleted per table per transaction: bounds how long one prune step holds the writer */
export const PRUNE_BATCH_ROWS = 5000;

// One prune step, the same on both backends (src/ledger/pg/retention.ts is the PostgreSQL twin):
// 1. up to N dedupe records, oldest first;
// 2. the candidates: the ended sessions past the cutoff, oldest last reading first, as many as
//    their reading counts say fill N readings (at least one);
// 3. up to N readings of the candidates, session by session in that order: a session's readings
//    go in as few steps as possible, most often all in the step that deletes the session;
// 4. the candidates with no reading left;
// 5. pruned_before raised to just past the newest record (dedupe record or session) this step
//    deleted, in the same transaction as the deletes: whoever sees a record gone sees the horizon
//    that covers it. Over all steps the horizon ends where one big step would put it: the newest
//    record deleted, plus one.

/** step 2's candidates, as a JSON array of session ids */
const CANDIDATES_SQLITE = `
  select json_group_array(session_sid) as ids from (
    select session_sid from (
      select session_sid, last_reading_at,
             sum(reading_count) over (order by last_reading_at, session_sid
                                      rows unbounded preceding) - reading_count as before
        from (select session_sid, last_reading_at, reading_count from sessions
               where last_reading_at < @cutoff and end_time is not null
               order by last_reading_at, session_sid limit @n))
     where before < @n order by last_reading_at, session_sid)`;

/**
 * Drops dedupe records and readings past the retention. Usage totals stay. Only sessions that have
 * ended and whose last reading is past the cutoff lose their rows, so an open session is never
 * re-attributed from a partial history or billed again as new. The cutoff is remembered: events
 * before it can never be deduplicated again, whatever RETENTION_DAYS says later (ingest refuses them).
 * In steps of at most `batchRows` rows per table, each its own IMMEDIATE transaction (a large
 * backlog never holds the writer for long); returns the totals of all steps.
 */
export function pruneExpired(
  db: Db,
  retentionDays: number,
  now: number,
  batchRows = PRUNE_BATCH_ROWS,
): PruneResult {
  const cutoff = now - retentionDays * DAY_MS;
  const n = Math.max(1, Math.floor(batchRows));
  const c = db.$client;
  const seenStep = c.prepare<{ cutoff: number; n: number }, { t: number }>(
    `DELETE FROM seen_events WHERE event_sid IN (
       SELECT event_sid FROM seen_events WHERE event_ts < @cutoff
        ORDER BY event_ts, event_sid LIMIT @n)
     RETURNING event_ts AS t`,
  );
  const candidates = c.prepare<{ cutoff: number; n: number }, { ids: string }>(CANDIDATES_SQLITE);
  const readingsStep = c.prepare<{ ids: string; n: number }>(
    `DELETE FROM readings WHERE rowid IN (
       SELECT r.rowid FROM json_each(@ids) AS s JOIN readings AS r ON r.session_sid = s.value
        ORDER BY s.key, r.t, r.event_sid LIMIT @n)`,
  );
  const sessionsStep = c.prepare<{ ids: string; cutoff: number }, { t: number }>(
    `DELETE FROM sessions
      WHERE session_sid IN (SELECT value FROM json_each(@ids))
        AND last_reading_at < @cutoff AND end_time IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM readings r WHERE r.session_sid = sessions.session_sid)
     RETURNING last_reading_at AS t`,
  );
  const horizon = c.prepare<[string, number]>(
    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
  );
  const step = () =>
    db.transaction(
      () => {
        const seen = seenStep.all({ cutoff, n });
        const ids = candidates.get({ cutoff, n })?.ids ?? "[]";
        const readings = readingsStep.run({ ids, n }).changes;
        const sessions = sessionsStep.all({ ids, cutoff });
        let newest: number | null = null;
        for (const r of seen) newest = newest === null ? r.t : Math.max(newest, r.t);
        for (const r of sessions) newest = newest === null ? r.t : Math.max(newest, r.t);
        if (newest !== null) horizon.run(PRUNED_BEFORE, newest + 1);
        return { seenEvents: seen.length, sessions: sessions.length, readings };
      },
      { behavior: "immediate" },
    );
  const total: PruneResult = { seenEvents: 0, sessions: 0, readings: 0, cutoff };
  for (;;) {
    const s = step();
    total.seenEvents += s.seenEvents;
    total.sessions += s.sessions;
    total.readings += s.readings;
    if (s.seenEvents + s.sessions + s.readings === 0) return total;
  }
}
