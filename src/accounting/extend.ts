import type { Anomaly, Reading } from "./attribute.ts";
import { bucketOf } from "./buckets.ts";

// The common case in O(1): readings that arrive in time order extend a session's attribution
// without re-reading its history. Under ATTRIBUTION=end a reading later than every known one only
// raises the bytes attributed from its own time on, so the only bucket that changes is its own.
// Anything else (late readings, prorate, schema v1) goes through attributeSession; both give
// identical results (test/unit/extend.test.ts).

export type SessionState = {
  /** largest cumulative total so far (0 for a new session); sessions.total_bytes */
  totalBytes: number;
  /** latest reading time, null for a new session */
  lastReadingAt: number | null;
  /** earliest ended reading's time */
  endTime: number | null;
  /** sum of the window totals; sessions.window_sum_bytes */
  windowSumBytes: number;
  readingCount: number;
  basis: "cumulative" | "window";
  startTime: number | null;
};

export type Extension = {
  state: SessionState;
  /** bucket start → bytes to add */
  deltas: Map<number, number>;
  anomalies: Anomaly[];
};

/** Returns null when the readings cannot be appended (then re-attribute the whole session). */
export function extendSession(
  state: SessionState,
  incoming: readonly Reading[],
  maxBytesPerSecond: number,
): Extension | null {
  if (state.readingCount > 0 && state.basis !== "cumulative") return null;
  const sorted = [...incoming].sort((a, b) => a.t - b.t);
  let prev = state.lastReadingAt;
  for (const r of sorted) {
    if (r.cumulative === null) return null;
    if (prev !== null && r.t <= prev) return null;
    prev = r.t;
  }
  const next: SessionState = { ...state, basis: "cumulative" };
  const deltas = new Map<number, number>();
  const anomalies: Anomaly[] = [];
  for (const r of sorted) {
    const c = r.cumulative as number;
    const from = next.lastReadingAt ?? next.startTime;
    if (next.endTime !== null && r.t > next.endTime) {
      anomalies.push({
        kind: "reading_after_end",
        eventSid: r.eventSid,
        detail: `reading at ${new Date(r.t).toISOString()} is after the session ended at ${new Date(next.endTime).toISOString()}`,
      });
    }
    if (c > next.totalBytes) {
      const inc = c - next.totalBytes;
      if (from !== null) {
        const seconds = Math.max(1, (r.t - from) / 1000);
        if (inc / seconds > maxBytesPerSecond) {
          anomalies.push({
            kind: "impossible_rate",
            eventSid: r.eventSid,
            detail: `${inc} bytes in ${seconds} s exceeds ${maxBytesPerSecond} bytes/s`,
          });
        }
      }
      const b = bucketOf(r.t);
      deltas.set(b, (deltas.get(b) ?? 0) + inc);
      next.totalBytes = c;
    } else if (c < next.totalBytes) {
      anomalies.push({
        kind: "cumulative_decrease",
        eventSid: r.eventSid,
        detail: `cumulative total ${c} is below ${next.totalBytes} seen earlier in the session; not billed negative`,
      });
    }
    if (r.ended && next.endTime === null) next.endTime = r.t;
    next.lastReadingAt = r.t;
    next.windowSumBytes += r.window ?? 0;
    next.readingCount++;
  }
  return { state: next, deltas, anomalies };
}
