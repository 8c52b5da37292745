import { and, eq, sql } from "drizzle-orm";
import {
  type Anomaly,
  type Attribution,
  attributeSession,
  diffBuckets,
  type Reading,
} from "../accounting/attribute.ts";
import { DAY_MS, dayStart, hourStart } from "../accounting/buckets.ts";
import { extendSession, type SessionState } from "../accounting/extend.ts";
import type { Db } from "../db/client.ts";
import {
  anomalies,
  eventCounts,
  meta,
  quarantine,
  readings,
  reportDirtyHours,
  reportDirtySims,
  seenEvents,
  sessions,
  simFleetHours,
  sims,
  usageHourly,
} from "../db/schema.ts";
import {
  type ConnectionEvent,
  classifyCloudEvent,
  isBillingKind,
  parseDeliveryBody,
} from "../events/schema.ts";
import type { Delivery, IngestJobData } from "./job.ts";
import { PRUNED_BEFORE } from "./prune.ts";

export type IngestSettings = {
  billingMode: "realtime" | "ended-only";
  attribution: Attribution;
  retentionDays: number;
  maxBytesPerSecond: number;
};

export type IngestSummary = {
  events: number;
  counted: number;
  duplicates: number;
  quarantined: number;
  testEvents: number;
  nonBilling: number;
  sessions: number;
  /** event time → counted, ms, for each newly counted event */
  lagsMs: number[];
  byKind: Record<string, number>;
};

const MAX_RAW_CHARS = 1_000_000;

