import { join } from "node:path";
import { Redis } from "ioredis";
import type Stripe from "stripe";
import {
  type StripeEmulator,
  type StripeEmulatorOptions,
  startStripeEmulator,
} from "../../scripts/stripe-emulator.ts";
import { type Db, openDb } from "../../src/db/client.ts";
import { type IngestSettings, ingestDeliveries, prepareIngest } from "../../src/ingest/ingest.ts";
import type { Ledger } from "../../src/ledger/port.ts";
import { sqliteLedger } from "../../src/ledger/sqlite/index.ts";
import { createLogger } from "../../src/lib/logger.ts";
import { type ReporterSettings, runReport } from "../../src/reporting/reporter.ts";
import { createStripe } from "../../src/reporting/stripe.ts";
import { ensureMeter } from "../../src/reporting/stripe-setup.ts";
import { defaultSettings } from "./db.ts";
import { tempDir } from "./process.ts";

export const EVENT_NAME = "supersim_data_bytes";

export type ReportingRig = {
  dir: string;
  dbPath: string;
  db: Db;
  /** the SQLite adapter of the port over `db` (what the reporter is given) */
  ledger: Ledger;
  emu: StripeEmulator;
  stripe: Stripe;
  redis: Redis;
  prefix: string;
  now: { value: number };
  settings: ReporterSettings;
  ingest: (events: unknown[]) => void;
  report: (extra?: { sleep?: (ms: number) => Promise<void> }) => ReturnType<typeof runReport>;
  /** runs reports until nothing is pending (retries happen across runs, like the scheduler does) */
  reportUntilDone: (maxRuns?: number) => Promise<number>;
  close: () => Promise<void>;
};

/** A real SQLite file, a real Redis, the Stripe emulator and the real SDK, with one clock for all. */
export async function reportingRig(o: {
  redisUrl: string;
  now: number;
  emulator?: StripeEmulatorOptions;
  timeoutMs?: number;
  ingest?: Partial<IngestSettings>;
}): Promise<ReportingRig> {
  const dir = tempDir();
  const dbPath = join(dir, "simmeter.db");
  const db = openDb(dbPath);
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
  const ctx = {
    db,
    stmts: prepareIngest(db),
    settings: { ...defaultSettings, ...o.ingest },
    now: () => now.value,
  };
  const logger = createLogger("silent");
  const ledger = sqliteLedger(db);
  let n = 0;
  const rig: ReportingRig = {
    dir,
    dbPath,
    db,
    ledger,
    emu,
    stripe,
    redis,
    prefix,
    now,
    settings,
    ingest: (events) => {
      n++;
      ingestDeliveries(ctx, {
        v: 1,
        deliveries: [{ id: `r${n}`, receivedAt: now.value, source: "replay", events }],
      });
    },
    report: (extra = {}) =>
      runReport({ ledger, stripe, redis, logger, settings, now: () => now.value, ...extra }),
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
      db.$client.close();
    },
  };
  return rig;
}

/** Counted usage per customer per hour (unix seconds), straight from SQLite and the mapping. */
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
