import fc from "fast-check";
import type { Reading } from "../../src/accounting/attribute.ts";
import { bucketOf } from "../../src/accounting/buckets.ts";

// Generated data sessions and an independent in-order reference for what they must bill.

export type GenSession = {
  sessionSid: string;
  simSid: string;
  start: number;
  /** in time order; the last one is the ended reading */
  readings: Reading[];
};

const BASE = Date.UTC(2026, 10, 20, 0, 0, 0);

export const sessionArb = (simSid: string, sessionSid: string) =>
  fc
    .record({
      startOffset: fc.integer({ min: 0, max: 6 * 3600 }),
      steps: fc.array(
        fc.record({
          gap: fc.integer({ min: 1, max: 2 * 3600 }),
          bytes: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 50_000_000 })),
        }),
        { minLength: 1, maxLength: 25 },
      ),
    })
    .map(({ startOffset, steps }): GenSession => {
      const start = BASE + startOffset * 1000;
      let t = start;
      let total = 0;
      const readings: Reading[] = steps.map((s, i) => {
        const windowStart = t;
        t += s.gap * 1000;
        total += s.bytes;
        return {
          eventSid: `EZ${sessionSid.slice(-16)}${i.toString(16).padStart(16, "0")}`,
          t,
          cumulative: total,
          window: s.bytes,
          windowStart,
          ended: i === steps.length - 1,
        };
      });
      return { sessionSid, simSid, start, readings };
    });

/** The reference: walk readings in time order, each increment lands in its reading's bucket. */
export function inOrderBuckets(readings: readonly Reading[]): Map<number, number> {
  const out = new Map<number, number>();
  let prev = 0;
  for (const r of [...readings].sort((a, b) => a.t - b.t)) {
    const c = r.cumulative ?? 0;
    const inc = c - prev;
    prev = c;
    if (inc !== 0) out.set(bucketOf(r.t), (out.get(bucketOf(r.t)) ?? 0) + inc);
  }
  return out;
}

/** Drop any subset of non-ended readings, duplicate some, shuffle: what the network does. */
export const perturbationArb = (readings: readonly Reading[]) =>
  fc
    .record({
      keep: fc.array(fc.boolean(), { minLength: readings.length, maxLength: readings.length }),
      dup: fc.array(fc.nat(3), { minLength: readings.length, maxLength: readings.length }),
      seed: fc.integer(),
    })
    .map(({ keep, dup, seed }) => {
      const survivors = readings.filter((r, i) => r.ended || keep[i]);
      const delivered: Reading[] = [];
      survivors.forEach((r) => {
        const i = readings.indexOf(r);
        for (let k = 0; k <= (dup[i] ?? 0); k++) delivered.push(r);
      });
      return { survivors, delivered: shuffle(delivered, seed) };
    });

export function shuffle<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  let s = seed >>> 0 || 1;
  for (let i = out.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}
