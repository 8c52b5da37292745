import type Database from "better-sqlite3";
import { and, eq, is, Param, Placeholder, sql } from "drizzle-orm";
import type { Reading } from "../../accounting/attribute.ts";
import { dayStart } from "../../accounting/buckets.ts";
import type { Db } from "../../db/client.ts";
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
} from "../../db/schema.ts";
import {
  type FleetMark,
  type FleetObservation,
  markAfter,
  needsReplan,
} from "../../ingest/fleet.ts";
import type { Delivery, IngestJobData } from "../../ingest/job.ts";
import { PRUNED_BEFORE } from "../../ingest/prune.ts";
import type { StoredSession } from "../../ingest/sessions.ts";
import type { IngestSummary } from "../../ingest/summary.ts";
import {
  cellKey,
  type IngestOps,
  type IngestSettings,
  ingestSteps,
} from "../../ingest/unit-of-work.ts";
import { runSync } from "../steps.ts";

// The SQLite side of ingest: the statements and the process-local caches. Everything here is
// synchronous on purpose: the whole job runs inside one better-sqlite3 transaction with nothing
// able to interleave (the reporter and the gauges share this connection), so no function in this
// folder may be asynchronous (test/unit/steps.test.ts checks).

/**
 * The statement drizzle builds, prepared on the raw connection and bound by position: the same
 * SQL without drizzle's per-call parameter mapping, which cost ~7 % of ingest CPU on the
 * statements run once per event or session. `order` is the bind order the callers use; a schema
 * change that reorders it fails here, when the statements are prepared, not on the hot path.
 */
function positional(
  db: Db,
  query: { toSQL(): { sql: string; params: unknown[] } },
  order: readonly string[],
): Database.Statement {
  const { sql: text, params } = query.toSQL();
  const names = params.map((x) =>
    is(x, Param) && is(x.value, Placeholder)
      ? x.value.name
      : is(x, Placeholder)
        ? x.name
        : `(constant ${String(x)})`,
  );
  if (names.join(",") !== order.join(",")) {
    throw new Error(`ingest statement binds ${names.join(", ")}, not ${order.join(", ")}: ${text}`);
  }
  return db.$client.prepare(text);
}

