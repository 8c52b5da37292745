import type pg from "pg";
import {
  type AssignOps,
  assignSteps,
  type HourBytes,
  importSteps,
  previewSteps,
} from "../../customers/customers.ts";
import { installInt8Parser } from "../../db/pg/client.ts";
import type { Assignment } from "../../db/schema.ts";
import type { AssignmentsPort } from "../assignments-port.ts";
import { type Async, runAsync, type Steps } from "../steps.ts";
import { pgPlanOps } from "./plan.ts";
import { LEDGER_LOCK_KEY, withTx } from "./tx.ts";

// The PostgreSQL side of the assignments port (docs/design/postgres-ledger.md §1.4, §4.5): the
// same step bodies as SQLite's (src/customers/customers.ts), each op one statement, in one
// transaction that
// - takes the ledger barrier shared, before any assignment id is allocated: a planner's step 1
//   (exclusive) then sees every id up to the highest visible one committed, so the assignment
//   watermark (report_assignment_id) never passes over an id still in flight (race 2 of §4.5);
// - takes (K, 3) exclusive: assignment writers are serial, as SQLite's single writer makes them,
//   so an assign or import decides its refusal against every assignment committed before it.
// Nothing marks hours dirty: as on SQLite, the planner finds new rows by the watermark. A preview
// writes nothing and takes no lock: it reads one REPEATABLE READ READ ONLY snapshot.

installInt8Parser();

/** (LEDGER_LOCK_KEY, 3): held by the transaction writing assignments (design §4.5) */
export const ASSIGNMENT_LOCK: readonly [number, number] = [LEDGER_LOCK_KEY, 3];

type Q = Pick<pg.PoolClient, "query">;

const COLUMNS = `id, target_type as "targetType", target_id as "targetId",
  customer_id as "customerId", effective_from as "effectiveFrom", created_at as "createdAt"`;

/** The ops of one assignment transaction on one client. */
export function pgAssignOps(client: Q): Async<AssignOps> {
  const plan = pgPlanOps(client);
  return {
    directory: () => plan.directory(),
    simsInFleets: (fleets) => plan.simsInFleets(fleets),
    fleetsOf: (sims) => plan.fleetsOf(sims),
    async usageOfSims(sims) {
      const r = await client.query<{ sim_sid: string; hour: number; bytes: number }>(
        `select sim_sid, hour, bytes from usage_hourly
          where sim_sid = any($1::text[]) and bytes <> 0
          order by sim_sid collate "C", hour`,
        [[...sims]],
      );
      const out = new Map<string, HourBytes[]>(sims.map((s) => [s, []]));
      for (const x of r.rows) out.get(x.sim_sid)?.push({ hour: x.hour, bytes: x.bytes });
      return out;
    },
    async insert(rows) {
      if (rows.length === 0) return [];
      // Identity values are drawn in the order the rows are produced (by ordinality): sorting
      // what was inserted by id gives the rows back in the order given.
      const r = await client.query<Assignment>(
        `with ins as (
           insert into assignments (target_type, target_id, customer_id, effective_from, created_at)
           select c1, c2, c3, c4, c5
             from unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
                  with ordinality as u(c1, c2, c3, c4, c5, n)
            order by n
           returning *)
         select ${COLUMNS} from ins order by id`,
        [
          rows.map((x) => x.targetType),
          rows.map((x) => x.targetId),
          rows.map((x) => x.customerId),
          rows.map((x) => x.effectiveFrom),
          rows.map((x) => x.createdAt),
        ],
      );
      return r.rows;
    },
  };
}

export function pgAssignments(pool: pg.Pool): AssignmentsPort {
  /** one writing transaction: shared barrier (in BEGIN), then the assignment writers' lock */
  const write = <R>(steps: () => Steps<AssignOps, R>): Promise<R> =>
    withTx(
      pool,
      async (client) => {
        await client.query(
          `select pg_advisory_xact_lock(${ASSIGNMENT_LOCK[0]}, ${ASSIGNMENT_LOCK[1]})`,
        );
        return runAsync(steps(), pgAssignOps(client));
      },
      { barrier: "shared", retry: true },
    );
  return {
    async list() {
      const r = await pool.query<Assignment>(
        `select ${COLUMNS} from assignments
          order by target_type collate "C", target_id collate "C", effective_from, id`,
      );
      return r.rows;
    },
    preview: (added, now) =>
      withTx(pool, (client) => runAsync(previewSteps(added, now), pgAssignOps(client)), {
        barrier: "none",
        snapshot: true,
        retry: true,
      }),
    assign: (input, now, o) => write(() => assignSteps(input, now, o.rebill)),
    importRows: (targetType, rows, now, o) =>
      write(() => importSteps(targetType, rows, now, o.rebill)),
  };
}
