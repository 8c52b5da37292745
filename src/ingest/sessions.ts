import {
  type Anomaly,
  attributeSession,
  diffBuckets,
  type Reading,
} from "../accounting/attribute.ts";
import { DAY_MS } from "../accounting/buckets.ts";
import { extendSession, type SessionState } from "../accounting/extend.ts";
import type { Candidate } from "./admit.ts";
import { toReading } from "./admit.ts";
import type { IngestSettings, ReadingRow } from "./unit-of-work.ts";

// Pure: a session's stored state + this job's readings of it → its new state and the bytes each
// hour gains or loses. In-order readings extend the state in O(1); anything else re-attributes
// the whole session from its readings.

/** A sessions row as the ledger holds it. */
export type StoredSession = {
  simSid: string;
  startTime: number | null;
  endTime: number | null;
  totalBytes: number;
  windowSumBytes: number;
  basis: "cumulative" | "window";
  readingCount: number;
  lastReadingAt: number;
  /** JSON: hour start → bytes */
  buckets: string;
};

export type EventSource = Pick<Candidate, "delivery" | "position" | "raw">;

/** What this job brings to one session: its new readings, in event order. */
export type SessionTouch = {
  sessionSid: string;
  simSid: string;
  startTime: number | null;
  readings: Reading[];
  /** where each reading's event came from, to quarantine it if the session must be refused */
  sources: EventSource[];
};

export type SessionDecision = {
  sessionSid: string;
  simSid: string;
  startTime: number | null;
  state: SessionState;
  /** hour start → bytes to add (may be negative after a re-attribution) */
  deltas: Map<number, number>;
  /** the session's buckets after the change */
  buckets: Map<number, number>;
  anomalies: Anomaly[];
};

export const parseBuckets = (json: string | undefined): Map<number, number> =>
  new Map(
    Object.entries(JSON.parse(json ?? "{}") as Record<string, number>).map(([k, v]) => [
      Number(k),
      v,
    ]),
  );

export const bucketsJson = (m: ReadonlyMap<number, number>): string => {
  const o: Record<string, number> = {};
  for (const [k, v] of m) if (v !== 0) o[String(k)] = v;
  return JSON.stringify(o);
};

/**
 * The billed candidates that are new to the ledger, grouped by session in first-seen order, and
 * their readings in event order (the rows to insert, unless their session is refused).
 */
export function touchSessions(
  candidates: readonly Candidate[],
  fresh: ReadonlySet<string>,
): { sessions: SessionTouch[]; readings: ReadingRow[] } {
  const touched = new Map<string, SessionTouch>();
  const readings: ReadingRow[] = [];
  for (const c of candidates) {
    const e = c.event;
    if (!c.billed || !fresh.has(e.eventSid)) continue;
    const reading = toReading(e);
    readings.push(reading);
    const touch = touched.get(reading.sessionSid);
    if (touch) {
      touch.readings.push(reading);
      touch.sources.push(c);
      touch.startTime ??= e.sessionStartMs;
    } else {
      touched.set(reading.sessionSid, {
        sessionSid: reading.sessionSid,
        simSid: e.simSid,
        startTime: e.sessionStartMs,
        readings: [reading],
        sources: [c],
      });
    }
  }
  return { sessions: [...touched.values()], readings };
}

/**
 * The stored readings and this job's: the set the readings table holds once this job's are
 * inserted (its key is session, t, event_sid; a second insert of a key does nothing). Order only
 * matters to attributeSession when an event_sid appears twice (it keeps the first): then the
 * readings are put in the table's key order, as a read of the table gives them.
 */
