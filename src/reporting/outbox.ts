import { and, asc, eq, gt, inArray, sql } from "drizzle-orm";
import { DAY_MS, hourStart } from "../accounting/buckets.ts";
import {
  type CustomerBilling,
  type HoldReason,
  periodOpenAt,
  STRIPE_BACKDATE_MS,
  type StampPolicy,
  stampFor,
} from "../billing/periods.ts";
import { loadBilling } from "../billing/subscriptions.ts";
import { type CustomerResolver, customerResolver } from "../customers/customers.ts";
import type { Db } from "../db/client.ts";
import {
  assignments,
  type MeterReport,
  meta,
  meterReports,
  reportDirtyHours,
  reportDirtySims,
  usageHourly,
} from "../db/schema.ts";
import { MAX_METER_VALUE, meterEventIdentifier, planHour } from "./plan.ts";

export type PlanSettings = {
  /** the account's invoice finalization grace, seconds (Stripe's default 3600) */
  graceSeconds: number;
  /** a previous period's draft is used only if it finalizes at least this long after planning */
  marginSeconds?: number;
};

export const DEFAULT_MARGIN_SECONDS = 600;

const policyOf = (s: PlanSettings): StampPolicy => ({
  graceMs: s.graceSeconds * 1000,
  marginMs: (s.marginSeconds ?? DEFAULT_MARGIN_SECONDS) * 1000,
});

/**
 * Usage rows planned per transaction (whole hours; at least one): bounds how long one planning
 * step holds the writer and the event loop (~20 ms on the benchmark machine).
 */
export const PLAN_CHUNK_ROWS = 2000;

export type PlanResult = {
  hours: number;
  rows: Pick<MeterReport, "identifier" | "customerId" | "hour" | "value" | "timestamp" | "late">[];
  /** customer-hours with a stopped row: wait for `report --retry-failed` */
  heldBack: { customerId: string; hour: number }[];
  /** usage not sent because no invoice would carry it (no subscription, several, stale period) */
  held: { customerId: string; hour: number; bytes: number; reason: HoldReason; detail: string }[];
  /** pending rows replaced because the invoice their stamp pointed at closed before any call */
  superseded: number;
  unmappedBytes: number;
  /** customer-hours left unplanned, with the reason (a total beyond exact integers) */
  problems: string[];
};

const getMeta = (db: Db, key: string): number =>
  db.select().from(meta).where(eq(meta.key, key)).get()?.value ?? 0;
const setMeta = (db: Db, key: string, value: number) =>
  db
    .insert(meta)
    .values({ key, value })
    .onConflictDoUpdate({ target: meta.key, set: { value } })
    .run();

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

/**
 * Step 1 of planning: turns what changed the customer history (new assignments, SIMs whose fleet
 * history changed) into dirty hours, and returns every dirty hour in time order.
 */
function collectDirtyHours(db: Db, dryRun: boolean): number[] {
  const assignMark = getMeta(db, "report_assignment_id");
  const resolver = customerResolver(db);
  const dirty = new Set<number>(
    db
      .select()
      .from(reportDirtyHours)
      .all()
      .map((r) => r.hour),
  );
  const newAssignments = db.select().from(assignments).where(gt(assignments.id, assignMark)).all();
  let maxAssign = assignMark;
  const moved = new Set<string>();
  for (const a of newAssignments) {
    maxAssign = Math.max(maxAssign, a.id);
    for (const simSid of resolver.simsFor(a)) moved.add(simSid);
  }
  const dirtySims = db
    .select()
    .from(reportDirtySims)
    .all()
    .map((r) => r.simSid);
  for (const s of dirtySims) moved.add(s);
  // Their hours must be re-planned; in chunks, as SQLite caps the parameters of one statement.
  const movedSims = [...moved];
  for (let i = 0; i < movedSims.length; i += 500) {
    for (const r of db
      .selectDistinct({ hour: usageHourly.hour })
      .from(usageHourly)
      .where(inArray(usageHourly.simSid, movedSims.slice(i, i + 500)))
      .all()) {
      dirty.add(r.hour);
    }
  }
  if (!dryRun) {
    for (const hour of dirty)
      db.insert(reportDirtyHours).values({ hour }).onConflictDoNothing().run();
    for (let i = 0; i < dirtySims.length; i += 500)
      db.delete(reportDirtySims)
        .where(inArray(reportDirtySims.simSid, dirtySims.slice(i, i + 500)))
        .run();
    setMeta(db, "report_assignment_id", maxAssign);
  }
  return [...dirty].sort((a, b) => a - b);
}