/** Prepared statements, built once per database (drizzle's per-call builder costs ~6x). */
export function prepareIngest(db: Db) {
  const p = sql.placeholder;
  const sessionColumns = {
    simSid: sessions.simSid,
    startTime: sessions.startTime,
    endTime: sessions.endTime,
    totalBytes: sessions.totalBytes,
    windowSumBytes: sessions.windowSumBytes,
    basis: sessions.basis,
    readingCount: sessions.readingCount,
    lastReadingAt: sessions.lastReadingAt,
    buckets: sessions.buckets,
  };
  return {
    /** (eventSid, eventTs, kind, receivedAt) */
    insertSeen: positional(
      db,
      db
        .insert(seenEvents)
        .values({
          eventSid: p("eventSid"),
          eventTs: p("eventTs"),
          kind: p("kind"),
          receivedAt: p("receivedAt"),
        })
        .onConflictDoNothing(),
      ["eventSid", "eventTs", "kind", "receivedAt"],
    ),
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
    /** (sessionSid, t, eventSid, cumulative, window, windowStart, ended as 1/0) */
    insertReading: positional(
      db,
      db
        .insert(readings)
        .values({
          eventSid: p("eventSid"),
          sessionSid: p("sessionSid"),
          t: p("t"),
          cumulative: p("cumulative"),
          windowBytes: p("window"),
          windowStart: p("windowStart"),
          ended: p("ended"),
        })
        .onConflictDoNothing(),
      ["sessionSid", "t", "eventSid", "cumulative", "window", "windowStart", "ended"],
    ),
    countEvents: db
      .insert(eventCounts)
      .values({ simSid: p("simSid"), day: p("day"), kind: p("kind"), count: p("n") })
      .onConflictDoUpdate({
        target: [eventCounts.simSid, eventCounts.day, eventCounts.kind],
        set: { count: sql`${eventCounts.count} + excluded.count` },
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
    /** (sessionSid) → the values of sessionColumns, in their order (raw mode) */
    sessionRow: positional(
      db,
      db
        .select(sessionColumns)
        .from(sessions)
        .where(eq(sessions.sessionSid, p("sessionSid"))),
      ["sessionSid"],
    ).raw(true),
    /** (the columns of sessions in table order; updatedAt last) */
    upsertSession: positional(
      db,
      db
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
          updatedAt: p("updatedAt"),
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
        }),
      [
        "sessionSid",
        "simSid",
        "startTime",
        "endTime",
        "totalBytes",
        "windowSumBytes",
        "basis",
        "readingCount",
        "buckets",
        "lastReadingAt",
        "updatedAt",
      ],
    ),
    /** (hour, simSid, bytes) */
    addUsage: positional(
      db,
      db
        .insert(usageHourly)
        .values({ hour: p("hour"), simSid: p("simSid"), bytes: p("bytes") })
        .onConflictDoUpdate({
          target: [usageHourly.hour, usageHourly.simSid],
          set: { bytes: sql`${usageHourly.bytes} + excluded.bytes` },
        }),
      ["hour", "simSid", "bytes"],
    ),
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
    /** (hour, simSid) → bytes */
    usageAt: positional(
      db,
      db
        .select({ bytes: usageHourly.bytes })
        .from(usageHourly)
        .where(and(eq(usageHourly.hour, p("hour")), eq(usageHourly.simSid, p("simSid")))),
      ["hour", "simSid"],
    ).pluck(true),
    deleteSeen: db
      .delete(seenEvents)
      .where(eq(seenEvents.eventSid, p("eventSid")))
      .prepare(),
    /** simSid → what was last written for it (see sqliteIngestOps' write) */
    simsWritten: new Map<string, string>(),
    /** simSid → its latest observed hour, and that hour's fleet when it holds only one */
    fleetsWritten: new Map<string, FleetMark>(),
  };
}

export type IngestStatements = ReturnType<typeof prepareIngest>;

/** The readings columns as drizzle returns them. */
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

/**
 * The ops of one job. What the job adds to the caches waits in it until `commit`, called once the
 * transaction has committed: a rolled-back job must leave no trace in them.
 */
