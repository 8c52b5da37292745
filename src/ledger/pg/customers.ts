import { performance } from "node:perf_hooks";
import type pg from "pg";
import { pgUnmapped } from "./reads.ts";

// The unmapped-bytes gauge on PostgreSQL: the bytes `simmeter usage --unmapped` lists, summed,
// from the same read (src/ledger/pg/reads.ts pgUnmapped: a page of SIMs at a time, resolved by
// the SQLite resolver's rules over loaded fleet histories, one read-only snapshot).

/**
 * The bytes unmappedUsage() lists on SQLite, summed. workMs: the time the pass took, queries
 * included (the gauge spaces passes by it, which bounds the load on the server as well as on this
 * process).
 */
export async function pgUnmappedBytes(
  pool: pg.Pool,
  o: { pageSims?: number } = {},
): Promise<{ bytes: number; workMs: number }> {
  const started = performance.now();
  const list = await pgUnmapped(pool, o.pageSims);
  return { bytes: list.reduce((n, u) => n + u.bytes, 0), workMs: performance.now() - started };
}
