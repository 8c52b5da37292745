// The read side on PostgreSQL (src/ledger/pg/reads.ts) against SQLite's (src/ledger/sqlite/reads.ts),
// both with their real migrations, nothing mocked: the same deliveries ingested through both
// adapters, the same extra rows (usage that sums to zero, SIM SIDs whose order differs between a
// locale and bytewise compare, quarantine rows with mixed-case and non-ASCII reasons, requeue
// deliveries, anomalies, event counts with ties, customer assignments), then every ReadsPort
// method, the views over it (pages, cursors handed from one ledger to the other) and the requeue
// use cases (planning, enqueueing on a real BullMQ queue, marking, outcomes) run on both and
// compared.
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { type Db, openDb } from "../../src/db/client.ts";
import { createPool } from "../../src/db/pg/client.ts";
import type { Delivery, IngestJobData } from "../../src/ingest/job.ts";
import { createIngestQueue } from "../../src/ingest/queue.ts";
import {
  enqueueRequeue,
  type JobEnd,
  listQuarantineRows,
  planRequeue,
  type QuarantineFilter,
  RequeueSelectionError,
  requeueOutcomes,
} from "../../src/ingest/requeue.ts";
import type { IngestSettings } from "../../src/ingest/unit-of-work.ts";
import { pgLedger } from "../../src/ledger/pg/index.ts";
import { pgUnmapped } from "../../src/ledger/pg/reads.ts";
import type { Ledger } from "../../src/ledger/port.ts";
import { sqliteLedger } from "../../src/ledger/sqlite/index.ts";
import { Rng, simulateFleet } from "../../src/simulate/fleet.ts";
import {
  countQuarantine,
  type Granularity,
  listAnomalies,
  listEventCounts,
  listQuarantine,
  queryUsage,
  type UsageQuery,
} from "../../src/usage/query.ts";
import type { List } from "../../src/views/json.ts";
import { anomalyList, ledgerCounts, quarantineList } from "../../src/views/quarantine.ts";
import { unmappedList, usageList } from "../../src/views/usage.ts";
import { createTestDatabase } from "../helpers/pg.ts";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
// Across a day and a month boundary (UTC): 2026-10-31T20:00Z to 2026-11-01T04:00Z.
const FROM = Date.UTC(2026, 9, 31, 20, 0, 0);
const TO = FROM + 8 * HOUR;
const NOW = TO + 2 * HOUR;
const hex32 = (p: string, i: number) => `${p}${i.toString(16).padStart(32, "0")}`;

const settings: IngestSettings = {
  billingMode: "realtime",
  attribution: "end",
  retentionDays: 100_000,
  maxBytesPerSecond: 250_000_000,
};

const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

type Both = { db: Db; pool: pg.Pool; lite: Ledger; pg: Ledger };

async function both(): Promise<Both> {
  const db = openDb(":memory:");
  const tdb = await createTestDatabase();
  cleanup.push(tdb.drop);
  const pool = createPool(tdb.url, { role: "test", max: 4 });
  cleanup.push(() => pool.end());
  return { db, pool, lite: sqliteLedger(db), pg: pgLedger(pool, tdb.url) };
}

/** the same statement on both ledgers ($n placeholders, ? on SQLite) */
async function sql(b: Both, text: string, params: unknown[] = []): Promise<void> {
  b.db.$client
    .prepare(text.replace(/\$\d+/g, "?"))
    .run(...params.map((p) => (typeof p === "boolean" ? Number(p) : p)));
  await b.pool.query(text, params);
}

/** the same call through both adapters: equal answers, returned */
async function same<T>(b: Both, label: string, f: (l: Ledger) => Promise<T>): Promise<T> {
  const want = await f(b.lite);
  const got = await f(b.pg);
  expect(got, label).toEqual(want);
  return want;
}

