import type pg from "pg";
import { resolverOver, unmappedOfSim } from "../../customers/customers.ts";
import { installInt8Parser } from "../../db/pg/client.ts";
import type { QuarantineFilter } from "../../ingest/requeue.ts";
import type { Granularity, UsageQuery, UsageRow } from "../../usage/query.ts";
import type {
  AnomalyFilter,
  AnomalyRow,
  CountedQuarantineRow,
  EventCountRow,
  ReadsPort,
  RequeueCandidate,
  UnmappedUsage,
} from "../reads-port.ts";
import { pgPlanOps } from "./plan.ts";
import { withTx } from "./tx.ts";

// The read side on PostgreSQL (src/ledger/reads-port.ts): the statements of the SQLite adapter
// (src/ledger/sqlite/reads.ts) with the same rows in the same order. Text is ordered and compared
// collate "C" (SQLite's bytewise BINARY), so a usage cursor from either ledger pages the other;
// sums are cast back to bigint (the int8 parser makes them numbers); `exists` is a boolean here.
// SQLite's lower() folds ASCII letters only: the reason filter folds the same way (translate),
// whatever the database's locale.

installInt8Parser();

const UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER = "abcdefghijklmnopqrstuvwxyz";
const asciiLower = (expr: string) => `translate(${expr}, '${UPPER}', '${LOWER}')`;

/** strftime('%Y-%m-%dT%H:00:00Z' | '%Y-%m-%d' | '%Y-%m', hour / 1000, 'unixepoch') */
function periodExpr(g: Granularity): string {
  // hour / 1000 is integer division on both (hours are whole seconds anyway)
  const t = `(to_timestamp(hour / 1000) at time zone 'UTC')`;
  switch (g) {
    case "hour":
      return `to_char(${t}, 'YYYY-MM-DD"T"HH24:00:00"Z"')`;
    case "day":
      return `to_char(${t}, 'YYYY-MM-DD')`;
    case "month":
      return `to_char(${t}, 'YYYY-MM')`;
    case "total":
      return `'total'::text`;
  }
}

/** Numbered parameters for one statement: add(v) → "$n". */
function params() {
  const values: unknown[] = [];
  return {
    values,
    add(v: unknown): string {
      values.push(v);
      return `$${values.length}`;
    },
  };
}

async function usage(pool: pg.Pool, q: UsageQuery): Promise<UsageRow[]> {
  const p = params();
  const where: string[] = [];
  if (q.from !== undefined) where.push(`hour >= ${p.add(q.from)}`);
  if (q.to !== undefined) where.push(`hour < ${p.add(q.to)}`);
  if (q.sims && q.sims.length > 0) where.push(`sim_sid = any(${p.add(q.sims)}::text[])`);
  const period = periodExpr(q.granularity);
  const having = ["sum(bytes) <> 0"];
  if (q.after) {
    const sim = p.add(q.after.simSid);
    const per = p.add(q.after.period);
    having.push(
      `(sim_sid collate "C" > ${sim}::text or (sim_sid = ${sim}::text and ${period} collate "C" > ${per}::text))`,
    );
  }
  const r = await pool.query<UsageRow>(
    `select sim_sid as "simSid", ${period} as period, sum(bytes)::bigint as bytes
       from usage_hourly
      ${where.length > 0 ? `where ${where.join(" and ")}` : ""}
      group by sim_sid, ${period}
     having ${having.join(" and ")}
      order by sim_sid collate "C", ${period} collate "C"
      ${q.limit === undefined ? "" : `limit ${p.add(q.limit)}`}`,
    p.values,
  );
  return r.rows;
}

/**
 * unmappedUsage of src/customers/customers.ts: every SIM-hour with usage resolved to its customer
 * by the same resolver, a page of SIMs at a time (their usage and whole fleet histories read
 * together), all in one read-only snapshot.
 */
/** SIMs resolved per round: their usage and whole fleet histories are read together */
export const UNMAPPED_PAGE_SIMS = 200;

