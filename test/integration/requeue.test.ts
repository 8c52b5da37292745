import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, afterEach, describe, expect, inject, it } from "vitest";
import { DAY_MS } from "../../src/accounting/buckets.ts";
import { openDb } from "../../src/db/client.ts";
import { createPool } from "../../src/db/pg/client.ts";
import { INGEST_JOB, type IngestJobData } from "../../src/ingest/job.ts";
import { createIngestQueue, INGEST_JOB_OPTIONS } from "../../src/ingest/queue.ts";
import { createIngestWorker } from "../../src/ingest/worker.ts";
import { pgLedger } from "../../src/ledger/pg/index.ts";
import type { Ledger } from "../../src/ledger/port.ts";
import { sqliteLedger } from "../../src/ledger/sqlite/index.ts";
import { createLogger } from "../../src/lib/logger.ts";
import { createMetrics } from "../../src/lib/metrics.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { defaultSettings } from "../helpers/db.ts";
import { openTestLedger, type TestLedger, testBackend } from "../helpers/ledger.ts";
import { runCli, type SimmeterProcess, startSimmeter, waitFor } from "../helpers/process.ts";

// `simmeter quarantine requeue` and `simmeter jobs failed|retry` as real child processes, against
// the real worker (`simmeter start` / `simmeter work`), Redis and the ledger of the vitest
// project (a SQLite file or a PostgreSQL database, its `env` given to every process).

const ACCOUNT = "ACe7ea554f7fc0fad65e689bb5899bb6c3";
const hex = () => randomUUID().replaceAll("-", "");
const newSim = () => `HS${hex()}`;

