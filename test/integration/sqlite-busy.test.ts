import { createRequire } from "node:module";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { afterEach, describe, expect, it } from "vitest";
import { assignCustomer, previewMoves } from "../../src/customers/customers.ts";
import { openDb } from "../../src/db/client.ts";
import { sqliteLedger } from "../../src/ledger/sqlite/index.ts";
import { tempDir } from "../helpers/process.ts";

// A read-then-write transaction on the SQLite ledger must wait for another connection's write
// lock (the busy timeout), not fail. A deferred transaction that has read cannot: when the other
// connection commits, its snapshot is stale and its first write fails at once with SQLITE_BUSY.
// The console's assign preview failed so (500 "database is locked") while the worker's reporter
// wrote beside it. The other writer runs in a thread, as the worker does in `simmeter start`.

const HOUR = Date.UTC(2026, 10, 30, 10);
const SIM = `HS${"ab".repeat(16)}`;
const betterSqlite = createRequire(import.meta.url).resolve("better-sqlite3");

/** Another connection takes the write lock, writes, and commits after holdMs. */
function holdWriteLock(path: string, holdMs: number): Promise<{ done: Promise<void> }> {
  const worker = new Worker(
    `const { workerData, parentPort } = require("node:worker_threads");
     const Database = require(workerData.mod);
     const db = new Database(workerData.path, { timeout: 5000 });
     db.exec("BEGIN IMMEDIATE");
     db.prepare("insert into meta (key, value) values ('busy_probe', 1) on conflict (key) do update set value = value + 1").run();
     parentPort.postMessage("locked");
     Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, workerData.holdMs);
     db.exec("COMMIT");
     db.close();`,
    { eval: true, workerData: { mod: betterSqlite, path, holdMs } },
  );
  const done = new Promise<void>((resolve, reject) => {
    worker.once("error", reject);
    worker.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`exit ${code}`))));
  });
  return new Promise((resolve, reject) => {
    worker.once("message", () => resolve({ done }));
    worker.once("error", reject);
  });
}

describe("read-then-write transactions beside another SQLite writer", () => {
  const open: { close: () => void }[] = [];
  afterEach(() => {
    for (const o of open.splice(0)) o.close();
  });

  it("the assign preview waits for the other connection's commit and answers, instead of SQLITE_BUSY", async () => {
    const path = join(tempDir(), "busy.db");
    const db = openDb(path, { mode: "create" });
    open.push(db.$client);
    db.$client
      .prepare(
        "insert into sims (sim_sid, iccid, account_sid, first_seen_at, last_event_at) values (?, ?, ?, ?, ?)",
      )
      .run(SIM, "8901", "AC1", HOUR, HOUR);
    db.$client
      .prepare("insert into usage_hourly (hour, sim_sid, bytes) values (?, ?, ?)")
      .run(HOUR, SIM, 1000);
    await assignCustomer({
      ledger: sqliteLedger(db),
      input: {
        targetType: "sim",
        targetId: SIM,
        customerId: "cus_A",
        effectiveFrom: HOUR - 86_400_000,
      },
      now: HOUR - 86_400_000,
    });

    const other = await holdWriteLock(path, 300);
    const t0 = performance.now();
    const moves = await previewMoves(
      sqliteLedger(db),
      [{ targetType: "sim", targetId: SIM, customerId: "cus_B", effectiveFrom: HOUR }],
      HOUR + 3_600_000,
    );
    const waitedMs = performance.now() - t0;
    await other.done;

    expect(moves).toEqual([{ simSid: SIM, hour: HOUR, bytes: 1000, from: "cus_A", to: "cus_B" }]);
    // It waited for the lock (the other connection held it for 300 ms) rather than failing.
    expect(waitedMs).toBeGreaterThan(100);
    // The preview rolled back: only the one assignment exists; the other writer's row committed.
    expect(db.$client.prepare("select count(*) as n from assignments").get()).toEqual({ n: 1 });
    expect(db.$client.prepare("select value from meta where key = 'busy_probe'").get()).toEqual({
      value: 1,
    });
  });
});
