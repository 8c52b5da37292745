import type pg from "pg";
import type { Reading } from "../../accounting/attribute.ts";
import { installInt8Parser } from "../../db/pg/client.ts";
import type { AnomalyRow, QuarantineRow } from "../../ingest/admit.ts";
import { replayFleets } from "../../ingest/fleet.ts";
import type { Delivery, IngestJobData } from "../../ingest/job.ts";
import { PRUNED_BEFORE } from "../../ingest/prune.ts";
import type { StoredSession } from "../../ingest/sessions.ts";
import type { IngestSummary } from "../../ingest/summary.ts";
import {
  cellKey,
  type IngestOps,
  type IngestSettings,
  type IngestWrites,
  ingestSteps,
  type SimSighting,
} from "../../ingest/unit-of-work.ts";
import { type Async, runAsync } from "../steps.ts";
import { withTx } from "./tx.ts";

// The PostgreSQL side of ingest (docs/design/postgres-ledger.md §4.2, §4.3): the same ops as
// src/ledger/sqlite/ingest.ts, each one set-based statement per table whatever the job's size
// (arrays through unnest, never a statement per event), run by many workers on one database:
//
// - Sessions are serialised by row locks: a placeholder row is inserted for each session new to
//   the ledger (a concurrent insert of the same key waits for the other transaction), then every
//   session of the job is read FOR UPDATE. A placeholder is "no row" to the unit of work; the
//   ones not written at the end are deleted, so none is ever committed.
// - Every multi-row statement is sorted by its conflict key and the tables are written in one
//   fixed order, so two jobs cannot deadlock (retries in tx.ts are the backstop).
// - ON CONFLICT DO UPDATE refuses a key twice in one statement: rows are folded per key first.
// - No process-local cache: other workers write the same rows.

installInt8Parser();

type Q = Pick<pg.PoolClient, "query">;

/** text sorted as PostgreSQL's "C" collation and SQLite's BINARY compare it (code units) */
const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

type SessionRowPg = {
  session_sid: string;
  sim_sid: string;
  start_time: number | null;
  end_time: number | null;
  total_bytes: number;
  window_sum_bytes: number;
  basis: "cumulative" | "window";
  reading_count: number;
  last_reading_at: number;
  buckets: string;
};

type SimRow = {
  iccid: string;
  fleetSid: string | null;
  uniqueName: string | null;
  lastEventAt: number;
};

/**
 * The sims upsert's rule for one sighting (src/ledger/sqlite/ingest.ts upsertSim): only an event
 * at least as new as the row changes its ICCID, fleet and name (the last two only when it names
 * one); last_event_at is the newest event's.
 */
export function applySighting(row: SimRow, s: SimSighting): SimRow {
  if (s.timestampMs < row.lastEventAt) return row;
  return {
    iccid: s.iccid,
    fleetSid: s.fleetSid ?? row.fleetSid,
    uniqueName: s.simUniqueName ?? row.uniqueName,
    lastEventAt: s.timestampMs,
  };
}

/**
 * A sender's text as PostgreSQL can store it (SQLite stores it as is): a text value cannot hold
 * U+0000 ("invalid byte sequence for encoding UTF8: 0x00", a job that failed on every retry), so
 * it becomes U+FFFD. A raw event with a literal NUL is not JSON (JSON escapes it) and stays not
 * JSON, so requeueing it quarantines it again, as on SQLite.
 */
function pgText<T extends string | null>(s: T): T {
  return (s?.includes("\u0000") ? s.replaceAll("\u0000", "\uFFFD") : s) as T;
}

/** quarantine rows once per (delivery, position): the first row's columns, the latest reason */
function foldQuarantine(rows: readonly QuarantineRow[]): QuarantineRow[] {
  const byKey = new Map<string, QuarantineRow>();
  for (const q of rows) {
    const k = `${q.deliveryId}\u0000${q.position}`;
    const had = byKey.get(k);
    if (had) had.reason = q.reason;
    else byKey.set(k, { ...q });
  }
  return [...byKey.values()];
}

/** anomalies once per (session, event, kind): the first one wins, as insert-if-absent does */
function firstAnomalies(rows: readonly AnomalyRow[]): AnomalyRow[] {
  const byKey = new Map<string, AnomalyRow>();
  for (const a of rows) {
    const k = `${a.sessionSid}\u0000${a.eventSid}\u0000${a.kind}`;
    if (!byKey.has(k)) byKey.set(k, a);
  }
  return [...byKey.values()];
}

