import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { Writable } from "node:stream";
import { Redis } from "ioredis";
import pino from "pino";
import { afterEach, describe, expect, inject, it } from "vitest";
import { startStripeEmulator } from "../../scripts/stripe-emulator.ts";
import { HOUR_MS, hourStart } from "../../src/accounting/buckets.ts";
import { customerResolver } from "../../src/customers/customers.ts";
import { type Db, openDb } from "../../src/db/client.ts";
import { ingestDeliveries, prepareIngest } from "../../src/ingest/ingest.ts";
import { sqliteLedger } from "../../src/ledger/sqlite/index.ts";
import { failedReports, pendingReports } from "../../src/reporting/outbox.ts";
import { type ReporterSettings, runReport } from "../../src/reporting/reporter.ts";
import { ensureMeter, findMeter } from "../../src/reporting/stripe-setup.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { stripeCliWorkspace } from "../helpers/cli.ts";
import { defaultSettings } from "../helpers/db.ts";
import { fleet } from "../helpers/fleet.ts";
import { tempDir } from "../helpers/process.ts";
import {
  countedByCustomerHour,
  EVENT_NAME,
  normalise,
  type ReportingRig,
  reportingRig,
} from "../helpers/reporting.ts";
import { assignSim } from "../helpers/seed.ts";
import { stripeFor } from "../helpers/stripe.ts";

// Issue 9: a meter Stripe cannot take events on (none has STRIPE_METER_EVENT_NAME, or it was
// deactivated) stops the run at the first answer with one message, and every row stays pending
// (not failed, not left in doubt), so the first run after `simmeter stripe setup` sends each once.

const BASE = Date.parse("2026-11-20T00:00:00Z");
const NOW = Date.parse("2026-11-23T10:30:00Z");
const CUSTOMERS = 3;
/** every SIM the fleet helper can produce (HS + 1..40) */
const FLEET_SIMS = Array.from(
  { length: 40 },
  (_, i) => `HS${(i + 1).toString(16).padStart(32, "0")}`,
);

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A pino logger whose lines the test reads. */
function capturedLogger() {
  const lines: { level: number; msg: string; reason?: string; stillPending?: number }[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split("\n")) if (l.trim()) lines.push(JSON.parse(l));
      done();
    },
  });
  return { logger: pino({ level: "info" }, stream), lines };
}

/** Every SIM the fleet can use, mapped before any usage (cus_m0..cus_m2). */
function assignAll(db: Db) {
  FLEET_SIMS.forEach((sim, i) => {
    assignSim(db, {
      sim,
      customer: `cus_m${i % CUSTOMERS}`,
      effectiveFrom: BASE - 86_400_000,
      now: BASE - 86_400_000,
    });
  });
}

function ingestInto(db: Db, now: number, events: unknown[], id: string) {
  ingestDeliveries(
    { db, stmts: prepareIngest(db), settings: defaultSettings, now: () => now },
    { v: 1, deliveries: [{ id, receivedAt: now, source: "replay", events }] },
  );
}

const counted = (db: Db) => {
  const resolver = customerResolver(db);
  return countedByCustomerHour(db, (s, h) => resolver.resolve(s, h));
};

type Row = { state: string; in_doubt: number; first_call_at: number | null; last_error: string };
const outboxRows = (db: Db) =>
  db.$client
    .prepare("select state, in_doubt, first_call_at, last_error from meter_reports")
    .all() as Row[];

/** The rows a stopped run leaves: all pending, none failed, none in doubt. */
function expectAllPendingNoneInDoubt(db: Db, pendingBefore: number) {
  const rows = outboxRows(db).filter((r) => r.state !== "sent");
  expect(rows.length).toBeGreaterThan(0);
  expect(rows.length).toBe(pendingBefore);
  expect(new Set(rows.map((r) => r.state))).toEqual(new Set(["pending"]));
  expect(failedReports(db)).toEqual([]);
  expect(rows.filter((r) => r.in_doubt !== 0 || r.first_call_at !== null)).toEqual([]);
}

