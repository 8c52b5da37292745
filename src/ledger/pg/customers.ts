import { performance } from "node:perf_hooks";
import type pg from "pg";
import { resolverOver } from "../../customers/customers.ts";
import { pgPlanOps } from "./plan.ts";

// Customer questions answered on PostgreSQL with the same resolver as SQLite (resolverOver over
// loaded fleet histories: a SIM that was not loaded throws, it never resolves to "no customer").

/** SIMs resolved per round: their usage and whole fleet histories are read together */
export const UNMAPPED_PAGE_SIMS = 200;

/**
 * The bytes unmappedUsage() lists on SQLite, summed: every SIM-hour with usage resolved to its
 * customer, a page of SIMs at a time (the directory read once). Usage ingested during the pass may
 * or may not be included. workMs: the time the pass took, queries included (the gauge spaces
 * passes by it, which bounds the load on the server as well as on this process).
 */
export async function pgUnmappedBytes(
  pool: pg.Pool,
  o: { pageSims?: number } = {},
): Promise<{ bytes: number; workMs: number }> {
  const started = performance.now();
  const pageSims = o.pageSims ?? UNMAPPED_PAGE_SIMS;
  const ops = pgPlanOps(pool);
  const dir = await ops.directory();
  let bytes = 0;
  let after = "";
  for (;;) {
    const page = (
      await pool.query<{ sim_sid: string }>(
        `select distinct sim_sid collate "C" as sim_sid from usage_hourly
          where sim_sid collate "C" > $1 order by 1 limit $2`,
        [after, pageSims],
      )
    ).rows.map((r) => r.sim_sid);
    if (page.length === 0) break;
    after = page[page.length - 1] as string;
    const usage = await pool.query<{ sim_sid: string; hour: number; bytes: number }>(
      `select sim_sid, hour, bytes from usage_hourly
        where sim_sid = any($1::text[]) and bytes <> 0
        order by sim_sid collate "C", hour`,
      [page],
    );
    const resolver = resolverOver(dir, await ops.fleetsOf(page));
    const bySim = new Map<string, { hour: number; bytes: number }[]>();
    for (const r of usage.rows) {
      const list = bySim.get(r.sim_sid) ?? [];
      list.push({ hour: r.hour, bytes: r.bytes });
      bySim.set(r.sim_sid, list);
    }
    for (const [sim, rows] of bySim) {
      const customers = resolver.resolveHours(
        sim,
        rows.map((r) => r.hour),
      );
      rows.forEach((r, i) => {
        if (customers[i] === null) bytes += r.bytes;
      });
    }
  }
  return { bytes, workMs: performance.now() - started };
}