function sumBy<T>(rows: readonly T[], key: (r: T) => string, add: (into: T, r: T) => void): T[] {
  const byKey = new Map<string, T>();
  for (const r of rows) {
    const k = key(r);
    const had = byKey.get(k);
    if (had) add(had, r);
    else byKey.set(k, { ...r });
  }
  return [...byKey.values()];
}

/** The ops of one job on one client inside its transaction (see ingestJobPg). */
export function pgIngestOps(client: Q): Async<IngestOps> {
  /** sessions this job inserted as placeholders: absent to the unit of work */
  const placeholders = new Set<string>();
  return {
    async prunedBefore() {
      const r = await client.query<{ value: number }>("select value from meta where key = $1", [
        PRUNED_BEFORE,
      ]);
      return r.rows[0]?.value ?? 0;
    },

    async lockSessions(keys) {
      const sorted = [...keys].sort((a, b) => byText(a.sessionSid, b.sessionSid));
      const sids = sorted.map((k) => k.sessionSid);
      // A placeholder per new session: "no row" (0 readings, no times, no buckets) until written.
      const inserted = await client.query<{ session_sid: string }>(
        `insert into sessions (session_sid, sim_sid, last_reading_at, updated_at)
         select s, m, 0, 0 from unnest($1::text[], $2::text[]) as u(s, m)
         order by s collate "C"
         on conflict do nothing
         returning session_sid`,
        [sids, sorted.map((k) => k.simSid)],
      );
      for (const r of inserted.rows) placeholders.add(r.session_sid);
      const rows = await client.query<SessionRowPg>(
        `select session_sid, sim_sid, start_time, end_time, total_bytes, window_sum_bytes, basis,
                reading_count, last_reading_at, buckets
           from sessions where session_sid = any($1::text[])
          order by session_sid collate "C"
          for update`,
        [sids],
      );
      const found = new Map<string, StoredSession>();
      for (const r of rows.rows) {
        if (placeholders.has(r.session_sid)) continue;
        found.set(r.session_sid, {
          simSid: r.sim_sid,
          startTime: r.start_time,
          endTime: r.end_time,
          totalBytes: r.total_bytes,
          windowSumBytes: r.window_sum_bytes,
          basis: r.basis,
          readingCount: r.reading_count,
          lastReadingAt: r.last_reading_at,
          buckets: r.buckets,
        });
      }
      return found;
    },

    async claimEvents(seen) {
      // A concurrent claim of the same event waits for the other transaction, then does nothing.
      const sorted = [...seen].sort((a, b) => byText(a.eventSid, b.eventSid));
      const r = await client.query<{ event_sid: string }>(
        `insert into seen_events (event_sid, event_ts, kind, received_at)
         select * from unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[]) as u(c1, c2, c3, c4)
         order by c1 collate "C"
         on conflict do nothing
         returning event_sid`,
        [
          sorted.map((s) => s.eventSid),
          sorted.map((s) => s.eventTs),
          sorted.map((s) => s.kind),
          sorted.map((s) => s.receivedAt),
        ],
      );
      return new Set(r.rows.map((x) => x.event_sid));
    },

    async readingsOf(sessionSids) {
      // In the readings key's order, as SQLite's primary-key read gives them (mergeReadings
      // relies on it when an event_sid appears twice).
      const r = await client.query<{
        session_sid: string;
        event_sid: string;
        t: number;
        cumulative: number | null;
        window_bytes: number | null;
        window_start: number | null;
        ended: boolean;
      }>(
        `select session_sid, event_sid, t, cumulative, window_bytes, window_start, ended
           from readings where session_sid = any($1::text[])
          order by session_sid collate "C", t, event_sid collate "C"`,
        [[...sessionSids]],
      );
      const out = new Map<string, Reading[]>();
      for (const sid of sessionSids) out.set(sid, []);
      for (const x of r.rows) {
        out.get(x.session_sid)?.push({
          eventSid: x.event_sid,
          t: x.t,
          cumulative: x.cumulative,
          window: x.window_bytes,
          windowStart: x.window_start,
          ended: x.ended,
        });
      }
      return out;
    },

    async observeFleets(obs) {
      // The rule of fleet.ts, replayed over each SIM's committed rows from the latest hour before
      // its first observation in this job: one read and two writes whatever the job's size.
      const first = new Map<string, number>();
      for (const o of obs) {
        const h = first.get(o.simSid);
        if (h === undefined || o.hour < h) first.set(o.simSid, o.hour);
      }
      const simSids = [...first.keys()];
      const r = await client.query<{ sim_sid: string; hour: number; fleet_sid: string }>(
        `select f.sim_sid, f.hour, f.fleet_sid
           from unnest($1::text[], $2::bigint[]) as o(sim, h)
           join sim_fleet_hours f on f.sim_sid = o.sim
            and f.hour >= coalesce(
                  (select max(p.hour) from sim_fleet_hours p where p.sim_sid = o.sim and p.hour < o.h),
                  o.h)`,
        [simSids, simSids.map((s) => first.get(s) as number)],
      );
      const committed = new Map<string, { hour: number; fleetSid: string }[]>();
      for (const x of r.rows) {
        let list = committed.get(x.sim_sid);
        if (!list) {
          list = [];
          committed.set(x.sim_sid, list);
        }
        list.push({ hour: x.hour, fleetSid: x.fleet_sid });
      }
      const { insert, dirtySims } = replayFleets(committed, obs);
      if (insert.length > 0) {
        const rows = [...insert].sort(
          (a, b) => byText(a.simSid, b.simSid) || a.hour - b.hour || byText(a.fleetSid, b.fleetSid),
        );
        await client.query(
          `insert into sim_fleet_hours (sim_sid, hour, fleet_sid)
           select * from unnest($1::text[], $2::bigint[], $3::text[]) as u(c1, c2, c3)
           order by c1 collate "C", c2, c3 collate "C"
           on conflict do nothing`,
          [rows.map((o) => o.simSid), rows.map((o) => o.hour), rows.map((o) => o.fleetSid)],
        );
      }
      if (dirtySims.length > 0) {
        await client.query(
          `insert into report_dirty_sims (sim_sid)
           select * from unnest($1::text[]) as u(c1) order by c1 collate "C"
           on conflict do nothing`,
          [[...dirtySims].sort(byText)],
        );
      }
    },

    async usageAt(cells) {
      const r = await client.query<{ hour: number; sim_sid: string; bytes: number }>(
        `select u.hour, u.sim_sid, u.bytes
           from unnest($1::bigint[], $2::text[]) as c(hour, sim)
           join usage_hourly u on u.hour = c.hour and u.sim_sid = c.sim`,
        [cells.map((c) => c.hour), cells.map((c) => c.simSid)],
      );
      const out = new Map<string, number>();
      for (const x of r.rows) out.set(cellKey(x.hour, x.sim_sid), x.bytes);
      return out;
    },

    async write(w) {
      await writeAll(client, w);
    },
  };
}

