import { describe, expect, it } from "vitest";
import { DAY_MS } from "../../src/accounting/buckets.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { testIngest } from "../helpers/ledger.ts";

// Retention through the port (ledger.retention.prune), on the ledger of the vitest project.

const NOW = Date.parse("2026-11-27T12:00:00Z");
const SIM = `HS${"e".repeat(32)}`;
const ended = (sid: string, session: string, t: number, total: number) =>
  buildCloudEvent({
    eventSid: sid,
    kind: "data-session.ended",
    accountSid: `AC${"1".repeat(32)}`,
    simSid: SIM,
    iccid: "89883070000005381783",
    timestampMs: t,
    sessionSid: session,
    sessionStartMs: t - 3_600_000,
    sessionEndMs: t,
    windowStartMs: t - 600_000,
    windowEndMs: t,
    cumulativeDown: total,
  });

describe("retention", () => {
  it("prunes dedupe records and readings past the retention, keeps usage, and then refuses the old events", async () => {
    const t = await testIngest({ retentionDays: 40 }, () => NOW);
    const old = ended(`EZ${"a".repeat(32)}`, `PI${"a".repeat(32)}`, NOW - 39 * DAY_MS, 500);
    const recent = ended(`EZ${"b".repeat(32)}`, `PI${"b".repeat(32)}`, NOW - 2 * DAY_MS, 700);
    await t.ingest([old, recent]);
    const before = await t.usage();
    // Two days later the first event is past the 40-day retention.
    const r = await t.ledger.retention.prune(40, NOW + 2 * DAY_MS);
    expect(r).toMatchObject({ seenEvents: 1, sessions: 1, readings: 1 });
    expect(await t.usage()).toEqual(before);
    const rows = await t.sql("select event_sid from seen_events");
    expect(rows).toEqual([{ event_sid: `EZ${"b".repeat(32)}` }]);
    // Replaying the pruned event cannot double-count it: it is refused with a reason.
    const late = await testIngest({ retentionDays: 40 }, () => NOW + 2 * DAY_MS);
    expect(await late.ingest([old])).toMatchObject({ counted: 0, quarantined: 1 });
  });
});

describe("retention after pruning", () => {
  it("raising RETENTION_DAYS later does not let pruned events be counted again", async () => {
    const t = await testIngest({ retentionDays: 40 }, () => NOW);
    const old = ended(`EZ${"c".repeat(32)}`, `PI${"c".repeat(32)}`, NOW - 39 * DAY_MS, 500);
    await t.ingest([old]);
    await t.ledger.retention.prune(40, NOW + 2 * DAY_MS);
    // Same database, retention raised to replay an archive: the pruned event is still refused.
    const s = await t.ingestJob(
      {
        v: 1,
        deliveries: [{ id: "replay", receivedAt: NOW, source: "replay", events: [old] }],
      },
      { settings: { retentionDays: 400 }, now: () => NOW + 2 * DAY_MS },
    );
    expect(s).toMatchObject({ counted: 0, quarantined: 1 });
    const q = await t.sql<{ reason: string }>("select reason from quarantine");
    expect(q).toHaveLength(1);
    expect(q[0]?.reason).toMatch(/dedupe records were pruned/);
    expect(Object.values(await t.usage())).toEqual([500]);
  });

  it("the pruned horizon moves only as far as the newest record it deleted, so older events never counted can still be counted after RETENTION_DAYS is raised", async () => {
    const t = await testIngest({ retentionDays: 40 }, () => NOW);
    const counted = ended(`EZ${"5".repeat(32)}`, `PI${"5".repeat(32)}`, NOW - 39 * DAY_MS, 500);
    await t.ingest([counted]);
    // Nothing to delete yet: no horizon.
    await t.ledger.retention.prune(40, NOW);
    expect(await t.sql("select value from meta where key = 'pruned_before'")).toEqual([]);
    // Ten days on, the counted event's record is deleted: the horizon is just past it.
    await t.ledger.retention.prune(40, NOW + 10 * DAY_MS);
    const horizon = await t.sql<{ value: number }>(
      "select value from meta where key = 'pruned_before'",
    );
    expect(horizon).toEqual([{ value: NOW - 39 * DAY_MS + 1 }]);
    // An event between the horizon and the 40-day cutoff had no record to lose: with the
    // retention raised it is counted; the pruned one is still refused.
    const never = ended(`EZ${"6".repeat(32)}`, `PI${"6".repeat(32)}`, NOW - 35 * DAY_MS, 300);
    const s = await t.ingestJob(
      {
        v: 1,
        deliveries: [
          { id: "archive", receivedAt: NOW, source: "replay", events: [never, counted] },
        ],
      },
      { settings: { retentionDays: 400 }, now: () => NOW + 10 * DAY_MS },
    );
    expect(s).toMatchObject({ counted: 1, quarantined: 1 });
    expect(Object.values(await t.usage()).sort()).toEqual([300, 500]);
  });

  it("keeps an open session whose last reading is past the retention, so its next reading is not billed again in full", async () => {
    const t = await testIngest({ retentionDays: 40 }, () => NOW);
    const update = buildCloudEvent({
      eventSid: `EZ${"d".repeat(32)}`,
      kind: "data-session.updated",
      accountSid: `AC${"1".repeat(32)}`,
      simSid: SIM,
      iccid: "89883070000005381783",
      timestampMs: NOW - 39 * DAY_MS,
      sessionSid: `PI${"d".repeat(32)}`,
      sessionStartMs: NOW - 39 * DAY_MS - 3_600_000,
      windowStartMs: NOW - 39 * DAY_MS - 600_000,
      windowEndMs: NOW - 39 * DAY_MS,
      cumulativeDown: 1000,
    });
    await t.ingest([update]);
    expect((await t.ledger.retention.prune(40, NOW + 2 * DAY_MS))?.sessions).toBe(0);
    // The same ledger two days later.
    await t.ingestJob(
      {
        v: 1,
        deliveries: [
          {
            id: "e",
            receivedAt: NOW,
            source: "replay",
            events: [ended(`EZ${"f".repeat(32)}`, `PI${"d".repeat(32)}`, NOW + DAY_MS, 1200)],
          },
        ],
      },
      { now: () => NOW + 2 * DAY_MS },
    );
    const total = Object.values(await t.usage()).reduce((a, b) => a + b, 0);
    expect(total).toBe(1200);
  });
});
