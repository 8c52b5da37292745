import { and, desc, eq, lt, type SQL, sql } from "drizzle-orm";
import { customerResolver } from "../../customers/customers.ts";
import type { Db } from "../../db/client.ts";
import { meterReports } from "../../db/schema.ts";
import type {
  HourUsage,
  LagHour,
  OutboxRowFilter,
  SimAssignmentRow,
  SimRecord,
} from "../views-port.ts";

// The views' reads on SQLite (src/ledger/views-port.ts).

const rowid = sql<number>`"meter_reports"."rowid"`;

export function outboxRowsSqlite(db: Db, f: OutboxRowFilter) {
  const where: SQL[] = [];
  if (f.state !== undefined) where.push(eq(meterReports.state, f.state));
  if (f.late !== undefined) where.push(eq(meterReports.late, f.late));
  if (f.customer !== undefined) where.push(eq(meterReports.customerId, f.customer));
  if (f.beforeRowId !== undefined) where.push(lt(rowid, f.beforeRowId));
  return db
    .select({ rowId: rowid, row: meterReports })
    .from(meterReports)
    .where(where.length > 0 ? and(...where) : undefined)
    .orderBy(desc(rowid))
    .limit(f.limit)
    .all();
}

export function usageRowsSqlite(db: Db, from: number, to: number, simSid?: string): HourUsage[] {
  const c = db.$client;
  return (
    simSid !== undefined
      ? c
          .prepare(
            "select sim_sid as simSid, hour, bytes from usage_hourly where sim_sid = ? and hour >= ? and hour < ? and bytes != 0 order by hour",
          )
          .all(simSid, from, to)
      : c
          .prepare(
            "select sim_sid as simSid, hour, bytes from usage_hourly where hour >= ? and hour < ? and bytes != 0 order by sim_sid, hour",
          )
          .all(from, to)
  ) as HourUsage[];
}

export function ingestLagSqlite(db: Db, from: number, to: number): LagHour[] {
  return db.$client
    .prepare(
      `select (event_ts / 3600000) * 3600000 as hour, count(*) as events,
              cast(round(avg(max(received_at - event_ts, 0))) as integer) as avgLag,
              max(max(received_at - event_ts, 0)) as maxLag
         from seen_events where event_ts >= ? and event_ts < ? group by 1 order by 1`,
    )
    .all(from, to) as LagHour[];
}

export function lastSentMsSqlite(db: Db): number | null {
  const r = db.$client
    .prepare("select max(sent_at) as t from meter_reports where state = 'sent' and kind = 'usage'")
    .get() as { t: number | null };
  return r.t;
}

export function openQuarantineSqlite(db: Db): number {
  const r = db.$client
    .prepare(
      `select count(*) as n from quarantine q
        where (q.event_sid is null and q.requeues = 0)
           or (q.event_sid is not null
               and not exists (select 1 from seen_events s where s.event_sid = q.event_sid))`,
    )
    .get() as { n: number };
  return r.n;
}

export function lateRowsSqlite(db: Db): number {
  const r = db.$client
    .prepare(
      "select count(*) as n from meter_reports where late = 1 and state in ('sent', 'pending')",
    )
    .get() as { n: number };
  return r.n;
}