export async function pgUnmapped(
  pool: pg.Pool,
  pageSims = UNMAPPED_PAGE_SIMS,
): Promise<UnmappedUsage[]> {
  return withTx(
    pool,
    async (c) => {
      const ops = pgPlanOps(c);
      const dir = await ops.directory();
      const info = new Map(dir.sims.map((s) => [s.simSid, s]));
      const out: UnmappedUsage[] = [];
      let after = "";
      for (;;) {
        const page = (
          await c.query<{ sim_sid: string }>(
            `select distinct sim_sid collate "C" as sim_sid from usage_hourly
              where sim_sid collate "C" > $1 order by 1 limit $2`,
            [after, pageSims],
          )
        ).rows.map((r) => r.sim_sid);
        if (page.length === 0) break;
        after = page[page.length - 1] as string;
        const rows = await c.query<{ sim_sid: string; hour: number; bytes: number }>(
          `select sim_sid, hour, bytes from usage_hourly
            where sim_sid = any($1::text[]) and bytes <> 0
            order by sim_sid collate "C", hour`,
          [page],
        );
        const resolver = resolverOver(dir, await ops.fleetsOf(page));
        const bySim = new Map<string, { hour: number; bytes: number }[]>();
        for (const r of rows.rows) {
          const list = bySim.get(r.sim_sid) ?? [];
          list.push({ hour: r.hour, bytes: r.bytes });
          bySim.set(r.sim_sid, list);
        }
        for (const [simSid, list] of bySim) {
          const u = unmappedOfSim(resolver, simSid, list, info.get(simSid));
          if (u) out.push(u);
        }
      }
      return out;
    },
    { barrier: "none", snapshot: true },
  );
}

function quarantineWhere(f: QuarantineFilter, p: ReturnType<typeof params>): string[] {
  const w: string[] = [];
  if (f.ids && f.ids.length > 0) w.push(`q.id = any(${p.add(f.ids)}::bigint[])`);
  if (f.reason !== undefined)
    w.push(`strpos(${asciiLower("q.reason")}, ${asciiLower(`${p.add(f.reason)}::text`)}) > 0`);
  if (f.since !== undefined) w.push(`q.received_at >= ${p.add(f.since)}`);
  return w;
}

const COUNTED = `case when q.event_sid is null then null
  else exists (select 1 from seen_events s where s.event_sid = q.event_sid) end`;

async function quarantine(
  pool: pg.Pool,
  f: QuarantineFilter & { limit: number; beforeId?: number },
): Promise<CountedQuarantineRow[]> {
  const p = params();
  const w = quarantineWhere(f, p);
  if (f.beforeId !== undefined) w.push(`q.id < ${p.add(f.beforeId)}`);
  const r = await pool.query<CountedQuarantineRow>(
    `select q.id, q.received_at as "receivedAt", q.source, q.delivery_id as "deliveryId",
            q.position, q.event_sid as "eventSid", q.reason, q.raw,
            q.requeued_at as "requeuedAt", q.requeues, ${COUNTED} as counted
       from quarantine q
      ${w.length > 0 ? `where ${w.join(" and ")}` : ""}
      order by q.id desc
      limit ${p.add(f.limit)}`,
    p.values,
  );
  return r.rows;
}

async function quarantineByDelivery(
  pool: pg.Pool,
  deliveryIds: readonly string[],
): Promise<Map<string, { id: number; reason: string }[]>> {
  const out = new Map<string, { id: number; reason: string }[]>();
  const unique = [...new Set(deliveryIds)];
  if (unique.length === 0) return out;
  const r = await pool.query<{ id: number; delivery_id: string; reason: string }>(
    "select id, delivery_id, reason from quarantine where delivery_id = any($1::text[]) order by id",
    [unique],
  );
  for (const x of r.rows) {
    const list = out.get(x.delivery_id) ?? [];
    list.push({ id: x.id, reason: x.reason });
    out.set(x.delivery_id, list);
  }
  return out;
}

async function requeueCandidates(pool: pg.Pool, f: QuarantineFilter): Promise<RequeueCandidate[]> {
  const p = params();
  const w = quarantineWhere(f, p);
  const r = await pool.query<Omit<RequeueCandidate, "counted"> & { counted: boolean | null }>(
    `select q.id, q.delivery_id as "deliveryId", q.position, q.event_sid as "eventSid",
            q.source, q.reason, ${COUNTED} as counted
       from quarantine q
      ${w.length > 0 ? `where ${w.join(" and ")}` : ""}
      order by q.id`,
    p.values,
  );
  return r.rows.map((x) => ({ ...x, counted: Boolean(x.counted) }));
}

async function quarantineIds(pool: pg.Pool, ids: readonly number[]): Promise<number[]> {
  if (ids.length === 0) return [];
  const r = await pool.query<{ id: number }>(
    "select id from quarantine where id = any($1::bigint[]) order by id",
    [[...new Set(ids)]],
  );
  return r.rows.map((x) => x.id);
}

async function quarantineRaw(pool: pg.Pool, ids: readonly number[]): Promise<Map<number, string>> {
  if (ids.length === 0) return new Map();
  const r = await pool.query<{ id: number; raw: string }>(
    "select id, raw from quarantine where id = any($1::bigint[])",
    [[...new Set(ids)]],
  );
  return new Map(r.rows.map((x) => [x.id, x.raw]));
}

