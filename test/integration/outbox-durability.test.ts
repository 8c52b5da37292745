import { copyFileSync, existsSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import { join } from "node:path";
import pg from "pg";
import { afterEach, describe, expect, inject, it } from "vitest";
import { HOUR_MS, hourStart } from "../../src/accounting/buckets.ts";
import { refreshBilling } from "../../src/billing/subscriptions.ts";
import { assignCustomer } from "../../src/customers/customers.ts";
import { openDb } from "../../src/db/client.ts";
import { createPool } from "../../src/db/pg/client.ts";
import { pgLedger } from "../../src/ledger/pg/index.ts";
import type { Ledger } from "../../src/ledger/port.ts";
import { sqliteLedger } from "../../src/ledger/sqlite/index.ts";
import { createLogger } from "../../src/lib/logger.ts";
import { durably } from "../../src/reporting/outbox.ts";
import {
  hasDrift,
  reconcile,
  recordStripeDifferences,
  stripeDifferences,
} from "../../src/reporting/reconcile.ts";
import { runReport } from "../../src/reporting/reporter.ts";
import { createStripe } from "../../src/reporting/stripe.ts";
import { findMeter } from "../../src/reporting/stripe-setup.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { defaultSettings } from "../helpers/db.ts";
import {
  numberPlaceholders,
  sqliteLikeTypes,
  type TestLedger,
  type TestLedgerEnv,
  testBackend,
} from "../helpers/ledger.ts";
import { runCli } from "../helpers/process.ts";
import { EVENT_NAME, type ReportingRig, reportingRig } from "../helpers/reporting.ts";

// A lost local commit (power loss under synchronous=NORMAL / synchronous_commit=off, a restored
// backup) after Stripe accepted an event must not leave the difference unbilled. Each test works
// on the ledger as it was before the Stripe call, the state such a loss leaves behind: SQLite, a
// copy of the database file; PostgreSQL, a copy of every table read from a second connection in
// one snapshot (it sees committed rows only), written back over the ledger.

const backend = testBackend();
const SIM = `HS${"e".repeat(32)}`;
const CUSTOMER = "cus_durable";
// Times relative to the real clock, as the CLI test uses it; the customer's billing period is
// anchored 10 days before the usage, so it lies inside the current period whatever day it is.
const NOW = Date.now();
const HOUR = hourStart(NOW) - 3 * HOUR_MS;

let rig: ReportingRig | undefined;
let subscriptionId = "";
let proxy: Server | undefined;
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await new Promise<void>((r) => (proxy ? proxy.close(() => r()) : r()));
  proxy = undefined;
  await rig?.close();
  rig = undefined;
});

function reading(n: number, cumulative: number, ended = false) {
  return buildCloudEvent({
    eventSid: `EZ${n.toString(16).padStart(32, "7")}`,
    kind: ended ? "data-session.ended" : "data-session.updated",
    accountSid: `AC${"1".repeat(32)}`,
    simSid: SIM,
    iccid: "89883070000005381783",
    timestampMs: HOUR + n * 60_000,
    sessionSid: `PI${"7".repeat(32)}`,
    sessionStartMs: HOUR,
    windowStartMs: HOUR,
    windowEndMs: HOUR + n * 60_000,
    cumulativeDown: cumulative,
    ...(ended ? { sessionEndMs: HOUR + n * 60_000 } : {}),
  });
}

async function ingestInto(ledger: Ledger, events: unknown[], id: string): Promise<void> {
  await ledger.ingestJob(
    { v: 1, deliveries: [{ id, receivedAt: NOW, source: "replay", events }] },
    defaultSettings,
    () => NOW,
  );
}

/** The ledger brought back from a snapshot, as a process started on it sees it. */
type Restored = {
  ledger: Ledger;
  env: TestLedgerEnv;
  sql: TestLedger["sql"];
  close: () => Promise<void>;
};

/** The ledger as it is now (committed), to be restored later. */
type Snapshot = { restore: () => Promise<Restored> };

