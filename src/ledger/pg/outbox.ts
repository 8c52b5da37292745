import type pg from "pg";
import { DAY_MS, hourStart } from "../../accounting/buckets.ts";
import { STRIPE_BACKDATE_MS } from "../../billing/periods.ts";
import { installInt8Parser } from "../../db/pg/client.ts";
import type { MeterReport } from "../../db/schema.ts";
import { observedRow, type StripeDifference } from "../../reporting/reconcile.ts";
import type { OutboxPort } from "../port.ts";
import { withTx } from "./tx.ts";

// The outbox on PostgreSQL (docs/design/postgres-ledger.md §1.3, §4.5, §4.6): the statements of
// src/reporting/outbox.ts, with the same results and the same order (text ordered collate "C",
// SQLite's bytewise compare).
//
// - A row change is one conditional UPDATE in autocommit: the row lock plus READ COMMITTED's
//   re-check of the WHERE on the newest row version make it atomic against a planner superseding
//   the row, another reporter, or compaction (a claim and a supersede of one pending row: exactly
//   one of them matches). `rowCount` says whether it did.
// - Durability (ADR 0002, amendment): the change must be flushed before the Stripe call it
//   precedes. Each such statement carries `set_config('synchronous_commit', 'on', true)` in its
//   WHERE: local to the statement's own implicit transaction, so it is in force when that
//   transaction commits (the server reads the setting at commit) and gone afterwards, so pooled
//   sessions shared with ingest keep the server's setting. One round trip, where BEGIN / SET
//   LOCAL / UPDATE / COMMIT would take three or four. A statement that changes a row has
//   evaluated its whole WHERE as true for that row, so the setting is always in force when there
//   is anything to commit.
// - retryFailed and compact run under the exclusive ledger barrier (planners, prune and repair
//   wait for them, and they for those), with SET LOCAL synchronous_commit = on.

installInt8Parser();

/** in the WHERE of every row change: a commit of it waits for the WAL flush (see above) */
const DURABLE = `set_config('synchronous_commit', 'on', true) = 'on'`;

/** meter_reports as src/db/schema.ts's MeterReport (row_id is PostgreSQL's only) */
export const REPORT_COLUMNS = `identifier, customer_id as "customerId", hour, seq, value, timestamp, late,
  kind, state, attempts, in_doubt as "inDoubt", first_call_at as "firstCallAt",
  last_error as "lastError", created_at as "createdAt", sent_at as "sentAt"`;

const UNCONFIRMED_ERROR =
  "not confirmed by Stripe within 23 h of its first call: counted as sent so it can never be billed twice; simmeter reconcile --repair bills it if Stripe does not hold it";

type StatusRow = { state: MeterReport["state"]; rows: number; value: number; late: number };

/**
 * The stopped rows back to pending and their hours dirty (retryFailed in src/reporting/outbox.ts).
 * Exclusive barrier: the planner's dirty-hour delete and the supersede step cannot interleave.
 */
async function retryFailedPg(pool: pg.Pool): Promise<number> {
  return withTx(
    pool,
    async (c) => {
      await c.query("set local synchronous_commit = on");
      const r = await c.query<{ n: number }>(
        `with r as (
           update meter_reports set state = 'pending' where state = 'failed' returning hour
         ), d as (
           insert into report_dirty_hours (hour)
           select distinct hour from r order by hour
           on conflict do nothing
         )
         select count(*) as n from r`,
      );
      return r.rows[0]?.n ?? 0;
    },
    { barrier: "exclusive", retry: true },
  );
}

/**
 * compactOutbox of src/reporting/outbox.ts: for hours older than Stripe's window, the sent, usage,
 * never late rows of one customer-hour become the highest-seq row, carrying their sum, their
 * attempts and the earliest timestamp. The groups are chosen as SQLite's plan gives them (by hour,
 * then customer: it walks meter_reports_hour_idx), at most maxGroups. Their rows are then locked
 * in key order (a reporter's single-row update of one of them waits, or is waited for: never
 * lost) and the fold re-checks every group on a fresh snapshot of the locked rows.
 */
