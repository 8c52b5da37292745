import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { attributeSession, type Reading } from "../../src/accounting/attribute.ts";
import { extendSession, type SessionState } from "../../src/accounting/extend.ts";
import { sessionArb } from "../helpers/sessions.ts";

const MAX_RATE = 250_000_000;
const empty = (startTime: number): SessionState => ({
  totalBytes: 0,
  lastReadingAt: null,
  endTime: null,
  windowSumBytes: 0,
  readingCount: 0,
  basis: "cumulative",
  startTime,
});
const sortedKinds = (a: { kind: string; eventSid: string }[]) =>
  a.map((x) => `${x.kind}:${x.eventSid}`).sort();

describe("extending a session with in-order readings", () => {
  it("gives exactly what re-attributing the whole session gives, for any split into arriving groups", () => {
    const arb = sessionArb(`HS${"1".repeat(32)}`, `PI${"2".repeat(32)}`).chain((s) =>
      fc
        .tuple(
          fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 30 }),
          // Some sessions report a decrease or a reading after the end: anomalies must match too.
          fc.option(fc.nat(s.readings.length - 1)),
        )
        .map(([sizes, corrupt]) => {
          const readings = s.readings.map((r) => ({ ...r }));
          if (corrupt !== null && readings.length > 1) {
            const r = readings[corrupt] as Reading;
            r.cumulative = Math.max(0, (r.cumulative ?? 0) - 7);
          }
          return { s, readings, sizes };
        }),
    );
    fc.assert(
      fc.property(arb, ({ s, readings, sizes }) => {
        let state = empty(s.start);
        const buckets = new Map<number, number>();
        const anomalies: { kind: string; eventSid: string }[] = [];
        let i = 0;
        for (let k = 0; i < readings.length; k++) {
          const n = sizes[k % sizes.length] ?? 1;
          const ext = extendSession(state, readings.slice(i, i + n), MAX_RATE);
          expect(ext).not.toBeNull();
          if (!ext) return;
          for (const [b, d] of ext.deltas) buckets.set(b, (buckets.get(b) ?? 0) + d);
          anomalies.push(...ext.anomalies);
          state = ext.state;
          i += n;
        }
        const full = attributeSession(readings, {
          attribution: "end",
          sessionStart: s.start,
          maxBytesPerSecond: MAX_RATE,
        });
        for (const [b, v] of [...buckets]) if (v === 0) buckets.delete(b);
        expect(Object.fromEntries(buckets)).toEqual(Object.fromEntries(full.buckets));
        expect(state.totalBytes).toBe(full.total);
        expect(state.windowSumBytes).toBe(full.windowSum);
        expect(sortedKinds(anomalies)).toEqual(sortedKinds(full.anomalies));
      }),
      { numRuns: 400 },
    );
  });

  it.each([
    ["a reading older than the latest known one", [{ t: 50 }], 100, "cumulative"],
    ["a reading at the same time as the latest known one", [{ t: 100 }], 100, "cumulative"],
    [
      "a schema v1 reading without a cumulative total",
      [{ t: 200, cumulative: null }],
      100,
      "cumulative",
    ],
    ["a session counted from window totals", [{ t: 200 }], 100, "window"],
  ] as const)(
    "refuses %s (the caller re-attributes the whole session)",
    (_name, incoming, last, basis) => {
      const state: SessionState = {
        ...empty(0),
        readingCount: 1,
        lastReadingAt: last,
        totalBytes: 10,
        basis,
      };
      const readings = incoming.map((r, i) => ({
        eventSid: `EZ${i}`,
        t: r.t,
        cumulative: "cumulative" in r ? r.cumulative : 20,
        window: null,
        windowStart: null,
        ended: false,
      }));
      expect(extendSession(state, readings, MAX_RATE)).toBeNull();
    },
  );
});
