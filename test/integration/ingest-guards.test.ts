import { describe, expect, it } from "vitest";
import { DAY_MS, HOUR_MS } from "../../src/accounting/buckets.ts";
import { buildCloudEvent, type EventSpec } from "../../src/simulate/cloud-event.ts";
import { openTestLedger, type TestLedger, testBackend, testIngest } from "../helpers/ledger.ts";

// The guards ingest keeps around the bill, through the real ingest transaction and the ledger of
// the vitest project (SQLite or PostgreSQL, real migrations): what is refused is quarantined with
// a reason and an anomaly and never half counted; what is odd but billable is billed and
// described.

const T = (iso: string) => Date.parse(iso);
const NOW = T("2026-11-20T12:00:00Z");
const ACCOUNT = "ACe7ea554f7fc0fad65e689bb5899bb6c3";
const SIM = `HS${"c".repeat(32)}`;
const FLEET = `HF${"c".repeat(32)}`;
const MAX = Number.MAX_SAFE_INTEGER;

let n = 0;
const sid = (p: string, i: number) => `${p}${i.toString(16).padStart(32, "0")}`;

/** One data-session.ended of SIM: `bytes` in the session, which ran from `start` to `end`. */
function ended(start: number, end: number, bytes: number, extra: Partial<EventSpec> = {}) {
  n++;
  return buildCloudEvent({
    eventSid: sid("EZ", n),
    kind: "data-session.ended",
    accountSid: ACCOUNT,
    simSid: SIM,
    iccid: "89883070000005381783",
    fleetSid: FLEET,
    timestampMs: end,
    sessionSid: sid("PI", n),
    sessionStartMs: start,
    sessionEndMs: end,
    windowStartMs: start,
    windowEndMs: end,
    windowDown: bytes,
    cumulativeDown: bytes,
    ...extra,
  });
}

/** One reading of session `sessionSid` of SIM, `cumulative` bytes at `t`. */
function reading(
  kind: "data-session.updated" | "data-session.ended",
  sessionSid: string,
  start: number,
  t: number,
  cumulative: number,
) {
  n++;
  return buildCloudEvent({
    eventSid: sid("EZ", n),
    kind,
    accountSid: ACCOUNT,
    simSid: SIM,
    iccid: "89883070000005381783",
    fleetSid: FLEET,
    timestampMs: t,
    sessionSid,
    sessionStartMs: start,
    ...(kind === "data-session.ended" ? { sessionEndMs: t } : {}),
    windowStartMs: start,
    windowEndMs: t,
    windowDown: 1,
    cumulativeDown: cumulative,
  });
}

const sidOf = (ev: Record<string, unknown>) => (ev.data as { event_sid: string }).event_sid;

const all = <R>(t: TestLedger, sql: string, ...params: unknown[]) => t.sql<R>(sql, ...params);
const seen = async (t: TestLedger, eventSid: string) =>
  (await all(t, "select event_sid from seen_events where event_sid = ?", eventSid)).length;
const anomaliesOf = (t: TestLedger, kind: string) =>
  all<{ event_sid: string; detail: string }>(
    t,
    "select event_sid, detail from anomalies where kind = ? order by id",
    kind,
  );
const quarantined = (t: TestLedger) =>
  all<{ event_sid: string; reason: string; raw: string; delivery_id: string }>(
    t,
    "select event_sid, reason, raw, delivery_id from quarantine order by id",
  );

