import { and, asc, eq, sql } from "drizzle-orm";
import { DAY_MS, hourStart } from "../accounting/buckets.ts";
import { type CustomerBilling, STRIPE_BACKDATE_MS } from "../billing/periods.ts";
import { loadBilling } from "../billing/subscriptions.ts";
import { sqliteDirectory } from "../customers/customers.ts";
import { sqliteFleets } from "../customers/fleets.ts";
import type { Db } from "../db/client.ts";
import { type MeterReport, meterReports, reportDirtyHours } from "../db/schema.ts";
import { runSync } from "../ledger/steps.ts";
import {
  PLAN_CHUNK_ROWS,
  type PlanInput,
  type PlanOps,
  type PlanResult,
  type PlanSettings,
  planTransactions,
} from "./plan-steps.ts";

export {
  DEFAULT_MARGIN_SECONDS,
  PLAN_CHUNK_ROWS,
  type PlanResult,
  type PlanSettings,
} from "./plan-steps.ts";

/**
 * Runs a reporting transaction with synchronous=FULL: an outbox row must be on disk before the
 * Stripe call it describes, or a power loss could forget a row Stripe accepted and re-plan its
 * identifier with another value (docs/adr/0002-sqlite-durability.md). Ingest keeps NORMAL; the
 * toggle is safe because better-sqlite3 runs each transaction synchronously on this thread.
 */
export function durably<T>(db: Db, fn: () => T): T {
  const c = db.$client;
  if (c.readonly || !c.open) return fn();
  c.pragma("synchronous = FULL");
  try {
    return fn();
  } finally {
    c.pragma("synchronous = NORMAL");
  }
}

/** an array as one SQLite parameter (json_each): no cap on the number of values */
const json = (values: readonly unknown[]) => JSON.stringify(values);

/**
 * The SQLite side of planning (src/reporting/plan-steps.ts): raw prepared statements, arrays
 * through json_each. fleetsNear and fleetsOf answer from the ledger lazily (per SIM-hour lookups):
 * every op runs inside the step's synchronous transaction, so nothing can change underneath.
 */
