import { and, eq, sql } from "drizzle-orm";
import {
  type Attribution,
  attributeSession,
  diffBuckets,
  type Reading,
} from "../accounting/attribute.ts";
import { DAY_MS, dayStart } from "../accounting/buckets.ts";
import type { Db } from "../db/client.ts";
import {
  anomalies,
  eventCounts,
  meta,
  quarantine,
  readings,
  seenEvents,
  sessionBuckets,
  sessions,
  sims,
  usageHourly,
} from "../db/schema.ts";
import { type ConnectionEvent, classifyCloudEvent, isBillingKind } from "../events/schema.ts";
import type { Delivery, IngestJobData } from "./job.ts";

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
        accountSid: p("accountSid"),
        firstSeenAt: p("now"),
        lastEventAt: p("eventTs"),
      })
      .onConflictDoUpdate({
        target: sims.simSid,
        set: {
          iccid: sql`excluded.iccid`,
          fleetSid: sql`coalesce(excluded.fleet_sid, ${sims.fleetSid})`,
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
      .onConflictDoNothing()
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
          lastReadingAt: sql`excluded.last_reading_at`,
          updatedAt: sql`excluded.updated_at`,
        },
      })
      .prepare(),
    sessionBuckets: db
      .select({ hour: sessionBuckets.hour, bytes: sessionBuckets.bytes })
      .from(sessionBuckets)
      .where(eq(sessionBuckets.sessionSid, p("sessionSid")))
      .prepare(),
    setSessionBucket: db
      .insert(sessionBuckets)
      .values({ sessionSid: p("sessionSid"), hour: p("hour"), bytes: p("bytes") })
      .onConflictDoUpdate({
        target: [sessionBuckets.sessionSid, sessionBuckets.hour],
        set: { bytes: sql`excluded.bytes` },
      })
      .prepare(),
    deleteSessionBucket: db
      .delete(sessionBuckets)
      .where(
        and(eq(sessionBuckets.sessionSid, p("sessionSid")), eq(sessionBuckets.hour, p("hour"))),
      )
      .prepare(),
    addUsage: db
      .insert(usageHourly)
      .values({ simSid: p("simSid"), hour: p("hour"), bytes: p("bytes"), seq: p("seq") })
      .onConflictDoUpdate({
        target: [usageHourly.simSid, usageHourly.hour],
        set: { bytes: sql`${usageHourly.bytes} + excluded.bytes`, seq: sql`excluded.seq` },
      })
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
    nextSeq: db
      .insert(meta)
      .values({ key: "usage_seq", value: 1 })
      .onConflictDoUpdate({ target: meta.key, set: { value: sql`${meta.value} + 1` } })
      .returning({ value: meta.value })
      .prepare(),
  };
}

export type IngestStatements = ReturnType<typeof prepareIngest>;

export type IngestContext = {
  db: Db;
  stmts: IngestStatements;
  settings: IngestSettings;
  now: () => number;
};

type SessionTouch = { simSid: string; startMs: number | null };