describe("ingest guards", () => {
  it("ended-only mode refuses a schema v1 data-session.ended (no data_session_data_total): quarantined with the reason and an anomaly, nothing billed", async () => {
    const t = await testIngest({ billingMode: "ended-only" }, () => NOW);
    const start = T("2026-11-20T09:00:00Z");
    // A 10 MB session whose ended event carries only its last window (500 B) on schema v1.
    const v1 = ended(start, T("2026-11-20T10:20:00Z"), 500, { schemaVersion: 1 });
    expect((v1.data as Record<string, unknown>).data_session_data_total).toBeUndefined();
    const v2 = ended(start, T("2026-11-20T10:25:00Z"), 10_000_000, {
      simSid: `HS${"d".repeat(32)}`,
    });
    const s = await t.ingest([v1, v2]);
    expect(s).toMatchObject({ events: 2, counted: 1, quarantined: 1 });
    const q = await quarantined(t);
    expect(q).toHaveLength(1);
    expect(q[0]?.event_sid).toBe(sidOf(v1));
    expect(q[0]?.reason.startsWith("ended-only mode needs data_session_data_total")).toBe(true);
    expect(JSON.parse(q[0]?.raw ?? "null")).toEqual(v1);
    expect((await anomaliesOf(t, "ended_only_without_cumulative")).map((a) => a.event_sid)).toEqual(
      [sidOf(v1)],
    );
    expect(await seen(t, sidOf(v1)), "a requeue after pinning v2 must be able to count it").toBe(0);
    // Only the v2 session is billed, with its whole cumulative total.
    expect(await t.usage()).toEqual({
      [`HS${"d".repeat(32)}@2026-11-20T10:00:00.000Z`]: 10_000_000,
    });
  });

  it("prorate spreads a reading over at most retentionDays: a session start in 1970 is clamped with a spread_clamped anomaly, the earlier bytes in the window's oldest hour, and exact totals", async () => {
    const retentionDays = 40;
    const t = await testIngest({ attribution: "prorate", retentionDays }, () => NOW);
    const end = T("2026-11-20T10:30:00Z");
    const bytes = 1_000_000_000_007; // not a multiple of anything convenient
    const ev = ended(0, end, bytes);
    const s = await t.ingest([ev]);
    expect(s).toMatchObject({ counted: 1, quarantined: 0 });
    const rows = await all<{ hour: number; bytes: number }>(
      t,
      "select hour, bytes from usage_hourly where sim_sid = ? and bytes != 0 order by hour",
      SIM,
    );
    expect(rows.length).toBeGreaterThan(1);
    expect(rows.length).toBeLessThanOrEqual(retentionDays * 24 + 1);
    expect(
      rows.reduce((a, r) => a + r.bytes, 0),
      "total exact",
    ).toBe(bytes);
    for (const r of rows) expect(Number.isSafeInteger(r.bytes) && r.bytes > 0).toBe(true);
    // The window is (end - 40 days, end]; everything before it lands in its oldest hour.
    const earliest = end - retentionDays * DAY_MS;
    const oldestHour = Math.floor(earliest / HOUR_MS) * HOUR_MS;
    expect(rows[0]?.hour).toBe(oldestHour);
    expect(rows[rows.length - 1]?.hour).toBe(T("2026-11-20T10:00:00Z"));
    const before = Number((BigInt(bytes) * BigInt(earliest)) / BigInt(end)); // from = 0 (1970)
    const perHour = Math.ceil(((bytes - before) * HOUR_MS) / (end - earliest));
    expect(rows[0]?.bytes).toBeGreaterThanOrEqual(before);
    expect(rows[0]?.bytes).toBeLessThanOrEqual(before + perHour);
    // A whole hour inside the window gets its proportional share of the rest.
    const middle = rows[Math.floor(rows.length / 2)]?.bytes ?? 0;
    expect(Math.abs(middle - (bytes - before) / (retentionDays * 24))).toBeLessThanOrEqual(1);
    const clamped = await anomaliesOf(t, "spread_clamped");
    expect(clamped.map((a) => a.event_sid)).toEqual([sidOf(ev)]);
    expect(clamped[0]?.detail).toContain("40-day window");
    expect(clamped[0]?.detail).toContain(`${before} of ${bytes} bytes`);
  });

  it("a SIM-hour total beyond 2^53-1 bytes is refused, never rounded: the session's new events are quarantined with the reason and an unrepresentable_total anomaly, their seen_events rows removed, so a requeue counts them once the hour can hold them", async () => {
    const t = await testIngest({}, () => NOW);
    const h10 = (m: number) => T("2026-11-20T10:00:00Z") + m * 60_000;
    // Session A: its end at 10:20 with MAX - 10 bytes, and an update at 09:50 with 2^52 bytes
    // that arrives late.
    const a = sid("PI", ++n);
    const aEnd = reading("data-session.ended", a, h10(-30), h10(20), MAX - 10);
    const aUpdate = reading("data-session.updated", a, h10(-30), h10(-10), 2 ** 52);
    await t.ingest([aEnd]);
    expect(await t.usage()).toEqual({ [`${SIM}@2026-11-20T10:00:00.000Z`]: MAX - 10 });
    // Session B adds 100 bytes to the same SIM-hour: MAX - 10 + 100 cannot be held exactly.
    const b = sid("PI", ++n);
    const b1 = reading("data-session.updated", b, h10(25), h10(30), 60);
    const b2 = reading("data-session.ended", b, h10(25), h10(40), 100);
    const refused = await t.ingest([b1, b2]);
    expect(refused).toMatchObject({ counted: 0, quarantined: 2, duplicates: 0 });
    expect(await t.usage(), "unchanged, and never rounded").toEqual({
      [`${SIM}@2026-11-20T10:00:00.000Z`]: MAX - 10,
    });
    const q = await quarantined(t);
    expect(q.map((r) => r.event_sid)).toEqual([sidOf(b1), sidOf(b2)]);
    for (const r of q) {
      expect(r.reason).toContain(`more than ${MAX} bytes in the hour 2026-11-20T10:00:00.000Z`);
      expect(r.reason).toContain("refused");
    }
    expect((await anomaliesOf(t, "unrepresentable_total")).map((x) => x.event_sid)).toEqual([
      sidOf(b1),
      sidOf(b2),
    ]);
    expect((await seen(t, sidOf(b1))) + (await seen(t, sidOf(b2))), "seen_events rows left").toBe(
      0,
    );
    expect(
      await all(t, "select 1 from readings where session_sid = ?", b),
      "readings left",
    ).toEqual([]);
    expect(
      await all(t, "select 1 from sessions where session_sid = ?", b),
      "session row left",
    ).toEqual([]);

    // A's late update moves 2^52 bytes to 09:00, so 10:00 can now hold B's 100 bytes.
    await t.ingest([aUpdate]);
    expect(await t.usage()).toEqual({
      [`${SIM}@2026-11-20T09:00:00.000Z`]: 2 ** 52,
      [`${SIM}@2026-11-20T10:00:00.000Z`]: MAX - 10 - 2 ** 52,
    });
    // A requeue (simmeter quarantine requeue): each row as its own delivery of raw text.
    const requeue = await t.ingestJob({
      v: 1,
      deliveries: q.map((r, i) => ({
        id: `requeue:${i + 1}`,
        receivedAt: NOW,
        source: "twilio" as const,
        lines: [r.raw],
      })),
    });
    expect(requeue).toMatchObject({ counted: 2, duplicates: 0, quarantined: 0 });
    expect(await t.usage()).toEqual({
      [`${SIM}@2026-11-20T09:00:00.000Z`]: 2 ** 52,
      [`${SIM}@2026-11-20T10:00:00.000Z`]: MAX - 10 - 2 ** 52 + 100,
    });
  });

  const deep = "[".repeat(5000) + "]".repeat(5000);
  it.each<[string, (d: Record<string, unknown>) => void, string]>([
    ["an empty fleet_sid", (d) => Object.assign(d, { fleet_sid: "" }), "data.fleet_sid"],
    [
      "location.lat as a string",
      (d) => Object.assign(d, { location: { cell_id: "1", lac: "2", lat: "1.5", lon: 2 } }),
      "data.location.lat",
    ],
    ["a numeric imei", (d) => Object.assign(d, { imei: 490154203237518 }), "data.imei"],
    [
      "a bad network.sid",
      (d) => Object.assign(d, { network: { ...(d.network as object), sid: "HWnope" } }),
      "data.network.sid",
    ],
    ["network as a string", (d) => Object.assign(d, { network: "T-Mobile" }), "data.network"],
    [
      "a 5,000-deep array in network.mcc",
      (d) => Object.assign(d, { network: { ...(d.network as object), mcc: "@DEEP@" } }),
      "data.network.mcc",
    ],
  ])(
    "an event with %s is billed, and the odd field is recorded as an odd_field anomaly",
    async (_what, edit, path) => {
      const t = await testIngest({}, () => NOW);
      const ev = ended(T("2026-11-20T10:00:00Z"), T("2026-11-20T10:20:00Z"), 4242);
      edit(ev.data as Record<string, unknown>);
      const text = JSON.stringify([ev]).replace('"@DEEP@"', deep);
      const s = await t.ingestJob({
        v: 1,
        deliveries: [{ id: `odd-${n}`, receivedAt: NOW, source: "twilio", body: text }],
      });
      expect(s).toMatchObject({ events: 1, counted: 1, quarantined: 0 });
      expect(await quarantined(t)).toEqual([]);
      expect(await t.usage()).toEqual({ [`${SIM}@2026-11-20T10:00:00.000Z`]: 4242 });
      const odd = await anomaliesOf(t, "odd_field");
      expect(odd.map((a) => a.event_sid)).toEqual([sidOf(ev)]);
      expect(odd[0]?.detail).toContain(`${path}:`);
      // An odd fleet_sid says nothing about the SIM's fleet: no membership recorded.
      const fleets = await all<{ fleet_sid: string }>(t, "select fleet_sid from sim_fleet_hours");
      expect(fleets).toEqual(path === "data.fleet_sid" ? [] : [{ fleet_sid: FLEET }]);
    },
  );
});

