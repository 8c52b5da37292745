import type pg from "pg";
import {
  loadedFleets,
  nearKey,
  nearLoaded,
  nearObservations,
  type SimInfo,
} from "../../customers/fleets.ts";
import type { FleetObservation } from "../../customers/resolve.ts";
import { installInt8Parser } from "../../db/pg/client.ts";
import type { MeterReport } from "../../db/schema.ts";
import {
  PLAN_CHUNK_ROWS,
  type PlanInput,
  type PlanOps,
  type PlanResult,
  planTransactions,
} from "../../reporting/plan-steps.ts";
import type { PlanRun } from "../port.ts";
import { type Async, runAsync } from "../steps.ts";
import { pgBilling } from "./billing.ts";
import { sqlState, withTx } from "./tx.ts";

// The PostgreSQL side of planning (docs/design/postgres-ledger.md §2.5, §4.5 to §4.7): the same
// step body as SQLite's planReports (src/reporting/plan-steps.ts), each op one set-based
// statement (two for the directory and a chunk's fleet histories). Every step is its own
// transaction under the exclusive ledger barrier, so planners serialise against ingest and each
// other exactly as on SQLite's single writer: a dirty hour is cleared only while no ingest
// transaction is in flight, the assignment watermark only moves over committed ids, and a second
// planner's chunk re-reads the first one's rows and finds nothing left to plan. A dry run reads
// everything in one REPEATABLE READ READ ONLY transaction and writes nothing.

installInt8Parser();

type Q = Pick<pg.PoolClient, "query">;

/** text sorted as PostgreSQL's "C" collation and SQLite's BINARY compare it (code units) */
const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const byNumber = (a: number, b: number) => a - b;

/** (SIM, hour) pairs per fleetsNear statement */
const NEAR_PAGE = 5_000;

/** the SIM rows of these SIMs (null: the SIM has none), every SIM asked for a key */
async function simRows(client: Q, sims: readonly string[]): Promise<Map<string, SimInfo | null>> {
  const s = await client.query<SimInfo>(
    `select sim_sid as "simSid", iccid, fleet_sid as "fleetSid" from sims
      where sim_sid = any($1::text[])`,
    [[...sims]],
  );
  const rows = new Map<string, SimInfo | null>(sims.map((x) => [x, null]));
  for (const x of s.rows) rows.set(x.simSid, x);
  return rows;
}

