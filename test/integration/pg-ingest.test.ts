// The PostgreSQL ingest adapter (src/ledger/pg/ingest.ts, tx.ts) against the SQLite reference
// (src/ledger/sqlite/ingest.ts through ingestDeliveries), both with their real migrations, nothing
// mocked: (a) the same jobs leave the same rows in every ledger table and return the same
// summaries; (b) four concurrent workers, each delivery sent to two of them, count every event
// once; (c) withTx's retries, rollback and ledger barrier.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { openDb } from "../../src/db/client.ts";
import { createPool } from "../../src/db/pg/client.ts";
import { type IngestSettings, ingestDeliveries, prepareIngest } from "../../src/ingest/ingest.ts";
import type { Delivery, IngestJobData } from "../../src/ingest/job.ts";
import { PRUNED_BEFORE } from "../../src/ingest/prune.ts";
import type { IngestSummary } from "../../src/ingest/summary.ts";
import { ingestJobPg } from "../../src/ledger/pg/ingest.ts";
import { isRetryable, LEDGER_BARRIER, withTx } from "../../src/ledger/pg/tx.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { Rng, simulateFleet } from "../../src/simulate/fleet.ts";
import { truthRecord } from "../drills/drill-helpers.ts";
import { planHostile } from "../drills/hostile-cases.ts";
import { testPgPool } from "../helpers/pg.ts";

const HOUR = 3_600_000;
const FROM = Date.UTC(2025, 2, 3, 22, 0, 0);

const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

function pools(url: string, n: number, lockTimeoutMs?: number): pg.Pool[] {
  return Array.from({ length: n }, () => {
    const p = createPool(url, { role: "test-worker", max: 1, lockTimeoutMs });
    cleanup.push(() => p.end());
    return p;
  });
}

// --- ledger dumps ----------------------------------------------------------------------------

type Row = Record<string, unknown>;
/** auto ids: allocated differently by each database (compared through the rows' own keys) */
const SKIP_COLUMNS = new Set(["id", "row_id"]);

async function ledgerColumns(pool: pg.Pool): Promise<Map<string, string[]>> {
  const r = await pool.query<{ table_name: string; column_name: string }>(
    `select table_name, column_name from information_schema.columns
      where table_schema = 'public' order by table_name, ordinal_position`,
  );
  const out = new Map<string, string[]>();
  for (const x of r.rows) {
    if (SKIP_COLUMNS.has(x.column_name)) continue;
    const list = out.get(x.table_name) ?? [];
    list.push(x.column_name);
    out.set(x.table_name, list);
  }
  return out;
}

/**
 * The table as a comparable value: booleans as 0/1 (SQLite's), rows sorted. A lone surrogate in
 * text (JSON.parse's message can cut a pair in two) reaches neither database intact: SQLite keeps
 * its 3 bytes and reads them back as 3 U+FFFD, node-postgres sends one U+FFFD; runs of U+FFFD
 * compare as one.
 */
function normalise(rows: Row[]): Row[] {
  const out = rows.map((r) => {
    const o: Row = {};
    for (const [k, v] of Object.entries(r))
      o[k] =
        typeof v === "boolean"
          ? Number(v)
          : typeof v === "string"
            ? v.replace(/\uFFFD+/g, "\uFFFD")
            : v;
    return o;
  });
  const key = (r: Row) => JSON.stringify(r);
  return out.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

type Dump = Record<string, Row[]>;

async function dumpPg(pool: pg.Pool, columns: Map<string, string[]>): Promise<Dump> {
  const out: Dump = {};
  for (const [table, cols] of columns) {
    const r = await pool.query(`select ${cols.map((c) => `"${c}"`).join(", ")} from "${table}"`);
    out[table] = normalise(r.rows);
  }
  return out;
}

function dumpSqlite(db: ReturnType<typeof openDb>, columns: Map<string, string[]>): Dump {
  const out: Dump = {};
  for (const [table, cols] of columns) {
    const rows = db.$client
      .prepare(`select ${cols.map((c) => `"${c}"`).join(", ")} from "${table}"`)
      .all() as Row[];
    out[table] = normalise(rows);
  }
  return out;
}

// --- inputs ----------------------------------------------------------------------------------

const ACCOUNT = `AC${"7".repeat(32)}`;
const hex32 = (p: string, i: number) => `${p}${i.toString(16).padStart(32, "0")}`;

/** the fixture files of test/fixtures and ../shared/fixtures, as the webhook bodies they are */
function fixtureBodies(): string[] {
  const dirs = [
    join(import.meta.dirname, "../fixtures"),
    join(import.meta.dirname, "../../../shared/fixtures"),
  ];
  const out: string[] = [];
  for (const dir of dirs) {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const n of names.sort()) {
      if (!n.endsWith(".json") || n === "signature-vectors.json") continue;
      out.push(readFileSync(join(dir, n), "utf8"));
    }
  }
  return out;
}