// EXPLAIN QUERY PLAN is SQLite's own: the PostgreSQL counterpart below asks EXPLAIN the same.
describe.runIf(testBackend() === "sqlite")("the outbox's hour index (SQLite)", () => {
  it("planning reads one hour of the outbox through its index", async () => {
    const t = await openTestLedger();
    const db = t.sqlite;
    if (!db) throw new Error("a SQLite ledger has its connection");
    const insert = db.$client.prepare(
      "insert into meter_reports (identifier, customer_id, hour, seq, value, timestamp, late, state, created_at) values (?, ?, ?, ?, ?, ?, 0, 'sent', 0)",
    );
    for (let c = 0; c < 20; c++)
      for (let h = 0; h < 50; h++)
        insert.run(`v1:cus_${c}:${h}:0`, `cus_${c}`, h * HOUR_MS, 0, 1, h * 3600);
    const plan = db.$client
      .prepare(
        "explain query plan select customer_id, state, sum(value), max(seq) from meter_reports where hour = ? group by customer_id, state",
      )
      .all(7 * HOUR_MS) as { detail: string }[];
    const details = plan.map((p) => p.detail).join("\n");
    expect(details).toMatch(/SEARCH meter_reports USING INDEX meter_reports_hour_idx \(hour=\?\)/);
    expect(details).not.toMatch(/SCAN meter_reports/);
  });
});

