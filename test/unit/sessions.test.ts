import { describe, expect, it } from "vitest";
import type { Reading } from "../../src/accounting/attribute.ts";
import {
  decideSession,
  mergeReadings,
  refuseOverflow,
  type SessionTouch,
  type StoredSession,
} from "../../src/ingest/sessions.ts";

// decideSession: a session's stored row + this job's readings → its new state and the bytes each
// hour gains or loses; null when its history must be read first.

const H = 3_600_000;
const T0 = Date.UTC(2026, 10, 20, 10);
const settings = { attribution: "end" as const, maxBytesPerSecond: 250e6, retentionDays: 40 };
const r = (id: string, t: number, cumulative: number | null, extra: Partial<Reading> = {}) => ({
  eventSid: id,
  t,
  cumulative,
  window: null,
  windowStart: null,
  ended: false,
  ...extra,
});
const touch = (readings: Reading[], startTime: number | null = T0): SessionTouch => ({
  sessionSid: "PI1",
  simSid: "HS1",
  startTime,
  readings,
  sources: [],
});
/** the row a session has after `readings` were counted under ATTRIBUTION=end */
const stored = (o: Partial<StoredSession>): StoredSession => ({
  simSid: "HS1",
  startTime: T0,
  endTime: null,
  totalBytes: 0,
  windowSumBytes: 0,
  basis: "cumulative",
  readingCount: 0,
  lastReadingAt: 0,
  buckets: "{}",
  ...o,
});
const obj = (m: ReadonlyMap<number, number>) =>
  Object.fromEntries([...m].map(([k, v]) => [new Date(k).toISOString().slice(11, 16), v]));

describe("decideSession", () => {
  it.each<{
    name: string;
    row?: StoredSession;
    readings: Reading[];
    attribution?: "end" | "prorate";
    history: Reading[] | null;
    want: null | {
      deltas: Record<string, number>;
      total: number;
      count: number;
      anomalies?: string[];
    };
  }>([
    {
      name: "a new session's in-order readings extend it without history",
      readings: [r("E1", T0 + 0.5 * H, 100), r("E2", T0 + 1.5 * H, 250)],
      history: null,
      want: { deltas: { "10:00": 100, "11:00": 150 }, total: 250, count: 2 },
    },
    {
      name: "a reading after every stored one extends the stored state",
      row: stored({
        totalBytes: 100,
        readingCount: 1,
        lastReadingAt: T0 + 0.5 * H,
        buckets: `{"${T0}":100}`,
      }),
      readings: [r("E2", T0 + 1.5 * H, 400)],
      history: null,
      want: { deltas: { "11:00": 300 }, total: 400, count: 2 },
    },
    {
      name: "a late reading needs the history first",
      row: stored({
        totalBytes: 400,
        readingCount: 1,
        lastReadingAt: T0 + 1.5 * H,
        buckets: `{"${T0 + H}":400}`,
      }),
      readings: [r("E1", T0 + 0.5 * H, 100)],
      history: null,
      want: null,
    },
    {
      name: "a late reading re-attributes: its hour gains what the later one's hour loses",
      row: stored({
        totalBytes: 400,
        readingCount: 1,
        lastReadingAt: T0 + 1.5 * H,
        buckets: `{"${T0 + H}":400}`,
      }),
      readings: [r("E1", T0 + 0.5 * H, 100)],
      history: [r("E2", T0 + 1.5 * H, 400)],
      want: { deltas: { "10:00": 100, "11:00": -100 }, total: 400, count: 2 },
    },
    {
      name: "prorate always reads the history",
      readings: [r("E1", T0 + 0.5 * H, 100)],
      attribution: "prorate",
      history: null,
      want: null,
    },
    {
      name: "a session counted from windows (schema v1) re-attributes from history",
      row: stored({
        basis: "window",
        totalBytes: 30,
        windowSumBytes: 30,
        readingCount: 1,
        lastReadingAt: T0 + 0.2 * H,
        buckets: `{"${T0}":30}`,
      }),
      readings: [r("E2", T0 + 1.5 * H, null, { window: 20 })],
      history: [r("E1", T0 + 0.2 * H, null, { window: 30 })],
      want: { deltas: { "11:00": 20 }, total: 50, count: 2 },
    },
    {
      name: "a cumulative total that goes down bills nothing negative and says so",
      row: stored({
        totalBytes: 500,
        readingCount: 1,
        lastReadingAt: T0 + 0.5 * H,
        buckets: `{"${T0}":500}`,
      }),
      readings: [r("E2", T0 + 1.5 * H, 300)],
      history: null,
      want: { deltas: {}, total: 500, count: 2, anomalies: ["cumulative_decrease"] },
    },
    {
      name: "a stored reading with the same key as an incoming one is one reading",
      row: stored({
        totalBytes: 400,
        readingCount: 1,
        lastReadingAt: T0 + 1.5 * H,
        buckets: `{"${T0 + H}":400}`,
      }),
      readings: [r("E2", T0 + 1.5 * H, 400), r("E1", T0 + 0.5 * H, 100)],
      history: [r("E2", T0 + 1.5 * H, 400)],
      want: { deltas: { "10:00": 100, "11:00": -100 }, total: 400, count: 2 },
    },
  ])("$name", ({ row, readings, attribution, history, want }) => {
    const d = decideSession(row, touch(readings), history, {
      ...settings,
      attribution: attribution ?? "end",
    });
    if (want === null) {
      expect(d).toBeNull();
      return;
    }
    expect(d).not.toBeNull();
    if (!d) return;
    const nonZero = new Map([...d.deltas].filter(([, v]) => v !== 0));
    expect(obj(nonZero)).toEqual(want.deltas);
    expect(d.state.totalBytes).toBe(want.total);
    expect(d.state.readingCount).toBe(want.count);
    expect(d.anomalies.map((a) => a.kind)).toEqual(want.anomalies ?? []);
    // The new buckets are the old ones plus the deltas.
    const before = new Map(
      Object.entries(JSON.parse(row?.buckets ?? "{}")).map(([k, v]) => [Number(k), v as number]),
    );
    for (const [h, v] of d.deltas) before.set(h, (before.get(h) ?? 0) + v);
    expect(obj(new Map([...d.buckets].filter(([, v]) => v !== 0)))).toEqual(
      obj(new Map([...before].filter(([, v]) => v !== 0))),
    );
  });
});

