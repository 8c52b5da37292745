import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { attributeSession, diffBuckets, type Reading } from "../../src/accounting/attribute.ts";
import {
  bucketOf,
  HOUR_MS,
  monthStart,
  nextMonthStart,
  prorate,
} from "../../src/accounting/buckets.ts";
import { inOrderBuckets, perturbationArb, sessionArb } from "../helpers/sessions.ts";

const H = (iso: string) => Date.parse(iso);
const opts = { attribution: "end" as const, sessionStart: null, maxBytesPerSecond: 250_000_000 };
const r = (
  eventSid: string,
  t: string,
  cumulative: number | null,
  extra: Partial<Reading> = {},
): Reading => ({
  eventSid,
  t: H(t),
  cumulative,
  window: null,
  windowStart: null,
  ended: false,
  ...extra,
});
const sum = (m: Map<number, number>) => [...m.values()].reduce((a, b) => a + b, 0);

describe("hour buckets", () => {
  it.each([
    ["2026-11-27T13:40:52Z", "2026-11-27T13:00:00Z"],
    ["2026-11-27T14:00:00Z", "2026-11-27T13:00:00Z"],
    ["2026-11-27T14:00:00.001Z", "2026-11-27T14:00:00Z"],
    ["2026-11-27T00:00:00Z", "2026-11-26T23:00:00Z"],
  ])("a reading at %s belongs to the bucket starting %s", (t, bucket) => {
    expect(bucketOf(H(t))).toBe(H(bucket));
  });

  it.each([
    ["2026-02-14T10:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"],
    ["2026-12-31T23:59:59Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"],
  ])("the UTC month of %s runs from %s to %s", (t, from, to) => {
    expect(monthStart(H(t))).toBe(H(from));
    expect(nextMonthStart(H(t))).toBe(H(to));
  });

  it.each([
    [100, "2026-11-27T13:30:00Z", "2026-11-27T14:30:00Z", { "13": 50, "14": 50 }],
    [101, "2026-11-27T13:30:00Z", "2026-11-27T14:30:00Z", { "13": 50, "14": 51 }],
    [7, "2026-11-27T13:00:00Z", "2026-11-27T16:00:00Z", { "13": 2, "14": 2, "15": 3 }],
    [5, "2026-11-27T13:10:00Z", "2026-11-27T13:10:00Z", { "13": 5 }],
  ])("prorating %i bytes over %s → %s splits by time share", (amount, from, to, expected) => {
    const got = prorate(amount, H(from), H(to));
    const named = Object.fromEntries(
      [...got].map(([b, v]) => [String(new Date(b).getUTCHours()), v]),
    );
    expect(named).toEqual(expected);
    expect(sum(got)).toBe(amount);
  });

  it("prorating keeps every byte for any amount and interval", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
        fc.integer({ min: 0, max: 10 * 24 * HOUR_MS }),
        fc.integer({ min: 0, max: 10 * 24 * HOUR_MS }),
        (amount, a, len) => {
          const from = H("2026-11-01T00:00:00Z") + a;
          const got = prorate(amount, from, from + len);
          expect(sum(got)).toBe(amount);
          for (const v of got.values()) expect(v).toBeGreaterThanOrEqual(0);
        },
      ),
    );
  });
});

