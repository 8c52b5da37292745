import {
  type CustomerBilling,
  type HoldReason,
  periodOpenAt,
  type StampPolicy,
  stampFor,
} from "../billing/periods.ts";
import {
  type CustomerDirectory,
  type CustomerResolver,
  type DirectoryAssignment,
  resolverOver,
} from "../customers/customers.ts";
import { type FleetSource, loadedFleets, withHistories } from "../customers/fleets.ts";
import type { MeterReport } from "../db/schema.ts";
import { calls, type Steps } from "../ledger/steps.ts";
import { MAX_METER_VALUE, meterEventIdentifier, planHour } from "./plan.ts";

// Planning, written once (docs/design/postgres-ledger.md §2.5): the outbox rows that bring Stripe
// up to what is counted. A run is a sequence of transactions, each a step generator over PlanOps
// that the adapter runs in one transaction of its own (SQLite: IMMEDIATE with synchronous=FULL;
// PostgreSQL: the exclusive ledger barrier with synchronous_commit on): first the customer
// history's changes become dirty hours (and pending rows whose invoice closed are superseded),
// then chunks of whole dirty hours, about chunkRows usage rows each. planTransactions yields each
// transaction as a factory (a retried PostgreSQL transaction re-runs a fresh generator) and
// receives its result once committed; nothing outside a transaction's own result is changed by
// it. Every op is called at most once per transaction, with arrays: a ledger across a network
// costs the same round trips for one hour or a thousand.

export type PlanSettings = {
  /** the account's invoice finalization grace, seconds (Stripe's default 3600) */
  graceSeconds: number;
  /** a previous period's draft is used only if it finalizes at least this long after planning */
  marginSeconds?: number;
};

export const DEFAULT_MARGIN_SECONDS = 600;

export const policyOf = (s: PlanSettings): StampPolicy => ({
  graceMs: s.graceSeconds * 1000,
  marginMs: (s.marginSeconds ?? DEFAULT_MARGIN_SECONDS) * 1000,
});

/**
 * Usage rows planned per transaction (whole hours; at least one): bounds how long one planning
 * step holds the writer and the event loop (~20 ms on the benchmark machine).
 */
export const PLAN_CHUNK_ROWS = 2000;

/** meta key: the highest assignment id whose SIMs' hours were marked dirty */
export const ASSIGNMENT_MARK = "report_assignment_id";

export type PlannedRow = Pick<
  MeterReport,
  "identifier" | "customerId" | "hour" | "value" | "timestamp" | "late"
>;

export type PlanResult = {
  hours: number;
  rows: PlannedRow[];
  /** customer-hours with a stopped row: wait for `report --retry-failed` */
  heldBack: { customerId: string; hour: number }[];
  /** usage not sent because no invoice would carry it (no subscription, several, stale period) */
  held: { customerId: string; hour: number; bytes: number; reason: HoldReason; detail: string }[];
  /** pending rows replaced because the invoice their stamp pointed at closed before any call */
  superseded: number;
  unmappedBytes: number;
  /** customer-hours left unplanned, with the reason (a total beyond exact integers) */
  problems: string[];
};

/** a pending row not in doubt: what supersedeClosed decides on */
export type PendingRow = Pick<MeterReport, "identifier" | "customerId" | "hour" | "timestamp">;

/** an outbox row as the planner writes it */
export type NewReport = Pick<
  MeterReport,
  "identifier" | "customerId" | "hour" | "seq" | "value" | "timestamp" | "late" | "createdAt"
> & { state: "pending" };

export type UsageRow = { hour: number; simSid: string; bytes: number };

/** the outbox of an hour, summed per (hour, customer, state), with the highest seq */
export type ReportedSum = {
  hour: number;
  customerId: string;
  state: MeterReport["state"];
  value: number;
  seq: number;
};