// The same property on PostgreSQL's planner, with the table's statistics collected.
describe.runIf(testBackend() === "postgres")("the outbox's hour index (PostgreSQL)", () => {
  it("planning reads one hour of the outbox through its index", async () => {
    const t = await openTestLedger();
    // the same 20 customers × 50 hours as above, in one statement
    await t.sql(
      `insert into meter_reports (identifier, customer_id, hour, seq, value, timestamp, late, state, created_at)
       select 'v1:cus_' || c || ':' || h || ':0', 'cus_' || c, h * ?::bigint, 0, 1, h * 3600, false, 'sent', 0
         from generate_series(0, 19) as c, generate_series(0, 49) as h`,
      HOUR_MS,
    );
    await t.sql("analyze meter_reports");
    const plan = await t.sql<{ "QUERY PLAN": string }>(
      `explain select customer_id, state, sum(value), max(seq) from meter_reports where hour = ${7 * HOUR_MS} group by customer_id, state`,
    );
    const details = plan.map((p) => p["QUERY PLAN"]).join("\n");
    expect(details).toMatch(
      /Index (Only )?Scan using meter_reports_hour_idx|Bitmap Index Scan on meter_reports_hour_idx/,
    );
    expect(details).toMatch(/Index Cond: \(hour = /);
    expect(details).not.toMatch(/Seq Scan on meter_reports/);
  });
});