/** The error lines of one run: exactly one, the stop, with the summary's reason. */
function expectOneStopMessage(lines: ReturnType<typeof capturedLogger>["lines"], reason: string) {
  const errors = lines.filter((l) => l.level >= 50);
  expect(errors).toEqual([
    expect.objectContaining({ msg: "report run stopped; rows stay pending", reason }),
  ]);
  expect(lines.some((l) => l.msg.includes("row stopped"))).toBe(false);
}

async function rigWithFirstHalfSent(): Promise<{ rig: ReportingRig; second: unknown[] }> {
  const rig = await reportingRig({ redisUrl: inject("redisUrl"), now: NOW });
  cleanups.push(() => rig.close());
  assignAll(rig.db);
  rig.ingest(fleet(20, 31).events);
  await rig.reportUntilDone();
  expect(rig.emu.events().length).toBeGreaterThan(0);
  return { rig, second: fleet(20, 32).events };
}

const stop = (r: ReportingRig, logger: pino.Logger, settings: Partial<ReporterSettings> = {}) =>
  runReport({
    ledger: r.ledger,
    stripe: r.stripe,
    redis: r.redis,
    logger,
    settings: { ...r.settings, ...settings },
    now: () => r.now.value,
  });

describe("a meter Stripe cannot take events on stops the run, rows stay pending", () => {
  it("a deactivated meter: the first refused call stops the run, no row fails or stays in doubt, one message names STRIPE_METER_EVENT_NAME and `simmeter stripe setup --reactivate`; after it every row is sent exactly once", async () => {
    const { rig, second } = await rigWithFirstHalfSent();
    const meter = await findMeter(rig.stripe, EVENT_NAME);
    if (!meter) throw new Error("no meter");
    await rig.stripe.billing.meters.deactivate(meter.id);
    rig.ingest(second);
    const sentBefore = rig.emu.events().length;
    const callsBefore = rig.emu.stats().meterEventCalls;

    for (let run = 0; run < 2; run++) {
      const { logger, lines } = capturedLogger();
      const s = await stop(rig, logger, { concurrency: 1 });
      expect(s.fatal).toContain(`"${EVENT_NAME}" (STRIPE_METER_EVENT_NAME)`);
      expect(s.fatal).toContain("run simmeter stripe setup --reactivate");
      // One call, refused; no other row or customer was tried.
      expect(s).toMatchObject({ calls: 1, sent: 0, failed: 0, duplicates: 0 });
      expect(s.stillPending).toBe(pendingReports(rig.db).length);
      expectAllPendingNoneInDoubt(rig.db, s.stillPending);
      expectOneStopMessage(lines, s.fatal as string);
    }
    expect(rig.emu.stats().meterEventCalls - callsBefore).toBe(2);
    expect(rig.emu.events()).toHaveLength(sentBefore);

    expect((await ensureMeter(rig.stripe, EVENT_NAME, { reactivate: true })).action).toBe(
      "reactivated",
    );
    await rig.reportUntilDone();
    expect(pendingReports(rig.db)).toEqual([]);
    expect(failedReports(rig.db)).toEqual([]);
    expect(normalise(rig.emu.totalsByCustomerHour(EVENT_NAME))).toEqual(counted(rig.db));
    const ids = rig.emu.events().map((e) => e.identifier);
    expect(new Set(ids).size).toBe(ids.length);
    expect(rig.emu.stats().duplicateIdentifiers).toBe(0);
  });

  it("no meter with the configured event name (STRIPE_METER_EVENT_NAME renamed, periods looked up minutes ago): calls in flight end, none starts after the first answer; after `simmeter stripe setup` every row is sent exactly once", async () => {
    const { rig, second } = await rigWithFirstHalfSent();
    const renamed = `${EVENT_NAME}_v2`;
    rig.ingest(second);
    const callsBefore = rig.emu.stats().meterEventCalls;
    const { logger, lines } = capturedLogger();
    const s = await stop(rig, logger, { eventName: renamed });
    expect(s.fatal).toBe(
      `Stripe has no active meter with event_name "${renamed}" (STRIPE_METER_EVENT_NAME): run simmeter stripe setup; rows stay pending until then`,
    );
    // Each customer's first call was already under way (concurrency 4, 3 customers); no second.
    expect(s.calls).toBeGreaterThan(0);
    expect(s.calls).toBeLessThanOrEqual(CUSTOMERS);
    expect(rig.emu.stats().meterEventCalls - callsBefore).toBe(s.calls);
    expect(s).toMatchObject({ sent: 0, failed: 0 });
    expectAllPendingNoneInDoubt(rig.db, s.stillPending);
    expectOneStopMessage(lines, s.fatal as string);

    rig.settings.eventName = renamed;
    expect((await ensureMeter(rig.stripe, renamed)).action).toBe("created");
    await rig.reportUntilDone();
    expect(pendingReports(rig.db)).toEqual([]);
    expect(failedReports(rig.db)).toEqual([]);
    // Both meters together hold what was counted, each outbox row once.
    expect(normalise(rig.emu.totalsByCustomerHour())).toEqual(counted(rig.db));
    const ids = rig.emu.events().map((e) => e.identifier);
    expect(new Set(ids).size).toBe(ids.length);
    expect(rig.emu.events().filter((e) => e.eventName === renamed).length).toBeGreaterThan(0);
  });

  it("no meter at all (`stripe setup` never ran): the run stops before planning or calling, with the same message; the run after `stripe setup` sends everything once", async () => {
    const now = { value: NOW };
    const emu = await startStripeEmulator({
      acceptAnyCustomer: true,
      autoSubscribe: true,
      now: () => now.value,
    });
    const db = openDb(join(tempDir(), "simmeter.db"));
    const redis = new Redis(inject("redisUrl"), { maxRetriesPerRequest: null });
    cleanups.push(async () => {
      await emu.close();
      redis.disconnect();
      db.$client.close();
    });
    const stripe = stripeFor(emu);
    assignAll(db);
    ingestInto(db, NOW, fleet(20, 33).events, "d1");
    const settings: ReporterSettings = {
      eventName: EVENT_NAME,
      graceSeconds: 3600,
      concurrency: 4,
      timeoutMs: 5000,
      attemptsPerRun: 6,
      redisPrefix: `mm${randomUUID().slice(0, 8)}`,
    };
    const { logger, lines } = capturedLogger();
    const ledger = sqliteLedger(db);
    const report = () =>
      runReport({ ledger, stripe, redis, logger, settings, now: () => now.value });

    const s = await report();
    expect(s.fatal).toBe(
      `Stripe has no active meter with event_name "${EVENT_NAME}" (STRIPE_METER_EVENT_NAME): run simmeter stripe setup; rows stay pending until then`,
    );
    expect(s).toMatchObject({ planned: 0, calls: 0, failed: 0, stillPending: 0 });
    expect(emu.stats().meterEventCalls).toBe(0);
    expect(outboxRows(db)).toEqual([]);
    expectOneStopMessage(lines, s.fatal as string);

    await ensureMeter(stripe, EVENT_NAME);
    const after = await report();
    expect(after).toMatchObject({ fatal: null, failed: 0, stillPending: 0 });
    expect(after.sent).toBe(after.planned);
    expect(normalise(emu.totalsByCustomerHour(EVENT_NAME))).toEqual(counted(db));
    expect(emu.events()).toHaveLength(after.planned);
  });
});

