import { bucketOf, prorate } from "./buckets.ts";

// The core of simmeter: readings of one data session → bytes per hour bucket. Pure: the result
// depends only on the set of readings (not their order or multiplicity), so duplicates, reordering
// and lost updates cannot change the bill once a later reading arrives.

export type Attribution = "end" | "prorate";

export type Reading = {
  eventSid: string;
  /** reading time, epoch ms: update end (updated) or session end (ended) */
  t: number;
  /** data_session_data_total; null on schema v1 */
  cumulative: number | null;
  /** data_total of the window (update start → t); null when absent */
  window: number | null;
  windowStart: number | null;
  ended: boolean;
};

export type AnomalyKind =
  | "cumulative_decrease"
  | "reading_after_end"
  | "impossible_rate"
  | "mixed_schema"
  | "spread_clamped";

export type Anomaly = { kind: AnomalyKind; eventSid: string; detail: string };

export type SessionAttribution = {
  /** bucket start (ms) → bytes; only non-zero buckets */
  buckets: Map<number, number>;
  /** bytes attributed in all; equals the largest cumulative total (or the window sum on v1) */
  total: number;
  /** sum of window totals over the readings, for the data-quality signal total - windowSum */
  windowSum: number;
  anomalies: Anomaly[];
  basis: "cumulative" | "window";
};

export type AttributeOptions = {
  attribution: Attribution;
  sessionStart: number | null;
  /** rates above this are flagged (never dropped) */
  maxBytesPerSecond: number;
  /**
   * prorate: the longest interval one reading's bytes are spread over (the retention window). A
   * start further back is an anomaly, and the bytes of the part before the window go to the oldest
   * hour in it: one event can never turn into years of hourly rows and Stripe calls.
   */
  maxSpreadMs?: number;
};

function add(map: Map<number, number>, bucket: number, bytes: number): void {
  if (bytes === 0) return;
  const next = (map.get(bucket) ?? 0) + bytes;
  if (next === 0) map.delete(bucket);
  else map.set(bucket, next);
}

function uniqueSorted(readings: readonly Reading[]): Reading[] {
  const byId = new Map<string, Reading>();
  for (const r of readings) if (!byId.has(r.eventSid)) byId.set(r.eventSid, r);
  // Total order over the set: time, then value, then id, so equal inputs give equal outputs.
  return [...byId.values()].sort(
    (a, b) =>
      a.t - b.t ||
      (a.cumulative ?? -1) - (b.cumulative ?? -1) ||
      (a.eventSid < b.eventSid ? -1 : a.eventSid > b.eventSid ? 1 : 0),
  );
}

export function attributeSession(
  readings: readonly Reading[],
  opts: AttributeOptions,
): SessionAttribution {
  const sorted = uniqueSorted(readings);
  const anomalies: Anomaly[] = [];
  const buckets = new Map<number, number>();
  const withCumulative = sorted.filter((r) => r.cumulative !== null);
  const windowSum = sorted.reduce((s, r) => s + (r.window ?? 0), 0);

  const endReading = sorted.find((r) => r.ended);
  if (endReading) {
    for (const r of sorted) {
      if (r.t > endReading.t) {
        anomalies.push({
          kind: "reading_after_end",
          eventSid: r.eventSid,
          detail: `reading at ${new Date(r.t).toISOString()} is after the session ended at ${new Date(endReading.t).toISOString()}`,
        });
      }
    }
  }

  const spread = (r: Reading, amount: number, from: number | null, to: number) => {
    if (opts.attribution === "prorate" && from !== null) {
      const earliest = opts.maxSpreadMs === undefined ? from : to - opts.maxSpreadMs;
      if (from < earliest && amount > 0) {
        // Exact integer split: the share of (from, earliest] goes to the oldest hour in the window.
        const before = Number((BigInt(amount) * BigInt(earliest - from)) / BigInt(to - from));
        anomalies.push({
          kind: "spread_clamped",
          eventSid: r.eventSid,
          detail: `interval from ${new Date(from).toISOString()} is longer than the ${Math.round((opts.maxSpreadMs as number) / 86_400_000)}-day window; ${before} of ${amount} bytes from before ${new Date(earliest).toISOString()} put in its oldest hour`,
        });
        add(buckets, bucketOf(earliest + 1), before);
        for (const [b, v] of prorate(amount - before, earliest, to)) add(buckets, b, v);
        return;
      }
      for (const [b, v] of prorate(amount, from, to)) add(buckets, b, v);
    } else {
      add(buckets, bucketOf(to), amount);
    }
  };
  const checkRate = (r: Reading, amount: number, from: number | null) => {
    if (from === null || amount === 0) return;
    const seconds = Math.max(1, (r.t - from) / 1000);
    if (amount / seconds > opts.maxBytesPerSecond) {
      anomalies.push({
        kind: "impossible_rate",
        eventSid: r.eventSid,
        detail: `${amount} bytes in ${seconds} s exceeds ${opts.maxBytesPerSecond} bytes/s`,
      });
    }
  };

  if (withCumulative.length > 0) {
    if (withCumulative.length < sorted.length) {
      for (const r of sorted) {
        if (r.cumulative === null) {
          anomalies.push({
            kind: "mixed_schema",
            eventSid: r.eventSid,
            detail:
              "reading without data_session_data_total in a session that has cumulative totals; ignored",
          });
        }
      }
    }
    let max = 0;
    let prevT: number | null = opts.sessionStart;
    for (const r of withCumulative) {
      const c = r.cumulative as number;
      if (c > max) {
        const inc = c - max;
        checkRate(r, inc, prevT);
        spread(r, inc, prevT, r.t);
        max = c;
      } else if (c < max) {
        anomalies.push({
          kind: "cumulative_decrease",
          eventSid: r.eventSid,
          detail: `cumulative total ${c} is below ${max} seen earlier in the session; not billed negative`,
        });
      }
      prevT = prevT === null ? r.t : Math.max(prevT, r.t);
    }
    return { buckets, total: max, windowSum, anomalies, basis: "cumulative" };
  }

  // Schema v1: no cumulative totals, so the best available is the sum of windows per unique event.
  let total = 0;
  for (const r of sorted) {
    const w = r.window ?? 0;
    checkRate(r, w, r.windowStart);
    spread(r, w, r.windowStart, r.t);
    total += w;
  }
  return { buckets, total, windowSum, anomalies, basis: "window" };
}

/** Difference new - old per bucket (non-zero entries only): the corrections to apply. */
export function diffBuckets(
  previous: ReadonlyMap<number, number>,
  next: ReadonlyMap<number, number>,
): Map<number, number> {
  const out = new Map<number, number>();
  for (const [b, v] of next) {
    const d = v - (previous.get(b) ?? 0);
    if (d !== 0) out.set(b, d);
  }
  for (const [b, v] of previous) if (!next.has(b) && v !== 0) out.set(b, -v);
  return out;
}
