// One SIM, everything the ledger knows about it (GET /api/sims/{sim}): its sessions with their
// readings, its anomalies, the customer history that decides who pays for each hour (its own
// assignments, the fleets its events named, those fleets' assignments) and its recent hours with
// the customer each is billed to.
import { z } from "zod";
import { customerResolver } from "../customers/customers.ts";
import type { Db } from "../db/client.ts";
import { AssignmentItem } from "./customers.ts";
import { iso } from "./json.ts";
import { AnomalyItem } from "./quarantine.ts";

export const SimParams = z.object({
  sim: z
    .string()
    .regex(/^HS[0-9a-fA-F]{32}$/, "a Super SIM SID (HS + 32 hex digits)")
    .meta({ description: "Super SIM SID" }),
});

export const SimQuery = z.object({
  sessions: z.coerce
    .number()
    .int()
    .min(1)
    .max(200)
    .default(20)
    .meta({
      description: "newest sessions to include, with their readings",
      override: { type: "integer" },
    }),
  hours: z.coerce
    .number()
    .int()
    .min(1)
    .max(2400)
    .default(168)
    .meta({ description: "newest hours with usage to include", override: { type: "integer" } }),
});

const Reading = z
  .object({
    t: z.string().meta({ description: "the reading's time (the event's window end)" }),
    event_sid: z.string(),
    cumulative: z.number().int().nullable().meta({ description: "data_session_data_total" }),
    window_bytes: z.number().int().nullable(),
    window_start: z.string().nullable(),
    ended: z.boolean(),
    received_at: z
      .string()
      .nullable()
      .meta({ description: "when simmeter received it (null once its dedupe record is pruned)" }),
  })
  .meta({ id: "Reading" });

const Session = z
  .object({
    session_sid: z.string(),
    start_time: z.string().nullable(),
    end_time: z.string().nullable(),
    total_bytes: z.number().int(),
    basis: z.enum(["cumulative", "window"]),
    reading_count: z.number().int(),
    last_reading_at: z.string(),
    hours: z
      .array(z.object({ hour: z.string(), bytes: z.number().int() }))
      .meta({ description: "what the session contributes to each hour" }),
    readings: z.array(Reading),
  })
  .meta({ id: "Session" });

export const SimDetail = z
  .object({
    object: z.literal("sim"),
    sim_sid: z.string(),
    iccid: z.string().nullable(),
    unique_name: z.string().nullable(),
    fleet_sid: z.string().nullable(),
    account_sid: z.string().nullable(),
    first_seen_at: z.string().nullable(),
    last_event_at: z
      .string()
      .nullable()
      .meta({ description: "as recorded on the SIM's row (refreshed at most daily)" }),
    last_reading_at: z
      .string()
      .nullable()
      .meta({ description: "the newest reading of its sessions still in the ledger" }),
    bytes: z.number().int().meta({ description: "all counted bytes of the SIM" }),
    customers: z
      .array(
        z.object({
          customer_id: z.string().nullable().meta({ description: "null: unmapped" }),
          bytes: z.number().int(),
          first_hour: z.string(),
          last_hour: z.string(),
        }),
      )
      .meta({ description: "its bytes by the customer each hour is billed to" }),
    hours: z
      .array(
        z.object({ hour: z.string(), bytes: z.number().int(), customer_id: z.string().nullable() }),
      )
      .meta({ description: "its newest hours with usage, newest first" }),
    sessions: z.array(Session).meta({ description: "newest first" }),
    sessions_total: z.number().int(),
    anomalies: z.array(AnomalyItem),
    history: z.object({
      assignments: z
        .array(AssignmentItem)
        .meta({ description: "the SIM's own assignments, by SIM SID and ICCID" }),
      fleets: z
        .array(
          z.object({
            fleet_sid: z.string(),
            first_hour: z.string(),
            last_hour: z.string(),
          }),
        )
        .meta({ description: "fleet membership from its events, one entry per stay in a fleet" }),
      fleet_assignments: z.array(AssignmentItem),
    }),
  })
  .meta({ id: "Sim" });
export type SimDetail = z.output<typeof SimDetail>;

