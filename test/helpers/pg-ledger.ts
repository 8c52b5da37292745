import { spawn } from "node:child_process";
import { resolve } from "node:path";
import type { Queue } from "bullmq";
import pg from "pg";
import { freePort } from "../../scripts/lib/redis-server.ts";
import { type SimmeterProcess, waitFor } from "./process.ts";

// Reading a PostgreSQL ledger from a test while simmeter processes write it: the PostgreSQL
// counterparts of readDb / usageOf (test/helpers/process.ts) and waitDrained
// (test/drills/drill-helpers.ts). bigint columns come back as strings from node-postgres; every
// figure here is converted with Number (the ledger refuses values beyond 2^53 - 1 anyway).

export type PgLedgerReader = {
  query: <T = Record<string, unknown>>(sql: string, params?: unknown[]) => Promise<T[]>;
  /** one number from a one-row, one-column query (count, sum): null as 0 */
  scalar: (sql: string, params?: unknown[]) => Promise<number>;
  /** usage_hourly in usageOf's shape: `${sim}@${ISO hour}` → bytes, zeros left out */
  usage: () => Promise<Record<string, number>>;
  /**
   * counted usage per customer per hour (ISO) through the ledger's own per-SIM assignments
   * (target_type sim; the latest effective_from at or before the hour wins), zeros left out
   */
  usageByCustomerHour: () => Promise<Record<string, Record<string, number>>>;
  /** meter_reports in state sent, summed per customer (kind usage and observed alike) */
  sentByCustomer: () => Promise<Record<string, number>>;
  close: () => Promise<void>;
};

export function pgLedgerReader(url: string): PgLedgerReader {
  const pool = new pg.Pool({
    connectionString: url,
    max: 2,
    application_name: "simmeter-test-reader",
    allowExitOnIdle: true,
  });
  const query = async <T>(sql: string, params: unknown[] = []) =>
    (await pool.query(sql, params)).rows as T[];
  return {
    query,
    scalar: async (sql, params) => {
      const row = (await query<Record<string, unknown>>(sql, params))[0];
      const v = row ? Object.values(row)[0] : null;
      return v === null || v === undefined ? 0 : Number(v);
    },
    usage: async () => {
      const rows = await query<{ sim_sid: string; hour: string; bytes: string }>(
        "select sim_sid, hour, bytes from usage_hourly where bytes <> 0 order by sim_sid, hour",
      );
      return Object.fromEntries(
        rows.map((r) => [
          `${r.sim_sid}@${new Date(Number(r.hour)).toISOString()}`,
          Number(r.bytes),
        ]),
      );
    },
    usageByCustomerHour: async () => {
      const rows = await query<{ customer_id: string; hour: string; bytes: string }>(
        `select a.customer_id, u.hour, sum(u.bytes) as bytes
           from usage_hourly u
           join lateral (
             select customer_id from assignments
              where target_type = 'sim' and target_id = u.sim_sid and effective_from <= u.hour
              order by effective_from desc, id desc limit 1
           ) a on true
          group by a.customer_id, u.hour
         having sum(u.bytes) <> 0
          order by a.customer_id, u.hour`,
      );
      const out: Record<string, Record<string, number>> = {};
      for (const r of rows) {
        const c = out[r.customer_id] ?? {};
        c[new Date(Number(r.hour)).toISOString()] = Number(r.bytes);
        out[r.customer_id] = c;
      }
      return out;
    },
    sentByCustomer: async () => {
      const rows = await query<{ customer_id: string; value: string }>(
        `select customer_id, sum(value) as value from meter_reports
          where state = 'sent' group by customer_id order by customer_id`,
      );
      return Object.fromEntries(rows.map((r) => [r.customer_id, Number(r.value)]));
    },
    close: () => pool.end(),
  };
}

/** Per-SIM assignments (target_type sim), inserted directly: `simmeter customers assign` reads SQLite only. */
export async function insertSimAssignments(
  reader: PgLedgerReader,
  customers: Record<string, string>,
  effectiveFrom: number,
  now: number,
): Promise<void> {
  const sims = Object.keys(customers).sort();
  await reader.query(
    `insert into assignments (target_type, target_id, customer_id, effective_from, created_at)
     select 'sim', s, c, $3, $4 from unnest($1::text[], $2::text[]) as t(s, c)`,
    [sims, sims.map((s) => customers[s]), effectiveFrom, now],
  );
}

/**
 * Waits until the ingest queue holds nothing waiting, active, delayed or prioritized and the
 * ledger has stopped changing (usage, quarantine and dedupe records identical over two
 * consecutive polls).
 */
export async function waitDrainedPg(queue: Queue, reader: PgLedgerReader, timeoutMs: number) {
  let last = "";
  await waitFor(
    async () => {
      const d = await queue.getJobCounts("waiting", "active", "delayed", "prioritized");
      const idle = Object.values(d).every((n) => n === 0);
      const snapshot = idle
        ? JSON.stringify([
            await reader.usage(),
            await reader.scalar("select count(*) from quarantine"),
            await reader.scalar("select count(*) from seen_events"),
          ])
        : "";
      const stable = idle && snapshot === last;
      last = snapshot;
      return stable;
    },
    "ingest queue drained and the PostgreSQL ledger stable",
    timeoutMs,
    300,
  );
}

const BIN = resolve(import.meta.dirname, "../../bin/simmeter.mjs");

/**
 * `simmeter work` as a child process, up once it announces "ingest worker running": like
 * startSimmeter("work", …) (test/helpers/process.ts) with a deadline of its own (a worker that
 * restarts on a loaded 2-core machine may take longer than 30 s) and, past it, the child killed
 * rather than left behind.
 */
export async function startWorker(
  env: Record<string, string>,
  timeoutMs = 90_000,
): Promise<SimmeterProcess> {
  const port = await freePort();
  const adminPort = await freePort();
  const fullEnv = {
    LOG_LEVEL: "info",
    HOST: "127.0.0.1",
    ...env,
    PORT: String(port),
    ADMIN_PORT: String(adminPort),
  };
  const child = spawn(process.execPath, [BIN, "work"], {
    env: { ...process.env, ...fullEnv },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout?.on("data", (d) => {
    out += d;
  });
  child.stderr?.on("data", (d) => {
    out += d;
  });
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await exited;
    }
  };
  try {
    await waitFor(
      () => child.exitCode !== null || out.includes("ingest worker running"),
      `simmeter work (admin port ${adminPort})`,
      timeoutMs,
      100,
    );
  } catch (err) {
    await kill();
    throw new Error(`${(err as Error).message}\n${out.slice(-3000)}`);
  }
  if (child.exitCode !== null) throw new Error(`simmeter work exited (${child.exitCode}):\n${out}`);
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    adminPort,
    env: fullEnv,
    child,
    output: () => out,
    kill,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 15_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}
