// The read commands through the built CLI (bin/simmeter.mjs: `npm run build` first) on a
// PostgreSQL ledger (DATABASE_URL) and on a SQLite ledger holding the same data: `usage`,
// `quarantine`, `anomalies` and `events` print the same documents and tables. Then `quarantine
// requeue` on PostgreSQL, with Redis and a real `simmeter work` on the same ledger: the events
// quarantined as older than the retention are counted once the worker runs with a larger one,
// and a second requeue counts nothing more.
import { randomUUID } from "node:crypto";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, inject, it } from "vitest";
import { DAY_MS } from "../../src/accounting/buckets.ts";
import { openDb } from "../../src/db/client.ts";
import { createPool } from "../../src/db/pg/client.ts";
import type { IngestJobData } from "../../src/ingest/job.ts";
import type { IngestSettings } from "../../src/ingest/unit-of-work.ts";
import { pgLedger } from "../../src/ledger/pg/index.ts";
import { sqliteLedger } from "../../src/ledger/sqlite/index.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { simulateFleet } from "../../src/simulate/fleet.ts";
import { createTestDatabase } from "../helpers/pg.ts";
import { pgLedgerReader, startWorker } from "../helpers/pg-ledger.ts";
import { runCli, tempDir } from "../helpers/process.ts";

const ACCOUNT = "ACe7ea554f7fc0fad65e689bb5899bb6c3";
const hex = () => randomUUID().replaceAll("-", "");
const HOUR = 3_600_000;
// Whole seconds, and recent enough for `simmeter events` (the last 7 days).
const NOW = Math.floor(Date.now() / 1000) * 1000;

const settings: IngestSettings = {
  billingMode: "realtime",
  attribution: "end",
  retentionDays: 40,
  maxBytesPerSecond: 250_000_000,
};

const cleanup: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

/** A data session of two readings (updated, then ended a second later): bytes[0] + bytes[1]. */
function session(simSid: string, t0: number, bytes: [number, number]) {
  const spec = {
    accountSid: ACCOUNT,
    simSid,
    iccid: "89883070000005381783",
    sessionSid: `PI${hex()}`,
    sessionStartMs: t0 - 60_000,
  };
  return [
    buildCloudEvent({
      ...spec,
      eventSid: `EZ${hex()}`,
      kind: "data-session.updated",
      timestampMs: t0,
      windowStartMs: t0 - 60_000,
      windowEndMs: t0,
      windowDown: bytes[0],
      cumulativeDown: bytes[0],
    }),
    buildCloudEvent({
      ...spec,
      eventSid: `EZ${hex()}`,
      kind: "data-session.ended",
      timestampMs: t0 + 1000,
      sessionEndMs: t0 + 1000,
      windowStartMs: t0,
      windowEndMs: t0 + 1000,
      windowDown: bytes[1],
      cumulativeDown: bytes[0] + bytes[1],
    }),
  ];
}

const OLD_SIM = `HS${hex()}`;

/** recent fleet usage with attachment noise, two sessions older than 40 days, a malformed event */
function jobs(): IngestJobData[] {
  const fleet = simulateFleet({
    seed: 5,
    customers: 2,
    sims: 6,
    from: NOW - 30 * HOUR,
    to: NOW - HOUR,
    billingMode: "realtime",
    noise: { attachmentRate: 0.8, rejectionStormRate: 0.3, failedSessionRate: 0.3 },
  });
  const events = [...fleet.events] as Record<string, unknown>[];
  const out: IngestJobData[] = [];
  for (let i = 0; i < events.length; i += 40)
    out.push({
      v: 1,
      deliveries: [
        {
          id: `fleet-${i}`,
          receivedAt: NOW - HOUR,
          source: "twilio",
          events: events.slice(i, i + 40),
        },
      ],
    });
  const t0 = NOW - 41 * DAY_MS;
  const [, ended] = session(`HS${hex()}`, NOW - 3 * HOUR, [10, 20]);
  (ended as { data: Record<string, unknown> }).data.data_total = -5;
  out.push({
    v: 1,
    deliveries: [
      {
        id: "old-and-broken",
        receivedAt: NOW - HOUR,
        source: "twilio",
        events: [...session(OLD_SIM, t0, [1000, 2000]), ended],
      },
    ],
  });
  // A job of its own: within one job the two adapters number quarantine rows in different orders
  // (SQLite by delivery, PostgreSQL by key), and these documents show the ids.
  out.push({
    v: 1,
    deliveries: [{ id: "a-body", receivedAt: NOW - HOUR, source: "unsigned", body: "{not json" }],
  });
  return out;
}

