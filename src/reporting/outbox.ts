import { and, asc, eq, gt, inArray, sql } from "drizzle-orm";
import { customerResolver } from "../customers/customers.ts";
import type { Db } from "../db/client.ts";
import {
  assignments,
  type MeterReport,
  meta,
  meterReports,
  reportDirtyHours,
  usageHourly,
} from "../db/schema.ts";
import { MAX_METER_VALUE, meterEventIdentifier, planHour, stampFor } from "./plan.ts";

export type PlanSettings = { graceSeconds: number };

export type PlanResult = {
  hours: number;
  rows: Pick<MeterReport, "identifier" | "customerId" | "hour" | "value" | "timestamp" | "late">[];
  heldBack: { customerId: string; hour: number }[];
  unmappedBytes: number;
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
 * Writes the outbox rows that bring Stripe up to what is counted, in one immediate transaction:
 * the intent is durable before any call, and two planners (service and CLI) serialise on SQLite's
 * write lock, so a difference is never planned twice. With dryRun nothing is written.
 */
export function planReports({
  db,
  now,
  settings,
  dryRun = false,
}: {
  db: Db;
  now: number;
  settings: PlanSettings;
  dryRun?: boolean;
}): PlanResult {
  const run = () => {
    const assignMark = getMeta(db, "report_assignment_id");
    const resolver = customerResolver(db);
    const dirty = new Set<number>(
      db
        .select()
        .from(reportDirtyHours)
        .all()
        .map((r) => r.hour),
    );
    const newAssignments = db
      .select()
      .from(assignments)
      .where(gt(assignments.id, assignMark))
      .all();
    let maxAssign = assignMark;
    const moved = new Set<string>();
    for (const a of newAssignments) {
      maxAssign = Math.max(maxAssign, a.id);
      for (const simSid of resolver.simsFor(a)) moved.add(simSid);
    }
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
    const result: PlanResult = { hours: dirty.size, rows: [], heldBack: [], unmappedBytes: 0 };
    for (const hour of [...dirty].sort((a, b) => a - b)) {
      const counted = new Map<string, number>();
      for (const u of usageAt.all({ hour })) {
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
        else reported.set(r.customerId, (reported.get(r.customerId) ?? 0) + r.value);
      }
      const plan = planHour(counted, reported, held);
      for (const d of plan.deltas) {
        const stamp = stampFor(hour, now, settings.graceSeconds);
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
      if (!dryRun) {
        if (plan.heldBack.length > 0)
          db.insert(reportDirtyHours).values({ hour }).onConflictDoNothing().run();
        else db.delete(reportDirtyHours).where(eq(reportDirtyHours.hour, hour)).run();
      }
    }
    if (!dryRun) {
      setMeta(db, "report_assignment_id", maxAssign);
    }
    return result;
  };
  return db.transaction(run, { behavior: "immediate" });
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

/** `timestamp`/`late`: where the event was stamped when sent (a row can turn late while pending). */
export function markSent(
  db: Db,
  identifier: string,
  now: number,
  timestamp: number,
  late: boolean,
): void {
  db.update(meterReports)
    .set({
      state: "sent",
      sentAt: now,
      timestamp,
      late: sql`${meterReports.late} or ${late ? 1 : 0}`,
      attempts: sql`${meterReports.attempts} + 1`,
      lastError: null,
    })
    .where(and(eq(meterReports.identifier, identifier), eq(meterReports.state, "pending")))
    .run();
}

export function markFailed(db: Db, identifier: string, reason: string): void {
  db.update(meterReports)
    .set({ state: "failed", lastError: reason, attempts: sql`${meterReports.attempts} + 1` })
    .where(eq(meterReports.identifier, identifier))
    .run();
}

export function recordAttempt(db: Db, identifier: string, error: string): void {
  db.update(meterReports)
    .set({ lastError: error, attempts: sql`${meterReports.attempts} + 1` })
    .where(eq(meterReports.identifier, identifier))
    .run();
}

/** Puts stopped rows back in line (after the operator fixed the cause) and re-checks their hours. */
export function retryFailed(db: Db): number {
  return db.transaction(() => {
    const rows = failedReports(db);
    for (const r of rows) {
      db.update(meterReports)
        .set({ state: "pending" })
        .where(eq(meterReports.identifier, r.identifier))
        .run();
      db.insert(reportDirtyHours).values({ hour: r.hour }).onConflictDoNothing().run();
    }
    return rows.length;
  });
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
