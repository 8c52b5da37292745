import { copyFileSync, existsSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import { join } from "node:path";
import { afterEach, describe, expect, inject, it } from "vitest";
import { HOUR_MS, hourStart } from "../../src/accounting/buckets.ts";
import { refreshBilling } from "../../src/billing/subscriptions.ts";
import { assignCustomer } from "../../src/customers/customers.ts";
import { type Db, openDb } from "../../src/db/client.ts";
import { ingestDeliveries, prepareIngest } from "../../src/ingest/ingest.ts";
import { sqliteLedger } from "../../src/ledger/sqlite/index.ts";
import { createLogger } from "../../src/lib/logger.ts";
import { claimForCall, durably, pendingReports, planReports } from "../../src/reporting/outbox.ts";
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
import { runCli } from "../helpers/process.ts";
import { EVENT_NAME, type ReportingRig, reportingRig } from "../helpers/reporting.ts";

// A lost local commit (power loss under synchronous=NORMAL, a restored backup) after Stripe
// accepted an event must not leave the difference unbilled. Each test works on a copy of the
// database taken before the Stripe call, the state such a loss leaves behind.

const SIM = `HS${"e".repeat(32)}`;
const CUSTOMER = "cus_durable";
// Times relative to the real clock, as the CLI test uses it; the customer's billing period is
// anchored 10 days before the usage, so it lies inside the current period whatever day it is.
const NOW = Date.now();
const HOUR = hourStart(NOW) - 3 * HOUR_MS;

let rig: ReportingRig | undefined;
let subscriptionId = "";
let proxy: Server | undefined;
const opened: Db[] = [];
afterEach(async () => {
  for (const d of opened.splice(0)) if (d.$client.open) d.$client.close();
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

function ingestInto(db: Db, events: unknown[], id: string) {
  ingestDeliveries(
    { db, stmts: prepareIngest(db), settings: defaultSettings, now: () => NOW },
    { v: 1, deliveries: [{ id, receivedAt: NOW, source: "replay", events }] },
  );
}

/** A copy of the database files as they are on disk now (the WAL holds the latest commits). */
function copyDb(from: string, to: string): void {
  copyFileSync(from, to);
  for (const ext of ["-wal", "-shm"])
    if (existsSync(from + ext)) copyFileSync(from + ext, to + ext);
}

/** An HTTP proxy to the emulator that runs `beforeCall` when a meter event is about to reach it. */
async function proxyTo(target: string, beforeCall: () => void): Promise<string> {
  const t = new URL(target);
  proxy = createServer((req, res) => {
    if (req.method === "POST" && req.url?.startsWith("/v1/billing/meter_events")) beforeCall();
    const out = request(
      { host: t.hostname, port: t.port, path: req.url, method: req.method, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    req.pipe(out);
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
    ledger: sqliteLedger(r.db),
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

const reportOn = (r: ReportingRig, db: Db, stripe = r.stripe) =>
  runReport({
    ledger: sqliteLedger(db),
    stripe,
    redis: r.redis,
    logger: createLogger("silent"),
    settings: r.settings,
    now: () => r.now.value,
  });

describe("a lost local commit cannot strand Stripe", () => {
  it("reporting transactions commit with synchronous=FULL and leave ingest at NORMAL", async () => {
    rig = await setup();
    const level = () => rig?.db.$client.pragma("synchronous", { simple: true });
    expect(level()).toBe(1);
    expect(durably(rig.db, level)).toBe(2);
    expect(level()).toBe(1);
  });

  it("a database copied during the Stripe call already holds the pending row: restored, it re-sends the same identifier and value and Stripe keeps one event", async () => {
    rig = await setup();
    ingestInto(rig.db, [reading(1, 300)], "a");
    const copy = join(rig.dir, "during-call.db");
    const r = rig;
    const url = await proxyTo(rig.emu.url, () => copyDb(r.dbPath, copy));
    const viaProxy = createStripe({
      STRIPE_SECRET_KEY: rig.emu.apiKey,
      STRIPE_API_BASE: url,
      STRIPE_TIMEOUT_MS: 5000,
    });
    expect(await reportOn(rig, rig.db, viaProxy)).toMatchObject({ sent: 1 });
    const restored = openDb(copy);
    opened.push(restored);
    const rows = restored.$client
      .prepare("select identifier, value, state from meter_reports")
      .all() as { identifier: string; value: number; state: string }[];
    expect(rows).toEqual([
      { identifier: expect.stringMatching(/^v1:cus_durable:/), value: 300, state: "pending" },
    ]);
    // Same identifier, value and Idempotency-Key: Stripe replays its first answer (or refuses a
    // duplicate identifier); either way it keeps one event.
    const again = await reportOn(rig, restored);
    expect(again.sent + again.duplicates).toBe(1);
    expect(again.failed).toBe(0);
    expect(rig.emu.events().map((e) => [e.identifier, e.value])).toEqual([
      [rows[0]?.identifier, 300],
    ]);
    expect(rig.emu.stats()).toMatchObject({ concurrencyViolations: 0 });
  });

  it("after a restore from before the call, reconcile --repair finds the settled difference and sends it under a new identifier", async () => {
    rig = await setup();
    ingestInto(rig.db, [reading(1, 300)], "a");
    const copy = join(rig.dir, "before-call.db");
    copyDb(rig.dbPath, copy);
    expect(await reportOn(rig, rig.db)).toMatchObject({ sent: 1 });
    // The restored ledger never saw the report; more usage arrives and the same identifier is
    // planned with another value: Stripe refuses it as a duplicate and keeps 300.
    const restored = openDb(copy);
    opened.push(restored);
    ingestInto(restored, [reading(2, 500, true)], "b");
    expect(await reportOn(rig, restored)).toMatchObject({ duplicates: 1 });
    expect(rig.emu.totalsByCustomer(EVENT_NAME).get(CUSTOMER)).toBe(300);
    const meterId = (await findMeter(rig.stripe, EVENT_NAME))?.id as string;
    const range = { from: HOUR - HOUR_MS, to: hourStart(NOW) + HOUR_MS };
    const drift = await reconcile({
      ledger: sqliteLedger(restored),
      stripe: rig.stripe,
      meterId,
      ...range,
    });
    expect(drift).toEqual([
      expect.objectContaining({ customer: CUSTOMER, counted: 500, stripeDrift: 200 }),
    ]);

    const diffs = await stripeDifferences({
      ledger: sqliteLedger(restored),
      stripe: rig.stripe,
      meterId,
      ...range,
      now: NOW,
      settleMs: 0,
    });
    expect(diffs).toEqual([
      { customer: CUSTOMER, hour: HOUR, bucket: HOUR, stripe: 300, sent: 500, difference: -200 },
    ]);
    await recordStripeDifferences(sqliteLedger(restored), diffs, NOW);
    expect(await reportOn(rig, restored)).toMatchObject({ sent: 1, failed: 0 });
    const ids = rig.emu.events().map((e) => e.identifier);
    expect(new Set(ids).size).toBe(ids.length);
    expect(rig.emu.totalsByCustomer(EVENT_NAME).get(CUSTOMER)).toBe(500);
    expect(
      hasDrift(
        await reconcile({ ledger: sqliteLedger(restored), stripe: rig.stripe, meterId, ...range }),
      ),
    ).toBe(false);
    // Nothing left to repair, and a second repair records nothing.
    expect(
      await stripeDifferences({
        ledger: sqliteLedger(restored),
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
    ingestInto(rig.db, [reading(1, 300)], "a");
    await refreshBilling({
      ledger: rig.ledger,
      stripe: rig.stripe,
      eventName: EVENT_NAME,
      now: NOW,
    });
    expect(
      planReports({ db: rig.db, now: NOW, settings: { graceSeconds: 3600 } }).rows,
    ).toHaveLength(1);
    // Its first call timed out a day ago (Stripe recorded nothing); past Stripe's 24-hour dedupe a
    // re-send could be recorded twice had that call got through.
    rig.db.$client
      .prepare("update meter_reports set in_doubt = 1, first_call_at = ?, attempts = 1")
      .run(NOW - 24 * HOUR_MS);
    const s = await reportOn(rig, rig.db);
    expect(s).toMatchObject({ unconfirmed: 1, calls: 0, sent: 0 });
    expect(rig.emu.events()).toEqual([]);
    const row = rig.db.$client
      .prepare("select state, last_error as e from meter_reports")
      .get() as {
      state: string;
      e: string;
    };
    expect(row.state).toBe("sent");
    expect(row.e).toMatch(/not confirmed by Stripe within 23 h/);
    const meterId = (await findMeter(rig.stripe, EVENT_NAME))?.id as string;
    const range = { from: HOUR - HOUR_MS, to: hourStart(NOW) + HOUR_MS };
    const diffs = await stripeDifferences({
      ledger: sqliteLedger(rig.db),
      stripe: rig.stripe,
      meterId,
      ...range,
      now: NOW,
      settleMs: 0,
    });
    expect(diffs.map((d) => d.difference)).toEqual([-300]);
    await recordStripeDifferences(sqliteLedger(rig.db), diffs, NOW);
    expect(await reportOn(rig, rig.db)).toMatchObject({ sent: 1 });
    expect(rig.emu.totalsByCustomer(EVENT_NAME).get(CUSTOMER)).toBe(300);
  });

  it("a row superseded by another planner after the sender read it is not sent", async () => {
    rig = await setup();
    ingestInto(rig.db, [reading(1, 300)], "a");
    await refreshBilling({
      ledger: rig.ledger,
      stripe: rig.stripe,
      eventName: EVENT_NAME,
      now: NOW,
    });
    planReports({ db: rig.db, now: NOW, settings: { graceSeconds: 3600 } });
    const [row] = pendingReports(rig.db);
    rig.db.$client.prepare("update meter_reports set state = 'superseded'").run();
    expect(claimForCall(rig.db, row?.identifier as string, NOW)).toBe(false);
    expect(
      rig.db.$client.prepare("select in_doubt as d, first_call_at as f from meter_reports").get(),
    ).toEqual({ d: 0, f: null });
  });

  it("a pending row of a customer whose subscription was canceled before any call is superseded and held, not sent", async () => {
    rig = await setup();
    ingestInto(rig.db, [reading(1, 300)], "a");
    await refreshBilling({
      ledger: rig.ledger,
      stripe: rig.stripe,
      eventName: EVENT_NAME,
      now: NOW,
    });
    planReports({ db: rig.db, now: NOW, settings: { graceSeconds: 3600 } });
    expect(pendingReports(rig.db)).toHaveLength(1);
    rig.emu.setSubscriptionStatus(subscriptionId, "canceled");
    rig.now.value = NOW + 6 * 60_000; // past SUBSCRIPTION_REFRESH_SECONDS: looked up again
    const s = await reportOn(rig, rig.db);
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
    ingestInto(rig.db, [reading(1, 300)], "a");
    expect(await reportOn(rig, rig.db)).toMatchObject({ sent: 1 });
    rig.emu.tamper({ customer: CUSTOMER, value: 50, timestamp: Math.floor(HOUR / 1000) + 60 });
    const meterId = (await findMeter(rig.stripe, EVENT_NAME))?.id as string;
    const range = { from: HOUR - HOUR_MS, to: hourStart(NOW) + HOUR_MS };
    const diffs = await stripeDifferences({
      ledger: sqliteLedger(rig.db),
      stripe: rig.stripe,
      meterId,
      ...range,
      now: NOW,
      settleMs: 0,
    });
    expect(diffs.map((d) => d.difference)).toEqual([50]);
    // Meanwhile the service reports a late reading for that hour.
    rig.now.value = NOW + 60_000;
    ingestInto(rig.db, [reading(2, 400)], "b");
    expect(await reportOn(rig, rig.db)).toMatchObject({ sent: 1 });
    expect(await recordStripeDifferences(sqliteLedger(rig.db), diffs, rig.now.value, NOW)).toEqual(
      [],
    );
  });

  it("simmeter reconcile --repair on a restored ledger exits 0 and leaves reconcile with zero drift", async () => {
    rig = await setup();
    ingestInto(rig.db, [reading(1, 700)], "a");
    const copy = join(rig.dir, "cli.db");
    copyDb(rig.dbPath, copy);
    await reportOn(rig, rig.db);
    const restored = openDb(copy);
    ingestInto(restored, [reading(2, 1000, true)], "b");
    await reportOn(rig, restored);
    restored.$client.close();
    const env = {
      DATABASE_PATH: copy,
      STRIPE_SECRET_KEY: rig.emu.apiKey,
      STRIPE_API_BASE: rig.emu.url,
      REDIS_URL: inject("redisUrl"),
      REDIS_PREFIX: rig.prefix,
      LOG_LEVEL: "silent",
    };
    const before = await runCli(["reconcile", "--json"], env);
    expect(before.status, before.stderr).toBe(1);
    expect(before.stderr).toMatch(/reconcile --repair/);
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