type Data = Record<string, unknown>;
const dataOf = (ev: Record<string, unknown>) => ev.data as Data;

/**
 * Edits that exercise the sims and fleet rules: some SIMs move to another fleet halfway (and
 * back), some events lose their fleet, names come and go, one SIM changes its ICCID.
 */
function descriptiveChurn(events: Record<string, unknown>[], rng: Rng): Record<string, unknown>[] {
  const sims = [...new Set(events.map((e) => dataOf(e).sim_sid as string))].sort();
  const role = new Map(sims.map((s, i) => [s, i % 5]));
  const mid = FROM + 3 * HOUR;
  return events.map((ev) => {
    const e = structuredClone(ev);
    const d = dataOf(e);
    const t = Date.parse(d.timestamp as string);
    switch (role.get(d.sim_sid as string)) {
      case 1:
        if (t > mid) d.fleet_sid = hex32("HF", 0xf1);
        if (t > mid + 2 * HOUR) d.fleet_sid = hex32("HF", 0xf2);
        break;
      case 2:
        {
          const r = rng.float();
          if (r < 0.3) delete d.fleet_sid;
          else if (r < 0.5) d.fleet_sid = hex32("HF", 0xf4);
        }
        if (rng.chance(0.5)) d.sim_unique_name = `device-${rng.int(0, 3)}`;
        break;
      case 3:
        if (t > mid) d.sim_iccid = "89883070000000000001";
        if (rng.chance(0.2)) d.fleet_sid = hex32("HF", 0xf3);
        break;
      default:
        break;
    }
    return e;
  });
}

/** Two sessions of one SIM ending in the same hour whose sum is beyond 2^53 - 1: one is refused. */
function overflowEvents(): Record<string, unknown>[] {
  const sim = hex32("HS", 0xbad);
  const mk = (i: number, end: number) =>
    buildCloudEvent({
      eventSid: hex32("EZ", 0xbad0 + i),
      kind: "data-session.ended",
      accountSid: ACCOUNT,
      simSid: sim,
      iccid: "89883070000000000bad".replace("bad", "777"),
      fleetSid: hex32("HF", 0xbad),
      timestampMs: end,
      sessionSid: hex32("PI", 0xbad0 + i),
      sessionStartMs: end - 10 * 60_000,
      sessionEndMs: end,
      windowStartMs: end - 10 * 60_000,
      windowEndMs: end,
      windowDown: 5e15,
      cumulativeDown: 5e15,
    });
  return [mk(1, FROM + 90 * 60_000), mk(2, FROM + 100 * 60_000), mk(3, FROM + 110 * 60_000)];
}

/**
 * The sims rule's corner: a job whose older sighting names a fleet and a name, and whose newer one
 * names neither. Per event, the older one changes nothing (the stored row is newer) and the newer
 * one keeps the stored fleet and name; a fold of the job's sightings alone would take the older's.
 */
function simsFoldJobs(tag: string): IngestJobData[] {
  const sim = hex32("HS", 0x51);
  const ev = (i: number, t: number, fleet: string | null, name: string | null) => {
    const e = buildCloudEvent({
      eventSid: hex32("EZ", 0x5100 + i),
      kind: "attachment.accepted",
      accountSid: ACCOUNT,
      simSid: sim,
      iccid: `898830700000000051${i}`,
      fleetSid: fleet,
      timestampMs: t,
    });
    if (name) (e.data as Data).sim_unique_name = name;
    return e;
  };
  const t0 = FROM + 2 * HOUR;
  const job = (n: number, events: unknown[]): IngestJobData => ({
    v: 1,
    deliveries: [{ id: `${tag}-sims${n}`, receivedAt: t0, source: "twilio", events }],
  });
  return [
    job(0, [ev(0, t0 + 60_000, hex32("HF", 0x51), "first")]),
    job(1, [ev(1, t0, hex32("HF", 0x52), "older"), ev(2, t0 + 120_000, null, null)]),
  ];
}