export function sqliteIngestOps(stmts: IngestStatements): IngestOps & { commit(): void } {
  /** simSid → the sims row key written by this job */
  const simsPending: [string, string][] = [];
  /** this job's fleet marks; the committed ones are in stmts.fleetsWritten */
  const fleetCache = new Map<string, FleetMark>();
  return {
    prunedBefore: () => (stmts.prunedBefore.get() as { value: number } | undefined)?.value ?? 0,
    lockSessions(keys) {
      // One writer per database: reading the rows is all the serialisation SQLite needs.
      const found = new Map<string, StoredSession>();
      for (const { sessionSid } of keys) {
        const r = stmts.sessionRow.get(sessionSid) as unknown[] | undefined;
        if (!r) continue;
        found.set(sessionSid, {
          simSid: r[0] as string,
          startTime: r[1] as number | null,
          endTime: r[2] as number | null,
          totalBytes: r[3] as number,
          windowSumBytes: r[4] as number,
          basis: r[5] as StoredSession["basis"],
          readingCount: r[6] as number,
          lastReadingAt: r[7] as number,
          buckets: r[8] as string,
        });
      }
      return found;
    },
    claimEvents(seen) {
      const fresh = new Set<string>();
      const insert = stmts.insertSeen;
      for (const s of seen) {
        if (insert.run(s.eventSid, s.eventTs, s.kind, s.receivedAt).changes > 0)
          fresh.add(s.eventSid);
      }
      return fresh;
    },
    readingsOf(sessionSids) {
      const out = new Map<string, Reading[]>();
      for (const sessionSid of sessionSids) {
        const rows = stmts.sessionReadings.all({ sessionSid }) as ReadingRowLike[];
        out.set(sessionSid, rows.map(toReading));
      }
      return out;
    },
    observeFleets(obs) {
      for (const o of obs) recordFleet(stmts, fleetCache, o);
    },
    usageAt(cells) {
      const out = new Map<string, number>();
      for (const { hour, simSid } of cells) {
        const bytes = stmts.usageAt.get(hour, simSid) as number | undefined;
        if (bytes !== undefined) out.set(cellKey(hour, simSid), bytes);
      }
      return out;
    },
    write(w) {
      const now = w.now;
      for (const q of w.quarantine) stmts.quarantine.run(q);
      for (const eventSid of w.unclaim) stmts.deleteSeen.run({ eventSid });
      for (const s of w.sims) {
        // One write per SIM per day and change, not per event: a page write saved on the hot path.
        const key = `${s.iccid}|${s.fleetSid}|${s.simUniqueName}|${dayStart(s.timestampMs)}`;
        if (stmts.simsWritten.get(s.simSid) === key) continue;
        stmts.upsertSim.run({
          simSid: s.simSid,
          iccid: s.iccid,
          fleetSid: s.fleetSid,
          uniqueName: s.simUniqueName,
          accountSid: s.accountSid,
          now,
          eventTs: s.timestampMs,
        });
        simsPending.push([s.simSid, key]);
      }
      for (const r of w.readings) {
        stmts.insertReading.run(
          r.sessionSid,
          r.t,
          r.eventSid,
          r.cumulative,
          r.window,
          r.windowStart,
          r.ended ? 1 : 0,
        );
      }
      for (const s of w.sessions) {
        stmts.upsertSession.run(
          s.sessionSid,
          s.simSid,
          s.startTime,
          s.endTime,
          s.totalBytes,
          s.windowSumBytes,
          s.basis,
          s.readingCount,
          s.buckets,
          s.lastReadingAt,
          s.updatedAt,
        );
      }
      for (const u of w.usage) stmts.addUsage.run(u.hour, u.simSid, u.bytes);
      for (const hour of w.dirtyHours) stmts.markDirty.run({ hour });
      for (const a of w.anomalies) {
        stmts.insertAnomaly.run({
          sessionSid: a.sessionSid,
          eventSid: a.eventSid,
          kind: a.kind,
          detail: a.detail,
          now,
        });
      }
      for (const c of w.eventCounts) stmts.countEvents.run(c);
      // dropPlaceholders: SQLite locks nothing by inserting, so there is nothing to drop.
    },
    commit() {
      for (const [sim, key] of simsPending) stmts.simsWritten.set(sim, key);
      for (const [sim, f] of fleetCache) stmts.fleetsWritten.set(sim, f);
      if (stmts.fleetsWritten.size > 1_000_000) stmts.fleetsWritten.clear();
      if (stmts.simsWritten.size > 1_000_000) stmts.simsWritten.clear();
    },
  };
}

/**
 * Records one fleet observation by the rule of src/ingest/fleet.ts. In-order events of an
 * unchanged fleet cost one insert per SIM-hour and no reads (the cache short-cut); anything else
 * reads the SIM's neighbouring hours, including this job's earlier rows.
 */
function recordFleet(
  stmts: IngestStatements,
  /** this job's marks; the committed ones are in stmts.fleetsWritten */
  cache: Map<string, FleetMark>,
  { simSid, hour, fleetSid }: FleetObservation,
): void {
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
  cache.set(simSid, markAfter(hour, fleetSid, later, same));
  const before = n?.fleets ? n.fleets.split(" ") : [];
  if (needsReplan(inserted, before, later, same, fleetSid)) stmts.markDirtySim.run({ simSid });
}

/**
 * One job in one IMMEDIATE transaction, driven synchronously: the clock is read once the write
 * lock is held, and the caches take this job's entries only after it commits.
 */
export function ingestJobSqlite(
  db: Db,
  stmts: IngestStatements,
  job: IngestJobData | readonly Delivery[],
  settings: IngestSettings,
  now: () => number,
): IngestSummary {
  const ops = sqliteIngestOps(stmts);
  const summary = db.transaction(() => runSync(ingestSteps(job, settings, now()), ops), {
    behavior: "immediate",
  });
  ops.commit();
  return summary;
}
