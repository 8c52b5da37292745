import type { CustomerBilling } from "../billing/periods.ts";
import type { Assignment, MeterReport, Sim } from "../db/schema.ts";
import type { IngestJobData } from "../ingest/job.ts";
import type { PruneResult } from "../ingest/prune.ts";
import type { IngestSummary } from "../ingest/summary.ts";
import type { IngestSettings } from "../ingest/unit-of-work.ts";
import type { PlanResult, PlanSettings } from "../reporting/outbox.ts";
import type { StripeDifference } from "../reporting/reconcile.ts";
import type { AssignmentsPort } from "./assignments-port.ts";
import type { ReadsPort } from "./reads-port.ts";
import type { ViewsPort } from "./views-port.ts";

// The storage port of the worker's path: ingest, planning, the outbox the reporter sends from,
// billing state, retention (docs/adr/0011-storage-port.md). Two adapters implement it:
// src/ledger/sqlite (better-sqlite3, the embedded default) and src/ledger/pg (node-postgres).
// Every method is one transaction of its own (or none, for a single statement). On SQLite a
// method's body runs synchronously inside the adapter and resolves at once: there is never an
// `await` inside a SQLite transaction. On PostgreSQL a method takes a pooled client for its
// transaction and retries it as a whole on a serialization failure, deadlock or lock timeout.

export type Dialect = "sqlite" | "postgres";

export type PlanRun = {
  now: number;
  settings: PlanSettings;
  /** nothing is written; SQLite reads outside a transaction, PostgreSQL in one read-only snapshot */
  dryRun?: boolean;
  /** usage rows planned per transaction (whole hours; at least one) */
  chunkRows?: number;
  /** billing state to stamp by instead of the stored one (a dry run with fresh lookups) */
  billing?: ReadonlyMap<string, CustomerBilling>;
};

/** The outbox rows the reporter sends, and the state changes of one row (each its own commit). */
export interface OutboxPort {
  /** pending rows, by customer, hour and seq */
  pending(): Promise<MeterReport[]>;
  /** stopped rows (a permanent error), by customer and hour */
  failed(): Promise<MeterReport[]>;
  /**
   * The row as it is now, when it is still pending; null otherwise. Read under the customer's
   * lease before a call: another reporter may have sent it, or counted another attempt (the
   * attempt count is part of the next call's Idempotency-Key).
   */
  pendingRow(identifier: string): Promise<MeterReport | null>;
  /** in doubt just before a call, only while still pending; false: do not send it */
  claimForCall(identifier: string, now: number): Promise<boolean>;
  markSent(identifier: string, now: number): Promise<void>;
  setInDoubt(identifier: string, inDoubt: boolean): Promise<void>;
  markUnconfirmed(identifier: string, now: number): Promise<void>;
  markFailed(identifier: string, reason: string): Promise<void>;
  recordAttempt(identifier: string, error: string): Promise<void>;
  /** stopped rows back to pending and their hours dirty; returns how many */
  retryFailed(): Promise<number>;
  /** folds sent rows of hours older than Stripe's window; returns the rows removed */
  compact(now: number, maxGroups?: number): Promise<number>;
  /** rows, value and late rows per state */
  status(): Promise<{ state: MeterReport["state"]; rows: number; value: number; late: number }[]>;
  /**
   * Every row (any state) whose own hour or whose timestamp falls in [from, to): what reconcile,
   * invoice parity and statements compare with the usage of those hours.
   */
  touching(from: number, to: number): Promise<MeterReport[]>;
  /**
   * `reconcile --repair`: each settled difference becomes an `observed` row (never sent) and its
   * hour dirty, in one durable transaction; an hour planned or sent since `comparedAt` is skipped.
   * Returns the rows written.
   */
  recordObserved(
    diffs: readonly StripeDifference[],
    now: number,
    comparedAt: number,
  ): Promise<MeterReport[]>;
}

export type AssignmentTarget = Pick<Assignment, "targetType" | "targetId">;

/** One usage row with the customer the history gives its hour (null: not mapped). */
export type OwnedUsage = { simSid: string; hour: number; bytes: number; customer: string | null };

export interface Ledger {
  readonly dialect: Dialect;
  /** the file path, or the URL with its password replaced: for messages and logs */
  readonly location: string;

  /** One job, one transaction; never throws for bad input (unusable events are quarantined). */
  ingestJob(
    job: IngestJobData,
    settings: IngestSettings,
    now: () => number,
  ): Promise<IngestSummary>;

  /**
   * Plans every dirty hour: the customer history's changes first, then chunks of hours, each its
   * own durable transaction, giving the event loop back between chunks.
   */
  plan(o: PlanRun): Promise<PlanResult>;

  readonly outbox: OutboxPort;

  readonly customers: {
    /** every customer some assignment names (the customers whose subscriptions are looked up) */
    billed(): Promise<string[]>;
    /**
     * Every usage row of the hours [from, to), zero rows included, each with the customer of its
     * hour by the assignment and fleet history (src/customers/resolve.ts).
     */
    usageOwned(from: number, to: number): Promise<OwnedUsage[]>;
    /**
     * usageOwned and outbox.touching of one range from one snapshot: what reconcile and invoice
     * parity compare (two reads apart, a planning pass in between would show a false drift).
     */
    accounts(from: number, to: number): Promise<{ usage: OwnedUsage[]; reports: MeterReport[] }>;
    /** the sims rows of these SIMs (ICCID, unique name, fleet), by SIM SID */
    sims(simSids: readonly string[]): Promise<Map<string, Sim>>;
    /**
     * The SIMs each assignment target covers, in the targets' order: a SIM (when seen), the SIMs
     * of an ICCID, every SIM ever seen in a fleet.
     */
    covered(targets: readonly AssignmentTarget[]): Promise<string[][]>;
  };

  /** customer assignments: list, preview, assign, import (src/ledger/assignments-port.ts) */
  readonly assignments: AssignmentsPort;

  /** what the read commands, /api and the console show (src/ledger/reads-port.ts) */
  readonly reads: ReadsPort;

  /** the outbox rows, counters and series of the operator pages (src/ledger/views-port.ts) */
  readonly views: ViewsPort;

  readonly billing: {
    load(): Promise<Map<string, CustomerBilling>>;
    /** replaces the stored billing state of these customers, in one transaction */
    store(rows: readonly CustomerBilling[]): Promise<void>;
  };

  readonly retention: {
    /**
     * Removes dedupe records, ended sessions and readings past retention, in batches (each its
     * own transaction). null: another process is pruning this ledger now (PostgreSQL).
     */
    prune(retentionDays: number, now: number): Promise<PruneResult | null>;
  };

  readonly admin: {
    /** "ok", or why the ledger cannot be used now (readiness); bounded by timeoutMs */
    ping(timeoutMs: number): Promise<string>;
    close(): Promise<void>;
  };
}
