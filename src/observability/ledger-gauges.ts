import { performance } from "node:perf_hooks";
import { Counter, Gauge, type Registry } from "prom-client";
import { customerResolver } from "../customers/customers.ts";
import type { Db } from "../db/client.ts";
import type { Logger } from "../lib/logger.ts";

// Gauges read from the SQLite ledger when /metrics is scraped, so they are right whoever wrote the
// rows (the worker, `simmeter report`, `reconcile --repair`, `quarantine requeue`). Register them
// once per database, in the process (thread) that runs the worker role: there SQLite work never
// delays a webhook ack, and one exposition carries each family once.
//
// A scrape every few seconds must not load the worker: each reading is cached for minIntervalMs
// (15 s by default), and a reading that took long waits at least BUSY_FACTOR times its own
// duration before it runs again (so no reading takes more than ~1% of the thread's time, however
// large the ledger grows; the value shown is then that much older). An SQLite error keeps the last
// value, counts simmeter_ledger_read_errors_total and is logged at most once a minute.

export type LedgerGaugeOptions = {
  /** epoch ms; the ages and the cache use it */
  now?: () => number;
  /** how long a reading is reused before the ledger is read again (default 15 s) */
  minIntervalMs?: number;
  /** where a failing reading is reported (at most once a minute); silent without one */
  logger?: Pick<Logger, "warn">;
  /** longest a scrape waits for the unmapped-bytes pass before showing the last total (default 500 ms) */
  scrapeWaitMs?: number;
  /** longest one slice of the unmapped-bytes pass holds the thread (default 10 ms) */
  sliceMs?: number;
};

export const DEFAULT_MIN_INTERVAL_MS = 15_000;
/** a reading that took t ms runs again at the earliest BUSY_FACTOR × t later */
export const BUSY_FACTOR = 100;
const LOG_EVERY_MS = 60_000;
/**
 * Below the 2 s within which `simmeter start`'s worker thread must answer the host for /metrics
 * (src/runtime/worker-host.ts), with room for the rest of the collection.
 */
export const SCRAPE_WAIT_MS = 500;
export const SLICE_MS = 10;
/** hours of one SIM resolved in one step of a slice */
export const HOURS_PER_STEP = 500;
const SIMS_PER_RESOLVER = 200;

/** The outbox states that hold bytes Stripe has not accepted (see src/reporting/outbox.ts). */
const UNREPORTED_STATES = ["pending", "failed"] as const;

/**
 * What the gauges read from a ledger. SQLite answers synchronously (sqliteGaugeReads); PostgreSQL
 * with Promises (src/ledger/pg/gauges.ts).
 */
export type LedgerGaugeReads = {
  /** the sum of usage rows' values in state pending and failed */
  unreported(): MaybePromise<{ state: string; bytes: number }[]>;
  /** created_at of the oldest pending row, or null */
  oldestPendingAt(): MaybePromise<number | null>;
  quarantineRows(): MaybePromise<number>;
  /** the bytes unmappedUsage() would list, computed without holding the process for long */
  unmappedBytes(o: { sliceMs: number }): Promise<{ bytes: number; workMs: number }>;
};
type MaybePromise<T> = T | Promise<T>;

/** The gauges' reads on the SQLite ledger: prepared statements on the worker's connection. */
export function sqliteGaugeReads(db: Db): LedgerGaugeReads {
  const c = db.$client;
  return {
    unreported: () =>
      c
        .prepare<[], { state: string; bytes: number }>(
          `select state, coalesce(sum(value), 0) as bytes from meter_reports
           where kind = 'usage' and state in ('pending', 'failed') group by state`,
        )
        .all(),
    oldestPendingAt: () =>
      c
        .prepare<[], { t: number | null }>(
          "select min(created_at) as t from meter_reports where state = 'pending'",
        )
        .get()?.t ?? null,
    quarantineRows: () =>
      c.prepare<[], { n: number }>("select count(*) as n from quarantine").get()?.n ?? 0,
    unmappedBytes: (o) => unmappedBytesInSlices(db, o),
  };
}

