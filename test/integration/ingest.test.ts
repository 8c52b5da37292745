import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { attributeSession } from "../../src/accounting/attribute.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { testIngest } from "../helpers/ledger.ts";
import {
  type GenSession,
  inOrderBuckets,
  perturbationArb,
  sessionArb,
  shuffle,
} from "../helpers/sessions.ts";

const fixture = (name: string) =>
  JSON.parse(readFileSync(new URL(`../fixtures/${name}`, import.meta.url), "utf8"));
const ACCOUNT = "ACe7ea554f7fc0fad65e689bb5899bb6c3";
const simSid = (i: number) => `HS${i.toString(16).padStart(32, "0")}`;
const sessionSid = (i: number) => `PI${i.toString(16).padStart(32, "a")}`;

function eventsOf(s: GenSession, readings = s.readings) {
  return readings.map((r) =>
    buildCloudEvent({
      eventSid: r.eventSid,
      kind: r.ended ? "data-session.ended" : "data-session.updated",
      accountSid: ACCOUNT,
      simSid: s.simSid,
      iccid: "89883070000005381783",
      timestampMs: r.t,
      sessionSid: s.sessionSid,
      sessionStartMs: s.start,
      ...(r.ended ? { sessionEndMs: r.t } : {}),
      windowStartMs: r.windowStart ?? s.start,
      windowEndMs: r.t,
      windowDown: r.window ?? 0,
      cumulativeDown: r.cumulative ?? 0,
    }),
  );
}

