import { randomUUID } from "node:crypto";
import { Writable } from "node:stream";
import { Redis } from "ioredis";
import pino from "pino";
import { afterEach, describe, expect, inject, it } from "vitest";
import { startStripeEmulator } from "../../scripts/stripe-emulator.ts";
import { HOUR_MS, hourStart } from "../../src/accounting/buckets.ts";
import type { Ledger } from "../../src/ledger/port.ts";
import { type ReporterSettings, runReport } from "../../src/reporting/reporter.ts";
import { ensureMeter, findMeter } from "../../src/reporting/stripe-setup.ts";
import { buildCloudEvent } from "../../src/simulate/cloud-event.ts";
import { stripeCliWorkspace } from "../helpers/cli.ts";
import { defaultSettings } from "../helpers/db.ts";
import { fleet } from "../helpers/fleet.ts";
import { openTestLedger, type TestLedger } from "../helpers/ledger.ts";
import {
  countedUsage,
  EVENT_NAME,
  normalise,
  type ReportingRig,
  reportingRig,
} from "../helpers/reporting.ts";
import { assignSimVia } from "../helpers/seed.ts";
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
async function assignAll(ledger: Ledger) {
  for (const [i, sim] of FLEET_SIMS.entries())
    await assignSimVia(ledger, {
      sim,
      customer: `cus_m${i % CUSTOMERS}`,
      effectiveFrom: BASE - 86_400_000,
      now: BASE - 86_400_000,
    });
}

async function ingestInto(ledger: Ledger, now: number, events: unknown[], id: string) {
  await ledger.ingestJob(
    { v: 1, deliveries: [{ id, receivedAt: now, source: "replay", events }] },
    defaultSettings,
    () => now,
  );
}

/** counted usage per customer hour, through the port */
const counted = (ledger: Ledger) => countedUsage(ledger);

type Row = { state: string; in_doubt: number; first_call_at: number | null; last_error: string };
const outboxRows = (t: Pick<TestLedger, "sql">) =>
  t.sql<Row>("select state, in_doubt, first_call_at, last_error from meter_reports");