/** A data session of two readings (updated, then ended a second later): bytes[0] + bytes[1]. */
function session(simSid: string, t0: number, bytes: [number, number]) {
  const sessionSid = `PI${hex()}`;
  const spec = {
    accountSid: ACCOUNT,
    simSid,
    iccid: "89883070000005381783",
    sessionSid,
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

/** An ended event whose data_total is negative: authenticated, unusable, quarantined. */
function malformed(simSid: string) {
  const [, ended] = session(simSid, Date.now() - 3_600_000, [10, 20]);
  const e = ended as { data: Record<string, unknown> };
  e.data.data_total = -5;
  return { event: e, eventSid: e.data.event_sid as string };
}

/**
 * A read-only connection to the test ledger: SQLite, the file opened read-only; PostgreSQL, a
 * pool whose sessions default to read-only transactions. Every write fails.
 */
function readOnlyLedger(t: TestLedger): Ledger {
  if (t.backend === "sqlite")
    return sqliteLedger(openDb(t.env.DATABASE_PATH as string, { readonly: true }));
  const url = new URL(t.env.DATABASE_URL as string);
  url.searchParams.set("options", "-c default_transaction_read_only=on");
  return pgLedger(createPool(url.toString(), { role: "test-readonly", max: 2 }), url.toString());
}

/** what a write through readOnlyLedger fails with (the job's failedReason) */
const READ_ONLY_ERROR =
  testBackend() === "sqlite"
    ? /attempt to write a readonly database/
    : /cannot execute \w+ in a read-only transaction/;

/**
 * An ingest worker whose ledger is read-only: every transaction fails, as on a full or broken
 * disk. The real worker code, in this process, so the test can stop it at will.
 */
function readOnlyWorker(t: TestLedger, redisUrl: string, prefix: string) {
  const ledger = readOnlyLedger(t);
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const worker = createIngestWorker({
    connection,
    prefix,
    ledger,
    settings: defaultSettings,
    now: Date.now,
    logger: createLogger("silent"),
    metrics: createMetrics(),
    lockDurationMs: 30_000,
    stalledIntervalMs: 30_000,
    commitJobs: 16,
  });
  return {
    close: async () => {
      await worker.close();
      connection.disconnect();
      await ledger.admin.close();
    },
  };
}

type QRow = {
  id: number;
  delivery_id: string;
  position: number;
  event_sid: string | null;
  reason: string;
  requeues: number;
  requeued_at: number | null;
};

const procs: SimmeterProcess[] = [];
const redises: Redis[] = [];
afterEach(async () => {
  for (const p of procs.splice(0)) await p.stop();
});
afterAll(() => {
  for (const r of redises) r.disconnect();
});

/**
 * A ledger (SQLite: a file), a Redis prefix, and the processes and reads of one test. The ledger
 * closes when the test finishes (after afterEach has stopped its processes) unless `autoClose` is
 * false: then the caller closes `t` in afterAll.
 */
async function workspace(o: { autoClose?: boolean } = {}) {
  const t = await openTestLedger({ file: true, autoClose: o.autoClose ?? true });
  const env = {
    REDIS_URL: inject("redisUrl"),
    REDIS_PREFIX: `rq${randomUUID().slice(0, 8)}`,
    // DATABASE_URL or DATABASE_PATH; the other one undefined, so no inherited value applies
    ...(t.env as Record<string, string>),
    LOG_LEVEL: "warn",
  };
  const redis = new Redis(env.REDIS_URL, { maxRetriesPerRequest: null });
  redises.push(redis);
  const queue = createIngestQueue(redis, env.REDIS_PREFIX);
  const workerUp = () =>
    waitFor(async () => (await queue.getWorkers()).length > 0, "an ingest worker", 30_000);
  const workerGone = () =>
    waitFor(async () => (await queue.getWorkers()).length === 0, "no ingest worker", 30_000);
  const w = {
    t,
    env,
    redis,
    queue,
    workerUp,
    cli: (args: string[], extra: Record<string, string> = {}) =>
      runCli(args, { ...env, ...extra }, 90_000),
    /** `simmeter start` (receiver + worker), accepting unsigned deliveries */
    start: async (extra: Record<string, string>) => {
      const p = await startSimmeter("start", { ...env, ALLOW_UNSIGNED: "true", ...extra });
      procs.push(p);
      await workerUp();
      return p;
    },
    work: async (extra: Record<string, string>) => {
      // The worker role announces itself at info level; that line is how startSimmeter waits.
      const p = await startSimmeter("work", { ...env, LOG_LEVEL: "info", ...extra });
      procs.push(p);
      await workerUp();
      return p;
    },
    stop: async (p: SimmeterProcess) => {
      await p.stop();
      procs.splice(procs.indexOf(p), 1);
      await workerGone();
    },
    post: async (p: SimmeterProcess, body: string) => {
      const res = await fetch(`${p.url}/webhooks/event-streams`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      expect(res.status).toBe(200);
    },
    quarantine: () =>
      t.sql<QRow>(
        "select id, delivery_id, position, event_sid, reason, requeues, requeued_at from quarantine order by id",
      ),
    seen: async () =>
      (await t.sql<{ n: number }>("select count(*) as n from seen_events"))[0]?.n ?? 0,
    bytes: async (sim: string) =>
      (
        await t.sql<{ n: number | null }>(
          "select sum(bytes) as n from usage_hourly where sim_sid = ?",
          sim,
        )
      )[0]?.n ?? 0,
  };
  return w;
}

type RequeueSummary = {
  requeued: number;
  ids: number[];
  worker_running: boolean;
  waited: boolean;
  timed_out: boolean;
  counted: number;
  duplicates: number;
  quarantined_again: number;
  events: {
    id: number;
    event_sid: string | null;
    delivery_id: string;
    outcome: string;
    quarantine_id: number | null;
    reason: string | null;
  }[];
};

// Each CLI run is a fresh Node process (a few seconds on a busy machine): generous time per test.
describe("simmeter quarantine requeue", { timeout: 240_000 }, () => {
  it("an event quarantined as older than RETENTION_DAYS is counted once the worker runs with a larger RETENTION_DAYS and the operator requeues it by reason; requeueing again counts nothing more and adds no quarantine rows", async () => {
    const w = await workspace();
    const sim = newSim();
    const other = newSim();
    const first = await w.start({ RETENTION_DAYS: "40" });
    // Events older than the retention are quarantined. Nothing was ever pruned here, so no dedupe
    // record of them can be missing: once RETENTION_DAYS is raised they can be counted.
    const t0 = Math.floor((Date.now() - 41 * DAY_MS) / 1000) * 1000;
    const broken = malformed(other);
    await w.post(
      first,
      JSON.stringify([
        ...session(sim, t0, [1000, 2000]),
        ...session(other, Date.now() - 3_600_000, [500, 0]),
        broken.event,
      ]),
    );
    await waitFor(
      async () => (await w.quarantine()).length === 3 && (await w.seen()) === 2,
      "3 quarantined, 2 counted",
    );
    const old = (await w.quarantine()).filter((r) =>
      /older than the 40-day retention/.test(r.reason),
    );
    expect(old).toHaveLength(2);
    expect(await w.bytes(sim)).toBe(0);
    await w.stop(first);
    expect(
      await w.t.sql("select value from meta where key = 'pruned_before'"),
      "the start-up prune deleted nothing, so it set no horizon",
    ).toEqual([]);

    await w.start({ RETENTION_DAYS: "100000" });
    const r = await w.cli(["quarantine", "requeue", "--reason", "40-DAY RETENTION", "--json"]);
    expect(r.stderr).not.toMatch(/simmeter:/);
    expect(r.status).toBe(0);
    const s = JSON.parse(r.stdout) as RequeueSummary;
    expect(s).toMatchObject({
      requeued: 2,
      ids: old.map((q) => q.id),
      worker_running: true,
      waited: true,
      timed_out: false,
      counted: 2,
      duplicates: 0,
      quarantined_again: 0,
    });
    expect(s.events.map((e) => [e.id, e.event_sid, e.delivery_id, e.outcome])).toEqual(
      old.map((q) => [q.id, q.event_sid, `requeue:${q.id}`, "counted"]),
    );
    expect(r.stderr).toMatch(/requeue: 2\/2 processed \(2 counted/);
    expect(await w.bytes(sim)).toBe(3000);
    expect(await w.seen()).toBe(4);

    const again = await w.cli(["quarantine", "requeue", "--reason", "40-day retention"]);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).toContain(`2 events requeued: ids ${old[0]?.id}, ${old[1]?.id}\n`);
    expect(again.stdout).toContain(
      `#${old[0]?.id} ${old[0]?.event_sid}: duplicate (already counted)`,
    );
    expect(again.stdout).toContain("0 counted, 2 already counted (duplicate), 0 quarantined again");
    expect(await w.bytes(sim)).toBe(3000);
    expect(await w.bytes(other)).toBe(500);
    expect(await w.seen()).toBe(4);
    const rows = await w.quarantine();
    expect(rows).toHaveLength(3);
    expect(rows.filter((q) => q.requeues === 2).map((q) => q.id)).toEqual(old.map((q) => q.id));
    expect(rows.find((q) => q.event_sid === broken.eventSid)?.requeues).toBe(0);

    const list = await w.cli(["quarantine", "--json"]);
    expect(list.status).toBe(0);
    const listed = (JSON.parse(list.stdout) as { data: { id: number; counted: boolean | null }[] })
      .data;
    expect(listed.map((q) => [q.id, q.counted])).toEqual(
      [...rows].reverse().map((q) => [q.id, q.event_sid !== broken.eventSid]),
    );
  });

  describe("with one running service", () => {
    let w: Awaited<ReturnType<typeof workspace>> | undefined;
    let app: SimmeterProcess | undefined;
    const start = async () => {
      w ??= await workspace({ autoClose: false });
      if (!app) {
        app = await startSimmeter("start", {
          ...w.env,
          ALLOW_UNSIGNED: "true",
          RETENTION_DAYS: "100000",
        });
        await w.workerUp();
      }
      return { w, app };
    };
    afterAll(async () => {
      await app?.stop();
      await w?.t.close();
    });

    it("a malformed event that is requeued is quarantined again, once however often it is requeued, and the listing says so", async () => {
      const { w, app } = await start();
      const sim = newSim();
      const broken = malformed(sim);
      await w.post(app, JSON.stringify([broken.event]));
      const original = await waitFor(
        async () => (await w.quarantine()).find((q) => q.event_sid === broken.eventSid),
        "the malformed event quarantined",
      );
      expect(original.reason).toMatch(/data_total/);

      const r = await w.cli(["quarantine", "requeue", "--id", String(original.id), "--json"]);
      expect(r.status, r.stderr).toBe(0);
      const s = JSON.parse(r.stdout) as RequeueSummary;
      const copy = (await w.quarantine()).find((q) => q.delivery_id === `requeue:${original.id}`);
      expect(copy).toMatchObject({ position: 0, event_sid: broken.eventSid });
      expect(s).toMatchObject({ requeued: 1, counted: 0, quarantined_again: 1 });
      expect(s.events).toEqual([
        expect.objectContaining({
          id: original.id,
          outcome: "quarantined",
          quarantine_id: copy?.id,
          reason: expect.stringMatching(/data_total/),
        }),
      ]);

      // By reason this selects the event's row and the row its requeue produced: one event.
      const again = await w.cli(["quarantine", "requeue", "--reason", "data_total"]);
      expect(again.status, again.stderr).toBe(0);
      expect(again.stdout).toContain(`1 event requeued: id ${original.id}\n`);
      expect(again.stdout).toContain(`1 row #${copy?.id} is an earlier requeue of the same event`);
      expect(again.stdout).toContain(
        `#${original.id} ${broken.eventSid}: quarantined again as #${copy?.id}: `,
      );
      const mine = (await w.quarantine())
        .filter((q) => q.event_sid === broken.eventSid)
        .map((q) => [q.id, q.delivery_id === `requeue:${original.id}`, q.requeues]);
      expect(mine).toEqual([
        [original.id, false, 2],
        [copy?.id, true, 1],
      ]);
      expect(await w.bytes(sim)).toBe(0);

      const list = await w.cli(["quarantine", "--reason", "data_total"]);
      expect(list.status).toBe(0);
      const lines = list.stdout.split("\n");
      expect(lines[0]).toMatch(
        /^id\s+received\s+source\s+event_sid\s+counted\s+requeued\s+note\s+reason$/,
      );
      const lineOf = (id: number | undefined) =>
        lines.find((l) => l.startsWith(`${id} `) || l.trimStart().startsWith(`${id} `)) ?? "";
      expect(lineOf(original.id)).toMatch(
        new RegExp(`${broken.eventSid}\\s+no\\s+2× \\S+\\s+quarantined again as #${copy?.id}\\s`),
      );
      expect(lineOf(copy?.id)).toMatch(
        new RegExp(`${broken.eventSid}\\s+no\\s+1× \\S+\\s+requeue of #${original.id}\\s`),
      );
      const json = await w.cli(["quarantine", "--reason", "data_total", "--json"]);
      expect(
        (
          JSON.parse(json.stdout) as {
            data: {
              id: number;
              counted: boolean;
              requeues: number;
              requeue_of: number | null;
              quarantined_again_as: number[];
            }[];
          }
        ).data.map((q) => [q.id, q.counted, q.requeues, q.requeue_of, q.quarantined_again_as]),
      ).toEqual([
        [copy?.id, false, 1, original.id, []],
        [original.id, false, 2, null, [copy?.id]],
      ]);
    });

    it("a body that was not JSON is requeued as a body and quarantined again, once", async () => {
      const { w, app } = await start();
      const marker = `not json ${hex()}`;
      await w.post(app, `{${marker}`);
      const original = await waitFor(
        async () =>
          (
            await w.t.sql<{ id: number; position: number }>(
              "select id, position from quarantine where raw = ?",
              `{${marker}`,
            )
          )[0],
        "the body quarantined",
      );
      expect(original.position).toBe(-1);
      for (let round = 1; round <= 2; round++) {
        const r = await w.cli(["quarantine", "requeue", "--id", String(original.id), "--json"]);
        expect(r.status, r.stderr).toBe(0);
        const s = JSON.parse(r.stdout) as RequeueSummary;
        expect(s.events).toEqual([
          expect.objectContaining({
            id: original.id,
            event_sid: null,
            outcome: "quarantined",
            reason: expect.stringMatching(/body is not valid JSON/),
          }),
        ]);
      }
      const copies = (await w.quarantine()).filter(
        (q) => q.delivery_id === `requeue:${original.id}`,
      );
      expect(copies).toHaveLength(1);
      expect(copies[0]?.position).toBe(-1);
      const raw = (
        await w.t.sql<{ raw: string }>("select raw from quarantine where id = ?", copies[0]?.id)
      )[0]?.raw;
      expect(raw).toBe(`{${marker}`);
    });

    it("requeue without --id, --reason or --since is refused with a message and changes nothing", async () => {
      const { w } = await start();
      const before = await w.quarantine();
      const r = await w.cli(["quarantine", "requeue"]);
      expect(r.status).toBe(1);
      expect(r.stdout).toBe("");
      expect(r.stderr).toContain("at least one of --id N…, --reason TEXT, --since TIME");
      expect(await w.quarantine()).toEqual(before);
    });

    it("requeue --dry-run lists the events it would requeue and changes nothing", async () => {
      const { w, app } = await start();
      const broken = malformed(newSim());
      await w.post(app, JSON.stringify([broken.event]));
      const row = await waitFor(
        async () => (await w.quarantine()).find((q) => q.event_sid === broken.eventSid),
        "the malformed event quarantined",
      );
      const since = new Date(Date.now() - 60_000).toISOString();
      const r = await w.cli([
        "quarantine",
        "requeue",
        "--id",
        String(row.id),
        "--since",
        since,
        "--dry-run",
      ]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toContain(`dry run: 1 event would be requeued: id ${row.id}\n`);
      expect(r.stdout).toContain(broken.eventSid);
      expect((await w.quarantine()).find((q) => q.id === row.id)?.requeues).toBe(0);
      expect(await w.queue.getJobCounts("wait", "active", "delayed")).toEqual({
        wait: 0,
        active: 0,
        delayed: 0,
      });
    });

    it("requeue of an id that does not exist is refused, naming it", async () => {
      const { w } = await start();
      const r = await w.cli(["quarantine", "requeue", "--id", "999999"]);
      expect(r.status).toBe(1);
      expect(r.stderr).toContain("no quarantine row with id 999999");
    });

    it("quarantine --limit abc exits non-zero and names the value", async () => {
      const { w } = await start();
      const r = await w.cli(["quarantine", "--limit", "abc"]);
      expect(r.status).not.toBe(0);
      expect(r.stdout).toBe("");
      expect(r.stderr).toContain("'abc' is invalid");
      expect(r.stderr).toContain("must be a positive integer");
      const zero = await w.cli(["quarantine", "list", "--limit", "0"]);
      expect(zero.status).not.toBe(0);
      expect(zero.stderr).toContain("'0' is invalid");
    });
  });

  it("with no worker running, requeue says the events are queued for simmeter work, which then processes them", async () => {
    const w = await workspace();
    const first = await w.start({ RETENTION_DAYS: "100000" });
    const broken = malformed(newSim());
    await w.post(first, JSON.stringify([broken.event]));
    const row = await waitFor(
      async () => (await w.quarantine()).find((q) => q.event_sid === broken.eventSid),
      "the malformed event quarantined",
    );
    await w.stop(first);
    const r = await w.cli(["quarantine", "requeue", "--reason", "data_total"]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe(
      `1 event requeued: id ${row.id}\nno ingest worker is running: they are queued and will be processed when \`simmeter work\` (or \`simmeter start\`) runs\n`,
    );
    expect(await w.quarantine()).toHaveLength(1);
    await w.work({ RETENTION_DAYS: "100000" });
    await waitFor(
      async () => (await w.quarantine()).some((q) => q.delivery_id === `requeue:${row.id}`),
      "the requeued event processed",
    );
  });
});

describe("simmeter quarantine requeue against a worker that cannot write", {
  timeout: 240_000,
}, () => {
  it("waits until --timeout, exits 1, says the event is still queued and shows its job's last error", async () => {
    const w = await workspace();
    const broken = malformed(newSim());
    await w.t.ledger.ingestJob(
      {
        v: 1,
        deliveries: [
          { id: randomUUID(), receivedAt: Date.now(), source: "unsigned", events: [broken.event] },
        ],
      },
      defaultSettings,
      Date.now,
    );
    const [row] = await w.quarantine();
    const failing = readOnlyWorker(w.t, w.env.REDIS_URL, w.env.REDIS_PREFIX);
    try {
      await w.workerUp();
      const r = await w.cli(["quarantine", "requeue", "--reason", "data_total", "--timeout", "3"]);
      expect(r.status).toBe(1);
      expect(r.stdout).toContain(`1 event requeued: id ${row?.id}\n`);
      expect(r.stderr).toContain("timed out after 3 s: 1 event still queued or retrying");
      expect(r.stderr).toMatch(
        new RegExp(`job \\d+: attempt \\d+ failed: ${READ_ONLY_ERROR.source}`),
      );
      expect(await w.quarantine()).toEqual([
        expect.objectContaining({ id: row?.id, requeues: 1, requeued_at: expect.any(Number) }),
      ]);
    } finally {
      await failing.close();
    }
  });
});

describe("simmeter jobs failed / jobs retry", { timeout: 240_000 }, () => {
  it("ingest jobs that failed for good are listed, retried by jobs retry and their events counted once, although two jobs carried the same events", async () => {
    const w = await workspace();
    const failing = readOnlyWorker(w.t, w.env.REDIS_URL, w.env.REDIS_PREFIX);
    const sim = newSim();
    const events = [
      ...session(sim, Date.now() - 7_200_000, [700, 300]),
      ...session(sim, Date.now() - 3_600_000, [40, 2]),
    ];
    // The receiver's job shape and options, with its hour of retries cut to two quick attempts.
    const opts = { ...INGEST_JOB_OPTIONS, attempts: 2, backoff: { type: "fixed", delay: 10 } };
    const job = (body: string): IngestJobData => ({
      v: 1,
      deliveries: [{ id: randomUUID(), receivedAt: Date.now(), source: "unsigned", body }],
    });
    // The same events twice: the sender retried a delivery it did not see acknowledged.
    const a = await w.queue.add(INGEST_JOB, job(JSON.stringify(events)), opts);
    const b = await w.queue.add(INGEST_JOB, job(JSON.stringify(events)), opts);
    await waitFor(async () => (await w.queue.getFailedCount()) === 2, "both jobs failed for good");
    await failing.close();

    const failed = await w.cli(["jobs", "failed", "--json"]);
    expect(failed.status, failed.stderr).toBe(0);
    const listed = JSON.parse(failed.stdout) as Record<string, unknown>[];
    expect(listed.map((j) => j.id).sort()).toEqual([a.id, b.id].sort());
    for (const j of listed) {
      expect(j).toMatchObject({ attempts_made: 2, deliveries: 1, events: 4 });
      expect(j.failed_reason).toMatch(READ_ONLY_ERROR);
      expect(Date.parse(j.finished_on as string)).toBeGreaterThan(Date.now() - 120_000);
    }

    await w.work({ RETENTION_DAYS: "100000" });
    const first = await w.cli(["jobs", "retry", "--id", a.id as string]);
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toBe(
      `1 failed ingest job retried: id ${a.id}\njob ${a.id}: 4 events: 4 counted, 0 already counted (duplicate), 0 quarantined\n`,
    );
    expect(await w.bytes(sim)).toBe(1042);

    const dry = await w.cli(["jobs", "retry", "--all", "--dry-run"]);
    expect(dry.status, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(`dry run: 1 failed ingest job would be retried: id ${b.id}\n`);
    expect(await w.queue.getFailedCount()).toBe(1);

    const all = await w.cli(["jobs", "retry", "--all", "--json"]);
    expect(all.status, all.stderr).toBe(0);
    expect(JSON.parse(all.stdout)).toMatchObject({
      retried: 1,
      ids: [b.id],
      worker_running: true,
      timed_out: false,
      counted: 0,
      duplicates: 4,
      jobs: [{ id: b.id, events: 4, outcome: "completed", counted: 0, duplicates: 4 }],
    });
    expect(await w.bytes(sim)).toBe(1042);
    expect(await w.seen()).toBe(4);

    const none = await w.cli(["jobs", "failed"]);
    expect(none.stdout).toBe("no failed ingest jobs\n");
    const twice = await w.cli(["jobs", "retry", "--id", a.id as string]);
    expect(twice.status).toBe(1);
    expect(twice.stderr).toContain(`not a failed ingest job: ${a.id} (no such job`);
    const neither = await w.cli(["jobs", "retry"]);
    expect(neither.status).toBe(1);
    expect(neither.stderr).toContain("give either --id ID… or --all");
    expect(await w.bytes(sim)).toBe(1042);
  });
});