/** The ops of one planning transaction on one client. */
export function pgPlanOps(client: Q): Async<PlanOps> {
  return {
    async meta(key) {
      const r = await client.query<{ value: number }>("select value from meta where key = $1", [
        key,
      ]);
      return r.rows[0]?.value ?? 0;
    },

    async setMeta(key, value) {
      await client.query(
        `insert into meta (key, value) values ($1, $2)
         on conflict (key) do update set value = excluded.value`,
        [key, value],
      );
    },

    async pendingNotInDoubt() {
      const r = await client.query<{
        identifier: string;
        customerId: string;
        hour: number;
        timestamp: number;
      }>(
        `select identifier, customer_id as "customerId", hour, timestamp from meter_reports
          where state = 'pending' and in_doubt = false
          order by identifier collate "C"`,
      );
      return r.rows;
    },

    async supersede(rows) {
      // Race 1 of §4.5: the reporter takes no barrier; a row it claimed (in doubt) since the read
      // is left alone, and only rows actually changed are counted and re-planned.
      const sorted = [...rows].sort((a, b) => byText(a.identifier, b.identifier));
      const r = await client.query<{ identifier: string }>(
        `update meter_reports m set state = 'superseded', last_error = u.reason
           from unnest($1::text[], $2::text[]) as u(id, reason)
          where m.identifier = u.id and m.state = 'pending' and m.in_doubt = false
         returning m.identifier`,
        [sorted.map((x) => x.identifier), sorted.map((x) => x.reason)],
      );
      return r.rows.map((x) => x.identifier).sort(byText);
    },

    async dirtyHours() {
      const r = await client.query<{ hour: number }>(
        "select hour from report_dirty_hours order by hour",
      );
      return r.rows.map((x) => x.hour);
    },

    async dirtySims() {
      const r = await client.query<{ sim_sid: string }>(
        `select sim_sid from report_dirty_sims order by sim_sid collate "C"`,
      );
      return r.rows.map((x) => x.sim_sid);
    },

    async directory() {
      const a = await client.query<{
        id: number;
        targetType: "sim" | "iccid" | "fleet";
        targetId: string;
        customerId: string;
        effectiveFrom: number;
      }>(
        `select id, target_type as "targetType", target_id as "targetId",
                customer_id as "customerId", effective_from as "effectiveFrom"
           from assignments order by id`,
      );
      const s = await client.query<SimInfo>(
        `select sim_sid as "simSid", iccid, fleet_sid as "fleetSid" from sims
          order by sim_sid collate "C"`,
      );
      return { assignments: a.rows, sims: s.rows };
    },

    async simsInFleets(fleets) {
      const r = await client.query<{ fleet_sid: string; sim_sid: string }>(
        `select fleet_sid, sim_sid from sim_fleet_hours
          where fleet_sid = any($1::text[])
          group by fleet_sid, sim_sid
          order by fleet_sid collate "C", sim_sid collate "C"`,
        [[...fleets]],
      );
      const out = new Map<string, string[]>(fleets.map((f) => [f, []]));
      for (const x of r.rows) out.get(x.fleet_sid)?.push(x.sim_sid);
      return out;
    },

    async hoursOfSims(sims) {
      const r = await client.query<{ hour: number }>(
        "select distinct hour from usage_hourly where sim_sid = any($1::text[]) order by hour",
        [[...sims]],
      );
      return r.rows.map((x) => x.hour);
    },

    async markDirty(hours) {
      await client.query(
        `insert into report_dirty_hours (hour)
         select * from unnest($1::bigint[]) as u(c1) order by c1
         on conflict do nothing`,
        [[...new Set(hours)].sort(byNumber)],
      );
    },

    async clearDirtySims(sims) {
      await client.query("delete from report_dirty_sims where sim_sid = any($1::text[])", [
        [...sims].sort(byText),
      ]);
    },

    async usageCounts(hours) {
      const r = await client.query<{ hour: number; n: number }>(
        `select hour, count(*) as n from usage_hourly where hour = any($1::bigint[])
          group by hour`,
        [[...hours]],
      );
      return new Map(r.rows.map((x) => [x.hour, x.n]));
    },

    async usageOfHours(hours) {
      const r = await client.query<{ hour: number; simSid: string; bytes: number }>(
        `select hour, sim_sid as "simSid", bytes from usage_hourly
          where hour = any($1::bigint[])
          order by hour, sim_sid collate "C"`,
        [[...hours]],
      );
      return r.rows;
    },

    async fleetsNear(pairs) {
      // Per pair, the two observed hours `near` reads (§4.7), by the table's key (sim_sid, hour,
      // fleet_sid): four index probes and two short range reads, whatever the SIM's history
      // length. The whole histories the rules still need are loaded by fleetsOf afterwards.
      // Pages of NEAR_PAGE pairs keep each statement's arrays small (a period page can hold
      // every SIM-hour of a month).
      const near = new Map<string, FleetObservation[] | null>();
      for (let from = 0; from < pairs.length; from += NEAR_PAGE) {
        const page = pairs.slice(from, from + NEAR_PAGE);
        const r = await client.query<{
          sim_sid: string;
          hour: number;
          at: number | null;
          prev: number | null;
          at_fleets: string[] | null;
          prev_fleets: string[] | null;
        }>(
          `select q.sim_sid, q.hour, a.at, p.prev,
           (select array_agg(f.fleet_sid order by f.fleet_sid collate "C") from sim_fleet_hours f
             where f.sim_sid = q.sim_sid and f.hour = a.at) as at_fleets,
           (select array_agg(f.fleet_sid order by f.fleet_sid collate "C") from sim_fleet_hours f
             where f.sim_sid = q.sim_sid and f.hour = p.prev) as prev_fleets
           from unnest($1::text[], $2::bigint[]) as q(sim_sid, hour)
           cross join lateral (select coalesce(
             (select max(f.hour) from sim_fleet_hours f where f.sim_sid = q.sim_sid and f.hour <= q.hour),
             (select min(f.hour) from sim_fleet_hours f where f.sim_sid = q.sim_sid)) as at) a
           cross join lateral (select max(f.hour) as prev from sim_fleet_hours f
             where f.sim_sid = q.sim_sid and f.hour < a.at) p`,
          [page.map((x) => x.simSid), page.map((x) => x.hour)],
        );
        for (const x of r.rows)
          near.set(
            nearKey(x.sim_sid, x.hour),
            nearObservations(x.at, x.at_fleets ?? [], x.prev, x.prev_fleets ?? []),
          );
      }
      const sims = await simRows(client, [...new Set(pairs.map((x) => x.simSid))]);
      return nearLoaded({ near, sims });
    },

    async fleetsOf(sims) {
      // Whole histories, for the SIMs whose rules walk back over move hours or look for the first
      // coverage; every SIM asked for is loaded (an empty history, a null row: none).
      const f = await client.query<{ sim_sid: string; hour: number; fleet_sid: string }>(
        `select sim_sid, hour, fleet_sid from sim_fleet_hours
          where sim_sid = any($1::text[])
          order by sim_sid collate "C", hour, fleet_sid collate "C"`,
        [[...sims]],
      );
      const histories = new Map<string, FleetObservation[]>(sims.map((x) => [x, []]));
      for (const x of f.rows)
        histories.get(x.sim_sid)?.push({ hour: x.hour, fleetSid: x.fleet_sid });
      return loadedFleets({ histories, sims: await simRows(client, sims) });
    },

    async reportedOfHours(hours) {
      // The sum as text: beyond 2^53 - 1 it becomes an inexact Number (as better-sqlite3 gives
      // it) and the hour is held, where the int8 parser would throw and stop every run.
      const r = await client.query<{
        hour: number;
        customerId: string;
        state: MeterReport["state"];
        value: string;
        seq: number;
      }>(
        `select hour, customer_id as "customerId", state, sum(value)::text as value, max(seq) as seq
           from meter_reports where hour = any($1::bigint[])
          group by hour, customer_id, state
          order by hour, customer_id collate "C", state collate "C"`,
        [[...hours]],
      );
      return r.rows.map((x) => ({ ...x, value: Number(x.value) }));
    },

    async insertReports(rows) {
      // In the order planned, as SQLite inserts them: row_id then orders the outbox (newest first
      // in GET /api/report/rows) the same on both ledgers. Planners hold the exclusive barrier and
      // the reporter inserts nothing, so no lock order is needed here.
      await client.query(
        `insert into meter_reports (identifier, customer_id, hour, seq, value, timestamp, late, state, created_at)
         select c1, c2, c3, c4, c5, c6, c7, 'pending', c8
           from unnest($1::text[], $2::text[], $3::bigint[], $4::int[], $5::bigint[], $6::bigint[], $7::boolean[], $8::bigint[])
                with ordinality as u(c1, c2, c3, c4, c5, c6, c7, c8, n)
          order by n`,
        [
          rows.map((r) => r.identifier),
          rows.map((r) => r.customerId),
          rows.map((r) => r.hour),
          rows.map((r) => r.seq),
          rows.map((r) => r.value),
          rows.map((r) => r.timestamp),
          rows.map((r) => r.late),
          rows.map((r) => r.createdAt),
        ],
      );
    },

    async clearDirtyHours(hours) {
      await client.query("delete from report_dirty_hours where hour = any($1::bigint[])", [
        [...hours].sort(byNumber),
      ]);
    },
  };
}