/** Prepared statements, built once per database (drizzle's per-call builder costs ~6x). */
export function prepareIngest(db: Db) {
  const p = sql.placeholder;
  return {
    insertSeen: db
      .insert(seenEvents)
      .values({
        eventSid: p("eventSid"),
        eventTs: p("eventTs"),
        kind: p("kind"),
        receivedAt: p("receivedAt"),
      })
      .onConflictDoNothing()
      .prepare(),
    upsertSim: db
      .insert(sims)
      .values({
        simSid: p("simSid"),
        iccid: p("iccid"),
        fleetSid: p("fleetSid"),
        uniqueName: p("uniqueName"),
        accountSid: p("accountSid"),
        firstSeenAt: p("now"),
        lastEventAt: p("eventTs"),
      })
      .onConflictDoUpdate({
        target: sims.simSid,
        // Only a newer event may change the SIM's ICCID or fleet: a delivery retried hours later
        // must not move the SIM back to the fleet (and the customer) it has left.
        set: {
          iccid: sql`case when excluded.last_event_at >= ${sims.lastEventAt} then excluded.iccid else ${sims.iccid} end`,
          fleetSid: sql`case when excluded.last_event_at >= ${sims.lastEventAt} then coalesce(excluded.fleet_sid, ${sims.fleetSid}) else ${sims.fleetSid} end`,
          uniqueName: sql`case when excluded.last_event_at >= ${sims.lastEventAt} then coalesce(excluded.unique_name, ${sims.uniqueName}) else ${sims.uniqueName} end`,
          lastEventAt: sql`max(${sims.lastEventAt}, excluded.last_event_at)`,
        },
      })
      .prepare(),
    insertReading: db
      .insert(readings)
      .values({
        eventSid: p("eventSid"),
        sessionSid: p("sessionSid"),
        t: p("t"),
        cumulative: p("cumulative"),
        windowBytes: p("windowBytes"),
        windowStart: p("windowStart"),
        ended: p("ended"),
      })
      .onConflictDoNothing()
      .prepare(),
    countEvent: db
      .insert(eventCounts)
      .values({ simSid: p("simSid"), day: p("day"), kind: p("kind"), count: 1 })
      .onConflictDoUpdate({
        target: [eventCounts.simSid, eventCounts.day, eventCounts.kind],
        set: { count: sql`${eventCounts.count} + 1` },
      })
      .prepare(),
    quarantine: db
      .insert(quarantine)
      .values({
        receivedAt: p("receivedAt"),
        source: p("source"),
        deliveryId: p("deliveryId"),
        position: p("position"),
        eventSid: p("eventSid"),
        reason: p("reason"),
        raw: p("raw"),
      })
      // A re-run of the same delivery (crash, stall, an operator's requeue) keeps one row, with
      // the latest reason: a requeued event refused for another cause must say so.
      .onConflictDoUpdate({
        target: [quarantine.deliveryId, quarantine.position],
        set: { reason: sql`excluded.reason` },
      })
      .prepare(),
    sessionReadings: db
      .select()
      .from(readings)
      .where(eq(readings.sessionSid, p("sessionSid")))
      .prepare(),
    sessionRow: db
      .select()
      .from(sessions)
      .where(eq(sessions.sessionSid, p("sessionSid")))
      .prepare(),
    upsertSession: db
      .insert(sessions)
      .values({
        sessionSid: p("sessionSid"),
        simSid: p("simSid"),
        startTime: p("startTime"),
        endTime: p("endTime"),
        totalBytes: p("totalBytes"),
        windowSumBytes: p("windowSumBytes"),
        basis: p("basis"),
        readingCount: p("readingCount"),
        lastReadingAt: p("lastReadingAt"),
        buckets: p("buckets"),
        updatedAt: p("now"),
      })
      .onConflictDoUpdate({
        target: sessions.sessionSid,
        set: {
          startTime: sql`excluded.start_time`,
          endTime: sql`excluded.end_time`,
          totalBytes: sql`excluded.total_bytes`,
          windowSumBytes: sql`excluded.window_sum_bytes`,
          basis: sql`excluded.basis`,
          readingCount: sql`excluded.reading_count`,
          buckets: sql`excluded.buckets`,
          lastReadingAt: sql`excluded.last_reading_at`,
          updatedAt: sql`excluded.updated_at`,
        },
      })
      .prepare(),
    addUsage: db
      .insert(usageHourly)
      .values({ hour: p("hour"), simSid: p("simSid"), bytes: p("bytes") })
      .onConflictDoUpdate({
        target: [usageHourly.hour, usageHourly.simSid],
        set: { bytes: sql`${usageHourly.bytes} + excluded.bytes` },
      })
      .prepare(),
    markDirty: db
      .insert(reportDirtyHours)
      .values({ hour: p("hour") })
      .onConflictDoNothing()
      .prepare(),
    insertAnomaly: db
      .insert(anomalies)
      .values({
        sessionSid: p("sessionSid"),
        eventSid: p("eventSid"),
        kind: p("kind"),
        detail: p("detail"),
        detectedAt: p("now"),
      })
      .onConflictDoNothing()
      .prepare(),
    prunedBefore: db
      .select({ value: meta.value })
      .from(meta)
      .where(eq(meta.key, PRUNED_BEFORE))
      .prepare(),
    insertFleetHour: db
      .insert(simFleetHours)
      .values({ simSid: p("simSid"), hour: p("hour"), fleetSid: p("fleetSid") })
      .onConflictDoNothing()
      .prepare(),
    /** the fleets of the SIM's latest observed hour before `hour`, and whether any later one exists */
    fleetNeighbours: db.$client.prepare<
      { simSid: string; hour: number },
      { fleets: string | null; later: number; same: number }
    >(
      `select
         (select group_concat(fleet_sid, ' ') from sim_fleet_hours
            where sim_sid = @simSid and hour = (select max(hour) from sim_fleet_hours where sim_sid = @simSid and hour < @hour)) as fleets,
         exists(select 1 from sim_fleet_hours where sim_sid = @simSid and hour > @hour) as later,
         (select count(*) from sim_fleet_hours where sim_sid = @simSid and hour = @hour) as same`,
    ),
    markDirtySim: db
      .insert(reportDirtySims)
      .values({ simSid: p("simSid") })
      .onConflictDoNothing()
      .prepare(),
    usageAt: db
      .select({ bytes: usageHourly.bytes })
      .from(usageHourly)
      .where(and(eq(usageHourly.hour, p("hour")), eq(usageHourly.simSid, p("simSid"))))
      .prepare(),
    deleteReading: db
      .delete(readings)
      .where(and(eq(readings.sessionSid, p("sessionSid")), eq(readings.eventSid, p("eventSid"))))
      .prepare(),
    deleteSeen: db
      .delete(seenEvents)
      .where(eq(seenEvents.eventSid, p("eventSid")))
      .prepare(),
    /** simSid → what was last written for it (see ingestDeliveries) */
    simsWritten: new Map<string, string>(),
    /** simSid → its latest observed hour, and that hour's fleet when it holds only one */
    fleetsWritten: new Map<string, FleetMark>(),
  };
}

export type IngestStatements = ReturnType<typeof prepareIngest>;

export type IngestContext = {
  db: Db;
  stmts: IngestStatements;
  settings: IngestSettings;
  now: () => number;
};