/** SQLite: a copy of the database files as they are on disk now (the WAL holds the latest commits). */
function copySqlite(r: ReportingRig, name: string): Snapshot {
  const from = r.dbPath;
  const to = join(r.dir, `${name}.db`);
  copyFileSync(from, to);
  for (const ext of ["-wal", "-shm"])
    if (existsSync(from + ext)) copyFileSync(from + ext, to + ext);
  return {
    restore: async () => {
      const db = openDb(to);
      const close = async () => {
        if (db.$client.open) db.$client.close();
      };
      cleanups.push(close);
      return {
        ledger: sqliteLedger(db),
        env: { DATABASE_PATH: to, DATABASE_URL: undefined },
        sql: async <R>(text: string, ...params: unknown[]) => {
          const stmt = db.$client.prepare(text);
          if (stmt.reader) return stmt.all(...params) as R[];
          stmt.run(...params);
          return [];
        },
        close,
      };
    },
  };
}

/** a connection of its own to the rig's PostgreSQL database (not the ledger's pool) */
async function pgClient(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  c.on("error", () => {});
  await c.connect();
  return c;
}

/**
 * PostgreSQL: every ledger table copied into schema snap_<name>, read from a second connection in
 * one repeatable-read snapshot (what a backup taken now holds: committed rows only), and the
 * identity sequences as they are. restore() writes them back over the ledger in one transaction
 * and opens a new adapter on it (a process started after the restore).
 */
async function copyPostgres(r: ReportingRig, name: string): Promise<Snapshot> {
  const url = r.env.DATABASE_URL as string;
  const schema = `snap_${name.replaceAll("-", "_")}`;
  const c = await pgClient(url);
  let tables: string[];
  let sequences: { s: string; v: string | null }[];
  try {
    await c.query("begin isolation level repeatable read");
    tables = (
      await c.query<{ t: string }>(
        "select tablename as t from pg_tables where schemaname = 'public' order by tablename",
      )
    ).rows.map((x) => x.t);
    await c.query(`create schema ${schema}`);
    for (const t of tables)
      await c.query(`create table ${schema}."${t}" as select * from public."${t}"`);
    sequences = (
      await c.query<{ s: string; v: string | null }>(
        "select sequencename as s, last_value::text as v from pg_sequences where schemaname = 'public'",
      )
    ).rows;
    await c.query("commit");
  } finally {
    await c.end();
  }
  return {
    restore: async () => {
      const w = await pgClient(url);
      try {
        await w.query("begin");
        for (const t of tables) {
          await w.query(`delete from public."${t}"`);
          await w.query(`insert into public."${t}" select * from ${schema}."${t}"`);
        }
        for (const { s, v } of sequences)
          await w.query(
            v === null
              ? `select setval('public."${s}"', 1, false)`
              : `select setval('public."${s}"', ${v}, true)`,
          );
        await w.query("commit");
      } finally {
        await w.end();
      }
      const pool = createPool(url, { role: "test", max: 4 });
      const ledger = pgLedger(pool, url);
      let closed = false;
      const close = async () => {
        if (closed) return;
        closed = true;
        await ledger.admin.close();
      };
      cleanups.push(close);
      return {
        ledger,
        env: r.env,
        sql: async <R>(text: string, ...params: unknown[]) =>
          (
            await pool.query({
              text: numberPlaceholders(text),
              values: params,
              types: sqliteLikeTypes,
            })
          ).rows as R[],
        close,
      };
    },
  };
}

const snapshot = async (r: ReportingRig, name: string): Promise<Snapshot> =>
  r.backend === "sqlite" ? copySqlite(r, name) : copyPostgres(r, name);

/**
 * An HTTP proxy to the emulator that runs `beforeCall` (to its end) when the first meter event
 * is about to reach it, and holds that call until then.
 */