export function registerLedgerGauges(
  registry: Registry,
  ledger: Db | LedgerGaugeReads,
  opts: LedgerGaugeOptions = {},
): void {
  const reads = "unmappedBytes" in ledger ? ledger : sqliteGaugeReads(ledger);
  const now = opts.now ?? Date.now;
  const minIntervalMs = opts.minIntervalMs ?? DEFAULT_MIN_INTERVAL_MS;
  const errors = new Counter({
    name: "simmeter_ledger_read_errors_total",
    help: "Failed reads of the SQLite ledger behind the ledger metrics, by metric (it keeps its last value meanwhile)",
    labelNames: ["metric"] as const,
    registers: [registry],
  });
  let lastLogAt = Number.NEGATIVE_INFINITY;
  const failed = (metric: string, err: unknown) => {
    errors.inc({ metric });
    const t = now();
    if (t - lastLogAt < LOG_EVERY_MS) return;
    lastLogAt = t;
    opts.logger?.warn(
      { metric, err: (err as Error).message },
      "could not read the ledger for a metric; it keeps its last value",
    );
  };

  /**
   * `read` at most every minIntervalMs (or BUSY_FACTOR × its duration); the last good value
   * otherwise. Concurrent scrapes share one read.
   */
  function cached<T>(metric: string, initial: T, read: () => MaybePromise<T>): () => Promise<T> {
    let value = initial;
    let nextAt = Number.NEGATIVE_INFINITY;
    let reading: Promise<T> | null = null;
    return () => {
      const t = now();
      if (t < nextAt) return Promise.resolve(value);
      reading ??= (async () => {
        const started = performance.now();
        try {
          value = await read();
        } catch (err) {
          failed(metric, err);
        }
        nextAt = t + Math.max(minIntervalMs, BUSY_FACTOR * (performance.now() - started));
        return value;
      })().finally(() => {
        // after the assignment above, even when `read` threw synchronously
        reading = null;
      });
      return reading;
    };
  }

  for (const metric of [
    "simmeter_unreported_bytes",
    "simmeter_outbox_oldest_pending_age_seconds",
    "simmeter_quarantine_rows",
    "simmeter_unmapped_bytes",
  ])
    errors.inc({ metric }, 0);
  const unreported = cached(
    "simmeter_unreported_bytes",
    new Map<string, number>(UNREPORTED_STATES.map((s) => [s, 0])),
    async () => {
      const rows = await reads.unreported();
      const out = new Map<string, number>(UNREPORTED_STATES.map((s) => [s, 0]));
      for (const r of rows) out.set(r.state, r.bytes);
      return out;
    },
  );
  new Gauge({
    name: "simmeter_unreported_bytes",
    help: "Counted bytes written to the outbox but not accepted by Stripe, by state: pending (to be sent, or being retried) and failed (stopped by a permanent error: simmeter report --status). Net of corrections (negative rows). Usage not planned yet is not included: it waits at most one report interval, unless it is held (simmeter_unbilled_bytes) or unmapped (simmeter_unmapped_bytes)",
    labelNames: ["state"] as const,
    registers: [registry],
    async collect() {
      for (const [state, bytes] of await unreported()) this.set({ state }, bytes);
    },
  });

  const oldestPending = cached<number | null>(
    "simmeter_outbox_oldest_pending_age_seconds",
    null,
    () => reads.oldestPendingAt(),
  );
  new Gauge({
    name: "simmeter_outbox_oldest_pending_age_seconds",
    help: "Age of the oldest pending outbox row (planned, not yet accepted by Stripe); 0 when none. Rows normally leave within a report interval; an old one means Stripe keeps refusing or timing out (simmeter report --status)",
    registers: [registry],
    async collect() {
      const t = await oldestPending();
      this.set(t === null ? 0 : Math.max(0, (now() - t) / 1000));
    },
  });

  const quarantineRows = cached("simmeter_quarantine_rows", 0, () => reads.quarantineRows());
  new Gauge({
    name: "simmeter_quarantine_rows",
    help: "Rows in the quarantine table: authenticated events that could not be counted, kept with the reason (simmeter quarantine). Rows stay after a requeue, so growth is what to watch",
    registers: [registry],
    async collect() {
      this.set(await quarantineRows());
    },
  });

  // Unmapped bytes need every SIM-hour with usage resolved to its customer, as the reporter does
  // (so every byte is either billed or counted here). On a large ledger that is seconds of work:
  // 1,000 SIMs x 40 days with a fleet observation every hour took ~3.3 s here, and unmappedUsage()
  // (src/customers/customers.ts) 11 s in one block, as it loads all usage and every SIM's history
  // at once. So the pass runs in slices of about SLICE_MS that yield to the event loop (ingest jobs
  // and lock renewals go on), a scrape waits for it at most scrapeWaitMs (then shows the last
  // total), and BUSY_FACTOR spaces passes out (~6 min apart at that size).
  let unmappedValue = 0;
  let unmappedNextAt = Number.NEGATIVE_INFINITY;
  let pass: Promise<void> | null = null;
  const sliceMs = opts.sliceMs ?? SLICE_MS;
  const startPass = (): Promise<void> => {
    pass ??= reads
      .unmappedBytes({ sliceMs })
      .then(
        (r) => {
          unmappedValue = r.bytes;
          unmappedNextAt = now() + Math.max(minIntervalMs, BUSY_FACTOR * r.workMs);
        },
        (err: unknown) => {
          failed("simmeter_unmapped_bytes", err);
          unmappedNextAt = now() + minIntervalMs;
        },
      )
      .finally(() => {
        pass = null;
      });
    return pass;
  };
  const scrapeWaitMs = opts.scrapeWaitMs ?? SCRAPE_WAIT_MS;
  new Gauge({
    name: "simmeter_unmapped_bytes",
    help: "Counted bytes that no customer assignment covers: not billed until a mapping covers them (simmeter usage --unmapped, simmeter customers assign). Recomputed in the background at most every 15 s (longer on a large ledger)",
    registers: [registry],
    async collect() {
      if (now() >= unmappedNextAt) {
        const running = startPass();
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          running,
          new Promise<void>((resolve) => {
            timer = setTimeout(resolve, scrapeWaitMs);
          }),
        ]);
        clearTimeout(timer);
      }
      this.set(unmappedValue);
    },
  });
}

