import { randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, inject, it } from "vitest";
import { WORKER_THREAD_KIND } from "../../src/runtime/thread-protocol.ts";
import { openTestLedger, type TestLedger } from "../helpers/ledger.ts";
import { startSimmeter, tempDir, waitFor } from "../helpers/process.ts";
import { EVENT_NAME } from "../helpers/reporting.ts";
import { assignSimVia, recentSession } from "../helpers/seed.ts";
import { emulatorWithMeter, stripeEnv } from "../helpers/stripe.ts";

// `simmeter start` runs the receiver on the main thread and the worker role (ingest worker,
// reporter, prune) in a worker thread of the same process (src/runtime/worker-host.ts). Each
// test's process runs on a ledger of the vitest project (a SQLite file or a PostgreSQL database,
// its `env` given to the process), read with `sql`.

const HOUR = 3_600_000;

/** One data session of a SIM in the last hours: `n` readings, 1,000 more bytes each. */
const session = (simSid: string, n: number) => ({
  events: recentSession(simSid, n),
  bytes: n * 1000,
});

const seen = async (t: TestLedger) =>
  (await t.sql<{ n: number }>("select count(*) as n from seen_events"))[0]?.n ?? 0;

const post = (url: string, events: unknown[]) =>
  fetch(`${url}/webhooks/event-streams`, { method: "POST", body: JSON.stringify(events) });

/** Every line the process wrote is one JSON object (pino), whichever thread logged it. */
function logLines(output: string): Record<string, unknown>[] {
  return output
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        throw new Error(`not a JSON log line: ${l}`);
      }
    });
}

function sample(metrics: string, pattern: RegExp): number {
  let sum = 0;
  for (const line of metrics.split("\n")) {
    const m = pattern.exec(line);
    if (m) sum += Number(m[1]);
  }
  return sum;
}