export function mergeReadings(stored: readonly Reading[], incoming: readonly Reading[]): Reading[] {
  const sids = new Set<string>();
  for (const r of incoming) sids.add(r.eventSid);
  let clash = sids.size < incoming.length;
  for (let i = 0; !clash && i < stored.length; i++)
    clash = sids.has((stored[i] as Reading).eventSid);
  if (!clash) return stored.concat(incoming);
  const key = (r: Reading) => `${r.t}|${r.eventSid}`;
  const have = new Set(stored.map(key));
  const all = [...stored];
  for (const r of incoming) {
    const k = key(r);
    if (have.has(k)) continue;
    have.add(k);
    all.push(r);
  }
  return all.sort(
    (a, b) => a.t - b.t || (a.eventSid < b.eventSid ? -1 : a.eventSid > b.eventSid ? 1 : 0),
  );
}

/**
 * The session's new state. Under ATTRIBUTION=end, readings later than every stored one extend it
 * without its history; otherwise (a late reading, prorate, schema v1, a window-based session) the
 * whole session is re-attributed from `history`, its stored readings. Returns null when history
 * is needed and was not given (null): read it and call again.
 */
export function decideSession(
  stored: StoredSession | undefined,
  touch: SessionTouch,
  history: readonly Reading[] | null,
  settings: Pick<IngestSettings, "attribution" | "maxBytesPerSecond" | "retentionDays">,
): SessionDecision | null {
  const simSid = stored?.simSid ?? touch.simSid;
  const startTime = stored?.startTime ?? touch.startTime;
  const previous = parseBuckets(stored?.buckets);
  const ext =
    settings.attribution === "end"
      ? extendSession(
          {
            totalBytes: stored?.totalBytes ?? 0,
            lastReadingAt: stored && stored.readingCount > 0 ? stored.lastReadingAt : null,
            endTime: stored?.endTime ?? null,
            windowSumBytes: stored?.windowSumBytes ?? 0,
            readingCount: stored?.readingCount ?? 0,
            basis: stored?.basis ?? "cumulative",
            startTime,
          },
          touch.readings,
          settings.maxBytesPerSecond,
        )
      : null;
  const base = { sessionSid: touch.sessionSid, simSid, startTime };
  if (ext) {
    const buckets = previous;
    for (const [hour, d] of ext.deltas) buckets.set(hour, (buckets.get(hour) ?? 0) + d);
    return { ...base, state: ext.state, deltas: ext.deltas, buckets, anomalies: ext.anomalies };
  }
  if (history === null) return null;
  const all = mergeReadings(history, touch.readings);
  const result = attributeSession(all, {
    attribution: settings.attribution,
    sessionStart: startTime,
    maxBytesPerSecond: settings.maxBytesPerSecond,
    maxSpreadMs: settings.retentionDays * DAY_MS,
  });
  return {
    ...base,
    state: {
      totalBytes: result.total,
      windowSumBytes: result.windowSum,
      basis: result.basis,
      readingCount: all.length,
      lastReadingAt: all.reduce<number | null>((m, r) => (m === null || r.t > m ? r.t : m), null),
      endTime: all.reduce<number | null>(
        (m, r) => (r.ended && (m === null || r.t < m) ? r.t : m),
        null,
      ),
      startTime,
    },
    deltas: diffBuckets(previous, result.buckets),
    buckets: result.buckets,
    anomalies: result.anomalies,
  };
}

/**
 * Why the session's change must be refused, or null: an hour total beyond 2^53 - 1 bytes, which
 * JavaScript cannot count exactly. `current` is the hour's bytes before this session's change.
 */
export function refuseOverflow(
  d: SessionDecision,
  current: (hour: number) => number,
): string | null {
  for (const [hour, delta] of d.deltas) {
    if (delta <= 0) continue;
    // Both are safe integers, so a sum beyond 2^53 - 1 cannot round down below it.
    if (current(hour) + delta > Number.MAX_SAFE_INTEGER) {
      return `SIM ${d.simSid} would hold more than ${Number.MAX_SAFE_INTEGER} bytes in the hour ${new Date(hour).toISOString()}, beyond what can be counted exactly; refused`;
    }
  }
  return null;
}