/**
 * The bytes of unmappedUsage(db) summed, computed SIM by SIM with the same resolver
 * (customerResolver), in slices of about sliceMs that give the event loop back between them. Usage
 * ingested during the pass may or may not be included. workMs: the time spent in the slices.
 */
export async function unmappedBytesInSlices(
  db: Db,
  o: { sliceMs?: number; hoursPerStep?: number; simsPerResolver?: number } = {},
): Promise<{ bytes: number; workMs: number }> {
  const sliceMs = o.sliceMs ?? SLICE_MS;
  const hoursPerStep = o.hoursPerStep ?? HOURS_PER_STEP;
  const simsPerResolver = o.simsPerResolver ?? SIMS_PER_RESOLVER;
  const c = db.$client;
  // The resolver caches every SIM's history it reads (a row per observed hour): rebuilt every
  // simsPerResolver SIMs, so a pass holds a few hundred SIMs' histories, not the whole fleet's.
  let resolver = customerResolver(db);
  let sims = 0;
  // The next SIM with usage after the last one (an index seek each: no scan of the whole table).
  const nextSim = c
    .prepare<[string], string | null>("select min(sim_sid) from usage_hourly where sim_sid > ?")
    .pluck();
  const usageOf = c.prepare<[string], { hour: number; bytes: number }>(
    "select hour, bytes from usage_hourly where sim_sid = ? and bytes != 0 order by hour",
  );
  let bytes = 0;
  let workMs = 0;
  let last = "";
  // The SIM being resolved: its hours are resolved hoursPerStep at a time, so a SIM with a long
  // history cannot hold a slice long either (each hour resolves on its own, from cached history).
  let current: { sim: string; rows: { hour: number; bytes: number }[]; at: number } | null = null;
  for (;;) {
    const started = performance.now();
    let done = false;
    do {
      if (!current) {
        const sim = nextSim.get(last);
        if (sim === null || sim === undefined) {
          done = true;
          break;
        }
        last = sim;
        if (++sims % simsPerResolver === 0) resolver = customerResolver(db);
        current = { sim, rows: usageOf.all(sim), at: 0 };
      }
      const part = current.rows.slice(current.at, current.at + hoursPerStep);
      const customers = resolver.resolveHours(
        current.sim,
        part.map((r) => r.hour),
      );
      part.forEach((r, i) => {
        if (customers[i] === null) bytes += r.bytes;
      });
      current.at += part.length;
      if (current.at >= current.rows.length) current = null;
    } while (performance.now() - started < sliceMs);
    workMs += performance.now() - started;
    if (done) return { bytes, workMs };
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}