type EventSource = { delivery: Delivery; position: number; raw: unknown };
type SessionTouch = {
  simSid: string;
  startMs: number | null;
  readings: Reading[];
  /** where each reading's event came from, to quarantine it if the session must be refused */
  sources: EventSource[];
};

type Expanded =
  | { position: number; value: unknown }
  | { position: number; error: string; raw: string };

/**
 * The events of one delivery with their positions in what arrived. A body that is not JSON is one
 * item at position -1; a replayed line that is not JSON is an item at its own position.
 */
function* expandDelivery(d: Delivery): Generator<Expanded> {
  if (d.body !== undefined) {
    const parsed = parseDeliveryBody(d.body);
    if (!parsed.ok) {
      yield { position: -1, error: parsed.error, raw: d.body.slice(0, MAX_RAW_CHARS) };
      return;
    }
    for (let i = 0; i < parsed.events.length; i++) yield { position: i, value: parsed.events[i] };
    return;
  }
  if (d.lines !== undefined) {
    for (let i = 0; i < d.lines.length; i++) {
      const line = d.lines[i] as string;
      try {
        yield { position: i, value: JSON.parse(line) };
      } catch (e) {
        yield {
          position: i,
          error: `line is not valid JSON: ${(e as Error).message}`,
          raw: line.slice(0, MAX_RAW_CHARS),
        };
      }
    }
    return;
  }
  const events = d.events ?? [];
  for (let i = 0; i < events.length; i++) yield { position: i, value: events[i] };
}

/** The event as JSON text, or null when it cannot be re-serialised (e.g. nested thousands deep). */
function rawOf(value: unknown): string | null {
  try {
    const s = JSON.stringify(value) ?? String(value);
    return s.length > MAX_RAW_CHARS ? `${s.slice(0, MAX_RAW_CHARS)}…(truncated)` : s;
  } catch {
    return null;
  }
}

/**
 * Counts one job's deliveries exactly once, in one SQLite transaction: dedupe rows, readings and
 * the usage they change commit together or not at all, so a crash or a re-run job cannot lose or
 * double-count bytes. Never throws for bad input: unusable events are quarantined.
 */