function rawOf(value: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(value) ?? String(value);
  } catch {
    s = String(value);
  }
  return s.length > MAX_RAW_CHARS ? `${s.slice(0, MAX_RAW_CHARS)}…(truncated)` : s;
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
  db.transaction(
    () => {
      const now = ctx.now();
      const oldest = now - settings.retentionDays * DAY_MS;
      const touched = new Map<string, SessionTouch>();
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
        if (delivery.unparsable) {
          summary.events++;
          quarantineOne(
            delivery,
            -1,
            null,
            delivery.unparsable.error,
            delivery.unparsable.raw.slice(0, MAX_RAW_CHARS),
          );
          continue;
        }
        const events = delivery.events ?? [];
        for (let position = 0; position < events.length; position++) {
          summary.events++;
          const raw = events[position];
          const c = classifyCloudEvent(raw);
          if (c.kind === "test") {
            summary.testEvents++;
            continue;
          }
          if (c.kind === "invalid") {
            quarantineOne(delivery, position, c.eventSid, c.reason, rawOf(raw));
            continue;
          }
          const e = c.event;
          if (e.timestampMs < oldest) {
            quarantineOne(
              delivery,
              position,
              e.eventSid,
              `event time ${new Date(e.timestampMs).toISOString()} is older than the ${settings.retentionDays}-day retention: its dedupe record may be pruned, so counting it could double-bill; raise RETENTION_DAYS to replay old archives`,
              rawOf(raw),
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
          stmts.upsertSim.run({
            simSid: e.simSid,
            iccid: e.iccid,
            fleetSid: e.fleetSid,
            accountSid: e.accountSid,
            now,
            eventTs: e.timestampMs,
          });
          if (isBilled(e, settings)) {
            recordReading(stmts, e);
            const prev = touched.get(e.sessionSid as string);
            touched.set(e.sessionSid as string, {
              simSid: e.simSid,
              startMs: prev?.startMs ?? e.sessionStartMs,
            });
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
        const seq = (stmts.nextSeq.get() as { value: number }).value;
        for (const [sessionSid, t] of touched) reattribute(ctx, sessionSid, t, seq, now);
        summary.sessions = touched.size;
      }
    },
    { behavior: "immediate" },
  );
  return summary;
}

function isBilled(e: ConnectionEvent, settings: IngestSettings): boolean {
  if (e.kind === "data-session.ended") return true;
  return e.kind === "data-session.updated" && settings.billingMode === "realtime";
}

function recordReading(stmts: IngestStatements, e: ConnectionEvent): void {
  stmts.insertReading.run({
    eventSid: e.eventSid,
    sessionSid: e.sessionSid,
    t: e.readingMs,
    cumulative: e.cumulativeTotal,
    windowBytes: e.windowTotal,
    windowStart: e.windowStartMs,
    ended: e.kind === "data-session.ended" ? 1 : 0,
  });
}

/** Recomputes one session's hour buckets from all its readings and applies the difference. */
function reattribute(
  ctx: IngestContext,
  sessionSid: string,
  touch: SessionTouch,
  seq: number,
  now: number,
): void {
  const { stmts, settings } = ctx;
  const existing = stmts.sessionRow.get({ sessionSid }) as
    | { startTime: number | null; simSid: string }
    | undefined;
  const simSid = existing?.simSid ?? touch.simSid;
  const startTime = existing?.startTime ?? touch.startMs;
  const rows = stmts.sessionReadings.all({ sessionSid }) as {
    eventSid: string;
    t: number;
    cumulative: number | null;
    windowBytes: number | null;
    windowStart: number | null;
    ended: boolean;
  }[];
  const list: Reading[] = rows.map((r) => ({
    eventSid: r.eventSid,
    t: r.t,
    cumulative: r.cumulative,
    window: r.windowBytes,
    windowStart: r.windowStart,
    ended: Boolean(r.ended),
  }));
  const result = attributeSession(list, {
    attribution: settings.attribution,
    sessionStart: startTime,
    maxBytesPerSecond: settings.maxBytesPerSecond,
  });
  const previous = new Map<number, number>();
  for (const b of stmts.sessionBuckets.all({ sessionSid }) as { hour: number; bytes: number }[]) {
    previous.set(b.hour, b.bytes);
  }
  for (const [hour, delta] of diffBuckets(previous, result.buckets)) {
    const next = result.buckets.get(hour);
    if (next === undefined) stmts.deleteSessionBucket.run({ sessionSid, hour });
    else stmts.setSessionBucket.run({ sessionSid, hour, bytes: next });
    stmts.addUsage.run({ simSid, hour, bytes: delta, seq });
  }
  for (const a of result.anomalies) {
    stmts.insertAnomaly.run({
      sessionSid,
      eventSid: a.eventSid,
      kind: a.kind,
      detail: a.detail,
      now,
    });
  }
  let lastReadingAt = 0;
  let endTime: number | null = null;
  for (const r of list) {
    if (r.t > lastReadingAt) lastReadingAt = r.t;
    if (r.ended) endTime = endTime === null ? r.t : Math.min(endTime, r.t);
  }
  stmts.upsertSession.run({
    sessionSid,
    simSid,
    startTime,
    endTime,
    totalBytes: result.total,
    windowSumBytes: result.windowSum,
    basis: result.basis,
    readingCount: list.length,
    lastReadingAt,
    now,
  });
}