async function proxyTo(target: string, beforeCall: () => Promise<void>): Promise<string> {
  const t = new URL(target);
  let first = true;
  proxy = createServer((req, res) => {
    const meterEvent = req.method === "POST" && req.url?.startsWith("/v1/billing/meter_events");
    const before = meterEvent && first ? beforeCall() : Promise.resolve();
    if (meterEvent) first = false;
    before.then(
      () => {
        const out = request(
          {
            host: t.hostname,
            port: t.port,
            path: req.url,
            method: req.method,
            headers: req.headers,
          },
          (answer) => {
            res.writeHead(answer.statusCode ?? 502, answer.headers);
            answer.pipe(res);
          },
        );
        req.pipe(out);
      },
      (err: Error) => {
        res.writeHead(599).end(String(err.stack));
      },
    );
  });
  await new Promise<void>((r) => proxy?.listen(0, "127.0.0.1", () => r()));
  const a = proxy.address();
  return `http://127.0.0.1:${typeof a === "object" && a ? a.port : 0}`;
}

async function setup(): Promise<ReportingRig> {
  const r = await reportingRig({
    redisUrl: inject("redisUrl"),
    now: NOW,
    emulator: { autoSubscribe: false },
  });
  const price = r.emu.addPrice({ eventName: EVENT_NAME });
  const anchor = HOUR - 10 * 24 * HOUR_MS;
  subscriptionId = r.emu.addSubscription({
    customer: CUSTOMER,
    price: price.id,
    anchor,
    startDate: anchor,
  }).id;
  await assignCustomer({
    ledger: r.ledger,
    now: NOW,
    input: {
      targetType: "sim",
      targetId: SIM,
      customerId: CUSTOMER,
      effectiveFrom: HOUR - HOUR_MS,
    },
  });
  return r;
}

const reportOn = (r: ReportingRig, ledger: Ledger, stripe = r.stripe) =>
  runReport({
    ledger,
    stripe,
    redis: r.redis,
    logger: createLogger("silent"),
    settings: r.settings,
    now: () => r.now.value,
  });