// Every test runs on the backend of its vitest project (test/helpers/ledger.ts).
describe("ingest into the ledger", () => {
  it("the fixtures are counted: the captured update and the constructed session events", async () => {
    const t = await testIngest();
    const all = [
      ...fixture("constructed-attachment-accepted.json"),
      ...fixture("constructed-data-session-started.json"),
      ...fixture("twilio-data-session-updated.json"),
      ...fixture("constructed-data-session-ended.json"),
      ...fixture("constructed-attachment-rejected.json"),
      ...fixture("constructed-data-session-failed.json"),
      ...fixture("twilio-test-event.json"),
    ];
    const s = await t.ingest(all);
    expect(s).toMatchObject({
      events: 7,
      counted: 6,
      quarantined: 0,
      testEvents: 1,
      nonBilling: 4,
      sessions: 1,
    });
    expect(await t.usage()).toEqual({
      "HS2f71995b834d803ff5376799ba59bd1d@2022-12-14T13:00:00.000Z": 1536,
    });
  });

  it("a duplicate delivery is counted once", async () => {
    const t = await testIngest();
    const ended = fixture("constructed-data-session-ended.json");
    await t.ingest(ended);
    const again = await t.ingest(ended);
    expect(again).toMatchObject({ counted: 0, duplicates: 1 });
    expect(Object.values(await t.usage())).toEqual([1536]);
  });

  it("a malformed event is quarantined and the valid one beside it is counted", async () => {
    const t = await testIngest();
    const ended = fixture("constructed-data-session-ended.json")[0];
    const broken = structuredClone(ended);
    broken.data.event_sid = "EZ00000000000000000000000000000bad";
    broken.data.data_total = -5;
    const s = await t.ingest([broken, ended]);
    expect(s).toMatchObject({ counted: 1, quarantined: 1 });
    const q = await t.sql<{ reason: string; raw: string; event_sid: string }>(
      "select reason, raw, event_sid from quarantine",
    );
    expect(q).toHaveLength(1);
    expect(q[0]?.reason).toMatch(/data_total/);
    expect(JSON.parse(q[0]?.raw ?? "null").data.data_total).toBe(-5);
  });

  it("events older than the retention are refused with a reason, not counted", async () => {
    const t = await testIngest({ retentionDays: 40 });
    const s = await t.ingest(fixture("constructed-data-session-ended.json"));
    expect(s).toMatchObject({ counted: 0, quarantined: 1 });
    const q = await t.sql<{ reason: string }>("select reason from quarantine");
    expect(q).toHaveLength(1);
    expect(q[0]?.reason).toMatch(/older than the 40-day retention/);
  });

  it("ended-only mode bills the ended event's cumulative total and counts updates as not billed", async () => {
    const t = await testIngest({ billingMode: "ended-only" });
    await t.ingest(fixture("twilio-data-session-updated.json"));
    await t.ingest(fixture("constructed-data-session-ended.json"));
    expect(Object.values(await t.usage())).toEqual([1536]);
    const counts = await t.sql("select kind, count from event_counts");
    expect(counts).toEqual([{ kind: "data-session.updated (not billed: ended-only)", count: 1 }]);
  });

  it("a late reading that moves bytes between hours corrects both buckets", async () => {
    const t = await testIngest();
    const s: GenSession = {
      simSid: simSid(1),
      sessionSid: sessionSid(1),
      start: Date.parse("2026-11-27T12:30:00Z"),
      readings: [
        {
          eventSid: "EZ000000000000000000000000000000a1",
          t: Date.parse("2026-11-27T13:50:00Z"),
          cumulative: 3000,
          window: 3000,
          windowStart: null,
          ended: false,
        },
        {
          eventSid: "EZ000000000000000000000000000000a2",
          t: Date.parse("2026-11-27T14:10:00Z"),
          cumulative: 4000,
          window: 1000,
          windowStart: null,
          ended: true,
        },
      ],
    };
    const [update, ended] = eventsOf(s);
    await t.ingest([ended]);
    expect(await t.usage()).toEqual({ [`${simSid(1)}@2026-11-27T14:00:00.000Z`]: 4000 });
    await t.ingest([update]);
    expect(await t.usage()).toEqual({
      [`${simSid(1)}@2026-11-27T13:00:00.000Z`]: 3000,
      [`${simSid(1)}@2026-11-27T14:00:00.000Z`]: 1000,
    });
  });

  it("for many sessions, any order, duplication, loss and batching yields the in-order per-SIM per-hour usage", async () => {
    const fleet = fc
      .array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 6 })
      .chain((sims) =>
        fc.tuple(
          ...sims.map((sim, i) =>
            sessionArb(simSid(sim), sessionSid(i + 1)).chain((s) =>
              perturbationArb(s.readings).map((p) => ({ s, p })),
            ),
          ),
        ),
      );
    // one ledger for the test, emptied before each run (a PostgreSQL database per run is ~0.1 s)
    const t = await testIngest();
    await fc.assert(
      fc.asyncProperty(
        fleet,
        fc.integer(),
        fc.integer({ min: 1, max: 20 }),
        async (sessions, seed, batch) => {
          await t.reset();
          const delivered = shuffle(
            sessions.flatMap(({ s, p }) => eventsOf(s, p.delivered)),
            seed,
          );
          for (let i = 0; i < delivered.length; i += batch)
            await t.ingest(delivered.slice(i, i + batch));
          const expected: Record<string, number> = {};
          for (const { s, p } of sessions) {
            for (const [hour, bytes] of inOrderBuckets(p.survivors)) {
              const key = `${s.simSid}@${new Date(hour).toISOString()}`;
              expected[key] = (expected[key] ?? 0) + bytes;
            }
          }
          for (const k of Object.keys(expected)) if (expected[k] === 0) delete expected[k];
          expect(await t.usage()).toEqual(expected);
          const totals = await t.sql<{ session_sid: string; total_bytes: number }>(
            "select session_sid, total_bytes from sessions",
          );
          for (const { s } of sessions) {
            const final = s.readings[s.readings.length - 1]?.cumulative;
            expect(totals.find((x) => x.session_sid === s.sessionSid)?.total_bytes).toBe(final);
            const [row] = await t.sql<{ buckets: string }>(
              "select buckets from sessions where session_sid = ?",
              s.sessionSid,
            );
            const parts = Object.values(
              JSON.parse(row?.buckets ?? "null") as Record<string, number>,
            );
            expect(parts.reduce((a, b) => a + b, 0)).toBe(final);
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});

describe("ingest with prorate attribution and schema v1", () => {
  it("prorate: any order and batching gives the same buckets as attributing the readings at once", async () => {
    const t = await testIngest({ attribution: "prorate" });
    await fc.assert(
      fc.asyncProperty(
        sessionArb(simSid(7), sessionSid(7)).chain((s) =>
          perturbationArb(s.readings).map((p) => ({ s, p })),
        ),
        fc.integer(),
        fc.integer({ min: 1, max: 5 }),
        async ({ s, p }, seed, batch) => {
          await t.reset();
          const delivered = shuffle(eventsOf(s, p.delivered), seed);
          for (let i = 0; i < delivered.length; i += batch)
            await t.ingest(delivered.slice(i, i + batch));
          const expected = attributeSession(p.survivors, {
            attribution: "prorate",
            sessionStart: s.start,
            maxBytesPerSecond: 250_000_000,
          });
          const want = Object.fromEntries(
            [...expected.buckets].map(([h, v]) => [`${s.simSid}@${new Date(h).toISOString()}`, v]),
          );
          expect(await t.usage()).toEqual(want);
        },
      ),
      { numRuns: 100 },
    );
  });

  it("schema v1 events without cumulative totals are billed as the sum of their windows, once each", async () => {
    const t = await testIngest();
    const v1 = (i: number, minute: number, bytes: number, ended = false) =>
      buildCloudEvent({
        eventSid: `EZ${i.toString(16).padStart(32, "0")}`,
        kind: ended ? "data-session.ended" : "data-session.updated",
        accountSid: ACCOUNT,
        simSid: simSid(9),
        iccid: "89883070000005381783",
        timestampMs: Date.parse("2026-11-27T10:00:00Z") + minute * 60_000,
        sessionSid: sessionSid(9),
        sessionStartMs: Date.parse("2026-11-27T10:00:00Z"),
        windowStartMs: Date.parse("2026-11-27T10:00:00Z") + (minute - 6) * 60_000,
        windowEndMs: Date.parse("2026-11-27T10:00:00Z") + minute * 60_000,
        ...(ended ? { sessionEndMs: Date.parse("2026-11-27T10:00:00Z") + minute * 60_000 } : {}),
        windowDown: bytes,
        schemaVersion: 1,
      });
    await t.ingest([v1(1, 30, 100), v1(2, 66, 50), v1(1, 30, 100)]);
    await t.ingest([v1(3, 70, 25, true), v1(2, 66, 50)]);
    expect(await t.usage()).toEqual({
      [`${simSid(9)}@2026-11-27T10:00:00.000Z`]: 100,
      [`${simSid(9)}@2026-11-27T11:00:00.000Z`]: 75,
    });
  });
});
