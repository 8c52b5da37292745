import { DAY_MS } from "../accounting/buckets.ts";
import type { Ledger } from "../ledger/port.ts";
import type { AnomalyRow, EventCountRow, QuarantineRow } from "../ledger/reads-port.ts";
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

/** Per SIM usage totals per hour, day, UTC month or in all, from the hourly read model. */
export function queryUsage(ledger: Ledger, q: UsageQuery): Promise<UsageRow[]> {
  return ledger.reads.usage(q);
}

/** The newest quarantine rows (newest first), without the requeue bookkeeping. */
export async function listQuarantine(ledger: Ledger, limit = 100): Promise<QuarantineRow[]> {
  return (await ledger.reads.quarantine({ limit })).map(({ counted: _counted, ...row }) => row);
}

export async function countQuarantine(ledger: Ledger): Promise<number> {
  return (await ledger.reads.counts()).quarantined;
}

export function listAnomalies(ledger: Ledger, limit = 100): Promise<AnomalyRow[]> {
  return ledger.reads.anomalies({ limit });
}

/** Non-billing events per SIM, UTC day and kind since sinceMs (default: the last 7 days), largest first. */
export function listEventCounts(
  ledger: Ledger,
  sinceMs: number = Date.now() - 7 * DAY_MS,
): Promise<EventCountRow[]> {
  return ledger.reads.eventCounts(sinceMs, 200);
}