export function ingestDeliveries(ctx: IngestContext, job: IngestJobData): IngestSummary {
  const { db, stmts, settings } = ctx;
  const summary: IngestSummary = {
    events: 0,
    counted: 0,
    duplicates: 0,
    quarantined: 0,
    testEvents: 0,
    nonBilling: 0,
    sessions: 0,
    lagsMs: [],
    byKind: {},
  };
  // SIM rows written by this transaction enter the caches only once it commits.
  let written: [string, string][] = [];
  let fleetsWritten: [string, FleetMark][] = [];
  db.transaction(
    () => {
      const now = ctx.now();
      const retentionCutoff = now - settings.retentionDays * DAY_MS;
      // Raising RETENTION_DAYS cannot bring back dedupe records that were already deleted.
      const prunedBefore = (stmts.prunedBefore.get() as { value: number } | undefined)?.value ?? 0;
      const oldest = Math.max(retentionCutoff, prunedBefore);
      const touched = new Map<string, SessionTouch>();
      written = [];
      fleetsWritten = [];
      const fleetCache = new Map<string, FleetMark>();
      const quarantineOne = (
        d: Delivery,
        position: number,
        eventSid: string | null,
        reason: string,
        raw: string,
      ) => {
        stmts.quarantine.run({
          receivedAt: d.receivedAt,
          source: d.source,
          deliveryId: d.id,
          position,
          eventSid,
          reason,
          raw,
        });
        summary.quarantined++;
      };
      for (const delivery of job.deliveries) {
        for (const item of expandDelivery(delivery)) {
          summary.events++;
          const position = item.position;
          if ("error" in item) {
            quarantineOne(delivery, position, null, item.error, item.raw);
            continue;
          }
          const raw = item.value;
          const c = classifyCloudEvent(raw);
          if (c.kind === "test") {
            summary.testEvents++;
            continue;
          }
          if (c.kind === "invalid") {
            const text =
              rawOf(raw) ??
              `(event not re-serialisable; its whole delivery:) ${(delivery.body ?? "").slice(0, MAX_RAW_CHARS)}`;
            quarantineOne(delivery, position, c.eventSid, c.reason, text);
            continue;
          }
          const e = c.event;
          if (
            settings.billingMode === "ended-only" &&
            e.kind === "data-session.ended" &&
            e.cumulativeTotal === null
          ) {
            // Without the cumulative total an ended event carries only its last window: billing
            // it would silently drop the rest of the session (500 B of a 10 MB session).
            quarantineOne(
              delivery,
              position,
              e.eventSid,
              ENDED_ONLY_NEEDS_CUMULATIVE,
              rawOf(raw) ?? "(event not re-serialisable)",
            );
            stmts.insertAnomaly.run({
              sessionSid: e.sessionSid ?? "",
              eventSid: e.eventSid,
              kind: "ended_only_without_cumulative",
              detail: ENDED_ONLY_NEEDS_CUMULATIVE,
              now,
            });
            continue;
          }
          if (e.timestampMs < oldest) {
            quarantineOne(
              delivery,
              position,
              e.eventSid,
              e.timestampMs < prunedBefore
                ? `event time ${new Date(e.timestampMs).toISOString()} is before ${new Date(prunedBefore).toISOString()}, up to which dedupe records were pruned: counting it could double-bill, so it is refused`
                : `event time ${new Date(e.timestampMs).toISOString()} is older than the ${settings.retentionDays}-day retention: its dedupe record may be pruned, so counting it could double-bill; raise RETENTION_DAYS (before anything is pruned) to replay old archives`,
              rawOf(raw) ?? "(event not re-serialisable)",
            );
            continue;
          }
          const seen = stmts.insertSeen.run({
            eventSid: e.eventSid,
            eventTs: e.timestampMs,
            kind: e.kind,
            receivedAt: delivery.receivedAt,
          });
          if (seen.changes === 0) {
            summary.duplicates++;
            continue;
          }
          summary.counted++;
          summary.byKind[e.kind] = (summary.byKind[e.kind] ?? 0) + 1;
          summary.lagsMs.push(now - e.timestampMs);
          // One write per SIM per day and change, not per event: a page write saved on the hot path.
          const simKey = `${e.iccid}|${e.fleetSid}|${e.simUniqueName}|${dayStart(e.timestampMs)}`;
          if (stmts.simsWritten.get(e.simSid) !== simKey) {
            stmts.upsertSim.run({
              simSid: e.simSid,
              iccid: e.iccid,
              fleetSid: e.fleetSid,
              uniqueName: e.simUniqueName,
              accountSid: e.accountSid,
              now,
              eventTs: e.timestampMs,
            });
            written.push([e.simSid, simKey]);
          }
          recordFleet(stmts, fleetCache, e);
          if (e.oddities.length > 0) {
            // Billed all the same: only descriptive fields are odd (one row per event).
            stmts.insertAnomaly.run({
              sessionSid: e.sessionSid ?? "",
              eventSid: e.eventSid,
              kind: "odd_field",
              detail: e.oddities.join("; "),
              now,
            });
          }
          if (isBilled(e, settings)) {
            const reading = recordReading(stmts, e);
            const source = { delivery, position, raw };
            const touch = touched.get(e.sessionSid as string);
            if (touch) {
              touch.readings.push(reading);
              touch.sources.push(source);
              touch.startMs ??= e.sessionStartMs;
            } else {
              touched.set(e.sessionSid as string, {
                simSid: e.simSid,
                startMs: e.sessionStartMs,
                readings: [reading],
                sources: [source],
              });
            }
          } else {
            summary.nonBilling++;
            stmts.countEvent.run({
              simSid: e.simSid,
              day: dayStart(e.timestampMs),
              kind: isBillingKind(e.kind) ? `${e.kind} (not billed: ended-only)` : e.kind,
            });
          }
        }
      }
      if (touched.size > 0) {
        const changed = new Set<number>();
        for (const [sessionSid, t] of touched) {
          const refused = applySession(ctx, sessionSid, t, changed, now);
          if (refused === null) continue;
          // Undo what this job recorded for the session and keep its events for inspection.
          for (let i = 0; i < t.readings.length; i++) {
            const r = t.readings[i] as Reading;
            const src = t.sources[i] as EventSource;
            stmts.deleteReading.run({ sessionSid, eventSid: r.eventSid });
            stmts.deleteSeen.run({ eventSid: r.eventSid });
            summary.counted--;
            quarantineOne(
              src.delivery,
              src.position,
              r.eventSid,
              refused,
              rawOf(src.raw) ?? "(event not re-serialisable)",
            );
            stmts.insertAnomaly.run({
              sessionSid,
              eventSid: r.eventSid,
              kind: "unrepresentable_total",
              detail: refused,
              now,
            });
          }
        }
        for (const hour of changed) stmts.markDirty.run({ hour });
        summary.sessions = touched.size;
      }
      fleetsWritten = [...fleetCache.entries()];
    },
    { behavior: "immediate" },
  );
  for (const [sim, key] of written) stmts.simsWritten.set(sim, key);
  for (const [sim, f] of fleetsWritten) stmts.fleetsWritten.set(sim, f);
  if (stmts.fleetsWritten.size > 1_000_000) stmts.fleetsWritten.clear();
  if (stmts.simsWritten.size > 1_000_000) stmts.simsWritten.clear();
  return summary;
}