describe("refuseOverflow", () => {
  const d = decideSession(undefined, touch([r("E1", T0 + 0.5 * H, 100)]), null, settings);
  it.each([
    ["an hour far from the limit", 0, false],
    ["an hour that reaches exactly 2^53 - 1", Number.MAX_SAFE_INTEGER - 100, false],
    ["an hour that would pass 2^53 - 1", Number.MAX_SAFE_INTEGER - 99, true],
  ] as const)("%s", (_name, current, refused) => {
    if (!d) throw new Error("expected an extension");
    const reason = refuseOverflow(d, () => current);
    expect(reason !== null).toBe(refused);
    if (refused) expect(reason).toMatch(/^SIM HS1 would hold more than 9007199254740991 bytes/);
  });

  it("a negative delta is never refused", () => {
    const late = decideSession(
      stored({
        totalBytes: 400,
        readingCount: 1,
        lastReadingAt: T0 + 1.5 * H,
        buckets: `{"${T0 + H}":400}`,
      }),
      touch([r("E1", T0 + 0.5 * H, 100)]),
      [r("E2", T0 + 1.5 * H, 400)],
      settings,
    );
    if (!late) throw new Error("expected a decision");
    expect(refuseOverflow(late, (h) => (h === T0 + H ? Number.MAX_SAFE_INTEGER : 0))).toBeNull();
  });
});

describe("mergeReadings", () => {
  it("keeps one reading per (t, event_sid) and puts a repeated event_sid in key order", () => {
    const merged = mergeReadings([r("E1", 10, 1), r("E2", 20, 2)], [r("E2", 20, 2), r("E1", 5, 9)]);
    expect(merged.map((x) => `${x.eventSid}@${x.t}`)).toEqual(["E1@5", "E1@10", "E2@20"]);
  });
});
