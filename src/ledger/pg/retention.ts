import pRetry from "p-retry";
import type pg from "pg";
import { DAY_MS } from "../../accounting/buckets.ts";
import { installInt8Parser } from "../../db/pg/client.ts";
import { PRUNE_BATCH_ROWS, PRUNED_BEFORE, type PruneResult } from "../../ingest/prune.ts";
import { isRetryable, LEDGER_BARRIER, LEDGER_LOCK_KEY, sqlState } from "./tx.ts";

// Retention on PostgreSQL: pruneExpired (src/ingest/prune.ts) step for step, with the same
// totals and the same pruned_before (docs/design/postgres-ledger.md §4.5, race 3b).
//
// - One pass per ledger at a time: pg_try_advisory_lock(K, 2), session-level, on one client held
//   for the whole pass; another process already pruning → null at once (it does the work). The
//   lock is released at the end; if that fails the client is destroyed, which ends its session
//   and so the lock: a pooled session never keeps it.
// - Each step is one READ COMMITTED transaction on that client that takes the ledger barrier
//   exclusive first: no ingest transaction (shared) runs between its pruned_before read and its
//   dedupe insert while a step deletes records and raises the horizon, so an event is never
//   admitted as new after its record is gone (counted twice). Ingest is the only writer of these
//   tables, so each step's statements see a stable ledger. A lock timeout or deadlock re-runs
//   the step (as withTx does); the steps already committed stay done.

installInt8Parser();

/** (LEDGER_LOCK_KEY, 2): held by the process pruning the ledger (design §4.5) */
export const PRUNE_LOCK: readonly [number, number] = [LEDGER_LOCK_KEY, 2];

type Step = { seenEvents: number; sessions: number; readings: number };

/** one step's statements on the client, inside its transaction */
async function pruneStep(c: pg.PoolClient, cutoff: number, n: number): Promise<Step> {
  const seen = await c.query<{ n: number; t: number | null }>(
    `with d as (
       delete from seen_events where event_sid in (
         select event_sid from seen_events where event_ts < $1
          order by event_ts, event_sid collate "C" limit $2)
       returning event_ts)
     select count(*) as n, max(event_ts) as t from d`,
    [cutoff, n],
  );
  const cand = await c.query<{ session_sid: string }>(
    `select session_sid from (
       select session_sid, last_reading_at,
              sum(reading_count) over (order by last_reading_at, session_sid collate "C"
                                       rows unbounded preceding) - reading_count as before
         from (select session_sid, last_reading_at, reading_count from sessions
                where last_reading_at < $1 and end_time is not null
                order by last_reading_at, session_sid collate "C" limit $2) x) y
      where before < $2
      order by last_reading_at, session_sid collate "C"`,
    [cutoff, n],
  );
  const ids = cand.rows.map((r) => r.session_sid);
  let readings = 0;
  let sessions = { n: 0, t: null as number | null };
  if (ids.length > 0) {
    const rd = await c.query(
      `delete from readings where (session_sid, t, event_sid) in (
         select r.session_sid, r.t, r.event_sid
           from unnest($1::text[]) with ordinality as s(session_sid, k)
           join readings r on r.session_sid = s.session_sid
          order by s.k, r.t, r.event_sid collate "C" limit $2)`,
      [ids, n],
    );
    readings = rd.rowCount ?? 0;
    const ss = await c.query<{ n: number; t: number | null }>(
      `with d as (
         delete from sessions s
          where s.session_sid = any($1::text[])
            and s.last_reading_at < $2 and s.end_time is not null
            and not exists (select 1 from readings r where r.session_sid = s.session_sid)
         returning last_reading_at)
       select count(*) as n, max(last_reading_at) as t from d`,
      [ids, cutoff],
    );
    sessions = ss.rows[0] ?? sessions;
  }
  const s0 = seen.rows[0] ?? { n: 0, t: null };
  const newest =
    s0.t === null ? sessions.t : sessions.t === null ? s0.t : Math.max(s0.t, sessions.t);
  if (newest !== null)
    await c.query(
      `insert into meta (key, value) values ($1, $2)
       on conflict (key) do update set value = greatest(meta.value, excluded.value)`,
      [PRUNED_BEFORE, newest + 1],
    );
  return { seenEvents: s0.n, sessions: sessions.n, readings };
}

/** Thrown past a step whose client can no longer be trusted (its session must be discarded). */
class BrokenClient extends Error {}

/** BEGIN, the exclusive barrier, the step, COMMIT on the held client; re-run as withTx does. */
function runStep(c: pg.PoolClient, cutoff: number, n: number): Promise<Step> {
  const attempt = async () => {
    await c.query(
      `begin isolation level read committed; select pg_advisory_xact_lock(${LEDGER_BARRIER[0]}, ${LEDGER_BARRIER[1]})`,
    );
    try {
      const r = await pruneStep(c, cutoff, n);
      await c.query("commit");
      return r;
    } catch (err) {
      if (sqlState(err) === undefined)
        throw new BrokenClient((err as Error).message, { cause: err });
      try {
        await c.query("rollback");
      } catch (e) {
        throw new BrokenClient((e as Error).message, { cause: err });
      }
      throw err;
    }
  };
  return pRetry(attempt, {
    retries: 4,
    minTimeout: 5,
    factor: 2,
    maxTimeout: 200,
    randomize: true,
    shouldRetry: ({ error }) => isRetryable(error),
  });
}

/**
 * Removes dedupe records, ended sessions and readings past retention, in steps of at most
 * `batchRows` rows per table, each its own transaction under the exclusive ledger barrier.
 * Returns the totals, or null when another process is pruning this ledger now.
 */
export async function prunePg(
  pool: pg.Pool,
  retentionDays: number,
  now: number,
  batchRows = PRUNE_BATCH_ROWS,
): Promise<PruneResult | null> {
  const cutoff = now - retentionDays * DAY_MS;
  const n = Math.max(1, Math.floor(batchRows));
  const c = await pool.connect();
  const onError = () => {};
  c.on("error", onError);
  let broken = false;
  let locked = false;
  try {
    const got = await c.query<{ ok: boolean }>("select pg_try_advisory_lock($1, $2) as ok", [
      ...PRUNE_LOCK,
    ]);
    locked = got.rows[0]?.ok === true;
    if (!locked) return null;
    const total: PruneResult = { seenEvents: 0, sessions: 0, readings: 0, cutoff };
    for (;;) {
      const s = await runStep(c, cutoff, n);
      total.seenEvents += s.seenEvents;
      total.sessions += s.sessions;
      total.readings += s.readings;
      if (s.seenEvents + s.sessions + s.readings === 0) return total;
    }
  } catch (err) {
    if (err instanceof BrokenClient || sqlState(err) === undefined) broken = true;
    throw err instanceof BrokenClient ? (err.cause ?? err) : err;
  } finally {
    if (locked && !broken) {
      try {
        await c.query("select pg_advisory_unlock($1, $2)", [...PRUNE_LOCK]);
      } catch {
        broken = true;
      }
    }
    c.off("error", onError);
    c.release(broken ? true : undefined);
  }
}