export const ENDED_ONLY_NEEDS_CUMULATIVE =
  "ended-only mode needs data_session_data_total (schema v2) on data-session.ended: without it only the last window would be billed; pin schema version 2 on the subscription, or use BILLING_MODE=realtime, then requeue (simmeter quarantine requeue)";

/**
 * A SIM's latest observed hour, and its fleet when that hour holds only one (else null). After an
 * out-of-order observation the latest hour is not known here: UNKNOWN sends the SIM's next events
 * down the full path until one of them is the latest again.
 */
type FleetMark = { latestHour: number; latestFleet: string | null };
const UNKNOWN: FleetMark = { latestHour: Number.POSITIVE_INFINITY, latestFleet: null };

/**
 * Records which fleet the SIM was in during the event's hour (the customer history), and marks
 * the SIM for a full re-plan when the observation can change the customer of any other hour: its
 * first observation (usage counted before it may now be covered), a fleet change, or an hour
 * observed out of order. In-order events of an unchanged fleet cost one insert per SIM-hour and
 * no reads.
 */
function recordFleet(
  stmts: IngestStatements,
  /** this job's marks; the committed ones are in stmts.fleetsWritten */
  cache: Map<string, FleetMark>,
  e: ConnectionEvent,
): void {
  // fleet_sid may be absent (or unusable): that says nothing about membership.
  if (e.fleetSid === null) return;
  const fleetSid = e.fleetSid;
  const simSid = e.simSid;
  const hour = hourStart(e.timestampMs);
  const known = cache.get(simSid) ?? stmts.fleetsWritten.get(simSid);
  if (known?.latestFleet === fleetSid) {
    if (hour === known.latestHour) return;
    if (hour > known.latestHour) {
      // The next hour of an unchanged fleet: nothing else's customer changes.
      stmts.insertFleetHour.run({ simSid, hour, fleetSid });
      cache.set(simSid, { latestHour: hour, latestFleet: fleetSid });
      return;
    }
  }
  const inserted = stmts.insertFleetHour.run({ simSid, hour, fleetSid }).changes > 0;
  const n = stmts.fleetNeighbours.get({ simSid, hour });
  const later = Boolean(n?.later);
  const same = n?.same ?? 1;
  if (!later) cache.set(simSid, { latestHour: hour, latestFleet: same === 1 ? fleetSid : null });
  else cache.set(simSid, UNKNOWN);
  if (!inserted) return;
  const before = n?.fleets ? n.fleets.split(" ") : [];
  if (later || same > 1 || before.length === 0 || before.some((f) => f !== fleetSid)) {
    stmts.markDirtySim.run({ simSid });
  }
}

function isBilled(e: ConnectionEvent, settings: IngestSettings): boolean {
  if (e.kind === "data-session.ended") return true;
  return e.kind === "data-session.updated" && settings.billingMode === "realtime";
}

function recordReading(stmts: IngestStatements, e: ConnectionEvent): Reading {
  const reading: Reading = {
    eventSid: e.eventSid,
    t: e.readingMs as number,
    cumulative: e.cumulativeTotal,
    window: e.windowTotal,
    windowStart: e.windowStartMs,
    ended: e.kind === "data-session.ended",
  };
  stmts.insertReading.run({
    eventSid: reading.eventSid,
    sessionSid: e.sessionSid,
    t: reading.t,
    cumulative: reading.cumulative,
    windowBytes: reading.window,
    windowStart: reading.windowStart,
    ended: reading.ended ? 1 : 0,
  });
  return reading;
}

type SessionRow = {
  simSid: string;
  startTime: number | null;
  endTime: number | null;
  totalBytes: number;
  windowSumBytes: number;
  basis: "cumulative" | "window";
  readingCount: number;
  lastReadingAt: number;
  buckets: string;
};

const parseBuckets = (json: string | undefined): Map<number, number> =>
  new Map(
    Object.entries(JSON.parse(json ?? "{}") as Record<string, number>).map(([k, v]) => [
      Number(k),
      v,
    ]),
  );

