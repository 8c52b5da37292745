import { Redis } from "ioredis";
import type Stripe from "stripe";
import {
  type StripeEmulator,
  type StripeEmulatorOptions,
  startStripeEmulator,
} from "../../scripts/stripe-emulator.ts";
import type { Db } from "../../src/db/client.ts";
import type { IngestSettings, IngestSummary } from "../../src/ingest/ingest.ts";
import type { Ledger } from "../../src/ledger/port.ts";
import { createLogger } from "../../src/lib/logger.ts";
import { type ReporterSettings, runReport } from "../../src/reporting/reporter.ts";
import { createStripe } from "../../src/reporting/stripe.ts";
import { ensureMeter } from "../../src/reporting/stripe-setup.ts";
import { defaultSettings } from "./db.ts";
import { openTestLedger, type TestBackend, type TestLedger } from "./ledger.ts";
import { tempDir } from "./process.ts";

export const EVENT_NAME = "supersim_data_bytes";

export type ReportingRig = {
  /** a temp directory of the test's own, for copies and snapshots (close leaves it) */
  dir: string;
  /** the ledger's SQLite file (SQLite only: throws on PostgreSQL) */
  readonly dbPath: string;
  /** the SQLite connection behind `ledger` (SQLite only: throws on PostgreSQL) */
  readonly db: Db;
  /** the port on the backend SIMMETER_TEST_BACKEND names (what the reporter is given) */
  readonly ledger: Ledger;
  readonly backend: TestBackend;
  /** raw SQL on either backend (`?` placeholders, SQLite-shaped rows): TestLedger's `sql` */
  sql: TestLedger["sql"];
  /** what a spawned bin/simmeter.mjs needs to find the ledger (TestLedger's `env`) */
  readonly env: TestLedger["env"];
  emu: StripeEmulator;
  stripe: Stripe;
  redis: Redis;
  prefix: string;
  now: { value: number };
  settings: ReporterSettings;
  /**
   * One job of one delivery r<n> (source replay, receivedAt now). On SQLite it has been counted
   * when this returns (the adapter is synchronous), so callers there may skip the await.
   */
  ingest: (events: unknown[]) => Promise<IngestSummary>;
  report: (extra?: { sleep?: (ms: number) => Promise<void> }) => ReturnType<typeof runReport>;
  /** runs reports until nothing is pending (retries happen across runs, like the scheduler does) */
  reportUntilDone: (maxRuns?: number) => Promise<number>;
  close: () => Promise<void>;
};

/**
 * A real ledger (SQLite: a file; PostgreSQL: a database of its own, by SIMMETER_TEST_BACKEND),
 * a real Redis, the Stripe emulator and the real SDK, with one clock for all. `close` closes it.
 */
export async function reportingRig(o: {
  redisUrl: string;
  now: number;
  emulator?: StripeEmulatorOptions;
  timeoutMs?: number;
  ingest?: Partial<IngestSettings>;
}): Promise<ReportingRig> {
  const dir = tempDir();
  // SQLite: a file (dbPath: copies, snapshots, a spawned CLI). PostgreSQL: room for two reporters
  // at once (a test runs them in parallel), each with `concurrency` customers in flight.
  const t = await openTestLedger({ file: true, autoClose: false, poolMax: 8 });
  try {
    return await rigOn(t, dir, o);
  } catch (err) {
    await t.close();
    throw err;
  }
}