/**
 * Events → deliveries (1 to 25 events each, as parsed events, a JSON body or JSON lines, now and
 * then with a line that is not JSON) → jobs (1 to 4 deliveries). Some deliveries are sent again
 * in a later job, some are held back to the very end (late readings, out-of-order fleet hours),
 * and one job carries the same delivery twice.
 */
function makeJobs(
  events: readonly unknown[],
  extraBodies: readonly string[],
  rng: Rng,
  tag: string,
): IngestJobData[] {
  const deliveries: Delivery[] = [];
  const sources: Delivery["source"][] = ["twilio", "kore", "unsigned", "replay"];
  let i = 0;
  let n = 0;
  while (i < events.length) {
    const size = rng.chance(0.3) ? 1 : rng.int(1, 25);
    const chunk = events.slice(i, i + size);
    i += chunk.length;
    const base = {
      id: `${tag}-d${n}`,
      receivedAt: FROM + n * 1000,
      source: sources[n % sources.length] as Delivery["source"],
    };
    n++;
    const form = rng.int(0, 2);
    if (form === 0) deliveries.push({ ...base, events: chunk });
    else if (form === 1) deliveries.push({ ...base, body: JSON.stringify(chunk) });
    else {
      const lines = chunk.map((e) => JSON.stringify(e));
      if (rng.chance(0.1)) lines.splice(rng.int(0, lines.length), 0, "{not json");
      deliveries.push({ ...base, lines });
    }
  }
  for (const body of extraBodies) {
    const at = rng.int(0, deliveries.length);
    deliveries.splice(at, 0, {
      id: `${tag}-x${n}`,
      receivedAt: FROM + n * 1000,
      source: "twilio",
      body,
    });
    n++;
  }
  // ~8% arrive late: most in a job with newer deliveries (10 to 60 deliveries on), some at the end
  const held: Delivery[] = [];
  const late = new Map<number, Delivery[]>();
  const order: Delivery[] = [];
  for (const [i, d] of deliveries.entries()) {
    for (const l of late.get(i) ?? []) order.push(l);
    if (!rng.chance(0.08)) order.push(d);
    else if (rng.chance(0.3)) held.push(d);
    else {
      const at = i + rng.int(10, 60);
      late.set(at, [...(late.get(at) ?? []), d]);
    }
  }
  for (const [at, list] of late) if (at >= deliveries.length) held.push(...list);
  const jobs: IngestJobData[] = [];
  let k = 0;
  while (k < order.length) {
    const size = rng.int(1, 4);
    const list = order.slice(k, k + size);
    k += list.length;
    jobs.push({ v: 1, deliveries: list });
  }
  // re-sent later: whole jobs, and single deliveries inside other jobs
  const resent = jobs.filter(() => rng.chance(0.08)).map((j) => ({ ...j }));
  for (const j of resent) jobs.splice(rng.int(Math.floor(jobs.length / 2), jobs.length), 0, j);
  for (let r = 0; r < 4 && order.length > 0; r++) {
    const d = order[rng.int(0, order.length - 1)] as Delivery;
    jobs.push({ v: 1, deliveries: [d] });
  }
  const first = order[0];
  if (first) jobs.push({ v: 1, deliveries: [first, first] });
  for (let h = 0; h < held.length; h += 3) jobs.push({ v: 1, deliveries: held.slice(h, h + 3) });
  return jobs;
}

/** a job, or a move of the prune floor on both ledgers */
type Step = IngestJobData | { floor: number };

/** the re-plan marks ingest leaves, and their key column */
const DIRTY = [
  ["report_dirty_sims", "sim_sid"],
  ["report_dirty_hours", "hour"],
] as const;

type Scenario = {
  name: string;
  seed: number;
  stream: "realtime" | "ended-only";
  schemaVersion?: 1 | 2;
  settings: IngestSettings;
  /** hours after the fleet's end that `now` is */
  nowAfterHours?: number;
  prunedBefore?: number;
  overflow?: boolean;
};