const bucketsJson = (m: ReadonlyMap<number, number>): string => {
  const o: Record<string, number> = {};
  for (const [k, v] of m) if (v !== 0) o[String(k)] = v;
  return JSON.stringify(o);
};

/**
 * Appends in-order readings in O(1) when it can; re-attributes the whole session otherwise.
 * Returns null when applied, or the reason the session's new readings are refused (nothing
 * written): an hour total that JavaScript could not represent exactly.
 */
function applySession(
  ctx: IngestContext,
  sessionSid: string,
  touch: SessionTouch,
  changed: Set<number>,
  now: number,
): string | null {
  const { stmts, settings } = ctx;
  const existing = stmts.sessionRow.get({ sessionSid }) as SessionRow | undefined;
  const simSid = existing?.simSid ?? touch.simSid;
  const startTime = existing?.startTime ?? touch.startMs;
  const previous = parseBuckets(existing?.buckets);
  // The readings of this job are already in the table; the state is from before them.
  const ext =
    settings.attribution === "end"
      ? extendSession(
          {
            total: existing?.totalBytes ?? 0,
            lastReadingAt: existing && existing.readingCount > 0 ? existing.lastReadingAt : null,
            endTime: existing?.endTime ?? null,
            windowSum: existing?.windowSumBytes ?? 0,
            readingCount: existing?.readingCount ?? 0,
            basis: existing?.basis ?? "cumulative",
            startTime,
          },
          touch.readings,
          settings.maxBytesPerSecond,
        )
      : null;
  let state: SessionState;
  let deltas: Map<number, number>;
  let buckets: Map<number, number>;
  let found: Anomaly[];
  if (ext) {
    ({ state, deltas } = ext);
    found = ext.anomalies;
    buckets = previous;
    for (const [hour, d] of deltas) buckets.set(hour, (buckets.get(hour) ?? 0) + d);
  } else {
    const all = (stmts.sessionReadings.all({ sessionSid }) as ReadingRowLike[]).map(toReading);
    const result = attributeSession(all, {
      attribution: settings.attribution,
      sessionStart: startTime,
      maxBytesPerSecond: settings.maxBytesPerSecond,
      maxSpreadMs: settings.retentionDays * DAY_MS,
    });
    buckets = result.buckets;
    deltas = diffBuckets(previous, result.buckets);
    found = result.anomalies;
    state = {
      total: result.total,
      windowSum: result.windowSum,
      basis: result.basis,
      readingCount: all.length,
      lastReadingAt: all.reduce<number | null>((m, r) => (m === null || r.t > m ? r.t : m), null),
      endTime: all.reduce<number | null>(
        (m, r) => (r.ended && (m === null || r.t < m) ? r.t : m),
        null,
      ),
      startTime,
    };
  }
  for (const [hour, delta] of deltas) {
    if (delta <= 0) continue;
    const current =
      (stmts.usageAt.get({ hour, simSid }) as { bytes: number } | undefined)?.bytes ?? 0;
    // Both are safe integers, so a sum beyond 2^53 - 1 cannot round down below it.
    if (current + delta > Number.MAX_SAFE_INTEGER) {
      return `SIM ${simSid} would hold more than ${Number.MAX_SAFE_INTEGER} bytes in the hour ${new Date(hour).toISOString()}, beyond what can be counted exactly; refused`;
    }
  }
  for (const [hour, delta] of deltas) {
    if (delta === 0) continue;
    stmts.addUsage.run({ hour, simSid, bytes: delta });
    changed.add(hour);
  }
  for (const a of found) {
    stmts.insertAnomaly.run({
      sessionSid,
      eventSid: a.eventSid,
      kind: a.kind,
      detail: a.detail,
      now,
    });
  }
  stmts.upsertSession.run({
    sessionSid,
    simSid,
    startTime,
    endTime: state.endTime,
    totalBytes: state.total,
    windowSumBytes: state.windowSum,
    basis: state.basis,
    readingCount: state.readingCount,
    lastReadingAt: state.lastReadingAt ?? 0,
    buckets: bucketsJson(buckets),
    now,
  });
  return null;
}

type ReadingRowLike = {
  eventSid: string;
  t: number;
  cumulative: number | null;
  windowBytes: number | null;
  windowStart: number | null;
  ended: boolean;
};

const toReading = (r: ReadingRowLike): Reading => ({
  eventSid: r.eventSid,
  t: r.t,
  cumulative: r.cumulative,
  window: r.windowBytes,
  windowStart: r.windowStart,
  ended: Boolean(r.ended),
});
