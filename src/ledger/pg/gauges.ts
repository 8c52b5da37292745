import type pg from "pg";
import type { LedgerGaugeReads } from "../../observability/ledger-gauges.ts";
import { pgUnmappedBytes } from "./customers.ts";

// The ledger gauges' reads on PostgreSQL: the same figures as sqliteGaugeReads
// (src/observability/ledger-gauges.ts), each one statement through the pool.

export function pgGaugeReads(pool: pg.Pool): LedgerGaugeReads {
  return {
    unreported: async () =>
      (
        await pool.query<{ state: string; bytes: number }>(
          `select state, coalesce(sum(value), 0)::bigint as bytes from meter_reports
           where kind = 'usage' and state in ('pending', 'failed') group by state`,
        )
      ).rows,
    oldestPendingAt: async () =>
      (
        await pool.query<{ t: number | null }>(
          "select min(created_at) as t from meter_reports where state = 'pending'",
        )
      ).rows[0]?.t ?? null,
    quarantineRows: async () =>
      (await pool.query<{ n: number }>("select count(*)::bigint as n from quarantine")).rows[0]
        ?.n ?? 0,
    unmappedBytes: () => pgUnmappedBytes(pool),
  };
}