/** The rows a stopped run leaves: all pending, none failed, none in doubt. */
async function expectAllPendingNoneInDoubt(
  t: Pick<TestLedger, "ledger" | "sql">,
  pendingBefore: number,
) {
  const rows = (await outboxRows(t)).filter((r) => r.state !== "sent");
  expect(rows.length).toBeGreaterThan(0);
  expect(rows.length).toBe(pendingBefore);
  expect(new Set(rows.map((r) => r.state))).toEqual(new Set(["pending"]));
  expect(await t.ledger.outbox.failed()).toEqual([]);
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
  await assignAll(rig.ledger);
  await rig.ingest(fleet(20, 31).events);
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
    await rig.ingest(second);
    const sentBefore = rig.emu.events().length;
    const callsBefore = rig.emu.stats().meterEventCalls;

    for (let run = 0; run < 2; run++) {
      const { logger, lines } = capturedLogger();
      const s = await stop(rig, logger, { concurrency: 1 });
      expect(s.fatal).toContain(`"${EVENT_NAME}" (STRIPE_METER_EVENT_NAME)`);
      expect(s.fatal).toContain("run simmeter stripe setup --reactivate");
      // One call, refused; no other row or customer was tried.
      expect(s).toMatchObject({ calls: 1, sent: 0, failed: 0, duplicates: 0 });
      expect(s.stillPending).toBe((await rig.ledger.outbox.pending()).length);
      await expectAllPendingNoneInDoubt(rig, s.stillPending);
      expectOneStopMessage(lines, s.fatal as string);
    }
    expect(rig.emu.stats().meterEventCalls - callsBefore).toBe(2);
    expect(rig.emu.events()).toHaveLength(sentBefore);

    expect((await ensureMeter(rig.stripe, EVENT_NAME, { reactivate: true })).action).toBe(
      "reactivated",
    );
    await rig.reportUntilDone();
    expect(await rig.ledger.outbox.pending()).toEqual([]);
    expect(await rig.ledger.outbox.failed()).toEqual([]);
    expect(normalise(rig.emu.totalsByCustomerHour(EVENT_NAME))).toEqual(await counted(rig.ledger));
    const ids = rig.emu.events().map((e) => e.identifier);
    expect(new Set(ids).size).toBe(ids.length);
    expect(rig.emu.stats().duplicateIdentifiers).toBe(0);
  });

  it("no meter with the configured event name (STRIPE_METER_EVENT_NAME renamed, periods looked up minutes ago): calls in flight end, none starts after the first answer; after `simmeter stripe setup` every row is sent exactly once", async () => {
    const { rig, second } = await rigWithFirstHalfSent();
    const renamed = `${EVENT_NAME}_v2`;
    await rig.ingest(second);
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
    await expectAllPendingNoneInDoubt(rig, s.stillPending);
    expectOneStopMessage(lines, s.fatal as string);

    rig.settings.eventName = renamed;
    expect((await ensureMeter(rig.stripe, renamed)).action).toBe("created");
    await rig.reportUntilDone();
    expect(await rig.ledger.outbox.pending()).toEqual([]);
    expect(await rig.ledger.outbox.failed()).toEqual([]);
    // Both meters together hold what was counted, each outbox row once.
    expect(normalise(rig.emu.totalsByCustomerHour())).toEqual(await counted(rig.ledger));
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
    const t = await openTestLedger();
    const redis = new Redis(inject("redisUrl"), { maxRetriesPerRequest: null });
    cleanups.push(async () => {
      await emu.close();
      redis.disconnect();
    });
    const stripe = stripeFor(emu);
    await assignAll(t.ledger);
    await ingestInto(t.ledger, NOW, fleet(20, 33).events, "d1");
    const settings: ReporterSettings = {
      eventName: EVENT_NAME,
      graceSeconds: 3600,
      concurrency: 4,
      timeoutMs: 5000,
      attemptsPerRun: 6,
      redisPrefix: `mm${randomUUID().slice(0, 8)}`,
    };
    const { logger, lines } = capturedLogger();
    const ledger = t.ledger;
    const report = () =>
      runReport({ ledger, stripe, redis, logger, settings, now: () => now.value });

    const s = await report();
    expect(s.fatal).toBe(
      `Stripe has no active meter with event_name "${EVENT_NAME}" (STRIPE_METER_EVENT_NAME): run simmeter stripe setup; rows stay pending until then`,
    );
    expect(s).toMatchObject({ planned: 0, calls: 0, failed: 0, stillPending: 0 });
    expect(emu.stats().meterEventCalls).toBe(0);
    expect(await outboxRows(t)).toEqual([]);
    expectOneStopMessage(lines, s.fatal as string);

    await ensureMeter(stripe, EVENT_NAME);
    const after = await report();
    expect(after).toMatchObject({ fatal: null, failed: 0, stillPending: 0 });
    expect(after.sent).toBe(after.planned);
    expect(normalise(emu.totalsByCustomerHour(EVENT_NAME))).toEqual(await counted(ledger));
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
  // the test's ledger (SQLite: a file) in place of the workspace's DATABASE_PATH
  const t = await openTestLedger({ file: true });
  const cli = (args: string[]) => w.cli(args, t.env);
  const seed = async (n: number, hour: number, bytes: number, assign: boolean) => {
    await ingestInto(t.ledger, Date.now(), sessionEvents(n, hour, bytes), `seed${n}`);
    if (assign)
      await assignSimVia(t.ledger, { sim: SIM, customer: "cus_cli", effectiveFrom: pastHour(48) });
  };
  const status = async () =>
    JSON.parse((await cli(["report", "--status", "--json"])).stdout) as {
      stopped: unknown[];
      pending: { rows: number };
    };
  return { ...w, cli, seed, status };
}

describe("simmeter report (CLI) without a usable meter", () => {
  it("before `stripe setup`: exits 1 naming STRIPE_METER_EVENT_NAME and `run simmeter stripe setup` on stderr, calls nothing; after setup exits 0 and sends once", async () => {
    const w = await cliWorkspace();
    await w.seed(1, pastHour(2), 7000, true);
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
    await w.seed(1, pastHour(3), 1000, true);
    expect((await w.cli(["report"])).status).toBe(0);
    await w.seed(2, pastHour(2), 2000, false);
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
