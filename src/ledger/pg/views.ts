import type pg from "pg";
import { resolverOver } from "../../customers/customers.ts";
import { installInt8Parser } from "../../db/pg/client.ts";
import type { MeterReport } from "../../db/schema.ts";
import type {
  HourUsage,
  LagHour,
  OutboxRowFilter,
  SimAssignmentRow,
  SimRecord,
  ViewsPort,
} from "../views-port.ts";
import { REPORT_COLUMNS } from "./outbox.ts";
import { pgPlanOps } from "./plan.ts";
import { withTx } from "./tx.ts";

// The views' reads on PostgreSQL (src/ledger/sqlite/views.ts on SQLite): the same rows in the same
// order (text ordered collate "C", SQLite's bytewise compare; insertion order by row_id, which
// migrate-ledger fills from SQLite's rowid).

installInt8Parser();

const ASSIGNMENT_COLUMNS = `id, target_type as "targetType", target_id as "targetId",
  customer_id as "customerId", effective_from as "effectiveFrom", created_at as "createdAt"`;

/** simRecordSqlite's statements, in one REPEATABLE READ READ ONLY snapshot */
function simRecordPg(pool: pg.Pool, simSid: string, sessionLimit: number): Promise<SimRecord> {
  return withTx(
    pool,
    async (c) => {
      const info =
        (
          await c.query<NonNullable<SimRecord["info"]>>(
            `select iccid, fleet_sid as "fleetSid", unique_name as "uniqueName",
                    account_sid as "accountSid", first_seen_at as "firstSeenAt",
                    last_event_at as "lastEventAt"
               from sims where sim_sid = $1`,
            [simSid],
          )
        ).rows[0] ?? null;
      const rows = (
        await c.query<{ hour: number; bytes: number }>(
          "select hour, bytes from usage_hourly where sim_sid = $1 and bytes <> 0 order by hour",
          [simSid],
        )
      ).rows;
      const ops = pgPlanOps(c);
      const owners =
        rows.length > 0
          ? resolverOver(await ops.directory(), await ops.fleetsOf([simSid])).resolveHours(
              simSid,
              rows.map((u) => u.hour),
            )
          : [];
      const totals = (
        await c.query<{ n: number; last: number | null }>(
          "select count(*) as n, max(last_reading_at) as last from sessions where sim_sid = $1",
          [simSid],
        )
      ).rows[0] ?? { n: 0, last: null };
      const sessions = (
        await c.query<Omit<SimRecord["sessions"][number], "readings">>(
          `select session_sid as "sessionSid", start_time as "startTime", end_time as "endTime",
                  total_bytes as "totalBytes", basis, reading_count as "readingCount",
                  last_reading_at as "lastReadingAt", buckets
             from sessions where sim_sid = $1
            order by coalesce(start_time, last_reading_at) desc, session_sid collate "C" limit $2`,
          [simSid, sessionLimit],
        )
      ).rows;
      const readings = (
        await c.query<SimRecord["sessions"][number]["readings"][number] & { sessionSid: string }>(
          `select r.session_sid as "sessionSid", r.t, r.event_sid as "eventSid", r.cumulative,
                  r.window_bytes as "windowBytes", r.window_start as "windowStart", r.ended,
                  s.received_at as "receivedAt"
             from readings r left join seen_events s on s.event_sid = r.event_sid
            where r.session_sid = any($1::text[])
            order by r.t, r.event_sid collate "C"`,
          [sessions.map((x) => x.sessionSid)],
        )
      ).rows;
      const bySession = new Map<string, SimRecord["sessions"][number]["readings"]>();
      for (const { sessionSid, ...r } of readings) {
        const list = bySession.get(sessionSid) ?? [];
        list.push(r);
        bySession.set(sessionSid, list);
      }
      const anomalies = (
        await c.query<SimRecord["anomalies"][number]>(
          `select id, session_sid as "sessionSid", event_sid as "eventSid", kind, detail,
                  detected_at as "detectedAt"
             from anomalies
            where session_sid in (select session_sid from sessions where sim_sid = $1)
            order by id desc limit 200`,
          [simSid],
        )
      ).rows;
      const fleetHours = (
        await c.query<SimRecord["fleetHours"][number]>(
          `select hour, fleet_sid as "fleetSid" from sim_fleet_hours where sim_sid = $1
            order by hour, fleet_sid collate "C"`,
          [simSid],
        )
      ).rows;
      const assignmentRows = async (
        targetType: string,
        ids: readonly string[],
      ): Promise<SimAssignmentRow[]> =>
        ids.length === 0
          ? []
          : (
              await c.query<SimAssignmentRow>(
                `select ${ASSIGNMENT_COLUMNS} from assignments
                  where target_type = $1 and target_id = any($2::text[])
                  order by effective_from, id`,
                [targetType, [...ids]],
              )
            ).rows;
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
        sessions: sessions.map((x) => ({ ...x, readings: bySession.get(x.sessionSid) ?? [] })),
        anomalies,
        fleetHours,
        own: [
          ...(await assignmentRows("sim", [simSid])),
          ...(info ? await assignmentRows("iccid", [info.iccid]) : []),
        ].sort((a, b) => a.effectiveFrom - b.effectiveFrom || a.id - b.id),
        fleetAssignments: await assignmentRows("fleet", fleets),
      };
    },
    { barrier: "none", snapshot: true },
  );
}