async function rigOn(
  t: TestLedger,
  dir: string,
  o: Parameters<typeof reportingRig>[0],
): Promise<ReportingRig> {
  const now = { value: o.now };
  const emu = await startStripeEmulator({
    acceptAnyCustomer: true,
    autoSubscribe: true,
    ...o.emulator,
    now: () => now.value,
  });
  const timeoutMs = o.timeoutMs ?? 5000;
  const stripe = createStripe({
    STRIPE_SECRET_KEY: emu.apiKey,
    STRIPE_API_BASE: emu.url,
    STRIPE_TIMEOUT_MS: timeoutMs,
  });
  await ensureMeter(stripe, EVENT_NAME);
  const redis = new Redis(o.redisUrl, { maxRetriesPerRequest: null });
  const prefix = `rep${Math.random().toString(36).slice(2, 8)}`;
  const settings: ReporterSettings = {
    eventName: EVENT_NAME,
    graceSeconds: 3600,
    concurrency: 4,
    timeoutMs,
    attemptsPerRun: 6,
    redisPrefix: prefix,
  };
  const ingestSettings: IngestSettings = { ...defaultSettings, ...o.ingest };
  const logger = createLogger("silent");
  const sqliteOnly = (what: string): never => {
    throw new Error(`reportingRig: ${what} is SQLite only (this run's ledger is ${t.backend})`);
  };
  let n = 0;
  const rig: ReportingRig = {
    dir,
    get dbPath() {
      return t.env.DATABASE_PATH ?? sqliteOnly("dbPath");
    },
    get db() {
      return t.sqlite ?? sqliteOnly("db");
    },
    get ledger() {
      return t.ledger;
    },
    backend: t.backend,
    sql: t.sql,
    get env() {
      return t.env;
    },
    emu,
    stripe,
    redis,
    prefix,
    now,
    settings,
    ingest: (events) => {
      n++;
      return t.ledger.ingestJob(
        { v: 1, deliveries: [{ id: `r${n}`, receivedAt: now.value, source: "replay", events }] },
        ingestSettings,
        () => now.value,
      );
    },
    report: (extra = {}) =>
      runReport({
        ledger: t.ledger,
        stripe,
        redis,
        logger,
        settings,
        now: () => now.value,
        ...extra,
      }),
    reportUntilDone: async (maxRuns = 20) => {
      for (let run = 1; run <= maxRuns; run++) {
        const s = await rig.report();
        if (s.fatal) throw new Error(s.fatal);
        if (s.stillPending === 0 && s.lockedCustomers === 0) return run;
      }
      throw new Error(`still pending after ${maxRuns} runs`);
    },
    close: async () => {
      await emu.close();
      redis.disconnect();
      await t.close();
    },
  };
  return rig;
}

/**
 * Counted usage per customer per hour (unix seconds), straight from SQLite and the mapping
 * (SQLite only; countedUsage reads it through the port on either backend).
 */
export function countedByCustomerHour(
  db: Db,
  resolve: (sim: string, hour: number) => string | null,
): Record<string, Record<string, number>> {
  const out = new Map<string, Map<number, number>>();
  const rows = db.$client.prepare("select sim_sid, hour, bytes from usage_hourly").all() as {
    sim_sid: string;
    hour: number;
    bytes: number;
  }[];
  for (const r of rows) {
    const c = resolve(r.sim_sid, r.hour);
    if (!c) continue;
    const m = out.get(c) ?? new Map<number, number>();
    m.set(r.hour / 1000, (m.get(r.hour / 1000) ?? 0) + r.bytes);
    out.set(c, m);
  }
  return normalise(out);
}

/**
 * Counted usage per customer per hour (unix seconds) of the hours [from, to), through the port
 * (ledger.customers.usageOwned: each usage row with its hour's customer), on either backend.
 */
export async function countedUsage(
  ledger: Ledger,
  from = 0,
  to = Date.parse("2100-01-01T00:00:00Z"),
): Promise<Record<string, Record<string, number>>> {
  const out = new Map<string, Map<number, number>>();
  for (const r of await ledger.customers.usageOwned(from, to)) {
    if (!r.customer) continue;
    const m = out.get(r.customer) ?? new Map<number, number>();
    m.set(r.hour / 1000, (m.get(r.hour / 1000) ?? 0) + r.bytes);
    out.set(r.customer, m);
  }
  return normalise(out);
}

/** Drops zero entries so two maps compare by what they bill. */
export function normalise(
  m: Map<string, Map<number, number>>,
): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const [c, hours] of [...m.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const h: Record<string, number> = {};
    for (const [hour, v] of [...hours.entries()].sort(([a], [b]) => a - b))
      if (v !== 0) h[new Date(hour * 1000).toISOString()] = v;
    if (Object.keys(h).length > 0) out[c] = h;
  }
  return out;
}