const base: IngestSettings = {
  billingMode: "realtime",
  attribution: "end",
  retentionDays: 100_000,
  maxBytesPerSecond: 250_000_000,
};

const SCENARIOS: Scenario[] = [
  { name: "realtime, end attribution", seed: 11, stream: "realtime", settings: base },
  {
    name: "realtime, prorate",
    seed: 12,
    stream: "realtime",
    settings: { ...base, attribution: "prorate" },
  },
  {
    name: "ended-only stream, ended-only mode, end attribution",
    seed: 13,
    stream: "ended-only",
    settings: { ...base, billingMode: "ended-only" },
  },
  {
    name: "realtime stream, ended-only mode, prorate (updates counted as non-billing)",
    seed: 14,
    stream: "realtime",
    settings: { ...base, billingMode: "ended-only", attribution: "prorate" },
  },
  {
    name: "schema v1 realtime (window-based re-attribution), end",
    seed: 15,
    stream: "realtime",
    schemaVersion: 1,
    settings: base,
  },
  {
    name: "schema v1 in ended-only mode (ended events quarantined), prorate",
    seed: 16,
    stream: "realtime",
    schemaVersion: 1,
    settings: { ...base, billingMode: "ended-only", attribution: "prorate" },
  },
  {
    name: "30-day retention, a prune floor, an hour overflow, unlimited rate",
    seed: 17,
    stream: "realtime",
    settings: { ...base, retentionDays: 30, maxBytesPerSecond: Number.MAX_SAFE_INTEGER },
    nowAfterHours: 5,
    prunedBefore: FROM + 40 * 60_000,
    overflow: true,
  },
];

// --- (a) differential --------------------------------------------------------------------------