/**
 * One row, one request: a row's parameters are fixed when it is written. A pending row whose stamp
 * no longer reaches an open invoice (its draft finalized while the row waited) is superseded by a
 * new row with a new identifier, but only if no call can have let Stripe record it (every call so
 * far was refused outright, or none was made): otherwise Stripe may hold the event and a second
 * one could bill it twice. Returns the rows superseded.
 */
function supersedeClosed(
  db: Db,
  billing: ReadonlyMap<string, CustomerBilling>,
  now: number,
  policy: StampPolicy,
): number {
  let n = 0;
  for (const r of db
    .select()
    .from(meterReports)
    .where(and(eq(meterReports.state, "pending"), eq(meterReports.inDoubt, false)))
    .all()) {
    const b = billing.get(r.customerId);
    // Never looked up: nothing known yet. No (or several) items now: no invoice would carry it.
    if (!b || (b.state === "ok" && periodOpenAt(r.timestamp * 1000, now, b, policy))) continue;
    db.update(meterReports)
      .set({
        state: "superseded",
        lastError:
          b.state === "ok"
            ? `superseded: the invoice for ${new Date(r.timestamp * 1000).toISOString()} closed before it was sent`
            : `superseded: ${b.detail ?? "no subscription item on the meter"}`,
      })
      .where(
        and(
          eq(meterReports.identifier, r.identifier),
          eq(meterReports.state, "pending"),
          // A call may have started since the select: such a row is re-sent, never replaced.
          eq(meterReports.inDoubt, false),
        ),
      )
      .run();
    db.insert(reportDirtyHours).values({ hour: r.hour }).onConflictDoNothing().run();
    n++;
  }
  return n;
}

/** Step 2: the outbox rows for some dirty hours (one transaction per chunk of hours). */
function planHours(
  db: Db,
  resolver: CustomerResolver,
  hours: readonly number[],
  from: number,
  now: number,
  settings: PlanSettings,
  dryRun: boolean,
  result: PlanResult,
  rowBudget: number,
  billing: ReadonlyMap<string, CustomerBilling>,
): number {
  let rowsSeen = 0;
  let done = 0;
  const usageAt = db
    .select({ simSid: usageHourly.simSid, bytes: usageHourly.bytes })
    .from(usageHourly)
    .where(eq(usageHourly.hour, sql.placeholder("hour")))
    .prepare();
  const reportedAt = db
    .select({
      customerId: meterReports.customerId,
      state: meterReports.state,
      value: sql<number>`sum(${meterReports.value})`,
      seq: sql<number>`max(${meterReports.seq})`,
    })
    .from(meterReports)
    .where(eq(meterReports.hour, sql.placeholder("hour")))
    .groupBy(meterReports.customerId, meterReports.state)
    .prepare();
  for (let k = from; k < hours.length; k++) {
    const hour = hours[k] as number;
    if (done > 0 && rowsSeen >= rowBudget) break;
    done++;
    const counted = new Map<string, number>();
    for (const u of usageAt.all({ hour })) {
      rowsSeen++;
      const customer = resolver.resolve(u.simSid, hour);
      if (customer === null) result.unmappedBytes += u.bytes;
      else counted.set(customer, (counted.get(customer) ?? 0) + u.bytes);
    }
    const reported = new Map<string, number>();
    const nextSeq = new Map<string, number>();
    const held = new Set<string>();
    for (const r of reportedAt.all({ hour })) {
      nextSeq.set(r.customerId, Math.max(nextSeq.get(r.customerId) ?? 0, r.seq + 1));
      if (r.state === "failed") held.add(r.customerId);
      else if (r.state !== "superseded")
        reported.set(r.customerId, (reported.get(r.customerId) ?? 0) + r.value);
    }
    // A customer-hour beyond 2^53 - 1 bytes cannot be summed exactly here: hold it, loudly.
    for (const [customerId, v] of [...counted, ...reported]) {
      if (!Number.isSafeInteger(v) && !held.has(customerId)) {
        held.add(customerId);
        result.problems.push(
          `${customerId} ${new Date(hour).toISOString()}: more than ${Number.MAX_SAFE_INTEGER} bytes in one hour cannot be reported exactly; held`,
        );
      }
    }
    const plan = planHour(counted, reported, held);
    let waiting = false;
    for (const d of plan.deltas) {
      const stamp = stampFor(hour, now, billing.get(d.customerId), policyOf(settings));
      if (stamp.kind === "hold") {
        // Nothing is sent that no invoice would carry; the hour stays dirty until it can be.
        result.held.push({
          customerId: d.customerId,
          hour,
          bytes: d.value,
          reason: stamp.reason,
          detail: stamp.detail,
        });
        waiting = true;
        continue;
      }
      // Stripe takes at most 15 significant digits per value: larger differences go as parts.
      let left = d.value;
      let seq = nextSeq.get(d.customerId) ?? 0;
      while (left !== 0) {
        const part = Math.sign(left) * Math.min(Math.abs(left), MAX_METER_VALUE);
        const row = {
          identifier: meterEventIdentifier(d.customerId, hour, seq),
          customerId: d.customerId,
          hour,
          seq,
          value: part,
          timestamp: stamp.timestamp,
          late: stamp.late,
          state: "pending" as const,
          createdAt: now,
        };
        if (!dryRun) db.insert(meterReports).values(row).run();
        result.rows.push(row);
        left -= part;
        seq++;
      }
    }
    for (const c of plan.heldBack) result.heldBack.push({ customerId: c, hour });
    if (!dryRun && plan.heldBack.length === 0 && held.size === 0 && !waiting)
      db.delete(reportDirtyHours).where(eq(reportDirtyHours.hour, hour)).run();
  }
  return done;
}