export function sqlitePlanOps(db: Db): PlanOps {
  const c = db.$client;
  const st = {
    meta: c.prepare<[string], { value: number }>("select value from meta where key = ?"),
    setMeta: c.prepare<[string, number]>(
      "insert into meta (key, value) values (?, ?) on conflict (key) do update set value = excluded.value",
    ),
    pending: c.prepare<
      [],
      { identifier: string; customerId: string; hour: number; timestamp: number }
    >(
      `select identifier, customer_id as customerId, hour, timestamp from meter_reports
        where state = 'pending' and in_doubt = 0`,
    ),
    supersede: c.prepare<[string, string]>(
      // A call may have started since the select: such a row is re-sent, never replaced.
      `update meter_reports set state = 'superseded', last_error = ?
        where identifier = ? and state = 'pending' and in_doubt = 0`,
    ),
    dirtyHours: c.prepare<[], number>("select hour from report_dirty_hours").pluck(),
    dirtySims: c.prepare<[], string>("select sim_sid from report_dirty_sims").pluck(),
    simsInFleets: c.prepare<[string], { fleetSid: string; simSid: string }>(
      `select distinct f.fleet_sid as fleetSid, f.sim_sid as simSid
         from json_each(?) j join sim_fleet_hours f on f.fleet_sid = j.value`,
    ),
    hoursOfSims: c
      .prepare<[string], number>(
        `select distinct u.hour from json_each(?) j join usage_hourly u on u.sim_sid = j.value`,
      )
      .pluck(),
    markDirty: c.prepare<[string]>(
      "insert into report_dirty_hours (hour) select value from json_each(?) where true on conflict do nothing",
    ),
    clearDirtySims: c.prepare<[string]>(
      "delete from report_dirty_sims where sim_sid in (select value from json_each(?))",
    ),
    // Per hour (the (hour, sim_sid) key gives each hour's rows in order, with no sort).
    usageCount: c
      .prepare<[number], number>("select count(*) from usage_hourly where hour = ?")
      .pluck(),
    usageAt: c.prepare<[number], { hour: number; simSid: string; bytes: number }>(
      "select hour, sim_sid as simSid, bytes from usage_hourly where hour = ? order by sim_sid",
    ),
    reportedAt: c.prepare<
      [number],
      { hour: number; customerId: string; state: MeterReport["state"]; value: number; seq: number }
    >(
      `select hour, customer_id as customerId, state, sum(value) as value, max(seq) as seq
         from meter_reports where hour = ?
        group by customer_id, state
        order by customer_id, state`,
    ),
    insertReport: c.prepare<[string, string, number, number, number, number, number, number]>(
      `insert into meter_reports (identifier, customer_id, hour, seq, value, timestamp, late, state, created_at)
       values (?, ?, ?, ?, ?, ?, ?, 'pending', ?)`,
    ),
    clearDirtyHours: c.prepare<[string]>(
      "delete from report_dirty_hours where hour in (select value from json_each(?))",
    ),
  };
  return {
    meta: (key) => st.meta.get(key)?.value ?? 0,
    setMeta: (key, value) => {
      st.setMeta.run(key, value);
    },
    pendingNotInDoubt: () => st.pending.all(),
    supersede: (rows) =>
      rows
        .filter((r) => st.supersede.run(r.reason, r.identifier).changes > 0)
        .map((r) => r.identifier),
    dirtyHours: () => st.dirtyHours.all(),
    dirtySims: () => st.dirtySims.all(),
    directory: () => sqliteDirectory(db),
    simsInFleets: (fleets) => {
      const out = new Map<string, string[]>(fleets.map((f) => [f, []]));
      for (const r of st.simsInFleets.all(json(fleets))) out.get(r.fleetSid)?.push(r.simSid);
      return out;
    },
    hoursOfSims: (sims) => st.hoursOfSims.all(json(sims)),
    markDirty: (hours) => {
      st.markDirty.run(json(hours));
    },
    clearDirtySims: (sims) => {
      st.clearDirtySims.run(json(sims));
    },
    usageCounts: (hours) => new Map(hours.map((h) => [h, st.usageCount.get(h) ?? 0])),
    usageOfHours: (hours) => hours.flatMap((h) => st.usageAt.all(h)),
    fleetsNear: (pairs) => sqliteFleets(db, new Set(pairs.map((p) => p.simSid))),
    fleetsOf: (sims) => sqliteFleets(db, new Set(sims)),
    reportedOfHours: (hours) => hours.flatMap((h) => st.reportedAt.all(h)),
    insertReports: (rows) => {
      for (const r of rows)
        st.insertReport.run(
          r.identifier,
          r.customerId,
          r.hour,
          r.seq,
          r.value,
          r.timestamp,
          r.late ? 1 : 0,
          r.createdAt,
        );
    },
    clearDirtyHours: (hours) => {
      st.clearDirtyHours.run(json(hours));
    },
  };
}

/**
 * Writes the outbox rows that bring Stripe up to what is counted (src/reporting/plan-steps.ts).
 * Each step is one immediate, durable transaction: the intent is on disk before any call, and two
 * planners (service and CLI) serialise on SQLite's write lock, so a difference is never planned
 * twice. Dirty hours are planned about PLAN_CHUNK_ROWS usage rows per transaction, and the
 * generator yields between chunks (planReportsYielding gives the event loop back there), so a
 * large backlog never holds the writer, or the event loop, for long. With dryRun nothing is
 * written (and nothing runs in a transaction).
 */
function* planSteps(o: PlanOptions): Generator<void, PlanResult> {
  const { db } = o;
  const dryRun = o.dryRun ?? false;
  const input: PlanInput = {
    now: o.now,
    settings: o.settings,
    dryRun,
    chunkRows: o.chunkRows ?? PLAN_CHUNK_ROWS,
    billing: o.billing ?? loadBilling(db),
  };
  const ops = sqlitePlanOps(db);
  const tx = <T>(fn: () => T): T =>
    dryRun ? fn() : durably(db, () => db.transaction(fn, { behavior: "immediate" }));
  const run = planTransactions(input);
  let r = run.next();
  let first = true;
  while (!r.done) {
    if (!first) yield;
    first = false;
    const step = r.value;
    r = run.next(tx(() => runSync(step(), ops)));
  }
  return r.value;
}