/** a fleet's events (some SIMs moving fleet halfway), with attachment noise, as jobs */
function fleetJobs(seed: number, sims: number): IngestJobData[] {
  const sim = simulateFleet({
    seed,
    customers: 3,
    sims,
    from: FROM,
    to: TO,
    billingMode: "realtime",
    perturb: { duplicateRate: 0.05, reorder: true },
    noise: { attachmentRate: 0.6, rejectionStormRate: 0.2, failedSessionRate: 0.2 },
  });
  const all = [...sim.events] as Record<string, unknown>[];
  type Data = Record<string, unknown>;
  const ids = [...new Set(all.map((e) => (e.data as Data).sim_sid as string))].sort();
  const role = new Map(ids.map((s, i) => [s, i % 3]));
  const events = all.map((ev) => {
    const e = structuredClone(ev) as Record<string, unknown>;
    const d = e.data as Data;
    if (role.get(d.sim_sid as string) === 1 && Date.parse(d.timestamp as string) > FROM + 4 * HOUR)
      d.fleet_sid = hex32("HF", 0xf1);
    return e;
  });
  const rng = new Rng(seed, 7);
  const jobs: IngestJobData[] = [];
  for (let i = 0, n = 0; i < events.length; n++) {
    const size = rng.int(1, 15);
    const d: Delivery = {
      id: `r${seed}-d${n}`,
      receivedAt: FROM + n * 1000,
      source: "twilio",
      events: events.slice(i, i + size),
    };
    i += size;
    jobs.push({ v: 1, deliveries: [d] });
  }
  return jobs;
}

const LOWER_SIM = `HSa${"0".repeat(31)}`;
const UPPER_SIM = `HSB${"0".repeat(31)}`;
const ZERO_SIM = `HSc${"0".repeat(31)}`;

