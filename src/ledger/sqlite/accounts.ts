import { and, eq, gte, inArray, lt, or, sql } from "drizzle-orm";
import { customerResolver } from "../../customers/customers.ts";
import type { Db } from "../../db/client.ts";
import {
  type MeterReport,
  meterReports,
  reportDirtyHours,
  type Sim,
  sims,
  usageHourly,
} from "../../db/schema.ts";
import { durably } from "../../reporting/outbox.ts";
import { observedRow, type StripeDifference } from "../../reporting/reconcile.ts";
import type { AssignmentTarget, OwnedUsage } from "../port.ts";

// What reconcile, invoice parity and statements read on SQLite: usage of a range of hours with
// each hour's customer, the outbox rows touching the range, the SIMs' directory rows; and the
// repair's observed rows.

/** SQLite's bound-parameter limit is 32,766; stay well inside it */
const IN_CHUNK = 500;

/**
 * The usage rows of [from, to), by hour then SIM, each with its hour's customer; one read
 * transaction (one snapshot while a worker writes), each SIM's hours resolved in one pass.
 */
export function usageOwnedSqlite(db: Db, from: number, to: number): OwnedUsage[] {
  return db.$client.transaction(() => {
    const rows = db
      .select()
      .from(usageHourly)
      .where(and(gte(usageHourly.hour, from), lt(usageHourly.hour, to)))
      .orderBy(usageHourly.hour, usageHourly.simSid)
      .all();
    const bySim = new Map<string, number[]>();
    rows.forEach((u, i) => {
      const list = bySim.get(u.simSid) ?? [];
      list.push(i);
      bySim.set(u.simSid, list);
    });
    const resolver = customerResolver(db);
    const out: OwnedUsage[] = rows.map((u) => ({ ...u, customer: null }));
    for (const [sim, idx] of bySim) {
      const owners = resolver.resolveHours(
        sim,
        idx.map((i) => (rows[i] as (typeof rows)[number]).hour),
      );
      idx.forEach((i, k) => {
        (out[i] as OwnedUsage).customer = owners[k] ?? null;
      });
    }
    return out;
  })();
}

/** usageOwnedSqlite and touchingSqlite of one range, from one snapshot */
export function accountsSqlite(
  db: Db,
  from: number,
  to: number,
): { usage: OwnedUsage[]; reports: MeterReport[] } {
  return db.$client.transaction(() => ({
    usage: usageOwnedSqlite(db, from, to),
    reports: touchingSqlite(db, from, to),
  }))();
}

export function coveredSqlite(db: Db, targets: readonly AssignmentTarget[]): string[][] {
  return db.$client.transaction(() => {
    const resolver = customerResolver(db);
    return targets.map((t) => resolver.simsFor(t));
  })();
}

export function simsSqlite(db: Db, simSids: readonly string[]): Map<string, Sim> {
  const out = new Map<string, Sim>();
  const unique = [...new Set(simSids)];
  for (let i = 0; i < unique.length; i += IN_CHUNK) {
    for (const s of db
      .select()
      .from(sims)
      .where(inArray(sims.simSid, unique.slice(i, i + IN_CHUNK)))
      .all())
      out.set(s.simSid, s);
  }
  return out;
}

export function touchingSqlite(db: Db, from: number, to: number): MeterReport[] {
  return db
    .select()
    .from(meterReports)
    .where(
      or(
        and(gte(meterReports.hour, from), lt(meterReports.hour, to)),
        and(gte(meterReports.timestamp, from / 1000), lt(meterReports.timestamp, to / 1000)),
      ),
    )
    .orderBy(sql`"meter_reports"."rowid"`)
    .all();
}

export function recordObservedSqlite(
  db: Db,
  diffs: readonly StripeDifference[],
  now: number,
  comparedAt: number,
): MeterReport[] {
  return durably(db, () =>
    db.transaction(
      () => {
        const written: MeterReport[] = [];
        // Rows planned or sent for the hour after the comparison began make it stale: skip it
        // (the next repair sees it settled), or the same difference would be corrected twice.
        const touchedSince = db.$client.prepare<
          [string, number, number, number, number],
          { n: number }
        >(
          `select count(*) as n from meter_reports
           where customer_id = ? and timestamp >= ? and timestamp < ?
             and (created_at > ? or coalesce(sent_at, 0) > ? or state in ('pending', 'failed'))`,
        );
        const since = Math.min(now, comparedAt);
        for (const d of diffs) {
          if (
            (touchedSince.get(d.customer, d.hour / 1000, d.hour / 1000 + 3600, since, since)?.n ??
              0) > 0
          )
            continue;
          const seq =
            (db
              .select({ seq: sql<number | null>`max(${meterReports.seq})` })
              .from(meterReports)
              .where(and(eq(meterReports.customerId, d.customer), eq(meterReports.hour, d.bucket)))
              .get()?.seq ?? -1) + 1;
          const row = db
            .insert(meterReports)
            .values(observedRow(d, seq, now))
            .returning()
            .get();
          db.insert(reportDirtyHours).values({ hour: d.bucket }).onConflictDoNothing().run();
          written.push(row);
        }
        return written;
      },
      { behavior: "immediate" },
    ),
  );
}