type Out = { status: number | null; stdout: string; stderr: string };

describe("the read commands on PostgreSQL", { timeout: 400_000 }, () => {
  it("print what they print on SQLite; quarantine requeue counts the events on PostgreSQL", async () => {
    const dir = tempDir("simmeter-pg-read-");
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const dbPath = join(dir, "simmeter.db");
    const tdb = await createTestDatabase();
    cleanup.push(tdb.drop);

    // The same deliveries through both adapters, and the same extra rows.
    const db = openDb(dbPath);
    const pool = createPool(tdb.url, { role: "test", max: 2 });
    const lite = sqliteLedger(db);
    const pgl = pgLedger(pool, tdb.url);
    for (const job of jobs())
      expect(await pgl.ingestJob(job, settings, () => NOW)).toEqual(
        await lite.ingestJob(job, settings, () => NOW),
      );
    const sessionSid = (
      db.$client.prepare("select session_sid from sessions order by 1 limit 1").get() as {
        session_sid: string;
      }
    ).session_sid;
    const extra: [string, unknown[]][] = [
      [
        "insert into anomalies (session_sid, event_sid, kind, detail, detected_at) values ($1, $2, $3, $4, $5)",
        [sessionSid, "EZa1", "cumulative_decreased", "from 10 to 5", NOW - 2 * HOUR],
      ],
      [
        "insert into anomalies (session_sid, event_sid, kind, detail, detected_at) values ($1, $2, $3, $4, $5)",
        [sessionSid, "EZa2", "impossible_rate", "9 GB/s", NOW - HOUR],
      ],
      [
        "insert into assignments (target_type, target_id, customer_id, effective_from, created_at) values ($1, $2, $3, $4, $5)",
        [
          "sim",
          (db.$client.prepare("select min(sim_sid) as s from usage_hourly").get() as { s: string })
            .s,
          "cus_a",
          0,
          NOW,
        ],
      ],
    ];
    for (const [text, params] of extra) {
      db.$client.prepare(text.replace(/\$\d+/g, "?")).run(...params);
      await pool.query(text, params);
    }
    db.$client.close();
    await pool.end();

    const sqliteEnv = { DATABASE_PATH: dbPath, DATABASE_URL: undefined };
    const pgEnv = { DATABASE_URL: tdb.url, DATABASE_PATH: undefined };
    const redis = { REDIS_URL: inject("redisUrl"), REDIS_PREFIX: `pgcli${hex().slice(0, 8)}` };
    const onBoth = async (args: string[]): Promise<{ lite: Out; pg: Out }> => {
      const [l, p] = await Promise.all([
        runCli(args, { ...redis, ...sqliteEnv }, 90_000),
        runCli(args, { ...redis, ...pgEnv }, 90_000),
      ]);
      expect(l.status, `${args.join(" ")} on SQLite: ${l.stderr}`).toBe(0);
      expect(p.status, `${args.join(" ")} on PostgreSQL: ${p.stderr}`).toBe(0);
      expect(p.stderr, args.join(" ")).toBe(l.stderr);
      expect(p.stdout, args.join(" ")).toBe(l.stdout);
      return { lite: l, pg: p };
    };

    const listOf = (o: Out) => JSON.parse(o.stdout) as { data: Record<string, unknown>[] };
    const runs = [
      ...["hour", "day", "month", "total"].map((by) => ["usage", "--json", "--by", by]),
      ["usage", "--from", new Date(NOW - 10 * HOUR).toISOString()],
      ["usage", "--unmapped", "--json"],
      ["quarantine", "--json"],
      ["quarantine"],
      ["quarantine", "--reason", "40-DAY RETENTION", "--json"],
      ["quarantine", "requeue", "--reason", "retention", "--dry-run", "--json"],
      ["anomalies", "--json"],
      ["anomalies", "--kind", "impossible_rate"],
      ["events", "--json"],
      ["events"],
    ];
    const out = new Map<string, Out>();
    for (let i = 0; i < runs.length; i += 2) {
      const batch = runs.slice(i, i + 2);
      const done = await Promise.all(batch.map((args) => onBoth(args)));
      for (const [j, args] of batch.entries()) out.set(args.join(" "), (done[j] as { pg: Out }).pg);
    }
    const got = (args: string) => out.get(args) as Out;
    for (const by of ["hour", "day", "month", "total"])
      expect(listOf(got(`usage --json --by ${by}`)).data.length).toBeGreaterThan(0);
    expect(listOf(got("usage --unmapped --json")).data.length).toBeGreaterThan(0);
    const rows = listOf(got("quarantine --json")).data;
    expect(
      rows.map((r) => [r.delivery_id, r.position, r.counted]).sort((x, y) => (x < y ? -1 : 1)),
    ).toEqual([
      ["a-body", -1, null],
      ["old-and-broken", 0, false],
      ["old-and-broken", 1, false],
      ["old-and-broken", 2, false],
    ]);
    expect(listOf(got("anomalies --json")).data.map((x) => x.kind)).toEqual([
      "impossible_rate",
      "cumulative_decreased",
    ]);
    expect((JSON.parse(got("events --json").stdout) as unknown[]).length).toBeGreaterThan(0);

    // Requeue on PostgreSQL, with a worker that accepts events as old as these.
    const reader = pgLedgerReader(tdb.url);
    cleanup.push(reader.close);
    const worker = await startWorker({ ...redis, DATABASE_URL: tdb.url, RETENTION_DAYS: "100000" });
    cleanup.push(() => worker.kill());
    const oldBytes = () =>
      reader.scalar("select coalesce(sum(bytes), 0) from usage_hourly where sim_sid = $1", [
        OLD_SIM,
      ]);
    expect(await oldBytes()).toBe(0);
    const requeue = async () => {
      const r = await runCli(
        ["quarantine", "requeue", "--reason", "40-day retention", "--json"],
        { ...redis, ...pgEnv },
        150_000,
      );
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as Record<string, unknown> & {
        events: Record<string, unknown>[];
      };
    };
    const old = rows
      .filter((r) => /40-day retention/.test(String(r.reason)))
      .sort((x, y) => Number(x.id) - Number(y.id));
    expect(old).toHaveLength(2);
    const first = await requeue();
    expect(first).toMatchObject({
      requeued: 2,
      ids: old.map((r) => r.id),
      worker_running: true,
      waited: true,
      timed_out: false,
      counted: 2,
      duplicates: 0,
      quarantined_again: 0,
    });
    expect(first.events.map((e) => [e.id, e.event_sid, e.delivery_id, e.outcome])).toEqual(
      old.map((r) => [r.id, r.event_sid, `requeue:${r.id}`, "counted"]),
    );
    expect(await oldBytes()).toBe(3000);
    expect(
      (
        await reader.query<{ id: unknown; requeues: unknown }>(
          "select id, requeues from quarantine where requeued_at is not null order by id",
        )
      ).map((r) => [Number(r.id), Number(r.requeues)]),
    ).toEqual(old.map((r) => [r.id, 1]));

    const again = await requeue();
    expect(again).toMatchObject({ requeued: 2, counted: 0, duplicates: 2, quarantined_again: 0 });
    expect(await oldBytes()).toBe(3000);
    expect(await reader.scalar("select count(*) from quarantine")).toBe(4);
    const after = await runCli(["quarantine", "--json", "--reason", "retention"], {
      ...redis,
      ...pgEnv,
    });
    expect(after.status, after.stderr).toBe(0);
    expect(listOf(after).data.map((r) => [r.counted, r.requeues])).toEqual([
      [true, 2],
      [true, 2],
    ]);
    expect(await worker.stop()).toBe(0);
  });
});