/** The write step, table by table in one fixed order, each sorted by its conflict key. */
async function writeAll(client: Q, w: IngestWrites): Promise<void> {
  const now = w.now;

  if (w.quarantine.length > 0) {
    const rows = foldQuarantine(w.quarantine).sort(
      (a, b) => byText(a.deliveryId, b.deliveryId) || a.position - b.position,
    );
    await client.query(
      `insert into quarantine (received_at, source, delivery_id, position, event_sid, reason, raw)
       select * from unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[]) as u(c1, c2, c3, c4, c5, c6, c7)
       order by c3 collate "C", c4
       on conflict (delivery_id, position) do update set reason = excluded.reason`,
      [
        rows.map((q) => q.receivedAt),
        rows.map((q) => q.source),
        rows.map((q) => q.deliveryId),
        rows.map((q) => q.position),
        rows.map((q) => pgText(q.eventSid)),
        rows.map((q) => pgText(q.reason)),
        rows.map((q) => pgText(q.raw)),
      ],
    );
  }

  if (w.unclaim.length > 0) {
    await client.query("delete from seen_events where event_sid = any($1::text[])", [
      [...w.unclaim].sort(byText),
    ]);
  }

  if (w.sims.length > 0) await writeSims(client, w.sims, now);

  if (w.readings.length > 0) {
    const rows = [...w.readings].sort(
      (a, b) => byText(a.sessionSid, b.sessionSid) || a.t - b.t || byText(a.eventSid, b.eventSid),
    );
    await client.query(
      `insert into readings (session_sid, t, event_sid, cumulative, window_bytes, window_start, ended)
       select * from unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::boolean[]) as u(c1, c2, c3, c4, c5, c6, c7)
       order by c1 collate "C", c2, c3 collate "C"
       on conflict do nothing`,
      [
        rows.map((r) => r.sessionSid),
        rows.map((r) => r.t),
        rows.map((r) => r.eventSid),
        rows.map((r) => r.cumulative),
        rows.map((r) => r.window),
        rows.map((r) => r.windowStart),
        rows.map((r) => r.ended),
      ],
    );
  }

  if (w.sessions.length > 0) {
    // Every one is locked (stored or a placeholder) and appears once (one decision per session).
    // sim_sid: a stored session's own; a placeholder's becomes what the decision says, as an
    // insert would have written it.
    const rows = [...w.sessions].sort((a, b) => byText(a.sessionSid, b.sessionSid));
    await client.query(
      `insert into sessions (session_sid, sim_sid, start_time, end_time, total_bytes, window_sum_bytes,
                             basis, reading_count, last_reading_at, buckets, updated_at)
       select * from unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                            $6::bigint[], $7::text[], $8::int[], $9::bigint[], $10::text[], $11::bigint[]) as u(c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11)
        order by c1 collate "C"
       on conflict (session_sid) do update set
         sim_sid = excluded.sim_sid,
         start_time = excluded.start_time,
         end_time = excluded.end_time,
         total_bytes = excluded.total_bytes,
         window_sum_bytes = excluded.window_sum_bytes,
         basis = excluded.basis,
         reading_count = excluded.reading_count,
         buckets = excluded.buckets,
         last_reading_at = excluded.last_reading_at,
         updated_at = excluded.updated_at`,
      [
        rows.map((s) => s.sessionSid),
        rows.map((s) => s.simSid),
        rows.map((s) => s.startTime),
        rows.map((s) => s.endTime),
        rows.map((s) => s.totalBytes),
        rows.map((s) => s.windowSumBytes),
        rows.map((s) => s.basis),
        rows.map((s) => s.readingCount),
        rows.map((s) => s.lastReadingAt),
        rows.map((s) => s.buckets),
        rows.map((s) => s.updatedAt),
      ],
    );
  }

  if (w.dropPlaceholders.length > 0) {
    await client.query("delete from sessions where session_sid = any($1::text[])", [
      [...w.dropPlaceholders].sort(byText),
    ]);
  }

  if (w.usage.length > 0) {
    const rows = sumBy(
      w.usage,
      (u) => cellKey(u.hour, u.simSid),
      (into, u) => {
        into.bytes += u.bytes;
      },
    ).sort((a, b) => a.hour - b.hour || byText(a.simSid, b.simSid));
    await client.query(
      `insert into usage_hourly (hour, sim_sid, bytes)
       select * from unnest($1::bigint[], $2::text[], $3::bigint[]) as u(c1, c2, c3)
       order by c1, c2 collate "C"
       on conflict (hour, sim_sid) do update set bytes = usage_hourly.bytes + excluded.bytes`,
      [rows.map((u) => u.hour), rows.map((u) => u.simSid), rows.map((u) => u.bytes)],
    );
  }

  if (w.dirtyHours.length > 0) {
    await client.query(
      `insert into report_dirty_hours (hour)
       select * from unnest($1::bigint[]) as u(c1) order by c1
       on conflict do nothing`,
      [[...new Set(w.dirtyHours)].sort((a, b) => a - b)],
    );
  }

  if (w.anomalies.length > 0) {
    const rows = firstAnomalies(w.anomalies).sort(
      (a, b) =>
        byText(a.sessionSid, b.sessionSid) ||
        byText(a.eventSid, b.eventSid) ||
        byText(a.kind, b.kind),
    );
    await client.query(
      `insert into anomalies (session_sid, event_sid, kind, detail, detected_at)
       select s, e, k, d, $5::bigint from unnest($1::text[], $2::text[], $3::text[], $4::text[]) as u(s, e, k, d)
       order by s collate "C", e collate "C", k collate "C"
       on conflict do nothing`,
      [
        rows.map((a) => a.sessionSid),
        rows.map((a) => a.eventSid),
        rows.map((a) => a.kind),
        rows.map((a) => pgText(a.detail)),
        now,
      ],
    );
  }

  if (w.eventCounts.length > 0) {
    const rows = sumBy(
      w.eventCounts,
      (c) => `${c.simSid}\u0000${c.day}\u0000${c.kind}`,
      (into, c) => {
        into.n += c.n;
      },
    ).sort((a, b) => byText(a.simSid, b.simSid) || a.day - b.day || byText(a.kind, b.kind));
    await client.query(
      `insert into event_counts (sim_sid, day, kind, count)
       select * from unnest($1::text[], $2::bigint[], $3::text[], $4::int[]) as u(c1, c2, c3, c4)
       order by c1 collate "C", c2, c3 collate "C"
       on conflict (sim_sid, day, kind) do update set count = event_counts.count + excluded.count`,
      [
        rows.map((c) => c.simSid),
        rows.map((c) => c.day),
        rows.map((c) => c.kind),
        rows.map((c) => c.n),
      ],
    );
  }
}

