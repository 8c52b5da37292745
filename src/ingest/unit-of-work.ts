import type { Attribution, Reading } from "../accounting/attribute.ts";
import { dayStart } from "../accounting/buckets.ts";
import { type ConnectionEvent, isBillingKind } from "../events/schema.ts";
import { calls, type Steps } from "../ledger/steps.ts";
import {
  type Admitted,
  type AnomalyRow,
  admit,
  type QuarantineRow,
  type SeenEvent,
  type SessionKey,
} from "./admit.ts";
import { expandJob, rawOf } from "./expand.ts";
import { type FleetObservation, fleetObservations } from "./fleet.ts";
import type { Delivery, IngestJobData } from "./job.ts";
import {
  bucketsJson,
  decideSession,
  refuseOverflow,
  type SessionDecision,
  type SessionTouch,
  type StoredSession,
  touchSessions,
} from "./sessions.ts";
import { countClaimed, emptySummary, type IngestSummary, uncount } from "./summary.ts";

// One job's unit of work, written once: counts its deliveries exactly once. Dedupe rows, readings
// and the usage they change are written in the one transaction the adapter runs this in, so a
// crash or a re-run job cannot lose or double-count bytes. Never throws for bad input: unusable
// events are quarantined. Every op is called once per job (arrays in, maps and sets out), so a
// ledger across a network costs the same round trips for 1 event or 2,000.

export type IngestSettings = {
  billingMode: "realtime" | "ended-only";
  attribution: Attribution;
  retentionDays: number;
  maxBytesPerSecond: number;
};

export type SimHour = { simSid: string; hour: number };

/**
 * A SIM as one event describes it (the event itself: no copy per event on the hot path); written
 * in event order, as only a newer event may change the SIM's row.
 */
export type SimSighting = Pick<
  ConnectionEvent,
  "simSid" | "iccid" | "fleetSid" | "simUniqueName" | "accountSid" | "timestampMs"
>;

/** A readings row: the reading accounting uses, and its session. */
export type ReadingRow = Reading & { sessionSid: string };

export type SessionWrite = StoredSession & { sessionSid: string; updatedAt: number };

export type UsageWrite = { hour: number; simSid: string; bytes: number };

export type EventCountWrite = { simSid: string; day: number; kind: string; n: number };

/** Everything the job writes once its reads are done, in the order the adapter writes it. */
export interface IngestWrites {
  /** the job's clock: sims.first_seen_at, sessions.updated_at, anomalies.detected_at */
  now: number;
  /** upserts on (delivery, position): the latest reason wins */
  quarantine: QuarantineRow[];
  /** claims taken back: the events of refused sessions */
  unclaim: string[];
  sims: SimSighting[];
  readings: ReadingRow[];
  sessions: SessionWrite[];
  /** sessions locked as placeholders but not written (a ledger that locks by inserting) */
  dropPlaceholders: string[];
  /**
   * added to usage_hourly; one per (hour, sim), in the order the sessions first change them (an
   * adapter that must lock in key order sorts); bytes may be 0 or negative
   */
  usage: UsageWrite[];
  dirtyHours: number[];
  /** insert if absent on (session, event, kind) */
  anomalies: AnomalyRow[];
  /** added to event_counts; one per (sim, day, kind) */
  eventCounts: EventCountWrite[];
}

/** The statement layer, one call per job for each. */
export interface IngestOps {
  /** meta pruned_before, 0 when never pruned */
  prunedBefore(): number;
  /** the stored rows of these sessions (PG: locked FOR UPDATE); absent ones are new */
  lockSessions(keys: readonly SessionKey[]): Map<string, StoredSession>;
  /** inserts the claims that are absent; returns the event_sids new to the ledger */
  claimEvents(seen: readonly SeenEvent[]): Set<string>;
  /** the stored readings of these sessions (not this job's: they are written last) */
  readingsOf(sessionSids: readonly string[]): Map<string, Reading[]>;
  /** records sim_fleet_hours and marks report_dirty_sims (the rule of fleet.ts) */
  observeFleets(obs: readonly FleetObservation[]): void;
  /** `${hour}|${simSid}` → stored bytes; absent cells are 0 */
  usageAt(cells: readonly SimHour[]): Map<string, number>;
  write(w: IngestWrites): void;
}

const op = calls<IngestOps>();

export const cellKey = (hour: number, simSid: string) => `${hour}|${simSid}`;

export function* ingestSteps(
  job: IngestJobData | readonly Delivery[],
  s: IngestSettings,
  now: number,
): Steps<IngestOps, IngestSummary> {
  const expanded = expandJob(job);
  const floor = yield* op("prunedBefore");
  const admitted = admit(expanded, s, now, floor);
  const locked =
    admitted.sessionKeys.length > 0
      ? yield* op("lockSessions", admitted.sessionKeys)
      : new Map<string, StoredSession>();
  const fresh =
    admitted.seen.length > 0 ? yield* op("claimEvents", admitted.seen) : new Set<string>();
  const { sessions: touched, readings } = touchSessions(admitted.candidates, fresh);
  const first = touched.map((t) => decideSession(locked.get(t.sessionSid), t, null, s));
  const needHistory = touched.filter((_, i) => first[i] === null).map((t) => t.sessionSid);
  const history =
    needHistory.length > 0 ? yield* op("readingsOf", needHistory) : new Map<string, Reading[]>();
  const observations = fleetObservations(admitted.candidates, fresh);
  if (observations.length > 0) yield* op("observeFleets", observations);
  const decided = touched.map(
    (t, i) =>
      first[i] ??
      (decideSession(
        locked.get(t.sessionSid),
        t,
        history.get(t.sessionSid) ?? [],
        s,
      ) as SessionDecision),
  );
  const cells = positiveCells(decided);
  const usage = cells.length > 0 ? yield* op("usageAt", cells) : new Map<string, number>();
  const out = finish(admitted, fresh, locked, touched, readings, decided, usage, now);
  yield* op("write", out.writes);
  return out.summary;
}

