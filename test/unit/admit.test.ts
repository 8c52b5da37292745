import { describe, expect, it } from "vitest";
import { DAY_MS } from "../../src/accounting/buckets.ts";
import { admit, ENDED_ONLY_NEEDS_CUMULATIVE } from "../../src/ingest/admit.ts";
import { expandJob } from "../../src/ingest/expand.ts";
import type { Delivery } from "../../src/ingest/job.ts";
import type { IngestSettings } from "../../src/ingest/unit-of-work.ts";
import { buildCloudEvent, type EventSpec } from "../../src/simulate/cloud-event.ts";

// admit: the decisions about a job's events taken before any ledger write, given only the prune
// floor. Each case is a list of events and what must become of each.

const T = (iso: string) => Date.parse(iso);
const NOW = T("2026-11-20T12:00:00Z");
const SIM = `HS${"c".repeat(32)}`;
const sid = (p: string, i: number) => `${p}${i.toString(16).padStart(32, "0")}`;
const settings: Pick<IngestSettings, "billingMode" | "retentionDays"> = {
  billingMode: "realtime",
  retentionDays: 30,
};

function ev(i: number, extra: Partial<EventSpec> = {}): Record<string, unknown> {
  const t = extra.timestampMs ?? T("2026-11-20T10:00:00Z") + i * 60_000;
  const kind = extra.kind ?? "data-session.updated";
  return buildCloudEvent({
    eventSid: sid("EZ", i),
    kind,
    accountSid: `AC${"e".repeat(32)}`,
    simSid: SIM,
    iccid: "89883070000005381783",
    fleetSid: `HF${"c".repeat(32)}`,
    timestampMs: t,
    sessionSid: sid("PI", 1),
    sessionStartMs: t - 600_000,
    ...(kind === "data-session.ended" ? { sessionEndMs: t } : {}),
    windowStartMs: t - 60_000,
    windowEndMs: t,
    windowDown: 10,
    cumulativeDown: 100 + i,
    ...extra,
  });
}
const test = (): Record<string, unknown> => ({
  specversion: "1.0",
  type: "com.twilio.eventstreams.test-event",
  source: "x",
  id: "t1",
  data: { test_id: "t1" },
});

const delivery = (events: unknown[], id = "d1"): Delivery => ({
  id,
  receivedAt: NOW,
  source: "twilio",
  events,
});

type Outcome = "counted-claim" | "duplicate" | "test" | `quarantined: ${string}`;

/** What admit decided for each event, in job order (every event appears once). */
function outcomes(
  events: unknown[],
  s = settings,
  prunedBefore = 0,
): { outcomes: Outcome[]; admitted: ReturnType<typeof admit> } {
  const items = expandJob({ v: 1, deliveries: [delivery(events)] });
  const a = admit(items, s, NOW, prunedBefore);
  const byPosition = new Map<number, Outcome>();
  for (const q of a.quarantine) byPosition.set(q.position, `quarantined: ${q.reason}`);
  for (const c of a.candidates) byPosition.set(c.position, "counted-claim");
  return {
    admitted: a,
    outcomes: events.map((e, i) => {
      const o = byPosition.get(i);
      if (o) return o;
      return (e as { type: string }).type.includes("test-event") ? "test" : "duplicate";
    }),
  };
}