export class UnknownSim extends Error {
  override name = "UnknownSim";
}

type AssignmentRow = {
  id: number;
  targetType: "sim" | "iccid" | "fleet";
  targetId: string;
  customerId: string;
  effectiveFrom: number;
  createdAt: number;
};
const assignmentItem = (a: AssignmentRow): z.output<typeof AssignmentItem> => ({
  id: a.id,
  target_type: a.targetType,
  target_id: a.targetId,
  customer_id: a.customerId,
  effective_from: iso(a.effectiveFrom),
  created_at: iso(a.createdAt),
});

export function simDetail(db: Db, simSid: string, q: z.output<typeof SimQuery>): SimDetail {
  const c = db.$client;
  const info = c
    .prepare(
      "select iccid, fleet_sid as fleetSid, unique_name as uniqueName, account_sid as accountSid, first_seen_at as firstSeenAt, last_event_at as lastEventAt from sims where sim_sid = ?",
    )
    .get(simSid) as
    | {
        iccid: string;
        fleetSid: string | null;
        uniqueName: string | null;
        accountSid: string;
        firstSeenAt: number;
        lastEventAt: number;
      }
    | undefined;
  const usage = c
    .prepare("select hour, bytes from usage_hourly where sim_sid = ? and bytes != 0 order by hour")
    .all(simSid) as { hour: number; bytes: number }[];
  if (!info && usage.length === 0) throw new UnknownSim(`no SIM ${simSid} in the ledger`);
  const resolver = customerResolver(db);
  const owners = resolver.resolveHours(
    simSid,
    usage.map((u) => u.hour),
  );
  const byCustomer = new Map<string | null, { bytes: number; first: number; last: number }>();
  usage.forEach((u, i) => {
    const k = owners[i] ?? null;
    const e = byCustomer.get(k) ?? { bytes: 0, first: u.hour, last: u.hour };
    e.bytes += u.bytes;
    e.first = Math.min(e.first, u.hour);
    e.last = Math.max(e.last, u.hour);
    byCustomer.set(k, e);
  });

  // sessions has no index on sim_sid: one scan of the (retention-pruned) table.
  const totals = c
    .prepare("select count(*) as n, max(last_reading_at) as last from sessions where sim_sid = ?")
    .get(simSid) as { n: number; last: number | null };
  const sessionsTotal = totals.n;
  const sessions = c
    .prepare(
      `select session_sid as sessionSid, start_time as startTime, end_time as endTime,
              total_bytes as totalBytes, basis, reading_count as readingCount,
              last_reading_at as lastReadingAt, buckets
         from sessions where sim_sid = ?
        order by coalesce(start_time, last_reading_at) desc limit ?`,
    )
    .all(simSid, q.sessions) as {
    sessionSid: string;
    startTime: number | null;
    endTime: number | null;
    totalBytes: number;
    basis: "cumulative" | "window";
    readingCount: number;
    lastReadingAt: number;
    buckets: string;
  }[];
  const readingsOf = c.prepare(
    `select r.t, r.event_sid as eventSid, r.cumulative, r.window_bytes as windowBytes,
            r.window_start as windowStart, r.ended, s.received_at as receivedAt
       from readings r left join seen_events s on s.event_sid = r.event_sid
      where r.session_sid = ? order by r.t, r.event_sid`,
  );
  const anomalies = c
    .prepare(
      `select id, session_sid as sessionSid, event_sid as eventSid, kind, detail, detected_at as detectedAt
         from anomalies where session_sid in (select session_sid from sessions where sim_sid = ?)
        order by id desc limit 200`,
    )
    .all(simSid) as {
    id: number;
    sessionSid: string;
    eventSid: string;
    kind: string;
    detail: string;
    detectedAt: number;
  }[];

  const fleetRows = c
    .prepare(
      "select hour, fleet_sid as fleetSid from sim_fleet_hours where sim_sid = ? order by hour, fleet_sid",
    )
    .all(simSid) as { hour: number; fleetSid: string }[];
  const stays: { fleet_sid: string; first_hour: string; last_hour: string }[] = [];
  let current: { fleetSid: string; first: number; last: number } | null = null;
  for (const r of fleetRows) {
    if (current && current.fleetSid === r.fleetSid) {
      current.last = r.hour;
      continue;
    }
    if (current)
      stays.push({
        fleet_sid: current.fleetSid,
        first_hour: iso(current.first),
        last_hour: iso(current.last),
      });
    current = { fleetSid: r.fleetSid, first: r.hour, last: r.hour };
  }
  if (current)
    stays.push({
      fleet_sid: current.fleetSid,
      first_hour: iso(current.first),
      last_hour: iso(current.last),
    });
  const fleets = [
    ...new Set([...fleetRows.map((r) => r.fleetSid), ...(info?.fleetSid ? [info.fleetSid] : [])]),
  ];
  const assignmentRows = (targetType: string, ids: string[]): AssignmentRow[] =>
    ids.length === 0
      ? []
      : (c
          .prepare(
            `select id, target_type as targetType, target_id as targetId, customer_id as customerId,
                    effective_from as effectiveFrom, created_at as createdAt
               from assignments where target_type = ? and target_id in (${ids.map(() => "?").join(",")})
              order by effective_from, id`,
          )
          .all(targetType, ...ids) as AssignmentRow[]);
  const own = [
    ...assignmentRows("sim", [simSid]),
    ...(info ? assignmentRows("iccid", [info.iccid]) : []),
  ].sort((a, b) => a.effectiveFrom - b.effectiveFrom || a.id - b.id);

  return {
    object: "sim",
    sim_sid: simSid,
    iccid: info?.iccid ?? null,
    unique_name: info?.uniqueName ?? null,
    fleet_sid: info?.fleetSid ?? null,
    account_sid: info?.accountSid ?? null,
    first_seen_at: info ? iso(info.firstSeenAt) : null,
    last_event_at: info ? iso(info.lastEventAt) : null,
    last_reading_at: iso(totals.last),
    bytes: usage.reduce((n, u) => n + u.bytes, 0),
    customers: [...byCustomer.entries()].map(([customerId, e]) => ({
      customer_id: customerId,
      bytes: e.bytes,
      first_hour: iso(e.first),
      last_hour: iso(e.last),
    })),
    hours: usage
      .map((u, i) => ({ hour: iso(u.hour), bytes: u.bytes, customer_id: owners[i] ?? null }))
      .reverse()
      .slice(0, q.hours),
    sessions: sessions.map((s) => ({
      session_sid: s.sessionSid,
      start_time: iso(s.startTime),
      end_time: iso(s.endTime),
      total_bytes: s.totalBytes,
      basis: s.basis,
      reading_count: s.readingCount,
      last_reading_at: iso(s.lastReadingAt),
      hours: Object.entries(JSON.parse(s.buckets) as Record<string, number>)
        .map(([h, bytes]) => ({ hour: Number(h), bytes }))
        .filter((h) => h.bytes !== 0)
        .sort((a, b) => a.hour - b.hour)
        .map((h) => ({ hour: iso(h.hour), bytes: h.bytes })),
      readings: (
        readingsOf.all(s.sessionSid) as {
          t: number;
          eventSid: string;
          cumulative: number | null;
          windowBytes: number | null;
          windowStart: number | null;
          ended: number;
          receivedAt: number | null;
        }[]
      ).map((r) => ({
        t: iso(r.t),
        event_sid: r.eventSid,
        cumulative: r.cumulative,
        window_bytes: r.windowBytes,
        window_start: iso(r.windowStart),
        ended: Boolean(r.ended),
        received_at: iso(r.receivedAt),
      })),
    })),
    sessions_total: sessionsTotal,
    anomalies: anomalies.map((a) => ({
      id: a.id,
      session_sid: a.sessionSid,
      event_sid: a.eventSid,
      kind: a.kind,
      detail: a.detail,
      detected_at: iso(a.detectedAt),
    })),
    history: {
      assignments: own.map(assignmentItem),
      fleets: stays,
      fleet_assignments: assignmentRows("fleet", fleets).map(assignmentItem),
    },
  };
}
