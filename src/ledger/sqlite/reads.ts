import { and, asc, desc, eq, gte, inArray, lt, type SQL, sql } from "drizzle-orm";
import { unmappedUsage } from "../../customers/customers.ts";
import type { Db } from "../../db/client.ts";
import { anomalies, eventCounts, quarantine, sessions, usageHourly } from "../../db/schema.ts";
import type { QuarantineFilter } from "../../ingest/requeue.ts";
import type { Granularity, UsageQuery, UsageRow } from "../../usage/query.ts";
import {
  type AnomalyFilter,
  type AnomalyRow,
  type CountedQuarantineRow,
  type EventCountRow,
  type ReadsPort,
  type RequeueCandidate,
  settled,
} from "../reads-port.ts";

// The read side on SQLite (src/ledger/reads-port.ts): each method one synchronous better-sqlite3
// call (the marking of requeued rows one transaction), answered as a settled Promise.

/** ids per statement where a list can be long (SQLite's parameter limit) */
const CHUNK = 500;

function chunks<T>(list: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < list.length; i += CHUNK) out.push(list.slice(i, i + CHUNK));
  return out;
}

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
function sqliteUsage(db: Db, q: UsageQuery): UsageRow[] {
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

function whereOf(f: QuarantineFilter): SQL | undefined {
  const w: SQL[] = [];
  if (f.ids && f.ids.length > 0) w.push(inArray(quarantine.id, f.ids));
  if (f.reason !== undefined)
    w.push(sql`instr(lower(${quarantine.reason}), lower(${f.reason})) > 0`);
  if (f.since !== undefined) w.push(gte(quarantine.receivedAt, f.since));
  return w.length > 0 ? and(...w) : undefined;
}

// Written out in full: inside a one-table select drizzle leaves column names unqualified, which the
// subquery would resolve against seen_events.
const countedExpr = sql<
  number | null
>`case when "quarantine"."event_sid" is null then null else exists (select 1 from "seen_events" s where s."event_sid" = "quarantine"."event_sid") end`;

function sqliteQuarantine(
  db: Db,
  o: QuarantineFilter & { limit: number; beforeId?: number },
): CountedQuarantineRow[] {
  return db
    .select({ row: quarantine, counted: countedExpr })
    .from(quarantine)
    .where(and(whereOf(o), o.beforeId === undefined ? undefined : lt(quarantine.id, o.beforeId)))
    .orderBy(desc(quarantine.id))
    .limit(o.limit)
    .all()
    .map(({ row, counted }) => ({
      ...row,
      counted: counted === null ? null : Boolean(counted),
    }));
}

function quarantineByDelivery(
  db: Db,
  deliveryIds: readonly string[],
): Map<string, { id: number; reason: string }[]> {
  const out = new Map<string, { id: number; reason: string }[]>();
  for (const part of chunks([...new Set(deliveryIds)])) {
    const rows = db
      .select({ id: quarantine.id, deliveryId: quarantine.deliveryId, reason: quarantine.reason })
      .from(quarantine)
      .where(inArray(quarantine.deliveryId, part))
      .orderBy(asc(quarantine.id))
      .all();
    for (const r of rows) {
      const list = out.get(r.deliveryId) ?? [];
      list.push({ id: r.id, reason: r.reason });
      out.set(r.deliveryId, list);
    }
  }
  return out;
}

function requeueCandidates(db: Db, f: QuarantineFilter): RequeueCandidate[] {
  return db
    .select({
      id: quarantine.id,
      deliveryId: quarantine.deliveryId,
      position: quarantine.position,
      eventSid: quarantine.eventSid,
      source: quarantine.source,
      reason: quarantine.reason,
      counted: countedExpr,
    })
    .from(quarantine)
    .where(whereOf(f))
    .orderBy(asc(quarantine.id))
    .all()
    .map((r) => ({ ...r, counted: Boolean(r.counted) }));
}

function quarantineIds(db: Db, ids: readonly number[]): number[] {
  return chunks([...new Set(ids)])
    .flatMap((part) =>
      db
        .select({ id: quarantine.id })
        .from(quarantine)
        .where(inArray(quarantine.id, part))
        .all()
        .map((r) => r.id),
    )
    .sort((a, b) => a - b);
}

function quarantineRaw(db: Db, ids: readonly number[]): Map<number, string> {
  const out = new Map<number, string>();
  for (const part of chunks([...new Set(ids)]))
    for (const r of db
      .select({ id: quarantine.id, raw: quarantine.raw })
      .from(quarantine)
      .where(inArray(quarantine.id, part))
      .all())
      out.set(r.id, r.raw);
  return out;
}

function countedSids(db: Db, sids: readonly string[]): Set<string> {
  const out = new Set<string>();
  for (const part of chunks([...new Set(sids)])) {
    const rows = db.$client
      .prepare(`select event_sid from seen_events where event_sid in (${part.map(() => "?")})`)
      .pluck()
      .all(...part) as string[];
    for (const s of rows) out.add(s);
  }
  return out;
}

function markRequeued(db: Db, rowIds: readonly number[], now: number): void {
  const mark = db.$client.prepare(
    "update quarantine set requeued_at = ?, requeues = requeues + 1 where id = ?",
  );
  db.transaction(() => {
    for (const id of rowIds) mark.run(now, id);
  });
}

function sqliteAnomalies(db: Db, f: AnomalyFilter): AnomalyRow[] {
  return db
    .select()
    .from(anomalies)
    .where(
      and(
        f.beforeId !== undefined ? lt(anomalies.id, f.beforeId) : undefined,
        f.kind !== undefined ? eq(anomalies.kind, f.kind) : undefined,
        f.since !== undefined ? gte(anomalies.detectedAt, f.since) : undefined,
      ),
    )
    .orderBy(desc(anomalies.id))
    .limit(f.limit)
    .all();
}

function anomalyKinds(db: Db): string[] {
  return db.$client
    .prepare("select distinct kind from anomalies order by kind")
    .pluck()
    .all() as string[];
}

function simsOfSessions(db: Db, sessionSids: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of chunks([...new Set(sessionSids)]))
    for (const r of db
      .select({ sessionSid: sessions.sessionSid, simSid: sessions.simSid })
      .from(sessions)
      .where(inArray(sessions.sessionSid, part))
      .all())
      out.set(r.sessionSid, r.simSid);
  return out;
}