export function pgViews(pool: pg.Pool): ViewsPort {
  return {
    simRecord: (simSid, sessions) => simRecordPg(pool, simSid, sessions),

    async outboxRows(f: OutboxRowFilter) {
      const where: string[] = [];
      const values: unknown[] = [];
      const add = (cond: (n: string) => string, v: unknown) => {
        values.push(v);
        where.push(cond(`$${values.length}`));
      };
      if (f.state !== undefined) add((n) => `state = ${n}`, f.state);
      if (f.late !== undefined) add((n) => `late = ${n}`, f.late);
      if (f.customer !== undefined) add((n) => `customer_id = ${n}`, f.customer);
      if (f.beforeRowId !== undefined) add((n) => `row_id < ${n}`, f.beforeRowId);
      values.push(f.limit);
      const r = await pool.query<MeterReport & { rowId: number }>(
        `select row_id as "rowId", ${REPORT_COLUMNS} from meter_reports
          ${where.length > 0 ? `where ${where.join(" and ")}` : ""}
          order by row_id desc limit $${values.length}`,
        values,
      );
      return r.rows.map(({ rowId, ...row }) => ({ rowId, row }));
    },

    async usageRows(from, to, simSid) {
      const r =
        simSid !== undefined
          ? await pool.query<HourUsage>(
              `select sim_sid as "simSid", hour, bytes from usage_hourly
                where sim_sid = $1 and hour >= $2 and hour < $3 and bytes <> 0 order by hour`,
              [simSid, from, to],
            )
          : await pool.query<HourUsage>(
              `select sim_sid as "simSid", hour, bytes from usage_hourly
                where hour >= $1 and hour < $2 and bytes <> 0
                order by sim_sid collate "C", hour`,
              [from, to],
            );
      return r.rows;
    },

    async ingestLag(from, to) {
      // avg of bigint is numeric, and round(numeric) rounds half away from zero, as SQLite does
      const r = await pool.query<LagHour>(
        `select (event_ts / 3600000) * 3600000 as hour, count(*) as events,
                round(avg(greatest(received_at - event_ts, 0)))::bigint as "avgLag",
                max(greatest(received_at - event_ts, 0)) as "maxLag"
           from seen_events where event_ts >= $1 and event_ts < $2 group by 1 order by 1`,
        [from, to],
      );
      return r.rows;
    },

    async lastSentMs() {
      const r = await pool.query<{ t: number | null }>(
        "select max(sent_at) as t from meter_reports where state = 'sent' and kind = 'usage'",
      );
      return r.rows[0]?.t ?? null;
    },

    async openQuarantine() {
      const r = await pool.query<{ n: number }>(
        `select count(*) as n from quarantine q
          where (q.event_sid is null and q.requeues = 0)
             or (q.event_sid is not null
                 and not exists (select 1 from seen_events s where s.event_sid = q.event_sid))`,
      );
      return r.rows[0]?.n ?? 0;
    },

    async quarantineBacklog() {
      const r = await pool.query<{
        sids: number;
        newest: number | null;
        n: number;
        bnewest: number | null;
      }>(
        `select (select count(distinct q.event_sid) from quarantine q
                  where q.event_sid is not null
                    and not exists (select 1 from seen_events s where s.event_sid = q.event_sid)) as sids,
                (select max(q.received_at) from quarantine q
                  where q.event_sid is not null
                    and not exists (select 1 from seen_events s where s.event_sid = q.event_sid)) as newest,
                (select count(*) from quarantine where event_sid is null and requeues = 0) as n,
                (select max(received_at) from quarantine where event_sid is null and requeues = 0) as bnewest`,
      );
      const x = r.rows[0] ?? { sids: 0, newest: null, n: 0, bnewest: null };
      const newest = Math.max(x.newest ?? -1, x.bnewest ?? -1);
      return { events: x.sids + x.n, newest: newest < 0 ? null : newest };
    },

    async quarantinedFor(reason) {
      const r = await pool.query<{ n: number }>(
        "select count(*) as n from quarantine where reason = $1",
        [reason],
      );
      return r.rows[0]?.n ?? 0;
    },

    async reportWork() {
      const r = await pool.query<{ n: number }>(
        `select (select count(*) from meter_reports where state = 'pending')
              + (select count(*) from report_dirty_hours) as n`,
      );
      return r.rows[0]?.n ?? 0;
    },

    async lateRows() {
      const r = await pool.query<{ n: number }>(
        "select count(*) as n from meter_reports where late and state in ('sent', 'pending')",
      );
      return r.rows[0]?.n ?? 0;
    },
  };
}
