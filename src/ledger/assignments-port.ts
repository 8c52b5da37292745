import type {
  Assigned,
  AssignInput,
  AssignPreview,
  ImportResult,
  ImportRow,
} from "../customers/customers.ts";
import type { TargetType } from "../customers/resolve.ts";
import type { Assignment } from "../db/schema.ts";

// Customer assignments behind `simmeter customers …` (list, preview, assign, import), the
// console's assign page and GET /api/customers: one interface, a SQLite and a PostgreSQL
// implementation (src/ledger/sqlite/assignments.ts, src/ledger/pg/assignments.ts). What is decided
// (the moves a change makes, the refusal, the unchanged rows of an import) is written once, as the
// step bodies in src/customers/customers.ts (previewSteps, assignSteps, importSteps); the adapters
// only run them in a transaction of their own. Assignment writers are serial on both (SQLite: one
// IMMEDIATE writer; PostgreSQL: the shared ledger barrier and the lock (K, 3)), so a refusal is
// decided against every assignment committed before it.

export interface AssignmentsPort {
  /** every assignment, by target type, target id (binary order), effective time and id */
  list(): Promise<Assignment[]>;

  /**
   * What adding these assignments would move (usage changing customer) and bill (unmapped usage
   * gaining one), from one consistent read; nothing is written. Inputs are not validated.
   */
  preview(added: readonly AssignInput[], now: number): Promise<AssignPreview>;

  /**
   * One transaction: adds the assignment unless it would move counted usage to another customer
   * and `rebill` is not set (throws RebillRequired, listing the SIMs, customers, hours and bytes;
   * nothing written). An invalid input throws InputError. The planner finds the new row by the
   * assignment watermark and re-plans its SIMs' hours.
   */
  assign(input: AssignInput, now: number, o: { rebill: boolean }): Promise<Assigned>;

  /**
   * One transaction: the valid rows of a CSV import, of one target type. Rows already in effect
   * are counted unchanged; the others are added, or none of them when they would move usage and
   * `rebill` is not set (the result then holds the refusal as its error, and the moves).
   */
  importRows(
    targetType: TargetType,
    rows: readonly ImportRow[],
    now: number,
    o: { rebill: boolean },
  ): Promise<ImportResult>;
}

/** The port's methods as synchronous bodies (the SQLite adapter's). */
export type SyncAssignments = {
  [K in keyof AssignmentsPort]: (
    ...a: Parameters<AssignmentsPort[K]>
  ) => Awaited<ReturnType<AssignmentsPort[K]>>;
};

/**
 * Wraps each synchronous body (one transaction at most) in a settled Promise: it has finished,
 * committed or rolled back, before the caller's next microtask, so nothing can run a statement
 * inside its transaction.
 */
export function settledAssignments(sync: SyncAssignments): AssignmentsPort {
  const settle =
    <A extends unknown[], R>(fn: (...a: A) => R) =>
    (...a: A): Promise<R> => {
      try {
        return Promise.resolve(fn(...a));
      } catch (err) {
        return Promise.reject(err);
      }
    };
  return {
    list: settle(sync.list),
    preview: settle(sync.preview),
    assign: settle(sync.assign),
    importRows: settle(sync.importRows),
  };
}