export function simRecordSqlite(db: Db, simSid: string, sessionLimit: number): SimRecord {
  const c = db.$client;
  // One read transaction: every statement sees the same snapshot.
  return c.transaction(() => {
    const info = (c
      .prepare(
        "select iccid, fleet_sid as fleetSid, unique_name as uniqueName, account_sid as accountSid, first_seen_at as firstSeenAt, last_event_at as lastEventAt from sims where sim_sid = ?",
      )
      .get(simSid) ?? null) as SimRecord["info"];
    const rows = c
      .prepare(
        "select hour, bytes from usage_hourly where sim_sid = ? and bytes != 0 order by hour",
      )
      .all(simSid) as { hour: number; bytes: number }[];
    const owners = customerResolver(db).resolveHours(
      simSid,
      rows.map((u) => u.hour),
    );
    // sessions has no index on sim_sid: one scan of the (retention-pruned) table.
    const totals = c
      .prepare("select count(*) as n, max(last_reading_at) as last from sessions where sim_sid = ?")
      .get(simSid) as { n: number; last: number | null };
    const readingsOf = c.prepare(
      `select r.t, r.event_sid as eventSid, r.cumulative, r.window_bytes as windowBytes,
              r.window_start as windowStart, r.ended, s.received_at as receivedAt
         from readings r left join seen_events s on s.event_sid = r.event_sid
        where r.session_sid = ? order by r.t, r.event_sid`,
    );
    const sessions = (
      c
        .prepare(
          `select session_sid as sessionSid, start_time as startTime, end_time as endTime,
                  total_bytes as totalBytes, basis, reading_count as readingCount,
                  last_reading_at as lastReadingAt, buckets
             from sessions where sim_sid = ?
            order by coalesce(start_time, last_reading_at) desc, session_sid limit ?`,
        )
        .all(simSid, sessionLimit) as Omit<SimRecord["sessions"][number], "readings">[]
    ).map((s) => ({
      ...s,
      readings: (
        readingsOf.all(s.sessionSid) as (Omit<
          SimRecord["sessions"][number]["readings"][number],
          "ended"
        > & { ended: number })[]
      ).map((r) => ({ ...r, ended: Boolean(r.ended) })),
    }));
    const anomalies = c
      .prepare(
        `select id, session_sid as sessionSid, event_sid as eventSid, kind, detail, detected_at as detectedAt
           from anomalies where session_sid in (select session_sid from sessions where sim_sid = ?)
          order by id desc limit 200`,
      )
      .all(simSid) as SimRecord["anomalies"];
    const fleetHours = c
      .prepare(
        "select hour, fleet_sid as fleetSid from sim_fleet_hours where sim_sid = ? order by hour, fleet_sid",
      )
      .all(simSid) as SimRecord["fleetHours"];
    const assignmentRows = (targetType: string, ids: readonly string[]): SimAssignmentRow[] =>
      ids.length === 0
        ? []
        : (c
            .prepare(
              `select id, target_type as targetType, target_id as targetId, customer_id as customerId,
                      effective_from as effectiveFrom, created_at as createdAt
                 from assignments where target_type = ? and target_id in (${ids.map(() => "?").join(",")})
                order by effective_from, id`,
            )
            .all(targetType, ...ids) as SimAssignmentRow[]);
    const fleets = [
      ...new Set([
        ...fleetHours.map((r) => r.fleetSid),
        ...(info?.fleetSid ? [info.fleetSid] : []),
      ]),
    ];
    return {
      info,
      usage: rows.map((u, i) => ({ ...u, customer: owners[i] ?? null })),
      sessionsTotal: totals.n,
      lastReadingAt: totals.last,
      sessions,
      anomalies,
      fleetHours,
      own: [
        ...assignmentRows("sim", [simSid]),
        ...(info ? assignmentRows("iccid", [info.iccid]) : []),
      ].sort((a, b) => a.effectiveFrom - b.effectiveFrom || a.id - b.id),
      fleetAssignments: assignmentRows("fleet", fleets),
    };
  })();
}

export function quarantineBacklogSqlite(db: Db): { events: number; newest: number | null } {
  return db.$client.transaction(() => quarantineBacklogIn(db))();
}

function quarantineBacklogIn(db: Db): { events: number; newest: number | null } {
  const r = db.$client
    .prepare(
      `select count(distinct q.event_sid) as sids,
              max(q.received_at) as newest
         from quarantine q
        where q.event_sid is not null
          and not exists (select 1 from seen_events s where s.event_sid = q.event_sid)`,
    )
    .get() as { sids: number; newest: number | null };
  const bodies = db.$client
    .prepare(
      `select count(*) as n, max(received_at) as newest from quarantine
        where event_sid is null and requeues = 0`,
    )
    .get() as { n: number; newest: number | null };
  const newest = Math.max(r.newest ?? -1, bodies.newest ?? -1);
  return { events: r.sids + bodies.n, newest: newest < 0 ? null : newest };
}

export function quarantinedForSqlite(db: Db, reason: string): number {
  return (
    db.$client.prepare("select count(*) as n from quarantine where reason = ?").get(reason) as {
      n: number;
    }
  ).n;
}

export function reportWorkSqlite(db: Db): number {
  return (
    db.$client
      .prepare(
        "select (select count(*) from meter_reports where state = 'pending') + (select count(*) from report_dirty_hours) as n",
      )
      .get() as { n: number }
  ).n;
}