describe("simmeter start: receiver on the main thread, worker role in a worker thread", () => {
  const emu = emulatorWithMeter();

  it("acknowledges and counts a delivery, reports it, shows both threads' metrics on /metrics, and exits 0 on SIGTERM within the deadline", async () => {
    const t = await openTestLedger({ file: true });
    const simSid = `HS${"5".repeat(32)}`;
    const customer = "cus_split";
    await assignSimVia(t.ledger, {
      sim: simSid,
      customer,
      effectiveFrom: Date.now() - 48 * HOUR,
    });
    const shutdownMs = 5000;
    const app = await startSimmeter("start", {
      REDIS_URL: inject("redisUrl"),
      REDIS_PREFIX: `split${randomUUID().slice(0, 8)}`,
      ...t.env,
      ALLOW_UNSIGNED: "true",
      LOG_LEVEL: "info",
      ...stripeEnv(emu()),
      REPORT_INTERVAL_SECONDS: "1",
      SHUTDOWN_TIMEOUT_MS: String(shutdownMs),
    });
    let stopped = false;
    try {
      const { events, bytes } = session(simSid, 3);
      const res = await post(app.url, events);
      expect(res.status).toBe(200);
      expect(((await res.json()) as { accepted: number }).accepted).toBe(3);
      await waitFor(
        async () => (await seen(t)) === 3,
        "the delivery's 3 events counted",
        30_000,
        100,
      );
      await waitFor(
        () => emu().totalsByCustomer(EVENT_NAME).get(customer) === bytes,
        "the usage reported to Stripe",
        30_000,
        100,
      );
      // The gauge is set after the run's summary; the report calls before it.
      let metrics = "";
      await waitFor(
        async () => {
          metrics = await (await fetch(`${app.adminUrl}/metrics`)).text();
          return sample(metrics, /^simmeter_report_last_success_timestamp_seconds (\S+)$/) > 0;
        },
        "the reporter's last-success gauge on /metrics",
        15_000,
        200,
      );

      // Receiver families (main thread) …
      expect(
        sample(
          metrics,
          /^simmeter_deliveries_total\{outcome="accepted",source="unsigned"\} (\d+)$/,
        ),
      ).toBe(1);
      expect(metrics).toMatch(/^simmeter_queue_depth\{state="waiting"\} \d+$/m);
      expect(metrics).toMatch(/^process_start_time_seconds \d+/m);
      // … and worker families (worker thread), with the worker's values.
      expect(
        sample(metrics, /^simmeter_ingested_events_total\{outcome="counted",[^}]*\} (\d+)$/),
      ).toBe(3);
      expect(sample(metrics, /^simmeter_ingest_lag_seconds_count (\d+)$/)).toBe(3);
      expect(sample(metrics, /^simmeter_stripe_calls_total\{outcome="sent"\} (\d+)$/)).toBe(1);
      // A labelled gauge only the reporter sets (the receiver's copy of the family has no series).
      expect(metrics).toMatch(/^simmeter_unbilled_bytes\{reason="[a-z_]+"\} \d+$/m);
      // One exposition: no family twice (Prometheus refuses a repeated HELP/TYPE).
      const helps = metrics.split("\n").filter((l) => l.startsWith("# HELP "));
      expect(new Set(helps).size).toBe(helps.length);

      const logs = logLines(app.output());
      const workerLines = logs.filter((l) => l.thread === "worker");
      expect(workerLines.map((l) => l.msg)).toContain("ingest worker running");
      // Same process: the thread's lines carry the receiver's pid.
      expect(new Set(logs.map((l) => l.pid))).toEqual(new Set([app.child.pid]));

      const t0 = Date.now();
      const code = await app.stop();
      stopped = true;
      const tookMs = Date.now() - t0;
      expect(code).toBe(0);
      // Exit 0 already means every part closed within SHUTDOWN_TIMEOUT_MS (else it exits 1);
      // this bounds the process as a whole, with room for a slow shared machine.
      expect(tookMs).toBeLessThan(shutdownMs + 3000);
      const after = logLines(app.output());
      expect(after.filter((l) => l.msg === "shutdown deadline passed; continuing")).toEqual([]);
    } finally {
      if (!stopped) await app.stop();
    }
  }, 90_000);

  for (const mode of ["throw", "exit"] as const) {
    it(`exits non-zero, refusing deliveries, when the worker thread dies (${mode === "throw" ? "an uncaught error" : "the thread exits"}); what it acknowledged is counted after a restart`, async () => {
      const t = await openTestLedger({ file: true });
      const dir = tempDir();
      const trigger = join(dir, "crash-now");
      // Injected with --require, which Node also runs in every worker thread (--import is not),
      // tsx's loader thread included: only in simmeter's worker thread (its workerData names
      // it), once the trigger file exists, the thread dies.
      const preload = join(dir, "crash-worker-thread.cjs");
      writeFileSync(
        preload,
        `const { workerData } = require("node:worker_threads");
const { existsSync } = require("node:fs");
if (workerData && workerData.kind === ${JSON.stringify(WORKER_THREAD_KIND)}) {
  const timer = setInterval(() => {
    if (!existsSync(${JSON.stringify(trigger)})) return;
    clearInterval(timer);
    ${mode === "throw" ? 'throw new Error("injected failure in the worker thread");' : "process.exit(0);"}
  }, 50);
  timer.unref();
}
`,
      );
      const env = {
        REDIS_URL: inject("redisUrl"),
        REDIS_PREFIX: `crash${randomUUID().slice(0, 8)}`,
        ...t.env,
        ALLOW_UNSIGNED: "true",
        LOG_LEVEL: "info",
        // A job the dead thread held is retried once its lock expires and the stalled check runs:
        // short ones, so the restart picks it up within the test's wait (defaults: 30 s each).
        WORKER_LOCK_MS: "2000",
        WORKER_STALLED_INTERVAL_MS: "1000",
      };
      const app = await startSimmeter("start", {
        ...env,
        NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --require ${preload}`.trim(),
      });
      const exited = new Promise<number | null>((r) => {
        if (app.child.exitCode !== null) r(app.child.exitCode);
        else app.child.once("exit", (c) => r(c));
      });
      let acked = 0;
      try {
        const first = session(`HS${"6".repeat(32)}`, 2);
        expect((await post(app.url, first.events)).status).toBe(200);
        acked += first.events.length;
        await waitFor(async () => (await seen(t)) === 2, "the first delivery counted", 30_000, 100);

        // Acknowledged just before the crash: counted or not by then, it must not be lost.
        const second = session(`HS${"8".repeat(32)}`, 2);
        expect((await post(app.url, second.events)).status).toBe(200);
        acked += second.events.length;
        writeFileSync(trigger, "");
        await waitFor(
          () => app.output().includes("worker thread stopped"),
          "the crash reported",
          15_000,
          20,
        );
        // From the moment the thread is gone, nothing is acknowledged: 503 (retry later) while
        // the receiver closes, then no connection at all.
        const late = session(`HS${"7".repeat(32)}`, 1);
        const status = await post(app.url, late.events).then(
          (r) => r.status,
          () => "refused",
        );
        expect(status).not.toBe(200);

        const code = await exited;
        expect(code).not.toBe(0);
        expect(code).not.toBeNull();
        const fatal = logLines(app.output()).filter(
          (l) => l.level === 60 && String(l.msg).startsWith("worker thread stopped"),
        );
        expect(fatal).toHaveLength(1);
        if (mode === "throw") expect(fatal[0]?.err).toBe("injected failure in the worker thread");
        else expect(fatal[0]?.exitCode).toBe(0);
      } finally {
        await app.stop();
      }
      // Whatever the crashed process acknowledged waits in Redis and is counted by its successor.
      const again = await startSimmeter("start", env);
      try {
        await waitFor(
          async () => (await seen(t)) === acked,
          "acknowledged events counted",
          30_000,
          100,
        );
      } finally {
        expect(await again.stop()).toBe(0);
      }
    }, 90_000);
  }
});
