import type pg from "pg";
import { resolverOver } from "../../customers/customers.ts";
import { loadedFleets } from "../../customers/fleets.ts";
import { installInt8Parser } from "../../db/pg/client.ts";
import type { MeterReport, Sim } from "../../db/schema.ts";
import { resolverSteps } from "../../reporting/plan-steps.ts";
import type { AssignmentTarget, OwnedUsage } from "../port.ts";
import { runAsync } from "../steps.ts";
import { touchingOn } from "./outbox.ts";
import { pgPlanOps } from "./plan.ts";
import { withTx } from "./tx.ts";

// What reconcile, invoice parity and statements read on PostgreSQL besides the outbox
// (src/ledger/sqlite/accounts.ts on SQLite): the same rows, the same customers.

installInt8Parser();

type Q = Pick<pg.PoolClient, "query">;

/** the usage rows of [from, to) by hour then SIM, each resolved, on the client's snapshot */
async function usageOwnedOn(c: Q, from: number, to: number): Promise<OwnedUsage[]> {
  const usage = await c.query<{ simSid: string; hour: number; bytes: number }>(
    `select sim_sid as "simSid", hour, bytes from usage_hourly
      where hour >= $1 and hour < $2
      order by hour, sim_sid collate "C"`,
    [from, to],
  );
  if (usage.rows.length === 0) return [];
  const ops = pgPlanOps(c);
  const resolver = await runAsync(resolverSteps(await ops.directory(), usage.rows), ops);
  return usage.rows.map((u) => ({ ...u, customer: resolver.resolve(u.simSid, u.hour) }));
}

/**
 * The usage rows of [from, to) with each hour's customer. One REPEATABLE READ READ ONLY snapshot:
 * the usage, the assignments and the fleet histories it is resolved by are of one instant.
 */
export function usageOwnedPg(pool: pg.Pool, from: number, to: number): Promise<OwnedUsage[]> {
  return withTx(pool, (c) => usageOwnedOn(c, from, to), { barrier: "none", snapshot: true });
}

/** usageOwnedPg and the outbox rows touching the range, from one snapshot */
export function accountsPg(
  pool: pg.Pool,
  from: number,
  to: number,
): Promise<{ usage: OwnedUsage[]; reports: MeterReport[] }> {
  return withTx(
    pool,
    async (c) => ({
      usage: await usageOwnedOn(c, from, to),
      reports: await touchingOn(c, from, to),
    }),
    { barrier: "none", snapshot: true },
  );
}

/** The SIMs each target covers (coveredSqlite on SQLite), from one snapshot. */
export function coveredPg(
  pool: pg.Pool,
  targets: readonly AssignmentTarget[],
): Promise<string[][]> {
  return withTx(
    pool,
    async (c) => {
      const ops = pgPlanOps(c);
      const fleets = [
        ...new Set(targets.filter((t) => t.targetType === "fleet").map((t) => t.targetId)),
      ];
      const members = fleets.length > 0 ? await ops.simsInFleets(fleets) : new Map();
      const resolver = resolverOver(await ops.directory(), loadedFleets({ fleetMembers: members }));
      return targets.map((t) => resolver.simsFor(t));
    },
    { barrier: "none", snapshot: true },
  );
}

export async function simsPg(pool: pg.Pool, simSids: readonly string[]): Promise<Map<string, Sim>> {
  const r = await pool.query<Sim>(
    `select sim_sid as "simSid", iccid, fleet_sid as "fleetSid", unique_name as "uniqueName",
            account_sid as "accountSid", first_seen_at as "firstSeenAt",
            last_event_at as "lastEventAt"
       from sims where sim_sid = any($1::text[])`,
    [[...new Set(simSids)]],
  );
  return new Map(r.rows.map((s) => [s.simSid, s]));
}