type PlanOptions = {
  db: Db;
  now: number;
  settings: PlanSettings;
  dryRun?: boolean;
  chunkRows?: number;
  /** billing state to stamp by instead of the stored one (a dry run with fresh lookups) */
  billing?: ReadonlyMap<string, CustomerBilling>;
};

/** Plans every dirty hour now (CLI, tests). */
export function planReports(o: PlanOptions): PlanResult {
  const steps = planSteps(o);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/** Plans every dirty hour, giving the event loop back between chunks (the service). */
export async function planReportsYielding(o: PlanOptions): Promise<PlanResult> {
  const steps = planSteps(o);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/**
 * Folds old outbox rows: for an hour older than Stripe's 35-day window, the sent rows of one
 * customer (never late, so all stamped inside the hour) become one row carrying their sum and the
 * highest seq. The reported total, the next identifier and every per-hour or per-timestamp sum
 * stay the same; the rows the planner reads shrink ~12x in realtime mode. Returns rows removed.
 */
export function compactOutbox(db: Db, now: number, maxGroups = 5000): number {
  const before = hourStart(now - STRIPE_BACKDATE_MS - DAY_MS);
  return durably(db, () =>
    db.transaction(
      () => {
        const groups = db.$client
          .prepare<[number, number], { customerId: string; hour: number; n: number }>(
            `select customer_id as customerId, hour, count(*) as n from meter_reports
             where hour < ? group by customer_id, hour
             having count(*) > 1 and sum(state != 'sent' or kind != 'usage' or late) = 0
             limit ?`,
          )
          .all(before, maxGroups);
        let removed = 0;
        const fold = db.$client.prepare<[string, number]>(
          `update meter_reports set
             value = (select sum(value) from meter_reports m where m.customer_id = meter_reports.customer_id and m.hour = meter_reports.hour),
             attempts = (select sum(attempts) from meter_reports m where m.customer_id = meter_reports.customer_id and m.hour = meter_reports.hour),
             timestamp = (select min(timestamp) from meter_reports m where m.customer_id = meter_reports.customer_id and m.hour = meter_reports.hour)
           where customer_id = ? and hour = ? and seq = (select max(seq) from meter_reports m where m.customer_id = meter_reports.customer_id and m.hour = meter_reports.hour)`,
        );
        const drop = db.$client.prepare<[string, number, string, number]>(
          "delete from meter_reports where customer_id = ? and hour = ? and seq < (select max(seq) from meter_reports where customer_id = ? and hour = ?)",
        );
        for (const g of groups) {
          fold.run(g.customerId, g.hour);
          removed += drop.run(g.customerId, g.hour, g.customerId, g.hour).changes;
        }
        return removed;
      },
      { behavior: "immediate" },
    ),
  );
}

export function pendingReports(db: Db): MeterReport[] {
  return db
    .select()
    .from(meterReports)
    .where(eq(meterReports.state, "pending"))
    .orderBy(asc(meterReports.customerId), asc(meterReports.hour), asc(meterReports.seq))
    .all();
}

export function failedReports(db: Db): MeterReport[] {
  return db
    .select()
    .from(meterReports)
    .where(eq(meterReports.state, "failed"))
    .orderBy(asc(meterReports.customerId), asc(meterReports.hour))
    .all();
}

export function isPending(db: Db, identifier: string): boolean {
  return (
    db
      .select({ state: meterReports.state })
      .from(meterReports)
      .where(eq(meterReports.identifier, identifier))
      .get()?.state === "pending"
  );
}

export function markSent(db: Db, identifier: string, now: number): void {
  durably(db, () =>
    db
      .update(meterReports)
      .set({
        state: "sent",
        sentAt: now,
        attempts: sql`${meterReports.attempts} + 1`,
        lastError: null,
      })
      .where(and(eq(meterReports.identifier, identifier), eq(meterReports.state, "pending")))
      .run(),
  );
}

/**
 * Committed durably just before a call: if the process dies during it, the row stays in doubt (and
 * is re-sent as it is, never superseded). `inDoubt` false puts back a row whose call was refused
 * outright (a 429), so it may still be superseded.
 */
export function setInDoubt(db: Db, identifier: string, inDoubt: boolean): void {
  durably(db, () =>
    db
      .update(meterReports)
      .set(inDoubt ? { inDoubt } : { inDoubt, firstCallAt: null })
      .where(eq(meterReports.identifier, identifier))
      .run(),
  );
}

/**
 * Stripe dedupes identifiers for at least 24 hours, not longer. A row still in doubt that long
 * after its first uncertain call is counted as sent and never called again: re-sending could
 * record it twice. If Stripe does not hold it, `simmeter reconcile --repair` bills the difference.
 */
export const UNCONFIRMED_AFTER_MS = 23 * 3_600_000;

export function markUnconfirmed(db: Db, identifier: string, now: number): void {
  durably(db, () =>
    db
      .update(meterReports)
      .set({
        state: "sent",
        sentAt: now,
        lastError:
          "not confirmed by Stripe within 23 h of its first call: counted as sent so it can never be billed twice; simmeter reconcile --repair bills it if Stripe does not hold it",
      })
      .where(and(eq(meterReports.identifier, identifier), eq(meterReports.state, "pending")))
      .run(),
  );
}

/**
 * Marks a row in doubt just before its call, in one statement that also checks it is still
 * pending: a planner in another process may have superseded it since it was read. Returns false
 * when the row must not be sent.
 */
export function claimForCall(db: Db, identifier: string, now: number): boolean {
  return durably(
    db,
    () =>
      db
        .update(meterReports)
        .set({ inDoubt: true, firstCallAt: sql`coalesce(${meterReports.firstCallAt}, ${now})` })
        .where(and(eq(meterReports.identifier, identifier), eq(meterReports.state, "pending")))
        .run().changes > 0,
  );
}

export function markFailed(db: Db, identifier: string, reason: string): void {
  durably(db, () =>
    db
      .update(meterReports)
      .set({ state: "failed", lastError: reason, attempts: sql`${meterReports.attempts} + 1` })
      .where(eq(meterReports.identifier, identifier))
      .run(),
  );
}

/**
 * The attempt count is part of the next call's Idempotency-Key: it must be on disk before that
 * call, or a restart could reuse a key with other parameters.
 */
export function recordAttempt(db: Db, identifier: string, error: string): void {
  durably(db, () =>
    db
      .update(meterReports)
      .set({ lastError: error, attempts: sql`${meterReports.attempts} + 1` })
      .where(eq(meterReports.identifier, identifier))
      .run(),
  );
}

/** Puts stopped rows back in line (after the operator fixed the cause) and re-checks their hours. */
export function retryFailed(db: Db): number {
  // IMMEDIATE: it reads the stopped rows and then writes (see previewMoves on SQLITE_BUSY).
  return db.transaction(
    () => {
      const rows = failedReports(db);
      for (const r of rows) {
        db.update(meterReports)
          .set({ state: "pending" })
          .where(eq(meterReports.identifier, r.identifier))
          .run();
        db.insert(reportDirtyHours).values({ hour: r.hour }).onConflictDoNothing().run();
      }
      return rows.length;
    },
    { behavior: "immediate" },
  );
}

export function reportStatus(db: Db) {
  return db
    .select({
      state: meterReports.state,
      rows: sql<number>`count(*)`,
      value: sql<number>`sum(${meterReports.value})`,
      late: sql<number>`sum(${meterReports.late})`,
    })
    .from(meterReports)
    .groupBy(meterReports.state)
    .all();
}