async function countedSids(pool: pg.Pool, sids: readonly string[]): Promise<Set<string>> {
  if (sids.length === 0) return new Set();
  const r = await pool.query<{ event_sid: string }>(
    "select event_sid from seen_events where event_sid = any($1::text[])",
    [[...new Set(sids)]],
  );
  return new Set(r.rows.map((x) => x.event_sid));
}

/**
 * One transaction, rows locked in id order. No ledger barrier: nothing here depends on a single
 * writer (the barrier serialises ingest and assignments against planning, prune and repair,
 * none of which reads these columns); the row locks order it against ingest's upsert of a row.
 */
async function markRequeued(pool: pg.Pool, rowIds: readonly number[], now: number): Promise<void> {
  if (rowIds.length === 0) return;
  const ids = [...rowIds].sort((a, b) => a - b);
  await withTx(
    pool,
    async (c) => {
      // Each id once per statement, as often as it was given (SQLite's loop adds one per mention).
      const counts = new Map<number, number>();
      for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1);
      await c.query(
        `update quarantine q set requeued_at = $1, requeues = q.requeues + u.n
           from unnest($2::bigint[], $3::int[]) as u(id, n)
          where q.id = u.id`,
        [now, [...counts.keys()], [...counts.values()]],
      );
    },
    { barrier: "none", retry: true },
  );
}

async function anomalies(pool: pg.Pool, f: AnomalyFilter): Promise<AnomalyRow[]> {
  const p = params();
  const w: string[] = [];
  if (f.beforeId !== undefined) w.push(`id < ${p.add(f.beforeId)}`);
  if (f.kind !== undefined) w.push(`kind = ${p.add(f.kind)}::text`);
  if (f.since !== undefined) w.push(`detected_at >= ${p.add(f.since)}`);
  const r = await pool.query<AnomalyRow>(
    `select id, session_sid as "sessionSid", event_sid as "eventSid", kind, detail,
            detected_at as "detectedAt"
       from anomalies
      ${w.length > 0 ? `where ${w.join(" and ")}` : ""}
      order by id desc
      limit ${p.add(f.limit)}`,
    p.values,
  );
  return r.rows;
}

async function anomalyKinds(pool: pg.Pool): Promise<string[]> {
  const r = await pool.query<{ kind: string }>(
    `select distinct kind collate "C" as kind from anomalies order by 1`,
  );
  return r.rows.map((x) => x.kind);
}

async function simsOfSessions(
  pool: pg.Pool,
  sessionSids: readonly string[],
): Promise<Map<string, string>> {
  if (sessionSids.length === 0) return new Map();
  const r = await pool.query<{ session_sid: string; sim_sid: string }>(
    "select session_sid, sim_sid from sessions where session_sid = any($1::text[])",
    [[...new Set(sessionSids)]],
  );
  return new Map(r.rows.map((x) => [x.session_sid, x.sim_sid]));
}

async function eventCounts(
  pool: pg.Pool,
  sinceMs: number,
  limit: number,
): Promise<EventCountRow[]> {
  const r = await pool.query<EventCountRow>(
    `select sim_sid as "simSid", day, kind, count from event_counts
      where day >= $1
      order by count desc, sim_sid collate "C", day, kind collate "C"
      limit $2`,
    [sinceMs, limit],
  );
  return r.rows;
}

async function counts(pool: pg.Pool): Promise<{ quarantined: number; anomalies: number }> {
  const r = await pool.query<{ quarantined: number; anomalies: number }>(
    `select (select count(*) from quarantine) as quarantined,
            (select count(*) from anomalies) as anomalies`,
  );
  return r.rows[0] ?? { quarantined: 0, anomalies: 0 };
}

export function pgReads(pool: pg.Pool): ReadsPort {
  return {
    usage: (q) => usage(pool, q),
    unmapped: () => pgUnmapped(pool),
    quarantine: (f) => quarantine(pool, f),
    quarantineByDelivery: (ids) => quarantineByDelivery(pool, ids),
    requeueCandidates: (f) => requeueCandidates(pool, f),
    quarantineIds: (ids) => quarantineIds(pool, ids),
    quarantineRaw: (ids) => quarantineRaw(pool, ids),
    countedSids: (sids) => countedSids(pool, sids),
    markRequeued: (ids, now) => markRequeued(pool, ids, now),
    anomalies: (f) => anomalies(pool, f),
    anomalyKinds: () => anomalyKinds(pool),
    simsOfSessions: (sids) => simsOfSessions(pool, sids),
    eventCounts: (since, limit) => eventCounts(pool, since, limit),
    counts: () => counts(pool),
  };
}