async function populate(b: Both): Promise<{ sims: string[]; sessions: string[]; seen: string[] }> {
  for (const job of fleetJobs(11, 14)) {
    const want = await b.lite.ingestJob(job, settings, () => NOW);
    const got = await b.pg.ingestJob(job, settings, () => NOW);
    expect(got).toEqual(want);
  }
  const sims = (
    b.db.$client.prepare("select distinct sim_sid from usage_hourly order by 1").all() as {
      sim_sid: string;
    }[]
  ).map((r) => r.sim_sid);
  const sessions = (
    b.db.$client.prepare("select session_sid from sessions order by 1 limit 3").all() as {
      session_sid: string;
    }[]
  ).map((r) => r.session_sid);
  const seen = (
    b.db.$client.prepare("select event_sid from seen_events order by 1 limit 4").all() as {
      event_sid: string;
    }[]
  ).map((r) => r.event_sid);
  expect(sims.length).toBeGreaterThan(8);
  expect(sessions).toHaveLength(3);

  // Usage only a bytewise order sorts the same everywhere ('B' < 'a'), a SIM whose hours sum to
  // zero over the day (kept by hour, dropped by day and in total) and a row of zero bytes.
  const usage: [number, string, number][] = [
    [FROM, LOWER_SIM, 100],
    [FROM + HOUR, LOWER_SIM, 50],
    [FROM, UPPER_SIM, 7],
    [FROM + 5 * HOUR, UPPER_SIM, 9],
    [FROM + 5 * HOUR, ZERO_SIM, 500],
    [FROM + 6 * HOUR, ZERO_SIM, -500],
    [FROM + 7 * HOUR, ZERO_SIM, 0],
  ];
  for (const [hour, sim, bytes] of usage)
    await sql(b, "insert into usage_hourly (hour, sim_sid, bytes) values ($1, $2, $3)", [
      hour,
      sim,
      bytes,
    ]);

  // Customers: two SIMs, an ICCID and (from halfway) the fleet some SIMs moved to.
  const iccid = (
    b.db.$client.prepare("select iccid from sims where sim_sid = ?").get(sims[2]) as {
      iccid: string;
    }
  ).iccid;
  const assignments: [number, string, string, string, number][] = [
    [1, "sim", sims[0] as string, "cus_a", 0],
    [2, "sim", sims[1] as string, "cus_b", FROM + 3 * HOUR],
    [3, "iccid", iccid, "cus_c", 0],
    [4, "fleet", hex32("HF", 0xf1), "cus_d", FROM + 6 * HOUR],
    [5, "sim", LOWER_SIM, "cus_a", FROM + HOUR],
  ];
  for (const a of assignments)
    await sql(
      b,
      "insert into assignments (id, target_type, target_id, customer_id, effective_from, created_at) values ($1, $2, $3, $4, $5, $6)",
      [...a, NOW],
    );

  // Quarantine: counted, not counted and no event_sid; a body (-1); rows requeues produced.
  const q: [number, number, string, string, number, string | null, string, string][] = [
    [1, FROM, "twilio", "d-1", 0, seen[0] as string, "data_total is negative", '{"a":1}'],
    [2, FROM + HOUR, "kore", "d-1", 1, "EZnotcounted1", "Older than the 40-DAY retention", "{}"],
    [3, FROM + 2 * HOUR, "unsigned", "d-2", -1, null, "body is not JSON", "not json"],
    [
      4,
      FROM + 3 * HOUR,
      "replay",
      "requeue:2",
      0,
      "EZnotcounted1",
      "older than the 40-day retention",
      "{}",
    ],
    [5, FROM + 4 * HOUR, "twilio", "d-3", 0, seen[1] as string, "Événement illisible", '{"b":2}'],
    [6, FROM + 5 * HOUR, "odd-source", "d-4", 0, "EZnotcounted2", "ÉVÉNEMENT inconnu", "{}"],
    [7, FROM + 6 * HOUR, "twilio", "requeue:2", 1, null, "schema: missing sim_sid", "[]"],
    [8, FROM + 7 * HOUR, "kore", "d-5", 0, seen[2] as string, "schema: missing SIM_SID", "{}"],
  ];
  for (const r of q)
    await sql(
      b,
      "insert into quarantine (id, received_at, source, delivery_id, position, event_sid, reason, raw) values ($1, $2, $3, $4, $5, $6, $7, $8)",
      r,
    );

  const an: [number, string, string, string, string, number][] = [
    [101, sessions[0] as string, "EZ1", "cumulative_decreased", "from 10 to 5", FROM],
    [102, sessions[1] as string, "EZ2", "reading_after_end", "x", FROM + HOUR],
    [103, sessions[0] as string, "EZ3", "impossible_rate", "y", FROM + 2 * HOUR],
    [104, "PInosuchsession", "EZ4", "cumulative_decreased", "z", FROM + 3 * HOUR],
    [105, sessions[2] as string, "EZ5", "Cumulative_decreased", "upper", FROM + 4 * HOUR],
  ];
  for (const r of an)
    await sql(
      b,
      "insert into anomalies (id, session_sid, event_sid, kind, detail, detected_at) values ($1, $2, $3, $4, $5, $6)",
      r,
    );

  // Ties on count (the order falls back to SIM, day, kind) and a row before `since`.
  const day = FROM - (FROM % DAY);
  const counts: [string, number, string, number][] = [
    [UPPER_SIM, day, "attachment.rejected", 40_000],
    [LOWER_SIM, day, "attachment.rejected", 40_000],
    [LOWER_SIM, day, "Attachment.failed", 40_000],
    [LOWER_SIM, day - 20 * DAY, "attachment.rejected", 99_999],
  ];
  for (const r of counts)
    await sql(b, "insert into event_counts (sim_sid, day, kind, count) values ($1, $2, $3, $4)", r);
  return { sims, sessions, seen };
}

/** every page of a view with this page size, and the cursors between them */
async function pages<T>(
  fetch: (page: { limit: number; starting_after?: string }) => Promise<List<T>>,
  limit: number,
): Promise<List<T>[]> {
  const out: List<T>[] = [];
  let cursor: string | undefined;
  for (;;) {
    const p = await fetch({ limit, ...(cursor !== undefined ? { starting_after: cursor } : {}) });
    out.push(p);
    if (!p.has_more || p.next_starting_after === null) return out;
    cursor = p.next_starting_after;
  }
}

/** paged through both; each of one ledger's cursors continues the same on the other */
async function samePages<T>(
  b: Both,
  label: string,
  fetch: (l: Ledger, page: { limit: number; starting_after?: string }) => Promise<List<T>>,
  limit: number,
): Promise<List<T>[]> {
  const want = await pages((p) => fetch(b.lite, p), limit);
  const got = await pages((p) => fetch(b.pg, p), limit);
  expect(got, label).toEqual(want);
  for (const p of want) {
    if (p.next_starting_after === null) continue;
    const next = { limit, starting_after: p.next_starting_after };
    expect(await fetch(b.pg, next), `${label} after ${p.next_starting_after}`).toEqual(
      await fetch(b.lite, next),
    );
  }
  return want;
}