describe("a lost local commit cannot strand Stripe", () => {
  // SQLite itself: the pragma durably() toggles around each reporting transaction.
  it.runIf(backend === "sqlite")(
    "reporting transactions commit with synchronous=FULL and leave ingest at NORMAL",
    async () => {
      rig = await setup();
      const level = () => rig?.db.$client.pragma("synchronous", { simple: true });
      expect(level()).toBe(1);
      expect(durably(rig.db, level)).toBe(2);
      expect(level()).toBe(1);
    },
  );

  // The PostgreSQL counterpart: on a database whose sessions default to synchronous_commit=off,
  // every planning and outbox commit still runs with it on (read at commit by a deferred trigger),
  // while ingest commits and the pooled session keep the server's setting.
  it.runIf(backend === "postgres")(
    "reporting transactions commit with synchronous_commit on and leave ingest and the pooled session at the database's off",
    async () => {
      rig = await setup();
      const url = rig.env.DATABASE_URL as string;
      const name = decodeURIComponent(new URL(url).pathname.slice(1));
      await rig.sql(`alter database "${name}" set synchronous_commit = off`);
      await rig.sql("create table commit_probe (tbl text not null, setting text not null)");
      await rig.sql(
        `create function commit_probe() returns trigger language plpgsql as $$
         begin
           insert into commit_probe values (tg_table_name, current_setting('synchronous_commit'));
           return null;
         end $$`,
      );
      for (const t of ["meter_reports", "usage_hourly"])
        await rig.sql(
          `create constraint trigger ${t}_commit_probe after insert or update on ${t}
             deferrable initially deferred for each row execute function commit_probe()`,
        );
      // one connection, opened after the ALTER: every statement below runs on that session
      const pool = createPool(url, { role: "test", max: 1 });
      const ledger = pgLedger(pool, url);
      cleanups.push(() => ledger.admin.close());
      const session = async () =>
        (await pool.query<{ s: string }>("select current_setting('synchronous_commit') as s"))
          .rows[0]?.s;
      expect(await session()).toBe("off");

      await ingestInto(ledger, [reading(1, 300)], "a");
      await refreshBilling({ ledger, stripe: rig.stripe, eventName: EVENT_NAME, now: NOW });
      expect((await ledger.plan({ now: NOW, settings: { graceSeconds: 3600 } })).rows).toHaveLength(
        1,
      );
      const [row] = await ledger.outbox.pending();
      const id = row?.identifier as string;
      expect(await ledger.outbox.claimForCall(id, NOW)).toBe(true);
      await ledger.outbox.setInDoubt(id, false);
      await ledger.outbox.recordAttempt(id, "timeout");
      await ledger.outbox.markSent(id, NOW);
      expect(await session()).toBe("off");

      const probes = await rig.sql<{ tbl: string; setting: string }>(
        "select tbl, setting from commit_probe",
      );
      const settings = (tbl: string) =>
        new Set(probes.filter((p) => p.tbl === tbl).map((p) => p.setting));
      expect(probes.filter((p) => p.tbl === "meter_reports").length).toBeGreaterThanOrEqual(5);
      expect(settings("meter_reports")).toEqual(new Set(["on"]));
      expect(settings("usage_hourly")).toEqual(new Set(["off"]));
    },
  );

  it("a ledger copied during the Stripe call already holds the pending row: restored, it re-sends the same identifier and value and Stripe keeps one event", async () => {
    rig = await setup();
    await ingestInto(rig.ledger, [reading(1, 300)], "a");
    const r = rig;
    let during: Snapshot | undefined;
    // SQLite: the file on disk; PostgreSQL: what a second connection sees, while the call is held
    const url = await proxyTo(rig.emu.url, async () => {
      during = await snapshot(r, "during-call");
    });
    const viaProxy = createStripe({
      STRIPE_SECRET_KEY: rig.emu.apiKey,
      STRIPE_API_BASE: url,
      STRIPE_TIMEOUT_MS: 5000,
    });
    expect(await reportOn(rig, rig.ledger, viaProxy)).toMatchObject({ sent: 1 });
    if (!during) throw new Error("no meter event reached the proxy");
    const restored = await during.restore();
    const rows = await restored.sql<{ identifier: string; value: number; state: string }>(
      "select identifier, value, state from meter_reports",
    );
    expect(rows).toEqual([
      { identifier: expect.stringMatching(/^v1:cus_durable:/), value: 300, state: "pending" },
    ]);
    // Same identifier, value and Idempotency-Key: Stripe replays its first answer (or refuses a
    // duplicate identifier); either way it keeps one event.
    const again = await reportOn(rig, restored.ledger);
    expect(again.sent + again.duplicates).toBe(1);
    expect(again.failed).toBe(0);
    expect(rig.emu.events().map((e) => [e.identifier, e.value])).toEqual([
      [rows[0]?.identifier, 300],
    ]);
    expect(rig.emu.stats()).toMatchObject({ concurrencyViolations: 0 });
  });

  it("after a restore from before the call, reconcile --repair finds the settled difference and sends it under a new identifier", async () => {
    rig = await setup();
    await ingestInto(rig.ledger, [reading(1, 300)], "a");
    const before = await snapshot(rig, "before-call");
    expect(await reportOn(rig, rig.ledger)).toMatchObject({ sent: 1 });
    // The restored ledger never saw the report; more usage arrives and the same identifier is
    // planned with another value: Stripe refuses it as a duplicate and keeps 300.
    const { ledger } = await before.restore();
    await ingestInto(ledger, [reading(2, 500, true)], "b");
    expect(await reportOn(rig, ledger)).toMatchObject({ duplicates: 1 });
    expect(rig.emu.totalsByCustomer(EVENT_NAME).get(CUSTOMER)).toBe(300);
    const meterId = (await findMeter(rig.stripe, EVENT_NAME))?.id as string;
    const range = { from: HOUR - HOUR_MS, to: hourStart(NOW) + HOUR_MS };
    const drift = await reconcile({ ledger, stripe: rig.stripe, meterId, ...range });
    expect(drift).toEqual([
      expect.objectContaining({ customer: CUSTOMER, counted: 500, stripeDrift: 200 }),
    ]);

    const diffs = await stripeDifferences({
      ledger,
      stripe: rig.stripe,
      meterId,
      ...range,
      now: NOW,
      settleMs: 0,
    });
    expect(diffs).toEqual([
      { customer: CUSTOMER, hour: HOUR, bucket: HOUR, stripe: 300, sent: 500, difference: -200 },
    ]);
    await recordStripeDifferences(ledger, diffs, NOW);
    expect(await reportOn(rig, ledger)).toMatchObject({ sent: 1, failed: 0 });
    const ids = rig.emu.events().map((e) => e.identifier);
    expect(new Set(ids).size).toBe(ids.length);
    expect(rig.emu.totalsByCustomer(EVENT_NAME).get(CUSTOMER)).toBe(500);
    expect(hasDrift(await reconcile({ ledger, stripe: rig.stripe, meterId, ...range }))).toBe(
      false,
    );
    // Nothing left to repair, and a second repair records nothing.
    expect(
      await stripeDifferences({
        ledger,
        stripe: rig.stripe,
        meterId,
        ...range,
        now: NOW,
        settleMs: 0,
      }),
    ).toEqual([]);
  });

  it("a row still in doubt 23 hours after its first call is counted as sent and never re-sent; reconcile --repair bills what Stripe lacks", async () => {
    rig = await setup();
    await ingestInto(rig.ledger, [reading(1, 300)], "a");
    await refreshBilling({
      ledger: rig.ledger,
      stripe: rig.stripe,
      eventName: EVENT_NAME,
      now: NOW,
    });
    expect(
      (await rig.ledger.plan({ now: NOW, settings: { graceSeconds: 3600 } })).rows,
    ).toHaveLength(1);
    // Its first call timed out a day ago (Stripe recorded nothing); past Stripe's 24-hour dedupe a
    // re-send could be recorded twice had that call got through.
    await rig.sql(
      "update meter_reports set in_doubt = true, first_call_at = ?, attempts = 1",
      NOW - 24 * HOUR_MS,
    );
    const s = await reportOn(rig, rig.ledger);
    expect(s).toMatchObject({ unconfirmed: 1, calls: 0, sent: 0 });
    expect(rig.emu.events()).toEqual([]);
    const [row] = await rig.sql<{ state: string; e: string }>(
      "select state, last_error as e from meter_reports",
    );
    expect(row?.state).toBe("sent");
    expect(row?.e).toMatch(/not confirmed by Stripe within 23 h/);
    const meterId = (await findMeter(rig.stripe, EVENT_NAME))?.id as string;
    const range = { from: HOUR - HOUR_MS, to: hourStart(NOW) + HOUR_MS };
    const diffs = await stripeDifferences({
      ledger: rig.ledger,
      stripe: rig.stripe,
      meterId,
      ...range,
      now: NOW,
      settleMs: 0,
    });
    expect(diffs.map((d) => d.difference)).toEqual([-300]);
    await recordStripeDifferences(rig.ledger, diffs, NOW);
    expect(await reportOn(rig, rig.ledger)).toMatchObject({ sent: 1 });
    expect(rig.emu.totalsByCustomer(EVENT_NAME).get(CUSTOMER)).toBe(300);
  });

  it("a row superseded by another planner after the sender read it is not sent", async () => {
    rig = await setup();
    await ingestInto(rig.ledger, [reading(1, 300)], "a");
    await refreshBilling({
      ledger: rig.ledger,
      stripe: rig.stripe,
      eventName: EVENT_NAME,
      now: NOW,
    });
    await rig.ledger.plan({ now: NOW, settings: { graceSeconds: 3600 } });
    const [row] = await rig.ledger.outbox.pending();
    await rig.sql("update meter_reports set state = 'superseded'");
    expect(await rig.ledger.outbox.claimForCall(row?.identifier as string, NOW)).toBe(false);
    expect(await rig.sql("select in_doubt as d, first_call_at as f from meter_reports")).toEqual([
      { d: 0, f: null },
    ]);
  });

  it("a pending row of a customer whose subscription was canceled before any call is superseded and held, not sent", async () => {
    rig = await setup();
    await ingestInto(rig.ledger, [reading(1, 300)], "a");
    await refreshBilling({
      ledger: rig.ledger,
      stripe: rig.stripe,
      eventName: EVENT_NAME,
      now: NOW,
    });
    await rig.ledger.plan({ now: NOW, settings: { graceSeconds: 3600 } });
    expect(await rig.ledger.outbox.pending()).toHaveLength(1);
    rig.emu.setSubscriptionStatus(subscriptionId, "canceled");
    rig.now.value = NOW + 6 * 60_000; // past SUBSCRIPTION_REFRESH_SECONDS: looked up again
    const s = await reportOn(rig, rig.ledger);
    expect(s).toMatchObject({
      superseded: 1,
      held: 1,
      heldBytes: { no_subscription: 300 },
      calls: 0,
    });
    expect(rig.emu.events()).toEqual([]);
  });

  it("reconcile --repair skips an hour whose rows changed after the comparison began", async () => {
    rig = await setup();
    await ingestInto(rig.ledger, [reading(1, 300)], "a");
    expect(await reportOn(rig, rig.ledger)).toMatchObject({ sent: 1 });
    rig.emu.tamper({ customer: CUSTOMER, value: 50, timestamp: Math.floor(HOUR / 1000) + 60 });
    const meterId = (await findMeter(rig.stripe, EVENT_NAME))?.id as string;
    const range = { from: HOUR - HOUR_MS, to: hourStart(NOW) + HOUR_MS };
    const diffs = await stripeDifferences({
      ledger: rig.ledger,
      stripe: rig.stripe,
      meterId,
      ...range,
      now: NOW,
      settleMs: 0,
    });
    expect(diffs.map((d) => d.difference)).toEqual([50]);
    // Meanwhile the service reports a late reading for that hour.
    rig.now.value = NOW + 60_000;
    await ingestInto(rig.ledger, [reading(2, 400)], "b");
    expect(await reportOn(rig, rig.ledger)).toMatchObject({ sent: 1 });
    expect(await recordStripeDifferences(rig.ledger, diffs, rig.now.value, NOW)).toEqual([]);
  });

  it("simmeter reconcile --repair on a restored ledger exits 0 and leaves reconcile with zero drift", async () => {
    rig = await setup();
    await ingestInto(rig.ledger, [reading(1, 700)], "a");
    const before = await snapshot(rig, "cli");
    await reportOn(rig, rig.ledger);
    const restored = await before.restore();
    await ingestInto(restored.ledger, [reading(2, 1000, true)], "b");
    await reportOn(rig, restored.ledger);
    await restored.close();
    const env = {
      ...restored.env,
      STRIPE_SECRET_KEY: rig.emu.apiKey,
      STRIPE_API_BASE: rig.emu.url,
      REDIS_URL: inject("redisUrl"),
      REDIS_PREFIX: rig.prefix,
      LOG_LEVEL: "silent",
    };
    const beforeRepair = await runCli(["reconcile", "--json"], env);
    expect(beforeRepair.status, beforeRepair.stderr).toBe(1);
    expect(beforeRepair.stderr).toMatch(/reconcile --repair/);
    const fixed = await runCli(["reconcile", "--repair", "--settle-minutes", "0", "--json"], env);
    expect(fixed.status, fixed.stdout + fixed.stderr).toBe(0);
    const out = JSON.parse(fixed.stdout) as {
      differences: { difference: number }[];
      report: { sent: number };
    };
    expect(out.differences.map((d) => d.difference)).toEqual([-300]);
    expect(out.report.sent).toBe(1);
    expect(rig.emu.totalsByCustomer(EVENT_NAME).get(CUSTOMER)).toBe(1000);
    const after = await runCli(["reconcile"], env);
    expect(after.status, after.stdout + after.stderr).toBe(0);
    const bad = await runCli(["reconcile", "--repair", "--settle-minutes", "soon"], env);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/"soon" is not a whole number of minutes/);
  });
});
