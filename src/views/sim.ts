// One SIM, everything the ledger knows about it (GET /api/sims/{sim}): its sessions with their
// readings, its anomalies, the customer history that decides who pays for each hour (its own
// assignments, the fleets its events named, those fleets' assignments) and its recent hours with
// the customer each is billed to.
import { z } from "zod";
import type { Ledger } from "../ledger/port.ts";
import type { SimAssignmentRow } from "../ledger/views-port.ts";
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

const assignmentItem = (a: SimAssignmentRow): z.output<typeof AssignmentItem> => ({
  id: a.id,
  target_type: a.targetType,
  target_id: a.targetId,
  customer_id: a.customerId,
  effective_from: iso(a.effectiveFrom),
  created_at: iso(a.createdAt),
});

export async function simDetail(
  ledger: Pick<Ledger, "views">,
  simSid: string,
  q: z.output<typeof SimQuery>,
): Promise<SimDetail> {
  const rec = await ledger.views.simRecord(simSid, q.sessions);
  const { info, usage } = rec;
  if (!info && usage.length === 0) throw new UnknownSim(`no SIM ${simSid} in the ledger`);
  const byCustomer = new Map<string | null, { bytes: number; first: number; last: number }>();
  for (const u of usage) {
    const e = byCustomer.get(u.customer) ?? { bytes: 0, first: u.hour, last: u.hour };
    e.bytes += u.bytes;
    e.first = Math.min(e.first, u.hour);
    e.last = Math.max(e.last, u.hour);
    byCustomer.set(u.customer, e);
  }
  const stays: { fleet_sid: string; first_hour: string; last_hour: string }[] = [];
  let current: { fleetSid: string; first: number; last: number } | null = null;
  for (const r of rec.fleetHours) {
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

  return {
    object: "sim",
    sim_sid: simSid,
    iccid: info?.iccid ?? null,
    unique_name: info?.uniqueName ?? null,
    fleet_sid: info?.fleetSid ?? null,
    account_sid: info?.accountSid ?? null,
    first_seen_at: info ? iso(info.firstSeenAt) : null,
    last_event_at: info ? iso(info.lastEventAt) : null,
    last_reading_at: iso(rec.lastReadingAt),
    bytes: usage.reduce((n, u) => n + u.bytes, 0),
    customers: [...byCustomer.entries()].map(([customerId, e]) => ({
      customer_id: customerId,
      bytes: e.bytes,
      first_hour: iso(e.first),
      last_hour: iso(e.last),
    })),
    hours: usage
      .map((u) => ({ hour: iso(u.hour), bytes: u.bytes, customer_id: u.customer }))
      .reverse()
      .slice(0, q.hours),
    sessions: rec.sessions.map((s) => ({
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
      readings: s.readings.map((r) => ({
        t: iso(r.t),
        event_sid: r.eventSid,
        cumulative: r.cumulative,
        window_bytes: r.windowBytes,
        window_start: iso(r.windowStart),
        ended: r.ended,
        received_at: iso(r.receivedAt),
      })),
    })),
    sessions_total: rec.sessionsTotal,
    anomalies: rec.anomalies.map((a) => ({
      id: a.id,
      session_sid: a.sessionSid,
      event_sid: a.eventSid,
      kind: a.kind,
      detail: a.detail,
      detected_at: iso(a.detectedAt),
    })),
    history: {
      assignments: rec.own.map(assignmentItem),
      fleets: stays,
      fleet_assignments: rec.fleetAssignments.map(assignmentItem),
    },
  };
}