/** The statement layer of planning. Arrays in, arrays (or maps) out. */
export interface PlanOps {
  /** a meta value, 0 when absent */
  meta(key: string): number;
  setMeta(key: string, value: number): void;
  /** rows in state pending and not in doubt */
  pendingNotInDoubt(): PendingRow[];
  /**
   * each row to state superseded with its reason, only while still pending and not in doubt (a
   * call may have started since it was read: such a row is re-sent, never replaced); returns the
   * identifiers actually changed
   */
  supersede(rows: readonly { identifier: string; reason: string }[]): string[];
  /** every dirty hour */
  dirtyHours(): number[];
  /** every SIM marked for a full re-plan */
  dirtySims(): string[];
  /** every assignment and SIM row (the resolver's directory) */
  directory(): CustomerDirectory;
  /** fleet → every SIM ever observed in it (every fleet asked for is a key) */
  simsInFleets(fleets: readonly string[]): Map<string, string[]>;
  /** the distinct hours with usage of these SIMs */
  hoursOfSims(sims: readonly string[]): number[];
  /** marks hours dirty (insert if absent) */
  markDirty(hours: readonly number[]): void;
  clearDirtySims(sims: readonly string[]): void;
  /** hour → usage rows in it (hours without any absent) */
  usageCounts(hours: readonly number[]): Map<number, number>;
  /** the usage rows of these hours, by hour then sim_sid (binary order) */
  usageOfHours(hours: readonly number[]): UsageRow[];
  /**
   * the fleets around these (SIM, hour) pairs (and their SIMs' rows), as a synchronous source
   * that answers for them only: PostgreSQL loads the hours `near` reads for each pair, SQLite reads
   * lazily in the transaction (and holds every whole history too)
   */
  fleetsNear(pairs: readonly { simSid: string; hour: number }[]): FleetSource;
  /**
   * the whole fleet histories of these SIMs (and their SIM rows), as a source that answers for
   * them only: the SIMs whose pairs the rules resolve over their whole history
   */
  fleetsOf(sims: readonly string[]): FleetSource;
  /** the outbox of these hours, per (hour, customer, state), by hour, customer, state */
  reportedOfHours(hours: readonly number[]): ReportedSum[];
  insertReports(rows: readonly NewReport[]): void;
  clearDirtyHours(hours: readonly number[]): void;
}

const op = calls<PlanOps>();

/** one transaction of a run: a fresh generator per attempt */
export type PlanTx<T> = () => Steps<PlanOps, T>;

export type PlanInput = {
  now: number;
  settings: PlanSettings;
  dryRun: boolean;
  chunkRows: number;
  billing: ReadonlyMap<string, CustomerBilling>;
};

type Collected = {
  superseded: number;
  hours: number[];
  counts: Map<number, number>;
  directory: CustomerDirectory;
};

type Chunk = Omit<PlanResult, "hours" | "superseded">;

/**
 * The SIMs an assignment's target covers: a SIM (when it has a row), an ICCID's SIMs, a fleet's
 * SIMs (members: every SIM ever observed in it).
 */
function simsOf(
  a: DirectoryAssignment,
  dir: CustomerDirectory,
  members: ReadonlyMap<string, readonly string[]>,
): string[] {
  return resolverOver(dir, loadedFleets({ fleetMembers: members })).simsFor(a);
}

/**
 * Step 1: supersedes the pending rows whose stamp no longer reaches an open invoice, turns what
 * changed the customer history (new assignments, SIMs whose fleet history changed) into dirty
 * hours, and returns every dirty hour in time order with its usage row count, and the directory
 * the chunks resolve by.
 *
 * One row, one request: a row's parameters are fixed when it is written. A pending row whose stamp
 * no longer reaches an open invoice (its draft finalized while the row waited) is superseded by a
 * new row with a new identifier, but only if no call can have let Stripe record it (every call so
 * far was refused outright, or none was made): otherwise Stripe may hold the event and a second
 * one could bill it twice.
 */