async function compactPg(pool: pg.Pool, now: number, maxGroups = 5000): Promise<number> {
  const before = hourStart(now - STRIPE_BACKDATE_MS - DAY_MS);
  return withTx(
    pool,
    async (c) => {
      await c.query("set local synchronous_commit = on");
      const groups = await c.query<{ customer_id: string; hour: number }>(
        `select customer_id, hour from meter_reports
          where hour < $1
          group by customer_id, hour
         having count(*) > 1 and not bool_or(state <> 'sent' or kind <> 'usage' or late)
          order by hour, customer_id collate "C"
          limit $2`,
        [before, maxGroups],
      );
      if (groups.rows.length === 0) return 0;
      const customers = groups.rows.map((g) => g.customer_id);
      const hours = groups.rows.map((g) => g.hour);
      await c.query(
        `select 1 from meter_reports m
           join unnest($1::text[], $2::bigint[]) as g(customer_id, hour)
             on m.customer_id = g.customer_id and m.hour = g.hour
          order by m.customer_id collate "C", m.hour, m.seq
            for update of m`,
        [customers, hours],
      );
      const r = await c.query<{ n: number }>(
        `with g as (
           select m.customer_id, m.hour, max(m.seq) as seq, sum(m.value)::bigint as value,
                  sum(m.attempts)::integer as attempts, min(m.timestamp) as timestamp
             from meter_reports m
             join unnest($1::text[], $2::bigint[]) as k(customer_id, hour)
               on m.customer_id = k.customer_id and m.hour = k.hour
            group by m.customer_id, m.hour
           having count(*) > 1 and not bool_or(m.state <> 'sent' or m.kind <> 'usage' or m.late)
         ), fold as (
           update meter_reports m
              set value = g.value, attempts = g.attempts, timestamp = g.timestamp
             from g
            where m.customer_id = g.customer_id and m.hour = g.hour and m.seq = g.seq
         ), dropped as (
           delete from meter_reports m using g
            where m.customer_id = g.customer_id and m.hour = g.hour and m.seq < g.seq
           returning 1
         )
         select count(*) as n from dropped`,
        [customers, hours],
      );
      return r.rows[0]?.n ?? 0;
    },
    { barrier: "exclusive", retry: true },
  );
}

/** rows whose own hour or whose timestamp (seconds) is in [from, to), as SQLite returns them */
export async function touchingOn(
  c: Pick<pg.PoolClient, "query">,
  from: number,
  to: number,
): Promise<MeterReport[]> {
  const r = await c.query<MeterReport>(
    `select ${REPORT_COLUMNS} from meter_reports
      where (hour >= $1 and hour < $2)
         or (timestamp * 1000 >= $1 and timestamp * 1000 < $2)
      order by row_id`,
    [from, to],
  );
  return r.rows;
}

/**
 * The repair's observed rows (recordObservedSqlite on SQLite): under the exclusive ledger barrier
 * (planners, prune and other repairs wait; the touched-since check and the seq read cannot race
 * a planning chunk), committed with synchronous_commit on.
 */
export function recordObservedPg(
  pool: pg.Pool,
  diffs: readonly StripeDifference[],
  now: number,
  comparedAt: number,
): Promise<MeterReport[]> {
  return withTx(
    pool,
    async (c) => {
      await c.query("set local synchronous_commit = on");
      const since = Math.min(now, comparedAt);
      const written: MeterReport[] = [];
      for (const d of diffs) {
        const touched = await c.query<{ n: number }>(
          `select count(*) as n from meter_reports
            where customer_id = $1 and timestamp >= $2 and timestamp < $3
              and (created_at > $4 or coalesce(sent_at, 0) > $4 or state in ('pending', 'failed'))`,
          [d.customer, d.hour / 1000, d.hour / 1000 + 3600, since],
        );
        if ((touched.rows[0]?.n ?? 0) > 0) continue;
        const max = await c.query<{ seq: number | null }>(
          "select max(seq) as seq from meter_reports where customer_id = $1 and hour = $2",
          [d.customer, d.bucket],
        );
        const row = observedRow(d, (max.rows[0]?.seq ?? -1) + 1, now);
        const inserted = await c.query<MeterReport>(
          `insert into meter_reports (identifier, customer_id, hour, seq, value, timestamp, late,
                                      kind, state, created_at, sent_at, last_error)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           returning ${REPORT_COLUMNS}`,
          [
            row.identifier,
            row.customerId,
            row.hour,
            row.seq,
            row.value,
            row.timestamp,
            row.late,
            row.kind,
            row.state,
            row.createdAt,
            row.sentAt,
            row.lastError,
          ],
        );
        await c.query("insert into report_dirty_hours (hour) values ($1) on conflict do nothing", [
          d.bucket,
        ]);
        written.push(inserted.rows[0] as MeterReport);
      }
      return written;
    },
    { barrier: "exclusive", retry: true },
  );
}

