import pRetry from "p-retry";
import type pg from "pg";

// One PostgreSQL transaction of the ledger (docs/design/postgres-ledger.md §4.4, §4.5): one pooled
// client, BEGIN (READ COMMITTED), the ledger barrier as the transaction's first lock, the body,
// COMMIT. Lock conflicts the server resolves by aborting one side (serialization failure,
// deadlock, lock timeout) re-run the whole body: every unit of work here is safe to re-run from
// its pure inputs (dedupe makes a second claim of an event do nothing).

/** "SMLG" (simmeter ledger): the first key of every two-int advisory lock simmeter takes */
export const LEDGER_LOCK_KEY = 0x534d4c47;
/** (LEDGER_LOCK_KEY, 1): shared by ingest and assignment writers, exclusive for planning, prune, repair */
export const LEDGER_BARRIER: readonly [number, number] = [LEDGER_LOCK_KEY, 1];

/** serialization_failure, deadlock_detected, lock_not_available (lock_timeout, NOWAIT) */
export const RETRYABLE_CODES: ReadonlySet<string> = new Set(["40001", "40P01", "55P03"]);

export type Barrier = "shared" | "exclusive" | "none";

export type TxOptions = {
  barrier: Barrier;
  /** re-run the whole body on RETRYABLE_CODES (up to 5 attempts, 5 ms × 2ⁿ jittered, ≤ 200 ms) */
  retry?: boolean;
  /** called with the SQLSTATE before each re-run */
  onRetry?: (code: string) => void;
  /**
   * REPEATABLE READ READ ONLY instead of READ COMMITTED: every statement of fn sees one snapshot,
   * and nothing can be written (a dry run)
   */
  snapshot?: boolean;
};

// Constants only: BEGIN and the barrier go in one simple-protocol round trip.
const BEGIN: Record<Barrier, string> = {
  none: "begin isolation level read committed",
  shared: `begin isolation level read committed; select pg_advisory_xact_lock_shared(${LEDGER_BARRIER[0]}, ${LEDGER_BARRIER[1]})`,
  exclusive: `begin isolation level read committed; select pg_advisory_xact_lock(${LEDGER_BARRIER[0]}, ${LEDGER_BARRIER[1]})`,
};

const BEGIN_SNAPSHOT: Record<Barrier, string> = {
  none: "begin isolation level repeatable read read only",
  shared: `begin isolation level repeatable read read only; select pg_advisory_xact_lock_shared(${LEDGER_BARRIER[0]}, ${LEDGER_BARRIER[1]})`,
  exclusive: `begin isolation level repeatable read read only; select pg_advisory_xact_lock(${LEDGER_BARRIER[0]}, ${LEDGER_BARRIER[1]})`,
};

/** the SQLSTATE of a server error, else undefined (a network or client error) */
export function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

export function isRetryable(err: unknown): boolean {
  const code = sqlState(err);
  return code !== undefined && RETRYABLE_CODES.has(code);
}

/** One attempt: BEGIN, barrier, fn, COMMIT; ROLLBACK on any error; the client always released. */
async function attempt<T>(
  pool: pg.Pool,
  fn: (client: pg.PoolClient) => Promise<T>,
  barrier: Barrier,
  snapshot = false,
): Promise<T> {
  const client = await pool.connect();
  // An error on an idle checked-out client (the server went away) must not crash the process:
  // the pending query fails with it and the client is destroyed below.
  const onError = () => {};
  client.on("error", onError);
  let broken = false;
  try {
    await client.query((snapshot ? BEGIN_SNAPSHOT : BEGIN)[barrier]);
    const result = await fn(client);
    await client.query("commit");
    return result;
  } catch (err) {
    // A server error leaves the session usable once rolled back; anything else (a lost
    // connection, a protocol error, a COMMIT whose outcome is unknown) discards the client.
    if (sqlState(err) === undefined) broken = true;
    if (!broken) {
      try {
        await client.query("rollback");
      } catch {
        broken = true;
      }
    }
    throw err;
  } finally {
    client.off("error", onError);
    client.release(broken ? true : undefined);
  }
}

/**
 * Runs fn(client) in one READ COMMITTED transaction (REPEATABLE READ READ ONLY with `snapshot`)
 * that takes the ledger barrier first. With
 * `retry`, a serialization failure, deadlock or lock timeout rolls back and runs fn again from
 * the start (fn must compute everything it writes inside the transaction); anything else rolls
 * back and is thrown.
 */
export async function withTx<T>(
  pool: pg.Pool,
  fn: (client: pg.PoolClient) => Promise<T>,
  opts: TxOptions,
): Promise<T> {
  if (!opts.retry) return attempt(pool, fn, opts.barrier, opts.snapshot);
  return pRetry(() => attempt(pool, fn, opts.barrier, opts.snapshot), {
    retries: 4,
    minTimeout: 5,
    factor: 2,
    maxTimeout: 200,
    randomize: true,
    shouldRetry: ({ error }) => {
      if (!isRetryable(error)) return false;
      opts.onRetry?.(sqlState(error) as string);
      return true;
    },
  });
}
