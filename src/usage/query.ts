import { and, asc, desc, gte, lt, type SQL, sql } from "drizzle-orm";
import { DAY_MS } from "../accounting/buckets.ts";
import type { Db } from "../db/client.ts";
import { anomalies, eventCounts, quarantine, usageHourly } from "../db/schema.ts";
import { parseUtcTime } from "../lib/time.ts";

export type Granularity = "hour" | "day" | "month" | "total";

export type UsageQuery = {
  sims?: string[];
  from?: number;
  to?: number;
  granularity: Granularity;
  /** keyset pagination: rows after this (sim, period) */
  after?: { simSid: string; period: string };
  limit?: number;
};

export type UsageRow = { simSid: string; period: string; bytes: number };

/** --from/--to values: UTC dates or times. */
export const parseTime = parseUtcTime;

function periodExpr(g: Granularity): SQL<string> {
  switch (g) {
    case "hour":
      return sql<string>`strftime('%Y-%m-%dT%H:00:00Z', ${usageHourly.hour} / 1000, 'unixepoch')`;
    case "day":
      return sql<string>`strftime('%Y-%m-%d', ${usageHourly.hour} / 1000, 'unixepoch')`;
    case "month":
      return sql<string>`strftime('%Y-%m', ${usageHourly.hour} / 1000, 'unixepoch')`;
    case "total":
      return sql<string>`'total'`;
  }
}

/** Per SIM usage totals per hour, day, UTC month or in all, from the hourly read model. */
export function queryUsage(db: Db, q: UsageQuery): UsageRow[] {
  const where: SQL[] = [];
  if (q.from !== undefined) where.push(gte(usageHourly.hour, q.from));
  if (q.to !== undefined) where.push(lt(usageHourly.hour, q.to));
  if (q.sims && q.sims.length > 0) where.push(sql`${usageHourly.simSid} in ${q.sims}`);
  const period = periodExpr(q.granularity);
  const having: SQL[] = [sql`sum(${usageHourly.bytes}) != 0`];
  if (q.after) {
    // Grouped columns may be compared in HAVING; the (sim, period) order is the list's order.
    having.push(
      sql`(${usageHourly.simSid} > ${q.after.simSid} or (${usageHourly.simSid} = ${q.after.simSid} and ${period} > ${q.after.period}))`,
    );
  }
  const query = db
    .select({ simSid: usageHourly.simSid, period, bytes: sql<number>`sum(${usageHourly.bytes})` })
    .from(usageHourly)
    .where(where.length ? and(...where) : undefined)
    .groupBy(usageHourly.simSid, period)
    .having(and(...having))
    .orderBy(asc(usageHourly.simSid), asc(period));
  return q.limit === undefined ? query.all() : query.limit(q.limit).all();
}

export function listQuarantine(db: Db, limit = 100) {
  return db.select().from(quarantine).orderBy(desc(quarantine.id)).limit(limit).all();
}

export function countQuarantine(db: Db): number {
  return db.select({ n: sql<number>`count(*)` }).from(quarantine).get()?.n ?? 0;
}

export function listAnomalies(db: Db, limit = 100) {
  return db.select().from(anomalies).orderBy(desc(anomalies.id)).limit(limit).all();
}

export function listEventCounts(db: Db, sinceMs: number = Date.now() - 7 * DAY_MS) {
  return db
    .select()
    .from(eventCounts)
    .where(gte(eventCounts.day, sinceMs))
    .orderBy(desc(eventCounts.count))
    .limit(200)
    .all();
}