/** The cells some session adds bytes to: the overflow check reads them. */
export function positiveCells(decided: readonly SessionDecision[]): SimHour[] {
  const seen = new Set<string>();
  const cells: SimHour[] = [];
  for (const d of decided) {
    for (const [hour, delta] of d.deltas) {
      if (delta <= 0) continue;
      const k = cellKey(hour, d.simSid);
      if (seen.has(k)) continue;
      seen.add(k);
      cells.push({ hour, simSid: d.simSid });
    }
  }
  return cells;
}

/**
 * The write set and the summary. Sessions are applied in first-seen order: one whose change
 * would overflow an hour (counting the sessions before it in this job) is refused whole: its
 * readings are not written, its claims are taken back and its events quarantined. The SIM
 * sightings, fleet observations and odd-field anomalies of its events stay.
 */
export function finish(
  admitted: Admitted,
  fresh: ReadonlySet<string>,
  locked: ReadonlyMap<string, StoredSession>,
  touched: readonly SessionTouch[],
  /** this job's readings, in event order */
  readings: readonly ReadingRow[],
  decided: readonly SessionDecision[],
  stored: ReadonlyMap<string, number>,
  now: number,
): { writes: IngestWrites; summary: IngestSummary } {
  const summary = emptySummary();
  summary.events = admitted.events;
  summary.testEvents = admitted.testEvents;
  summary.duplicates = admitted.duplicatesInJob;
  const w: IngestWrites = {
    now,
    quarantine: [...admitted.quarantine],
    unclaim: [],
    sims: [],
    readings: [],
    sessions: [],
    dropPlaceholders: [],
    usage: [],
    dirtyHours: [],
    anomalies: [],
    eventCounts: [],
  };
  for (const a of admitted.anomalies)
    if (!a.ifCounted || fresh.has(a.row.eventSid)) w.anomalies.push(a.row);
  const counts = new Map<string, EventCountWrite>();
  for (const c of admitted.candidates) {
    const e = c.event;
    if (!fresh.has(e.eventSid)) {
      summary.duplicates++;
      continue;
    }
    countClaimed(summary, e.kind, e.timestampMs, now);
    w.sims.push(e);
    if (c.billed) continue;
    summary.nonBilling++;
    const day = dayStart(e.timestampMs);
    const kind = isBillingKind(e.kind) ? `${e.kind} (not billed: ended-only)` : e.kind;
    const k = `${e.simSid}|${day}|${kind}`;
    const n = counts.get(k);
    if (n) n.n++;
    else counts.set(k, { simSid: e.simSid, day, kind, n: 1 });
  }
  w.eventCounts = [...counts.values()];

  const applied = new Map<string, UsageWrite>();
  const dirty = new Set<number>();
  const refused = new Set<string>();
  for (let i = 0; i < decided.length; i++) {
    const d = decided[i] as SessionDecision;
    const t = touched[i] as SessionTouch;
    const reason = refuseOverflow(d, (hour) => {
      const k = cellKey(hour, d.simSid);
      return (stored.get(k) ?? 0) + (applied.get(k)?.bytes ?? 0);
    });
    if (reason !== null) {
      // Keep the session's events for inspection; nothing of its change is written.
      refused.add(d.sessionSid);
      uncount(summary, t.readings.length);
      for (let j = 0; j < t.readings.length; j++) {
        const r = t.readings[j] as Reading;
        const src = t.sources[j] as SessionTouch["sources"][number];
        w.unclaim.push(r.eventSid);
        w.quarantine.push({
          receivedAt: src.delivery.receivedAt,
          source: src.delivery.source,
          deliveryId: src.delivery.id,
          position: src.position,
          eventSid: r.eventSid,
          reason,
          raw: rawOf(src.raw) ?? "(event not re-serialisable)",
        });
        w.anomalies.push({
          sessionSid: d.sessionSid,
          eventSid: r.eventSid,
          kind: "unrepresentable_total",
          detail: reason,
        });
      }
      continue;
    }
    for (const [hour, delta] of d.deltas) {
      if (delta === 0) continue;
      const k = cellKey(hour, d.simSid);
      const u = applied.get(k);
      if (u) u.bytes += delta;
      else applied.set(k, { hour, simSid: d.simSid, bytes: delta });
      dirty.add(hour);
    }
    for (const a of d.anomalies) {
      w.anomalies.push({
        sessionSid: d.sessionSid,
        eventSid: a.eventSid,
        kind: a.kind,
        detail: a.detail,
      });
    }
    w.sessions.push({
      sessionSid: d.sessionSid,
      simSid: d.simSid,
      startTime: d.startTime,
      endTime: d.state.endTime,
      totalBytes: d.state.totalBytes,
      windowSumBytes: d.state.windowSumBytes,
      basis: d.state.basis,
      readingCount: d.state.readingCount,
      lastReadingAt: d.state.lastReadingAt ?? 0,
      buckets: bucketsJson(d.buckets),
      updatedAt: now,
    });
  }
  w.readings =
    refused.size === 0 ? [...readings] : readings.filter((r) => !refused.has(r.sessionSid));
  const written = new Set(w.sessions.map((x) => x.sessionSid));
  for (const k of admitted.sessionKeys) {
    if (!locked.has(k.sessionSid) && !written.has(k.sessionSid))
      w.dropPlaceholders.push(k.sessionSid);
  }
  w.usage = [...applied.values()];
  w.dirtyHours = [...dirty];
  summary.quarantined = w.quarantine.length;
  summary.sessions = touched.length;
  return { writes: w, summary };
}