const sorted = <T>(xs: Iterable<T>) => [...xs].sort();
const entries = <K, V>(m: Map<K, V>) =>
  [...m.entries()].sort((a, b) => (String(a[0]) < String(b[0]) ? -1 : 1));

describe("the read side: PostgreSQL equals SQLite", { timeout: 120_000 }, () => {
  let b: Both;
  let data: Awaited<ReturnType<typeof populate>>;
  beforeAll(async () => {
    b = await both();
    data = await populate(b);
  });

  it("usage by hour, day, month and in total, with SIM and time filters, keyset cursors and limits", async () => {
    const [s0, s1, s2] = data.sims as [string, string, string];
    const filters: Omit<UsageQuery, "granularity">[] = [
      {},
      { sims: [s0, s1, LOWER_SIM, UPPER_SIM] },
      { from: FROM + 2 * HOUR, to: FROM + 5 * HOUR },
      { sims: [s2, ZERO_SIM], from: FROM + 4 * HOUR },
      { after: { simSid: s1, period: "2026-11-01" }, limit: 5 },
      { after: { simSid: UPPER_SIM, period: "2026-10-31T20:00:00Z" } },
      { limit: 3 },
    ];
    for (const g of ["hour", "day", "month", "total"] as Granularity[])
      for (const f of filters) {
        const rows = await same(b, `${g} ${JSON.stringify(f)}`, (l) =>
          queryUsage(l, { granularity: g, ...f }),
        );
        for (const r of rows) expect(typeof r.bytes).toBe("number");
      }
    const hours = await queryUsage(b.pg, { granularity: "hour" });
    expect(hours.length).toBeGreaterThan(40);
    // Bytewise: "HSB…" before "HSa…"; the zero-sum SIM by hour, not by day or in total.
    const simOrder = [...new Set(hours.map((r) => r.simSid))];
    expect(simOrder.indexOf(UPPER_SIM)).toBeLessThan(simOrder.indexOf(LOWER_SIM));
    expect(hours.filter((r) => r.simSid === ZERO_SIM).map((r) => r.bytes)).toEqual([500, -500]);
    for (const g of ["day", "total"] as Granularity[])
      expect((await queryUsage(b.pg, { granularity: g })).some((r) => r.simSid === ZERO_SIM)).toBe(
        false,
      );
    expect(
      (await queryUsage(b.pg, { granularity: "day", sims: [LOWER_SIM, UPPER_SIM] })).map((r) => [
        r.simSid,
        r.period,
        r.bytes,
      ]),
    ).toEqual([
      [UPPER_SIM, "2026-10-31", 7],
      [UPPER_SIM, "2026-11-01", 9],
      [LOWER_SIM, "2026-10-31", 150],
    ]);
    expect(
      new Set((await queryUsage(b.pg, { granularity: "month" })).map((r) => r.period)),
    ).toEqual(new Set(["2026-10", "2026-11"]));

    for (const g of ["hour", "day", "month", "total"] as const) {
      const list = await samePages(
        b,
        `usageList ${g}`,
        (l, page) => usageList(l, { granularity: g, ...page }),
        4,
      );
      expect(list.length).toBeGreaterThan(1);
    }
    await samePages(
      b,
      "usageList filtered",
      (l, page) =>
        usageList(l, {
          granularity: "hour",
          sim: `${s0},${UPPER_SIM}, ${LOWER_SIM}`,
          from: FROM + HOUR,
          to: TO,
          ...page,
        }),
      2,
    );
  });

  it("unmapped usage: the same SIMs, bytes and hours, whatever the page of SIMs on PostgreSQL", async () => {
    const want = (await b.lite.reads.unmapped()).sort((x, y) => (x.simSid < y.simSid ? -1 : 1));
    const got = (await b.pg.reads.unmapped()).sort((x, y) => (x.simSid < y.simSid ? -1 : 1));
    expect(got).toEqual(want);
    for (const pageSims of [1, 2, 5])
      expect(
        (await pgUnmapped(b.pool, pageSims)).sort((x, y) => (x.simSid < y.simSid ? -1 : 1)),
      ).toEqual(want);
    const unmapped = new Set(want.map((u) => u.simSid));
    const [s0, s1, s2] = data.sims as [string, string, string];
    expect(unmapped.has(s0), "assigned from the start").toBe(false);
    expect(unmapped.has(s2), "its ICCID is assigned").toBe(false);
    expect(unmapped.has(UPPER_SIM)).toBe(true);
    expect(unmapped.has(ZERO_SIM), "unmapped hours summing to zero are listed").toBe(true);
    expect(want.find((u) => u.simSid === ZERO_SIM)?.bytes).toBe(0);
    expect(want.find((u) => u.simSid === UPPER_SIM)).toEqual({
      simSid: UPPER_SIM,
      iccid: null,
      fleetSid: null,
      bytes: 16,
      firstHour: new Date(FROM).toISOString(),
      lastHour: new Date(FROM + 5 * HOUR).toISOString(),
    });
    // Hours before a SIM's first assignment go to that customer: not unmapped.
    expect(unmapped.has(LOWER_SIM)).toBe(false);
    expect(unmapped.has(s1)).toBe(false);
    expect(want.length).toBeGreaterThan(3);
    await samePages(b, "unmappedList", (l, page) => unmappedList(l, page), 2);
  });

  it("quarantine rows with every filter, counted-ness, requeue links and pages", async () => {
    const filters: (QuarantineFilter & { limit: number; beforeId?: number })[] = [
      { limit: 100 },
      { limit: 3 },
      { limit: 100, beforeId: 6 },
      { limit: 100, reason: "40-day RETENTION" },
      { limit: 100, reason: "sim_sid" },
      { limit: 100, reason: "ÉVÉNEMENT" },
      { limit: 100, reason: "événement" },
      { limit: 100, reason: "NEMENT" },
      { limit: 100, since: FROM + 3 * HOUR },
      { limit: 100, ids: [2, 4, 7, 99] },
      { limit: 1, ids: [5], reason: "illisible", since: FROM },
    ];
    for (const f of filters) {
      const rows = await same(b, `quarantine ${JSON.stringify(f)}`, (l) => l.reads.quarantine(f));
      await same(b, `listQuarantineRows ${JSON.stringify(f)}`, (l) => listQuarantineRows(l, f));
      for (const r of rows) {
        expect(typeof r.id).toBe("number");
        expect(typeof r.receivedAt).toBe("number");
      }
    }
    // SQLite's lower() folds ASCII only: "ÉVÉNEMENT" finds the row spelt so, not "Événement".
    expect(
      (await b.pg.reads.quarantine({ limit: 10, reason: "ÉVÉNEMENT" })).map((r) => r.id),
    ).toEqual([6]);
    const all = await listQuarantineRows(b.pg, { limit: 100 });
    expect(all.map((r) => [r.id, r.counted, r.requeueOf, r.quarantinedAgainAs])).toEqual([
      [8, true, null, []],
      [7, null, 2, [4]],
      [6, false, null, []],
      [5, true, null, []],
      [4, false, 2, [7]],
      [3, null, null, []],
      [2, false, null, [4, 7]],
      [1, true, null, []],
    ]);
    await samePages(b, "quarantineList", (l, page) => quarantineList(l, page), 3);
    await samePages(
      b,
      "quarantineList filtered",
      (l, page) => quarantineList(l, { reason: "RETENTION", since: FROM + HOUR, ...page }),
      1,
    );
    await same(b, "listQuarantine", (l) => listQuarantine(l, 4));
    await same(b, "countQuarantine", (l) => countQuarantine(l));
  });

  it("the requeue reads: rows by delivery, candidates, ids, raw events, counted event_sids", async () => {
    const byDelivery = await same(b, "quarantineByDelivery", async (l) =>
      entries(await l.reads.quarantineByDelivery(["requeue:2", "d-1", "requeue:2", "nothing"])),
    );
    expect(byDelivery).toEqual([
      [
        "d-1",
        [
          { id: 1, reason: "data_total is negative" },
          { id: 2, reason: "Older than the 40-DAY retention" },
        ],
      ],
      [
        "requeue:2",
        [
          { id: 4, reason: "older than the 40-day retention" },
          { id: 7, reason: "schema: missing sim_sid" },
        ],
      ],
    ]);
    await same(b, "quarantineByDelivery none", async (l) =>
      entries(await l.reads.quarantineByDelivery([])),
    );
    for (const f of [
      { reason: "retention" },
      { since: FROM + 5 * HOUR },
      { ids: [3, 1, 8] },
      { ids: [1, 2], reason: "NEGATIVE" },
    ] as QuarantineFilter[])
      await same(b, `requeueCandidates ${JSON.stringify(f)}`, (l) => l.reads.requeueCandidates(f));
    await same(b, "quarantineIds", async (l) => sorted(await l.reads.quarantineIds([8, 3, 42, 3])));
    await same(b, "quarantineRaw", async (l) => entries(await l.reads.quarantineRaw([3, 1, 77])));
    const counted = await same(b, "countedSids", async (l) =>
      sorted(await l.reads.countedSids([...data.seen, "EZnotcounted1", data.seen[0] as string])),
    );
    expect(counted).toEqual(sorted(data.seen));
    await same(b, "countedSids none", async (l) => sorted(await l.reads.countedSids([])));
  });

  it("planRequeue: the same items and the same refusals", async () => {
    for (const f of [
      { reason: "retention" },
      { reason: "SIM_SID" },
      { since: FROM + 4 * HOUR },
      { ids: [7, 2, 4] },
      { ids: [3] },
    ] as QuarantineFilter[])
      await same(b, `planRequeue ${JSON.stringify(f)}`, (l) => planRequeue(l, f));
    const items = await planRequeue(b.pg, { reason: "retention" });
    expect(items.map((it) => [it.id, it.rowIds, it.deliveryId, it.counted])).toEqual([
      [2, [2, 4], "requeue:2", false],
    ]);
    expect((await planRequeue(b.pg, { ids: [6] }))[0]?.source).toBe("replay");
    for (const f of [{}, { reason: " " }, { ids: [1, 404, 405] }] as QuarantineFilter[]) {
      const errs: string[] = [];
      for (const l of [b.lite, b.pg]) {
        const e = await planRequeue(l, f).catch((err: unknown) => err);
        expect(e).toBeInstanceOf(RequeueSelectionError);
        errs.push((e as Error).message);
      }
      expect(errs[1]).toBe(errs[0]);
    }
    await expect(planRequeue(b.pg, { ids: [1, 404, 405] })).rejects.toThrow(
      /no quarantine row with id 404, 405/,
    );
  });

  it("anomalies with filters and pages, their kinds and sessions' SIMs", async () => {
    for (const f of [
      { limit: 100 },
      { limit: 2 },
      { limit: 100, beforeId: 104 },
      { limit: 100, kind: "cumulative_decreased" },
      { limit: 100, since: FROM + 2 * HOUR },
      { limit: 1, kind: "cumulative_decreased", since: FROM + HOUR, beforeId: 105 },
    ])
      await same(b, `anomalies ${JSON.stringify(f)}`, (l) => l.reads.anomalies(f));
    await same(b, "listAnomalies", (l) => listAnomalies(l, 3));
    await samePages(b, "anomalyList", (l, page) => anomalyList(l, page), 2);
    await samePages(
      b,
      "anomalyList by kind",
      (l, page) => anomalyList(l, { kind: "cumulative_decreased", ...page }),
      1,
    );
    expect(await same(b, "anomalyKinds", (l) => l.reads.anomalyKinds())).toEqual([
      "Cumulative_decreased",
      "cumulative_decreased",
      "impossible_rate",
      "reading_after_end",
    ]);
    const simOf = await same(b, "simsOfSessions", async (l) =>
      entries(await l.reads.simsOfSessions([...data.sessions, "PInosuchsession"])),
    );
    expect(simOf.map(([s]) => s)).toEqual(sorted(data.sessions));
  });

  it("event counts (ties by SIM, day, kind) and the ledger's counts", async () => {
    const since = FROM - (FROM % DAY) - DAY;
    for (const limit of [1, 2, 3, 200])
      await same(b, `eventCounts ${limit}`, (l) => l.reads.eventCounts(since, limit));
    const rows = await same(b, "listEventCounts", (l) => listEventCounts(l, since));
    expect(rows.length).toBeGreaterThan(4);
    expect(rows.slice(0, 3).map((r) => [r.simSid, r.kind, r.count])).toEqual([
      [UPPER_SIM, "attachment.rejected", 40_000],
      [LOWER_SIM, "Attachment.failed", 40_000],
      [LOWER_SIM, "attachment.rejected", 40_000],
    ]);
    expect(
      rows.some((r) => r.count === 99_999),
      "before since",
    ).toBe(false);
    for (const r of rows) expect(typeof r.day).toBe("number");
    expect(await same(b, "counts", (l) => ledgerCounts(l))).toEqual({
      quarantined: 8,
      anomalies: 5,
    });
  });

  it("requeue: enqueued on a real queue, rows marked in one transaction, outcomes from the ledger", async () => {
    const redis = new Redis(inject("redisUrl"), { maxRetriesPerRequest: null });
    cleanup.push(async () => redis.disconnect());
    const queueOf = () => {
      const q = createIngestQueue(redis, `pgreads${randomUUID().slice(0, 8)}`);
      cleanup.push(() => q.close());
      return q;
    };
    const jobsOf = async (l: Ledger) => {
      const items = await planRequeue(l, { since: FROM });
      const queue = queueOf();
      const jobs = await enqueueRequeue({ ledger: l, queue, items, now: () => NOW + 5 });
      const added = await Promise.all(
        jobs.map(async (j) => (await queue.getJob(j.jobId))?.data.deliveries),
      );
      return {
        jobs: jobs.map((j) => ({ ...j, jobId: "", seenBefore: sorted(j.seenBefore) })),
        added,
        raw: jobs,
      };
    };
    const lite = await jobsOf(b.lite);
    const pgj = await jobsOf(b.pg);
    expect(pgj.jobs).toEqual(lite.jobs);
    expect(pgj.added).toEqual(lite.added);
    // one job per event without an event_sid, the others together
    expect(lite.jobs.map((j) => j.items.map((it) => it.id))).toEqual([[3], [1, 2, 5, 6, 8]]);
    expect(lite.jobs[1]?.seenBefore).toEqual(sorted([data.seen[0], data.seen[1], data.seen[2]]));
    const table = "select id, requeued_at, requeues from quarantine order by id";
    const marked = b.db.$client.prepare(table).all();
    expect((await b.pool.query(table)).rows).toEqual(marked);
    expect(marked).toContainEqual({ id: 4, requeued_at: NOW + 5, requeues: 1 });
    expect(marked).toContainEqual({ id: 7, requeued_at: NOW + 5, requeues: 1 });

    // markRequeued on its own: an id given twice counts twice, as SQLite's loop does.
    await same(b, "markRequeued", async (l) => {
      await l.reads.markRequeued([3, 1, 3], NOW + 9);
      return null;
    });
    expect((await b.pool.query(table)).rows).toEqual(b.db.$client.prepare(table).all());
    expect((await b.pool.query("select requeues from quarantine where id = 3")).rows).toEqual([
      { requeues: 3 },
    ]);

    const ends: (JobEnd | undefined)[] = [
      undefined,
      { state: "failed", reason: "boom" },
      { state: "completed", result: { counted: 0, duplicates: 0, quarantined: 2 } },
      { state: "completed", result: { counted: 1, duplicates: 0, quarantined: 0 } },
      { state: "completed", result: { counted: 0, duplicates: 1, quarantined: 0 } },
    ];
    for (const end of ends)
      for (const [i, job] of lite.raw.entries()) {
        const want = (await requeueOutcomes(b.lite, job, end)).map((x) => ({ ...x, jobId: "" }));
        const got = (await requeueOutcomes(b.pg, pgj.raw[i] as typeof job, end)).map((x) => ({
          ...x,
          jobId: "",
        }));
        expect(got, JSON.stringify(end)).toEqual(want);
      }
    const done = await requeueOutcomes(b.pg, pgj.raw[1] as (typeof pgj.raw)[0], ends[2]);
    expect(done.map((x) => [x.id, x.outcome, x.quarantineId])).toEqual([
      [1, "duplicate", null],
      [2, "quarantined", 7],
      [5, "duplicate", null],
      [6, "ignored", null],
      [8, "duplicate", null],
    ]);
  });
});