/** unique_violation: another planner wrote the same (customer, hour, seq) first */
const UNIQUE_VIOLATION = "23505";

/**
 * Plans every dirty hour on a PostgreSQL ledger: step 1 and then each chunk in its own durable
 * transaction under the exclusive ledger barrier (retried whole on a lock conflict, re-planned
 * once on a duplicate row), giving the event loop back between chunks. A dry run reads everything
 * in one REPEATABLE READ READ ONLY transaction and writes nothing.
 */
export async function planPg(pool: pg.Pool, o: PlanRun): Promise<PlanResult> {
  const input: PlanInput = {
    now: o.now,
    settings: o.settings,
    dryRun: o.dryRun ?? false,
    chunkRows: o.chunkRows ?? PLAN_CHUNK_ROWS,
    billing: o.billing ?? (await pgBilling(pool).load()),
  };
  if (input.dryRun) {
    return withTx(
      pool,
      async (client) => {
        const ops = pgPlanOps(client);
        const run = planTransactions(input);
        let r = run.next();
        while (!r.done) r = run.next(await runAsync(r.value(), ops));
        return r.value;
      },
      { barrier: "none", snapshot: true, retry: true },
    );
  }
  const run = planTransactions(input);
  let r = run.next();
  let first = true;
  while (!r.done) {
    if (!first) await new Promise<void>((resolve) => setImmediate(resolve));
    first = false;
    const step = r.value;
    const once = () =>
      withTx(
        pool,
        async (client) => {
          // The outbox durability rule: on disk before any call it describes (§4.6).
          await client.query("set local synchronous_commit = on");
          return runAsync(step(), pgPlanOps(client));
        },
        { barrier: "exclusive", retry: true },
      );
    let result: unknown;
    try {
      result = await once();
    } catch (err) {
      if (sqlState(err) !== UNIQUE_VIOLATION) throw err;
      result = await once();
    }
    r = run.next(result);
  }
  return r.value;
}