describe("pgIngestOps equals the SQLite reference", () => {
  for (const sc of SCENARIOS) {
    it(sc.name, async () => {
      const to = FROM + 6 * HOUR;
      const sim = simulateFleet({
        seed: sc.seed,
        customers: 3,
        sims: 14,
        from: FROM,
        to,
        billingMode: sc.stream,
        schemaVersion: sc.schemaVersion ?? 2,
        perturb: { duplicateRate: 0.1, reorder: true },
        noise: { attachmentRate: 0.3, rejectionStormRate: 0.05, failedSessionRate: 0.1 },
      });
      const rng = new Rng(sc.seed, 99);
      const fleetEvents = descriptiveChurn([...sim.events], rng);
      const hostile = planHostile(fleetEvents.slice(0, 40), 50, sc.seed)
        .requests.filter((r) => r.expect.status === 200)
        .map((r) => r.body.toString("utf8"));
      const now = to + (sc.nowAfterHours ?? 24 * 365 * 10) * HOUR;
      const steps: Step[] = [
        ...makeJobs(fleetEvents, [...fixtureBodies(), ...hostile], rng, `s${sc.seed}`),
        ...simsFoldJobs(`s${sc.seed}`),
      ];
      if (sc.overflow) {
        // one job each: the later ones see the first's bytes through usageAt
        for (const [i, e] of overflowEvents().entries())
          steps.push({
            v: 1,
            deliveries: [{ id: `ovf${i}`, receivedAt: now, source: "kore", events: [e] }],
          });
      }
      if (sc.prunedBefore !== undefined) {
        // one delivery refused for its age, then again once the floor has passed it: the
        // quarantine row keeps the latest reason
        const old = buildCloudEvent({
          eventSid: hex32("EZ", 0x01d),
          kind: "attachment.accepted",
          accountSid: ACCOUNT,
          simSid: hex32("HS", 0x01d),
          iccid: "89883070000000000100",
          timestampMs: now - 31 * 24 * HOUR,
        });
        const again: IngestJobData = {
          v: 1,
          deliveries: [{ id: "old", receivedAt: now, source: "twilio", events: [old] }],
        };
        steps.push({ floor: 0 }, again, { floor: now - 30.5 * 24 * HOUR }, again);
      }
      const jobs = steps.filter((x): x is IngestJobData => "v" in x);

      const db = openDb(":memory:");
      const ctx = { db, stmts: prepareIngest(db), settings: sc.settings, now: () => now };
      const { pool } = await testPgPool(cleanup);
      if (sc.prunedBefore !== undefined) {
        db.$client
          .prepare("insert into meta (key, value) values (?, ?)")
          .run(PRUNED_BEFORE, sc.prunedBefore);
        await pool.query("insert into meta (key, value) values ($1, $2)", [
          PRUNED_BEFORE,
          sc.prunedBefore,
        ]);
      }

      const totals = { counted: 0, duplicates: 0, quarantined: 0, sessions: 0, nonBilling: 0 };
      const marks: Record<string, number> = {};
      for (const [j, job] of steps.entries()) {
        if ("floor" in job) {
          db.$client
            .prepare("insert or replace into meta (key, value) values (?, ?)")
            .run(PRUNED_BEFORE, job.floor);
          await pool.query(
            "insert into meta (key, value) values ($1, $2) on conflict (key) do update set value = excluded.value",
            [PRUNED_BEFORE, job.floor],
          );
          continue;
        }
        // Per-event application of the sims rule on both sides: the SQLite cache that skips a
        // SIM's unchanged sightings across jobs (and so leaves last_event_at behind) is cleared.
        ctx.stmts.simsWritten.clear();
        const want: IngestSummary = ingestDeliveries(ctx, job);
        const got = await ingestJobPg(pool, job, sc.settings, now);
        expect(got, `job ${j}`).toEqual(want);
        for (const k of Object.keys(totals) as (keyof typeof totals)[]) totals[k] += want[k];
        // The marks a job leaves, job by job, then consumed as a planner would: the tables
        // saturate otherwise (a SIM marked once hides whether later jobs marked it again).
        for (const [table, col] of DIRTY) {
          const sqliteMarks = db.$client
            .prepare(`select ${col} as k from ${table} order by 1`)
            .all()
            .map((r) => (r as { k: unknown }).k);
          db.$client.prepare(`delete from ${table}`).run();
          const pgMarks = (await pool.query(`delete from ${table} returning ${col} as k`)).rows.map(
            (r) => r.k,
          );
          pgMarks.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
          expect(pgMarks, `job ${j}: ${table}`).toEqual(sqliteMarks);
          marks[table] = (marks[table] ?? 0) + sqliteMarks.length;
        }
      }
      const columns = await ledgerColumns(pool);
      expect(columns.size).toBe(15);
      const want = dumpSqlite(db, columns);
      const got = await dumpPg(pool, columns);
      for (const table of columns.keys()) expect(got[table], table).toEqual(want[table]);

      // what the scenario covered, so that a scenario that stops covering something shows
      const sizes = Object.fromEntries(Object.entries(want).map(([t, rows]) => [t, rows.length]));
      console.log(`${sc.name}: ${jobs.length} jobs`, totals, marks, sizes);
      expect(totals.counted).toBeGreaterThan(100);
      expect(totals.duplicates).toBeGreaterThan(10);
      expect(totals.quarantined).toBeGreaterThan(10);
      expect(sizes.sim_fleet_hours).toBeGreaterThan(0);
      expect(marks.report_dirty_sims).toBeGreaterThan(sizes.sims ?? 0);
      if (sc.overflow) {
        expect(want.anomalies?.some((a) => a.kind === "unrepresentable_total")).toBe(true);
      }
      // a placeholder is never committed
      const placeholders = await pool.query(
        "select count(*)::int as n from sessions where updated_at = 0",
      );
      expect(placeholders.rows[0].n).toBe(0);
      db.$client.close();
    });
  }
});

// --- (b) concurrency ---------------------------------------------------------------------------

