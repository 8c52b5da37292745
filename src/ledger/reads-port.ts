// The ledger's read side behind `simmeter usage|events|anomalies|quarantine` (and their views,
// shared with /api and the console): one interface, a SQLite and a PostgreSQL implementation
// (src/ledger/sqlite/reads.ts, src/ledger/pg/reads.ts). Domain shapes only: numbers for times
// (epoch ms), bytes and counts, booleans for flags, text ordered bytewise (SQLite's BINARY
// compare, PostgreSQL's collate "C"), so both answer the same rows in the same order and a
// paging cursor of one is valid on the other. Also the few writes of `quarantine requeue`
// (marking rows requeued), which belong with its reads.
import type { QuarantineFilter } from "../ingest/requeue.ts";
import type { UsageQuery, UsageRow } from "../usage/query.ts";

/** A quarantine row as stored. */
export type QuarantineRow = {
  id: number;
  receivedAt: number;
  source: string;
  deliveryId: string;
  /** index of the event in its delivery; -1 for a body that could not be split into events */
  position: number;
  eventSid: string | null;
  reason: string;
  raw: string;
  requeuedAt: number | null;
  requeues: number;
};

/** A quarantine row with whether its event_sid is in seen_events (null: it has none). */
export type CountedQuarantineRow = QuarantineRow & { counted: boolean | null };

/** What planRequeue needs of a selected quarantine row. */
export type RequeueCandidate = Pick<
  QuarantineRow,
  "id" | "deliveryId" | "position" | "eventSid" | "source" | "reason"
> & {
  /** its event_sid is in seen_events (false without an event_sid) */
  counted: boolean;
};

export type AnomalyRow = {
  id: number;
  sessionSid: string;
  eventSid: string;
  kind: string;
  detail: string;
  detectedAt: number;
};

export type AnomalyFilter = {
  kind?: string;
  /** detected at or after (epoch ms) */
  since?: number;
  /** keyset paging: ids below this one */
  beforeId?: number;
  limit: number;
};

export type EventCountRow = { simSid: string; day: number; kind: string; count: number };

/** A SIM with usage no customer assignment covers (unmappedUsage in src/customers/customers.ts). */
export type UnmappedUsage = {
  simSid: string;
  iccid: string | null;
  fleetSid: string | null;
  /** the bytes of its unmapped hours */
  bytes: number;
  /** its first and last unmapped hour, ISO 8601 */
  firstHour: string;
  lastHour: string;
};

export interface ReadsPort {
  /**
   * Per SIM usage per hour, day, UTC month or in total (periods as "2026-11-01T10:00:00Z",
   * "2026-11-01", "2026-11", "total"), non-zero sums only, ordered by SIM then period; `after`
   * continues after that (sim, period), `limit` caps the rows.
   */
  usage(q: UsageQuery): Promise<UsageRow[]>;

  /** Every SIM with unmapped usage, in no particular order (the view sorts). */
  unmapped(): Promise<UnmappedUsage[]>;

  /**
   * Quarantine rows the filter selects (ids, a case-insensitive ASCII substring of the reason,
   * received at or after), newest first, below `beforeId`, at most `limit`.
   */
  quarantine(
    f: QuarantineFilter & { limit: number; beforeId?: number },
  ): Promise<CountedQuarantineRow[]>;

  /** delivery id → the quarantine rows with that delivery id, oldest first (absent: none) */
  quarantineByDelivery(
    deliveryIds: readonly string[],
  ): Promise<Map<string, { id: number; reason: string }[]>>;

  /** Every quarantine row the filter selects, oldest first (planRequeue). */
  requeueCandidates(f: QuarantineFilter): Promise<RequeueCandidate[]>;

  /** those of these ids that are quarantine rows */
  quarantineIds(ids: readonly number[]): Promise<number[]>;

  /** id → raw event of these quarantine rows (absent: no such row) */
  quarantineRaw(ids: readonly number[]): Promise<Map<number, string>>;

  /** those of these event_sids that are in seen_events (counted) */
  countedSids(sids: readonly string[]): Promise<Set<string>>;

  /** requeued_at = now and requeues + 1 on these quarantine rows, in one transaction */
  markRequeued(rowIds: readonly number[], now: number): Promise<void>;

  /** Anomalies the filter selects, newest first. */
  anomalies(f: AnomalyFilter): Promise<AnomalyRow[]>;

  /** the distinct anomaly kinds, sorted */
  anomalyKinds(): Promise<string[]>;

  /** session → its SIM, for the sessions that exist */
  simsOfSessions(sessionSids: readonly string[]): Promise<Map<string, string>>;

  /**
   * Non-billing event counts per SIM, UTC day and kind from `sinceMs` on, largest first (ties by
   * SIM, day, kind), at most `limit`.
   */
  eventCounts(sinceMs: number, limit: number): Promise<EventCountRow[]>;

  /** rows in quarantine and anomalies recorded */
  counts(): Promise<{ quarantined: number; anomalies: number }>;
}

/**
 * A synchronous function as a port method: its result (or its throw) as a settled Promise. For
 * the SQLite adapter, whose files may not mention Promises (test/unit/steps.test.ts): the call
 * runs to its end before anything else can touch the connection.
 */
export function settled<A extends unknown[], R>(fn: (...a: A) => R): (...a: A) => Promise<R> {
  return (...a: A) => {
    try {
      return Promise.resolve(fn(...a));
    } catch (err) {
      return Promise.reject(err);
    }
  };
}