// ---------------------------------------------------------------------------------------------
// The same through `simmeter report` as a child process (the set-up of stripe-cli.test.ts).

const ACCOUNT = "ACe7ea554f7fc0fad65e689bb5899bb6c3";
const SIM = `HS${"a".repeat(32)}`;
const MINUTE = 60_000;
const hex32 = (n: number) => n.toString(16).padStart(32, "0");
/** An hour bucket that ended a while ago by the real clock (the CLI reads the real clock). */
const pastHour = (hoursAgo: number) => hourStart(Date.now()) - hoursAgo * HOUR_MS;

/** One data session of SIM inside `hour`, `bytes` in all. */
function sessionEvents(n: number, hour: number, bytes: number) {
  const start = hour + 5 * MINUTE;
  const end = hour + 20 * MINUTE;
  return [
    buildCloudEvent({
      eventSid: `EZ${hex32(n)}`,
      kind: "data-session.ended",
      accountSid: ACCOUNT,
      simSid: SIM,
      iccid: "89883070000005381783",
      timestampMs: end,
      sessionSid: `PI${hex32(n)}`,
      sessionStartMs: start,
      windowStartMs: start,
      windowEndMs: end,
      windowDown: 0,
      cumulativeDown: bytes,
      sessionEndMs: end,
    }),
  ];
}