function usageRecord(rows: { sim_sid: string; hour: number; bytes: number }[]) {
  const out: Record<string, number> = {};
  for (const r of rows)
    if (r.bytes !== 0) out[`${r.sim_sid}@${new Date(r.hour).toISOString()}`] = r.bytes;
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/**
 * lockTimeoutMs: a lock_timeout so short that waits on the barrier, a session or a claim turn into
 * 55P03: the retries re-run the whole unit of work, and a job that fails all 5 attempts goes
 * back to its worker (as BullMQ would retry it).
 */
const CONCURRENT: {
  attribution: "end" | "prorate";
  seed: number;
  lockTimeoutMs?: number;
  label: string;
}[] = [
  { attribution: "end", seed: 21, label: "" },
  { attribution: "prorate", seed: 22, label: "" },
  { attribution: "end", seed: 23, lockTimeoutMs: 1, label: ", lock_timeout 1 ms" },
];

describe("concurrent workers on one database", () => {
  for (const { attribution, seed, lockTimeoutMs, label } of CONCURRENT)
    it(`four workers, every delivery sent to two of them, a planner taking the barrier${label}: each event counted once, usage = SQLite${attribution === "end" ? " = truth" : ""} (${attribution} attribution)`, async () => {
      const to = FROM + 6 * HOUR;
      const sim = simulateFleet({
        seed,
        customers: 4,
        sims: 30,
        from: FROM,
        to,
        billingMode: "realtime",
        perturb: { duplicateRate: 0.1, reorder: true },
      });
      const events = [...sim.events];
      const truth = truthRecord(sim.truth());
      const rng = new Rng(seed, 5);
      const deliveries: Delivery[] = [];
      for (let i = 0, n = 0; i < events.length; n++) {
        const size = rng.int(1, 12);
        deliveries.push({
          id: `c-d${n}`,
          receivedAt: FROM + n * 1000,
          source: "twilio",
          events: events.slice(i, i + size),
        });
        i += size;
      }
      const WORKERS = 4;
      const queues: Delivery[][] = Array.from({ length: WORKERS }, () => []);
      for (const d of deliveries) {
        const a = rng.int(0, WORKERS - 1);
        const b = (a + rng.int(1, WORKERS - 1)) % WORKERS;
        queues[a]?.push(d);
        queues[b]?.push(d);
      }
      // odd workers take their deliveries a little out of order (windows of 8)
      for (const [w, q] of queues.entries()) {
        if (w % 2 === 0) continue;
        for (let i = 0; i < q.length; i += 8) {
          const win = q.slice(i, i + 8);
          for (let k = win.length - 1; k > 0; k--) {
            const r = rng.int(0, k);
            [win[k], win[r]] = [win[r] as Delivery, win[k] as Delivery];
          }
          q.splice(i, win.length, ...win);
        }
      }
      const settings: IngestSettings = { ...base, attribution };
      const now = to + HOUR;
      const { url, pool } = await testPgPool(cleanup);
      const workers = pools(url, WORKERS, lockTimeoutMs);
      let requeued = 0;
      const retries: Record<string, number> = {};
      const onRetry = (code: string) => {
        retries[code] = (retries[code] ?? 0) + 1;
      };
      let jobs = 0;
      let done = 0;
      let plans = 0;
      const started = performance.now();
      // a planner: a short exclusive-barrier transaction every few ms while the workers run
      const planner = (async () => {
        while (done < WORKERS) {
          await withTx(
            pool,
            async (c) => {
              await c.query("select count(*) from usage_hourly");
            },
            { barrier: "exclusive", retry: true, onRetry },
          );
          plans++;
          await new Promise((r) => setTimeout(r, 3));
        }
      })();
      const results = await Promise.allSettled(
        queues
          .map(async (q, w) => {
            const wrng = new Rng(seed, 100 + w);
            for (let i = 0; i < q.length; ) {
              const size = wrng.int(1, 6);
              const job = { v: 1 as const, deliveries: q.slice(i, i + size) };
              for (let attempt = 1; ; attempt++) {
                try {
                  await ingestJobPg(workers[w] as pg.Pool, job, settings, now, { onRetry });
                  break;
                } catch (err) {
                  if (lockTimeoutMs === undefined || !isRetryable(err) || attempt >= 20) throw err;
                  requeued++;
                }
              }
              jobs++;
              i += size;
            }
          })
          .map((p) => p.finally(() => done++)),
      );
      await planner;
      const ms = performance.now() - started;
      const failures = results.filter((r) => r.status === "rejected");
      expect(failures).toEqual([]);
      console.log(
        `concurrency (${attribution}${lockTimeoutMs ? `, lock_timeout ${lockTimeoutMs} ms` : ""}): ${events.length} events, ${deliveries.length} deliveries, ${jobs} jobs on ${WORKERS} workers and ${plans} exclusive planner transactions in ${ms.toFixed(0)} ms; requeued after 5 attempts ${requeued}; retries`,
        retries,
      );
      if (lockTimeoutMs !== undefined) expect(retries["55P03"] ?? 0).toBeGreaterThan(0);

      // the SQLite reference: each delivery once, in order
      const db = openDb(":memory:");
      const ctx = { db, stmts: prepareIngest(db), settings, now: () => now };
      for (let i = 0; i < deliveries.length; i += 5) {
        ctx.stmts.simsWritten.clear(); // per-event sims rule, as PG applies it (see above)
        ingestDeliveries(ctx, { v: 1, deliveries: deliveries.slice(i, i + 5) });
      }

      const pgUsage = usageRecord(
        (await pool.query("select sim_sid, hour, bytes from usage_hourly")).rows,
      );
      const sqliteUsage = usageRecord(
        db.$client.prepare("select sim_sid, hour, bytes from usage_hourly").all() as {
          sim_sid: string;
          hour: number;
          bytes: number;
        }[],
      );
      expect(Object.keys(truth).length).toBeGreaterThan(50);
      expect(pgUsage).toEqual(sqliteUsage);
      if (attribution === "end") expect(pgUsage).toEqual(truth);

      const distinct = new Set(
        events.map((e) => dataOf(e as Record<string, unknown>).event_sid as string).filter(Boolean),
      );
      const seen = await pool.query<{ n: number; d: number }>(
        "select count(*)::int as n, count(distinct event_sid)::int as d from seen_events",
      );
      expect(seen.rows[0]).toEqual({ n: distinct.size, d: distinct.size });

      const columns = await ledgerColumns(pool);
      const got = await dumpPg(pool, columns);
      const want = dumpSqlite(db, columns);
      // Set functions of the events counted, whatever order and worker counted them in (but
      // received_at: the simulator's duplicates arrive in other deliveries, the first claim wins).
      const claims = (rows: Row[] = []) => rows.map((r) => ({ ...r, received_at: 0 }));
      expect(claims(got.seen_events)).toEqual(claims(want.seen_events));
      for (const t of ["readings", "usage_hourly", "sims", "sim_fleet_hours"])
        expect(got[t], t).toEqual(want[t]);
      const totals = (rows: Row[] = []) =>
        rows.map((r) => [
          r.session_sid,
          r.total_bytes,
          r.reading_count,
          r.last_reading_at,
          r.end_time,
        ]);
      expect(totals(got.sessions)).toEqual(totals(want.sessions));
      // A re-plan a sequential run asks for is never lost (a race may add one).
      const dirty = (rows: Row[] = []) => rows.map((r) => r.sim_sid);
      for (const s of dirty(want.report_dirty_sims))
        expect(dirty(got.report_dirty_sims)).toContain(s);
      expect(got.report_dirty_hours).toEqual(want.report_dirty_hours);
      db.$client.close();
    });
});

// --- (c) withTx ----------------------------------------------------------------------------------

function deferred<T = void>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

async function until(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** the barrier's holders and waiters: mode and whether granted */
async function barrierLocks(pool: pg.Pool): Promise<{ mode: string; granted: boolean }[]> {
  const r = await pool.query<{ mode: string; granted: boolean }>(
    `select mode, granted from pg_locks
      where locktype = 'advisory' and classid = $1 and objid = $2 and objsubid = 2
      order by granted desc, mode`,
    [...LEDGER_BARRIER],
  );
  return r.rows;
}

describe("withTx", () => {
  it("a deadlock aborts one side, which is re-run and succeeds", async () => {
    const { pool } = await testPgPool(cleanup);
    await pool.query("insert into meta (key, value) values ('a', 0), ('b', 0)");
    const codes: string[] = [];
    const arrived = { n: 0, both: deferred() };
    const attempts = { ab: 0, ba: 0 };
    const cross = (first: string, second: string, name: "ab" | "ba") =>
      withTx(
        pool,
        async (c) => {
          attempts[name]++;
          await c.query("update meta set value = value + 1 where key = $1", [first]);
          if (attempts[name] === 1) {
            if (++arrived.n === 2) arrived.both.resolve();
            await arrived.both.promise;
          }
          await c.query("update meta set value = value + 1 where key = $1", [second]);
          return name;
        },
        { barrier: "shared", retry: true, onRetry: (code) => codes.push(code) },
      );
    const results = await Promise.all([cross("a", "b", "ab"), cross("b", "a", "ba")]);
    expect(results).toEqual(["ab", "ba"]);
    expect(codes).toEqual(["40P01"]);
    expect(attempts.ab + attempts.ba).toBe(3);
    const r = await pool.query("select key, value from meta order by key");
    expect(r.rows).toEqual([
      { key: "a", value: 2 },
      { key: "b", value: 2 },
    ]);
  });

  it("a lock that is not available (55P03) is retried once the holder lets go", async () => {
    const { pool } = await testPgPool(cleanup);
    await pool.query("insert into meta (key, value) values ('a', 0)");
    const holder = await pool.connect();
    await holder.query("begin");
    await holder.query("select * from meta where key = 'a' for update");
    let released: Promise<unknown> | null = null;
    const codes: string[] = [];
    const value = await withTx(
      pool,
      async (c) => {
        await c.query("select value from meta where key = 'a' for update nowait");
        const r = await c.query<{ value: number }>(
          "update meta set value = value + 1 where key = 'a' returning value",
        );
        return r.rows[0]?.value;
      },
      {
        barrier: "shared",
        retry: true,
        onRetry: (code) => {
          codes.push(code);
          released ??= holder.query("commit");
        },
      },
    );
    await released;
    holder.release();
    expect(value).toBe(1);
    expect(codes[0]).toBe("55P03");
  });

  it("any other error rolls back, is thrown at once, and the client goes back to the pool", async () => {
    const { pool } = await testPgPool(cleanup, 2);
    let attempts = 0;
    const codes: string[] = [];
    await expect(
      withTx(
        pool,
        async (c) => {
          attempts++;
          await c.query("insert into meta (key, value) values ('x', 1)");
          await c.query("select 1 / 0");
        },
        { barrier: "shared", retry: true, onRetry: (code) => codes.push(code) },
      ),
    ).rejects.toMatchObject({ code: "22012" });
    expect(attempts).toBe(1);
    expect(codes).toEqual([]);
    expect((await pool.query("select * from meta where key = 'x'")).rowCount).toBe(0);
    expect(pool.idleCount).toBe(pool.totalCount);
    // a JS error too
    await expect(
      withTx(
        pool,
        async (c) => {
          await c.query("insert into meta (key, value) values ('y', 1)");
          throw new Error("boom");
        },
        { barrier: "exclusive", retry: true },
      ),
    ).rejects.toThrow("boom");
    expect((await pool.query("select * from meta where key = 'y'")).rowCount).toBe(0);
    // a connection that dies is destroyed, not put back; the pool carries on
    await expect(
      withTx(pool, async (c) => c.query("select pg_terminate_backend(pg_backend_pid())"), {
        barrier: "none",
        retry: true,
      }),
    ).rejects.toThrow();
    expect(pool.idleCount).toBe(pool.totalCount);
    expect((await pool.query("select 1 as one")).rows).toEqual([{ one: 1 }]);
    expect(await barrierLocks(pool)).toEqual([]);
  });

  it("the exclusive barrier waits for a shared holder, and a later shared one queues behind it", async () => {
    const { pool } = await testPgPool(cleanup, 5);
    const order: string[] = [];
    const holdA = deferred();
    const a = withTx(
      pool,
      async () => {
        order.push("a runs");
        await holdA.promise;
        order.push("a ends");
      },
      { barrier: "shared" },
    );
    await until("a to hold the barrier", async () => (await barrierLocks(pool)).length === 1);
    const b = withTx(
      pool,
      async () => {
        order.push("b runs");
      },
      { barrier: "exclusive" },
    );
    await until("b to wait", async () =>
      (await barrierLocks(pool)).some((l) => l.mode === "ExclusiveLock" && !l.granted),
    );
    const c = withTx(
      pool,
      async () => {
        order.push("c runs");
      },
      { barrier: "shared" },
    );
    await until("c to wait", async () =>
      (await barrierLocks(pool)).some((l) => l.mode === "ShareLock" && !l.granted),
    );
    expect(await barrierLocks(pool)).toEqual([
      { mode: "ShareLock", granted: true },
      { mode: "ExclusiveLock", granted: false },
      { mode: "ShareLock", granted: false },
    ]);
    expect(order).toEqual(["a runs"]);
    holdA.resolve();
    await Promise.all([a, b, c]);
    expect(order).toEqual(["a runs", "a ends", "b runs", "c runs"]);
  });
});