/**
 * One row per SIM, exactly as the per-event upserts would leave it: the SIMs already stored are
 * locked and read, and their sightings folded onto the stored row in event order; a SIM new to
 * the ledger is inserted as its sightings fold onto the first. Should another worker insert that
 * SIM meanwhile, its row and this job's fold meet through the upsert's own rule: ICCID and
 * last_event_at stay exact, the fleet and name can differ from per-event application only when
 * this job mixes events older than the other's (with a fleet or name) and newer ones (without).
 */
async function writeSims(client: Q, sightings: readonly SimSighting[], now: number): Promise<void> {
  const bySim = new Map<string, SimSighting[]>();
  for (const s of sightings) {
    const list = bySim.get(s.simSid);
    if (list) list.push(s);
    else bySim.set(s.simSid, [s]);
  }
  const simSids = [...bySim.keys()].sort(byText);
  const stored = await client.query<{
    sim_sid: string;
    iccid: string;
    fleet_sid: string | null;
    unique_name: string | null;
    last_event_at: number;
  }>(
    `select sim_sid, iccid, fleet_sid, unique_name, last_event_at from sims
      where sim_sid = any($1::text[]) order by sim_sid collate "C" for update`,
    [simSids],
  );
  const rows = new Map<string, SimRow>();
  for (const r of stored.rows) {
    rows.set(r.sim_sid, {
      iccid: r.iccid,
      fleetSid: r.fleet_sid,
      uniqueName: r.unique_name,
      lastEventAt: r.last_event_at,
    });
  }
  const out: (SimRow & { simSid: string; accountSid: string })[] = [];
  for (const simSid of simSids) {
    const list = bySim.get(simSid) as SimSighting[];
    const before = rows.get(simSid);
    const first = list[0] as SimSighting;
    let row: SimRow = before ?? {
      iccid: first.iccid,
      fleetSid: first.fleetSid,
      uniqueName: first.simUniqueName,
      lastEventAt: first.timestampMs,
    };
    for (let i = before ? 0 : 1; i < list.length; i++)
      row = applySighting(row, list[i] as SimSighting);
    if (before && row === before) continue; // every sighting older than the stored row
    out.push({ ...row, simSid, accountSid: first.accountSid });
  }
  if (out.length === 0) return;
  await client.query(
    `insert into sims (sim_sid, iccid, fleet_sid, unique_name, account_sid, first_seen_at, last_event_at)
     select s, i, f, n, a, $6::bigint, l
       from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $7::bigint[])
         as u(s, i, f, n, a, l)
      order by s collate "C"
     on conflict (sim_sid) do update set
       iccid = case when excluded.last_event_at >= sims.last_event_at then excluded.iccid else sims.iccid end,
       fleet_sid = case when excluded.last_event_at >= sims.last_event_at then coalesce(excluded.fleet_sid, sims.fleet_sid) else sims.fleet_sid end,
       unique_name = case when excluded.last_event_at >= sims.last_event_at then coalesce(excluded.unique_name, sims.unique_name) else sims.unique_name end,
       last_event_at = greatest(sims.last_event_at, excluded.last_event_at)`,
    [
      out.map((r) => r.simSid),
      out.map((r) => r.iccid),
      out.map((r) => r.fleetSid),
      out.map((r) => r.uniqueName),
      out.map((r) => r.accountSid),
      now,
      out.map((r) => r.lastEventAt),
    ],
  );
}

export type PgIngestOptions = {
  /** called with the SQLSTATE each time the job is re-run after a lock conflict */
  onRetry?: (code: string) => void;
};

/**
 * One job in one READ COMMITTED transaction on its own pooled client, under the shared ledger
 * barrier (planning, prune and repair take it exclusively). A serialization failure, deadlock or
 * lock timeout re-runs the whole unit of work from a fresh generator; anything else rolls back
 * and is thrown (BullMQ retries the job). `now` as a function is read once per attempt, after
 * the barrier is held.
 */
export function ingestJobPg(
  pool: pg.Pool,
  job: IngestJobData | readonly Delivery[],
  settings: IngestSettings,
  now: number | (() => number),
  opts: PgIngestOptions = {},
): Promise<IngestSummary> {
  return withTx(
    pool,
    (client) =>
      runAsync(
        ingestSteps(job, settings, typeof now === "function" ? now() : now),
        pgIngestOps(client),
      ),
    { barrier: "shared", retry: true, onRetry: opts.onRetry },
  );
}