function sqliteEventCounts(db: Db, sinceMs: number, limit: number): EventCountRow[] {
  return db
    .select()
    .from(eventCounts)
    .where(gte(eventCounts.day, sinceMs))
    .orderBy(
      desc(eventCounts.count),
      asc(eventCounts.simSid),
      asc(eventCounts.day),
      asc(eventCounts.kind),
    )
    .limit(limit)
    .all();
}

/** Rows in quarantine and anomalies recorded. */
function sqliteCounts(db: Db): { quarantined: number; anomalies: number } {
  const q = db.select({ n: sql<number>`count(*)` }).from(quarantine).get()?.n ?? 0;
  const a = db.select({ n: sql<number>`count(*)` }).from(anomalies).get()?.n ?? 0;
  return { quarantined: q, anomalies: a };
}

export function sqliteReads(db: Db): ReadsPort {
  return {
    usage: settled((q: UsageQuery) => sqliteUsage(db, q)),
    unmapped: settled(() => unmappedUsage(db)),
    quarantine: settled((f: QuarantineFilter & { limit: number; beforeId?: number }) =>
      sqliteQuarantine(db, f),
    ),
    quarantineByDelivery: settled((ids: readonly string[]) => quarantineByDelivery(db, ids)),
    requeueCandidates: settled((f: QuarantineFilter) => requeueCandidates(db, f)),
    quarantineIds: settled((ids: readonly number[]) => quarantineIds(db, ids)),
    quarantineRaw: settled((ids: readonly number[]) => quarantineRaw(db, ids)),
    countedSids: settled((sids: readonly string[]) => countedSids(db, sids)),
    markRequeued: settled((ids: readonly number[], now: number) => markRequeued(db, ids, now)),
    anomalies: settled((f: AnomalyFilter) => sqliteAnomalies(db, f)),
    anomalyKinds: settled(() => anomalyKinds(db)),
    simsOfSessions: settled((sids: readonly string[]) => simsOfSessions(db, sids)),
    eventCounts: settled((since: number, limit: number) => sqliteEventCounts(db, since, limit)),
    counts: settled(() => sqliteCounts(db)),
  };
}