describe("attributing a session's readings to hours", () => {
  it("bills each increase of the cumulative total in its reading's hour", () => {
    const a = attributeSession(
      [
        r("EZ1", "2026-11-27T13:40:00Z", 1000),
        r("EZ2", "2026-11-27T13:46:00Z", 1500),
        r("EZ3", "2026-11-27T14:10:00Z", 4000, { ended: true }),
      ],
      opts,
    );
    expect(Object.fromEntries(a.buckets)).toEqual({
      [H("2026-11-27T13:00:00Z")]: 1500,
      [H("2026-11-27T14:00:00Z")]: 2500,
    });
    expect(a.total).toBe(4000);
    expect(a.anomalies).toEqual([]);
  });

  it("a lost update is covered by the next reading", () => {
    const a = attributeSession(
      [r("EZ1", "2026-11-27T13:40:00Z", 1000), r("EZ3", "2026-11-27T14:10:00Z", 4000)],
      opts,
    );
    expect(sum(a.buckets)).toBe(4000);
  });

  it("a late reading moves bytes to an earlier hour and the later hour goes down", () => {
    const before = attributeSession(
      [r("EZ1", "2026-11-27T12:50:00Z", 100), r("EZ3", "2026-11-27T14:10:00Z", 4000)],
      opts,
    );
    const after = attributeSession(
      [
        r("EZ1", "2026-11-27T12:50:00Z", 100),
        r("EZ2", "2026-11-27T13:50:00Z", 3000),
        r("EZ3", "2026-11-27T14:10:00Z", 4000),
      ],
      opts,
    );
    expect(Object.fromEntries(diffBuckets(before.buckets, after.buckets))).toEqual({
      [H("2026-11-27T13:00:00Z")]: 2900,
      [H("2026-11-27T14:00:00Z")]: -2900,
    });
  });

  it("a cumulative total that goes down is flagged and never billed negative", () => {
    const a = attributeSession(
      [r("EZ1", "2026-11-27T13:10:00Z", 5000), r("EZ2", "2026-11-27T13:20:00Z", 10)],
      opts,
    );
    expect(a.total).toBe(5000);
    expect(a.anomalies.map((x) => x.kind)).toEqual(["cumulative_decrease"]);
  });

  it("readings after the ended event and impossible rates are flagged", () => {
    const a = attributeSession(
      [
        r("EZ1", "2026-11-27T13:10:00Z", 5000, { ended: true }),
        r("EZ2", "2026-11-27T13:10:01Z", 5_000_000_000),
      ],
      { ...opts, sessionStart: H("2026-11-27T13:00:00Z") },
    );
    expect(a.anomalies.map((x) => x.kind).sort()).toEqual(["impossible_rate", "reading_after_end"]);
  });

  it("schema v1 sessions sum window totals per unique event", () => {
    const a = attributeSession(
      [
        r("EZ1", "2026-11-27T13:10:00Z", null, { window: 300 }),
        r("EZ1", "2026-11-27T13:10:00Z", null, { window: 300 }),
        r("EZ2", "2026-11-27T14:10:00Z", null, { window: 200 }),
      ],
      opts,
    );
    expect(a.basis).toBe("window");
    expect(a.total).toBe(500);
  });

  it("prorate spreads an increase from the previous reading (or session start) to the reading", () => {
    const a = attributeSession([r("EZ1", "2026-11-27T14:30:00Z", 3000, { ended: true })], {
      ...opts,
      attribution: "prorate",
      sessionStart: H("2026-11-27T13:30:00Z"),
    });
    expect(Object.fromEntries(a.buckets)).toEqual({
      [H("2026-11-27T13:00:00Z")]: 1500,
      [H("2026-11-27T14:00:00Z")]: 1500,
    });
  });
});

describe("accounting invariants (property-based)", () => {
  const sessionAndPerturbation = sessionArb(
    "HS00000000000000000000000000000001",
    "PI0000000000000000000000000000000a",
  ).chain((s) => perturbationArb(s.readings).map((p) => ({ s, p })));

  it("any permutation, duplication and loss of updated events gives the in-order per-hour usage", () => {
    fc.assert(
      fc.property(sessionAndPerturbation, ({ p }) => {
        const got = attributeSession(p.delivered, opts);
        expect(Object.fromEntries(got.buckets)).toEqual(
          Object.fromEntries(inOrderBuckets(p.survivors)),
        );
      }),
      { numRuns: 500 },
    );
  });

  it("a session's buckets sum to its final data_session_data_total in both attribution modes", () => {
    fc.assert(
      fc.property(
        sessionAndPerturbation,
        fc.constantFrom("end" as const, "prorate" as const),
        ({ s, p }, attribution) => {
          const got = attributeSession(p.delivered, {
            ...opts,
            attribution,
            sessionStart: s.start,
          });
          const final = s.readings[s.readings.length - 1]?.cumulative;
          expect(sum(got.buckets)).toBe(final);
          expect(got.total).toBe(final);
        },
      ),
      { numRuns: 500 },
    );
  });

  it("prorate gives the same buckets for every order and duplication of the same readings", () => {
    fc.assert(
      fc.property(sessionAndPerturbation, ({ s, p }) => {
        const o = { ...opts, attribution: "prorate" as const, sessionStart: s.start };
        expect(Object.fromEntries(attributeSession(p.delivered, o).buckets)).toEqual(
          Object.fromEntries(attributeSession(p.survivors, o).buckets),
        );
      }),
      { numRuns: 300 },
    );
  });
});