describe("admit", () => {
  const old = T("2026-10-01T10:00:00Z");
  it.each<[string, unknown[], Partial<typeof settings>, number, RegExp[]]>([
    ["a valid event is a claim", [ev(1)], {}, 0, [/^counted-claim$/]],
    ["a test event is skipped", [test(), ev(1)], {}, 0, [/^test$/, /^counted-claim$/]],
    [
      "a second occurrence in the job is a duplicate; the first wins",
      [ev(1), ev(2), ev(1)],
      {},
      0,
      [/^counted-claim$/, /^counted-claim$/, /^duplicate$/],
    ],
    [
      "an event that is not an object is quarantined",
      [42, ev(1)],
      {},
      0,
      [/^quarantined: event is not a JSON object$/, /^counted-claim$/],
    ],
    [
      "an event older than the retention is refused",
      [ev(1, { timestampMs: NOW - 31 * DAY_MS })],
      {},
      0,
      [/older than the 30-day retention/],
    ],
    [
      "an event before the prune floor is refused even inside the retention",
      [ev(1, { timestampMs: old }), ev(2)],
      { retentionDays: 100 },
      old + 1,
      [/up to which dedupe records were pruned/, /^counted-claim$/],
    ],
    [
      "an event exactly at the prune floor may be counted",
      [ev(1, { timestampMs: old })],
      { retentionDays: 100 },
      old,
      [/^counted-claim$/],
    ],
    [
      "ended-only: a data-session.ended without the cumulative total (schema v1) is refused",
      [ev(1, { kind: "data-session.ended", schemaVersion: 1 })],
      { billingMode: "ended-only" },
      0,
      [/^quarantined: ended-only mode needs data_session_data_total/],
    ],
    [
      "ended-only: a schema v2 data-session.ended is a claim",
      [ev(1, { kind: "data-session.ended" })],
      { billingMode: "ended-only" },
      0,
      [/^counted-claim$/],
    ],
    [
      "realtime: a schema v1 data-session.ended is a claim (its windows add up)",
      [ev(1, { kind: "data-session.ended", schemaVersion: 1 })],
      {},
      0,
      [/^counted-claim$/],
    ],
    [
      "a refused event does not take the claim of a later valid one with its event_sid",
      [ev(1, { timestampMs: NOW - 31 * DAY_MS }), ev(1)],
      {},
      0,
      [/older than the 30-day retention/, /^counted-claim$/],
    ],
  ])("%s", (_name, events, s, floor, expected) => {
    const { outcomes: got } = outcomes(events, { ...settings, ...s }, floor);
    expect(got).toHaveLength(expected.length);
    for (const [i, o] of got.entries()) expect(o).toMatch(expected[i] as RegExp);
  });

  it("ended-only refusals get an anomaly written whatever the claim; odd fields only if counted", () => {
    const odd = ev(2);
    (odd.data as Record<string, unknown>).fleet_sid = "not-a-fleet";
    const { admitted } = outcomes([ev(1, { kind: "data-session.ended", schemaVersion: 1 }), odd], {
      ...settings,
      billingMode: "ended-only",
    });
    expect(admitted.anomalies.map((a) => [a.row.kind, a.row.eventSid, a.ifCounted])).toEqual([
      ["ended_only_without_cumulative", sid("EZ", 1), false],
      ["odd_field", sid("EZ", 2), true],
    ]);
    expect(admitted.anomalies[0]?.row.detail).toBe(ENDED_ONLY_NEEDS_CUMULATIVE);
    expect(admitted.candidates[0]?.event.fleetSid).toBeNull();
  });

  it("realtime bills updated and ended readings; ended-only counts updated ones apart", () => {
    const events = [ev(1), ev(2, { kind: "data-session.ended" })];
    const realtime = outcomes(events).admitted;
    expect(realtime.candidates.map((c) => c.billed)).toEqual([true, true]);
    const endedOnly = outcomes(events, { ...settings, billingMode: "ended-only" }).admitted;
    expect(endedOnly.candidates.map((c) => c.billed)).toEqual([false, true]);
  });

  it("claims carry the first occurrence's delivery time; sessions are listed once, first-seen first", () => {
    const items = expandJob([
      delivery([ev(1), ev(3, { sessionSid: sid("PI", 2) })], "a"),
      { ...delivery([ev(1), ev(2)], "b"), receivedAt: NOW + 5 },
    ]);
    const a = admit(items, settings, NOW, 0);
    expect(a.seen.map((s) => [s.eventSid, s.receivedAt])).toEqual([
      [sid("EZ", 1), NOW],
      [sid("EZ", 3), NOW],
      [sid("EZ", 2), NOW + 5],
    ]);
    expect(a.duplicatesInJob).toBe(1);
    expect(a.sessionKeys).toEqual([
      { sessionSid: sid("PI", 1), simSid: SIM },
      { sessionSid: sid("PI", 2), simSid: SIM },
    ]);
  });

  it("a body that is not JSON is one quarantined item at position -1", () => {
    const items = expandJob([{ id: "x", receivedAt: NOW, source: "twilio", body: "[{" }]);
    const a = admit(items, settings, NOW, 0);
    expect(a.events).toBe(1);
    expect(a.quarantine.map((q) => [q.deliveryId, q.position, q.raw])).toEqual([["x", -1, "[{"]]);
  });
});