async function cliWorkspace() {
  const w = await stripeCliWorkspace({
    dirPrefix: "simmeter-missing-meter-",
    redisPrefix: "mmcli",
    emulator: { autoSubscribe: true, acceptAnyCustomer: true },
    cleanup: (close) => cleanups.push(close),
  });
  const dbPath = w.dbPath;
  const seed = (n: number, hour: number, bytes: number, assign: boolean) => {
    const db = openDb(dbPath);
    try {
      ingestInto(db, Date.now(), sessionEvents(n, hour, bytes), `seed${n}`);
      if (assign) assignSim(db, { sim: SIM, customer: "cus_cli", effectiveFrom: pastHour(48) });
    } finally {
      db.$client.close();
    }
  };
  const status = () =>
    w.json<{ stopped: unknown[]; pending: { rows: number } }>(["report", "--status", "--json"]);
  return { ...w, seed, status };
}

describe("simmeter report (CLI) without a usable meter", () => {
  it("before `stripe setup`: exits 1 naming STRIPE_METER_EVENT_NAME and `run simmeter stripe setup` on stderr, calls nothing; after setup exits 0 and sends once", async () => {
    const w = await cliWorkspace();
    w.seed(1, pastHour(2), 7000, true);
    const r = await w.cli(["report"]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(
      `stopped: Stripe has no active meter with event_name "${EVENT_NAME}" (STRIPE_METER_EVENT_NAME): run simmeter stripe setup`,
    );
    expect(w.emu.stats().meterEventCalls).toBe(0);
    expect(await w.status()).toMatchObject({ stopped: [], pending: { rows: 0 } });

    expect((await w.cli(["stripe", "setup"])).status).toBe(0);
    const ok = await w.cli(["report", "--json"]);
    expect(ok.status, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ sent: 1, failed: 0, still_pending: 0 });
    expect(w.emu.events().map((e) => e.value)).toEqual([7000]);
  });

  it("with the meter deactivated: exits 1 naming `simmeter stripe setup --reactivate`, the row stays pending (not failed); after it exits 0 and sends the row once", async () => {
    const w = await cliWorkspace();
    expect((await w.cli(["stripe", "setup"])).status).toBe(0);
    w.seed(1, pastHour(3), 1000, true);
    expect((await w.cli(["report"])).status).toBe(0);
    w.seed(2, pastHour(2), 2000, false);
    const meter = await findMeter(w.stripe, EVENT_NAME);
    if (!meter) throw new Error("no meter");
    await w.stripe.billing.meters.deactivate(meter.id);

    const r = await w.cli(["report", "--json"]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`"${EVENT_NAME}" (STRIPE_METER_EVENT_NAME)`);
    expect(r.stderr).toContain("run simmeter stripe setup --reactivate");
    expect(JSON.parse(r.stdout)).toMatchObject({ calls: 1, sent: 0, failed: 0, still_pending: 1 });
    expect(await w.status()).toMatchObject({ stopped: [], pending: { rows: 1 } });

    expect((await w.cli(["stripe", "setup", "--reactivate"])).status).toBe(0);
    const ok = await w.cli(["report", "--json"]);
    expect(ok.status, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ sent: 1, failed: 0, still_pending: 0 });
    expect(w.emu.events().map((e) => e.value)).toEqual([1000, 2000]);
    expect(w.emu.stats().duplicateIdentifiers).toBe(0);
  });
});