/** The reporter's outbox port on PostgreSQL: the same semantics as src/reporting/outbox.ts. */
export function pgOutbox(pool: pg.Pool): OutboxPort {
  /** one durable conditional update; true when it changed a row */
  const change = async (text: string, values: unknown[]): Promise<boolean> =>
    ((await pool.query(text, values)).rowCount ?? 0) > 0;
  return {
    async pending() {
      const r = await pool.query<MeterReport>(
        `select ${REPORT_COLUMNS} from meter_reports where state = 'pending'
          order by customer_id collate "C", hour, seq`,
      );
      return r.rows;
    },

    async failed() {
      // SQLite sorts (customer_id, hour) and keeps ties in rowid order: row_id here.
      const r = await pool.query<MeterReport>(
        `select ${REPORT_COLUMNS} from meter_reports where state = 'failed'
          order by customer_id collate "C", hour, row_id`,
      );
      return r.rows;
    },

    async pendingRow(identifier) {
      const r = await pool.query<MeterReport>(
        `select ${REPORT_COLUMNS} from meter_reports where identifier = $1 and state = 'pending'`,
        [identifier],
      );
      return r.rows[0] ?? null;
    },

    claimForCall: (identifier, now) =>
      change(
        `update meter_reports set in_doubt = true, first_call_at = coalesce(first_call_at, $2)
          where identifier = $1 and state = 'pending' and ${DURABLE}`,
        [identifier, now],
      ),

    async markSent(identifier, now) {
      await change(
        `update meter_reports set state = 'sent', sent_at = $2, attempts = attempts + 1,
                last_error = null
          where identifier = $1 and state = 'pending' and ${DURABLE}`,
        [identifier, now],
      );
    },

    async setInDoubt(identifier, inDoubt) {
      await change(
        inDoubt
          ? `update meter_reports set in_doubt = true where identifier = $1 and ${DURABLE}`
          : `update meter_reports set in_doubt = false, first_call_at = null
              where identifier = $1 and ${DURABLE}`,
        [identifier],
      );
    },

    async markUnconfirmed(identifier, now) {
      await change(
        `update meter_reports set state = 'sent', sent_at = $2, last_error = $3
          where identifier = $1 and state = 'pending' and ${DURABLE}`,
        [identifier, now, UNCONFIRMED_ERROR],
      );
    },

    async markFailed(identifier, reason) {
      await change(
        `update meter_reports set state = 'failed', last_error = $2, attempts = attempts + 1
          where identifier = $1 and ${DURABLE}`,
        [identifier, reason],
      );
    },

    async recordAttempt(identifier, error) {
      await change(
        `update meter_reports set last_error = $2, attempts = attempts + 1
          where identifier = $1 and ${DURABLE}`,
        [identifier, error],
      );
    },

    retryFailed: () => retryFailedPg(pool),

    compact: (now, maxGroups) => compactPg(pool, now, maxGroups),

    touching: (from, to) => touchingOn(pool, from, to),

    recordObserved: (diffs, now, comparedAt) => recordObservedPg(pool, diffs, now, comparedAt),

    async status() {
      // SQLite walks meter_reports_state_idx: states in bytewise order.
      const r = await pool.query<StatusRow>(
        `select state, count(*) as rows, coalesce(sum(value), 0)::bigint as value,
                count(*) filter (where late) as late
           from meter_reports group by state order by state collate "C"`,
      );
      return r.rows.map((x) => ({ state: x.state, rows: x.rows, value: x.value, late: x.late }));
    },
  };
}