export function* collectSteps(o: PlanInput): Steps<PlanOps, Collected> {
  const dirty = new Set<number>();
  let superseded = 0;
  if (!o.dryRun) {
    const policy = policyOf(o.settings);
    const todo: { identifier: string; reason: string }[] = [];
    const hourOf = new Map<string, number>();
    for (const r of yield* op("pendingNotInDoubt")) {
      const b = o.billing.get(r.customerId);
      // Never looked up: nothing known yet. No (or several) items now: no invoice would carry it.
      if (!b || (b.state === "ok" && periodOpenAt(r.timestamp * 1000, o.now, b, policy))) continue;
      todo.push({
        identifier: r.identifier,
        reason:
          b.state === "ok"
            ? `superseded: the invoice for ${new Date(r.timestamp * 1000).toISOString()} closed before it was sent`
            : `superseded: ${b.detail ?? "no subscription item on the meter"}`,
      });
      hourOf.set(r.identifier, r.hour);
    }
    if (todo.length > 0) {
      // Only rows actually changed count, and only their hours are re-planned (race 1, §4.5).
      const changed = yield* op("supersede", todo);
      for (const id of changed) dirty.add(hourOf.get(id) as number);
      superseded = changed.length;
    }
  }
  const assignMark = yield* op("meta", ASSIGNMENT_MARK);
  const directory = yield* op("directory");
  const stored = yield* op("dirtyHours");
  const newAssignments = directory.assignments.filter((a) => a.id > assignMark);
  let maxAssign = assignMark;
  for (const a of newAssignments) maxAssign = Math.max(maxAssign, a.id);
  const fleets = [
    ...new Set(newAssignments.filter((a) => a.targetType === "fleet").map((a) => a.targetId)),
  ].sort();
  const members =
    fleets.length > 0 ? yield* op("simsInFleets", fleets) : new Map<string, string[]>();
  const moved = new Set<string>();
  for (const a of newAssignments) for (const s of simsOf(a, directory, members)) moved.add(s);
  const dirtySims = yield* op("dirtySims");
  for (const s of dirtySims) moved.add(s);
  // Their hours must be re-planned.
  const movedHours =
    moved.size > 0 ? yield* op("hoursOfSims", [...moved].sort()) : ([] as number[]);
  for (const h of movedHours) dirty.add(h);
  const had = new Set(stored);
  const added = [...dirty].filter((h) => !had.has(h)).sort((a, b) => a - b);
  if (!o.dryRun) {
    if (added.length > 0) yield* op("markDirty", added);
    if (dirtySims.length > 0) yield* op("clearDirtySims", dirtySims);
    yield* op("setMeta", ASSIGNMENT_MARK, maxAssign);
  }
  const hours = [...new Set([...stored, ...added])].sort((a, b) => a - b);
  const counts = hours.length > 0 ? yield* op("usageCounts", hours) : new Map<number, number>();
  return { superseded, hours, counts, directory };
}

/** The hours of the chunk starting at `from`: whole hours, ~budget usage rows, at least one. */
export function chunkHours(
  hours: readonly number[],
  from: number,
  counts: ReadonlyMap<number, number>,
  budget: number,
): number[] {
  const out: number[] = [];
  let rows = 0;
  for (let k = from; k < hours.length; k++) {
    if (out.length > 0 && rows >= budget) break;
    const hour = hours[k] as number;
    out.push(hour);
    rows += counts.get(hour) ?? 0;
  }
  return out;
}

/**
 * A resolver for these (SIM, hour) pairs: the fleets around each pair's hour, then the whole
 * histories of the few SIMs whose pairs the rules resolve over them (a SIM flapping between
 * fleets, an hour no assignment covers) (docs/design/postgres-ledger.md §4.7). On SQLite both
 * loads are lazy sources and the second is never asked for.
 */
export function* resolverSteps(
  directory: CustomerDirectory,
  pairs: readonly { simSid: string; hour: number }[],
): Steps<Pick<PlanOps, "fleetsNear" | "fleetsOf">, CustomerResolver> {
  let fleets = pairs.length > 0 ? yield* near("fleetsNear", pairs) : loadedFleets({});
  const wanted = resolverOver(directory, fleets).historiesWanted(pairs);
  if (wanted.length > 0) fleets = withHistories(fleets, yield* near("fleetsOf", wanted));
  return resolverOver(directory, fleets);
}

const near = calls<Pick<PlanOps, "fleetsNear" | "fleetsOf">>();