/**
 * Writes the outbox rows that bring Stripe up to what is counted. Each step is one immediate,
 * durable transaction: the intent is on disk before any call, and two planners (service and CLI)
 * serialise on SQLite's write lock, so a difference is never planned twice. Dirty hours are
 * planned about PLAN_CHUNK_ROWS usage rows per transaction, and the generator yields between
 * chunks (planReportsYielding gives the event loop back there), so a large backlog never holds the
 * writer, or the event loop, for long. With dryRun nothing is written.
 */
function* planSteps(o: {
  db: Db;
  now: number;
  settings: PlanSettings;
  dryRun: boolean;
  chunkRows: number;
  billing: ReadonlyMap<string, CustomerBilling> | undefined;
}): Generator<void, PlanResult> {
  const { db, dryRun } = o;
  const tx = <T>(fn: () => T): T =>
    dryRun ? fn() : durably(db, () => db.transaction(fn, { behavior: "immediate" }));
  const billing = o.billing ?? loadBilling(db);
  const { hours, resolver, superseded } = tx(() => ({
    superseded: dryRun ? 0 : supersedeClosed(db, billing, o.now, policyOf(o.settings)),
    hours: collectDirtyHours(db, dryRun),
    resolver: customerResolver(db),
  }));
  const result: PlanResult = {
    hours: hours.length,
    rows: [],
    heldBack: [],
    held: [],
    superseded,
    unmappedBytes: 0,
    problems: [],
  };
  for (let i = 0; i < hours.length; ) {
    if (i > 0) yield;
    const from = i;
    i += tx(() =>
      planHours(db, resolver, hours, from, o.now, o.settings, dryRun, result, o.chunkRows, billing),
    );
  }
  return result;
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

const stepsOf = (o: PlanOptions) =>
  planSteps({
    db: o.db,
    now: o.now,
    settings: o.settings,
    dryRun: o.dryRun ?? false,
    chunkRows: o.chunkRows ?? PLAN_CHUNK_ROWS,
    billing: o.billing,
  });

/** Plans every dirty hour now (CLI, tests). */
export function planReports(o: PlanOptions): PlanResult {
  const steps = stepsOf(o);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/** Plans every dirty hour, giving the event loop back between chunks (the service). */
export async function planReportsYielding(o: PlanOptions): Promise<PlanResult> {
  const steps = stepsOf(o);
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