/** Step 2: the outbox rows for some dirty hours (one transaction per chunk of hours). */
export function* chunkSteps(
  o: PlanInput,
  directory: CustomerDirectory,
  hours: readonly number[],
): Steps<PlanOps, Chunk> {
  const out: Chunk = { rows: [], heldBack: [], held: [], unmappedBytes: 0, problems: [] };
  const usage = yield* op("usageOfHours", hours);
  const resolver = yield* resolverSteps(directory, usage);
  const reported = yield* op("reportedOfHours", hours);
  const usageAt = groupBy(usage);
  const reportedAt = groupBy(reported);
  const policy = policyOf(o.settings);
  const inserts: NewReport[] = [];
  const clear: number[] = [];
  for (const hour of hours) {
    const counted = new Map<string, number>();
    for (const u of usageAt.get(hour) ?? []) {
      const customer = resolver.resolve(u.simSid, hour);
      if (customer === null) out.unmappedBytes += u.bytes;
      else counted.set(customer, (counted.get(customer) ?? 0) + u.bytes);
    }
    const reportedOf = new Map<string, number>();
    const nextSeq = new Map<string, number>();
    const held = new Set<string>();
    for (const r of reportedAt.get(hour) ?? []) {
      nextSeq.set(r.customerId, Math.max(nextSeq.get(r.customerId) ?? 0, r.seq + 1));
      if (r.state === "failed") held.add(r.customerId);
      else if (r.state !== "superseded")
        reportedOf.set(r.customerId, (reportedOf.get(r.customerId) ?? 0) + r.value);
    }
    // A customer-hour beyond 2^53 - 1 bytes cannot be summed exactly here: hold it, loudly.
    for (const [customerId, v] of [...counted, ...reportedOf]) {
      if (!Number.isSafeInteger(v) && !held.has(customerId)) {
        held.add(customerId);
        out.problems.push(
          `${customerId} ${new Date(hour).toISOString()}: more than ${Number.MAX_SAFE_INTEGER} bytes in one hour cannot be reported exactly; held`,
        );
      }
    }
    const plan = planHour(counted, reportedOf, held);
    let waiting = false;
    for (const d of plan.deltas) {
      const stamp = stampFor(hour, o.now, o.billing.get(d.customerId), policy);
      if (stamp.kind === "hold") {
        // Nothing is sent that no invoice would carry; the hour stays dirty until it can be.
        out.held.push({
          customerId: d.customerId,
          hour,
          bytes: d.value,
          reason: stamp.reason,
          detail: stamp.detail,
        });
        waiting = true;
        continue;
      }
      // Stripe takes at most 15 significant digits per value: larger differences go as parts.
      let left = d.value;
      let seq = nextSeq.get(d.customerId) ?? 0;
      while (left !== 0) {
        const part = Math.sign(left) * Math.min(Math.abs(left), MAX_METER_VALUE);
        const row: NewReport = {
          identifier: meterEventIdentifier(d.customerId, hour, seq),
          customerId: d.customerId,
          hour,
          seq,
          value: part,
          timestamp: stamp.timestamp,
          late: stamp.late,
          state: "pending",
          createdAt: o.now,
        };
        inserts.push(row);
        out.rows.push(row);
        left -= part;
        seq++;
      }
    }
    for (const c of plan.heldBack) out.heldBack.push({ customerId: c, hour });
    if (plan.heldBack.length === 0 && held.size === 0 && !waiting) clear.push(hour);
  }
  if (!o.dryRun) {
    if (inserts.length > 0) yield* op("insertReports", inserts);
    if (clear.length > 0) yield* op("clearDirtyHours", clear);
  }
  return out;
}

function groupBy<T extends { hour: number }>(rows: readonly T[]): Map<number, T[]> {
  const out = new Map<number, T[]>();
  for (const r of rows) {
    const list = out.get(r.hour);
    if (list) list.push(r);
    else out.set(r.hour, [r]);
  }
  return out;
}

/**
 * A whole run: yields each transaction (step 1, then one per chunk) and receives its result once
 * the adapter has committed it; the generator itself yields between chunks, so an adapter that
 * gives the event loop back there never holds the writer, or the event loop, for long.
 */
export function* planTransactions(o: PlanInput): Generator<PlanTx<unknown>, PlanResult, unknown> {
  const first = (yield () => collectSteps(o)) as Collected;
  const result: PlanResult = {
    hours: first.hours.length,
    rows: [],
    heldBack: [],
    held: [],
    superseded: first.superseded,
    unmappedBytes: 0,
    problems: [],
  };
  for (let i = 0; i < first.hours.length; ) {
    const hours = chunkHours(first.hours, i, first.counts, o.chunkRows);
    const c = (yield () => chunkSteps(o, first.directory, hours)) as Chunk;
    for (const r of c.rows) result.rows.push(r);
    for (const h of c.heldBack) result.heldBack.push(h);
    for (const h of c.held) result.held.push(h);
    for (const p of c.problems) result.problems.push(p);
    result.unmappedBytes += c.unmappedBytes;
    i += hours.length;
  }
  return result;
}
